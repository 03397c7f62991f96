//! `show`, `showconf`, `set`, `setconf`, `addconf`, `syncconf` compared with the official `wg`
//! on live interfaces: ferrowgd daemons in the root network namespace.
//!
//! Both tools run under the same argv[0] (messages embed it), with the same environment, and
//! must agree on stdout, stderr and exit status. Where `wg` releases differ (PROTOCOL.md
//! §11.3), ferrowg follows the newest; a case is skipped only when the reference `wg` found
//! is known to predate the behaviour it checks.
//!
//! Needs root (TUN devices, `/var/run/wireguard`): skipped otherwise, except under `CI=true`,
//! where that is a failure. The tests take a common lock: `show all` lists every interface on
//! the host, so tests of this file must not add or remove daemons under each other's feet.

mod common;

use common::{reference_wg, scratch_path, Outcome, ARGV0, FERROWG};
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const FERROWGD: &str = env!("CARGO_BIN_EXE_ferrowgd");
const SOCKET_DIR: &str = "/var/run/wireguard";

/// Public keys of peers that exist only as configuration (nobody holds their private keys).
const P1: &str = "cPdj+2ZxM5+Jg61pAcmmO866UQFEhRsI/IqywxCyHn4=";
const P2: &str = "A3XgKWe7IU4cz1DgVwh4O4a487PtJzKbOng++b3mKj8=";
const P3: &str = "gFI/w0bsekd0XwxczP90zYSxEG8u7pq3WOLFbnB83mg=";
const P4: &str = "HyPkiqVydWgYOz+esYF1nU0R0P+0SLQGwJcPeNPQGFo=";
const P5: &str = "QJUw87DO0ybVz9EGYU4a2nfJwYfuLWoP5KuALBgExH0=";
const PSK: &str = "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl8=";

const FIELDS: [&str; 12] = [
    "public-key",
    "private-key",
    "listen-port",
    "fwmark",
    "peers",
    "preshared-keys",
    "endpoints",
    "allowed-ips",
    "latest-handshakes",
    "transfer",
    "persistent-keepalive",
    "dump",
];

// ---------------------------------------------------------------------------------------------
// Environment

static SERIAL: Mutex<()> = Mutex::new(());

fn running_as_root() -> bool {
    // /proc/self belongs to the process's effective user.
    fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The reference `wg` and the behaviours its release has (PROTOCOL.md §11.3).
struct Reference {
    path: PathBuf,
    /// The release date, e.g. 20210914 (0 if the version line is not understood).
    release: u32,
}

impl Reference {
    fn find() -> Option<Reference> {
        let path = reference_wg()?;
        let version = Command::new(&path).arg("--version").output().ok()?;
        let text = String::from_utf8_lossy(&version.stdout);
        let release = text
            .split_once("v1.0.")
            .and_then(|(_, rest)| rest.get(..8))
            .and_then(|date| date.parse().ok())
            .unwrap_or(0);
        if release == 0 {
            eprintln!(
                "cannot read the release of {}: {text:?}; assuming an old one",
                path.display()
            );
        }
        Some(Reference { path, release })
    }

    /// `allowed-ips +a,-b` (and the usage line that mentions it).
    fn has_incremental_allowed_ips(&self) -> bool {
        self.release >= 20250521
    }

    /// `show all endpoints` prefixes every line, not only the first.
    fn prefixes_every_endpoint_line(&self) -> bool {
        self.release >= 20250521
    }

    /// syncconf clears a running preshared key / keepalive that the file lacks.
    fn syncconf_clears_missing_fields(&self) -> bool {
        self.release >= 20260223
    }
}

/// Root, a reference `wg`, and the common lock — or `None` (with a message) to skip.
fn setup() -> Option<(MutexGuard<'static, ()>, Reference)> {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !running_as_root() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("CI=true but not running as root: the wg compatibility tests need root");
        }
        eprintln!("SKIPPED: not root; the wg compatibility tests need TUN devices");
        return None;
    }
    let wg = Reference::find()?;
    Some((guard, wg))
}

/// A scratch directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let path = scratch_path(label);
        fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// Writes a file readable only by its owner (keys go in here).
    fn file(&self, name: &str, contents: &[u8]) -> String {
        let path = self.0.join(name);
        let _ = fs::remove_file(&path);
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap()
            .write_all(contents)
            .unwrap();
        path.to_str().unwrap().to_owned()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// Running the tools

/// Runs a tool under the common argv[0], with a controlled environment: no colour or key
/// settings inherited, DNS retries off (a failed lookup would otherwise retry for a minute),
/// then `env` on top.
fn run_tool<S: AsRef<str>>(program: &Path, args: &[S], env: &[(&str, &str)]) -> Outcome {
    let out = Command::new(program)
        .arg0(ARGV0)
        .args(args.iter().map(AsRef::as_ref))
        .env_remove("WG_COLOR_MODE")
        .env_remove("WG_HIDE_KEYS")
        .env("WG_ENDPOINT_RESOLUTION_RETRIES", "0")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    Outcome {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code(),
    }
}

fn ours(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    run_tool(Path::new(FERROWG), args, env)
}

impl Reference {
    fn run<S: AsRef<str>>(&self, args: &[S]) -> Outcome {
        run_tool(&self.path, args, &[])
    }

    /// Runs `wg args`, which must succeed; returns its stdout.
    fn ok<S: AsRef<str>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        assert_eq!(out.code, Some(0), "wg {args:?} failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    fn showconf(&self, ifname: &str) -> String {
        self.ok(&["showconf", ifname])
    }

    fn listen_port(&self, ifname: &str) -> u16 {
        self.ok(&["show", ifname, "listen-port"])
            .trim()
            .parse()
            .unwrap()
    }

    /// `latest-handshakes` of one peer (0 if never, panics if the peer is missing).
    fn latest_handshake(&self, ifname: &str, peer: &str) -> u64 {
        let text = self.ok(&["show", ifname, "latest-handshakes"]);
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{peer}\t")))
            .unwrap_or_else(|| panic!("{peer} is not a peer of {ifname}: {text}"))
            .parse()
            .unwrap()
    }

    fn wait_for_handshake(&self, ifname: &str, peer: &str) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let when = self.latest_handshake(ifname, peer);
            if when != 0 {
                return when;
            }
            assert!(
                Instant::now() < deadline,
                "no handshake between {ifname} and {peer}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fresh key pair (private, public), base64.
    fn keypair(&self) -> (String, String) {
        let private = self.ok(&["genkey"]);
        let out = Command::new(&self.path)
            .arg("pubkey")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(private.as_bytes())?;
                child.wait_with_output()
            })
            .unwrap();
        let public = String::from_utf8(out.stdout).unwrap();
        (private.trim().to_owned(), public.trim().to_owned())
    }
}

