//! mac1/mac2 and cookie replies: the DoS defence in front of the handshake.
//!
//! mac1 proves the sender knows the receiver's public key and is checked before any
//! expensive work. Under load the responder additionally demands mac2, keyed with a cookie it
//! hands out in an encrypted cookie reply; the cookie is a MAC of the sender's address *and*
//! port under a secret that rotates every two minutes, so the retry proves the sender can
//! receive at that address.

use crate::constants::*;
use crate::crypto::{self, AuthError};
use crate::keys::PublicKey;
use crate::messages::CookieReply;
use rand_core::{CryptoRng, RngCore};
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;
use zeroize::Zeroize;

/// HASH(LABEL_MAC1 ‖ public key): the key for mac1 on messages *to* that key's owner.
pub fn mac1_key(public: &PublicKey) -> [u8; 32] {
    crypto::hash(&[LABEL_MAC1, public.as_bytes()])
}

/// HASH(LABEL_COOKIE ‖ public key): the key encrypting cookies sent *by* that key's owner.
pub fn cookie_key(public: &PublicKey) -> [u8; 32] {
    crypto::hash(&[LABEL_COOKIE, public.as_bytes()])
}

/// Offsets of mac1 and mac2 in a handshake message of this length, if it is one.
fn mac_offsets(msg: &[u8]) -> Option<(usize, usize)> {
    match msg.len() {
        INITIATION_LEN => Some((116, 132)),
        RESPONSE_LEN => Some((60, 76)),
        _ => None,
    }
}

/// The responder's side: validates mac1/mac2 on incoming handshake messages and creates cookie
/// replies. One per device (it depends only on the device's own public key).
pub struct CookieChecker {
    mac1_key: [u8; 32],
    cookie_encryption_key: [u8; 32],
    secret: [u8; 32],
    secret_birth: Option<Instant>,
}

impl Drop for CookieChecker {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl CookieChecker {
    pub fn new(own_public: &PublicKey) -> Self {
        CookieChecker {
            mac1_key: mac1_key(own_public),
            cookie_encryption_key: cookie_key(own_public),
            secret: [0; 32],
            secret_birth: None,
        }
    }

    /// True if mac1 of the handshake message `msg` is valid for our public key.
    pub fn check_mac1(&self, msg: &[u8]) -> bool {
        let Some((m1, m2)) = mac_offsets(msg) else {
            return false;
        };
        let expect = crypto::mac(&self.mac1_key, &[&msg[..m1]]);
        crypto::ct_eq(&expect, &msg[m1..m2])
    }

    fn secret_is_fresh(&self, now: Instant) -> bool {
        matches!(self.secret_birth, Some(b) if now.saturating_duration_since(b) < COOKIE_SECRET_MAX_AGE)
    }

    /// The cookie for a source address: MAC(secret, address bytes ‖ port big-endian).
    fn cookie_for(&self, src: &SocketAddr) -> [u8; COOKIE_LEN] {
        let port = src.port().to_be_bytes();
        match src.ip() {
            IpAddr::V4(a) => crypto::mac(&self.secret, &[&a.octets(), &port]),
            IpAddr::V6(a) => crypto::mac(&self.secret, &[&a.octets(), &port]),
        }
    }

    /// True if mac2 of `msg` carries a cookie we issued to `src` under the current secret.
    /// An expired secret invalidates every cookie made with it.
    pub fn check_mac2(&self, now: Instant, msg: &[u8], src: &SocketAddr) -> bool {
        let Some((_, m2)) = mac_offsets(msg) else {
            return false;
        };
        if !self.secret_is_fresh(now) {
            return false;
        }
        let cookie = self.cookie_for(src);
        let expect = crypto::mac(&cookie, &[&msg[..m2]]);
        crypto::ct_eq(&expect, &msg[m2..m2 + MAC_LEN])
    }

