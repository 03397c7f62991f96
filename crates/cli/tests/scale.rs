//! Scale: 10,000 peers configured with the official `wg setconf` on a live ferrowgd, read back
//! by `wg show` and `ferrowg show`; then one peer holding 130,000 allowed IPs, read back whole
//! and in order. Prints timings and the daemon's resident memory (VmRSS) with `eprintln!`;
//! it asserts correctness only, never time (run with `--nocapture` to see the figures):
//!
//! ```text
//! cargo test --release -p ferrowg --test scale -- --nocapture
//! ```
//!
//! Needs root (a TUN device, `/var/run/wireguard`): skipped otherwise, except under `CI=true`,
//! where that is a failure.

mod common;

use common::{reference_wg, scratch_path, FERROWG};
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const FERROWGD: &str = env!("CARGO_BIN_EXE_ferrowgd");
const SOCKET_DIR: &str = "/var/run/wireguard";
const PEERS: usize = 10_000;
const PREFIXES: usize = 130_000;
const PRIVATE_KEY: &str = "cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=";

fn running_as_root() -> bool {
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Root and a reference `wg` — or `None` (with a message) to skip.
fn setup() -> Option<PathBuf> {
    if !running_as_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but not running as root: the scale test needs root");
        }
        eprintln!("SKIPPED: not root; the scale test needs a TUN device");
        return None;
    }
    reference_wg()
}

