//! The typed content of `set` requests and `get` replies.
//!
//! Keys are raw 32-byte values rather than `ferrowg_proto` key types: a `set` may carry an
//! all-zero private or preshared key meaning "remove", which is not a key at all, and the
//! daemon converts to its own types when applying. Public keys are plain [`Key`] arrays;
//! private and preshared keys are [`SecretKey`]s, wiped when dropped. `Debug` never prints
//! secret bytes.

use ferrowg_proto::crypto::ct_eq;
use ferrowg_proto::keys::{PresharedKey, PrivateKey};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte public key as carried by the protocol.
pub type Key = [u8; 32];

/// A private or preshared key as carried by the protocol: 32 bytes, overwritten with zeros
/// when dropped (so every copy the model holds is wiped, clones included), compared in
/// constant time, and shown by `Debug` only as `<hidden>` (or `<zero>` for the all-zero
/// "remove" value).
///
/// Not `Copy`, on purpose: each copy is a value that wipes itself. Creating one from a plain
/// array ([`SecretKey::new`], `From<[u8; 32]>`) leaves that array to the caller to wipe; the
/// parsers in this crate decode straight into a `SecretKey`, and the conversions from and to
/// `ferrowg_proto` keys copy between wiped containers only (a key passed by value to
/// `ferrowg_proto` may still leave a stack copy behind, which is out of this crate's reach).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub const fn new(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }

    /// The all-zero key: "remove the key" in a `set`.
    pub const fn zero() -> Self {
        SecretKey([0; 32])
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// For decoding straight into the key, without a temporary copy.
    pub fn as_mut_bytes(&mut self) -> &mut [u8; 32] {
        &mut self.0
    }

    /// All zeros ("remove" in a `set`; "none" in a `get` reply). Constant time.
    pub fn is_zero(&self) -> bool {
        ct_eq(&self.0, &[0; 32])
    }

    /// As a `ferrowg_proto` private key (clamped). Meaningless for the all-zero value, which
    /// means "remove": check [`Self::is_zero`] first.
    pub fn to_private_key(&self) -> PrivateKey {
        PrivateKey::from_bytes(self.0)
    }

    /// As a `ferrowg_proto` preshared key (all zeros is "no preshared key" there too).
    pub fn to_preshared_key(&self) -> PresharedKey {
        PresharedKey::from_bytes(self.0)
    }
}

impl From<[u8; 32]> for SecretKey {
    fn from(bytes: [u8; 32]) -> Self {
        SecretKey(bytes)
    }
}

impl From<&PrivateKey> for SecretKey {
    fn from(key: &PrivateKey) -> Self {
        let mut secret = SecretKey::zero();
        secret.0.copy_from_slice(key.as_bytes());
        secret
    }
}

impl From<&PresharedKey> for SecretKey {
    fn from(key: &PresharedKey) -> Self {
        let mut secret = SecretKey::zero();
        secret.0.copy_from_slice(key.as_bytes());
        secret
    }
}

impl PartialEq for SecretKey {
    fn eq(&self, other: &Self) -> bool {
        ct_eq(&self.0, &other.0)
    }
}

impl Eq for SecretKey {}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            f.write_str("SecretKey(<zero>)")
        } else {
            f.write_str("SecretKey(<hidden>)")
        }
    }
}

/// Everything one `set=1` operation asks for. Built only by a complete, successful parse,
/// so a daemon applying it never sees half a message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DeviceSet {
    /// `Some(SecretKey::zero())` removes the private key.
    pub private_key: Option<SecretKey>,
    /// `Some(0)` asks for a random port.
    pub listen_port: Option<u16>,
    /// `Some(0)` removes the mark.
    pub fwmark: Option<u32>,
    /// Existing peers are removed before `peers` are applied.
    pub replace_peers: bool,
    /// In message order; public keys are distinct (checked by the parser).
    pub peers: Vec<PeerSet>,
}

/// The lines of one peer inside a `set`.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerSet {
    pub public_key: Key,
    /// Remove the peer. Every other field is then irrelevant: the parser leaves them at
    /// their defaults and `emit_set` writes none of them, as `wg` does.
    pub remove: bool,
    /// Apply only if the peer already exists; never create it.
    pub update_only: bool,
    /// `Some(SecretKey::zero())` removes the preshared key.
    pub preshared_key: Option<SecretKey>,
    pub endpoint: Option<SocketAddr>,
    /// `Some(0)` disables persistent keepalive.
    pub persistent_keepalive_interval: Option<u16>,
    /// The peer's allowed IPs are cleared before `allowed_ips` are applied.
    pub replace_allowed_ips: bool,
    /// Additions and removals, in message order. The parser drops entries that precede a
    /// `replace_allowed_ips=true` line (see `crate::parse_set`).
    pub allowed_ips: Vec<AllowedIpChange>,
    /// Only `Some(1)` is ever accepted by the parser.
    pub protocol_version: Option<u32>,
}

