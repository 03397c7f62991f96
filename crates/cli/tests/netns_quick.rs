//! `ferrowg up/down/save/strip` (wg-quick) and `ferrowg demo`, each case in its own network
//! namespaces (needs root; see `common::netns`):
//!
//! 1. the state `up` leaves — addresses, MTU, routes, rules, nftables, fwmark, sysctl — equals
//!    what the official `wg-quick` (with ferrowgd as its user-space implementation) leaves for
//!    the same file, in twin namespaces, for split, full, numbered-table and `Table = off`
//!    files; and `down` brings both back to the state before `up`;
//! 2. a full tunnel carries traffic to an address behind the server, and its own UDP (to an
//!    endpoint reachable only through the main default route) does not loop;
//! 3. hooks, in order with `%i` expanded; a failing PostUp undoes everything;
//! 4. SaveConfig (and DNS through resolvconf) against wg-quick's `save`;
//! 5. `strip` against `wg-quick strip` for several files;
//! 6. `--netns`: a process in the namespace reaches the peer only through the tunnel, and
//!    nothing once it is down; a namespace `up` created is removed by `down`;
//! 7. `down` after the daemon was killed still removes rules and nft tables;
//! 8. `demo` (also interrupted, also not as root) leaves nothing behind;
//! 9. errors: up twice, down of a missing interface, a bad file, a world-readable file.

mod common;

use common::netns::*;
use common::FERROWG;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Helpers

/// A scratch directory (mode 0700) removed on drop (kept after a failure, for inspection).
struct Scratch(PathBuf);

impl Scratch {
    fn new(label: &str) -> Scratch {
        let dir = scratch_file(label);
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        Scratch(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
    /// Writes `IFNAME.conf` (mode 0600) and returns its path.
    fn conf(&self, ifname: &str, text: &str) -> PathBuf {
        let path = self.0.join(format!("{ifname}.conf"));
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}

/// Runs `cmd` with stdout and stderr in files (a daemon started by wg-quick keeps the stderr
/// it inherited, so a pipe would never reach end of file), at most 30 s.
fn run_logged(mut cmd: Command, dir: &Path) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (out_path, err_path) = (dir.join(format!("out{n}")), dir.join(format!("err{n}")));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("cannot start command");
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not finish in 30 s:\n{}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let out = Output {
        status,
        stdout: fs::read(&out_path).unwrap_or_default(),
        stderr: fs::read(&err_path).unwrap_or_default(),
    };
    let _ = fs::remove_file(out_path);
    let _ = fs::remove_file(err_path);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn describe(out: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    )
}

/// `ferrowg ARGS` inside `ns` (through `ip netns exec`).
fn ferrowg(ns: &Netns, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = ns.command(FERROWG);
    cmd.args(args)
        .env("FERROWG_DAEMON", FERROWGD)
        .envs(env.iter().copied());
    run_logged(cmd, dir)
}

fn ferrowg_ok(ns: &Netns, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let out = ferrowg(ns, dir, args, env);
    assert!(out.status.success(), "ferrowg {args:?}: {}", describe(&out));
    out
}

/// The wg-quick scripts to compare with: Debian's, and the newest
/// (`$FERROWG_PEERS_DIR/wg-quick`, with the newest `wg` first on `PATH`).
fn wg_quick_variants() -> Vec<(PathBuf, String)> {
    let path = std::env::var("PATH").unwrap_or_default();
    let mut out = Vec::new();
    if let Some(q) = find_program("wg-quick") {
        out.push((q, path.clone()));
    }
    if let Some(dir) = peers_dir() {
        let q = dir.join("wg-quick");
        if q.is_file() {
            out.push((q, format!("{}:{path}", dir.display())));
        }
    }
    out
}

fn wg_quick(ns: &Netns, dir: &Path, script: &Path, path_var: &str, args: &[&str]) -> Output {
    let mut cmd = ns.command("bash");
    cmd.arg(script)
        .args(args)
        .env("WG_QUICK_USERSPACE_IMPLEMENTATION", FERROWGD)
        .env("PATH", path_var);
    run_logged(cmd, dir)
}

fn wg_quick_ok(ns: &Netns, dir: &Path, script: &Path, path_var: &str, args: &[&str]) -> Output {
    let out = wg_quick(ns, dir, script, path_var, args);
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        script.display(),
        describe(&out)
    );
    out
}

/// Replaces every link-local IPv6 address (their interface identifiers are random).
fn hide_link_local(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("fe80::") {
        out.push_str(&rest[..i]);
        out.push_str("fe80::X");
        let tail = &rest[i + 6..];
        let end = tail
            .find(|c: char| !(c.is_ascii_hexdigit() || c == ':'))
            .unwrap_or(tail.len());
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Everything `up` may change in `ns`, interface name replaced by `IF`.
fn snapshot(ns: &Netns, ifname: &str) -> String {
    let mut s = String::new();
    let mut section = |title: &str, body: String| {
        s.push_str(&format!("== {title}\n{body}"));
    };
    let link = ns.try_run("ip", &["-o", "link", "show", "dev", ifname]);
    section(
        "mtu",
        text(&link.stdout)
            .split_whitespace()
            .skip_while(|w| *w != "mtu")
            .nth(1)
            .map(|m| format!("{m}\n"))
            .unwrap_or_else(|| "(no link)\n".into()),
    );
    let addr = ns.try_run("ip", &["-o", "address", "show", "dev", ifname]);
    section("addresses", text(&addr.stdout));
    section("routes", ns.ip(&["route", "show", "table", "all"]));
    section("routes6", ns.ip(&["-6", "route", "show", "table", "all"]));
    section("rules", ns.ip(&["rule"]));
    section("rules6", ns.ip(&["-6", "rule"]));
    if find_program("nft").is_some() {
        section("nft", ns.run("nft", &["list", "ruleset"]));
    }
    section(
        "src_valid_mark",
        ns.run("sysctl", &["-n", "net.ipv4.conf.all.src_valid_mark"]),
    );
    let fwmark = ns.try_run(system_wg(), &["show", ifname, "fwmark"]);
    section("fwmark", text(&fwmark.stdout));
    hide_link_local(&s.replace(ifname, "IF"))
}

/// A namespace with a stand-in uplink: veth `up0` (192.0.2.1/24, MTU `mtu`, peer end `up1`
/// in the same namespace) and a default route via 192.0.2.254 — identical in twins.
fn uplinked_netns(mtu: u32) -> Netns {
    let ns = Netns::new();
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["link", "set", "up0", "mtu", &mtu.to_string()]);
    ns.ip(&["address", "add", "192.0.2.1/24", "dev", "up0"]);
    // No IPv6 link-local addresses on the uplink: their duplicate-address detection finishes
    // at its own pace and would make before/after snapshots of the routing state race.
    for link in ["up0", "up1"] {
        ns.ip(&["link", "set", link, "addrgenmode", "none"]);
    }
    ns.ip(&["link", "set", "up0", "up"]);
    ns.ip(&["link", "set", "up1", "up"]);
    ns.ip(&["route", "add", "default", "via", "192.0.2.254"]);
    ns
}

/// The pids of processes whose command line contains `word` as an argument.
fn pids_with_arg(word: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|a| a == word.as_bytes()) {
            out.push(pid);
        }
    }
    out
}

