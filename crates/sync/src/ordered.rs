//! Parallel crypto, ordered drain.
//!
//! One producer thread assigns nonces, and with them tickets, in order; worker threads
//! encrypt (or decrypt) in parallel and complete their tickets in whatever order they
//! finish; whichever thread drains hands the results on strictly in ticket order. This is
//! the shape of the kernel's WireGuard transmit path: a peer's packets must leave in nonce
//! order, or the receiver's replay window rejects the ones that fall too far behind.
//!
//! ```
//! use ferrowg_sync::ordered::OrderedQueue;
//!
//! let queue = OrderedQueue::new(4);
//! let first = queue.reserve().unwrap();
//! let second = queue.reserve().unwrap();
//! queue.complete(second, "b");
//! assert_eq!(queue.drain(|_| unreachable!()), 0); // "a" is not done yet
//! queue.complete(first, "a");
//! let mut out = Vec::new();
//! assert_eq!(queue.drain(|v| out.push(v)), 2);
//! assert_eq!(out, ["a", "b"]);
//! ```

use std::fmt;

use crate::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use crate::sync::{lock, Mutex};

/// A bounded ring of `capacity` slots that hands completed values out in ticket order.
///
/// Each slot is a mutex, taken once per completed value by the worker that completes it and
/// once by the drainer; with a batch of packets as the value that is one lock per batch.
pub struct OrderedQueue<T> {
    /// Slot `seq % capacity` holds the value of ticket `seq` once it is completed.
    slots: Box<[Slot<T>]>,
    /// Sequence number of the next ticket to hand out.
    tail: AtomicU64,
    /// Sequence number of the next value to drain. Written only by the thread that holds
    /// `draining`.
    head: AtomicU64,
    /// Set while one thread is draining: values must leave one at a time, in order.
    draining: AtomicBool,
}

/// A completed value, tagged with its ticket's sequence number so that a drainer can tell
/// it from a value of another lap of the ring.
type Slot<T> = Mutex<Option<(u64, T)>>;

/// The right to complete one slot of an [`OrderedQueue`], in the order it was reserved.
///
/// A ticket must be completed even when its packet turns out to be dropped (complete it
/// with a value that says so): the drain stops at the first slot not yet completed, so a
/// lost ticket stalls the queue for good.
#[must_use = "an uncompleted ticket stalls the queue forever"]
pub struct Ticket {
    seq: u64,
}

impl Ticket {
    /// The sequence number of this ticket: 0 for the first one reserved, then 1, 2, …
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Ticket").field(&self.seq).finish()
    }
}

impl<T> OrderedQueue<T> {
    /// A queue allowing `capacity` tickets to be outstanding (reserved but not yet drained).
    ///
    /// # Panics
    ///
    /// If `capacity` is 0.
    pub fn new(capacity: usize) -> Self {
        assert!(capacity > 0, "an OrderedQueue needs at least one slot");
        OrderedQueue {
            slots: (0..capacity).map(|_| Mutex::new(None)).collect(),
            tail: AtomicU64::new(0),
            head: AtomicU64::new(0),
            draining: AtomicBool::new(false),
        }
    }

    /// The number of slots.
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Reserves the next ticket, or returns `None` when `capacity` tickets are outstanding
    /// (back-pressure: the caller drains, or waits for a worker to).
    ///
    /// Meant for one producer thread, which hands out nonces in the same order; the order of
    /// tickets is only meaningful within one thread's calls.
    pub fn reserve(&self) -> Option<Ticket> {
        // Acquire pairs with the drainer's Release store of `head`: the slot of ticket
        // `seq` was last used by ticket `seq - capacity`, and whoever completes the new
        // ticket must find that old value already taken out. Through this edge (and the
        // hand-off of the ticket to the worker) the take happens-before the new complete.
        let head = self.head.load(Ordering::Acquire);
        // `tail` guards no data (values travel through the slot mutexes, tickets through
        // the caller's own hand-off), so Relaxed suffices. A CAS rather than a plain store,
        // so that a misuse from two threads cannot hand out the same ticket twice.
        let mut tail = self.tail.load(Ordering::Relaxed);
        loop {
            if tail - head >= self.capacity() as u64 {
                return None;
            }
            match self.tail.compare_exchange_weak(
                tail,
                tail + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Some(Ticket { seq: tail }),
                Err(current) => tail = current,
            }
        }
    }

    /// Stores the value of `ticket`. Any thread, any order. Does not drain: call
    /// [`drain`](Self::drain) afterwards (once per batch of completions is enough).
    pub fn complete(&self, ticket: Ticket, value: T) {
        let mut slot = lock(&self.slots[self.index(ticket.seq)]);
        // `reserve` hands out the slot only after its previous value was drained.
        assert!(
            slot.is_none(),
            "OrderedQueue: slot of ticket {} still occupied (ticket from another queue?)",
            ticket.seq
        );
        *slot = Some((ticket.seq, value));
    }

