//! Regression tests for the bugs user-space WireGuard implementations are known to have had,
//! one test per bug, against our engine in simulated time (the two-device driver in
//! `common`). Each test says which mutation of our code it catches; where that is cheap, a
//! local model of the buggy behaviour is run through the same probe to show the assertion
//! tells the two apart.
//!
//! Every "Catches:" claim was checked by applying that mutation to a scratch copy of this
//! crate (outside the repository) and running this file: each mutation below fails the test
//! named (a few also fail a neighbour that leans on the same rule). The rest of the claims
//! are argued in the tests' comments.
//!
//! | mutation | failing test |
//! |---|---|
//! | `REPLAY_BITS` 1024; window one counter wider (`+ 2` in `in_range`) | `replay_window_is_8128_counters` |
//! | rate-limiter buckets keyed by a constant | `a_flooding_source_does_not_starve_another` |
//! | cookie MAC without the port | `a_cookie_is_bound_to_the_source_port` |
//! | no `roam` on transport messages; `roam` on cookie replies | `endpoint_follows_keepalives_never_cookie_replies` |
//! | no padding; padding ignoring the MTU | `transport_plaintexts_are_padded_to_16_within_the_mtu` (and the 65535-byte case) |
//! | jitter 0; jitter 0–999 ms | `retransmissions_are_jittered_within_a_third_of_a_second` |
//! | 32-bit nonce in `nonce_bytes`; replay check on the low 32 bits | `counters_past_2_pow_32_seal_open_and_pass_the_window` |
//! | `>=` for `> MAX_DATAGRAM_LEN`; no upper bound; no 4-byte minimum (panics) | `oversized_and_empty_datagrams_do_not_panic` |
//! | source check "inside one of the sender's prefixes" | `a_source_in_another_peers_longer_prefix_is_refused` |
//! | keepalives arming the keepalive timer | `keepalives_are_never_answered_with_keepalives` |
//! | `set_preshared_key` a no-op; the PSK copied into `InitiatorState` at initiation | `psk_changes_reach_the_handshake_in_flight_and_retire_the_old_key` |
//! | responses refused 1 s after the initiation; retries keeping the old index | `late_responses_accepted_until_the_retransmission_then_dropped` |
//! | no replay check on the "previous" slot | `replayed_transport_from_an_older_session` |
//!
//! Rules already covered by `device_rules.rs` and `timers.rs` are not repeated; the tests
//! here add the angle the bug needs and name the existing test that covers the rest. The
//! engine-level replay rules are mostly covered there already:
//!
//! * a captured transport message sent again is dropped —
//!   `device_rules::transport_replays_dropped_reorders_accepted` (every duplicate on a
//!   duplicating network, and an old one by hand), `device_rules::replay_window_edge`;
//! * a captured initiation sent again is refused by its timestamp, however late —
//!   `device_rules::replayed_or_flooding_initiations_get_no_response`;
//! * a stream reordered within the window is accepted, each message once —
//!   `device_rules::transport_replays_dropped_reorders_accepted`,
//!   `device_rules::lossy_duplicating_reordering_network`;
//!
//! and `replayed_transport_from_an_older_session` below adds the one case they leave out: a
//! capture replayed after the session it belongs to was replaced.

mod common;
use common::*;
use ferrowg_proto::constants::*;
use ferrowg_proto::cookie::CookieGenerator;
use ferrowg_proto::crypto;
use ferrowg_proto::device::{Device, DropReason, Outgoing, Received};
use ferrowg_proto::keys::{PresharedKey, PrivateKey};
use ferrowg_proto::messages::{padded_len, Response};
use ferrowg_proto::noise::{self, Identity, PeerKeys};
use ferrowg_proto::peer::Endpoint;
use ferrowg_proto::ratelimiter::RateLimiter;
use ferrowg_proto::replay::ReplayWindow;
use ferrowg_proto::session::Keypair;
use ferrowg_proto::tai64n::Tai64N;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn counter_of(m: &[u8]) -> u64 {
    u64::from_le_bytes(m[8..16].try_into().unwrap())
}

/// Sends an inner packet from `side` with the link cut and returns the sealed datagram.
fn seal(p: &mut Pair, side: Side, pkt: &[u8]) -> Vec<u8> {
    let was = p.connected;
    p.connected = false;
    let r = p.send(side, pkt);
    assert!(matches!(r, Outgoing::Sent { .. }), "{r:?}");
    p.connected = was;
    p.log.last().unwrap().bytes.clone()
}

/// A minimal IPv6 packet (next header 59) with a 4-byte payload.
fn ipv6_packet(src: &str, dst: &str, tag: u32) -> Vec<u8> {
    let (IpAddr::V6(s), IpAddr::V6(d)) = (src.parse().unwrap(), dst.parse().unwrap()) else {
        panic!("v6 only")
    };
    let mut p = vec![0u8; 44];
    p[0] = 0x60;
    p[4..6].copy_from_slice(&4u16.to_be_bytes());
    p[6] = 59;
    p[7] = 64;
    p[8..24].copy_from_slice(&s.octets());
    p[24..40].copy_from_slice(&d.octets());
    p[40..44].copy_from_slice(&tag.to_be_bytes());
    p
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

fn current_local_index(d: &Device) -> Option<u32> {
    let peer = d.peer(only_peer(d))?;
    peer.sessions()
        .current
        .as_ref()
        .map(|s| s.keypair.local_index)
}

fn current_remote_index(d: &Device) -> Option<u32> {
    let peer = d.peer(only_peer(d))?;
    peer.sessions()
        .current
        .as_ref()
        .map(|s| s.keypair.remote_index)
}

// ----- 1. a replay window smaller (or larger) than the kernel's ------------------------

/// What a sliding bitmap of `bits` counters accepts, for a counter `behind` the greatest:
/// boringtun's window is 1024 bits, and a full 8192-bit window without the kernel's one-word
/// slack would reach 8191 back.
fn bitmap_model_accepts(bits: u64, behind: u64) -> bool {
    behind < bits
}

/// The kernel and wireguard-go accept a counter up to 8128 behind the greatest (8192 bits
/// minus one 64-bit word); boringtun's 1024-bit window drops reordered traffic that they
/// accept. `device_rules::replay_window_edge` pins the exact edge (8128 in, 8129 out); this
/// probes the two distances that tell the window sizes apart.
///
/// Catches: REPLAY_BITS/REPLAY_WINDOW shrunk (a 1024-, 2048- or 4096-bit window refuses the
/// counter 8000 behind), or the window taken as all 8192 bits (8129 behind accepted).
#[test]
fn replay_window_is_8128_counters() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.connected = false;
    let since = p.log.len();
    // Counters 1..=8200 (0 carried the handshake's first packet).
    for i in 0..8200u32 {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 0, i));
    }
    let by_counter: HashMap<u64, Vec<u8>> = p.log[since..]
        .iter()
        .map(|w| (counter_of(&w.bytes), w.bytes.clone()))
        .collect();
    let a = p.a_addr;
    let greatest = 8200;
    assert!(matches!(
        p.deliver(Side::B, a, &by_counter[&greatest]),
        Ok(Received::Packet { .. })
    ));
    let probe = |p: &mut Pair, behind: u64| {
        p.deliver(Side::B, a, &by_counter[&(greatest - behind)])
            .map(|r| matches!(r, Received::Packet { .. }))
    };
    assert_eq!(
        probe(&mut p, 8000),
        Ok(true),
        "8000 behind must be accepted"
    );
    assert_eq!(
        probe(&mut p, 8129),
        Err(DropReason::ReplayedCounter),
        "8129 behind must be refused"
    );
    assert_eq!(REPLAY_WINDOW, 8128);

    // The same probes against the buggy window sizes give the other answers.
    for bits in [1024, 2048, 4096] {
        assert!(!bitmap_model_accepts(bits, 8000), "{bits}-bit model");
    }
    assert!(bitmap_model_accepts(8192, 8129));
    // And the window type itself, outside the engine.
    let mut w = ReplayWindow::new();
    assert!(w.check_and_update(100_000));
    assert!(w.check_and_update(100_000 - 8000));
    assert!(!w.check_and_update(100_000 - 8129));
}

