//! `ferrowgd`: the process around the engine. It owns the TUN, the UDP sockets and the UAPI
//! socket, and runs four kinds of threads:
//!
//! - the TUN reader: takes a batch of packets, routes and seals them under one lock, then sends
//!   them;
//! - one UDP reader per socket: takes a batch of datagrams, opens them under one lock, then
//!   writes the packets to the TUN and sends any replies;
//! - the timer thread: runs the protocol timers and watches for the UAPI socket vanishing;
//! - the UAPI server: one thread per connection.
//!
//! Every stage moves batches, so the performance work can put parallel crypto with a
//! per-peer ordered drain between "under the lock" and "after the lock" without changing the
//! shape.

use crate::apply::{apply_set, device_info, Engine};
use crate::icmp;
use crate::log::{peer_name, Level, Logger};
use crate::sys;
use crate::tun::Tun;
use crate::udp::UdpSockets;
use ferrowg_proto::device::{Device, Event, Outgoing, Received, UNDER_LOAD_BACKLOG};
use ferrowg_proto::peer::Endpoint;
use ferrowg_uapi::{read_request, write_errno, write_get_response, Recovery, Request};
use std::io::{self, BufReader, BufWriter, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Packets per batch between stages.
const BATCH: usize = 32;
/// Room for the largest datagram or packet we handle.
const BUF_LEN: usize = 65_536 + 64;
/// How often idle threads look at the shutdown flag (ms).
const POLL_MS: i32 = 500;
const TIMER_TICK: Duration = Duration::from_millis(50);

pub const DEFAULT_MTU: u32 = 1420;

pub struct Shared {
    engine: Mutex<Engine>,
    clock: Clock,
    log: Logger,
    shutdown: AtomicBool,
    /// The UAPI socket path this process created, removed on exit.
    socket_path: Option<PathBuf>,
    socket_ino: Option<u64>,
}

/// The engine's time. Normally the monotonic clock; `FERROWGD_TEST_TIME_SCALE=N` (tests only)
/// makes protocol time run N times faster, so rekeying and the other two-minute rules can be
/// exercised against real peers in seconds. The sans-IO engine makes this a one-line change.
struct Clock {
    base: Instant,
    scale: u32,
}

impl Clock {
    fn from_env() -> Clock {
        let scale = std::env::var("FERROWGD_TEST_TIME_SCALE")
            .ok()
            .and_then(|v| v.parse().ok())
            .filter(|&s| s >= 1)
            .unwrap_or(1);
        Clock {
            base: Instant::now(),
            scale,
        }
    }

    fn now(&self) -> Instant {
        let real = Instant::now();
        if self.scale == 1 {
            real
        } else {
            self.base + (real - self.base) * self.scale
        }
    }
}

impl Shared {
    fn now(&self) -> Instant {
        self.clock.now()
    }

    fn lock(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A datagram to send after the lock is released.
struct Tx {
    to: SocketAddr,
    buf: Vec<u8>,
    len: usize,
}

/// Reusable send buffers (no allocation per packet once warmed up).
struct TxBatch {
    items: Vec<Tx>,
    used: usize,
}

impl TxBatch {
    fn new() -> Self {
        TxBatch {
            items: Vec::new(),
            used: 0,
        }
    }
    fn slot(&mut self) -> &mut Tx {
        if self.used == self.items.len() {
            self.items.push(Tx {
                to: SocketAddr::from(([0, 0, 0, 0], 0)),
                buf: vec![0; BUF_LEN],
                len: 0,
            });
        }
        self.used += 1;
        &mut self.items[self.used - 1]
    }
    fn unslot(&mut self) {
        self.used -= 1;
    }
    fn send(&mut self, sockets: &Option<UdpSockets>) {
        if let Some(s) = sockets {
            for tx in &self.items[..self.used] {
                let _ = s.send_to(&tx.buf[..tx.len], tx.to);
            }
        }
        self.used = 0;
    }
}

/// Moves everything the engine wants to send into `batch`, and logs its events.
fn drain(engine: &mut Engine, now: Instant, batch: &mut TxBatch, log: &Logger) {
    loop {
        let slot = batch.slot();
        match engine.dev.poll_transmit(now, &mut slot.buf) {
            Some(t) => {
                slot.to = t.to.addr;
                slot.len = t.len;
            }
            None => {
                batch.unslot();
                break;
            }
        }
    }
    if log.enabled(Level::Verbose) {
        while let Some(e) = engine.dev.poll_event() {
            log.verbose(describe(&engine.dev, e));
        }
    }
}

fn describe(dev: &Device, e: Event) -> String {
    let name = |id| {
        dev.peer(id)
            .map(|p| peer_name(p.public_key()))
            .unwrap_or_else(|| "peer(?)".into())
    };
    match e {
        Event::InitiationSent { peer, retry } => {
            format!(
                "{} - Sending handshake initiation{}",
                name(peer),
                if retry { " (retry)" } else { "" }
            )
        }
        Event::InitiationReceived { peer } => {
            format!("{} - Received handshake initiation", name(peer))
        }
        Event::ResponseSent { peer } => format!("{} - Sending handshake response", name(peer)),
        Event::ResponseReceived { peer } => format!("{} - Received handshake response", name(peer)),
        Event::CookieReplySent { to } => {
            format!("Sending cookie response for denied handshake message for {to}")
        }
        Event::CookieReplyReceived { peer } => format!("{} - Received cookie response", name(peer)),
        Event::KeypairCreated { peer, initiator } => format!(
            "{} - Keypair created ({})",
            name(peer),
            if initiator {
                "initiator"
            } else {
                "responder, awaiting confirmation"
            }
        ),
        Event::KeypairConfirmed { peer } => {
            format!("{} - Keypair confirmed; now current", name(peer))
        }
        Event::KeysZeroed { peer } => {
            format!(
                "{} - Removing all keys, since we haven't received a new one in 540 seconds",
                name(peer)
            )
        }
        Event::HandshakeGaveUp { peer } => {
            format!(
                "{} - Handshake did not complete after 20 attempts, giving up",
                name(peer)
            )
        }
        Event::EndpointChanged { peer, from, to } => match from {
            Some(f) => format!("{} - Endpoint changed from {f} to {to}", name(peer)),
            None => format!("{} - Endpoint set to {to}", name(peer)),
        },
        Event::NoEndpoint { peer } => format!(
            "{} - Failed to send handshake initiation: no known endpoint for peer",
            name(peer)
        ),
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Removes what we created and ends the process. The TUN interface goes with the descriptor.
pub fn exit(shared: &Shared, code: i32) -> ! {
    shared.shutdown.store(true, Ordering::SeqCst);
    if let Some(p) = &shared.socket_path {
        // Only our own socket: a new daemon may already have bound the same name.
        let ours = std::fs::metadata(p).ok().map(|m| m.ino()) == shared.socket_ino;
        if ours {
            let _ = std::fs::remove_file(p);
        }
    }
    shared.log.verbose("Shutting down");
    std::process::exit(code)
}

fn tun_reader(shared: Arc<Shared>, mut tun: Tun) {
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF_LEN]).collect();
    let mut lens = [0usize; BATCH];
    let mut out = TxBatch::new();
    let mut icmp_out = Vec::new();
    let mut icmp_buf = vec![0u8; 1500];
    let _ = sys::set_nonblocking(tun.raw_fd(), true);
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        match sys::wait_readable(tun.raw_fd(), POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                shared.log.error(format!("TUN poll failed: {e}"));
                exit(&shared, 1);
            }
        }
        let mut n = 0;
        while n < BATCH {
            match tun.recv(&mut bufs[n][..BUF_LEN - 64]) {
                Ok(len) => {
                    lens[n] = len;
                    n += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // The interface was deleted (or moved away and deleted): we are done.
                    shared
                        .log
                        .verbose(format!("TUN read failed ({e}); interface gone"));
                    exit(&shared, 0);
                }
            }
        }
        if n == 0 {
            continue;
        }
        let now = shared.now();
        let sockets = {
            let mut engine = shared.lock();
            for i in 0..n {
                let slot = out.slot();
                match engine
                    .dev
                    .handle_outgoing(now, &bufs[i][..lens[i]], &mut slot.buf)
                {
                    Outgoing::Sent { to, len, .. } => {
                        slot.to = to.addr;
                        slot.len = len;
                    }
                    Outgoing::NoRoute | Outgoing::NoEndpoint { .. } => {
                        out.unslot();
                        icmp_out.push(i);
                    }
                    _ => out.unslot(),
                }
            }
            drain(&mut engine, now, &mut out, &shared.log);
            engine.sockets.clone()
        };
        out.send(&sockets);
        for i in icmp_out.drain(..) {
            if let Some(len) = icmp::unreachable(&bufs[i][..lens[i]], &mut icmp_buf) {
                let _ = tun.send(&icmp_buf[..len]);
            }
        }
    }
}

fn udp_reader(shared: Arc<Shared>, sock: Arc<UdpSocket>, generation: u64, mut tun: Tun) {
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; BUF_LEN]).collect();
    let mut meta: Vec<(usize, SocketAddr)> = Vec::with_capacity(BATCH);
    let mut deliver: Vec<(usize, usize, usize)> = Vec::with_capacity(BATCH);
    let mut out = TxBatch::new();
    let _ = sock.set_nonblocking(true);
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        match sys::wait_readable(sock.as_raw_fd(), POLL_MS) {
            Ok(true) => {}
            Ok(false) => {
                if shared.lock().socket_generation != generation {
                    return;
                }
                continue;
            }
            Err(_) => return,
        }
        meta.clear();
        while meta.len() < BATCH {
            let i = meta.len();
            match sock.recv_from(&mut bufs[i]) {
                Ok((len, from)) => meta.push((len, from)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let now = shared.now();
        let sockets = {
            let mut engine = shared.lock();
            if engine.socket_generation != generation {
                return;
            }
            deliver.clear();
            // A full batch means more datagrams are still waiting in the socket: if most of
            // it is handshakes, we have a handshake backlog, the kernel's "under load" signal
            // (cookies and per-source rate limiting then apply).
            if meta.len() == BATCH {
                let handshakes = meta
                    .iter()
                    .enumerate()
                    .filter(|&(i, &(len, _))| len > 0 && matches!(bufs[i][0], 1 | 2))
                    .count();
                if handshakes >= BATCH / 2 {
                    engine.dev.note_handshake_backlog(now, UNDER_LOAD_BACKLOG);
                }
            }
            for (i, &(len, from)) in meta.iter().enumerate() {
                let from = Endpoint::new(canonical(from));
                match engine.dev.handle_datagram(now, from, &mut bufs[i][..len]) {
                    Ok(Received::Packet { start, len, .. }) => deliver.push((i, start, len)),
                    Ok(Received::Nothing) => {}
                    Err(reason) => {
                        if shared.log.enabled(Level::Verbose) {
                            shared.log.verbose(format!(
                                "Dropped datagram from {}: {reason:?}",
                                from.addr
                            ));
                        }
                    }
                }
            }
            drain(&mut engine, now, &mut out, &shared.log);
            engine.sockets.clone()
        };
        for &(i, start, len) in &deliver {
            let _ = tun.send(&bufs[i][start..start + len]);
        }
        out.send(&sockets);
        if meta.is_empty() {
            // A shut-down socket reads as "readable" with nothing in it: it was replaced.
            if shared.lock().socket_generation != generation {
                return;
            }
        }
    }
}

/// IPv4-mapped IPv6 sources are IPv4 peers.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::from((v4, v6.port())),
            None => a,
        },
        v4 => v4,
    }
}

