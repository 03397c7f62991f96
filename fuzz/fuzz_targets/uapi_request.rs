//! The UAPI text protocol on arbitrary bytes, from both ends:
//!
//! * the server's stream reader, `read_request`, driven the way the daemon drives it (several
//!   operations per connection, stopping where an error says to close);
//! * the client's `parse_get_response`.
//!
//! Whatever parses must survive emit -> parse unchanged (`emit_set`, `emit_get_response`), the
//! property crates/uapi/tests/roundtrip.rs checks for generated values, here for values
//! reached from hostile text. The first input byte chooses how the stream is chunked, so the
//! reader's line handling is exercised across short reads as well.
#![no_main]

use ferrowg_uapi::{
    emit_get_response, emit_set, parse_get_response, parse_set, read_request, Recovery, Request,
    MAX_LINE_LEN,
};
use libfuzzer_sys::fuzz_target;
use std::io::{BufReader, Read};

/// A reader that hands out at most `chunk` bytes per read.
struct Chunked<'a> {
    data: &'a [u8],
    chunk: usize,
}

impl Read for Chunked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.chunk.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let chunk = match mode % 4 {
        0 => usize::MAX,
        1 => 1,
        2 => 7,
        _ => 1 + mode as usize,
    };
    let capacity = if mode & 0x80 != 0 { 16 } else { 8192 };
    let mut reader = BufReader::with_capacity(capacity, Chunked { data: body, chunk });

    // The daemon's loop: an operation per iteration until the stream ends or must close.
    // Each iteration consumes at least one byte (or ends), so this terminates.
    for _ in 0..=body.len() {
        match read_request(&mut reader) {
            Ok(None) => break,
            Ok(Some(Request::Get)) => {}
            Ok(Some(Request::Set(set))) => {
                let text = emit_set(&set);
                let again = parse_set(&text)
                    .unwrap_or_else(|e| panic!("emitted set does not parse: {e:?}\n{text}"));
                assert_eq!(again, set, "set changed across emit -> parse:\n{text}");
            }
            Err(e) => {
                assert!(e.errno > 0, "errno must be positive: {e:?}");
                assert!(e.wire_errno() < 0);
                if e.recovery != Recovery::Continue {
                    break;
                }
            }
        }
    }

    // The client side: a get reply. Lines longer than any real one are fine here too.
    let text = String::from_utf8_lossy(body);
    if let Ok(info) = parse_get_response(&text) {
        let emitted = emit_get_response(&info);
        let again = parse_get_response(&emitted)
            .unwrap_or_else(|e| panic!("emitted get reply does not parse: {e:?}\n{emitted}"));
        assert_eq!(
            again, info,
            "get reply changed across emit -> parse:\n{emitted}"
        );
    }
    // And a set message given whole, as parse_set takes it (text after the end is refused).
    if body.len() <= 4 * MAX_LINE_LEN {
        if let Ok(set) = parse_set(&text) {
            assert_eq!(parse_set(&emit_set(&set)).ok(), Some(set));
        }
    }
});
