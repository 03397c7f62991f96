//! Seal and open of up to eight messages under one key with the multi-buffer kernels: the
//! ChaCha20 blocks of all messages are dealt out sixteen at a time to the lanes of
//! [`keystream16`], the Poly1305 of the eight messages runs in the lanes of [`tags8`].

use crate::chacha16::{keystream16, LaneInputs};
use crate::poly8::tags8;
use crate::{Key, Message, LANES, TAG_LEN};

/// Where a lane's keystream block goes: block 0 of a message is its Poly1305 key, block
/// b ≥ 1 encrypts bytes 64(b-1).. of its data.
#[derive(Clone, Copy, Default)]
struct Dest {
    msg: usize,
    block: u32,
}

/// Keystream blocks waiting for a lane, and the keystream of the last sixteen.
struct Dealer<'k> {
    key: &'k Key,
    inputs: LaneInputs,
    dest: [Dest; 16],
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
    fn new(key: &'k Key) -> Self {
        Dealer {
            key,
            inputs: LaneInputs::default(),
            dest: [Dest::default(); 16],
            queued: 0,
            keystream: [[0; 64]; 16],
            poly_keys: [[0; 32]; LANES],
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn deal(&mut self, msgs: &mut [Message<'_>], msg: usize, blocks: core::ops::Range<u32>) {
        let counter = msgs[msg].counter;
        for block in blocks {
            let l = self.queued;
            self.inputs.counter[l] = block;
            self.inputs.nonce[0][l] = 0;
            self.inputs.nonce[1][l] = counter as u32;
            self.inputs.nonce[2][l] = (counter >> 32) as u32;
            self.dest[l] = Dest { msg, block };
            self.queued += 1;
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
        keystream16(&self.key.words, &self.inputs, &mut self.keystream);
        for (dest, ks) in self.dest[..self.queued].iter().zip(&self.keystream) {
            if dest.block == 0 {
                self.poly_keys[dest.msg].copy_from_slice(&ks[..32]);
                continue;
            }
            let msg = &mut msgs[dest.msg];
            let data_len = msg.buf.len() - TAG_LEN;
            let start = 64 * (dest.block as usize - 1);
            let end = data_len.min(start + 64);
            let out = &mut msg.buf[start..end];
            match msg.plaintext {
                // In place.
                None => match out.first_chunk_mut::<64>() {
                    Some(chunk) => xor64(chunk, ks),
                    None => out.iter_mut().zip(ks).for_each(|(d, k)| *d ^= k),
                },
                // From the plaintext, which ends with zeros up to the buffer's length.
                Some(src) => {
                    let src = src.get(start..).unwrap_or_default();
                    match (out.first_chunk_mut::<64>(), src.first_chunk::<64>()) {
                        (Some(chunk), Some(src)) => xor64_from(chunk, src, ks),
                        _ => {
                            for (i, (d, k)) in out.iter_mut().zip(ks).enumerate() {
                                *d = k ^ src.get(i).copied().unwrap_or(0);
                            }
                        }
                    }
                }
            }
        }
        self.queued = 0;
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
