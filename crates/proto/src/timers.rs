//! The whitepaper's timer state machine, as deadlines instead of kernel timers.
//!
//! The event hooks (`on_*`) arm and cancel five deadlines exactly as the kernel's timers.c
//! does; `take_expired` hands back which ones have passed so the device can run the matching
//! actions (send a keepalive, retransmit an initiation, erase keys). Nothing here reads a
//! clock: every hook takes `now`, and the jitter is supplied by the caller's RNG.

use crate::constants::*;
use std::time::{Duration, Instant};

#[derive(Debug, Default, Clone)]
pub struct Timers {
    retransmit_handshake: Option<Instant>,
    send_keepalive: Option<Instant>,
    new_handshake: Option<Instant>,
    zero_key_material: Option<Instant>,
    persistent_keepalive: Option<Instant>,
    /// Retransmissions of the current handshake attempt.
    pub handshake_attempts: u32,
    /// Data arrived while a keepalive was already due: send one more after it.
    pub need_another_keepalive: bool,
    /// The initiator's receive-side last-chance rekey was already made for this session.
    pub sent_lastminute_handshake: bool,
    /// Persistent keepalive interval in seconds; 0 = off.
    pub persistent_keepalive_interval: u16,
}

/// Which deadlines had passed at a `take_expired` call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Expired {
    pub retransmit_handshake: bool,
    pub send_keepalive: bool,
    pub new_handshake: bool,
    pub zero_key_material: bool,
    pub persistent_keepalive: bool,
}

impl Expired {
    pub fn any(&self) -> bool {
        self.retransmit_handshake
            || self.send_keepalive
            || self.new_handshake
            || self.zero_key_material
            || self.persistent_keepalive
    }
}

fn take(deadline: &mut Option<Instant>, now: Instant) -> bool {
    match *deadline {
        Some(d) if d <= now => {
            *deadline = None;
            true
        }
        _ => false,
    }
}

impl Timers {
    /// Any authenticated message sent (handshake, keepalive, data): a keepalive would be
    /// redundant now.
    pub fn on_authenticated_packet_sent(&mut self) {
        self.send_keepalive = None;
    }

    /// Any authenticated message received: the peer is alive, no new handshake needed.
    pub fn on_authenticated_packet_received(&mut self) {
        self.new_handshake = None;
    }

    /// Any authenticated message sent or received restarts the persistent keepalive period.
    pub fn on_authenticated_packet_traversal(&mut self, now: Instant) {
        if self.persistent_keepalive_interval > 0 {
            self.persistent_keepalive =
                Some(now + Duration::from_secs(self.persistent_keepalive_interval.into()));
        }
    }

    /// Data (not a keepalive) sent: expect to hear back within keepalive + rekey timeout, or
    /// start a new handshake.
    pub fn on_data_sent(&mut self, now: Instant, jitter: Duration) {
        if self.new_handshake.is_none() {
            self.new_handshake = Some(now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + jitter);
        }
    }

    /// Data received: answer with a keepalive in 10 s unless we send something first.
    pub fn on_data_received(&mut self, now: Instant) {
        if self.send_keepalive.is_none() {
            self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
        } else {
            self.need_another_keepalive = true;
        }
    }

    /// An initiation was sent: retransmit if no response comes.
    pub fn on_handshake_initiated(&mut self, now: Instant, jitter: Duration) {
        self.retransmit_handshake = Some(now + REKEY_TIMEOUT + jitter);
    }

    /// A handshake completed (initiator: response consumed; responder: first message on the
    /// new keypair).
    pub fn on_handshake_complete(&mut self) {
        self.retransmit_handshake = None;
        self.handshake_attempts = 0;
        self.sent_lastminute_handshake = false;
    }

    /// New session keys exist: erase all key material if no handshake follows for 540 s.
    pub fn on_session_derived(&mut self, now: Instant) {
        self.zero_key_material = Some(now + ZERO_KEY_MATERIAL_AFTER);
    }

    /// The handshake attempts were abandoned.
    pub fn on_handshake_given_up(&mut self, now: Instant) {
        self.send_keepalive = None;
        if self.zero_key_material.is_none() {
            self.zero_key_material = Some(now + ZERO_KEY_MATERIAL_AFTER);
        }
    }

    /// Re-arms the keepalive after one was sent because more data had arrived meanwhile.
    pub fn rearm_keepalive(&mut self, now: Instant) {
        self.send_keepalive = Some(now + KEEPALIVE_TIMEOUT);
    }

    /// Changes the persistent keepalive interval; the caller sends a keepalive at once when
    /// it goes from off to on (as the kernel does).
    pub fn set_persistent_keepalive(&mut self, interval: u16) {
        self.persistent_keepalive_interval = interval;
        if interval == 0 {
            self.persistent_keepalive = None;
        }
    }

    /// Cancels everything (peer removed, interface down).
    pub fn stop_all(&mut self) {
        self.retransmit_handshake = None;
        self.send_keepalive = None;
        self.new_handshake = None;
        self.zero_key_material = None;
        self.persistent_keepalive = None;
        self.handshake_attempts = 0;
        self.need_another_keepalive = false;
        self.sent_lastminute_handshake = false;
    }

    pub fn is_retransmit_pending(&self) -> bool {
        self.retransmit_handshake.is_some()
    }
    pub fn is_zero_key_pending(&self) -> bool {
        self.zero_key_material.is_some()
    }
    pub fn is_new_handshake_pending(&self) -> bool {
        self.new_handshake.is_some()
    }
    pub fn is_keepalive_pending(&self) -> bool {
        self.send_keepalive.is_some()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.retransmit_handshake,
            self.send_keepalive,
            self.new_handshake,
            self.zero_key_material,
            self.persistent_keepalive,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Disarms and reports every deadline at or before `now`.
    pub fn take_expired(&mut self, now: Instant) -> Expired {
        Expired {
            retransmit_handshake: take(&mut self.retransmit_handshake, now),
            send_keepalive: take(&mut self.send_keepalive, now),
            new_handshake: take(&mut self.new_handshake, now),
            zero_key_material: take(&mut self.zero_key_material, now),
            persistent_keepalive: take(&mut self.persistent_keepalive, now),
        }
    }
}
