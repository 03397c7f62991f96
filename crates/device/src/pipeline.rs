//! The data path: batches from the TUN to UDP and from UDP to the TUN.
//!
//! TUN → UDP: one TUN read yields up to 128 packets (a split super-packet with offloads); all
//! are routed under one lock, then sealed (`workers`) straight into a send arena, where
//! consecutive messages of equal length to the same endpoint form GSO runs; each run leaves
//! in one system call.
//!
//! UDP → TUN: one receive yields up to 16 GRO buffers of datagrams (`RecvBatch`); they are
//! opened outside the lock and finished in order under it; the packets are queued on the TUN
//! writer, which coalesces them into super-packets, with any replies (handshakes, keepalives)
//! sent from an arena.
//!
//! No allocation per packet once the buffers have grown to the traffic's size.

use crate::udp::UdpSockets;
use crate::udp_io::{UdpIo, GRO_BUF, RECV_BUFS};
use ferrowg_proto::constants::{PADDING_MULTIPLE, TRANSPORT_OVERHEAD};
use ferrowg_proto::device::Device;
use ferrowg_proto::peer::Endpoint;
use quinn_udp::RecvMeta;
use std::io::IoSliceMut;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

/// Largest payload of one GSO send (the kernel's limit is 64 KiB including headers).
const GSO_MAX_BYTES: usize = 60_000;

/// Largest datagram that may join a GSO run. The kernel refuses (EINVAL) a UDP_SEGMENT send
/// whose segment plus headers exceeds the outgoing device's MTU — it never fragments GSO
/// segments — and quinn-udp answers EINVAL by switching GSO off for the socket for good. So
/// datagrams larger than a 1500-byte link carries whole (IPv6: 1500 - 48) always go one per
/// send, where the IP layer fragments them: a tunnel MTU above 1420 (9000, 34,000) then
/// works, at no cost to the usual 1420 (1452-byte datagrams).
const GSO_MAX_SEGMENT: usize = 1452;

/// A run of equal-length messages to one destination, `count` of them from `start`.
struct Run {
    to: SocketAddr,
    src: Option<IpAddr>,
    start: usize,
    segment: usize,
    count: usize,
}

/// Sealed messages waiting to be sent after the lock is released.
#[derive(Default)]
pub struct SendArena {
    buf: Vec<u8>,
    used: usize,
    runs: Vec<Run>,
}

pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

impl SendArena {
    /// Room for a message of up to `max` bytes at the end of the arena.
    pub fn tail(&mut self, max: usize) -> &mut [u8] {
        if self.buf.len() < self.used + max {
            // Grows to the traffic's high-water mark once, then stays.
            self.buf.resize((self.used + max).next_power_of_two(), 0);
        }
        &mut self.buf[self.used..]
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.used
    }

    /// The bytes written since the arena was `from` long (messages committed but sealed
    /// later, all at once).
    pub fn written_mut(&mut self, from: usize) -> &mut [u8] {
        &mut self.buf[from..self.used]
    }

