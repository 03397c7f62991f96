//! Endpoints as the kernel handles them, each case in its own network namespaces (needs root;
//! see `common::netns`), configured with the official `wg`:
//!
//! 1. endpoint switches IPv4 → IPv6 → IPv4, between two IPv6 addresses of one host, and to a
//!    link-local `[fe80::…%IF]:port` endpoint, with traffic at each step;
//! 2. `wg set IF listen-port N` in the middle of a TCP transfer (the other side roams);
//! 3. a client behind a source-NAT router with a 5 s UDP conntrack timeout and
//!    PersistentKeepalive: the server still reaches it after 15 s of idleness;
//! 4. tunnel MTUs 1280, 9000 and 34,000: TCP and maximum-size UDP datagrams arrive exact;
//! 5. wg-in-wg: a tunnel inside a tunnel;
//! 6. routing loops — a peer's endpoint routed through its own tunnel, and two interfaces in
//!    two namespaces routing each other's outer datagrams into their tunnels: the bytes sent
//!    during a 1 s ping flood stay under the kernel's 70 kB, and traffic recovers;
//! 7. `ferrowg reresolve IF CONFIG` with names from `/etc/netns/NS/hosts`.
//!
//! The multi-address server (sticky source) is covered in `netns_behaviour.rs`.

mod common;

use common::netns::*;
use common::FERROWG;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// The other side: wireguard-go (Debian's) when installed, ferrowgd otherwise.
fn other_kind() -> DaemonKind {
    DaemonKind::wireguard_go_system().unwrap_or(DaemonKind::Ferrowgd)
}

fn set_endpoint(ns: &Netns, ifname: &str, peer: &str, endpoint: &str) {
    wg(ns, &["set", ifname, "peer", peer, "endpoint", endpoint]);
}

/// One ping (10 s deadline) — "works within one ping".
fn ping1(ns: &Netns, to: IpAddr) -> bool {
    ping(ns, to, 1)
}

// ---------------------------------------------------------------------------------------------
// 1. Endpoint switches

