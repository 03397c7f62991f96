//! ferrowgd's behaviour as a network citizen and as a process, each case in its own network
//! namespaces (needs root; see `common::netns`):
//!
//! 1. roaming: the initiator's outer address changes in the middle of a TCP transfer, the
//!    transfer completes and the responder (ferrowgd or Debian's wireguard-go) follows;
//! 2. the source check: an inner packet whose source is outside the sender's allowed IPs is
//!    dropped by the receiver;
//! 3. cryptokey routing: `wg set … allowed-ips` moves a prefix between peers at once;
//! 4. the interface moved to another namespace while the UDP socket stays where it was born;
//! 5. `wg-quick up`/`down` with ferrowgd as the user-space implementation;
//! 6. silence towards unauthenticated senders (random, malformed, forged and replayed
//!    datagrams get no answer at all);
//! 7. rekeying every 2 s (accelerated protocol time) under a long TCP transfer;
//! 8. the process contract of wireguard-go: daemonizing, the three exit triggers, socket
//!    permissions, the log, `listen_port=0`, refusing an invalid `set` whole, fwmark, usage.

mod common;

use common::netns::*;
use ferrowg_proto::keys::{PresharedKey, PrivateKey, PublicKey};
use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers

/// `wg show IFNAME allowed-ips` as `(peer, [prefix…])`.
fn allowed_ips(ns: &Netns, ifname: &str) -> Vec<(String, Vec<String>)> {
    wg(ns, &["show", ifname, "allowed-ips"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, list)| {
            let prefixes = list
                .split_whitespace()
                .filter(|p| *p != "(none)")
                .map(str::to_string)
                .collect();
            (k.to_string(), prefixes)
        })
        .collect()
}

fn allowed_ips_of(ns: &Netns, ifname: &str, peer: &str) -> Vec<String> {
    allowed_ips(ns, ifname)
        .into_iter()
        .find(|(k, _)| k == peer)
        .map(|(_, l)| l)
        .unwrap_or_else(|| panic!("peer {peer} not on {ifname}"))
}

/// One `ping` from `ns` (optionally from source address `from`): its output when a reply
/// came, `None` otherwise.
fn ping_once(ns: &Netns, to: IpAddr, from: Option<IpAddr>, wait_s: u32) -> Option<String> {
    let family = if to.is_ipv4() { "-4" } else { "-6" };
    let (from, to, wait) = (
        from.map(|a| a.to_string()),
        to.to_string(),
        wait_s.to_string(),
    );
    let mut args = vec![family, "-n", "-c", "1", "-W", &wait];
    if let Some(f) = &from {
        args.extend(["-I", f]);
    }
    args.push(&to);
    let out = ns.try_run("ping", &args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The `ttl=N` of the reply in a `ping` output (the answering host's default TTL).
fn reply_ttl(ping_output: &str) -> Option<u8> {
    let at = ping_output.find("ttl=")? + 4;
    let digits: String = ping_output[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Sides built by hand (when [`tunnel_pair`]'s symmetric setup does not fit): a daemon with
/// a fresh key pair on `listen_port`, its tunnel interface carrying `inner_v4`/`inner_v6`.
fn side(
    ns: Netns,
    kind: &DaemonKind,
    listen_port: u16,
    outer: IpAddr,
    inner_v4: Ipv4Addr,
    inner_v6: Ipv6Addr,
    opts: &DaemonOptions,
) -> Side {
    let daemon = start_daemon_with(&ns, kind, &unique_ifname(), opts);
    let keys = Keypair::generate();
    wg_set_interface(&ns, daemon.ifname(), &keys.private, Some(listen_port));
    Side {
        daemon,
        ns,
        keys,
        listen_port,
        outer,
        inner_v4,
        inner_v6,
    }
}

/// Adds the side's inner addresses (in /30 and /64) and brings its interface up.
fn address_and_up(s: &Side) {
    add_address(&s.ns, s.ifname(), s.inner_v4.into(), V4_PREFIX);
    add_address(&s.ns, s.ifname(), s.inner_v6.into(), V6_PREFIX);
    link_up(&s.ns, s.ifname(), Some(TUNNEL_MTU));
}

/// `peer` as seen by `me`: its key, allowed IPs = its inner /32 and /128, and optionally its
/// endpoint.
fn peer_of(other: &Side, with_endpoint: bool) -> PeerSpec {
    PeerSpec {
        public_key: other.keys.public.clone(),
        endpoint: with_endpoint.then(|| other.endpoint()),
        allowed_ips: vec![
            format!("{}/32", other.inner_v4),
            format!("{}/128", other.inner_v6),
        ],
        ..PeerSpec::default()
    }
}

fn time_scaled(scale: u32) -> DaemonOptions {
    DaemonOptions {
        env: vec![("FERROWGD_TEST_TIME_SCALE".into(), scale.to_string())],
        ..DaemonOptions::default()
    }
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn pid_ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // "pid (comm) S …": the state follows the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(true),
    }
}

/// Whether something in `ns` can bind UDP `port` on the wildcard address of both families
/// (one after the other: `[::]` is dual-stack, it would collide with our own IPv4 socket).
fn udp_port_free(ns: &Netns, port: u16) -> Result<(), String> {
    in_netns(ns, move || {
        UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            .map_err(|e| format!("IPv4 port {port}: {e}"))?;
        UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)))
            .map_err(|e| format!("IPv6 port {port}: {e}"))?;
        Ok(())
    })
}

/// `ss -uaneH` lines of the UDP sockets bound to `port` in `ns`.
fn udp_sockets_on(ns: &Netns, port: u16) -> Vec<String> {
    let out = ns.run("ss", &["-uaneH"]);
    let suffix = format!(":{port}");
    out.lines()
        .filter(|l| {
            l.split_whitespace()
                .nth(3)
                .is_some_and(|local| local.ends_with(&suffix))
        })
        .map(str::to_string)
        .collect()
}

/// Sends one raw UAPI request and returns the answer up to and including the blank line.
fn uapi_raw(ifname: &str, request: &str) -> String {
    let path = uapi_socket(ifname);
    let mut s = UnixStream::connect(&path)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 1024];
    while !text.ends_with(b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) => panic!("UAPI answer from {}: {e}", path.display()),
        }
    }
    String::from_utf8(text).expect("UAPI text is UTF-8")
}

