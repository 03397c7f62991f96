//! The UDP side: one IPv4 and one IPv6-only socket on the same port (the v6 one is optional,
//! so a host without IPv6 still works), with the firewall mark applied to both.

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::sync::Arc;

use crate::udp_io::UdpIo;

#[derive(Clone)]
pub struct UdpSockets {
    pub v4: Option<Arc<UdpSocket>>,
    pub v6: Option<Arc<UdpSocket>>,
    /// Batched I/O (GSO/GRO) on the same sockets.
    pub io4: Option<Arc<UdpIo>>,
    pub io6: Option<Arc<UdpIo>>,
    pub port: u16,
}

fn socket(domain: Domain, fwmark: u32) -> io::Result<Socket> {
    let s = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if domain == Domain::IPV6 {
        s.set_only_v6(true)?;
    }
    if fwmark != 0 {
        s.set_mark(fwmark)?;
    }
    // Large buffers absorb bursts between batches (the kernel caps them at rmem_max unless
    // we are privileged, which the daemon is).
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    Ok(s)
}

impl UdpSockets {
    /// Binds both families to `port` (0 = a random port shared by both).
    pub fn bind(port: u16, fwmark: u32) -> io::Result<UdpSockets> {
        let mut last_err = None;
        // With port 0 the v4 socket picks the port; if that port is taken for IPv6, pick again.
        for _ in 0..if port == 0 { 10 } else { 1 } {
            let v4 = socket(Domain::IPV4, fwmark)?;
            v4.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
            let actual = v4
                .local_addr()?
                .as_socket()
                .map(|a| a.port())
                .unwrap_or(port);
            let v6 = match socket(Domain::IPV6, fwmark) {
                Ok(s) => match s.bind(
                    &SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, actual, 0, 0)).into(),
                ) {
                    Ok(()) => Some(s),
                    Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                        last_err = Some(e);
                        continue;
                    }
                    // No IPv6 on this host (or in this namespace): carry on with IPv4.
                    Err(_) => None,
                },
                Err(_) => None,
            };
            let v4: Arc<UdpSocket> = Arc::new(v4.into());
            let v6: Option<Arc<UdpSocket>> = v6.map(|s| Arc::new(s.into()));
            let io4 = Some(Arc::new(UdpIo::new(v4.clone())?));
            let io6 = match &v6 {
                Some(s) => Some(Arc::new(UdpIo::new(s.clone())?)),
                None => None,
            };
            return Ok(UdpSockets {
                v4: Some(v4),
                v6,
                io4,
                io6,
                port: actual,
            });
        }
        Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EADDRINUSE)))
    }

    /// The batched-I/O handle for a destination's family (IPv4-mapped addresses are IPv4).
    pub fn io_for(&self, to: SocketAddr) -> Option<&Arc<UdpIo>> {
        match to {
            SocketAddr::V4(_) => self.io4.as_ref(),
            SocketAddr::V6(a) if a.ip().to_ipv4_mapped().is_some() => self.io4.as_ref(),
            SocketAddr::V6(_) => self.io6.as_ref(),
        }
    }

    pub fn set_fwmark(&self, mark: u32) -> io::Result<()> {
        for s in [&self.v4, &self.v6].into_iter().flatten() {
            socket2::SockRef::from(s.as_ref()).set_mark(mark)?;
        }
        Ok(())
    }

    /// Wakes and stops the reader threads of these sockets (rebind, shutdown).
    pub fn close(&self) {
        for s in [&self.v4, &self.v6].into_iter().flatten() {
            let _ = socket2::SockRef::from(s.as_ref()).shutdown(std::net::Shutdown::Both);
        }
    }
}
