//! In-process interop against Cloudflare's boringtun 0.7 (`boringtun::noise::Tunn`): our
//! `Device` and a `Tunn` exchange datagrams by hand, in both handshake roles, with and without
//! a preshared key, through cookie replies in both directions, rekeys and keepalives.
//!
//! Our device runs on simulated time (`now` is an argument); boringtun reads the real clock.
//! Nothing here waits: whatever boringtun does on its own timers is never needed, because its
//! initiations are forced with `format_handshake_initiation`.

mod common;
use boringtun::noise::errors::WireGuardError;
use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519;
use common::{ipv4_packet, TestRng};
use ferrowg_proto::constants::*;
use ferrowg_proto::device::{Device, DropReason, Outgoing, Received};
use ferrowg_proto::index::PeerId;
use ferrowg_proto::keys::{PresharedKey, PrivateKey, PublicKey};
use ferrowg_proto::peer::Endpoint;
use rand_core::RngCore;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const OURS_TUN: &str = "10.0.0.1";
const BT_TUN: &str = "10.0.0.2";
const OURS_TUN6: &str = "fd00::1";
const BT_TUN6: &str = "fd00::2";
const BUF: usize = 2048;

/// What boringtun produced for one incoming datagram (including everything the repeated
/// empty `decapsulate` calls flushed afterwards, as its API asks).
#[derive(Debug, Default)]
struct BtOut {
    net: Vec<Vec<u8>>,
    tun: Vec<(Vec<u8>, IpAddr)>,
    err: Option<String>,
}

impl BtOut {
    fn assert_clean(&self) {
        assert!(self.err.is_none(), "boringtun refused: {:?}", self.err);
    }
}

struct Harness {
    ours: Device,
    now: Instant,
    /// boringtun as a peer of our device.
    pid: PeerId,
    bt: Tunn,
    ours_addr: SocketAddr,
    bt_addr: SocketAddr,
}

fn msg_type(d: &[u8]) -> u8 {
    d[0]
}

fn receiver_index(d: &[u8]) -> u32 {
    u32::from_le_bytes(d[4..8].try_into().unwrap())
}

fn counter(d: &[u8]) -> u64 {
    u64::from_le_bytes(d[8..16].try_into().unwrap())
}

/// A minimal IPv6 packet (next header 59, "no next header") with `payload_len` payload bytes.
fn ipv6_packet(src: &str, dst: &str, payload_len: usize, tag: u32) -> Vec<u8> {
    let src: Ipv6Addr = src.parse().unwrap();
    let dst: Ipv6Addr = dst.parse().unwrap();
    let payload_len = payload_len.max(4);
    let mut p = vec![0u8; 40 + payload_len];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&src.octets());
    p[24..40].copy_from_slice(&dst.octets());
    p[40..44].copy_from_slice(&tag.to_be_bytes());
    p
}

