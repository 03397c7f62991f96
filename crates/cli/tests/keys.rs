//! genkey / genpsk / pubkey, checked against the reference `wg` (see common::reference_wg).

mod common;

use common::*;
use ferrowg_proto::keys::decode_base64_key;
use std::fs::{File, OpenOptions, Permissions};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const KEY_ROUNDS: usize = 200;

fn key_line(out: &Outcome, what: &str) -> String {
    assert_eq!(out.code, Some(0), "{what}: {out:?}");
    assert!(out.stderr.is_empty(), "{what}: {out:?}");
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn is_clamped(key: &[u8; 32]) -> bool {
    key[0] & 0b111 == 0 && key[31] & 0x80 == 0 && key[31] & 0x40 != 0
}

#[test]
fn document_vector() {
    let out = ferrowg(&["pubkey"], format!("{DOC_PRIVATE}\n").as_bytes());
    assert_eq!(key_line(&out, "pubkey"), format!("{DOC_PUBLIC}\n"));
}

#[test]
fn genkey_prints_a_clamped_base64_key() {
    let first = key_line(&ferrowg(&["genkey"], b""), "genkey");
    let second = key_line(&ferrowg(&["genkey"], b""), "genkey");
    for line in [&first, &second] {
        assert_eq!(line.len(), 45, "{line:?}");
        let text = line.strip_suffix('\n').expect("newline-terminated");
        let key = decode_base64_key(text).expect("valid canonical base64");
        assert!(is_clamped(&key), "{text} is not clamped");
    }
    assert_ne!(first, second);
}

#[test]
fn genpsk_prints_unclamped_random_keys() {
    let lines: Vec<String> = (0..20)
        .map(|_| key_line(&ferrowg(&["genpsk"], b""), "genpsk"))
        .collect();
    for line in &lines {
        assert_eq!(line.len(), 45, "{line:?}");
        decode_base64_key(line.strip_suffix('\n').unwrap()).expect("valid canonical base64");
    }
    assert_ne!(lines[0], lines[1]);
    // A random key happens to look clamped with probability 1/32; twenty in a row would mean
    // genpsk clamps.
    assert!(lines
        .iter()
        .any(|l| !is_clamped(&decode_base64_key(l.trim_end()).unwrap())));
}

#[test]
fn pubkey_of_our_keys_matches_wg() {
    let Some(wg) = reference_wg() else { return };
    for _ in 0..KEY_ROUNDS {
        let private = key_line(&ferrowg(&["genkey"], b""), "ferrowg genkey");
        let ours = key_line(&ferrowg(&["pubkey"], private.as_bytes()), "ferrowg pubkey");
        let theirs = key_line(
            &run(&wg, None, &["pubkey"], private.as_bytes()),
            "wg pubkey",
        );
        assert_eq!(ours, theirs, "public key of {private:?}");
    }
}

#[test]
fn pubkey_of_wg_keys_matches_wg() {
    let Some(wg) = reference_wg() else { return };
    for _ in 0..KEY_ROUNDS {
        let private = key_line(&run(&wg, None, &["genkey"], b""), "wg genkey");
        let ours = key_line(&ferrowg(&["pubkey"], private.as_bytes()), "ferrowg pubkey");
        let theirs = key_line(
            &run(&wg, None, &["pubkey"], private.as_bytes()),
            "wg pubkey",
        );
        assert_eq!(ours, theirs, "public key of {private:?}");
    }
}

#[test]
fn pubkey_input_rules_match_wg() {
    let Some(wg) = reference_wg() else { return };
    let key = DOC_PRIVATE;
    let with = |tail: &[u8]| [key.as_bytes(), tail].concat();
    let mut spaces_then_garbage = with(&vec![b' '; 100_000]);
    spaces_then_garbage.push(b'x');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty input", b"".to_vec()),
        ("43 characters", key.as_bytes()[..43].to_vec()),
        (
            "43 characters and a newline",
            [&key.as_bytes()[..43], b"\n"].concat(),
        ),
        (
            "44 characters of invalid base64",
            [&[b'!'; 43][..], b"="].concat(),
        ),
        ("44 base64 characters without '='", vec![b'A'; 44]),
        ("non-UTF-8 bytes", [&[0xff; 43][..], b"="].concat()),
        (
            "non-canonical last character",
            b"cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGp=".to_vec(),
        ),
        ("valid key", with(b"")),
        ("valid key + newline", with(b"\n")),
        ("valid key + trailing garbage", with(b"garbage")),
        ("valid key + extra '='", with(b"=")),
        ("valid key + blank lines, spaces, tab", with(b"\n\n  \t")),
        ("valid key + \\v \\f \\r", with(b"\x0b\x0c\r")),
        ("valid key + NUL bytes", with(b"\0\0\0\n\0")),
        ("valid key + NUL then garbage", with(b"\0x")),
        ("valid key + non-ASCII byte", with(b"\xa0")),
        ("valid key + 100000 spaces", with(&vec![b' '; 100_000])),
        ("valid key + 100000 spaces + garbage", spaces_then_garbage),
        (
            "invalid key + trailing garbage",
            b"cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGp=x".to_vec(),
        ),
        (
            "unclamped key",
            b"/ADtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LG8=\n".to_vec(),
        ),
    ];
    for (what, input) in &cases {
        eprintln!("case: {what}");
        assert_same_as_wg(&wg, &["pubkey"], input);
    }
}

