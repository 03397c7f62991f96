//! Network-namespace harness: real daemons (ferrowgd, wireguard-go, boringtun-cli) in their own
//! network namespaces, joined by veth pairs, configured with the official `wg`, and traffic
//! through the tunnels from threads that entered the namespaces.
//!
//! Every test using this module needs root. Start each one with
//!
//! ```ignore
//! if !require_netns() { return; } // prints "skipped" unless CI=true, where it panics
//! ```
//!
//! # Quick start
//!
//! ```ignore
//! let pair = tunnel_pair(&DaemonKind::Ferrowgd, &DaemonKind::Boringtun, &PairOptions::default());
//! assert!(ping(&pair.a.ns, pair.b.inner(Family::V4), 3));
//! let t = tcp_transfer(&pair.b.ns, pair.b.inner(Family::V6), &pair.a.ns, 8 << 20);
//! t.assert_ok("a → b");
//! let (rx, tx) = peer_transfer(&pair.a.ns, pair.a.ifname(), &pair.b.keys.public);
//! ```
//!
//! # Building blocks
//!
//! * [`Netns`]: one namespace (RAII). Dropping it stops every process started in it (tracked
//!   children first with SIGTERM, then anything else still inside, found with `ip netns pids`),
//!   removes the UAPI sockets registered with it and deletes the namespace — also when the
//!   test panics. Run commands inside with [`Netns::run`], [`Netns::ip`], [`Netns::spawn`].
//! * [`link`]: a veth pair between two namespaces with IPv4 and IPv6 addresses.
//! * [`start_daemon`] / [`start_daemon_with`]: a WireGuard daemon ([`DaemonKind`]) inside a
//!   namespace, its stdout/stderr in a log file, returned once `wg show IF` answers. The
//!   [`Daemon`] handle prints the log when dropped during a panic.
//! * [`wg`] / [`wg_with`]: the official `wg` inside a namespace ([`system_wg`] by default, the
//!   newest one from `$FERROWG_PEERS_DIR` via [`newest_wg`]); [`Keypair`], [`genpsk`],
//!   [`wg_set_interface`], [`wg_set_peer`] (and `_with` variants taking the `wg` to use),
//!   [`add_address`], [`link_up`].
//! * [`tunnel_pair`]: all of the above for two peers in one call ([`TunnelPair`]).
//! * [`in_netns`] / [`spawn_in_netns`]: run Rust code in a thread inside a namespace.
//! * [`tcp_transfer`]: a checksum-exact TCP stream across a tunnel, bounded in time;
//!   [`tcp_transfer_paced`] caps its rate, so it lasts long enough to change things under it.
//! * [`ping`], [`transfers`], [`peer_transfer`], [`latest_handshake`], [`uapi_get`],
//!   [`handshake_completed`], [`datagram_losses`], [`link_stat`], [`Netns::pids`],
//!   [`Netns::has_link`].
//! * [`Capture`]: a `tcpdump` capture on an interface (packet lines, UDP payloads).
//!
//! # Names and addresses
//!
//! Namespace, veth and tunnel interface names embed the test process id and a counter
//! ([`unique_ifname`]), so parallel tests and parallel test binaries never collide — this
//! matters because UAPI sockets (`/var/run/wireguard/IF.sock`) are global on the host.
//! Addresses come only from the documentation ranges: outer (veth) 192.0.2.0/24 carved in /30s
//! and 2001:db8:N::/64; inner (tunnel) 198.51.100.0/24 in /30s and fd00:0:N::/64. Since every
//! link lives in its own namespaces, a subnet reused after the counter wraps cannot clash.
//!
//! # Environment
//!
//! * `CI=true`: missing root or a missing required tool fails instead of skipping.
//! * `FERROWG_PEERS_DIR`: directory holding the newest `wg` and `wireguard-go` (optional).
//! * `FERROWG_BORINGTUN`: path of `boringtun-cli` (default: `PATH`, then `~/.cargo/bin`).
//! * `FERROWG_NETNS_KEEP_LOGS=1`: keep daemon logs (in `CARGO_TARGET_TMPDIR`) after success.
#![allow(dead_code)] // each test file uses a different subset

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The daemon under test.
pub const FERROWGD: &str = env!("CARGO_BIN_EXE_ferrowgd");

/// Tunnel MTU set on every tunnel interface by [`tunnel_pair`] (wg-quick's default for a
/// 1500-byte outer link; boringtun leaves its TUN at 1500 otherwise).
pub const TUNNEL_MTU: u32 = 1420;

/// Largest WireGuard data message on a [`TUNNEL_MTU`] tunnel: header 16 + padded 1420 + tag 16.
pub const MAX_MESSAGE: u64 = 16 + TUNNEL_MTU as u64 + 16;

// ---------------------------------------------------------------------------------------------
// Skipping and tools

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reports that a test cannot run here: prints `SKIPPED: <reason>` and returns `false`, or
/// panics when `CI=true` (CI must run every netns test).
pub fn skip(reason: &str) -> bool {
    if in_ci() {
        panic!("CI=true but {reason}");
    }
    eprintln!("SKIPPED: {reason}");
    false
}

/// `true` when running as root. Otherwise prints "netns tests need root; skipped" and returns
/// `false` — or panics when `CI=true`.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        return true;
    }
    if in_ci() {
        panic!("CI=true but netns tests need root");
    }
    eprintln!("netns tests need root; skipped");
    false
}

/// [`require_root`] plus the tools every netns test needs (`ip`, `wg`, `ping`); same
/// skip-or-panic rule.
pub fn require_netns() -> bool {
    if !require_root() {
        return false;
    }
    for tool in ["ip", "wg", "ping"] {
        if find_program(tool).is_none() {
            return skip(&format!("`{tool}` is not installed; netns tests skipped"));
        }
    }
    true
}

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// `name` on `PATH` (ignoring `$FERROWG_PEERS_DIR`, whose tools are only used on request),
/// then in `~/.cargo/bin`.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let peers = peers_dir();
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var)
        .filter(|d| peers.as_deref() != Some(d.as_path()))
        .collect();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(Path::new(&home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable_file(p))
}

/// A `Command` for iproute2's `ip` (found like [`find_program`], so a `PATH` without
/// `/usr/sbin` does not matter).
pub fn ip_command() -> Command {
    static IP: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    Command::new(IP.get_or_init(|| find_program("ip").unwrap_or_else(|| "ip".into())))
}

/// `$FERROWG_PEERS_DIR` when set and non-empty.
pub fn peers_dir() -> Option<PathBuf> {
    std::env::var_os("FERROWG_PEERS_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The system's `wg` (Debian's on the reference machine): the default for [`wg`].
pub fn system_wg() -> PathBuf {
    find_program("wg").expect("`wg` not found (call require_netns first)")
}

/// The newest `wg`, from `$FERROWG_PEERS_DIR`, if there is one.
pub fn newest_wg() -> Option<PathBuf> {
    peers_dir()
        .map(|d| d.join("wg"))
        .filter(|p| is_executable_file(p))
}

// ---------------------------------------------------------------------------------------------
// Names, scratch files

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(n % 36) as usize]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap()
}

/// `fwg` + `sep0` + process id + `sep` + counter, pid and counter in base 36: at most
/// 3 + 1 + 5 + 1 + 3 = 13 characters, unique on the host while this process lives.
fn unique(sep0: &str, sep: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % (36 * 36 * 36);
    format!(
        "fwg{sep0}{}{sep}{}",
        base36(u64::from(std::process::id())),
        base36(n.into())
    )
}

/// A network interface name (≤ 15 bytes) unique on the host: use it for tunnel interfaces,
/// whose UAPI socket path is global.
pub fn unique_ifname() -> String {
    unique("", 'w')
}

/// A file path in cargo's per-target scratch directory, unique within this process.
pub fn scratch_file(label: &str) -> PathBuf {
    super::scratch_path(label)
}

/// A file with secret contents (mode 0600), removed when dropped.
pub struct SecretFile(PathBuf);

impl SecretFile {
    pub fn new(label: &str, contents: &str) -> SecretFile {
        let path = scratch_file(label);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        f.write_all(contents.as_bytes()).unwrap();
        SecretFile(path)
    }
    pub fn path(&self) -> &str {
        self.0.to_str().expect("scratch paths are UTF-8")
    }
}

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn keep_logs() -> bool {
    std::env::var("FERROWG_NETNS_KEEP_LOGS").as_deref() == Ok("1")
}