/// Nothing of `ifname` is left: no socket, no daemon, no state record.
fn assert_gone(ifname: &str) {
    assert!(
        wait_until(Duration::from_secs(5), || !uapi_socket(ifname).exists()),
        "UAPI socket of {ifname} left behind"
    );
    assert!(
        wait_until(Duration::from_secs(5), || pids_with_arg(ifname).is_empty()),
        "a process for {ifname} is still running: {:?}",
        pids_with_arg(ifname)
    );
    assert!(
        !Path::new(&format!("/run/ferrowg/{ifname}.state")).exists(),
        "state record of {ifname} left behind"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Same state as wg-quick

const TWIN_PRIVATE: &str = "cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=";
const TWIN_PEER: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
const TWIN_PEER2: &str = "ew1H2TQn+DERYHgcfHM/2J+IlwrvSQ2KoO4ZpMuKGxQ=";

fn twin_configs() -> Vec<(&'static str, String)> {
    let head = format!("[Interface]\nPrivateKey = {TWIN_PRIVATE}\nListenPort = 51820\n");
    vec![
        (
            "split tunnel",
            format!(
                "{head}Address = 198.51.100.10/24, fd00:1::10/64\n\
                 [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\n\
                 AllowedIPs = 198.51.100.0/24, fd00:1::/64, 198.51.100.128/25, fd00:2::/48\n\
                 [Peer]\nPublicKey = {TWIN_PEER2}\nAllowedIPs = 192.0.2.128/26\n"
            ),
        ),
        (
            "full tunnel",
            format!(
                "{head}Address = 198.51.100.10/32\nAddress = fd00:1::10/128\n\
                 [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\n\
                 AllowedIPs = 0.0.0.0/0, ::/0\n"
            ),
        ),
        (
            "table number, MTU",
            format!(
                "{head}Address = 198.51.100.10/24\nTable = 1234\nMTU = 1380\n\
                 [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\n\
                 AllowedIPs = 0.0.0.0/0, fd00:2::/48\n"
            ),
        ),
        (
            "table off",
            format!(
                "{head}Address = 198.51.100.10/24\nTable = off\n\
                 [Peer]\nPublicKey = {TWIN_PEER}\nAllowedIPs = 0.0.0.0/0, 198.51.100.0/24\n"
            ),
        ),
    ]
}

#[test]
fn up_and_down_leave_the_state_wg_quick_leaves() {
    if !require_netns() {
        return;
    }
    let variants = wg_quick_variants();
    if variants.is_empty() {
        skip("wg-quick is not installed; nothing to compare with");
        return;
    }
    let dir = Scratch::new("twins");
    for (script, path_var) in &variants {
        for (label, config) in twin_configs() {
            eprintln!("--- {label}, against {}", script.display());
            let (theirs, ours) = (uplinked_netns(1400), uplinked_netns(1400));
            let (their_if, our_if) = (unique_ifname(), unique_ifname());
            theirs.track_socket(&their_if);
            ours.track_socket(&our_if);
            let their_conf = dir.conf(&their_if, &config);
            let our_conf = dir.conf(&our_if, &config);
            let before = (snapshot(&theirs, &their_if), snapshot(&ours, &our_if));
            assert_eq!(before.0, before.1, "{label}: twins differ before up");

            wg_quick_ok(
                &theirs,
                dir.path(),
                script,
                path_var,
                &["up", their_conf.to_str().unwrap()],
            );
            let up = ferrowg_ok(&ours, dir.path(), &["up", our_conf.to_str().unwrap()], &[]);
            eprintln!("{}", text(&up.stderr));
            let after_up = (snapshot(&theirs, &their_if), snapshot(&ours, &our_if));
            assert_eq!(
                after_up.1, after_up.0,
                "{label}: ferrowg up (left) differs from wg-quick up (right)"
            );
            assert_ne!(after_up.1, before.1, "{label}: up changed nothing");

            wg_quick_ok(
                &theirs,
                dir.path(),
                script,
                path_var,
                &["down", their_conf.to_str().unwrap()],
            );
            ferrowg_ok(
                &ours,
                dir.path(),
                &["down", our_conf.to_str().unwrap()],
                &[],
            );
            assert_gone(&our_if);
            let after_down = (snapshot(&theirs, &their_if), snapshot(&ours, &our_if));
            assert_eq!(after_down.1, after_down.0, "{label}: after down");
            // src_valid_mark stays 1, as wg-quick leaves it; everything else is as before.
            let strip = |s: &str| {
                s.split("== src_valid_mark")
                    .next()
                    .unwrap_or_default()
                    .to_string()
            };
            assert_eq!(
                strip(&after_down.1),
                strip(&before.1),
                "{label}: down left something"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 2. A full tunnel carries traffic and does not loop

#[test]
fn full_tunnel_carries_traffic_without_looping_its_own_udp() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("full");
    let (client, server) = (Netns::new(), Netns::new());
    let veth = link(&client, &server);
    let inner = tunnel_addresses();
    // The server's endpoint is an address on its loopback, reachable from the client only
    // through the client's main default route — which the full tunnel overrides for
    // everything but its own (marked) UDP.
    let o = veth.addrs.b_v4.octets();
    let endpoint_ip = Ipv4Addr::new(o[0], o[1], o[2], o[3].wrapping_add(128));
    let i = inner.b_v4.octets();
    let behind_v4 = Ipv4Addr::new(i[0], i[1], i[2], i[3].wrapping_add(128));
    let behind_v6: Ipv6Addr = "fd00:1::1".parse().unwrap();
    server.ip(&["address", "add", &format!("{endpoint_ip}/32"), "dev", "lo"]);
    server.ip(&["address", "add", &format!("{behind_v4}/32"), "dev", "lo"]);
    server.ip(&["address", "add", &format!("{behind_v6}/128"), "dev", "lo"]);
    client.ip(&[
        "route",
        "add",
        "default",
        "via",
        &veth.b(Family::V4).to_string(),
    ]);

    let sdaemon = start_daemon(&server, &DaemonKind::Ferrowgd, &unique_ifname());
    let skeys = Keypair::generate();
    wg_set_interface(&server, sdaemon.ifname(), &skeys.private, Some(51821));
    let ckeys = Keypair::generate();
    wg_set_peer(
        &server,
        sdaemon.ifname(),
        &PeerSpec {
            public_key: ckeys.public.clone(),
            allowed_ips: vec![format!("{}/32", inner.a_v4), format!("{}/128", inner.a_v6)],
            ..PeerSpec::default()
        },
    );
    add_address(&server, sdaemon.ifname(), inner.b_v4.into(), V4_PREFIX);
    add_address(&server, sdaemon.ifname(), inner.b_v6.into(), V6_PREFIX);
    link_up(&server, sdaemon.ifname(), Some(TUNNEL_MTU));

    let cif = unique_ifname();
    client.track_socket(&cif);
    let conf = dir.conf(
        &cif,
        &format!(
            "[Interface]\nPrivateKey = {}\nAddress = {}/32, {}/128\n\n\
             [Peer]\nPublicKey = {}\nEndpoint = {endpoint_ip}:51821\nAllowedIPs = 0.0.0.0/0, ::/0\n",
            ckeys.private, inner.a_v4, inner.a_v6, skeys.public
        ),
    );
    ferrowg_ok(&client, dir.path(), &["up", conf.to_str().unwrap()], &[]);

    let rx_packets = || -> u64 {
        server
            .run(
                "cat",
                &[&format!(
                    "/sys/class/net/{}/statistics/rx_packets",
                    sdaemon.ifname()
                )],
            )
            .trim()
            .parse()
            .unwrap()
    };
    let before = rx_packets();
    assert!(
        ping(&client, behind_v4.into(), 5),
        "IPv4 through the full tunnel"
    );
    assert!(
        ping(&client, behind_v6.into(), 5),
        "IPv6 through the full tunnel"
    );
    let after = rx_packets();
    assert!(
        after >= before + 10,
        "the server's tunnel interface saw {} packets, expected the 10 pings",
        after - before
    );
    assert!(
        latest_handshake(&server, sdaemon.ifname(), &ckeys.public) != 0,
        "no handshake: the tunnel's own UDP looped into the tunnel"
    );
    let t = tcp_transfer(&server, behind_v4.into(), &client, 4 << 20);
    t.assert_ok("TCP through the full tunnel");
    let (rx, _) = peer_transfer(&server, sdaemon.ifname(), &ckeys.public);
    assert!(
        rx >= 4 << 20,
        "the server received only {rx} bytes from the client"
    );

    ferrowg_ok(&client, dir.path(), &["down", conf.to_str().unwrap()], &[]);
    assert_gone(&cif);
    assert_eq!(
        client.ip(&["rule"]).lines().count(),
        3,
        "rules left behind:\n{}",
        client.ip(&["rule"])
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Hooks

fn plain_config(private: &str, extra: &str) -> String {
    format!(
        "[Interface]\nPrivateKey = {private}\nAddress = 198.51.100.10/24\n{extra}\n\
         [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 198.51.100.0/24, fd00:2::/48\n"
    )
}

#[test]
fn hooks_run_in_order_with_the_interface_name() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("hooks");
    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let log = dir.path().join("hooks.log");
    let l = log.display();
    let conf = dir.conf(
        &ifname,
        &plain_config(
            TWIN_PRIVATE,
            &format!(
                "PreUp = echo pre-up %i >> {l}\nPostUp = echo post-up %i >> {l} # kept, a comment\n\
                 PostUp = ip link show dev %i > /dev/null && echo post-up-2 %i >> {l}\n\
                 PreDown = echo pre-down %i >> {l}\nPostDown = echo post-down %i >> {l}\n"
            ),
        ),
    );
    let up = ferrowg_ok(&ns, dir.path(), &["up", conf.to_str().unwrap()], &[]);
    assert!(
        text(&up.stderr).contains(&format!("[#] echo pre-up {ifname} >> {l}\n")),
        "hooks are echoed with %i expanded:\n{}",
        text(&up.stderr)
    );
    ferrowg_ok(&ns, dir.path(), &["down", conf.to_str().unwrap()], &[]);
    assert_eq!(
        fs::read_to_string(&log).unwrap(),
        format!(
            "pre-up {ifname}\npost-up {ifname}\npost-up-2 {ifname}\npre-down {ifname}\npost-down {ifname}\n"
        )
    );
    assert_gone(&ifname);

    // A failing PostUp undoes everything, as wg-quick's trap does.
    let before = snapshot(&ns, &ifname);
    let bad = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {TWIN_PRIVATE}\nAddress = 198.51.100.10/32\nPostUp = false\n\
             [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 0.0.0.0/0\n"
        ),
    );
    let out = ferrowg(&ns, dir.path(), &["up", bad.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        text(&out.stderr).contains("[#] ip link delete dev"),
        "{}",
        describe(&out)
    );
    assert_gone(&ifname);
    let strip = |s: &str| s.split("== src_valid_mark").next().unwrap().to_string();
    assert_eq!(strip(&snapshot(&ns, &ifname)), strip(&before));
}

/// SIGINT in the middle of `up` (here: during a slow PreUp) undoes what was done.
#[test]
fn interrupted_up_undoes_everything() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("interrupt");
    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let before = snapshot(&ns, &ifname);
    let conf = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {TWIN_PRIVATE}\nAddress = 198.51.100.10/32\nPreUp = sleep 1\n\
             [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 0.0.0.0/0\n"
        ),
    );
    let log = dir.path().join("up.log");
    let mut child = ns
        .command(FERROWG)
        .args(["up", conf.to_str().unwrap()])
        .env("FERROWG_DAEMON", FERROWGD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log).unwrap())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("[#] sleep 1")),
        "PreUp did not start"
    );
    // `ip netns exec` execs ferrowg: the child's pid is ferrowg's.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    let log = fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("interrupted"), "{log}");
    assert!(
        log.contains(&format!("[#] ip link delete dev {ifname}")),
        "{log}"
    );
    assert_gone(&ifname);
    let strip = |s: &str| s.split("== src_valid_mark").next().unwrap().to_string();
    assert_eq!(strip(&snapshot(&ns, &ifname)), strip(&before));
}

// ---------------------------------------------------------------------------------------------
// 4. SaveConfig and DNS, against wg-quick's save

/// A stand-in `resolvconf` (Debian's interface): `-a NAME` stores stdin, `-d NAME` removes
/// it, `-l NAME` prints it. Every call is logged.
fn fake_resolvconf(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let store = dir.join("resolvconf.d");
    fs::create_dir_all(&store).unwrap();
    let script = bin.join("resolvconf");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$*\" >> {store}/calls\ncase \"$1\" in\n\
             -a) cat > {store}/\"$2\" ;;\n-d) rm -f {store}/\"$2\" ;;\n-l) cat {store}/\"$2\" ;;\nesac\n",
            store = store.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn save_config_writes_back_what_wg_quick_writes() {
    if !require_netns() {
        return;
    }
    let variants = wg_quick_variants();
    let dir = Scratch::new("save");
    let bin = fake_resolvconf(dir.path());
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config = format!(
        "[Interface]\nPrivateKey = {TWIN_PRIVATE}\nListenPort = 51820\nAddress = 198.51.100.10/24\n\
         Address = fd00:1::10/64\nDNS = 198.51.100.53, fd00:1::53, example.com\nMTU = 1400\n\
         SaveConfig = true\nPostUp = echo up %i\nPreDown = echo # kept\n\n\
         [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 198.51.100.0/25\n"
    );
    let new_peer = Keypair::generate();
    let saved = |ns: &Netns, ifname: &str, up: &dyn Fn(&Path), down: &dyn Fn(&Path)| -> String {
        ns.track_socket(ifname);
        let conf = dir.conf(ifname, &config);
        up(&conf);
        // The resolvconf stand-in got the servers and the search domain.
        let registered = fs::read_to_string(dir.path().join("resolvconf.d").join(ifname)).unwrap();
        assert_eq!(
            registered,
            "nameserver 198.51.100.53\nnameserver fd00:1::53\nsearch example.com\n"
        );
        wg(
            ns,
            &[
                "set",
                ifname,
                "peer",
                &new_peer.public,
                "allowed-ips",
                "198.51.100.200/32",
                "endpoint",
                "192.0.2.3:4444",
            ],
        );
        down(&conf);
        assert!(
            !dir.path().join("resolvconf.d").join(ifname).exists(),
            "DNS not removed on down"
        );
        let text = fs::read_to_string(&conf).unwrap();
        assert_eq!(
            fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
            0o600
        );
        hide_link_local(&text.replace(ifname, "IF"))
    };

    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    let ours = saved(
        &ns,
        &ifname,
        &|conf| {
            ferrowg_ok(
                &ns,
                dir.path(),
                &["up", conf.to_str().unwrap()],
                &[("PATH", &path_var)],
            );
        },
        &|conf| {
            ferrowg_ok(
                &ns,
                dir.path(),
                &["down", conf.to_str().unwrap()],
                &[("PATH", &path_var)],
            );
        },
    );
    assert_gone(&ifname);
    assert!(ours.contains(&new_peer.public), "{ours}");
    assert!(ours.contains("AllowedIPs = 198.51.100.200/32\nEndpoint = 192.0.2.3:4444"));
    assert!(ours.starts_with("[Interface]\nAddress = 198.51.100.10/24\nAddress = fd00:1::10/64\n"));
    assert!(ours.contains(
        "DNS = 198.51.100.53\nDNS = fd00:1::53\nMTU = 1400\nSaveConfig = true\nPostUp = echo up %i\n"
    ));

    for (script, wg_path) in &variants {
        let ns = uplinked_netns(1500);
        let ifname = unique_ifname();
        let path_var = format!("{}:{wg_path}", bin.display());
        let theirs = saved(
            &ns,
            &ifname,
            &|conf| {
                wg_quick_ok(
                    &ns,
                    dir.path(),
                    script,
                    &path_var,
                    &["up", conf.to_str().unwrap()],
                );
            },
            &|conf| {
                wg_quick_ok(
                    &ns,
                    dir.path(),
                    script,
                    &path_var,
                    &["down", conf.to_str().unwrap()],
                );
            },
        );
        // Debian's wg-quick drops `#` text from hooks; the newest keeps it, as we do.
        let (ours_cmp, theirs_cmp) = if theirs.contains("PreDown = echo # kept") {
            (ours.clone(), theirs)
        } else {
            (
                ours.replace("PreDown = echo # kept", "PreDown = echo"),
                theirs,
            )
        };
        assert_eq!(
            ours_cmp,
            theirs_cmp,
            "ferrowg's save (left) differs from {}'s (right)",
            script.display()
        );
    }
}

/// The service's reload (`ferrowg syncconf IF <(ferrowg strip IF)`) applies a peer added to
/// the file; `ferrowg save` then writes the running state back.
#[test]
fn reload_through_strip_and_save_as_a_command() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("reload");
    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let conf = dir.conf(&ifname, &plain_config(TWIN_PRIVATE, "PostUp = true"));
    let c = conf.to_str().unwrap();
    ferrowg_ok(&ns, dir.path(), &["up", c], &[]);

    let added = Keypair::generate();
    let mut f = File::options().append(true).open(&conf).unwrap();
    write!(
        f,
        "\n[Peer]\nPublicKey = {}\nAllowedIPs = 198.51.100.99/32\n",
        added.public
    )
    .unwrap();
    drop(f);
    let reload = format!("exec {FERROWG} syncconf {ifname} <(exec {FERROWG} strip {c})");
    let mut cmd = ns.command("bash");
    cmd.args(["-c", &reload]);
    let out = run_logged(cmd, dir.path());
    assert!(out.status.success(), "reload: {}", describe(&out));
    let peers = wg(&ns, &["show", &ifname, "peers"]);
    assert!(peers.contains(&added.public), "{peers}");
    assert!(peers.contains(TWIN_PEER), "{peers}");

    fs::write(&conf, plain_config(TWIN_PRIVATE, "PostUp = true")).unwrap();
    let out = ferrowg_ok(&ns, dir.path(), &["save", c], &[]);
    assert_eq!(
        text(&out.stderr),
        format!("[#] {FERROWG} showconf {ifname}\n")
    );
    let saved = hide_link_local(&fs::read_to_string(&conf).unwrap());
    assert!(
        saved.starts_with(
            "[Interface]\nAddress = 198.51.100.10/24\nAddress = fe80::X/64\nPostUp = true\n\
             ListenPort = "
        ),
        "{saved}"
    );
    assert!(
        saved.contains(&format!("PrivateKey = {TWIN_PRIVATE}\n")),
        "{saved}"
    );
    assert!(saved.contains(&added.public), "{saved}");
    assert!(
        saved.ends_with("\n") && !saved.ends_with("\n\n"),
        "{saved:?}"
    );

    ferrowg_ok(&ns, dir.path(), &["down", c], &[]);
    assert_gone(&ifname);
    let out = ferrowg(&ns, dir.path(), &["save", c], &[]);
    assert_eq!(
        text(&out.stderr),
        format!("{FERROWG}: `{ifname}' is not a WireGuard interface\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 5. strip

#[test]
fn strip_prints_what_wg_quick_strip_prints() {
    let variants = wg_quick_variants();
    if variants.is_empty() {
        skip("wg-quick is not installed; nothing to compare with");
        return;
    }
    if !require_root() {
        // wg-quick strip insists on root.
        return;
    }
    let dir = Scratch::new("strip");
    let k = TWIN_PRIVATE;
    let p = TWIN_PEER;
    let files: Vec<(&str, String)> = vec![
        ("wg0", format!("[Interface]\nPrivateKey = {k}\nAddress = 198.51.100.1/24\n\n[Peer]\nPublicKey = {p}\nAllowedIPs = 0.0.0.0/0\n")),
        (
            "every-key",
            format!(
                "# a comment\n[Interface] # trailing\n  PrivateKey = {k}   \n\tListenPort=51820\nFwMark = 0x10\n\
                 address = 198.51.100.1/24,fd00::1/64\nDNS = 198.51.100.53, example.com\nmtu=1380\nTABLE = off\n\
                 PreUp = echo a # b\nPostUp=echo %i\nPreDown = x\nPostDown = y\nSaveConfig = TRUE\n\n\
                 [Peer]\nPublicKey = {p}\nAddress = 198.51.100.9/32\nAllowedIPs = 198.51.100.0/24\nEndpoint = 192.0.2.1:51820\n"
            ),
        ),
        (
            "two.ifaces",
            format!(
                "[Interface]\nAddress = 198.51.100.1/24\n[Peer]\nPublicKey = {p}\nMTU = 1000\n\
                 [interface]\nPrivateKey = {k}\nMTU = 1300\n[Peer]\nPublicKey = {p}\nPersistentKeepalive = 25"
            ),
        ),
        (
            "crlf",
            format!("[Interface]\r\nPrivateKey = {k}\r\nAddress = 198.51.100.1/24\r\n\r\n[Peer]\r\nPublicKey = {p}\r\n"),
        ),
        ("empty", String::new()),
        ("only-quick", "[Interface]\nAddress = 198.51.100.1\nDNS = 198.51.100.54\n".to_string()),
    ];
    for (name, body) in &files {
        let conf = dir.conf(name, body);
        let ours = Command::new(FERROWG)
            .arg("strip")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(ours.status.success(), "{name}: {}", describe(&ours));
        for (script, path_var) in &variants {
            let theirs = Command::new("bash")
                .arg(script)
                .arg("strip")
                .arg(&conf)
                .env("PATH", path_var)
                .output()
                .unwrap();
            assert_eq!(
                text(&ours.stdout),
                text(&theirs.stdout),
                "{name}: ferrowg strip (left) vs {} strip (right)",
                script.display()
            );
            assert_eq!(text(&ours.stderr), text(&theirs.stderr), "{name}: stderr");
            assert_eq!(ours.status.code(), theirs.status.code(), "{name}: status");
        }
    }

    // Also by interface name (/etc/wireguard/NAME.conf) — both refuse a missing one alike
    // apart from the program name, and a world-readable file gets the same warning.
    let missing = Command::new(FERROWG)
        .args(["strip", "fwgnosuchif0"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        format!("{FERROWG}: `/etc/wireguard/fwgnosuchif0.conf' does not exist\n")
    );
    let open_dir = scratch_file("strip-open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = open_dir.join("wg1.conf");
    fs::write(&conf, &files[0].1).unwrap();
    fs::set_permissions(&conf, fs::Permissions::from_mode(0o644)).unwrap();
    let ours = Command::new(FERROWG)
        .arg("strip")
        .arg(&conf)
        .output()
        .unwrap();
    for (script, path_var) in &variants {
        let theirs = Command::new("bash")
            .arg(script)
            .arg("strip")
            .arg(&conf)
            .env("PATH", path_var)
            .output()
            .unwrap();
        assert_eq!(text(&ours.stderr), text(&theirs.stderr));
        assert_eq!(text(&ours.stdout), text(&theirs.stdout));
    }
    assert!(text(&ours.stderr).contains("is world accessible"));
    let _ = fs::remove_dir_all(open_dir);
}

// ---------------------------------------------------------------------------------------------
// 6. --netns

/// Runs `ferrowg ARGS` from a thread inside `ns` (no `ip netns exec`, whose private mount
/// namespace would hide a namespace `up` creates).
fn ferrowg_from(ns: &Netns, args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    in_netns(ns, move || {
        Command::new(FERROWG)
            .args(&args)
            .env("FERROWG_DAEMON", FERROWGD)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
}

/// Deletes a namespace `ferrowg up --netns` was asked to create, if a test fails before
/// `down` removed it.
struct NamedNetnsGuard(String);

impl Drop for NamedNetnsGuard {
    fn drop(&mut self) {
        let path = Path::new("/run/netns").join(&self.0);
        if path.exists() {
            let _ = Command::new("ip")
                .args(["netns", "pids", &self.0])
                .output()
                .map(|o| {
                    for pid in text(&o.stdout).split_whitespace() {
                        let _ = Command::new("kill").args(["-9", pid]).status();
                    }
                });
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }
}

#[test]
fn netns_option_confines_a_namespace_to_the_tunnel() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("netns");
    let (host, server) = (Netns::new(), Netns::new());
    let veth = link(&host, &server);
    let inner = tunnel_addresses();
    let sdaemon = start_daemon(&server, &DaemonKind::Ferrowgd, &unique_ifname());
    let skeys = Keypair::generate();
    wg_set_interface(&server, sdaemon.ifname(), &skeys.private, Some(51821));
    let ckeys = Keypair::generate();
    wg_set_peer(
        &server,
        sdaemon.ifname(),
        &PeerSpec {
            public_key: ckeys.public.clone(),
            allowed_ips: vec![format!("{}/32", inner.a_v4), format!("{}/128", inner.a_v6)],
            ..PeerSpec::default()
        },
    );
    add_address(&server, sdaemon.ifname(), inner.b_v4.into(), V4_PREFIX);
    add_address(&server, sdaemon.ifname(), inner.b_v6.into(), V6_PREFIX);
    link_up(&server, sdaemon.ifname(), Some(TUNNEL_MTU));

    let config = |ifname: &str| {
        dir.conf(
            ifname,
            &format!(
                "[Interface]\nPrivateKey = {}\nAddress = {}/32, {}/128\nDNS = 198.51.100.53, example.com\n\n\
                 [Peer]\nPublicKey = {}\nEndpoint = {}:51821\nAllowedIPs = 0.0.0.0/0, ::/0\n",
                ckeys.private,
                inner.a_v4,
                inner.a_v6,
                skeys.public,
                veth.b(Family::V4)
            ),
        )
    };

    // (a) An existing namespace (the article's `ip netns add vpn` done beforehand).
    let vpn = Netns::new();
    let ifname = unique_ifname();
    host.track_socket(&ifname);
    let conf = config(&ifname);
    let up = ferrowg_from(
        &host,
        &["up", conf.to_str().unwrap(), "--netns", vpn.name()],
    );
    assert!(up.status.success(), "{}", describe(&up));
    eprintln!("{}", text(&up.stderr));
    // The interface lives in vpn, with the addresses and default routes; the host has none.
    let links = vpn.ip(&["-o", "link", "show"]);
    assert_eq!(
        links.lines().count(),
        2,
        "vpn should hold lo and the tunnel only:\n{links}"
    );
    assert!(links.contains(&ifname));
    assert!(
        host.try_run("ip", &["link", "show", "dev", &ifname])
            .status
            .code()
            != Some(0)
    );
    assert!(vpn
        .ip(&["route"])
        .contains(&format!("default dev {ifname}")));
    assert!(vpn
        .ip(&["-6", "route"])
        .contains(&format!("default dev {ifname}")));
    let resolv = quick_resolv(vpn.name());
    assert_eq!(
        fs::read_to_string(&resolv).unwrap(),
        "nameserver 198.51.100.53\nsearch example.com\n"
    );
    // A process in vpn reaches the peer through the tunnel (v4 and v6), and the server's
    // outer address too — but only through the tunnel (vpn has no other link).
    assert!(ping(&vpn, inner.b_v4.into(), 3));
    assert!(ping(&vpn, inner.b_v6.into(), 3));
    let (rx_before, _) = peer_transfer(&server, sdaemon.ifname(), &ckeys.public);
    assert!(ping(&vpn, veth.b(Family::V4), 3));
    let (rx_after, _) = peer_transfer(&server, sdaemon.ifname(), &ckeys.public);
    assert!(
        rx_after > rx_before,
        "the ping to the outer address did not use the tunnel"
    );
    let t = tcp_transfer(&server, inner.b_v4.into(), &vpn, 2 << 20);
    t.assert_ok("TCP from the namespace through the tunnel");
    // The name is taken even though the link is not in this namespace; the tunnel survives.
    let twice = ferrowg_from(&host, &["up", conf.to_str().unwrap()]);
    assert_eq!(twice.status.code(), Some(1), "{}", describe(&twice));
    assert_eq!(
        text(&twice.stderr),
        format!("{FERROWG}: `{ifname}' already exists\n")
    );
    assert!(ping(&vpn, inner.b_v4.into(), 1));

    // down: the tunnel is gone from vpn, which keeps existing (it was not ours) and reaches
    // nothing any more; resolv.conf is gone.
    let down = ferrowg_from(
        &host,
        &["down", conf.to_str().unwrap(), "--netns", vpn.name()],
    );
    assert!(down.status.success(), "{}", describe(&down));
    assert_gone(&ifname);
    assert!(vpn.path().exists());
    assert_eq!(vpn.ip(&["-o", "link", "show"]).lines().count(), 1);
    assert!(!resolv.exists(), "{} left behind", resolv.display());
    assert!(!resolv.parent().unwrap().exists());
    assert!(!ping(&vpn, inner.b_v4.into(), 1));
    assert!(!ping(&vpn, veth.b(Family::V4), 1));

    // (b) A namespace `up` creates, and `down` (finding it in the record) removes.
    let name = format!("fwgq-{}-created", std::process::id());
    let _guard = NamedNetnsGuard(name.clone());
    let ifname = unique_ifname();
    host.track_socket(&ifname);
    let conf = config(&ifname);
    let up = ferrowg_from(&host, &["up", conf.to_str().unwrap(), "--netns", &name]);
    assert!(up.status.success(), "{}", describe(&up));
    assert!(text(&up.stderr).contains(&format!("[#] ip netns add {name}")));
    assert!(ping_named(&name, inner.b_v4.into(), 2));
    let down = ferrowg_from(&host, &["down", conf.to_str().unwrap()]);
    assert!(down.status.success(), "{}", describe(&down));
    assert!(
        !Path::new("/run/netns").join(&name).exists(),
        "namespace {name} left behind"
    );
    assert!(!quick_resolv(&name).parent().unwrap().exists());
    assert_gone(&ifname);
}

fn quick_resolv(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns).join("resolv.conf")
}

/// `ping` from a namespace known only by name (one the code under test created).
fn ping_named(ns: &str, addr: IpAddr, count: u32) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-n", "-q", "-c"])
        .arg(count.to_string())
        .args(["-i", "0.2", "-w", "10"])
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------------
// 7. down after the daemon died

#[test]
fn down_after_a_daemon_crash_still_removes_rules_tables_and_dns() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("crash");
    let bin = fake_resolvconf(dir.path());
    let path_var = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let before = snapshot(&ns, &ifname);
    let conf = dir.conf(
        &ifname,
        &format!(
            "[Interface]\nPrivateKey = {TWIN_PRIVATE}\nAddress = 198.51.100.10/32\nDNS = 198.51.100.53\n\
             [Peer]\nPublicKey = {TWIN_PEER}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 0.0.0.0/0, ::/0\n"
        ),
    );
    ferrowg_ok(
        &ns,
        dir.path(),
        &["up", conf.to_str().unwrap()],
        &[("PATH", &path_var)],
    );
    let pids = pids_with_arg(&ifname);
    assert_eq!(pids.len(), 1, "one daemon expected: {pids:?}");
    Command::new("kill")
        .args(["-9", &pids[0].to_string()])
        .status()
        .unwrap();
    assert!(wait_until(Duration::from_secs(5), || ns
        .try_run("ip", &["link", "show", "dev", &ifname])
        .status
        .code()
        != Some(0)));
    assert!(
        ns.ip(&["rule"]).contains("suppress_prefixlength"),
        "rules are still there"
    );

    let out = ferrowg_ok(
        &ns,
        dir.path(),
        &["down", conf.to_str().unwrap()],
        &[("PATH", &path_var)],
    );
    let log = text(&out.stderr);
    assert!(log.contains("[#] ip -4 rule delete table 51820"), "{log}");
    assert!(
        log.contains(&format!("[#] resolvconf -d {ifname} -f")),
        "{log}"
    );
    assert!(!dir.path().join("resolvconf.d").join(&ifname).exists());
    assert_gone(&ifname);
    let strip = |s: &str| s.split("== src_valid_mark").next().unwrap().to_string();
    assert_eq!(strip(&snapshot(&ns, &ifname)), strip(&before));

    // A second down has nothing left to act on.
    let again = ferrowg(&ns, dir.path(), &["down", conf.to_str().unwrap()], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stderr),
        format!("{FERROWG}: `{ifname}' is not a WireGuard interface\n")
    );
}

// ---------------------------------------------------------------------------------------------
// 8. demo

/// Names the demo printed (namespaces and interfaces) are all gone.
fn assert_demo_left_nothing(output: &str) {
    let pid_names: Vec<String> = output
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
        .filter(|w| w.starts_with("ferrowg-demo-") || w.starts_with("fwdemo"))
        .map(str::to_string)
        .collect();
    assert!(
        !pid_names.is_empty(),
        "the demo printed no names:\n{output}"
    );
    for name in pid_names {
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "namespace {name} left behind"
        );
        if name.starts_with("fwdemo") {
            assert!(!uapi_socket(&name).exists(), "socket of {name} left behind");
            assert!(
                pids_with_arg(&name).is_empty(),
                "daemon for {name} still runs"
            );
        }
    }
}

#[test]
fn demo_runs_and_leaves_nothing_behind() {
    if !require_root() {
        return;
    }
    let started = Instant::now();
    let out = Command::new(FERROWG)
        .arg("demo")
        .env("FERROWG_DAEMON", FERROWGD)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the demo took {:?}",
        started.elapsed()
    );
    for step in [
        "[1/6]",
        "[4/6]",
        "[5/6]",
        "every byte checked",
        "latest handshake:",
        "transfer:",
    ] {
        assert!(stdout.contains(step), "missing {step:?}:\n{stdout}");
    }
    assert_eq!(stdout.matches("\ninterface: ").count(), 2, "{stdout}");
    assert_demo_left_nothing(&stdout);

    // Interrupted once the daemons run: still nothing left.
    let mut child = Command::new(FERROWG)
        .arg("demo")
        .env("FERROWG_DAEMON", FERROWGD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        seen.push_str(&line);
        if line.starts_with("[3/6]") {
            Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()
                .unwrap();
        }
    }
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    // The ping of step 4 alone takes 0.4 s: the signal always lands before the end.
    assert_eq!(status.code(), Some(1), "{seen}{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!seen.contains("[5/6]"), "{seen}");
    assert!(seen.contains("cleaning up"), "{seen}");
    assert_demo_left_nothing(&seen);

    // Not root: a clear message, exit 1.
    let nobody = Command::new(FERROWG)
        .arg("demo")
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert_eq!(nobody.status.code(), Some(1), "{}", describe(&nobody));
    assert!(
        text(&nobody.stderr).contains("must be run as root"),
        "{}",
        describe(&nobody)
    );
}

// ---------------------------------------------------------------------------------------------
// 9. Errors

#[test]
fn errors_are_wg_quicks_or_name_file_line_and_key() {
    if !require_netns() {
        return;
    }
    let dir = Scratch::new("errors");
    let ns = uplinked_netns(1500);
    let ifname = unique_ifname();
    ns.track_socket(&ifname);
    let conf = dir.conf(&ifname, &plain_config(TWIN_PRIVATE, ""));
    let c = conf.to_str().unwrap();

    // Up twice: the second refuses and leaves the first alone.
    ferrowg_ok(&ns, dir.path(), &["up", c], &[]);
    let again = ferrowg(&ns, dir.path(), &["up", c], &[]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        text(&again.stderr),
        format!("{FERROWG}: `{ifname}' already exists\n")
    );
    assert!(ns.ip(&["link", "show", "dev", &ifname]).contains("UP"));
    assert!(Path::new(&format!("/run/ferrowg/{ifname}.state")).exists());
    ferrowg_ok(&ns, dir.path(), &["down", c], &[]);
    assert_gone(&ifname);

    // Down of an interface that is not there.
    let missing = ferrowg(&ns, dir.path(), &["down", c], &[]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        text(&missing.stderr),
        format!("{FERROWG}: `{ifname}' is not a WireGuard interface\n")
    );

    // Bad files: the message names the file, the line and the key; nothing is created.
    let cases = [
        (
            "[Interface]\nPrivateKey = {K}\nListenPort = 0x\n",
            ":3: ListenPort: Servname not supported for ai_socktype: `0x'",
        ),
        (
            "[Interface]\nAddress = 198.51.100.300/24\n",
            ":2: Address: `198.51.100.300/24' is not an IP address with an optional /prefix length",
        ),
        (
            "[Interface]\nSaveConfig = maybe\n",
            ":2: SaveConfig: `maybe' is neither true nor false",
        ),
        (
            "[Interface]\n[Peer]\nPublicKey = nope\n",
            ":3: PublicKey: Key is not the correct length or format: `nope'",
        ),
        (
            "[Interface]\nMTU = big\n",
            ":2: MTU: `big' is not a valid MTU",
        ),
    ];
    for (body, expected) in cases {
        let bad = dir.conf(&ifname, &body.replace("{K}", TWIN_PRIVATE));
        let out = ferrowg(&ns, dir.path(), &["up", bad.to_str().unwrap()], &[]);
        assert_eq!(out.status.code(), Some(1), "{body}");
        assert_eq!(
            text(&out.stderr),
            format!("{FERROWG}: {}{expected}\n", bad.display()),
            "{body}"
        );
        assert!(
            ns.try_run("ip", &["link", "show", "dev", &ifname])
                .status
                .code()
                != Some(0)
        );
        assert!(!uapi_socket(&ifname).exists());
    }

    // A file others can read: wg-quick's warning, and up goes ahead.
    let open_dir = dir.path().join("open");
    fs::create_dir(&open_dir).unwrap();
    fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
    let open = open_dir.join(format!("{ifname}.conf"));
    fs::write(&open, plain_config(TWIN_PRIVATE, "")).unwrap();
    fs::set_permissions(&open, fs::Permissions::from_mode(0o644)).unwrap();
    let out = ferrowg_ok(&ns, dir.path(), &["up", open.to_str().unwrap()], &[]);
    assert!(
        text(&out.stderr).starts_with(&format!(
            "Warning: `{}' is world accessible\n",
            open.display()
        )),
        "{}",
        describe(&out)
    );
    ferrowg_ok(&ns, dir.path(), &["down", open.to_str().unwrap()], &[]);
    assert_gone(&ifname);

    // Usage.
    let usage = ferrowg(&ns, dir.path(), &["up"], &[]);
    assert_eq!(usage.status.code(), Some(1));
    assert!(text(&usage.stderr).starts_with(&format!(
        "Usage: {FERROWG} [ up | down | save | strip ] [ CONFIG_FILE | INTERFACE ]"
    )));
}