fn spawn_udp_readers(shared: &Arc<Shared>, engine: &Engine, tun: &Tun) {
    let Some(s) = &engine.sockets else { return };
    for sock in [&s.v4, &s.v6].into_iter().flatten() {
        let (sh, sock, generation) = (shared.clone(), sock.clone(), engine.socket_generation);
        let tun = tun.try_clone().expect("dup TUN descriptor");
        std::thread::Builder::new()
            .name("udp-rx".into())
            .spawn(move || udp_reader(sh, sock, generation, tun))
            .expect("spawn UDP reader");
    }
}

fn timer_loop(shared: Arc<Shared>) {
    let mut out = TxBatch::new();
    let mut last_watch = shared.now();
    loop {
        std::thread::sleep(TIMER_TICK);
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let now = shared.now();
        let sockets = {
            let mut engine = shared.lock();
            engine.dev.set_wall_clock(now, unix_now());
            if engine.dev.poll_timeout().is_some_and(|t| t <= now) {
                engine.dev.handle_timeout(now);
            }
            drain(&mut engine, now, &mut out, &shared.log);
            engine.sockets.clone()
        };
        out.send(&sockets);
        if now.duration_since(last_watch) >= Duration::from_secs(1) {
            last_watch = now;
            if let Some(p) = &shared.socket_path {
                if std::fs::metadata(p).ok().map(|m| m.ino()) != shared.socket_ino {
                    shared.log.verbose("UAPI socket removed; shutting down");
                    exit(&shared, 0);
                }
            }
        }
    }
}

