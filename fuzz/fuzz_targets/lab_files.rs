//! Fuzz `filo lab`'s file on arbitrary text. Asserts: no panic; an error names a line that
//! exists (or 0, the whole file) and says what was expected; a lab that parses has unique
//! names, plans every switch, link, remote and node exactly once, and draws as SVG and DOT.
#![no_main]

use filo_lab::model::parse;
use filo_lab::plan::{plan, Layout};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match parse(text, "fuzz") {
        Err(e) => {
            let lines = text.lines().count().max(1);
            assert!(e.line <= lines + 1, "line {} of {lines}: {e}", e.line);
            assert!(!e.message.is_empty());
        }
        Ok(lab) => {
            let steps = plan(&lab, &Layout::new("/l"));
            assert_eq!(
                steps.len(),
                lab.switches.len() + lab.links.len() + lab.remotes.len() + lab.nodes.len()
            );
            let mut ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
            ids.sort_unstable();
            let n = ids.len();
            ids.dedup();
            assert_eq!(ids.len(), n, "two steps share an id");
            let _ = filo_lab::graph::svg(&lab);
            let _ = filo_lab::graph::dot(&lab);
        }
    }
});