// ----- 2. one global handshake rate limiter ---------------------------------------------

/// A third device C, B's peer at 192.0.2.3 (10.0.0.3/32), that knows B.
fn add_third_device(p: &mut Pair) -> (Device, SocketAddr) {
    let c_addr: SocketAddr = "192.0.2.3:51820".parse().unwrap();
    let kc = PrivateKey::generate(&mut TestRng(0xc0c0));
    let mut c = device(3, p.now);
    c.set_private_key(Some(kc.clone()));
    let pb = c.add_peer(*p.b.public_key().unwrap()).unwrap();
    c.add_allowed_ip(pb, ip(B_TUN), 32).unwrap();
    c.set_endpoint(pb, p.b_addr).unwrap();
    let pc = p.b.add_peer(kc.public_key()).unwrap();
    p.b.add_allowed_ip(pc, ip("10.0.0.3"), 32).unwrap();
    p.b.set_endpoint(pc, c_addr).unwrap();
    (c, c_addr)
}

fn transmits(d: &mut Device, now: Instant) -> Vec<Vec<u8>> {
    let mut out = vec![0u8; 2048];
    let mut v = Vec::new();
    while let Some(t) = d.poll_transmit(now, &mut out) {
        v.push(out[..t.len].to_vec());
    }
    v
}

/// Under load, the kernel and wireguard-go rate-limit handshake messages per source address
/// (after a valid mac2). With one bucket for everybody, a single flooding source keeps every
/// other peer from completing a handshake.
///
/// Catches: the limiter keyed by anything shared between sources (a constant, the device, the
/// port); demonstrated below with the real `RateLimiter` fed one key for every source.
#[test]
fn a_flooding_source_does_not_starve_another() {
    let mut p = Pair::new(false, true, true);
    let (mut c, c_addr) = add_third_device(&mut p);
    let t0 = p.now;
    p.b.note_handshake_backlog(t0, 1000);

    // A and C each get a cookie from the loaded B for their own address ...
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    let a1 = p.take_transmits(Side::A).remove(0).1;
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &a1),
        Err(DropReason::CookieReplySent)
    );
    let reply = p.take_transmits(Side::B).remove(0).1;
    assert_eq!(p.deliver(Side::A, p.b_addr, &reply), Ok(Received::Nothing));

    let mut out = vec![0u8; 256];
    let r = c.handle_outgoing(t0, &ipv4_packet("10.0.0.3", B_TUN, 40, 2), &mut out);
    assert!(matches!(r, Outgoing::Staged { .. }));
    let c1 = transmits(&mut c, t0).remove(0);
    let mut buf = c1.clone();
    assert_eq!(
        p.b.handle_datagram(t0, Endpoint::new(c_addr), &mut buf),
        Err(DropReason::CookieReplySent)
    );
    let mut reply = p.take_transmits(Side::B).remove(0).1;
    assert_eq!(
        c.handle_datagram(t0, Endpoint::new(p.b_addr), &mut reply),
        Ok(Received::Nothing)
    );

    // ... and retransmits with a valid mac2.
    p.connected = false;
    p.now = t0 + 6 * SEC;
    let now = p.now;
    p.a.handle_timeout(now);
    c.handle_timeout(now);
    let a2 = p.take_transmits(Side::A).remove(0).1;
    let c2 = transmits(&mut c, now).remove(0);
    assert_ne!(a2[132..148], [0u8; 16]);
    assert_ne!(c2[132..148], [0u8; 16]);

    // A's address floods B: once processed, 4 more through the limiter (then refused as
    // replays), then the limiter refuses.
    p.b.note_handshake_backlog(now, 1000);
    let mut results = Vec::new();
    for _ in 0..20 {
        results.push(p.deliver(Side::B, p.a_addr, &a2));
    }
    assert_eq!(results[0], Ok(Received::Nothing));
    assert!(results[1..5]
        .iter()
        .all(|r| *r == Err(DropReason::ReplayedTimestamp)));
    assert!(results[5..]
        .iter()
        .all(|r| *r == Err(DropReason::RateLimited)));
    // C, at the same instant, from its own address: its bucket is untouched.
    let mut buf = c2.clone();
    assert_eq!(
        p.b.handle_datagram(now, Endpoint::new(c_addr), &mut buf),
        Ok(Received::Nothing),
        "one source's flood starved another"
    );
    let out = p.take_transmits(Side::B);
    assert_eq!(out.len(), 2, "responses to A and to C");
    assert!(out.iter().all(|(_, m)| m[0] == MESSAGE_RESPONSE));
    assert_eq!(out[1].0.to.addr, c_addr);
    // The flooder stays limited.
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &a2),
        Err(DropReason::RateLimited)
    );

    // Model: one bucket for every source refuses C after A's 20 packets.
    let mut global = RateLimiter::new([7; 16]);
    let everyone = ip("0.0.0.0");
    let allowed = (0..20).filter(|_| global.allow(now, everyone)).count();
    assert_eq!(allowed, 5);
    assert!(
        !global.allow(now, everyone),
        "a global limiter would refuse C"
    );
}

