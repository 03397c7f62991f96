//! `ferrowgd`: the process around the engine. It owns the TUN, the UDP sockets and the UAPI
//! socket. The data plane runs in one of two shapes (`FERROWGD_IO`):
//!
//! - `one` (the default when the crypto runs inline, i.e. on two cores or fewer): one thread,
//!   `io_loop`, serves the TUN and every UDP socket in turn and sleeps in a single poll only
//!   when all are empty; it runs under `SCHED_FIFO` (`FERROWGD_RT_PRIORITY`, see
//!   `realtime_from_env` for why) and, after a burst, naps briefly before that sleep
//!   (`FERROWGD_NAP_US`, see `nap_from_env`);
//! - `split` (the default with crypto workers): the TUN reader, and one UDP reader per socket.
//!
//! Either way the work is the same two sides:
//!
//! - `TunSide`: takes a batch of packets (a split super-packet with TUN offloads), routes them
//!   and takes their counters under one lock, and hands the batch to the crypto workers
//!   (`workers`), whose ordered drain seals and sends the batches in counter order;
//! - `UdpSide` (one per socket): takes a batch of GRO buffers, handles handshakes and finds the
//!   keypairs of transport messages under one lock, and hands the batch to the workers, whose
//!   ordered drain finishes the opened messages under the lock and writes them to the TUN.
//!
//! Around them: the crypto workers (none on two cores or fewer: then the reading thread does
//! the crypto); the timer thread, which runs the protocol timers and watches for the UAPI
//! socket vanishing; the UAPI server, one thread per connection.

use crate::apply::{apply_set, device_info, Engine};
use crate::icmp;
use crate::log::{peer_name, Level, Logger};
use crate::pipeline::{self, drain_transmits, SendArena};
use crate::sys;
use crate::tun::Tun;
use crate::tun_io::{TunDevice, TunReader, TunWriter};
use crate::udp::UdpSockets;
use crate::udp_io::UdpIo;
use crate::workers::{
    finish_openings, sender_of, spare_pool, Lane, OpenWork, Opening, SealWork, Workers,
};
use ferrowg_proto::constants::DEFAULT_MTU;
use ferrowg_proto::device::{Device, DropReason, Event, Prepared};
use ferrowg_proto::messages::{classify, MessageType};
use ferrowg_sync::pool::Pool;
use ferrowg_uapi::{read_request, write_errno, write_get_response, Recovery, Request};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How often idle threads look at the shutdown flag (ms).
const POLL_MS: i32 = 500;
/// `io_loop` naps (`nap_from_env`) after a burst of at least this many packets: a ping or a
/// keepalive is answered at once, a bulk transfer (a TCP super-packet is 45) is batched.
const NAP_AFTER_PACKETS: usize = 8;
const TIMER_TICK: Duration = Duration::from_millis(50);

