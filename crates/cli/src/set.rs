//! `set <interface> …`: change the configuration from the command line, token by token, with
//! `wg`'s grammar and messages (PROTOCOL.md §8.4). Parsing stops at the first bad token and
//! nothing is sent, so a refused command leaves the interface as it was.

use crate::config::{
    is_c_space, parse_allowed_ips, parse_endpoint, parse_fwmark, parse_keepalive, parse_key,
    parse_port, read_key_file, ValueError,
};
use crate::ipc::{self, IFNAME_MAX};
use crate::stdio::print_err;
use ferrowg_uapi::{DeviceSet, PeerSet};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use zeroize::Zeroizing;

const GRAMMAR: &str = "<interface> [listen-port <port>] [fwmark <mark>] [private-key <file path>] [peer <base64 public key> [remove] [preshared-key <file path>] [endpoint <ip>:<port>] [persistent-keepalive <interval seconds>] [allowed-ips [+|-]<ip1>/<cidr1>[,[+|-]<ip2>/<cidr2>]...] ]...";

pub fn set(prog: &OsStr, args: &[OsString]) -> ExitCode {
    // `set -h` gets the usage only because it is too short: `set --help listen-port 1`
    // is an attempt to configure an interface named "--help", as it is for `wg`.
    if args.len() < 3 {
        crate::stdio::print_usage(prog, &args[0], GRAMMAR);
        return ExitCode::FAILURE;
    }
    let mut print_note = |note: &[u8]| {
        let mut line = note.to_vec();
        line.push(b'\n');
        print_err(&line);
    };
    let request = match parse_tokens(&args[2..], &mut print_note) {
        Ok(request) => request,
        Err(message) => {
            // `wg`'s message may quote a key file's text (an invalid key, but perhaps a near
            // miss of a real one): wipe it once printed.
            let message = Zeroizing::new(message);
            let mut line = Zeroizing::new(Vec::with_capacity(message.len() + 1));
            line.extend_from_slice(&message);
            line.push(b'\n');
            print_err(&line);
            return ExitCode::FAILURE;
        }
    };
    // `wg` keeps at most IFNAMSIZ - 1 bytes of the name for a set.
    let name = &args[1].as_bytes()[..args[1].len().min(IFNAME_MAX)];
    match ipc::set(OsStr::from_bytes(name), &request) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            print_err(format!("Unable to modify interface: {e}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

fn text(arg: &OsStr) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(arg.as_bytes())
}

/// The tokens after the interface name, as one `set` request; on failure `wg`'s message.
/// Device keywords are recognised only before the first `peer`; a keyword without its value
/// is an invalid argument, like any unknown token.
pub fn parse_tokens(
    tokens: &[OsString],
    notes: &mut dyn FnMut(&[u8]),
) -> Result<DeviceSet, Vec<u8>> {
    let mut request = DeviceSet::default();
    let mut i = 0;
    while i < tokens.len() {
        let token = tokens[i].as_bytes();
        let value = tokens.get(i + 1).map(OsString::as_os_str);
        let in_peer = !request.peers.is_empty();
        let fail = |e: ValueError| e.text;
        match (token, value) {
            (b"listen-port", Some(v)) if !in_peer => {
                request.listen_port = Some(parse_port(&text(v)).map_err(fail)?);
            }
            (b"fwmark", Some(v)) if !in_peer => {
                request.fwmark = Some(parse_fwmark(&text(v)).map_err(fail)?);
            }
            (b"private-key", Some(v)) if !in_peer => {
                request.private_key = Some(read_key_file(v).map_err(fail)?);
            }
            (b"peer", Some(v)) => {
                let key = parse_key(v.as_bytes()).map_err(fail)?;
                request.peers.push(PeerSet::new(key));
            }
            (b"remove", _) if in_peer => {
                current(&mut request).remove = true;
                i += 1;
                continue;
            }
            (b"endpoint", Some(v)) if in_peer => {
                let endpoint = parse_endpoint(&text(v), notes).map_err(fail)?;
                current(&mut request).endpoint = Some(endpoint);
            }
            (b"allowed-ips", Some(v)) if in_peer => {
                // `wg` drops every whitespace character from the list first.
                let list: Vec<u8> = v
                    .as_bytes()
                    .iter()
                    .copied()
                    .filter(|&b| !is_c_space(b))
                    .collect();
                let parsed =
                    parse_allowed_ips(&String::from_utf8_lossy(&list), notes).map_err(fail)?;
                let peer = current(&mut request);
                // Each list replaces the peer's addresses unless it has a `+`/`-` entry; the
                // last list decides, and entries accumulate across lists.
                peer.replace_allowed_ips = !parsed.incremental;
                peer.allowed_ips.extend(parsed.changes);
            }
            (b"persistent-keepalive", Some(v)) if in_peer => {
                let interval = parse_keepalive(&text(v)).map_err(fail)?;
                current(&mut request).persistent_keepalive_interval = Some(interval);
            }
            (b"preshared-key", Some(v)) if in_peer => {
                current(&mut request).preshared_key = Some(read_key_file(v).map_err(fail)?);
            }
            _ => {
                let mut msg = b"Invalid argument: ".to_vec();
                msg.extend_from_slice(token);
                return Err(msg);
            }
        }
        i += 2;
    }
    Ok(request)
}

fn current(request: &mut DeviceSet) -> &mut PeerSet {
    request.peers.last_mut().expect("checked: a peer is open")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrowg_uapi::emit_set;

    const K1: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
    const K1_HEX: &str = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";

    fn parse(tokens: &[&str]) -> Result<String, String> {
        let tokens: Vec<OsString> = tokens.iter().map(OsString::from).collect();
        let mut notes = |_: &[u8]| {};
        parse_tokens(&tokens, &mut notes)
            .map(|r| emit_set(&r))
            .map_err(|e| String::from_utf8(e).unwrap())
    }

    #[test]
    fn same_text_as_wg_sends() {
        assert_eq!(
            parse(&[
                "listen-port",
                "domain",
                "fwmark",
                "0x10",
                "private-key",
                "/dev/null",
                "peer",
                K1,
                "endpoint",
                "[2001:db8::5]:51820",
                "persistent-keepalive",
                "off",
                "allowed-ips",
                "10.0.0.0/24, 10.1.0.0/16",
                "peer",
                K1,
                "remove",
                "endpoint",
                "1.2.3.4:5",
            ])
            .unwrap(),
            format!(
                "set=1\nprivate_key={}\nlisten_port=53\nfwmark=16\npublic_key={K1_HEX}\n\
                 endpoint=[2001:db8::5]:51820\npersistent_keepalive_interval=0\n\
                 replace_allowed_ips=true\nallowed_ip=10.0.0.0/24\nallowed_ip=10.1.0.0/16\n\
                 public_key={K1_HEX}\nremove=true\n\n",
                "0".repeat(64)
            )
        );
    }

    #[test]
    fn incremental_allowed_ips() {
        let text = parse(&[
            "peer",
            K1,
            "allowed-ips",
            "10.0.0.0/8",
            "allowed-ips",
            "+10.1.0.0/16,-10.2.0.0/16",
        ])
        .unwrap();
        assert_eq!(
            text,
            format!(
                "set=1\npublic_key={K1_HEX}\nallowed_ip=10.0.0.0/8\nallowed_ip=10.1.0.0/16\n\
                 allowed_ip=-10.2.0.0/16\n\n"
            )
        );
        let text = parse(&["peer", K1, "allowed-ips", ""]).unwrap();
        assert_eq!(
            text,
            format!("set=1\npublic_key={K1_HEX}\nreplace_allowed_ips=true\n\n")
        );
    }

    #[test]
    fn bad_tokens() {
        assert_eq!(parse(&["bogus"]).unwrap_err(), "Invalid argument: bogus");
        assert_eq!(parse(&["remove"]).unwrap_err(), "Invalid argument: remove");
        assert_eq!(parse(&["peer"]).unwrap_err(), "Invalid argument: peer");
        assert_eq!(
            parse(&["peer", K1, "listen-port", "5"]).unwrap_err(),
            "Invalid argument: listen-port"
        );
        assert_eq!(
            parse(&["peer", "abc"]).unwrap_err(),
            "Key is not the correct length or format: `abc'"
        );
        assert_eq!(
            parse(&["private-key", "/nonexistent/key"]).unwrap_err(),
            "fopen: No such file or directory"
        );
    }
}
