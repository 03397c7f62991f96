//! Batched UDP I/O with GSO and GRO, via `quinn-udp` (which probes `UDP_SEGMENT`/`UDP_GRO`
//! at start and falls back to one datagram per call where the kernel refuses them; we use it
//! rather than hand-written `sendmmsg`/`recvmmsg` because it already does the probing, the
//! control messages and the fallbacks). `FERROWG_NO_UDP_OFFLOAD=1` turns both off.
//!
//! Receiving: one call fills several 64 KiB buffers, each holding one or more datagrams of the
//! same size from the same sender (GRO). Sending: one call carries a run of equal-length
//! datagrams to one destination (GSO); `pipeline::SendArena` builds the runs.

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
