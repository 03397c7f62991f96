//! The configuration file parser of the `ferrowg` tool (`crates/cli/src/config.rs`: the
//! parser behind setconf/addconf/syncconf and wg-quick's reading) on arbitrary bytes, in
//! both dialects, and wg-quick's resolver-free pass (`parse_quick`, for strip/down/save).
//!
//! The cli crate is a binary, not a library, so the file is compiled into this target with
//! `#[path]`; its one dependency on the rest of the binary, `crate::ipc::io_strerror`, is
//! provided by the `ipc` module below. Nothing in the cli crate was changed for this.
//!
//! Endpoint values are resolved with `getaddrinfo`. So that the fuzzer neither sends DNS
//! queries nor sleeps between retries, `WG_ENDPOINT_RESOLUTION_RETRIES` is set to 0 and any
//! `Endpoint =` line whose host is not an IP literal has its host replaced by one before
//! parsing (the port, which is resolved first and locally, is kept). Everything else reaches
//! the parser unchanged.
//!
//! Whatever parses must turn into a `set` message that the UAPI parser accepts and reads
//! back unchanged (setconf's and addconf's messages), and every error must render. (Files
//! naming one peer twice are the exception, a known divergence: see below.)
#![no_main]

// rustfmt::skip: `cargo fmt` here must not reformat a file the cli crate owns.
#[allow(dead_code, clippy::all)]
#[rustfmt::skip]
#[path = "../../crates/cli/src/config.rs"]
mod config;

/// Stand-in for the cli's `ipc` module: the only item config.rs uses from it.
mod ipc {
    pub fn io_strerror(err: &std::io::Error) -> String {
        err.to_string()
    }
}

use config::{is_c_space, parse, parse_quick, Dialect};
use ferrowg_uapi::{emit_set, parse_set};
use libfuzzer_sys::fuzz_target;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Once;

static INIT: Once = Once::new();

/// The line as config.rs reads it: cut at NUL, then at `#`, whitespace removed.
fn stripped(raw: &[u8]) -> Vec<u8> {
    let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
    let before_comment = raw.split(|&b| b == b'#').next().unwrap_or_default();
    before_comment
        .iter()
        .copied()
        .filter(|&b| !is_c_space(b))
        .collect()
}

/// An `Endpoint=` line whose host would need a name lookup, rewritten with an IP literal host.
fn offline_line(raw: &[u8]) -> Option<Vec<u8>> {
    let line = stripped(raw);
    const KEY: &[u8] = b"endpoint=";
    if line.len() <= KEY.len() || !line[..KEY.len()].eq_ignore_ascii_case(KEY) {
        return None;
    }
    let value = String::from_utf8_lossy(&line[KEY.len()..]).into_owned();
    // The same split as parse_endpoint: [HOST]:PORT, or HOST:PORT at the last colon.
    let (host, port, bracketed) = match value.strip_prefix('[') {
        Some(inner) => {
            let close = inner.find(']')?;
            let port = inner[close + 1..].strip_prefix(':')?;
            (&inner[..close], port, true)
        }
        None => {
            let (host, port) = value.rsplit_once(':')?;
            (host, port, false)
        }
    };
    if port.is_empty() || host.parse::<IpAddr>().is_ok() {
        return None;
    }
    let host = if bracketed {
        "[2001:db8::1]"
    } else {
        "192.0.2.1"
    };
    Some(format!("Endpoint={host}:{port}").into_bytes())
}

fn offline(text: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    for (i, raw) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        match offline_line(raw) {
            Some(line) => out.extend_from_slice(&line),
            None => out.extend_from_slice(raw),
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    INIT.call_once(|| std::env::set_var("WG_ENDPOINT_RESOLUTION_RETRIES", "0"));
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let dialect = if mode & 1 == 0 {
        Dialect::Wg
    } else {
        Dialect::Quick
    };
    let text = offline(body);
    let mut notes = |_: &[u8]| {};
    // wg-quick's own pass (strip, down, save): it resolves nothing, so it sees the raw text.
    let quick_only = parse_quick(body);
    if let Ok((_, stripped)) = &quick_only {
        assert!(stripped.len() <= body.len() + body.split(|&b| b == b'\n').count());
    }
    let parsed = parse(&text, dialect, &mut notes);
    if let (Dialect::Quick, Ok(cfg), Ok((quick, _))) = (dialect, &parsed, &quick_only) {
        // Both read wg-quick's keys with the same rules.
        assert_eq!(
            &cfg.interface.quick, quick,
            "parse(Quick) and parse_quick disagree"
        );
    }
    match parsed {
        Ok(cfg) => {
            for whole in [true, false] {
                let set = cfg.device_set(whole);
                let uapi = emit_set(&set);
                let again = parse_set(&uapi).unwrap_or_else(|e| {
                    panic!("setconf/addconf text of a parsed file is refused: {e:?}\n{uapi}")
                });
                assert_eq!(again, set, "set changed across emit -> parse:\n{uapi}");
            }
            let _ = format!("{cfg:?}");
        }
        Err(e) => {
            let _ = e.wg_text();
            let _ = e.describe(Path::new("fuzz.conf"));
        }
    }
});
