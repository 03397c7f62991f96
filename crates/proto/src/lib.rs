//! `ferrowg-proto`: the WireGuard protocol as pure state machines.
//!
//! No sockets, threads, clock reads or global state: the caller passes the current time
//! (`Instant`, plus a wall-clock anchor for TAI64N timestamps) into every call that needs it,
//! injects the random number generator, owns the buffers and moves the datagrams. This makes
//! every handshake and timer rule testable in simulated time.
//!
//! Layout follows the kernel's: `constants`, `crypto`, `keys`, `messages`, `noise` (handshake),
//! `cookie` (mac1/mac2, cookie replies), `replay`, `tai64n`, `session` (keypairs), `timers`,
//! `ratelimiter`, `allowed_ips` (cryptokey routing), `index` (receiver indices), `peer`, and
//! `device`, which ties them together.
#![forbid(unsafe_code)]

pub mod allowed_ips;
pub mod constants;
pub mod cookie;
pub mod crypto;
pub mod device;
pub mod index;
pub mod keys;
pub mod messages;
pub mod noise;
pub mod peer;
pub mod ratelimiter;
pub mod replay;
pub mod session;
pub mod tai64n;
pub mod timers;

pub use keys::{PresharedKey, PrivateKey, PublicKey};
