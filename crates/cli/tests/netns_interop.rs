//! ferrowgd against itself and the other user-space WireGuards, each daemon in its own network
//! namespace, joined by veth, both configured with the official `wg` — the system's, or for
//! the newest wireguard-go the newest `wg` next to it (needs root; see `common::netns`).
//!
//! Matrix: peer ∈ {ferrowgd, Debian's wireguard-go, the newest wireguard-go (only when
//! `FERROWG_PEERS_DIR` is set), boringtun-cli} × {with, without PSK} × {IPv4, IPv6 outer
//! transport}. Side a is always ferrowgd, side b the peer. Each case checks:
//!
//! 1. the handshake: the first ping (from a when the outer transport is IPv4, from b when it is
//!    IPv6, so ferrowgd is tested as initiator and as responder) makes both sides report one;
//! 2. pings both ways, to both inner addresses (IPv4 and IPv6 inside the tunnel);
//! 3. a checksum-exact 64 MiB TCP transfer a → b over the other inner family than the outer
//!    one (v4-in-v6 and v6-in-v4), then 16 MiB b → a;
//! 4. byte counters (`wg show IF transfer`): ferrowgd's rx/tx cover the payloads, each side's
//!    tx matches the other side's rx up to a few handshake/keepalive messages plus whatever the
//!    kernel reports it dropped. boringtun counts plaintext, so against it only the
//!    inequalities wire ≥ plaintext ≥ payload are checked.
//!
//! `ferrowgd_exact_byte_counters_after_ping` is the kernel selftest's exact count (netns.sh).

mod common;

use common::netns::*;

/// Handshake initiation, response, keepalive message sizes (PROTOCOL.md §2, §6.4).
const MIB: u64 = 1 << 20;
/// Bytes of the TCP transfer ferrowgd → peer in every case (the whole file takes well under
/// a minute).
const PAYLOAD: u64 = 64 * MIB;
/// Bytes of the TCP transfer peer → ferrowgd (ferrowgd's receive path under load).
const REVERSE_PAYLOAD: u64 = 16 * MIB;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[derive(Clone, Copy, Debug)]
enum Peer {
    Ferrowgd,
    WireguardGoSystem,
    WireguardGoNewest,
    Boringtun,
}

impl Peer {
    /// The daemon kind, or `None` (after printing why) when it is not available here.
    fn kind(self) -> Option<DaemonKind> {
        match self {
            Peer::Ferrowgd => Some(DaemonKind::Ferrowgd),
            Peer::WireguardGoSystem => DaemonKind::wireguard_go_system().or_else(|| {
                skip("wireguard-go is not installed");
                None
            }),
            Peer::WireguardGoNewest => {
                if peers_dir().is_none() {
                    // Optional by design: only machines with the reference builds run it.
                    eprintln!("SKIPPED: FERROWG_PEERS_DIR is not set (newest wireguard-go)");
                    return None;
                }
                DaemonKind::wireguard_go_newest().or_else(|| {
                    skip("FERROWG_PEERS_DIR has no executable wireguard-go");
                    None
                })
            }
            Peer::Boringtun => DaemonKind::boringtun().or_else(|| {
                skip("boringtun-cli not found (PATH, ~/.cargo/bin or FERROWG_BORINGTUN)");
                None
            }),
        }
    }
}

