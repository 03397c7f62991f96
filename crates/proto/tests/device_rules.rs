//! The device's receive- and send-side rules (PROTOCOL.md §3, §5, §6) between two of our
//! devices in simulated time: replay and flood protection, the transport replay window,
//! roaming, cookies under load, the cryptokey source check, routing errors, private- and
//! preshared-key changes, an impaired network, and malformed input.

mod common;
use common::*;
use ferrowg_proto::constants::*;
use ferrowg_proto::device::{DropReason, Outgoing, Received};
use ferrowg_proto::keys::{PresharedKey, PrivateKey};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

/// The tag `ipv4_packet` puts at bytes 20..24.
fn tag(pkt: &[u8]) -> u32 {
    u32::from_be_bytes([pkt[20], pkt[21], pkt[22], pkt[23]])
}

/// A minimal IPv6 packet (next header 59, "no next header") with a 4-byte tag payload.
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

/// Sends an inner packet from `side` with the link cut and returns the sealed datagram
/// (logged, not delivered).
fn seal(p: &mut Pair, side: Side, pkt: &[u8]) -> Vec<u8> {
    let was = p.connected;
    p.connected = false;
    assert!(matches!(p.send(side, pkt), Outgoing::Sent { .. }));
    p.connected = was;
    p.log.last().unwrap().bytes.clone()
}

// ----- rule 10: initiation replay and flood ---------------------------------------------

#[test]
fn replayed_or_flooding_initiations_get_no_response() {
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.run();
    p.advance(6 * SEC, SEC); // one retransmission: a second, newer initiation
    let inits = p.indices_of(0, Side::A, MESSAGE_INITIATION);
    assert_eq!(inits.len(), 2);
    let i1 = p.log[inits[0]].bytes.clone();
    let i2 = p.log[inits[1]].bytes.clone();
    assert_eq!(i1.len(), INITIATION_LEN);
    let a = p.a_addr;

    // Accepted once, answered once.
    assert_eq!(p.deliver(Side::B, a, &i1), Ok(Received::Nothing));
    assert_eq!(p.take_transmits(Side::B).len(), 1);
    // The same 148 bytes again: its timestamp is not newer, so no second response.
    assert_eq!(
        p.deliver(Side::B, a, &i1),
        Err(DropReason::ReplayedTimestamp)
    );
    p.now += SEC;
    assert_eq!(
        p.deliver(Side::B, a, &i1),
        Err(DropReason::ReplayedTimestamp)
    );
    assert!(p.take_transmits(Side::B).is_empty());

    // A newer initiation less than 20 ms after the last accepted one is a flood.
    let accepted_at = p.now - SEC;
    p.now = accepted_at + HANDSHAKE_FLOOD_INTERVAL - MS;
    assert_eq!(p.deliver(Side::B, a, &i2), Err(DropReason::InitiationFlood));
    assert!(p.take_transmits(Side::B).is_empty());
    p.now = accepted_at + HANDSHAKE_FLOOD_INTERVAL;
    assert_eq!(p.deliver(Side::B, a, &i2), Ok(Received::Nothing));
    let resp = p.take_transmits(Side::B);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].1[0], MESSAGE_RESPONSE);
    // Neither can come back now, however late.
    p.now += 100 * SEC;
    assert_eq!(
        p.deliver(Side::B, a, &i2),
        Err(DropReason::ReplayedTimestamp)
    );
    assert_eq!(
        p.deliver(Side::B, a, &i1),
        Err(DropReason::ReplayedTimestamp)
    );
    assert!(p.take_transmits(Side::B).is_empty());
    // The response to the newest initiation completes the handshake.
    assert_eq!(
        p.deliver(Side::A, p.b_addr, &resp[0].1),
        Ok(Received::Nothing)
    );
    let data = p.take_transmits(Side::A);
    assert_eq!(data.len(), 1);
    assert!(matches!(
        p.deliver(Side::B, a, &data[0].1),
        Ok(Received::Packet { .. })
    ));
}

// ----- rule 11: transport replay window -------------------------------------------------

#[test]
fn transport_replays_dropped_reorders_accepted() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.reorder = 50;
    p.duplicate = 30;
    p.record_arrivals = true;
    let since = p.log.len();
    let mut sent_a = Vec::new();
    let mut sent_b = Vec::new();
    for round in 0..20u32 {
        for i in 0..50u32 {
            let n = round * 50 + i;
            let pa = ipv4_packet(A_TUN, B_TUN, 40, n);
            let pb = ipv4_packet(B_TUN, A_TUN, 40, n);
            p.send(Side::A, &pa);
            p.send(Side::B, &pb);
            sent_a.push(pa);
            sent_b.push(pb);
        }
        p.run();
        p.advance(SEC, SEC);
    }
    // Every packet exactly once, whatever the order.
    let mut got_b: Vec<u32> = p.delivered_b[1..].iter().map(|x| tag(x)).collect();
    let mut got_a: Vec<u32> = p.delivered_a.iter().map(|x| tag(x)).collect();
    assert_ne!(
        got_b,
        (0..1000).collect::<Vec<_>>(),
        "the network did not reorder"
    );
    got_b.sort();
    got_a.sort();
    assert_eq!(got_b, (0..1000).collect::<Vec<_>>());
    assert_eq!(got_a, (0..1000).collect::<Vec<_>>());

    // Each transport datagram: first arrival accepted, every duplicate refused as a replay.
    let mut seen = HashSet::new();
    let mut dups = 0;
    for a in &p.arrivals {
        if a.bytes[0] != MESSAGE_TRANSPORT {
            continue;
        }
        if seen.insert(a.bytes.clone()) {
            assert!(a.result.is_ok(), "first arrival refused: {:?}", a.result);
        } else {
            assert_eq!(a.result, Err(DropReason::ReplayedCounter));
            dups += 1;
        }
    }
    assert!(dups > 100, "the network did not duplicate ({dups})");
    // And an old datagram replayed by hand later.
    let old = p.log[p.indices_of(since, Side::A, MESSAGE_TRANSPORT)[3]]
        .bytes
        .clone();
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &old),
        Err(DropReason::ReplayedCounter)
    );
}

