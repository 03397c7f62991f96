//! Batched TUN I/O with Linux offloads behind a runtime probe.
//!
//! With offloads (`IFF_VNET_HDR` + TSO/USO), one read returns a TCP/UDP super-packet of up to
//! 64 KiB that is split into MTU-sized packets in user space (the `tun-rs` crate's Linux
//! offload module, which we measured rather than rewrite), and writes coalesce consecutive
//! segments of a flow back into super-packets (our own `gro`, which allocates nothing per
//! packet). That turns ~45 system calls per 64 KiB into one in each direction — the largest
//! single cost of a user-space tunnel.
//!
//! Without them (kernel refuses, `FERROWG_NO_TUN_OFFLOAD=1`, or a TUN handed over by a
//! supervisor through `WG_TUN_FD`, whose framing cannot be changed), the same interface reads
//! and writes one packet per system call.

use crate::gro::{Gro, VNET_HDR_LEN};
use crate::sys;
use crate::tun::Tun;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use tun_rs::{SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

// Our GRO writes the header tun-rs's reader expects on the same descriptor.
const _: () = assert!(VNET_HDR_LEN == VIRTIO_NET_HDR_LEN);

/// Largest packet the tunnel carries (the TUN MTU can be set up to this).
pub const MAX_PACKET: usize = 65_535;

pub enum TunDevice {
    Offload(SyncDevice),
    Plain(Tun),
}

impl TunDevice {
    /// Creates the interface, with offloads unless disabled or refused.
    pub fn create(name: &str, mtu: u16) -> io::Result<TunDevice> {
        if !crate::switched_off("FERROWG_NO_TUN_OFFLOAD") {
            let built = tun_rs::DeviceBuilder::new()
                .name(name)
                .mtu(mtu)
                .offload(true)
                .inherit_enable_state()
                .build_sync();
            match built {
                Ok(dev) => return Ok(TunDevice::Offload(dev)),
                // EINVAL/EIO: an old kernel or a TUN without offload support; fall back.
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO)) => {}
                Err(e) => return Err(e),
            }
        }
        let tun = Tun::create(name)?;
        tun.set_mtu(mtu as u32)?;
        Ok(TunDevice::Plain(tun))
    }

    pub fn raw_fd(&self) -> RawFd {
        match self {
            TunDevice::Offload(d) => d.as_raw_fd(),
            TunDevice::Plain(t) => t.raw_fd(),
        }
    }

    pub fn offload(&self) -> bool {
        matches!(self, TunDevice::Offload(_))
    }

    /// Whether the kernel also takes UDP super-packets (USO, Linux 6.2+).
    pub fn udp_offload(&self) -> bool {
        matches!(self, TunDevice::Offload(d) if d.udp_gso())
    }
}

/// Packet slots of one batch: two reads' worth, so that small packets read one per system
/// call can be gathered behind one another (see `TunReader::read_batch`).
pub const BATCH_SLOTS: usize = 2 * IDEAL_BATCH_SIZE;
const SLOT: usize = MAX_PACKET + 1;

/// The packets of one TUN read: `packet(i)` for `i` below what `read_batch` returned. Owned
/// apart from the reader so that several batches can be in flight (read, being sealed, being
/// sent).
pub struct PacketBatch {
    /// One mapping for all slots, so pages no packet touched are never resident (256
    /// separate 64 KiB buffers from the heap were 7 MiB of an idle daemon's RSS).
    storage: crate::sys::ZeroedPages,
    pub sizes: Vec<usize>,
}

impl Default for PacketBatch {
    fn default() -> Self {
        PacketBatch {
            storage: crate::sys::ZeroedPages::new(BATCH_SLOTS * SLOT),
            sizes: vec![0; BATCH_SLOTS],
        }
    }
}

impl PacketBatch {
    pub fn packet(&self, i: usize) -> &[u8] {
        &self.storage[i * SLOT..i * SLOT + self.sizes[i]]
    }
}

/// `IDEAL_BATCH_SIZE` slots of `storage` from slot `first` on.
fn slots(storage: &mut [u8], first: usize) -> [&mut [u8]; IDEAL_BATCH_SIZE] {
    let mut it = storage[first * SLOT..].chunks_mut(SLOT);
    std::array::from_fn(|_| {
        it.next()
            .expect("BATCH_SLOTS covers first + IDEAL_BATCH_SIZE")
    })
}

/// The reading side: one batch of outgoing IP packets per call.
pub struct TunReader {
    dev: Arc<TunDevice>,
    plain: Option<Tun>,
    original: Vec<u8>,
}

impl TunReader {
    pub fn new(dev: Arc<TunDevice>) -> io::Result<TunReader> {
        let plain = match &*dev {
            TunDevice::Plain(t) => {
                let t = t.try_clone()?;
                sys::set_nonblocking(t.raw_fd(), true)?;
                Some(t)
            }
            TunDevice::Offload(d) => {
                // Reads are attempted before polling (see `read_batch`).
                d.set_nonblocking(true)?;
                None
            }
        };
        Ok(TunReader {
            dev,
            plain,
            original: vec![0; VIRTIO_NET_HDR_LEN + MAX_PACKET],
        })
    }

