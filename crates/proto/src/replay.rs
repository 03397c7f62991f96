//! The receive-side anti-replay window (RFC 6479's ring of bitmap blocks, with the kernel's
//! and wireguard-go's acceptance rules).
//!
//! Transport counters may arrive reordered by the network, so a receiver accepts any counter
//! it has not seen that is at most [`REPLAY_WINDOW`] behind the greatest one accepted so far.
//! The bitmap is a ring of 64-bit blocks: moving the window forward only clears the blocks it
//! moves into, instead of shifting the whole bitmap, so each packet costs O(1) except for a
//! forward jump, which costs at most one pass over the ring.

use crate::constants::{REJECT_AFTER_MESSAGES, REPLAY_BITS, REPLAY_WINDOW};
use std::fmt;

const BLOCK_BITS: u64 = u64::BITS as u64;
const BLOCKS: usize = (REPLAY_BITS / BLOCK_BITS) as usize;

// A window of exactly `REPLAY_BITS - BLOCK_BITS` counters, aligned to blocks, spans exactly
// `BLOCKS` blocks, so no two counters inside it ever share a ring slot. A wider window would
// let the block being cleared on advance hold counters that are still inside the window.
const _: () = assert!(REPLAY_BITS.is_multiple_of(BLOCK_BITS));
const _: () = assert!(BLOCKS.is_power_of_two());
const _: () = assert!(REPLAY_WINDOW.is_multiple_of(BLOCK_BITS));
const _: () = assert!(REPLAY_WINDOW + BLOCK_BITS <= REPLAY_BITS);

/// Which counters of one keypair's receive direction have been accepted.
#[derive(Clone)]
pub struct ReplayWindow {
    /// One past the greatest counter accepted, or zero while none has been. Storing it offset
    /// by one lets a fresh window accept counter 0 through the ordinary path, with no separate
    /// "empty" flag to keep in step.
    next: u64,
    ring: [u64; BLOCKS],
}

impl ReplayWindow {
    pub const fn new() -> Self {
        ReplayWindow {
            next: 0,
            ring: [0; BLOCKS],
        }
    }

    /// The greatest counter accepted so far, if any.
    pub fn greatest(&self) -> Option<u64> {
        self.next.checked_sub(1)
    }

    /// Whether [`check_and_update`](Self::check_and_update) would accept `counter` now,
    /// without recording it. Lets the data path skip decrypting a replay and record the
    /// counter only once the packet has authenticated, so a forged packet cannot burn a
    /// counter that the genuine one still needs.
    pub fn would_accept(&self, counter: u64) -> bool {
        if !self.in_range(counter) {
            return false;
        }
        if counter >= self.next {
            // Ahead of everything seen: its slot is either the current block above the
            // greatest counter, or one that advancing would clear.
            return true;
        }
        let (slot, mask) = locate(counter);
        self.ring[slot] & mask == 0
    }

    /// Accepts `counter` if it is in range, not too old and not seen before, and records it;
    /// returns whether it was accepted. A refused counter leaves the window unchanged.
    pub fn check_and_update(&mut self, counter: u64) -> bool {
        if !self.in_range(counter) {
            return false;
        }
        if counter >= self.next {
            self.advance_to(counter);
        }
        let (slot, mask) = locate(counter);
        let seen = self.ring[slot] & mask != 0;
        self.ring[slot] |= mask;
        !seen
    }

    /// Neither past the message limit nor more than the window behind the greatest counter.
    fn in_range(&self, counter: u64) -> bool {
        // Counters at or beyond the limit are never sent (the sender rekeys first), and
        // refusing them first keeps the additions below clear of overflow.
        counter < REJECT_AFTER_MESSAGES && counter + REPLAY_WINDOW + 1 >= self.next
    }