#[test]
fn replay_window_edge() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.connected = false;
    let since = p.log.len();
    // Counter 0 carried the handshake's first packet; these take counters 1..=8200.
    for i in 0..8200u32 {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 0, i));
    }
    let msgs: Vec<Vec<u8>> = p.log[since..].iter().map(|w| w.bytes.clone()).collect();
    let counter = |m: &[u8]| u64::from_le_bytes(m[8..16].try_into().unwrap());
    assert_eq!(counter(&msgs[0]), 1);
    let by_counter: HashMap<u64, &Vec<u8>> = msgs.iter().map(|m| (counter(m), m)).collect();
    let a = p.a_addr;
    let deliver = |p: &mut Pair, c: u64| p.deliver(Side::B, a, by_counter[&c]).map(|_| ());
    assert_eq!(deliver(&mut p, 8200), Ok(()));
    // Up to REPLAY_WINDOW behind the greatest is accepted (once), further back is not.
    assert_eq!(deliver(&mut p, 8200 - REPLAY_WINDOW), Ok(()));
    assert_eq!(
        deliver(&mut p, 8200 - REPLAY_WINDOW),
        Err(DropReason::ReplayedCounter)
    );
    assert_eq!(
        deliver(&mut p, 8200 - REPLAY_WINDOW - 1),
        Err(DropReason::ReplayedCounter)
    );
    assert_eq!(deliver(&mut p, 1), Err(DropReason::ReplayedCounter));
    assert_eq!(deliver(&mut p, 5000), Ok(()));
    assert_eq!(deliver(&mut p, 8199), Ok(()));
    assert_eq!(deliver(&mut p, 8199), Err(DropReason::ReplayedCounter));
}

// ----- rule 12: roaming -----------------------------------------------------------------

#[test]
fn authenticated_packets_roam_the_endpoint() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    let pb = only_peer(&p.a);
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, p.b_addr);

    // A replay of B's earlier authenticated packet from elsewhere does not move the endpoint.
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 1));
    p.run();
    let old = p.log[p.indices_of(0, Side::B, MESSAGE_TRANSPORT)[0]]
        .bytes
        .clone();
    let elsewhere: SocketAddr = "198.51.100.66:9999".parse().unwrap();
    assert!(p.deliver(Side::A, elsewhere, &old).is_err());
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, p.b_addr);

    // B moves: its next authenticated packet moves A's endpoint, and A answers there.
    let moved: SocketAddr = "203.0.113.9:40000".parse().unwrap();
    p.b_addr = moved;
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 2));
    p.run();
    assert_eq!(p.delivered_a.len(), 2);
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, moved);
    match p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 3)) {
        Outgoing::Sent { to, .. } => assert_eq!(to.addr, moved),
        other => panic!("{other:?}"),
    }
    assert_eq!(*p.log_to.last().unwrap(), moved);
    p.run();
    // Keepalives follow the endpoint too.
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 4));
    p.run();
    p.advance(11 * SEC, SEC);
    let i = *p.indices_of(0, Side::A, MESSAGE_TRANSPORT).last().unwrap();
    assert_eq!(p.log[i].bytes.len(), KEEPALIVE_LEN);
    assert_eq!(p.log_to[i], moved);
}

#[test]
fn handshake_messages_roam_cookie_replies_do_not() {
    // B does not know A's endpoint: it learns it from A's initiation.
    let mut p = Pair::new(false, true, false);
    let pa = only_peer(&p.b);
    assert!(p.b.peer(pa).unwrap().endpoint().is_none());
    p.b.note_handshake_backlog(p.now, 1000);
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    let init = p.take_transmits(Side::A).remove(0).1;
    // Under load and without mac2, B answers with a cookie reply to the source, and does not
    // learn an endpoint from an unverified initiation.
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &init),
        Err(DropReason::CookieReplySent)
    );
    assert!(p.b.peer(pa).unwrap().endpoint().is_none());
    let (t, reply) = p.take_transmits(Side::B).remove(0);
    assert_eq!(reply.len(), COOKIE_REPLY_LEN);
    assert_eq!(t.to.addr, p.a_addr);

    // The cookie reply arrives at A from an unexpected address: accepted, endpoint unchanged.
    let pb = only_peer(&p.a);
    let elsewhere: SocketAddr = "198.51.100.3:1234".parse().unwrap();
    assert_eq!(p.deliver(Side::A, elsewhere, &reply), Ok(Received::Nothing));
    assert!(p.a.peer(pb).unwrap().has_cookie());
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, p.b_addr);
    assert!(
        p.take_transmits(Side::A).is_empty(),
        "a cookie reply triggers no retransmission"
    );

    // Load gone: the retransmission is accepted and B learns A's endpoint from it; the
    // response comes from a new address of B's and A follows it.
    p.now += 6 * SEC;
    p.a.handle_timeout(p.now);
    let init2 = p.take_transmits(Side::A).remove(0).1;
    assert_eq!(init2[0], MESSAGE_INITIATION);
    assert_eq!(p.deliver(Side::B, p.a_addr, &init2), Ok(Received::Nothing));
    assert_eq!(p.b.peer(pa).unwrap().endpoint().unwrap().addr, p.a_addr);
    let (t, resp) = p.take_transmits(Side::B).remove(0);
    assert_eq!(t.to.addr, p.a_addr);
    let b_new: SocketAddr = "203.0.113.20:5555".parse().unwrap();
    assert_eq!(p.deliver(Side::A, b_new, &resp), Ok(Received::Nothing));
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, b_new);
    let (t, _) = p.take_transmits(Side::A).remove(0);
    assert_eq!(t.to.addr, b_new);
}

// ----- rule 13: cookies under load ------------------------------------------------------

