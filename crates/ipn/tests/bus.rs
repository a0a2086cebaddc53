//! Opening buses: what is refused with a clear error.

use std::path::Path;

use filo_ipn::{Bus, BusOptions, IpnError};

#[test]
fn a_regular_file_at_the_path_is_an_error_and_is_kept() {
    let tmp = filo_test_support::TempDir::new("ipn-file");
    let path = tmp.join("bus");
    std::fs::write(&path, b"precious").unwrap();
    let err = Bus::open(&path, &BusOptions::default())
        .err()
        .expect("refused");
    assert!(matches!(err, IpnError::BadBus { .. }), "{err}");
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn stat_of_a_path_nobody_serves_says_so() {
    let opts = BusOptions {
        join_only: true,
        ..BusOptions::default()
    };
    let err = Bus::open(Path::new("/nonexistent/ipn-bus"), &opts)
        .err()
        .expect("refused");
    assert!(err.to_string().contains("no bus serves this path"), "{err}");
}

#[test]
fn members_of_one_process_share_a_bus_and_a_slot_frees_on_drop() {
    let tmp = filo_test_support::TempDir::new("ipn-members");
    let path = tmp.join("bus");
    let bus = Bus::open(&path, &BusOptions::default()).unwrap();
    assert!(bus.created());
    let (a, _) = bus.member(0).unwrap();
    let (b, _) = bus.member(0).unwrap();
    assert_ne!(a.index(), b.index());
    assert_eq!(bus.records().len(), 2);
    drop(b);
    assert_eq!(bus.records().len(), 1);
    let other = Bus::open(&path, &BusOptions::default()).unwrap();
    assert!(!other.created());
    let (c, _) = other.member(0).unwrap();
    assert_eq!(bus.records().len(), 2);
    drop((a, c));
}