impl Harness {
    /// Our device (192.0.2.1:51820, tunnel 10.0.0.1 / fd00::1) and boringtun (192.0.2.2:51821,
    /// tunnel 10.0.0.2 / fd00::2) with fresh keys from `seed`. `bt_limiter` replaces
    /// boringtun's own per-Tunn rate limiter (a limit of 0 keeps it permanently under load).
    fn new(seed: u64, psk: bool, bt_limiter: Option<u64>) -> Harness {
        let mut rng = TestRng(seed);
        let ours_key = PrivateKey::generate(&mut rng);
        let mut bt_bytes = [0u8; 32];
        rng.fill_bytes(&mut bt_bytes);
        let bt_secret = x25519::StaticSecret::from(bt_bytes);
        let bt_public = x25519::PublicKey::from(&bt_secret);
        let psk_bytes = psk.then(|| {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            k
        });

        let now = Instant::now();
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut ours = Device::new(Box::new(TestRng(seed ^ 0x9e37_79b9)), now, unix);
        ours.set_private_key(Some(ours_key.clone()));
        let pid = ours.add_peer(PublicKey(bt_public.to_bytes())).unwrap();
        if let Some(k) = psk_bytes {
            ours.set_preshared_key(pid, PresharedKey::from_bytes(k))
                .unwrap();
        }
        ours.add_allowed_ip(pid, BT_TUN.parse().unwrap(), 32)
            .unwrap();
        ours.add_allowed_ip(pid, BT_TUN6.parse().unwrap(), 128)
            .unwrap();
        let bt_addr: SocketAddr = "192.0.2.2:51821".parse().unwrap();
        let ours_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
        ours.set_endpoint(pid, bt_addr).unwrap();

        let limiter = bt_limiter.map(|limit| Arc::new(RateLimiter::new(&bt_public, limit)));
        let bt = Tunn::new(
            bt_secret,
            x25519::PublicKey::from(*ours_key.public_key().as_bytes()),
            psk_bytes,
            None,
            (seed as u32) & 0x00ff_ffff,
            limiter,
        );
        Harness {
            ours,
            now,
            pid,
            bt,
            ours_addr,
            bt_addr,
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
    }

    /// Everything our device wants to send; all of it must go to boringtun's address.
    fn ours_poll(&mut self) -> Vec<Vec<u8>> {
        let mut out = vec![0u8; BUF];
        let mut v = Vec::new();
        while let Some(t) = self.ours.poll_transmit(self.now, &mut out) {
            assert_eq!(t.to.addr, self.bt_addr, "datagram to an unexpected address");
            v.push(out[..t.len].to_vec());
        }
        v
    }

    /// Hands an inner packet to our device; returns the datagram if it was sealed at once.
    fn ours_send(&mut self, packet: &[u8]) -> (Outgoing, Option<Vec<u8>>) {
        let mut out = vec![0u8; packet.len() + TRANSPORT_OVERHEAD + PADDING_MULTIPLE];
        let r = self.ours.handle_outgoing(self.now, packet, &mut out);
        let d = match r {
            Outgoing::Sent { to, len, .. } => {
                assert_eq!(to.addr, self.bt_addr);
                Some(out[..len].to_vec())
            }
            _ => None,
        };
        (r, d)
    }

    /// Delivers a datagram from boringtun to our device; the decrypted inner packet, if any.
    fn ours_recv(&mut self, datagram: &[u8]) -> Result<Option<Vec<u8>>, DropReason> {
        self.ours_recv_from(self.bt_addr, datagram)
    }

    fn ours_recv_from(
        &mut self,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Option<Vec<u8>>, DropReason> {
        let mut buf = datagram.to_vec();
        match self
            .ours
            .handle_datagram(self.now, Endpoint::new(from), &mut buf)?
        {
            Received::Nothing => Ok(None),
            Received::Packet { peer, start, len } => {
                assert_eq!(peer, self.pid);
                Ok(Some(buf[start..start + len].to_vec()))
            }
        }
    }

    /// Delivers a datagram from our device to boringtun.
    fn bt_recv(&mut self, datagram: &[u8]) -> BtOut {
        let mut out = BtOut::default();
        let mut dst = vec![0u8; BUF];
        let mut flush = false;
        match self
            .bt
            .decapsulate(Some(self.ours_addr.ip()), datagram, &mut dst)
        {
            TunnResult::Done => {}
            TunnResult::Err(e) => out.err = Some(format!("{e:?}")),
            TunnResult::WriteToNetwork(d) => {
                out.net.push(d.to_vec());
                flush = true;
            }
            TunnResult::WriteToTunnelV4(p, src) => out.tun.push((p.to_vec(), src.into())),
            TunnResult::WriteToTunnelV6(p, src) => out.tun.push((p.to_vec(), src.into())),
        }
        while flush {
            match self.bt.decapsulate(None, &[], &mut dst) {
                TunnResult::WriteToNetwork(d) => out.net.push(d.to_vec()),
                TunnResult::Done => flush = false,
                other => panic!("unexpected result while flushing boringtun: {other:?}"),
            }
        }
        out
    }

    /// Has boringtun seal an inner packet (or a keepalive, if empty).
    fn bt_send(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut dst = vec![0u8; BUF];
        match self.bt.encapsulate(packet, &mut dst) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("boringtun did not seal: {other:?}"),
        }
    }

    /// boringtun's next initiation, made now (`force` also replaces one in progress).
    fn bt_initiation(&mut self, force: bool) -> Vec<u8> {
        let mut dst = vec![0u8; BUF];
        match self.bt.format_handshake_initiation(&mut dst, force) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("boringtun made no initiation: {other:?}"),
        }
    }

    /// Our device initiates (its first packet is staged and triggers the handshake);
    /// boringtun responds. Returns the staged packet's datagram as boringtun decrypted it.
    fn handshake_ours_initiates(&mut self) {
        let pkt = ipv4_packet(OURS_TUN, BT_TUN, 56, 0xa0);
        let (r, d) = self.ours_send(&pkt);
        assert!(matches!(r, Outgoing::Staged { .. }), "{r:?}");
        assert!(d.is_none());
        let init = self.ours_poll();
        assert_eq!(init.len(), 1);
        assert_eq!(init[0].len(), INITIATION_LEN);
        assert_eq!(msg_type(&init[0]), MESSAGE_INITIATION);

        let out = self.bt_recv(&init[0]);
        out.assert_clean();
        assert_eq!(
            out.net.len(),
            1,
            "boringtun should answer with exactly a response"
        );
        let resp = &out.net[0];
        assert_eq!(resp.len(), RESPONSE_LEN);
        assert_eq!(msg_type(resp), MESSAGE_RESPONSE);
        // The response's receiver field (offset 8) names our initiation's sender index.
        assert_eq!(&resp[8..12], &init[0][4..8]);

        assert_eq!(self.ours_recv(resp), Ok(None));
        // The staged packet confirms the session (no separate keepalive needed).
        let data = self.ours_poll();
        assert_eq!(data.len(), 1);
        assert_eq!(msg_type(&data[0]), MESSAGE_TRANSPORT);
        assert_eq!(counter(&data[0]), 0);
        let out = self.bt_recv(&data[0]);
        out.assert_clean();
        assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
        assert!(self.ours.peer(self.pid).unwrap().last_handshake().is_some());
    }

