//! ChaCha20-Poly1305 (RFC 8439) with an empty associated data, for batches of WireGuard
//! transport messages that share a key.
//!
//! One message at a time, the AEAD is ring's. A batch of messages under one key goes through
//! the multi-buffer kernels when the CPU has AVX-512 F and IFMA: ChaCha20 sixteen blocks at
//! once from any mix of messages ([`chacha16`]) and Poly1305 eight messages at once
//! ([`poly8`]). Short messages are where one-message code loses most: a 1420-byte packet is
//! 23 ChaCha20 blocks and its Poly1305 key setup is paid per message. `disable` (ferrowgd's
//! `FERROWG_NO_AVX512=1`) turns the kernels off at run time.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

#[cfg(target_arch = "x86_64")]
mod chacha16;
#[cfg(target_arch = "x86_64")]
mod poly8;
#[cfg(target_arch = "x86_64")]
mod simd;

use std::sync::atomic::{AtomicU8, Ordering};

use ring::aead;
use zeroize::Zeroize;

pub const KEY_LEN: usize = 32;
pub const TAG_LEN: usize = 16;

/// Messages per Poly1305 pass: the lanes of one `tags8`.
pub const LANES: usize = 8;

/// Below this many messages a group of up to [`LANES`] goes through ring one by one: the
/// eight Poly1305 lanes cost the same whether one or eight of them carry a message, and
/// opening spends a round of sixteen ChaCha20 lanes on the Poly1305 keys alone. At 1420
/// bytes (criterion, `benches/batch.rs`) against ring: two messages seal at 0.90x its speed
/// and open at 0.75x, three at 1.07x / 0.90x, four at 1.24x / 1.07x, eight at 1.58x / 1.3x.
pub const MIN_BATCH: usize = 4;

/// A ChaCha20-Poly1305 key for many messages.
pub struct Key {
    ring: aead::LessSafeKey,
    words: [u32; 8],
}

impl Key {
    pub fn new(key: &[u8; KEY_LEN]) -> Key {
        // CHACHA20_POLY1305 accepts any 32-byte key.
        let unbound = aead::UnboundKey::new(&aead::CHACHA20_POLY1305, key).expect("32-byte key");
        Key {
            ring: aead::LessSafeKey::new(unbound),
            words: core::array::from_fn(|i| {
                u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().unwrap())
            }),
        }
    }

    /// Encrypts `buf[..len - 16]` in place under nonce `counter` and writes the tag into the
    /// last 16 bytes, with associated data `aad`.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) {
        let (data, tag_out) = buf.split_at_mut(buf.len() - TAG_LEN);
        let tag = self
            .ring
            .seal_in_place_separate_tag(nonce(counter), aead::Aad::from(aad), data)
            .expect("message length within ChaCha20-Poly1305 limits");
        tag_out.copy_from_slice(tag.as_ref());
    }

    /// Decrypts `buf` (ciphertext then tag) in place; the plaintext length, or `None` when the
    /// tag does not verify.
    pub fn open_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) -> Option<usize> {
        if buf.len() < TAG_LEN {
            return None;
        }
        self.ring
            .open_in_place(nonce(counter), aead::Aad::from(aad), buf)
            .ok()
            .map(|p| p.len())
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        self.words.zeroize();
    }
}

/// One message of a batch: its nonce counter, and the buffer holding the plaintext (seal) or
/// ciphertext (open) followed by the 16 bytes of the tag.
#[derive(Default, Debug)]
pub struct Message<'a> {
    pub counter: u64,
    pub buf: &'a mut [u8],
    /// Sealing only: the plaintext is read from here, zero-padded to `buf.len() - 16`, rather
    /// than from `buf` — the data plane seals straight from the packets it read, without
    /// copying them in first. At most `buf.len() - 16` bytes.
    pub plaintext: Option<&'a [u8]>,
}

impl<'a> Message<'a> {
    /// A message whose plaintext or ciphertext is in `buf`.
    pub fn new(counter: u64, buf: &'a mut [u8]) -> Self {
        Message {
            counter,
            buf,
            plaintext: None,
        }
    }
}

/// The 96-bit ChaCha20-Poly1305 nonce for a 64-bit counter: four zero bytes then LE64.
#[inline]
pub fn nonce_bytes(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

fn nonce(counter: u64) -> aead::Nonce {
    aead::Nonce::assume_unique_for_key(nonce_bytes(counter))
}

const UNKNOWN: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
static LANES_STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

/// Turns the multi-buffer kernels off for the rest of the process (ring for everything).
pub fn disable() {
    LANES_STATE.store(OFF, Ordering::Relaxed);
}

/// Whether batches use the multi-buffer kernels: probed once (AVX-512 F and IFMA), unless
/// [`disable`]d.
pub fn lanes_enabled() -> bool {
    match LANES_STATE.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let on = cpu_has_lanes();
            // A racing `disable` wins: only replace UNKNOWN.
            let _ = LANES_STATE.compare_exchange(
                UNKNOWN,
                if on { ON } else { OFF },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            LANES_STATE.load(Ordering::Relaxed) == ON
        }
    }
}

fn cpu_has_lanes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512ifma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Seals every message in place (empty associated data).
pub fn seal_many(key: &Key, msgs: &mut [Message<'_>]) {
    for msg in msgs.iter() {
        assert!(
            msg.buf.len() >= TAG_LEN,
            "a message buffer holds at least the tag"
        );
        let room = msg.buf.len() - TAG_LEN;
        assert!(
            msg.plaintext.is_none_or(|p| p.len() <= room),
            "plaintext longer than its buffer"
        );
    }
    #[cfg(target_arch = "x86_64")]
    let lanes = lanes_enabled();
    for group in msgs.chunks_mut(LANES) {
        #[cfg(target_arch = "x86_64")]
        if lanes && group.len() >= MIN_BATCH {
            // SAFETY: `lanes_enabled` found AVX-512 F and IFMA on this CPU.
            unsafe { lanes::seal(key, group) };
            continue;
        }
        for msg in group.iter_mut() {
            if let Some(p) = msg.plaintext {
                let room = msg.buf.len() - TAG_LEN;
                msg.buf[..p.len()].copy_from_slice(p);
                msg.buf[p.len()..room].fill(0);
            }
            key.seal_in_place(msg.counter, &[], msg.buf);
        }
    }
}

/// Opens every message in place (empty associated data): `ok[i]` says whether message `i`'s
/// tag verified; if so its plaintext is `buf[..len - 16]`. A message that fails is left in an
/// unspecified state, as ring leaves it.
pub fn open_many(key: &Key, msgs: &mut [Message<'_>], ok: &mut [bool]) {
    assert_eq!(msgs.len(), ok.len());
    // `plaintext` means nothing here; the kernels would read it.
    for msg in msgs.iter_mut() {
        msg.plaintext = None;
    }
    #[cfg(target_arch = "x86_64")]
    let lanes = lanes_enabled();
    for (group, ok) in msgs.chunks_mut(LANES).zip(ok.chunks_mut(LANES)) {
        #[cfg(target_arch = "x86_64")]
        if lanes && group.len() >= MIN_BATCH {
            // SAFETY: `lanes_enabled` found AVX-512 F and IFMA on this CPU.
            unsafe { lanes::open(key, group, ok) };
            continue;
        }
        for (msg, ok) in group.iter_mut().zip(ok.iter_mut()) {
            *ok = key.open_in_place(msg.counter, &[], msg.buf).is_some();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod lanes;
