//! Named network namespaces, the way iproute2 keeps them (`/run/netns/NAME`, a bind mount of a
//! namespace file), created and removed in-process, and ways to act inside one.
//!
//! A network namespace belongs to a thread, so everything "inside" happens in a short-lived
//! thread that entered it: sockets it opens (netlink, TCP) and processes it starts stay in
//! that namespace whatever thread uses them afterwards.

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Where iproute2 (and therefore `ip netns exec`) looks for named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// `/run/netns/NAME`.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

pub fn exists(name: &str) -> bool {
    path(name).exists()
}

/// iproute2's rule for a namespace name: a file name, not `.` or `..`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && name.len() < 256
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Makes `/run/netns` a shared mount point, as `ip netns add` does, so that namespaces
/// mounted later are seen from every mount namespace (e.g. `ip netns exec` sessions).
fn share_run_dir() -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(NETNS_RUN_DIR)?;
    let shared = MsFlags::MS_SHARED | MsFlags::MS_REC;
    match mount(
        None::<&str>,
        NETNS_RUN_DIR,
        Some("none"),
        shared,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::Error::EINVAL) => {
            // Not a mount point yet: bind it onto itself, then share it.
            mount(
                Some(NETNS_RUN_DIR),
                NETNS_RUN_DIR,
                Some("none"),
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(errno)?;
            mount(
                None::<&str>,
                NETNS_RUN_DIR,
                Some("none"),
                shared,
                None::<&str>,
            )
            .map_err(errno)
        }
        Err(e) => Err(errno(e)),
    }
}

/// `ip netns add NAME`: a new, empty network namespace (loopback down, as iproute2 leaves
/// it). Fails with `AlreadyExists` if the name is taken.
pub fn create(name: &str) -> io::Result<()> {
    if !valid_name(name) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid namespace name `{name}'"),
        ));
    }
    share_run_dir()?;
    let target = path(name);
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o000)
        .open(&target)?;
    let bind_target = target.clone();
    let result = std::thread::spawn(move || -> io::Result<()> {
        // This thread alone moves to the new namespace and pins it with the bind mount.
        unshare(CloneFlags::CLONE_NEWNET).map_err(errno)?;
        mount(
            Some("/proc/thread-self/ns/net"),
            &bind_target,
            Some("none"),
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(errno)
    })
    .join()
    .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")));
    if result.is_err() {
        let _ = fs::remove_file(&target);
    }
    result
}

/// `ip netns del NAME`: detaches the mount and removes the name. The namespace itself lives
/// on while processes or sockets still use it.
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    let _ = umount2(&target, MntFlags::MNT_DETACH);
    fs::remove_file(&target)
}

/// Runs `f` in a new thread inside the namespace at `ns_path` and returns its result.
pub fn run_in<T, F>(ns_path: &Path, f: F) -> io::Result<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let file = File::open(ns_path)?;
    std::thread::Builder::new()
        .name("in-netns".into())
        .spawn(move || -> io::Result<T> {
            setns(&file, CloneFlags::CLONE_NEWNET).map_err(errno)?;
            Ok(f())
        })?
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Starts `cmd` inside the namespace at `ns_path` (the child inherits the namespace of the
/// thread that forks it).
pub fn spawn_in(ns_path: &Path, mut cmd: std::process::Command) -> io::Result<std::process::Child> {
    run_in(ns_path, move || cmd.spawn())?
}
