//! The device: one private key, its peers, and the rules that tie handshakes, sessions,
//! timers, cookies and cryptokey routing together.
//!
//! Inputs are `handle_datagram` (from the UDP socket), `handle_outgoing` (an IP packet from
//! the TUN), and `handle_timeout` (time passed). Outputs come back as return values (a
//! decrypted packet's place in the caller's buffer, an encrypted datagram written into the
//! caller's buffer) or through `poll_transmit` (handshake messages, cookie replies, keepalives
//! and packets that waited for a handshake), `poll_timeout` and `poll_event`.
//!
//! The hot paths — sealing to a peer with a live session, opening a transport message — do no
//! allocation and touch only the peer they concern.

use crate::allowed_ips::AllowedIps;
use crate::constants::*;
use crate::cookie::CookieChecker;
use crate::crypto::{AeadMessage, AEAD_LANES};
use crate::index::{IndexTable, PeerId};
use crate::keys::{PresharedKey, PrivateKey, PublicKey};
use crate::messages::{self, CookieReply, Initiation, MessageType, Response, TransportHeader};
use crate::noise::{self, Identity, PeerKeys};
use crate::peer::{Endpoint, Peer};
use crate::ratelimiter::{RateLimiter, SipBuildHasher};
use crate::session::{Keypair, Session, Slot};
use crate::tai64n::Tai64N;
use rand_core::CryptoRngCore;
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A handshake backlog at least this long puts the device "under load" (wireguard-go's
/// threshold: an eighth of its 1024-entry handshake queue).
pub const UNDER_LOAD_BACKLOG: usize = 128;

/// Why a datagram was dropped. Every drop is silent on the wire; the reason is for counters
/// and verbose logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// Wrong type, reserved bytes or length.
    NotWireGuard,
    NoPrivateKey,
    InvalidMac1,
    /// Under load without a valid mac2: answered with a cookie reply instead.
    CookieReplySent,
    RateLimited,
    HandshakeDecryptFailed,
    UnknownPeer,
    ReplayedTimestamp,
    InitiationFlood,
    UnknownIndex,
    UnexpectedResponse,
    InvalidCookieReply,
    SessionExpired,
    DecryptFailed,
    ReplayedCounter,
    InvalidInnerPacket,
    SourceNotAllowed,
}

impl DropReason {
    /// Every reason, in declaration order (`ALL[r.index()] == r`): for tables of counters.
    pub const ALL: [DropReason; 17] = [
        DropReason::NotWireGuard,
        DropReason::NoPrivateKey,
        DropReason::InvalidMac1,
        DropReason::CookieReplySent,
        DropReason::RateLimited,
        DropReason::HandshakeDecryptFailed,
        DropReason::UnknownPeer,
        DropReason::ReplayedTimestamp,
        DropReason::InitiationFlood,
        DropReason::UnknownIndex,
        DropReason::UnexpectedResponse,
        DropReason::InvalidCookieReply,
        DropReason::SessionExpired,
        DropReason::DecryptFailed,
        DropReason::ReplayedCounter,
        DropReason::InvalidInnerPacket,
        DropReason::SourceNotAllowed,
    ];

    /// Position in [`DropReason::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What an accepted datagram produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// A handshake message, cookie reply or keepalive: nothing to deliver (any answer is
    /// waiting in `poll_transmit`).
    Nothing,
    /// An IP packet to write to the TUN, at `buf[start..start + len]`.
    Packet {
        peer: PeerId,
        start: usize,
        len: usize,
    },
}

/// What became of an IP packet handed to `handle_outgoing`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outgoing {
    /// Encrypted into `out[..len]`; send it to `to`.
    Sent {
        peer: PeerId,
        to: Endpoint,
        len: usize,
    },
    /// Held until a session exists; a handshake may be waiting in `poll_transmit`.
    Staged { peer: PeerId },
    /// No peer's allowed IPs cover the destination (the kernel answers ICMP unreachable).
    NoRoute,
    /// The peer has no endpoint to send to (likewise unreachable).
    NoEndpoint { peer: PeerId },
    /// Not an IPv4/IPv6 packet.
    Invalid,
}

/// What `prepare_outgoing` made of an IP packet: either a job to seal (on any thread), or
/// the same outcomes as `handle_outgoing`.
#[derive(Debug)]
pub enum Prepared {
    /// Routed, nonce taken, timers updated: seal with [`SealJob::seal`] and send.
    Seal(SealJob),
    Staged {
        peer: PeerId,
    },
    NoRoute,
    NoEndpoint {
        peer: PeerId,
    },
    Invalid,
}

/// One transport message to seal: the keypair and counter were fixed in order by the
/// device, so the sealing itself can run on any thread, in any order, outside the device.
/// Whoever sends the results must keep a peer's messages in the order of their jobs (the
/// counters) — the receiver's replay window tolerates reordering, but TCP does not like it.
#[derive(Debug, Clone)]
pub struct SealJob {
    pub peer: PeerId,
    pub to: Endpoint,
    keypair: Arc<Keypair>,
    counter: u64,
    padded: usize,
}

impl SealJob {
    /// Length of the sealed message.
    pub fn sealed_len(&self) -> usize {
        TRANSPORT_OVERHEAD + self.padded
    }

    /// The counter (nonce) this message carries.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Seals `packet` into `out[..self.sealed_len()]` and returns that length. Panics if
    /// `out` is shorter (the caller sized it from `sealed_len`).
    pub fn seal(&self, packet: &[u8], out: &mut [u8]) -> usize {
        let end = TRANSPORT_HEADER_LEN + self.padded;
        out[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len()].copy_from_slice(packet);
        out[TRANSPORT_HEADER_LEN + packet.len()..end].fill(0);
        self.keypair.seal(self.counter, out, self.padded)
    }

    /// Whether two jobs seal under the same key, so that one [`seal_group`] may take both.
    pub fn same_key(&self, other: &SealJob) -> bool {
        Arc::ptr_eq(&self.keypair, &other.keypair)
    }
}

/// Seals a run of packets under one key at once (the AEAD batches them: see
/// `ferrowg_chacha`), each as [`SealJob::seal`] would, read straight from the packet. Each
/// item is a job, its packet and the buffer for the message (`sealed_len()` bytes or more;
/// what it holds does not matter). Panics if the jobs do not share a key.
pub fn seal_group<'a>(items: impl Iterator<Item = (&'a SealJob, &'a [u8], &'a mut [u8])>) {
    let messages = items.map(|(job, packet, out)| {
        let (header, sealed) = out[..job.sealed_len()].split_at_mut(TRANSPORT_HEADER_LEN);
        job.keypair.write_header(job.counter, header);
        let msg = AeadMessage {
            counter: job.counter,
            buf: sealed,
            plaintext: Some(packet),
        };
        (&job.keypair, msg)
    });
    by_lanes(messages, |key, msgs| key.seal_many(msgs));
}