fn output_text(out: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout ---\n{}--- stderr ---\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` to completion (stdin empty, output captured).
fn run_captured(cmd: &mut Command, what: &str) -> Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Netns

/// A network namespace named `fwg…`, with `lo` up. See the module documentation for what
/// dropping it cleans up.
pub struct Netns {
    name: String,
    children: Mutex<Vec<(u32, Arc<Mutex<Child>>)>>,
    sockets: Mutex<Vec<PathBuf>>,
}

impl fmt::Debug for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Netns({})", self.name)
    }
}

impl Netns {
    /// Creates the namespace (panics on failure). A stale namespace with the same name can
    /// only be left over by a dead process that had our process id; it is removed first.
    pub fn new() -> Netns {
        let name = unique("-", '-');
        if Path::new("/var/run/netns").join(&name).exists() {
            eprintln!("removing stale network namespace {name}");
            kill_netns_pids(&name);
            let _ = ip_command().args(["netns", "del", &name]).status();
        }
        let out = run_captured(ip_command().args(["netns", "add", &name]), "ip netns add");
        assert!(
            out.status.success(),
            "ip netns add {name}: {}",
            output_text(&out)
        );
        let ns = Netns {
            name,
            children: Mutex::new(Vec::new()),
            sockets: Mutex::new(Vec::new()),
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/var/run/netns/NAME`, what [`in_netns`] enters.
    pub fn path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.name)
    }

    /// `ip netns exec NAME program` (add arguments, environment, redirections).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = ip_command();
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args` inside the namespace and returns its output, whatever the status.
    pub fn try_run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> Output {
        let program = program.as_ref();
        let what = format!("{} {args:?} in {}", program.to_string_lossy(), self.name);
        run_captured(self.command(program).args(args), &what)
    }

    /// Runs `program args` inside the namespace, asserts success, returns stdout.
    pub fn run(&self, program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
        let program = program.as_ref();
        let out = self.try_run(program, args);
        assert!(
            out.status.success(),
            "{} {args:?} failed in {}: {}",
            program.to_string_lossy(),
            self.name,
            output_text(&out)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// `ip -n NAME args`, asserting success; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        let out = run_captured(ip_command().args(["-n", &self.name]).args(args), "ip");
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            output_text(&out)
        );
        String::from_utf8(out.stdout).expect("UTF-8 output")
    }

    /// Starts `program args` inside the namespace with `env` added, stdin from /dev/null and
    /// stdout + stderr appended to a fresh log file. The process is stopped when the
    /// namespace is dropped (or earlier with [`Process::stop`]).
    pub fn spawn(
        &self,
        label: &str,
        program: impl AsRef<std::ffi::OsStr>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let log = scratch_file(&format!("{label}.log"));
        let file = File::create(&log)
            .unwrap_or_else(|e| panic!("cannot create log {}: {e}", log.display()));
        let program = program.as_ref();
        let child = self
            .command(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.to_string_lossy()));
        let pid = child.id();
        let child = Arc::new(Mutex::new(child));
        lock(&self.children).push((pid, child.clone()));
        Process {
            label: format!(
                "{label} ({} {}) in {}",
                program.to_string_lossy(),
                args.join(" "),
                self.name
            ),
            pid,
            child,
            log,
        }
    }

    /// Makes [`Drop`] remove `/var/run/wireguard/IFNAME.sock` if it is still there (for
    /// daemons started by other means, e.g. `wg-quick`).
    pub fn track_socket(&self, ifname: &str) {
        lock(&self.sockets).push(uapi_socket(ifname));
    }

    /// Process ids of everything running inside the namespace (`ip netns pids`), e.g. a
    /// daemon that forked itself away from the process we started.
    pub fn pids(&self) -> Vec<u32> {
        netns_pids(&self.name)
    }

    /// Whether interface `ifname` exists in this namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        ip_command()
            .args(["-n", &self.name, "link", "show", "dev", ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Default for Netns {
    fn default() -> Self {
        Netns::new()
    }
}

fn kill_pid(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid we started (or found inside our own namespace); a stale pid
    // only yields ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Processes inside namespace `name`, except ourselves. Only called for namespaces this
/// process created, so everything found was started by this test.
fn netns_pids(name: &str) -> Vec<u32> {
    let me = std::process::id();
    ip_command()
        .args(["netns", "pids", name])
        .stderr(Stdio::null())
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .filter(|&p| p != me)
                .collect()
        })
        .unwrap_or_default()
}

fn kill_netns_pids(name: &str) {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let Some(ns_id) = id(&Path::new("/var/run/netns").join(name)) else {
        return;
    };
    for _ in 0..100 {
        let pids = netns_pids(name);
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            // Re-check membership right before the kill, so a pid that ended and was reused
            // meanwhile is left alone.
            if id(Path::new(&format!("/proc/{pid}/ns/net"))) == Some(ns_id) {
                kill_pid(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("warning: processes still in {name}: {:?}", netns_pids(name));
}

impl Drop for Netns {
    fn drop(&mut self) {
        // 1. Our children: SIGTERM, then SIGKILL after a grace period.
        let children = std::mem::take(&mut *lock(&self.children));
        for (pid, child) in &children {
            if matches!(lock(child).try_wait(), Ok(None)) {
                kill_pid(*pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for (pid, child) in &children {
            let mut child = lock(child);
            while matches!(child.try_wait(), Ok(None)) {
                if Instant::now() > deadline {
                    eprintln!("warning: pid {pid} ignored SIGTERM; killing it");
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // 2. Anything else still inside (daemonized grandchildren, wg-quick's daemon, …).
        kill_netns_pids(&self.name);
        // 3. Sockets a killed daemon could not remove.
        for socket in lock(&self.sockets).iter() {
            let _ = std::fs::remove_file(socket);
        }
        // 4. The namespace (its veths and TUNs go with it).
        for attempt in 0..20 {
            let out = ip_command()
                .args(["netns", "del", &self.name])
                .stdin(Stdio::null())
                .output();
            match out {
                Ok(o) if o.status.success() => return,
                Ok(o) if attempt == 19 => eprintln!(
                    "warning: cannot delete network namespace {}: {}",
                    self.name,
                    output_text(&o)
                ),
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

/// A process started with [`Netns::spawn`]. The namespace owns its lifetime; this handle reads
/// its log, prints the log when dropped during a panic, and deletes it when dropped otherwise
/// (unless `FERROWG_NETNS_KEEP_LOGS=1`).
pub struct Process {
    label: String,
    pid: u32,
    child: Arc<Mutex<Child>>,
    log: PathBuf,
}

impl Process {
    /// Process id of `ip netns exec …`, which execs the program: the program's own pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }
    pub fn log_path(&self) -> &Path {
        &self.log
    }
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_else(|e| format!("(log {} unreadable: {e})", self.log.display()))
    }
    /// Prints the log to stderr (the test output) with a header naming the process.
    pub fn dump_log(&self) {
        eprintln!(
            "===== log of {} ({}) =====\n{}===== end of log =====",
            self.label,
            self.log.display(),
            self.log()
        );
    }
    /// The exit status if the process has ended.
    pub fn exited(&self) -> Option<ExitStatus> {
        lock(&self.child).try_wait().ok().flatten()
    }
    pub fn signal(&self, sig: i32) {
        if self.exited().is_none() {
            kill_pid(self.pid, sig);
        }
    }
    /// SIGTERM, then waits up to `timeout` for the exit; `None` if it is still running.
    pub fn stop(&self, timeout: Duration) -> Option<ExitStatus> {
        self.signal(libc::SIGTERM);
        self.wait_exit(timeout)
    }
    /// Waits up to `timeout` for the process to end by itself.
    pub fn wait_exit(&self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.dump_log();
        } else if !keep_logs() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Links and addresses

/// Address family of a tunnel's outer transport or inner traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn other(self) -> Family {
        match self {
            Family::V4 => Family::V6,
            Family::V6 => Family::V4,
        }
    }
    pub fn of(addr: IpAddr) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// A point-to-point subnet pair: `a` and `b` in one /30 and one /64.
#[derive(Clone, Copy, Debug)]
pub struct AddrPair {
    pub a_v4: Ipv4Addr,
    pub b_v4: Ipv4Addr,
    pub a_v6: Ipv6Addr,
    pub b_v6: Ipv6Addr,
}

pub const V4_PREFIX: u8 = 30;
pub const V6_PREFIX: u8 = 64;

impl AddrPair {
    pub fn a(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.a_v4.into(),
            Family::V6 => self.a_v6.into(),
        }
    }
    pub fn b(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.b_v4.into(),
            Family::V6 => self.b_v6.into(),
        }
    }
}

static SUBNET: AtomicU32 = AtomicU32::new(0);

/// Next /30 of `v4_base` (a /24) and /64 of `v6_base` (`w0:w1:w2+N::/64`): `.1`/`.2` and
/// `::1`/`::2`. Wraps after 64 (harmless: each pair lives in its own namespaces).
fn next_pair(v4_base: [u8; 3], v6_base: [u16; 3]) -> AddrPair {
    let n = SUBNET.fetch_add(1, Ordering::Relaxed);
    let quad = ((n % 64) * 4) as u8;
    let net = (n % 0xffff) as u16 + 1;
    let [x, y, z] = v4_base;
    let [p, q, r] = v6_base;
    AddrPair {
        a_v4: Ipv4Addr::new(x, y, z, quad + 1),
        b_v4: Ipv4Addr::new(x, y, z, quad + 2),
        a_v6: Ipv6Addr::new(p, q, r | net, 0, 0, 0, 0, 1),
        b_v6: Ipv6Addr::new(p, q, r | net, 0, 0, 0, 0, 2),
    }
}

/// Fresh inner (tunnel) addresses: 198.51.100.x/30 and fd00:0:N::/64.
pub fn tunnel_addresses() -> AddrPair {
    next_pair([198, 51, 100], [0xfd00, 0, 0])
}

/// A veth pair between two namespaces, up, with addresses.
#[derive(Clone, Debug)]
pub struct Link {
    /// Interface name in namespace `a` / `b`.
    pub a_ifname: String,
    pub b_ifname: String,
    pub addrs: AddrPair,
}

impl Link {
    pub fn a(&self, family: Family) -> IpAddr {
        self.addrs.a(family)
    }
    pub fn b(&self, family: Family) -> IpAddr {
        self.addrs.b(family)
    }
}

/// Joins `a` and `b` with a veth pair: 192.0.2.x/30 (`.1` in `a`, `.2` in `b`) and
/// 2001:db8:N::1/64 / ::2 (`nodad`, usable at once). Both ends up.
pub fn link(a: &Netns, b: &Netns) -> Link {
    let (a_if, b_if) = (unique("", 'v'), unique("", 'v'));
    let out = run_captured(
        ip_command().args([
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]),
        "ip link add veth",
    );
    assert!(
        out.status.success(),
        "ip link add veth: {}",
        output_text(&out)
    );
    let addrs = next_pair([192, 0, 2], [0x2001, 0xdb8, 0]);
    for (ns, ifname, v4, v6) in [
        (a, &a_if, addrs.a_v4, addrs.a_v6),
        (b, &b_if, addrs.b_v4, addrs.b_v6),
    ] {
        add_address(ns, ifname, v4.into(), V4_PREFIX);
        add_address(ns, ifname, v6.into(), V6_PREFIX);
        ns.ip(&["link", "set", ifname, "up"]);
    }
    Link {
        a_ifname: a_if,
        b_ifname: b_if,
        addrs,
    }
}

/// `ip addr add ADDR/PREFIX dev IFNAME` (IPv6 with `nodad`, so it is usable immediately).
pub fn add_address(ns: &Netns, ifname: &str, addr: IpAddr, prefix: u8) {
    let cidr = format!("{addr}/{prefix}");
    if addr.is_ipv6() {
        ns.ip(&["addr", "add", &cidr, "dev", ifname, "nodad"]);
    } else {
        ns.ip(&["addr", "add", &cidr, "dev", ifname]);
    }
}

/// `ip link set IFNAME [mtu MTU] up`.
pub fn link_up(ns: &Netns, ifname: &str, mtu: Option<u32>) {
    match mtu {
        Some(m) => ns.ip(&["link", "set", ifname, "mtu", &m.to_string(), "up"]),
        None => ns.ip(&["link", "set", ifname, "up"]),
    };
}

// ---------------------------------------------------------------------------------------------
// Daemons

/// A WireGuard implementation that can run as a user-space daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DaemonKind {
    /// This project's `ferrowgd`.
    Ferrowgd,
    /// A `wireguard-go` binary.
    WireguardGo(PathBuf),
    /// `boringtun-cli` ([`boringtun_path`]). Differences that tests must allow for: it counts
    /// *plaintext* bytes in rx/tx, reports the time *elapsed since* the handshake as
    /// `last_handshake_time`, and does not pad data messages.
    Boringtun,
}

/// `$FERROWG_BORINGTUN`, else `boringtun-cli` on `PATH` or in `~/.cargo/bin`.
pub fn boringtun_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FERROWG_BORINGTUN").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(p));
    }
    find_program("boringtun-cli")
}

impl DaemonKind {
    /// The system's (Debian's) `wireguard-go`, if installed.
    pub fn wireguard_go_system() -> Option<DaemonKind> {
        find_program("wireguard-go").map(DaemonKind::WireguardGo)
    }
    /// The newest `wireguard-go`, from `$FERROWG_PEERS_DIR`, if set.
    pub fn wireguard_go_newest() -> Option<DaemonKind> {
        peers_dir()
            .map(|d| d.join("wireguard-go"))
            .filter(|p| is_executable_file(p))
            .map(DaemonKind::WireguardGo)
    }
    /// Boringtun if `boringtun-cli` can be found.
    pub fn boringtun() -> Option<DaemonKind> {
        boringtun_path().map(|_| DaemonKind::Boringtun)
    }

    pub fn program(&self) -> PathBuf {
        match self {
            DaemonKind::Ferrowgd => PathBuf::from(FERROWGD),
            DaemonKind::WireguardGo(p) => p.clone(),
            DaemonKind::Boringtun => boringtun_path().expect("boringtun-cli not found"),
        }
    }

    /// Short name for messages and log files.
    pub fn label(&self) -> &'static str {
        match self {
            DaemonKind::Ferrowgd => "ferrowgd",
            DaemonKind::WireguardGo(_) => "wireguard-go",
            DaemonKind::Boringtun => "boringtun",
        }
    }

    /// rx/tx count plaintext instead of whole WireGuard messages.
    pub fn counts_plaintext(&self) -> bool {
        matches!(self, DaemonKind::Boringtun)
    }

    /// `last_handshake_time` is "time since", not a Unix time (so `wg` prints 0 right after).
    pub fn handshake_time_is_elapsed(&self) -> bool {
        matches!(self, DaemonKind::Boringtun)
    }
}

impl fmt::Display for DaemonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DaemonKind::WireguardGo(p) => write!(f, "wireguard-go ({})", p.display()),
            other => f.write_str(other.label()),
        }
    }
}

/// How to start a daemon.
#[derive(Clone, Debug)]
pub struct DaemonOptions {
    /// Run with `-f` (default). Without it the daemon forks itself away; the namespace still
    /// stops it on drop (`ip netns pids`), but [`Daemon::process`] is then only the launcher.
    pub foreground: bool,
    /// Extra environment (e.g. `FERROWGD_TEST_TIME_SCALE`). `LOG_LEVEL=verbose` is always set
    /// for ferrowgd and wireguard-go; boringtun gets `-v debug`.
    pub env: Vec<(String, String)>,
    /// How long to wait for `wg show IF` to answer.
    pub ready_timeout: Duration,
}

impl Default for DaemonOptions {
    fn default() -> Self {
        DaemonOptions {
            foreground: true,
            env: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }
}

impl DaemonOptions {
    /// The defaults plus `env` (an empty value overrides an inherited variable with "unset").
    pub fn with_env(env: &[(&str, &str)]) -> Self {
        DaemonOptions {
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..DaemonOptions::default()
        }
    }
}

/// A running daemon (see [`start_daemon`]).
pub struct Daemon {
    kind: DaemonKind,
    ifname: String,
    process: Process,
    /// Where a daemonized boringtun logs (it does not inherit our stderr).
    file_log: Option<PathBuf>,
}

impl Daemon {
    pub fn kind(&self) -> &DaemonKind {
        &self.kind
    }
    pub fn ifname(&self) -> &str {
        &self.ifname
    }
    pub fn process(&self) -> &Process {
        &self.process
    }
    /// Everything it printed so far.
    pub fn log(&self) -> String {
        let mut log = self.process.log();
        if let Some(f) = &self.file_log {
            log.push_str(&String::from_utf8_lossy(
                &std::fs::read(f).unwrap_or_default(),
            ));
        }
        log
    }
    /// Prints [`Daemon::log`] to stderr (the test output).
    pub fn dump_log(&self) {
        self.process.dump_log();
        self.dump_file_log();
    }
    fn dump_file_log(&self) {
        if let Some(f) = &self.file_log {
            let text = std::fs::read(f).unwrap_or_default();
            eprintln!(
                "===== log file of {} for {} ({}) =====\n{}===== end of log =====",
                self.kind,
                self.ifname,
                f.display(),
                String::from_utf8_lossy(&text)
            );
        }
    }
    /// Its UAPI socket, `/var/run/wireguard/IFNAME.sock`.
    pub fn socket(&self) -> PathBuf {
        uapi_socket(&self.ifname)
    }
    /// The raw UAPI `get` answer (see [`uapi_get`]).
    pub fn uapi_get(&self) -> String {
        uapi_get(&self.ifname)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // The process log is handled by `Process`'s own drop.
        if std::thread::panicking() {
            self.dump_file_log();
        } else if let Some(f) = &self.file_log {
            if !keep_logs() {
                let _ = std::fs::remove_file(f);
            }
        }
    }
}

/// Starts `kind` for interface `ifname` inside `ns` with [`DaemonOptions::default`]
/// (foreground, verbose log), and returns once `wg show IFNAME` succeeds. Panics (printing the
/// daemon's log) if it exits or does not answer within 10 s.
pub fn start_daemon(ns: &Netns, kind: &DaemonKind, ifname: &str) -> Daemon {
    start_daemon_with(ns, kind, ifname, &DaemonOptions::default())
}

/// [`start_daemon`] with options.
pub fn start_daemon_with(
    ns: &Netns,
    kind: &DaemonKind,
    ifname: &str,
    opts: &DaemonOptions,
) -> Daemon {
    assert!(ifname.len() <= 15, "interface name {ifname} is too long");
    let mut file_log = None;
    let mut args: Vec<String> = Vec::new();
    let mut env: Vec<(String, String)> = Vec::new();
    let label = format!("{}-{ifname}", kind.label());
    match kind {
        DaemonKind::Ferrowgd | DaemonKind::WireguardGo(_) => {
            env.push(("LOG_LEVEL".into(), "verbose".into()));
            if opts.foreground {
                args.push("-f".into());
            }
        }
        DaemonKind::Boringtun => {
            args.extend(["--disable-drop-privileges", "-v", "debug"].map(String::from));
            if opts.foreground {
                args.push("-f".into());
            } else {
                // Daemonized boringtun logs to a file, by default a shared one in /tmp.
                let log = scratch_file(&format!("{label}.daemon.log"));
                args.extend(["--log".into(), log.to_string_lossy().into_owned()]);
                file_log = Some(log);
            }
        }
    }
    args.push(ifname.into());
    env.extend(opts.env.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let envv: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    ns.track_socket(ifname);
    let process = ns.spawn(&label, kind.program(), &argv, &envv);
    let daemon = Daemon {
        kind: kind.clone(),
        ifname: ifname.into(),
        process,
        file_log,
    };
    let deadline = Instant::now() + opts.ready_timeout;
    let wg = system_wg();
    loop {
        // In the foreground the daemon must keep running; daemonizing, the launcher must
        // succeed.
        match daemon.process.exited() {
            Some(status) if opts.foreground || !status.success() => {
                daemon.dump_log();
                panic!("{kind} for {ifname} in {} exited early: {status}", ns.name);
            }
            _ => {}
        }
        if uapi_socket(ifname).exists() && ns.try_run(&wg, &["show", ifname]).status.success() {
            return daemon;
        }
        if Instant::now() > deadline {
            daemon.dump_log();
            panic!(
                "{kind} for {ifname} in {}: `wg show {ifname}` did not succeed within {:?}",
                ns.name, opts.ready_timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// wg and UAPI

/// `/var/run/wireguard/IFNAME.sock`.
pub fn uapi_socket(ifname: &str) -> PathBuf {
    Path::new("/var/run/wireguard").join(format!("{ifname}.sock"))
}

/// The raw UAPI `get=1` answer of interface `ifname` (up to and excluding the blank line).
/// Useful where `wg` hides detail, e.g. boringtun's elapsed-time `last_handshake_time_*`.
pub fn uapi_get(ifname: &str) -> String {
    let path = uapi_socket(ifname);
    let mut s = UnixStream::connect(&path)
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", path.display()));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"get=1\n\n").unwrap();
    let mut text = Vec::new();
    let mut buf = [0u8; 4096];
    while !text.ends_with(b"\n\n") {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) => panic!("UAPI get from {}: {e}", path.display()),
        }
    }
    let text = String::from_utf8(text).expect("UAPI text is UTF-8");
    text.trim_end_matches('\n').to_string()
}

/// The `key=value` lines of peer `public_key` (base64) in a UAPI `get` answer.
pub fn uapi_peer_fields(get: &str, public_key: &str) -> Vec<(String, String)> {
    let hex = key_hex(public_key);
    let mut inside = false;
    let mut out = Vec::new();
    for line in get.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        if k == "public_key" {
            inside = v.eq_ignore_ascii_case(&hex);
            continue;
        }
        if inside {
            out.push((k.to_string(), v.to_string()));
        }
    }
    out
}

/// A base64 WireGuard key as the 64 lowercase hex digits the UAPI uses.
pub fn key_hex(base64: &str) -> String {
    let key = ferrowg_proto::keys::decode_base64_key(base64.trim())
        .unwrap_or_else(|_| panic!("not a base64 key: {base64:?}"));
    key.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs the system `wg` ([`system_wg`]) inside `ns`, asserts success, returns stdout.
pub fn wg(ns: &Netns, args: &[&str]) -> String {
    wg_with(ns, &system_wg(), args)
}

/// Runs the given `wg` binary inside `ns`, asserts success, returns stdout.
pub fn wg_with(ns: &Netns, wg: &Path, args: &[&str]) -> String {
    ns.run(wg, args)
}

/// A private key and its public key, both base64, from `wg genkey` / `wg pubkey`.
#[derive(Clone, Debug)]
pub struct Keypair {
    pub private: String,
    pub public: String,
}

fn wg_stdin(args: &[&str], input: &str) -> String {
    let mut child = Command::new(system_wg())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run wg");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "wg {args:?}: {}", output_text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

impl Keypair {
    pub fn generate() -> Keypair {
        let private = wg_stdin(&["genkey"], "");
        let public = wg_stdin(&["pubkey"], &private);
        Keypair { private, public }
    }
}

/// `wg genpsk`.
pub fn genpsk() -> String {
    wg_stdin(&["genpsk"], "")
}

/// `wg set IFNAME private-key FILE [listen-port PORT]` (the key passes through a 0600 file).
pub fn wg_set_interface(ns: &Netns, ifname: &str, private_key: &str, listen_port: Option<u16>) {
    wg_set_interface_with(ns, &system_wg(), ifname, private_key, listen_port)
}

/// [`wg_set_interface`] with a given `wg` binary (e.g. [`newest_wg`]).
pub fn wg_set_interface_with(
    ns: &Netns,
    wg: &Path,
    ifname: &str,
    private_key: &str,
    listen_port: Option<u16>,
) {
    let key = SecretFile::new("private-key", &format!("{private_key}\n"));
    let port = listen_port.map(|p| p.to_string());
    let mut args = vec!["set", ifname, "private-key", key.path()];
    if let Some(p) = &port {
        args.extend(["listen-port", p]);
    }
    wg_with(ns, wg, &args);
}

/// One `peer` clause of `wg set`.
#[derive(Clone, Debug, Default)]
pub struct PeerSpec {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    /// `ip/cidr` entries.
    pub allowed_ips: Vec<String>,
    pub preshared_key: Option<String>,
    pub persistent_keepalive: Option<u16>,
}

/// `wg set IFNAME peer KEY [preshared-key FILE] [endpoint E] [persistent-keepalive N]
/// [allowed-ips A,B]`.
pub fn wg_set_peer(ns: &Netns, ifname: &str, peer: &PeerSpec) {
    wg_set_peer_with(ns, &system_wg(), ifname, peer)
}

