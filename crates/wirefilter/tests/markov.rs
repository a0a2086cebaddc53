//! The Markov model, in virtual time.

use std::time::{Duration, Instant};

use filo_wirefilter::{Direction, MarkovError, Param, Side, Value, Wirefilter};

#[test]
fn single_node_schedules_nothing() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    assert_eq!(wf.markov().num_nodes(), 1);
    assert_eq!(wf.poll_timeout(), None);
    wf.handle_timeout(t0 + Duration::from_secs(3600));
    assert_eq!(wf.markov().current(), 0);
}

#[test]
fn edges_and_limits() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    let m = wf.markov_mut();
    m.set_num_nodes(3).unwrap();
    assert_eq!(m.set_edge(0, 1, 60.0), Ok(()));
    assert_eq!(m.set_edge(0, 2, 50.0), Err(MarkovError::BadWeight));
    assert_eq!(m.set_edge(0, 2, 40.0), Ok(()));
    assert_eq!(m.edge(0, 0), Some(0.0));
    assert_eq!(m.set_edge(1, 1, 10.0), Err(MarkovError::SelfEdge));
    assert_eq!(m.set_edge(1, 3, 10.0), Err(MarkovError::NoSuchNode(3)));
    assert_eq!(m.set_edge(1, 2, -1.0), Err(MarkovError::BadWeight));
    assert_eq!(m.set_num_nodes(0), Err(MarkovError::BadNodeCount));
    assert_eq!(m.edge(1, 1), Some(100.0));
    m.set_current(2).unwrap();
    m.set_num_nodes(2).unwrap();
    assert_eq!(m.current(), 0);
    assert_eq!(m.edge(0, 1), Some(60.0));
    assert_eq!(
        wf.set_node(5, Direction::Both, Param::Loss, Value::fixed(1.0)),
        Err(MarkovError::NoSuchNode(5))
    );
}

#[test]
fn deterministic_edge_moves_every_period() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    wf.markov_mut().set_num_nodes(2).unwrap();
    wf.markov_mut().set_edge(0, 1, 100.0).unwrap();
    wf.markov_mut().set_edge(1, 0, 100.0).unwrap();
    wf.markov_mut()
        .set_period(Duration::from_millis(10), t0)
        .unwrap();
    assert_eq!(wf.poll_timeout(), Some(t0 + Duration::from_millis(10)));
    wf.handle_timeout(t0 + Duration::from_millis(9));
    assert_eq!(wf.markov().current(), 0);
    wf.handle_timeout(t0 + Duration::from_millis(10));
    assert_eq!(wf.markov().current(), 1);
    wf.handle_timeout(t0 + Duration::from_millis(35));
    assert_eq!(wf.markov().current(), 1); // moved at 20 and 30
    assert_eq!(wf.poll_timeout(), Some(t0 + Duration::from_millis(40)));
}

#[test]
fn loss_is_the_weighted_mix_of_the_nodes() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(31, t0);
    wf.markov_mut().set_num_nodes(2).unwrap();
    wf.markov_mut().set_name(0, "good").unwrap();
    wf.markov_mut().set_name(1, "bad").unwrap();
    wf.set_node(1, Direction::Both, Param::Loss, Value::fixed(50.0))
        .unwrap();
    // Stationary distribution: π1 = 10 / (10 + 30) = 0.25, so loss = 0.25 · 50 % = 12.5 %.
    wf.markov_mut().set_edge(0, 1, 10.0).unwrap();
    wf.markov_mut().set_edge(1, 0, 30.0).unwrap();
    wf.markov_mut()
        .set_period(Duration::from_millis(10), t0)
        .unwrap();
    let n = 200_000u32;
    let mut visits = [0u64; 2];
    let mut delivered = 0u64;
    for i in 0..n {
        let now = t0 + Duration::from_millis(u64::from(i));
        wf.handle_timeout(now);
        visits[wf.markov().current()] += 1;
        wf.handle_frame(now, Side::Left, &[0u8; 64]);
        while wf.poll_transmit(now, |_, _| {}) {
            delivered += 1;
        }
    }
    let loss = 100.0 * (1.0 - delivered as f64 / f64::from(n));
    let bad_share = visits[1] as f64 / f64::from(n);
    eprintln!(
        "markov good(0 %)/bad(50 %), edges 10 %/30 %: time in bad {:.4} (expected 0.25), loss {loss:.3} % (expected 12.5)",
        bad_share
    );
    assert!(visits[0] > 0 && visits[1] > 0);
    assert!((bad_share - 0.25).abs() <= 0.03, "{bad_share}");
    assert!((loss - 12.5).abs() <= 1.5, "{loss}");
    assert_eq!(wf.stats(Side::Left).dropped_loss, u64::from(n) - delivered);
}

#[test]
fn long_idle_gap_is_bounded() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    wf.markov_mut().set_num_nodes(2).unwrap();
    wf.markov_mut().set_edge(0, 1, 50.0).unwrap();
    wf.markov_mut()
        .set_period(Duration::from_millis(1), t0)
        .unwrap();
    let later = t0 + Duration::from_secs(365 * 24 * 3600);
    wf.handle_timeout(later);
    assert!(wf.poll_timeout().is_some_and(|t| t > later));
}