/// Opens a run of transport messages under one key at once: each item is a job and its
/// whole message. `done` gets each message's result in order, as [`OpenJob::open`] would
/// return it. Panics if the jobs do not share a key.
pub fn open_group<'a>(
    items: impl Iterator<Item = (&'a OpenJob, &'a mut [u8])>,
    mut done: impl FnMut(Result<usize, DropReason>),
) {
    let messages = items.map(|(job, buf)| {
        // Shorter than a header and a tag: an empty AEAD part, which fails to open.
        let aead_part: &mut [u8] = match buf.len() >= TRANSPORT_OVERHEAD {
            true => &mut buf[TRANSPORT_HEADER_LEN..],
            false => &mut [],
        };
        (&job.keypair, AeadMessage::new(job.counter, aead_part))
    });
    by_lanes(messages, |key, msgs| {
        let mut ok = [false; AEAD_LANES];
        key.open_many(msgs, &mut ok[..msgs.len()]);
        for (msg, ok) in msgs.iter().zip(ok) {
            done(match ok {
                true => Ok(msg.buf.len() - TAG_LEN),
                false => Err(DropReason::DecryptFailed),
            });
        }
    });
}

/// Hands `messages` to `aead` a stack array of up to [`AEAD_LANES`] at a time (no allocation
/// per packet), checking that they all belong to one keypair.
fn by_lanes<'a>(
    mut messages: impl Iterator<Item = (&'a Arc<Keypair>, AeadMessage<'a>)>,
    mut aead: impl FnMut(&Keypair, &mut [AeadMessage<'a>]),
) {
    let mut key: Option<&Arc<Keypair>> = None;
    loop {
        let mut msgs: [AeadMessage<'a>; AEAD_LANES] = Default::default();
        let mut n = 0;
        for (keypair, msg) in messages.by_ref().take(AEAD_LANES) {
            assert!(
                key.is_none_or(|k| Arc::ptr_eq(k, keypair)),
                "one key per group"
            );
            key = Some(keypair);
            msgs[n] = msg;
            n += 1;
        }
        match (n, key) {
            (1.., Some(k)) => aead(k, &mut msgs[..n]),
            _ => return,
        }
    }
}

/// One transport message to open, found by `begin_transport`: like [`SealJob`], the
/// decryption may run on any thread; `finish_transport` then applies the replay window and
/// the rest under the device.
#[derive(Debug, Clone)]
pub struct OpenJob {
    keypair: Arc<Keypair>,
    counter: u64,
}

impl OpenJob {
    /// Decrypts the whole transport message `buf` in place; the plaintext is left at
    /// `buf[16..16 + returned length]`.
    pub fn open(&self, buf: &mut [u8]) -> Result<usize, DropReason> {
        self.keypair
            .open(self.counter, buf)
            .map_err(|_| DropReason::DecryptFailed)
    }

    /// Whether two jobs open under the same key, so that one [`open_group`] may take both.
    pub fn same_key(&self, other: &OpenJob) -> bool {
        Arc::ptr_eq(&self.keypair, &other.keypair)
    }
}

/// A datagram to send, written into the caller's buffer by `poll_transmit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    pub to: Endpoint,
    pub len: usize,
    pub peer: Option<PeerId>,
}

/// Handshake-level events, for the verbose log (the kernel's dynamic debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    InitiationSent {
        peer: PeerId,
        retry: bool,
    },
    InitiationReceived {
        peer: PeerId,
    },
    ResponseSent {
        peer: PeerId,
    },
    ResponseReceived {
        peer: PeerId,
    },
    CookieReplySent {
        to: SocketAddr,
    },
    CookieReplyReceived {
        peer: PeerId,
    },
    KeypairCreated {
        peer: PeerId,
        initiator: bool,
    },
    KeypairConfirmed {
        peer: PeerId,
    },
    KeysZeroed {
        peer: PeerId,
    },
    HandshakeGaveUp {
        peer: PeerId,
    },
    EndpointChanged {
        peer: PeerId,
        from: Option<SocketAddr>,
        to: SocketAddr,
    },
    NoEndpoint {
        peer: PeerId,
    },
}

/// Errors of configuration calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    /// A peer may not have the device's own public key (silently ignored by `wg`).
    OwnPublicKey,
    UnknownPeer,
    InvalidCidr,
}

struct Control {
    to: Endpoint,
    peer: Option<PeerId>,
    len: usize,
    bytes: [u8; INITIATION_LEN],
}

pub struct Device {
    identity: Option<Identity>,
    checker: Option<CookieChecker>,
    peers: Vec<Option<Peer>>,
    free_slots: Vec<PeerId>,
    /// Peers in creation order (what `get` reports). A removed peer leaves a hole
    /// (`NO_PEER`) rather than shifting the rest, so removal is O(1); holes are squeezed
    /// out once they are half the vector (amortized O(1) per removal).
    order: Vec<PeerId>,
    /// Where each live peer sits in `order`, indexed by `PeerId`.
    order_pos: Vec<u32>,
    /// Holes in `order`.
    order_holes: usize,
    by_key: HashMap<[u8; 32], PeerId, SipBuildHasher>,
    indices: IndexTable,
    allowed_ips: AllowedIps<PeerId>,
    ratelimiter: RateLimiter,
    under_load_until: Option<Instant>,
    mtu: usize,
    outbox: VecDeque<Control>,
    flush: VecDeque<PeerId>,
    events: VecDeque<Event>,
    events_enabled: bool,
    rng: Box<dyn CryptoRngCore + Send>,
    /// State of the generator for timer jitter (splitmix64, seeded from `rng`). Jitter only
    /// keeps peers from rekeying in lockstep; it needs no secrecy, and drawing it from `rng`
    /// (the OS generator in the daemon) was a getrandom system call each time the
    /// new-handshake timer was re-armed: ~2,300 a second per daemon under a TCP transfer.
    jitter_state: u64,
    /// Unix time at an instant, so wall-clock values (TAI64N, last handshake) follow the
    /// caller's time without a clock read here.
    wall_anchor: (Instant, Duration),
}

const MAX_EVENTS: usize = 4096;

/// A hole in `Device::order`.
const NO_PEER: PeerId = PeerId::MAX;

