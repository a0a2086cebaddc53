//! The neighbour cache (ARP and NDP alike): next hop → MAC, with a bounded queue of packets
//! waiting for a resolution. Bounded in entries and in queued packets; what does not fit is
//! refused and the caller counts it.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::core::IfId;
use crate::Mac;

/// Entries at most.
pub const MAX_ENTRIES: usize = 1024;
/// Packets waiting per unresolved neighbour (Linux's unres_qlen is of the same order).
pub const MAX_QUEUED: usize = 8;
/// Requests sent before a neighbour is given up.
pub const MAX_PROBES: u8 = 3;
/// Time between requests.
pub const RETRANS: Duration = Duration::from_secs(1);
/// How long an answer is trusted before it is confirmed again (with a broadcast request, so
/// a host that came back with another MAC is found; the old MAC is used meanwhile).
pub const REACHABLE: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    mac: Option<Mac>,
    /// When `mac` was last confirmed.
    confirmed: Instant,
    probes: u8,
    next_probe: Instant,
    queue: VecDeque<Vec<u8>>,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            mac: None,
            confirmed: now,
            probes: 0,
            next_probe: now,
            queue: VecDeque::new(),
        }
    }
}

/// What [`Cache::lookup`] says.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Send to this MAC; `probe` asks for a request to confirm it (it is stale).
    Known { mac: Mac, probe: bool },
    /// Queued; `probe`: send a request now.
    Queued { probe: bool },
    /// The neighbour's queue is full.
    QueueFull,
    /// No entry free.
    TableFull,
}

/// Neighbours that did not answer, with the packets that waited for them.
#[derive(Debug)]
pub struct Failed {
    pub iface: IfId,
    pub addr: IpAddr,
    pub queued: Vec<Vec<u8>>,
}

#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<(IfId, IpAddr), Entry>,
}

impl Cache {
    /// Where to send `packet` for next hop `addr` on `iface`; queues it when the MAC is not
    /// known yet.
    pub fn lookup(&mut self, now: Instant, iface: IfId, addr: IpAddr, packet: &[u8]) -> Lookup {
        if !self.entries.contains_key(&(iface, addr)) && !self.make_room(now) {
            return Lookup::TableFull;
        }
        let e = self
            .entries
            .entry((iface, addr))
            .or_insert_with(|| Entry::new(now));
        let due = e.next_probe <= now;
        if let Some(mac) = e.mac {
            let stale = now.saturating_duration_since(e.confirmed) > REACHABLE;
            let probe = stale && due;
            if probe {
                e.next_probe = now + RETRANS;
            }
            return Lookup::Known { mac, probe };
        }
        if e.queue.len() >= MAX_QUEUED {
            return Lookup::QueueFull;
        }
        e.queue.push_back(packet.to_vec());
        let probe = due && e.probes == 0;
        if probe {
            e.probes = 1;
            e.next_probe = now + RETRANS;
        }
        Lookup::Queued { probe }
    }

    /// Whether `addr`'s MAC on `iface` is known (a packet for it would not wait).
    pub fn is_known(&self, iface: IfId, addr: IpAddr) -> bool {
        self.entries
            .get(&(iface, addr))
            .is_some_and(|e| e.mac.is_some())
    }

