//! The protocol engine (`ferrowg_proto::device::Device`) fed hostile datagrams and arbitrary
//! outgoing packets, between two devices built exactly as the integration tests build them
//! (crates/proto/tests/common/mod.rs, compiled in with `#[path]`: deterministic keys, RNGs
//! and simulated time).
//!
//! The input is a small program. Its first byte chooses the setup (a live session or none,
//! PSK, load, MTU); then each operation is one of:
//!
//! * a garbage datagram (arbitrary bytes, a typed header with arbitrary body, or an
//!   oversized/empty one) to either device, from the peer's address or a stranger's;
//! * a mutation (bit flip, byte overwrite, truncation, extension, splice) of a datagram one
//!   of the devices really sent;
//! * a verbatim replay of a datagram one of the devices sent;
//! * an outgoing packet on either side (a real IPv4 packet, one with a spoofed source, or
//!   arbitrary bytes) through `handle_outgoing`, then the network runs;
//! * time passing (timers run, the network runs), a link cut or repair, load, an MTU change.
//!
//! Invariants checked after every operation:
//!
//! * no panic, and the network always goes quiet (the driver panics otherwise);
//! * a garbage datagram never delivers an inner packet; it is accepted at all only when that
//!   is legitimate: a cookie reply (its receiver index is not authenticated), or a handshake
//!   message that differs from a real one only in mac2 (ignored when not under load);
//! * a refused garbage datagram moves no endpoint and makes the device send nothing but, when
//!   under load, one cookie reply to the datagram's source;
//! * every inner packet ever delivered was sent by the other side (byte-identical up to its
//!   IP length, or that packet followed by padding zeros when its IP length claimed more than
//!   it had) and carries the other side's tunnel address as its source;
//! * `handle_outgoing` seals to exactly `32 + padded_len(len, mtu)` bytes.
#![no_main]

// rustfmt::skip: `cargo fmt` here must not reformat a file the proto crate's tests own.
#[allow(dead_code, unused_imports, clippy::all)]
#[rustfmt::skip]
#[path = "../../crates/proto/tests/common/mod.rs"]
mod common;

use common::*;
use ferrowg_proto::constants::*;
use ferrowg_proto::device::{source_address, DropReason, Outgoing, Received};
use ferrowg_proto::keys::PresharedKey;
use ferrowg_proto::messages::padded_len;
use libfuzzer_sys::fuzz_target;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// Reads the program; past the end every read is 0.
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let n = n.min(self.0.len());
        let (b, rest) = self.0.split_at(n);
        self.0 = rest;
        b.to_vec()
    }
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}

fn tun(side: Side) -> &'static str {
    match side {
        Side::A => A_TUN,
        Side::B => B_TUN,
    }
}

/// The offset of mac2 in a handshake message of this type and length.
fn mac2_offset(bytes: &[u8]) -> Option<usize> {
    match (bytes.first(), bytes.len()) {
        (Some(&MESSAGE_INITIATION), INITIATION_LEN) => Some(132),
        (Some(&MESSAGE_RESPONSE), RESPONSE_LEN) => Some(76),
        _ => None,
    }
}

struct Harness {
    p: Pair,
    /// Every inner packet handed to each side's `handle_outgoing`.
    sent_a: Vec<Vec<u8>>,
    sent_b: Vec<Vec<u8>>,
    /// How much of `delivered_a` / `delivered_b` has been checked.
    checked_a: usize,
    checked_b: usize,
}

impl Harness {
    fn honest(&self) -> HashSet<&[u8]> {
        self.p.log.iter().map(|w| &w.bytes[..]).collect()
    }

    fn endpoints(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        let ep = |d: &ferrowg_proto::device::Device| {
            d.peers()
                .next()
                .and_then(|(_, p)| p.endpoint())
                .map(|e| e.addr)
        };
        (ep(&self.p.a), ep(&self.p.b))
    }