// ----- 3. a cookie MAC without the source port ------------------------------------------

/// The kernel's cookie is a MAC of the source address *and port* (wireguard-go's too;
/// boringtun's omits the port). A cookie obtained at one port must not admit a handshake from
/// another port of the same address, or everyone behind one NAT address shares a cookie.
///
/// Catches: the port left out of `CookieChecker::cookie_for` (mac2 then also verifies from
/// the second port, and the initiation is processed instead of answered with a cookie).
#[test]
fn a_cookie_is_bound_to_the_source_port() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    p.b.note_handshake_backlog(t0, 1000);
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    let i1 = p.take_transmits(Side::A).remove(0).1;
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &i1),
        Err(DropReason::CookieReplySent)
    );
    let reply = p.take_transmits(Side::B).remove(0).1;
    assert_eq!(p.deliver(Side::A, p.b_addr, &reply), Ok(Received::Nothing));
    p.connected = false;
    p.now = t0 + 6 * SEC;
    let now = p.now;
    p.a.handle_timeout(now);
    let i2 = p.take_transmits(Side::A).remove(0).1;
    assert_ne!(i2[132..148], [0u8; 16], "the retransmission carries mac2");

    p.b.note_handshake_backlog(now, 1000);
    let other_port = SocketAddr::new(p.a_addr.ip(), p.a_addr.port() + 1);
    assert_eq!(
        p.deliver(Side::B, other_port, &i2),
        Err(DropReason::CookieReplySent),
        "a cookie from port {} admitted a handshake from port {}",
        p.a_addr.port(),
        other_port.port()
    );
    let (t, m) = p.take_transmits(Side::B).remove(0);
    assert_eq!(m[0], MESSAGE_COOKIE_REPLY);
    assert_eq!(t.to.addr, other_port, "the new cookie goes to the new port");
    // From the port the cookie was issued to, the same message is processed.
    assert_eq!(p.deliver(Side::B, p.a_addr, &i2), Ok(Received::Nothing));
    assert_eq!(p.take_transmits(Side::B)[0].1[0], MESSAGE_RESPONSE);

    // Model: a MAC over the address alone cannot tell the ports apart.
    let secret = [9u8; 32];
    let IpAddr::V4(a) = p.a_addr.ip() else {
        unreachable!()
    };
    let without_port = |_port: u16| crypto::mac(&secret, &[&a.octets()]);
    let with_port = |port: u16| crypto::mac(&secret, &[&a.octets(), &port.to_be_bytes()]);
    assert_eq!(without_port(51820), without_port(51821));
    assert_ne!(with_port(51820), with_port(51821));
}

// ----- 4. roaming only on handshakes, or on cookie replies ------------------------------

/// The endpoint follows every authenticated message, keepalives included: a peer behind a
/// NAT that rebinds is found again by its next persistent keepalive, long before any
/// handshake. A cookie reply is not authenticated by the peer's static key and must never
/// move the endpoint. (`device_rules::authenticated_packets_roam_the_endpoint` covers data
/// and replays from elsewhere, `device_rules::handshake_messages_roam_cookie_replies_do_not`
/// handshake messages and a cookie reply before any session; this is the live-session case.)
///
/// Catches: `roam` called only from the handshake handlers (the keepalive leaves the
/// endpoint behind), or called from `handle_cookie_reply` (the endpoint jumps to the reply's
/// source).
#[test]
fn endpoint_follows_keepalives_never_cookie_replies() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.advance(20 * SEC, SEC);
    let (pa, pb) = (only_peer(&p.b), only_peer(&p.a));

    // B's NAT rebinds; its only traffic is the keepalive it sends when persistent keepalive
    // is switched on.
    let rebound: SocketAddr = "203.0.113.7:40001".parse().unwrap();
    p.b_addr = rebound;
    let since = p.log.len();
    let now = p.now;
    p.b.set_persistent_keepalive(now, pa, 25).unwrap();
    p.run();
    let from_b = p.indices_of(since, Side::B, MESSAGE_TRANSPORT);
    assert_eq!(from_b.len(), 1);
    assert_eq!(p.log[from_b[0]].bytes.len(), KEEPALIVE_LEN);
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, rebound);
    // A's next packet goes to the new address.
    match p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1)) {
        Outgoing::Sent { to, .. } => assert_eq!(to.addr, rebound),
        other => panic!("{other:?}"),
    }
    p.run();
    let now = p.now;
    p.b.set_persistent_keepalive(now, pa, 0).unwrap();

    // A valid cookie reply from somewhere else, during the live session: A's data goes
    // unanswered (B -> A cut), A starts a new handshake after 15 s, the loaded B answers with
    // a cookie reply, which reaches A from another address.
    p.cut_b_to_a = true;
    let since = p.log.len();
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 2));
    p.run();
    // The initiation leaves at 15 s + jitter (< 334 ms): B is loaded from 14.5 s to 15.5 s.
    p.advance(KEEPALIVE_TIMEOUT + REKEY_TIMEOUT - 500 * MS, SEC);
    let now = p.now;
    p.b.note_handshake_backlog(now, 1000);
    p.advance(SEC, SEC);
    assert_eq!(p.count(since, Side::A, MESSAGE_INITIATION), 1);
    let replies = p.indices_of(since, Side::B, MESSAGE_COOKIE_REPLY);
    assert_eq!(replies.len(), 1, "B was not under load");
    let reply = p.log[replies[0]].bytes.clone();
    let elsewhere: SocketAddr = "198.51.100.9:7777".parse().unwrap();
    assert_eq!(p.deliver(Side::A, elsewhere, &reply), Ok(Received::Nothing));
    assert!(p.a.peer(pb).unwrap().has_cookie(), "the reply was accepted");
    assert_eq!(
        p.a.peer(pb).unwrap().endpoint().unwrap().addr,
        rebound,
        "a cookie reply moved the endpoint"
    );
}

// ----- 5. no padding --------------------------------------------------------------------

