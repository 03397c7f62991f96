//! ferrowgd never reorders a peer's packets (needs root; see `common::netns`).
//!
//! Whatever the number of workers sealing in parallel (`FERROWGD_WORKERS`: 0 or 1 = inline,
//! N = N workers; a binary that does not know the variable simply ignores it), the transport
//! messages ferrowgd emits for one keypair (one receiver index) leave in counter order:
//!
//! 1. `counters_strictly_increase_per_keypair_*`: a 64 MiB TCP transfer a → b between two
//!    ferrowgd, captured with tcpdump on a's veth. The capture is parsed here (pcap, Ethernet
//!    or cooked or raw IP, IPv4/IPv6, UDP; GSO super-packets split into their messages) and
//!    the counters of a's transport messages must be strictly increasing per receiver index,
//!    in capture order. Capture drops only leave gaps; a counter going backwards is a
//!    reordering. With 1 and 4 workers, and with 4 across rekeys (protocol time 60× faster,
//!    an 8 s paced transfer, at least three receiver indices seen).
//! 2. `tcp_through_a_reordering_path_*`: the same peers (and once ferrowgd → Debian's
//!    wireguard-go) through a user-space relay in a third namespace that reorders both
//!    directions (every 5th datagram is held back until 1–3 later ones have passed; nothing is
//!    dropped; the kernel has no netem here). The transfer must arrive exact, the relay must
//!    really have reordered, the `wg show` byte counters must mirror each other, and the relay
//!    — which sees every datagram ferrowgd sends *before* reordering it — must see ferrowgd's
//!    counters strictly increasing per receiver index. The relay and the three-namespace path
//!    are `common::relay` (shared with the soak).
//!
//! `order_check_and_gso_split_catch_reordering` checks the parsing and the check themselves
//! on synthetic data (no root needed).

mod common;

use common::netns::*;
use common::relay::*;
use std::net::{IpAddr, SocketAddr};

const MIB: u64 = 1 << 20;
/// TCP payload of the captured transfer (≈ 48,000 full-size transport messages).
const CAPTURE_PAYLOAD: u64 = 64 * MIB;
/// TCP payload through the reordering relay (≈ 37,000 transport messages a → b).
const RELAY_PAYLOAD: u64 = 48 * MIB;
/// Fewer transport messages than this in a capture means it cannot vouch for anything.
const MIN_CAPTURED_MESSAGES: u64 = 20_000;
/// The relay must have delivered at least this many datagrams out of order.
const MIN_OUT_OF_ORDER: u64 = 1_000;

fn workers(n: u32) -> DaemonOptions {
    DaemonOptions {
        env: vec![("FERROWGD_WORKERS".into(), n.to_string())],
        ..DaemonOptions::default()
    }
}

fn pair_options(n: u32) -> PairOptions {
    PairOptions {
        daemon_options: (workers(n), workers(n)),
        ..PairOptions::default()
    }
}

// ---------------------------------------------------------------------------------------------
// pcap parsing (our own: the harness's assumes Ethernet and one message per datagram)

/// One UDP datagram of a capture: its source and its payload as captured (possibly a GSO
/// super-packet).
struct Datagram<'a> {
    src: SocketAddr,
    payload: &'a [u8],
}

