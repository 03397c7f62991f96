//! The keypair hand-over between the protocol engine and receive workers.
//!
//! Receive workers decrypt outside the engine lock, so the protocol around each packet is:
//!
//! 1. under the lock, [`Sessions::lookup`] the keypair of the packet's receiver index and
//!    take an [`Arc`] of it;
//! 2. without the lock, decrypt with [`Keypair::key`];
//! 3. under the lock again, [`Sessions::commit`] the packet's counter.
//!
//! Meanwhile the engine may rotate keypairs (next → current → previous, the old previous
//! dropped). The `Arc` keeps the key alive, and intact, while a worker still decrypts with
//! it; the key's own `Drop` (zeroize) runs when the last such worker lets go. The commit
//! then rejects a packet whose keypair was retired in between — its replay window is gone
//! with it, so accepting would open a replay hole — and accepts each counter at most once,
//! even when two workers race with copies of the same packet.

use std::fmt;

use crate::sync::Arc;

/// A session key with the receiver index peers address it by.
pub struct Keypair<K> {
    receiver_index: u32,
    key: K,
}

impl<K> Keypair<K> {
    /// The index the peer puts in the packets for this keypair.
    pub fn receiver_index(&self) -> u32 {
        self.receiver_index
    }

    /// The key material; zeroize it in `K`'s `Drop`.
    pub fn key(&self) -> &K {
        &self.key
    }
}

impl<K> fmt::Debug for Keypair<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key.
        f.debug_struct("Keypair")
            .field("receiver_index", &self.receiver_index)
            .finish_non_exhaustive()
    }
}

/// Which of the live keypairs a commit went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The keypair in use for sending.
    Current,
    /// The keypair current before the last rotation, kept for packets still in flight.
    Previous,
    /// A keypair from a handshake not yet confirmed. In WireGuard a packet received on it
    /// is the confirmation: the caller then [`rotate`](Sessions::rotate)s.
    Next,
}

/// Why a commit was refused; either way the packet is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// The keypair is no longer current, previous or next.
    Retired,
    /// The counter was already accepted, or is too old for the replay window.
    Replayed,
}

/// The live keypairs of one peer, with a replay window each. Lives under the engine's
/// lock; every method is meant to be called with it held.
pub struct Sessions<K> {
    current: Option<Session<K>>,
    previous: Option<Session<K>>,
    next: Option<Session<K>>,
}

struct Session<K> {
    keypair: Arc<Keypair<K>>,
    replay: ReplayWindow,
}

impl<K> Sessions<K> {
    /// No keypairs.
    pub fn new() -> Self {
        Sessions {
            current: None,
            previous: None,
            next: None,
        }
    }

    /// Installs the keypair of a completed handshake as next, replacing (dropping) an
    /// unconfirmed next. An initiator, whose handshake is confirmed by the response itself,
    /// follows with [`rotate`](Self::rotate).
    pub fn install_next(&mut self, receiver_index: u32, key: K) -> Arc<Keypair<K>> {
        let keypair = Arc::new(Keypair {
            receiver_index,
            key,
        });
        self.next = Some(Session {
            keypair: keypair.clone(),
            replay: ReplayWindow::new(),
        });
        keypair
    }

    /// next → current → previous; the old previous is dropped. Returns false, changing
    /// nothing, when there is no next keypair.
    pub fn rotate(&mut self) -> bool {
        let Some(next) = self.next.take() else {
            return false;
        };
        self.previous = self.current.replace(next);
        true
    }

    /// Drops every keypair (e.g. when they all expired).
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// The keypair to send with.
    pub fn current(&self) -> Option<Arc<Keypair<K>>> {
        self.current.as_ref().map(|s| s.keypair.clone())
    }

    /// The live keypair with this receiver index, to decrypt a packet with outside the lock.
    pub fn lookup(&self, receiver_index: u32) -> Option<Arc<Keypair<K>>> {
        self.sessions()
            .find(|(_, s)| s.keypair.receiver_index == receiver_index)
            .map(|(_, s)| s.keypair.clone())
    }

    /// Accepts the packet with `counter`, decrypted with `keypair`, if `keypair` is still
    /// live and the counter is new to its replay window (which then records it).
    ///
    /// Identity is by pointer, not by receiver index: a receiver index may be handed out
    /// again to a later handshake, but an allocation cannot be reused while the caller's
    /// `Arc` keeps it alive.
    pub fn commit(&mut self, keypair: &Arc<Keypair<K>>, counter: u64) -> Result<Role, Reject> {
        let (role, session) = self
            .sessions_mut()
            .find(|(_, s)| Arc::ptr_eq(&s.keypair, keypair))
            .ok_or(Reject::Retired)?;
        if session.replay.check_and_set(counter) {
            Ok(role)
        } else {
            Err(Reject::Replayed)
        }
    }

    fn sessions(&self) -> impl Iterator<Item = (Role, &Session<K>)> {
        [
            (Role::Current, &self.current),
            (Role::Previous, &self.previous),
            (Role::Next, &self.next),
        ]
        .into_iter()
        .filter_map(|(role, s)| Some((role, s.as_ref()?)))
    }

    fn sessions_mut(&mut self) -> impl Iterator<Item = (Role, &mut Session<K>)> {
        [
            (Role::Current, &mut self.current),
            (Role::Previous, &mut self.previous),
            (Role::Next, &mut self.next),
        ]
        .into_iter()
        .filter_map(|(role, s)| Some((role, s.as_mut()?)))
    }
}