/// Transport plaintexts are padded with zeros to a multiple of 16, but never past the MTU
/// (KERNEL `calculate_skb_padding`), so packet sizes leak less; boringtun sends them
/// unpadded. Checked on the wire, and the receiver strips the padding again.
/// (`messages::tests::padding_rule` checks `padded_len` alone.)
///
/// Catches: `seal_into` not padding (every length below shows through), padding that ignores
/// the MTU (1424 bytes of plaintext on a 1419-byte MTU), or padding not stripped on receive.
#[test]
fn transport_plaintexts_are_padded_to_16_within_the_mtu() {
    let roundup16 = |n: usize| n.div_ceil(16) * 16;
    for mtu in [1420usize, 1419] {
        let mut p = Pair::new(false, true, true);
        p.a.set_mtu(mtu);
        establish(&mut p);
        let mut sizes = HashSet::new();
        let lens = (24..=200).chain(mtu - 40..=mtu);
        for total in lens {
            let pkt = ipv4_packet(A_TUN, B_TUN, total - 20, total as u32);
            assert_eq!(pkt.len(), total);
            let since = p.log.len();
            assert!(matches!(p.send(Side::A, &pkt), Outgoing::Sent { .. }));
            let wire = p.log[since].bytes.len();
            let expect = TRANSPORT_OVERHEAD + roundup16(total).min(mtu);
            assert_eq!(wire, expect, "inner {total} bytes, MTU {mtu}");
            assert_eq!(wire, TRANSPORT_OVERHEAD + padded_len(total, mtu));
            assert!(wire - TRANSPORT_OVERHEAD <= mtu);
            p.run();
            assert_eq!(p.delivered_b.last(), Some(&pkt), "padding not stripped");
            sizes.insert(wire);
            // Model: unpadded, the length shows through (except where it is already a
            // multiple of 16, or the MTU).
            let unpadded = TRANSPORT_OVERHEAD + total;
            if total % 16 != 0 && total != mtu {
                assert_ne!(wire, unpadded, "inner {total} bytes sent unpadded");
            }
        }
        // 177 + 41 inner lengths on the wire as a handful of sizes.
        assert!(sizes.len() <= 16, "{} distinct sizes", sizes.len());
    }
    // Keepalives carry nothing, so nothing is padded.
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.advance(11 * SEC, SEC);
    let ka = p.indices_of(0, Side::B, MESSAGE_TRANSPORT);
    assert_eq!(ka.len(), 1);
    assert_eq!(p.log[ka[0]].bytes.len(), KEEPALIVE_LEN);
}

// ----- 6. no jitter ---------------------------------------------------------------------

/// A pair whose devices draw from other RNG seeds (same keys and configuration as
/// `Pair::new(false, true, true)`).
fn pair_with_seeds(seed_a: u64, seed_b: u64) -> Pair {
    let mut p = Pair::new(false, true, true);
    let now = p.now;
    for (side, seed) in [(Side::A, seed_a), (Side::B, seed_b)] {
        let old = p.dev(side);
        let key = old.private_key().unwrap().clone();
        let (pid, peer) = old.peers().next().unwrap();
        let (public, endpoint) = (*peer.public_key(), peer.endpoint());
        let ips = old.allowed_ips_of(pid);
        let mut d = device(seed, now);
        d.set_private_key(Some(key));
        let pid = d.add_peer(public).unwrap();
        if let Some(ep) = endpoint {
            d.set_endpoint(pid, ep.addr).unwrap();
        }
        for (ip, cidr) in ips {
            d.add_allowed_ip(pid, ip, cidr).unwrap();
        }
        *p.dev(side) = d;
    }
    p
}

/// Handshake retransmissions wait REKEY_TIMEOUT plus a random 0–333 ms (KERNEL: up to HZ/3
/// jiffies), so that peers which lost a handshake together do not retry in lockstep forever
/// (`timers::simultaneous_initiations_resolve_by_retransmission` shows why it matters). The
/// jitter must vary from attempt to attempt and from device to device, and stay in
/// [5 s, 5.334 s). (`timers::unanswered_initiations_retransmit_then_give_up` checks one seed;
/// this checks several, and the new-handshake timer's jitter too.)
///
/// Catches: no jitter (every interval exactly 5 s), a jitter drawn once per device (a
/// constant offset within a run), or one outside 0–333 ms.
#[test]
fn retransmissions_are_jittered_within_a_third_of_a_second() {
    let mut all = Vec::new();
    let mut firsts = HashSet::new();
    let mut new_handshake_delays = HashSet::new();
    for seed in [1u64, 7, 42, 1234, 0xdead_beef] {
        let mut p = pair_with_seeds(seed, seed + 1);
        p.connected = false;
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
        p.run();
        p.advance(120 * SEC, 1000 * SEC);
        let inits = p.times_of(0, Side::A, MESSAGE_INITIATION);
        assert_eq!(inits.len(), 20, "seed {seed}");
        let intervals: Vec<Duration> = inits.windows(2).map(|w| w[1] - w[0]).collect();
        for d in &intervals {
            assert!(
                *d >= REKEY_TIMEOUT && *d < REKEY_TIMEOUT + Duration::from_micros(334_000),
                "seed {seed}: retransmission after {d:?}"
            );
        }
        let distinct: HashSet<_> = intervals.iter().collect();
        assert!(
            distinct.len() >= 10,
            "seed {seed}: intervals barely vary: {intervals:?}"
        );
        firsts.insert(intervals[0]);
        all.extend(intervals);

        // The new-handshake timer: data unanswered for 15 s + jitter.
        let mut p = pair_with_seeds(seed, seed + 1);
        establish(&mut p);
        p.advance(20 * SEC, SEC);
        p.cut_b_to_a = true;
        let since = p.log.len();
        let t = p.now;
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 2));
        p.run();
        p.advance(16 * SEC, 10 * MS);
        let d = p.times_of(since, Side::A, MESSAGE_INITIATION)[0] - t;
        let min = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT;
        assert!(d >= min && d < min + Duration::from_millis(334), "{d:?}");
        new_handshake_delays.insert(d);
    }
    assert!(firsts.len() >= 4, "devices jitter alike: {firsts:?}");
    assert!(new_handshake_delays.len() >= 4, "{new_handshake_delays:?}");
    // Spread over the whole range, not a sliver of it.
    let jitters: Vec<Duration> = all.iter().map(|d| *d - REKEY_TIMEOUT).collect();
    assert!(jitters.iter().any(|j| *j < Duration::from_millis(60)));
    assert!(jitters.iter().any(|j| *j > Duration::from_millis(270)));

    // Model: without jitter every interval is REKEY_TIMEOUT, one distinct value.
    let unjittered: HashSet<Duration> = (0..19).map(|_| REKEY_TIMEOUT).collect();
    assert_eq!(unjittered.len(), 1);
}

