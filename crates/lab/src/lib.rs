//! filo lab: a whole virtual network from one TOML file.
//!
//! Theory of operation. [`model::parse`] reads the file (serde + `toml`, spans kept) into a
//! [`model::Lab`] whose every reference is resolved: links name switches or nodes, nodes name
//! switches and ports, names are unique, values are checked as the `filo` commands will read
//! them; an error names the line, the key and what was expected, before anything starts.
//! [`plan::plan`] turns a lab into `filo` processes under a state directory
//! ([`plan::Layout`]), in phases (switches, cables, nodes). [`status`] parses what the
//! switches' and wirefilters' consoles print into counters, and [`graph`] draws a lab as SVG
//! or DOT. All of it is pure; `filo lab` (crates/filo/src/lab.rs) runs the processes.

pub mod graph;
pub mod model;
pub mod plan;
pub mod status;

use serde::{Deserialize, Serialize};

/// What `filo lab up` started: read by `down`, `status`, `exec` and `set`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub name: String,
    pub processes: Vec<Process>,
}

/// One started process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    /// The step's id: "switch sw1", "link wan", "node h1".
    pub id: String,
    pub pid: u32,
    /// Its start time (/proc/PID/stat, clock ticks after boot): a pid reused by another
    /// process is not taken for it.
    pub start_time: u64,
    /// Started as a process group of its own (stopped as a group).
    pub group: bool,
}

#[cfg(test)]
mod tests;