fn uapi_value(get: &str, key: &str) -> Option<String> {
    get.lines()
        .take_while(|l| !l.starts_with("public_key="))
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

// ---------------------------------------------------------------------------------------------
// 1. Roaming in the middle of a transfer

const ROAM_PAYLOAD: u64 = 24 * MIB;
/// 4 MiB/s: the transfer lasts about 6 s, the roam happens after about 1.5 s.
const ROAM_PACE: u64 = 4 * MIB;

/// a (ferrowgd, the initiator) ↔ b (`b_kind`, which has no endpoint for a and learns it from
/// a's packets). While a TCP stream a → b runs, a's outer IPv4 address is replaced by one in
/// another subnet (a new address, a /32 route towards b with it as source, then the old
/// address deleted): b must follow a to the new address from authenticated data alone, the
/// stream must complete checksum-exact, and b's `wg show endpoints` must name the new
/// address.
fn roaming(b_kind: DaemonKind) {
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let veth = link(&ns_a, &ns_b);
    let inner = tunnel_addresses();
    let opts = DaemonOptions::default();
    let a = side(
        ns_a,
        &DaemonKind::Ferrowgd,
        51820,
        veth.a(Family::V4),
        inner.a_v4,
        inner.a_v6,
        &opts,
    );
    let b = side(
        ns_b,
        &b_kind,
        51821,
        veth.b(Family::V4),
        inner.b_v4,
        inner.b_v6,
        &opts,
    );
    wg_set_peer(&a.ns, a.ifname(), &peer_of(&b, true));
    wg_set_peer(&b.ns, b.ifname(), &peer_of(&a, false));
    address_and_up(&a);
    address_and_up(&b);

    assert!(ping(&a.ns, b.inner(Family::V4), 2), "ping a → b failed");
    let old = SocketAddr::new(veth.a(Family::V4), a.listen_port);
    assert_eq!(
        endpoint_of(&b.ns, b.ifname(), &a.keys.public),
        old.to_string(),
        "{b_kind} did not learn a's endpoint from its handshake"
    );

    // The new address: same /24, another /30 (the last octet + 128 never hits .0/.255 or b).
    let [x, y, z, w] = veth.addrs.a_v4.octets();
    let new_v4 = Ipv4Addr::new(x, y, z, w.wrapping_add(128));
    let new = SocketAddr::new(new_v4.into(), a.listen_port);

    std::thread::scope(|scope| {
        let transfer = scope.spawn(|| {
            tcp_transfer_paced(&b.ns, b.inner(Family::V6), &a.ns, ROAM_PAYLOAD, ROAM_PACE)
        });
        // Roam once a quarter of the stream has arrived.
        let started = wait_until(Duration::from_secs(20), || {
            b.transfer_with(&a).0 > ROAM_PAYLOAD / 4
        });
        assert!(started, "the transfer did not get going");
        assert!(
            !transfer.is_finished(),
            "the transfer ended before the roam (pace too fast?)"
        );
        let new_cidr = format!("{new_v4}/32");
        let b_host = format!("{}/32", veth.b(Family::V4));
        a.ns.ip(&["addr", "add", &new_cidr, "dev", &veth.a_ifname]);
        b.ns.ip(&["route", "add", &new_cidr, "dev", &veth.b_ifname]);
        a.ns.ip(&[
            "route",
            "add",
            &b_host,
            "dev",
            &veth.a_ifname,
            "src",
            &new_v4.to_string(),
        ]);
        let old_cidr = format!("{}/{V4_PREFIX}", veth.a(Family::V4));
        a.ns.ip(&["addr", "del", &old_cidr, "dev", &veth.a_ifname]);
        let at_roam = b.transfer_with(&a).0;
        eprintln!("roamed {old} → {new} after {at_roam} bytes received by b");
        let t = transfer.join().unwrap();
        t.assert_ok(&format!("ferrowgd → {b_kind} across the roam"));
        assert!(
            at_roam < ROAM_PAYLOAD,
            "b had received {at_roam} bytes at the roam: not mid-transfer"
        );
    });
    assert_eq!(
        endpoint_of(&b.ns, b.ifname(), &a.keys.public),
        new.to_string(),
        "{b_kind} does not show a's new endpoint"
    );
    assert!(
        ping(&b.ns, a.inner(Family::V4), 2),
        "ping b → a after the roam failed"
    );
}

#[test]
fn roaming_mid_transfer_ferrowgd() {
    if !require_netns() {
        return;
    }
    roaming(DaemonKind::Ferrowgd);
}

#[test]
fn roaming_mid_transfer_wireguard_go() {
    if !require_netns() {
        return;
    }
    let Some(kind) = DaemonKind::wireguard_go_system() else {
        skip("wireguard-go is not installed");
        return;
    };
    roaming(kind);
}

// ---------------------------------------------------------------------------------------------
// 2. Source check

/// b's allowed IPs for a are a's /32 and /128. a gets a second address on its tunnel
/// interface outside them and pings b from it: a's ferrowgd encrypts and sends (its tx
/// grows), b decrypts and drops (no reply, nothing written to b's TUN, `SourceNotAllowed` in
/// its verbose log). A ping from a's real address before shows the same path delivers.
#[test]
fn source_outside_allowed_ips_is_dropped() {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping(&a.ns, b.inner(Family::V4), 2), "ping a → b failed");

    let [x, y, z, w] = a.inner_v4.octets();
    let spoof_v4 = Ipv4Addr::new(x, y, z, w.wrapping_add(128));
    let mut seg = a.inner_v6.segments();
    seg[7] = 0x99;
    let spoof_v6 = Ipv6Addr::from(seg);
    add_address(&a.ns, a.ifname(), spoof_v4.into(), 32);
    add_address(&a.ns, a.ifname(), spoof_v6.into(), 128);

    for family in [Family::V4, Family::V6] {
        let (spoof, real): (IpAddr, IpAddr) = match family {
            Family::V4 => (spoof_v4.into(), a.inner_v4.into()),
            Family::V6 => (spoof_v6.into(), a.inner_v6.into()),
        };
        let to = b.inner(family);
        // Control: from the allowed address, every echo request reaches b's TUN.
        let rx0 = link_stat(&b.ns, b.ifname(), "rx_packets");
        for _ in 0..3 {
            assert!(
                ping_once(&a.ns, to, Some(real), 3).is_some(),
                "{family} ping from the allowed source {real} failed"
            );
        }
        let rx1 = link_stat(&b.ns, b.ifname(), "rx_packets");
        assert!(
            rx1 >= rx0 + 3,
            "{family} control: b's TUN received {} packets for 3 pings",
            rx1 - rx0
        );
        // From outside a's allowed IPs: sent by a, dropped by b.
        let (_, a_tx0) = a.transfer_with(b);
        for _ in 0..3 {
            if let Some(out) = ping_once(&a.ns, to, Some(spoof), 1) {
                panic!("{family} ping from {spoof} (outside a's allowed IPs) was answered: {out}");
            }
        }
        let (_, a_tx1) = a.transfer_with(b);
        let rx2 = link_stat(&b.ns, b.ifname(), "rx_packets");
        // Three echo requests, each at least a 128-byte data message (84 → 96 padded + 32).
        assert!(
            a_tx1 >= a_tx0 + 3 * 128,
            "a did not send the spoofed packets through the tunnel (tx {a_tx0} → {a_tx1})"
        );
        assert_eq!(
            rx2, rx1,
            "{family}: b wrote packets with a foreign source ({spoof}) to its TUN"
        );
    }
    let log = b.daemon.log();
    assert!(
        log.contains("SourceNotAllowed"),
        "b's verbose log does not report SourceNotAllowed:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Moving a prefix between peers with `wg set`

/// a has peers b and c (each on its own veth). Prefix P = 198.51.100.100/32 is configured on
/// both b's and c's tunnel; b's namespace answers with TTL 50, c's with 60. P first belongs to
/// b; `wg set A peer C allowed-ips …,P` moves it: the very next ping to P is answered by c,
/// b's TUN sees nothing more, and `wg show allowed-ips` lists P under c only.
#[test]
fn prefix_moves_between_peers_with_wg_set() {
    if !require_netns() {
        return;
    }
    let (ns_a, ns_b, ns_c) = (Netns::new(), Netns::new(), Netns::new());
    let ab = link(&ns_a, &ns_b);
    let ac = link(&ns_a, &ns_c);
    // Inner addresses: one /24 shared by the three tunnels (each namespace is separate).
    let inner = |n: u8| Ipv4Addr::new(198, 51, 100, n);
    let inner6 = |n: u16| Ipv6Addr::new(0xfd00, 0, 0xabc, 0, 0, 0, 0, n);
    let p = inner(100);
    let opts = DaemonOptions::default();
    let a = side(
        ns_a,
        &DaemonKind::Ferrowgd,
        51820,
        ab.a(Family::V4),
        inner(1),
        inner6(1),
        &opts,
    );
    let b = side(
        ns_b,
        &DaemonKind::Ferrowgd,
        51821,
        ab.b(Family::V4),
        inner(2),
        inner6(2),
        &opts,
    );
    let c = side(
        ns_c,
        &DaemonKind::Ferrowgd,
        51822,
        ac.b(Family::V4),
        inner(3),
        inner6(3),
        &opts,
    );
    for (s, ttl) in [(&b, 50), (&c, 60)] {
        s.ns.run(
            "sysctl",
            &["-qw", &format!("net.ipv4.ip_default_ttl={ttl}")],
        );
    }
    let p_cidr = format!("{p}/32");
    let mut to_b = peer_of(&b, true);
    to_b.allowed_ips.push(p_cidr.clone());
    wg_set_peer(&a.ns, a.ifname(), &to_b);
    wg_set_peer(&a.ns, a.ifname(), &peer_of(&c, true));
    // b and c reach a on their own veth's address for it.
    let mut to_a = peer_of(&a, false);
    to_a.endpoint = Some(SocketAddr::new(ab.a(Family::V4), a.listen_port));
    wg_set_peer(&b.ns, b.ifname(), &to_a);
    to_a.endpoint = Some(SocketAddr::new(ac.a(Family::V4), a.listen_port));
    wg_set_peer(&c.ns, c.ifname(), &to_a);
    for s in [&a, &b, &c] {
        add_address(&s.ns, s.ifname(), s.inner_v4.into(), 24);
        add_address(&s.ns, s.ifname(), s.inner_v6.into(), 64);
        link_up(&s.ns, s.ifname(), Some(TUNNEL_MTU));
    }
    for s in [&b, &c] {
        add_address(&s.ns, s.ifname(), p.into(), 32);
    }
    // Sessions with both.
    for s in [&b, &c] {
        assert!(ping(&a.ns, s.inner_v4.into(), 2), "ping a → {}", s.inner_v4);
    }

    let answer = |what: &str| -> u8 {
        let out = ping_once(&a.ns, p.into(), None, 3)
            .unwrap_or_else(|| panic!("ping a → P ({p}) {what}: no reply"));
        reply_ttl(&out).unwrap_or_else(|| panic!("no ttl in ping output {out:?}"))
    };
    let rx = |s: &Side| link_stat(&s.ns, s.ifname(), "rx_packets");

    let (b0, c0) = (rx(&b), rx(&c));
    assert_eq!(
        answer("while P is b's"),
        50,
        "P is b's but b did not answer"
    );
    let (b1, c1) = (rx(&b), rx(&c));
    assert!(
        b1 > b0 && c1 == c0,
        "while P is b's: b rx {b0}→{b1}, c rx {c0}→{c1}"
    );

    wg(
        &a.ns,
        &[
            "set",
            a.ifname(),
            "peer",
            &c.keys.public,
            "allowed-ips",
            &format!("{}/32,{}/128,{p_cidr}", c.inner_v4, c.inner_v6),
        ],
    );
    assert_eq!(
        answer("right after the move"),
        60,
        "P moved to c but c did not answer"
    );
    let (b2, c2) = (rx(&b), rx(&c));
    assert!(
        b2 == b1 && c2 > c1,
        "after the move: b rx {b1}→{b2}, c rx {c1}→{c2}"
    );

    let b_ips = allowed_ips_of(&a.ns, a.ifname(), &b.keys.public);
    let c_ips = allowed_ips_of(&a.ns, a.ifname(), &c.keys.public);
    assert!(
        !b_ips.contains(&p_cidr) && c_ips.contains(&p_cidr),
        "`wg show allowed-ips` after the move: b {b_ips:?}, c {c_ips:?}"
    );
    assert_eq!(
        b_ips,
        [format!("{}/32", b.inner_v4), format!("{}/128", b.inner_v6)],
        "b kept the wrong prefixes"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Moving the interface to another namespace

/// The pattern of wireguard.com/netns: the daemon starts in `outer` (its UDP socket is born
/// there, next to the veth towards the peer), is configured there, then its interface moves
/// to a fresh namespace `inner`, where a process only has the tunnel: ping and TCP through
/// it work, `wg show` still works (the UAPI socket is on the host's filesystem), the UDP
/// socket stays in `outer`, and deleting the interface in `inner` ends the daemon, freeing
/// its port in `outer`.
#[test]
fn interface_moved_to_another_namespace() {
    if !require_netns() {
        return;
    }
    let (outer, peer_ns, inner_ns) = (Netns::new(), Netns::new(), Netns::new());
    let veth = link(&outer, &peer_ns);
    let inner = tunnel_addresses();
    let opts = DaemonOptions::default();
    let me = side(
        outer,
        &DaemonKind::Ferrowgd,
        51820,
        veth.a(Family::V4),
        inner.a_v4,
        inner.a_v6,
        &opts,
    );
    let peer = side(
        peer_ns,
        &DaemonKind::Ferrowgd,
        51821,
        veth.b(Family::V4),
        inner.b_v4,
        inner.b_v6,
        &opts,
    );
    let ifname = me.ifname().to_string();
    wg_set_peer(
        &me.ns,
        &ifname,
        &PeerSpec {
            allowed_ips: vec!["0.0.0.0/0".into(), "::/0".into()],
            ..peer_of(&peer, true)
        },
    );
    wg_set_peer(&peer.ns, peer.ifname(), &peer_of(&me, false));
    address_and_up(&peer);

    me.ns
        .ip(&["link", "set", &ifname, "netns", inner_ns.name()]);
    assert!(!me.ns.has_link(&ifname), "{ifname} still in outer");
    add_address(&inner_ns, &ifname, me.inner_v4.into(), V4_PREFIX);
    add_address(&inner_ns, &ifname, me.inner_v6.into(), V6_PREFIX);
    link_up(&inner_ns, &ifname, Some(TUNNEL_MTU));
    inner_ns.ip(&["route", "add", "default", "dev", &ifname]);
    inner_ns.ip(&["-6", "route", "add", "default", "dev", &ifname]);

    for family in [Family::V4, Family::V6] {
        assert!(
            ping(&inner_ns, peer.inner(family), 3),
            "{family} ping from inner through the moved interface failed"
        );
    }
    tcp_transfer(&peer.ns, peer.inner(Family::V4), &inner_ns, 16 * MIB).assert_ok("inner → peer");
    tcp_transfer(&inner_ns, me.inner(Family::V6), &peer.ns, 8 * MIB).assert_ok("peer → inner");

    // Configuration still works from anywhere: the UAPI socket is a host path.
    let shown = wg(&inner_ns, &["show", &ifname, "listen-port"]);
    assert_eq!(shown.trim(), me.listen_port.to_string());
    assert!(handshake_completed(
        &inner_ns,
        &me.daemon,
        &peer.keys.public
    ));
    // The UDP socket stayed where it was born; the peer sees it there.
    assert!(
        !udp_sockets_on(&me.ns, me.listen_port).is_empty(),
        "ferrowgd's UDP port is not bound in outer"
    );
    assert!(udp_sockets_on(&inner_ns, me.listen_port).is_empty());
    assert_eq!(
        endpoint_of(&peer.ns, peer.ifname(), &me.keys.public),
        SocketAddr::new(veth.a(Family::V4), me.listen_port).to_string()
    );

    inner_ns.ip(&["link", "del", &ifname]);
    let t0 = Instant::now();
    let status = me.daemon.process().wait_exit(Duration::from_secs(5));
    assert!(
        status.is_some(),
        "ferrowgd still runs 5 s after its interface was deleted in inner"
    );
    eprintln!(
        "ferrowgd exited {:?} after the interface was deleted",
        t0.elapsed()
    );
    assert!(!me.daemon.socket().exists(), "UAPI socket left behind");
    udp_port_free(&me.ns, me.listen_port).expect("ferrowgd's port is still taken in outer");
}

// ---------------------------------------------------------------------------------------------
// 5. wg-quick

/// The wg-quick scripts to try: Debian's, and the newest (`$FERROWG_PEERS_DIR/wg-quick`)
/// with the newest `wg` first in `PATH`.
fn wg_quick_variants() -> Vec<(PathBuf, String)> {
    // wg-quick runs `ip`, `wg`, `sysctl`…: make sure the system directories are searched.
    let path = format!(
        "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        std::env::var("PATH").unwrap_or_default()
    );
    let mut out = Vec::new();
    if let Some(q) = find_program("wg-quick") {
        out.push((q, path.clone()));
    } else {
        skip("wg-quick is not installed");
    }
    if let Some(dir) = peers_dir() {
        let q = dir.join("wg-quick");
        if q.is_file() {
            out.push((q, format!("{}:{path}", dir.display())));
        }
    }
    out
}

/// Runs `wg-quick ACTION CONF` in `ns` with ferrowgd as the user-space implementation,
/// output (and the daemon's inherited stderr) into `log`; at most 30 s.
fn run_wg_quick(ns: &Netns, script: &Path, path_var: &str, action: &str, conf: &Path, log: &Path) {
    let file = File::options().create(true).append(true).open(log).unwrap();
    let mut child = ns
        .command("bash")
        .arg(script)
        .arg(action)
        .arg(conf)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", common::netns::FERROWGD)
        .env("PATH", path_var)
        .env("LOG_LEVEL", "verbose")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("cannot start wg-quick");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wg-quick {action} did not finish in 30 s:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        status.success(),
        "wg-quick {action} failed ({status}):\n{}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
}

fn wg_quick_up_down(script: &Path, path_var: &str) {
    eprintln!("wg-quick: {}", script.display());
    let (q, p) = (Netns::new(), Netns::new());
    let veth = link(&q, &p);
    let inner = tunnel_addresses();
    let peer = side(
        p,
        &DaemonKind::Ferrowgd,
        51821,
        veth.b(Family::V4),
        inner.b_v4,
        inner.b_v6,
        &DaemonOptions::default(),
    );
    let keys = Keypair::generate();
    let ifname = unique_ifname();
    q.track_socket(&ifname);
    wg_set_peer(
        &peer.ns,
        peer.ifname(),
        &PeerSpec {
            public_key: keys.public.clone(),
            allowed_ips: vec![format!("{}/32", inner.a_v4), format!("{}/128", inner.a_v6)],
            ..PeerSpec::default()
        },
    );
    address_and_up(&peer);

    let dir = scratch_file("wg-quick");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let hook = dir.join("hook");
    let conf = dir.join(format!("{ifname}.conf"));
    let text = format!(
        "[Interface]\nPrivateKey = {}\nAddress = {}/{V4_PREFIX}, {}/{V6_PREFIX}\n\
         ListenPort = 51820\nPostUp = echo up %i > {}\n\n\
         [Peer]\nPublicKey = {}\nEndpoint = {}\nAllowedIPs = {}/32, {}/128\n",
        keys.private,
        inner.a_v4,
        inner.a_v6,
        hook.display(),
        peer.keys.public,
        peer.endpoint(),
        inner.b_v4,
        inner.b_v6
    );
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&conf)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
    let log = dir.join("wg-quick.log");
    let cleanup = DirGuard(dir.clone());

    run_wg_quick(&q, script, path_var, "up", &conf, &log);
    let up_log = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!("----- wg-quick up -----\n{up_log}");
    assert!(
        up_log.contains("Falling back to slow userspace implementation")
            || up_log.contains(common::netns::FERROWGD),
        "wg-quick did not start the user-space implementation"
    );
    assert_eq!(
        std::fs::read_to_string(&hook).unwrap_or_default(),
        format!("up {ifname}\n"),
        "PostUp hook did not run with %i = {ifname}"
    );
    let addrs = q.ip(&["-o", "addr", "show", "dev", &ifname]);
    for a in [
        format!("{}/{V4_PREFIX}", inner.a_v4),
        format!("{}/{V6_PREFIX}", inner.a_v6),
    ] {
        assert!(addrs.contains(&a), "{ifname} lacks address {a}:\n{addrs}");
    }
    let link_text = q.ip(&["link", "show", "dev", &ifname]);
    assert!(
        link_text.contains("mtu 1420") && link_text.contains(",UP"),
        "{ifname} is not up with wg-quick's MTU 1500 − 80:\n{link_text}"
    );
    for to in [inner.b_v4.to_string(), inner.b_v6.to_string()] {
        let route = q.ip(&["route", "get", &to]);
        assert!(
            route.contains(&format!("dev {ifname}")),
            "route to {to} is not via {ifname}: {route}"
        );
    }
    assert_eq!(
        wg(&q, &["show", &ifname, "listen-port"]).trim(),
        "51820",
        "ListenPort not applied"
    );
    let pids = q.pids();
    assert_eq!(
        pids.len(),
        1,
        "expected just the daemon in q, found {pids:?}"
    );
    for family in [Family::V4, Family::V6] {
        assert!(
            ping(&q, peer.inner(family), 3),
            "{family} ping through the wg-quick interface failed"
        );
    }

    run_wg_quick(&q, script, path_var, "down", &conf, &log);
    assert!(!q.has_link(&ifname), "{ifname} still exists after down");
    assert!(
        wait_until(Duration::from_secs(5), || q.pids().is_empty()),
        "the daemon still runs after wg-quick down: {:?}",
        q.pids()
    );
    assert!(
        !uapi_socket(&ifname).exists(),
        "UAPI socket left behind after wg-quick down"
    );
    drop(cleanup);
}

/// Removes a scratch directory on drop (unless the test panicked, to keep the evidence).
struct DirGuard(PathBuf);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// `WG_QUICK_USERSPACE_IMPLEMENTATION=ferrowgd wg-quick up` in a namespace: the interface
/// gets its addresses, MTU and routes, the PostUp hook runs with `%i`, a ping crosses the
/// tunnel to a peer; `down` removes the interface and the daemon exits with its socket.
#[test]
fn wg_quick_up_and_down() {
    if !require_netns() {
        return;
    }
    for (script, path_var) in wg_quick_variants() {
        wg_quick_up_down(&script, &path_var);
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Silence towards unauthenticated senders

/// A handshake initiation from a random identity to `responder`, with a correct mac1.
fn forged_initiation(responder: &PublicKey) -> [u8; 148] {
    use ferrowg_proto::{cookie, crypto, noise, tai64n::Tai64N};
    let mut rng = rand_core::OsRng;
    let me = noise::Identity::new(PrivateKey::generate(&mut rng));
    let keys = noise::PeerKeys::new(Some(&me), *responder, PresharedKey::from_bytes([0; 32]));
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let (init, _state) = noise::create_initiation(
        &me,
        &keys,
        0x5eed_0001,
        Tai64N::from_unix(since_epoch),
        &mut rng,
    )
    .expect("initiation");
    let mut msg = init.to_bytes();
    cookie::CookieGenerator::new(responder).add_macs(Instant::now(), &mut msg);
    // Independent check of mac1 = MAC(HASH("mac1----" ‖ responder), msg[..116]).
    let key = crypto::hash(&[b"mac1----", responder.as_bytes()]);
    assert_eq!(crypto::mac(&key, &[&msg[..116]]), msg[116..132]);
    msg
}

/// Random datagrams, malformed handshakes, a forged initiation with a valid mac1 for an
/// unknown key, and replays of real transport and initiation messages of a live session are
/// sent to ferrowgd from a third namespace; a capture on that link must show every probe
/// arriving and not a single datagram leaving ferrowgd's port. Afterwards ferrowgd still
/// serves its real peer, whose endpoint the replays did not move.
#[test]
fn probes_get_no_answer() {
    if !require_netns() {
        return;
    }
    if find_program("tcpdump").is_none() {
        skip("tcpdump is not installed");
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let (a, b) = (&pair.a, &pair.b);
    let port = a.listen_port;

    // Real datagrams b → a: b initiates (initiation), then data.
    let real = Capture::start(
        &a.ns,
        &pair.link.a_ifname,
        &format!("udp and dst port {port}"),
    );
    assert!(ping(&b.ns, a.inner(Family::V4), 3), "ping b → a failed");
    real.stop();
    let captured = real.udp_payloads();
    let initiation = captured
        .iter()
        .find(|d| d.len() == 148 && d[0] == 1)
        .cloned()
        .expect("no initiation captured");
    let transport: Vec<Vec<u8>> = captured
        .iter()
        .filter(|d| d.len() >= 32 && d[0] == 4)
        .cloned()
        .collect();
    assert!(!transport.is_empty(), "no transport message captured");

    let prober = Netns::new();
    let plink = link(&a.ns, &prober);
    let target = SocketAddr::new(plink.a(Family::V4), port);
    let a_public = PublicKey::from_base64(&a.keys.public).unwrap();
    let forged = forged_initiation(&a_public);
    let mut wrong_mac1 = forged;
    wrong_mac1[120] ^= 0x01;
    let mut truncated = forged[..147].to_vec();
    truncated[..4].copy_from_slice(&[1, 0, 0, 0]);
    let mut oversized = forged.to_vec();
    oversized.push(0);

    let mut probes: Vec<Vec<u8>> = Vec::new();
    let mut rng = ByteStream::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    for _ in 0..10_000 {
        let mut len = [0u8; 2];
        rng.fill(&mut len);
        let mut d = vec![0u8; usize::from(u16::from_le_bytes(len)) % 1501];
        rng.fill(&mut d);
        probes.push(d);
    }
    let random = probes.len();
    probes.extend([truncated, oversized, wrong_mac1.to_vec(), forged.to_vec()]);
    probes.extend(transport.iter().cloned());
    probes.push(initiation.clone());
    let total = probes.len();

    let capture = Capture::start(&a.ns, &plink.a_ifname, &format!("udp port {port}"));
    let replies = in_netns(&prober, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        for (i, d) in probes.iter().enumerate() {
            sock.send_to(d, target).unwrap();
            if i % 20 == 19 {
                std::thread::sleep(Duration::from_millis(2));
            }
            if i + 1 == random {
                // Whatever the flood did to the load estimate has worn off before the
                // crafted handshakes (under load, a valid mac1 earns a cookie reply).
                std::thread::sleep(Duration::from_millis(1500));
            }
        }
        sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            got.push(format!("{n} bytes from {from}"));
        }
        got
    });
    let lines = capture.stop();
    let from_a = format!("{}.{port} >", plink.a(Family::V4));
    let to_a = format!("> {}.{port}:", plink.a(Family::V4));
    let answers: Vec<&String> = lines.iter().filter(|l| l.contains(&from_a)).collect();
    let arrived = lines.iter().filter(|l| l.contains(&to_a)).count();
    eprintln!(
        "{total} probes sent, {arrived} captured arriving, {} leaving ferrowgd's port",
        answers.len()
    );
    assert!(
        answers.is_empty() && replies.is_empty(),
        "ferrowgd answered probes: {answers:#?}, prober received {replies:?}"
    );
    assert!(
        arrived * 100 >= total * 95,
        "the capture saw only {arrived} of {total} probes: it cannot vouch for silence"
    );

    // Still alive, still serving b, b's endpoint untouched by the replays.
    assert!(a.daemon.process().exited().is_none(), "ferrowgd died");
    assert!(
        ping(&a.ns, b.inner(Family::V4), 3),
        "ping a → b after the probes"
    );
    assert_eq!(
        endpoint_of(&a.ns, a.ifname(), &b.keys.public),
        b.endpoint().to_string(),
        "a replayed datagram moved b's endpoint"
    );
    // Drops are counted by reason and summed up once a second at verbose level.
    std::thread::sleep(Duration::from_millis(1200));
    let log = a.daemon.log();
    let summaries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Dropped ") && l.contains(" datagrams in the last"))
        .collect();
    let counted = |reason: &str| -> u64 {
        summaries
            .iter()
            .flat_map(|l| l.split_whitespace())
            .filter_map(|w| {
                w.strip_prefix(reason)?
                    .strip_prefix('=')?
                    .parse::<u64>()
                    .ok()
            })
            .sum()
    };
    for reason in [
        "InvalidMac1",
        "UnknownPeer",
        "ReplayedCounter",
        "ReplayedTimestamp",
        "NotWireGuard",
    ] {
        assert!(
            counted(reason) > 0,
            "ferrowgd's log counts no {reason} drop:\n{log}"
        );
    }
    let total: u64 = summaries
        .iter()
        .filter_map(|l| l.split("Dropped ").nth(1)?.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    eprintln!(
        "drop summaries: {total} datagrams dropped, e.g. {:?}",
        summaries.first()
    );
    assert!(
        total >= 9_000,
        "the summaries count only {total} dropped probes"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Rekeying under a long transfer

/// Protocol time 60× faster: REKEY_AFTER_TIME is 2 s real, REJECT_AFTER_TIME 3 s. A ~20 s
/// paced TCP transfer must come through checksum-exact across at least five rekeys, counted
/// from both verbose logs ("Keypair created (initiator)"), with the latest-handshake times
/// moving on.
#[test]
fn rekeys_under_a_long_transfer() {
    if !require_netns() {
        return;
    }
    const PAYLOAD: u64 = 80 * MIB;
    const PACE: u64 = 4 * MIB;
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            daemon_options: (time_scaled(60), time_scaled(60)),
            ..PairOptions::default()
        },
    );
    let (a, b) = (&pair.a, &pair.b);
    for s in [a, b] {
        assert!(
            s.daemon.log().contains("FERROWGD_TEST_TIME_SCALE=60"),
            "ferrowgd did not take the time scale"
        );
    }
    assert!(ping(&a.ns, b.inner(Family::V4), 2), "ping a → b failed");
    let rekeys = || {
        count(&a.daemon.log(), "Keypair created (initiator)")
            + count(&b.daemon.log(), "Keypair created (initiator)")
    };
    let before = rekeys();
    let hs_before = latest_handshake(&a.ns, a.ifname(), &b.keys.public);
    let t = tcp_transfer_paced(&b.ns, b.inner(Family::V4), &a.ns, PAYLOAD, PACE);
    let during = rekeys() - before;
    eprintln!(
        "{during} handshakes during {:.1} s",
        t.elapsed.as_secs_f64()
    );
    t.assert_ok("a → b across rekeys");
    assert!(
        t.elapsed >= Duration::from_secs(15),
        "the transfer took only {:?}",
        t.elapsed
    );
    assert!(
        during >= 5,
        "only {during} handshakes during the transfer (expected one every ~2 s)"
    );
    let hs_after = latest_handshake(&a.ns, a.ifname(), &b.keys.public);
    assert!(
        hs_after > hs_before,
        "latest handshake did not move: {hs_before} → {hs_after}"
    );
}

// ---------------------------------------------------------------------------------------------
// 8. The process contract

/// (a) Without `-f` the command returns at once (exit 0) and a detached daemon keeps serving,
/// its stderr still the launcher's (a file here) and the log going there; (e) the UAPI
/// socket is mode 0600 and its directory is not world-writable; (b) SIGTERM ends it, taking
/// the socket and the interface with it.
#[test]
fn daemonizes_and_stops_on_sigterm() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let log = scratch_file("daemonize.log");
    let file = File::create(&log).unwrap();
    let t0 = Instant::now();
    let mut launcher = ns
        .command(common::netns::FERROWGD)
        .arg(&ifname)
        .env("LOG_LEVEL", "verbose")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let launcher_pid = launcher.id();
    let status = loop {
        if let Some(s) = launcher.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            let _ = launcher.kill();
            panic!("ferrowgd without -f did not return within 5 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.success(),
        "launcher failed: {status}\n{}",
        log_text()
    );
    eprintln!("launcher returned after {:?}", t0.elapsed());

    let socket = uapi_socket(&ifname);
    assert!(
        wait_until(Duration::from_secs(5), || socket.exists()),
        "no UAPI socket"
    );
    let pids = ns.pids();
    assert_eq!(pids.len(), 1, "expected one daemon process, found {pids:?}");
    let pid = pids[0];
    assert_ne!(pid, launcher_pid);
    assert!(!pid_ended(pid), "the daemon is not running");
    wg(&ns, &["show", &ifname]);
    assert!(ns.has_link(&ifname), "no interface {ifname}");
    // Detached: its own session; stderr inherited (the log file).
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        pid.to_string(),
        "daemon is not a session leader: {stat}"
    );
    let stderr = std::fs::read_link(format!("/proc/{pid}/fd/2")).unwrap();
    assert_eq!(stderr, log, "daemon's stderr is not the launcher's");
    assert!(
        wait_until(Duration::from_secs(2), || log_text()
            .contains("Device started")),
        "the daemon's verbose log did not reach the inherited stderr:\n{}",
        log_text()
    );

    // (e) permissions.
    let meta = std::fs::metadata(&socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "UAPI socket mode {:o}",
        meta.permissions().mode() & 0o777
    );
    let dir_mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        dir_mode & 0o002,
        0,
        "/var/run/wireguard is world-writable ({dir_mode:o})"
    );

    // (b) SIGTERM.
    // SAFETY: kill(2) on the daemon found inside our own namespace.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
    assert!(
        wait_until(Duration::from_secs(5), || pid_ended(pid)),
        "daemon still running 5 s after SIGTERM"
    );
    assert!(!socket.exists(), "UAPI socket left behind after SIGTERM");
    assert!(
        wait_until(Duration::from_secs(2), || !ns.has_link(&ifname)),
        "interface left behind after SIGTERM"
    );
    if !std::thread::panicking() {
        let _ = std::fs::remove_file(&log);
    }
}

/// (c) Deleting the UAPI socket file ends the daemon within ~2 s, interface included.
#[test]
fn exits_when_socket_removed() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let d = start_daemon(&ns, &DaemonKind::Ferrowgd, &unique_ifname());
    std::fs::remove_file(d.socket()).unwrap();
    let t0 = Instant::now();
    let status = d.process().wait_exit(Duration::from_secs(3));
    assert!(
        status.is_some(),
        "still running 3 s after its socket was removed"
    );
    eprintln!(
        "exited {:?} after the socket was removed: {status:?}",
        t0.elapsed()
    );
    assert!(
        wait_until(Duration::from_secs(2), || !ns.has_link(d.ifname())),
        "interface left behind"
    );
}

/// (d) `ip link del` ends the daemon and removes its socket.
#[test]
fn exits_when_interface_deleted() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let d = start_daemon(&ns, &DaemonKind::Ferrowgd, &unique_ifname());
    ns.ip(&["link", "del", d.ifname()]);
    let status = d.process().wait_exit(Duration::from_secs(5));
    assert!(status.is_some(), "still running 5 s after ip link del");
    assert!(!d.socket().exists(), "UAPI socket left behind");
}

/// (f) The verbose log tells handshake events by `peer(xxxx…yyyy)` and never contains a
/// private or preshared key, in base64 or hex.
#[test]
fn verbose_log_names_peers_and_hides_secrets() {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            psk: true,
            ..PairOptions::default()
        },
    );
    let (a, b) = (&pair.a, &pair.b);
    assert!(ping(&a.ns, b.inner(Family::V4), 2), "ping a → b failed");
    // Refused sets are logged: near-valid secrets (one digit wrong or too many) must be
    // described, not echoed.
    let psk = pair.psk.clone().unwrap();
    let (a_hex, psk_hex) = (key_hex(&a.keys.private), key_hex(&psk));
    for bad in [
        format!("set=1\nprivate_key={}z\n\n", &a_hex[..63]),
        format!("set=1\nprivate_key={a_hex}0\n\n"),
        format!(
            "set=1\npublic_key={}\npreshared_key={}z\n\n",
            key_hex(&b.keys.public),
            &psk_hex[..63]
        ),
    ] {
        assert_eq!(uapi_raw(a.ifname(), &bad), "errno=-22\n\n");
    }
    assert!(
        ping(&a.ns, b.inner(Family::V4), 1),
        "the refused sets broke the tunnel"
    );
    // Any half of a secret, base64 or hex, counts as leaked.
    let mut secrets = Vec::new();
    for k in [&a.keys.private, &b.keys.private, &psk] {
        secrets.push(k[..22].to_string());
        secrets.push(k[22..].to_string());
        let h = key_hex(k);
        secrets.push(h[..32].to_string());
        secrets.push(h[32..].to_string());
    }
    for (me, other, events) in [
        (
            a,
            b,
            &[
                "Sending handshake initiation",
                "Received handshake response",
                "Keypair created (initiator)",
            ][..],
        ),
        (
            b,
            a,
            &[
                "Received handshake initiation",
                "Sending handshake response",
                "Keypair created (responder",
                "Keypair confirmed",
            ][..],
        ),
    ] {
        let log = me.daemon.log();
        let k = &other.keys.public;
        let name = format!("peer({}…{})", &k[..4], &k[39..43]);
        for event in events {
            assert!(
                log.contains(&format!("{name} - {event}")),
                "no \"{name} - {event}\" in the log:\n{log}"
            );
        }
        let lower = log.to_lowercase();
        for s in &secrets {
            assert!(
                !log.contains(s.as_str()) && !lower.contains(&s.to_lowercase()),
                "(part of) a secret key appears in the log:\n{log}"
            );
        }
        assert!(
            !log.contains(k.as_str()),
            "the log prints a whole public key instead of the short name"
        );
    }
}