#[test]
fn cookie_reply_under_load_then_mac2_retry_succeeds() {
    let mut p = Pair::new(false, true, true);
    p.b.note_handshake_backlog(p.now, 1000);
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 1);
    p.send(Side::A, &pkt);
    p.run();
    let pb = only_peer(&p.a);
    assert_eq!(
        p.count(0, Side::A, MESSAGE_INITIATION),
        1,
        "no immediate retry on a cookie"
    );
    assert_eq!(p.count(0, Side::B, MESSAGE_COOKIE_REPLY), 1);
    assert_eq!(p.count(0, Side::B, MESSAGE_RESPONSE), 0);
    let i = p.indices_of(0, Side::B, MESSAGE_COOKIE_REPLY)[0];
    assert_eq!(p.log[i].bytes.len(), COOKIE_REPLY_LEN);
    let first = p.log[p.indices_of(0, Side::A, MESSAGE_INITIATION)[0]].clone();
    assert_eq!(
        first.bytes[132..148],
        [0u8; 16],
        "no cookie yet: mac2 is zero"
    );
    assert!(p.a.peer(pb).unwrap().has_cookie());
    assert!(p.delivered_b.is_empty());

    // Keep B under load while A's retransmission timer runs.
    while p.count(0, Side::A, MESSAGE_INITIATION) < 2 {
        let now = p.now;
        p.b.note_handshake_backlog(now, 1000);
        p.advance(100 * MS, 100 * MS);
        assert!(p.now - first.at < 6 * SEC);
    }
    assert!(p.b.is_under_load(p.now));
    let inits = p.indices_of(0, Side::A, MESSAGE_INITIATION);
    let retry = &p.log[inits[1]];
    let d = retry.at - p.log[inits[0]].at;
    assert!(
        d >= REKEY_TIMEOUT && d < REKEY_TIMEOUT + Duration::from_millis(334),
        "{d:?}"
    );
    assert_ne!(retry.bytes[132..148], [0u8; 16], "the retry carries mac2");
    assert_eq!(
        p.count(0, Side::B, MESSAGE_COOKIE_REPLY),
        1,
        "mac2 accepted: no new cookie"
    );
    assert_eq!(p.count(0, Side::B, MESSAGE_RESPONSE), 1);
    assert_eq!(p.delivered_b, vec![pkt]);
    // Data flows both ways.
    let back = ipv4_packet(B_TUN, A_TUN, 40, 2);
    assert!(matches!(p.send(Side::B, &back), Outgoing::Sent { .. }));
    p.run();
    assert_eq!(p.delivered_a, vec![back]);
}

/// The initiator can be the loaded side too: it answers the response with a cookie reply,
/// and the responder's next response (to the initiator's retransmission) carries mac2.
#[test]
fn cookie_reply_to_a_response() {
    let mut p = Pair::new(false, true, true);
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 1);
    p.send(Side::A, &pkt);
    let since = p.log.len();
    let loaded = |p: &mut Pair| {
        let now = p.now;
        p.a.note_handshake_backlog(now, 1000);
    };
    loaded(&mut p);
    p.run();
    assert_eq!(p.count(since, Side::B, MESSAGE_RESPONSE), 1);
    assert_eq!(p.count(since, Side::A, MESSAGE_COOKIE_REPLY), 1);
    let r1 = p.indices_of(since, Side::B, MESSAGE_RESPONSE)[0];
    assert_eq!(p.log[r1].bytes[76..92], [0u8; 16]);
    assert!(p.b.peer(only_peer(&p.b)).unwrap().has_cookie());
    assert!(p.delivered_b.is_empty());
    while p.count(since, Side::A, MESSAGE_INITIATION) < 2 {
        loaded(&mut p);
        p.advance(100 * MS, 100 * MS);
    }
    let responses = p.indices_of(since, Side::B, MESSAGE_RESPONSE);
    assert_eq!(responses.len(), 2);
    assert_ne!(
        p.log[responses[1]].bytes[76..92],
        [0u8; 16],
        "second response lacks mac2"
    );
    assert_eq!(p.count(since, Side::A, MESSAGE_COOKIE_REPLY), 1);
    assert_eq!(p.delivered_b, vec![pkt]);
}

#[test]
fn under_load_rate_limits_valid_mac2_initiations() {
    let mut p = Pair::new(false, true, true);
    p.b.note_handshake_backlog(p.now, 1000);
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.run(); // initiation, cookie reply: A now holds a cookie
    assert!(p.a.peer(only_peer(&p.a)).unwrap().has_cookie());
    // Two retransmissions with valid mac2 that B does not see yet.
    p.connected = false;
    p.advance(11 * SEC, SEC);
    let inits = p.indices_of(0, Side::A, MESSAGE_INITIATION);
    assert_eq!(inits.len(), 3);
    let i2 = p.log[inits[1]].bytes.clone();
    let i3 = p.log[inits[2]].bytes.clone();
    assert_ne!(i2[132..148], [0u8; 16]);
    assert_ne!(i3[132..148], [0u8; 16]);

    let a = p.a_addr;
    let t = p.now;
    p.b.note_handshake_backlog(t, 1000);
    // A burst from one source: the first is processed, the limiter lets 4 more through
    // (replays, refused afterwards by their timestamp), then refuses.
    assert_eq!(p.deliver(Side::B, a, &i2), Ok(Received::Nothing));
    for _ in 0..4 {
        assert_eq!(
            p.deliver(Side::B, a, &i2),
            Err(DropReason::ReplayedTimestamp)
        );
    }
    for _ in 0..5 {
        assert_eq!(p.deliver(Side::B, a, &i2), Err(DropReason::RateLimited));
    }
    assert_eq!(
        p.take_transmits(Side::B).len(),
        1,
        "one response, no cookie replies"
    );
    // Even a fresh, valid initiation is refused while the bucket is empty ...
    p.now = t + 25 * MS;
    assert_eq!(p.deliver(Side::B, a, &i3), Err(DropReason::RateLimited));
    // ... and admitted once a packet's worth of tokens (50 ms) has accrued.
    p.now = t + 60 * MS;
    assert_eq!(p.deliver(Side::B, a, &i3), Ok(Received::Nothing));
    assert_eq!(p.take_transmits(Side::B).len(), 1);
    // Without load there is no limiter.
    p.now += 2 * SEC;
    assert!(!p.b.is_under_load(p.now));
    for _ in 0..20 {
        assert_eq!(
            p.deliver(Side::B, a, &i3),
            Err(DropReason::ReplayedTimestamp)
        );
    }
}

// ----- rule 14: cryptokey source check --------------------------------------------------