/// A command line from a template: split at spaces first, then `{name}` placeholders filled
/// in each word, so that a value with spaces (a path, say) stays one argument.
fn command(template: &str, values: &[(&str, &str)]) -> Vec<String> {
    template
        .split_whitespace()
        .map(|word| {
            values
                .iter()
                .fold(word.to_owned(), |w, (name, value)| w.replace(name, value))
        })
        .collect()
}

/// Both tools, same arguments and environment: identical stdout, stderr and exit status.
fn assert_same(wg: &Reference, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mine = ours(args, env);
    let theirs = run_tool(&wg.path, args, env);
    assert_eq!(
        mine,
        theirs,
        "ferrowg (left) differs from {} (right) for {args:?} with {env:?}",
        wg.path.display()
    );
    mine
}

/// As [`assert_same`] for output that moves with the clock or with traffic ("5 seconds
/// ago", counters, other interfaces on the host): retried a few times before failing.
fn assert_same_eventually(wg: &Reference, args: &[&str], env: &[(&str, &str)]) {
    let mut attempt = 0;
    loop {
        let mine = ours(args, env);
        let theirs = run_tool(&wg.path, args, env);
        if mine == theirs {
            return;
        }
        attempt += 1;
        assert!(
            attempt < 8,
            "ferrowg (left) differs from {} (right) for {args:?} with {env:?}:\n{mine:?}\n{theirs:?}",
            wg.path.display()
        );
        thread::sleep(Duration::from_millis(150));
    }
}

// ---------------------------------------------------------------------------------------------
// Daemons