pub struct Shared {
    engine: Mutex<Engine>,
    clock: Clock,
    log: Logger,
    shutdown: AtomicBool,
    /// The UAPI socket path this process created, removed on exit.
    socket_path: Option<PathBuf>,
    socket_ino: Option<u64>,
    /// The crypto worker pool (`FERROWGD_WORKERS`).
    workers: Workers,
    /// Datagrams dropped since the last summary, by `DropReason::index`.
    drops: [AtomicU64; DropReason::ALL.len()],
    /// Wakes the TUN reader (the counters' owner) when transport messages are pending:
    /// (sending end, receiving end).
    wake: (UnixDatagram, UnixDatagram),
    data_pending: AtomicBool,
    /// The data plane runs on one thread (`io_loop`) rather than a TUN reader plus a UDP
    /// reader per socket (`FERROWGD_IO`).
    one_loop: bool,
    /// How long `io_loop` naps after a burst (`nap_from_env`); `None`: never.
    nap: Option<Duration>,
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

/// Moves everything the engine wants to send into `arena`, and logs its events. Only the TUN
/// reader calls this: it owns the counters (see `drain_control`).
fn drain(engine: &mut Engine, now: Instant, arena: &mut SendArena, log: &Logger) {
    let segments = max_segments(engine);
    drain_transmits(&mut engine.dev, now, arena, segments);
    log_events(engine, log);
}

/// The other threads' drain: handshake-level messages only. Transport messages they make
/// pending (packets staged until a handshake completed, keepalives) are sealed by the TUN
/// reader, which is woken for them: a message sealed here and sent after the lock could
/// leave behind a later counter the TUN reader sealed meanwhile (seen in the soak: counter 0
/// of a new keypair after counter 1).
fn drain_control(shared: &Shared, engine: &mut Engine, arena: &mut SendArena) {
    pipeline::drain_control(&mut engine.dev, arena);
    log_events(engine, &shared.log);
    if engine.dev.has_pending_data() && !shared.data_pending.swap(true, Ordering::AcqRel) {
        // One byte per false -> true: the reader drains the socket, then clears the flag.
        let _ = shared.wake.0.send(&[1]);
    }
}

fn log_events(engine: &mut Engine, log: &Logger) {
    if log.enabled(Level::Verbose) {
        while let Some(e) = engine.dev.poll_event() {
            log.verbose(describe(&engine.dev, e));
        }
    }
}

/// Sending from a remembered local address failed for these peers: forget it.
fn forget_stale_sources(shared: &Shared, stale: Vec<SocketAddr>) {
    if stale.is_empty() {
        return;
    }
    let mut engine = shared.lock();
    for addr in stale {
        engine.dev.clear_endpoint_source_for(addr);
    }
}

/// GSO segments per send on the current sockets (1 = no GSO).
fn max_segments(engine: &Engine) -> usize {
    engine
        .sockets
        .as_ref()
        .and_then(|s| s.io4.as_ref().or(s.io6.as_ref()))
        .map_or(1, |io| io.max_segments())
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

/// Whether `packet`, read from our own TUN, is an outer datagram of ours coming back into
/// the tunnel, the start of a routing loop. Two shapes:
///
/// - one of our own datagrams: UDP from our listen port to a peer's endpoint. That happens
///   when a peer's endpoint is routed through its own tunnel (an endpoint inside a peer's
///   allowed IPs, e.g. 0.0.0.0/0 without the endpoint exception). The kernel's WireGuard
///   refuses such routes (its outer packets may not go back into the same device);
/// - a WireGuard message addressed to us ([`Device::is_addressed_to_us`]): another
///   interface's datagrams to us routed into our tunnel, as when two interfaces in two
///   namespaces route each other's outer datagrams into their own tunnels.
///
/// In user space such a datagram would be sealed again, grow, be fragmented and multiply: a
/// 1 s ping flood made ferrowgd send ~150 MB into the loop. Dropping it ends the loop after
/// one round (the flood then sends about as much as the kernel, and `wg show` stays
/// responsive). Only the first fragment carries the ports and the message header; the rest
/// of a fragmented datagram is sealed once more, comes back whole and small, and is dropped
/// here on the next round.
fn loops_back(packet: &[u8], port: u16, dev: &Device) -> bool {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    let (dst, udp): (IpAddr, usize) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let ihl = usize::from(packet[0] & 0x0f) * 4;
            let offset = u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff;
            if packet[9] != 17 || offset != 0 {
                return false;
            }
            let d: [u8; 4] = packet[16..20].try_into().unwrap_or_default();
            (Ipv4Addr::from(d).into(), ihl)
        }
        Some(6) if packet.len() >= 40 => {
            let d: [u8; 16] = packet[24..40].try_into().unwrap_or_default();
            let udp = match packet[6] {
                17 => 40,
                // A fragment header: the first fragment of a UDP datagram.
                44 if packet.len() >= 48
                    && packet[40] == 17
                    && u16::from_be_bytes([packet[42], packet[43]]) & 0xfff8 == 0 =>
                {
                    48
                }
                _ => return false,
            };
            (Ipv6Addr::from(d).into(), udp)
        }
        _ => return false,
    };
    let Some(ports) = packet.get(udp..udp + 8) else {
        return false;
    };
    if dev.is_addressed_to_us(&packet[udp + 8..]) {
        return true;
    }
    if u16::from_be_bytes([ports[0], ports[1]]) != port {
        return false;
    }
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    let canonical = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    dev.peers().any(|(_, p)| {
        p.endpoint()
            .is_some_and(|e| e.addr.port() == dport && canonical(e.addr.ip()) == dst)
    })
}

/// The TUN side of the data plane: reads packets, routes them and takes their counters under
/// the lock, and hands each batch to its seal lane.
struct TunSide {
    shared: Arc<Shared>,
    reader: TunReader,
    writer: TunWriter,
    spare: Arc<Pool<Box<SealWork>>>,
    lane: Arc<Lane<SealWork>>,
    unreachable: Vec<usize>,
    icmp_buf: Vec<u8>,
}

impl TunSide {
    fn new(shared: &Arc<Shared>, dev: Arc<TunDevice>) -> io::Result<TunSide> {
        let reader = TunReader::new(dev.clone())?;
        let writer = TunWriter::new(dev)?;
        let spare = spare_pool::<SealWork>();
        let lane = {
            let (shared, spare) = (shared.clone(), spare.clone());
            // The ordered end: sealed batches leave in the order their counters were taken.
            Arc::new(Lane::new(move |mut w: Box<SealWork>| {
                forget_stale_sources(&shared, w.arena.send_all(&w.sockets));
                w.sockets = None;
                w.jobs.clear();
                spare.put(w);
            }))
        };
        Ok(TunSide {
            shared: shared.clone(),
            reader,
            writer,
            spare,
            lane,
            unreachable: Vec::new(),
            icmp_buf: vec![0u8; 1500],
        })
    }