#[test]
fn endpoint_switches_between_families_addresses_and_link_local() {
    if !require_netns() {
        return;
    }
    let b_kind = other_kind();
    let pair = tunnel_pair(&DaemonKind::Ferrowgd, &b_kind, &PairOptions::default());
    let (a, b) = (&pair.a, &pair.b);
    let b_key = &b.keys.public;
    let a_key = &a.keys.public;
    let a_ep = |f: Family| SocketAddr::new(pair.link.a(f), a.listen_port).to_string();
    let b_ep = |f: Family| SocketAddr::new(pair.link.b(f), b.listen_port).to_string();

    assert!(ping1(&a.ns, b.inner(Family::V4)), "initial ping");
    assert_eq!(endpoint_of(&b.ns, b.ifname(), a_key), a_ep(Family::V4));
    for step in [Family::V6, Family::V4, Family::V6] {
        set_endpoint(&a.ns, a.ifname(), b_key, &b_ep(step));
        assert!(
            ping1(&a.ns, b.inner(Family::V4)),
            "ping after switching to {step} endpoint {}",
            b_ep(step)
        );
        assert!(
            wait_until(Duration::from_secs(3), || endpoint_of(
                &b.ns,
                b.ifname(),
                a_key
            ) == a_ep(step)),
            "{b_kind} shows {} for a after the switch to {step}, not {}",
            endpoint_of(&b.ns, b.ifname(), a_key),
            a_ep(step)
        );
        eprintln!("switched to {step}: ok");
    }

    // A second IPv6 address of the same host.
    let v6 = match pair.link.b(Family::V6) {
        IpAddr::V6(v) => v.segments(),
        _ => unreachable!(),
    };
    let second = Ipv6Addr::new(v6[0], v6[1], v6[2], v6[3], 0, 0, 0, 0x99);
    add_address(&b.ns, &pair.link.b_ifname, second.into(), V6_PREFIX);
    let second_ep = SocketAddr::new(second.into(), b.listen_port).to_string();
    set_endpoint(&a.ns, a.ifname(), b_key, &second_ep);
    assert!(
        ping1(&a.ns, b.inner(Family::V6)),
        "ping via b's second IPv6 address"
    );
    assert_eq!(endpoint_of(&a.ns, a.ifname(), b_key), second_ep);
    eprintln!("second IPv6 address: ok");

    // Link-local with a scope: b's fe80:: address on the veth, scoped to a's end of it.
    let ll = b.ns.ip(&[
        "-6",
        "-o",
        "addr",
        "show",
        "dev",
        &pair.link.b_ifname,
        "scope",
        "link",
    ]);
    let ll = ll
        .split_whitespace()
        .skip_while(|w| *w != "inet6")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .expect("b has a link-local address")
        .to_string();
    // Wait out DAD on both link-local addresses (tentative ones cannot be used).
    let dad_done = |ns: &Netns, ifname: &str| {
        !ns.ip(&["-6", "addr", "show", "dev", ifname, "tentative"])
            .contains("inet6")
    };
    assert!(wait_until(Duration::from_secs(5), || dad_done(
        &a.ns,
        &pair.link.a_ifname
    ) && dad_done(
        &b.ns,
        &pair.link.b_ifname
    )));
    let scoped = format!("[{ll}%{}]:{}", pair.link.a_ifname, b.listen_port);
    let out = wg_with_status(
        &a.ns,
        &["set", a.ifname(), "peer", b_key, "endpoint", &scoped],
    );
    // `wg` hands the scope over as the interface name; ferrowgd resolves it to the index.
    if let Err(e) = out {
        panic!(
            "link-local endpoint {scoped} refused: {e}\n{}",
            a.daemon.log()
        );
    }
    let shown = endpoint_of(&a.ns, a.ifname(), b_key);
    eprintln!("link-local endpoint {scoped} accepted; a shows {shown}");
    assert!(
        ping1(&a.ns, b.inner(Family::V4)),
        "ping via link-local endpoint {scoped} (a shows {shown})"
    );
    assert!(
        shown.starts_with(&format!("[{ll}%")),
        "a shows {shown} for {scoped}"
    );
}

/// `wg ARGS` in `ns`: stdout, or the status and output on failure.
fn wg_with_status(ns: &Netns, args: &[&str]) -> Result<String, String> {
    let out = ns.try_run(system_wg(), args);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// 2. listen-port change under a transfer

#[test]
fn listen_port_change_mid_transfer() {
    if !require_netns() {
        return;
    }
    let b_kind = other_kind();
    let pair = tunnel_pair(&DaemonKind::Ferrowgd, &b_kind, &PairOptions::default());
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping1(&a.ns, b.inner(Family::V4)));
    const BYTES: u64 = 24 * MIB;
    let new_port: u16 = 40_123;
    std::thread::scope(|scope| {
        let t =
            scope.spawn(|| tcp_transfer_paced(&b.ns, b.inner(Family::V4), &a.ns, BYTES, 4 * MIB));
        assert!(
            wait_until(Duration::from_secs(20), || b.transfer_with(a).0 > BYTES / 4),
            "transfer did not get going"
        );
        wg(
            &a.ns,
            &["set", a.ifname(), "listen-port", &new_port.to_string()],
        );
        let at = b.transfer_with(a).0;
        eprintln!(
            "listen-port {} → {new_port} after {at} bytes",
            a.listen_port
        );
        let t = t.join().unwrap();
        t.assert_ok("ferrowgd → peer across a listen-port change");
        assert!(at < BYTES, "not mid-transfer");
    });
    assert_eq!(
        wg(&a.ns, &["show", a.ifname(), "listen-port"]).trim(),
        new_port.to_string()
    );
    assert_eq!(
        endpoint_of(&b.ns, b.ifname(), &a.keys.public),
        SocketAddr::new(pair.link.a(Family::V4), new_port).to_string(),
        "{b_kind} did not roam to a's new port"
    );
    assert!(ping1(&b.ns, a.inner(Family::V4)), "ping b → a afterwards");
}

