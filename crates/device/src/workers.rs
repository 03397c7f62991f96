//! Parallel crypto with an ordered drain, the kernel's shape on wireguard-go's batches.
//!
//! A reading thread (the TUN reader, or one UDP reader) does the ordered part of a batch under
//! the engine lock — routing and counter assignment ([`Device::prepare_outgoing`]), or keypair
//! lookup ([`Device::begin_transport`]) — takes a ticket from its [`OrderedQueue`] and hands
//! the batch to the worker pool. A worker seals or opens every packet of the batch outside
//! the lock, completes the ticket and drains: whichever thread drains hands finished batches
//! on strictly in ticket order (sending sealed runs, or finishing opened messages under the
//! lock and writing them to the TUN). Ticket order is counter order, so no peer's packets
//! are ever reordered, whatever the number of workers.
//!
//! `FERROWGD_WORKERS=N` sets the pool size; 0 seals and opens on the reading thread itself
//! (the same path, without the hand-off). The default is one worker per core on machines
//! with more than two cores, and 0 on two cores or fewer: there the reading threads already
//! keep the cores busy, and handing batches to other threads only adds wake-ups and cache
//! misses (measured with both tunnel ends on one 2-core VM, 8 s iperf3: inline 4.16 Gbit/s
//! and 3.00 CPU-s/GB, two workers 3.47 Gbit/s and 3.69 CPU-s/GB).

use crate::pipeline::{canonical, canonical_ip, RecvBatch, SendArena};
use crate::tun_io::{PacketBatch, TunWriter};
use crate::udp::UdpSockets;
use crate::udp_io::GRO_BUF;
use ferrowg_proto::device::{open_group, seal_group, DropReason, OpenJob, Received, SealJob};
use ferrowg_proto::peer::{Endpoint, LocalAddr};
use ferrowg_sync::ordered::{OrderedQueue, Ticket};
use ferrowg_sync::pool::Pool;
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Batches in flight per direction and reading thread: enough to keep every worker busy
/// while the reader reads the next one, few enough to bound memory and latency.
pub const IN_FLIGHT: usize = 4;

/// Worker count from `FERROWGD_WORKERS`, else one per core beyond two cores (see above).
pub fn workers_from_env() -> usize {
    std::env::var("FERROWGD_WORKERS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            if cores > 2 {
                cores
            } else {
                0
            }
        })
        .min(64)
}

/// A unit of crypto work and what to do with it, in order, once done.
pub trait Work: Send + 'static {
    /// The parallel part: seal or open every packet of the batch.
    fn crypto(&mut self);
}

/// Spare batches of one lane, shared by its reader (takes) and its sink (returns): at most
/// one per ticket plus the one being read, so memory stays bounded under any load.
pub fn spare_pool<W: Default>() -> Arc<Pool<Box<W>>> {
    Arc::new(Pool::new(IN_FLIGHT + 1, 1, Box::default))
}

/// One direction of one reading thread: its tickets and its ordered sink.
pub struct Lane<W: Work> {
    queue: OrderedQueue<Box<W>>,
    sink: Mutex<Box<dyn FnMut(Box<W>) + Send>>,
}

impl<W: Work> Lane<W> {
    pub fn new(sink: impl FnMut(Box<W>) + Send + 'static) -> Self {
        Lane {
            queue: OrderedQueue::new(IN_FLIGHT),
            sink: Mutex::new(Box::new(sink)),
        }
    }

    /// A ticket for the next batch; while all are out, helps drain and waits briefly.
    pub fn reserve(&self) -> Ticket {
        loop {
            if let Some(t) = self.queue.reserve() {
                return t;
            }
            self.drain();
            if let Some(t) = self.queue.reserve() {
                return t;
            }
            std::thread::sleep(Duration::from_micros(20));
        }
    }

    fn finish(&self, ticket: Ticket, work: Box<W>) {
        self.queue.complete(ticket, work);
        self.drain();
    }

    /// Hands finished batches to the sink in ticket order (one drainer at a time).
    pub fn drain(&self) {
        self.queue.drain(|w| {
            let mut sink = self.sink.lock().unwrap_or_else(|p| p.into_inner());
            (sink)(w)
        });
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The worker threads. Cloning shares the pool.
#[derive(Clone)]
pub struct Workers {
    tx: Option<Sender<Job>>,
}

impl Workers {
    /// `n` worker threads; `n == 0` runs the crypto on the submitting thread.
    pub fn start(n: usize) -> Workers {
        if n == 0 {
            return Workers { tx: None };
        }
        let (tx, rx) = channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("crypto-{i}"))
                .spawn(move || worker(rx))
                .expect("spawn crypto worker");
        }
        Workers { tx: Some(tx) }
    }

    /// Seals or opens `work` (here or on a worker), then completes `ticket` and drains.
    pub fn submit<W: Work>(&self, lane: &Arc<Lane<W>>, ticket: Ticket, mut work: Box<W>) {
        match &self.tx {
            None => {
                work.crypto();
                lane.finish(ticket, work);
            }
            Some(tx) => {
                let lane = lane.clone();
                let job: Job = Box::new(move || {
                    work.crypto();
                    lane.finish(ticket, work);
                });
                if let Err(e) = tx.send(job) {
                    // The workers are gone (shutting down): do it here.
                    (e.0)();
                }
            }
        }
    }
}

