//! The Noise_IKpsk2 handshake as WireGuard runs it: message 1 (initiation) carries the
//! initiator's encrypted static key and timestamp, message 2 (response) completes the key
//! agreement and mixes in the preshared key, and both sides split the chaining key into one
//! transport key per direction. Each step follows the order of the protocol description
//! exactly; the deterministic vectors in the tests pin every intermediate value.
//!
//! These functions are pure: they take keys, indices, a timestamp and an RNG and return
//! messages and states. Which peer, which index, and whether to answer at all is decided by
//! the device.

use crate::constants::*;
use crate::crypto::{self, aead_open, aead_seal, dh, hash, kdf};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::messages::{Initiation, Response};
use crate::tai64n::Tai64N;
use rand_core::{CryptoRng, RngCore};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// C0 = HASH(CONSTRUCTION) and H0 = HASH(C0 ‖ IDENTIFIER), computed once per call site; they
/// are constants, recomputing them costs two short BLAKE2s calls per handshake.
fn initial_chain() -> ([u8; 32], [u8; 32]) {
    let c0 = hash(&[CONSTRUCTION]);
    let h0 = hash(&[&c0, IDENTIFIER]);
    (c0, h0)
}

/// The device's long-term key pair.
#[derive(Clone)]
pub struct Identity {
    pub private: PrivateKey,
    pub public: PublicKey,
}

impl Identity {
    pub fn new(private: PrivateKey) -> Self {
        let public = private.public_key();
        Identity { private, public }
    }
}

/// What one side knows about the other before a handshake: the remote static key, the
/// preshared key (zeros when none) and the precomputed static-static DH, which is `None` for a
/// low-order remote key — no handshake with such a peer may ever succeed.
#[derive(Clone)]
pub struct PeerKeys {
    pub remote_static: PublicKey,
    pub preshared: PresharedKey,
    static_static: Option<[u8; 32]>,
}

impl Drop for PeerKeys {
    fn drop(&mut self) {
        self.static_static.zeroize();
    }
}

impl PeerKeys {
    pub fn new(
        identity: Option<&Identity>,
        remote_static: PublicKey,
        preshared: PresharedKey,
    ) -> Self {
        let mut k = PeerKeys {
            remote_static,
            preshared,
            static_static: None,
        };
        k.recompute(identity);
        k
    }

    /// Recomputes the static-static DH after the device's private key changed.
    pub fn recompute(&mut self, identity: Option<&Identity>) {
        self.static_static.zeroize();
        self.static_static =
            identity.and_then(|id| dh(id.private.as_bytes(), self.remote_static.as_bytes()));
    }

    /// False when no handshake is possible (no private key, or a low-order peer key).
    pub fn can_handshake(&self) -> bool {
        self.static_static.is_some()
    }
}

/// The two transport keys a completed handshake yields, from this side's point of view.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionKeys {
    pub send: [u8; 32],
    pub recv: [u8; 32],
}

fn split(chaining_key: &[u8; 32], initiator: bool) -> SessionKeys {
    let [t1, t2] = kdf::<2>(chaining_key, &[]);
    if initiator {
        SessionKeys { send: t1, recv: t2 }
    } else {
        SessionKeys { send: t2, recv: t1 }
    }
}

/// The initiator's state between sending message 1 and receiving message 2.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct InitiatorState {
    #[zeroize(skip)]
    pub local_index: u32,
    hash: [u8; 32],
    chaining_key: [u8; 32],
    ephemeral_private: [u8; 32],
}

/// Builds message 1 (mac fields left zero; the cookie layer fills them).
pub fn create_initiation<R: RngCore + CryptoRng + ?Sized>(
    identity: &Identity,
    peer: &PeerKeys,
    local_index: u32,
    timestamp: Tai64N,
    rng: &mut R,
) -> Option<(Initiation, InitiatorState)> {
    let ss = peer.static_static.as_ref()?;
    let (c0, h0) = initial_chain();
    let mut h = hash(&[&h0, peer.remote_static.as_bytes()]);

    let mut e_priv = [0u8; 32];
    rng.fill_bytes(&mut e_priv);
    let e_priv = crypto::clamp(e_priv);
    let e_pub = crypto::public_key(&e_priv);

    let [mut c] = kdf::<1>(&c0, &e_pub);
    h = hash(&[&h, &e_pub]);

    let es = dh(&e_priv, peer.remote_static.as_bytes())?;
    let [c1, mut k] = kdf::<2>(&c, &es);
    c = c1;
    let mut encrypted_static = [0u8; 48];
    aead_seal(&k, 0, identity.public.as_bytes(), &h, &mut encrypted_static);
    h = hash(&[&h, &encrypted_static]);

    let [c2, k2] = kdf::<2>(&c, ss);
    c = c2;
    k = k2;
    let mut encrypted_timestamp = [0u8; 28];
    aead_seal(&k, 0, timestamp.as_bytes(), &h, &mut encrypted_timestamp);
    h = hash(&[&h, &encrypted_timestamp]);
    k.zeroize();

    let msg = Initiation {
        sender: local_index,
        ephemeral: e_pub,
        encrypted_static,
        encrypted_timestamp,
        mac1: [0; 16],
        mac2: [0; 16],
    };
    let state = InitiatorState {
        local_index,
        hash: h,
        chaining_key: c,
        ephemeral_private: e_priv,
    };
    Some((msg, state))
}

