//! The primitives under real threads (std); `tests/loom.rs` explores the interleavings.
#![cfg(not(ferrowg_loom))]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use ferrowg_sync::handover::{Reject, Sessions};
use ferrowg_sync::ordered::{OrderedQueue, Ticket};
use ferrowg_sync::pool::Pool;

/// xorshift64: enough randomness to shuffle completions, no dependency.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// 4 workers complete 100k tickets in shuffled order and drain after each batch; the
/// output must be exactly 0..N, and all of it drained by the time the threads are joined.
#[test]
fn ordered_many_threads_strict_order_nothing_stranded() {
    const N: u64 = 100_000;
    const WORKERS: usize = 4;
    let queue = Arc::new(OrderedQueue::new(64));
    let out = Arc::new(Mutex::new(Vec::with_capacity(N as usize)));
    let drained_total = Arc::new(AtomicUsize::new(0));

    let mut senders = Vec::new();
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let (tx, rx) = mpsc::channel::<Ticket>();
        senders.push(tx);
        let (queue, out, drained_total) = (queue.clone(), out.clone(), drained_total.clone());
        workers.push(thread::spawn(move || {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w as u64 + 1));
            while let Ok(first) = rx.recv() {
                // Whatever else is already waiting (never block while holding tickets:
                // the producer may be waiting for them to drain).
                let mut batch = vec![first];
                batch.extend(rx.try_iter().take(7));
                while !batch.is_empty() {
                    let ticket = batch.swap_remove(rng.below(batch.len()));
                    let seq = ticket.seq();
                    queue.complete(ticket, seq);
                }
                let n = queue.drain(|v| out.lock().unwrap().push(v));
                drained_total.fetch_add(n, Ordering::Relaxed);
            }
        }));
    }

    let mut rng = Rng(42);
    let mut reserved = 0;
    while reserved < N {
        match queue.reserve() {
            Some(ticket) => {
                senders[rng.below(WORKERS)].send(ticket).unwrap();
                reserved += 1;
            }
            None => thread::yield_now(),
        }
    }
    drop(senders);
    for worker in workers {
        worker.join().unwrap();
    }

    assert!(queue.is_empty(), "values stranded: {queue:?}");
    assert_eq!(queue.drain(|_| unreachable!()), 0);
    assert_eq!(drained_total.load(Ordering::Relaxed), N as usize);
    let out = out.lock().unwrap();
    assert_eq!(out.len(), N as usize);
    assert!(out.iter().copied().eq(0..N), "out of order");
}

/// Threads hammer a pool of distinct items: no item is ever out twice, none is lost.
#[test]
fn pool_items_never_handed_out_twice() {
    const ITEMS: usize = 8;
    let pool = Arc::new(Pool::new(ITEMS, ITEMS, {
        let mut next = 0;
        move || {
            next += 1;
            next - 1
        }
    }));
    let out: Arc<Vec<AtomicBool>> = Arc::new((0..ITEMS).map(|_| AtomicBool::new(false)).collect());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (pool, out) = (pool.clone(), out.clone());
            thread::spawn(move || {
                for _ in 0..20_000 {
                    if let Some(item) = pool.get() {
                        assert!(!out[item].swap(true, Ordering::AcqRel), "{item} out twice");
                        out[item].store(false, Ordering::Release);
                        pool.put(item);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut left: Vec<_> = std::iter::from_fn(|| pool.get()).collect();
    left.sort_unstable();
    assert_eq!(left, (0..ITEMS).collect::<Vec<_>>());
}

/// Many workers replay the same counters while the engine keeps rotating: every
/// (keypair, counter) is accepted at most once, and only while the keypair is live.
#[test]
fn handover_counters_accepted_at_most_once_under_rotation() {
    let engine = Arc::new(Mutex::new(Sessions::new()));
    {
        let mut s = engine.lock().unwrap();
        s.install_next(0, 0u32);
        s.rotate();
    }
    let accepted = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (engine, accepted) = (engine.clone(), accepted.clone());
            thread::spawn(move || {
                for counter in 0..2_000u64 {
                    let index = (counter % 3) as u32;
                    let Some(keypair) = engine.lock().unwrap().lookup(index) else {
                        continue;
                    };
                    let _plaintext = keypair.key(); // "decrypt" outside the lock
                    let verdict = engine.lock().unwrap().commit(&keypair, counter);
                    match verdict {
                        Ok(_) => {
                            // Receiver indices are reused by later keypairs; the key is unique.
                            let id = *keypair.key();
                            let fresh = accepted.lock().unwrap().insert((id, counter));
                            assert!(fresh, "counter {counter} of keypair {id} accepted twice");
                        }
                        Err(Reject::Retired | Reject::Replayed) => {}
                    }
                }
            })
        })
        .collect();
    for round in 1..200u32 {
        let mut s = engine.lock().unwrap();
        s.install_next(round % 3, round);
        s.rotate();
        drop(s);
        thread::yield_now();
    }
    for w in workers {
        w.join().unwrap();
    }
    assert!(!accepted.lock().unwrap().is_empty());
}
