//! loom models of the primitives: every interleaving (up to the preemption bound) is run.
//!
//! ```text
//! RUSTFLAGS="--cfg ferrowg_loom" LOOM_MAX_PREEMPTIONS=2 CARGO_TARGET_DIR=target/loom \
//!     cargo test -p ferrowg-sync --release --test loom
//! ```
#![cfg(ferrowg_loom)]

use ferrowg_sync::handover::{Reject, Role, Sessions};
use ferrowg_sync::ordered::{OrderedQueue, Ticket};
use ferrowg_sync::pool::Pool;
use ferrowg_sync::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use ferrowg_sync::sync::{thread, Arc, Mutex};

type Sink = Arc<Mutex<Vec<u64>>>;

/// A worker: completes its tickets in the given order, draining after each, as the
/// data-plane workers do after each batch.
fn worker(
    queue: &Arc<OrderedQueue<u64>>,
    out: &Sink,
    tickets: Vec<Ticket>,
) -> thread::JoinHandle<()> {
    let (queue, out) = (queue.clone(), out.clone());
    thread::spawn(move || {
        for ticket in tickets {
            let seq = ticket.seq();
            queue.complete(ticket, seq);
            queue.drain(|v| out.lock().unwrap().push(v));
        }
    })
}

/// After every thread is done, all completed values must already be out, in order: a
/// value left for the final drain was stranded by the threads.
fn check_drained(queue: &OrderedQueue<u64>, out: &Sink, expected: u64) {
    let out = out.lock().unwrap();
    assert_eq!(
        *out,
        (0..expected).collect::<Vec<_>>(),
        "stranded or out of order"
    );
    assert!(queue.is_empty());
    assert_eq!(queue.drain(|_| unreachable!()), 0);
}

/// Two workers complete one ticket each and race to drain.
#[test]
fn ordered_two_workers() {
    loom::model(|| {
        let queue = Arc::new(OrderedQueue::new(2));
        let out = Sink::default();
        let t0 = queue.reserve().unwrap();
        let t1 = queue.reserve().unwrap();
        assert!(queue.reserve().is_none());
        let a = worker(&queue, &out, vec![t0]);
        let b = worker(&queue, &out, vec![t1]);
        a.join().unwrap();
        b.join().unwrap();
        check_drained(&queue, &out, 2);
    });
}

/// One worker completes out of order (ticket 2 before ticket 0) while another holds
/// ticket 1.
#[test]
fn ordered_out_of_order_worker() {
    loom::model(|| {
        let queue = Arc::new(OrderedQueue::new(3));
        let out = Sink::default();
        let t0 = queue.reserve().unwrap();
        let t1 = queue.reserve().unwrap();
        let t2 = queue.reserve().unwrap();
        let a = worker(&queue, &out, vec![t2, t0]);
        let b = worker(&queue, &out, vec![t1]);
        a.join().unwrap();
        b.join().unwrap();
        check_drained(&queue, &out, 3);
    });
}

/// The producer reserves again while the workers run: when there is room, ticket 2 reuses
/// the slot of ticket 0 (capacity 2) and the producer completes and drains it itself.
#[test]
fn ordered_producer_reuses_slot() {
    loom::model(|| {
        let queue = Arc::new(OrderedQueue::new(2));
        let out = Sink::default();
        let t0 = queue.reserve().unwrap();
        let t1 = queue.reserve().unwrap();
        let a = worker(&queue, &out, vec![t0]);
        let b = worker(&queue, &out, vec![t1]);
        // Try, yield, try again. Without the yield loom never runs a worker's drain before
        // this `reserve`: its DPOR remembers only the last access to `head`, which is the
        // drainer's own load just before its store, so the race with our load goes unseen.
        let mut expected = 2;
        for _ in 0..2 {
            if let Some(t2) = queue.reserve() {
                assert_eq!(t2.seq(), 2);
                queue.complete(t2, 2);
                queue.drain(|v| out.lock().unwrap().push(v));
                expected = 3;
                break;
            }
            thread::yield_now();
        }
        a.join().unwrap();
        b.join().unwrap();
        check_drained(&queue, &out, expected);
    });
}