// ----- 7. a nonce counter narrower than 64 bits -----------------------------------------

/// Transport counters (and the AEAD nonces made from them) are 64 bits. A 32-bit counter
/// wraps after 2^32 messages, which at 10 Gbit/s of small packets is well within a session's
/// two minutes, and then reuses nonces. The engine offers no way to start a session at a
/// high send counter, so the sending side is played by a `Keypair` (the type the engine seals
/// with) made from a real handshake with a `Device`, which receives.
///
/// Catches: a nonce built from the low 32 bits (ciphertexts of counters n and n + 2^32
/// coincide; the device cannot open the high one), a receive path or replay window that
/// truncates the counter (2^32 + 7 treated as 7), or a limit check that refuses counters past
/// 2^32 (REJECT_AFTER_MESSAGES is 2^64 - 2^13 - 1).
#[test]
fn counters_past_2_pow_32_seal_open_and_pass_the_window() {
    let now = Instant::now();
    let mut rng = TestRng(0x6464);
    let me = Identity::new(PrivateKey::generate(&mut rng));
    let kb = PrivateKey::generate(&mut rng);
    let mut b = device(2, now);
    b.set_private_key(Some(kb.clone()));
    let pa = b.add_peer(me.public).unwrap();
    b.add_allowed_ip(pa, ip(A_TUN), 32).unwrap();
    let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();

    // A handshake with B by hand: we are the initiator.
    let keys = PeerKeys::new(Some(&me), kb.public_key(), PresharedKey::default());
    let (init, state) = noise::create_initiation(
        &me,
        &keys,
        0x1234_5678,
        Tai64N::from_unix(UNIX_START),
        &mut rng,
    )
    .unwrap();
    let mut bytes = init.to_bytes();
    CookieGenerator::new(&kb.public_key()).add_macs(now, &mut bytes);
    assert_eq!(
        b.handle_datagram(now, Endpoint::new(a_addr), &mut bytes),
        Ok(Received::Nothing)
    );
    let mut out = vec![0u8; 2048];
    let t = b.poll_transmit(now, &mut out).unwrap();
    let resp = Response::parse(&out[..t.len]).unwrap();
    let session = noise::consume_response(&state, &me, &keys, &resp).unwrap();
    let kp = Keypair::new(&session, true, 0x1234_5678, resp.sender, now);

    let sealed = |counter: u64, tag: u32| {
        let pkt = ipv4_packet(A_TUN, B_TUN, 40, tag);
        let padded = padded_len(pkt.len(), DEFAULT_MTU);
        let mut buf = vec![0u8; TRANSPORT_OVERHEAD + padded];
        buf[TRANSPORT_HEADER_LEN..TRANSPORT_HEADER_LEN + pkt.len()].copy_from_slice(&pkt);
        let n = kp.seal(counter, &mut buf, padded);
        assert_eq!(n, buf.len());
        (pkt, buf)
    };
    let deliver = |b: &mut Device, msg: &[u8]| {
        let mut buf = msg.to_vec();
        b.handle_datagram(now, Endpoint::new(a_addr), &mut buf)
            .map(|r| match r {
                Received::Packet { start, len, .. } => buf[start..start + len].to_vec(),
                Received::Nothing => Vec::new(),
            })
    };

    let high = (1u64 << 32) + 7;
    let (pkt, m_high) = sealed(high, 1);
    assert_eq!(counter_of(&m_high), high, "the header carries all 64 bits");
    // Same plaintext, counter with the same low 32 bits: a 32-bit nonce would make these
    // two ciphertexts identical (keystream reuse).
    let (_, m_low) = sealed(7, 1);
    assert_ne!(m_high[16..], m_low[16..], "nonce reused across 2^32");
    assert_eq!(
        crypto::nonce_bytes(high),
        [0, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0]
    );

    // B opens the high counter (this also confirms its "next" session) ...
    assert_eq!(deliver(&mut b, &m_high), Ok(pkt));
    // ... refuses the low one: 2^32 behind, far outside the window (a truncating window
    // would see 7 < 7 + 1 and a fresh bit) ...
    assert_eq!(deliver(&mut b, &m_low), Err(DropReason::ReplayedCounter));
    assert_eq!(deliver(&mut b, &m_high), Err(DropReason::ReplayedCounter));
    // ... and goes on accepting from there, reordered within the window.
    let (p2, m2) = sealed(high + 2, 2);
    let (p1, m1) = sealed(high + 1, 3);
    assert_eq!(deliver(&mut b, &m2), Ok(p2));
    assert_eq!(deliver(&mut b, &m1), Ok(p1));
    // Right up to the last counter a keypair may carry.
    let (pl, ml) = sealed(REJECT_AFTER_MESSAGES - 1, 4);
    assert_eq!(deliver(&mut b, &ml), Ok(pl));
    let (_, over) = sealed(REJECT_AFTER_MESSAGES, 5);
    assert!(deliver(&mut b, &over).is_err());

    // The other direction works on the same session (B's counters start at 0).
    let back = ipv4_packet(B_TUN, A_TUN, 40, 6);
    let mut out = vec![0u8; 256];
    let Outgoing::Sent { len, to, .. } = b.handle_outgoing(now, &back, &mut out) else {
        panic!("B cannot send")
    };
    assert_eq!(to.addr, a_addr);
    let counter = counter_of(&out[..len]);
    let n = kp.open(counter, &mut out[..len]).unwrap();
    assert_eq!(out[16..16 + back.len()], back[..]);
    assert!(n >= back.len());

    // The send counter is a u64 and rekeying is due only at 2^60 messages.
    let s = b.peer(pa).unwrap().sessions().current.as_ref().unwrap();
    let _: u64 = s.send_counter();
    const _: () = assert!(REKEY_AFTER_MESSAGES > u32::MAX as u64);
    // Model: a 32-bit counter taking the value past 2^32 lands back on the low one.
    assert_eq!(high as u32 as u64, 7);
}

// ----- 8. a panic on an oversized (or empty) datagram ------------------------------------

