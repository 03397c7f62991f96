//! Receiver indices: the random 32-bit numbers that let an incoming message name its keypair
//! or pending handshake without revealing the peer. Lookups use SipHash-2-4 under a random key
//! so that an attacker choosing indices cannot degrade the table into a list.

use crate::ratelimiter::SipBuildHasher;
use rand_core::RngCore;
use std::collections::HashMap;

/// The device's peers are named by a small integer (a slot in the device's peer table).
pub type PeerId = u32;

pub struct IndexTable {
    map: HashMap<u32, PeerId, SipBuildHasher>,
}

impl IndexTable {
    pub fn new(sip_key: [u8; 16]) -> Self {
        IndexTable {
            map: HashMap::with_hasher(SipBuildHasher::new(sip_key)),
        }
    }

    /// Draws a fresh random index not in use and assigns it to `peer`.
    pub fn allocate<R: RngCore + ?Sized>(&mut self, peer: PeerId, rng: &mut R) -> u32 {
        loop {
            let idx = rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = self.map.entry(idx) {
                v.insert(peer);
                return idx;
            }
        }
    }

    pub fn get(&self, index: u32) -> Option<PeerId> {
        self.map.get(&index).copied()
    }

    pub fn release(&mut self, index: u32) {
        self.map.remove(&index);
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
