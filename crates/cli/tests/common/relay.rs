//! A user-space UDP relay that reorders (and optionally drops) datagrams — the kernel here has
//! no netem — and the three-namespace path that puts it between the two ends of a tunnel.
//!
//! ```ignore
//! let pair = tunnel_pair(&DaemonKind::Ferrowgd, &DaemonKind::Ferrowgd, &PairOptions::default());
//! let path = ReorderingPath::insert(&pair, RelayOptions::default());
//! // ... traffic through the tunnel ...
//! let (a_to_b, b_to_a) = path.finish();
//! a_to_b.assert_forwarded_all("a → b");
//! a_to_b.input.assert_in_order("a's datagrams at the relay");
//! ```
//!
//! * [`Relay`]: two sockets in a namespace, one thread per direction. Every
//!   `hold_every`-th arriving datagram (by default the 5th, 10th, …) is held back until the next
//!   1, 2, …, `hold_behind_max` (in turn) have been sent on, or until nothing has arrived for
//!   `hold_timeout`; optionally a pseudo-random `loss_ppm` of the datagrams is dropped on
//!   arrival (before any reordering). Nothing else is ever dropped.
//! * [`Direction`]: what one direction saw and did: datagrams/bytes in, delivered, dropped,
//!   delivered out of order, and an [`OrderCheck`] of its *input* — the counters of the
//!   transport messages per receiver index, in the order the sender emitted them (the relay
//!   sees every datagram before it reorders or drops it). [`Relay::progress`] gives live
//!   figures while the relay runs.
//! * [`ReorderingPath`]: a third namespace `r` linked to both sides of a [`TunnelPair`], the
//!   direct veth deleted (so every datagram passes the relay), the relay started in `r`, and
//!   each side's endpoint for the other set to the relay's address facing it (IPv4).
#![allow(dead_code)] // each test file uses a different subset

use super::netns::*;
use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The relay's UDP ports in its namespace (facing a, facing b).
pub const RELAY_PORT_A: u16 = 40_001;
pub const RELAY_PORT_B: u16 = 40_002;

// ---------------------------------------------------------------------------------------------
// Transport-message order

/// `(receiver index, counter)` of a transport data message (type 4, at least header + tag).
pub fn transport_header(msg: &[u8]) -> Option<(u32, u64)> {
    if msg.len() < 32 || msg[..4] != [4, 0, 0, 0] {
        return None;
    }
    let index = u32::from_le_bytes(msg[4..8].try_into().unwrap());
    let counter = u64::from_le_bytes(msg[8..16].try_into().unwrap());
    Some((index, counter))
}

/// Per receiver index, the last counter seen; counts messages whose counter is not above it.
#[derive(Debug, Default)]
pub struct OrderCheck {
    /// Every datagram / message looked at.
    pub messages: u64,
    /// Transport data messages among them.
    pub transport: u64,
    pub last: HashMap<u32, u64>,
    pub violations: u64,
    pub examples: Vec<String>,
}

impl OrderCheck {
    pub fn observe(&mut self, msg: &[u8]) {
        self.messages += 1;
        let Some((index, counter)) = transport_header(msg) else {
            return;
        };
        self.transport += 1;
        if let Some(&last) = self.last.get(&index) {
            if counter <= last {
                self.violations += 1;
                if self.examples.len() < 10 {
                    self.examples.push(format!(
                        "message #{} ({} bytes): receiver index {index:#010x}, counter {counter} \
                         after {last}",
                        self.messages,
                        msg.len()
                    ));
                }
                // Keep the highest: one late message counts once, not once per successor.
                return;
            }
        }
        self.last.insert(index, counter);
    }

    /// Receiver indices seen.
    pub fn keypairs(&self) -> usize {
        self.last.len()
    }