#[test]
fn source_address_must_belong_to_the_sending_peer() {
    let mut p = Pair::new(false, true, true);
    // A third peer C on B owns 10.0.0.0/24; A's 10.0.0.1/32 is the longer prefix.
    let kc = PrivateKey::generate(&mut TestRng(0xc0ffee));
    let pc = p.b.add_peer(kc.public_key()).unwrap();
    p.b.add_allowed_ip(pc, "10.0.0.0".parse().unwrap(), 24)
        .unwrap();
    let pb = p.a.peer_id(p.b.public_key().unwrap()).unwrap();
    p.a.add_allowed_ip(pb, "fd00::2".parse().unwrap(), 128)
        .unwrap();
    let pa = p.b.peer_id(p.a.public_key().unwrap()).unwrap();
    p.b.add_allowed_ip(pa, "fd00::1".parse().unwrap(), 128)
        .unwrap();
    establish(&mut p);
    let a = p.a_addr;
    let rx = |p: &Pair| p.b.peer(pa).unwrap().rx_bytes();

    let cases: [(Vec<u8>, Result<(), DropReason>); 5] = [
        // C's address: correctly encrypted by A, but not A's to use.
        (
            ipv4_packet("10.0.0.5", B_TUN, 40, 1),
            Err(DropReason::SourceNotAllowed),
        ),
        // Nobody's address.
        (
            ipv4_packet("192.168.1.1", B_TUN, 40, 2),
            Err(DropReason::SourceNotAllowed),
        ),
        (
            ipv6_packet("fd00::9", "fd00::2", 3),
            Err(DropReason::SourceNotAllowed),
        ),
        (ipv4_packet(A_TUN, B_TUN, 40, 4), Ok(())),
        (ipv6_packet("fd00::1", "fd00::2", 5), Ok(())),
    ];
    for (pkt, expect) in cases {
        let msg = seal(&mut p, Side::A, &pkt);
        let before = rx(&p);
        let r = p.deliver(Side::B, a, &msg);
        match expect {
            Ok(()) => {
                assert!(
                    matches!(r, Ok(Received::Packet { peer, .. }) if peer == pa),
                    "{r:?}"
                );
                assert_eq!(p.delivered_b.last(), Some(&pkt));
                assert_eq!(rx(&p), before + msg.len() as u64);
            }
            Err(e) => {
                assert_eq!(r, Err(e));
                // Like the kernel, a refused packet is an error, not received traffic.
                assert_eq!(rx(&p), before, "refused packet counted in rx_bytes");
            }
        }
    }
    assert_eq!(p.delivered_b.len(), 3);
}

// ----- rule 15: routing errors ----------------------------------------------------------

#[test]
fn no_route_and_no_endpoint() {
    let mut p = Pair::new(false, false, true);
    let mut out = vec![0u8; 256];
    let now = p.now;
    let stray = ipv4_packet(A_TUN, "10.9.9.9", 40, 1);
    assert_eq!(
        p.a.handle_outgoing(now, &stray, &mut out),
        Outgoing::NoRoute
    );
    assert_eq!(
        p.a.handle_outgoing(now, &ipv6_packet("fd00::1", "fd00::2", 1), &mut out),
        Outgoing::NoRoute
    );
    assert_eq!(
        p.a.handle_outgoing(now, &[0x45, 0, 0], &mut out),
        Outgoing::Invalid
    );
    assert_eq!(
        p.a.handle_outgoing(now, &[0x20; 40], &mut out),
        Outgoing::Invalid
    );
    let pb = only_peer(&p.a);
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 2);
    assert_eq!(
        p.a.handle_outgoing(now, &pkt, &mut out),
        Outgoing::NoEndpoint { peer: pb }
    );
    assert_eq!(p.a.peer(pb).unwrap().staged_len(), 0);
    p.run();
    assert!(p.log.is_empty(), "nothing may be sent without an endpoint");

    // B knows A's endpoint and initiates; A learns B's endpoint from the handshake.
    let back = ipv4_packet(B_TUN, A_TUN, 40, 3);
    assert!(matches!(p.send(Side::B, &back), Outgoing::Staged { .. }));
    p.run();
    assert_eq!(p.delivered_a, vec![back]);
    assert_eq!(p.a.peer(pb).unwrap().endpoint().unwrap().addr, p.b_addr);
    assert!(matches!(p.send(Side::A, &pkt), Outgoing::Sent { .. }));
    // Still no route for addresses nobody covers, with a session up.
    assert_eq!(p.send(Side::A, &stray), Outgoing::NoRoute);
}

// ----- rule 16: private key change ------------------------------------------------------

#[test]
fn private_key_change_rehandshakes_and_removes_own_key_peer() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 1));
    p.run();
    let pb = only_peer(&p.a);
    let old_a = *p.a.public_key().unwrap();
    let old_session =
        p.a.peer(pb)
            .unwrap()
            .sessions()
            .current
            .as_ref()
            .unwrap()
            .keypair
            .clone();

    let new_key = PrivateKey::generate(&mut TestRng(0xabcdef));
    p.a.set_private_key(Some(new_key.clone()));
    assert_eq!(p.a.public_key(), Some(&new_key.public_key()));
    // B is told about A's new key.
    let pa_old = p.b.peer_id(&old_a).unwrap();
    p.b.remove_peer(pa_old);
    let pa = p.b.add_peer(new_key.public_key()).unwrap();
    p.b.add_allowed_ip(pa, A_TUN.parse().unwrap(), 32).unwrap();
    p.b.set_endpoint(pa, p.a_addr).unwrap();

    // The old session no longer sends: the packet waits, and an initiation goes out at once
    // although the last handshake was moments ago.
    let since = p.log.len();
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 2);
    assert!(matches!(p.send(Side::A, &pkt), Outgoing::Staged { .. }));
    p.run();
    assert_eq!(p.count(since, Side::A, MESSAGE_INITIATION), 1);
    assert_eq!(p.count(since, Side::B, MESSAGE_RESPONSE), 1);
    assert_eq!(p.delivered_b.last(), Some(&pkt));
    for i in p.indices_of(since, Side::A, MESSAGE_TRANSPORT) {
        assert_ne!(
            le32(&p.log[i].bytes[4..]),
            old_session.remote_index,
            "sent on old keys"
        );
    }
    let cur =
        p.a.peer(pb)
            .unwrap()
            .sessions()
            .current
            .as_ref()
            .unwrap()
            .keypair
            .clone();
    assert_ne!(cur.local_index, old_session.local_index);
    assert!(p.b.peer(pa).unwrap().last_handshake().is_some());

    // Taking B's private key: the peer with that public key is removed.
    let kb = p.b.private_key().unwrap().clone();
    p.a.set_private_key(Some(kb.clone()));
    assert_eq!(p.a.peer_count(), 0);
    assert!(p.a.peer_id(&kb.public_key()).is_none());
    assert!(p.a.peer(pb).is_none());
    assert_eq!(p.send(Side::A, &pkt), Outgoing::NoRoute);
    // Nor can it be added back.
    assert!(p.a.add_peer(kb.public_key()).is_err());
}

// ----- rule 17: an impaired network -----------------------------------------------------

#[test]
fn lossy_duplicating_reordering_network() {
    for seed in [0xfeed, 0x5151_7a7a, 0xdead_beef, 0x0123_4567_89ab] {
        lossy_network(seed);
    }
}