impl PeerSet {
    /// A peer entry that names the peer and changes nothing.
    pub fn new(public_key: Key) -> Self {
        PeerSet {
            public_key,
            remove: false,
            update_only: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive_interval: None,
            replace_allowed_ips: false,
            allowed_ips: Vec::new(),
            protocol_version: None,
        }
    }
}

/// One `allowed_ip=` line: `IP/cidr` adds (or moves) a prefix, `-IP/cidr` removes it.
/// Host bits are kept as sent; masking is the routing table's business.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AllowedIpChange {
    pub ip: IpAddr,
    pub cidr: u8,
    pub remove: bool,
}

/// A device's state as a `get=1` reply reports it.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DeviceInfo {
    /// `None` when the device has no private key. A client derives the public key itself.
    pub private_key: Option<SecretKey>,
    /// 0 when not listening (omitted from the reply).
    pub listen_port: u16,
    /// 0 when unset (omitted from the reply).
    pub fwmark: u32,
    pub peers: Vec<PeerInfo>,
}

impl DeviceInfo {
    /// What a `get=1` reports of `dev`; the socket fields come from whoever owns the sockets.
    pub fn from_device(dev: &ferrowg_proto::device::Device, listen_port: u16, fwmark: u32) -> Self {
        let peers = dev
            .peers()
            .map(|(id, p)| {
                let mut info = PeerInfo::new(p.public_key().0);
                if !p.preshared_key().is_zero() {
                    info.preshared_key = Some(p.preshared_key().into());
                }
                info.endpoint = p.endpoint().map(|e| e.addr);
                if let Some(t) = p.last_handshake() {
                    info.last_handshake_time_sec = t.as_secs();
                    info.last_handshake_time_nsec = t.subsec_nanos();
                }
                info.rx_bytes = p.rx_bytes();
                info.tx_bytes = p.tx_bytes();
                info.persistent_keepalive_interval = p.persistent_keepalive();
                info.allowed_ips = dev.allowed_ips_of(id);
                info
            })
            .collect();
        DeviceInfo {
            private_key: dev.private_key().map(SecretKey::from),
            listen_port,
            fwmark,
            peers,
        }
    }
}

/// One peer of a `get=1` reply.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub public_key: Key,
    /// `None` when the peer has no preshared key (sent as 64 zeros).
    pub preshared_key: Option<SecretKey>,
    pub endpoint: Option<SocketAddr>,
    /// Unix time of the last handshake, 0 if never. (boringtun reports the time elapsed
    /// since the handshake instead; a client cannot tell the two apart.)
    pub last_handshake_time_sec: u64,
    pub last_handshake_time_nsec: u32,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// 0 when disabled.
    pub persistent_keepalive_interval: u16,
    /// In the daemon's order.
    pub allowed_ips: Vec<(IpAddr, u8)>,
    /// 1 from wireguard-go and ferrowgd; 0 means "not reported" (boringtun sends no such
    /// line, and a 0 is not written).
    pub protocol_version: u32,
}

impl PeerInfo {
    /// A peer with no state beyond its key, reporting protocol version 1.
    pub fn new(public_key: Key) -> Self {
        PeerInfo {
            public_key,
            preshared_key: None,
            endpoint: None,
            last_handshake_time_sec: 0,
            last_handshake_time_nsec: 0,
            rx_bytes: 0,
            tx_bytes: 0,
            persistent_keepalive_interval: 0,
            allowed_ips: Vec::new(),
            protocol_version: 1,
        }
    }
}

/// Public keys in `Debug` output, as the hex the protocol uses.
struct Hex<'a>(&'a Key);

impl fmt::Debug for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&ferrowg_proto::keys::encode_hex_key(self.0))
    }
}

impl fmt::Debug for DeviceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceSet")
            .field("private_key", &self.private_key)
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("replace_peers", &self.replace_peers)
            .field("peers", &self.peers)
            .finish()
    }
}

