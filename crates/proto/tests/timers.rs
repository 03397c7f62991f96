//! The kernel's timer rules (PROTOCOL.md §4), checked in simulated time on two of our devices:
//! rekeying, keepalives, handshake retransmission and give-up, key erasure, persistent
//! keepalive, the new-handshake timer, key confirmation, the initiator's last-minute rekey and
//! the initiation rate limit. Every assertion is on what went on the wire (`Pair::log`) or on
//! the devices' public state; nothing here reads a clock beyond the driver's start instant.

mod common;
use common::*;
use ferrowg_proto::constants::*;
use ferrowg_proto::device::{DropReason, Outgoing, Received};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const SEC: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);
/// Largest jitter added to REKEY_TIMEOUT-based timers (0..=333 ms).
const JITTER_MAX: Duration = Duration::from_millis(REKEY_TIMEOUT_JITTER_MAX_MS - 1);

/// [`common::establish`], and both sides then hold a current session.
fn establish(p: &mut Pair) {
    common::establish(p);
    assert!(p
        .a
        .peer(only_peer(&p.a))
        .unwrap()
        .sessions()
        .current
        .is_some());
    assert!(p
        .b
        .peer(only_peer(&p.b))
        .unwrap()
        .sessions()
        .current
        .is_some());
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// For every handshake response on the wire: the receiver indices the two keypairs it created
/// put into transport messages, mapped to the time the keypairs were created. With zero
/// network latency both sides derive the keys at the instant the response is sent.
/// Returns (indices A's transport messages carry -> birth, indices B's carry -> birth).
fn keypair_births(p: &Pair) -> (HashMap<u32, Instant>, HashMap<u32, Instant>) {
    let mut a_to_b = HashMap::new();
    let mut b_to_a = HashMap::new();
    for w in &p.log {
        if w.bytes[0] == MESSAGE_RESPONSE && w.bytes.len() == RESPONSE_LEN {
            let (responder, initiator) = (le32(&w.bytes[4..]), le32(&w.bytes[8..]));
            let (to_responder, to_initiator) = match w.from {
                Side::B => (&mut a_to_b, &mut b_to_a),
                Side::A => (&mut b_to_a, &mut a_to_b),
            };
            to_responder.insert(responder, w.at);
            to_initiator.insert(initiator, w.at);
        }
    }
    (a_to_b, b_to_a)
}

/// Rule 1: a steady sender rekeys at REKEY_AFTER_TIME, never seals on a keypair as old as
/// REJECT_AFTER_TIME, and loses nothing across rekeys.
#[test]
fn steady_sender_rekeys_and_never_uses_expired_keys() {
    let mut p = Pair::new(false, true, true);
    let mut sent = Vec::new();
    for i in 0..600u32 {
        let pkt = ipv4_packet(A_TUN, B_TUN, 40, i);
        p.send(Side::A, &pkt);
        sent.push(pkt);
        p.run();
        p.advance(SEC, SEC);
    }
    let inits = p.times_of(0, Side::A, MESSAGE_INITIATION);
    let first = inits[0];
    assert_eq!(first, p.log[0].at, "the first packet starts the handshake");
    // The rekey comes from the send path once the session is >= 120 s old: A sends every
    // second, so within [120, 121] s of the previous handshake, every time.
    assert!(inits.len() >= 4, "expected a rekey every ~120 s: {inits:?}");
    for w in inits.windows(2) {
        let d = w[1] - w[0];
        assert!(
            d >= REKEY_AFTER_TIME && d <= REKEY_AFTER_TIME + SEC,
            "rekey after {d:?}"
        );
    }
    // Only the initiator rekeys on time: the idle responder never initiates.
    assert_eq!(p.count(0, Side::B, MESSAGE_INITIATION), 0);
    assert_eq!(p.count(0, Side::B, MESSAGE_RESPONSE), inits.len());

    let (a_to_b, b_to_a) = keypair_births(&p);
    let mut checked = 0;
    for w in &p.log {
        if w.bytes[0] != MESSAGE_TRANSPORT {
            continue;
        }
        let births = match w.from {
            Side::A => &a_to_b,
            Side::B => &b_to_a,
        };
        let birth = births
            .get(&le32(&w.bytes[4..]))
            .expect("transport message on a keypair no handshake created");
        let age = w.at - *birth;
        assert!(age < REJECT_AFTER_TIME, "sealed on a {age:?}-old keypair");
        // A's data never even reaches the rekey age by more than its one-second cadence.
        if w.from == Side::A {
            assert!(
                age <= REKEY_AFTER_TIME + SEC,
                "A sealed on a {age:?}-old keypair"
            );
        } else {
            // B only sends keepalives.
            assert_eq!(w.bytes.len(), KEEPALIVE_LEN);
        }
        checked += 1;
    }
    assert!(checked >= 600);
    assert_eq!(p.delivered_b, sent, "data lost or duplicated across rekeys");
}

/// Rule 2: after receiving data and staying silent, a peer sends exactly one keepalive
/// KEEPALIVE_TIMEOUT later; the data's sender does not answer that keepalive.
#[test]
fn idle_receiver_sends_exactly_one_keepalive() {
    let mut p = Pair::new(false, true, true);
    establish(&mut p);
    p.advance(30 * SEC, SEC);
    let since = p.log.len();
    let t = p.now;
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.run();
    p.advance(110 * SEC, SEC);
    let from_b: Vec<_> = p.log[since..]
        .iter()
        .filter(|w| w.from == Side::B)
        .collect();
    assert_eq!(from_b.len(), 1, "B must send exactly one datagram");
    assert_eq!(from_b[0].bytes[0], MESSAGE_TRANSPORT);
    assert_eq!(from_b[0].bytes.len(), KEEPALIVE_LEN);
    assert_eq!(from_b[0].at - t, KEEPALIVE_TIMEOUT);
    let from_a: Vec<_> = p.log[since..]
        .iter()
        .filter(|w| w.from == Side::A)
        .collect();
    assert_eq!(
        from_a.len(),
        1,
        "A sends its data and nothing else (no keepalive reply)"
    );
    assert_eq!(from_a[0].at, t);
}

/// Rule 3: unanswered initiations are retransmitted every REKEY_TIMEOUT + jitter, 20 in all,
/// then the peer gives up and drops what it had staged.
#[test]
fn unanswered_initiations_retransmit_then_give_up() {
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    let t0 = p.now;
    assert!(matches!(
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1)),
        Outgoing::Staged { .. }
    ));
    p.run();
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), 1);
    let pid = only_peer(&p.a);
    p.advance(50 * SEC, 1000 * SEC);
    assert_eq!(
        p.a.peer(pid).unwrap().staged_len(),
        1,
        "data waits while retrying"
    );
    p.advance(100 * SEC, 1000 * SEC);
    // Given up (after the 20th initiation went unanswered for REKEY_TIMEOUT + jitter): the
    // staged packet is gone and the keys will be erased in 540 s.
    let peer = p.a.peer(pid).unwrap();
    assert_eq!(peer.staged_len(), 0, "staged packets dropped at give-up");
    assert!(!peer.timers().is_retransmit_pending());
    assert!(peer.timers().is_zero_key_pending());
    p.advance(1000 * SEC, 1000 * SEC);

    let inits = p.times_of(0, Side::A, MESSAGE_INITIATION);
    assert_eq!(inits.len(), 20, "1 initiation + 19 retransmissions");
    assert_eq!(inits[0], t0);
    let intervals: Vec<Duration> = inits.windows(2).map(|w| w[1] - w[0]).collect();
    for d in &intervals {
        assert!(
            *d >= REKEY_TIMEOUT && *d <= REKEY_TIMEOUT + JITTER_MAX,
            "retransmit after {d:?}"
        );
    }
    // The jitter is random, not a constant offset.
    let mut distinct = intervals.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 5,
        "retransmissions are not jittered: {intervals:?}"
    );
    assert!(secs(*inits.last().unwrap() - t0) < 19.0 * 5.334 + 0.01);
    // Given up: nothing else was sent, and the staged packet is gone.
    assert_eq!(p.log.len(), 20);
    assert_eq!(
        p.a.peer(pid).unwrap().staged_len(),
        0,
        "staged packets dropped at give-up"
    );
    assert!(!p.a.peer(pid).unwrap().timers().is_retransmit_pending());
}

