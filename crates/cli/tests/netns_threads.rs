//! ferrowgd's data-plane threads (needs root; see `common::netns`).
//!
//! By default on machines where the crypto runs inline (two cores or fewer, or
//! `FERROWGD_WORKERS=0`), TUN and UDP are served by one thread (`FERROWGD_IO=one`), which runs
//! under `SCHED_FIFO` (`FERROWGD_RT_PRIORITY`, default 5, 0 = off) while every other thread
//! stays at normal priority. `FERROWGD_IO=split` is the TUN reader plus one UDP reader per
//! socket, at normal priority. Both modes must carry traffic, between themselves and after a
//! listen-port change (the single loop must pick up the new socket).

mod common;

use common::netns::*;
use std::net::SocketAddr;

const SCHED_OTHER: u32 = 0;
const SCHED_FIFO: u32 = 1;

/// (name, scheduling policy, real-time priority) of every thread of `pid`: fields 40 and 41 of
/// `/proc/PID/task/TID/stat`, counted after the parenthesised name (which may hold spaces).
fn threads(pid: u32) -> Vec<(String, u32, u32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).expect("task directory") {
        let path = entry.unwrap().path();
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue; // the thread ended meanwhile
        };
        let name = stat[stat.find('(').unwrap() + 1..stat.rfind(')').unwrap()].to_string();
        let rest: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
        // rest[0] is field 3.
        let rt_priority = rest[40 - 3].parse().unwrap();
        let policy = rest[41 - 3].parse().unwrap();
        out.push((name, policy, rt_priority));
    }
    out
}

fn options(env: &[(&str, &str)]) -> PairOptions {
    let d = DaemonOptions::with_env(env);
    PairOptions {
        daemon_options: (d.clone(), d),
        ..PairOptions::default()
    }
}

fn assert_traffic(pair: &TunnelPair) {
    assert_pings_both_ways(pair);
    let t = tcp_transfer(&pair.b.ns, pair.b.inner(Family::V4), &pair.a.ns, 8 << 20);
    assert!(t.received_ok, "TCP a → b: {:?}", t.error);
}

/// Moves a to another listen port (and b's endpoint for a with it), then checks traffic.
fn change_listen_port(pair: &TunnelPair, port: u16) {
    wg(
        &pair.a.ns,
        &["set", pair.a.ifname(), "listen-port", &port.to_string()],
    );
    wg_set_peer(
        &pair.b.ns,
        pair.b.ifname(),
        &PeerSpec {
            public_key: pair.a.keys.public.clone(),
            endpoint: Some(SocketAddr::new(pair.a.outer, port)),
            ..PeerSpec::default()
        },
    );
    assert_eq!(
        wg(&pair.a.ns, &["show", pair.a.ifname(), "listen-port"]).trim(),
        port.to_string()
    );
    assert_traffic(pair);
}

/// The default: one real-time data-plane thread, every other thread at normal priority, and
/// the log says so.
#[test]
fn default_data_plane_is_one_realtime_thread() {
    if !require_netns() {
        return;
    }
    // Empty values mean "the default", whatever the environment of the test run says.
    let inline = [
        ("FERROWGD_WORKERS", "0"),
        ("FERROWGD_IO", ""),
        ("FERROWGD_RT_PRIORITY", ""),
    ];
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &options(&inline),
    );
    assert_traffic(&pair);
    for side in [&pair.a, &pair.b] {
        let all = threads(side.daemon.process().pid());
        let fifo: Vec<_> = all.iter().filter(|t| t.1 == SCHED_FIFO).collect();
        if fifo.is_empty() && side.daemon.log().contains("Real-time priority 5 refused") {
            skip("this machine refuses SCHED_FIFO (no CAP_SYS_NICE or an RT-less cgroup)");
            return;
        }
        assert_eq!(fifo.len(), 1, "one SCHED_FIFO thread expected: {all:?}");
        assert_eq!(fifo[0].2, 5, "priority 5 expected: {all:?}");
        assert!(
            all.iter()
                .all(|t| t.1 == SCHED_FIFO || (t.1 == SCHED_OTHER && t.2 == 0)),
            "the other threads must stay at normal priority: {all:?}"
        );
        assert!(
            !all.iter().any(|t| t.0 == "udp-rx"),
            "no UDP reader threads in one-loop mode: {all:?}"
        );
        assert!(
            side.daemon
                .log()
                .contains("data plane: one thread, SCHED_FIFO 5"),
            "{}",
            side.daemon.log()
        );
    }
    change_listen_port(&pair, 52001);
}

/// `FERROWGD_RT_PRIORITY` chooses the priority, 0 turns it off, and a bad value is named in
/// the log and replaced by the default.
#[test]
fn rt_priority_is_configurable() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    for (value, expected, complaint) in [
        ("0", None, false),
        ("7", Some(7), false),
        ("x", Some(5), true),
    ] {
        let opts = DaemonOptions::with_env(&[
            ("FERROWGD_WORKERS", "0"),
            ("FERROWGD_IO", ""),
            ("FERROWGD_RT_PRIORITY", value),
        ]);
        let ifname = unique_ifname();
        let d = start_daemon_with(&ns, &DaemonKind::Ferrowgd, &ifname, &opts);
        let all = threads(d.process().pid());
        let fifo: Vec<u32> = all
            .iter()
            .filter(|t| t.1 == SCHED_FIFO)
            .map(|t| t.2)
            .collect();
        if expected.is_some() && fifo.is_empty() && d.log().contains("refused") {
            skip("this machine refuses SCHED_FIFO");
            return;
        }
        assert_eq!(
            fifo,
            expected.into_iter().collect::<Vec<_>>(),
            "FERROWGD_RT_PRIORITY={value}: {all:?}"
        );
        assert_eq!(
            d.log().contains("FERROWGD_RT_PRIORITY=\"x\""),
            complaint,
            "{}",
            d.log()
        );
        d.process().stop(std::time::Duration::from_secs(5));
    }
}

