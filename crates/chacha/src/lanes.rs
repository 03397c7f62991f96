//! Seal and open of up to eight messages under one key with the multi-buffer kernels: the
//! ChaCha20 blocks of all messages are dealt out sixteen at a time to the lanes of
//! [`keystream16`], the Poly1305 of the eight messages runs in the lanes of [`tags8`].

use core::arch::x86_64::{
    _mm512_add_epi32, _mm512_mask_mov_epi32, _mm512_set1_epi32, _mm512_set_epi32,
};

use crate::chacha16::{keystream16, LaneInputs};
use crate::poly8::tags8;
use crate::{Key, Message, LANES, TAG_LEN};

/// Consecutive lanes holding consecutive keystream blocks of one message: the `n` lanes from
/// `lane` hold its blocks from `block` on. Block 0 of a message is its Poly1305 key, block
/// b ≥ 1 encrypts bytes 64(b-1).. of its data. A round of sixteen lanes holds a few runs
/// (a 1420-byte message is 24 blocks), so finding a message's bytes is paid per run, not
/// per block.
#[derive(Clone, Copy, Default)]
struct Run {
    msg: usize,
    lane: usize,
    block: u32,
    n: usize,
}

/// Keystream blocks waiting for a lane, and the keystream of the last sixteen.
struct Dealer<'k> {
    key: &'k Key,
    inputs: LaneInputs,
    runs: [Run; 16],
    n_runs: usize,
    queued: usize,
    keystream: [[u8; 64]; 16],
    poly_keys: [[u8; 32]; LANES],
}