fn worker(rx: Arc<Mutex<Receiver<Job>>>) {
    loop {
        let job = {
            let rx = rx.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

// ----- TUN → UDP ---------------------------------------------------------------------------

/// A TUN batch on its way out: the packets, the jobs the engine made of them, and the arena
/// that holds the handshakes queued meanwhile and, once sealed, the messages.
pub struct SealWork {
    pub packets: PacketBatch,
    pub jobs: Vec<(usize, SealJob)>,
    pub arena: SendArena,
    pub sockets: Option<UdpSockets>,
    pub segments: usize,
}

impl Default for SealWork {
    fn default() -> Self {
        SealWork {
            packets: PacketBatch::default(),
            jobs: Vec::with_capacity(crate::tun_io::BATCH_SLOTS),
            arena: SendArena::default(),
            sockets: None,
            segments: 1,
        }
    }
}

impl Work for SealWork {
    /// Runs of jobs under one key are sealed together: the batch AEAD works on several
    /// messages at once (`ferrowg_chacha`).
    fn crypto(&mut self) {
        let mut first = 0;
        while first < self.jobs.len() {
            let key = &self.jobs[first].1;
            let run = self.jobs[first..]
                .iter()
                .take_while(|(_, job)| job.same_key(key))
                .count();
            let jobs = &self.jobs[first..first + run];
            // Room for the messages first; the AEAD then writes them from the packets.
            let start = self.arena.len();
            for (_, job) in jobs {
                self.arena.tail(job.sealed_len());
                self.arena.commit(job.to, job.sealed_len(), self.segments);
            }
            let mut rest = self.arena.written_mut(start);
            let packets = &self.packets;
            seal_group(jobs.iter().map(|(i, job)| {
                let (msg, more) = std::mem::take(&mut rest).split_at_mut(job.sealed_len());
                rest = more;
                (job, packets.packet(*i), msg)
            }));
            first += run;
        }
    }
}

// ----- UDP → TUN ---------------------------------------------------------------------------

/// A transport message of a receive batch: where it lies, who sent it, and how to open it.
pub struct Opening {
    pub buf: usize,
    pub start: usize,
    pub end: usize,
    pub from: Endpoint,
    pub job: OpenJob,
    pub result: Result<usize, DropReason>,
}

/// A receive batch: the GRO buffers and the transport messages found in them (handshakes
/// were handled by the reader under the lock).
#[derive(Default)]
pub struct OpenWork {
    pub batch: RecvBatch,
    pub openings: Vec<Opening>,
    /// The results of one run of openings, before they go into `openings`.
    results: Vec<Result<usize, DropReason>>,
}

impl Work for OpenWork {
    /// Runs of messages under one key are opened together (see `SealWork::crypto`).
    fn crypto(&mut self) {
        let offset = |o: &Opening| o.buf * GRO_BUF + o.start;
        let storage = self.batch.storage_mut();
        let mut first = 0;
        while first < self.openings.len() {
            let key = &self.openings[first].job;
            // Openings lie in the storage in order; the run must, to be split off it.
            let mut end_of_last = 0;
            let run = self.openings[first..]
                .iter()
                .take_while(|o| {
                    let fits = o.job.same_key(key) && offset(o) >= end_of_last;
                    end_of_last = offset(o) + (o.end - o.start);
                    fits
                })
                .count();
            let (openings, results) = (&self.openings[first..first + run], &mut self.results);
            results.clear();
            let mut rest = &mut *storage;
            let mut at = 0;
            open_group(
                openings.iter().map(|o| {
                    let skip = offset(o) - at;
                    let (msg, more) =
                        std::mem::take(&mut rest)[skip..].split_at_mut(o.end - o.start);
                    rest = more;
                    at = offset(o) + msg.len();
                    (&o.job, msg)
                }),
                |result| results.push(result),
            );
            for (o, result) in self.openings[first..first + run]
                .iter_mut()
                .zip(&self.results)
            {
                o.result = *result;
            }
            first += run;
        }
    }
}

/// Where a datagram of receive buffer `i` came from (replies leave from the local address it
/// arrived on: the sticky source).
pub fn sender_of(batch: &RecvBatch, i: usize) -> Endpoint {
    let m = &batch.meta[i];
    Endpoint {
        addr: canonical(m.addr),
        local: m.dst_ip.map(|ip| LocalAddr {
            ip: canonical_ip(ip),
            ifindex: 0,
        }),
    }
}

/// Delivered packets of finished openings go to `writer`; the caller holds the engine lock.
pub fn finish_openings(
    dev: &mut ferrowg_proto::device::Device,
    now: std::time::Instant,
    work: &OpenWork,
    writer: &mut TunWriter,
    mut on_drop: impl FnMut(SocketAddr, DropReason),
) {
    for o in &work.openings {
        let d = &work.batch.buf(o.buf)[o.start..o.end];
        match dev.finish_transport(now, o.from, &o.job, o.result, d) {
            Ok(Received::Packet { start, len, .. }) => writer.push(&d[start..start + len]),
            Ok(Received::Nothing) => {}
            Err(reason) => on_drop(o.from.addr, reason),
        }
    }
}