/// Rule 4: with nothing happening, all key material is erased 3 * REJECT_AFTER_TIME after the
/// last handshake; old transport messages then name an unknown index.
#[test]
fn keys_are_zeroed_after_540_seconds() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    establish(&mut p);
    let old = p.log[p.indices_of(0, Side::A, MESSAGE_TRANSPORT)[0]]
        .bytes
        .clone();
    let (pa, pb) = (only_peer(&p.a), only_peer(&p.b));

    p.advance(ZERO_KEY_MATERIAL_AFTER - MS, 1000 * SEC);
    assert_eq!(p.now - t0, ZERO_KEY_MATERIAL_AFTER - MS);
    assert!(p.a.peer(pa).unwrap().sessions().current.is_some());
    assert!(p.b.peer(pb).unwrap().sessions().current.is_some());
    // Still held, but far too old to be used.
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &old),
        Err(DropReason::SessionExpired)
    );

    p.advance(MS, MS);
    for d in [&p.a, &p.b] {
        let peer = d.peer(only_peer(d)).unwrap();
        let s = peer.sessions();
        assert!(
            s.previous.is_none() && s.current.is_none() && s.next.is_none(),
            "keys not zeroed"
        );
        assert!(!peer.handshake_in_progress());
    }
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &old),
        Err(DropReason::UnknownIndex)
    );
    // Erasing keys is silent.
    let n = p.log.len();
    p.advance(600 * SEC, 1000 * SEC);
    assert_eq!(p.log.len(), n);
}