/// (g) `listen_port` 0 (the default, and set explicitly) means a random port: `wg show`
/// reports the one actually bound (IPv4 and IPv6).
#[test]
fn listen_port_zero_is_random() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let d = start_daemon(&ns, &DaemonKind::Ferrowgd, &unique_ifname());
    let shown = || -> u16 {
        wg(&ns, &["show", d.ifname(), "listen-port"])
            .trim()
            .parse()
            .unwrap()
    };
    let bound_both = |port: u16| {
        let socks = udp_sockets_on(&ns, port);
        socks.iter().any(|l| l.contains("0.0.0.0:"))
            && socks
                .iter()
                .any(|l| l.contains("[::]:") || l.contains("*:"))
    };
    let p0 = shown();
    assert_ne!(p0, 0, "no port reported before any configuration");
    assert!(
        bound_both(p0),
        "port {p0} is not bound: {:?}",
        udp_sockets_on(&ns, p0)
    );
    wg(&ns, &["set", d.ifname(), "listen-port", "40000"]);
    assert_eq!(shown(), 40000);
    wg(&ns, &["set", d.ifname(), "listen-port", "0"]);
    let p1 = shown();
    assert_ne!(p1, 0, "listen-port 0 reported as 0");
    assert!(bound_both(p1), "port {p1} is not bound");
    assert!(
        udp_sockets_on(&ns, 40000).is_empty(),
        "the old port 40000 is still bound"
    );
}