fn lossy_network(seed: u64) {
    let mut p = Pair::new(false, true, true);
    p.reseed_network(seed);
    p.loss = 10;
    p.duplicate = 5;
    p.reorder = 20;
    p.record_arrivals = true;
    let mut n = 0u32;
    while n < 2000 {
        for _ in 0..4 {
            p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, n));
            n += 1;
        }
        p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, n));
        p.run();
        p.advance(800 * MS, 800 * MS);
    }
    assert!(
        p.now - p.log[0].at > 3 * REKEY_AFTER_TIME,
        "should span several rekeys"
    );
    // Both sides start sending at once, so either may end up the initiator of the sessions
    // that follow (whichever crossing handshake completed last); that side rekeys by time.
    // Over three REKEY_AFTER_TIMEs: the first handshake plus at least three rekeys.
    let initiations =
        p.count(0, Side::A, MESSAGE_INITIATION) + p.count(0, Side::B, MESSAGE_INITIATION);
    assert!(initiations >= 4, "{initiations} initiations");

    // At most once.
    for delivered in [&p.delivered_a, &p.delivered_b] {
        let tags: HashSet<u32> = delivered.iter().map(|x| tag(x)).collect();
        assert_eq!(tags.len(), delivered.len(), "a packet was delivered twice");
    }
    // With 10 % loss, about 90 % arrive.
    assert!(
        p.delivered_b.len() > 1350,
        "{} of 1600 delivered",
        p.delivered_b.len()
    );
    assert!(
        p.delivered_a.len() > 330,
        "{} of 400 delivered",
        p.delivered_a.len()
    );

    // Every transport datagram's first arrival is accepted (reordered or not); repeats are
    // replays. Count arrivals that came in below the greatest counter seen on their keypair.
    let mut seen = HashSet::new();
    let mut greatest: HashMap<(u8, u32), u64> = HashMap::new();
    let mut reordered = 0;
    for a in &p.arrivals {
        if a.bytes[0] != MESSAGE_TRANSPORT {
            continue;
        }
        let key = (a.to as u8, le32(&a.bytes[4..]));
        let c = u64::from_le_bytes(a.bytes[8..16].try_into().unwrap());
        if seen.insert(a.bytes.clone()) {
            assert!(a.result.is_ok(), "first arrival refused: {:?}", a.result);
            let g = greatest.entry(key).or_insert(c);
            if c < *g {
                reordered += 1;
            }
            *g = (*g).max(c);
        } else {
            assert_eq!(a.result, Err(DropReason::ReplayedCounter));
        }
    }
    assert!(reordered > 50, "only {reordered} reordered arrivals");

    // The session survives: with a clean network, traffic flows at once both ways.
    p.loss = 0;
    p.duplicate = 0;
    p.reorder = 0;
    let (na, nb) = (p.delivered_a.len(), p.delivered_b.len());
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 99_999));
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 99_998));
    p.run();
    assert_eq!(p.delivered_b.len(), nb + 1);
    assert_eq!(p.delivered_a.len(), na + 1);
}

// ----- rule 18: preshared keys ----------------------------------------------------------

#[test]
fn psk_mismatch_gives_no_session() {
    let mut p = Pair::new(true, true, true);
    let pb = only_peer(&p.a);
    let other = PresharedKey::generate(&mut TestRng(0x777));
    p.a.set_preshared_key(pb, other).unwrap();
    p.record_arrivals = true;
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.run();
    p.advance(30 * SEC, SEC);
    // B cannot tell (the PSK enters only in the response); A cannot open any response.
    assert!(p.count(0, Side::B, MESSAGE_RESPONSE) >= 5);
    let responses: Vec<_> = p
        .arrivals
        .iter()
        .filter(|a| a.bytes[0] == MESSAGE_RESPONSE)
        .collect();
    assert!(!responses.is_empty());
    for a in responses {
        assert_eq!(a.result, Err(DropReason::HandshakeDecryptFailed));
    }
    assert!(p.a.peer(pb).unwrap().sessions().current.is_none());
    let pa = only_peer(&p.b);
    assert!(p.b.peer(pa).unwrap().sessions().current.is_none());
    assert!(p.delivered_b.is_empty() && p.delivered_a.is_empty());
    assert_eq!(p.count(0, Side::A, MESSAGE_TRANSPORT), 0);
}

#[test]
fn psk_change_applies_to_the_next_handshake() {
    let mut p = Pair::new(true, true, true);
    let t0 = p.now;
    establish(&mut p);
    let (pa, pb) = (only_peer(&p.b), only_peer(&p.a));
    // B changes its PSK alone: the running session is unaffected ...
    let psk2 = PresharedKey::generate(&mut TestRng(0x999));
    p.b.set_preshared_key(pa, psk2.clone()).unwrap();
    assert_eq!(p.b.peer(pa).unwrap().preshared_key(), &psk2);
    let mut i = 0u32;
    let mut step = |p: &mut Pair| {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, i));
        i += 1;
        p.run();
        p.advance(SEC, SEC);
    };
    for _ in 0..110 {
        step(&mut p);
    }
    assert_eq!(p.delivered_b.len(), 111);
    // ... but the rekey at 120 s uses it and fails.
    let since = p.log.len();
    while p.now - t0 < 150 * SEC {
        step(&mut p);
    }
    assert!(p.count(since, Side::A, MESSAGE_INITIATION) >= 2);
    assert!(p.count(since, Side::B, MESSAGE_RESPONSE) >= 2);
    let cur =
        p.a.peer(pb)
            .unwrap()
            .sessions()
            .current
            .as_ref()
            .unwrap()
            .keypair
            .clone();
    assert_eq!(cur.birth, t0, "no new session can have been made");
    // A adopts the same PSK: its next (re)transmitted initiation succeeds.
    p.a.set_preshared_key(pb, psk2).unwrap();
    for _ in 0..6 {
        step(&mut p);
    }
    let cur =
        p.a.peer(pb)
            .unwrap()
            .sessions()
            .current
            .as_ref()
            .unwrap()
            .keypair
            .clone();
    assert!(cur.birth >= t0 + 150 * SEC);
    assert_eq!(p.delivered_b.len() as u32, i + 1, "data lost");
}