/// Rule 5: a persistent keepalive goes out every interval while idle, and turning the option
/// on sends one at once.
#[test]
fn persistent_keepalive_every_interval() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    establish(&mut p);
    p.advance(20 * SEC, SEC); // B's keepalive for the first packet goes out at 10 s
    let since = p.log.len();
    let t1 = p.now;
    let pid = only_peer(&p.a);
    p.a.set_persistent_keepalive(t1, pid, 25).unwrap();
    assert_eq!(p.a.peer(pid).unwrap().persistent_keepalive(), 25);
    p.run();
    assert_eq!(
        p.count(since, Side::A, MESSAGE_TRANSPORT),
        1,
        "0 -> 25 sends one at once"
    );
    assert_eq!(p.log[since].at, t1);
    assert_eq!(p.log[since].bytes.len(), KEEPALIVE_LEN);

    p.advance(200 * SEC, SEC);
    let mut times: Vec<Instant> = p.times_of(since, Side::A, MESSAGE_TRANSPORT);
    for i in p.indices_of(since, Side::A, MESSAGE_TRANSPORT) {
        assert_eq!(
            p.log[i].bytes.len(),
            KEEPALIVE_LEN,
            "A is idle: keepalives only"
        );
    }
    times.dedup(); // at the rekey the keepalive and the key confirmation share an instant
    let expect: Vec<Instant> = (0..=8).map(|k| t1 + 25 * k * SEC).collect();
    assert_eq!(times, expect);
    // The keepalive at 120 s after the handshake is what makes A (the initiator) rekey.
    assert_eq!(
        p.times_of(since, Side::A, MESSAGE_INITIATION),
        vec![t0 + REKEY_AFTER_TIME]
    );
    // B never has data to answer.
    assert_eq!(p.count(since, Side::B, MESSAGE_TRANSPORT), 0);

    // Changing a non-zero interval does not send at once; 0 switches them off.
    let n = p.log.len();
    let now = p.now;
    p.a.set_persistent_keepalive(now, pid, 30).unwrap();
    p.run();
    assert_eq!(p.log.len(), n);
    p.a.set_persistent_keepalive(now, pid, 0).unwrap();
    p.advance(100 * SEC, SEC);
    assert_eq!(p.count(n, Side::A, MESSAGE_TRANSPORT), 0);

    // Any authenticated traffic restarts the interval: B's data at +10 s and A's keepalive
    // answer at +20 s push the next persistent keepalive to +45 s.
    let n = p.log.len();
    let t = p.now;
    p.a.set_persistent_keepalive(t, pid, 25).unwrap();
    p.run();
    p.advance(10 * SEC, SEC);
    p.send(Side::B, &ipv4_packet(B_TUN, A_TUN, 40, 1));
    p.run();
    p.advance(40 * SEC, SEC);
    let times = p.times_of(n, Side::A, MESSAGE_TRANSPORT);
    assert_eq!(times, vec![t, t + 20 * SEC, t + 45 * SEC]);
}

