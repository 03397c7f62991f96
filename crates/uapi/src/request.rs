//! Server side framing: reading one operation (`get=1` or `set=1` …) from a stream.

use crate::error::{errno, may_hold_a_key, quote_unknown, Recovery, UapiError};
use crate::model::DeviceSet;
use crate::set::SetParser;
use crate::value::extend_wiping;
use std::io::{self, BufRead};
use zeroize::Zeroizing;

/// One operation read from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Get,
    Set(DeviceSet),
}

/// Longest line accepted, newline excluded. Valid lines are under 100 bytes (the longest is
/// `persistent_keepalive_interval=65535` or a key line, 75 bytes); the cap only keeps a
/// client that never sends `\n` from growing the daemon's memory without bound.
pub const MAX_LINE_LEN: usize = 4096;

enum Line {
    /// End of stream before any byte of the line.
    End,
    /// End of stream in the middle of a line.
    Partial,
    TooLong,
    /// A whole line, without its `\n`. It may hold a key in hex: wiped when dropped.
    Text(Zeroizing<Vec<u8>>),
}

/// Reads one line: up to and including `\n`, at most `MAX_LINE_LEN + 1` bytes. The bytes go
/// from the reader's buffer into one allocation sized for any valid line, which grows (for
/// an overlong line) only by moving to a bigger one and wiping the old: no copy of a key
/// line is left in freed memory. (The reader's own buffer is its owner's business.)
fn read_line<R: BufRead>(r: &mut R) -> io::Result<Line> {
    const LIMIT: usize = MAX_LINE_LEN + 1; // room for the '\n' of a line of maximal length
    let mut buf = Zeroizing::new(Vec::with_capacity(128));
    let mut ended = false;
    loop {
        let available = match r.fill_buf() {
            Ok(available) => available,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            break;
        }
        let room = &available[..available.len().min(LIMIT - buf.len())];
        let (chunk, found) = match room.iter().position(|&b| b == b'\n') {
            Some(i) => (&room[..=i], true),
            None => (room, false),
        };
        extend_wiping(&mut buf, chunk);
        let used = chunk.len();
        r.consume(used);
        if found {
            ended = true;
            break;
        }
        if buf.len() >= LIMIT {
            break;
        }
    }
    if buf.is_empty() {
        return Ok(Line::End);
    }
    if ended {
        buf.pop();
        Ok(Line::Text(buf))
    } else if buf.len() > MAX_LINE_LEN {
        Ok(Line::TooLong)
    } else {
        Ok(Line::Partial)
    }
}

fn io_failure(e: io::Error) -> UapiError {
    UapiError::new(errno::EIO, None, format!("reading the request failed: {e}"))
        .with_recovery(Recovery::Close)
}

/// Reads one operation from `r`.
///
/// * `Ok(None)`: the stream ended cleanly before an operation (the client is done; a
///   connection may carry several operations, one after another, as wireguard-go allows).
/// * `Ok(Some(Request::Get))` after `get=1\n\n`.
/// * `Ok(Some(Request::Set(..)))` after `set=1\n`, valid lines, and an empty line.
/// * `Err(e)`: reply `errno=e.wire_errno()` unless `e.recovery` is [`Recovery::Close`],
///   then keep reading only if it is [`Recovery::Continue`].
///
/// A refused `set` is still read to its empty line, so the stream stays in step and the
/// error reported is the first bad line's; nothing of it is returned, so nothing of it can
/// be applied. (wireguard-go applies the lines before the bad one; see the crate docs.)
///
/// A `set` cut off by the end of the stream is refused (EPROTO), even though wireguard-go
/// would have applied its lines: a truncated message is more likely a dead client than an
/// intent.
pub fn read_request<R: BufRead>(r: &mut R) -> Result<Option<Request>, UapiError> {
    let operation = match read_line(r).map_err(io_failure)? {
        Line::End => return Ok(None),
        Line::Partial => {
            return Err(
                UapiError::protocol(None, "the stream ended inside the operation line")
                    .with_recovery(Recovery::Close),
            )
        }
        Line::TooLong => {
            return Err(UapiError::protocol(None, "the operation line is too long")
                .with_recovery(Recovery::Close))
        }
        Line::Text(line) => line,
    };
    match operation.as_slice() {
        b"get=1" => read_get_terminator(r).map(|()| Some(Request::Get)),
        b"set=1" => read_set_body(r).map(|set| Some(Request::Set(set))),
        other => {
            let text = Zeroizing::new(String::from_utf8_lossy(other).into_owned());
            let key = text
                .split_once('=')
                .map(|(key, _)| key)
                .filter(|key| !may_hold_a_key(key));
            // wireguard-go closes the connection without a word here; so should we.
            Err(UapiError::protocol(
                key,
                format!(
                    "invalid operation line {}: expected get=1 or set=1",
                    quote_unknown(&text)
                ),
            )
            .with_recovery(Recovery::Close))
        }
    }
}