#[target_feature(enable = "avx512f,avx512ifma")]
pub fn seal(key: &Key, msgs: &mut [Message<'_>]) {
    debug_assert!(!msgs.is_empty() && msgs.len() <= LANES);
    let mut dealer = Dealer::new(key);
    for i in 0..msgs.len() {
        dealer.deal(msgs, i, 0..data_blocks(&msgs[i]) + 1);
    }
    dealer.flush(msgs);
    let tags = macs(&dealer.poly_keys, msgs);
    for (msg, tag) in msgs.iter_mut().zip(&tags) {
        let n = msg.buf.len();
        msg.buf[n - TAG_LEN..].copy_from_slice(tag);
    }
}

#[target_feature(enable = "avx512f,avx512ifma")]
pub fn open(key: &Key, msgs: &mut [Message<'_>], ok: &mut [bool]) {
    debug_assert!(!msgs.is_empty() && msgs.len() <= LANES);
    let mut dealer = Dealer::new(key);
    // The tags are checked on the ciphertext, so first the Poly1305 keys alone.
    for i in 0..msgs.len() {
        if msgs[i].buf.len() >= TAG_LEN {
            dealer.deal(msgs, i, 0..1);
        }
    }
    dealer.flush(msgs);
    let mut tags = macs(&dealer.poly_keys, msgs);
    for ((msg, tag), ok) in msgs.iter().zip(&tags).zip(ok.iter_mut()) {
        let n = msg.buf.len();
        *ok = n >= TAG_LEN && equal_tags(tag, &msg.buf[n - TAG_LEN..]);
    }
    // For a forged message this is the tag its ciphertext should have had.
    wipe(&mut tags);
    // Only the authentic ones are decrypted.
    for i in 0..msgs.len() {
        if ok[i] {
            dealer.deal(msgs, i, 1..data_blocks(&msgs[i]) + 1);
        }
    }
    dealer.flush(msgs);
}

/// ChaCha20 blocks covering a message's data (the buffer without the tag).
fn data_blocks(msg: &Message<'_>) -> u32 {
    (msg.buf.len().saturating_sub(TAG_LEN)).div_ceil(64) as u32
}

impl<'k> Dealer<'k> {
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn new(key: &'k Key) -> Self {
        Dealer {
            key,
            inputs: LaneInputs::zero(),
            runs: [Run::default(); 16],
            n_runs: 0,
            queued: 0,
            keystream: [[0; 64]; 16],
            poly_keys: [[0; 32]; LANES],
        }
    }

    /// Queues blocks `blocks` of message `msg`, running the kernel whenever all sixteen
    /// lanes are taken.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn deal(&mut self, msgs: &mut [Message<'_>], msg: usize, blocks: core::ops::Range<u32>) {
        let counter = msgs[msg].counter;
        let mut block = blocks.start;
        while block < blocks.end {
            let lane = self.queued;
            let n = (16 - lane).min((blocks.end - block) as usize);
            // Lanes lane..lane + n: counters block.., the message's nonce. Nonce word 0 is
            // zero in every WireGuard nonce and stays as `LaneInputs::zero` left it.
            let mask = (((1u32 << n) - 1) << lane) as u16;
            let iota = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
            let first = _mm512_set1_epi32(block.wrapping_sub(lane as u32) as i32);
            let inputs = &mut self.inputs;
            let blend = |old, v| _mm512_mask_mov_epi32(old, mask, v);
            inputs.counter = blend(inputs.counter, _mm512_add_epi32(first, iota));
            let (lo, hi) = (counter as u32 as i32, (counter >> 32) as u32 as i32);
            inputs.nonce[1] = blend(inputs.nonce[1], _mm512_set1_epi32(lo));
            inputs.nonce[2] = blend(inputs.nonce[2], _mm512_set1_epi32(hi));
            self.runs[self.n_runs] = Run {
                msg,
                lane,
                block,
                n,
            };
            self.n_runs += 1;
            self.queued += n;
            block += n as u32;
            if self.queued == 16 {
                self.flush(msgs);
            }
        }
    }

    /// Runs the queued blocks (the unused lanes of a last partial round compute blocks that
    /// nobody reads) and applies them.
    #[target_feature(enable = "avx512f")]
    fn flush(&mut self, msgs: &mut [Message<'_>]) {
        if self.queued == 0 {
            return;
        }
        keystream16(&self.key.words, self.inputs, &mut self.keystream);
        for run in &self.runs[..self.n_runs] {
            let mut ks = &self.keystream[run.lane..run.lane + run.n];
            let mut block = run.block;
            if block == 0 {
                self.poly_keys[run.msg].copy_from_slice(&ks[0][..32]);
                ks = &ks[1..];
                block = 1;
            }
            if ks.is_empty() {
                continue;
            }
            let msg = &mut msgs[run.msg];
            let data_len = msg.buf.len() - TAG_LEN;
            let start = 64 * (block as usize - 1);
            let end = data_len.min(start + 64 * ks.len());
            let out = &mut msg.buf[start..end];
            match msg.plaintext {
                None => xor_in_place(out, ks),
                // From the plaintext, which ends with zeros up to the buffer's length.
                Some(src) => xor_from(out, src.get(start..).unwrap_or_default(), ks),
            }
        }
        self.n_runs = 0;
        self.queued = 0;
    }
}

/// `out ^= keystream`, `out` no longer than the keystream.
#[inline]
#[target_feature(enable = "avx512f")]
fn xor_in_place(out: &mut [u8], ks: &[[u8; 64]]) {
    let whole = out.len() / 64;
    let (full, rest) = out.split_at_mut(64 * whole);
    for (chunk, k) in full.chunks_exact_mut(64).zip(ks) {
        xor64(chunk.try_into().unwrap(), k);
    }
    if let Some(k) = ks.get(whole) {
        rest.iter_mut().zip(k).for_each(|(d, k)| *d ^= k);
    }
}

/// `out = src ^ keystream`, where `src` may end early: it reads as zeros beyond its end.
#[inline]
#[target_feature(enable = "avx512f")]
fn xor_from(out: &mut [u8], src: &[u8], ks: &[[u8; 64]]) {
    let whole = out.len().min(src.len()) / 64;
    let (full, rest) = out.split_at_mut(64 * whole);
    for ((chunk, s), k) in full.chunks_exact_mut(64).zip(src.chunks_exact(64)).zip(ks) {
        xor64_from(chunk.try_into().unwrap(), s.try_into().unwrap(), k);
    }
    let src = &src[64 * whole..];
    for (i, d) in rest.iter_mut().enumerate() {
        *d = ks[whole + i / 64][i % 64] ^ src.get(i).copied().unwrap_or(0);
    }
}

impl Drop for Dealer<'_> {
    /// Keystream and one-time keys do not outlive the call. Plain stores kept alive by
    /// `black_box` rather than `zeroize`'s byte-by-byte volatile writes (1.3 % of the data
    /// plane's time in a profile, for 1.3 KB per eight messages).
    fn drop(&mut self) {
        self.keystream = [[0; 64]; 16];
        self.poly_keys = [[0; 32]; LANES];
        core::hint::black_box((&self.keystream, &self.poly_keys));
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn xor64(data: &mut [u8; 64], ks: &[u8; 64]) {
    for (d, k) in data.iter_mut().zip(ks) {
        *d ^= k;
    }
}

#[inline]
#[target_feature(enable = "avx512f")]
fn xor64_from(out: &mut [u8; 64], src: &[u8; 64], ks: &[u8; 64]) {
    for ((o, s), k) in out.iter_mut().zip(src).zip(ks) {
        *o = s ^ k;
    }
}

/// The tags of the messages' ciphertexts; lanes without a message repeat the last one.
#[target_feature(enable = "avx512f,avx512ifma")]
fn macs(poly_keys: &[[u8; 32]; LANES], msgs: &[Message<'_>]) -> [[u8; 16]; LANES] {
    let text = |i: usize| {
        let buf = &msgs[i.min(msgs.len() - 1)].buf;
        &buf[..buf.len().saturating_sub(TAG_LEN)]
    };
    let texts: [&[u8]; LANES] = core::array::from_fn(text);
    let mut keys: [[u8; 32]; LANES] = core::array::from_fn(|i| poly_keys[i.min(msgs.len() - 1)]);
    let mut tags = [[0u8; 16]; LANES];
    tags8(&keys, &texts, &mut tags);
    wipe(&mut keys);
    tags
}

/// Clears a stack copy of key material (plain stores kept by `black_box`, as in `Dealer`).
fn wipe<T: Copy + Default, const N: usize>(secret: &mut [T; N]) {
    *secret = [T::default(); N];
    core::hint::black_box(secret);
}

/// Compares two tags in time that does not depend on where they differ.
fn equal_tags(a: &[u8; 16], b: &[u8]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    core::hint::black_box(diff) == 0
}
