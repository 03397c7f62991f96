//! Top-level dispatch: version, help, usage, unknown subcommands — compared with `wg`.

mod common;

use common::*;
use std::path::Path;

const VERSION_LINE: &str = "ferrowg v0.1.0 - user-space WireGuard (wg-compatible)\n";
const OUR_SUBCOMMANDS: [&str; 9] = [
    "show", "showconf", "set", "setconf", "addconf", "syncconf", "genkey", "genpsk", "pubkey",
];

/// Our usage lists the `wg` subcommands that exist so far, verbatim and in `wg`'s order, then
/// ferrowg's own (`up`, `down`, …, none of them a `wg` name); every other line is verbatim
/// from `wg`'s usage.
fn assert_usage_is_wgs_restricted_to_ours(ours: &str, wgs: &str) {
    let ours: Vec<&str> = ours.lines().collect();
    let wgs: Vec<&str> = wgs.lines().collect();
    assert_eq!(ours[..3], wgs[..3], "header");
    assert_eq!(ours.last(), wgs.last(), "footer");
    let expected_rows: Vec<&str> = wgs[3..wgs.len() - 1]
        .iter()
        .copied()
        .filter(|row| {
            OUR_SUBCOMMANDS
                .iter()
                .any(|name| row.starts_with(&format!("  {name}: ")))
        })
        .collect();
    assert_eq!(
        expected_rows.len(),
        OUR_SUBCOMMANDS.len(),
        "wg lists all of ours"
    );
    let (wg_rows, own_rows) = ours[3..ours.len() - 1].split_at(expected_rows.len());
    assert_eq!(wg_rows, &expected_rows[..], "rows");
    for row in own_rows {
        let name = row.trim_start().split(':').next().unwrap();
        assert!(
            !wgs.iter().any(|w| w.starts_with(&format!("  {name}: "))),
            "{row:?}: a wg subcommand listed after ferrowg's own"
        );
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap()
}

#[test]
fn version_alone_prints_the_version_line() {
    for arg in ["-v", "--version", "version"] {
        let out = ferrowg(&[arg], b"");
        assert_eq!(text(&out.stdout), VERSION_LINE, "{arg}");
        assert!(out.stderr.is_empty(), "{arg}");
        assert_eq!(out.code, Some(0), "{arg}");
    }
}

#[test]
fn help_alone_prints_usage_on_stdout() {
    let wg = reference_wg();
    for arg in ["-h", "--help", "help"] {
        let ours = run(Path::new(FERROWG), Some(ARGV0), &[arg], b"");
        assert_eq!(ours.code, Some(0), "{arg}");
        assert!(ours.stderr.is_empty(), "{arg}");
        assert!(text(&ours.stdout).starts_with(&format!("Usage: {ARGV0} <cmd> [<args>]\n")));
        if let Some(wg) = &wg {
            let theirs = run(wg, Some(ARGV0), &[arg], b"");
            assert_eq!(theirs.code, Some(0));
            assert_usage_is_wgs_restricted_to_ours(text(&ours.stdout), text(&theirs.stdout));
        }
    }
}

#[test]
fn unknown_subcommand_is_reported_like_wg() {
    let wg = reference_wg();
    // version/help count only as the sole argument; `wg` treats them as unknown otherwise.
    for args in [
        &["bogus"][..],
        &["Genkey"],
        &["show-me", "x"],
        &[""],
        &["version", "x"],
        &["-h", "x"],
        &["help", "genkey"],
        &["--help", "pubkey"],
    ] {
        let ours = run(Path::new(FERROWG), Some(ARGV0), args, b"");
        assert_eq!(ours.code, Some(1), "{args:?}");
        assert!(ours.stdout.is_empty(), "{args:?}");
        let stderr = text(&ours.stderr);
        let (first, usage) = stderr.split_once('\n').unwrap();
        assert_eq!(
            first,
            format!("Invalid subcommand: `{}'", args[0]),
            "{args:?}"
        );
        if let Some(wg) = &wg {
            let theirs = run(wg, Some(ARGV0), args, b"");
            assert_eq!(theirs.code, Some(1), "{args:?}");
            assert!(theirs.stdout.is_empty(), "{args:?}");
            let (wg_first, wg_usage) = text(&theirs.stderr).split_once('\n').unwrap();
            assert_eq!(first, wg_first, "{args:?}");
            assert_usage_is_wgs_restricted_to_ours(usage, wg_usage);
        }
    }
}

#[test]
fn program_name_is_argv0_as_invoked() {
    let out = ferrowg(&["genkey", "x"], b"");
    assert_eq!(text(&out.stderr), format!("Usage: {FERROWG} genkey\n"));
    let out = run(Path::new(FERROWG), Some("wg"), &["pubkey"], b"");
    assert_eq!(
        text(&out.stderr),
        "wg: Key is not the correct length or format\n"
    );
}
