//! The primitives of Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s and WireGuard's cookie layer, with the
//! exact parameterisation WireGuard uses: BLAKE2s-256 HASH, BLAKE2s keyed with a 16-byte output
//! length for MAC, HMAC over BLAKE2s for the HKDF, ChaCha20-Poly1305 with a zero-padded 64-bit
//! little-endian nonce, and XChaCha20-Poly1305 for cookies.
//!
//! Crate choice: ring for ChaCha20-Poly1305 (assembly with an AVX2 path; about 0.6-0.7x of
//! openssl's speed in our benches, 3-10x RustCrypto's at packet sizes), through
//! `ferrowg-chacha`, which adds multi-buffer AVX-512 kernels for batches of transport
//! messages under one key (ring has no batch interface), x25519-dalek for X25519 (ring only offers ephemeral
//! agreement keys and cannot load a static private key), blake2s_simd for BLAKE2s (it exposes
//! the parameter block, which MAC needs for its 16-byte output length), and RustCrypto's
//! chacha20poly1305 only for XChaCha20 (ring has no HChaCha20; cookies are rare).

use crate::constants::{KEY_LEN, MAC_LEN, TAG_LEN};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// BLAKE2s-256 over the concatenation of `parts`.
pub fn hash(parts: &[&[u8]]) -> [u8; 32] {
    let mut state = blake2s_simd::Params::new().hash_length(32).to_state();
    for p in parts {
        state.update(p);
    }
    *state.finalize().as_array()
}

/// Keyed BLAKE2s with a 16-byte digest length in the parameter block (not a truncation).
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut state = blake2s_simd::Params::new()
        .hash_length(MAC_LEN)
        .key(key)
        .to_state();
    for p in parts {
        state.update(p);
    }
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(state.finalize().as_bytes());
    out
}

const BLAKE2S_BLOCK: usize = 64;

/// RFC 2104 HMAC with BLAKE2s-256 as the hash. Keys here are at most 32 bytes, so they are
/// never pre-hashed.
pub fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    debug_assert!(key.len() <= BLAKE2S_BLOCK);
    let mut block = [0u8; BLAKE2S_BLOCK];
    block[..key.len()].copy_from_slice(key);
    for b in block.iter_mut() {
        *b ^= 0x36;
    }
    let mut inner = blake2s_simd::Params::new().hash_length(32).to_state();
    inner.update(&block);
    for p in parts {
        inner.update(p);
    }
    let mut inner_hash = *inner.finalize().as_array();
    for b in block.iter_mut() {
        *b ^= 0x36 ^ 0x5c;
    }
    let mut outer = blake2s_simd::Params::new().hash_length(32).to_state();
    outer.update(&block);
    outer.update(&inner_hash);
    let out = *outer.finalize().as_array();
    block.zeroize();
    inner_hash.zeroize();
    out
}

/// HKDF with `chaining_key` as salt and empty info, returning the first `N` 32-byte outputs.
pub fn kdf<const N: usize>(chaining_key: &[u8; 32], input: &[u8]) -> [[u8; 32]; N] {
    debug_assert!((1..=3).contains(&N));
    let mut prk = hmac(chaining_key, &[input]);
    let mut out = [[0u8; 32]; N];
    let mut prev: [u8; 32] = hmac(&prk, &[&[1u8]]);
    out[0] = prev;
    for (i, slot) in out.iter_mut().enumerate().skip(1) {
        prev = hmac(&prk, &[&prev, &[(i + 1) as u8]]);
        *slot = prev;
    }
    prk.zeroize();
    prev.zeroize();
    out
}

/// The 96-bit ChaCha20-Poly1305 nonce for a 64-bit counter (the one the AEAD uses).
pub use ferrowg_chacha::nonce_bytes;

/// Error from an AEAD open: the tag did not verify or the input was shorter than a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthError;

/// One message of a batch for [`AeadKey::seal_many`] / [`AeadKey::open_many`].
pub use ferrowg_chacha::Message as AeadMessage;

/// Messages the batch AEAD works on at once.
pub const AEAD_LANES: usize = ferrowg_chacha::LANES;

/// A ChaCha20-Poly1305 key, expanded once and reusable for many messages (transport keys).
pub struct AeadKey(ferrowg_chacha::Key);

