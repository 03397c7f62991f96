//! Transport keypairs and the per-peer session slots.
//!
//! A `Keypair` is immutable once made (keys, indices, birth, role) and is shared behind an
//! `Arc`, so the data plane can seal and open on worker threads while the peer state machine
//! keeps the mutable parts — the send counter and the replay window — in its `Session` slot,
//! which only the peer's ordered stage touches.

use crate::constants::*;
use crate::crypto::{AeadKey, AeadMessage, AuthError};
use crate::messages::TransportHeader;
use crate::noise::SessionKeys;
use crate::replay::ReplayWindow;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The keys of one completed handshake.
pub struct Keypair {
    /// Our index: peers put it in the transport messages they send us on this keypair.
    pub local_index: u32,
    /// The peer's index: we put it in the transport messages we send.
    pub remote_index: u32,
    /// True if we sent the initiation; only the initiator rekeys on time.
    pub is_initiator: bool,
    pub birth: Instant,
    sending: AeadKey,
    receiving: AeadKey,
}

/// Indices and role only: the keys are never printed.
impl std::fmt::Debug for Keypair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keypair")
            .field("local_index", &self.local_index)
            .field("remote_index", &self.remote_index)
            .field("is_initiator", &self.is_initiator)
            .finish_non_exhaustive()
    }
}

impl Keypair {
    pub fn new(
        keys: &SessionKeys,
        is_initiator: bool,
        local_index: u32,
        remote_index: u32,
        birth: Instant,
    ) -> Self {
        Keypair {
            local_index,
            remote_index,
            is_initiator,
            birth,
            sending: AeadKey::new(&keys.send),
            receiving: AeadKey::new(&keys.recv),
        }
    }

    pub fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.birth)
    }

    /// Seals a transport message in place. `buf[16..16 + padded_len]` holds the padded
    /// plaintext; the header is written in front and the tag behind. Returns the message
    /// length (`padded_len + 32`).
    pub fn seal(&self, counter: u64, buf: &mut [u8], padded_len: usize) -> usize {
        let total = TRANSPORT_HEADER_LEN + padded_len + TAG_LEN;
        self.write_header(counter, buf);
        self.sending
            .seal_in_place(counter, &[], &mut buf[TRANSPORT_HEADER_LEN..total]);
        total
    }

    /// Writes the header of a transport message with `counter` into `buf[..16]`.
    pub fn write_header(&self, counter: u64, buf: &mut [u8]) {
        TransportHeader {
            receiver: self.remote_index,
            counter,
        }
        .write(buf);
    }

    /// Seals the encrypted parts (`buf[16..]`) of transport messages whose headers are
    /// written; see [`AeadKey::seal_many`].
    pub fn seal_many(&self, msgs: &mut [AeadMessage<'_>]) {
        self.sending.seal_many(msgs)
    }

    /// Opens the encrypted parts (`buf[16..]`) of transport messages; see
    /// [`AeadKey::open_many`].
    pub fn open_many(&self, msgs: &mut [AeadMessage<'_>], ok: &mut [bool]) {
        self.receiving.open_many(msgs, ok)
    }

    /// Opens a whole transport message in place; the plaintext is left at
    /// `buf[16..16 + returned length]`.
    pub fn open(&self, counter: u64, buf: &mut [u8]) -> Result<usize, AuthError> {
        if buf.len() < TRANSPORT_OVERHEAD {
            return Err(AuthError);
        }
        self.receiving
            .open_in_place(counter, &[], &mut buf[TRANSPORT_HEADER_LEN..])
    }
}

/// One of a peer's three slots (previous, current, next): a keypair plus the state that
/// changes per packet.
pub struct Session {
    pub keypair: Arc<Keypair>,
    send_counter: u64,
    sending_valid: bool,
    replay: ReplayWindow,
}

impl Session {
    pub fn new(keypair: Keypair) -> Self {
        Session {
            keypair: Arc::new(keypair),
            send_counter: 0,
            sending_valid: true,
            replay: ReplayWindow::new(),
        }
    }

    /// Whether this session may still send now (age, counter and validity).
    pub fn can_send(&self, now: Instant) -> bool {
        self.sending_valid
            && self.keypair.age(now) < REJECT_AFTER_TIME
            && self.send_counter < REJECT_AFTER_MESSAGES
    }

    /// Takes the next nonce, or `None` if the session can no longer send.
    pub fn next_counter(&mut self, now: Instant) -> Option<u64> {
        if !self.can_send(now) {
            return None;
        }
        let c = self.send_counter;
        self.send_counter += 1;
        Some(c)
    }

    /// Messages sent so far (the next nonce).
    pub fn send_counter(&self) -> u64 {
        self.send_counter
    }

    /// Stops sending on this session (private key changed, interface down) while still
    /// accepting what the peer already had in flight.
    pub fn invalidate_sending(&mut self) {
        self.sending_valid = false;
    }

    /// Whether a message received now on this session may be accepted before decryption.
    pub fn can_receive(&self, now: Instant, counter: u64) -> bool {
        self.keypair.age(now) < REJECT_AFTER_TIME && self.replay.would_accept(counter)
    }

    /// Records an authenticated counter; false if it is a replay or too old.
    pub fn accept_counter(&mut self, counter: u64) -> bool {
        self.replay.check_and_update(counter)
    }
}

/// The previous/current/next slots of one peer.
#[derive(Default)]
pub struct Sessions {
    // Boxed: a session carries a 1 KiB replay window, and most peers of a large
    // configuration are idle with no session at all (an idle peer costs ~0.6 KiB, not ~4).
    pub previous: Option<Box<Session>>,
    pub current: Option<Box<Session>>,
    pub next: Option<Box<Session>>,
}

/// Which slot a session sits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Previous,
    Current,
    Next,
}