/// A ferrowgd in the foreground on a fresh interface; killed (and its socket removed) on
/// drop, so a failing test leaves nothing behind.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start() -> Daemon {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        // IFNAMSIZ - 1 = 15 bytes at most: "fwgc" + 4 + a few.
        let name = format!("fwgc{}{n}", std::process::id() % 10000);
        let log = scratch_path(&format!("{name}.log"));
        let child = Command::new(FERROWGD)
            .args(["-f", &name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start ferrowgd");
        let mut daemon = Daemon { name, child, log };
        daemon.wait_until_ready();
        daemon
    }

    fn socket(&self) -> PathBuf {
        Path::new(SOCKET_DIR).join(format!("{}.sock", self.name))
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(self.socket()).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ferrowgd {} exited with {status}: {}",
                    self.name,
                    fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "ferrowgd {} never opened its socket",
                self.name
            );
            thread::sleep(Duration::from_millis(10));
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

// ---------------------------------------------------------------------------------------------
// Golden output of show / showconf

#[test]
fn show_and_showconf_match_wg_on_live_interfaces() {
    let Some((_lock, wg)) = setup() else { return };
    let dir = TempDir::new("golden");
    let a = Daemon::start();
    let b = Daemon::start();
    let (a_private, a_public) = wg.keypair();
    let (b_private, b_public) = wg.keypair();
    let a_key = dir.file("a.key", a_private.as_bytes());
    let b_key = dir.file("b.key", b_private.as_bytes());
    let psk = dir.file("psk", PSK.as_bytes());
    let (a_port, b_port) = (wg.listen_port(&a.name), wg.listen_port(&b.name));

    let (a_port, b_port) = (a_port.to_string(), b_port.to_string());
    let values = [
        ("{a}", a.name.as_str()),
        ("{b}", b.name.as_str()),
        ("{a_key}", a_key.as_str()),
        ("{b_key}", b_key.as_str()),
        ("{a_public}", a_public.as_str()),
        ("{b_public}", b_public.as_str()),
        ("{a_port}", a_port.as_str()),
        ("{b_port}", b_port.as_str()),
        ("{psk}", psk.as_str()),
        ("{P1}", P1),
        ("{P2}", P2),
        ("{P3}", P3),
        ("{P4}", P4),
    ];
    wg.ok(&command(
        "set {b} private-key {b_key} \
         peer {a_public} endpoint 127.0.0.1:{a_port} allowed-ips 10.9.0.1/32",
        &values,
    ));
    // A: a peer that handshakes (B, over loopback), one with a preshared key and an IPv4
    // endpoint, one with an IPv6 endpoint, one with a keepalive, one with nothing at all.
    wg.ok(&command(
        "set {a} private-key {a_key} fwmark 0x1234 \
         peer {b_public} endpoint 127.0.0.1:{b_port} allowed-ips 10.9.0.2/32,fd00:9::2/128 \
             persistent-keepalive 1 \
         peer {P1} preshared-key {psk} endpoint 192.0.2.1:51820 \
             allowed-ips 10.1.0.0/24,10.1.1.0/24,fd00:1::/64 \
         peer {P2} endpoint [2001:db8::1]:51821 allowed-ips fd00:2::/48,::1.2.3.4/128 \
         peer {P3} persistent-keepalive 25 allowed-ips 10.3.0.0/16,fd00:3::/64 \
         peer {P4}",
        &values,
    ));
    wg.wait_for_handshake(&a.name, &b_public);
    // Quiet from now on: no keepalives moving the counters.
    wg.ok(&command(
        "set {a} peer {b_public} persistent-keepalive off",
        &values,
    ));
    thread::sleep(Duration::from_millis(200));

    for colour in ["never", "always"] {
        for hide in [None, Some("never")] {
            let mut env = vec![("WG_COLOR_MODE", colour)];
            if let Some(hide) = hide {
                env.push(("WG_HIDE_KEYS", hide));
            }
            for args in [
                &[][..],
                &["show"],
                &["show", "all"],
                &["show", &a.name],
                &["show", &b.name],
                &["show", "interfaces"],
                &["showconf", &a.name],
                &["showconf", &b.name],
            ] {
                assert_same_eventually(&wg, args, &env);
            }
            for field in FIELDS {
                assert_same_eventually(&wg, &["show", &a.name, field], &env);
                if field != "endpoints" || wg.prefixes_every_endpoint_line() {
                    assert_same_eventually(&wg, &["show", "all", field], &env);
                }
            }
        }
    }

    // The JSON form says what dump says.
    let json = String::from_utf8(ours(&["show", &a.name, "--json"], &[]).stdout).unwrap();
    assert!(json.starts_with(&format!("{{\n  \"name\": \"{}\",\n  \"public_key\": \"{a_public}\",\n  \"private_key\": \"(hidden)\",\n  \"listen_port\": {a_port},\n  \"fwmark\": 4660,\n", a.name)), "{json}");
    assert!(json.contains(&format!("\"public_key\": \"{P2}\",\n      \"preshared_key\": null,\n      \"endpoint\": \"[2001:db8::1]:51821\",\n      \"allowed_ips\": [\"fd00:2::/48\", \"::1.2.3.4/128\"],\n      \"latest_handshake\": 0,")), "{json}");
}

// ---------------------------------------------------------------------------------------------
// Configuration changes: the same commands through ferrowg on X and wg on Y

/// One command of a sequence. `{if}`, `{dir}`, `{port0}`, `{port1}` and `{b}` (the partner's
/// port) are filled in per interface; `file` is written to `{dir}/<if>.conf` first and
/// passed as `{file}`.
struct Step {
    args: &'static [&'static str],
    file: Option<&'static str>,
    runs_if: fn(&Reference) -> bool,
}

fn always(_: &Reference) -> bool {
    true
}

const fn step(args: &'static [&'static str]) -> Step {
    Step {
        args,
        file: None,
        runs_if: always,
    }
}

const fn with_file(args: &'static [&'static str], file: &'static str) -> Step {
    Step {
        args,
        file: Some(file),
        runs_if: always,
    }
}

/// Per-interface values for the placeholders.
struct Place<'a> {
    ifname: &'a str,
    ports: [u16; 2],
    dir: &'a TempDir,
    keys: &'a [(&'a str, String)],
}