    /// Hands the completed values to `f` in ticket order, stopping at the first ticket not
    /// yet completed; returns how many it handed out.
    ///
    /// Only one thread drains at a time. A thread that finds another one draining returns
    /// 0 at once: that drainer is guaranteed to reach every value completed before this
    /// call (see the re-check below), so there is never a need to wait for it.
    pub fn drain(&self, mut f: impl FnMut(T)) -> usize {
        let mut drained = 0;
        loop {
            // Acquire pairs with the Release in `DrainGuard::drop`: the previous drainer's
            // calls of its `f` and its `head` happen-before ours, so values leave in order
            // even across threads, and the Relaxed accesses to `head` below are exact.
            // With Relaxed here a worker whose value the previous drainer already took can
            // win the flag, read a stale `head`, find that slot empty, and re-check the
            // wrong slot, stranding a value whose completer found the flag taken (loom:
            // `ordered_producer_reuses_slot`).
            if self
                .draining
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return drained;
            }
            let guard = DrainGuard(&self.draining);
            let mut head = self.head.load(Ordering::Relaxed);
            while let Some(value) = self.take(head) {
                head += 1;
                // Published before `f` runs so that the producer can reuse the slot at once.
                self.head.store(head, Ordering::Release);
                f(value);
                drained += 1;
            }
            drop(guard);

            // The re-check. Between our finding slot `head` empty and releasing the flag,
            // the worker of that slot may have completed it and then failed to take the
            // flag because we still held it; it returned, trusting us to drain its value.
            // So look once more after letting go, and go round again if the value is
            // there. (If another thread took the flag meanwhile, the `compare_exchange`
            // above fails and that thread inherits the same duty.) A worker that completes
            // after this look finds the flag free, unless a newer drainer holds it, which
            // does the same re-check when it lets go.
            if !self.is_ready(head) {
                return drained;
            }
        }
    }

    /// The number of outstanding tickets: reserved but not yet drained.
    pub fn len(&self) -> usize {
        // `head` first: it never passes `tail`, so a `tail` read after it is at least as
        // large (saturating anyway, the two reads are not one snapshot).
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Relaxed);
        tail.saturating_sub(head) as usize
    }

    /// Whether no ticket is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    /// The value of ticket `seq`, if completed.
    fn take(&self, seq: u64) -> Option<T> {
        let mut slot = lock(&self.slots[self.index(seq)]);
        match *slot {
            Some((tag, _)) if tag == seq => slot.take().map(|(_, value)| value),
            _ => None,
        }
    }

    fn is_ready(&self, seq: u64) -> bool {
        matches!(*lock(&self.slots[self.index(seq)]), Some((tag, _)) if tag == seq)
    }
}

impl<T> fmt::Debug for OrderedQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrderedQueue")
            .field("capacity", &self.capacity())
            .field("head", &self.head.load(Ordering::Relaxed))
            .field("tail", &self.tail.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Releases the draining flag, also when the drainer's `f` panics: a flag left set would
/// stall the queue for good.
struct DrainGuard<'a>(&'a AtomicBool);

impl Drop for DrainGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

#[cfg(all(test, not(ferrowg_loom)))]
mod tests {
    use super::*;

    #[test]
    fn back_pressure_at_capacity() {
        let queue = OrderedQueue::new(2);
        let a = queue.reserve().unwrap();
        let b = queue.reserve().unwrap();
        assert!(queue.reserve().is_none());
        assert_eq!(queue.len(), 2);
        queue.complete(b, 1);
        assert!(
            queue.reserve().is_none(),
            "room comes from draining, not completing"
        );
        queue.complete(a, 0);
        let mut out = Vec::new();
        assert_eq!(queue.drain(|v| out.push(v)), 2);
        assert_eq!(out, [0, 1]);
        assert!(queue.is_empty());
        assert_eq!(queue.reserve().unwrap().seq(), 2);
    }

    #[test]
    fn drain_stops_at_first_gap_across_laps() {
        let queue = OrderedQueue::new(3);
        let mut out = Vec::new();
        for lap in 0..5u64 {
            let tickets: Vec<_> = (0..3).map(|_| queue.reserve().unwrap()).collect();
            let mut tickets = tickets.into_iter();
            let (t0, t1, t2) = (
                tickets.next().unwrap(),
                tickets.next().unwrap(),
                tickets.next().unwrap(),
            );
            queue.complete(t2, lap * 3 + 2);
            queue.complete(t1, lap * 3 + 1);
            assert_eq!(queue.drain(|v| out.push(v)), 0);
            queue.complete(t0, lap * 3);
            assert_eq!(queue.drain(|v| out.push(v)), 3);
        }
        assert_eq!(out, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn panicking_drainer_releases_the_flag() {
        let queue = OrderedQueue::new(2);
        let a = queue.reserve().unwrap();
        let b = queue.reserve().unwrap();
        queue.complete(a, 0);
        queue.complete(b, 1);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            queue.drain(|_| panic!("sink failed"));
        }));
        assert!(result.is_err());
        // Value 0 was handed out (and lost with the panic); the queue still moves.
        let mut out = Vec::new();
        assert_eq!(queue.drain(|v| out.push(v)), 1);
        assert_eq!(out, [1]);
    }

    #[test]
    #[should_panic(expected = "still occupied")]
    fn foreign_ticket_is_caught() {
        let queue = OrderedQueue::new(1);
        let other = OrderedQueue::<u32>::new(1);
        queue.complete(queue.reserve().unwrap(), 1);
        queue.complete(other.reserve().unwrap(), 2);
    }
}