/// `sent`/`received`: TCP payload bytes a → b / b → a.
fn check_counters(pair: &TunnelPair, sent: u64, received: u64) {
    let (a, b) = (&pair.a, &pair.b);
    let ((a_rx, a_tx), (b_rx, b_tx)) = settled_counters(pair);
    let a_losses = datagram_losses(&a.ns, &[&pair.link.a_ifname]);
    let b_losses = datagram_losses(&b.ns, &[&pair.link.b_ifname]);
    let dropped = a_losses.total() + b_losses.total();
    eprintln!(
        "counters: ferrowgd rx {a_rx} tx {a_tx}; {} rx {b_rx} tx {b_tx}; payload a → b {sent}, \
         b → a {received}; kernel drops: ferrowgd side {a_losses:?}, peer side {b_losses:?}",
        b.daemon.kind().label()
    );
    assert!(
        a_tx >= sent,
        "ferrowgd tx {a_tx} < {sent} payload bytes it sent"
    );
    assert!(
        a_rx >= received,
        "ferrowgd rx {a_rx} < {received} payload bytes it received"
    );
    if b.daemon.kind().counts_plaintext() {
        // boringtun counts plaintext: a's messages ≥ b's plaintext ≥ the TCP payload.
        assert!(
            b_rx >= sent && b_tx >= received,
            "{} rx {b_rx} / tx {b_tx} < {sent} / {received} payload bytes",
            b.daemon.kind()
        );
        assert!(
            a_tx >= b_rx,
            "ferrowgd tx {a_tx} (messages) < {} rx {b_rx} (plaintext)",
            b.daemon.kind()
        );
        assert!(
            a_rx + dropped * MAX_MESSAGE >= b_tx,
            "ferrowgd rx {a_rx} (messages) < {} tx {b_tx} (plaintext), {dropped} drops",
            b.daemon.kind()
        );
    } else {
        check_mirror(
            &format!("ferrowgd tx vs {} rx", b.daemon.kind()),
            a_tx,
            b_rx,
            dropped,
        );
        check_mirror(
            &format!("{} tx vs ferrowgd rx", b.daemon.kind()),
            b_tx,
            a_rx,
            dropped,
        );
    }
}

fn interop(peer: Peer, psk: bool, outer: Family) {
    if !require_netns() {
        return;
    }
    let Some(kind) = peer.kind() else { return };
    eprintln!(
        "ferrowgd ↔ {kind}, {}, outer {outer}",
        if psk { "with PSK" } else { "no PSK" },
    );
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &kind,
        &PairOptions {
            psk,
            outer,
            // The newest wireguard-go comes with the newest `wg`: configure its cases with it.
            wg: matches!(peer, Peer::WireguardGoNewest)
                .then(newest_wg)
                .flatten(),
            ..PairOptions::default()
        },
    );
    let (a, b) = (&pair.a, &pair.b);

    // 1. Handshake, started by ferrowgd over IPv4 and by the peer over IPv6.
    let (from, to) = match outer {
        Family::V4 => (a, b),
        Family::V6 => (b, a),
    };
    let before = unix_now();
    assert!(
        ping(&from.ns, to.inner(Family::V4), 1),
        "first ping {} → {} (the handshake) failed",
        from.daemon.kind(),
        to.daemon.kind()
    );
    assert!(
        a.handshake_with(b),
        "ferrowgd reports no handshake with {kind}"
    );
    assert!(
        b.handshake_with(a),
        "{kind} reports no handshake with ferrowgd"
    );

    // Unix-time handshake stamps (all but boringtun) fall within the first ping.
    let after = unix_now();
    for (me, other) in [(a, b), (b, a)] {
        if !me.daemon.kind().handshake_time_is_elapsed() {
            let t = latest_handshake(&me.ns, me.ifname(), &other.keys.public);
            assert!(
                (before..=after).contains(&t),
                "{} reports its handshake at {t}, outside [{before}, {after}]",
                me.daemon.kind()
            );
        }
    }

    // 2. Pings both ways, both inner families.
    for (from, to) in [(a, b), (b, a)] {
        for family in [Family::V4, Family::V6] {
            assert!(
                ping(&from.ns, to.inner(family), 3),
                "ping {} → {} over inner {family} failed",
                from.daemon.kind(),
                to.daemon.kind()
            );
        }
    }

    // 3. TCP a → b, inner family ≠ outer family; then a smaller one b → a.
    let inner = outer.other();
    let t = tcp_transfer(&b.ns, b.inner(inner), &a.ns, PAYLOAD);
    t.assert_ok(&format!("ferrowgd → {kind} (inner {inner})"));
    let t = tcp_transfer(&a.ns, a.inner(inner), &b.ns, REVERSE_PAYLOAD);
    t.assert_ok(&format!("{kind} → ferrowgd (inner {inner})"));

    // 4. Counters.
    check_counters(&pair, PAYLOAD, REVERSE_PAYLOAD);

    // 5. `ferrowg` reads the peer daemon's UAPI exactly as the official `wg` does.
    let reference = matches!(peer, Peer::WireguardGoNewest)
        .then(newest_wg)
        .flatten()
        .unwrap_or_else(system_wg);
    for args in [
        vec!["show", b.ifname(), "dump"],
        vec!["showconf", b.ifname()],
        vec!["show", b.ifname(), "allowed-ips"],
    ] {
        // A keepalive between the two reads changes the counters: compare up to three times.
        let same = (0..3).any(|_| {
            let theirs = wg_with(&b.ns, &reference, &args);
            let ours = b.ns.run(common::FERROWG, &args);
            ours == theirs
        });
        assert!(
            same,
            "`ferrowg {}` on {kind} differs from wg: ours\n{}\nwg\n{}",
            args.join(" "),
            b.ns.run(common::FERROWG, &args),
            wg_with(&b.ns, &reference, &args)
        );
    }
}