impl Place<'_> {
    fn fill(&self, text: &str) -> String {
        let mut text = text
            .replace("{if}", self.ifname)
            .replace("{dir}", self.dir.0.to_str().unwrap())
            .replace("{port0}", &self.ports[0].to_string())
            .replace("{port1}", &self.ports[1].to_string());
        for (name, value) in self.keys {
            text = text.replace(name, value);
        }
        text
    }

    /// A command line from a template, split before filling in (see [`command`]).
    fn fill_words(&self, template: &str) -> Vec<String> {
        template.split_whitespace().map(|w| self.fill(w)).collect()
    }

    /// showconf with this interface's ports replaced by their role (a port the daemon
    /// picked at random becomes `<random>`), for comparison.
    fn normalised(&self, showconf: &str) -> String {
        showconf
            .lines()
            .map(|line| match line.strip_prefix("ListenPort = ") {
                Some(port) if port == self.ports[0].to_string() => {
                    "ListenPort = <port0>".to_owned()
                }
                Some(port) if port == self.ports[1].to_string() => {
                    "ListenPort = <port1>".to_owned()
                }
                Some(_) => "ListenPort = <random>".to_owned(),
                None => line.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn run(&self, program: &Path, step: &Step) -> Outcome {
        let mut args: Vec<String> = step.args.iter().map(|a| self.fill(a)).collect();
        if let Some(template) = step.file {
            let path = self.dir.file(
                &format!("{}.conf", self.ifname),
                self.fill(template).as_bytes(),
            );
            for arg in &mut args {
                *arg = arg.replace("{file}", &path);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_tool(program, &args, &[])
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const ADD_P4_CHANGE_P1: &str = "\
[Peer]
PublicKey = {P4}
AllowedIPs = 10.4.0.0/16
Endpoint = 127.0.0.1:4
[Peer]
PublicKey = {P1}
AllowedIPs = 10.7.0.0/24
PresharedKey = {PSK}
";

/// B exactly as configured, P1 as after the addconf, P2/P3/P4 gone, P5 new.
const SYNC_KEEPING_B: &str = "\
[Interface]
PrivateKey = {xy_private}
ListenPort = {port1}
[Peer]
PublicKey = {b_public}
Endpoint = 127.0.0.1:{b}
AllowedIPs = 10.9.0.2/32
[Peer]
PublicKey = {P1}
PresharedKey = {PSK}
AllowedIPs = 10.7.0.0/24
[Peer]
PublicKey = {P5}
AllowedIPs = 10.5.0.0/16, fd00:5::/64
PersistentKeepalive = 0
";

/// As above without P5, and without P1's preshared key (which syncconf must then clear).
const SYNC_DROPPING_PSK: &str = "\
[Interface]
PrivateKey = {xy_private}
ListenPort = {port1}
[Peer]
PublicKey = {b_public}
Endpoint = 127.0.0.1:{b}
AllowedIPs = 10.9.0.2/32
[Peer]
PublicKey = {P1}
AllowedIPs = 10.7.0.0/24
";

const SET_ONLY_P4: &str = "\
[Interface]
ListenPort = {port0}
FwMark = 77
[Peer]
PublicKey = {P4}
Endpoint = [::1]:44
AllowedIPs = ::/0
PersistentKeepalive = 30
";

#[test]
fn set_setconf_addconf_syncconf_change_the_interface_as_wg_does() {
    let Some((_lock, wg)) = setup() else { return };
    let dir = TempDir::new("semantics");
    let x = Daemon::start();
    let y = Daemon::start();
    let b = Daemon::start();
    // X and Y share a key so that their configurations can be compared line by line; the
    // partner B therefore sees them as one peer, which is fine for handshakes.
    let (xy_private, xy_public) = wg.keypair();
    let (b_private, b_public) = wg.keypair();
    // Referred to as {dir}/xy.key by the steps.
    dir.file("xy.key", xy_private.as_bytes());
    let b_key = dir.file("b.key", b_private.as_bytes());
    dir.file("psk", PSK.as_bytes());
    let b_port = wg.listen_port(&b.name);
    wg.ok(&command(
        "set {b} private-key {b_key} peer {xy_public} allowed-ips 10.9.0.1/32",
        &[
            ("{b}", &b.name),
            ("{b_key}", &b_key),
            ("{xy_public}", &xy_public),
        ],
    ));

    let keys = [
        ("{xy_private}", xy_private.clone()),
        ("{b_public}", b_public.clone()),
        ("{b}", b_port.to_string()),
        ("{P1}", P1.to_owned()),
        ("{P4}", P4.to_owned()),
        ("{P5}", P5.to_owned()),
        ("{PSK}", PSK.to_owned()),
    ];
    let places = [&x, &y].map(|d| Place {
        ifname: &d.name,
        ports: [free_udp_port(), free_udp_port()],
        dir: &dir,
        keys: &keys,
    });
    // Both start identical and with a live session to B, then fall quiet.
    for place in &places {
        let setup = "set {if} private-key {dir}/xy.key listen-port {port0} \
            peer {b_public} endpoint 127.0.0.1:{b} allowed-ips 10.9.0.2/32 persistent-keepalive 1";
        wg.ok(&place.fill_words(setup));
        wg.wait_for_handshake(place.ifname, &b_public);
        wg.ok(&place.fill_words("set {if} peer {b_public} persistent-keepalive off"));
    }
    let sessions: Vec<u64> = places
        .iter()
        .map(|p| wg.latest_handshake(p.ifname, &b_public))
        .collect();

    #[rustfmt::skip]
    let steps = [
        step(&["set", "{if}", "listen-port", "{port1}", "fwmark", "0x10",
            "peer", P1, "endpoint", "127.0.0.1:9", "allowed-ips", "10.1.0.0/24, fd00:1::/64",
                "persistent-keepalive", "25",
            "peer", P2, "preshared-key", "{dir}/psk", "endpoint", "[2001:db8::2]:1234",
                "allowed-ips", "10.2.0.0/16,10.2.0.1/32"]),
        step(&["set", "{if}", "peer", P1, "allowed-ips", "10.1.0.0/24,10.1.5.0/24",
            "persistent-keepalive", "off", "endpoint", "localhost:5555"]),
        step(&["set", "{if}", "peer", P2, "remove", "peer", P3, "allowed-ips", "",
            "endpoint", "::1:7"]),
        step(&["set", "{if}", "fwmark", "off", "peer", P3, "allowed-ips", "fd00:3::/64",
            "allowed-ips", "10.3.0.0/16", "preshared-key", "/dev/null"]),
        with_file(&["addconf", "{if}", "{file}"], ADD_P4_CHANGE_P1),
        // Step 5: only the difference; B is untouched and keeps its session.
        with_file(&["syncconf", "{if}", "{file}"], SYNC_KEEPING_B),
        Step {
            runs_if: Reference::has_incremental_allowed_ips,
            ..step(&["set", "{if}", "peer", P5, "allowed-ips", "+10.8.0.0/16,-10.5.0.0/16",
                "peer", P1, "allowed-ips", "-10.9.9.0/24"])
        },
        Step {
            runs_if: Reference::syncconf_clears_missing_fields,
            ..with_file(&["syncconf", "{if}", "{file}"], SYNC_DROPPING_PSK)
        },
        with_file(&["setconf", "{if}", "{file}"], SET_ONLY_P4),
        step(&["set", "{if}", "private-key", "{dir}/xy.key", "peer", P4, "remove", "peer", P5]),
        step(&["set", "{if}", "private-key", "/dev/null", "listen-port", "{port1}"]),
        with_file(&["addconf", "{if}", "{file}"], "[Interface]\nFwMark = off\n"),
        with_file(&["setconf", "{if}", "{file}"], "\n"),
    ];

    for (i, step) in steps.iter().enumerate() {
        if !(step.runs_if)(&wg) {
            eprintln!("step {i} skipped: {} predates it", wg.path.display());
            continue;
        }
        let mine = places[0].run(Path::new(FERROWG), step);
        let theirs = places[1].run(&wg.path, step);
        let mine_text = places[0].normalised(&wg.showconf(places[0].ifname));
        let theirs_text = places[1].normalised(&wg.showconf(places[1].ifname));
        assert_eq!(
            (&mine.stdout, &mine.stderr, mine.code),
            (&theirs.stdout, &theirs.stderr, theirs.code),
            "step {i} ({:?}): ferrowg (left) and wg (right) reported differently",
            step.args
        );
        assert_eq!(mine.code, Some(0), "step {i}: {mine:?}");
        assert_eq!(
            mine_text, theirs_text,
            "step {i} ({:?}): X (ferrowg, left) and Y (wg, right) differ",
            step.args
        );
        if step.args[0] == "syncconf" && i == 5 {
            for (place, before) in places.iter().zip(&sessions) {
                assert_eq!(
                    wg.latest_handshake(place.ifname, &b_public),
                    *before,
                    "syncconf disturbed the unchanged peer's session on {}",
                    place.ifname
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Refused input: same message, same status, interface unchanged

#[test]
fn bad_input_is_refused_like_wg_and_changes_nothing() {
    let Some((_lock, wg)) = setup() else { return };
    let dir = TempDir::new("bad");
    let x = Daemon::start();
    let (private, _) = wg.keypair();
    let key = dir.file("x.key", private.as_bytes());
    wg.ok(&command(
        "set {x} private-key {key} fwmark 0x55 \
         peer {P1} allowed-ips 10.1.0.0/24 endpoint 127.0.0.1:1 peer {P2}",
        &[
            ("{x}", &x.name),
            ("{key}", &key),
            ("{P1}", P1),
            ("{P2}", P2),
        ],
    ));
    let before = wg.showconf(&x.name);
    let file = |name: &str, text: &str| dir.file(name, text.as_bytes());
    let missing = format!("{}/missing.conf", dir.0.display());
    let short = file("short.key", "abc");
    let trailing = file("trailing.key", &format!("{PSK} x"));
    let noncanonical = file(
        "noncanonical.key",
        "QEFCQ0RFRkdISUpLTE1OT1BRUlNUVVZXWFlaW1xdXl9=",
    );
    let with_nul = file("nul.key", &format!("{PSK}\0"));
    let address = file("address.conf", "[Interface]\nAddress = 10.0.0.1/24\n");
    let dns = file("dns.conf", "[Interface]\nDNS = 1.1.1.1\n");
    let mtu = file("mtu.conf", "[Interface]\nMTU = 1420\n");
    let table = file("table.conf", "[Interface]\nTable = off\n");
    let hook = file("hook.conf", "[Interface]\nPostUp = echo hi # x\n");
    let save = file("save.conf", "[Interface]\nSaveConfig = true\n");
    let unknown = file("unknown.conf", "[Interface]\nListenPort = 1\nBogus = 1\n");
    let outside = file("outside.conf", "ListenPort = 1\n");
    let empty_value = file("empty.conf", "[Interface]\nListenPort =\n");
    let peer_key_in_interface = file("misplaced.conf", "[Interface]\nPublicKey = abc\n");
    let no_public = file(
        "nopub.conf",
        &format!("[Peer]\nAllowedIPs = 10.0.0.1/8\n[Peer]\nPublicKey = {P3}\n"),
    );
    let bad_value = file(
        "badvalue.conf",
        &format!("[Peer]\nPublicKey = {P3}\nPersistentKeepalive = 70000\n"),
    );
    let bad_endpoint = file(
        "badendpoint.conf",
        &format!("[Peer]\nPublicKey = {P3}\nEndpoint = [::1\n"),
    );
    let bad_key = file(
        "badkey.conf",
        "[Interface]\nPrivateKey = cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGp=\n",
    );
    let x_name = x.name.as_str();

    let mut cases: Vec<Vec<&str>> = vec![
        // keys
        vec!["set", x_name, "peer", "abc"],
        vec![
            "set",
            x_name,
            "peer",
            "cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGp=",
        ],
        vec!["set", x_name, "private-key", &short],
        vec!["set", x_name, "private-key", &trailing],
        vec!["set", x_name, "private-key", &noncanonical],
        vec!["set", x_name, "private-key", &with_nul],
        vec!["set", x_name, "private-key", &missing],
        vec!["set", x_name, "peer", P1, "preshared-key", "/"],
        // endpoints
        vec!["set", x_name, "peer", P1, "endpoint", ""],
        vec!["set", x_name, "peer", P1, "endpoint", "[::1"],
        vec!["set", x_name, "peer", P1, "endpoint", "[::1]"],
        vec!["set", x_name, "peer", P1, "endpoint", "[::1]x5"],
        vec!["set", x_name, "peer", P1, "endpoint", "127.0.0.1"],
        vec!["set", x_name, "peer", P1, "endpoint", "127.0.0.1:"],
        vec![
            "set",
            x_name,
            "peer",
            P1,
            "endpoint",
            "127.0.0.1:nosuchservice",
        ],
        vec!["set", x_name, "peer", P1, "endpoint", "127.0.0.1:-5"],
        vec![
            "set",
            x_name,
            "peer",
            P1,
            "endpoint",
            "nonexistent.invalid:51820",
        ],
        // CIDRs
        vec!["set", x_name, "peer", P1, "allowed-ips", "10.0.0.0/33"],
        vec!["set", x_name, "peer", P1, "allowed-ips", "10.0.0.0/"],
        vec!["set", x_name, "peer", P1, "allowed-ips", "10.0.0.0/x"],
        vec!["set", x_name, "peer", P1, "allowed-ips", "10.0.0/8"],
        vec!["set", x_name, "peer", P1, "allowed-ips", "10.0.0.0/8,,"],
        vec!["set", x_name, "peer", P1, "allowed-ips", "fd00::/129"],
        vec![
            "set",
            x_name,
            "peer",
            P1,
            "allowed-ips",
            "10.0.0.1/8, 300.0.0.0/8",
        ],
        // fwmark, keepalive, ports
        vec!["set", x_name, "fwmark", "0X10"],
        vec!["set", x_name, "fwmark", "4294967296"],
        vec!["set", x_name, "fwmark", "-1"],
        vec!["set", x_name, "fwmark", "0x"],
        vec!["set", x_name, "peer", P1, "persistent-keepalive", "65536"],
        vec!["set", x_name, "peer", P1, "persistent-keepalive", "-1"],
        vec!["set", x_name, "peer", P1, "persistent-keepalive", "on"],
        vec!["set", x_name, "listen-port", ""],
        vec!["set", x_name, "listen-port", "nosuchservice"],
        vec!["set", x_name, "listen-port", "-1"],
        // tokens
        vec!["set", x_name, "bogus"],
        vec!["set", x_name, "remove"],
        vec!["set", x_name, "peer"],
        vec!["set", x_name, "listen-port"],
        vec!["set", x_name, "peer", P1, "listen-port", "5"],
        vec!["set", x_name, "peer", P1, "endpoint"],
        vec!["set", x_name, "peer", P1, "fwmark", "1"],
        vec![
            "set",
            x_name,
            "peer",
            P1,
            "allowed-ips",
            "10.0.0.0/8",
            "bogus",
            "1",
        ],
        // configuration files
        vec!["setconf", x_name, &address],
        vec!["setconf", x_name, &dns],
        vec!["addconf", x_name, &mtu],
        vec!["syncconf", x_name, &table],
        vec!["setconf", x_name, &hook],
        vec!["setconf", x_name, &save],
        vec!["setconf", x_name, &unknown],
        vec!["addconf", x_name, &outside],
        vec!["setconf", x_name, &empty_value],
        vec!["setconf", x_name, &peer_key_in_interface],
        vec!["addconf", x_name, &no_public],
        vec!["syncconf", x_name, &bad_value],
        vec!["setconf", x_name, &bad_endpoint],
        vec!["setconf", x_name, &bad_key],
        vec!["setconf", x_name, &missing],
        vec!["addconf", x_name, &missing],
        vec!["syncconf", x_name, &missing],
        // usage
        vec!["setconf", x_name],
        vec!["addconf", x_name, &address, "extra"],
        vec!["showconf"],
        vec!["showconf", x_name, "extra"],
        vec!["show", x_name, "bogus"],
        vec!["show", "all", "bogus"],
        vec!["show", "a", "b", "c"],
        vec!["show", "interfaces", "extra"],
        vec!["show", "--help"],
        // interfaces that do not exist
        vec!["show", "fwgc-missing"],
        vec!["show", "fwgc-missing", "dump"],
        vec!["show", "fwgc/x"],
        vec!["showconf", "fwgc-missing"],
        vec!["set", "fwgc-missing", "peer", P1],
        vec!["setconf", "fwgc-missing", &outside],
        vec!["syncconf", "fwgc-missing", &no_public],
    ];
    if wg.has_incremental_allowed_ips() {
        cases.extend([
            vec!["set", x_name],
            vec!["set", "-h"],
            vec!["set", x_name, "peer", P1, "allowed-ips", "+"],
            vec!["set", x_name, "peer", P1, "allowed-ips", "-10.0.0.0/33"],
            vec!["set", x_name, "peer", P1, "allowed-ips", "+-10.0.0.0/8"],
        ]);
    }
    for args in &cases {
        assert_same(&wg, args, &[]);
        assert_eq!(
            wg.showconf(x_name),
            before,
            "{args:?} changed the interface"
        );
    }
    // A bad WG_ENDPOINT_RESOLUTION_RETRIES ends the program at the first endpoint.
    for value in ["x", "-1", "99999999999"] {
        let env = [("WG_ENDPOINT_RESOLUTION_RETRIES", value)];
        assert_same(
            &wg,
            &["set", x_name, "peer", P1, "endpoint", "127.0.0.1:5"],
            &env,
        );
        assert_same(&wg, &["setconf", x_name, &bad_endpoint], &env);
    }
    assert_eq!(wg.showconf(x_name), before);
}

// ---------------------------------------------------------------------------------------------
// The exact `set` text both tools send, captured by a stand-in daemon

/// A UAPI socket that answers `get` with a fixed reply and records every `set` (answered
/// with success), to compare what the two tools send byte for byte.
struct FakeDaemon {
    name: String,
    sets: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn start(get_reply: String) -> FakeDaemon {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "fwgf{}{}",
            std::process::id() % 10000,
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        fs::create_dir_all(SOCKET_DIR).unwrap();
        let path = Path::new(SOCKET_DIR).join(format!("{name}.sock"));
        let _ = fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let sets = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (sets2, stop2) = (sets.clone(), stop.clone());
        let thread = thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(&stream);
                let mut message = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\n" {
                        break;
                    }
                    message.push_str(&line);
                }
                // `wg` probes with a bare connect first: nothing to answer.
                if message == "get=1\n" {
                    let _ = (&stream).write_all(get_reply.as_bytes());
                } else if message.starts_with("set=1\n") {
                    sets2.lock().unwrap().push(message);
                    let _ = (&stream).write_all(b"errno=0\n\n");
                }
            }
        });
        FakeDaemon {
            name,
            sets,
            stop,
            thread: Some(thread),
        }
    }

    fn take_sets(&self) -> Vec<String> {
        std::mem::take(&mut self.sets.lock().unwrap())
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let path = Path::new(SOCKET_DIR).join(format!("{}.sock", self.name));
        let _ = UnixStream::connect(&path);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = fs::remove_file(&path);
    }
}

fn hex(b64: &str) -> String {
    // Small base64 decoder for the test's fixed keys.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits = 0u32;
    let mut count = 0;
    let mut out = String::new();
    for c in b64.bytes().filter(|&c| c != b'=') {
        bits = (bits << 6) | ALPHABET.iter().position(|&a| a == c).unwrap() as u32;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push_str(&format!("{:02x}", (bits >> count) & 0xff));
        }
    }
    out
}

/// A running configuration with every formatting corner: a scoped link-local endpoint
/// (printed by interface name), an IPv4-compatible IPv6 prefix, huge counters, old
/// handshakes, a peer with nothing.
fn canned_get_reply() -> String {
    let zero = "0".repeat(64);
    format!(
        "private_key={private}\nlisten_port=51820\nfwmark=51820\n\
         public_key={p1}\npreshared_key={psk}\nprotocol_version=1\nendpoint=192.0.2.1:51820\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=4660\n\
         rx_bytes=1258291\npersistent_keepalive_interval=25\nallowed_ip=10.0.0.2/32\n\
         allowed_ip=fd00::2/128\n\
         public_key={p2}\npreshared_key={zero}\nprotocol_version=1\nendpoint=[fe80::1%1]:51820\n\
         last_handshake_time_sec=1600000100\nlast_handshake_time_nsec=0\n\
         tx_bytes=1099511627776\nrx_bytes=5\npersistent_keepalive_interval=1\n\
         allowed_ip=0.0.0.0/0\nallowed_ip=::1.2.3.4/128\n\
         public_key={p3}\npreshared_key={zero}\nprotocol_version=1\nendpoint=[2001:db8::1]:51821\n\
         last_handshake_time_sec=0\nlast_handshake_time_nsec=0\ntx_bytes=0\nrx_bytes=0\n\
         persistent_keepalive_interval=0\n\
         public_key={p4}\npreshared_key={zero}\nprotocol_version=1\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=7\ntx_bytes=1024\n\
         rx_bytes=1152\npersistent_keepalive_interval=65535\nallowed_ip=::ffff:10.0.0.0/104\n\
         errno=0\n\n",
        private = hex("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo="),
        p1 = hex(P1),
        p2 = hex(P2),
        p3 = hex(P3),
        p4 = hex(P4),
        psk = hex(PSK),
    )
}

#[test]
fn the_uapi_text_sent_and_the_text_shown_are_wgs() {
    let Some((_lock, wg)) = setup() else { return };
    let dir = TempDir::new("uapi");
    let fake = FakeDaemon::start(canned_get_reply());
    let name = fake.name.as_str();
    let psk = dir.file("psk", PSK.as_bytes());
    let file = |n: &str, text: String| dir.file(n, text.as_bytes());
    let sync = file("sync.conf", format!(
        "[Interface]\nListenPort = 1\n[Peer]\nPublicKey = {P5}\n[Peer]\nPublicKey = {P2}\nPersistentKeepalive = 5\n[Peer]\nPublicKey = {P1}\n[Peer]\nPublicKey = {P1}\nEndpoint = 127.1:99999\n"
    ));
    let full = file("full.conf", format!(
        "[interface]\nlistenport=domain\nfwmark=0x10\nPrivateKey = cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=\n[PEER]\npublickey={P1}\npersistentkeepalive=off\nallowedips=1.2.3.4\nallowedips=::/0, 10.0.0.1/8\nPresharedKey = {PSK}\n[Interface]\nListenPort=5\n[Peer]\nPublicKey = {P3}\nEndpoint = localhost:7\n"
    ));
    let empty = file("empty.conf", String::new());
    let interface_only = file("iface.conf", "[Interface]\nFwMark = off\n".to_owned());
    let signed = file(
        "signed.conf",
        format!("[Peer]\nPublicKey = {P1}\nAllowedIPs = +10.0.0.0/8, -10.1.0.0/16\n"),
    );
    let mut commands: Vec<Vec<&str>> = vec![
        vec![
            "set",
            name,
            "listen-port",
            "domain",
            "fwmark",
            "0x10",
            "private-key",
            "/dev/null",
            "peer",
            P1,
            "preshared-key",
            &psk,
            "endpoint",
            "[2001:db8::5]:51820",
            "persistent-keepalive",
            "off",
            "allowed-ips",
            "10.0.0.0/24, 10.1.0.0/16 ,10.2.0.1/16",
            "peer",
            P2,
            "remove",
            "endpoint",
            "1.2.3.4:5",
        ],
        vec![
            "set",
            name,
            "listen-port",
            "99999",
            "peer",
            P1,
            "allowed-ips",
            "",
            "peer",
            P1,
            "endpoint",
            "::1:5",
            "persistent-keepalive",
            "007",
        ],
        vec![
            "set",
            name,
            "listen-port",
            "4294967296",
            "fwmark",
            "OFF",
            "peer",
            P4,
            "endpoint",
            "127.1:5",
            "allowed-ips",
            "fe80::1",
            "allowed-ips",
            "10.0.0.0/8",
        ],
        vec![
            "set",
            name,
            "peer",
            P1,
            "preshared-key",
            "/dev/null",
            "endpoint",
            "[1.2.3.4]:1",
        ],
        vec!["setconf", name, &sync],
        vec!["addconf", name, &sync],
        vec!["setconf", name, &full],
        vec!["addconf", name, &full],
        vec!["setconf", name, &empty],
        vec!["addconf", name, &empty],
        vec!["syncconf", name, &empty],
        vec!["syncconf", name, &interface_only],
    ];
    if wg.has_incremental_allowed_ips() {
        commands.push(vec![
            "set",
            name,
            "peer",
            P1,
            "allowed-ips",
            "+10.0.0.0/8,-10.1.0.0/16, 10.2.0.0/16",
        ]);
        commands.push(vec![
            "set",
            name,
            "peer",
            P1,
            "allowed-ips",
            "10.0.0.0/8",
            "allowed-ips",
            "+10.1.0.0/16",
        ]);
        commands.push(vec![
            "set",
            name,
            "peer",
            P1,
            "allowed-ips",
            "+10.0.0.0/8",
            "allowed-ips",
            "10.1.0.0/16",
        ]);
        commands.push(vec!["addconf", name, &signed]);
    }
    if wg.syncconf_clears_missing_fields() {
        commands.push(vec!["syncconf", name, &sync]);
        commands.push(vec!["syncconf", name, &full]);
    }
    for args in &commands {
        let theirs = run_tool(&wg.path, args, &[]);
        let theirs_sets = fake.take_sets();
        let mine = ours(args, &[]);
        let mine_sets = fake.take_sets();
        assert_eq!(mine, theirs, "{args:?}: ferrowg (left), wg (right)");
        assert_eq!(
            mine_sets, theirs_sets,
            "{args:?}: UAPI text of ferrowg (left), wg (right)"
        );
        assert_eq!(mine_sets.len(), 1, "{args:?}");
    }

    // Everything `show` prints for that reply, including the sorted pretty form.
    for colour in ["never", "always"] {
        for hide in ["", "never"] {
            let env = [("WG_COLOR_MODE", colour), ("WG_HIDE_KEYS", hide)];
            assert_same_eventually(&wg, &["show", name], &env);
            assert_same(&wg, &["showconf", name], &env);
            for field in FIELDS {
                assert_same(&wg, &["show", name, field], &env);
            }
        }
    }
}

/// Regression: an all-zero private key (`private-key /dev/null`, or `setconf` of a file without
/// one) removes the key. It used to be clamped first and so stayed as a non-zero key.
#[test]
fn empty_private_key_file_removes_the_key() {
    let Some((_guard, wg)) = setup() else { return };
    let daemon = Daemon::start();
    let key = wg.ok(&["genkey"]);
    let dir = TempDir::new("zero-key");
    let key_path = dir.file("key", key.as_bytes());
    let out = ours(&["set", &daemon.name, "private-key", &key_path], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(wg.ok(&["show", &daemon.name, "private-key"]), key);
    let out = ours(&["set", &daemon.name, "private-key", "/dev/null"], &[]);
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(wg.ok(&["show", &daemon.name, "private-key"]), "(none)\n");
    assert_eq!(wg.ok(&["show", &daemon.name, "public-key"]), "(none)\n");
}

/// Regression (found by fuzzing the config parser): two [Peer] sections for one key are
/// accepted by `wg setconf`, which sends the key twice; ferrowgd applies them in order as
/// the kernel and wireguard-go do, instead of refusing the whole set.
#[test]
fn repeated_peer_sections_apply_in_order() {
    let Some((_guard, wg)) = setup() else { return };
    let daemon = Daemon::start();
    let dir = TempDir::new("twice");
    let conf = dir.file(
        "twice.conf",
        b"[Peer]\nPublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\nAllowedIPs = 10.0.0.2/32\n\
          [Peer]\nPublicKey = 3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\nEndpoint = 192.0.2.1:51820\n",
    );
    for tool in [&wg.path, Path::new(FERROWG)] {
        let out = run_tool(tool, &["addconf", &daemon.name, &conf], &[]);
        assert_eq!(out.code, Some(0), "{} addconf: {out:?}", tool.display());
    }
    assert_eq!(
        wg.ok(&["show", &daemon.name, "endpoints"]),
        "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=\t192.0.2.1:51820\n"
    );
}