    pub fn assert_in_order(&self, what: &str) {
        assert_eq!(
            self.violations, 0,
            "{what}: {} of {} transport messages went backwards in their keypair's counter \
             sequence: {:#?}",
            self.violations, self.transport, self.examples
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The relay

/// How the relay mangles the traffic (the same for both directions).
#[derive(Clone, Copy, Debug)]
pub struct RelayOptions {
    /// Every `hold_every`-th arriving datagram is held back (when none is held yet);
    /// 0 = never reorder.
    pub hold_every: u64,
    /// … until the next 1, 2, …, `hold_behind_max` datagrams (in turn, one value per held
    /// datagram) have been sent on.
    pub hold_behind_max: u64,
    /// … or until nothing has arrived for this long (also the relay's polling interval).
    pub hold_timeout: Duration,
    /// Datagrams dropped on arrival, per million, chosen pseudo-randomly (independently for
    /// each datagram); 0 = lossless.
    pub loss_ppm: u32,
    /// Seed of the loss choice (each direction derives its own).
    pub seed: u64,
}

impl Default for RelayOptions {
    /// Every 5th datagram held back behind the next 1–3 (2 ms at most without traffic),
    /// nothing dropped.
    fn default() -> Self {
        RelayOptions {
            hold_every: 5,
            hold_behind_max: 3,
            hold_timeout: Duration::from_millis(2),
            loss_ppm: 0,
            seed: 0x5eed_0f4e_1a00,
        }
    }
}

/// What one direction of the relay saw and did.
#[derive(Debug, Default)]
pub struct Direction {
    /// Every datagram received, in arrival order (the sender's order, before any dropping or
    /// reordering).
    pub input: OrderCheck,
    pub bytes_in: u64,
    /// Datagrams and bytes sent on.
    pub delivered: u64,
    pub bytes_out: u64,
    /// Datagrams dropped on purpose (`loss_ppm`).
    pub dropped: u64,
    pub bytes_dropped: u64,
    /// Datagrams held back.
    pub held: u64,
    /// Deliveries of a datagram that arrived before one already delivered.
    pub out_of_order: u64,
    pub send_errors: u64,
    pub first_send_error: Option<String>,
}

impl Direction {
    /// Every datagram received was either sent on or dropped on purpose; no send failed.
    pub fn assert_forwarded_all(&self, what: &str) {
        assert_eq!(
            (
                self.send_errors,
                self.delivered + self.dropped,
                self.bytes_out + self.bytes_dropped
            ),
            (0, self.input.messages, self.bytes_in),
            "{what}: the relay did not forward everything it did not drop on purpose: {self:?}"
        );
    }
}

/// Live figures of one direction (see [`Relay::progress`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub received: u64,
    pub delivered: u64,
    pub dropped: u64,
    pub out_of_order: u64,
    /// Counter violations on the input side so far.
    pub violations: u64,
}

#[derive(Debug, Default)]
struct Live {
    received: AtomicU64,
    delivered: AtomicU64,
    dropped: AtomicU64,
    out_of_order: AtomicU64,
    violations: AtomicU64,
}

impl Live {
    fn publish(&self, dir: &Direction) {
        self.received.store(dir.input.messages, Ordering::Relaxed);
        self.delivered.store(dir.delivered, Ordering::Relaxed);
        self.dropped.store(dir.dropped, Ordering::Relaxed);
        self.out_of_order.store(dir.out_of_order, Ordering::Relaxed);
        self.violations
            .store(dir.input.violations, Ordering::Relaxed);
    }

    fn read(&self) -> Progress {
        Progress {
            received: self.received.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            out_of_order: self.out_of_order.load(Ordering::Relaxed),
            violations: self.violations.load(Ordering::Relaxed),
        }
    }
}

/// xorshift64*: the relay's loss choice (reproducible, no dependency).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) % n
    }
}