/// `get=1` must be followed by an empty line and nothing else.
fn read_get_terminator<R: BufRead>(r: &mut R) -> Result<(), UapiError> {
    let trailing = |what: &str| {
        UapiError::invalid(
            "get",
            format!("get=1 must be followed by an empty line, got {what}"),
        )
    };
    match read_line(r).map_err(io_failure)? {
        Line::Text(line) if line.is_empty() => Ok(()),
        // The line was consumed whole, but a client that sends this is not speaking the
        // protocol; wireguard-go's stream would be out of step here, so do not go on.
        Line::Text(line) => Err(trailing(&quote_unknown(&String::from_utf8_lossy(&line)))
            .with_recovery(Recovery::ReplyAndClose)),
        Line::TooLong => Err(trailing("an overlong line").with_recovery(Recovery::ReplyAndClose)),
        Line::Partial => {
            Err(trailing("an unterminated line").with_recovery(Recovery::ReplyAndClose))
        }
        Line::End => Err(UapiError::protocol(
            Some("get"),
            "the stream ended before the empty line after get=1",
        )
        .with_recovery(Recovery::Close)),
    }
}

fn read_set_body<R: BufRead>(r: &mut R) -> Result<DeviceSet, UapiError> {
    let mut parser = SetParser::default();
    let mut first_error: Option<UapiError> = None;
    loop {
        let line = match read_line(r).map_err(io_failure)? {
            Line::Text(line) => line,
            Line::TooLong => {
                let e = first_error.unwrap_or_else(|| {
                    UapiError::protocol(
                        None,
                        format!("a set line is longer than {MAX_LINE_LEN} bytes"),
                    )
                });
                return Err(e.with_recovery(Recovery::ReplyAndClose));
            }
            Line::End | Line::Partial => {
                let e = first_error.unwrap_or_else(|| {
                    UapiError::protocol(None, "the stream ended before the empty line ending set")
                });
                return Err(e.with_recovery(Recovery::ReplyAndClose));
            }
        };
        if line.is_empty() {
            break;
        }
        // After the first error the rest is only read, to find the end of the message.
        if first_error.is_none() {
            if let Err(e) = parser.line(&line) {
                first_error = Some(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(parser.finish()),
    }
}

/// Parses one complete `set` message (from `set=1\n` to its empty line, nothing after), as
/// [`crate::emit_set`] produces it. For configuration held as text, and for tests.
pub fn parse_set(text: &str) -> Result<DeviceSet, UapiError> {
    let mut cursor = io::Cursor::new(text.as_bytes());
    let set = match read_request(&mut cursor)? {
        Some(Request::Set(set)) => set,
        Some(Request::Get) => {
            return Err(UapiError::protocol(
                None,
                "expected a set operation, got get=1",
            ))
        }
        None => return Err(UapiError::protocol(None, "empty text: expected set=1")),
    };
    if cursor.position() != text.len() as u64 {
        return Err(UapiError::protocol(
            None,
            "text follows the empty line that ends the set",
        ));
    }
    Ok(set)
}