/// Rule 6: data sent with no answer for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (+ jitter) starts a
/// new handshake; an answer in time prevents it.
#[test]
fn new_handshake_after_unanswered_data() {
    for cut in [true, false] {
        let mut p = Pair::new(false, true, true);
        establish(&mut p);
        p.advance(20 * SEC, SEC);
        p.cut_b_to_a = cut;
        let since = p.log.len();
        let t = p.now;
        p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
        p.run();
        p.advance(30 * SEC, SEC);
        // B answered with a keepalive after 10 s either way (lost when cut).
        assert_eq!(
            p.times_of(since, Side::B, MESSAGE_TRANSPORT),
            vec![t + KEEPALIVE_TIMEOUT]
        );
        let inits = p.times_of(since, Side::A, MESSAGE_INITIATION);
        if cut {
            assert!(!inits.is_empty(), "no new handshake after unanswered data");
            let d = inits[0] - t;
            let min = KEEPALIVE_TIMEOUT + REKEY_TIMEOUT;
            assert!(
                d >= min && d <= min + JITTER_MAX,
                "new handshake after {d:?}"
            );
            // And then it retransmits as usual.
            assert!(inits.len() >= 2);
            assert!(inits[1] - inits[0] >= REKEY_TIMEOUT);
        } else {
            assert!(
                inits.is_empty(),
                "the keepalive answer must cancel the new-handshake timer"
            );
        }
    }
}

/// Rule 7: a responder holding only the unconfirmed "next" keypair stages data (and does not
/// initiate) until the initiator's first transport message confirms the keys.
#[test]
fn responder_waits_for_key_confirmation() {
    let mut p = Pair::new(false, true, true);
    let (pa, pb) = (only_peer(&p.a), only_peer(&p.b));
    let a_pkt = ipv4_packet(A_TUN, B_TUN, 40, 1);
    assert!(matches!(p.send(Side::A, &a_pkt), Outgoing::Staged { .. }));
    let init = p.take_transmits(Side::A);
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].1[0], MESSAGE_INITIATION);
    p.deliver(Side::B, p.a_addr, &init[0].1).unwrap();
    {
        let s = p.b.peer(pb).unwrap().sessions();
        assert!(s.next.is_some() && s.current.is_none());
    }
    let resp = p.take_transmits(Side::B);
    assert_eq!(resp.len(), 1);
    assert_eq!(resp[0].1[0], MESSAGE_RESPONSE);

    // B has keys, but only in "next": its data must wait, and no initiation of its own.
    let b1 = ipv4_packet(B_TUN, A_TUN, 40, 2);
    let b2 = ipv4_packet(B_TUN, A_TUN, 40, 3);
    assert!(matches!(p.send(Side::B, &b1), Outgoing::Staged { .. }));
    assert!(
        p.take_transmits(Side::B).is_empty(),
        "responder sent before confirmation"
    );
    p.now += 3 * SEC;
    p.b.handle_timeout(p.now);
    assert!(matches!(p.send(Side::B, &b2), Outgoing::Staged { .. }));
    assert!(
        p.take_transmits(Side::B).is_empty(),
        "responder sent before confirmation"
    );
    assert_eq!(p.b.peer(pb).unwrap().staged_len(), 2);

    // The response reaches A, which sends its staged data: that confirms the keys to B.
    p.deliver(Side::A, p.b_addr, &resp[0].1).unwrap();
    let data = p.take_transmits(Side::A);
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].1[0], MESSAGE_TRANSPORT);
    assert!(p.a.peer(pa).unwrap().sessions().current.is_some());
    p.deliver(Side::B, p.a_addr, &data[0].1).unwrap();
    assert_eq!(p.delivered_b, vec![a_pkt]);
    {
        let s = p.b.peer(pb).unwrap().sessions();
        assert!(
            s.next.is_none() && s.current.is_some(),
            "confirmation did not rotate next"
        );
    }
    let out = p.take_transmits(Side::B);
    assert_eq!(
        out.len(),
        2,
        "staged data goes out right after confirmation"
    );
    for (_, bytes) in &out {
        assert_eq!(bytes[0], MESSAGE_TRANSPORT);
        p.deliver(Side::A, p.b_addr, bytes).unwrap();
    }
    assert_eq!(p.delivered_a, vec![b1, b2]);
    assert!(p.b.peer(pb).unwrap().last_handshake().is_some());
}