impl Device {
    /// A device with no private key and no peers. `now` and `unix_now` anchor wall time.
    pub fn new(mut rng: Box<dyn CryptoRngCore + Send>, now: Instant, unix_now: Duration) -> Self {
        let mut k = [[0u8; 16]; 3];
        for key in k.iter_mut() {
            rng.fill_bytes(key);
        }
        Device {
            identity: None,
            checker: None,
            peers: Vec::new(),
            free_slots: Vec::new(),
            order: Vec::new(),
            order_pos: Vec::new(),
            order_holes: 0,
            by_key: HashMap::with_hasher(SipBuildHasher::new(k[0])),
            indices: IndexTable::new(k[1]),
            allowed_ips: AllowedIps::new(),
            ratelimiter: RateLimiter::new(k[2]),
            under_load_until: None,
            mtu: DEFAULT_MTU,
            outbox: VecDeque::new(),
            flush: VecDeque::new(),
            events: VecDeque::new(),
            events_enabled: false,
            jitter_state: rng.next_u64(),
            rng,
            wall_anchor: (now, unix_now),
        }
    }

    // ----- configuration -------------------------------------------------------------

    /// Re-anchors wall time (call it now and then so clock steps are followed).
    pub fn set_wall_clock(&mut self, now: Instant, unix_now: Duration) {
        self.wall_anchor = (now, unix_now);
    }

    fn wall(&self, now: Instant) -> Duration {
        let (at, unix) = self.wall_anchor;
        if now >= at {
            unix + (now - at)
        } else {
            unix.saturating_sub(at - now)
        }
    }

    pub fn set_mtu(&mut self, mtu: usize) {
        self.mtu = mtu;
    }
    pub fn mtu(&self) -> usize {
        self.mtu
    }

    pub fn enable_events(&mut self, on: bool) {
        self.events_enabled = on;
        if !on {
            self.events.clear();
        }
    }

    fn event(&mut self, e: Event) {
        if self.events_enabled && self.events.len() < MAX_EVENTS {
            self.events.push_back(e);
        }
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    pub fn private_key(&self) -> Option<&PrivateKey> {
        self.identity.as_ref().map(|i| &i.private)
    }
    pub fn public_key(&self) -> Option<&PublicKey> {
        self.identity.as_ref().map(|i| &i.public)
    }

    /// Sets or removes (`None` or an all-zero key) the private key. A peer with the matching
    /// public key is removed; every session stops sending and pending handshakes are
    /// forgotten, so fresh handshakes start with the new identity.
    pub fn set_private_key(&mut self, key: Option<PrivateKey>) {
        let key = key.filter(|k| !k.is_zero());
        if self.private_key() == key.as_ref() {
            return;
        }
        self.identity = key.map(Identity::new);
        self.checker = self
            .identity
            .as_ref()
            .map(|i| CookieChecker::new(&i.public));
        if let Some(pid) = self.identity.as_ref().and_then(|i| self.peer_id(&i.public)) {
            self.remove_peer(pid);
        }
        for pid in 0..self.peers.len() as PeerId {
            let Some(peer) = self.peers[pid as usize].as_mut() else {
                continue;
            };
            peer.keys.recompute(self.identity.as_ref());
            peer.sessions.invalidate_sending();
            if let Some(h) = peer.handshake.take() {
                self.indices.release(h.local_index);
            }
            peer.last_sent_handshake = None;
        }
    }

    /// Adds a peer (or returns the existing one with that key).
    pub fn add_peer(&mut self, public: PublicKey) -> Result<PeerId, ConfigError> {
        if self.public_key() == Some(&public) {
            return Err(ConfigError::OwnPublicKey);
        }
        if let Some(pid) = self.peer_id(&public) {
            return Ok(pid);
        }
        let keys = PeerKeys::new(self.identity.as_ref(), public, PresharedKey::default());
        let peer = Peer::new(keys);
        let pid = match self.free_slots.pop() {
            Some(pid) => {
                self.peers[pid as usize] = Some(peer);
                pid
            }
            None => {
                self.peers.push(Some(peer));
                (self.peers.len() - 1) as PeerId
            }
        };
        self.by_key.insert(public.0, pid);
        if self.order_pos.len() <= pid as usize {
            self.order_pos.resize(pid as usize + 1, 0);
        }
        self.order_pos[pid as usize] = self.order.len() as u32;
        self.order.push(pid);
        Ok(pid)
    }

    pub fn peer_id(&self, public: &PublicKey) -> Option<PeerId> {
        self.by_key.get(&public.0).copied()
    }

    pub fn peer(&self, pid: PeerId) -> Option<&Peer> {
        self.peers.get(pid as usize)?.as_ref()
    }

    fn peer_mut(&mut self, pid: PeerId) -> Result<&mut Peer, ConfigError> {
        self.peers
            .get_mut(pid as usize)
            .and_then(|p| p.as_mut())
            .ok_or(ConfigError::UnknownPeer)
    }

    /// Peers in creation order.
    pub fn peers(&self) -> impl Iterator<Item = (PeerId, &Peer)> + '_ {
        self.order
            .iter()
            .filter(|&&pid| pid != NO_PEER)
            .filter_map(move |&pid| self.peer(pid).map(|p| (pid, p)))
    }

    pub fn peer_count(&self) -> usize {
        self.order.len() - self.order_holes
    }

    /// Live peers in creation order, as a vector (for loops that mutate the device).
    fn ordered_ids(&self) -> Vec<PeerId> {
        self.order
            .iter()
            .copied()
            .filter(|&p| p != NO_PEER)
            .collect()
    }

    /// Leaves a hole at `pid`'s place in `order`; squeezes the holes out when they are half.
    fn unlink_from_order(&mut self, pid: PeerId) {
        let at = self.order_pos[pid as usize] as usize;
        debug_assert_eq!(self.order[at], pid);
        self.order[at] = NO_PEER;
        self.order_holes += 1;
        if self.order_holes == self.order.len() {
            self.order.clear();
            self.order_holes = 0;
        } else if self.order_holes * 2 > self.order.len() {
            self.order.retain(|&p| p != NO_PEER);
            for (i, &p) in self.order.iter().enumerate() {
                self.order_pos[p as usize] = i as u32;
            }
            self.order_holes = 0;
        }
    }

    pub fn remove_peer(&mut self, pid: PeerId) {
        if self.take_peer(pid) {
            self.outbox.retain(|c| c.peer != Some(pid));
            self.flush.retain(|&p| p != pid);
        }
    }

    /// `remove_peer` without the (linear) purge of the outbox and flush queues.
    fn take_peer(&mut self, pid: PeerId) -> bool {
        let Some(mut peer) = self.peers.get_mut(pid as usize).and_then(|p| p.take()) else {
            return false;
        };
        for idx in peer.sessions.clear() {
            self.indices.release(idx);
        }
        if let Some(h) = peer.handshake.take() {
            self.indices.release(h.local_index);
        }
        self.allowed_ips.remove_value(pid);
        self.by_key.remove(&peer.keys.remote_static.0);
        self.unlink_from_order(pid);
        self.free_slots.push(pid);
        true
    }

