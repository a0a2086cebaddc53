//! The management console: exact replies and robustness.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use filo_wirefilter::console::{
    execute, execute_script, greeting, status, Effect, END_OF_SESSION, PROMPT,
};
use filo_wirefilter::{Param, Side, Value, Wirefilter};
use proptest::prelude::*;

const OK: &str = "1000 Success\n\nVDEwf$ ";
const EINVAL: &str = "1022 Invalid argument\n\nVDEwf$ ";
const ENOSYS: &str = "1038 Function not implemented\n\nVDEwf$ ";

fn run(wf: &mut Wirefilter, line: &str) -> String {
    execute(wf, Instant::now(), line).text
}

/// An `EINVAL` reply whose detail names the command (vdeterm shows it after the code).
fn is_einval(text: &str, cmd: &str) -> bool {
    text.starts_with(&format!("1022 Invalid argument: {cmd}: ")) && text.ends_with("\n\nVDEwf$ ")
}

#[test]
fn greeting_is_vdes() {
    assert_eq!(
        greeting(),
        "\nVDE wirefilter V.2.3.2\n(C) R.Davoli 2005,2006 - GPLv2\n\nVDEwf$ "
    );
}

#[test]
fn setting_values() {
    let mut wf = Wirefilter::new(1, Instant::now());
    assert_eq!(run(&mut wf, "loss 10"), OK);
    assert_eq!(run(&mut wf, "delay LR20+5N"), OK);
    assert_eq!(run(&mut wf, "band RL1K"), OK);
    assert_eq!(run(&mut wf, "capacity 64K"), OK);
    assert_eq!(run(&mut wf, "mtu LR1000 RL1500"), OK);
    let lr = *wf.params(0, Side::Left).unwrap();
    let rl = *wf.params(0, Side::Right).unwrap();
    assert_eq!(lr.loss, Value::fixed(10.0));
    assert_eq!(rl.loss, Value::fixed(10.0));
    assert_eq!(lr.delay, Value::normal(20.0, 5.0));
    assert_eq!(rl.delay, Value::default());
    assert_eq!(rl.get(Param::Bandwidth), Value::fixed(1024.0));
    assert_eq!(lr.capacity, Value::fixed(65536.0));
    assert_eq!((lr.mtu.base, rl.mtu.base), (1000.0, 1500.0));
    // Atomic: one bad argument, nothing applied.
    assert!(is_einval(&run(&mut wf, "mtu 100 bogus"), "mtu"));
    assert_eq!(wf.params(0, Side::Left).unwrap().mtu.base, 1000.0);
    assert_eq!(run(&mut wf, "fifo 0"), OK);
    assert!(!wf.fifo());
    assert!(is_einval(&run(&mut wf, "fifo 2"), "fifo"));
}

#[test]
fn showinfo_exact() {
    let mut wf = Wirefilter::new(1, Instant::now());
    run(&mut wf, "loss 10");
    run(&mut wf, "delay LR20+5N");
    run(&mut wf, "loss RL5+2");
    run(&mut wf, "mtu 1000");
    assert_eq!(
        run(&mut wf, "showinfo"),
        "0000 DATA END WITH '.'\n\
         WireFilter: bidirectional\n\
         Loss   L->R 10+0U   R->L 5+2U\n\
         LostBurst L->R 0+0U   R->L 0+0U\n\
         Delay  L->R 20+5N   R->L 0+0U\n\
         Dup    L->R 0+0U   R->L 0+0U\n\
         Bandw  L->R 0+0U   R->L 0+0U\n\
         Speed  L->R 0+0U   R->L 0+0U\n\
         Cap.   L->R 0   R->L 0\n\
         Noise  L->R 0+0U   R->L 0+0U\n\
         MTU    L->R 1000   R->L 1000\n\
         Current Delay Queue size:   L->R 0   R->L 0\n\
         Fifoness TRUE\n\
         Waiting packets in delay queues 0\n\
         Counters L->R in 0/0 out 0/0 dropped loss 0 mtu 0 capacity 0 dup 0 corrupted 0 bits 0 queued 0\n\
         Counters R->L in 0/0 out 0/0 dropped loss 0 mtu 0 capacity 0 dup 0 corrupted 0 bits 0 queued 0\n\
         .\n1000 Success\n\nVDEwf$ "
    );
    assert_eq!(
        run(&mut wf, "showinfo 1"),
        "0000 DATA END WITH '.'\n.\n1022 Invalid argument: showinfo: no such Markov node 1\n\nVDEwf$ "
    );
}

#[test]
fn errors() {
    let mut wf = Wirefilter::new(1, Instant::now());
    assert_eq!(run(&mut wf, "frobnicate"), ENOSYS);
    assert_eq!(run(&mut wf, "markov-debug 1"), ENOSYS);
    for bad in [
        "loss",
        "loss x",
        "loss -5",
        "delay 10[1]",
        "delay 10+",
        "markov-numnodes 0",
        "markov-numnodes x",
        "markov-setnode 3",
        "markov-time 0",
        "setedge 0,1,10",
        "setedge 0,0",
        "markov-name 4,x",
        "load",
    ] {
        let text = run(&mut wf, bad);
        let cmd = bad.split(' ').next().unwrap();
        assert!(is_einval(&text, cmd), "{bad}: {text}");
    }
    // The detail says which value was wrong and what was expected.
    assert_eq!(
        run(&mut wf, "delay abc"),
        "1022 Invalid argument: delay: \"abc\" is not [LR|RL]VALUE[+DELTA][K|M|G][U|N][[NODE]] \
         (VALUE must be a decimal number)\n\nVDEwf$ "
    );
    assert_eq!(
        run(&mut wf, "markov-numnodes x"),
        "1022 Invalid argument: markov-numnodes: \"x\" is not a whole number\n\nVDEwf$ "
    );
    assert_eq!(
        run(&mut wf, "fifo 2"),
        "1022 Invalid argument: fifo: \"2\" is not 0 or 1\n\nVDEwf$ "
    );
    assert_eq!(
        run(&mut wf, "markov-name 9,a"),
        "1022 Invalid argument: markov-name: no such Markov node 9\n\nVDEwf$ "
    );
    // Control characters in a bad value cannot break the status line.
    assert!(!run(&mut wf, "loss \u{1}x").contains('\u{1}'));
    assert_eq!(run(&mut wf, ""), PROMPT);
    assert_eq!(run(&mut wf, "# comment"), PROMPT);
}