    /// boringtun initiates because it has a packet to send; our device responds. The packet
    /// boringtun queued arrives after its confirming keepalive.
    fn handshake_bt_initiates(&mut self) {
        let pkt = ipv4_packet(BT_TUN, OURS_TUN, 56, 0xb0);
        let init = self.bt_send(&pkt);
        assert_eq!(init.len(), INITIATION_LEN);
        assert_eq!(msg_type(&init), MESSAGE_INITIATION);

        assert_eq!(self.ours_recv(&init), Ok(None));
        let resp = self.ours_poll();
        assert_eq!(resp.len(), 1);
        assert_eq!(resp[0].len(), RESPONSE_LEN);
        assert_eq!(msg_type(&resp[0]), MESSAGE_RESPONSE);

        // As responder we may not send before the initiator confirms: data waits.
        let early = ipv4_packet(OURS_TUN, BT_TUN, 40, 0xb1);
        let (r, d) = self.ours_send(&early);
        assert!(matches!(r, Outgoing::Staged { .. }), "{r:?}");
        assert!(d.is_none());
        assert!(
            self.ours_poll().is_empty(),
            "responder must not initiate or send yet"
        );

        let out = self.bt_recv(&resp[0]);
        out.assert_clean();
        assert_eq!(out.net.len(), 2, "keepalive, then the queued packet");
        assert_eq!(out.net[0].len(), KEEPALIVE_LEN);
        assert_eq!(self.ours_recv(&out.net[0]), Ok(None));
        assert_eq!(self.ours_recv(&out.net[1]), Ok(Some(pkt)));

        // Confirmation released what we staged.
        let flushed = self.ours_poll();
        assert_eq!(flushed.len(), 1);
        let out = self.bt_recv(&flushed[0]);
        out.assert_clean();
        assert_eq!(out.tun, vec![(early, OURS_TUN.parse().unwrap())]);
        assert!(self.ours.peer(self.pid).unwrap().last_handshake().is_some());
    }

    /// Data both ways at several sizes (up to a full 1420-byte MTU), payloads compared.
    /// Returns the last datagram each side sent, for index and counter checks.
    fn exchange_data(&mut self, tag: u32) -> (Vec<u8>, Vec<u8>) {
        let mut last = (Vec::new(), Vec::new());
        for (i, payload) in [4usize, 13, 100, 1000, 1400].into_iter().enumerate() {
            let t = tag + i as u32;
            let pkt = ipv4_packet(OURS_TUN, BT_TUN, payload, t);
            let (r, d) = self.ours_send(&pkt);
            let d = d.unwrap_or_else(|| panic!("not sent at once: {r:?}"));
            let out = self.bt_recv(&d);
            out.assert_clean();
            assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
            last.0 = d;

            let pkt = ipv4_packet(BT_TUN, OURS_TUN, payload, t | 0x8000_0000);
            let d = self.bt_send(&pkt);
            assert_eq!(
                d.len(),
                pkt.len() + TRANSPORT_OVERHEAD,
                "boringtun does not pad"
            );
            assert_eq!(self.ours_recv(&d), Ok(Some(pkt)));
            last.1 = d;
        }
        last
    }
}

#[test]
fn ours_initiates_without_psk() {
    let mut h = Harness::new(11, false, None);
    h.handshake_ours_initiates();
    h.exchange_data(1);
}

#[test]
fn ours_initiates_with_psk() {
    let mut h = Harness::new(12, true, None);
    h.handshake_ours_initiates();
    h.exchange_data(1);
}

#[test]
fn boringtun_initiates_without_psk() {
    let mut h = Harness::new(13, false, None);
    h.handshake_bt_initiates();
    h.exchange_data(1);
}

#[test]
fn boringtun_initiates_with_psk() {
    let mut h = Harness::new(14, true, None);
    h.handshake_bt_initiates();
    h.exchange_data(1);
}

#[test]
fn psk_mismatch_fails_the_handshake() {
    // Our side has a PSK, boringtun has none: boringtun cannot open our response's empty
    // payload (the PSK enters in message 2 only), so no session comes up.
    let mut h = Harness::new(15, false, None);
    h.ours
        .set_preshared_key(h.pid, PresharedKey::from_bytes([7; 32]))
        .unwrap();
    let init = h.bt_initiation(false);
    assert_eq!(h.ours_recv(&init), Ok(None));
    let resp = h.ours_poll();
    assert_eq!(resp.len(), 1);
    let out = h.bt_recv(&resp[0]);
    assert!(
        out.err.is_some(),
        "boringtun accepted a response under another PSK"
    );
    assert!(out.net.is_empty());
}

#[test]
fn ipv6_inner_packets_both_ways() {
    let mut h = Harness::new(16, true, None);
    h.handshake_ours_initiates();
    for payload in [8usize, 600, 1380] {
        let pkt = ipv6_packet(OURS_TUN6, BT_TUN6, payload, payload as u32);
        let (_, d) = h.ours_send(&pkt);
        let out = h.bt_recv(&d.expect("sent"));
        out.assert_clean();
        assert_eq!(out.tun, vec![(pkt, OURS_TUN6.parse().unwrap())]);

        let pkt = ipv6_packet(BT_TUN6, OURS_TUN6, payload, !(payload as u32));
        let d = h.bt_send(&pkt);
        assert_eq!(h.ours_recv(&d), Ok(Some(pkt)));
    }
}