    /// A garbage datagram may be accepted only where the protocol cannot tell it from a real
    /// one: cookie replies, and real handshake messages with another mac2.
    fn acceptable_forgery(&self, bytes: &[u8]) -> bool {
        if bytes.first() == Some(&MESSAGE_COOKIE_REPLY) && bytes.len() == COOKIE_REPLY_LEN {
            return true;
        }
        let Some(m2) = mac2_offset(bytes) else {
            return false;
        };
        self.p
            .log
            .iter()
            .any(|w| w.bytes.len() == bytes.len() && w.bytes[..m2] == bytes[..m2])
    }

    fn garbage(&mut self, to: Side, src: SocketAddr, bytes: Vec<u8>) {
        if self.honest().contains(&bytes[..]) {
            // Byte-identical to something a device sent: a replay, not garbage.
            let _ = self.p.deliver(to, src, &bytes);
            self.p.run();
            return;
        }
        let before = self.endpoints();
        let r = self.p.deliver(to, src, &bytes);
        assert!(
            !matches!(r, Ok(Received::Packet { .. })),
            "garbage delivered a packet: {r:?} from {bytes:02x?}"
        );
        let out = self.p.take_transmits(to);
        let quiet = self.p.take_transmits(other(to));
        assert!(
            quiet.is_empty(),
            "garbage to {to:?} made {:?} send",
            other(to)
        );
        match r {
            Ok(_) => {
                assert!(
                    self.acceptable_forgery(&bytes),
                    "garbage accepted: {r:?} from {bytes:02x?}"
                );
                // Whatever it provoked (a response to an initiation) is real traffic: send it.
                for (t, b) in out {
                    self.p.log.push(Wire {
                        from: to,
                        at: self.p.now,
                        bytes: b.clone(),
                    });
                    self.p.log_to.push(t.to.addr);
                    if t.to.addr == self.p.addr(other(to)) {
                        let from = self.p.addr(to);
                        let _ = self.p.deliver(other(to), from, &b);
                    }
                }
                self.p.run();
            }
            Err(e) => {
                assert_eq!(
                    self.endpoints(),
                    before,
                    "refused garbage moved an endpoint"
                );
                for (t, b) in &out {
                    assert_eq!(e, DropReason::CookieReplySent, "refused garbage answered");
                    assert_eq!(b.len(), COOKIE_REPLY_LEN);
                    assert_eq!(b[0], MESSAGE_COOKIE_REPLY);
                    assert_eq!(t.to.addr, src, "cookie reply not to the source");
                }
                if e == DropReason::CookieReplySent {
                    assert_eq!(out.len(), 1, "one cookie reply per refused message");
                }
            }
        }
    }

    fn outgoing(&mut self, side: Side, packet: Vec<u8>) {
        let mtu = self.p.dev(side).mtu();
        let r = self.p.send(side, &packet);
        match r {
            Outgoing::Sent { len, .. } => {
                assert_eq!(len, TRANSPORT_OVERHEAD + padded_len(packet.len(), mtu));
                let dst = ferrowg_proto::device::destination_address(&packet);
                assert_eq!(dst, Some(tun(other(side)).parse().unwrap()));
            }
            Outgoing::Staged { .. } | Outgoing::NoEndpoint { .. } => {
                let dst = ferrowg_proto::device::destination_address(&packet);
                assert_eq!(dst, Some(tun(other(side)).parse().unwrap()));
            }
            Outgoing::NoRoute => {
                assert!(ferrowg_proto::device::destination_address(&packet).is_some())
            }
            Outgoing::Invalid => {
                assert!(ferrowg_proto::device::destination_address(&packet).is_none())
            }
        }
        match side {
            Side::A => self.sent_a.push(packet),
            Side::B => self.sent_b.push(packet),
        }
        self.p.run();
    }

