//! The `wg` side: talking to a userspace daemon (ferrowgd, wireguard-go, boringtun) over its
//! UNIX socket, one connection per operation as `wg` does.
//!
//! The `*_at` / `*_in` variants take the socket path or directory explicitly; the plain
//! functions use [`SOCKET_DIR`]. Errors carry an errno so the tool can print `wg`'s
//! messages (`Unable to modify interface: Invalid argument`).

use crate::error::{errno, UapiError};
use crate::get::parse_get_response;
use crate::model::{DeviceInfo, DeviceSet};
use crate::set::emit_set;
use crate::value::{extend_wiping, parse_decimal};
use std::fmt;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where daemons put their sockets: `wg`'s default RUNSTATEDIR (`/var/run`) +
/// `/wireguard`. Not configurable from the environment, as in `wg`.
pub const SOCKET_DIR: &str = "/var/run/wireguard";

const SOCKET_SUFFIX: &str = ".sock";

/// `/var/run/wireguard/IFNAME.sock`.
pub fn socket_path(ifname: &str) -> PathBuf {
    Path::new(SOCKET_DIR).join(format!("{ifname}{SOCKET_SUFFIX}"))
}

/// A failed client operation: an errno (for the `strerror` text `wg` prints) and a detail
/// for logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    errno: i32,
    detail: String,
}

impl ClientError {
    pub fn new(errno: i32, detail: impl Into<String>) -> Self {
        ClientError {
            errno,
            detail: detail.into(),
        }
    }

    /// The errno `wg` would report. Usually positive; a daemon answering a `set` with a
    /// positive `errno=N` (boringtun does) yields `-N` here, exactly as in `wg`, which then
    /// prints "Unknown error -N".
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// What exactly went wrong (the daemon's reply, the offending line, the I/O error).
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The C library's text for [`Self::errno`], as `wg` prints it after
    /// `Unable to access interface: ` (e.g. "Invalid argument", "Unknown error -22").
    pub fn strerror(&self) -> String {
        let text = io::Error::from_raw_os_error(self.errno).to_string();
        // std formats an OS error as "<strerror text> (os error N)"; keep the text only.
        let suffix = format!(" (os error {})", self.errno);
        match text.strip_suffix(&suffix) {
            Some(message) => message.to_owned(),
            None => text,
        }
    }
}

/// Just the `strerror` text, so `format!("Unable to modify interface: {e}")` prints what
/// `wg` prints. Use [`ClientError::detail`] for the specifics.
impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.strerror())
    }
}

impl std::error::Error for ClientError {}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(match e.kind() {
            io::ErrorKind::InvalidInput => errno::EINVAL, // e.g. a path too long for sun_path
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => errno::EPROTO,
            _ => errno::EIO,
        });
        ClientError::new(errno, e.to_string())
    }
}

impl From<UapiError> for ClientError {
    fn from(e: UapiError) -> Self {
        ClientError::new(e.errno, e.message)
    }
}

/// `wg` refuses names that would escape the socket directory.
fn check_name(ifname: &str) -> Result<(), ClientError> {
    if ifname.contains('/') {
        return Err(ClientError::new(
            errno::EINVAL,
            format!("interface name {ifname:?} contains '/'"),
        ));
    }
    Ok(())
}

/// Reads the interface's configuration (`get=1`).
pub fn get(ifname: &str) -> Result<DeviceInfo, ClientError> {
    check_name(ifname)?;
    get_at(&socket_path(ifname))
}

/// Applies `set` to the interface (`set=1`).
pub fn set(ifname: &str, set: &DeviceSet) -> Result<(), ClientError> {
    check_name(ifname)?;
    set_at(&socket_path(ifname), set)
}

/// Names of the userspace interfaces in [`SOCKET_DIR`], in directory order.
pub fn list_interfaces() -> Result<Vec<String>, ClientError> {
    list_interfaces_in(Path::new(SOCKET_DIR))
}