    /// Records a message of `len` bytes just written at `tail()`.
    pub fn commit(&mut self, to: Endpoint, len: usize, max_segments: usize) {
        let src = to.local.map(|l| l.ip);
        let to = canonical(to.addr);
        let start = self.used;
        self.used += len;
        if let Some(r) = self.runs.last_mut() {
            let run_len = r.count * r.segment;
            // Equal lengths extend the run. Only the last datagram of a GSO send may be
            // shorter than the others: a shorter one becomes a run of one of its own, which
            // the sender merges into this one (see `send_all`).
            if r.to == to
                && r.src == src
                && r.start + run_len == start
                && len == r.segment
                && r.count < max_segments
                && r.segment <= GSO_MAX_SEGMENT
                && run_len + len <= GSO_MAX_BYTES
            {
                r.count += 1;
                return;
            }
        }
        self.runs.push(Run {
            to,
            src,
            start,
            segment: len,
            count: 1,
        });
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Sends every run (one system call each) and empties the arena. Returns the destinations
    /// whose remembered source address was refused (it left the host): they were sent again
    /// from the address the routing table picks, and the caller should forget the old one.
    pub fn send_all(&mut self, sockets: &Option<UdpSockets>) -> Vec<SocketAddr> {
        let mut stale = Vec::new();
        if let Some(s) = sockets {
            let mut i = 0;
            while i < self.runs.len() {
                let r = &self.runs[i];
                let mut end = r.start + r.segment * r.count;
                // Append a shorter final datagram to the run it follows (same destination).
                if let Some(next) = self.runs.get(i + 1) {
                    if next.to == r.to
                        && r.segment <= GSO_MAX_SEGMENT
                        && next.start == end
                        && next.count == 1
                        && next.segment < r.segment
                    {
                        end += next.segment;
                        i += 1;
                    }
                }
                if let Some(io) = s.io_for(r.to) {
                    let data = &self.buf[r.start..end];
                    if io.send(r.to, r.src, data, r.segment).is_err() && r.src.is_some() {
                        // EINVAL/EADDRNOTAVAIL: not sticky past the address's removal.
                        let _ = io.send(r.to, None, data, r.segment);
                        stale.push(r.to);
                    }
                }
                i += 1;
            }
        }
        self.runs.clear();
        self.used = 0;
        stale
    }
}

/// Moves the engine's pending transmissions (handshakes, keepalives, released packets) into
/// the arena. Only for the thread that owns the counters (see `Device::poll_control`).
pub fn drain_transmits(dev: &mut Device, now: Instant, arena: &mut SendArena, max_segments: usize) {
    let max = dev.mtu() + TRANSPORT_OVERHEAD + PADDING_MULTIPLE;
    loop {
        let tail = arena.tail(max.max(256));
        match dev.poll_transmit(now, tail) {
            Some(t) => arena.commit(t.to, t.len, max_segments),
            None => return,
        }
    }
}

/// Moves the engine's pending handshake-level messages into the arena; transport messages
/// (staged packets, keepalives) stay for the counter-owning thread.
pub fn drain_control(dev: &mut Device, arena: &mut SendArena) {
    loop {
        let tail = arena.tail(256);
        match dev.poll_control(tail) {
            Some(t) => arena.commit(t.to, t.len, 1),
            None => return,
        }
    }
}

/// Receive buffers for one socket: `RECV_BUFS` GRO-sized buffers, reused for every call.
pub struct RecvBatch {
    /// One mapping for all buffers, so the pages of buffers that never filled are not
    /// resident.
    storage: crate::sys::ZeroedPages,
    pub meta: Vec<RecvMeta>,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch {
            storage: crate::sys::ZeroedPages::new(RECV_BUFS * GRO_BUF),
            meta: vec![RecvMeta::default(); RECV_BUFS],
        }
    }
}

impl RecvBatch {
    /// One receive call; returns how many buffers were filled.
    pub fn recv(&mut self, io: &UdpIo) -> std::io::Result<usize> {
        let mut slices: [IoSliceMut<'_>; RECV_BUFS] = {
            let mut it = self.storage.chunks_mut(GRO_BUF);
            std::array::from_fn(|_| IoSliceMut::new(it.next().expect("RECV_BUFS buffers")))
        };
        io.recv(&mut slices, &mut self.meta)
    }

    /// The byte ranges of the datagrams in buffer `i`: GRO packs datagrams of `stride` bytes
    /// from one sender into one buffer (the last may be shorter).
    pub fn datagrams(&self, i: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let m = self.meta[i];
        let stride = if m.stride == 0 { m.len } else { m.stride }.max(1);
        (0..m.len)
            .step_by(stride)
            .map(move |off| off..(off + stride).min(m.len))
    }

    /// Buffer `i` (its first `meta[i].len` bytes were received).
    pub fn buf(&self, i: usize) -> &[u8] {
        &self.storage[i * GRO_BUF..(i + 1) * GRO_BUF]
    }

    pub fn buf_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.storage[i * GRO_BUF..(i + 1) * GRO_BUF]
    }

    /// All buffers, buffer `i` at `i * GRO_BUF`: for handing out disjoint datagrams of
    /// several buffers at once.
    pub fn storage_mut(&mut self) -> &mut [u8] {
        &mut self.storage
    }
}
