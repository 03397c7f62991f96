//! Every protocol number in one place. Values follow the kernel's `messages.h` and the
//! whitepaper's timer table; where implementations differ the kernel's choice is taken and the
//! reason noted beside it.

use std::time::Duration;

/// `Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s`: hashed to form the initial chaining key.
pub const CONSTRUCTION: &[u8] = b"Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s";
/// The Noise prologue, mixed into the initial hash.
pub const IDENTIFIER: &[u8] = b"WireGuard v1 zx2c4 Jason@zx2c4.com";
pub const LABEL_MAC1: &[u8] = b"mac1----";
pub const LABEL_COOKIE: &[u8] = b"cookie--";

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;
pub const MAC_LEN: usize = 16;
pub const COOKIE_LEN: usize = 16;
pub const COOKIE_NONCE_LEN: usize = 24;
pub const TIMESTAMP_LEN: usize = 12;

/// Rekey once this many messages have been sent on a keypair (2^60; an often-quoted "260" is
/// a lost superscript).
pub const REKEY_AFTER_MESSAGES: u64 = 1 << 60;
/// Width of the replay bitmap in bits; one machine word of it is the ring's slack, so the
/// usable window is `REPLAY_BITS - 64` = 8128 counters as in the kernel and wireguard-go.
pub const REPLAY_BITS: u64 = 8192;
pub const REPLAY_WINDOW: u64 = REPLAY_BITS - 64;
/// No keypair may carry this many messages; the window size is subtracted so that the
/// receiver can still reject replays of the last counters (whitepaper, wireguard-go).
pub const REJECT_AFTER_MESSAGES: u64 = u64::MAX - (1 << 13);

pub const REKEY_AFTER_TIME: Duration = Duration::from_secs(120);
pub const REJECT_AFTER_TIME: Duration = Duration::from_secs(180);
pub const REKEY_ATTEMPT_TIME: Duration = Duration::from_secs(90);
pub const REKEY_TIMEOUT: Duration = Duration::from_secs(5);
/// Upper bound (exclusive) of the random jitter added to handshake retransmissions, HZ/3.
pub const REKEY_TIMEOUT_JITTER_MAX_MS: u64 = 334;
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many retransmissions fit in REKEY_ATTEMPT_TIME: after this many the peer gives up.
pub const MAX_TIMER_HANDSHAKES: u32 =
    (REKEY_ATTEMPT_TIME.as_secs() / REKEY_TIMEOUT.as_secs()) as u32;
/// Key material is erased after three reject periods without a new handshake.
pub const ZERO_KEY_MATERIAL_AFTER: Duration = Duration::from_secs(3 * 180);
/// The initiator of a session makes a last attempt to rekey on receive at
/// REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT, so the session never lapses while
/// traffic flows only towards it.
pub const REKEY_ON_RECEIVE_AGE: Duration = Duration::from_secs(180 - 10 - 5);

pub const COOKIE_SECRET_MAX_AGE: Duration = Duration::from_secs(120);
/// A cookie received from a peer is used for mac2 while younger than this (kernel: 120 - 5 s,
/// leaving room for the responder's secret to rotate while the message is in flight).
pub const COOKIE_SECRET_LATENCY: Duration = Duration::from_secs(5);

/// At most 50 initiations per second are accepted from one peer (one per 20 ms).
pub const INITIATIONS_PER_SECOND: u32 = 50;
pub const HANDSHAKE_FLOOD_INTERVAL: Duration =
    Duration::from_millis(1000 / INITIATIONS_PER_SECOND as u64);

/// Once under load, a device stays there for this long after the backlog last exceeded the
/// threshold (kernel and wireguard-go).
pub const UNDER_LOAD_AFTER_TIME: Duration = Duration::from_secs(1);

/// Per-source handshake rate limiter: 20 packets per second, bursts of 5.
pub const RATELIMIT_PACKETS_PER_SECOND: u64 = 20;
pub const RATELIMIT_BURST: u64 = 5;

/// Packets held per peer while no session exists; the oldest is dropped beyond this.
pub const MAX_STAGED_PACKETS: usize = 128;

/// Default interface MTU: 1500 minus the IPv6 outer overhead (40 + 8 + 32).
pub const DEFAULT_MTU: usize = 1420;

/// Message type tags (first byte; the next three bytes must be zero).
pub const MESSAGE_INITIATION: u8 = 1;
pub const MESSAGE_RESPONSE: u8 = 2;
pub const MESSAGE_COOKIE_REPLY: u8 = 3;
pub const MESSAGE_TRANSPORT: u8 = 4;

pub const INITIATION_LEN: usize = 148;
pub const RESPONSE_LEN: usize = 92;
pub const COOKIE_REPLY_LEN: usize = 64;
pub const TRANSPORT_HEADER_LEN: usize = 16;
/// Header plus tag: the smallest transport message (a keepalive) and the per-packet overhead.
pub const TRANSPORT_OVERHEAD: usize = TRANSPORT_HEADER_LEN + TAG_LEN;
pub const KEEPALIVE_LEN: usize = TRANSPORT_OVERHEAD;
/// Largest UDP payload we accept.
pub const MAX_DATAGRAM_LEN: usize = 65535;
/// Padding granularity of transport plaintexts.
pub const PADDING_MULTIPLE: usize = 16;
