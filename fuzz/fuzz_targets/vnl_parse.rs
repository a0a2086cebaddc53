//! Fuzz the VNL parser: it must never panic, and anything it accepts must survive a
//! Display/parse round trip unchanged.
#![no_main]

use filo_vnl::Vnl;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(vnl) = Vnl::parse(text) {
        let shown = vnl.to_string();
        match Vnl::parse(&shown) {
            Ok(back) => {
                assert_eq!(back, vnl, "round trip changed {text:?} -> {shown:?}");
                assert_eq!(
                    back.to_string(),
                    shown,
                    "Display not canonical for {text:?}"
                );
            }
            Err(e) => panic!("Display of {text:?} is {shown:?}, which does not parse: {e}"),
        }
        if let Some(nested) = vnl.nested() {
            let _ = Vnl::parse(nested);
        }
    }
});
