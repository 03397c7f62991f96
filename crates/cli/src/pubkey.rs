//! `pubkey`: private key (base64) on stdin → public key (base64) + newline on stdout.
//!
//! Input rules follow `wg` exactly: the first 44 bytes are the key; after them only whitespace
//! and NUL bytes may appear (so `echo`'s newline or a key file padded with NULs is fine). The
//! trailing bytes are checked before the key itself, so garbage after an invalid key is reported
//! as trailing characters, as `wg` reports it.

use crate::stdio::{print_bare_usage, print_out, print_prog_err, raw_stdin};
use ferrowg_proto::keys::{decode_base64_key, KeyFormatError, PrivateKey, BASE64_KEY_LEN};
use std::ffi::{OsStr, OsString};
use std::io::{ErrorKind, Read};
use std::process::ExitCode;
use zeroize::{Zeroize, Zeroizing};

const TRAILING_MESSAGE: &str = "Trailing characters found after key";

pub fn pubkey(prog: &OsStr, args: &[OsString]) -> ExitCode {
    if args.len() != 1 {
        print_bare_usage(prog, &args[0]);
        return ExitCode::FAILURE;
    }

    let mut input = match raw_stdin() {
        Ok(file) => file,
        Err(_) => return fail(prog, &KeyFormatError.to_string()),
    };

    let mut text = Zeroizing::new([0u8; BASE64_KEY_LEN]);
    if input.read_exact(&mut text[..]).is_err() {
        return fail(prog, &KeyFormatError.to_string());
    }
    if !only_blank_until_eof(&mut input) {
        return fail(prog, TRAILING_MESSAGE);
    }

    let decoded = std::str::from_utf8(&text[..])
        .map_err(|_| KeyFormatError)
        .and_then(decode_base64_key);
    let mut raw = match decoded {
        Ok(raw) => raw,
        Err(err) => return fail(prog, &err.to_string()),
    };
    let private = PrivateKey::from_bytes(raw);
    raw.zeroize();

    let mut line = private.public_key().to_base64().into_bytes();
    line.push(b'\n');
    print_out(&line);
    ExitCode::SUCCESS
}

fn fail(prog: &OsStr, message: &str) -> ExitCode {
    print_prog_err(prog, message);
    ExitCode::FAILURE
}

/// `wg`'s notion of space (C `isspace` in the "C" locale) plus NUL, which key files padded
/// to a fixed size may contain.
fn is_blank(byte: u8) -> bool {
    matches!(byte, 0 | b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Reads the rest of `input` in small chunks and stops at the first non-blank byte, so an
/// endless or huge stream is never held in memory. A read error counts as end of input, as it
/// does for `wg` (stdio reports both as EOF).
fn only_blank_until_eof(input: &mut impl Read) -> bool {
    let mut chunk = [0u8; 512];
    loop {
        match input.read(&mut chunk) {
            Ok(0) => return true,
            Ok(n) => {
                if !chunk[..n].iter().all(|&b| is_blank(b)) {
                    return false;
                }
            }
            Err(err) if err.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_bytes_are_c_locale_space_and_nul() {
        let blank: Vec<u8> = (0..=255u8).filter(|&b| is_blank(b)).collect();
        assert_eq!(blank, b"\0\t\n\x0b\x0c\r ");
    }

    #[test]
    fn trailing_scan_stops_at_first_non_blank() {
        assert!(only_blank_until_eof(&mut &b""[..]));
        assert!(only_blank_until_eof(&mut &b"\n\n  \t\0\0"[..]));
        assert!(!only_blank_until_eof(&mut &b"\n x"[..]));
        let mut long = vec![b' '; 10_000];
        long.push(b'=');
        assert!(!only_blank_until_eof(&mut &long[..]));
    }
}
