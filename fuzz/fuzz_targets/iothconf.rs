//! Fuzz the iothconf parser (`--conf` of `filo ns` and `filo stack`): no panic; a
//! configuration it accepts passes `validate`, and its `to_conf_string()` parses back to an
//! equal value (the string a named stack or `filo ns` hands on); an error names an item of
//! the input.
#![no_main]

use filo_vnl::iothconf::IothConf;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match IothConf::parse(text) {
        Ok(conf) => {
            assert_eq!(conf.validate(), Ok(()), "{text:?}");
            let shown = conf.to_conf_string();
            match IothConf::parse(&shown) {
                Ok(back) => assert_eq!(back, conf, "{text:?} written as {shown:?}"),
                Err(e) => panic!("{text:?} written as {shown:?}, which does not parse: {e}"),
            }
            let _ = conf.check_interfaces(1);
        }
        Err(e) => {
            assert!(
                text.contains(e.item.trim()),
                "{text:?}: error names {:?}",
                e.item
            );
            assert!(!e.to_string().is_empty());
        }
    }
});
