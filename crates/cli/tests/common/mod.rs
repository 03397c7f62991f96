//! Shared by the integration tests: running `ferrowg` and the reference `wg` side by side.
#![allow(dead_code)] // each test file uses a different subset
pub mod netns;
pub mod relay;

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

pub const FERROWG: &str = env!("CARGO_BIN_EXE_ferrowg");

/// The argv[0] both tools are started with when their messages are compared. Messages embed
/// argv[0] verbatim, so starting both under the same odd name makes the texts directly
/// comparable, and would expose a tool that printed a hard-coded name instead.
pub const ARGV0: &str = "./test bin/PROG";

pub const DOC_PRIVATE: &str = "cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=";
pub const DOC_PUBLIC: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";

fn is_executable_file(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// The `wg` whose behaviour is the specification: `$FERROWG_WG`, else the newest one in
/// `$FERROWG_PEERS_DIR`, else `wg` on PATH. `None` means "skip"; under CI (`CI=true`, where
/// wireguard-tools is installed) a missing `wg` fails the test instead, so that comparisons
/// cannot silently stop running.
pub fn reference_wg() -> Option<PathBuf> {
    let found = find_wg();
    match &found {
        Some(wg) => eprintln!("reference wg: {}", wg.display()),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI=true but no reference `wg` found: install wireguard-tools or set FERROWG_WG")
        }
        None => eprintln!(
            "SKIPPED: no reference `wg` found (install wireguard-tools or set FERROWG_WG); \
             comparisons with wg did not run"
        ),
    }
    found
}

fn find_wg() -> Option<PathBuf> {
    if let Some(explicit) = std::env::var_os("FERROWG_WG").filter(|v| !v.is_empty()) {
        let path = PathBuf::from(explicit);
        assert!(
            is_executable_file(&path),
            "FERROWG_WG={} is not an executable file",
            path.display()
        );
        return Some(path);
    }
    if let Some(dir) = std::env::var_os("FERROWG_PEERS_DIR").filter(|v| !v.is_empty()) {
        let path = Path::new(&dir).join("wg");
        if is_executable_file(&path) {
            return Some(path);
        }
    }
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join("wg"))
        .find(|p| is_executable_file(p))
}

/// What a run produced, compared as a whole.
#[derive(PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub code: Option<i32>,
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outcome")
            .field("stdout", &String::from_utf8_lossy(&self.stdout))
            .field("stderr", &String::from_utf8_lossy(&self.stderr))
            .field("code", &self.code)
            .finish()
    }
}

/// Runs `program` with `args`, feeding `stdin` (from a thread, so a child that exits early or
/// reads slowly cannot deadlock the test). `argv0` overrides the name the child sees.
pub fn run(program: &Path, argv0: Option<&str>, args: &[&str], stdin: &[u8]) -> Outcome {
    let mut cmd = Command::new(program);
    if let Some(name) = argv0 {
        cmd.arg0(name);
    }
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    // A child that rejects its input early closes the pipe: EPIPE here is expected.
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    Outcome {
        stdout: out.stdout,
        stderr: out.stderr,
        code: out.status.code(),
    }
}

pub fn ferrowg(args: &[&str], stdin: &[u8]) -> Outcome {
    run(Path::new(FERROWG), None, args, stdin)
}

/// Runs both tools under the same argv[0] and asserts identical stdout, stderr and exit code.
pub fn assert_same_as_wg(wg: &Path, args: &[&str], stdin: &[u8]) -> Outcome {
    let ours = run(Path::new(FERROWG), Some(ARGV0), args, stdin);
    let theirs = run(wg, Some(ARGV0), args, stdin);
    assert_eq!(
        ours,
        theirs,
        "ferrowg (left) differs from {} (right) for args {args:?}, stdin {:?}",
        wg.display(),
        String::from_utf8_lossy(stdin)
    );
    ours
}

/// Runs `program args` with stdout redirected to `stdout_file`; returns (stderr, exit code).
pub fn run_into_file(
    program: &Path,
    args: &[&str],
    stdin: &[u8],
    stdout_file: File,
) -> (Vec<u8>, Option<i32>) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::from(stdout_file))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    let _ = pipe.write_all(stdin);
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (out.stderr, out.status.code())
}

/// A path in cargo's per-target scratch directory, unique within this test process.
pub fn scratch_path(label: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut name = OsString::from(format!("ferrowg-{}-{n}-", std::process::id()));
    name.push(label);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}