/// The responder's view of a message 1 whose static key decrypted: the caller looks the key
/// up among its peers before the rest is checked (an unknown key ends the work here).
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct PartialInitiation {
    #[zeroize(skip)]
    pub initiator_static: PublicKey,
    #[zeroize(skip)]
    pub sender: u32,
    hash: [u8; 32],
    chaining_key: [u8; 32],
    remote_ephemeral: [u8; 32],
    encrypted_timestamp: [u8; 28],
}

/// First half of consuming message 1: recover the initiator's static public key.
pub fn consume_initiation_begin(
    identity: &Identity,
    msg: &Initiation,
) -> Option<PartialInitiation> {
    let (c0, h0) = initial_chain();
    let mut h = hash(&[&h0, identity.public.as_bytes()]);
    let [mut c] = kdf::<1>(&c0, &msg.ephemeral);
    h = hash(&[&h, &msg.ephemeral]);
    let es = dh(identity.private.as_bytes(), &msg.ephemeral)?;
    let [c1, mut k] = kdf::<2>(&c, &es);
    c = c1;
    let mut initiator_static = [0u8; 32];
    let ok = aead_open(&k, 0, &msg.encrypted_static, &h, &mut initiator_static);
    k.zeroize();
    ok.ok()?;
    h = hash(&[&h, &msg.encrypted_static]);
    Some(PartialInitiation {
        initiator_static: PublicKey(initiator_static),
        sender: msg.sender,
        hash: h,
        chaining_key: c,
        remote_ephemeral: msg.ephemeral,
        encrypted_timestamp: msg.encrypted_timestamp,
    })
}

/// The responder's state after a fully verified message 1, ready to answer.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct ResponderState {
    #[zeroize(skip)]
    pub remote_index: u32,
    hash: [u8; 32],
    chaining_key: [u8; 32],
    remote_ephemeral: [u8; 32],
}

/// Second half: with the peer's keys, verify and return the timestamp (the caller applies
/// the replay and flood rules to it).
pub fn consume_initiation_finish(
    partial: &PartialInitiation,
    peer: &PeerKeys,
) -> Option<(Tai64N, ResponderState)> {
    let ss = peer.static_static.as_ref()?;
    let [c, mut k] = kdf::<2>(&partial.chaining_key, ss);
    let mut ts = [0u8; TIMESTAMP_LEN];
    let ok = aead_open(&k, 0, &partial.encrypted_timestamp, &partial.hash, &mut ts);
    k.zeroize();
    ok.ok()?;
    let h = hash(&[&partial.hash, &partial.encrypted_timestamp]);
    Some((
        Tai64N::from_bytes(ts),
        ResponderState {
            remote_index: partial.sender,
            hash: h,
            chaining_key: c,
            remote_ephemeral: partial.remote_ephemeral,
        },
    ))
}

/// Builds message 2 and derives the responder's transport keys.
pub fn create_response<R: RngCore + CryptoRng + ?Sized>(
    state: &ResponderState,
    peer: &PeerKeys,
    local_index: u32,
    rng: &mut R,
) -> Option<(Response, SessionKeys)> {
    let mut e_priv = [0u8; 32];
    rng.fill_bytes(&mut e_priv);
    let mut e_priv = crypto::clamp(e_priv);
    let e_pub = crypto::public_key(&e_priv);

    let [mut c] = kdf::<1>(&state.chaining_key, &e_pub);
    let mut h = hash(&[&state.hash, &e_pub]);
    let ee = dh(&e_priv, &state.remote_ephemeral);
    let se = dh(&e_priv, peer.remote_static.as_bytes());
    e_priv.zeroize();
    let [c1] = kdf::<1>(&c, &ee?);
    c = c1;
    let [c3] = kdf::<1>(&c, &se?);
    c = c3;
    let [c4, tau, mut k] = kdf::<3>(&c, peer.preshared.as_bytes());
    c = c4;
    h = hash(&[&h, &tau]);
    let mut encrypted_nothing = [0u8; 16];
    aead_seal(&k, 0, &[], &h, &mut encrypted_nothing);
    k.zeroize();
    let keys = split(&c, false);
    c.zeroize();
    h.zeroize();
    let msg = Response {
        sender: local_index,
        receiver: state.remote_index,
        ephemeral: e_pub,
        encrypted_nothing,
        mac1: [0; 16],
        mac2: [0; 16],
    };
    Some((msg, keys))
}

/// Consumes message 2 as the initiator and derives the transport keys.
pub fn consume_response(
    state: &InitiatorState,
    identity: &Identity,
    peer: &PeerKeys,
    msg: &Response,
) -> Option<SessionKeys> {
    if msg.receiver != state.local_index {
        return None;
    }
    let [mut c] = kdf::<1>(&state.chaining_key, &msg.ephemeral);
    let mut h = hash(&[&state.hash, &msg.ephemeral]);
    let ee = dh(&state.ephemeral_private, &msg.ephemeral)?;
    let [c1] = kdf::<1>(&c, &ee);
    let se = dh(identity.private.as_bytes(), &msg.ephemeral)?;
    let [c2] = kdf::<1>(&c1, &se);
    let [c3, tau, mut k] = kdf::<3>(&c2, peer.preshared.as_bytes());
    c = c3;
    h = hash(&[&h, &tau]);
    let mut nothing = [0u8; 0];
    let ok = aead_open(&k, 0, &msg.encrypted_nothing, &h, &mut nothing);
    k.zeroize();
    ok.ok()?;
    let keys = split(&c, true);
    c.zeroize();
    h.zeroize();
    Some(keys)
}
