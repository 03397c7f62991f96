//! A deterministic two-endpoint driver: two `Device`s joined by a simulated network with
//! optional loss, duplication and reordering, in simulated time. Nothing here reads a clock
//! except to pick the arbitrary starting `Instant`.
#![allow(dead_code)]

use ferrowg_proto::device::{Device, DropReason, Outgoing, Received, Transmit};
use ferrowg_proto::index::PeerId;
use ferrowg_proto::keys::{PresharedKey, PrivateKey};
use ferrowg_proto::peer::Endpoint;
use rand_core::{CryptoRng, RngCore};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// xorshift64*: deterministic, seeded; marked CryptoRng for tests only.
#[derive(Clone)]
pub struct TestRng(pub u64);
impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for TestRng {}

pub const UNIX_START: Duration = Duration::from_secs(1_750_000_000);

/// Which side of the pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

/// A datagram seen on the simulated wire.
#[derive(Debug, Clone)]
pub struct Wire {
    pub from: Side,
    pub at: Instant,
    pub bytes: Vec<u8>,
}

pub struct Pair {
    pub a: Device,
    pub b: Device,
    pub now: Instant,
    pub a_addr: SocketAddr,
    pub b_addr: SocketAddr,
    /// Every datagram sent, in order (for assertions on what went on the wire).
    pub log: Vec<Wire>,
    /// Inner packets delivered to each side's TUN.
    pub delivered_a: Vec<Vec<u8>>,
    pub delivered_b: Vec<Vec<u8>>,
    /// Network impairments, in percent.
    pub loss: u64,
    pub duplicate: u64,
    pub reorder: u64,
    net_rng: TestRng,
    held: Vec<(Side, Vec<u8>)>,
    /// When false, datagrams are logged but not delivered (a cut link).
    pub connected: bool,
    /// One direction cut: datagrams sent by A (resp. B) are logged but not delivered.
    pub cut_a_to_b: bool,
    pub cut_b_to_a: bool,
    /// Destination of each `log` entry (same index), as the sending device chose it.
    pub log_to: Vec<SocketAddr>,
    /// When set, every delivery attempt in `run` is recorded in `arrivals`.
    pub record_arrivals: bool,
    pub arrivals: Vec<Arrival>,
}

/// One datagram handed to a device by `run` (recorded only with `record_arrivals`).
#[derive(Debug, Clone)]
pub struct Arrival {
    pub to: Side,
    pub at: Instant,
    /// The datagram as it was on the wire (before in-place decryption).
    pub bytes: Vec<u8>,
    /// `Ok(true)`: an inner packet was delivered; `Ok(false)`: accepted, nothing to deliver.
    pub result: Result<bool, DropReason>,
}

pub fn device(seed: u64, now: Instant) -> Device {
    Device::new(Box::new(TestRng(seed)), now, UNIX_START)
}

pub const A_TUN: &str = "10.0.0.1";
pub const B_TUN: &str = "10.0.0.2";

impl Pair {
    /// Two devices that know each other: A at 192.0.2.1:51820 (10.0.0.1/32), B at
    /// 192.0.2.2:51820 (10.0.0.2/32). `a_knows_b_endpoint` / `b_knows_a_endpoint` choose which
    /// side can initiate.
    pub fn new(psk: bool, a_knows_b: bool, b_knows_a: bool) -> Pair {
        let now = Instant::now();
        let mut rng = TestRng(0x5eed);
        let ka = PrivateKey::generate(&mut rng);
        let kb = PrivateKey::generate(&mut rng);
        let psk = if psk {
            PresharedKey::generate(&mut rng)
        } else {
            PresharedKey::default()
        };
        let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        let b_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
        let mut a = device(1, now);
        let mut b = device(2, now);
        a.set_private_key(Some(ka.clone()));
        b.set_private_key(Some(kb.clone()));
        let pb = a.add_peer(kb.public_key()).unwrap();
        let pa = b.add_peer(ka.public_key()).unwrap();
        a.set_preshared_key(pb, psk.clone()).unwrap();
        b.set_preshared_key(pa, psk).unwrap();
        a.add_allowed_ip(pb, B_TUN.parse().unwrap(), 32).unwrap();
        b.add_allowed_ip(pa, A_TUN.parse().unwrap(), 32).unwrap();
        if a_knows_b {
            a.set_endpoint(pb, b_addr).unwrap();
        }
        if b_knows_a {
            b.set_endpoint(pa, a_addr).unwrap();
        }
        Pair {
            a,
            b,
            now,
            a_addr,
            b_addr,
            log: Vec::new(),
            delivered_a: Vec::new(),
            delivered_b: Vec::new(),
            loss: 0,
            duplicate: 0,
            reorder: 0,
            net_rng: TestRng(0xfeed),
            held: Vec::new(),
            connected: true,
            cut_a_to_b: false,
            cut_b_to_a: false,
            log_to: Vec::new(),
            record_arrivals: false,
            arrivals: Vec::new(),
        }
    }