    /// Frees an entry if the table is full: the oldest resolved one. False if none is.
    fn make_room(&mut self, _now: Instant) -> bool {
        if self.entries.len() < MAX_ENTRIES {
            return true;
        }
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.mac.is_some())
            .min_by_key(|(_, e)| e.confirmed)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                self.entries.remove(&k);
                true
            }
            None => false,
        }
    }

    /// A neighbour told its MAC (a reply, or a request naming it). `create`: make an entry
    /// even if none was asked for (a request addressed to us: we will answer it). Returns
    /// the packets that waited for it.
    pub fn learn(
        &mut self,
        now: Instant,
        iface: IfId,
        addr: IpAddr,
        mac: Mac,
        create: bool,
    ) -> Vec<Vec<u8>> {
        if !self.entries.contains_key(&(iface, addr)) && (!create || !self.make_room(now)) {
            return Vec::new();
        }
        let e = self
            .entries
            .entry((iface, addr))
            .or_insert_with(|| Entry::new(now));
        e.mac = Some(mac);
        e.confirmed = now;
        e.probes = 0;
        e.next_probe = now;
        e.queue.drain(..).collect()
    }

    /// Next hops to ask again now, and the neighbours given up (their queues emptied).
    pub fn poll(&mut self, now: Instant) -> (Vec<(IfId, IpAddr)>, Vec<Failed>) {
        let mut again = Vec::new();
        let mut failed = Vec::new();
        for (&(iface, addr), e) in self.entries.iter_mut() {
            if e.mac.is_some() || e.next_probe > now {
                continue;
            }
            if e.probes >= MAX_PROBES {
                failed.push(Failed {
                    iface,
                    addr,
                    queued: e.queue.drain(..).collect(),
                });
            } else {
                e.probes += 1;
                e.next_probe = now + RETRANS;
                again.push((iface, addr));
            }
        }
        for f in &failed {
            self.entries.remove(&(f.iface, f.addr));
        }
        (again, failed)
    }

    /// When [`Cache::poll`] next has something to do.
    pub fn poll_at(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter(|e| e.mac.is_none())
            .map(|e| e.next_probe)
            .min()
    }

    /// The resolved neighbours: interface, address, MAC.
    pub fn entries(&self) -> impl Iterator<Item = (IfId, IpAddr, Option<Mac>)> + '_ {
        self.entries.iter().map(|(&(i, a), e)| (i, a, e.mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unresolved_neighbours_queue_a_bounded_number_then_fail() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        assert_eq!(c.lookup(t0, 0, a, b"p0"), Lookup::Queued { probe: true });
        for _ in 1..MAX_QUEUED {
            assert_eq!(c.lookup(t0, 0, a, b"p"), Lookup::Queued { probe: false });
        }
        assert_eq!(c.lookup(t0, 0, a, b"p"), Lookup::QueueFull);
        let mut t = t0;
        for _ in 1..MAX_PROBES {
            t += RETRANS;
            let (again, failed) = c.poll(t);
            assert_eq!(again, vec![(0, a)]);
            assert!(failed.is_empty());
        }
        t += RETRANS;
        let (again, failed) = c.poll(t);
        assert!(again.is_empty());
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].queued.len(), MAX_QUEUED);
        assert_eq!(c.entries().count(), 0);
    }

    #[test]
    fn a_stale_entry_is_asked_again_and_a_new_mac_replaces_the_old() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let a: IpAddr = "10.0.0.9".parse().unwrap();
        c.lookup(t0, 0, a, b"x");
        c.learn(t0, 0, a, [2, 0, 0, 0, 0, 1], false);
        let t = t0 + REACHABLE + Duration::from_millis(1);
        let old = Lookup::Known {
            mac: [2, 0, 0, 0, 0, 1],
            probe: true,
        };
        assert_eq!(c.lookup(t, 0, a, b"y"), old, "stale: used, and asked again");
        assert!(matches!(
            c.lookup(t, 0, a, b"z"),
            Lookup::Known { probe: false, .. }
        ));
        // The host came back with another MAC and answers the request.
        c.learn(t, 0, a, [2, 0, 0, 0, 0, 2], false);
        let new = Lookup::Known {
            mac: [2, 0, 0, 0, 0, 2],
            probe: false,
        };
        assert_eq!(c.lookup(t, 0, a, b"w"), new);
    }

    #[test]
    fn an_answer_releases_the_queue_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::default();
        let a: IpAddr = "fd00::9".parse().unwrap();
        c.lookup(t0, 1, a, b"x");
        assert_eq!(
            c.learn(t0, 1, a, [2, 0, 0, 0, 0, 9], false),
            vec![b"x".to_vec()]
        );
        assert_eq!(
            c.lookup(t0, 1, a, b"y"),
            Lookup::Known {
                mac: [2, 0, 0, 0, 0, 9],
                probe: false
            }
        );
        // Unsolicited answers make no entry.
        let b: IpAddr = "fd00::8".parse().unwrap();
        assert!(c.learn(t0, 1, b, [2; 6], false).is_empty());
        assert_eq!(c.entries().count(), 1);
        // Unresolved entries fill the table: the resolved one is evicted, then refusals.
        for i in 0..MAX_ENTRIES as u32 {
            let x = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let r = c.lookup(t0, 0, x, b"z");
            assert!(matches!(r, Lookup::Queued { .. }), "{i}: {r:?}");
        }
        assert_eq!(c.lookup(t0, 2, a, b"z"), Lookup::TableFull);
        assert_eq!(c.entries().count(), MAX_ENTRIES);
    }
}