#[test]
fn source_outside_allowed_ips_from_boringtun_is_dropped() {
    // boringtun does not filter what it seals; our cryptokey routing must.
    let mut h = Harness::new(17, false, None);
    h.handshake_bt_initiates();
    let spoofed = ipv4_packet("10.0.0.99", OURS_TUN, 20, 1);
    let d = h.bt_send(&spoofed);
    assert_eq!(h.ours_recv(&d), Err(DropReason::SourceNotAllowed));
    // The session is unharmed.
    h.exchange_data(100);
}

#[test]
fn ours_under_load_answers_with_cookie_and_accepts_boringtun_mac2() {
    let mut h = Harness::new(21, true, None);
    h.ours.note_handshake_backlog(h.now, 1000);
    assert!(h.ours.is_under_load(h.now));

    let init1 = h.bt_initiation(false);
    assert_eq!(&init1[132..148], &[0u8; 16], "no cookie yet, so no mac2");
    assert_eq!(h.ours_recv(&init1), Err(DropReason::CookieReplySent));
    let reply = h.ours_poll();
    assert_eq!(reply.len(), 1);
    assert_eq!(reply[0].len(), COOKIE_REPLY_LEN);
    assert_eq!(msg_type(&reply[0]), MESSAGE_COOKIE_REPLY);
    assert_eq!(receiver_index(&reply[0]), receiver_index_of_sender(&init1));

    // boringtun opens the cookie (AAD = the mac1 it sent) and keeps it.
    let out = h.bt_recv(&reply[0]);
    out.assert_clean();
    assert!(out.net.is_empty() && out.tun.is_empty());

    let init2 = h.bt_initiation(true);
    assert_ne!(
        &init2[132..148],
        &[0u8; 16],
        "boringtun's retry carries mac2"
    );
    // The cookie is bound to boringtun's address and port: from elsewhere it is worthless.
    let elsewhere: SocketAddr = "192.0.2.2:40000".parse().unwrap();
    assert_eq!(
        h.ours_recv_from(elsewhere, &init2),
        Err(DropReason::CookieReplySent)
    );
    let mut out = vec![0u8; BUF];
    let t = h
        .ours
        .poll_transmit(h.now, &mut out)
        .expect("a second cookie reply");
    assert_eq!(
        t.to.addr, elsewhere,
        "cookie replies go to the packet's source"
    );
    assert_eq!(msg_type(&out[..t.len]), MESSAGE_COOKIE_REPLY);
    assert!(h.ours.poll_transmit(h.now, &mut out).is_none());

    h.advance(Duration::from_millis(10));
    assert!(h.ours.is_under_load(h.now));
    assert_eq!(
        h.ours_recv(&init2),
        Ok(None),
        "valid mac2 must be admitted under load"
    );
    let resp = h.ours_poll();
    assert_eq!(resp.len(), 1);
    assert_eq!(msg_type(&resp[0]), MESSAGE_RESPONSE);
    let out = h.bt_recv(&resp[0]);
    out.assert_clean();
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].len(), KEEPALIVE_LEN);
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    h.exchange_data(1);
}

fn receiver_index_of_sender(init: &[u8]) -> u32 {
    u32::from_le_bytes(init[4..8].try_into().unwrap())
}

#[test]
fn boringtun_under_load_answers_with_cookie_and_accepts_our_mac2() {
    // A limit of 0 puts boringtun's limiter under load for every handshake message.
    let mut h = Harness::new(22, false, Some(0));
    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 56, 0xc0);
    let (r, _) = h.ours_send(&pkt);
    assert!(matches!(r, Outgoing::Staged { .. }));
    let init1 = h.ours_poll();
    assert_eq!(init1.len(), 1);
    assert_eq!(&init1[0][132..148], &[0u8; 16]);

    let out = h.bt_recv(&init1[0]);
    out.assert_clean();
    assert_eq!(out.net.len(), 1);
    let reply = &out.net[0];
    assert_eq!(reply.len(), COOKIE_REPLY_LEN);
    assert_eq!(msg_type(reply), MESSAGE_COOKIE_REPLY);
    assert!(!h.ours.peer(h.pid).unwrap().has_cookie());
    assert_eq!(h.ours_recv(reply), Ok(None));
    assert!(h.ours.peer(h.pid).unwrap().has_cookie());
    // A cookie reply does not trigger an immediate retransmission.
    assert!(h.ours_poll().is_empty());

    // The retransmit timer (5 s + jitter) sends the next initiation, now with mac2.
    let deadline = h.ours.poll_timeout().expect("retransmit armed");
    assert!(deadline <= h.now + REKEY_TIMEOUT + Duration::from_millis(REKEY_TIMEOUT_JITTER_MAX_MS));
    h.now = deadline;
    h.ours.handle_timeout(h.now);
    let init2 = h.ours_poll();
    assert_eq!(init2.len(), 1);
    assert_eq!(msg_type(&init2[0]), MESSAGE_INITIATION);
    assert_ne!(&init2[0][132..148], &[0u8; 16], "our retry carries mac2");

    let out = h.bt_recv(&init2[0]);
    out.assert_clean();
    assert_eq!(out.net.len(), 1, "boringtun accepts our mac2 and responds");
    assert_eq!(msg_type(&out.net[0]), MESSAGE_RESPONSE);
    let resp = out.net[0].clone();
    assert_eq!(h.ours_recv(&resp), Ok(None));
    let data = h.ours_poll();
    assert_eq!(
        data.len(),
        1,
        "the staged packet goes out on the new session"
    );
    let out = h.bt_recv(&data[0]);
    out.assert_clean();
    assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
    h.exchange_data(1);
}