impl AeadKey {
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        AeadKey(ferrowg_chacha::Key::new(key))
    }

    /// Encrypts `buf[..buf.len() - TAG_LEN]` in place and writes the tag into the last 16 bytes.
    pub fn seal_in_place(&self, counter: u64, aad: &[u8], buf: &mut [u8]) {
        self.0.seal_in_place(counter, aad, buf)
    }

    /// Seals each message in place (empty associated data), as `seal_in_place` would.
    pub fn seal_many(&self, msgs: &mut [AeadMessage<'_>]) {
        ferrowg_chacha::seal_many(&self.0, msgs)
    }

    /// Opens each message in place (empty associated data); `ok[i]` says whether message
    /// `i` verified, its plaintext then being all but its last 16 bytes.
    pub fn open_many(&self, msgs: &mut [AeadMessage<'_>], ok: &mut [bool]) {
        ferrowg_chacha::open_many(&self.0, msgs, ok)
    }

    /// Decrypts `buf` (ciphertext then tag) in place; returns the plaintext length.
    pub fn open_in_place(
        &self,
        counter: u64,
        aad: &[u8],
        buf: &mut [u8],
    ) -> Result<usize, AuthError> {
        self.0.open_in_place(counter, aad, buf).ok_or(AuthError)
    }
}

/// One-shot AEAD seal of `plaintext` into `out` (`plaintext.len() + 16` bytes), as used by the
/// handshake with counter 0.
pub fn aead_seal(key: &[u8; KEY_LEN], counter: u64, plaintext: &[u8], aad: &[u8], out: &mut [u8]) {
    debug_assert_eq!(out.len(), plaintext.len() + TAG_LEN);
    out[..plaintext.len()].copy_from_slice(plaintext);
    AeadKey::new(key).seal_in_place(counter, aad, out);
}

/// One-shot AEAD open of `ciphertext` (with tag) into `out` (`ciphertext.len() - 16` bytes).
pub fn aead_open(
    key: &[u8; KEY_LEN],
    counter: u64,
    ciphertext: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), AuthError> {
    if ciphertext.len() < TAG_LEN || out.len() != ciphertext.len() - TAG_LEN {
        return Err(AuthError);
    }
    let mut buf = [0u8; 64];
    if ciphertext.len() > buf.len() {
        return Err(AuthError);
    }
    let buf = &mut buf[..ciphertext.len()];
    buf.copy_from_slice(ciphertext);
    let n = AeadKey::new(key).open_in_place(counter, aad, buf)?;
    out.copy_from_slice(&buf[..n]);
    buf.zeroize();
    Ok(())
}

/// XChaCha20-Poly1305 seal of `plaintext` into `out` (plaintext + tag).
pub fn xaead_seal(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 24],
    plaintext: &[u8],
    aad: &[u8],
    out: &mut [u8],
) {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let n = plaintext.len();
    out[..n].copy_from_slice(plaintext);
    let tag = cipher
        .encrypt_in_place_detached(nonce.into(), aad, &mut out[..n])
        .expect("short cookie plaintext");
    out[n..n + TAG_LEN].copy_from_slice(&tag);
}

/// XChaCha20-Poly1305 open of `ciphertext` (with tag) into `out`.
pub fn xaead_open(
    key: &[u8; KEY_LEN],
    nonce: &[u8; 24],
    ciphertext: &[u8],
    aad: &[u8],
    out: &mut [u8],
) -> Result<(), AuthError> {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    if ciphertext.len() < TAG_LEN || out.len() != ciphertext.len() - TAG_LEN {
        return Err(AuthError);
    }
    let cipher = chacha20poly1305::XChaCha20Poly1305::new(key.into());
    let n = out.len();
    out.copy_from_slice(&ciphertext[..n]);
    let tag = chacha20poly1305::Tag::from_slice(&ciphertext[n..]);
    cipher
        .decrypt_in_place_detached(nonce.into(), aad, out, tag)
        .map_err(|_| {
            out.zeroize();
            AuthError
        })
}

/// X25519 between a private scalar and a public point. `None` when the result is all zeros
/// (a low-order point), which every WireGuard implementation treats as a failed handshake.
pub fn dh(private: &[u8; KEY_LEN], public: &[u8; KEY_LEN]) -> Option<[u8; KEY_LEN]> {
    let secret = x25519_dalek::StaticSecret::from(*private);
    let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(*public));
    let bytes = *shared.as_bytes();
    if bool::from(bytes.ct_eq(&[0u8; KEY_LEN])) {
        None
    } else {
        Some(bytes)
    }
}

/// The X25519 public key of a private scalar (clamping applied by the scalar multiplication).
pub fn public_key(private: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    let secret = x25519_dalek::StaticSecret::from(*private);
    *x25519_dalek::PublicKey::from(&secret).as_bytes()
}

/// Clamps a Curve25519 private scalar as the X25519 function would.
pub fn clamp(mut key: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    key[0] &= 248;
    key[31] = (key[31] & 127) | 64;
    key
}

/// Constant-time equality of two byte strings of the same length.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}
