//! `ferrowg-sync`: the concurrency primitives of the ferrowg data plane, small enough to be
//! model-checked with [loom](https://docs.rs/loom) (`tests/loom.rs`).
//!
//! - [`ordered::OrderedQueue`]: packets are encrypted/decrypted in parallel but leave in the
//!   order their nonces were assigned ("parallel crypto, ordered drain", as in the kernel's
//!   WireGuard).
//! - [`pool::Pool`]: a bounded pool of reusable buffers.
//! - [`handover::Sessions`]: the keypair hand-over between the protocol engine (under its lock)
//!   and receive workers that decrypt outside that lock.
//!
//! The unit of work on the data plane is a batch of up to 128 packets, so these types take
//! one lock per batch, never one per packet. There is no unsafe code.

#![forbid(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod handover;
pub mod ordered;
pub mod pool;

/// The primitives this crate is built on: `std`'s, or loom's under `--cfg ferrowg_loom`, so
/// that the same code is what runs in the daemon and what loom explores.
pub mod sync {
    #[cfg(ferrowg_loom)]
    pub use loom::{
        sync::{atomic, Arc, Mutex, MutexGuard},
        thread,
    };
    #[cfg(not(ferrowg_loom))]
    pub use std::{
        sync::{atomic, Arc, Mutex, MutexGuard},
        thread,
    };

    /// Locks `mutex`, ignoring poisoning: every critical section in this crate leaves its data
    /// consistent at every point a panic could occur (an `Option` taken or set, a `Vec`
    /// pushed or popped), so a panicking holder leaves nothing to repair.
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