/// Our device initiated; after REKEY_AFTER_TIME (our simulated clock only) sending makes it
/// rekey. Three rounds: each time data keeps flowing, boringtun's in-flight packets on the old
/// keys still open, and both directions move to new indices with fresh counters.
fn rekey_by_ours(psk: bool, seed: u64) {
    let mut h = Harness::new(seed, psk, None);
    h.handshake_ours_initiates();
    let (mut ours_last, mut bt_last) = h.exchange_data(1);
    for round in 0..3u32 {
        let old_bt_index = receiver_index(&ours_last);
        let old_ours_index = receiver_index(&bt_last);

        h.advance(REKEY_AFTER_TIME + Duration::from_secs(1));
        let pkt = ipv4_packet(OURS_TUN, BT_TUN, 64, 0x100 + round);
        let (r, d) = h.ours_send(&pkt);
        let d = d.unwrap_or_else(|| panic!("old session still sends: {r:?}"));
        assert_eq!(receiver_index(&d), old_bt_index);
        let out = h.bt_recv(&d);
        out.assert_clean();
        assert_eq!(out.tun.len(), 1);

        let init = h.ours_poll();
        assert_eq!(
            init.len(),
            1,
            "sending on a session older than 120 s starts a rekey"
        );
        assert_eq!(msg_type(&init[0]), MESSAGE_INITIATION);
        let out = h.bt_recv(&init[0]);
        out.assert_clean();
        assert_eq!(out.net.len(), 1);
        let resp = out.net[0].clone();
        assert_eq!(msg_type(&resp), MESSAGE_RESPONSE);

        // boringtun keeps sending on the old keys until it hears on the new ones.
        let in_flight = ipv4_packet(BT_TUN, OURS_TUN, 30, 0x200 + round);
        let old = h.bt_send(&in_flight);
        assert_eq!(receiver_index(&old), old_ours_index);

        assert_eq!(h.ours_recv(&resp), Ok(None));
        let ka = h.ours_poll();
        assert_eq!(ka.len(), 1);
        assert_eq!(
            ka[0].len(),
            KEEPALIVE_LEN,
            "initiator confirms with a keepalive"
        );
        assert_ne!(receiver_index(&ka[0]), old_bt_index);
        assert_eq!(counter(&ka[0]), 0);
        // The old-key packet arrives after we switched: the previous slot still opens it.
        assert_eq!(h.ours_recv(&old), Ok(Some(in_flight)));

        let out = h.bt_recv(&ka[0]);
        out.assert_clean();
        assert!(out.net.is_empty() && out.tun.is_empty());

        // First boringtun packet after the switch is on the new keys, counter 0.
        let pkt = ipv4_packet(BT_TUN, OURS_TUN, 48, 0x300 + round);
        let d = h.bt_send(&pkt);
        assert_ne!(receiver_index(&d), old_ours_index);
        assert_eq!(counter(&d), 0);
        assert_eq!(h.ours_recv(&d), Ok(Some(pkt)));

        (ours_last, bt_last) = h.exchange_data(0x1000 * (round + 2));
        assert_ne!(receiver_index(&ours_last), old_bt_index);
        assert_ne!(receiver_index(&bt_last), old_ours_index);
    }
}

#[test]
fn rekey_initiated_by_ours_after_rekey_after_time() {
    rekey_by_ours(false, 31);
}

#[test]
fn rekey_initiated_by_ours_after_rekey_after_time_with_psk() {
    rekey_by_ours(true, 32);
}

#[test]
fn rekey_initiated_by_boringtun() {
    let mut h = Harness::new(33, true, None);
    h.handshake_bt_initiates();
    let (mut ours_last, mut bt_last) = h.exchange_data(1);
    for round in 0..3u32 {
        let old_bt_index = receiver_index(&ours_last);
        let old_ours_index = receiver_index(&bt_last);
        // Past our 20 ms initiation flood limit (boringtun's clock does not matter here).
        h.advance(Duration::from_secs(30));
        let init = h.bt_initiation(false);
        assert_eq!(h.ours_recv(&init), Ok(None));
        let resp = h.ours_poll();
        assert_eq!(resp.len(), 1);
        assert_eq!(msg_type(&resp[0]), MESSAGE_RESPONSE);

        // Until boringtun confirms, we keep sending on the current (old) keys.
        let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 0x400 + round);
        let (_, d) = h.ours_send(&pkt);
        let d = d.expect("old session still sends");
        assert_eq!(receiver_index(&d), old_bt_index);
        let out = h.bt_recv(&d);
        out.assert_clean();
        assert_eq!(out.tun.len(), 1);

        let out = h.bt_recv(&resp[0]);
        out.assert_clean();
        assert_eq!(out.net.len(), 1);
        let ka = &out.net[0];
        assert_eq!(ka.len(), KEEPALIVE_LEN);
        assert_ne!(receiver_index(ka), old_ours_index);
        assert_eq!(h.ours_recv(ka), Ok(None));

        // Our first packet after confirmation uses the new keys, counter 0.
        let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 0x500 + round);
        let (_, d) = h.ours_send(&pkt);
        let d = d.expect("new session sends");
        assert_ne!(receiver_index(&d), old_bt_index);
        assert_eq!(counter(&d), 0);
        let out = h.bt_recv(&d);
        out.assert_clean();
        assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);

        (ours_last, bt_last) = h.exchange_data(0x1000 * (round + 2));
    }
}