/// Rule 8: with traffic only towards the initiator of the current session (here B's
/// persistent keepalives, which A never answers, so A's send path never rekeys), A initiates
/// when a packet arrives on a session at least 165 s old.
#[test]
fn initiator_rekeys_on_receive_at_165_seconds() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    establish(&mut p);
    let pb = only_peer(&p.b);
    let now = p.now;
    p.b.set_persistent_keepalive(now, pb, 1).unwrap();
    let since = p.log.len();
    p.advance(200 * SEC, SEC);

    let inits = p.times_of(since, Side::A, MESSAGE_INITIATION);
    assert!(!inits.is_empty(), "no last-minute rekey");
    let d = inits[0] - t0;
    assert!(
        d >= REKEY_ON_RECEIVE_AGE && d <= REKEY_ON_RECEIVE_AGE + SEC,
        "rekey at {d:?}"
    );
    assert_eq!(inits.len(), 1);
    // Before that A sent nothing at all, and B (the responder) never initiated.
    assert!(p.log[since..]
        .iter()
        .all(|w| w.from == Side::B || w.at >= inits[0]));
    assert_eq!(p.count(since, Side::B, MESSAGE_INITIATION), 0);
    // The new session took over before the old one expired: B's keepalives kept flowing
    // and arrived on keys younger than REJECT_AFTER_TIME.
    let (_, b_to_a) = keypair_births(&p);
    for i in p.indices_of(since, Side::B, MESSAGE_TRANSPORT) {
        let w = &p.log[i];
        let birth = b_to_a[&le32(&w.bytes[4..])];
        assert!(w.at - birth < REJECT_AFTER_TIME);
    }
    let last_b = *p
        .times_of(since, Side::B, MESSAGE_TRANSPORT)
        .last()
        .unwrap();
    assert_eq!(last_b, p.now, "B's keepalives stopped");
}

/// Rule 9: however many packets are queued, a peer sends at most one initiation per
/// REKEY_TIMEOUT; staged packets are capped and the newest are delivered once a handshake
/// gets through.
#[test]
fn initiations_are_rate_limited() {
    let mut p = Pair::new(false, true, true);
    p.connected = false;
    let mut sent = Vec::new();
    for i in 0..300u32 {
        let pkt = ipv4_packet(A_TUN, B_TUN, 40, i);
        assert!(matches!(p.send(Side::A, &pkt), Outgoing::Staged { .. }));
        sent.push(pkt);
        p.run();
        p.advance(100 * MS, 100 * MS);
    }
    p.advance(20 * SEC, SEC);
    let inits = p.times_of(0, Side::A, MESSAGE_INITIATION);
    for w in inits.windows(2) {
        assert!(
            w[1] - w[0] >= REKEY_TIMEOUT,
            "two initiations {:?} apart",
            w[1] - w[0]
        );
    }
    // 50 s of trying: about one per 5 s, not one per packet.
    assert!(
        inits.len() >= 9 && inits.len() <= 11,
        "{} initiations",
        inits.len()
    );
    let pid = only_peer(&p.a);
    assert_eq!(p.a.peer(pid).unwrap().staged_len(), MAX_STAGED_PACKETS);

    p.connected = true;
    p.advance(6 * SEC, SEC);
    assert_eq!(
        p.delivered_b,
        sent[sent.len() - MAX_STAGED_PACKETS..].to_vec()
    );
}

