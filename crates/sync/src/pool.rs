//! A bounded pool of reusable items (packet buffers, batches).
//!
//! Buffers are taken and returned once per batch, so a mutex around a `Vec` is cheap enough
//! and obviously correct. The bound keeps a burst that allocated extra buffers from
//! pinning that memory forever: returns beyond the capacity are dropped.

use std::fmt;

use crate::sync::{lock, Mutex};

/// A LIFO pool holding at most `capacity` idle items. LIFO so that the buffer handed out
/// next is the one most recently used, likely still in cache.
pub struct Pool<T> {
    idle: Mutex<Vec<T>>,
    capacity: usize,
}

impl<T> Pool<T> {
    /// A pool holding at most `capacity` idle items, `prefill` of them (at most `capacity`)
    /// made up front by `make` so that the steady state allocates nothing.
    pub fn new(capacity: usize, prefill: usize, mut make: impl FnMut() -> T) -> Self {
        let mut idle = Vec::with_capacity(capacity);
        idle.extend((0..prefill.min(capacity)).map(|_| make()));
        Pool {
            idle: Mutex::new(idle),
            capacity,
        }
    }

    /// An idle item, or `None` if the pool is empty (the caller allocates, or waits).
    pub fn get(&self) -> Option<T> {
        lock(&self.idle).pop()
    }

    /// Returns `item` to the pool; drops it if the pool already holds `capacity` items.
    pub fn put(&self, item: T) {
        let mut idle = lock(&self.idle);
        if idle.len() < self.capacity {
            idle.push(item);
            return;
        }
        // Drop the surplus item after unlocking: freeing a large buffer is not free, and
        // other threads need not wait for it.
        drop(idle);
        drop(item);
    }

    /// The number of idle items.
    pub fn len(&self) -> usize {
        lock(&self.idle).len()
    }

    /// Whether no item is idle.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most idle items the pool keeps.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

impl<T> fmt::Debug for Pool<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("idle", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

#[cfg(all(test, not(ferrowg_loom)))]
mod tests {
    use super::*;

    #[test]
    fn prefill_get_put_accounting() {
        let mut made = 0;
        let pool = Pool::new(3, 2, || {
            made += 1;
            vec![0u8; 16]
        });
        assert_eq!(made, 2);
        assert_eq!(pool.len(), 2);
        let a = pool.get().unwrap();
        let b = pool.get().unwrap();
        assert!(pool.get().is_none());
        assert!(pool.is_empty());
        pool.put(a);
        pool.put(b);
        pool.put(vec![1u8; 16]);
        assert_eq!(pool.len(), 3);
        pool.put(vec![2u8; 16]); // beyond capacity: dropped
        assert_eq!(pool.len(), 3);
        assert_eq!(pool.get().unwrap(), vec![1u8; 16], "LIFO");
    }

    #[test]
    fn prefill_is_clamped_to_capacity() {
        let pool = Pool::new(1, 5, || 0u32);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.capacity(), 1);
    }
}