/// (h) A `set` with an invalid line is refused with errno=-22 and changes nothing, not even
/// the valid `listen_port` line before it.
#[test]
fn invalid_set_is_refused_and_changes_nothing() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let d = start_daemon(&ns, &DaemonKind::Ferrowgd, &unique_ifname());
    wg(&ns, &["set", d.ifname(), "listen-port", "40001"]);
    let answer = uapi_raw(d.ifname(), "set=1\nlisten_port=1234\npublic_key=zz\n\n");
    assert_eq!(answer, "errno=-22\n\n");
    let get = d.uapi_get();
    assert_eq!(
        uapi_value(&get, "listen_port").as_deref(),
        Some("40001"),
        "listen_port changed by a refused set:\n{get}"
    );
    assert!(udp_sockets_on(&ns, 1234).is_empty(), "port 1234 got bound");
    // The daemon still serves well-formed requests.
    let ok = uapi_raw(d.ifname(), "set=1\nlisten_port=40002\n\n");
    assert_eq!(ok, "errno=0\n\n");
    assert_eq!(
        uapi_value(&d.uapi_get(), "listen_port").as_deref(),
        Some("40002")
    );
}

/// (i) The fwmark set with `wg` is reported back and carried by the UDP sockets — also by
/// new ones after a port change; 0 removes it.
#[test]
fn fwmark_is_reported_and_applied() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    let d = start_daemon(&ns, &DaemonKind::Ferrowgd, &unique_ifname());
    let ifname = d.ifname();
    let marks = |port: u16| -> Vec<String> {
        udp_sockets_on(&ns, port)
            .iter()
            .map(|l| {
                l.split_whitespace()
                    .find(|f| f.starts_with("fwmark:"))
                    .unwrap_or("fwmark:none")
                    .to_string()
            })
            .collect()
    };
    wg(
        &ns,
        &["set", ifname, "listen-port", "40003", "fwmark", "0x1234"],
    );
    assert_eq!(wg(&ns, &["show", ifname, "fwmark"]).trim(), "0x1234");
    assert_eq!(marks(40003), ["fwmark:0x1234", "fwmark:0x1234"]);
    wg(&ns, &["set", ifname, "fwmark", "0xca6c"]);
    assert_eq!(wg(&ns, &["show", ifname, "fwmark"]).trim(), "0xca6c");
    assert_eq!(marks(40003), ["fwmark:0xca6c", "fwmark:0xca6c"]);
    wg(&ns, &["set", ifname, "listen-port", "40004"]);
    assert_eq!(
        marks(40004),
        ["fwmark:0xca6c", "fwmark:0xca6c"],
        "mark lost on rebind"
    );
    wg(&ns, &["set", ifname, "fwmark", "0"]);
    assert_eq!(wg(&ns, &["show", ifname, "fwmark"]).trim(), "off");
    assert!(
        marks(40004).iter().all(|m| m == "fwmark:none"),
        "mark not removed: {:?}",
        marks(40004)
    );
}

