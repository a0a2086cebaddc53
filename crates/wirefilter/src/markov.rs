//! wirefilter's Markov model: a set of nodes, each with its own parameters for both
//! directions, and weighted edges between them.
//!
//! Every `period` (`markov-time`, 100 ms by default) the current node may move: a number `r`
//! is drawn uniformly in `[0, 100)` and the outgoing edges of the current node (in node order,
//! self excluded) are walked subtracting their weights; the first edge whose weight exceeds
//! the remainder is taken. The weight left over (100 − the sum of the outgoing weights) is the
//! probability of staying. With one node (the default) nothing ever moves and the model is
//! plain wirefilter.
//!
//! Differences from vde: a node's outgoing weights may not add up to more than 100 % (vde
//! accepts it and never reaches the excess), self edges are refused, and after a long idle gap
//! at most [`MAX_CATCH_UP`] transitions are simulated before the schedule is re-aligned to
//! the current time (the chain has long forgotten its start by then).

use std::time::{Duration, Instant};

use crate::core::Params;
use crate::rng::Rng;

/// The default `markov-time`.
pub const DEFAULT_PERIOD: Duration = Duration::from_millis(100);
/// Largest node count accepted by [`Markov::set_num_nodes`] (the edge matrix is n²).
pub const MAX_NODES: usize = 256;
/// Most transitions simulated by one call when time jumped far ahead.
pub const MAX_CATCH_UP: u32 = 10_000;

/// A Markov-model request that cannot be honoured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MarkovError {
    #[error("no such Markov node {0}")]
    NoSuchNode(usize),
    #[error("the number of Markov nodes must be between 1 and {MAX_NODES}")]
    BadNodeCount,
    #[error("an edge weight must be between 0 and 100 %, and a node's outgoing weights must not exceed 100 % in total")]
    BadWeight,
    #[error("an edge must join two different nodes")]
    SelfEdge,
    #[error("markov-time must be positive and at most 30 days")]
    BadPeriod,
}

/// One state of the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Node {
    pub name: String,
    /// Parameters for frames from the left side (`[0]`, L->R) and from the right (`[1]`, R->L).
    pub params: [Params; 2],
}

/// The nodes, the edge weights and the current node.
#[derive(Debug, Clone)]
pub struct Markov {
    nodes: Vec<Node>,
    /// `edges[from * n + to]`, in percent; the diagonal is unused (stay = remainder).
    edges: Vec<f64>,
    current: usize,
    period: Duration,
    next_change: Instant,
}

impl Markov {
    /// One node, no edges, `period` 100 ms starting at `now`.
    pub fn new(now: Instant) -> Self {
        Markov {
            nodes: vec![Node::default()],
            edges: vec![0.0],
            current: 0,
            period: DEFAULT_PERIOD,
            next_change: now + DEFAULT_PERIOD,
        }
    }

    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Resizes the model (`markov-numnodes`). New nodes have every parameter off and no
    /// edges; edges of kept nodes are kept; if the current node goes away node 0 becomes
    /// current.
    pub fn set_num_nodes(&mut self, n: usize) -> Result<(), MarkovError> {
        if n == 0 || n > MAX_NODES {
            return Err(MarkovError::BadNodeCount);
        }
        let old = self.nodes.len();
        let mut edges = vec![0.0; n * n];
        for from in 0..old.min(n) {
            for to in 0..old.min(n) {
                edges[from * n + to] = self.edges[from * old + to];
            }
        }
        self.edges = edges;
        self.nodes.resize_with(n, Node::default);
        if self.current >= n {
            self.current = 0;
        }
        Ok(())
    }

    fn check(&self, node: usize) -> Result<(), MarkovError> {
        if node < self.nodes.len() {
            Ok(())
        } else {
            Err(MarkovError::NoSuchNode(node))
        }
    }

    pub fn current(&self) -> usize {
        self.current
    }

    /// Moves to `node` at once (`markov-setnode`).
    pub fn set_current(&mut self, node: usize) -> Result<(), MarkovError> {
        self.check(node)?;
        self.current = node;
        Ok(())
    }

    pub fn node(&self, node: usize) -> Option<&Node> {
        self.nodes.get(node)
    }

    pub fn node_mut(&mut self, node: usize) -> Option<&mut Node> {
        self.nodes.get_mut(node)
    }

    /// The parameters in force for direction `dir` (0 = L->R, 1 = R->L).
    pub(crate) fn current_params(&self, dir: usize) -> &Params {
        &self.nodes[self.current].params[dir]
    }

    pub fn set_name(&mut self, node: usize, name: &str) -> Result<(), MarkovError> {
        self.check(node)?;
        self.nodes[node].name = name.to_string();
        Ok(())
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    /// Sets `markov-time` (at most [`crate::MAX_WAIT`]); the next transition is one period
    /// after `now`.
    pub fn set_period(&mut self, period: Duration, now: Instant) -> Result<(), MarkovError> {
        if period.is_zero() || period > crate::core::MAX_WAIT {
            return Err(MarkovError::BadPeriod);
        }
        self.period = period;
        self.next_change = now + period;
        Ok(())
    }

    /// The weight (percent) of the edge `from -> to`; for `from == to`, the stay weight.
    pub fn edge(&self, from: usize, to: usize) -> Option<f64> {
        let n = self.nodes.len();
        if from >= n || to >= n {
            return None;
        }
        if from == to {
            let out: f64 = (0..n)
                .filter(|&t| t != from)
                .map(|t| self.edges[from * n + t])
                .sum();
            Some((100.0 - out).max(0.0))
        } else {
            Some(self.edges[from * n + to])
        }
    }

    /// Sets the weight (percent) of the edge `from -> to` (`setedge`).
    pub fn set_edge(&mut self, from: usize, to: usize, weight: f64) -> Result<(), MarkovError> {
        self.check(from)?;
        self.check(to)?;
        if from == to {
            return Err(MarkovError::SelfEdge);
        }
        if !(0.0..=100.0).contains(&weight) {
            return Err(MarkovError::BadWeight);
        }
        let n = self.nodes.len();
        let others: f64 = (0..n)
            .filter(|&t| t != from && t != to)
            .map(|t| self.edges[from * n + t])
            .sum();
        if others + weight > 100.0 + 1e-9 {
            return Err(MarkovError::BadWeight);
        }
        self.edges[from * n + to] = weight;
        Ok(())
    }

    /// When the current node may next change; `None` with a single node.
    pub fn next_change(&self) -> Option<Instant> {
        (self.nodes.len() > 1).then_some(self.next_change)
    }

    /// Performs every transition due at `now`.
    pub(crate) fn advance(&mut self, now: Instant, rng: &mut Rng) {
        if self.nodes.len() <= 1 {
            // Keep the schedule current so adding nodes later starts from now.
            if now >= self.next_change {
                self.next_change = now + self.period;
            }
            return;
        }
        let mut steps = 0;
        while now >= self.next_change {
            if steps == MAX_CATCH_UP {
                self.next_change = now + self.period;
                break;
            }
            self.step(rng);
            self.next_change += self.period;
            steps += 1;
        }
    }

    fn step(&mut self, rng: &mut Rng) {
        let n = self.nodes.len();
        let mut r = rng.next_f64() * 100.0;
        for to in 0..n {
            if to == self.current {
                continue;
            }
            let w = self.edges[self.current * n + to];
            if r < w {
                self.current = to;
                return;
            }
            r -= w;
        }
    }
}