    /// Makes `counter` the greatest, clearing every block between the old greatest's and its
    /// own: those slots still hold bits from a lap of the ring ago.
    fn advance_to(&mut self, counter: u64) {
        // A fresh window behaves as if its greatest were 0: the ring is all zero anyway.
        let current_block = self.next.saturating_sub(1) / BLOCK_BITS;
        let target_block = counter / BLOCK_BITS;
        let stale = (target_block - current_block).min(BLOCKS as u64);
        for step in 1..=stale {
            self.ring[ring_slot(current_block + step)] = 0;
        }
        self.next = counter + 1;
    }
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The raw bitmap is 1 KiB of noise; the greatest counter is what a reader wants.
        f.debug_struct("ReplayWindow")
            .field("greatest", &self.greatest())
            .finish_non_exhaustive()
    }
}

fn ring_slot(block: u64) -> usize {
    // Reduce before narrowing so 32-bit targets index the same slot.
    (block % BLOCKS as u64) as usize
}

/// The ring slot and the bit within it that track `counter`.
fn locate(counter: u64) -> (usize, u64) {
    (ring_slot(counter / BLOCK_BITS), 1 << (counter % BLOCK_BITS))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const W: u64 = REPLAY_WINDOW;
    const RAM: u64 = REJECT_AFTER_MESSAGES;

    fn run(window: &mut ReplayWindow, steps: &[(u64, bool)]) {
        for (index, &(counter, expected)) in steps.iter().enumerate() {
            assert_eq!(
                window.would_accept(counter),
                expected,
                "would_accept, step {} (counter {counter})",
                index + 1
            );
            assert_eq!(
                window.check_and_update(counter),
                expected,
                "check_and_update, step {} (counter {counter})",
                index + 1
            );
        }
    }

    #[test]
    fn kernel_self_test_sequence() {
        const L: u64 = W + 1;
        let steps = [
            (0, true),
            (1, true),
            (1, false),
            (9, true),
            (8, true),
            (7, true),
            (7, false),
            (L, true),
            (L - 1, true),
            (L - 1, false),
            (L - 2, true),
            (2, true),
            (2, false),
            (L + 16, true),
            (3, false),
            (L + 16, false),
            (4 * L, true),
            (4 * L - (L - 1), true),
            (10, false),
            (4 * L - L, false),
            (4 * L - (L + 1), false),
            (4 * L - (L - 2), true),
            (4 * L + 1 - L, false),
            (0, false),
            (RAM, false),
            (RAM - 1, true),
            (RAM, false),
            (RAM - 1, false),
            (RAM - 2, true),
            (RAM + 1, false),
            (RAM + 2, false),
            (RAM - 2, false),
            (RAM - 3, true),
            (0, false),
        ];
        run(&mut ReplayWindow::new(), &steps);
    }

    #[test]
    fn fresh_window() {
        let window = ReplayWindow::default();
        assert_eq!(window.greatest(), None);
        assert!(window.would_accept(0));
        assert!(window.would_accept(RAM - 1));
        assert!(!window.would_accept(RAM));
        assert!(!window.would_accept(u64::MAX));

        let mut window = ReplayWindow::new();
        assert!(!window.check_and_update(u64::MAX));
        assert_eq!(window.greatest(), None, "a refused counter changes nothing");
        assert!(window.check_and_update(0));
        assert_eq!(window.greatest(), Some(0));
        assert!(!window.check_and_update(0));
    }

    #[test]
    fn first_counter_far_from_zero() {
        let mut window = ReplayWindow::new();
        let start = 1 << 40;
        assert!(window.check_and_update(start));
        assert!(window.check_and_update(start - W));
        assert!(!window.check_and_update(start - W - 1));
        assert!(!window.check_and_update(0));
    }

    #[test]
    fn in_order_runs_across_several_laps() {
        let mut window = ReplayWindow::new();
        for counter in 0..=3 * REPLAY_BITS + 17 {
            assert!(window.check_and_update(counter), "counter {counter}");
            assert!(!window.check_and_update(counter), "replay of {counter}");
            assert_eq!(window.greatest(), Some(counter));
        }
        let greatest = 3 * REPLAY_BITS + 17;
        for counter in greatest - W..=greatest {
            assert!(!window.would_accept(counter), "counter {counter} was seen");
        }
        assert!(!window.would_accept(greatest - W - 1), "too old");
        assert!(window.would_accept(greatest + 1));
    }

    #[test]
    fn whole_window_in_order_then_oldest_edge() {
        // 1..=W then 0: 0 sits exactly W behind and is still inside the window.
        let mut window = ReplayWindow::new();
        for counter in 1..=W {
            assert!(window.check_and_update(counter));
        }
        run(&mut window, &[(0, true), (0, false)]);

        // 2..=W+1 then 1 (W behind, inside) and 0 (W + 1 behind, too old).
        let mut window = ReplayWindow::new();
        for counter in 2..=W + 1 {
            assert!(window.check_and_update(counter));
        }
        run(&mut window, &[(1, true), (0, false)]);
    }

    #[test]
    fn every_counter_of_a_window_in_reverse() {
        for base in [0, 1, 63, 64, 65, 1_000_000_007, RAM - 1 - W] {
            let mut window = ReplayWindow::new();
            for counter in (base..=base + W).rev() {
                assert!(window.check_and_update(counter), "base {base}: {counter}");
                assert_eq!(window.greatest(), Some(base + W));
            }
            for counter in base..=base + W {
                assert!(
                    !window.would_accept(counter),
                    "base {base}: replay {counter}"
                );
            }
            if base > 0 {
                assert!(!window.check_and_update(base - 1), "base {base}: too old");
            }
        }
    }

    #[test]
    fn reverse_window_then_newer() {
        // W..=1 backwards, then one newer: 0 is now W + 1 behind, too old.
        let mut window = ReplayWindow::new();
        for counter in (1..=W).rev() {
            assert!(window.check_and_update(counter));
        }
        run(&mut window, &[(W + 1, true), (0, false)]);

        // W..=1 backwards, then 0 while still inside, then one newer. 1 stays exactly W
        // behind, so its replay is refused by its bit rather than by its age.
        let mut window = ReplayWindow::new();
        for counter in (1..=W).rev() {
            assert!(window.check_and_update(counter));
        }
        run(
            &mut window,
            &[(0, true), (W + 1, true), (1, false), (0, false)],
        );
    }

    #[test]
    fn bursts_far_ahead_clear_stale_bits() {
        // Fill a whole window, then jump by distances around block and ring sizes; every
        // counter newly inside the window must be fresh, every one seen before must not.
        let jumps = [
            1,
            63,
            64,
            65,
            W - 1,
            W,
            W + 1,
            REPLAY_BITS - 1,
            REPLAY_BITS,
            REPLAY_BITS + 1,
            2 * REPLAY_BITS + 64,
            1 << 33,
        ];
        for jump in jumps {
            for offset in [0, 1, 31, 63] {
                let mut window = ReplayWindow::new();
                let first = 10 * REPLAY_BITS + offset;
                for counter in first..=first + W {
                    assert!(window.check_and_update(counter));
                }
                let old_greatest = first + W;
                let new_greatest = old_greatest + jump;
                assert!(window.check_and_update(new_greatest), "jump {jump}");
                for counter in new_greatest.saturating_sub(W)..new_greatest {
                    let fresh = counter > old_greatest;
                    assert_eq!(
                        window.would_accept(counter),
                        fresh,
                        "jump {jump}, offset {offset}, counter {counter}"
                    );
                }
                assert!(!window.would_accept(new_greatest - W - 1));
            }
        }
    }

    #[test]
    fn would_accept_does_not_record() {
        let mut window = ReplayWindow::new();
        assert!(window.check_and_update(100));
        for _ in 0..3 {
            assert!(window.would_accept(50));
            assert!(window.would_accept(5000));
        }
        assert_eq!(window.greatest(), Some(100));
        assert!(window.check_and_update(50));
        assert!(!window.would_accept(50));
        assert!(window.check_and_update(5000));
        assert_eq!(window.greatest(), Some(5000));
    }

    #[test]
    fn old_counter_does_not_move_greatest() {
        let mut window = ReplayWindow::new();
        assert!(window.check_and_update(20_000));
        assert!(window.check_and_update(19_000));
        assert!(!window.check_and_update(5));
        assert_eq!(window.greatest(), Some(20_000));
    }

    /// The rule with no ring in it: a set of every accepted counter.
    #[derive(Default)]
    struct Model {
        accepted: HashSet<u64>,
        greatest: Option<u64>,
    }

    impl Model {
        fn would_accept(&self, counter: u64) -> bool {
            let too_old = matches!(self.greatest, Some(g) if g > counter && g - counter > W);
            counter < RAM && !too_old && !self.accepted.contains(&counter)
        }

        fn check_and_update(&mut self, counter: u64) -> bool {
            if !self.would_accept(counter) {
                return false;
            }
            self.accepted.insert(counter);
            self.greatest = self.greatest.max(Some(counter));
            true
        }
    }

    /// A counter to try, mostly relative to the greatest seen so the steps land where the
    /// ring's edge cases are.
    #[derive(Debug, Clone)]
    enum Step {
        Ahead(u64),
        Behind(u64),
        Exactly(u64),
        /// Next to the boundary of the block `blocks` away from the greatest's block.
        BlockEdge {
            blocks: i64,
            offset: i8,
        },
    }

    impl Step {
        fn counter(&self, greatest: Option<u64>) -> u64 {
            let g = greatest.unwrap_or(0);
            match *self {
                Step::Ahead(delta) => g.saturating_add(delta),
                Step::Behind(delta) => g.saturating_sub(delta),
                Step::Exactly(counter) => counter,
                Step::BlockEdge { blocks, offset } => {
                    let block = (g / BLOCK_BITS) as i128 + blocks as i128;
                    let edge = block * BLOCK_BITS as i128 + offset as i128;
                    edge.clamp(0, u64::MAX as i128) as u64
                }
            }
        }
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0u64..4).prop_map(Step::Ahead),
            2 => (0u64..300).prop_map(Step::Ahead),
            1 => (REPLAY_BITS - 70..REPLAY_BITS * 3).prop_map(Step::Ahead),
            1 => ((1u64 << 32)..(1u64 << 50)).prop_map(Step::Ahead),
            4 => (0u64..300).prop_map(Step::Behind),
            3 => (W - 70..=W + 70).prop_map(Step::Behind),
            1 => (W + 1..u64::MAX).prop_map(Step::Behind),
            2 => (-130i64..130, -1i8..=1).prop_map(|(blocks, offset)| Step::BlockEdge { blocks, offset }),
            1 => (0u64..20_000).prop_map(Step::Exactly),
            1 => (RAM - 20..=RAM + 20).prop_map(Step::Exactly),
            1 => (RAM - 3 * REPLAY_BITS..RAM).prop_map(Step::Exactly),
            1 => Just(Step::Exactly(u64::MAX)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn agrees_with_model(steps in prop::collection::vec(step(), 1..400)) {
            let mut window = ReplayWindow::new();
            let mut model = Model::default();
            for (index, step) in steps.iter().enumerate() {
                let counter = step.counter(model.greatest);
                let expected = model.would_accept(counter);
                prop_assert_eq!(window.would_accept(counter), expected,
                    "would_accept at step {} ({:?} -> {})", index, step, counter);
                prop_assert_eq!(window.check_and_update(counter), model.check_and_update(counter),
                    "check_and_update at step {} ({:?} -> {})", index, step, counter);
                prop_assert_eq!(window.greatest(), model.greatest);
            }
        }
    }
}
