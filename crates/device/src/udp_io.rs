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
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, RwLock};

/// Buffers per receive call and their size (a GRO buffer holds up to 64 KiB of datagrams).
pub const RECV_BUFS: usize = 16;
pub const GRO_BUF: usize = 65_536;

/// quinn-udp's state for `sock`, with outer fragmentation allowed again.
///
/// `UdpSocketState::new` sets `IP_PMTUDISC_PROBE` (and, on IPv6 sockets,
/// `IPV6_PMTUDISC_PROBE` + `IPV6_DONTFRAG`) because QUIC must never fragment. A WireGuard
/// tunnel must: with a tunnel MTU above the path's (jumbo tunnel MTUs, wg-in-wg, a 1500-byte
/// TUN on a 1500-byte link), every outer datagram larger than the path failed with EMSGSIZE —
/// which quinn-udp swallows — so those packets vanished (0 of 10 UDP datagrams arrived at
/// tunnel MTU 9000 or 34,000). The kernel's WireGuard sends outer packets without DF and
/// lets the IP layer fragment them; so do we.
fn fresh_state(sock: &UdpSocket) -> io::Result<UdpSocketState> {
    let state = UdpSocketState::new(UdpSockRef::from(sock))?;
    let fd = sock.as_raw_fd();
    let v6 = matches!(sock.local_addr(), Ok(SocketAddr::V6(_)));
    set_int(
        fd,
        libc::IPPROTO_IP,
        libc::IP_MTU_DISCOVER,
        libc::IP_PMTUDISC_DONT,
    );
    if v6 {
        set_int(
            fd,
            libc::IPPROTO_IPV6,
            libc::IPV6_MTU_DISCOVER,
            libc::IPV6_PMTUDISC_DONT,
        );
        set_int(fd, libc::IPPROTO_IPV6, libc::IPV6_DONTFRAG, 0);
    }
    Ok(state)
}

/// `setsockopt(fd, level, name, &value)`; best effort (an option the kernel lacks leaves the
/// socket as it was, which only matters for oversized datagrams).
fn set_int(fd: RawFd, level: libc::c_int, name: libc::c_int, value: libc::c_int) {
    // SAFETY: `fd` is a socket owned by the caller for the duration of the call; the option
    // value is a live `c_int` whose size is passed alongside.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

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
        let state = RwLock::new(fresh_state(&sock)?);
        let offload = !crate::switched_off("FERROWG_NO_UDP_OFFLOAD");
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
                    if let Ok(fresh) = fresh_state(&self.sock) {
                        *self.state.write().unwrap_or_else(|p| p.into_inner()) = fresh;
                    }
                }
                Err(e)
            }
            _ => Ok(()),
        }
    }
}