/// A ferrowgd in the foreground on a fresh interface, killed (socket removed) on drop.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        let name = format!("fwgs{}", std::process::id() % 100_000);
        let log = scratch_path(&format!("{name}.log"));
        let child = Command::new(FERROWGD)
            .args(["-f", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ferrowgd");
        let mut daemon = Daemon { name, child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(daemon.socket()).is_err() {
            if let Ok(Some(status)) = daemon.child.try_wait() {
                panic!(
                    "ferrowgd exited with {status}: {}",
                    fs::read_to_string(&daemon.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ferrowgd never opened its socket"
            );
            thread::sleep(Duration::from_millis(10));
        }
        daemon
    }

    fn socket(&self) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{}.sock", self.name))
    }

    /// Resident memory in KiB (VmRSS of /proc/PID/status).
    fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// One raw UAPI operation; returns the whole reply.
    fn uapi(&self, request: &str) -> String {
        let mut conn = UnixStream::connect(self.socket()).unwrap();
        conn.write_all(request.as_bytes()).unwrap();
        let mut reader = BufReader::new(conn);
        let mut reply = String::new();
        loop {
            let mut line = String::new();
            assert!(
                reader.read_line(&mut line).unwrap() > 0,
                "UAPI reply cut off"
            );
            reply.push_str(&line);
            if line == "\n" {
                return reply;
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_file(self.socket());
        let _ = fs::remove_file(&self.log);
    }
}

/// Runs a tool; panics unless it succeeds. Returns stdout and the wall time taken.
fn run(program: &Path, args: &[&str]) -> (String, Duration) {
    let start = Instant::now();
    let out: Output = Command::new(program)
        .args(args)
        .env_remove("WG_COLOR_MODE")
        .env("WG_HIDE_KEYS", "never")
        .stdin(Stdio::null())
        .output()
        .expect("run tool");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}): {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (String::from_utf8(out.stdout).unwrap(), took)
}

fn base64(bytes: &[u8; 32]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(44);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s.push('=');
    s
}

fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A distinct, deterministic public key per index (nobody holds the private keys).
fn peer_key(i: usize, salt: u8) -> [u8; 32] {
    let mut k = [salt; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    k[8..16].copy_from_slice(&((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    k
}

/// Peer `i`'s single allowed IP: 10.x.y.z/32.
fn peer_ip(i: usize) -> String {
    let n = 0x0a00_0000u32 + i as u32 + 1;
    format!("{}/32", std::net::Ipv4Addr::from(n))
}

/// The n-th of the 130,000 prefixes, in a scrambled (not sorted) order: a permutation of
/// 2^17 /32s in 172.16.0.0/15, every tenth one an IPv6 /128 instead.
fn big_prefix(i: usize) -> String {
    let x = (i as u32).wrapping_mul(40_503) & 0x1_ffff;
    if i % 10 == 9 {
        format!(
            "{}/128",
            std::net::Ipv6Addr::from(0xfd00u128 << 112 | u128::from(x))
        )
    } else {
        format!("{}/32", std::net::Ipv4Addr::from(0xac10_0000u32 + x))
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

#[test]
fn ten_thousand_peers_and_130k_allowed_ips() {
    let Some(wg) = setup() else { return };
    let ferrowg = Path::new(FERROWG);
    let dir = scratch_path("scale");
    fs::create_dir_all(&dir).unwrap();

    let daemon = Daemon::start();
    let ifname = daemon.name.clone();
    thread::sleep(Duration::from_millis(200));
    let rss_start = daemon.rss_kib();
    eprintln!("ferrowgd idle RSS right after start: {rss_start} KiB");

    // One peer.
    let one = dir.join("one.conf");
    fs::write(
        &one,
        format!(
            "[Interface]\nPrivateKey = {PRIVATE_KEY}\n\n[Peer]\nPublicKey = {}\nAllowedIPs = 10.0.0.1/32\nEndpoint = 192.0.2.1:51820\n",
            base64(&peer_key(0, 1))
        ),
    )
    .unwrap();
    run(&wg, &["setconf", &ifname, one.to_str().unwrap()]);
    thread::sleep(Duration::from_millis(200));
    let rss_one = daemon.rss_kib();
    eprintln!("ferrowgd RSS with 1 peer: {rss_one} KiB");

    // 10,000 peers with `wg setconf`.
    let mut conf = format!("[Interface]\nPrivateKey = {PRIVATE_KEY}\n");
    for i in 0..PEERS {
        let _ = write!(
            conf,
            "\n[Peer]\nPublicKey = {}\nAllowedIPs = {}\nEndpoint = 192.0.2.{}:{}\n",
            base64(&peer_key(i, 1)),
            peer_ip(i),
            i % 250 + 1,
            10_000 + i % 50_000
        );
    }
    let big = dir.join("10k.conf");
    fs::write(&big, &conf).unwrap();
    let (_, took) = run(&wg, &["setconf", &ifname, big.to_str().unwrap()]);
    eprintln!("wg setconf of {PEERS} peers: {}", secs(took));
    thread::sleep(Duration::from_millis(300));
    let rss_10k = daemon.rss_kib();
    eprintln!(
        "ferrowgd RSS with {PEERS} peers: {rss_10k} KiB ({:.0} bytes per peer over 1 peer)",
        (rss_10k.saturating_sub(rss_one) * 1024) as f64 / (PEERS - 1) as f64
    );

    let (peers, took) = run(&wg, &["show", &ifname, "peers"]);
    eprintln!("wg show {ifname} peers: {}", secs(took));
    let listed: Vec<&str> = peers.lines().collect();
    assert_eq!(listed.len(), PEERS);
    for (i, line) in listed.iter().enumerate() {
        assert_eq!(*line, base64(&peer_key(i, 1)), "peer {i}");
    }
    let (text, took) = run(&wg, &["show", &ifname]);
    eprintln!("wg show {ifname}: {} ({} bytes)", secs(took), text.len());
    let (text, took) = run(ferrowg, &["show", &ifname]);
    eprintln!(
        "ferrowg show {ifname}: {} ({} bytes)",
        secs(took),
        text.len()
    );
    let (dump, took) = run(ferrowg, &["show", &ifname, "dump"]);
    eprintln!("ferrowg show {ifname} dump: {}", secs(took));
    assert_eq!(dump.lines().count(), PEERS + 1);

    // The same through raw UAPI: a get, then a replacing set.
    let start = Instant::now();
    let reply = daemon.uapi("get=1\n\n");
    eprintln!(
        "raw UAPI get of {PEERS} peers: {} ({} bytes)",
        secs(start.elapsed()),
        reply.len()
    );
    assert!(reply.ends_with("errno=0\n\n"));
    let mut set = format!("set=1\nprivate_key={}\nreplace_peers=true\n", hex(&[7; 32]));
    for i in 0..PEERS {
        let _ = write!(
            set,
            "public_key={}\nreplace_allowed_ips=true\nallowed_ip={}\nendpoint=192.0.2.1:{}\n",
            hex(&peer_key(i, 2)),
            peer_ip(i),
            10_000 + i
        );
    }
    set.push('\n');
    let start = Instant::now();
    let reply = daemon.uapi(&set);
    eprintln!(
        "raw UAPI set of {PEERS} (replacing) peers: {}",
        secs(start.elapsed())
    );
    assert_eq!(reply, "errno=0\n\n");
    let (peers, _) = run(&wg, &["show", &ifname, "peers"]);
    assert_eq!(peers.lines().count(), PEERS);
    assert_eq!(peers.lines().next(), Some(base64(&peer_key(0, 2)).as_str()));
    let rss = daemon.rss_kib();
    eprintln!("ferrowgd RSS after replacing {PEERS} peers: {rss} KiB");

    // One peer with 130,000 allowed IPs, by `wg setconf`, read back whole and in order.
    let key = base64(&peer_key(424_242, 3));
    let mut conf =
        format!("[Interface]\nPrivateKey = {PRIVATE_KEY}\n\n[Peer]\nPublicKey = {key}\n");
    for chunk in (0..PREFIXES).collect::<Vec<_>>().chunks(1000) {
        let list: Vec<String> = chunk.iter().map(|&i| big_prefix(i)).collect();
        let _ = writeln!(conf, "AllowedIPs = {}", list.join(", "));
    }
    let file = dir.join("130k.conf");
    fs::write(&file, &conf).unwrap();
    let (_, took) = run(&wg, &["setconf", &ifname, file.to_str().unwrap()]);
    eprintln!(
        "wg setconf of 1 peer with {PREFIXES} allowed IPs: {}",
        secs(took)
    );
    let (text, took) = run(&wg, &["show", &ifname, "allowed-ips"]);
    eprintln!("wg show {ifname} allowed-ips: {}", secs(took));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one peer");
    let (shown_key, list) = lines[0].split_once('\t').expect("key<TAB>prefixes");
    assert_eq!(shown_key, key);
    let shown: Vec<&str> = list.split(' ').collect();
    assert_eq!(shown.len(), PREFIXES, "every prefix read back");
    for (i, p) in shown.iter().enumerate() {
        assert_eq!(*p, big_prefix(i), "prefix {i} out of order or wrong");
    }
    let (text, took) = run(ferrowg, &["show", &ifname, "allowed-ips"]);
    eprintln!("ferrowg show {ifname} allowed-ips: {}", secs(took));
    assert_eq!(
        text.lines().next().map(|l| l.split(' ').count()),
        Some(PREFIXES)
    );
    eprintln!(
        "ferrowgd RSS with 1 peer of {PREFIXES} prefixes: {} KiB",
        daemon.rss_kib()
    );

    drop(daemon);
    let _ = fs::remove_dir_all(&dir);
}
