//! Where things are in a bus's shared region. The geometry (slot count and size) is fixed
//! when the bus is created; a member reads it once when it joins, checks it against the
//! mapping's real size ([`Geometry::from_header`]) and from then on computes every offset
//! from its private, checked copy — never from a value it reads again later.
//!
//! ```text
//! header    256 B   magic, version, policy, flags, geometry, epoch, counters; head (own line)
//! members   64 × 128 B   state, sleeping, generation, pid, tag, statistics; cursor (own line)
//! slots     nslots × (64 B header + slot_size B)   seq, len, sender, receivers; frame bytes
//! ```

use crate::sys::Region;
use std::sync::atomic::Ordering;

pub const MAGIC: u64 = 0x6669_6c6f_4950_4e31; // "filoIPN1"
pub const VERSION: u32 = 1;
/// Members per bus: one bit each in a slot's receivers mask.
pub const MAX_MEMBERS: usize = 64;

pub const H_MAGIC: usize = 0;
pub const H_VERSION: usize = 8;
pub const H_POLICY: usize = 12;
pub const H_FLAGS: usize = 16;
pub const H_NSLOTS: usize = 20;
pub const H_SLOT_SIZE: usize = 24;
pub const H_MEMBERS: usize = 28;
pub const H_TIMEOUT_MS: usize = 32;
/// Bumped whenever membership changes: senders recompute their member list when it moves.
pub const H_EPOCH: usize = 36;
pub const H_EVICTIONS: usize = 40;
pub const H_RECLAIMED: usize = 48;
pub const H_HEAD: usize = 128;
pub const HEADER_LEN: usize = 256;

pub const FLAG_LOSSLESS: u32 = 1;
/// Every frame starts with a 12-byte virtio-net header and may be a TCP super-frame.
pub const FLAG_VNET: u32 = 2;

pub const MEMBER_LEN: usize = 128;
pub const M_STATE: usize = 0;
pub const M_SLEEPING: usize = 4;
pub const M_GENERATION: usize = 8;
pub const M_PID: usize = 12;
pub const M_TAG: usize = 16;
pub const M_FRAMES_IN: usize = 24;
pub const M_FRAMES_OUT: usize = 32;
pub const M_LOST: usize = 40;
pub const M_EVICTED: usize = 48;
pub const M_BAD: usize = 56;
pub const M_CURSOR: usize = 64;

pub const STATE_FREE: u32 = 0;
pub const STATE_ACTIVE: u32 = 1;
pub const STATE_EVICTED: u32 = 2;

pub const SLOT_HEADER: usize = 64;
pub const S_SEQ: usize = 0;
pub const S_LEN: usize = 8;
pub const S_SENDER: usize = 12;
pub const S_RECEIVERS: usize = 16;

/// Set in a slot's sequence word while a sender writes its bytes.
pub const WRITING: u64 = 1 << 63;
/// Sequence numbers stay below this; a larger head is garbage and is reset.
pub const SEQ_LIMIT: u64 = 1 << 62;

/// Ring slots without `size=`: 4096 (6.5 MiB). On the project's machine two plugs moved about
/// twice the 64-byte frames/s with 4096 slots as with 2048, and no more with 8192.
pub const DEFAULT_SLOTS: u32 = 4096;
pub const DEFAULT_SLOT_SIZE: u32 = 1536;
pub const MAX_SLOTS: u32 = 1 << 20;
/// Room for the largest super-frame with its virtio-net header (12 + 65,553 bytes), rounded up
/// to 64.
pub const MAX_SLOT_SIZE: u32 = 65600;
const _: () = assert!(
    MAX_SLOT_SIZE as usize
        >= filo_vnl::wire::vnet::HEADER_LEN + filo_vnl::wire::vnet::MAX_SUPER_FRAME
);
/// Slots of a `vnet` bus: each holds a whole super-frame.
pub const VNET_SLOT_SIZE: u32 = MAX_SLOT_SIZE;
/// Ring slots of a `vnet` bus without `size=`: 256 slots of 64 KiB (16 MiB).
pub const VNET_DEFAULT_SLOTS: u32 = 256;

/// A bus's checked geometry: the private copy every offset is computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    pub nslots: u32,
    pub slot_size: u32,
}

impl Geometry {
    /// Checks a geometry asked for by a user (`size=`): a power of two of slots.
    pub fn new(nslots: u32, slot_size: u32) -> Result<Geometry, String> {
        if !nslots.is_power_of_two() || !(2..=MAX_SLOTS).contains(&nslots) {
            return Err(format!(
                "expected a ring size that is a power of two from 2 to {MAX_SLOTS}, got {nslots}"
            ));
        }
        if slot_size == 0 || !slot_size.is_multiple_of(64) || slot_size > MAX_SLOT_SIZE {
            return Err(format!(
                "expected a slot size that is a multiple of 64 up to {MAX_SLOT_SIZE}, got {slot_size}"
            ));
        }
        Ok(Geometry { nslots, slot_size })
    }

    pub fn region_len(&self) -> usize {
        slots_offset() + self.nslots as usize * self.slot_stride()
    }

    pub fn slot_stride(&self) -> usize {
        SLOT_HEADER + self.slot_size as usize
    }

    /// Offset of the slot that sequence number `seq` uses.
    pub fn slot(&self, seq: u64) -> usize {
        let index = (seq & u64::from(self.nslots - 1)) as usize;
        slots_offset() + index * self.slot_stride()
    }

    /// Reads and checks the geometry a bus's creator wrote, against the mapping's length.
    pub fn from_header(region: &Region) -> Result<Geometry, String> {
        if region.len() < HEADER_LEN {
            return Err("the bus region is smaller than its header".into());
        }
        if region.load64(H_MAGIC, Ordering::Acquire) != MAGIC {
            return Err("the shared region is not a filo ipn bus (bad magic)".into());
        }
        let version = region.load32(H_VERSION, Ordering::Relaxed);
        if version != VERSION {
            return Err(format!("bus version {version}, this filo speaks {VERSION}"));
        }
        if region.load32(H_MEMBERS, Ordering::Relaxed) as usize != MAX_MEMBERS {
            return Err("the bus has an unexpected member count".into());
        }
        let g = Geometry::new(
            region.load32(H_NSLOTS, Ordering::Relaxed),
            region.load32(H_SLOT_SIZE, Ordering::Relaxed),
        )?;
        if g.region_len() > region.len() {
            return Err("the bus's ring does not fit its shared region".into());
        }
        Ok(g)
    }
}

pub fn member(index: usize) -> usize {
    HEADER_LEN + index * MEMBER_LEN
}

pub const fn slots_offset() -> usize {
    HEADER_LEN + MAX_MEMBERS * MEMBER_LEN
}