/// Forwards datagrams arriving on `input` to `to` through `output`, mangled as `opts` says
/// (see [`RelayOptions`]). Runs until `stop` is raised; anything held is delivered first.
fn forward(
    input: UdpSocket,
    output: UdpSocket,
    to: SocketAddr,
    opts: RelayOptions,
    stop: &AtomicBool,
    live: &Live,
) -> Direction {
    input.set_read_timeout(Some(opts.hold_timeout)).unwrap();
    let mut dir = Direction::default();
    let mut rng = Rng::new(opts.seed);
    let mut buf = vec![0u8; 1 << 16];
    // (arrival number, datagram, deliveries still to let pass)
    let mut held: Option<(u64, Vec<u8>, u64)> = None;
    // Arrivals not dropped, numbered in order.
    let mut arrivals = 0u64;
    let mut max_delivered: Option<u64> = None;
    let mut deliver = |dir: &mut Direction, seq: u64, data: &[u8]| {
        if max_delivered.is_some_and(|m| seq < m) {
            dir.out_of_order += 1;
        }
        max_delivered = Some(max_delivered.map_or(seq, |m| m.max(seq)));
        match output.send_to(data, to) {
            Ok(_) => {
                dir.delivered += 1;
                dir.bytes_out += data.len() as u64;
            }
            Err(e) => {
                dir.send_errors += 1;
                dir.first_send_error
                    .get_or_insert_with(|| format!("send to {to}: {e}"));
            }
        }
    };
    loop {
        match input.recv_from(&mut buf) {
            Ok((n, _)) => {
                let data = &buf[..n];
                dir.input.observe(data);
                dir.bytes_in += n as u64;
                if opts.loss_ppm > 0 && rng.below(1_000_000) < u64::from(opts.loss_ppm) {
                    dir.dropped += 1;
                    dir.bytes_dropped += n as u64;
                } else {
                    let seq = arrivals;
                    arrivals += 1;
                    if held.is_none()
                        && opts.hold_every > 0
                        && seq % opts.hold_every == opts.hold_every - 1
                    {
                        let behind = 1 + (seq / opts.hold_every) % opts.hold_behind_max.max(1);
                        held = Some((seq, data.to_vec(), behind));
                        dir.held += 1;
                    } else {
                        deliver(&mut dir, seq, data);
                        if let Some((_, _, left)) = &mut held {
                            *left -= 1;
                            if *left == 0 {
                                let (s, d, _) = held.take().unwrap();
                                deliver(&mut dir, s, &d);
                            }
                        }
                    }
                }
                // Cheap enough per datagram; lets a test watch a long run.
                live.publish(&dir);
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                if let Some((s, d, _)) = held.take() {
                    deliver(&mut dir, s, &d);
                    live.publish(&dir);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => panic!("relay receive: {e}"),
        }
        if stop.load(Ordering::SeqCst) {
            if let Some((s, d, _)) = held.take() {
                deliver(&mut dir, s, &d);
            }
            live.publish(&dir);
            return dir;
        }
    }
}

/// 16 MiB receive buffer (SO_RCVBUFFORCE: we are root), so bursts of GSO runs are not
/// dropped before the relay reads them.
pub fn big_receive_buffer(sock: &UdpSocket) {
    let size: libc::c_int = 16 << 20;
    // SAFETY: setsockopt on a socket we own, with a correctly sized c_int option value.
    let r = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
}

/// The user-space relay: two sockets inside its namespace, one thread per direction.
/// Dropping it stops both threads.
pub struct Relay {
    stop: Arc<AtomicBool>,
    live: [Arc<Live>; 2],
    a_to_b: Option<JoinHandle<Direction>>,
    b_to_a: Option<JoinHandle<Direction>>,
}

impl Relay {
    /// `a_side`/`b_side`: the relay's addresses in `ns` facing a and b (a's endpoint for b is
    /// `a_side`, b's for a is `b_side`); `a`/`b`: the peers' real endpoints.
    pub fn start(
        ns: &Netns,
        a_side: SocketAddr,
        b_side: SocketAddr,
        a: SocketAddr,
        b: SocketAddr,
        opts: RelayOptions,
    ) -> Relay {
        let (sock_a, sock_b) = in_netns(ns, move || {
            let sa = UdpSocket::bind(a_side).expect("relay bind (a side)");
            let sb = UdpSocket::bind(b_side).expect("relay bind (b side)");
            big_receive_buffer(&sa);
            big_receive_buffer(&sb);
            (sa, sb)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let live = [Arc::new(Live::default()), Arc::new(Live::default())];
        let (in_a, out_a) = (sock_a.try_clone().unwrap(), sock_a);
        let (in_b, out_b) = (sock_b.try_clone().unwrap(), sock_b);
        let spawn = |name: &str, input, output, to, seed, live: &Arc<Live>| {
            let (stop, live) = (stop.clone(), live.clone());
            let opts = RelayOptions { seed, ..opts };
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || forward(input, output, to, opts, &stop, &live))
                .expect("spawn relay thread")
        };
        let a_to_b = spawn("relay-a-to-b", in_a, out_b, b, opts.seed, &live[0]);
        let b_to_a = spawn(
            "relay-b-to-a",
            in_b,
            out_a,
            a,
            opts.seed ^ 0x9e37_79b9_7f4a_7c15,
            &live[1],
        );
        Relay {
            stop,
            live,
            a_to_b: Some(a_to_b),
            b_to_a: Some(b_to_a),
        }
    }

    /// Live figures `(a → b, b → a)`.
    pub fn progress(&self) -> (Progress, Progress) {
        (self.live[0].read(), self.live[1].read())
    }

    /// Stops both directions (anything held is delivered first): `(a → b, b → a)`.
    pub fn finish(mut self) -> (Direction, Direction) {
        self.stop.store(true, Ordering::SeqCst);
        let join =
            |h: JoinHandle<Direction>| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        (
            join(self.a_to_b.take().unwrap()),
            join(self.b_to_a.take().unwrap()),
        )
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for h in [self.a_to_b.take(), self.b_to_a.take()]
            .into_iter()
            .flatten()
        {
            let _ = h.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The three-namespace path

/// `a ↔ r ↔ b` with the relay in `r` (see the module docs). Field order matters: the relay
/// stops before its namespace goes.
pub struct ReorderingPath {
    pub relay: Relay,
    /// The relay's namespace.
    pub ns: Netns,
    /// a ↔ r (`a_ifname` in a's namespace) and r ↔ b (`b_ifname` in b's).
    pub a_link: Link,
    pub b_link: Link,
    /// The relay's addresses: a's endpoint for b, b's endpoint for a.
    pub a_side: SocketAddr,
    pub b_side: SocketAddr,
}

impl ReorderingPath {
    /// Puts a relay between the two sides of `pair` (IPv4 outer addresses): deletes the direct
    /// veth and points each side's endpoint for the other at the relay (`wg set`).
    pub fn insert(pair: &TunnelPair, opts: RelayOptions) -> ReorderingPath {
        let (a, b) = (&pair.a, &pair.b);
        let ns = Netns::new();
        let a_link = link(&a.ns, &ns);
        let b_link = link(&ns, &b.ns);
        a.ns.ip(&["link", "del", &pair.link.a_ifname]);
        let a_side = SocketAddr::new(a_link.b(Family::V4), RELAY_PORT_A);
        let b_side = SocketAddr::new(b_link.a(Family::V4), RELAY_PORT_B);
        let a_real = SocketAddr::new(a_link.a(Family::V4), a.listen_port);
        let b_real = SocketAddr::new(b_link.b(Family::V4), b.listen_port);
        let relay = Relay::start(&ns, a_side, b_side, a_real, b_real, opts);
        for (me, other, endpoint) in [(a, b, a_side), (b, a, b_side)] {
            wg_set_peer(
                &me.ns,
                me.ifname(),
                &PeerSpec {
                    public_key: other.keys.public.clone(),
                    endpoint: Some(endpoint),
                    ..PeerSpec::default()
                },
            );
        }
        ReorderingPath {
            relay,
            ns,
            a_link,
            b_link,
            a_side,
            b_side,
        }
    }

    /// What the kernel dropped so far along the path: in a's namespace, in the relay's, in b's
    /// (the path's veths and UDP buffer errors; see [`datagram_losses`]).
    pub fn kernel_losses(&self, pair: &TunnelPair) -> [Losses; 3] {
        [
            datagram_losses(&pair.a.ns, &[&self.a_link.a_ifname]),
            datagram_losses(&self.ns, &[&self.a_link.b_ifname, &self.b_link.a_ifname]),
            datagram_losses(&pair.b.ns, &[&self.b_link.b_ifname]),
        ]
    }

    /// [`Relay::progress`].
    pub fn progress(&self) -> (Progress, Progress) {
        self.relay.progress()
    }

    /// [`Relay::finish`].
    pub fn finish(self) -> (Direction, Direction) {
        self.relay.finish()
    }
}
