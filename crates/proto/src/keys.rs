//! Key types: private (stored clamped), public, preshared. Secrets are zeroized on drop and
//! compared in constant time; base64 follows `wg`'s rules exactly (44 characters, trailing
//! `=`, canonical final character), decoded without secret-dependent branches.

use crate::constants::KEY_LEN;
use crate::crypto;
use base64ct::{Base64, Encoding};
use rand_core::{CryptoRng, RngCore};
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of a key in base64 text.
pub const BASE64_KEY_LEN: usize = 44;

/// Why a base64 key was refused (`wg` prints one message for every case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyFormatError;

impl fmt::Display for KeyFormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key is not the correct length or format")
    }
}
impl std::error::Error for KeyFormatError {}

/// Decodes a 44-character base64 key. Non-canonical encodings (non-zero bits in the last
/// character's unused low bits) are refused, as `wg` refuses them.
pub fn decode_base64_key(text: &str) -> Result<[u8; KEY_LEN], KeyFormatError> {
    let bytes = text.as_bytes();
    if bytes.len() != BASE64_KEY_LEN || bytes[BASE64_KEY_LEN - 1] != b'=' {
        return Err(KeyFormatError);
    }
    let mut out = [0u8; KEY_LEN];
    match Base64::decode(bytes, &mut out) {
        Ok(decoded) if decoded.len() == KEY_LEN => {}
        _ => {
            out.zeroize();
            return Err(KeyFormatError);
        }
    }
    // Canonical form: re-encoding must give back the same text.
    let mut again = [0u8; BASE64_KEY_LEN];
    let same = match Base64::encode(&out, &mut again) {
        Ok(s) => crypto::ct_eq(s.as_bytes(), bytes),
        Err(_) => false,
    };
    again.zeroize();
    if !same {
        out.zeroize();
        return Err(KeyFormatError);
    }
    Ok(out)
}

/// Encodes 32 bytes as the 44-character base64 text `wg` prints.
pub fn encode_base64_key(key: &[u8; KEY_LEN]) -> String {
    let mut buf = [0u8; BASE64_KEY_LEN];
    let s = Base64::encode(key, &mut buf)
        .expect("44 bytes hold a 32-byte key")
        .to_owned();
    buf.zeroize();
    s
}

/// Decodes 64 hex digits (either case), as the UAPI carries keys.
pub fn decode_hex_key(text: &str) -> Option<[u8; KEY_LEN]> {
    let mut out = [0u8; KEY_LEN];
    decode_hex_key_into(text, &mut out).then_some(out)
}

/// [`decode_hex_key`] into the caller's buffer, so that a secret key is decoded straight
/// into a container that wipes it. On failure `out` is left all zeros.
pub fn decode_hex_key_into(text: &str, out: &mut [u8; KEY_LEN]) -> bool {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = text.as_bytes();
    let ok = b.len() == 2 * KEY_LEN
        && out.iter_mut().zip(b.chunks_exact(2)).all(|(byte, pair)| {
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => {
                    *byte = (hi << 4) | lo;
                    true
                }
                _ => false,
            }
        });
    if !ok {
        out.zeroize();
    }
    ok
}

/// Lowercase hex, as the UAPI emits keys.
pub fn encode_hex_key(key: &[u8; KEY_LEN]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * KEY_LEN);
    for &byte in key {
        s.push(HEX[(byte >> 4) as usize] as char);
        s.push(HEX[(byte & 15) as usize] as char);
    }
    s
}

/// A Curve25519 private key, always held clamped (so reading it back shows the clamped value,
/// as the kernel does).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PrivateKey(crypto::clamp(bytes))
    }
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = [0u8; KEY_LEN];
        rng.fill_bytes(&mut b);
        let k = Self::from_bytes(b);
        b.zeroize();
        k
    }
    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        decode_base64_key(text).map(Self::from_bytes)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
    pub fn public_key(&self) -> PublicKey {
        PublicKey(crypto::public_key(&self.0))
    }
    /// An all-zero key means "no private key" (UAPI `private_key=000…`).
    pub fn is_zero(&self) -> bool {
        crypto::ct_eq(&self.0, &[0u8; KEY_LEN])
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<hidden>)")
    }
}

impl PartialEq for PrivateKey {
    fn eq(&self, other: &Self) -> bool {
        crypto::ct_eq(&self.0, &other.0)
    }
}
impl Eq for PrivateKey {}

/// A Curve25519 public key: a peer's identity.
#[derive(Clone, Copy)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl std::hash::Hash for PublicKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state)
    }
}

impl PublicKey {
    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        decode_base64_key(text).map(PublicKey)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        crypto::ct_eq(&self.0, &other.0)
    }
}
impl Eq for PublicKey {}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}
impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

/// A 256-bit preshared key; all zeros is the same as having none.
#[derive(Clone, Zeroize, ZeroizeOnDrop, Default)]
pub struct PresharedKey([u8; KEY_LEN]);

impl PresharedKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        PresharedKey(bytes)
    }
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        let mut b = [0u8; KEY_LEN];
        rng.fill_bytes(&mut b);
        PresharedKey(b)
    }
    pub fn from_base64(text: &str) -> Result<Self, KeyFormatError> {
        decode_base64_key(text).map(PresharedKey)
    }
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
    pub fn to_base64(&self) -> String {
        encode_base64_key(&self.0)
    }
    pub fn is_zero(&self) -> bool {
        crypto::ct_eq(&self.0, &[0u8; KEY_LEN])
    }
}

impl PartialEq for PresharedKey {
    fn eq(&self, other: &Self) -> bool {
        crypto::ct_eq(&self.0, &other.0)
    }
}
impl Eq for PresharedKey {}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<hidden>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_key_of_document_vector() {
        let k = PrivateKey::from_base64("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=").unwrap();
        assert_eq!(
            k.public_key().to_base64(),
            "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
        );
    }

    #[test]
    fn base64_rules_match_wg() {
        // Non-canonical last character (low bits set) is refused.
        assert!(decode_base64_key("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGp=").is_err());
        assert!(decode_base64_key("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo").is_err());
        assert!(decode_base64_key("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo==").is_err());
        assert!(decode_base64_key("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LG!=").is_err());
        assert!(decode_base64_key("").is_err());
        let k = decode_base64_key("3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=").unwrap();
        assert_eq!(
            encode_base64_key(&k),
            "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08="
        );
    }

    #[test]
    fn private_keys_read_back_clamped() {
        // netns.sh: a key beginning with '/' reads back beginning with '+'.
        let k = PrivateKey::from_base64("/ADtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=").unwrap();
        assert!(k.to_base64().starts_with('+'));
    }

    #[test]
    fn hex_round_trip_accepts_either_case() {
        let k = [0xabu8; 32];
        let h = encode_hex_key(&k);
        assert_eq!(h, "ab".repeat(32));
        assert_eq!(decode_hex_key(&h.to_uppercase()), Some(k));
        assert_eq!(decode_hex_key("ab"), None);
        assert_eq!(decode_hex_key(&"zz".repeat(32)), None);
    }
}
