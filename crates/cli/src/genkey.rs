//! `genkey` and `genpsk`: a fresh random key, base64 + newline on stdout.
//!
//! A private key is clamped before printing (as `wg genkey` does) so that reading it back from
//! any implementation shows the same text; a preshared key is plain random bytes.

use crate::stdio::{print_bare_usage, print_err, print_out, stdout_is_world_accessible_file};
use ferrowg_proto::constants::KEY_LEN;
use ferrowg_proto::keys::{PresharedKey, PrivateKey, BASE64_KEY_LEN};
use rand_core::{OsRng, RngCore};
use std::ffi::{OsStr, OsString};
use std::process::ExitCode;
use zeroize::Zeroizing;

const WORLD_ACCESSIBLE_WARNING: &[u8] =
    b"Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n";

#[derive(Clone, Copy)]
enum Kind {
    Private,
    Preshared,
}

pub fn genkey(prog: &OsStr, args: &[OsString]) -> ExitCode {
    generate(prog, args, Kind::Private)
}

pub fn genpsk(prog: &OsStr, args: &[OsString]) -> ExitCode {
    generate(prog, args, Kind::Preshared)
}

fn generate(prog: &OsStr, args: &[OsString], kind: Kind) -> ExitCode {
    if args.len() != 1 {
        print_bare_usage(prog, &args[0]);
        return ExitCode::FAILURE;
    }

    // The key goes out regardless: the user asked for it and may fix the permissions, but
    // should know that others could already read it.
    if stdout_is_world_accessible_file() {
        print_err(WORLD_ACCESSIBLE_WARNING);
    }

    let mut random = Zeroizing::new([0u8; KEY_LEN]);
    // try_fill_bytes rather than PrivateKey::generate: an entropy failure should be a message
    // and exit status 1 (as `wg` reports it), not a panic.
    if let Err(err) = OsRng.try_fill_bytes(&mut random[..]) {
        print_err(format!("getrandom: {err}\n").as_bytes());
        return ExitCode::FAILURE;
    }
    let text = Zeroizing::new(match kind {
        Kind::Private => PrivateKey::from_bytes(*random).to_base64(),
        Kind::Preshared => PresharedKey::from_bytes(*random).to_base64(),
    });

    // One write of key + newline, from a buffer that is wiped afterwards.
    let mut line = Zeroizing::new([b'\n'; BASE64_KEY_LEN + 1]);
    line[..BASE64_KEY_LEN].copy_from_slice(text.as_bytes());
    print_out(&line[..]);
    ExitCode::SUCCESS
}