#[test]
fn ours_accepts_boringtun_keepalive() {
    for initiator_is_ours in [true, false] {
        let mut h = Harness::new(41, false, None);
        if initiator_is_ours {
            h.handshake_ours_initiates();
        } else {
            h.handshake_bt_initiates();
        }
        let rx = h.ours.peer(h.pid).unwrap().rx_bytes();
        let ka = h.bt_send(&[]);
        assert_eq!(ka.len(), KEEPALIVE_LEN);
        assert_eq!(h.ours_recv(&ka), Ok(None));
        assert_eq!(
            h.ours.peer(h.pid).unwrap().rx_bytes(),
            rx + KEEPALIVE_LEN as u64
        );
        // The same keepalive again is a replay.
        assert_eq!(h.ours_recv(&ka), Err(DropReason::ReplayedCounter));
        // A tampered one does not authenticate.
        let mut bad = h.bt_send(&[]);
        bad[20] ^= 1;
        assert_eq!(h.ours_recv(&bad), Err(DropReason::DecryptFailed));
    }
}

#[test]
fn boringtun_accepts_our_keepalives() {
    let mut h = Harness::new(42, false, None);
    h.handshake_bt_initiates();

    // Passive keepalive: data received and nothing sent back for KEEPALIVE_TIMEOUT.
    let pkt = ipv4_packet(BT_TUN, OURS_TUN, 20, 7);
    let d = h.bt_send(&pkt);
    assert_eq!(h.ours_recv(&d), Ok(Some(pkt)));
    h.advance(KEEPALIVE_TIMEOUT);
    h.ours.handle_timeout(h.now);
    let ka = h.ours_poll();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].len(), KEEPALIVE_LEN);
    let out = h.bt_recv(&ka[0]);
    out.assert_clean();
    assert!(out.net.is_empty() && out.tun.is_empty());
    // Replayed, boringtun refuses it (so `Done` above meant "authenticated and accepted").
    let out = h.bt_recv(&ka[0]);
    assert!(out.err.is_some());

    // Persistent keepalive: turning it on sends one at once.
    h.ours.set_persistent_keepalive(h.now, h.pid, 25).unwrap();
    let ka = h.ours_poll();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].len(), KEEPALIVE_LEN);
    let out = h.bt_recv(&ka[0]);
    out.assert_clean();
    let mut bad = ka[0].clone();
    bad[8] ^= 0x40; // another counter: the tag no longer matches
    assert!(h.bt_recv(&bad).err.is_some());

    // And the interval: after 25 s of silence, another.
    h.advance(Duration::from_secs(25));
    h.ours.handle_timeout(h.now);
    let ka = h.ours_poll();
    assert!(ka.iter().all(|k| k.len() == KEEPALIVE_LEN) && !ka.is_empty());
    for k in &ka {
        h.bt_recv(k).assert_clean();
    }
}

#[test]
fn boringtun_rejects_our_replayed_initiation_and_we_reject_its() {
    let mut h = Harness::new(51, false, None);
    // Ours → boringtun: the same initiation twice; the second has a stale timestamp.
    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 1);
    h.ours_send(&pkt);
    let init = h.ours_poll().remove(0);
    h.bt_recv(&init).assert_clean();
    let again = h.bt_recv(&init);
    assert!(
        matches!(again.err.as_deref(), Some(e) if e == format!("{:?}", WireGuardError::WrongTai64nTimestamp)),
        "{again:?}"
    );

    // boringtun → ours: likewise.
    let init = h.bt_initiation(true);
    h.advance(Duration::from_millis(50));
    assert_eq!(h.ours_recv(&init), Ok(None));
    h.ours_poll();
    h.advance(Duration::from_millis(50));
    assert_eq!(h.ours_recv(&init), Err(DropReason::ReplayedTimestamp));
}

