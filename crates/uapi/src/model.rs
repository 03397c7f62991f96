//! The typed content of `set` requests and `get` replies.
//!
//! Keys are raw 32-byte arrays rather than `ferrowg_proto` key types: a `set` may carry an
//! all-zero private or preshared key meaning "remove", which is not a key at all, and the
//! daemon converts to its own types when applying. `Debug` never prints secret bytes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

/// A 32-byte key as carried by the protocol.
pub type Key = [u8; 32];

/// Everything one `set=1` operation asks for. Built only by a complete, successful parse,
/// so a daemon applying it never sees half a message.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct DeviceSet {
    /// `Some([0; 32])` removes the private key.
    pub private_key: Option<Key>,
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
    /// `Some([0; 32])` removes the preshared key.
    pub preshared_key: Option<Key>,
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
    pub private_key: Option<Key>,
    /// 0 when not listening (omitted from the reply).
    pub listen_port: u16,
    /// 0 when unset (omitted from the reply).
    pub fwmark: u32,
    pub peers: Vec<PeerInfo>,
}

/// One peer of a `get=1` reply.
#[derive(Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub public_key: Key,
    /// `None` when the peer has no preshared key (sent as 64 zeros).
    pub preshared_key: Option<Key>,
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

/// Shows whether a secret is present without showing it.
struct Secret<'a>(&'a Option<Key>);

impl fmt::Debug for Secret<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("None"),
            Some(k) if k.iter().all(|&b| b == 0) => f.write_str("Some(<zero>)"),
            Some(_) => f.write_str("Some(<hidden>)"),
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
            .field("private_key", &Secret(&self.private_key))
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
            .field("preshared_key", &Secret(&self.preshared_key))
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
            .field("private_key", &Secret(&self.private_key))
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
            .field("preshared_key", &Secret(&self.preshared_key))
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