/// Datagrams of every size up to and past 65535 bytes, and of 0–3 bytes, with every type
/// header (and, for transport, a live receiver index so they reach decryption) must be
/// refused without a panic and without an answer; a genuine 65535-byte message must be
/// delivered. Packets of any size from the TUN must not panic either.
/// (`device_rules::fuzz::oversized_datagrams_are_dropped` resizes captured messages; this
/// pins the exact boundary.)
///
/// Catches: the `MAX_DATAGRAM_LEN` check off by one either way (a real 65535-byte message
/// refused, or a 65536-byte one reaching decryption), a missing minimum length (indexing an
/// empty datagram), a fixed-size buffer anywhere on the path.
#[test]
fn oversized_and_empty_datagrams_do_not_panic() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 1));
    p.run();
    let live = |p: &Pair, side: Side| match side {
        // The index the *receiver* gave its session: what the sender puts in messages to it.
        Side::A => current_remote_index(&p.b).unwrap(),
        Side::B => current_remote_index(&p.a).unwrap(),
    };
    for to in [Side::A, Side::B] {
        let from = p.addr(if to == Side::A { Side::B } else { Side::A });
        for len in [0, 1, 2, 3, 65_534, 65_535, 65_536, 65_537, 100_000, 1 << 20] {
            for t in 1..=4u8 {
                let mut m = vec![0xa5u8; len];
                if len >= 4 {
                    m[..4].copy_from_slice(&[t, 0, 0, 0]);
                }
                if len >= 16 && t == MESSAGE_TRANSPORT {
                    m[4..8].copy_from_slice(&live(&p, to).to_le_bytes());
                    m[8..16].copy_from_slice(&12_345u64.to_le_bytes());
                }
                let r = p.deliver(to, from, &m);
                let expect = if (4..=MAX_DATAGRAM_LEN).contains(&len) && t == MESSAGE_TRANSPORT {
                    // Within the limits: it reaches the AEAD, which refuses it.
                    DropReason::DecryptFailed
                } else {
                    DropReason::NotWireGuard
                };
                assert_eq!(r, Err(expect), "{len} bytes, type {t}, to {to:?}");
                assert!(p.take_transmits(to).is_empty());
            }
        }
    }

    // A real message of exactly 65535 bytes: inner packet of 65490 bytes padded to the MTU
    // of 65503 (65535 - 32).
    let mtu = MAX_DATAGRAM_LEN - TRANSPORT_OVERHEAD;
    p.a.set_mtu(mtu);
    let big = ipv4_packet(A_TUN, B_TUN, 65_490 - 20, 7);
    let since = p.log.len();
    assert!(matches!(p.send(Side::A, &big), Outgoing::Sent { .. }));
    assert_eq!(p.log[since].bytes.len(), MAX_DATAGRAM_LEN);
    let msg = p.log[since].bytes.clone();
    p.run();
    assert_eq!(p.delivered_b.last(), Some(&big));
    // One byte more and it is not WireGuard.
    let mut longer = msg;
    longer.push(0);
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &longer),
        Err(DropReason::NotWireGuard)
    );

    // From the TUN: empty, tiny, oversized (with an output buffer big enough, as documented).
    for len in [0usize, 1, 19, 20, 65_535, 70_000] {
        let mut pkt = vec![0u8; len];
        if len >= 20 {
            pkt = ipv4_packet(A_TUN, B_TUN, len - 20, 8);
            // ipv4_packet writes the total length as u16: a 70000-byte "packet" lies.
        }
        let mut out = vec![0u8; len + TRANSPORT_OVERHEAD + PADDING_MULTIPLE];
        let now = p.now;
        let r = p.a.handle_outgoing(now, &pkt, &mut out);
        if len < 20 {
            assert_eq!(r, Outgoing::Invalid, "{len}-byte packet");
        } else {
            assert!(matches!(r, Outgoing::Sent { .. }), "{len}: {r:?}");
        }
    }
    // The session is unharmed.
    p.a.set_mtu(DEFAULT_MTU);
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 9);
    p.send(Side::A, &pkt);
    let back = ipv4_packet(B_TUN, A_TUN, 40, 10);
    p.send(Side::B, &back);
    p.run();
    assert_eq!(p.delivered_b.last(), Some(&pkt));
    assert_eq!(p.delivered_a.last(), Some(&back));
}

// ----- 9. an inner source owned by another peer's longer prefix -------------------------

/// The source check on received data is a longest-prefix lookup that must name the sending
/// peer. If A owns 10.0.0.0/24 and C the longer 10.0.0.128/25, a packet from A with source
/// 10.0.0.200 belongs to C and must be refused, although it lies inside one of A's prefixes.
/// (`device_rules::source_address_must_belong_to_the_sending_peer` has the other nesting: the
/// sender's prefix is the longer one.)
///
/// Catches: the check done as "the source is in one of the sender's prefixes" (demonstrated
/// below against the same table) instead of "the lookup of the source returns the sender".
#[test]
fn a_source_in_another_peers_longer_prefix_is_refused() {
    let mut p = Pair::new(false, true, true);
    let pa = p.b.peer_id(p.a.public_key().unwrap()).unwrap();
    let pb = p.a.peer_id(p.b.public_key().unwrap()).unwrap();
    p.b.add_allowed_ip(pa, ip("10.0.0.0"), 24).unwrap();
    p.b.add_allowed_ip(pa, ip("fd00::"), 64).unwrap();
    p.a.add_allowed_ip(pb, ip("fd00::b"), 128).unwrap();
    let kc = PrivateKey::generate(&mut TestRng(0xc1));
    let pc = p.b.add_peer(kc.public_key()).unwrap();
    p.b.add_allowed_ip(pc, ip("10.0.0.128"), 25).unwrap();
    p.b.add_allowed_ip(pc, ip("fd00::1:0"), 112).unwrap();
    establish(&mut p);

    let cases: [(Vec<u8>, bool); 8] = [
        (ipv4_packet("10.0.0.200", B_TUN, 40, 1), false),
        (ipv4_packet("10.0.0.128", B_TUN, 40, 2), false),
        (ipv4_packet("10.0.0.255", B_TUN, 40, 3), false),
        (ipv4_packet("10.0.0.127", B_TUN, 40, 4), true),
        (ipv4_packet("10.0.0.100", B_TUN, 40, 5), true),
        (ipv6_packet("fd00::1:5", "fd00::b", 6), false),
        (ipv6_packet("fd00::2:5", "fd00::b", 7), true),
        (ipv6_packet("fd00::5", "fd00::b", 8), true),
    ];
    let a = p.a_addr;
    let prefixes_of_a = p.b.allowed_ips_of(pa);
    for (pkt, allowed) in cases {
        let src = ferrowg_proto::device::source_address(&pkt).unwrap();
        let msg = seal(&mut p, Side::A, &pkt);
        let r = p.deliver(Side::B, a, &msg);
        if allowed {
            assert!(
                matches!(r, Ok(Received::Packet { peer, .. }) if peer == pa),
                "{src}: {r:?}"
            );
            assert_eq!(p.delivered_b.last(), Some(&pkt));
        } else {
            assert_eq!(r, Err(DropReason::SourceNotAllowed), "{src} is C's");
            assert_eq!(p.b.route(src), Some(pc));
            // Model: "inside one of A's prefixes" would have accepted it.
            let naive = prefixes_of_a
                .iter()
                .any(|&(net, cidr)| contains(net, cidr, src));
            assert!(naive, "{src}: the naive check would refuse it too");
        }
    }
}