/// `FERROWGD_IO=split`: a UDP reader thread per socket, nothing real-time; it carries traffic
/// to a one-loop peer and follows a listen-port change (the new socket gets a new reader).
#[test]
fn split_threads_interoperate_with_one_loop() {
    if !require_netns() {
        return;
    }
    let split = DaemonOptions::with_env(&[("FERROWGD_WORKERS", "0"), ("FERROWGD_IO", "split")]);
    let one = DaemonOptions::with_env(&[
        ("FERROWGD_WORKERS", "0"),
        ("FERROWGD_IO", "one"),
        ("FERROWGD_RT_PRIORITY", "0"),
    ]);
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            daemon_options: (split, one),
            ..PairOptions::default()
        },
    );
    assert_traffic(&pair);
    let a = threads(pair.a.daemon.process().pid());
    assert!(a.iter().any(|t| t.0 == "udp-rx"), "{a:?}");
    assert!(a.iter().all(|t| t.1 == SCHED_OTHER), "{a:?}");
    assert!(pair.a.daemon.log().contains("data plane: split threads"));
    let b = threads(pair.b.daemon.process().pid());
    assert!(b.iter().all(|t| t.1 == SCHED_OTHER), "{b:?}");
    assert!(pair
        .b
        .daemon
        .log()
        .contains("data plane: one thread, nap 80 us)"));
    change_listen_port(&pair, 52002);
}

/// `FERROWGD_NAP_US` sets how long the single loop naps after a burst (default 80 us, 0 =
/// never): the start line says so, a bad value is named and replaced by the default, and the
/// data-plane thread (the daemon's first) drops its timer slack so the naps stay short (at
/// normal priority, as here: a real-time thread has none).
#[test]
fn nap_is_configurable() {
    if !require_netns() {
        return;
    }
    let ns = Netns::new();
    for (value, expected, complaint) in [
        ("", Some(80), false),
        ("0", None, false),
        ("30", Some(30), false),
        ("x", Some(80), true),
    ] {
        let opts = DaemonOptions::with_env(&[
            ("FERROWGD_WORKERS", "0"),
            ("FERROWGD_IO", ""),
            ("FERROWGD_RT_PRIORITY", "0"),
            ("FERROWGD_NAP_US", value),
        ]);
        let ifname = unique_ifname();
        let d = start_daemon_with(&ns, &DaemonKind::Ferrowgd, &ifname, &opts);
        let log = d.log();
        match expected {
            Some(us) => assert!(log.contains(&format!(", nap {us} us)")), "{value:?}: {log}"),
            None => assert!(!log.contains(", nap "), "{value:?}: {log}"),
        }
        assert_eq!(log.contains("FERROWGD_NAP_US=\"x\""), complaint, "{log}");
        let slack = std::fs::read_to_string(format!("/proc/{}/timerslack_ns", d.process().pid()))
            .expect("timerslack_ns");
        assert_eq!(
            slack.trim() == "1000",
            expected.is_some(),
            "{value:?}: slack {slack}"
        );
        d.process().stop(std::time::Duration::from_secs(5));
    }
}

/// The naps happen under load and never when switched off: the data-plane thread is seen in
/// `clock_nanosleep`/`nanosleep` while a TCP transfer runs through the tunnel (sampled from
/// `/proc/PID/syscall`), and with `FERROWGD_NAP_US=0` it is only ever seen elsewhere.
#[test]
fn naps_happen_under_load_only_when_on() {
    if !require_netns() {
        return;
    }
    // x86-64 and aarch64 numbers of nanosleep / clock_nanosleep.
    let sleeps: &[&str] = if cfg!(target_arch = "x86_64") {
        &["35", "230"]
    } else {
        &["101", "115"]
    };
    for (value, naps) in [("", true), ("0", false)] {
        let pair = tunnel_pair(
            &DaemonKind::Ferrowgd,
            &DaemonKind::Ferrowgd,
            &options(&[
                ("FERROWGD_WORKERS", "0"),
                ("FERROWGD_IO", ""),
                ("FERROWGD_NAP_US", value),
            ]),
        );
        assert_pings_both_ways(&pair);
        let pid = pair.b.daemon.process().pid();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let done = done.clone();
            std::thread::spawn(move || {
                let mut seen = std::collections::BTreeMap::<String, usize>::new();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) {
                        let nr = s.split(' ').next().unwrap_or("").trim().to_string();
                        *seen.entry(nr).or_default() += 1;
                    }
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                seen
            })
        };
        let t = tcp_transfer(&pair.b.ns, pair.b.inner(Family::V4), &pair.a.ns, 256 << 20);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let seen = sampler.join().unwrap();
        assert!(t.received_ok, "TCP a → b: {:?}", t.error);
        let napping: usize = sleeps.iter().map(|nr| seen.get(*nr).unwrap_or(&0)).sum();
        let total: usize = seen.values().sum();
        assert!(total >= 20, "too few samples: {seen:?}");
        assert_eq!(napping > 0, naps, "FERROWGD_NAP_US={value:?}: {seen:?}");
    }
}