    /// Waits (up to `POLL_MS`) for a batch or a wake-up and handles it. An error means the
    /// interface is gone.
    fn step_blocking(&mut self) -> io::Result<()> {
        let mut work = self.spare.get().unwrap_or_default();
        let n = self
            .reader
            .read_batch(&mut work.packets, POLL_MS, &self.shared.wake.1)?;
        self.handle(work, n);
        Ok(())
    }

    /// Handles what is queued now, without waiting: `None` if there was nothing, else the
    /// number of packets read (0 when only other threads had left work pending).
    fn step_nonblocking(&mut self) -> io::Result<Option<usize>> {
        let mut work = self.spare.get().unwrap_or_default();
        let n = self.reader.try_read(&mut work.packets)?.unwrap_or(0);
        Ok(self.handle(work, n).then_some(n))
    }

    /// Routes the `n` packets read into `work` and seals them with whatever other threads
    /// left pending; whether there was anything to do.
    fn handle(&mut self, mut work: Box<SealWork>, n: usize) -> bool {
        let shared = &*self.shared;
        // Whatever other threads left pending is sealed with this batch (taken after the
        // wake socket was drained, so a wake-up that comes later is not lost).
        let woken = shared.data_pending.swap(false, Ordering::AcqRel);
        if n == 0 && !woken {
            self.spare.put(work);
            return false;
        }
        let now = shared.now();
        {
            let mut engine = shared.lock();
            work.segments = max_segments(&engine);
            let port = engine.sockets.as_ref().map_or(0, |s| s.port);
            // Handshakes and staged packets the engine queued go first.
            drain(&mut engine, now, &mut work.arena, &shared.log);
            for i in 0..n {
                let packet = work.packets.packet(i);
                if port != 0 && loops_back(packet, port, &engine.dev) {
                    continue;
                }
                match engine.dev.prepare_outgoing(now, packet) {
                    Prepared::Seal(job) => work.jobs.push((i, job)),
                    Prepared::NoRoute | Prepared::NoEndpoint { .. } => self.unreachable.push(i),
                    _ => {}
                }
            }
            drain(&mut engine, now, &mut work.arena, &shared.log);
            work.sockets = engine.sockets.clone();
        }
        for i in self.unreachable.drain(..) {
            if let Some(len) = icmp::unreachable(work.packets.packet(i), &mut self.icmp_buf) {
                self.writer.write_now(&self.icmp_buf[..len]);
            }
        }
        if work.jobs.is_empty() && work.arena.is_empty() {
            work.sockets = None;
            self.spare.put(work);
            return true;
        }
        // The ticket is taken after the counters, by this one thread: ticket order is
        // counter order.
        let ticket = self.lane.reserve();
        shared.workers.submit(&self.lane, ticket, work);
        true
    }
}

/// The TUN reader thread (with `FERROWGD_IO=split`).
fn tun_reader(shared: Arc<Shared>, dev: Arc<TunDevice>) {
    let mut side = match TunSide::new(&shared, dev) {
        Ok(s) => s,
        Err(e) => {
            shared.log.error(format!("TUN reader: {e}"));
            exit(&shared, 1);
        }
    };
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = side.step_blocking() {
            tun_gone(&shared, e);
        }
    }
}

fn tun_gone(shared: &Shared, e: io::Error) -> ! {
    // The interface was deleted (or moved away and deleted): we are done.
    shared
        .log
        .verbose(format!("TUN read failed ({e}); interface gone"));
    exit(shared, 0);
}

/// What one non-blocking turn of a UDP side did.
#[derive(Clone, Copy, PartialEq, Eq)]
enum UdpStep {
    /// Handled a batch of this many messages.
    Worked(usize),
    Empty,
    /// The socket was replaced (a new listen port): this side is done.
    Replaced,
}

/// One UDP socket's side of the data plane: receives batches, handles handshakes and finds
/// the keypairs of transport messages under the lock, and hands each batch to its open lane,
/// whose sink finishes the messages in order and writes them to the TUN.
struct UdpSide {
    shared: Arc<Shared>,
    io: Arc<UdpIo>,
    generation: u64,
    spare: Arc<Pool<Box<OpenWork>>>,
    lane: Arc<Lane<OpenWork>>,
    arena: SendArena,
    /// Handshake messages and all messages received since the socket was last found empty:
    /// the length of a handshake backlog, whatever the batch and GRO sizes.
    handshakes_since_empty: usize,
    messages_since_empty: usize,
}