// ----- rule 19: malformed input ---------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng as PropRng, TestRunner};
    use std::cell::RefCell;

    /// A live session plus one of every real message (as sent on the wire, by whom).
    fn corpus() -> (Pair, Vec<(Side, Vec<u8>)>) {
        let mut p = Pair::new(true, true, true);
        // A cookie reply first (B under load), then a normal handshake after the load passed.
        p.b.note_handshake_backlog(p.now, 1000);
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
        p.run();
        p.advance(10 * SEC, SEC);
        p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 2));
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 3, 7));
        p.run();
        p.advance(15 * SEC, SEC);
        assert!(p.count(0, Side::B, MESSAGE_COOKIE_REPLY) == 1);
        assert!(p.count(0, Side::B, MESSAGE_TRANSPORT) >= 2);
        let msgs = p.log.iter().map(|w| (w.from, w.bytes.clone())).collect();
        assert!(p.take_transmits(Side::A).is_empty() && p.take_transmits(Side::B).is_empty());
        (p, msgs)
    }

    #[derive(Debug, Clone)]
    enum Input {
        Random(Vec<u8>),
        /// Random body behind a valid type header, at a length the type accepts.
        Typed(u8, Vec<u8>),
        Replay(usize),
        Truncate(usize, usize),
        Extend(usize, Vec<u8>),
        Flip(usize, usize),
        Splice(usize, usize, Vec<u8>),
    }

    fn input() -> impl Strategy<Value = Input> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
        prop_oneof![
            bytes(200).prop_map(Input::Random),
            (1u8..=4, bytes(160)).prop_map(|(t, b)| Input::Typed(t, b)),
            any::<usize>().prop_map(Input::Replay),
            (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Input::Truncate(i, n)),
            (
                any::<usize>(),
                proptest::collection::vec(any::<u8>(), 1..64)
            )
                .prop_map(|(i, b)| Input::Extend(i, b)),
            (any::<usize>(), any::<usize>()).prop_map(|(i, b)| Input::Flip(i, b)),
            (any::<usize>(), any::<usize>(), bytes(16))
                .prop_map(|(i, o, b)| Input::Splice(i, o, b)),
        ]
    }

    /// The datagram for an input, and the side it goes to (the real message's recipient, or
    /// either for random data).
    fn materialize(input: &Input, corpus: &[(Side, Vec<u8>)], seed: usize) -> (Side, Vec<u8>) {
        let pick = |i: usize| {
            let (from, m) = &corpus[i % corpus.len()];
            let to = if *from == Side::A { Side::B } else { Side::A };
            (to, m.clone())
        };
        let any_side = if seed.is_multiple_of(2) {
            Side::A
        } else {
            Side::B
        };
        match input {
            Input::Random(b) => (any_side, b.clone()),
            Input::Typed(t, body) => {
                let len = match t {
                    1 => INITIATION_LEN,
                    2 => RESPONSE_LEN,
                    3 => COOKIE_REPLY_LEN,
                    _ => TRANSPORT_OVERHEAD + body.len(),
                };
                let mut m = vec![0u8; len];
                m[0] = *t;
                for (d, s) in m[4..].iter_mut().zip(body) {
                    *d = *s;
                }
                (any_side, m)
            }
            Input::Replay(i) => pick(*i),
            Input::Truncate(i, n) => {
                let (to, m) = pick(*i);
                (to, m[..n % m.len()].to_vec())
            }
            Input::Extend(i, b) => {
                let (to, mut m) = pick(*i);
                m.extend_from_slice(b);
                (to, m)
            }
            Input::Flip(i, bit) => {
                let (to, mut m) = pick(*i);
                let bit = bit % (m.len() * 8);
                m[bit / 8] ^= 1 << (bit % 8);
                (to, m)
            }
            Input::Splice(i, off, b) => {
                let (to, mut m) = pick(*i);
                let off = off % m.len();
                for (d, s) in m[off..].iter_mut().zip(b) {
                    *d = *s;
                }
                (to, m)
            }
        }
    }

    fn run(under_load: bool, cases: u32) {
        let (p, corpus) = corpus();
        let eps = (
            p.a.peer(only_peer(&p.a)).unwrap().endpoint(),
            p.b.peer(only_peer(&p.b)).unwrap().endpoint(),
        );
        let delivered = (p.delivered_a.len(), p.delivered_b.len());
        let pair = RefCell::new(p);
        let config = Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        };
        let mut runner =
            TestRunner::new_with_rng(config, PropRng::deterministic_rng(RngAlgorithm::ChaCha));
        let strategy = (input(), any::<usize>(), any::<bool>());
        runner
            .run(&strategy, |(input, seed, from_peer)| {
                let mut p = pair.borrow_mut();
                let (to, msg) = materialize(&input, &corpus, seed);
                let src = if from_peer {
                    p.addr(if to == Side::A { Side::B } else { Side::A })
                } else {
                    SocketAddr::from((
                        [198, 51, 100, (seed % 250) as u8],
                        (seed % 60000) as u16 + 1,
                    ))
                };
                let now = p.now;
                if under_load {
                    p.b.note_handshake_backlog(now, 1000);
                }
                let r = p.deliver(to, src, &msg);
                prop_assert!(r.is_err(), "accepted {:?}: {:?}", input, r);
                let out = p.take_transmits(to);
                for (t, bytes) in &out {
                    // The only answer anything here may get is a cookie reply from a loaded
                    // device, to the sender.
                    prop_assert!(under_load && to == Side::B, "answered {:?}", input);
                    prop_assert_eq!(bytes.len(), COOKIE_REPLY_LEN);
                    prop_assert_eq!(bytes[0], MESSAGE_COOKIE_REPLY);
                    prop_assert_eq!(t.to.addr, src);
                    prop_assert_eq!(r, Err(DropReason::CookieReplySent));
                }
                let other = if to == Side::A { Side::B } else { Side::A };
                prop_assert!(p.take_transmits(other).is_empty());
                prop_assert_eq!(p.a.peer(only_peer(&p.a)).unwrap().endpoint(), eps.0);
                prop_assert_eq!(p.b.peer(only_peer(&p.b)).unwrap().endpoint(), eps.1);
                Ok(())
            })
            .unwrap();
        let mut p = pair.into_inner();
        assert_eq!(
            (p.delivered_a.len(), p.delivered_b.len()),
            delivered,
            "something was delivered"
        );
        // The session is untouched: traffic still flows.
        p.now += 30 * SEC;
        let pkt = ipv4_packet(A_TUN, B_TUN, 40, 1234);
        assert!(matches!(p.send(Side::A, &pkt), Outgoing::Sent { .. }));
        p.run();
        assert_eq!(p.delivered_b.last(), Some(&pkt));
    }

    #[test]
    fn malformed_input_is_dropped_silently() {
        run(false, 1500);
    }

    #[test]
    fn malformed_input_under_load_gets_at_most_cookie_replies() {
        run(true, 800);
    }

    #[test]
    fn oversized_datagrams_are_dropped() {
        let (mut p, corpus) = corpus();
        for (from, m) in &corpus {
            let to = if *from == Side::A { Side::B } else { Side::A };
            for len in [MAX_DATAGRAM_LEN, MAX_DATAGRAM_LEN + 1, 100_000] {
                let mut big = m.clone();
                big.resize(len, 0);
                let src = p.addr(*from);
                assert!(p.deliver(to, src, &big).is_err());
                assert!(p.take_transmits(to).is_empty());
            }
        }
        for len in 0..40 {
            let src = p.a_addr;
            assert!(p.deliver(Side::B, src, &vec![4u8; len]).is_err());
        }
    }
}