fn contains(net: IpAddr, cidr: u8, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - cidr as u32).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - cidr as u32).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

// ----- 10. keepalives answered with keepalives -----------------------------------------

/// A keepalive is authenticated traffic but not data: receiving one must not schedule a
/// keepalive in return, or two idle peers keep each other awake (with an immediate answer,
/// forever at line rate; the driver then panics because the network never goes quiet).
/// Over an hour of idling with persistent keepalives, across ~30 rekeys, the side without
/// persistent keepalive sends no transport message at all, and with both sides keeping the
/// link alive neither sends more than its own schedule. (`timers::idle_receiver_sends_exactly
/// _one_keepalive` checks the data -> one keepalive rule over 110 s.)
///
/// Catches: `on_data_received` (or any keepalive scheduling) run for empty messages, or a
/// keepalive sent in reply to one.
#[test]
fn keepalives_are_never_answered_with_keepalives() {
    const HOUR: Duration = Duration::from_secs(3600);
    // One side keeps the link alive.
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.advance(20 * SEC, SEC);
    let since = p.log.len();
    let pb = only_peer(&p.a);
    let now = p.now;
    p.a.set_persistent_keepalive(now, pb, 25).unwrap();
    p.advance(HOUR, 1000 * SEC);
    assert_eq!(
        p.count(since, Side::B, MESSAGE_TRANSPORT),
        0,
        "B answered keepalives"
    );
    let handshakes = p.count(since, Side::B, MESSAGE_RESPONSE);
    assert!(handshakes >= 25, "{handshakes} rekeys in an hour");
    let a_keepalives = p.indices_of(since, Side::A, MESSAGE_TRANSPORT);
    assert!(a_keepalives
        .iter()
        .all(|&i| p.log[i].bytes.len() == KEEPALIVE_LEN));
    // Every 25 s, plus one key confirmation per handshake at most.
    assert!(a_keepalives.len() <= 3600 / 25 + 1 + handshakes);

    // Both sides keep it alive: each sends at most its own schedule.
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.advance(20 * SEC, SEC);
    let since = p.log.len();
    let (pa, pb) = (only_peer(&p.b), only_peer(&p.a));
    let now = p.now;
    p.a.set_persistent_keepalive(now, pb, 25).unwrap();
    p.b.set_persistent_keepalive(now, pa, 25).unwrap();
    p.advance(HOUR, 1000 * SEC);
    let handshakes =
        p.count(since, Side::B, MESSAGE_RESPONSE) + p.count(since, Side::A, MESSAGE_RESPONSE);
    for side in [Side::A, Side::B] {
        let n = p.count(since, side, MESSAGE_TRANSPORT);
        assert!(
            n <= 3600 / 25 + 1 + handshakes,
            "{side:?} sent {n} keepalives in an hour ({handshakes} handshakes)"
        );
    }
    assert!(p.delivered_a.is_empty() && p.delivered_b.len() == 1);
}

// ----- 11. a PSK change not applied to live state --------------------------------------

/// A preshared key set while an initiation is in flight is the one the handshake uses
/// (the PSK enters at the response, on both sides), and once both sides have the new key the
/// old one no longer completes a handshake. (`device_rules::psk_change_applies_to_the_next
/// _handshake` changes one side at a time over a rekey; `device_rules::psk_mismatch_gives_no
/// _session` has the plain mismatch.)
///
/// Catches: the PSK copied into the initiator's handshake state at initiation time (the
/// in-flight handshake then fails and needs a retransmission), or copied once into
/// precomputed per-peer state so `set_preshared_key` has no effect (the old key then still
/// works in the second half).
#[test]
fn psk_changes_reach_the_handshake_in_flight_and_retire_the_old_key() {
    let mut p = Pair::new(true, true, true);
    let (pa, pb) = (only_peer(&p.b), only_peer(&p.a));
    let old = p.a.peer(pb).unwrap().preshared_key().clone();
    // A's initiation leaves with the link cut ...
    p.connected = false;
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 1);
    assert!(matches!(p.send(Side::A, &pkt), Outgoing::Staged { .. }));
    p.run();
    let init = p.log[p.indices_of(0, Side::A, MESSAGE_INITIATION)[0]]
        .bytes
        .clone();
    // ... both sides change the PSK, then it arrives.
    let new = PresharedKey::generate(&mut TestRng(0x9e3779b9));
    p.a.set_preshared_key(pb, new.clone()).unwrap();
    p.b.set_preshared_key(pa, new.clone()).unwrap();
    p.connected = true;
    p.record_arrivals = true;
    assert_eq!(p.deliver(Side::B, p.a_addr, &init), Ok(Received::Nothing));
    p.run();
    assert_eq!(p.delivered_b, vec![pkt], "the in-flight handshake failed");
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), 1, "needed a retry");
    let t_first = p.now;

    // A goes back to the old key: no handshake completes while B holds the new one.
    p.a.set_preshared_key(pb, old).unwrap();
    let since = p.log.len();
    let arrivals_since = p.arrivals.len();
    let first_session = current_local_index(&p.a);
    let mut i = 2;
    while p.count(since, Side::A, MESSAGE_INITIATION) < 3 {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, i));
        i += 1;
        p.run();
        p.advance(SEC, SEC);
        assert!(p.now - t_first < 200 * SEC);
    }
    let responses: Vec<_> = p.arrivals[arrivals_since..]
        .iter()
        .filter(|a| a.bytes[0] == MESSAGE_RESPONSE)
        .collect();
    assert!(responses.len() >= 2);
    for r in responses {
        assert_eq!(r.result, Err(DropReason::HandshakeDecryptFailed));
    }
    assert_eq!(
        current_local_index(&p.a),
        first_session,
        "old PSK completed"
    );

    // The new key again: the next retransmission completes.
    p.a.set_preshared_key(pb, new).unwrap();
    let before = p.now;
    p.advance(REKEY_TIMEOUT + SEC, SEC);
    assert_ne!(current_local_index(&p.a), first_session);
    assert!(p.now - before <= REKEY_TIMEOUT + SEC);
}