impl UdpSide {
    fn new(shared: &Arc<Shared>, io: Arc<UdpIo>, generation: u64, dev: Arc<TunDevice>) -> Self {
        let spare = spare_pool::<OpenWork>();
        let lane = {
            let (shared, spare) = (shared.clone(), spare.clone());
            // Made on the first batch: a socket that never receives (often the IPv6 one)
            // needs no TUN writer (and tun-rs's GRO tables it used to hold were ~1 MiB).
            let mut writer: Option<TunWriter> = None;
            let mut arena = SendArena::default();
            // The ordered end: opened batches are finished (replay window, roaming, timers,
            // source check) and written to the TUN in the order they were received.
            Arc::new(Lane::new(move |mut w: Box<OpenWork>| {
                let writer =
                    writer.get_or_insert_with(|| TunWriter::new(dev.clone()).expect("TUN writer"));
                let now = shared.now();
                let sockets = {
                    let mut engine = shared.lock();
                    finish_openings(&mut engine.dev, now, &w, writer, |_, reason| {
                        count_drop(&shared, reason)
                    });
                    drain_control(&shared, &mut engine, &mut arena);
                    engine.sockets.clone()
                };
                writer.flush();
                forget_stale_sources(&shared, arena.send_all(&sockets));
                w.openings.clear();
                spare.put(w);
            }))
        };
        // Receive first and poll only when the socket is empty: under load it rarely is, and
        // the poll cost a system call (and often a sleep and a wake-up) per batch.
        let _ = io.sock.set_nonblocking(true);
        UdpSide {
            shared: shared.clone(),
            io,
            generation,
            spare,
            lane,
            arena: SendArena::default(),
            handshakes_since_empty: 0,
            messages_since_empty: 0,
        }
    }

    fn fd(&self) -> i32 {
        self.io.sock.as_raw_fd()
    }

    fn replaced(&self) -> bool {
        self.shared.lock().socket_generation != self.generation
    }

    /// Receives and handles one batch, without waiting.
    fn step(&mut self) -> UdpStep {
        let shared = &*self.shared;
        let mut work = self.spare.get().unwrap_or_default();
        let n = match work.batch.recv(&self.io) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.spare.put(work);
                self.handshakes_since_empty = 0;
                self.messages_since_empty = 0;
                return UdpStep::Empty;
            }
            Err(_) => 0,
        };
        let now = shared.now();
        let mut messages = 0;
        let sockets = {
            let mut engine = shared.lock();
            if engine.socket_generation != self.generation {
                return UdpStep::Replaced;
            }
            let batch = &mut work.batch;
            // Handshakes arriving faster than we take them keep the socket from ever being
            // empty: that run of handshakes is our handshake backlog, the kernel's "under
            // load" signal (cookies and per-source rate limiting then apply). Counted per
            // message (a GRO buffer holds many) and since the socket was last empty, so the
            // signal does not depend on how many buffers one call fills (one, with
            // FERROWG_NO_UDP_OFFLOAD).
            for i in 0..n {
                for d in batch.datagrams(i) {
                    self.messages_since_empty += 1;
                    messages += 1;
                    if matches!(batch.buf(i)[d.start], 1 | 2) {
                        self.handshakes_since_empty += 1;
                    }
                }
            }
            if self.handshakes_since_empty * 2 >= self.messages_since_empty {
                engine
                    .dev
                    .note_handshake_backlog(now, self.handshakes_since_empty);
            }
            for i in 0..n {
                let from = sender_of(batch, i);
                for range in batch.datagrams(i) {
                    let (off, end) = (range.start, range.end);
                    let d = &mut batch.buf_mut(i)[range];
                    if classify(d) == Some(MessageType::Transport) {
                        // Opened by the workers, finished in order by the lane's sink.
                        match engine.dev.begin_transport(now, d) {
                            Ok(job) => work.openings.push(Opening {
                                buf: i,
                                start: off,
                                end,
                                from,
                                job,
                                result: Err(DropReason::DecryptFailed),
                            }),
                            Err(reason) => count_drop(shared, reason),
                        }
                    } else if let Err(reason) = engine.dev.handle_datagram(now, from, d) {
                        // Handshakes and cookie replies: rare, handled here in order.
                        count_drop(shared, reason);
                    }
                }
            }
            drain_control(shared, &mut engine, &mut self.arena);
            engine.sockets.clone()
        };
        forget_stale_sources(shared, self.arena.send_all(&sockets));
        if work.openings.is_empty() {
            self.spare.put(work);
        } else {
            let ticket = self.lane.reserve();
            shared.workers.submit(&self.lane, ticket, work);
        }
        if n == 0 && self.replaced() {
            // A shut-down socket reads as "readable" with nothing in it: it was replaced.
            return UdpStep::Replaced;
        }
        UdpStep::Worked(messages)
    }
}

/// A UDP reader thread (with `FERROWGD_IO=split`), until its socket is replaced.
fn udp_reader(shared: Arc<Shared>, io: Arc<UdpIo>, generation: u64, dev: Arc<TunDevice>) {
    let mut side = UdpSide::new(&shared, io, generation, dev);
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        match side.step() {
            UdpStep::Worked(_) => {}
            UdpStep::Replaced => return,
            UdpStep::Empty => {
                // A replaced socket is shut down: it polls readable with nothing to read, so
                // the generation is checked after every wake-up, not only on timeouts.
                if sys::wait_readable(side.fd(), POLL_MS).is_err() || side.replaced() {
                    return;
                }
            }
        }
    }
}