#[test]
fn simultaneous_initiations_settle_on_one_session() {
    let mut h = Harness::new(61, true, None);
    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 1);
    h.ours_send(&pkt);
    let ours_init = h.ours_poll().remove(0);
    let bt_init = h.bt_initiation(false);

    // Both initiations cross on the wire.
    let out = h.bt_recv(&ours_init);
    out.assert_clean();
    let bt_resp = out.net[0].clone();
    assert_eq!(h.ours_recv(&bt_init), Ok(None));
    let ours_resp = h.ours_poll();
    assert_eq!(ours_resp.len(), 1);
    assert_eq!(msg_type(&ours_resp[0]), MESSAGE_RESPONSE);

    // We dropped our own handshake in favour of the peer's (the kernel keeps one handshake
    // state per peer and overwrites it too), so its answer to ours finds nothing to complete.
    let r = h.ours_recv(&bt_resp);
    assert!(
        matches!(
            r,
            Err(DropReason::UnknownIndex | DropReason::UnexpectedResponse)
        ),
        "{r:?}"
    );
    // boringtun completes its own handshake and confirms it.
    let out = h.bt_recv(&ours_resp[0]);
    out.assert_clean();
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].len(), KEEPALIVE_LEN);
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    // What we staged goes out on the confirmed session.
    let flushed = h.ours_poll();
    assert_eq!(flushed.len(), 1);
    let out = h.bt_recv(&flushed[0]);
    out.assert_clean();
    assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
    h.exchange_data(10);
}

#[test]
fn lost_response_is_recovered_by_our_retransmission() {
    let mut h = Harness::new(62, false, None);
    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 1);
    h.ours_send(&pkt);
    let init = h.ours_poll().remove(0);
    let lost = h.bt_recv(&init);
    lost.assert_clean();
    assert_eq!(lost.net.len(), 1);
    // The response never arrives; our retransmit timer fires.
    let t = h.ours.poll_timeout().unwrap();
    h.now = t;
    h.ours.handle_timeout(h.now);
    let retry = h.ours_poll();
    assert_eq!(retry.len(), 1);
    assert_eq!(msg_type(&retry[0]), MESSAGE_INITIATION);
    let out = h.bt_recv(&retry[0]);
    out.assert_clean();
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    // The late original response is for a superseded handshake.
    assert_eq!(h.ours_recv(&lost.net[0]), Err(DropReason::UnknownIndex));
    let data = h.ours_poll();
    assert_eq!(data.len(), 1);
    let out = h.bt_recv(&data[0]);
    out.assert_clean();
    assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
    h.exchange_data(1);
}

#[test]
fn ours_rekeys_on_receive_at_165_seconds_as_initiator() {
    let mut h = Harness::new(63, false, None);
    h.handshake_ours_initiates();
    let (ours_last, _) = h.exchange_data(1);
    h.advance(REKEY_ON_RECEIVE_AGE + Duration::from_secs(1));
    // Only receiving (no sending) on a session this old makes the initiator rekey.
    let pkt = ipv4_packet(BT_TUN, OURS_TUN, 20, 2);
    let d = h.bt_send(&pkt);
    assert_eq!(h.ours_recv(&d), Ok(Some(pkt)));
    let init = h.ours_poll();
    assert_eq!(init.len(), 1);
    assert_eq!(msg_type(&init[0]), MESSAGE_INITIATION);
    let out = h.bt_recv(&init[0]);
    out.assert_clean();
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    let ka = h.ours_poll();
    assert_eq!(ka.len(), 1);
    assert_eq!(ka[0].len(), KEEPALIVE_LEN);
    h.bt_recv(&ka[0]).assert_clean();
    let (new_last, _) = h.exchange_data(100);
    assert_ne!(receiver_index(&new_last), receiver_index(&ours_last));
}

#[test]
fn ours_responder_session_expires_on_our_clock_and_we_handshake_again() {
    // boringtun initiated; its own clock is real, so it never rekeys here. On our simulated
    // clock the session passes REJECT_AFTER_TIME: we stop using it and initiate ourselves.
    let mut h = Harness::new(64, true, None);
    h.handshake_bt_initiates();
    h.exchange_data(1);
    h.advance(REJECT_AFTER_TIME + Duration::from_secs(1));

    let late = h.bt_send(&ipv4_packet(BT_TUN, OURS_TUN, 20, 3));
    assert_eq!(h.ours_recv(&late), Err(DropReason::SessionExpired));

    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 4);
    let (r, d) = h.ours_send(&pkt);
    assert!(matches!(r, Outgoing::Staged { .. }), "{r:?}");
    assert!(d.is_none());
    let init = h.ours_poll();
    assert_eq!(init.len(), 1);
    assert_eq!(msg_type(&init[0]), MESSAGE_INITIATION);
    let out = h.bt_recv(&init[0]);
    out.assert_clean();
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    let data = h.ours_poll();
    assert_eq!(data.len(), 1, "the staged packet confirms the new session");
    let out = h.bt_recv(&data[0]);
    out.assert_clean();
    assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
    h.exchange_data(100);
}