// ----- 12. handshake responses discarded too early --------------------------------------

/// A response that arrives late but before the retransmission (within REKEY_TIMEOUT) is
/// accepted. A response to an initiation that has since been retransmitted is dropped, as the
/// kernel and wireguard-go drop it: each initiation gets a fresh local index and the old one
/// is released, so the late response names an index that no longer exists (`UnknownIndex`;
/// `UnexpectedResponse` would mean the index still named the peer but not its pending
/// handshake). The responder had already installed keys for it in its "next"
/// slot; the response to the retransmission replaces them, and the final state is
/// consistent: one session, the same on both sides, nothing on the stale keys.
///
/// Catches: a handshake state that expires before REKEY_TIMEOUT (the late response refused);
/// a retransmission that keeps the old index (the stale response then completes a session the
/// responder has since replaced, and A's data goes to keys B no longer holds).
#[test]
fn late_responses_accepted_until_the_retransmission_then_dropped() {
    // Late, within REKEY_TIMEOUT: accepted, and no retransmission follows.
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    let t0 = p.now;
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 1);
    p.send(Side::A, &pkt);
    p.run();
    let i1 = p.log[0].bytes.clone();
    assert_eq!(p.deliver(Side::B, p.a_addr, &i1), Ok(Received::Nothing));
    let r1 = p.take_transmits(Side::B).remove(0).1;
    p.advance(REKEY_TIMEOUT - MS, 100 * MS);
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), 1);
    assert_eq!(p.deliver(Side::A, p.b_addr, &r1), Ok(Received::Nothing));
    p.connected = true;
    p.run();
    assert_eq!(p.delivered_b, vec![pkt.clone()]);
    p.advance(30 * SEC, SEC);
    assert_eq!(
        p.count(0, Side::A, MESSAGE_INITIATION),
        1,
        "retransmitted after the late response completed the handshake"
    );
    assert!(p.now - t0 >= 30 * SEC);

    // Late, after the retransmission: dropped; the retransmission's handshake wins.
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    p.send(Side::A, &pkt);
    p.run();
    let i1 = p.log[0].bytes.clone();
    assert_eq!(p.deliver(Side::B, p.a_addr, &i1), Ok(Received::Nothing));
    let r1 = p.take_transmits(Side::B).remove(0).1;
    let stale_b_index = le32(&r1[4..]);
    p.advance(REKEY_TIMEOUT + Duration::from_millis(400), 100 * MS);
    let inits = p.indices_of(0, Side::A, MESSAGE_INITIATION);
    assert_eq!(inits.len(), 2, "no retransmission");
    let i2 = p.log[inits[1]].bytes.clone();
    assert_ne!(le32(&i2[4..]), le32(&i1[4..]), "a retry gets a new index");
    assert_eq!(
        p.deliver(Side::A, p.b_addr, &r1),
        Err(DropReason::UnknownIndex)
    );
    let pb = only_peer(&p.a);
    assert!(p.a.peer(pb).unwrap().handshake_in_progress());
    assert!(p.a.peer(pb).unwrap().sessions().current.is_none());
    // The retransmission reaches B, whose answer completes the handshake.
    assert_eq!(p.deliver(Side::B, p.a_addr, &i2), Ok(Received::Nothing));
    p.connected = true;
    p.run();
    assert_eq!(p.delivered_b, vec![pkt]);
    // Consistent: one session, each side's indices the other's, the stale keys gone.
    let (a_local, a_remote) = (
        current_local_index(&p.a).unwrap(),
        current_remote_index(&p.a).unwrap(),
    );
    let (b_local, b_remote) = (
        current_local_index(&p.b).unwrap(),
        current_remote_index(&p.b).unwrap(),
    );
    assert_eq!((a_local, a_remote), (b_remote, b_local));
    assert_ne!(b_local, stale_b_index);
    let pa = only_peer(&p.b);
    let held: Vec<u32> = p.b.peer(pa).unwrap().sessions().local_indices().collect();
    assert!(!held.contains(&stale_b_index), "B kept the stale keys");
    assert!(p.b.peer(pa).unwrap().sessions().next.is_none());
    // Traffic flows both ways, and nothing more is retransmitted.
    let back = ipv4_packet(B_TUN, A_TUN, 40, 2);
    assert!(matches!(p.send(Side::B, &back), Outgoing::Sent { .. }));
    p.run();
    assert_eq!(p.delivered_a, vec![back]);
    let n = p.count(0, Side::A, MESSAGE_INITIATION);
    p.advance(30 * SEC, SEC);
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), n);
}

// ----- replay of a capture from an older session ----------------------------------------

/// A transport message captured on one session and replayed after a rekey (its keypair now
/// in the "previous" slot) is a replay; after the next rekey its keypair is gone and the
/// index unknown. Either way nothing is delivered.
#[test]
fn replayed_transport_from_an_older_session() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    let first = p.log[p.indices_of(0, Side::A, MESSAGE_TRANSPORT)[0]]
        .bytes
        .clone();
    let first_index = le32(&first[4..]);
    let a = p.a_addr;
    let delivered = p.delivered_b.len();
    assert_eq!(
        p.deliver(Side::B, a, &first),
        Err(DropReason::ReplayedCounter)
    );
    let mut i = 0;
    let mut rekeys = 0;
    let mut last_index = first_index;
    while rekeys < 2 {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, i));
        i += 1;
        p.run();
        p.advance(SEC, SEC);
        let idx =
            le32(&p.log[*p.indices_of(0, Side::A, MESSAGE_TRANSPORT).last().unwrap()].bytes[4..]);
        if idx != last_index {
            rekeys += 1;
            last_index = idx;
            let r = p.deliver(Side::B, a, &first);
            if rekeys == 1 {
                // Still held, as "previous".
                let pa = only_peer(&p.b);
                let prev = p.b.peer(pa).unwrap().sessions().previous.as_ref().unwrap();
                assert_eq!(prev.keypair.local_index, first_index);
                assert_eq!(r, Err(DropReason::ReplayedCounter));
            } else {
                assert_eq!(r, Err(DropReason::UnknownIndex));
            }
        }
    }
    assert_eq!(
        p.delivered_b.len(),
        delivered + i as usize,
        "a replay was delivered"
    );
}