    pub fn remove_all_peers(&mut self) {
        let ids = self.ordered_ids();
        if ids.is_empty() {
            return;
        }
        for pid in ids {
            self.take_peer(pid);
        }
        // Every queued message of a peer is gone; cookie replies (no peer) stay.
        self.outbox.retain(|c| c.peer.is_none());
        self.flush.clear();
    }

    /// Changes the preshared key; it takes effect with the next handshake.
    pub fn set_preshared_key(&mut self, pid: PeerId, psk: PresharedKey) -> Result<(), ConfigError> {
        self.peer_mut(pid)?.keys.preshared = psk;
        Ok(())
    }

    /// Sets the endpoint from configuration; any remembered local source is forgotten.
    pub fn set_endpoint(&mut self, pid: PeerId, addr: SocketAddr) -> Result<(), ConfigError> {
        self.peer_mut(pid)?.endpoint = Some(Endpoint::new(addr));
        Ok(())
    }

    /// Forgets the remembered local source address of every peer (listen port or fwmark
    /// changed, or the address disappeared).
    pub fn clear_endpoint_sources(&mut self) {
        for p in self.peers.iter_mut().flatten() {
            if let Some(ep) = p.endpoint.as_mut() {
                ep.local = None;
            }
        }
    }

    /// Forgets the remembered local source of the peers at `addr`: sending from it failed
    /// (the address was removed from the host), so the routing table picks the next one.
    pub fn clear_endpoint_source_for(&mut self, addr: SocketAddr) {
        for p in self.peers.iter_mut().flatten() {
            if let Some(ep) = p.endpoint.as_mut() {
                if ep.addr == addr {
                    ep.local = None;
                }
            }
        }
    }

    /// Sets the persistent keepalive interval (0 = off). Turning it on sends a keepalive at
    /// once, so a NAT mapping opens without waiting a whole interval.
    pub fn set_persistent_keepalive(
        &mut self,
        now: Instant,
        pid: PeerId,
        interval: u16,
    ) -> Result<(), ConfigError> {
        let peer = self.peer_mut(pid)?;
        let was_off = peer.timers.persistent_keepalive_interval == 0;
        peer.timers.set_persistent_keepalive(interval);
        if was_off && interval > 0 && self.identity.is_some() {
            self.send_keepalive(now, pid);
        }
        Ok(())
    }

    pub fn add_allowed_ip(&mut self, pid: PeerId, ip: IpAddr, cidr: u8) -> Result<(), ConfigError> {
        self.peer_mut(pid)?;
        self.allowed_ips
            .insert(ip, cidr, pid)
            .map_err(|_| ConfigError::InvalidCidr)
    }

    /// Removes a prefix only if it belongs to this peer.
    pub fn remove_allowed_ip(&mut self, pid: PeerId, ip: IpAddr, cidr: u8) -> bool {
        self.allowed_ips.remove(ip, cidr, pid)
    }

    pub fn clear_allowed_ips(&mut self, pid: PeerId) {
        self.allowed_ips.remove_value(pid);
    }

    pub fn allowed_ips_of(&self, pid: PeerId) -> Vec<(IpAddr, u8)> {
        self.allowed_ips.prefixes_of(pid).collect()
    }

    /// The peer whose allowed IPs cover `ip` (longest prefix).
    pub fn route(&self, ip: IpAddr) -> Option<PeerId> {
        self.allowed_ips.lookup(ip)
    }

    /// Interface down: staged packets, timers, handshakes and sessions are all dropped.
    pub fn down(&mut self) {
        for pid in 0..self.peers.len() as PeerId {
            self.clear_peer_state(pid);
            if let Some(p) = self.peers[pid as usize].as_mut() {
                p.staged.clear();
                p.timers.stop_all();
                p.last_sent_handshake = None;
            }
        }
        self.outbox.clear();
        self.flush.clear();
    }

    /// Interface up: peers with a persistent keepalive announce themselves.
    pub fn up(&mut self, now: Instant) {
        for pid in self.ordered_ids() {
            let Some(p) = self.peer(pid) else { continue };
            if p.timers.persistent_keepalive_interval > 0 {
                self.send_keepalive(now, pid);
            }
        }
    }

    fn clear_peer_state(&mut self, pid: PeerId) {
        let Some(peer) = self.peers.get_mut(pid as usize).and_then(|p| p.as_mut()) else {
            return;
        };
        for idx in peer.sessions.clear() {
            self.indices.release(idx);
        }
        if let Some(h) = peer.handshake.take() {
            self.indices.release(h.local_index);
        }
    }

    // ----- load ----------------------------------------------------------------------

    /// Reports the caller's handshake backlog. A long backlog puts the device under load for
    /// at least a second: initiations and responses then need a valid mac2 (cookie) and pass
    /// the per-source rate limiter.
    pub fn note_handshake_backlog(&mut self, now: Instant, queued: usize) {
        if queued >= UNDER_LOAD_BACKLOG {
            self.under_load_until = Some(now + UNDER_LOAD_AFTER_TIME);
        }
    }

    pub fn is_under_load(&self, now: Instant) -> bool {
        matches!(self.under_load_until, Some(t) if now < t)
    }

    /// Whether `datagram` (a UDP payload, possibly only the start of one) is a WireGuard
    /// message meant for this very device: an initiation carrying our mac1, or a response,
    /// cookie reply or transport message to one of our live receiver indices. The caller
    /// asks this of packets about to enter the tunnel: one of them means another
    /// interface's outer datagrams to us are being routed back into our own tunnel, a loop
    /// that would otherwise seal them again and again. A chance match needs 32 random bits
    /// to equal a live index, and only drops that one packet.
    pub fn is_addressed_to_us(&self, datagram: &[u8]) -> bool {
        let receiver = |at: usize| {
            datagram
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        let to_live_index = |at: usize| receiver(at).is_some_and(|i| self.indices.get(i).is_some());
        match messages::classify(datagram) {
            Some(MessageType::Initiation) => self
                .checker
                .as_ref()
                .is_some_and(|c| c.check_mac1(datagram)),
            Some(MessageType::Response) => to_live_index(8),
            Some(MessageType::CookieReply | MessageType::Transport) => to_live_index(4),
            None => false,
        }
    }

    // ----- receive -------------------------------------------------------------------

    /// Processes one datagram from `from`. Transport data is decrypted in place in `buf`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
        match messages::classify(buf).ok_or(DropReason::NotWireGuard)? {
            MessageType::Transport => self.handle_transport(now, from, buf),
            MessageType::Initiation => self.handle_initiation(now, from, buf),
            MessageType::Response => self.handle_response(now, from, buf),
            MessageType::CookieReply => self.handle_cookie_reply(now, buf),
        }
    }

