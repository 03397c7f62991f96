//! The TUN interface: a thin wrapper over `/dev/net/tun` and the two ioctls it needs.
//!
//! The interface is created without packet information headers (`IFF_NO_PI`), so each read
//! returns exactly one IP packet and each write takes one. It is not persistent: closing the
//! descriptor removes the interface, which is how the daemon cleans up on every exit path.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const IFNAMSIZ: usize = 16;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;

#[repr(C)]
struct IfReqFlags {
    name: [libc::c_char; IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

#[repr(C)]
struct IfReqMtu {
    name: [libc::c_char; IFNAMSIZ],
    mtu: libc::c_int,
    _pad: [u8; 20],
}

fn ifname_bytes(name: &str) -> io::Result<[libc::c_char; IFNAMSIZ]> {
    if name.is_empty() || name.len() >= IFNAMSIZ || name.contains('/') || name.contains('\0') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut out = [0 as libc::c_char; IFNAMSIZ];
    for (o, b) in out.iter_mut().zip(name.bytes()) {
        *o = b as libc::c_char;
    }
    Ok(out)
}

pub struct Tun {
    file: File,
    name: String,
}

impl Tun {
    /// Creates (or attaches to) the TUN interface `name`.
    pub fn create(name: &str) -> io::Result<Tun> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        let mut req = IfReqFlags {
            name: ifname_bytes(name)?,
            flags: (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short,
            _pad: [0; 22],
        };
        // SAFETY: TUNSETIFF reads and writes a `struct ifreq`; `IfReqFlags` has its layout
        // (16-byte name, then the flags union member, padded to the 40-byte size) and lives for
        // the whole call. The descriptor is open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = read_name(&req.name);
        Ok(Tun { file, name })
    }

    /// Adopts a TUN descriptor a supervisor created (`WG_TUN_FD`).
    pub fn from_fd(fd: OwnedFd) -> io::Result<Tun> {
        let mut req = IfReqFlags {
            name: [0; IFNAMSIZ],
            flags: 0,
            _pad: [0; 22],
        };
        // SAFETY: TUNGETIFF fills a `struct ifreq` of the layout above; the fd is owned by us.
        let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF as _, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let name = read_name(&req.name);
        Ok(Tun {
            file: File::from(fd),
            name,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// A second handle on the same queue, for a writer thread beside the reader.
    pub fn try_clone(&self) -> io::Result<Tun> {
        Ok(Tun {
            file: self.file.try_clone()?,
            name: self.name.clone(),
        })
    }

    /// Reads one packet. An error other than EINTR/EAGAIN means the interface is gone.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    pub fn send(&mut self, packet: &[u8]) -> io::Result<usize> {
        self.file.write(packet)
    }

    /// Sets the interface MTU (SIOCSIFMTU through a throwaway datagram socket).
    pub fn set_mtu(&self, mtu: u32) -> io::Result<()> {
        set_mtu(&self.name, mtu)
    }

    pub fn mtu(&self) -> io::Result<u32> {
        get_mtu(&self.name)
    }
}

fn read_name(raw: &[libc::c_char; IFNAMSIZ]) -> String {
    raw.iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect()
}

fn control_socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2) call; the result is checked before being wrapped.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = IfReqMtu {
        name: ifname_bytes(name)?,
        mtu: mtu as libc::c_int,
        _pad: [0; 20],
    };
    // SAFETY: SIOCSIFMTU reads a `struct ifreq` whose union holds an int MTU; the layout
    // matches and the struct outlives the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn get_mtu(name: &str) -> io::Result<u32> {
    let sock = control_socket()?;
    let mut req = IfReqMtu {
        name: ifname_bytes(name)?,
        mtu: 0,
        _pad: [0; 20],
    };
    // SAFETY: SIOCGIFMTU fills the int MTU member of a `struct ifreq` of matching layout.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFMTU as _, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(req.mtu as u32)
}

/// Index of a network interface in the current namespace, if it exists here.
pub fn if_index(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}
