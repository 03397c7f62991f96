//! Reaching an interface the way `wg` does: a live userspace socket first, the kernel otherwise.
//!
//! ferrowg speaks only the userspace protocol (through `ferrowg_uapi::client`). For a name
//! with no live socket `wg` would ask the kernel over generic netlink, which this tool cannot
//! do (no netlink without `unsafe` or a new dependency); it reports instead the error `wg`
//! gets from the kernel in that situation, so messages stay identical on hosts without
//! WireGuard kernel interfaces — the case ferrowgd exists for.

use ferrowg_uapi::client::{self, ClientError};
use ferrowg_uapi::{DeviceInfo, DeviceSet};
use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Linux `IFNAMSIZ - 1`: `wg` keeps at most this many bytes of an interface name.
pub const IFNAME_MAX: usize = 15;

const ENODEV: i32 = 19;
const EPROTONOSUPPORT: i32 = 93;
const EOPNOTSUPP: i32 = 95;

/// The C library's message for an errno, as `perror` prints it.
pub fn strerror(errno: i32) -> String {
    ClientError::new(errno, "").strerror()
}

/// The `strerror` text of an I/O error (its errno's message; std's own text otherwise).
pub fn io_strerror(err: &io::Error) -> String {
    match err.raw_os_error() {
        Some(errno) => strerror(errno),
        None => err.to_string(),
    }
}

/// The name as `wg` stores it in its device structure: cut to [`IFNAME_MAX`] bytes. Printed in
/// `show` headers and `show all` prefixes.
pub fn display_name(name: &[u8]) -> &[u8] {
    &name[..name.len().min(IFNAME_MAX)]
}

/// Reads an interface. `name` is raw bytes because a command-line argument need not be
/// UTF-8; such a name cannot have a userspace socket here and goes the kernel's way.
pub fn get(name: &OsStr) -> Result<DeviceInfo, ClientError> {
    match userspace_name(name) {
        Some(ifname) => client::get(ifname),
        None => Err(kernel_error(name.as_bytes())),
    }
}

/// Applies a `set` to an interface (see [`get`] for how the interface is found).
pub fn set(name: &OsStr, request: &DeviceSet) -> Result<(), ClientError> {
    match userspace_name(name) {
        Some(ifname) => client::set(ifname, request),
        None => Err(kernel_error(name.as_bytes())),
    }
}

/// Every interface `wg show all` would visit, in its order: kernel WireGuard interfaces
/// first (by interface index, as a netlink dump returns them), then userspace sockets in
/// directory order. Names longer than [`IFNAME_MAX`] are skipped, as `wg` skips them.
pub fn list() -> Result<Vec<Vec<u8>>, ClientError> {
    let mut names = kernel_interfaces();
    for name in client::list_interfaces()? {
        if name.len() <= IFNAME_MAX {
            names.push(name.into_bytes());
        }
    }
    Ok(names)
}

/// `Some` when `name` has a live userspace socket, by `wg`'s test: the path exists, is a
/// socket, and a connection is not refused. A refused connection means its daemon died: the
/// socket is removed (as `wg` does) and the kernel is asked instead.
fn userspace_name(name: &OsStr) -> Option<&str> {
    let ifname = name.to_str()?;
    if ifname.contains('/') {
        return None;
    }
    let path = client::socket_path(ifname);
    let meta = fs::metadata(&path).ok()?;
    if !meta.file_type().is_socket() {
        return None;
    }
    match UnixStream::connect(&path) {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let _ = fs::remove_file(&path);
            None
        }
        _ => Some(ifname),
    }
}

/// What the kernel would answer `wg` for an interface ferrowg cannot read: without the
/// WireGuard module the generic netlink family is missing ("Protocol not supported"); with
/// it, a missing device is ENODEV, and for an existing device (a kernel WireGuard interface,
/// which only netlink can read, or a device of another kind) EOPNOTSUPP is reported.
fn kernel_error(name: &[u8]) -> ClientError {
    let detail = "no userspace socket for this interface, and ferrowg cannot use netlink";
    if !Path::new("/sys/module/wireguard").exists() {
        return ClientError::new(EPROTONOSUPPORT, detail);
    }
    let exists = !name.contains(&b'/')
        && !name.is_empty()
        && Path::new("/sys/class/net")
            .join(OsStr::from_bytes(name))
            .exists();
    ClientError::new(if exists { EOPNOTSUPP } else { ENODEV }, detail)
}

/// Kernel WireGuard interfaces, found through sysfs (their `uevent` says
/// `DEVTYPE=wireguard`), ordered by interface index.
fn kernel_interfaces() -> Vec<Vec<u8>> {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return Vec::new();
    };
    let mut found: Vec<(u64, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let dir = entry.path();
            let uevent = fs::read_to_string(dir.join("uevent")).ok()?;
            if !uevent.lines().any(|l| l == "DEVTYPE=wireguard") {
                return None;
            }
            let index = fs::read_to_string(dir.join("ifindex"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(u64::MAX);
            Some((index, entry.file_name().as_bytes().to_vec()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}

/// The name of the interface with this index, as `if_indextoname` finds it (used for the
/// `%scope` of link-local endpoints, which `wg` prints by name).
pub fn interface_name_of_index(index: u32) -> Option<String> {
    for entry in fs::read_dir("/sys/class/net").ok()?.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(entry.path().join("ifindex")) else {
            continue;
        };
        if text.trim().parse::<u32>().ok() == Some(index) {
            return entry.file_name().into_string().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cut_like_wg_cuts_them() {
        assert_eq!(display_name(b"wg0"), b"wg0");
        assert_eq!(display_name(b"0123456789abcdefXYZ"), b"0123456789abcde");
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn strerror_is_the_c_library_text() {
        assert_eq!(strerror(93), "Protocol not supported");
        assert_eq!(strerror(2), "No such file or directory");
    }

    #[test]
    fn loopback_index_resolves() {
        // Index 1 is the loopback device on Linux.
        if Path::new("/sys/class/net/lo").exists() {
            assert_eq!(interface_name_of_index(1).as_deref(), Some("lo"));
        }
    }
}