    /// Blocks for the next batch into `batch` and returns the number of packets. `Ok(0)` means "nothing yet" (a poll timeout or a packet the
    /// offload code skipped).
    /// `wake` is a non-blocking socket other threads write to to interrupt the wait; it is
    /// drained here.
    pub fn read_batch(
        &mut self,
        batch: &mut PacketBatch,
        timeout_ms: i32,
        wake: &std::os::unix::net::UnixDatagram,
    ) -> io::Result<usize> {
        // Read first and poll only when the queue is empty: under load it rarely is, and the
        // poll was a second system call (and often a sleep and a wake-up) for every batch.
        if let Some(n) = self.try_read(batch)? {
            return Ok(n);
        }
        let [readable, woken, ..] =
            sys::wait_readable_any(&[self.dev.raw_fd(), wake.as_raw_fd()], timeout_ms)?;
        if woken {
            while wake.recv(&mut [0u8; 16]).is_ok() {}
        }
        if !readable {
            return Ok(0);
        }
        Ok(self.try_read(batch)?.unwrap_or(0))
    }

    /// Non-blocking reads into `batch`; `None` when the queue was empty. A super-packet
    /// (TSO) fills a batch by itself and is passed on at once; packets that come one per
    /// read (UDP, ACKs, anything small) are gathered while more are queued and room for a
    /// full split remains, so that they are sealed and sent together (one GSO send instead
    /// of one system call each). The single I/O loop calls it directly and polls for itself.
    pub fn try_read(&mut self, batch: &mut PacketBatch) -> io::Result<Option<usize>> {
        match &*self.dev {
            TunDevice::Offload(d) => {
                let mut n = 0;
                while n + IDEAL_BATCH_SIZE <= BATCH_SLOTS {
                    let mut bufs = slots(&mut batch.storage, n);
                    let sizes = &mut batch.sizes[n..n + IDEAL_BATCH_SIZE];
                    match d.recv_multiple(&mut self.original, &mut bufs, sizes, 0) {
                        Ok(k) => {
                            n += k;
                            if k != 1 {
                                break;
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            return Ok(if n == 0 { None } else { Some(n) });
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                        // A malformed super-packet from the kernel is dropped, not fatal.
                        Err(e) if e.raw_os_error().is_none() => break,
                        // Anything else resurfaces on the next read, after this batch.
                        Err(_) if n > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(Some(n))
            }
            TunDevice::Plain(_) => {
                let t = self.plain.as_mut().expect("plain reader");
                let mut n = 0;
                while n < BATCH_SLOTS {
                    match t.recv(&mut batch.storage[n * SLOT..(n + 1) * SLOT]) {
                        Ok(len) => {
                            batch.sizes[n] = len;
                            n += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(_) if n > 0 => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(if n == 0 { None } else { Some(n) })
            }
        }
    }
}

/// The writing side: packets are queued with `push` and written by `flush`, coalesced into
/// super-packets (`gro`) where offloads allow.
pub struct TunWriter {
    dev: Arc<TunDevice>,
    plain: Option<Tun>,
    gro: Gro,
}

impl TunWriter {
    pub fn new(dev: Arc<TunDevice>) -> io::Result<TunWriter> {
        let (plain, gro) = match &*dev {
            TunDevice::Plain(t) => (
                Some(t.try_clone()?),
                Gro::new(IDEAL_BATCH_SIZE, false, false),
            ),
            TunDevice::Offload(_) => (None, Gro::new(IDEAL_BATCH_SIZE, true, dev.udp_offload())),
        };
        Ok(TunWriter { dev, plain, gro })
    }

    pub fn push(&mut self, packet: &[u8]) {
        // At most one batch of buffers: coalescing can fill each one up to 64 KiB, so their
        // number, not the traffic, bounds the daemon's resident memory (the soak test saw it
        // creep up while a receive batch held several hundred packets).
        if self.gro.is_full() {
            self.flush();
        }
        self.gro.push(packet);
    }

    pub fn flush(&mut self) {
        match &*self.dev {
            // A failed write loses that packet or group of packets, as a full queue would.
            TunDevice::Offload(d) => self.gro.drain(|buf| {
                let _ = d.send(buf);
            }),
            TunDevice::Plain(_) => {
                let t = self.plain.as_mut().expect("plain writer");
                self.gro.drain(|buf| {
                    let _ = t.send(&buf[VNET_HDR_LEN..]);
                });
            }
        }
    }

    /// Writes one packet at once (ICMP errors generated locally).
    pub fn write_now(&mut self, packet: &[u8]) {
        self.push(packet);
        self.flush();
    }
}