// ----- routing loops: our own messages about to re-enter the tunnel ---------------------

#[test]
fn messages_addressed_to_us_are_recognised() {
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.run();
    let init = p.log[p.indices_of(0, Side::A, MESSAGE_INITIATION)[0]]
        .bytes
        .clone();
    // An initiation carries the responder's mac1: it is B's, not A's.
    assert!(p.b.is_addressed_to_us(&init));
    assert!(!p.a.is_addressed_to_us(&init));
    let mut wrong_mac1 = init.clone();
    wrong_mac1[ferrowg_proto::messages::Initiation::MAC1_OFFSET] ^= 1;
    assert!(!p.b.is_addressed_to_us(&wrong_mac1));

    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    let to_b = seal(&mut p, Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 2));
    let to_a = seal(&mut p, Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 3));
    assert!(p.b.is_addressed_to_us(&to_b) && !p.a.is_addressed_to_us(&to_b));
    assert!(p.a.is_addressed_to_us(&to_a) && !p.b.is_addressed_to_us(&to_a));
    // The first fragment of a large message is enough (the header is at the front).
    assert!(p.b.is_addressed_to_us(&to_b[..48]));
    // Another receiver index, garbage and truncated headers are not ours.
    let mut other = to_b.clone();
    let idx = le32(&other[4..]).wrapping_add(1);
    other[4..8].copy_from_slice(&idx.to_le_bytes());
    assert!(!p.b.is_addressed_to_us(&other));
    assert!(!p.b.is_addressed_to_us(&to_b[..3]));
    assert!(!p.b.is_addressed_to_us(&[]));
    assert!(!p.b.is_addressed_to_us(&[9u8; 64]));
}

// ----- the split data path: seal and open outside the device, in any order --------------

/// A sends to B every second for `secs` seconds (rekeying on the way).
fn steady_traffic(p: &mut Pair, secs: u32) {
    for i in 0..secs {
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 0x5000 + i));
        p.run();
        p.advance(SEC, SEC);
    }
}

#[test]
fn seal_and_open_jobs_complete_in_any_order_and_only_once() {
    use ferrowg_proto::device::{OpenJob, Prepared, SealJob};
    use ferrowg_proto::peer::Endpoint;
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    let now = p.now;
    let from = Endpoint::new(p.addr(Side::A));
    let pkts: Vec<Vec<u8>> = (0..8)
        .map(|i| ipv4_packet(A_TUN, B_TUN, 100 + i, 0x100 + i as u32))
        .collect();
    // Prepared in order: counters strictly increase.
    let jobs: Vec<SealJob> = pkts
        .iter()
        .map(|pkt| match p.a.prepare_outgoing(now, pkt) {
            Prepared::Seal(job) => job,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(jobs
        .windows(2)
        .all(|w| w[1].counter() == w[0].counter() + 1));
    // Sealed in reverse (as parallel workers might finish them).
    let mut sealed: Vec<Vec<u8>> = vec![Vec::new(); jobs.len()];
    for (i, job) in jobs.iter().enumerate().rev() {
        let mut out = vec![0u8; job.sealed_len()];
        assert_eq!(job.seal(&pkts[i], &mut out), job.sealed_len());
        sealed[i] = out;
    }
    // B begins the whole batch, opens it in reverse, finishes it in arrival order.
    let opens: Vec<OpenJob> = sealed
        .iter()
        .map(|m| p.b.begin_transport(now, m).expect("begin"))
        .collect();
    let mut results = vec![None; sealed.len()];
    for i in (0..sealed.len()).rev() {
        results[i] = Some(opens[i].open(&mut sealed[i]));
    }
    for i in 0..sealed.len() {
        let r =
            p.b.finish_transport(now, from, &opens[i], results[i].unwrap(), &sealed[i])
                .expect("finish");
        match r {
            Received::Packet { start, len, .. } => {
                assert_eq!(&sealed[i][start..start + len], &pkts[i][..])
            }
            other => panic!("{other:?}"),
        }
    }

    // The same message twice in one batch passes `begin` twice but `finish` once.
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 0x200);
    let msg = seal(&mut p, Side::A, &pkt);
    let (j1, j2) = (
        p.b.begin_transport(now, &msg).unwrap(),
        p.b.begin_transport(now, &msg).unwrap(),
    );
    let (mut m1, mut m2) = (msg.clone(), msg.clone());
    let (r1, r2) = (j1.open(&mut m1), j2.open(&mut m2));
    assert!(p.b.finish_transport(now, from, &j1, r1, &m1).is_ok());
    assert!(matches!(
        p.b.finish_transport(now, from, &j2, r2, &m2),
        Err(DropReason::ReplayedCounter)
    ));
    // A forged message fails in `open` and never reaches the replay window.
    let mut forged = seal(&mut p, Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 0x300));
    let genuine = forged.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let jf = p.b.begin_transport(now, &forged).unwrap();
    let rf = jf.open(&mut forged);
    assert!(matches!(
        p.b.finish_transport(now, from, &jf, rf, &forged),
        Err(DropReason::DecryptFailed)
    ));
    assert!(p.deliver(Side::B, p.addr(Side::A), &genuine).is_ok());

    // A message begun on a keypair that is rotated out (two rekeys) before it finishes is
    // dropped, though its index may be reused by then.
    let msg = seal(&mut p, Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 0x400));
    let job = p.b.begin_transport(now, &msg).unwrap();
    let mut m = msg.clone();
    let opened = job.open(&mut m);
    assert!(opened.is_ok());
    steady_traffic(&mut p, 2 * 125);
    let later = p.now;
    assert!(p.b.finish_transport(later, from, &job, opened, &m).is_err());
}

