//! An allocator that wipes memory when it is freed: the binaries' `#[global_allocator]`.
//!
//! Our own key types zeroize themselves on drop, but copies live where we cannot reach them:
//! ring's expanded AEAD keys inside each keypair, buffers of crates that parse or format
//! configuration, strings that passed through `format!`. Wiping every block as it is freed
//! covers all of them at once. The cost is one `memset` per free; the data path recycles its
//! buffers and frees almost nothing per packet, so it does not show in the benchmarks.

use std::alloc::{GlobalAlloc, Layout, System};

/// Wraps an allocator `A`; every block is zero-filled before `A` frees it.
pub struct Wiping<A>(pub A);

/// The system allocator, wiping on free.
pub const WIPING_SYSTEM: Wiping<System> = Wiping(System);

// SAFETY: every method forwards to `A` with the caller's arguments unchanged; `dealloc` only
// writes within the block the caller owns (`ptr`, `layout.size()` bytes) before handing it
// back, and `realloc` is the trait's default (allocate, copy, `dealloc` the old block), so
// old blocks are wiped too.
unsafe impl<A: GlobalAlloc> GlobalAlloc for Wiping<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees about `layout`.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller owns `layout.size()` writable bytes at `ptr` until this call
        // returns. The block escapes into `black_box` before it is freed, so the compiler
        // cannot drop the zeroing as a store to dead memory.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
            self.0.dealloc(std::hint::black_box(ptr), layout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// The system allocator, counting the non-zero bytes it is asked to free.
    struct Inspecting {
        dirty_bytes: AtomicUsize,
        frees: AtomicUsize,
    }

    // SAFETY: forwards to `System`; `dealloc` reads the block, still owned, before freeing it.
    unsafe impl GlobalAlloc for Inspecting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: forwarded.
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: the block is allocated and `layout.size()` bytes long until freed below.
            let block = unsafe { std::slice::from_raw_parts(ptr, layout.size()) };
            let dirty = block.iter().filter(|&&b| b != 0).count();
            self.dirty_bytes.fetch_add(dirty, Ordering::Relaxed);
            self.frees.fetch_add(1, Ordering::Relaxed);
            // SAFETY: forwarded.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    fn roundtrip(alloc: &impl GlobalAlloc, size: usize) {
        let layout = Layout::from_size_align(size, 8).unwrap();
        // SAFETY: a non-zero layout; the block is written within its size and freed once.
        unsafe {
            let p = alloc.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xa5, size);
            let q = alloc.realloc(p, layout, size * 2);
            assert!(!q.is_null());
            assert_eq!(*q.add(size - 1), 0xa5, "realloc keeps the contents");
            std::ptr::write_bytes(q, 0x5a, size * 2);
            alloc.dealloc(q, Layout::from_size_align(size * 2, 8).unwrap());
        }
    }

    #[test]
    fn freed_blocks_reach_the_inner_allocator_zeroed() {
        let wiping = Wiping(Inspecting {
            dirty_bytes: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
        });
        for size in [1, 32, 4096, 1 << 20] {
            roundtrip(&wiping, size);
        }
        // Two frees per round trip: the block realloc left behind, and the final one.
        assert_eq!(wiping.0.frees.load(Ordering::Relaxed), 8);
        assert_eq!(wiping.0.dirty_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn the_check_sees_dirty_blocks() {
        let plain = Inspecting {
            dirty_bytes: AtomicUsize::new(0),
            frees: AtomicUsize::new(0),
        };
        roundtrip(&plain, 32);
        assert!(plain.dirty_bytes.load(Ordering::Relaxed) > 0);
    }
}