/// (j) `--version`, and usage for anything that is not `[-f|--foreground] IFNAME` (no root
/// needed: nothing is created).
#[test]
fn version_and_usage() {
    let out = std::process::Command::new(common::netns::FERROWGD)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with(&format!("ferrowgd v{}", env!("CARGO_PKG_VERSION"))),
        "--version printed {text:?}"
    );
    for args in [
        &[][..],
        &["-f"][..],
        &["--foreground"][..],
        &["-x", "wg0"][..],
        &["-f", "wg0", "extra"][..],
        &["--version", "wg0"][..],
    ] {
        let out = std::process::Command::new(common::netns::FERROWGD)
            .args(args)
            .env_remove("WG_TUN_FD")
            .env_remove("WG_UAPI_FD")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        assert!(
            err.starts_with("Usage: ")
                && err.contains("[-f/--foreground]")
                && err.trim_end().ends_with("INTERFACE-NAME"),
            "{args:?}: stderr {err:?}"
        );
        assert!(out.stdout.is_empty(), "{args:?}: stdout {:?}", out.stdout);
    }
}

/// No peer covers the destination: the packet is dropped and the sender gets an ICMP
/// "unreachable" from the interface at once (IPv4 host unreachable, IPv6 address
/// unreachable), as with the kernel module, instead of waiting for a timeout.
#[test]
fn packet_without_route_gets_icmp_unreachable() {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions::default(),
    );
    let a = &pair.a;
    assert!(
        ping(&a.ns, pair.b.inner(Family::V4), 1),
        "tunnel ping failed"
    );
    // Routed into the interface, but in nobody's allowed IPs.
    a.ns.ip(&["route", "add", "198.51.100.250/32", "dev", a.ifname()]);
    a.ns.ip(&[
        "-6",
        "route",
        "add",
        "fd00:ffff::250/128",
        "dev",
        a.ifname(),
    ]);
    for (target, expect) in [
        ("198.51.100.250", "Destination Host Unreachable"),
        (
            "fd00:ffff::250",
            "Destination unreachable: Address unreachable",
        ),
    ] {
        let out = a.ns.try_run("ping", &["-c", "1", "-W", "2", target]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!out.status.success(), "ping {target} succeeded: {text}");
        assert!(
            text.contains(expect),
            "ping {target}: expected `{expect}`, got: {text}"
        );
    }
}