/// The whole data plane on one thread (`FERROWGD_IO=one`, the default when the crypto runs
/// inline): TUN and UDP sockets are served in turn, and the thread sleeps in one poll only
/// when all of them are empty. With both directions of a TCP transfer on one thread, the
/// ACKs that writing a batch to the TUN provokes are read by the same thread on its next
/// turn, instead of waking a second thread for each of them.
fn io_loop(shared: Arc<Shared>, dev: Arc<TunDevice>) {
    let tun_fd = dev.raw_fd();
    let mut tun = match TunSide::new(&shared, dev.clone()) {
        Ok(s) => s,
        Err(e) => {
            shared.log.error(format!("TUN reader: {e}"));
            exit(&shared, 1);
        }
    };
    let mut udp: Vec<UdpSide> = Vec::new();
    let mut epoll: Option<sys::Epoll> = None;
    let mut generation = 0;
    let mut check_sockets = true;
    if shared.nap.is_some() {
        // A normal-priority thread's sleeps run up to 50 us late (the default timer slack),
        // which would stretch every nap; real-time threads have none.
        let _ = sys::set_timer_slack_ns(1_000);
    }
    // Whether the loop has napped since it last found work (one nap per burst), and the
    // packets handled since it last stopped to nap or wait.
    let mut napped = true;
    let mut burst = 0usize;
    loop {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        if check_sockets {
            check_sockets = false;
            let engine = shared.lock();
            if engine.socket_generation != generation {
                generation = engine.socket_generation;
                udp = engine
                    .sockets
                    .iter()
                    .flat_map(|s| [&s.io4, &s.io6])
                    .flatten()
                    .map(|io| UdpSide::new(&shared, io.clone(), generation, dev.clone()))
                    .collect();
                // Other sockets: the wait set is built anew below.
                epoll = None;
            }
        }
        let mut busy = match tun.step_nonblocking() {
            Ok(read) => {
                burst += read.unwrap_or(0);
                read.is_some()
            }
            Err(e) => tun_gone(&shared, e),
        };
        for side in &mut udp {
            match side.step() {
                UdpStep::Worked(messages) => {
                    burst += messages;
                    busy = true;
                }
                UdpStep::Empty => {}
                UdpStep::Replaced => check_sockets = true,
            }
        }
        if busy || check_sockets {
            napped = false;
            continue;
        }
        let handled = std::mem::take(&mut burst);
        if let Some(nap) = shared
            .nap
            .filter(|_| !napped && handled >= NAP_AFTER_PACKETS)
        {
            napped = true;
            std::thread::sleep(nap);
            continue;
        }
        // TUN, wake socket, and at most two UDP sockets (IPv4, IPv6).
        let mut fds = [tun_fd, shared.wake.1.as_raw_fd(), -1, -1];
        let mut count = 2;
        for side in udp.iter().take(2) {
            fds[count] = side.fd();
            count += 1;
        }
        if epoll.is_none() {
            epoll = sys::Epoll::new(&fds[..count]).ok();
        }
        // epoll keeps the descriptors registered between waits (5 % less CPU per GB than
        // poll in A/B runs); poll(2) if no epoll set could be made (descriptor limit).
        let waited = match &epoll {
            Some(e) => e.wait(POLL_MS),
            None => sys::wait_readable_any(&fds[..count], POLL_MS),
        };
        match waited {
            Ok(ready) => {
                if ready[1] {
                    while shared.wake.1.recv(&mut [0u8; 16]).is_ok() {}
                    // A wake-up also announces new sockets (a listen-port change).
                    check_sockets = true;
                }
                if !ready.iter().any(|&r| r) {
                    check_sockets = true;
                }
            }
            Err(e) => tun_gone(&shared, e),
        }
    }
}

/// Counts a dropped datagram by reason; the timer thread logs the counts (verbose level) once
/// a second. Aggregated rather than a line per drop: a flood of probes would otherwise flood
/// the log too, and the lock of the logger with it.
fn count_drop(shared: &Shared, reason: DropReason) {
    shared.drops[reason.index()].fetch_add(1, Ordering::Relaxed);
}

/// "Dropped 12 datagrams in the last 1 s: InvalidMac1=10 UnknownPeer=2", if any were.
fn drop_summary(shared: &Shared, period: Duration) -> Option<String> {
    let mut total = 0;
    let mut parts = Vec::new();
    for (i, counter) in shared.drops.iter().enumerate() {
        let n = counter.swap(0, Ordering::Relaxed);
        if n > 0 {
            total += n;
            parts.push(format!("{:?}={n}", DropReason::ALL[i]));
        }
    }
    (total > 0).then(|| {
        format!(
            "Dropped {total} datagrams in the last {} s: {}",
            period.as_secs(),
            parts.join(" ")
        )
    })
}