macro_rules! matrix {
    ($($module:ident => $peer:expr;)*) => {$(
        mod $module {
            use super::*;

            #[test]
            fn psk_outer_v4() {
                interop($peer, true, Family::V4);
            }

            #[test]
            fn psk_outer_v6() {
                interop($peer, true, Family::V6);
            }

            #[test]
            fn no_psk_outer_v4() {
                interop($peer, false, Family::V4);
            }

            #[test]
            fn no_psk_outer_v6() {
                interop($peer, false, Family::V6);
            }
        }
    )*};
}

matrix! {
    ferrowgd => Peer::Ferrowgd;
    wireguard_go_system => Peer::WireguardGoSystem;
    wireguard_go_newest => Peer::WireguardGoNewest;
    boringtun => Peer::Boringtun;
}

/// The kernel selftest's exact count (netns.sh, PROTOCOL.md §6.4): fresh peers, `ping -c 10`
/// (84-byte IPv4 echo packets, padded to 96, so 16 + 96 + 16 = 128-byte data messages) from n2
/// to n1. n2 initiated, so it sent the initiation (148) and ten requests, and received the
/// response (92) and ten replies; at most one extra keepalive (32) is allowed on the sender
/// side, as in netns.sh. n1 must show the mirror image.
#[test]
fn ferrowgd_exact_byte_counters_after_ping() {
    if !require_netns() {
        return;
    }
    const DATA: u64 = 16 + 96 + 16;
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let (n1, n2) = (&pair.a, &pair.b);
    assert!(
        ping(&n2.ns, n1.inner(Family::V4), 10),
        "ping n2 → n1 failed"
    );
    let (rx2, tx2) = n2.transfer_with(n1);
    let (rx1, tx1) = n1.transfer_with(n2);
    eprintln!("n2 (initiator): rx {rx2} tx {tx2}; n1 (responder): rx {rx1} tx {tx1}");
    assert_eq!(
        rx2,
        RESPONSE_LEN + 10 * DATA,
        "initiator rx: response + 10 replies"
    );
    assert!(
        tx2 == INITIATION_LEN + 10 * DATA || tx2 == INITIATION_LEN + 10 * DATA + KEEPALIVE_LEN,
        "initiator tx {tx2}: expected {} (initiation + 10 requests) or {} (+ one keepalive)",
        INITIATION_LEN + 10 * DATA,
        INITIATION_LEN + 10 * DATA + KEEPALIVE_LEN
    );
    assert_eq!(
        (rx1, tx1),
        (tx2, rx2),
        "responder (rx, tx) must mirror the initiator's (tx, rx)"
    );
    assert!(n1.handshake_with(n2) && n2.handshake_with(n1));
}