    /// Every delivered packet came from the other side's TUN, unchanged, with its address.
    fn check_delivered(&mut self) {
        for side in [Side::A, Side::B] {
            let (delivered, checked, sent) = match side {
                Side::A => (&self.p.delivered_a, &mut self.checked_a, &self.sent_b),
                Side::B => (&self.p.delivered_b, &mut self.checked_b, &self.sent_a),
            };
            for d in &delivered[*checked..] {
                let src = source_address(d);
                let expect: IpAddr = tun(other(side)).parse().unwrap();
                assert_eq!(
                    src,
                    Some(expect),
                    "delivered with a foreign source: {d:02x?}"
                );
                // The receiver trusts the inner IP length, which may reach into the zero
                // padding when the sender's packet claimed more than it had (no TUN hands
                // out such packets, but handle_outgoing does not check).
                let from_sent = |s: &Vec<u8>| {
                    let n = s.len().min(d.len());
                    s[..n] == d[..n] && d[n..].iter().all(|&b| b == 0)
                };
                assert!(
                    sent.iter().any(from_sent),
                    "delivered a packet nobody sent: {d:02x?}"
                );
            }
            *checked = delivered.len();
        }
    }
}

fn source(input: &mut Input, p: &Pair, to: Side) -> SocketAddr {
    let b = input.u8();
    match b % 4 {
        0 | 1 => p.addr(other(to)),
        // The peer's address with another port.
        2 => SocketAddr::new(p.addr(other(to)).ip(), input.u16()),
        _ => SocketAddr::from(([198, 51, 100, b], input.u16())),
    }
}

fn garbage_bytes(input: &mut Input) -> Vec<u8> {
    match input.u8() % 4 {
        0 => {
            let n = input.u16() as usize % 2048;
            input.bytes(n)
        }
        1 => {
            // A valid header word and length for a type, arbitrary contents.
            let t = 1 + input.u8() % 4;
            let len = match t {
                1 => INITIATION_LEN,
                2 => RESPONSE_LEN,
                3 => COOKIE_REPLY_LEN,
                _ => TRANSPORT_OVERHEAD + input.u16() as usize % 1600,
            };
            let mut m = input.bytes(len);
            m.resize(len, 0);
            m[..4].copy_from_slice(&[t, 0, 0, 0]);
            m
        }
        2 => {
            let len = [0, 1, 3, 4, MAX_DATAGRAM_LEN, MAX_DATAGRAM_LEN + 1, 70_000]
                [input.u8() as usize % 7];
            let mut m = vec![input.u8(); len];
            if len >= 4 {
                m[..4].copy_from_slice(&[1 + input.u8() % 4, 0, 0, 0]);
            }
            m
        }
        _ => {
            let n = input.u8() as usize;
            input.bytes(n)
        }
    }
}