/// Sticky source address (the kernel's behaviour): a server with two addresses on one link
/// answers from the one the client reached, so the client's endpoint never moves; when that
/// address is removed from the server, its next packet leaves from whatever the routing table
/// picks, at once, and the tunnel keeps working (the client roams to it).
fn sticky_source(family: Family) {
    if !require_netns() {
        return;
    }
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            outer: family,
            ..PairOptions::default()
        },
    );
    let (a, b) = (&pair.a, &pair.b);
    let (second, prefix, ip) = match family {
        Family::V4 => ("192.0.2.222".parse::<IpAddr>().unwrap(), 32, "-4"),
        Family::V6 => ("2001:db8:ffff::222".parse::<IpAddr>().unwrap(), 128, "-6"),
    };
    // The server's second address; the client reaches it through the same veth.
    add_address(&b.ns, &pair.link.b_ifname, second, prefix);
    let second_str = second.to_string();
    a.ns.ip(&[ip, "route", "add", &second_str, "dev", &pair.link.a_ifname]);
    let endpoint = SocketAddr::new(second, b.listen_port).to_string();
    wg(
        &a.ns,
        &[
            "set",
            a.ifname(),
            "peer",
            &b.keys.public,
            "endpoint",
            &endpoint,
        ],
    );

    let capture = Capture::start(
        &a.ns,
        &pair.link.a_ifname,
        &format!("udp and src port {}", b.listen_port),
    );
    for fam in [Family::V4, Family::V6] {
        assert!(ping(&a.ns, b.inner(fam), 3), "ping a → b ({fam}) failed");
        assert!(ping(&b.ns, a.inner(fam), 3), "ping b → a ({fam}) failed");
    }
    let lines = capture.stop();
    assert!(!lines.is_empty(), "no reply from b was captured");
    let from_second = format!("{second_str}.{} >", b.listen_port);
    for l in &lines {
        assert!(
            l.contains(&from_second),
            "b answered from another address than the one a reached ({second_str}): {l}"
        );
    }
    assert_eq!(
        endpoint_of(&a.ns, a.ifname(), &b.keys.public),
        endpoint,
        "a's endpoint for b moved"
    );

    // Take the address away: b's next packet must still get through, from its other address.
    b.ns.ip(&[
        "addr",
        "del",
        &format!("{second_str}/{prefix}"),
        "dev",
        &pair.link.b_ifname,
    ]);
    assert!(
        ping_once(&b.ns, a.inner(Family::V4), None, 3).is_some(),
        "b's first ping after its address was removed got no reply"
    );
    let now = endpoint_of(&a.ns, a.ifname(), &b.keys.public);
    assert_eq!(
        now,
        SocketAddr::new(b.outer, b.listen_port).to_string(),
        "a did not roam to b's remaining address"
    );
    assert!(
        ping(&a.ns, b.inner(Family::V4), 2),
        "tunnel broken after the address removal"
    );
}

#[test]
fn sticky_source_address_v4() {
    sticky_source(Family::V4);
}

#[test]
fn sticky_source_address_v6() {
    sticky_source(Family::V6);
}
