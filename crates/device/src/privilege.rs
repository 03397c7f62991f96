//! Dropping root after set-up: `ferrowgd --user NAME` (or `FERROWGD_USER=NAME`).
//!
//! Once the TUN exists, the UDP sockets are bound and the UAPI socket listens, the daemon
//! becomes `NAME` (supplementary groups, gid, uid) but keeps two capabilities in its
//! permitted, effective, inheritable and ambient sets:
//!
//! - `CAP_NET_ADMIN`: `SO_MARK` (`wg set fwmark`) and the forced socket buffer sizes;
//! - `CAP_NET_BIND_SERVICE`: `wg set listen-port` below 1024.
//!
//! Capabilities and the keep-caps flag are per thread, so the drop must happen while the
//! process has a single thread: every thread spawned afterwards inherits the kept set.
//!
//! The UAPI socket stays root-owned, mode 0600, in the root-only directory: root connects as
//! before. The unprivileged daemon can no longer look that path up, so before the drop it
//! keeps an `O_PATH` descriptor on the socket file, and "the socket was removed" becomes "its
//! link count is 0" ([`socket_unlinked`]). It can no longer remove the socket on exit either;
//! the next daemon for the interface replaces the stale file (it cannot be connected to).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::OnceLock;

/// The environment variable naming the user to become (the `--user` flag sets it).
pub const USER_ENV: &str = "FERROWGD_USER";

const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_ADMIN: u32 = 12;
const KEPT: u32 = (1 << CAP_NET_BIND_SERVICE) | (1 << CAP_NET_ADMIN);
const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// An `O_PATH` descriptor on the UAPI socket file, kept when privileges were dropped.
static SOCKET_WATCH: OnceLock<OwnedFd> = OnceLock::new();

/// The user to become, from `FERROWGD_USER` (unset or empty: stay root).
pub fn requested_user() -> Option<String> {
    std::env::var(USER_ENV).ok().filter(|u| !u.is_empty())
}

/// Drops to the user named by `FERROWGD_USER`, if any (see the module documentation).
/// `socket` is the UAPI socket path this process created. Must be called while the process
/// has one thread.
pub fn drop_from_env(socket: Option<&Path>) -> io::Result<Option<String>> {
    let Some(name) = requested_user() else {
        return Ok(None);
    };
    let (uid, gid) = lookup(&name)?;
    if let Some(p) = socket {
        SOCKET_WATCH.get_or_init(|| open_path(p).expect("O_PATH on the UAPI socket"));
    }
    drop_to(uid, gid)?;
    Ok(Some(name))
}

/// Whether the UAPI socket file was unlinked, when it is watched through a descriptor (only
/// after a privilege drop); `None`: not watched, check the path.
pub fn socket_unlinked() -> Option<bool> {
    let fd = SOCKET_WATCH.get()?;
    // SAFETY: an all-zero `stat` is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat on a descriptor we own, writing into a live, correctly sized `stat`.
    let r = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    Some(r == 0 && st.st_nlink == 0)
}

fn open_path(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_bytes())?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; O_PATH opens nothing but
    // a reference to the inode.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The uid and primary gid of `name` (getpwnam_r).
fn lookup(name: &str) -> io::Result<(libc::uid_t, libc::gid_t)> {
    let c = CString::new(name)?;
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: an all-zero `passwd` (null pointers, zero ids) is a valid value to overwrite.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live memory of the stated size for the whole call;
    // getpwnam_r writes strings only into `buf` and sets `result` to `&pw` or null.
    let r = unsafe {
        libc::getpwnam_r(
            c.as_ptr(),
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    if result.is_null() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no such user: {name}"),
        ));
    }
    Ok((pw.pw_uid, pw.pw_gid))
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

fn drop_to(uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only; it changes this thread's securebits.
    check(
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) },
        "PR_SET_KEEPCAPS",
    )?;
    let groups = [gid];
    // SAFETY: `groups` is a live array of the stated length.
    check(
        unsafe { libc::setgroups(groups.len(), groups.as_ptr()) },
        "setgroups",
    )?;
    // SAFETY: plain system calls with integer arguments (glibc applies them to every thread).
    check(unsafe { libc::setgid(gid) }, "setgid")?;
    // SAFETY: as above. With keep-caps the permitted set survives; the effective set is
    // cleared and restored below.
    check(unsafe { libc::setuid(uid) }, "setuid")?;
    let mut header = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // Version 3 takes two data structs (capabilities 0–31 and 32–63); ours are all in the
    // first.
    let data = [
        CapData {
            effective: KEPT,
            permitted: KEPT,
            inheritable: KEPT,
        },
        CapData::default(),
    ];
    // SAFETY: capset reads a header and two data structs laid out as the kernel's
    // `__user_cap_header_struct` / `__user_cap_data_struct` (repr(C), u32 fields), all live.
    check(
        unsafe {
            libc::syscall(
                libc::SYS_capset,
                &mut header as *mut CapHeader,
                data.as_ptr(),
            ) as libc::c_int
        },
        "capset",
    )?;
    for cap in [CAP_NET_ADMIN, CAP_NET_BIND_SERVICE] {
        // SAFETY: prctl with integer arguments only. Ambient capabilities only matter across
        // execve (which the daemon never does); failure (old kernels) is harmless.
        unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
    // Regaining root must be impossible.
    // SAFETY: plain system call.
    if uid != 0 && unsafe { libc::setuid(0) } == 0 {
        return Err(io::Error::other("setuid(0) still succeeds after the drop"));
    }
    Ok(())
}