fn mutate(input: &mut Input, mut m: Vec<u8>) -> Vec<u8> {
    let len = m.len().max(1);
    match input.u8() % 5 {
        0 => {
            let bit = input.u16() as usize % (len * 8);
            if let Some(b) = m.get_mut(bit / 8) {
                *b ^= 1 << (bit % 8);
            }
        }
        1 => {
            let at = input.u16() as usize % len;
            let v = input.u8();
            if let Some(b) = m.get_mut(at) {
                *b = v;
            }
        }
        2 => {
            let n = input.u16() as usize % len;
            m.truncate(n);
        }
        3 => {
            let n = input.u8() as usize;
            let extra = input.bytes(n);
            m.extend_from_slice(&extra);
            if extra.is_empty() {
                m.push(0);
            }
        }
        _ => {
            let at = input.u16() as usize % len;
            let n = input.u8() as usize % 33;
            let patch = input.bytes(n);
            for (d, s) in m.iter_mut().skip(at).zip(patch) {
                *d = s;
            }
        }
    }
    m
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let setup = input.u8();
    let mut p = Pair::new(setup & 2 != 0, true, setup & 4 == 0);
    let mtu = [DEFAULT_MTU, 0, 1280, 576][(setup >> 3) as usize % 4];
    p.a.set_mtu(mtu);
    p.b.set_mtu(mtu);
    let mut h = Harness {
        p,
        sent_a: Vec::new(),
        sent_b: Vec::new(),
        checked_a: 0,
        checked_b: 0,
    };
    if setup & 1 == 0 {
        // A live session, confirmed both ways (the default).
        let first = ipv4_packet(A_TUN, B_TUN, 40, 0xffff_0000);
        h.outgoing(Side::A, first);
        let back = ipv4_packet(B_TUN, A_TUN, 40, 0xffff_0001);
        h.outgoing(Side::B, back);
        assert_eq!(h.p.delivered_b.len(), 1, "setup: no session");
        assert_eq!(h.p.delivered_a.len(), 1, "setup: no session");
    }
    if setup & 0x20 != 0 {
        let now = h.p.now;
        h.p.b.note_handshake_backlog(now, 1000);
    }
    h.check_delivered();

    for _ in 0..48 {
        if input.is_empty() {
            break;
        }
        let op = input.u8();
        let side = if op & 0x80 == 0 { Side::A } else { Side::B };
        match op % 10 {
            0 | 1 => {
                let src = source(&mut input, &h.p, side);
                let bytes = garbage_bytes(&mut input);
                h.garbage(side, src, bytes);
            }
            2 | 3 => {
                if h.p.log.is_empty() {
                    continue;
                }
                let i = input.u16() as usize % h.p.log.len();
                let w = h.p.log[i].clone();
                let to = other(w.from);
                let src = source(&mut input, &h.p, to);
                let m = mutate(&mut input, w.bytes);
                h.garbage(to, src, m);
            }
            4 => {
                if h.p.log.is_empty() {
                    continue;
                }
                let i = input.u16() as usize % h.p.log.len();
                let w = h.p.log[i].clone();
                let to = other(w.from);
                let src = source(&mut input, &h.p, to);
                let _ = h.p.deliver(to, src, &w.bytes);
                h.p.run();
            }
            5 | 6 => {
                let kind = input.u8();
                let packet = match kind % 4 {
                    0 | 1 => ipv4_packet(
                        tun(side),
                        tun(other(side)),
                        input.u16() as usize % 1500,
                        input.u16() as u32,
                    ),
                    // Someone else's source address: the receiver must refuse it.
                    2 => ipv4_packet(
                        "10.0.0.77",
                        tun(other(side)),
                        input.u8() as usize,
                        kind as u32,
                    ),
                    _ => {
                        let n = input.u16() as usize % 1600;
                        input.bytes(n)
                    }
                };
                h.outgoing(side, packet);
            }
            7 => {
                // Low 3 bits: the unit; high 5 bits: how many of it, minus one.
                let b = input.u8();
                let unit = [1, 20, 1000, 5000, 10_000, 60_000][(b & 7) as usize % 6];
                let total = Duration::from_millis(unit * (1 + (b as u64 >> 3)));
                h.p.advance(total, total);
            }
            8 => {
                let b = input.u8();
                match b % 5 {
                    0 => h.p.connected = !h.p.connected,
                    1 => h.p.cut_a_to_b = !h.p.cut_a_to_b,
                    2 => h.p.cut_b_to_a = !h.p.cut_b_to_a,
                    3 => {
                        let now = h.p.now;
                        h.p.dev(side).note_handshake_backlog(now, 1000);
                    }
                    _ => {
                        let mtu = input.u16() as usize;
                        h.p.dev(side).set_mtu(mtu);
                    }
                }
            }
            _ => {
                // A fresh preshared key on one or both sides.
                let seed = input.u16() as u64 + 1;
                let psk = PresharedKey::generate(&mut TestRng(seed));
                let both = input.u8() & 1 == 0;
                for s in [side, other(side)] {
                    let pid = h.p.dev(s).peers().next().map(|(pid, _)| pid);
                    if let Some(pid) = pid {
                        h.p.dev(s).set_preshared_key(pid, psk.clone()).unwrap();
                    }
                    if !both {
                        break;
                    }
                }
            }
        }
        h.check_delivered();
    }
});
