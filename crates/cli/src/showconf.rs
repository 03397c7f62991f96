//! `showconf <interface>`: the running configuration as a file `setconf` accepts, in `wg`'s
//! layout (interface keys only when set, peers in device order, `ip/cidr` lists joined by
//! `, `, one empty line after `[Interface]` and between peers).

use crate::ipc;
use crate::show::{format_endpoint, format_ip};
use crate::stdio::{print_err, print_out};
use ferrowg_proto::keys::encode_base64_key;
use ferrowg_uapi::DeviceInfo;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use zeroize::Zeroizing;

pub fn showconf(prog: &OsStr, args: &[OsString]) -> ExitCode {
    if args.len() != 2 {
        let mut msg = b"Usage: ".to_vec();
        msg.extend_from_slice(prog.as_bytes());
        msg.push(b' ');
        msg.extend_from_slice(args[0].as_bytes());
        msg.extend_from_slice(b" <interface>\n");
        print_err(&msg);
        return ExitCode::FAILURE;
    }
    match ipc::get(&args[1]) {
        Ok(info) => {
            print_out(render(&info).as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            print_err(format!("Unable to access interface: {e}\n").as_bytes());
            ExitCode::FAILURE
        }
    }
}

/// The file text (it holds the private key, so the buffer is wiped after use).
pub fn render(info: &DeviceInfo) -> Zeroizing<String> {
    let mut out = Zeroizing::new(String::from("[Interface]\n"));
    if info.listen_port != 0 {
        let _ = writeln!(out, "ListenPort = {}", info.listen_port);
    }
    if info.fwmark != 0 {
        let _ = writeln!(out, "FwMark = 0x{:x}", info.fwmark);
    }
    if let Some(key) = &info.private_key {
        let text = Zeroizing::new(encode_base64_key(key));
        let _ = writeln!(out, "PrivateKey = {}", text.as_str());
    }
    out.push('\n');
    for (i, peer) in info.peers.iter().enumerate() {
        let _ = writeln!(
            out,
            "[Peer]\nPublicKey = {}",
            encode_base64_key(&peer.public_key)
        );
        if let Some(psk) = &peer.preshared_key {
            let text = Zeroizing::new(encode_base64_key(psk));
            let _ = writeln!(out, "PresharedKey = {}", text.as_str());
        }
        if !peer.allowed_ips.is_empty() {
            let list: Vec<String> = peer
                .allowed_ips
                .iter()
                .map(|(ip, cidr)| format!("{}/{cidr}", format_ip(ip)))
                .collect();
            let _ = writeln!(out, "AllowedIPs = {}", list.join(", "));
        }
        if let Some(endpoint) = &peer.endpoint {
            let _ = writeln!(out, "Endpoint = {}", format_endpoint(endpoint));
        }
        if peer.persistent_keepalive_interval != 0 {
            let _ = writeln!(
                out,
                "PersistentKeepalive = {}",
                peer.persistent_keepalive_interval
            );
        }
        if i + 1 < info.peers.len() {
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrowg_uapi::PeerInfo;

    #[test]
    fn layout_matches_wg() {
        let mut info = DeviceInfo {
            listen_port: 51820,
            fwmark: 0xca6c,
            ..DeviceInfo::default()
        };
        let mut first = PeerInfo::new([1; 32]);
        first.allowed_ips = vec![
            ("10.0.0.2".parse().unwrap(), 32),
            ("fd00::2".parse().unwrap(), 128),
        ];
        first.endpoint = Some("192.0.2.1:51820".parse().unwrap());
        first.persistent_keepalive_interval = 25;
        info.peers = vec![first, PeerInfo::new([2; 32])];
        assert_eq!(
            render(&info).as_str(),
            "[Interface]\nListenPort = 51820\nFwMark = 0xca6c\n\n\
             [Peer]\nPublicKey = AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n\
             AllowedIPs = 10.0.0.2/32, fd00::2/128\nEndpoint = 192.0.2.1:51820\n\
             PersistentKeepalive = 25\n\n\
             [Peer]\nPublicKey = AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=\n"
        );
    }
}
