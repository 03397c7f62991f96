//! Batched UDP I/O with GSO and GRO, via `quinn-udp` (which probes `UDP_SEGMENT`/`UDP_GRO`
//! at start and falls back to one datagram per call where the kernel refuses them; we use it
//! rather than hand-written `sendmmsg`/`recvmmsg` because it already does the probing, the
//! control messages and the fallbacks). `FERROWG_NO_UDP_OFFLOAD=1` turns both off.
//!
//! Receiving: one call fills several 64 KiB buffers, each holding one or more datagrams of the
//! same size from the same sender (GRO). Sending: `GsoBatch` gathers sealed messages of equal
//! length to one destination in one buffer and sends them with one system call.

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

/// Buffers per receive call and their size (a GRO buffer holds up to 64 KiB of datagrams).
pub const RECV_BUFS: usize = 16;
pub const GRO_BUF: usize = 65_536;

pub struct UdpIo {
    pub sock: Arc<UdpSocket>,
    state: UdpSocketState,
    offload: bool,
}

impl UdpIo {
    pub fn new(sock: Arc<UdpSocket>) -> io::Result<UdpIo> {
        let state = UdpSocketState::new(UdpSockRef::from(&*sock))?;
        let offload = std::env::var_os("FERROWG_NO_UDP_OFFLOAD").is_none();
        Ok(UdpIo {
            sock,
            state,
            offload,
        })
    }

    /// Segments one GSO send may carry (1 when GSO is off or unsupported).
    pub fn max_segments(&self) -> usize {
        if self.offload {
            self.state.max_gso_segments().max(1)
        } else {
            1
        }
    }

    /// Receives into `bufs`; returns how many entries of `meta` are filled. Each holds
    /// `meta.len` bytes of datagrams of `meta.stride` bytes (the last may be shorter).
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = if self.offload { bufs.len() } else { 1 };
        self.state.recv(
            UdpSockRef::from(&*self.sock),
            &mut bufs[..n],
            &mut meta[..n],
        )
    }

    /// Sends `contents` to `to`, as datagrams of `segment` bytes when it holds several.
    pub fn send(&self, to: SocketAddr, contents: &[u8], segment: usize) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: None,
        };
        self.state.send(UdpSockRef::from(&*self.sock), &transmit)
    }
}

/// Gathers equal-length messages to one destination for a single GSO send.
pub struct GsoBatch {
    pub buf: Vec<u8>,
    used: usize,
    segment: usize,
    count: usize,
    to: Option<SocketAddr>,
}

impl Default for GsoBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl GsoBatch {
    pub fn new() -> GsoBatch {
        GsoBatch {
            buf: vec![0; GRO_BUF + 2048],
            used: 0,
            segment: 0,
            count: 0,
            to: None,
        }
    }

    /// Space to seal the next message into, at most `max` bytes.
    pub fn tail(&mut self) -> &mut [u8] {
        &mut self.buf[self.used..]
    }

    /// Whether a message of `len` bytes to `to` can join the batch.
    pub fn fits(&self, to: SocketAddr, len: usize, max_segments: usize) -> bool {
        self.count == 0
            || (self.to == Some(to)
                && len <= self.segment
                && self.count < max_segments
                && self.used + len <= GRO_BUF
                // Only the last datagram of a GSO send may be shorter than the others.
                && self.used == self.count * self.segment)
    }

    /// Records that `len` bytes were written at `tail()`.
    pub fn commit(&mut self, to: SocketAddr, len: usize) {
        if self.count == 0 {
            self.segment = len;
            self.to = Some(to);
        }
        self.used += len;
        self.count += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn flush(&mut self, io: Option<&UdpIo>) {
        if let (Some(io), Some(to)) = (io, self.to) {
            if self.count > 0 {
                let _ = io.send(to, &self.buf[..self.used], self.segment);
            }
        }
        self.used = 0;
        self.count = 0;
        self.to = None;
    }
}