fn spawn_udp_readers(shared: &Arc<Shared>, engine: &Engine, dev: &Arc<TunDevice>) {
    let Some(s) = &engine.sockets else { return };
    for io in [&s.io4, &s.io6].into_iter().flatten() {
        let (sh, io, generation, dev) = (
            shared.clone(),
            io.clone(),
            engine.socket_generation,
            dev.clone(),
        );
        std::thread::Builder::new()
            .name("udp-rx".into())
            .spawn(move || udp_reader(sh, io, generation, dev))
            .expect("spawn UDP reader");
    }
}

fn timer_loop(shared: Arc<Shared>) {
    let mut out = SendArena::default();
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
            drain_control(&shared, &mut engine, &mut out);
            engine.sockets.clone()
        };
        forget_stale_sources(&shared, out.send_all(&sockets));
        if now.duration_since(last_watch) >= Duration::from_secs(1) {
            last_watch = now;
            if shared.log.enabled(Level::Verbose) {
                if let Some(line) = drop_summary(&shared, Duration::from_secs(1)) {
                    shared.log.verbose(line);
                }
            }
            if let Some(p) = &shared.socket_path {
                // After a privilege drop the path is out of reach: watch the inode instead.
                let gone = crate::privilege::socket_unlinked().unwrap_or_else(|| {
                    std::fs::metadata(p).ok().map(|m| m.ino()) != shared.socket_ino
                });
                if gone {
                    shared.log.verbose("UAPI socket removed; shutting down");
                    exit(&shared, 0);
                }
            }
        }
    }
}

fn serve_uapi(shared: Arc<Shared>, listener: UnixListener, dev: Arc<TunDevice>) {
    for conn in listener.incoming() {
        if shared.shutdown.load(Ordering::Relaxed) {
            return;
        }
        let Ok(conn) = conn else { continue };
        let (sh, dev) = (shared.clone(), dev.clone());
        std::thread::spawn(move || {
            let _ = handle_uapi_conn(&sh, conn, &dev);
        });
    }
}

