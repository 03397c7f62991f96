//! `reresolve INTERFACE CONFIG_FILE`: re-resolves the `Endpoint` host names of a configuration
//! file for the peers whose latest handshake is older than 135 s (or never happened), and sets
//! only those peers' endpoints — what wireguard-tools' `contrib/reresolve-dns/reresolve-dns.sh`
//! does, for a peer whose dynamic-DNS name moved while the tunnel was quiet. Run it every 30 s
//! from `contrib/systemd/ferrowg-reresolve@.timer`.
//!
//! Like the script, the file is scanned for `[Peer]` sections and their `PublicKey` and
//! `Endpoint` lines only (a wg or wg-quick file both work); values are read with the one
//! config parser's functions ([`config::parse_key`], [`config::parse_endpoint`]), so names
//! resolve, and transient failures retry, exactly as in `setconf`. Unlike the script, a peer
//! no longer on the interface is not re-created (`update_only`), and a fresh peer's name is
//! not even looked up.

use crate::config::{self, parse_endpoint, parse_key};
use crate::ipc;
use crate::stdio::print_err;
use ferrowg_uapi::{DeviceSet, Key, PeerSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

/// Handshakes at most this old leave a peer alone (REKEY_AFTER_TIME + REKEY_TIMEOUT + a
/// margin, the script's constant): a working session means the endpoint is right.
const STALE_AFTER_S: u64 = 135;

/// One `[Peer]` of the file: its key and its `Endpoint` text, if any.
struct FilePeer {
    public_key: Vec<u8>,
    endpoint: Option<String>,
}

/// The script's scan: sections, `Key = Value` lines with comments and blanks removed.
fn scan(text: &[u8]) -> Vec<FilePeer> {
    let mut peers = Vec::new();
    let mut current: Option<FilePeer> = None;
    for raw in text.split(|&b| b == b'\n') {
        let before_comment = raw.split(|&b| b == b'#').next().unwrap_or_default();
        let line: Vec<u8> = before_comment
            .iter()
            .copied()
            .filter(|&b| !config::is_c_space(b))
            .collect();
        if line.first() == Some(&b'[') {
            peers.extend(current.take());
            if line.eq_ignore_ascii_case(b"[Peer]") {
                current = Some(FilePeer {
                    public_key: Vec::new(),
                    endpoint: None,
                });
            }
            continue;
        }
        let (Some(peer), Some(eq)) = (current.as_mut(), line.iter().position(|&b| b == b'='))
        else {
            continue;
        };
        let (key, value) = (&line[..eq], &line[eq + 1..]);
        if key.eq_ignore_ascii_case(b"PublicKey") {
            peer.public_key = value.to_vec();
        } else if key.eq_ignore_ascii_case(b"Endpoint") {
            peer.endpoint = Some(String::from_utf8_lossy(value).into_owned());
        }
    }
    peers.extend(current);
    peers
}

fn err_line(prog: &OsStr, msg: &str) {
    let mut text = prog.as_bytes().to_vec();
    text.extend_from_slice(format!(": {msg}\n").as_bytes());
    print_err(&text);
}

pub fn reresolve(prog: &OsStr, args: &[OsString]) -> ExitCode {
    if args.len() != 3 {
        crate::stdio::print_usage(prog, &args[0], "<interface> <configuration filename>");
        return ExitCode::FAILURE;
    }
    let (ifname, path) = (&args[1], &args[2]);
    // The file holds the private key too: wiped when dropped. (`fs::read` sizes its buffer
    // from the file's length, so it is not reallocated on the way.)
    let text = match std::fs::read(path) {
        Ok(t) => zeroize::Zeroizing::new(t),
        Err(e) => {
            err_line(
                prog,
                &format!(
                    "cannot read {}: {}",
                    path.to_string_lossy(),
                    ipc::io_strerror(&e)
                ),
            );
            return ExitCode::FAILURE;
        }
    };
    let info = match ipc::get(ifname) {
        Ok(i) => i,
        Err(e) => {
            err_line(
                prog,
                &format!(
                    "Unable to access interface {}: {}",
                    ifname.to_string_lossy(),
                    e.strerror()
                ),
            );
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut failed = false;
    let mut updates: Vec<PeerSet> = Vec::new();
    for peer in scan(&text) {
        let Some(endpoint) = peer.endpoint else {
            continue;
        };
        let key: Key = match parse_key(&peer.public_key) {
            Ok(k) => k,
            Err(e) => {
                err_line(prog, &String::from_utf8_lossy(&e.text));
                failed = true;
                continue;
            }
        };
        // Absent from the interface: nothing to update (the script skips it too).
        let Some(live) = info.peers.iter().find(|p| p.public_key == key) else {
            continue;
        };
        // 0 = never: stale. A handshake time in the future (clock stepped back) is fresh.
        if live.last_handshake_time_sec != 0
            && now.saturating_sub(live.last_handshake_time_sec) <= STALE_AFTER_S
        {
            continue;
        }
        let mut notes = |note: &[u8]| {
            let mut line = note.to_vec();
            line.push(b'\n');
            print_err(&line);
        };
        match parse_endpoint(&endpoint, &mut notes) {
            Ok(addr) => {
                if live.endpoint != Some(addr) {
                    let mut set = PeerSet::new(key);
                    set.update_only = true;
                    set.endpoint = Some(addr);
                    updates.push(set);
                }
            }
            Err(e) => {
                err_line(prog, &String::from_utf8_lossy(&e.text));
                failed = true;
            }
        }
    }
    if !updates.is_empty() {
        let request = DeviceSet {
            peers: updates,
            ..DeviceSet::default()
        };
        if let Err(e) = ipc::set(ifname, &request) {
            err_line(
                prog,
                &format!(
                    "Unable to modify interface {}: {}",
                    ifname.to_string_lossy(),
                    e.strerror()
                ),
            );
            return ExitCode::FAILURE;
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_peers_like_the_script() {
        let text = b"[Interface]\nPrivateKey = x\nEndpoint = ignored:1\n\n[Peer] # a\n\
            PublicKey = AAA=\n endpoint = host.example:51820 # dyn\n\
            [peer]\nPublicKey=BBB=\nAllowedIPs = 0.0.0.0/0\n";
        let peers = scan(text);
        assert_eq!(peers.len(), 2);
        assert_eq!(peers[0].public_key, b"AAA=");
        assert_eq!(peers[0].endpoint.as_deref(), Some("host.example:51820"));
        assert_eq!(peers[1].public_key, b"BBB=");
        assert_eq!(peers[1].endpoint, None);
    }
}