    /// A cookie reply to the handshake message `msg` (which passed mac1) from `src`.
    pub fn create_reply<R: RngCore + CryptoRng + ?Sized>(
        &mut self,
        now: Instant,
        msg: &[u8],
        src: &SocketAddr,
        rng: &mut R,
    ) -> Option<[u8; COOKIE_REPLY_LEN]> {
        let (m1, m2) = mac_offsets(msg)?;
        if !self.secret_is_fresh(now) {
            rng.fill_bytes(&mut self.secret);
            self.secret_birth = Some(now);
        }
        let mut cookie = self.cookie_for(src);
        let mut nonce = [0u8; COOKIE_NONCE_LEN];
        rng.fill_bytes(&mut nonce);
        let mut encrypted_cookie = [0u8; COOKIE_LEN + TAG_LEN];
        crypto::xaead_seal(
            &self.cookie_encryption_key,
            &nonce,
            &cookie,
            &msg[m1..m2],
            &mut encrypted_cookie,
        );
        cookie.zeroize();
        // The sender index of the message being answered: initiations and responses both
        // carry it at offset 4.
        let receiver = u32::from_le_bytes([msg[4], msg[5], msg[6], msg[7]]);
        Some(
            CookieReply {
                receiver,
                nonce,
                encrypted_cookie,
            }
            .to_bytes(),
        )
    }

    /// Test hook: fixes the secret (deterministic vectors).
    #[doc(hidden)]
    pub fn set_secret_for_test(&mut self, secret: [u8; 32], now: Instant) {
        self.secret = secret;
        self.secret_birth = Some(now);
    }
}

/// The sender's side, one per peer: adds mac1/mac2 to outgoing handshake messages and consumes
/// the cookie replies that peer sends us.
pub struct CookieGenerator {
    mac1_key: [u8; 32],
    cookie_decryption_key: [u8; 32],
    last_mac1: Option<[u8; MAC_LEN]>,
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
}

impl Drop for CookieGenerator {
    fn drop(&mut self) {
        if let Some((c, _)) = self.cookie.as_mut() {
            c.zeroize();
        }
    }
}

impl CookieGenerator {
    pub fn new(peer_public: &PublicKey) -> Self {
        CookieGenerator {
            mac1_key: mac1_key(peer_public),
            cookie_decryption_key: cookie_key(peer_public),
            last_mac1: None,
            cookie: None,
        }
    }

    /// Writes mac1 and (with a fresh cookie) mac2 into the handshake message `msg`.
    pub fn add_macs(&mut self, now: Instant, msg: &mut [u8]) {
        let Some((m1, m2)) = mac_offsets(msg) else {
            return;
        };
        let mac1 = crypto::mac(&self.mac1_key, &[&msg[..m1]]);
        msg[m1..m2].copy_from_slice(&mac1);
        self.last_mac1 = Some(mac1);
        // Use the cookie only while the responder's secret it was made with is surely still
        // current: its age minus the time a message may spend in flight.
        let fresh = COOKIE_SECRET_MAX_AGE - COOKIE_SECRET_LATENCY;
        let mac2 = match &self.cookie {
            Some((c, at)) if now.saturating_duration_since(*at) < fresh => {
                crypto::mac(c, &[&msg[..m2]])
            }
            _ => [0u8; MAC_LEN],
        };
        msg[m2..m2 + MAC_LEN].copy_from_slice(&mac2);
    }

    /// Opens a cookie reply addressed to a message we sent. Each sent mac1 admits one cookie,
    /// so a replayed reply cannot refresh a stale cookie.
    pub fn consume_reply(&mut self, now: Instant, reply: &CookieReply) -> Result<(), AuthError> {
        let aad = self.last_mac1.ok_or(AuthError)?;
        let mut cookie = [0u8; COOKIE_LEN];
        crypto::xaead_open(
            &self.cookie_decryption_key,
            &reply.nonce,
            &reply.encrypted_cookie,
            &aad,
            &mut cookie,
        )?;
        self.cookie = Some((cookie, now));
        self.last_mac1 = None;
        Ok(())
    }

    /// Whether a cookie is held (for tests and diagnostics).
    pub fn has_cookie(&self) -> bool {
        self.cookie.is_some()
    }
}
