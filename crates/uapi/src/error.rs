//! The one error type of the text protocol, shared by the server side (a refused `set`, a
//! malformed operation) and the client side (a refused or malformed `get` reply).

use std::fmt;

/// Linux errno numbers the protocol uses. They are fixed by the protocol (XPLAT: "the
/// corresponding integer from errno.h", with Linux numbering on every platform, as
/// wireguard-go does), not by the host, so they are constants rather than `libc` lookups.
pub mod errno {
    /// Input/output error: reading or writing the socket failed.
    pub const EIO: i32 = 5;
    /// Bad file descriptor: `wg` uses it for a socket path that is not a socket.
    pub const EBADF: i32 = 9;
    /// Invalid argument: a bad value, an unknown key, a key in the wrong place.
    pub const EINVAL: i32 = 22;
    /// Protocol error: a line that cannot be parsed at all, a truncated message.
    pub const EPROTO: i32 = 71;
    /// Address in use: wireguard-go's answer when a listen port or fwmark can't be applied.
    pub const EADDRINUSE: i32 = 98;
}

/// What a server should do with its connection after [`crate::read_request`] failed.
///
/// wireguard-go keeps serving a connection after a refused `set` (the message was read to
/// its end), but closes it without a reply on an unknown operation line, and a truncated
/// message leaves nothing sensible to read next. Only the reader knows which case it hit,
/// so it says so here instead of leaving the server to guess from the errno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// The whole operation was consumed: reply `errno=` and read the next operation.
    #[default]
    Continue,
    /// Reply `errno=` (best effort), then close: the stream position is unknown or the
    /// peer has stopped sending.
    ReplyAndClose,
    /// Close without replying: not a protocol exchange (unknown operation line, I/O failure,
    /// end of stream inside the operation line), as wireguard-go does.
    Close,
}

/// A protocol-level failure, with the errno the protocol carries for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UapiError {
    /// Positive errno number ([`errno::EINVAL`], [`errno::EPROTO`], [`errno::EIO`], …).
    pub errno: i32,
    /// The key of the offending line, when there is one.
    pub key: Option<String>,
    /// Human-readable reason naming the key and the offending value (secret values are
    /// described, not echoed).
    pub message: String,
    /// Server side only: how the connection may continue (see [`Recovery`]). Errors made
    /// on the client side leave it at the default.
    pub recovery: Recovery,
}

impl UapiError {
    pub fn new(errno: i32, key: Option<&str>, message: impl Into<String>) -> Self {
        UapiError {
            errno,
            key: key.map(str::to_owned),
            message: message.into(),
            recovery: Recovery::Continue,
        }
    }

    /// EINVAL about `key`.
    pub fn invalid(key: &str, message: impl Into<String>) -> Self {
        Self::new(errno::EINVAL, Some(key), message)
    }

    /// EPROTO, optionally about a key.
    pub fn protocol(key: Option<&str>, message: impl Into<String>) -> Self {
        Self::new(errno::EPROTO, key, message)
    }

    pub(crate) fn with_recovery(mut self, recovery: Recovery) -> Self {
        self.recovery = recovery;
        self
    }

    /// The number a server writes in its `errno=` reply: the errno **negated**, as
    /// wireguard-go writes it. `wg` turns `errno=-22` into "Invalid argument" but prints a
    /// positive value as "Unknown error -22" (PROTOCOL.md §7.3).
    pub fn wire_errno(&self) -> i32 {
        -self.errno
    }
}

impl fmt::Display for UapiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The message already names the key; the errno is appended for logs, where the
        // number is what one greps for.
        write!(f, "{} (errno {})", self.message, self.errno)
    }
}

impl std::error::Error for UapiError {}

/// Quotes an untrusted value for an error message: escaped (no control characters reach a
/// log) and cut short (a line may be kilobytes long).
pub(crate) fn quote(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut cut: String = value.chars().take(MAX_CHARS).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

/// True if `text` is as long as a key in hex or base64 (43 characters or more: a base64 key
/// split at its final `=` leaves 43). Every key name the protocol knows is far shorter.
pub(crate) fn may_hold_a_key(text: &str) -> bool {
    text.len() >= 43
}

/// Quotes untrusted text that may be a secret sent in the wrong place (an unknown key's
/// name or value, a line that is not `key=value`): text that [`may_hold_a_key`] is
/// described by its length instead.
pub(crate) fn quote_unknown(value: &str) -> String {
    if may_hold_a_key(value) {
        format!("<{} characters, not shown>", value.len())
    } else {
        quote(value)
    }
}