/// Connects as `wg` does: the path must exist (its `stat` errno otherwise) and be a socket
/// (EBADF otherwise); a refused connection means the daemon is gone, so the stale socket is
/// unlinked before the error is returned.
pub fn connect(path: &Path) -> Result<UnixStream, ClientError> {
    let metadata = fs::metadata(path)?;
    if !metadata.file_type().is_socket() {
        return Err(ClientError::new(
            errno::EBADF,
            format!("{} is not a socket", path.display()),
        ));
    }
    UnixStream::connect(path).map_err(|e| {
        if e.kind() == io::ErrorKind::ConnectionRefused {
            // Best effort: another client may have removed it already.
            let _ = fs::remove_file(path);
        }
        e.into()
    })
}

/// `get` against the socket at `path`.
///
/// The reply holds the private and preshared keys: every buffer it passes through here is
/// wiped (the returned [`DeviceInfo`] wipes its keys when dropped).
pub fn get_at(path: &Path) -> Result<DeviceInfo, ClientError> {
    let stream = connect(path)?;
    (&stream).write_all(b"get=1\n\n")?;
    let reply = read_until_empty_line(&mut &stream)?;
    let text = std::str::from_utf8(&reply)
        .map_err(|_| ClientError::new(errno::EPROTO, "the get reply is not valid UTF-8"))?;
    Ok(parse_get_response(text)?)
}

/// Reads up to and including the first empty line, or to the end of the stream. Reading to
/// the end alone would hang: wireguard-go keeps the connection open for another operation.
/// Whatever arrives after the empty line is dropped (the connection is not used again).
///
/// Read straight into wiped buffers, without a `BufReader` (whose buffer would be freed
/// unwiped): a chunk buffer, and a reply that grows by moving and wiping, never by a plain
/// reallocation.
fn read_until_empty_line(stream: &mut impl Read) -> io::Result<Zeroizing<Vec<u8>>> {
    let mut reply = Zeroizing::new(Vec::with_capacity(4096));
    let mut chunk = Zeroizing::new([0u8; 4096]);
    loop {
        let n = match stream.read(&mut chunk[..]) {
            Ok(0) => return Ok(reply),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // An empty line: a '\n' at the very start or right after another '\n'. Look from
        // the last byte already held, so that a "\n\n" split across reads is found.
        let from = reply.len().saturating_sub(1);
        extend_wiping(&mut reply, &chunk[..n]);
        let end = reply[from..]
            .iter()
            .enumerate()
            .find(|&(i, &b)| {
                let at = from + i;
                b == b'\n' && (at == 0 || reply[at - 1] == b'\n')
            })
            .map(|(i, _)| from + i + 1);
        if let Some(end) = end {
            // Truncating leaves the bytes after `end` in spare capacity, which the
            // Zeroizing wrapper wipes along with the rest.
            reply.truncate(end);
            return Ok(reply);
        }
    }
}

/// `set` against the socket at `path`. The message text (it holds the keys) is wiped after
/// sending.
pub fn set_at(path: &Path, set: &DeviceSet) -> Result<(), ClientError> {
    let stream = connect(path)?;
    let text = Zeroizing::new(emit_set(set));
    (&stream).write_all(text.as_bytes())?;
    let mut line = Vec::new();
    BufReader::new(&stream).read_until(b'\n', &mut line)?;
    set_reply_status(&line)
}

/// The `errno=N` line answering a `set`. As in `wg`, the error is `-N`: wireguard-go and
/// ferrowgd send negative numbers, so `errno=-22` means EINVAL.
fn set_reply_status(line: &[u8]) -> Result<(), ClientError> {
    let protocol_error = || {
        ClientError::new(
            errno::EPROTO,
            format!(
                "expected errno=N in reply to set, got {:?}",
                String::from_utf8_lossy(line)
            ),
        )
    };
    let text = std::str::from_utf8(line).map_err(|_| protocol_error())?;
    let value = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .strip_prefix("errno=")
        .ok_or_else(protocol_error)?;
    let (negative, digits) = match value.strip_prefix('-') {
        Some(digits) => (true, digits),
        None => (false, value),
    };
    let magnitude = parse_decimal(digits, i32::MAX as u64).ok_or_else(protocol_error)? as i32;
    let status = if negative { -magnitude } else { magnitude };
    if status == 0 {
        Ok(())
    } else {
        Err(ClientError::new(
            -status,
            format!("the daemon answered set with errno={status}"),
        ))
    }
}

/// Names of the userspace interfaces in `dir`, in directory order: every `NAME.sock` (NAME
/// not empty, valid UTF-8) that is a socket. As `wg` does, a socket refusing connections is
/// stale and is unlinked and skipped; one failing to connect for another reason (say,
/// EACCES for an unprivileged user) is still listed, so that the user sees the name and
/// then the real error when accessing it. A missing directory means no interfaces.
pub fn list_interfaces_in(dir: &Path) -> Result<Vec<String>, ClientError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(ifname) = file_name
            .to_str()
            .and_then(|name| name.strip_suffix(SOCKET_SUFFIX))
        else {
            continue;
        };
        if !ifname.is_empty() && is_live_socket(&entry.path()) {
            names.push(ifname.to_owned());
        }
    }
    Ok(names)
}