impl fmt::Debug for PeerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerSet")
            .field("public_key", &Hex(&self.public_key))
            .field("remove", &self.remove)
            .field("update_only", &self.update_only)
            .field("preshared_key", &self.preshared_key)
            .field("endpoint", &self.endpoint)
            .field(
                "persistent_keepalive_interval",
                &self.persistent_keepalive_interval,
            )
            .field("replace_allowed_ips", &self.replace_allowed_ips)
            .field("allowed_ips", &self.allowed_ips)
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

impl fmt::Debug for DeviceInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceInfo")
            .field("private_key", &self.private_key)
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("peers", &self.peers)
            .finish()
    }
}

impl fmt::Debug for PeerInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerInfo")
            .field("public_key", &Hex(&self.public_key))
            .field("preshared_key", &self.preshared_key)
            .field("endpoint", &self.endpoint)
            .field("last_handshake_time_sec", &self.last_handshake_time_sec)
            .field("last_handshake_time_nsec", &self.last_handshake_time_nsec)
            .field("rx_bytes", &self.rx_bytes)
            .field("tx_bytes", &self.tx_bytes)
            .field(
                "persistent_keepalive_interval",
                &self.persistent_keepalive_interval,
            )
            .field("allowed_ips", &self.allowed_ips)
            .field("protocol_version", &self.protocol_version)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrowg_proto::keys::encode_hex_key;

    const SECRET: [u8; 32] = [0x5a; 32];

    /// Every way the secret's bytes could show up in `Debug` text: hex (either case),
    /// base64, and the array's own `Debug` form.
    fn leaks(text: &str) -> bool {
        let hex = encode_hex_key(&SECRET);
        text.contains(&hex)
            || text.contains(&hex.to_uppercase())
            || text.contains(&ferrowg_proto::keys::encode_base64_key(&SECRET))
            || text.contains("90, 90")
    }

    #[test]
    fn secret_key_debug_is_redacted() {
        let shown = format!("{:?} {:#?}", SecretKey::new(SECRET), SecretKey::new(SECRET));
        assert!(!leaks(&shown), "{shown}");
        assert_eq!(
            format!("{:?}", SecretKey::new(SECRET)),
            "SecretKey(<hidden>)"
        );
        assert_eq!(format!("{:?}", SecretKey::zero()), "SecretKey(<zero>)");
    }

    #[test]
    fn model_debug_never_shows_secret_bytes() {
        let mut set_peer = PeerSet::new([0xaa; 32]);
        set_peer.preshared_key = Some(SecretKey::new(SECRET));
        let set = DeviceSet {
            private_key: Some(SecretKey::new(SECRET)),
            peers: vec![set_peer],
            ..DeviceSet::default()
        };
        let mut info_peer = PeerInfo::new([0xaa; 32]);
        info_peer.preshared_key = Some(SecretKey::new(SECRET));
        let info = DeviceInfo {
            private_key: Some(SecretKey::new(SECRET)),
            peers: vec![info_peer],
            ..DeviceInfo::default()
        };
        for shown in [
            format!("{set:?}"),
            format!("{set:#?}"),
            format!("{info:?}"),
            format!("{info:#?}"),
        ] {
            assert!(!leaks(&shown), "{shown}");
            assert_eq!(shown.matches("<hidden>").count(), 2, "{shown}");
            // Public keys are not secret and stay visible.
            assert!(shown.contains(&encode_hex_key(&[0xaa; 32])), "{shown}");
        }
    }

    #[test]
    fn zeroize_wipes_the_bytes() {
        let mut key = SecretKey::new(SECRET);
        assert!(!key.is_zero());
        key.zeroize();
        assert_eq!(key.as_bytes(), &[0; 32]);
        assert!(key.is_zero());
        // The model's secret fields hold SecretKeys, whose drop is this same zeroize.
        fn wiped_on_drop<T: ZeroizeOnDrop>() {}
        wiped_on_drop::<SecretKey>();
    }

    #[test]
    fn conversions_and_equality() {
        let private = PrivateKey::from_bytes(SECRET);
        let secret = SecretKey::from(&private);
        assert_eq!(secret.as_bytes(), private.as_bytes());
        assert_eq!(secret.to_private_key(), private);
        let psk = PresharedKey::from_bytes(SECRET);
        assert_eq!(SecretKey::from(&psk).to_preshared_key(), psk);
        assert_eq!(SecretKey::from(SECRET), SecretKey::new(SECRET));
        assert_ne!(SecretKey::new(SECRET), SecretKey::zero());
        let mut almost = SECRET;
        almost[31] ^= 1;
        assert_ne!(SecretKey::new(SECRET), SecretKey::new(almost));
    }
}