#[test]
fn drop_reason_table_is_complete_and_indexed() {
    for (i, r) in DropReason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i, "{r:?}");
    }
    let distinct: HashSet<DropReason> = DropReason::ALL.iter().copied().collect();
    assert_eq!(distinct.len(), DropReason::ALL.len());
}

#[test]
fn poll_control_leaves_transport_messages_to_poll_transmit() {
    let mut p = Pair::new(false, true, true);
    let now = p.now;
    let pkt = ipv4_packet(A_TUN, B_TUN, 40, 0x600);
    let mut out = vec![0u8; 2048];
    assert!(matches!(
        p.a.handle_outgoing(now, &pkt, &mut out),
        Outgoing::Staged { .. }
    ));
    // The initiation is control; nothing can be sealed yet.
    let t = p.a.poll_control(&mut out).expect("initiation");
    assert_eq!((out[0], t.len), (MESSAGE_INITIATION, 148));
    let init = out[..t.len].to_vec();
    assert!(!p.a.has_pending_data());
    assert!(p.a.poll_control(&mut out).is_none());
    // B answers; the response is control too.
    let (a_addr, b_addr) = (p.addr(Side::A), p.addr(Side::B));
    assert!(p.deliver(Side::B, a_addr, &init).is_ok());
    let t = p.b.poll_control(&mut out).expect("response");
    assert_eq!((out[0], t.len), (MESSAGE_RESPONSE, 92));
    let resp = out[..t.len].to_vec();
    assert!(p.deliver(Side::A, b_addr, &resp).is_ok());
    // A's staged packet is now sealable: poll_control leaves it, poll_transmit seals it.
    assert!(p.a.has_pending_data());
    assert!(p.a.poll_control(&mut out).is_none());
    assert!(p.a.has_pending_data());
    let t = p.a.poll_transmit(now, &mut out).expect("staged packet");
    assert_eq!(out[0], MESSAGE_TRANSPORT);
    assert_eq!(le32(&out[8..12]), 0, "the first counter of the keypair");
    assert!(t.len >= pkt.len() + 32);
    assert!(!p.a.has_pending_data());
}

/// Jobs of `count` packets of assorted sizes (up to the MTU) from A to B.
fn seal_jobs(p: &mut Pair, count: usize) -> (Vec<Vec<u8>>, Vec<ferrowg_proto::device::SealJob>) {
    use ferrowg_proto::device::Prepared;
    let now = p.now;
    let pkts: Vec<Vec<u8>> = (0..count)
        .map(|i| {
            ipv4_packet(
                A_TUN,
                B_TUN,
                [40, 1392, 0, 7, 600][i % 5] + i,
                0x700 + i as u32,
            )
        })
        .collect();
    let jobs = pkts
        .iter()
        .map(|pkt| match p.a.prepare_outgoing(now, pkt) {
            Prepared::Seal(job) => job,
            other => panic!("{other:?}"),
        })
        .collect();
    (pkts, jobs)
}

#[test]
fn sealing_and_opening_in_groups_equals_one_by_one() {
    use ferrowg_proto::device::{open_group, seal_group, OpenJob};
    let mut p = Pair::new(true, true, true);
    establish(&mut p);
    let now = p.now;
    for count in [1, 2, 3, 8, 9, 21] {
        let (pkts, jobs) = seal_jobs(&mut p, count);
        let single: Vec<Vec<u8>> = jobs
            .iter()
            .zip(&pkts)
            .map(|(job, pkt)| {
                let mut out = vec![0u8; job.sealed_len()];
                job.seal(pkt, &mut out);
                out
            })
            .collect();
        // Buffers with stale bytes in them, as an arena's are.
        let mut grouped: Vec<Vec<u8>> = jobs.iter().map(|j| vec![0xAA; j.sealed_len()]).collect();
        seal_group(
            jobs.iter()
                .zip(&pkts)
                .zip(grouped.iter_mut())
                .map(|((job, pkt), out)| (job, &pkt[..], &mut out[..])),
        );
        assert_eq!(grouped, single, "{count} messages");

        // B opens them in a group, with one forged and one cut short among them.
        let opens: Vec<OpenJob> = grouped
            .iter()
            .map(|m| p.b.begin_transport(now, m).expect("begin"))
            .collect();
        if count > 2 {
            let last = grouped[1].len() - 1;
            grouped[1][last] ^= 0x80;
            grouped[2].truncate(20);
        }
        let mut one_by_one = grouped.clone();
        let expected: Vec<_> = opens
            .iter()
            .zip(one_by_one.iter_mut())
            .map(|(job, m)| job.open(m))
            .collect();
        let mut results = Vec::new();
        open_group(
            opens.iter().zip(grouped.iter_mut().map(|m| &mut m[..])),
            |r| results.push(r),
        );
        assert_eq!(results, expected, "{count} messages");
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(len) => assert_eq!(&grouped[i][16..16 + len], &one_by_one[i][16..16 + len]),
                Err(e) => assert!(count > 2 && (i == 1 || i == 2), "{i}: {e:?}"),
            }
        }
        // Everything opened is delivered once, in order.
        let from = ferrowg_proto::peer::Endpoint::new(p.addr(Side::A));
        for (i, (job, r)) in opens.iter().zip(results).enumerate() {
            if r.is_ok() {
                assert!(p.b.finish_transport(now, from, job, r, &grouped[i]).is_ok());
            }
        }
    }
}

#[test]
#[should_panic(expected = "one key per group")]
fn a_group_under_two_keys_is_refused() {
    use ferrowg_proto::device::seal_group;
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    let mut q = Pair::new(false, true, true);
    establish(&mut q);
    let (pkts, mut jobs) = seal_jobs(&mut p, 2);
    let (_, other) = seal_jobs(&mut q, 1);
    jobs.extend(other);
    let mut bufs: Vec<Vec<u8>> = jobs.iter().map(|j| vec![0u8; j.sealed_len()]).collect();
    seal_group(
        jobs.iter()
            .zip(pkts.iter().cycle())
            .zip(bufs.iter_mut())
            .map(|((job, pkt), out)| (job, &pkt[..], &mut out[..])),
    );
}