impl<K> Default for Sessions<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> fmt::Debug for Sessions<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let index = |s: &Option<Session<K>>| s.as_ref().map(|s| s.keypair.receiver_index);
        f.debug_struct("Sessions")
            .field("current", &index(&self.current))
            .field("previous", &index(&self.previous))
            .field("next", &index(&self.next))
            .finish()
    }
}

/// A sliding window over the last [`ReplayWindow::SIZE`] counters: each counter is
/// accepted at most once, and counters older than the window are refused.
#[derive(Clone, Debug, Default)]
pub struct ReplayWindow {
    /// One past the highest counter accepted (0: none yet).
    end: u64,
    /// Bit `i` set: counter `end - 1 - i` was accepted.
    seen: u64,
}

impl ReplayWindow {
    /// How many counters behind the highest one are still accepted (once).
    pub const SIZE: u64 = 64;

    /// An empty window.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `counter` and records it, or refuses it as a replay or as too old.
    pub fn check_and_set(&mut self, counter: u64) -> bool {
        if counter >= self.end {
            // A new highest counter: slide the window forward. (`u64::MAX` itself is
            // refused; no real session gets anywhere near it.)
            let Some(end) = counter.checked_add(1) else {
                return false;
            };
            let shift = end - self.end;
            self.seen = if shift >= Self::SIZE {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.end = end;
            return true;
        }
        let age = self.end - 1 - counter;
        if age >= Self::SIZE {
            return false;
        }
        let bit = 1 << age;
        let fresh = self.seen & bit == 0;
        self.seen |= bit;
        fresh
    }
}

#[cfg(all(test, not(ferrowg_loom)))]
mod tests {
    use super::*;

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::new();
        assert!(w.check_and_set(0));
        assert!(!w.check_and_set(0));
        assert!(w.check_and_set(5));
        assert!(w.check_and_set(3), "out of order but inside the window");
        assert!(!w.check_and_set(3));
        assert!(w.check_and_set(5 + 63));
        assert!(!w.check_and_set(4), "one behind the window");
        assert!(
            !w.check_and_set(5),
            "the window's oldest slot, already seen"
        );
        assert!(w.check_and_set(6), "never seen, inside the window…");
        assert!(!w.check_and_set(6), "…once");
        assert!(w.check_and_set(1000));
        assert!(
            !w.check_and_set(5 + 63),
            "jumped far ahead: everything older is gone"
        );
        assert!(!w.check_and_set(u64::MAX));
        assert!(w.check_and_set(u64::MAX - 1));
    }

    #[test]
    fn rotation_and_lookup() {
        let mut s = Sessions::new();
        assert!(!s.rotate());
        let k1 = s.install_next(1, "k1");
        assert!(s.current().is_none(), "next is not used for sending");
        assert_eq!(s.commit(&k1, 0), Ok(Role::Next));
        assert!(s.rotate());
        assert!(Arc::ptr_eq(&s.current().unwrap(), &k1));
        let k2 = s.install_next(2, "k2");
        assert!(s.rotate());
        assert_eq!(s.commit(&k1, 1), Ok(Role::Previous));
        assert_eq!(s.commit(&k2, 0), Ok(Role::Current));
        assert_eq!(s.commit(&k2, 0), Err(Reject::Replayed));
        let k3 = s.install_next(3, "k3");
        assert!(s.rotate());
        assert!(s.lookup(1).is_none());
        assert_eq!(s.commit(&k1, 2), Err(Reject::Retired));
        assert_eq!(*s.lookup(3).unwrap().key(), "k3");
        assert_eq!(s.commit(&k3, 0), Ok(Role::Current));
        s.clear();
        assert_eq!(s.commit(&k3, 1), Err(Reject::Retired));
    }

    #[test]
    fn identity_is_by_pointer_not_index() {
        let mut s = Sessions::new();
        let old = s.install_next(7, 1u32);
        s.rotate();
        s.clear();
        let new = s.install_next(7, 2u32);
        s.rotate();
        assert_eq!(s.commit(&old, 0), Err(Reject::Retired));
        assert_eq!(s.commit(&new, 0), Ok(Role::Current));
    }

    #[test]
    fn unconfirmed_next_is_replaced() {
        let mut s = Sessions::new();
        let a = s.install_next(1, ());
        let b = s.install_next(2, ());
        assert_eq!(s.commit(&a, 0), Err(Reject::Retired));
        assert_eq!(s.commit(&b, 0), Ok(Role::Next));
    }

    #[test]
    fn key_outlives_rotation_while_a_worker_holds_it() {
        struct Key(std::rc::Rc<std::cell::Cell<bool>>);
        impl Drop for Key {
            fn drop(&mut self) {
                self.0.set(true); // "zeroized"
            }
        }
        let zeroized = std::rc::Rc::new(std::cell::Cell::new(false));
        let mut s = Sessions::new();
        s.install_next(1, Key(zeroized.clone()));
        s.rotate();
        let held = s.lookup(1).unwrap();
        for index in [2, 3] {
            s.install_next(index, Key(Default::default()));
            s.rotate();
        }
        assert!(!zeroized.get(), "still in use by the worker");
        assert_eq!(s.commit(&held, 0), Err(Reject::Retired));
        drop(held);
        assert!(zeroized.get());
    }
}
