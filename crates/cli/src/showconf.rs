//! `showconf <interface>`: the running configuration as a file `setconf` accepts, in `wg`'s
//! layout (interface keys only when set, peers in device order, `ip/cidr` lists joined by
//! `, `, one empty line after `[Interface]` and between peers).

use crate::ipc;
use crate::show::{format_endpoint, format_ip};
use crate::stdio::{print_err, print_out};
use crate::wipe::{base64_secret, SecretText};
use ferrowg_proto::keys::encode_base64_key;
use ferrowg_uapi::DeviceInfo;
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::process::ExitCode;
use zeroize::Zeroizing;

pub fn showconf(prog: &OsStr, args: &[OsString]) -> ExitCode {
    if args.len() != 2 {
        crate::stdio::print_usage(prog, &args[0], "<interface>");
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

/// The file text. It holds the private and preshared keys, so it is wiped after use, and it
/// is built without leaving copies behind in freed memory (see [`SecretText`]).
pub fn render(info: &DeviceInfo) -> Zeroizing<String> {
    let estimate = 256
        + info
            .peers
            .iter()
            .map(|p| 256 + 48 * p.allowed_ips.len())
            .sum::<usize>();
    let mut out = SecretText::with_capacity(estimate);
    out.push_str("[Interface]\n");
    if info.listen_port != 0 {
        let _ = writeln!(out, "ListenPort = {}", info.listen_port);
    }
    if info.fwmark != 0 {
        let _ = writeln!(out, "FwMark = 0x{:x}", info.fwmark);
    }
    if let Some(key) = &info.private_key {
        let _ = writeln!(
            out,
            "PrivateKey = {}",
            base64_secret(key.as_bytes()).as_str()
        );
    }
    out.push_str("\n");
    for (i, peer) in info.peers.iter().enumerate() {
        let _ = writeln!(
            out,
            "[Peer]\nPublicKey = {}",
            encode_base64_key(&peer.public_key)
        );
        if let Some(psk) = &peer.preshared_key {
            let _ = writeln!(
                out,
                "PresharedKey = {}",
                base64_secret(psk.as_bytes()).as_str()
            );
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
            out.push_str("\n");
        }
    }
    out.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrowg_uapi::{PeerInfo, SecretKey};

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

    #[test]
    fn keys_are_written_and_many_peers_fit() {
        let mut info = DeviceInfo {
            private_key: Some(SecretKey::new([3; 32])),
            ..DeviceInfo::default()
        };
        for i in 0..50u8 {
            let mut peer = PeerInfo::new([i; 32]);
            peer.preshared_key = Some(SecretKey::new([0xf0; 32]));
            peer.allowed_ips = (0..20)
                .map(|j| (format!("10.{i}.{j}.0").parse().unwrap(), 24))
                .collect();
            info.peers.push(peer);
        }
        let text = render(&info);
        assert!(text.starts_with(
            "[Interface]\nPrivateKey = AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=\n\n[Peer]\n"
        ));
        assert_eq!(
            text.matches("PresharedKey = 8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PA=\n")
                .count(),
            50
        );
        assert!(
            text.ends_with("10.49.19.0/24\n"),
            "{}",
            &text[text.len() - 100..]
        );
    }
}
