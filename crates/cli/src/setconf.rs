//! `setconf`, `addconf` and `syncconf <interface> <file>`: apply a configuration file.
//!
//! * setconf replaces everything: the file becomes the whole configuration.
//! * addconf adds: only what the file names is sent, other peers stay.
//! * syncconf replaces everything too, but as a difference against the running
//!   configuration, so peers the file leaves unchanged keep their sessions: peers missing
//!   from the file are removed one by one instead of replacing all peers, and a preshared key
//!   or persistent keepalive that is running but absent from the file is explicitly cleared
//!   (PROTOCOL.md §8.6; `wg` since v1.0.20260223).

use crate::config::{self, Dialect};
use crate::ipc::{self, IFNAME_MAX};
use crate::stdio::print_err;
use ferrowg_uapi::{DeviceInfo, DeviceSet, PeerSet, SecretKey};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Set,
    Add,
    Sync,
}

pub fn setconf(prog: &OsStr, args: &[OsString]) -> ExitCode {
    run(prog, args, Mode::Set)
}

pub fn addconf(prog: &OsStr, args: &[OsString]) -> ExitCode {
    run(prog, args, Mode::Add)
}

pub fn syncconf(prog: &OsStr, args: &[OsString]) -> ExitCode {
    run(prog, args, Mode::Sync)
}

fn run(prog: &OsStr, args: &[OsString], mode: Mode) -> ExitCode {
    if args.len() != 3 {
        crate::stdio::print_usage(prog, &args[0], "<interface> <configuration filename>");
        return ExitCode::FAILURE;
    }
    let mut print_note = |note: &[u8]| {
        let mut line = note.to_vec();
        line.push(b'\n');
        print_err(&line);
    };
    let parsed = config::read_file(&args[2])
        .and_then(|text| config::parse(&text, Dialect::Wg, &mut print_note));
    let config = match parsed {
        Ok(config) => config,
        Err(e) => {
            print_err(&e.wg_text());
            return ExitCode::FAILURE;
        }
    };
    // `wg` keeps at most IFNAMSIZ - 1 bytes of the name.
    let name = OsStr::from_bytes(&args[1].as_bytes()[..args[1].len().min(IFNAME_MAX)]);

    let mut request = config.device_set(mode != Mode::Add);
    if mode == Mode::Sync && !request.peers.is_empty() {
        match ipc::get(name) {
            Ok(running) => sync_against(&mut request, &running),
            Err(e) => {
                print_err(
                    format!("Unable to retrieve current interface configuration: {e}\n").as_bytes(),
                );
                return ExitCode::FAILURE;
            }
        }
    }
    match ipc::set(name, &request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_err(format!("Unable to modify interface: {e}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

/// Turns a setconf request into the equivalent difference against `running` (only when both
/// have peers; otherwise replacing all peers disturbs nothing that would survive anyway).
///
/// Removals go first, in descending public-key order — the order `wg` produces, so that the
/// daemon sees the same message from either tool. Clearing a running preshared key or
/// keepalive applies to the first entry of the file for that key.
fn sync_against(request: &mut DeviceSet, running: &DeviceInfo) {
    if running.peers.is_empty() {
        return;
    }
    request.replace_peers = false;
    let mut removals: Vec<PeerSet> = Vec::new();
    for live in &running.peers {
        match request
            .peers
            .iter_mut()
            .find(|p| p.public_key == live.public_key)
        {
            Some(wanted) => {
                if live.preshared_key.is_some() && wanted.preshared_key.is_none() {
                    wanted.preshared_key = Some(SecretKey::zero());
                }
                if live.persistent_keepalive_interval != 0
                    && wanted.persistent_keepalive_interval.is_none()
                {
                    wanted.persistent_keepalive_interval = Some(0);
                }
            }
            None => {
                let mut gone = PeerSet::new(live.public_key);
                gone.remove = true;
                removals.push(gone);
            }
        }
    }
    removals.sort_by_key(|p| std::cmp::Reverse(p.public_key));
    removals.dedup_by(|a, b| a.public_key == b.public_key);
    removals.append(&mut request.peers);
    request.peers = removals;
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrowg_uapi::{emit_set, PeerInfo};

    #[test]
    fn sync_removes_in_descending_key_order_and_clears_what_the_file_lacks() {
        let mut running = DeviceInfo::default();
        let mut kept = PeerInfo::new([0xde; 32]);
        kept.preshared_key = Some(SecretKey::new([9; 32]));
        kept.persistent_keepalive_interval = 25;
        running.peers = vec![PeerInfo::new([0x7b; 32]), kept, PeerInfo::new([0xff; 32])];
        let mut request = DeviceSet {
            replace_peers: true,
            peers: vec![PeerSet::new([0xde; 32]), PeerSet::new([0xde; 32])],
            ..DeviceSet::default()
        };
        sync_against(&mut request, &running);
        assert!(!request.replace_peers);
        let keys: Vec<(u8, bool)> = request
            .peers
            .iter()
            .map(|p| (p.public_key[0], p.remove))
            .collect();
        assert_eq!(
            keys,
            [(0xff, true), (0x7b, true), (0xde, false), (0xde, false)]
        );
        assert_eq!(request.peers[2].preshared_key, Some(SecretKey::zero()));
        assert_eq!(request.peers[2].persistent_keepalive_interval, Some(0));
        assert_eq!(request.peers[3].preshared_key, None);
        let text = emit_set(&request);
        assert!(!text.contains("replace_peers"));
    }

    #[test]
    fn sync_keeps_replace_peers_when_nothing_runs() {
        let mut request = DeviceSet {
            replace_peers: true,
            peers: vec![PeerSet::new([1; 32])],
            ..DeviceSet::default()
        };
        sync_against(&mut request, &DeviceInfo::default());
        assert!(request.replace_peers);
    }
}