#[test]
fn markov_commands() {
    let t0 = Instant::now();
    let mut wf = Wirefilter::new(1, t0);
    for cmd in [
        "markov-numnodes 2",
        "markov-name 0,good",
        "markov-name 1,bad",
        "setedge 0,1,25",
        "loss 50[1]",
        "markov-time 50",
    ] {
        assert_eq!(execute(&mut wf, t0, cmd).text, OK, "{cmd}");
    }
    assert_eq!(wf.params(1, Side::Left).unwrap().loss, Value::fixed(50.0));
    assert_eq!(wf.params(0, Side::Left).unwrap().loss, Value::default());
    assert_eq!(wf.poll_timeout(), Some(t0 + Duration::from_millis(50)));
    assert_eq!(
        run(&mut wf, "showedges"),
        "0000 DATA END WITH '.'\n\
         Edge 0 \"good\" -> 0 \"good\" weight 75\n\
         Edge 0 \"good\" -> 1 \"bad\" weight 25\n\
         .\n1000 Success\n\nVDEwf$ "
    );
    assert_eq!(
        run(&mut wf, "showcurrent"),
        "0000 DATA END WITH '.'\nCurrent Markov Node 0 \"good\" (0,..,1)\n.\n1000 Success\n\nVDEwf$ "
    );
    assert_eq!(run(&mut wf, "markov-setnode 1"), OK);
    assert_eq!(wf.markov().current(), 1);
    let info = run(&mut wf, "showinfo");
    assert!(info.contains("Node 1 \"bad\" (0,..,1) Markov-time 50 ms\nLoss   L->R 50+0U"));
    let info0 = run(&mut wf, "showinfo 0");
    assert!(info0.contains("Loss   L->R 0+0U"));
}

#[test]
fn session_end_and_load() {
    let mut wf = Wirefilter::new(1, Instant::now());
    let r = execute(&mut wf, Instant::now(), "logout");
    assert_eq!(
        (r.text.as_str(), r.effects),
        (END_OF_SESSION, vec![Effect::Logout])
    );
    let r = execute(&mut wf, Instant::now(), "shutdown");
    assert_eq!(
        (r.text.as_str(), r.effects),
        (END_OF_SESSION, vec![Effect::Shutdown])
    );
    let r = execute(&mut wf, Instant::now(), "load /tmp/x.rc");
    assert_eq!(r.text, "");
    assert_eq!(r.effects, vec![Effect::Load(PathBuf::from("/tmp/x.rc"))]);
    assert_eq!(status(Ok(())), OK);
    assert_eq!(status(Err(22)), EINVAL);
}

#[test]
fn scripts() {
    let mut wf = Wirefilter::new(1, Instant::now());
    assert_eq!(
        execute_script(
            &mut wf,
            Instant::now(),
            "# rc\nloss 5\n\ndelay 20+5N\nfifo 0\n"
        ),
        Ok(())
    );
    assert_eq!(
        wf.params(0, Side::Right).unwrap().delay,
        Value::normal(20.0, 5.0)
    );
    assert!(!wf.fifo());
    assert_eq!(
        execute_script(&mut wf, Instant::now(), "loss 1\nbogus\nloss 2"),
        Err((2, 38))
    );
    assert_eq!(wf.params(0, Side::Left).unwrap().loss, Value::fixed(1.0));
}

#[test]
fn help_lists_commands() {
    let mut wf = Wirefilter::new(1, Instant::now());
    let text = run(&mut wf, "help");
    assert!(text.starts_with("0000 DATA END WITH '.'\nCOMMAND"));
    for cmd in [
        "showinfo",
        "chanbufsize",
        "setedge",
        "markov-time",
        "logout",
    ] {
        assert!(text.contains(&format!("\n{cmd} ")), "{cmd}");
    }
    assert!(text.ends_with(".\n1000 Success\n\nVDEwf$ "));
}

proptest! {
    #[test]
    fn arbitrary_input_never_panics(lines in proptest::collection::vec(
        prop_oneof![
            ".{0,30}",
            "(loss|delay|dup|band|speed|mtu|noise|capacity|lostburst|showinfo|showedges|setedge|markov-numnodes|markov-setnode|markov-name|markov-time|fifo) [ -~]{0,20}",
        ], 1..12)) {
        let t0 = Instant::now();
        let mut wf = Wirefilter::new(1, t0);
        for (i, line) in lines.iter().enumerate() {
            let now = t0 + Duration::from_millis(i as u64 * 37);
            let r = execute(&mut wf, now, line);
            let loads = r.effects.iter().any(|e| matches!(e, Effect::Load(_)));
            prop_assert!(r.text.ends_with(PROMPT) || r.text == END_OF_SESSION || (loads && r.text.is_empty()), "{:?} -> {:?}", line, r.text);
            wf.handle_frame(now, Side::Left, &[1, 2, 3, 4]);
            while wf.poll_transmit(now, |_, _| {}) {}
        }
    }
}