fn serve_uapi(shared: Arc<Shared>, listener: UnixListener, tun: Tun) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let (sh, tun) = (shared.clone(), tun.try_clone().expect("dup TUN descriptor"));
        std::thread::spawn(move || {
            let _ = handle_uapi_conn(&sh, conn, &tun);
        });
    }
}

fn handle_uapi_conn(shared: &Arc<Shared>, conn: UnixStream, tun: &Tun) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut writer = BufWriter::new(conn);
    loop {
        match read_request(&mut reader) {
            Ok(None) => return Ok(()),
            Ok(Some(Request::Get)) => {
                let info = device_info(&shared.lock());
                write_get_response(&mut writer, &info)?;
            }
            Ok(Some(Request::Set(set))) => {
                let now = shared.now();
                let mut out = TxBatch::new();
                let (result, sockets) = {
                    let mut engine = shared.lock();
                    let r = apply_set(&mut engine, &set, now);
                    if let Ok(applied) = &r {
                        if applied.new_sockets {
                            spawn_udp_readers(shared, &engine, tun);
                        }
                    }
                    drain(&mut engine, now, &mut out, &shared.log);
                    (r, engine.sockets.clone())
                };
                out.send(&sockets);
                match result {
                    Ok(_) => write_errno(&mut writer, 0)?,
                    Err(e) => {
                        shared.log.error(format!("UAPI set failed: {}", e.message));
                        write_errno(&mut writer, e.wire_errno())?;
                    }
                }
            }
            Err(e) => {
                if shared.log.enabled(Level::Verbose) {
                    shared
                        .log
                        .verbose(format!("UAPI request refused: {}", e.message));
                }
                if e.recovery != Recovery::Close {
                    write_errno(&mut writer, e.wire_errno())?;
                }
                if e.recovery != Recovery::Continue {
                    writer.flush()?;
                    return Ok(());
                }
            }
        }
        writer.flush()?;
    }
}