    /// mac1, then (under load) mac2 and the rate limiter.
    fn admit_handshake(
        &mut self,
        now: Instant,
        from: &Endpoint,
        msg: &[u8],
    ) -> Result<(), DropReason> {
        let checker = self.checker.as_mut().ok_or(DropReason::NoPrivateKey)?;
        if !checker.check_mac1(msg) {
            return Err(DropReason::InvalidMac1);
        }
        if !matches!(self.under_load_until, Some(t) if now < t) {
            return Ok(());
        }
        if !checker.check_mac2(now, msg, &from.addr) {
            if let Some(reply) = checker.create_reply(now, msg, &from.addr, &mut *self.rng) {
                self.queue_control(*from, None, &reply);
                self.event(Event::CookieReplySent { to: from.addr });
            }
            return Err(DropReason::CookieReplySent);
        }
        if !self.ratelimiter.allow(now, from.addr.ip()) {
            return Err(DropReason::RateLimited);
        }
        Ok(())
    }

    fn queue_control(&mut self, to: Endpoint, peer: Option<PeerId>, msg: &[u8]) {
        let mut bytes = [0u8; INITIATION_LEN];
        bytes[..msg.len()].copy_from_slice(msg);
        self.outbox.push_back(Control {
            to,
            peer,
            len: msg.len(),
            bytes,
        });
    }

    /// Authenticated traffic from a new address moves the peer's endpoint there (roaming).
    fn roam(&mut self, pid: PeerId, from: Endpoint) {
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        if peer.endpoint != Some(from) {
            let old = peer.endpoint.map(|e| e.addr);
            peer.endpoint = Some(from);
            if old != Some(from.addr) {
                self.event(Event::EndpointChanged {
                    peer: pid,
                    from: old,
                    to: from.addr,
                });
            }
        }
    }

    fn handle_initiation(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &[u8],
    ) -> Result<Received, DropReason> {
        self.admit_handshake(now, &from, buf)?;
        let msg = Initiation::parse(buf).ok_or(DropReason::NotWireGuard)?;
        let identity = self.identity.as_ref().ok_or(DropReason::NoPrivateKey)?;
        let partial = noise::consume_initiation_begin(identity, &msg)
            .ok_or(DropReason::HandshakeDecryptFailed)?;
        let pid = self
            .peer_id(&partial.initiator_static)
            .ok_or(DropReason::UnknownPeer)?;
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownPeer)?;
        let (timestamp, state) = noise::consume_initiation_finish(&partial, &peer.keys)
            .ok_or(DropReason::HandshakeDecryptFailed)?;
        if timestamp <= peer.latest_timestamp {
            return Err(DropReason::ReplayedTimestamp);
        }
        if matches!(peer.last_initiation_consumed, Some(t) if now < t + HANDSHAKE_FLOOD_INTERVAL) {
            return Err(DropReason::InitiationFlood);
        }
        peer.latest_timestamp = timestamp;
        peer.last_initiation_consumed = Some(now);
        // Our own initiation in flight is superseded: the peer's handshake wins.
        if let Some(h) = peer.handshake.take() {
            self.indices.release(h.local_index);
        }
        self.event(Event::InitiationReceived { peer: pid });
        self.roam(pid, from);