    pub fn dev(&mut self, side: Side) -> &mut Device {
        match side {
            Side::A => &mut self.a,
            Side::B => &mut self.b,
        }
    }

    /// Sends an inner packet from `side`'s TUN. Returns what the device did with it; a sealed
    /// datagram goes onto the wire.
    pub fn send(&mut self, side: Side, packet: &[u8]) -> Outgoing {
        let mut out = vec![0u8; packet.len() + 64];
        let now = self.now;
        let r = self.dev(side).handle_outgoing(now, packet, &mut out);
        if let Outgoing::Sent { len, to, .. } = r {
            self.log_to_push(to.addr);
            self.wire(side, out[..len].to_vec());
        }
        r
    }

    fn wire(&mut self, from: Side, bytes: Vec<u8>) {
        self.log.push(Wire {
            from,
            at: self.now,
            bytes: bytes.clone(),
        });
        let cut = match from {
            Side::A => self.cut_a_to_b,
            Side::B => self.cut_b_to_a,
        };
        if cut {
            return;
        }
        if !self.connected || self.net_rng.next_u64() % 100 < self.loss {
            return;
        }
        if self.net_rng.next_u64() % 100 < self.duplicate {
            self.held.push((from, bytes.clone()));
        }
        self.held.push((from, bytes));
    }

    fn drain_transmits(&mut self, side: Side) -> bool {
        let mut any = false;
        let mut out = vec![0u8; 2048];
        let now = self.now;
        while let Some(Transmit { len, to, .. }) = self.dev(side).poll_transmit(now, &mut out) {
            self.log_to_push(to.addr);
            self.wire(side, out[..len].to_vec());
            any = true;
        }
        any
    }

    /// Delivers everything in flight (possibly reordered) and everything it provokes, until
    /// the network is quiet. Time does not move.
    pub fn run(&mut self) {
        for _ in 0..10_000 {
            let a = self.drain_transmits(Side::A);
            let b = self.drain_transmits(Side::B);
            if self.held.is_empty() && !a && !b {
                return;
            }
            let mut batch = std::mem::take(&mut self.held);
            if self.reorder > 0 && batch.len() > 1 {
                for i in (1..batch.len()).rev() {
                    if self.net_rng.next_u64() % 100 < self.reorder {
                        let j = (self.net_rng.next_u64() as usize) % (i + 1);
                        batch.swap(i, j);
                    }
                }
            }
            for (from, mut bytes) in batch {
                let (to, src) = match from {
                    Side::A => (Side::B, self.a_addr),
                    Side::B => (Side::A, self.b_addr),
                };
                let now = self.now;
                let original = self.record_arrivals.then(|| bytes.clone());
                let r = self
                    .dev(to)
                    .handle_datagram(now, Endpoint::new(src), &mut bytes);
                if let Some(original) = original {
                    self.arrivals.push(Arrival {
                        to,
                        at: now,
                        bytes: original,
                        result: r.map(|x| matches!(x, Received::Packet { .. })),
                    });
                }
                if let Ok(Received::Packet { start, len, .. }) = r {
                    let p = bytes[start..start + len].to_vec();
                    match to {
                        Side::A => self.delivered_a.push(p),
                        Side::B => self.delivered_b.push(p),
                    }
                }
            }
        }
        panic!("network never went quiet");
    }

    /// Moves time forward in steps of at most `step`, running timers and the network.
    pub fn advance(&mut self, total: Duration, step: Duration) {
        let end = self.now + total;
        while self.now < end {
            let next = [self.a.poll_timeout(), self.b.poll_timeout()]
                .into_iter()
                .flatten()
                .min()
                .map_or(end, |t| t.max(self.now));
            self.now = next.min(self.now + step).min(end);
            let now = self.now;
            self.a.handle_timeout(now);
            self.b.handle_timeout(now);
            self.run();
        }
    }