/// The frames of a classic pcap file and its link type.
fn pcap_frames(data: &[u8]) -> (u32, Vec<&[u8]>) {
    assert!(
        data.len() >= 24,
        "pcap file too short ({} bytes)",
        data.len()
    );
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a classic pcap file (magic {m:#x})"),
    };
    let u32_at = |i: usize| {
        let w: [u8; 4] = data[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    // The link type is the low 16 bits (the upper ones may carry FCS flags).
    let linktype = u32_at(20) & 0xffff;
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(at + 8) as usize;
        let end = (at + 16 + incl).min(data.len());
        frames.push(&data[at + 16..end]);
        at = end;
    }
    (linktype, frames)
}

/// The IP packet inside a frame of link type `linktype`, with its EtherType-like protocol
/// (0x0800 / 0x86dd), or `None` for anything else.
fn ip_packet(linktype: u32, frame: &[u8]) -> Option<&[u8]> {
    let (proto, ip) = match linktype {
        // Ethernet, with any 802.1Q tags skipped.
        1 => {
            let mut at = 12;
            loop {
                let t = u16::from_be_bytes(frame.get(at..at + 2)?.try_into().unwrap());
                if t == 0x8100 || t == 0x88a8 {
                    at += 4;
                    continue;
                }
                break (t, frame.get(at + 2..)?);
            }
        }
        // LINUX_SLL: 16-byte header, protocol in its last two bytes.
        113 => (
            u16::from_be_bytes(frame.get(14..16)?.try_into().unwrap()),
            frame.get(16..)?,
        ),
        // LINUX_SLL2: 20-byte header, protocol first.
        276 => (
            u16::from_be_bytes(frame.get(0..2)?.try_into().unwrap()),
            frame.get(20..)?,
        ),
        // Raw IP (DLT_RAW in its various numberings, IPV4, IPV6).
        12 | 14 | 101 | 228 | 229 => match frame.first()? >> 4 {
            4 => (0x0800, frame),
            6 => (0x86dd, frame),
            _ => return None,
        },
        other => panic!("unsupported pcap link type {other}"),
    };
    match proto {
        0x0800 if ip.first()? >> 4 == 4 => Some(ip),
        0x86dd if ip.first()? >> 4 == 6 => Some(ip),
        _ => None,
    }
}

/// The UDP datagram in an IP packet (IPv4 unfragmented, or first fragment; IPv6 after
/// hop-by-hop / routing / destination-options headers).
fn udp_datagram(ip: &[u8]) -> Option<Datagram<'_>> {
    let (src, l4, ip_end): (IpAddr, usize, usize) = match ip[0] >> 4 {
        4 => {
            if ip.len() < 20 || ip[9] != 17 {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x1fff != 0 {
                return None; // a later fragment: no UDP header
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().unwrap();
            // A GSO super-packet of 64 KiB may carry 0 as its total length.
            let end = if total >= ihl { total } else { ip.len() };
            (src.into(), ihl, end)
        }
        6 => {
            if ip.len() < 40 {
                return None;
            }
            let src: [u8; 16] = ip[8..24].try_into().unwrap();
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let end = if plen > 0 { 40 + plen } else { ip.len() };
            let (mut next, mut at) = (ip[6], 40);
            while matches!(next, 0 | 43 | 60) {
                let h = ip.get(at..at + 2)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            if next != 17 {
                return None;
            }
            (src.into(), at, end)
        }
        _ => return None,
    };
    let udp = ip.get(l4..ip_end.min(ip.len()))?;
    if udp.len() < 8 {
        return None;
    }
    let sport = u16::from_be_bytes([udp[0], udp[1]]);
    let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    // The UDP length bounds the payload unless it is 0 (jumbo) or beyond what was captured.
    let end = if len >= 8 {
        len.min(udp.len())
    } else {
        udp.len()
    };
    Some(Datagram {
        src: SocketAddr::new(src, sport),
        payload: &udp[8..end],
    })
}

/// The WireGuard messages in one captured UDP payload. On a veth, tcpdump sees a GSO send
/// unsegmented: several equal-size messages (the last one possibly shorter) back to back. The
/// segment size is not in the capture; it is the smallest offset at which every segment starts
/// with the first message's 8-byte header (type 4 + the same receiver index) — ciphertext
/// matching that by chance has a 2^-64 probability.
fn split_messages(payload: &[u8]) -> Vec<&[u8]> {
    if transport_header(payload).is_none() {
        return vec![payload];
    }
    let header = &payload[..8];
    let len = payload.len();
    'segment: for seg in 32..len {
        if payload.get(seg..seg + 8) != Some(header) {
            continue;
        }
        let mut at = seg;
        while at < len {
            if len - at < 32 || payload.get(at..at + 8) != Some(header) {
                continue 'segment;
            }
            at += seg;
        }
        return payload.chunks(seg).collect();
    }
    vec![payload]
}

// ---------------------------------------------------------------------------------------------
// 1. Counters in capture order

/// How the captured transfer runs.
struct CaptureCase {
    workers: u32,
    /// `FERROWGD_TEST_TIME_SCALE` for both daemons (rekeys every 120 s / scale).
    time_scale: Option<u32>,
    /// Pace of the transfer (bytes/s), so that it spans several rekeys.
    pace: Option<u64>,
    payload: u64,
    /// Receiver indices a must be seen using.
    min_keypairs: usize,
}

fn counters_strictly_increase(case: CaptureCase) {
    if !require_netns() {
        return;
    }
    if find_program("tcpdump").is_none() {
        skip("tcpdump is not installed");
        return;
    }
    let n_workers = case.workers;
    let mut opts = pair_options(n_workers);
    if let Some(scale) = case.time_scale {
        for d in [&mut opts.daemon_options.0, &mut opts.daemon_options.1] {
            d.env
                .push(("FERROWGD_TEST_TIME_SCALE".into(), scale.to_string()));
        }
    }
    let pair = tunnel_pair(&DaemonKind::Ferrowgd, &DaemonKind::Ferrowgd, &opts);
    let (a, b) = (&pair.a, &pair.b);
    let what = format!(
        "FERROWGD_WORKERS={n_workers}{}",
        case.time_scale
            .map(|s| format!(", FERROWGD_TEST_TIME_SCALE={s}"))
            .unwrap_or_default()
    );
    let a_outer = a.endpoint();
    let capture = Capture::start_full(
        &a.ns,
        &pair.link.a_ifname,
        &format!(
            "udp and src host {} and src port {}",
            a_outer.ip(),
            a_outer.port()
        ),
    );
    let t = match case.pace {
        Some(pace) => tcp_transfer_paced(&b.ns, b.inner(Family::V4), &a.ns, case.payload, pace),
        None => tcp_transfer(&b.ns, b.inner(Family::V4), &a.ns, case.payload),
    };
    t.assert_ok(&format!("a → b, {what}"));
    let (data, dropped) = capture.stop_raw();

    let (linktype, frames) = pcap_frames(&data);
    let mut check = OrderCheck::default();
    let (mut datagrams, mut super_packets) = (0u64, 0u64);
    for frame in &frames {
        let Some(d) = ip_packet(linktype, frame).and_then(udp_datagram) else {
            continue;
        };
        if d.src != a_outer {
            continue;
        }
        datagrams += 1;
        let messages = split_messages(d.payload);
        if messages.len() > 1 {
            super_packets += 1;
        }
        for m in messages {
            check.observe(m);
        }
    }
    eprintln!(
        "{what}: capture (link type {linktype}) of {} frames, {datagrams} UDP datagrams from a \
         ({super_packets} GSO super-packets), {} messages, {} transport messages in {} \
         keypair(s), {} out of order, {dropped} packets dropped by the kernel",
        frames.len(),
        check.messages,
        check.transport,
        check.keypairs(),
        check.violations
    );
    assert!(
        check.transport >= MIN_CAPTURED_MESSAGES,
        "{what}: only {} transport messages from a captured ({dropped} capture drops): the \
         capture cannot vouch for the order",
        check.transport
    );
    assert!(
        check.keypairs() >= case.min_keypairs,
        "{what}: a used {} receiver index(es), expected at least {}",
        check.keypairs(),
        case.min_keypairs
    );
    check.assert_in_order(&format!("a's veth, {what}"));
}

#[test]
fn counters_strictly_increase_per_keypair_one_worker() {
    counters_strictly_increase(CaptureCase {
        workers: 1,
        time_scale: None,
        pace: None,
        payload: CAPTURE_PAYLOAD,
        min_keypairs: 1,
    });
}

#[test]
fn counters_strictly_increase_per_keypair_several_workers() {
    counters_strictly_increase(CaptureCase {
        workers: 4,
        time_scale: None,
        pace: None,
        payload: CAPTURE_PAYLOAD,
        min_keypairs: 1,
    });
}

/// Protocol time 60× faster (REKEY_AFTER_TIME 2 s): an 8 s transfer spans about three
/// keypair switches (four keypairs; three must be seen), where messages sealed under the old keypair and the new one are in
/// flight together.
#[test]
fn counters_strictly_increase_per_keypair_across_rekeys_several_workers() {
    counters_strictly_increase(CaptureCase {
        workers: 4,
        time_scale: Some(60),
        pace: Some(8 * MIB),
        payload: 64 * MIB,
        min_keypairs: 3,
    });
}

/// The parsing and the check themselves (no root needed): a GSO super-packet splits into
/// its messages, and a counter going backwards is caught.
#[test]
fn order_check_and_gso_split_catch_reordering() {
    let message = |index: u32, counter: u64, len: usize| {
        let mut m = vec![0xa5u8; len];
        m[..4].copy_from_slice(&[4, 0, 0, 0]);
        m[4..8].copy_from_slice(&index.to_le_bytes());
        m[8..16].copy_from_slice(&counter.to_le_bytes());
        m
    };
    // Three 96-byte messages and a shorter 48-byte last one, back to back.
    let mut gso: Vec<u8> = (0..3).flat_map(|c| message(7, c, 96)).collect();
    gso.extend(message(7, 3, 48));
    let parts = split_messages(&gso);
    assert_eq!(
        parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
        [96, 96, 96, 48]
    );
    let single = message(7, 9, 1452);
    assert_eq!(split_messages(&single).len(), 1);
    assert_eq!(split_messages(&[1u8; 148]).len(), 1);

    let mut in_order = OrderCheck::default();
    for p in &parts {
        in_order.observe(p);
    }
    in_order.observe(&message(8, 0, 32)); // a new keypair starts at 0
    in_order.observe(&single);
    assert_eq!((in_order.transport, in_order.keypairs()), (6, 2));
    in_order.assert_in_order("in-order sequence");

    let mut swapped = OrderCheck::default();
    for c in [0, 2, 1, 3, 3] {
        swapped.observe(&message(7, c, 32));
    }
    assert_eq!(swapped.violations, 2, "{:?}", swapped.examples);

    // An Ethernet + IPv4 + UDP frame around the super-packet.
    let udp_len = 8 + gso.len();
    let mut frame = vec![0u8; 12];
    frame.extend([0x08, 0x00]);
    let mut ip = vec![
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2,
    ];
    ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
    frame.extend(ip);
    frame.extend(51820u16.to_be_bytes());
    frame.extend(51821u16.to_be_bytes());
    frame.extend((udp_len as u16).to_be_bytes());
    frame.extend([0, 0]);
    frame.extend(&gso);
    let d = ip_packet(1, &frame)
        .and_then(udp_datagram)
        .expect("a UDP datagram");
    assert_eq!(d.src, "192.0.2.1:51820".parse::<SocketAddr>().unwrap());
    assert_eq!(d.payload, &gso[..]);
}

// ---------------------------------------------------------------------------------------------
// 2. A reordering path

fn through_reordering_path(b_kind: &DaemonKind, n_workers: u32) {
    let pair = tunnel_pair(&DaemonKind::Ferrowgd, b_kind, &pair_options(n_workers));
    let (a, b) = (&pair.a, &pair.b);
    let what = format!("ferrowgd (FERROWGD_WORKERS={n_workers}) → {b_kind}");

    // r between a and b; the direct veth goes, so every datagram passes the relay.
    let path = ReorderingPath::insert(&pair, RelayOptions::default());

    assert!(
        ping(&a.ns, b.inner(Family::V4), 3),
        "{what}: ping through the relay"
    );
    let t = tcp_transfer(&b.ns, b.inner(Family::V4), &a.ns, RELAY_PAYLOAD);
    t.assert_ok(&format!("{what}, through the reordering relay"));
    let ((a_rx, a_tx), (b_rx, b_tx)) = settled_counters(&pair);
    let losses = path.kernel_losses(&pair);
    let dropped: u64 = losses.iter().map(Losses::total).sum();
    let (ab, ba) = path.finish();

    eprintln!(
        "{what}: relay a → b: {} datagrams in ({} transport messages, {} keypair(s), {} \
         counter violations), {} delivered, {} out of order; b → a: {} in ({} transport, {} \
         keypair(s), {} violations), {} delivered, {} out of order",
        ab.input.messages,
        ab.input.transport,
        ab.input.keypairs(),
        ab.input.violations,
        ab.delivered,
        ab.out_of_order,
        ba.input.messages,
        ba.input.transport,
        ba.input.keypairs(),
        ba.input.violations,
        ba.delivered,
        ba.out_of_order
    );
    eprintln!(
        "{what}: counters a rx {a_rx} tx {a_tx}, b rx {b_rx} tx {b_tx}; relay bytes a → b \
         {} in / {} out, b → a {} in / {} out; kernel drops a {:?} r {:?} b {:?}",
        ab.bytes_in, ab.bytes_out, ba.bytes_in, ba.bytes_out, losses[0], losses[1], losses[2]
    );

    // The relay forwarded everything, and really reordered.
    for (name, d) in [("a → b", &ab), ("b → a", &ba)] {
        assert_eq!(d.dropped, 0, "{what}: the relay {name} dropped datagrams");
        d.assert_forwarded_all(&format!("{what}: relay {name}"));
    }
    assert!(
        ab.input.transport >= RELAY_PAYLOAD / MAX_MESSAGE,
        "{what}: only {} transport messages a → b through the relay",
        ab.input.transport
    );
    assert!(
        ab.out_of_order + ba.out_of_order >= MIN_OUT_OF_ORDER,
        "{what}: the relay reordered only {} + {} datagrams",
        ab.out_of_order,
        ba.out_of_order
    );

    // ferrowgd emitted every keypair's counters in order.
    assert!(ab.input.keypairs() >= 1);
    ab.input
        .assert_in_order(&format!("{what}: a's datagrams at the relay"));
    if *b_kind == DaemonKind::Ferrowgd {
        ba.input
            .assert_in_order(&format!("{what}: b's datagrams at the relay"));
    }

    // The receiving side counted what was sent, despite the reordering.
    assert!(a_tx >= RELAY_PAYLOAD, "{what}: a tx {a_tx} < payload");
    assert!(b_rx >= RELAY_PAYLOAD, "{what}: b rx {b_rx} < payload");
    assert!(
        b_rx <= ab.bytes_out + 2 * KEEPALIVE_LEN,
        "{what}: b rx {b_rx} > the {} bytes the relay delivered to it",
        ab.bytes_out
    );
    check_mirror(&format!("{what}: a tx vs b rx"), a_tx, b_rx, dropped);
    check_mirror(&format!("{what}: b tx vs a rx"), b_tx, a_rx, dropped);
}

#[test]
fn tcp_through_a_reordering_path_one_worker() {
    if !require_netns() {
        return;
    }
    through_reordering_path(&DaemonKind::Ferrowgd, 1);
}

#[test]
fn tcp_through_a_reordering_path_several_workers() {
    if !require_netns() {
        return;
    }
    through_reordering_path(&DaemonKind::Ferrowgd, 4);
}

/// Optional: the receiver is Debian's wireguard-go (its replay window takes the reordering
/// too); only a's order is asserted.
#[test]
fn tcp_through_a_reordering_path_to_wireguard_go() {
    if !require_netns() {
        return;
    }
    let Some(kind) = DaemonKind::wireguard_go_system() else {
        eprintln!("SKIPPED: wireguard-go is not installed (optional case)");
        return;
    };
    through_reordering_path(&kind, 4);
}