fn handle_uapi_conn(
    shared: &Arc<Shared>,
    conn: UnixStream,
    dev: &Arc<TunDevice>,
) -> io::Result<()> {
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
                let mut out = SendArena::default();
                let (result, sockets) = {
                    let mut engine = shared.lock();
                    let r = apply_set(&mut engine, &set, now);
                    if let Ok(applied) = &r {
                        if applied.new_sockets {
                            if shared.one_loop {
                                // The loop picks the new sockets up when woken.
                                let _ = shared.wake.0.send(&[0]);
                            } else {
                                spawn_udp_readers(shared, &engine, dev);
                            }
                        }
                    }
                    drain_control(shared, &mut engine, &mut out);
                    (r, engine.sockets.clone())
                };
                forget_stale_sources(shared, out.send_all(&sockets));
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
    let make_dir = || -> io::Result<()> {
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(())
    };
    make_dir()?;
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
    let listener = match UnixListener::bind(&path) {
        // The directory went away after the check above (seen once in CI, with other
        // daemons starting and stopping around us): make it again and retry once.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            make_dir()?;
            UnixListener::bind(&path)?
        }
        r => r?,
    };
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
    if !opts.foreground && !child {
        return daemonize(&opts);
    }
    if child {
        sys::setsid();
    }
    // A daemonized child tells its parent how set-up went, so errors reach the terminal.
    let mut ready = env_fd("FERROWGD_READY_FD").map(|fd| UnixStream::from(owned(fd)));
    let mut fail = |msg: String| -> i32 {
        log.error(&msg);
        if let Some(r) = ready.as_mut() {
            let _ = writeln!(r, "{msg}");
        }
        1
    };

    let tun = match env_fd("WG_TUN_FD") {
        // A supervisor's TUN keeps the framing it was created with: no offloads.
        Some(fd) => Tun::from_fd(owned(fd)).map(TunDevice::Plain),
        None => TunDevice::create(&opts.ifname, DEFAULT_MTU as u16),
    };
    let tun = match tun {
        Ok(t) => Arc::new(t),
        Err(e) => return fail(format!("Failed to create TUN device: {e}")),
    };
    let (listener, socket_path) = match env_fd("WG_UAPI_FD") {
        // A supervisor's socket path is the supervisor's business.
        Some(fd) => (UnixListener::from(owned(fd)), None),
        None => match create_uapi_socket(&opts.ifname) {
            Ok((l, p)) => (l, Some(p)),
            Err(e) => return fail(format!("UAPI listen error: {e}")),
        },
    };
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
    dev.set_mtu(crate::tun::get_mtu(&opts.ifname).map_or(DEFAULT_MTU, |m| m as usize));
    let sockets = match UdpSockets::bind(0, 0) {
        Ok(s) => s,
        Err(e) => return fail(format!("Failed to bind UDP sockets: {e}")),
    };
    // Any non-empty value: ring one message at a time instead of the batch kernels. Read
    // before any data-plane thread starts, so that none seals a packet with the kernels.
    if crate::switched_off("FERROWG_NO_AVX512") {
        ferrowg_chacha::disable();
    }
    let worker_count = crate::workers::workers_from_env();
    let one_loop = one_loop_from_env(worker_count == 0);
    // Before the privilege drop, which takes the right to raise our priority with it.
    let realtime = if one_loop {
        realtime_from_env(&log)
    } else {
        None
    };
    // Still one thread here: the kept capabilities pass to every thread spawned below.
    match crate::privilege::drop_from_env(socket_path.as_deref()) {
        Ok(Some(user)) => log.verbose(format!("Dropped privileges to user {user}")),
        Ok(None) => {}
        Err(e) => return fail(format!("Failed to drop privileges: {e}")),
    }
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
    let workers = Workers::start(worker_count);
    let shared = Arc::new(Shared {
        engine: Mutex::new(engine),
        clock,
        log: log.clone(),
        shutdown: AtomicBool::new(false),
        socket_path,
        socket_ino,
        workers,
        drops: Default::default(),
        wake: {
            let (tx, rx) = UnixDatagram::pair().expect("socketpair");
            tx.set_nonblocking(true).expect("non-blocking wake socket");
            rx.set_nonblocking(true).expect("non-blocking wake socket");
            (tx, rx)
        },
        data_pending: AtomicBool::new(false),
        one_loop,
        nap: if one_loop { nap_from_env(&log) } else { None },
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
    if !shared.one_loop {
        spawn_udp_readers(&shared, &shared.lock(), &tun);
    }
    {
        let (sh, t) = (shared.clone(), tun.clone());
        std::thread::spawn(move || serve_uapi(sh, listener, t));
    }
    {
        let sh = shared.clone();
        std::thread::spawn(move || timer_loop(sh));
    }
    {
        let sh = shared.clone();
        let name = opts.ifname.clone();
        std::thread::spawn(move || mtu_watch(sh, name));
    }
    log.verbose(format!(
        "Device started (TUN offload: {}, UDP GSO segments: {}, batch AEAD: {}, data plane: {}{}{})",
        match (tun.offload(), tun.udp_offload()) {
            (true, true) => "TCP, UDP",
            (true, false) => "TCP",
            _ => "off",
        },
        max_segments(&shared.lock()),
        if ferrowg_chacha::lanes_enabled() {
            "AVX-512"
        } else {
            "off"
        },
        if shared.one_loop {
            "one thread"
        } else {
            "split threads"
        },
        realtime.map_or(String::new(), |p| format!(", SCHED_FIFO {p}")),
        shared
            .nap
            .map_or(String::new(), |d| format!(", nap {} us", d.as_micros())),
    ));
    if let Some(mut r) = ready.take() {
        let _ = writeln!(r, "ok");
    }
    // The calling thread becomes the data plane (or its TUN reader).
    if shared.one_loop {
        io_loop(shared, tun);
    } else {
        tun_reader(shared, tun);
    }
    0
}

/// Real-time priority for the single data-plane thread: `SCHED_FIFO` at
/// `FERROWGD_RT_PRIORITY` (default 5; 0 turns it off). Returns the priority set, if any.
///
/// Why: the kernel's WireGuard runs in softirq and kernel threads, ahead of every process;
/// a user-space data plane at normal priority waits behind the applications it carries. On a
/// busy machine the loop is then descheduled for a millisecond or more at a time, the ACKs
/// of a TCP transfer arrive in bursts, and the sender's congestion control (BBR counts such
/// bursts as "ACK aggregation" and widens its window to cover them) keeps a millisecond of
/// data queued in our socket. Measured with both ends and iperf3 on one 2-core VM, 8 s TCP,
/// three runs each: ping under load 1.51 ms at normal priority, 0.29 ms with SCHED_FIFO
/// (idle 0.28 ms); throughput 4.08 -> 4.33 Gbit/s; CPU-s/GB 2.90 -> 3.06; the price is
/// small-packet throughput (64-byte UDP flood: 184k -> 102k packets/s in single runs), as the
/// loop now wakes for every packet and preempts their sender. The loop sleeps
/// in poll when idle, and the kernel caps real-time threads at 95 % of a CPU
/// (`sched_rt_runtime_us`), so a flood cannot starve the machine. Threads created later
/// start at normal priority (`SCHED_RESET_ON_FORK`). Without the right to (a container
/// without CAP_SYS_NICE), the daemon runs on at normal priority.
fn realtime_from_env(log: &Logger) -> Option<i32> {
    let priority = number_from_env(log, "FERROWGD_RT_PRIORITY", 5, 0..=99, "0 (off) or 1-99");
    if priority == 0 {
        return None;
    }
    match sys::set_realtime(priority) {
        Ok(()) => Some(priority),
        Err(e) => {
            log.verbose(format!(
                "Real-time priority {priority} refused ({e}); running at normal priority"
            ));
            None
        }
    }
}

/// How long the single data-plane loop naps after a burst before it sleeps until woken:
/// `FERROWGD_NAP_US` microseconds (default 80; 0 turns naps off).
///
/// Why: when the loop has drained its queues it sleeps in `epoll_wait`, and the next packet
/// wakes it. On a busy machine that wake-up is the expensive part of a packet's trip: the
/// sender pays it inside its `sendmsg` or TUN write (an inter-processor interrupt, which in
/// a VM is an exit to the hypervisor; 4-5 % of both daemons' samples), and the loop pays a
/// context switch back in; under a TCP transfer that happened ~10,000 times a second for
/// the two daemons, about once per 64 KiB. After a burst (at least `NAP_AFTER_PACKETS`
/// packets) the loop therefore sleeps a fixed short time without asking to be woken, then
/// looks again: what arrived meanwhile is queued at no cost to its sender and taken in one
/// batch. It is the kernel's own answer for busy NICs (NAPI's `napi_defer_hard_irqs` with
/// `gro_flush_timeout`: poll again on a timer instead of re-enabling the interrupt). A nap
/// that finds nothing ends the burst: the loop then sleeps until woken, so a lone packet (a
/// ping, a handshake, a keepalive) never waits for a nap. Measured with both ends and iperf3
/// on one 2-core VM, 8 s TCP, alternating runs (naps 0 / 50 / 80 / 120 / 160 us): context
/// switches 81k -> 54k / 36k / 24k / 20k, CPU-s/GB 2.58-2.74 -> 2.39-2.59 / 2.18-2.22 /
/// 2.23-2.35 / 2.12-2.36, TCP 4.6-5.1 -> 5.0-5.5 / 5.8-6.1 / 5.4-5.9 / 5.3-6.3 Gbit/s,
/// ping under load 0.20-0.23 -> 0.32-0.35 / 0.34-0.36 / 0.49-0.61 / 0.51-0.57 ms, idle
/// ping unchanged (0.29-0.32 ms): 80 us takes most of the gain for a tenth of a millisecond
/// of loaded latency; longer naps add latency and gain nothing more.
fn nap_from_env(log: &Logger) -> Option<Duration> {
    let us = number_from_env(
        log,
        "FERROWGD_NAP_US",
        80,
        0..=10_000,
        "microseconds from 0 (off) to 10000",
    );
    (us > 0).then(|| Duration::from_micros(us))
}

/// The number in environment variable `name`, `default` when it is unset or empty; a value
/// that is not a number in `range` is named in the log and replaced by the default.
fn number_from_env<T>(
    log: &Logger,
    name: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
) -> T
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    match std::env::var(name) {
        Err(_) => default,
        Ok(v) if v.trim().is_empty() => default,
        Ok(v) => match v.trim().parse::<T>() {
            Ok(n) if range.contains(&n) => n,
            _ => {
                log.error(format!(
                    "{name}={v:?}: expected {expected}; using {default}"
                ));
                default
            }
        },
    }
}

