//! A peer's protocol state: its keys, where it is, its handshake in progress, its sessions,
//! its timers and counters, and the packets waiting for a session.

use crate::cookie::CookieGenerator;
use crate::keys::PublicKey;
use crate::noise::{InitiatorState, PeerKeys};
use crate::session::Sessions;
use crate::tai64n::Tai64N;
use crate::timers::Timers;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Where a peer is: its address, plus the local address (and interface) its last
/// authenticated packet arrived on, so replies leave from the address the peer knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub local: Option<LocalAddr>,
}

/// A local source address and the interface index it belongs to (0 = any).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LocalAddr {
    pub ip: IpAddr,
    pub ifindex: u32,
}

impl Endpoint {
    pub fn new(addr: SocketAddr) -> Self {
        Endpoint { addr, local: None }
    }
}

impl From<SocketAddr> for Endpoint {
    fn from(addr: SocketAddr) -> Self {
        Endpoint::new(addr)
    }
}

pub struct Peer {
    pub(crate) keys: PeerKeys,
    pub(crate) cookies: CookieGenerator,
    pub(crate) endpoint: Option<Endpoint>,
    pub(crate) handshake: Option<InitiatorState>,
    pub(crate) sessions: Sessions,
    pub(crate) timers: Timers,
    /// Greatest initiation timestamp accepted from this peer; never reset while the peer
    /// exists, so an old initiation can never be replayed.
    pub(crate) latest_timestamp: Tai64N,
    pub(crate) last_initiation_consumed: Option<Instant>,
    pub(crate) last_sent_handshake: Option<Instant>,
    /// Unix time of the last completed handshake, as `wg show` reports it.
    pub(crate) last_handshake: Option<Duration>,
    pub(crate) rx_bytes: u64,
    pub(crate) tx_bytes: u64,
    pub(crate) staged: VecDeque<Vec<u8>>,
    pub(crate) in_flush_queue: bool,
}

impl Peer {
    pub(crate) fn new(keys: PeerKeys) -> Self {
        let cookies = CookieGenerator::new(&keys.remote_static);
        Peer {
            keys,
            cookies,
            endpoint: None,
            handshake: None,
            sessions: Sessions::default(),
            timers: Timers::default(),
            latest_timestamp: Tai64N::ZERO,
            last_initiation_consumed: None,
            last_sent_handshake: None,
            last_handshake: None,
            rx_bytes: 0,
            tx_bytes: 0,
            staged: VecDeque::new(),
            in_flush_queue: false,
        }
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.keys.remote_static
    }
    pub fn preshared_key(&self) -> &crate::keys::PresharedKey {
        &self.keys.preshared
    }
    pub fn endpoint(&self) -> Option<Endpoint> {
        self.endpoint
    }
    pub fn persistent_keepalive(&self) -> u16 {
        self.timers.persistent_keepalive_interval
    }
    /// Unix time of the latest handshake, `None` if there never was one.
    pub fn last_handshake(&self) -> Option<Duration> {
        self.last_handshake
    }
    /// Bytes of WireGuard messages received from / sent to this peer (UDP payload sizes).
    pub fn rx_bytes(&self) -> u64 {
        self.rx_bytes
    }
    pub fn tx_bytes(&self) -> u64 {
        self.tx_bytes
    }
    pub fn sessions(&self) -> &Sessions {
        &self.sessions
    }
    pub fn timers(&self) -> &Timers {
        &self.timers
    }
    pub fn staged_len(&self) -> usize {
        self.staged.len()
    }
    pub fn has_cookie(&self) -> bool {
        self.cookies.has_cookie()
    }
    pub fn handshake_in_progress(&self) -> bool {
        self.handshake.is_some()
    }
}