/// Two threads take and return items: an item is never out twice, and none is lost.
#[test]
fn pool_get_put() {
    loom::model(|| {
        let mut next = 0;
        let pool = Arc::new(Pool::new(2, 2, || {
            next += 1;
            next - 1
        }));
        let out = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (pool, out) = (pool.clone(), out.clone());
                thread::spawn(move || {
                    if let Some(item) = pool.get() {
                        assert!(!out[item].swap(true, Ordering::Relaxed), "{item} out twice");
                        out[item].store(false, Ordering::Relaxed);
                        pool.put(item);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut left: Vec<_> = std::iter::from_fn(|| pool.get()).collect();
        left.sort_unstable();
        assert_eq!(left, [0, 1]);
    });
}

/// A key that records being dropped ("zeroized").
struct Key {
    id: u32,
    zeroized: Arc<AtomicBool>,
}

impl Drop for Key {
    fn drop(&mut self) {
        self.zeroized.store(true, Ordering::Relaxed);
    }
}

/// The engine state as the daemon would hold it, plus how often it rotated so far.
type Engine = Arc<Mutex<(Sessions<Key>, u32)>>;

fn engine_with_current(id: u32) -> (Engine, Arc<AtomicBool>) {
    let zeroized = Arc::new(AtomicBool::new(false));
    let mut sessions = Sessions::new();
    sessions.install_next(
        id,
        Key {
            id,
            zeroized: zeroized.clone(),
        },
    );
    assert!(sessions.rotate());
    (Arc::new(Mutex::new((sessions, 0))), zeroized)
}

fn rotate_in(engine: &Engine, id: u32) {
    let mut guard = engine.lock().unwrap();
    let key = Key {
        id,
        zeroized: Arc::new(AtomicBool::new(false)),
    };
    guard.0.install_next(id, key);
    assert!(guard.0.rotate());
    guard.1 += 1;
}

/// A worker decrypts with keypair 1 while the engine rotates twice (1 goes current →
/// previous → dropped): the commit is rejected iff keypair 1 was rotated out by then, and
/// the key is zeroized only once nobody holds it.
#[test]
fn handover_worker_vs_two_rotations() {
    loom::model(|| {
        let (engine, zeroized) = engine_with_current(1);
        let w = {
            let (engine, zeroized) = (engine.clone(), zeroized.clone());
            thread::spawn(move || {
                let keypair = {
                    let guard = engine.lock().unwrap();
                    match guard.0.lookup(1) {
                        Some(keypair) => keypair,
                        None => {
                            assert_eq!(guard.1, 2, "keypair 1 gone before its time");
                            return;
                        }
                    }
                };
                // "Decrypt", outside the lock.
                assert_eq!(keypair.key().id, 1);
                assert!(
                    !zeroized.load(Ordering::Relaxed),
                    "key zeroized under a worker"
                );
                let mut guard = engine.lock().unwrap();
                let verdict = guard.0.commit(&keypair, 0);
                match guard.1 {
                    0 => assert_eq!(verdict, Ok(Role::Current)),
                    1 => assert_eq!(verdict, Ok(Role::Previous)),
                    _ => assert_eq!(verdict, Err(Reject::Retired)),
                }
            })
        };
        rotate_in(&engine, 2);
        rotate_in(&engine, 3);
        w.join().unwrap();
        assert!(zeroized.load(Ordering::Relaxed), "retired key not dropped");
    });
}

/// Two workers race with the same packet (counter 7) while the engine rotates once
/// (keypair 1 stays live as previous): exactly one is accepted.
#[test]
fn handover_same_counter_accepted_once() {
    loom::model(|| {
        let (engine, _) = engine_with_current(1);
        let accepted = Arc::new(AtomicUsize::new(0));
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let (engine, accepted) = (engine.clone(), accepted.clone());
                thread::spawn(move || {
                    let keypair = engine.lock().unwrap().0.lookup(1).unwrap();
                    let verdict = engine.lock().unwrap().0.commit(&keypair, 7);
                    match verdict {
                        Ok(_) => {
                            accepted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(reject) => assert_eq!(reject, Reject::Replayed),
                    }
                })
            })
            .collect();
        rotate_in(&engine, 2);
        for w in workers {
            w.join().unwrap();
        }
        assert_eq!(accepted.load(Ordering::Relaxed), 1);
    });
}
