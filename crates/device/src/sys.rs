//! Small OS calls std does not offer: waiting for readability, file-descriptor flags, the
//! session leader call used when daemonizing.

use std::io;
use std::os::fd::RawFd;

/// Waits until `fd` is readable or `timeout_ms` passes. Returns true if readable (or in an
/// error/hang-up state, which the following read will report).
pub fn wait_readable(fd: RawFd, timeout_ms: i32) -> io::Result<bool> {
    Ok(wait_readable_any(&[fd], timeout_ms)?[0])
}

/// Waits until one of `fds` (at most 4) is readable or `timeout_ms` passes; returns which are.
pub fn wait_readable_any(fds: &[RawFd], timeout_ms: i32) -> io::Result<[bool; 4]> {
    assert!(fds.len() <= 4, "at most 4 descriptors");
    let mut pfds = [libc::pollfd {
        fd: -1,
        events: libc::POLLIN,
        revents: 0,
    }; 4];
    for (p, &fd) in pfds.iter_mut().zip(fds) {
        p.fd = fd;
    }
    // SAFETY: `fds.len()` valid pollfds (of 4) for the duration of the call.
    let rc = unsafe { libc::poll(pfds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::Interrupted {
            return Ok([false; 4]);
        }
        return Err(e);
    }
    Ok(pfds.map(|p| p.revents != 0))
}

/// An epoll set of up to 4 descriptors, for a loop that waits on the same ones again and
/// again: poll(2) adds and removes a wait-queue entry per descriptor on every call, epoll
/// keeps them registered. Built anew whenever the set changes (a closed descriptor leaves the
/// set by itself, and its number may come back as another socket).
pub struct Epoll {
    fd: std::os::fd::OwnedFd,
}

impl Epoll {
    /// Watches `fds` (at most 4); `wait` reports them by position.
    pub fn new(fds: &[RawFd]) -> io::Result<Epoll> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        assert!(fds.len() <= 4, "at most 4 descriptors");
        // SAFETY: plain system call with a flag argument.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned to us by epoll_create1 and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for (i, &watched) in fds.iter().enumerate() {
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: i as u64,
            };
            // SAFETY: epoll_ctl on our epoll descriptor with an event valid for the call.
            let rc =
                unsafe { libc::epoll_ctl(fd.as_raw_fd(), libc::EPOLL_CTL_ADD, watched, &mut ev) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Epoll { fd })
    }

    /// Waits until a watched descriptor is readable or `timeout_ms` passes; returns which are.
    pub fn wait(&self, timeout_ms: i32) -> io::Result<[bool; 4]> {
        use std::os::fd::AsRawFd;
        let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 4];
        // SAFETY: room for 4 events, as passed; the kernel writes at most that many.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), evs.as_mut_ptr(), 4, timeout_ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok([false; 4]);
            }
            return Err(e);
        }
        let mut ready = [false; 4];
        for ev in &evs[..n as usize] {
            let i = ev.u64 as usize;
            if i < 4 {
                ready[i] = true;
            }
        }
        Ok(ready)
    }
}

/// Puts the calling thread under `SCHED_FIFO` at `priority`, with `SCHED_RESET_ON_FORK` so
/// that threads it creates afterwards start under the normal policy.
pub fn set_realtime(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: pid 0 names the calling thread; `param` is valid for the duration of the call.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How late the calling thread's timed sleeps may end, so that the kernel can fold their
/// timer interrupts together (`PR_SET_TIMERSLACK`; 50 us by default).
pub fn set_timer_slack_ns(ns: u64) -> io::Result<()> {
    // SAFETY: PR_SET_TIMERSLACK takes an integer argument and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, ns as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_nonblocking(fd: RawFd, on: bool) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    let flags = if on {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Lets `fd` survive exec (it is handed to the daemonized child).
pub fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments only.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

pub fn set_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Detaches from the controlling terminal and the parent's session.
pub fn setsid() {
    // SAFETY: setsid has no memory-safety preconditions; failure (already a leader) is harmless.
    unsafe {
        libc::setsid();
    }
}

/// Zero-filled memory straight from `mmap`: pages become resident only when written, whatever
/// the allocator's heuristics (glibc's `calloc` in a thread's arena, or after its mmap
/// threshold moved, clears — and so touches — every page). Large packet buffers of which an
/// idle daemon touches nothing cost no memory this way.
pub struct ZeroedPages {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: ZeroedPages owns its mapping exclusively, like a Box<[u8]>.
unsafe impl Send for ZeroedPages {}
// SAFETY: shared access only reads through `&[u8]`, like a Box<[u8]>.
unsafe impl Sync for ZeroedPages {}

impl ZeroedPages {
    /// `len` zero bytes (`len > 0`). Panics if the mapping fails (out of address space).
    pub fn new(len: usize) -> ZeroedPages {
        assert!(len > 0);
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap of {len} bytes: {}",
            io::Error::last_os_error()
        );
        ZeroedPages {
            ptr: std::ptr::NonNull::new(p.cast()).expect("mmap returned null"),
            len,
        }
    }
}

impl std::ops::Deref for ZeroedPages {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes (zero-filled by the kernel) for our lifetime.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for ZeroedPages {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for ZeroedPages {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `new` made; no reference outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