        let local_index = self.indices.allocate(pid, &mut *self.rng);
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownPeer)?;
        peer.rx_bytes += INITIATION_LEN as u64;
        peer.timers.on_authenticated_packet_received();
        peer.timers.on_authenticated_packet_traversal(now);
        let Some((response, keys)) =
            noise::create_response(&state, &peer.keys, local_index, &mut *self.rng)
        else {
            self.indices.release(local_index);
            return Err(DropReason::HandshakeDecryptFailed);
        };
        let keypair = Keypair::new(&keys, false, local_index, state.remote_index, now);
        let dropped = peer.sessions.install_as_responder(Session::new(keypair));
        let mut bytes = response.to_bytes();
        peer.cookies.add_macs(now, &mut bytes);
        peer.last_sent_handshake = Some(now);
        peer.timers.on_session_derived(now);
        peer.timers.on_authenticated_packet_traversal(now);
        peer.timers.on_authenticated_packet_sent();
        peer.tx_bytes += RESPONSE_LEN as u64;
        for idx in dropped {
            self.indices.release(idx);
        }
        self.queue_control(from, Some(pid), &bytes);
        self.event(Event::ResponseSent { peer: pid });
        self.event(Event::KeypairCreated {
            peer: pid,
            initiator: false,
        });
        Ok(Received::Nothing)
    }

    fn handle_response(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &[u8],
    ) -> Result<Received, DropReason> {
        self.admit_handshake(now, &from, buf)?;
        let msg = Response::parse(buf).ok_or(DropReason::NotWireGuard)?;
        let pid = self
            .indices
            .get(msg.receiver)
            .ok_or(DropReason::UnknownIndex)?;
        let identity = self.identity.as_ref().ok_or(DropReason::NoPrivateKey)?;
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownIndex)?;
        let state = match &peer.handshake {
            Some(h) if h.local_index == msg.receiver => h,
            _ => return Err(DropReason::UnexpectedResponse),
        };
        let keys = noise::consume_response(state, identity, &peer.keys, &msg)
            .ok_or(DropReason::HandshakeDecryptFailed)?;
        let state = peer.handshake.take().expect("checked above");
        let keypair = Keypair::new(&keys, true, state.local_index, msg.sender, now);
        let dropped = peer.sessions.install_as_initiator(Session::new(keypair));
        peer.rx_bytes += RESPONSE_LEN as u64;
        peer.timers.on_authenticated_packet_received();
        peer.timers.on_authenticated_packet_traversal(now);
        peer.timers.on_handshake_complete();
        peer.timers.on_session_derived(now);
        peer.last_handshake =
            Some(self.wall_anchor.1 + now.saturating_duration_since(self.wall_anchor.0));
        for idx in dropped {
            self.indices.release(idx);
        }
        self.event(Event::ResponseReceived { peer: pid });
        self.event(Event::KeypairCreated {
            peer: pid,
            initiator: true,
        });
        self.roam(pid, from);
        // Confirm the session to the responder at once: with waiting data, or a keepalive.
        self.send_keepalive(now, pid);
        Ok(Received::Nothing)
    }

    fn handle_cookie_reply(&mut self, now: Instant, buf: &[u8]) -> Result<Received, DropReason> {
        let reply = CookieReply::parse(buf).ok_or(DropReason::NotWireGuard)?;
        let pid = self
            .indices
            .get(reply.receiver)
            .ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownIndex)?;
        peer.cookies
            .consume_reply(now, &reply)
            .map_err(|_| DropReason::InvalidCookieReply)?;
        self.event(Event::CookieReplyReceived { peer: pid });
        Ok(Received::Nothing)
    }

    fn handle_transport(
        &mut self,
        now: Instant,
        from: Endpoint,
        buf: &mut [u8],
    ) -> Result<Received, DropReason> {
        let job = self.begin_transport(now, buf)?;
        let opened = job.open(buf);
        self.finish_transport(now, from, &job, opened, buf)
    }

    /// First third of receiving a transport message (`buf`, classified as one by the
    /// caller or not): finds its keypair and rejects expired keys and counters the replay
    /// window already refuses. The decryption ([`OpenJob::open`]) may then run elsewhere.
    pub fn begin_transport(&self, now: Instant, buf: &[u8]) -> Result<OpenJob, DropReason> {
        let hdr = TransportHeader::parse(buf).ok_or(DropReason::NotWireGuard)?;
        let pid = self
            .indices
            .get(hdr.receiver)
            .ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers[pid as usize]
            .as_ref()
            .ok_or(DropReason::UnknownIndex)?;
        let session = peer
            .sessions
            .find(hdr.receiver)
            .and_then(|slot| peer.sessions.get(slot))
            .ok_or(DropReason::UnknownIndex)?;
        if !session.can_receive(now, hdr.counter) {
            return Err(if session.keypair.age(now) >= REJECT_AFTER_TIME {
                DropReason::SessionExpired
            } else {
                DropReason::ReplayedCounter
            });
        }
        Ok(OpenJob {
            keypair: session.keypair.clone(),
            counter: hdr.counter,
        })
    }

    /// Last third: the result of [`OpenJob::open`] on `buf`. The keypair must still be held
    /// (a rotation while the message was being opened drops it), the counter passes the
    /// replay window exactly once, then roaming, timers, the inner-packet and source checks.
    pub fn finish_transport(
        &mut self,
        now: Instant,
        from: Endpoint,
        job: &OpenJob,
        opened: Result<usize, DropReason>,
        buf: &[u8],
    ) -> Result<Received, DropReason> {
        let len = opened?;
        let local_index = job.keypair.local_index;
        let pid = self
            .indices
            .get(local_index)
            .ok_or(DropReason::UnknownIndex)?;
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownIndex)?;
        let slot = peer
            .sessions
            .find(local_index)
            .ok_or(DropReason::UnknownIndex)?;
        let session = peer
            .sessions
            .get_mut(slot)
            .ok_or(DropReason::UnknownIndex)?;
        if !Arc::ptr_eq(&session.keypair, &job.keypair) {
            // The index was released and reused while the message was being opened.
            return Err(DropReason::UnknownIndex);
        }
        if !session.accept_counter(job.counter) {
            return Err(DropReason::ReplayedCounter);
        }
        self.after_authenticated_receive(now, pid, slot, from);
        let wire_len = buf.len() as u64;
        if len == 0 {
            if let Some(peer) = self.peers[pid as usize].as_mut() {
                peer.rx_bytes += wire_len;
            }
            return Ok(Received::Nothing);
        }
        let peer = self.peers[pid as usize]
            .as_mut()
            .ok_or(DropReason::UnknownIndex)?;
        peer.timers.on_data_received(now);
        let plaintext = &buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + len];
        let inner = messages::inner_packet_len(plaintext).ok_or(DropReason::InvalidInnerPacket)?;
        let src = source_address(plaintext).ok_or(DropReason::InvalidInnerPacket)?;
        if self.allowed_ips.lookup(src) != Some(pid) {
            return Err(DropReason::SourceNotAllowed);
        }
        // Like the kernel, data counts as received only once it is delivered: packets refused
        // by the inner-header or source checks are errors, not traffic.
        if let Some(peer) = self.peers[pid as usize].as_mut() {
            peer.rx_bytes += wire_len;
        }
        Ok(Received::Packet {
            peer: pid,
            start: TRANSPORT_HEADER_LEN,
            len: inner,
        })
    }

    /// The bookkeeping of every authenticated transport message: key confirmation, roaming,
    /// the initiator's last-chance rekey and timers. (Byte counters are the caller's: data
    /// counts only once delivered.)
    fn after_authenticated_receive(
        &mut self,
        now: Instant,
        pid: PeerId,
        slot: Slot,
        from: Endpoint,
    ) {
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        let mut confirmed = false;
        if slot == Slot::Next {
            for idx in peer.sessions.confirm_next() {
                self.indices.release(idx);
            }
            peer.timers.on_handshake_complete();
            peer.last_handshake =
                Some(self.wall_anchor.1 + now.saturating_duration_since(self.wall_anchor.0));
            confirmed = true;
        }
        peer.timers.on_authenticated_packet_received();
        peer.timers.on_authenticated_packet_traversal(now);
        let lastminute = match &peer.sessions.current {
            Some(s) => {
                s.keypair.is_initiator
                    && !peer.timers.sent_lastminute_handshake
                    && s.keypair.age(now) >= REKEY_ON_RECEIVE_AGE
            }
            None => false,
        };
        if lastminute {
            peer.timers.sent_lastminute_handshake = true;
        }
        self.roam(pid, from);
        if confirmed {
            self.event(Event::KeypairConfirmed { peer: pid });
            if !self.peers[pid as usize]
                .as_ref()
                .is_some_and(|p| p.staged.is_empty())
            {
                self.send_staged(now, pid);
            }
        }
        if lastminute {
            self.send_initiation(now, pid, false);
        }
    }

    // ----- send ----------------------------------------------------------------------

    /// Routes and encrypts one IP packet from the TUN into `out`, which must have room for
    /// `packet.len() + TRANSPORT_OVERHEAD + PADDING_MULTIPLE` bytes.
    pub fn handle_outgoing(&mut self, now: Instant, packet: &[u8], out: &mut [u8]) -> Outgoing {
        match self.prepare_outgoing(now, packet) {
            Prepared::Seal(job) => {
                if out.len() < job.sealed_len() {
                    return Outgoing::Invalid;
                }
                let len = job.seal(packet, out);
                Outgoing::Sent {
                    peer: job.peer,
                    to: job.to,
                    len,
                }
            }
            Prepared::Staged { peer } => Outgoing::Staged { peer },
            Prepared::NoRoute => Outgoing::NoRoute,
            Prepared::NoEndpoint { peer } => Outgoing::NoEndpoint { peer },
            Prepared::Invalid => Outgoing::Invalid,
        }
    }

    /// Everything of `handle_outgoing` but the encryption: routes `packet`, takes the next
    /// counter of the current session and runs the send-side timers, in the caller's order.
    /// The returned job seals on any thread.
    pub fn prepare_outgoing(&mut self, now: Instant, packet: &[u8]) -> Prepared {
        let Some(dst) = destination_address(packet) else {
            return Prepared::Invalid;
        };
        let Some(pid) = self.allowed_ips.lookup(dst) else {
            return Prepared::NoRoute;
        };
        let mtu = self.mtu;
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return Prepared::NoRoute;
        };
        let Some(to) = peer.endpoint else {
            return Prepared::NoEndpoint { peer: pid };
        };
        if peer.staged.is_empty() {
            if let Some(session) = peer.sessions.current.as_mut() {
                if let Some(counter) = session.next_counter(now) {
                    let padded = messages::padded_len(packet.len(), mtu);
                    let job = SealJob {
                        peer: pid,
                        to,
                        keypair: session.keypair.clone(),
                        counter,
                        padded,
                    };
                    peer.tx_bytes += job.sealed_len() as u64;
                    self.after_send(now, pid, true);
                    return Prepared::Seal(job);
                }
            }
        }
        if peer.staged.len() >= MAX_STAGED_PACKETS {
            peer.staged.pop_front();
        }
        peer.staged.push_back(packet.to_vec());
        self.send_staged(now, pid);
        Prepared::Staged { peer: pid }
    }

    /// Timers and rekeying after a message went out on the current session.
    fn after_send(&mut self, now: Instant, pid: PeerId, is_data: bool) {
        // Jitter only when the new-handshake timer is about to be armed: drawing it for every
        // packet was a getrandom system call per packet (5% of the sender's CPU in perf).
        let needs_jitter = is_data
            && self.peers[pid as usize]
                .as_ref()
                .is_some_and(|p| !p.timers.is_new_handshake_pending());
        let jitter = if needs_jitter {
            self.jitter()
        } else {
            Duration::ZERO
        };
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        peer.timers.on_authenticated_packet_traversal(now);
        peer.timers.on_authenticated_packet_sent();
        if is_data {
            peer.timers.on_data_sent(now, jitter);
        }
        let rekey = match &peer.sessions.current {
            Some(s) => {
                s.send_counter() > REKEY_AFTER_MESSAGES
                    || (s.keypair.is_initiator && s.keypair.age(now) >= REKEY_AFTER_TIME)
            }
            None => false,
        };
        if rekey {
            self.send_initiation(now, pid, false);
        }
    }

    fn jitter(&mut self) -> Duration {
        // splitmix64 (Steele, Lea, Flood 2014): one add and three multiply-xorshifts.
        self.jitter_state = self.jitter_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.jitter_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Duration::from_millis(z % REKEY_TIMEOUT_JITTER_MAX_MS)
    }

    /// Sends what is staged if a session can carry it, else asks for a handshake.
    fn send_staged(&mut self, now: Instant, pid: PeerId) {
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        let usable = peer
            .sessions
            .current
            .as_ref()
            .is_some_and(|s| s.can_send(now));
        if usable {
            if !peer.in_flush_queue {
                peer.in_flush_queue = true;
                self.flush.push_back(pid);
            }
        } else {
            self.send_initiation(now, pid, false);
        }
    }

    /// A keepalive is an empty staged packet, so waiting data makes it unnecessary.
    fn send_keepalive(&mut self, now: Instant, pid: PeerId) {
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        if peer.staged.is_empty() {
            peer.staged.push_back(Vec::new());
        }
        self.send_staged(now, pid);
    }

    /// Creates and queues an initiation, at most one per REKEY_TIMEOUT per peer.
    fn send_initiation(&mut self, now: Instant, pid: PeerId, is_retry: bool) {
        let wall = self.wall(now);
        let jitter = self.jitter();
        let Some(identity) = self.identity.as_ref() else {
            return;
        };
        let Some(peer) = self.peers[pid as usize].as_mut() else {
            return;
        };
        if !is_retry {
            peer.timers.handshake_attempts = 0;
        }
        if matches!(peer.last_sent_handshake, Some(t) if now < t + REKEY_TIMEOUT) {
            return;
        }
        if !peer.keys.can_handshake() {
            return;
        }
        peer.last_sent_handshake = Some(now);
        if let Some(h) = peer.handshake.take() {
            self.indices.release(h.local_index);
        }
        let local_index = self.indices.allocate(pid, &mut *self.rng);
        let timestamp = Tai64N::from_unix(wall);
        let Some((msg, state)) =
            noise::create_initiation(identity, &peer.keys, local_index, timestamp, &mut *self.rng)
        else {
            self.indices.release(local_index);
            return;
        };
        let mut bytes = msg.to_bytes();
        peer.cookies.add_macs(now, &mut bytes);
        peer.handshake = Some(state);
        peer.timers.on_authenticated_packet_traversal(now);
        peer.timers.on_authenticated_packet_sent();
        peer.timers.on_handshake_initiated(now, jitter);
        match peer.endpoint {
            Some(to) => {
                peer.tx_bytes += INITIATION_LEN as u64;
                self.queue_control(to, Some(pid), &bytes);
                self.event(Event::InitiationSent {
                    peer: pid,
                    retry: is_retry,
                });
            }
            None => self.event(Event::NoEndpoint { peer: pid }),
        }
    }

    /// The next datagram to send: handshake messages and cookie replies first, then packets
    /// that were waiting for a session (and keepalives). `out` must hold the largest staged
    /// packet plus `TRANSPORT_OVERHEAD + PADDING_MULTIPLE` bytes (MTU + 48 suffices).
    /// Like [`poll_transmit`](Self::poll_transmit), but only handshake-level messages
    /// (initiations, responses, cookie replies), never a transport message: nothing it
    /// returns carries a counter. A caller whose data path seals on several threads lets one
    /// of them own the counters — it calls `poll_transmit` and `prepare_outgoing` and sends
    /// in their order — and the others use this, checking [`has_pending_data`]
    /// (Self::has_pending_data) to wake the owner.
    pub fn poll_control(&mut self, out: &mut [u8]) -> Option<Transmit> {
        let c = self.outbox.pop_front()?;
        out[..c.len].copy_from_slice(&c.bytes[..c.len]);
        Some(Transmit {
            to: c.to,
            len: c.len,
            peer: c.peer,
        })
    }

    /// Whether staged packets or keepalives wait for `poll_transmit` to seal them.
    pub fn has_pending_data(&self) -> bool {
        !self.flush.is_empty()
    }

    pub fn poll_transmit(&mut self, now: Instant, out: &mut [u8]) -> Option<Transmit> {
        loop {
            if let Some(c) = self.outbox.pop_front() {
                out[..c.len].copy_from_slice(&c.bytes[..c.len]);
                return Some(Transmit {
                    to: c.to,
                    len: c.len,
                    peer: c.peer,
                });
            }
            let &pid = self.flush.front()?;
            let mtu = self.mtu;
            let Some(peer) = self.peers.get_mut(pid as usize).and_then(|p| p.as_mut()) else {
                self.flush.pop_front();
                continue;
            };
            let (Some(to), Some(packet)) = (peer.endpoint, peer.staged.pop_front()) else {
                peer.in_flush_queue = false;
                self.flush.pop_front();
                continue;
            };
            let is_data = !packet.is_empty();
            let sealed = seal_into(peer, now, &packet, out, mtu);
            if sealed.is_none() {
                peer.staged.push_front(packet);
            }
            match sealed {
                Some(len) => {
                    if peer.staged.is_empty() {
                        peer.in_flush_queue = false;
                        self.flush.pop_front();
                    }
                    self.after_send(now, pid, is_data);
                    return Some(Transmit {
                        to,
                        len,
                        peer: Some(pid),
                    });
                }
                None => {
                    // The session lapsed while packets waited: handshake again, keep them.
                    peer.in_flush_queue = false;
                    self.flush.pop_front();
                    self.send_initiation(now, pid, false);
                }
            }
        }
    }

    // ----- timers --------------------------------------------------------------------

    /// The earliest time `handle_timeout` has work to do.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.peers
            .iter()
            .flatten()
            .filter_map(|p| p.timers.next_deadline())
            .min()
    }

    /// Runs every timer that has expired by `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for pid in 0..self.peers.len() as PeerId {
            let Some(peer) = self.peers[pid as usize].as_mut() else {
                continue;
            };
            let expired = peer.timers.take_expired(now);
            if !expired.any() {
                continue;
            }
            if expired.retransmit_handshake {
                if peer.timers.handshake_attempts > MAX_TIMER_HANDSHAKES {
                    peer.timers.on_handshake_given_up(now);
                    peer.staged.clear();
                    self.event(Event::HandshakeGaveUp { peer: pid });
                } else {
                    peer.timers.handshake_attempts += 1;
                    if let Some(ep) = peer.endpoint.as_mut() {
                        ep.local = None;
                    }
                    self.send_initiation(now, pid, true);
                }
            }
            if expired.send_keepalive {
                self.send_keepalive(now, pid);
                if let Some(peer) = self.peers[pid as usize].as_mut() {
                    if peer.timers.need_another_keepalive {
                        peer.timers.need_another_keepalive = false;
                        peer.timers.rearm_keepalive(now);
                    }
                }
            }
            if expired.new_handshake {
                if let Some(ep) = self.peers[pid as usize]
                    .as_mut()
                    .and_then(|p| p.endpoint.as_mut())
                {
                    ep.local = None;
                }
                self.send_initiation(now, pid, false);
            }
            if expired.zero_key_material {
                self.clear_peer_state(pid);
                self.event(Event::KeysZeroed { peer: pid });
            }
            if expired.persistent_keepalive
                && self.peers[pid as usize]
                    .as_ref()
                    .is_some_and(|p| p.timers.persistent_keepalive_interval > 0)
            {
                self.send_keepalive(now, pid);
            }
        }
    }
}