/// Creates the UAPI socket at the standard path: directory and socket reachable by root only.
fn create_uapi_socket(ifname: &str) -> io::Result<(UnixListener, PathBuf)> {
    let dir = Path::new(ferrowg_uapi::client::SOCKET_DIR);
    if !dir.exists() {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let path = ferrowg_uapi::client::socket_path(ifname);
    if path.exists() {
        if UnixStream::connect(&path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                "UAPI socket already in use",
            ));
        }
        std::fs::remove_file(&path)?;
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok((listener, path))
}

pub struct Options {
    pub ifname: String,
    pub foreground: bool,
}

fn env_fd(name: &str) -> Option<i32> {
    std::env::var(name).ok()?.parse().ok()
}

/// The daemon's entry point: set up, daemonize unless asked not to, run until told to stop.
pub fn run(opts: Options) -> i32 {
    let level = Level::from_env();
    let log = Logger {
        level,
        ifname: opts.ifname.clone(),
    };
    let child = std::env::var_os("FERROWGD_DAEMON_CHILD").is_some();
    if child {
        sys::setsid();
    }

    let tun = match env_fd("WG_TUN_FD") {
        // SAFETY-free adoption: the supervisor handed us this descriptor to own.
        Some(fd) => Tun::from_fd(owned(fd)),
        None => Tun::create(&opts.ifname).and_then(|t| t.set_mtu(DEFAULT_MTU).map(|_| t)),
    };
    let tun = match tun {
        Ok(t) => t,
        Err(e) => {
            log.error(format!("Failed to create TUN device: {e}"));
            return 1;
        }
    };
    let (listener, socket_path) = match env_fd("WG_UAPI_FD") {
        Some(fd) => (
            UnixListener::from(owned(fd)),
            // A daemonized child of ours owns the standard path; a foreign supervisor's
            // socket is the supervisor's business.
            child.then(|| ferrowg_uapi::client::socket_path(&opts.ifname)),
        ),
        None => match create_uapi_socket(&opts.ifname) {
            Ok((l, p)) => (l, Some(p)),
            Err(e) => {
                log.error(format!("UAPI listen error: {e}"));
                return 1;
            }
        },
    };

    if !opts.foreground && !child {
        return daemonize(&opts, &tun, &listener);
    }
    let _ = sys::set_cloexec(tun.raw_fd());
    let _ = sys::set_cloexec(listener.as_raw_fd());

    let clock = Clock::from_env();
    if clock.scale != 1 {
        log.error(format!(
            "FERROWGD_TEST_TIME_SCALE={}: protocol timers run faster (tests only)",
            clock.scale
        ));
    }
    let now = clock.now();
    let rng = Box::new(rand_core::OsRng);
    let mut dev = Device::new(rng, now, unix_now());
    dev.enable_events(level >= Level::Verbose);
    dev.set_mtu(tun.mtu().unwrap_or(DEFAULT_MTU) as usize);
    let sockets = match UdpSockets::bind(0, 0) {
        Ok(s) => s,
        Err(e) => {
            log.error(format!("Failed to bind UDP sockets: {e}"));
            return 1;
        }
    };
    let engine = Engine {
        dev,
        sockets: Some(sockets),
        listen_port: 0,
        fwmark: 0,
        socket_generation: 1,
    };
    let socket_ino = socket_path
        .as_ref()
        .and_then(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino());
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        clock,
        log: log.clone(),
        shutdown: AtomicBool::new(false),
        socket_path,
        socket_ino,
    });

    {
        let sh = shared.clone();
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
        ])
        .expect("signal handler");
        std::thread::spawn(move || {
            if signals.forever().next().is_some() {
                exit(&sh, 0);
            }
        });
    }
    spawn_udp_readers(&shared, &shared.lock(), &tun);
    {
        let (sh, t) = (shared.clone(), tun.try_clone().expect("dup TUN descriptor"));
        std::thread::spawn(move || serve_uapi(sh, listener, t));
    }
    {
        let sh = shared.clone();
        std::thread::spawn(move || timer_loop(sh));
    }
    log.verbose("Device started");
    // The calling thread becomes the TUN reader; MTU changes are picked up periodically.
    {
        let sh = shared.clone();
        let name = tun.name().to_owned();
        std::thread::spawn(move || mtu_watch(sh, name));
    }
    tun_reader(shared, tun);
    0
}