/// [`wg_set_peer`] with a given `wg` binary (e.g. [`newest_wg`]).
pub fn wg_set_peer_with(ns: &Netns, wg: &Path, ifname: &str, peer: &PeerSpec) {
    let psk = peer
        .preshared_key
        .as_ref()
        .map(|k| SecretFile::new("psk", &format!("{k}\n")));
    let endpoint = peer.endpoint.map(|e| e.to_string());
    let keepalive = peer.persistent_keepalive.map(|k| k.to_string());
    let allowed = peer.allowed_ips.join(",");
    let mut args = vec!["set", ifname, "peer", &peer.public_key];
    if let Some(f) = &psk {
        args.extend(["preshared-key", f.path()]);
    }
    if let Some(e) = &endpoint {
        args.extend(["endpoint", e]);
    }
    if let Some(k) = &keepalive {
        args.extend(["persistent-keepalive", k]);
    }
    if !peer.allowed_ips.is_empty() {
        args.extend(["allowed-ips", &allowed]);
    }
    wg_with(ns, wg, &args);
}

/// `wg show IFNAME transfer`: `(peer public key, rx bytes, tx bytes)` per peer.
pub fn transfers(ns: &Netns, ifname: &str) -> Vec<(String, u64, u64)> {
    wg(ns, &["show", ifname, "transfer"])
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 3, "bad `wg show transfer` line {l:?}");
            (
                f[0].to_string(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

/// `(rx, tx)` of one peer from `wg show IFNAME transfer` (panics if the peer is absent).
pub fn peer_transfer(ns: &Netns, ifname: &str, peer: &str) -> (u64, u64) {
    transfers(ns, ifname)
        .into_iter()
        .find(|(k, _, _)| k == peer)
        .map(|(_, rx, tx)| (rx, tx))
        .unwrap_or_else(|| panic!("peer {peer} not on {ifname}"))
}

/// Seconds field of `wg show IFNAME latest-handshakes` for `peer` (0 = never).
pub fn latest_handshake(ns: &Netns, ifname: &str, peer: &str) -> u64 {
    wg(ns, &["show", ifname, "latest-handshakes"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .find(|(k, _)| *k == peer)
        .map(|(_, t)| t.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("peer {peer} not on {ifname}"))
}

/// Whether `daemon` has completed a handshake with `peer`: `wg show latest-handshakes` is
/// non-zero — or, for boringtun (elapsed-time semantics, so `wg` shows 0 just after), its UAPI
/// answer carries `last_handshake_time_*` for the peer at all.
pub fn handshake_completed(ns: &Netns, daemon: &Daemon, peer: &str) -> bool {
    if daemon.kind().handshake_time_is_elapsed() {
        uapi_peer_fields(&daemon.uapi_get(), peer)
            .iter()
            .any(|(k, _)| k == "last_handshake_time_sec")
    } else {
        latest_handshake(ns, daemon.ifname(), peer) != 0
    }
}

// ---------------------------------------------------------------------------------------------
// Two peers

/// How [`tunnel_pair`] sets up the two sides.
#[derive(Clone, Debug)]
pub struct PairOptions {
    /// Both peers share a fresh `wg genpsk` key.
    pub psk: bool,
    /// Family of the endpoints (the veth addresses) — the outer transport.
    pub outer: Family,
    pub mtu: u32,
    pub listen_ports: (u16, u16),
    pub persistent_keepalive: Option<u16>,
    /// Options for the daemon of side a and of side b.
    pub daemon_options: (DaemonOptions, DaemonOptions),
    /// The `wg` that configures both sides; `None`: [`system_wg`].
    pub wg: Option<PathBuf>,
}

impl Default for PairOptions {
    fn default() -> Self {
        PairOptions {
            psk: false,
            outer: Family::V4,
            mtu: TUNNEL_MTU,
            listen_ports: (51820, 51821),
            persistent_keepalive: None,
            daemon_options: Default::default(),
            wg: None,
        }
    }
}

/// One side of a [`TunnelPair`]. Field order matters: the daemon handle (log) drops before
/// the namespace (which stops the daemon).
pub struct Side {
    pub daemon: Daemon,
    pub ns: Netns,
    pub keys: Keypair,
    pub listen_port: u16,
    /// The veth address the other side uses as endpoint.
    pub outer: IpAddr,
    /// Tunnel addresses (the peer's allowed-ips are exactly these /32 and /128).
    pub inner_v4: Ipv4Addr,
    pub inner_v6: Ipv6Addr,
}

impl Side {
    pub fn ifname(&self) -> &str {
        self.daemon.ifname()
    }
    pub fn inner(&self, family: Family) -> IpAddr {
        match family {
            Family::V4 => self.inner_v4.into(),
            Family::V6 => self.inner_v6.into(),
        }
    }
    pub fn endpoint(&self) -> SocketAddr {
        SocketAddr::new(self.outer, self.listen_port)
    }
    /// `(rx, tx)` this side reports for its peer `other` (`wg show IF transfer`).
    pub fn transfer_with(&self, other: &Side) -> (u64, u64) {
        peer_transfer(&self.ns, self.ifname(), &other.keys.public)
    }
    /// [`handshake_completed`] with `other`.
    pub fn handshake_with(&self, other: &Side) -> bool {
        handshake_completed(&self.ns, &self.daemon, &other.keys.public)
    }
}

/// Two namespaces joined by veth, one daemon in each, configured as each other's only peer
/// with `opts.wg` (default: the system `wg`): endpoints on the `opts.outer` veth addresses,
/// allowed-ips = the other's inner /32 + /128; tunnel addresses added and the interfaces up
/// at `opts.mtu`.
pub struct TunnelPair {
    pub a: Side,
    pub b: Side,
    pub link: Link,
    pub psk: Option<String>,
}

pub fn tunnel_pair(a_kind: &DaemonKind, b_kind: &DaemonKind, opts: &PairOptions) -> TunnelPair {
    let (ns_a, ns_b) = (Netns::new(), Netns::new());
    let link = link(&ns_a, &ns_b);
    let inner = tunnel_addresses();
    let psk = opts.psk.then(genpsk);
    let wg = opts.wg.clone().unwrap_or_else(system_wg);
    let mut sides = Vec::new();
    for (ns, kind, dopts, port, outer, v4, v6) in [
        (
            ns_a,
            a_kind,
            &opts.daemon_options.0,
            opts.listen_ports.0,
            link.a(opts.outer),
            inner.a_v4,
            inner.a_v6,
        ),
        (
            ns_b,
            b_kind,
            &opts.daemon_options.1,
            opts.listen_ports.1,
            link.b(opts.outer),
            inner.b_v4,
            inner.b_v6,
        ),
    ] {
        let daemon = start_daemon_with(&ns, kind, &unique_ifname(), dopts);
        let keys = Keypair::generate();
        wg_set_interface_with(&ns, &wg, daemon.ifname(), &keys.private, Some(port));
        sides.push(Side {
            daemon,
            ns,
            keys,
            listen_port: port,
            outer,
            inner_v4: v4,
            inner_v6: v6,
        });
    }
    let b = sides.pop().unwrap();
    let a = sides.pop().unwrap();
    for (me, other) in [(&a, &b), (&b, &a)] {
        wg_set_peer_with(
            &me.ns,
            &wg,
            me.ifname(),
            &PeerSpec {
                public_key: other.keys.public.clone(),
                endpoint: Some(other.endpoint()),
                allowed_ips: vec![
                    format!("{}/32", other.inner_v4),
                    format!("{}/128", other.inner_v6),
                ],
                preshared_key: psk.clone(),
                persistent_keepalive: opts.persistent_keepalive,
            },
        );
        add_address(&me.ns, me.ifname(), me.inner_v4.into(), V4_PREFIX);
        add_address(&me.ns, me.ifname(), me.inner_v6.into(), V6_PREFIX);
        link_up(&me.ns, me.ifname(), Some(opts.mtu));
    }
    TunnelPair { a, b, link, psk }
}

// ---------------------------------------------------------------------------------------------
// Running code inside a namespace

fn enter(netns_path: &Path) {
    let f = File::open(netns_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", netns_path.display()));
    // SAFETY: setns(2) on a descriptor we own and keep open for the call. Network namespaces
    // are per thread, so this only moves the calling thread, which was spawned for this
    // purpose and never returns to a pool.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        r,
        0,
        "setns({}): {}",
        netns_path.display(),
        std::io::Error::last_os_error()
    );
}

/// Spawns a thread that enters `ns` (sockets it opens live there) and runs `f`.
pub fn spawn_in_netns<T, F>(ns: &Netns, f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let path = ns.path();
    std::thread::Builder::new()
        .name(format!("in-{}", ns.name))
        .spawn(move || {
            enter(&path);
            f()
        })
        .expect("spawn thread")
}

/// Runs `f` in a thread inside `ns` and returns its result (a panic in `f` propagates).
pub fn in_netns<T, F>(ns: &Netns, f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_in_netns(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

// ---------------------------------------------------------------------------------------------
// Traffic

/// `ping -c COUNT` from `ns` to `addr` (every 0.2 s, 84-byte IPv4 / 104-byte IPv6 packets);
/// `true` when all COUNT replies arrived within COUNT × 0.2 s + 10 s.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> bool {
    let deadline = (count as f64 * 0.2 + 10.0).ceil().to_string();
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let out = ns.try_run(
        "ping",
        &[
            family,
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-w",
            &deadline,
            &addr.to_string(),
        ],
    );
    if !out.status.success() {
        eprintln!("ping {addr} from {} failed: {}", ns.name, output_text(&out));
    }
    out.status.success()
}

/// A deterministic pseudo-random byte stream (xorshift64*), regenerated by the receiver of a
/// [`tcp_transfer`] to check every byte.
pub struct ByteStream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl ByteStream {
    pub fn new(seed: u64) -> ByteStream {
        ByteStream {
            state: seed | 1,
            word: [0; 8],
            used: 8,
        }
    }
    pub fn fill(&mut self, out: &mut [u8]) {
        let mut i = 0;
        // Finish the current word, then whole words, then start a new one.
        while i < out.len() && self.used < 8 {
            out[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut chunks = out[i..].chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_word());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            self.word = self.next_word();
            let n = rest.len();
            rest.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }
    fn next_word(&mut self) -> [u8; 8] {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes()
    }
}

/// Result of a [`tcp_transfer`].
#[derive(Clone, Debug)]
pub struct Transfer {
    /// Bytes the client wrote.
    pub sent: u64,
    /// Bytes the server read.
    pub received: u64,
    /// The server read exactly the requested number of bytes and every byte matched.
    pub received_ok: bool,
    /// Connect to the server's end of stream.
    pub elapsed: Duration,
    /// What went wrong, if anything (timeouts, resets, first mismatching offset).
    pub error: Option<String>,
}

impl Transfer {
    pub fn mbit_per_s(&self) -> f64 {
        self.received as f64 * 8.0 / self.elapsed.as_secs_f64().max(1e-9) / 1e6
    }
    /// Panics with the details unless the transfer was complete and exact.
    pub fn assert_ok(&self, what: &str) {
        assert!(
            self.received_ok && self.error.is_none(),
            "TCP transfer {what} failed: {self:?}"
        );
    }
}

#[derive(Debug)]
struct ServerResult {
    received: u64,
    exact: bool,
    error: Option<String>,
    end: Instant,
}

/// How long a transfer may make no progress before it is declared stuck.
const STALL: Duration = Duration::from_secs(20);

/// Sends `bytes` of a [`ByteStream`] over TCP from a thread in `client_ns` to a server thread
/// in `server_ns` listening on `server_addr` (e.g. a tunnel address); the server checks every
/// byte. Bounded: gives up after 120 s overall or 20 s without progress. Prints the
/// throughput (for information only).
pub fn tcp_transfer(
    server_ns: &Netns,
    server_addr: IpAddr,
    client_ns: &Netns,
    bytes: u64,
) -> Transfer {
    tcp_transfer_with_timeout(
        server_ns,
        server_addr,
        client_ns,
        bytes,
        Duration::from_secs(120),
    )
}

/// [`tcp_transfer`] with an explicit overall timeout.
pub fn tcp_transfer_with_timeout(
    server_ns: &Netns,
    server_addr: IpAddr,
    client_ns: &Netns,
    bytes: u64,
    timeout: Duration,
) -> Transfer {
    transfer(server_ns, server_addr, client_ns, bytes, timeout, None)
}

/// [`tcp_transfer`] whose client writes at most `bytes_per_s` on average (64 KiB writes
/// spaced out), so the transfer lasts about `bytes / bytes_per_s` seconds whatever the
/// machine's speed — for tests that must change something *while* data flows (roaming,
/// rekeying), without saturating the CPUs other tests share. Overall timeout: twice the
/// expected duration plus 60 s. Keep `bytes_per_s` well above 64 KiB per 20 s (the stall
/// limit), e.g. ≥ 1 MB/s.
pub fn tcp_transfer_paced(
    server_ns: &Netns,
    server_addr: IpAddr,
    client_ns: &Netns,
    bytes: u64,
    bytes_per_s: u64,
) -> Transfer {
    assert!(bytes_per_s > 0, "a pace of 0 bytes/s never ends");
    let expected = Duration::from_secs_f64(bytes as f64 / bytes_per_s as f64);
    let timeout = expected * 2 + Duration::from_secs(60);
    transfer(
        server_ns,
        server_addr,
        client_ns,
        bytes,
        timeout,
        Some(bytes_per_s),
    )
}

fn transfer(
    server_ns: &Netns,
    server_addr: IpAddr,
    client_ns: &Netns,
    bytes: u64,
    timeout: Duration,
    pace: Option<u64>,
) -> Transfer {
    static SEED: AtomicU64 = AtomicU64::new(0x9e37_79b9_7f4a_7c15);
    let seed =
        SEED.fetch_add(0x6a09_e667_f3bc_c909, Ordering::Relaxed) ^ u64::from(std::process::id());
    let bounds = Bounds {
        deadline: Instant::now() + timeout,
        stop: Arc::new(AtomicBool::new(false)),
    };
    let (port_tx, port_rx) = mpsc::channel::<Result<u16, String>>();

    let server_bounds = bounds.clone();
    let server = spawn_in_netns(server_ns, move || {
        let bounds = server_bounds;
        let r = serve(server_addr, seed, bytes, &bounds, port_tx);
        if r.error.is_some() {
            bounds.stop.store(true, Ordering::SeqCst);
        }
        r
    });
    let port = match port_rx.recv() {
        Ok(Ok(p)) => p,
        Ok(Err(e)) => {
            let _ = server.join();
            return Transfer {
                sent: 0,
                received: 0,
                received_ok: false,
                elapsed: Duration::ZERO,
                error: Some(e),
            };
        }
        Err(_) => std::panic::resume_unwind(server.join().unwrap_err()),
    };
    let target = SocketAddr::new(server_addr, port);
    let client_bounds = bounds.clone();
    let client = spawn_in_netns(client_ns, move || {
        let bounds = client_bounds;
        let r = send(target, seed, bytes, &bounds, pace);
        if r.2.is_some() {
            bounds.stop.store(true, Ordering::SeqCst);
        }
        r
    });
    let joined = client.join();
    bounds.stop.store(true, Ordering::SeqCst); // the server may still wait for a connection
    let (sent, start, client_error) = joined.unwrap_or_else(|e| std::panic::resume_unwind(e));
    let server = server
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    let t = Transfer {
        sent,
        received: server.received,
        received_ok: server.exact,
        elapsed: server.end.saturating_duration_since(start),
        error: match (server.error, client_error) {
            (Some(s), Some(c)) => Some(format!("{s}; {c}")),
            (s, c) => s.or(c),
        },
    };
    eprintln!(
        "TCP {} → {target}: {} of {bytes} bytes in {:.2} s = {:.0} Mbit/s{}",
        client_ns.name,
        t.received,
        t.elapsed.as_secs_f64(),
        t.mbit_per_s(),
        if t.received_ok {
            ", checksum-exact"
        } else {
            ", NOT EXACT"
        }
    );
    t
}

/// Socket timeout of a transfer's blocking calls: how often each end looks at [`Bounds`].
const TICK: Duration = Duration::from_millis(500);

/// Shared by the two ends of a [`tcp_transfer`]: the overall deadline, and a flag either end
/// raises when it fails so that the other one stops within a [`TICK`].
#[derive(Clone)]
struct Bounds {
    deadline: Instant,
    stop: Arc<AtomicBool>,
}

impl Bounds {
    /// `Err(why)` when `who` must give up: the other end failed, the deadline passed, or
    /// nothing moved for [`STALL`] since `last_progress`.
    fn check(&self, who: &str, last_progress: Instant, done: u64) -> Result<(), String> {
        let now = Instant::now();
        if self.stop.load(Ordering::SeqCst) {
            Err(format!("{who}: the other end gave up after {done} bytes"))
        } else if now > self.deadline {
            Err(format!("{who}: deadline passed after {done} bytes"))
        } else if now.duration_since(last_progress) > STALL {
            Err(format!(
                "{who}: no progress for {STALL:?} after {done} bytes"
            ))
        } else {
            Ok(())
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), WouldBlock | TimedOut | Interrupted)
}

/// The receiving end: accepts one connection, checks every byte, acknowledges the count.
fn serve(
    addr: IpAddr,
    seed: u64,
    bytes: u64,
    bounds: &Bounds,
    port_tx: mpsc::Sender<Result<u16, String>>,
) -> ServerResult {
    let fail = |error: String| ServerResult {
        received: 0,
        exact: false,
        error: Some(error),
        end: Instant::now(),
    };
    let listener = match TcpListener::bind(SocketAddr::new(addr, 0)) {
        Ok(l) => l,
        Err(e) => {
            let msg = format!("server bind {addr}: {e}");
            let _ = port_tx.send(Err(msg.clone()));
            return fail(msg);
        }
    };
    let _ = port_tx.send(Ok(listener.local_addr().unwrap().port()));
    listener.set_nonblocking(true).unwrap();
    let waiting_since = Instant::now();
    let mut conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(e) if is_timeout(&e) => {
                if let Err(why) = bounds.check("server", waiting_since, 0) {
                    return fail(why);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return fail(format!("server accept: {e}")),
        }
    };
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(TICK)).unwrap();
    let mut expected = ByteStream::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut want = vec![0u8; 1 << 16];
    let mut received = 0u64;
    let mut mismatch: Option<u64> = None;
    let mut error = None;
    let mut last_progress = Instant::now();
    loop {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if mismatch.is_none() {
                    expected.fill(&mut want[..n]);
                    if buf[..n] != want[..n] {
                        let i = buf[..n].iter().zip(&want[..n]).position(|(a, b)| a != b);
                        mismatch = Some(received + i.unwrap_or(0) as u64);
                    }
                }
                received += n as u64;
                last_progress = Instant::now();
            }
            Err(e) if is_timeout(&e) => {}
            Err(e) => {
                error = Some(format!("server read after {received} bytes: {e}"));
                break;
            }
        }
        if let Err(why) = bounds.check("server", last_progress, received) {
            error = Some(why);
            break;
        }
    }
    let end = Instant::now();
    if error.is_none() {
        // Tell the client what arrived, so it knows the transfer is complete.
        let _ = conn.set_write_timeout(Some(STALL));
        let _ = conn.write_all(&received.to_le_bytes());
    }
    if let Some(at) = mismatch {
        error.get_or_insert(format!("data differs from the sent stream at byte {at}"));
    }
    ServerResult {
        received,
        exact: mismatch.is_none() && received == bytes,
        error,
        end,
    }
}

/// The sending end: `(bytes written, when connected, error)`.
fn send(
    target: SocketAddr,
    seed: u64,
    bytes: u64,
    bounds: &Bounds,
    pace: Option<u64>,
) -> (u64, Instant, Option<String>) {
    let start = Instant::now();
    let mut conn = match TcpStream::connect_timeout(&target, STALL) {
        Ok(c) => c,
        Err(e) => return (0, start, Some(format!("client connect {target}: {e}"))),
    };
    let start = Instant::now();
    conn.set_write_timeout(Some(TICK)).unwrap();
    conn.set_read_timeout(Some(TICK)).unwrap();
    let mut stream = ByteStream::new(seed);
    let mut buf = vec![0u8; 1 << 16];
    let mut sent = 0u64;
    let mut last_progress = Instant::now();
    while sent < bytes {
        if let Some(rate) = pace {
            // Not ahead of schedule: `sent` bytes are due `sent / rate` seconds after start.
            let due = start + Duration::from_secs_f64(sent as f64 / rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(TICK));
                if let Err(why) = bounds.check("client", Instant::now(), sent) {
                    return (sent, start, Some(why));
                }
                continue;
            }
            // Waiting for the schedule is not a stall.
            last_progress = last_progress.max(due);
        }
        let n = (bytes - sent).min(buf.len() as u64) as usize;
        stream.fill(&mut buf[..n]);
        let mut off = 0;
        while off < n {
            match conn.write(&buf[off..n]) {
                Ok(0) => return (sent, start, Some("client: connection closed".into())),
                Ok(k) => {
                    off += k;
                    sent += k as u64;
                    last_progress = Instant::now();
                }
                Err(e) if is_timeout(&e) => {}
                Err(e) => {
                    return (
                        sent,
                        start,
                        Some(format!("client write after {sent} bytes: {e}")),
                    )
                }
            }
            if let Err(why) = bounds.check("client", last_progress, sent) {
                return (sent, start, Some(why));
            }
        }
    }
    let _ = conn.shutdown(Shutdown::Write);
    let mut ack = [0u8; 8];
    let mut got = 0;
    let waiting_since = Instant::now();
    while got < ack.len() {
        match conn.read(&mut ack[got..]) {
            Ok(0) => {
                return (
                    sent,
                    start,
                    Some("client: closed without an acknowledgement".into()),
                )
            }
            Ok(k) => got += k,
            Err(e) if is_timeout(&e) => {
                // The server only stops after writing the acknowledgement, or on an error it
                // reports itself.
                if let Err(why) = bounds.check("client", waiting_since, sent) {
                    return (sent, start, Some(why));
                }
            }
            Err(e) => {
                return (
                    sent,
                    start,
                    Some(format!("client waiting for the acknowledgement: {e}")),
                )
            }
        }
    }
    let acked = u64::from_le_bytes(ack);
    let error = (acked != sent).then(|| format!("server acknowledged {acked} of {sent} bytes"));
    (sent, start, error)
}

// ---------------------------------------------------------------------------------------------
// Interface statistics and packet captures

/// `/sys/class/net/IFNAME/statistics/STAT` inside `ns` (e.g. `rx_packets`; for a TUN
/// interface, "rx" is what the daemon wrote into it, i.e. delivered from the tunnel).
pub fn link_stat(ns: &Netns, ifname: &str, stat: &str) -> u64 {
    let path = format!("/sys/class/net/{ifname}/statistics/{stat}");
    let text = ns.run("cat", &[&path]);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{path} in {}: {text:?}", ns.name))
}

/// A `tcpdump` capture on one interface of a namespace, written packet by packet to a pcap
/// file in the scratch directory (removed on drop unless `FERROWG_NETNS_KEEP_LOGS=1`). Needs
/// `tcpdump` ([`find_program`]); call [`skip`] when it is missing.
pub struct Capture {
    process: Process,
    file: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i IFNAME -n --immediate-mode -B 32768 -U -w FILE FILTER` (a 32 MiB
    /// buffer: bursts of a few thousand datagrams are not dropped) and returns once it is
    /// listening.
    pub fn start(ns: &Netns, ifname: &str, filter: &str) -> Capture {
        Capture::start_with(ns, ifname, filter, "", &["-B", "32768"])
    }

    /// [`Capture::start`] with a full snap length and a 64 MiB buffer: GSO super-packets of
    /// up to 64 KiB are captured whole (read them with [`Capture::stop_raw`]).
    pub fn start_full(ns: &Netns, ifname: &str, filter: &str) -> Capture {
        Capture::start_with(ns, ifname, filter, "-full", &["-s", "0", "-B", "65536"])
    }

    fn start_with(ns: &Netns, ifname: &str, filter: &str, label: &str, opts: &[&str]) -> Capture {
        let tcpdump = find_program("tcpdump").expect("tcpdump not found");
        let file = scratch_file(&format!("{ifname}{label}.pcap"));
        let path = file.to_str().expect("scratch paths are UTF-8").to_string();
        let mut args = vec!["-i", ifname, "-n", "--immediate-mode"];
        args.extend_from_slice(opts);
        // `-Z root`: Debian's tcpdump otherwise drops to user `tcpdump`, which cannot write
        // into the scratch directory.
        args.extend_from_slice(&["-U", "-Z", "root", "-w", &path, filter]);
        let process = ns.spawn(&format!("tcpdump{label}-{ifname}"), tcpdump, &args, &[]);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !process.log().contains("listening on") {
            if process.exited().is_some() || Instant::now() > deadline {
                process.dump_log();
                panic!("tcpdump on {ifname} in {} did not start", ns.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Capture { process, file }
    }

    /// Stops the capture like [`Capture::stop`] and returns the pcap file's bytes and the
    /// number of packets tcpdump reports as dropped by the kernel.
    pub fn stop_raw(&self) -> (Vec<u8>, u64) {
        std::thread::sleep(Duration::from_millis(200));
        if self.process.stop(Duration::from_secs(10)).is_none() {
            self.process.signal(libc::SIGKILL);
            let _ = self.process.wait_exit(Duration::from_secs(2));
        }
        let log = self.process.log();
        let dropped = log
            .lines()
            .find(|l| l.contains("dropped by kernel"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        eprintln!("tcpdump: {}", log.trim().replace('\n', "; "));
        let data = std::fs::read(&self.file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.file.display()));
        (data, dropped)
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Stops the capture (after a 200 ms grace for packets in flight; SIGTERM, on which
    /// tcpdump flushes and closes the file) and returns the packets as `tcpdump -n -r`
    /// prints them, one line each.
    pub fn stop(&self) -> Vec<String> {
        std::thread::sleep(Duration::from_millis(200));
        if self.process.stop(Duration::from_secs(5)).is_none() {
            self.process.signal(libc::SIGKILL);
            let _ = self.process.wait_exit(Duration::from_secs(2));
        }
        let tcpdump = find_program("tcpdump").expect("tcpdump not found");
        let out = run_captured(
            Command::new(tcpdump).arg("-n").arg("-r").arg(&self.file),
            "tcpdump -r",
        );
        assert!(
            out.status.success(),
            "tcpdump -r {}: {}",
            self.file.display(),
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The UDP payloads in the capture file, in order (Ethernet links, IPv4 or IPv6 without
    /// extension headers: what veth captures of WireGuard traffic look like).
    pub fn udp_payloads(&self) -> Vec<Vec<u8>> {
        let data = std::fs::read(&self.file)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", self.file.display()));
        pcap_udp_payloads(&data)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if self.process.exited().is_none() {
            self.process.signal(libc::SIGKILL);
        }
        if !keep_logs() && !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.file);
        }
    }
}

/// UDP payloads of a classic pcap file with Ethernet framing (see [`Capture::udp_payloads`]).
pub fn pcap_udp_payloads(data: &[u8]) -> Vec<Vec<u8>> {
    assert!(data.len() >= 24, "pcap file too short");
    let magic = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let le = match magic {
        0xa1b2_c3d4 | 0xa1b2_3c4d => true,
        0xd4c3_b2a1 | 0x4d3c_b2a1 => false,
        m => panic!("not a pcap file (magic {m:#x})"),
    };
    let u32_at = |b: &[u8], i: usize| {
        let w: [u8; 4] = b[i..i + 4].try_into().unwrap();
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(data, 20), 1, "pcap link type is not Ethernet");
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= data.len() {
        let incl = u32_at(data, at + 8) as usize;
        let frame = &data[at + 16..(at + 16 + incl).min(data.len())];
        at += 16 + incl;
        if frame.len() < 14 {
            continue;
        }
        let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
        let ip = &frame[14..];
        let udp = match ethertype {
            0x0800 if ip.len() >= 20 && ip[9] == 17 => &ip[usize::from(ip[0] & 0x0f) * 4..],
            0x86dd if ip.len() >= 40 && ip[6] == 17 => &ip[40..],
            _ => continue,
        };
        if udp.len() >= 8 {
            let len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
            out.push(udp[8..len.clamp(8, udp.len())].to_vec());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Loss statistics

fn snmp_field(text: &str, section: &str, field: &str) -> u64 {
    // /proc/net/snmp: a header line and a value line per section ("Udp: InDatagrams …").
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("{section}:")))
        .collect();
    if lines.len() < 2 {
        return 0;
    }
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn snmp6_field(text: &str, field: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(char::is_whitespace))
        .find(|(n, _)| *n == field)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Datagrams the kernel dropped in one namespace so far (see [`datagram_losses`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Losses {
    /// UDP (v4 + v6) `InErrors`: datagrams that arrived but were not delivered to a socket,
    /// mostly because its receive buffer was full (`RcvbufErrors` is a subset).
    pub udp_in_errors: u64,
    /// UDP (v4 + v6) `SndbufErrors`: sends refused, e.g. `EAGAIN` on a full send buffer.
    pub udp_sndbuf_errors: u64,
    /// rx_dropped + tx_dropped of the listed interfaces.
    pub link_drops: u64,
}

impl Losses {
    pub fn total(&self) -> u64 {
        self.udp_in_errors + self.udp_sndbuf_errors + self.link_drops
    }
}

/// What the kernel dropped in `ns` so far: UDP receive and send-buffer errors (IPv4 and IPv6)
/// and the rx/tx drops of the listed interfaces (e.g. the veth). Used to bound how far two
/// peers' byte counters may legitimately disagree under load.
pub fn datagram_losses(ns: &Netns, ifnames: &[&str]) -> Losses {
    let snmp = ns.run("cat", &["/proc/net/snmp"]);
    let snmp6 = ns.run("cat", &["/proc/net/snmp6"]);
    let mut losses = Losses {
        udp_in_errors: snmp_field(&snmp, "Udp", "InErrors") + snmp6_field(&snmp6, "Udp6InErrors"),
        udp_sndbuf_errors: snmp_field(&snmp, "Udp", "SndbufErrors")
            + snmp6_field(&snmp6, "Udp6SndbufErrors"),
        link_drops: 0,
    };
    for ifname in ifnames {
        for stat in ["rx_dropped", "tx_dropped"] {
            let path = format!("/sys/class/net/{ifname}/statistics/{stat}");
            losses.link_drops += ns.run("cat", &[&path]).trim().parse::<u64>().unwrap_or(0);
        }
    }
    losses
}

// ---------------------------------------------------------------------------------------------
// Small helpers shared by the netns test files

/// Polls `f` every 50 ms until it returns true or `timeout` passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `wg show IFNAME endpoints` as `(peer, endpoint text)`.
pub fn endpoints(ns: &Netns, ifname: &str) -> Vec<(String, String)> {
    wg(ns, &["show", ifname, "endpoints"])
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(k, e)| (k.to_string(), e.trim().to_string()))
        .collect()
}

/// The endpoint `wg show` reports for `peer` on `ifname`.
pub fn endpoint_of(ns: &Netns, ifname: &str, peer: &str) -> String {
    endpoints(ns, ifname)
        .into_iter()
        .find(|(k, _)| k == peer)
        .map(|(_, e)| e)
        .unwrap_or_else(|| panic!("peer {peer} not on {ifname}"))
}

// ---------------------------------------------------------------------------------------------
// Transfer counters of a pair

/// Sizes of an initiation, a response and a keepalive on the wire (UDP payload).
pub const INITIATION_LEN: u64 = 148;
pub const RESPONSE_LEN: u64 = 92;
pub const KEEPALIVE_LEN: u64 = 32;

/// Both sides' `(rx, tx)` for each other, once two readings 300 ms apart agree.
pub fn settled_counters(pair: &TunnelPair) -> ((u64, u64), (u64, u64)) {
    let read = || (pair.a.transfer_with(&pair.b), pair.b.transfer_with(&pair.a));
    let mut last = read();
    for _ in 0..20 {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            break;
        }
        last = now;
    }
    last
}

/// `received` (one side's rx) against `sent` (the other side's tx), both whole messages:
/// nothing can arrive that was not sent (up to two keepalives between the two readings), and
/// what went missing is a few handshake/keepalive messages plus the datagrams the kernel
/// dropped (each at most one full-size message).
pub fn check_mirror(what: &str, sent: u64, received: u64, dropped: u64) {
    let early = 2 * KEEPALIVE_LEN;
    let missing = 2 * INITIATION_LEN + 2 * RESPONSE_LEN + 4 * KEEPALIVE_LEN + dropped * MAX_MESSAGE;
    assert!(
        received <= sent + early && sent <= received + missing,
        "{what}: sent {sent}, received {received} (difference {}), {dropped} datagrams \
         dropped by the kernel: the counters disagree beyond a few handshake/keepalive \
         messages and the drops",
        sent as i64 - received as i64
    );
}

/// Pings through the tunnel both ways over both inner families; panics naming the one that
/// failed.
pub fn assert_pings_both_ways(pair: &TunnelPair) {
    for family in [Family::V4, Family::V6] {
        assert!(
            ping(&pair.a.ns, pair.b.inner(family), 3),
            "ping a → b ({family:?}) failed"
        );
        assert!(
            ping(&pair.b.ns, pair.a.inner(family), 3),
            "ping b → a ({family:?}) failed"
        );
    }
}
