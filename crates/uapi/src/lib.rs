//! The WireGuard cross-platform userspace configuration protocol ("UAPI", PROTOCOL.md §7):
//! one typed model, one parser and one emitter for each message, used by the daemon's
//! server (like wireguard-go) and by the `ferrowg` tool's client (like `wg`).
//!
//! | Message | Server side | Client side |
//! |---|---|---|
//! | `get=1` / `set=1` request | [`read_request`] → [`Request`] | [`emit_set`] (and `get=1\n\n`) |
//! | `set` reply | [`write_errno`] | [`client::set`] reads it |
//! | `get` reply | [`write_get_response`] | [`parse_get_response`] |
//!
//! # Atomic `set`
//! [`read_request`] validates a whole `set` before returning it, so a daemon that applies
//! only `Ok(Some(Request::Set(..)))` never applies part of an invalid message. This differs
//! on purpose from wireguard-go and the kernel, which apply lines up to the bad one.
//!
//! # Errors and errno signs
//! [`UapiError::errno`] is positive. A server replies with [`UapiError::wire_errno`]
//! (negated, as wireguard-go does, because `wg` only understands negative values).
//!
//! # A server loop
//! ```
//! use ferrowg_uapi::{read_request, write_errno, write_get_response, DeviceInfo, Recovery, Request};
//! use std::io::{BufReader, Cursor};
//!
//! let input = b"set=1\nlisten_port=51820\n\nget=1\n\n";
//! let mut reader = BufReader::new(Cursor::new(&input[..]));
//! let mut output = Vec::new();
//! loop {
//!     match read_request(&mut reader) {
//!         Ok(None) => break,
//!         Ok(Some(Request::Get)) => write_get_response(&mut output, &DeviceInfo::default()).unwrap(),
//!         Ok(Some(Request::Set(set))) => {
//!             // apply `set`; on failure reply with that error's negated errno instead
//!             assert_eq!(set.listen_port, Some(51820));
//!             write_errno(&mut output, 0).unwrap();
//!         }
//!         Err(e) => {
//!             if e.recovery != Recovery::Close {
//!                 let _ = write_errno(&mut output, e.wire_errno());
//!             }
//!             if e.recovery != Recovery::Continue {
//!                 break;
//!             }
//!         }
//!     }
//! }
//! assert_eq!(output, b"errno=0\n\nerrno=0\n\n");
//! ```

#![forbid(unsafe_code)]

pub mod client;
mod error;
mod get;
mod model;
mod request;
mod set;
mod value;

pub use error::{errno, Recovery, UapiError};
pub use get::{emit_get_response, parse_get_response, write_errno, write_get_response};
pub use model::{AllowedIpChange, DeviceInfo, DeviceSet, Key, PeerInfo, PeerSet, SecretKey};
pub use request::{parse_set, read_request, Request, MAX_LINE_LEN};
pub use set::emit_set;
pub use value::{extend_wiping, SecretText};