/// Follows `ip link set mtu` on the interface: padding never exceeds the current MTU.
fn mtu_watch(shared: Arc<Shared>, name: String) {
    loop {
        std::thread::sleep(Duration::from_secs(1));
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(mtu) = crate::tun::get_mtu(&name) {
            let mut e = shared.lock();
            if e.dev.mtu() != mtu as usize {
                e.dev.set_mtu(mtu as usize);
            }
        }
    }
}

fn owned(fd: i32) -> OwnedFd {
    // SAFETY: the descriptor number comes from our parent or supervisor, which passed it to us
    // to own (WG_TUN_FD / WG_UAPI_FD); nothing else in this process uses it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Re-executes ourselves in the background with the TUN and UAPI descriptors inherited (the
/// wireguard-go contract: `WG_TUN_FD`, `WG_UAPI_FD`, `WG_PROCESS_FOREGROUND`), then returns.
fn daemonize(opts: &Options, tun: &Tun, listener: &UnixListener) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Failed to daemonize: {e}");
            return 1;
        }
    };
    if sys::clear_cloexec(tun.raw_fd()).is_err()
        || sys::clear_cloexec(listener.as_raw_fd()).is_err()
    {
        eprintln!("Failed to daemonize: cannot pass descriptors");
        return 1;
    }
    let r = std::process::Command::new(exe)
        .arg(&opts.ifname)
        .env("WG_TUN_FD", tun.raw_fd().to_string())
        .env("WG_UAPI_FD", listener.as_raw_fd().to_string())
        .env("WG_PROCESS_FOREGROUND", "1")
        .env("FERROWGD_DAEMON_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn();
    match r {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("Failed to daemonize: {e}");
            1
        }
    }
}