    /// Datagrams logged since index `from`, by sender and message type byte.
    pub fn count(&self, since: usize, from: Side, msg_type: u8) -> usize {
        self.log[since..]
            .iter()
            .filter(|w| w.from == from && w.bytes[0] == msg_type)
            .count()
    }
}

impl Pair {
    /// Records the destination of the datagram `wire` is about to log (every caller of
    /// `wire` calls this first, so `log_to[i]` belongs to `log[i]`).
    fn log_to_push(&mut self, to: SocketAddr) {
        self.log_to.push(to);
    }

    /// Restarts the network's impairment RNG from `seed` (to run a scenario under several
    /// loss/duplicate/reorder patterns).
    pub fn reseed_network(&mut self, seed: u64) {
        // xorshift never leaves the all-zero state.
        self.net_rng = TestRng(seed.max(1));
    }

    /// The address `side` sends from (what the other side sees as the source).
    pub fn addr(&self, side: Side) -> SocketAddr {
        match side {
            Side::A => self.a_addr,
            Side::B => self.b_addr,
        }
    }

    /// Drains `side`'s `poll_transmit` without putting anything on the wire or in the log:
    /// for tests that deliver datagrams by hand.
    pub fn take_transmits(&mut self, side: Side) -> Vec<(Transmit, Vec<u8>)> {
        let mut v = Vec::new();
        let mut out = vec![0u8; 2048];
        let now = self.now;
        while let Some(t) = self.dev(side).poll_transmit(now, &mut out) {
            v.push((t, out[..t.len].to_vec()));
        }
        v
    }

    /// Hands one datagram to `to` as if it came from `from`, outside the simulated network.
    /// A delivered inner packet is appended to `delivered_a`/`delivered_b` as in `run`.
    pub fn deliver(
        &mut self,
        to: Side,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Result<Received, DropReason> {
        let mut buf = bytes.to_vec();
        let now = self.now;
        let r = self
            .dev(to)
            .handle_datagram(now, Endpoint::new(from), &mut buf);
        if let Ok(Received::Packet { start, len, .. }) = r {
            let p = buf[start..start + len].to_vec();
            match to {
                Side::A => self.delivered_a.push(p),
                Side::B => self.delivered_b.push(p),
            }
        }
        r
    }

    /// Log indices (from `since`) of datagrams sent by `from` with type byte `msg_type`.
    pub fn indices_of(&self, since: usize, from: Side, msg_type: u8) -> Vec<usize> {
        (since..self.log.len())
            .filter(|&i| self.log[i].from == from && self.log[i].bytes[0] == msg_type)
            .collect()
    }

    /// Times (from `since`) at which `from` sent datagrams of type `msg_type`.
    pub fn times_of(&self, since: usize, from: Side, msg_type: u8) -> Vec<Instant> {
        self.indices_of(since, from, msg_type)
            .into_iter()
            .map(|i| self.log[i].at)
            .collect()
    }
}

/// A minimal IPv4/ICMP-like packet from `src` to `dst` with `payload_len` payload bytes.
pub fn ipv4_packet(src: &str, dst: &str, payload_len: usize, tag: u32) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = dst.parse().unwrap();
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) else {
        panic!("v4 only")
    };
    let total = 20 + payload_len.max(4);
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 1;
    p[12..16].copy_from_slice(&s.octets());
    p[16..20].copy_from_slice(&d.octets());
    p[20..24].copy_from_slice(&tag.to_be_bytes());
    p
}

/// A little-endian u32 at the start of `b` (message type words, indices).
pub fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The one peer of a pair's device.
pub fn only_peer(d: &Device) -> PeerId {
    let mut it = d.peers();
    let (pid, _) = it.next().expect("one peer");
    assert!(it.next().is_none());
    pid
}

/// A sends one packet and the handshake it triggers runs to completion (no time passes).
pub fn establish(p: &mut Pair) {
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 0xffff_0000);
    assert!(matches!(p.send(Side::A, &pkt), Outgoing::Staged { .. }));
    p.run();
    assert_eq!(
        p.delivered_b.last(),
        Some(&pkt),
        "handshake did not complete"
    );
}