#[test]
fn extra_arguments_match_wg() {
    let Some(wg) = reference_wg() else { return };
    for sub in ["genkey", "genpsk", "pubkey"] {
        for extra in [&["x"][..], &["--help"], &["-h"], &["a", "b"], &[""]] {
            let args: Vec<&str> = [&[sub][..], extra].concat();
            let out = assert_same_as_wg(&wg, &args, DOC_PRIVATE.as_bytes());
            assert_eq!(out.code, Some(1));
            assert_eq!(out.stderr, format!("Usage: {ARGV0} {sub}\n").into_bytes());
        }
    }
}

fn file_with_mode(mode: u32) -> (std::path::PathBuf, File) {
    let path = scratch_path(&format!("stdout-{mode:o}"));
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .unwrap();
    // Set explicitly: the mode given to open() would be filtered through the umask.
    file.set_permissions(Permissions::from_mode(mode)).unwrap();
    (path, file)
}

/// Runs `program sub` with stdout going to a new file of `mode`; returns stderr, exit code and
/// what landed in the file.
fn run_to_file_of_mode(program: &Path, sub: &str, mode: u32) -> (Vec<u8>, Option<i32>, Vec<u8>) {
    let (path, file) = file_with_mode(mode);
    let (stderr, code) = run_into_file(program, &[sub], DOC_PRIVATE.as_bytes(), file);
    let written = std::fs::read(&path).unwrap();
    std::fs::remove_file(&path).unwrap();
    (stderr, code, written)
}

#[test]
fn world_accessible_warning_matches_wg() {
    const WARNING: &[u8] =
        b"Warning: writing to world accessible file.\nConsider setting the umask to 077 and trying again.\n";
    let wg = reference_wg();
    for sub in ["genkey", "genpsk", "pubkey"] {
        for mode in [0o600, 0o640, 0o660, 0o644, 0o604, 0o602, 0o601, 0o666] {
            let (stderr, code, written) = run_to_file_of_mode(Path::new(FERROWG), sub, mode);
            let context = format!("ferrowg {sub} > file of mode {mode:o}");
            // A public key is not secret: only genkey/genpsk warn.
            let warns = sub != "pubkey" && mode & 0o007 != 0;
            assert_eq!(
                String::from_utf8_lossy(&stderr),
                String::from_utf8_lossy(if warns { WARNING } else { b"" }),
                "{context}"
            );
            assert_eq!(code, Some(0), "{context}");
            assert_eq!(
                written.len(),
                45,
                "{context}: the key is written regardless"
            );

            if let Some(wg) = &wg {
                let (wg_stderr, wg_code, wg_written) = run_to_file_of_mode(wg, sub, mode);
                assert_eq!(
                    String::from_utf8_lossy(&stderr),
                    String::from_utf8_lossy(&wg_stderr),
                    "{context}, compared with wg"
                );
                assert_eq!(code, wg_code, "{context}, compared with wg");
                assert_eq!(wg_written.len(), 45, "{context}, compared with wg");
            }
        }
    }
}

#[test]
fn no_warning_for_non_regular_stdout() {
    for sub in ["genkey", "genpsk"] {
        let dev_null = OpenOptions::new().write(true).open("/dev/null").unwrap();
        let (stderr, code) = run_into_file(Path::new(FERROWG), &[sub], b"", dev_null);
        assert_eq!(code, Some(0));
        assert!(stderr.is_empty(), "{}", String::from_utf8_lossy(&stderr));
    }
}
