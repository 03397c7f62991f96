//! TUN offloads seen from the kernel (needs root; see `common::netns`).
//!
//! With offloads, ferrowgd reads TCP super-packets from its TUN and writes the segments it
//! receives back coalesced (`ferrowg_device::gro`): the TUN's packet counters count super-packets,
//! far fewer than the segments on the wire, and the kernel must accept every one of them
//! (checksums, lengths, the virtio-net header), which the byte-checked transfers show. With
//! `FERROWG_NO_TUN_OFFLOAD=1` every segment is one packet each way.

mod common;

use common::netns::*;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

const BYTES: u64 = 16 << 20;
/// Largest TCP payload per segment through a 1420-byte tunnel MTU (IPv4, no options).
const MSS: u64 = 1380;

/// A ferrowgd pair with `tun_switch` as FERROWG_NO_TUN_OFFLOAD, and the UDP offloads on
/// regardless of the test run's environment: without them a socket read returns one
/// datagram, and one datagram per batch leaves nothing to coalesce.
fn pair_with(tun_switch: &str) -> TunnelPair {
    let opts = DaemonOptions::with_env(&[
        ("FERROWG_NO_TUN_OFFLOAD", tun_switch),
        ("FERROWG_NO_UDP_OFFLOAD", ""),
    ]);
    tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            daemon_options: (opts.clone(), opts),
            ..PairOptions::default()
        },
    )
}

/// Packets the sender's TUN handed to ferrowgd and the receiver's ferrowgd wrote to its TUN
/// during a byte-checked transfer a → b.
fn tun_packets_for_transfer(pair: &TunnelPair, family: Family) -> (u64, u64) {
    let (a, b) = (&pair.a, &pair.b);
    let tx0 = link_stat(&a.ns, a.ifname(), "tx_packets");
    let rx0 = link_stat(&b.ns, b.ifname(), "rx_packets");
    let t = tcp_transfer(&b.ns, b.inner(family), &a.ns, BYTES);
    assert!(t.received_ok, "TCP a → b over {family:?}: {:?}", t.error);
    (
        link_stat(&a.ns, a.ifname(), "tx_packets") - tx0,
        link_stat(&b.ns, b.ifname(), "rx_packets") - rx0,
    )
}

#[test]
fn tcp_crosses_the_tun_as_super_packets_and_as_segments_without_offload() {
    if !require_netns() {
        return;
    }
    let segments = BYTES / MSS;
    let pair = pair_with("");
    assert!(
        pair.b.daemon.log().contains("TUN offload: TCP"),
        "{}",
        pair.b.daemon.log()
    );
    for family in [Family::V4, Family::V6] {
        let (read, written) = tun_packets_for_transfer(&pair, family);
        println!("{family:?}: {segments} segments, {read} TUN reads, {written} TUN writes");
        assert!(
            read < segments / 4,
            "{family:?}: {read} packets read from the sender's TUN for ~{segments} segments"
        );
        assert!(
            written < segments / 4,
            "{family:?}: {written} packets written to the receiver's TUN for ~{segments} segments"
        );
    }
    drop(pair);

    let pair = pair_with("1");
    assert!(
        pair.b.daemon.log().contains("TUN offload: off"),
        "{}",
        pair.b.daemon.log()
    );
    let (read, written) = tun_packets_for_transfer(&pair, Family::V4);
    println!("no offload: {segments} segments, {read} TUN reads, {written} TUN writes");
    assert!(
        read >= segments && written >= segments,
        "{read} / {written}"
    );
}

/// UDP datagrams in bursts a → b: every one that arrives is whole, nearly all arrive, and
/// where the kernel takes UDP super-packets fewer packets than datagrams cross b's TUN. Each
/// burst is queued in a's TUN while a's ferrowgd is stopped (SIGSTOP), so that it reads the
/// burst as one batch and b receives it as one: left running, a real-time ferrowgd takes
/// each datagram as it comes, and whether bursts form depends on which CPU runs what.
#[test]
fn udp_bursts_arrive_whole_and_coalesced_where_the_kernel_allows() {
    if !require_netns() {
        return;
    }
    let pair = pair_with("");
    let (a, b) = (&pair.a, &pair.b);
    let uso = pair.b.daemon.log().contains("TUN offload: TCP, UDP");
    const BURSTS: u32 = 100;
    const PER_BURST: u32 = 40;
    const LEN: usize = 1200;
    let datagram = |n: u32| -> Vec<u8> {
        let mut d = vec![0u8; LEN];
        d[..4].copy_from_slice(&n.to_be_bytes());
        for (i, x) in d[4..].iter_mut().enumerate() {
            *x = (n as usize * 31 + i) as u8;
        }
        d
    };
    let server_addr = b.inner(Family::V4);
    let receiver = in_netns(&b.ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(server_addr, 0)).expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s
    });
    let target = receiver.local_addr().unwrap();
    let rx0 = link_stat(&b.ns, b.ifname(), "rx_packets");
    let got = std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = receiver.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        got
    });
    let from: IpAddr = a.inner(Family::V4);
    let sender = in_netns(&a.ns, move || {
        UdpSocket::bind(SocketAddr::new(from, 0)).expect("bind")
    });
    let start = Instant::now();
    for burst in 0..BURSTS {
        a.daemon.process().signal(libc::SIGSTOP);
        for i in 0..PER_BURST {
            sender
                .send_to(&datagram(burst * PER_BURST + i), target)
                .expect("send");
        }
        a.daemon.process().signal(libc::SIGCONT);
        // Paced to ~5 MB/s: loss would only come from full queues, not from ferrowgd.
        let due = Duration::from_millis(10) * (burst + 1);
        std::thread::sleep(due.saturating_sub(start.elapsed()));
    }
    let got = got.join().unwrap();
    let written = link_stat(&b.ns, b.ifname(), "rx_packets") - rx0;
    let sent = BURSTS * PER_BURST;
    println!(
        "UDP: {sent} sent, {} received, {written} TUN writes, USO {uso}",
        got.len()
    );
    for d in &got {
        let n = u32::from_be_bytes(d[..4].try_into().unwrap());
        assert!(n < sent && *d == datagram(n), "datagram {n} changed");
    }
    assert!(
        got.len() as u32 >= sent * 95 / 100,
        "{} of {sent}",
        got.len()
    );
    if uso {
        assert!(
            written < got.len() as u64 / 4,
            "{written} TUN writes for {} datagrams",
            got.len()
        );
    }
}