impl Sessions {
    /// Local indices of all held keypairs (to release them from the index table).
    pub fn local_indices(&self) -> impl Iterator<Item = u32> + '_ {
        [&self.previous, &self.current, &self.next]
            .into_iter()
            .flatten()
            .map(|s| s.keypair.local_index)
    }

    pub fn find(&self, local_index: u32) -> Option<Slot> {
        let has =
            |s: &Option<Box<Session>>| matches!(s, Some(s) if s.keypair.local_index == local_index);
        if has(&self.current) {
            Some(Slot::Current)
        } else if has(&self.previous) {
            Some(Slot::Previous)
        } else if has(&self.next) {
            Some(Slot::Next)
        } else {
            None
        }
    }

    pub fn get(&self, slot: Slot) -> Option<&Session> {
        match slot {
            Slot::Previous => self.previous.as_deref(),
            Slot::Current => self.current.as_deref(),
            Slot::Next => self.next.as_deref(),
        }
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Session> {
        match slot {
            Slot::Previous => self.previous.as_deref_mut(),
            Slot::Current => self.current.as_deref_mut(),
            Slot::Next => self.next.as_deref_mut(),
        }
    }

    /// Installs a keypair we derived as initiator: usable at once. Returns the local indices
    /// of sessions that were dropped.
    pub fn install_as_initiator(&mut self, session: Session) -> Vec<u32> {
        let mut dropped = Vec::new();
        if let Some(next) = self.next.take() {
            // A pending responder session never confirmed: it becomes "previous" so packets
            // the peer already sent on it still decrypt; the old current is dropped.
            if let Some(old) = self.current.take() {
                dropped.push(old.keypair.local_index);
            }
            if let Some(old) = self.previous.replace(next) {
                dropped.push(old.keypair.local_index);
            }
        } else if let Some(old) = self.previous.take() {
            dropped.push(old.keypair.local_index);
            self.previous = self.current.take();
        } else {
            self.previous = self.current.take();
        }
        self.current = Some(Box::new(session));
        dropped
    }

    /// Installs a keypair we derived as responder: it waits in "next" until the initiator
    /// confirms it with its first transport message. Previous is dropped.
    pub fn install_as_responder(&mut self, session: Session) -> Vec<u32> {
        let mut dropped = Vec::new();
        if let Some(old) = self.next.replace(Box::new(session)) {
            dropped.push(old.keypair.local_index);
        }
        if let Some(old) = self.previous.take() {
            dropped.push(old.keypair.local_index);
        }
        dropped
    }

    /// The first authenticated message on "next" confirms it: it becomes current.
    pub fn confirm_next(&mut self) -> Vec<u32> {
        let mut dropped = Vec::new();
        if let Some(next) = self.next.take() {
            if let Some(old) = self.previous.take() {
                dropped.push(old.keypair.local_index);
            }
            self.previous = self.current.take();
            self.current = Some(next);
        }
        dropped
    }

    pub fn clear(&mut self) -> Vec<u32> {
        let v: Vec<u32> = self.local_indices().collect();
        *self = Sessions::default();
        v
    }

    pub fn invalidate_sending(&mut self) {
        for s in [&mut self.current, &mut self.next].into_iter().flatten() {
            s.invalidate_sending();
        }
    }
}
