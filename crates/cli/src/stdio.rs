//! Standard streams the way `wg` uses them.
//!
//! `wg` writes through C stdio and never checks the result, so a full disk or a closed pipe does
//! not change its exit status; these helpers deliberately discard write errors to match.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;

pub fn print_out(bytes: &[u8]) {
    let mut out = io::stdout().lock();
    let _ = out.write_all(bytes);
    let _ = out.flush();
}

pub fn print_err(bytes: &[u8]) {
    let _ = io::stderr().lock().write_all(bytes);
}

/// `PROG: MESSAGE` + newline on stderr.
pub fn print_prog_err(prog: &OsStr, message: &str) {
    let mut line = prog.as_bytes().to_vec();
    line.extend_from_slice(b": ");
    line.extend_from_slice(message.as_bytes());
    line.push(b'\n');
    print_err(&line);
}

/// `Usage: PROG SUBCOMMAND` + newline on stderr, for subcommands that take no arguments.
pub fn print_bare_usage(prog: &OsStr, subcommand: &OsStr) {
    print_usage(prog, subcommand, "");
}

/// `Usage: PROG SUBCOMMAND ARGS` + newline on stderr (`args` without a leading space; empty
/// for none).
pub fn print_usage(prog: &OsStr, subcommand: &OsStr, args: &str) {
    let mut line = b"Usage: ".to_vec();
    line.extend_from_slice(prog.as_bytes());
    line.push(b' ');
    line.extend_from_slice(subcommand.as_bytes());
    if !args.is_empty() {
        line.push(b' ');
        line.extend_from_slice(args.as_bytes());
    }
    line.push(b'\n');
    print_err(&line);
}

/// Standard input as an unbuffered file (a duplicate of fd 0), so that secrets read from it
/// land only in buffers the caller controls and wipes, not in std's internal `BufReader`.
pub fn raw_stdin() -> io::Result<File> {
    Ok(File::from(io::stdin().as_fd().try_clone_to_owned()?))
}

fn stdout_metadata() -> io::Result<Metadata> {
    // fstat through a duplicate descriptor: the duplicate is closed on drop, fd 1 stays open.
    File::from(io::stdout().as_fd().try_clone_to_owned()?).metadata()
}

/// True if stdout is a regular file that users outside its owner and group may access, i.e.
/// a freshly written secret would be readable by others (what `wg genkey` warns about).
pub fn stdout_is_world_accessible_file() -> bool {
    match stdout_metadata() {
        Ok(meta) => meta.file_type().is_file() && meta.permissions().mode() & 0o007 != 0,
        // As in `wg`: if the check itself fails, stay quiet.
        Err(_) => false,
    }
}