/// Rule 1, the hard limit: when rekeying keeps failing (B's answers are lost), A goes on
/// sending on its keypair only while it is younger than REJECT_AFTER_TIME; after that its data
/// waits for a handshake instead.
#[test]
fn no_sending_on_keys_older_than_reject_after_time() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    establish(&mut p);
    p.cut_b_to_a = true;
    let pid = only_peer(&p.a);
    let mut staged_from = None;
    for i in 0..200u32 {
        let r = p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, i));
        let age = p.now - t0;
        match r {
            Outgoing::Sent { .. } => assert!(age < REJECT_AFTER_TIME, "sent at {age:?}"),
            Outgoing::Staged { .. } => {
                assert!(
                    age >= REJECT_AFTER_TIME,
                    "staged at {age:?} with a live session"
                );
                staged_from.get_or_insert(age);
            }
            other => panic!("{other:?}"),
        }
        p.run();
        p.advance(SEC, SEC);
    }
    assert_eq!(staged_from, Some(REJECT_AFTER_TIME));
    let (a_to_b, _) = keypair_births(&p);
    for i in p.indices_of(0, Side::A, MESSAGE_TRANSPORT) {
        let w = &p.log[i];
        assert_eq!(a_to_b[&le32(&w.bytes[4..])], t0, "no new keypair can exist");
        assert!(w.at - t0 < REJECT_AFTER_TIME);
    }
    // It kept trying to get a new handshake (from the new-handshake timer at 15 s on, as no
    // answer came), at most once per REKEY_TIMEOUT.
    let inits = p.times_of(0, Side::A, MESSAGE_INITIATION);
    assert!(inits.len() > 30);
    assert!(inits[1] - t0 >= KEEPALIVE_TIMEOUT + REKEY_TIMEOUT);
    assert!(inits.windows(2).all(|w| w[1] - w[0] >= REKEY_TIMEOUT));
    assert_eq!(p.a.peer(pid).unwrap().staged_len(), 20);
    assert_eq!(p.delivered_b.len(), 181);
}

/// The receive side of the same limit: a message on a keypair is accepted until the keypair
/// is REJECT_AFTER_TIME old, and refused from then on.
#[test]
fn no_receiving_on_keys_older_than_reject_after_time() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    establish(&mut p);
    p.cut_a_to_b = true;
    let since = p.log.len();
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 1));
    p.send(Side::A, &ipv4_packet(A_TUN, B_TUN, 40, 2));
    let late: Vec<Vec<u8>> = p
        .indices_of(since, Side::A, MESSAGE_TRANSPORT)
        .iter()
        .map(|&i| p.log[i].bytes.clone())
        .collect();
    assert_eq!(late.len(), 2);
    p.advance(REJECT_AFTER_TIME - MS, 10 * SEC);
    assert_eq!(p.now - t0, REJECT_AFTER_TIME - MS);
    assert!(matches!(
        p.deliver(Side::B, p.a_addr, &late[0]),
        Ok(Received::Packet { .. })
    ));
    p.advance(MS, MS);
    assert_eq!(
        p.deliver(Side::B, p.a_addr, &late[1]),
        Err(DropReason::SessionExpired)
    );
}

/// Both sides start a handshake at the same instant: each consumes the other's initiation
/// (superseding its own), so both responses are for abandoned handshakes and both hold only
/// an unconfirmed "next" keypair. The jittered retransmission timers break the tie: within
/// one REKEY_TIMEOUT + jitter one side's retry completes a handshake and both packets arrive.
#[test]
fn simultaneous_initiations_resolve_by_retransmission() {
    let mut p = Pair::new(false, true, true);
    let t0 = p.now;
    let pa = ipv4_packet(A_TUN, B_TUN, 40, 1);
    let pb = ipv4_packet(B_TUN, A_TUN, 40, 2);
    assert!(matches!(p.send(Side::A, &pa), Outgoing::Staged { .. }));
    assert!(matches!(p.send(Side::B, &pb), Outgoing::Staged { .. }));
    p.run();
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), 1);
    assert_eq!(p.count(0, Side::B, MESSAGE_INITIATION), 1);
    assert_eq!(p.count(0, Side::A, MESSAGE_RESPONSE), 1);
    assert_eq!(p.count(0, Side::B, MESSAGE_RESPONSE), 1);
    assert!(p.delivered_a.is_empty() && p.delivered_b.is_empty());
    p.advance(REKEY_TIMEOUT + JITTER_MAX, 10 * SEC);
    assert_eq!(p.delivered_b, vec![pa]);
    assert_eq!(p.delivered_a, vec![pb]);
    // Exactly one retry won; the other side's retransmission was cancelled by completion.
    let retries = p.count(2, Side::A, MESSAGE_INITIATION) + p.count(2, Side::B, MESSAGE_INITIATION);
    assert_eq!(retries, 1);
    assert!(p.now - t0 <= REKEY_TIMEOUT + JITTER_MAX);
}