/// `FERROWGD_IO=one` serves TUN and UDP on one thread, `split` on a TUN reader and a UDP
/// reader per socket. The default is `one` when the readers do the crypto themselves (no
/// workers, two cores or fewer): there every extra thread only adds wake-ups.
fn one_loop_from_env(inline_crypto: bool) -> bool {
    match std::env::var("FERROWGD_IO").ok().as_deref().map(str::trim) {
        Some("one") => true,
        Some("split") => false,
        _ => inline_crypto,
    }
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
    // to own (WG_TUN_FD / WG_UAPI_FD / FERROWGD_READY_FD); nothing else in this process uses it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Re-executes ourselves in the background and waits for the child to report that the
/// interface and socket exist (or why they could not be made). The child creates the TUN
/// itself: a TUN with offloads cannot be handed over by descriptor.
fn daemonize(opts: &Options) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("Failed to daemonize: {e}");
            return 1;
        }
    };
    let (mut ours, theirs) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("Failed to daemonize: {e}");
            return 1;
        }
    };
    if sys::clear_cloexec(theirs.as_raw_fd()).is_err() {
        eprintln!("Failed to daemonize: cannot pass descriptors");
        return 1;
    }
    let r = std::process::Command::new(exe)
        .arg(&opts.ifname)
        .env("FERROWGD_READY_FD", theirs.as_raw_fd().to_string())
        .env("WG_PROCESS_FOREGROUND", "1")
        .env("FERROWGD_DAEMON_CHILD", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .spawn();
    drop(theirs);
    if let Err(e) = r {
        eprintln!("Failed to daemonize: {e}");
        return 1;
    }
    let mut answer = String::new();
    let _ = std::io::BufReader::new(&mut ours).read_line(&mut answer);
    match answer.lines().next() {
        Some("ok") => 0,
        Some(msg) => {
            eprintln!("{msg}");
            1
        }
        None => {
            eprintln!("Failed to daemonize: the daemon exited during start-up");
            1
        }
    }
}