/// Pads and seals `packet` on the peer's current session into `out`; `None` if no session can
/// send now (or `out` is too small).
fn seal_into(
    peer: &mut Peer,
    now: Instant,
    packet: &[u8],
    out: &mut [u8],
    mtu: usize,
) -> Option<usize> {
    let padded = messages::padded_len(packet.len(), mtu);
    if out.len() < TRANSPORT_OVERHEAD + padded {
        return None;
    }
    let session = peer.sessions.current.as_mut()?;
    let counter = session.next_counter(now)?;
    out[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + packet.len()].copy_from_slice(packet);
    out[TRANSPORT_HEADER_LEN + packet.len()..TRANSPORT_HEADER_LEN + padded].fill(0);
    let len = session.keypair.seal(counter, out, padded);
    peer.tx_bytes += len as u64;
    Some(len)
}

/// Destination address of an IPv4/IPv6 packet.
pub fn destination_address(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(
            packet[16], packet[17], packet[18], packet[19],
        ))),
        6 if packet.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&packet[24..40]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

/// Source address of an IPv4/IPv6 packet.
pub fn source_address(packet: &[u8]) -> Option<IpAddr> {
    match packet.first()? >> 4 {
        4 if packet.len() >= 20 => Some(IpAddr::V4(Ipv4Addr::new(
            packet[12], packet[13], packet[14], packet[15],
        ))),
        6 if packet.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&packet[8..24]);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> Device {
        Device::new(
            Box::new(rand_core::OsRng),
            Instant::now(),
            Duration::from_secs(1_700_000_000),
        )
    }

    fn key(i: u32) -> PublicKey {
        let mut k = [9u8; 32];
        k[..4].copy_from_slice(&i.to_le_bytes());
        PublicKey(k)
    }

    fn listed(dev: &Device) -> Vec<PublicKey> {
        dev.peers().map(|(_, p)| *p.public_key()).collect()
    }

    /// Creation order survives any mix of removals (holes, compaction, reused slots).
    #[test]
    fn peers_stay_in_creation_order_across_removals() {
        let mut dev = device();
        let mut model: Vec<u32> = Vec::new();
        let mut next = 0u32;
        let mut state = 0x2545_f491u32;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            if model.is_empty() || !state.is_multiple_of(3) {
                dev.add_peer(key(next)).unwrap();
                model.push(next);
                next += 1;
            } else {
                let victim = model.remove(state as usize % model.len());
                let pid = dev.peer_id(&key(victim)).unwrap();
                dev.remove_peer(pid);
                assert!(dev.peer_id(&key(victim)).is_none());
            }
            assert_eq!(dev.peer_count(), model.len());
        }
        let expected: Vec<PublicKey> = model.iter().map(|&i| key(i)).collect();
        assert_eq!(listed(&dev), expected);
        dev.remove_all_peers();
        assert_eq!(dev.peer_count(), 0);
        assert!(listed(&dev).is_empty());
        dev.add_peer(key(1_000_000)).unwrap();
        assert_eq!(listed(&dev), vec![key(1_000_000)]);
    }
}