// ---------------------------------------------------------------------------------------------
// 3. NAT with a short conntrack timeout

#[test]
fn keepalive_holds_nat_mapping_open() {
    if !require_netns() {
        return;
    }
    if find_program("nft").is_none() {
        skip("`nft` is not installed");
        return;
    }
    let (client_ns, router, server_ns) = (Netns::new(), Netns::new(), Netns::new());
    let lc = link(&client_ns, &router); // client .1 — router .2
    let ls = link(&router, &server_ns); // router .1 — server .2
    client_ns.ip(&[
        "route",
        "add",
        "default",
        "via",
        &lc.b(Family::V4).to_string(),
    ]);
    router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    router.run("nft", &["add", "table", "ip", "nat"]);
    router.run(
        "nft",
        &["add chain ip nat post { type nat hook postrouting priority 100 ; }"],
    );
    router.run(
        "nft",
        &[
            "add",
            "rule",
            "ip",
            "nat",
            "post",
            "oifname",
            &ls.a_ifname,
            "masquerade",
        ],
    );
    // The conntrack sysctls are per namespace once nf_conntrack is loaded (the rule above
    // loads it).
    let mut timeouts_set = true;
    for key in [
        "net.netfilter.nf_conntrack_udp_timeout=5",
        "net.netfilter.nf_conntrack_udp_timeout_stream=5",
    ] {
        let out = router.try_run("sysctl", &["-qw", key]);
        if !out.status.success() {
            timeouts_set = false;
            eprintln!(
                "cannot set {key} in the router namespace: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    assert!(
        timeouts_set,
        "UDP conntrack timeouts not settable per netns"
    );

    let inner = tunnel_addresses();
    let server_kind = DaemonKind::boringtun().unwrap_or(DaemonKind::Ferrowgd);
    let client = start_daemon(&client_ns, &DaemonKind::Ferrowgd, &unique_ifname());
    let server = start_daemon(&server_ns, &server_kind, &unique_ifname());
    let (ck, sk) = (Keypair::generate(), Keypair::generate());
    wg_set_interface(&client_ns, client.ifname(), &ck.private, Some(51820));
    wg_set_interface(&server_ns, server.ifname(), &sk.private, Some(51821));
    wg_set_peer(
        &client_ns,
        client.ifname(),
        &PeerSpec {
            public_key: sk.public.clone(),
            endpoint: Some(SocketAddr::new(ls.b(Family::V4), 51821)),
            allowed_ips: vec![format!("{}/32", inner.b_v4)],
            persistent_keepalive: Some(2),
            ..PeerSpec::default()
        },
    );
    wg_set_peer(
        &server_ns,
        server.ifname(),
        &PeerSpec {
            public_key: ck.public.clone(),
            allowed_ips: vec![format!("{}/32", inner.a_v4)],
            ..PeerSpec::default()
        },
    );
    add_address(&client_ns, client.ifname(), inner.a_v4.into(), V4_PREFIX);
    add_address(&server_ns, server.ifname(), inner.b_v4.into(), V4_PREFIX);
    link_up(&client_ns, client.ifname(), Some(TUNNEL_MTU));
    link_up(&server_ns, server.ifname(), Some(TUNNEL_MTU));

    assert!(ping1(&client_ns, inner.b_v4.into()), "client → server");
    let seen = endpoint_of(&server_ns, server.ifname(), &ck.public);
    assert!(
        seen.starts_with(&ls.a(Family::V4).to_string()),
        "server sees {seen}, not the router's address"
    );
    eprintln!("server sees the client at {seen} (NAT); idling 15 s");
    std::thread::sleep(Duration::from_secs(15));
    assert!(
        ping1(&server_ns, inner.a_v4.into()),
        "server → client after 3× the conntrack timeout"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. MTUs

/// Sends `count` datagrams of `size` bytes (a pattern with their index) from `from` to
/// `to:port` and counts the exact ones that arrive.
fn udp_datagrams(from: &Netns, to_ns: &Netns, to: IpAddr, size: usize, count: u32) -> u32 {
    let bind: SocketAddr = SocketAddr::new(to, 0);
    let rx = in_netns(to_ns, move || UdpSocket::bind(bind).expect("bind receiver"));
    rx.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let dst = rx.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        let mut good = 0;
        while let Ok(n) = rx.recv(&mut buf) {
            let i = buf[0];
            if n == size
                && buf[..n].iter().enumerate().all(|(j, &b)| {
                    b == if j == 0 {
                        i
                    } else {
                        (j as u8).wrapping_mul(31).wrapping_add(i)
                    }
                })
            {
                good += 1;
            }
        }
        good
    });
    in_netns(from, move || {
        let tx = UdpSocket::bind(SocketAddr::new(
            if dst.is_ipv4() {
                Ipv4Addr::UNSPECIFIED.into()
            } else {
                Ipv6Addr::UNSPECIFIED.into()
            },
            0,
        ))
        .unwrap();
        for i in 0..count as u8 {
            let msg: Vec<u8> = (0..size)
                .map(|j| {
                    if j == 0 {
                        i
                    } else {
                        (j as u8).wrapping_mul(31).wrapping_add(i)
                    }
                })
                .collect();
            tx.send_to(&msg, dst)
                .unwrap_or_else(|e| panic!("send {size} bytes: {e}"));
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    receiver.join().unwrap()
}

fn mtu_case(mtu: u32) {
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            mtu,
            ..PairOptions::default()
        },
    );
    let (a, b) = (&pair.a, &pair.b);
    // ferrowgd reads the interface MTU once a second.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(ping1(&a.ns, b.inner(Family::V4)), "MTU {mtu}: ping");
    for (fam, hdr) in [(Family::V4, 28usize), (Family::V6, 48)] {
        let size = mtu as usize - hdr;
        let got = udp_datagrams(&a.ns, &b.ns, b.inner(fam), size, 10);
        eprintln!("MTU {mtu}: {got}/10 {fam} UDP datagrams of {size} bytes arrived exact");
        assert_eq!(got, 10, "MTU {mtu}: {fam} datagrams of {size} bytes");
    }
    tcp_transfer_with_timeout(
        &b.ns,
        b.inner(Family::V4),
        &a.ns,
        8 * MIB,
        Duration::from_secs(40),
    )
    .assert_ok(&format!("MTU {mtu}: a → b"));
    tcp_transfer_with_timeout(
        &a.ns,
        a.inner(Family::V6),
        &b.ns,
        8 * MIB,
        Duration::from_secs(40),
    )
    .assert_ok(&format!("MTU {mtu}: b → a"));
}

#[test]
fn mtu_1280() {
    if require_netns() {
        mtu_case(1280);
    }
}

#[test]
fn mtu_9000() {
    if require_netns() {
        mtu_case(9000);
    }
}

#[test]
fn mtu_34000() {
    if require_netns() {
        mtu_case(34_000);
    }
}

// ---------------------------------------------------------------------------------------------
// 5. wg-in-wg

#[test]
fn tunnel_inside_a_tunnel() {
    if !require_netns() {
        return;
    }
    let outer = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let inner = tunnel_addresses();
    let ports = (52820u16, 52821u16);
    let mut sides = Vec::new();
    for (s, port) in [(&outer.a, ports.0), (&outer.b, ports.1)] {
        let d = start_daemon(&s.ns, &DaemonKind::Ferrowgd, &unique_ifname());
        let k = Keypair::generate();
        wg_set_interface(&s.ns, d.ifname(), &k.private, Some(port));
        sides.push((d, k));
    }
    let peers = [
        (
            &outer.a,
            &sides[0],
            &sides[1],
            outer.b.inner_v6,
            ports.1,
            inner.a_v4,
            inner.b_v4,
        ),
        (
            &outer.b,
            &sides[1],
            &sides[0],
            outer.a.inner_v6,
            ports.0,
            inner.b_v4,
            inner.a_v4,
        ),
    ];
    for (s, (d, _), (_, other_k), ep, port, mine, theirs) in peers {
        wg_set_peer(
            &s.ns,
            d.ifname(),
            &PeerSpec {
                public_key: other_k.public.clone(),
                endpoint: Some(SocketAddr::new(ep.into(), port)),
                allowed_ips: vec![format!("{theirs}/32")],
                ..PeerSpec::default()
            },
        );
        add_address(&s.ns, d.ifname(), mine.into(), V4_PREFIX);
        link_up(&s.ns, d.ifname(), Some(TUNNEL_MTU - 80));
    }
    assert!(
        ping(&outer.a.ns, inner.b_v4.into(), 3),
        "ping through wg-in-wg"
    );
    tcp_transfer_with_timeout(
        &outer.b.ns,
        inner.b_v4.into(),
        &outer.a.ns,
        2 * MIB,
        Duration::from_secs(40),
    )
    .assert_ok("TCP through wg-in-wg");
    let (rx, _) = peer_transfer(&outer.b.ns, outer.b.ifname(), &outer.a.keys.public);
    assert!(rx > 2 * MIB, "the outer tunnel carried only {rx} bytes");
}

// ---------------------------------------------------------------------------------------------
// 6. Routing loop

/// What the kernel sends during a 1 s ping flood into a routing loop (issue #10's figure).
const LOOP_BUDGET: u64 = 70_000;

/// `ping -f` for one second, then half a second for what is in flight to settle.
fn ping_flood(ns: &Netns, to: IpAddr) {
    let _ = ns.try_run(
        "ping",
        &["-f", "-q", "-w", "1", "-s", "56", &to.to_string()],
    );
    std::thread::sleep(Duration::from_millis(500));
}

/// The daemon survived the loop and still answers `wg show` promptly.
fn assert_responsive(side: &Side) {
    let started = Instant::now();
    wg(&side.ns, &["show", side.ifname()]);
    assert!(started.elapsed() < Duration::from_secs(2), "wg show slow");
    assert!(side.daemon.process().exited().is_none(), "ferrowgd died");
}

#[test]
fn routing_loop_is_bounded_and_recovers() {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping1(&a.ns, b.inner(Family::V4)));
    // The classic mistake: the peer's endpoint inside its allowed IPs, routed into the tunnel.
    let b_outer = format!("{}/32", pair.link.b(Family::V4));
    wg(
        &a.ns,
        &[
            "set",
            a.ifname(),
            "peer",
            &b.keys.public,
            "allowed-ips",
            &format!("{}/32,{}/128,{b_outer}", b.inner_v4, b.inner_v6),
        ],
    );
    a.ns.ip(&["route", "add", &b_outer, "dev", a.ifname()]);
    let veth0 = link_stat(&a.ns, &pair.link.a_ifname, "tx_bytes");
    let (_, tx0) = a.transfer_with(b);
    ping_flood(&a.ns, b.inner(Family::V4));
    let (_, tx1) = a.transfer_with(b);
    let veth = link_stat(&a.ns, &pair.link.a_ifname, "tx_bytes") - veth0;
    let tun_tx = link_stat(&a.ns, a.ifname(), "tx_packets");
    eprintln!(
        "routing loop (own tunnel): ferrowgd sent {} bytes ({veth} bytes on the wire) into the \
         loop during a 1 s ping flood (the kernel: < 70 kB); tunnel tx_packets {tun_tx}",
        tx1 - tx0
    );
    assert_responsive(a);
    // The kernel sends < 70 kB; ferrowgd drops its own datagrams coming back (was ~150 MB).
    assert!(
        tx1 - tx0 < LOOP_BUDGET,
        "{} bytes sent into the loop",
        tx1 - tx0
    );
    assert!(veth < LOOP_BUDGET, "{veth} bytes on the wire");
    // Fix the route: traffic recovers.
    a.ns.ip(&["route", "del", &b_outer, "dev", a.ifname()]);
    assert!(
        ping(&a.ns, b.inner(Family::V4), 2),
        "no recovery after the route was fixed"
    );
}

/// Two interfaces in two namespaces whose outer datagrams are routed into each other: A's
/// endpoint for B (198.51.100.2) is not B's address but routed by B's namespace into B's
/// tunnel, and B's endpoint for A (198.51.100.1) likewise into A's. With live sessions each
/// datagram would be sealed by the other side, come back, be sealed again, grow and fragment;
/// ferrowgd recognises the datagrams addressed to itself and drops them on the way in.
#[test]
fn two_interfaces_routed_into_each_other_are_bounded_and_recover() {
    if require_netns() {
        two_interface_loop(&DaemonKind::Ferrowgd);
    }
}

/// The same loop with wireguard-go as the other interface: it seals whatever it is routed,
/// ferrowgd ends the loop at its end.
#[test]
fn two_interface_loop_with_wireguard_go_is_bounded() {
    if !require_netns() {
        return;
    }
    match DaemonKind::wireguard_go_system() {
        Some(kind) => two_interface_loop(&kind),
        None => {
            skip("Debian's wireguard-go is not installed");
        }
    }
}

fn two_interface_loop(b_kind: &DaemonKind) {
    let pair = tunnel_pair(&DaemonKind::Ferrowgd, b_kind, &PairOptions::default());
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping1(&a.ns, b.inner(Family::V4)));
    let loop_a = "198.51.100.1";
    let loop_b = "198.51.100.2";
    for (me, other, mine, theirs, gateway) in [
        (a, b, loop_a, loop_b, pair.link.b(Family::V4)),
        (b, a, loop_b, loop_a, pair.link.a(Family::V4)),
    ] {
        me.ns.run("sysctl", &["-q", "-w", "net.ipv4.ip_forward=1"]);
        wg_set_peer(
            &me.ns,
            me.ifname(),
            &PeerSpec {
                public_key: other.keys.public.clone(),
                endpoint: Some(SocketAddr::new(theirs.parse().unwrap(), other.listen_port)),
                allowed_ips: vec![
                    format!("{}/32", other.inner_v4),
                    format!("{}/128", other.inner_v6),
                    format!("{mine}/32"),
                ],
                ..PeerSpec::default()
            },
        );
        // The other side's endpoint leaves over the veth; ours, arriving from there, is
        // forwarded into our own tunnel.
        me.ns
            .ip(&["route", "add", theirs, "via", &gateway.to_string()]);
        me.ns.ip(&["route", "add", mine, "dev", me.ifname()]);
    }
    let veth0 = link_stat(&a.ns, &pair.link.a_ifname, "tx_bytes")
        + link_stat(&b.ns, &pair.link.b_ifname, "tx_bytes");
    let (_, a0) = a.transfer_with(b);
    let (_, b0) = b.transfer_with(a);
    ping_flood(&a.ns, b.inner(Family::V4));
    let (_, a1) = a.transfer_with(b);
    let (_, b1) = b.transfer_with(a);
    let veth = link_stat(&a.ns, &pair.link.a_ifname, "tx_bytes")
        + link_stat(&b.ns, &pair.link.b_ifname, "tx_bytes")
        - veth0;
    let sent = (a1 - a0) + (b1 - b0);
    eprintln!(
        "routing loop (two interfaces, ferrowgd + {}): the daemons sent {sent} bytes (A {}, B \
         {}; {veth} bytes on the wire) into the loop during a 1 s ping flood (the kernel: < 70 kB)",
        b_kind.label(),
        a1 - a0,
        b1 - b0
    );
    assert_responsive(a);
    if *b_kind == DaemonKind::Ferrowgd {
        assert_responsive(b);
    }
    assert!(sent > 0, "the flood never entered the tunnel");
    assert!(sent < LOOP_BUDGET, "{sent} bytes sent into the loop");
    assert!(veth < LOOP_BUDGET, "{veth} bytes on the wire");
    // Fix it: each endpoint address becomes the host's own, no longer routed into a tunnel.
    for (me, mine, ifname) in [
        (a, loop_a, &pair.link.a_ifname),
        (b, loop_b, &pair.link.b_ifname),
    ] {
        me.ns.ip(&["route", "del", mine, "dev", me.ifname()]);
        me.ns
            .ip(&["addr", "add", &format!("{mine}/32"), "dev", ifname]);
    }
    assert!(
        ping(&a.ns, b.inner(Family::V4), 2),
        "no recovery after the routes were fixed"
    );
    assert!(ping1(&b.ns, a.inner(Family::V4)));
}

// ---------------------------------------------------------------------------------------------
// 7. reresolve

/// `/etc/netns/NS/hosts` (bind-mounted over /etc/hosts by `ip netns exec`), removed on drop.
struct NetnsHosts(PathBuf);

impl NetnsHosts {
    fn write(ns: &Netns, text: &str) -> NetnsHosts {
        let dir = PathBuf::from("/etc/netns").join(ns.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("hosts"), text).unwrap();
        NetnsHosts(dir)
    }
}

impl Drop for NetnsHosts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn reresolve_updates_only_stale_peers() {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping1(&a.ns, b.inner(Family::V4)), "fresh handshake with b");
    // A second, stale peer (never a handshake).
    let stale = Keypair::generate();
    wg_set_peer(
        &a.ns,
        a.ifname(),
        &PeerSpec {
            public_key: stale.public.clone(),
            endpoint: Some("192.0.2.200:51000".parse().unwrap()),
            allowed_ips: vec!["198.51.100.250/32".into()],
            ..PeerSpec::default()
        },
    );
    let b_before = endpoint_of(&a.ns, a.ifname(), &b.keys.public);
    let conf = SecretFile::new(
        "reresolve.conf",
        &format!(
            "[Interface]\nPrivateKey = {}\n\n[Peer]\nPublicKey = {}\nEndpoint = fresh.example:{}\n\
             AllowedIPs = {}/32\n\n[Peer] # stale\nPublicKey = {}\nEndpoint = stale.example:51000\n",
            a.keys.private, b.keys.public, b.listen_port, b.inner_v4, stale.public
        ),
    );
    let run = |hosts: &str| {
        let _h = NetnsHosts::write(&a.ns, hosts);
        let out =
            a.ns.try_run(FERROWG, &["reresolve", a.ifname(), conf.path()]);
        assert!(
            out.status.success(),
            "ferrowg reresolve: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run("127.0.0.1 localhost\n192.0.2.201 stale.example\n192.0.2.222 fresh.example\n");
    assert_eq!(
        endpoint_of(&a.ns, a.ifname(), &stale.public),
        "192.0.2.201:51000",
        "the stale peer's new address was not picked up"
    );
    assert_eq!(
        endpoint_of(&a.ns, a.ifname(), &b.keys.public),
        b_before,
        "the fresh peer was touched"
    );
    run("2001:db8:ffff::7 stale.example\n192.0.2.222 fresh.example\n");
    assert_eq!(
        endpoint_of(&a.ns, a.ifname(), &stale.public),
        "[2001:db8:ffff::7]:51000",
        "the stale peer's changed address was not picked up"
    );
    assert!(ping1(&a.ns, b.inner(Family::V4)), "b still reachable");
}