#[test]
fn boringtun_under_load_challenges_our_response() {
    // boringtun initiates while its limiter is under load: it checks mac2 on our *response*
    // too, and answers it with a cookie reply addressed to our response's sender index.
    let mut h = Harness::new(65, true, Some(0));
    let init1 = h.bt_initiation(false);
    assert_eq!(h.ours_recv(&init1), Ok(None));
    let resp1 = h.ours_poll().remove(0);
    let out = h.bt_recv(&resp1);
    out.assert_clean();
    assert_eq!(out.net.len(), 1);
    let reply = out.net[0].clone();
    assert_eq!(msg_type(&reply), MESSAGE_COOKIE_REPLY);
    assert_eq!(&reply[4..8], &resp1[4..8]);
    assert_eq!(
        h.ours_recv(&reply),
        Ok(None),
        "a cookie reply to our response is consumed"
    );
    assert!(h.ours.peer(h.pid).unwrap().has_cookie());

    // boringtun's next initiation is answered with a response carrying mac2.
    h.advance(Duration::from_millis(100));
    let init2 = h.bt_initiation(true);
    assert_eq!(h.ours_recv(&init2), Ok(None));
    let resp2 = h.ours_poll().remove(0);
    assert_ne!(&resp2[76..92], &[0u8; 16], "our response carries mac2");
    let out = h.bt_recv(&resp2);
    out.assert_clean();
    assert_eq!(out.net.len(), 1);
    assert_eq!(out.net[0].len(), KEEPALIVE_LEN);
    assert_eq!(h.ours_recv(&out.net[0]), Ok(None));
    h.exchange_data(1);
}

#[test]
fn ours_under_load_challenges_boringtun_response() {
    // We initiate, then come under load before boringtun's response arrives: the response
    // needs mac2 too, so it is answered with a cookie reply that boringtun consumes (AAD =
    // the mac1 of its response); our retransmission then gets a response with mac2.
    let mut h = Harness::new(66, false, None);
    let pkt = ipv4_packet(OURS_TUN, BT_TUN, 20, 1);
    h.ours_send(&pkt);
    let init1 = h.ours_poll().remove(0);
    let out = h.bt_recv(&init1);
    out.assert_clean();
    let resp1 = out.net[0].clone();

    h.ours.note_handshake_backlog(h.now, 1000);
    assert_eq!(h.ours_recv(&resp1), Err(DropReason::CookieReplySent));
    let reply = h.ours_poll();
    assert_eq!(reply.len(), 1);
    assert_eq!(msg_type(&reply[0]), MESSAGE_COOKIE_REPLY);
    assert_eq!(&reply[0][4..8], &resp1[4..8]);
    let out = h.bt_recv(&reply[0]);
    out.assert_clean();
    assert!(out.net.is_empty());

    // Our retransmission (still under load: the backlog is reported again).
    let t = h.ours.poll_timeout().unwrap();
    h.now = t;
    h.ours.note_handshake_backlog(h.now, 1000);
    h.ours.handle_timeout(h.now);
    let init2 = h.ours_poll();
    assert_eq!(init2.len(), 1);
    let out = h.bt_recv(&init2[0]);
    out.assert_clean();
    let resp2 = out.net[0].clone();
    assert_ne!(
        &resp2[76..92],
        &[0u8; 16],
        "boringtun's response carries mac2"
    );
    assert_eq!(h.ours_recv(&resp2), Ok(None), "mac2 admits it under load");
    let data = h.ours_poll();
    assert_eq!(data.len(), 1);
    let out = h.bt_recv(&data[0]);
    out.assert_clean();
    assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);
}

#[test]
fn reordered_transport_within_both_replay_windows() {
    let mut h = Harness::new(67, false, None);
    h.handshake_ours_initiates();
    // 200 packets each way, delivered newest first (boringtun's window is 1024, ours 8128).
    let ours: Vec<_> = (0..200u32)
        .map(|i| {
            let p = ipv4_packet(OURS_TUN, BT_TUN, 16, i);
            (p.clone(), h.ours_send(&p).1.unwrap())
        })
        .collect();
    let bts: Vec<_> = (0..200u32)
        .map(|i| {
            let p = ipv4_packet(BT_TUN, OURS_TUN, 16, i);
            (p.clone(), h.bt_send(&p))
        })
        .collect();
    for (p, d) in ours.iter().rev() {
        let out = h.bt_recv(d);
        out.assert_clean();
        assert_eq!(&out.tun[0].0, p);
    }
    for (p, d) in bts.iter().rev() {
        assert_eq!(h.ours_recv(d).as_ref(), Ok(&Some(p.clone())));
    }
    // And every one of them is now a replay on both sides.
    assert!(h.bt_recv(&ours[17].1).err.is_some());
    assert_eq!(h.ours_recv(&bts[17].1), Err(DropReason::ReplayedCounter));
}

#[test]
fn inner_packets_larger_than_our_mtu() {
    // Padding covers only the last partial MTU-sized piece; boringtun trusts the IP length.
    let mut h = Harness::new(68, false, None);
    h.handshake_ours_initiates();
    for total in [1421usize, 1500, 2000] {
        let pkt = ipv4_packet(OURS_TUN, BT_TUN, total - 20, total as u32);
        let (_, d) = h.ours_send(&pkt);
        let d = d.expect("sent");
        let last = total % DEFAULT_MTU;
        let padded = (last.div_ceil(16) * 16).min(DEFAULT_MTU);
        assert_eq!(d.len(), total - last + padded + TRANSPORT_OVERHEAD);
        let out = h.bt_recv(&d);
        out.assert_clean();
        assert_eq!(out.tun, vec![(pkt, OURS_TUN.parse().unwrap())]);

        let pkt = ipv4_packet(BT_TUN, OURS_TUN, total - 20, !(total as u32));
        let d = h.bt_send(&pkt);
        assert_eq!(h.ours_recv(&d), Ok(Some(pkt)));
    }
}
