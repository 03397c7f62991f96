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
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::{Arc, RwLock};

/// Buffers per receive call and their size (a GRO buffer holds up to 64 KiB of datagrams).
pub const RECV_BUFS: usize = 16;
pub const GRO_BUF: usize = 65_536;

pub struct UdpIo {
    pub sock: Arc<UdpSocket>,
    /// quinn-udp's per-socket state. It is replaced after a send fails because of a stale
    /// source address: quinn-udp reads any EINVAL as "the kernel cannot do GSO" and turns it
    /// off for good, which a removed address must not cost us.
    state: RwLock<UdpSocketState>,
    offload: bool,
}

impl UdpIo {
    pub fn new(sock: Arc<UdpSocket>) -> io::Result<UdpIo> {
        let state = RwLock::new(UdpSocketState::new(UdpSockRef::from(&*sock))?);
        let offload = std::env::var_os("FERROWG_NO_UDP_OFFLOAD").is_none();
        Ok(UdpIo {
            sock,
            state,
            offload,
        })
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, UdpSocketState> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Segments one GSO send may carry (1 when GSO is off or unsupported).
    pub fn max_segments(&self) -> usize {
        if self.offload {
            self.state().max_gso_segments().max(1)
        } else {
            1
        }
    }

    /// Receives into `bufs`; returns how many entries of `meta` are filled. Each holds
    /// `meta.len` bytes of datagrams of `meta.stride` bytes (the last may be shorter).
    pub fn recv(&self, bufs: &mut [IoSliceMut<'_>], meta: &mut [RecvMeta]) -> io::Result<usize> {
        let n = if self.offload { bufs.len() } else { 1 };
        self.state().recv(
            UdpSockRef::from(&*self.sock),
            &mut bufs[..n],
            &mut meta[..n],
        )
    }

    /// Sends `contents` to `to`, as datagrams of `segment` bytes when it holds several, from
    /// the local address `src` when given (the address the peer last reached us on). An error
    /// is returned only when `src` was refused (the address left the host); other send
    /// errors are losses like any other on UDP.
    pub fn send(
        &self,
        to: SocketAddr,
        src: Option<IpAddr>,
        contents: &[u8],
        segment: usize,
    ) -> io::Result<()> {
        let transmit = Transmit {
            destination: to,
            ecn: None,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip: src,
        };
        if src.is_none() {
            return self.state().send(UdpSockRef::from(&*self.sock), &transmit);
        }
        let r = self
            .state()
            .try_send(UdpSockRef::from(&*self.sock), &transmit);
        match r {
            // IPv4 answers ENETUNREACH for a source that is no longer local, IPv6 EINVAL.
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO)) {
                    // Undo quinn-udp's reaction to the EINVAL (GSO and cmsgs switched off).
                    if let Ok(fresh) = UdpSocketState::new(UdpSockRef::from(&*self.sock)) {
                        *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                }
                Err(e)
            }
            _ => Ok(()),
        }
    }
}