fn is_live_socket(path: &Path) -> bool {
    match fs::metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {}
        _ => return false,
    }
    match UnixStream::connect(path) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let _ = fs::remove_file(path);
            false
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_path_is_under_the_fixed_directory() {
        assert_eq!(
            socket_path("wg0"),
            PathBuf::from("/var/run/wireguard/wg0.sock")
        );
    }

    #[test]
    fn set_reply_sign_follows_wg() {
        assert_eq!(set_reply_status(b"errno=0\n"), Ok(()));
        assert_eq!(set_reply_status(b"errno=-22\n").unwrap_err().errno(), 22);
        // boringtun's positive value: wg reports "Unknown error -22".
        assert_eq!(set_reply_status(b"errno=22\n").unwrap_err().errno(), -22);
        for bad in [
            &b""[..],
            b"\n",
            b"errno=\n",
            b"errno=x\n",
            b"foo=0\n",
            b"errno=--1\n",
        ] {
            assert_eq!(set_reply_status(bad).unwrap_err().errno(), errno::EPROTO);
        }
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn strerror_matches_glibc_text_wg_prints() {
        assert_eq!(ClientError::new(22, "").to_string(), "Invalid argument");
        assert_eq!(ClientError::new(71, "").to_string(), "Protocol error");
        assert_eq!(ClientError::new(5, "").to_string(), "Input/output error");
        assert_eq!(ClientError::new(-22, "").to_string(), "Unknown error -22");
    }

    /// A reader that hands out at most `step` bytes per read.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    #[test]
    fn the_get_reply_ends_at_its_first_empty_line_across_reads() {
        let big = format!("{}errno=0\n\n", "listen_port=1\n".repeat(1000));
        for (data, expected) in [
            ("a=1\nerrno=0\n\nafter\n\n", "a=1\nerrno=0\n\n"),
            ("\nrest", "\n"),
            ("a=1\nerrno=0\n", "a=1\nerrno=0\n"), // the end of the stream
            ("", ""),
            (big.as_str(), big.as_str()),
        ] {
            for step in [1, 2, 3, 4096, usize::MAX] {
                let mut reader = Trickle {
                    data: data.as_bytes(),
                    step,
                };
                let reply = read_until_empty_line(&mut reader).unwrap();
                assert_eq!(&reply[..], expected.as_bytes(), "{data:?} by {step}");
            }
        }
    }

    #[test]
    fn names_with_a_slash_are_refused() {
        assert_eq!(get("../x").unwrap_err().errno(), errno::EINVAL);
    }
}
