//! `set`: the exact text `wg` sends, and every validation rule of the server-side parser.

use ferrowg_uapi::{
    emit_set, errno, parse_set, AllowedIpChange, DeviceSet, PeerSet, SecretKey, UapiError,
};
use std::net::SocketAddr;

fn hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn change(prefix: &str, remove: bool) -> AllowedIpChange {
    let (ip, cidr) = prefix.split_once('/').unwrap();
    AllowedIpChange {
        ip: ip.parse().unwrap(),
        cidr: cidr.parse().unwrap(),
        remove,
    }
}

/// PROTOCOL.md §7.6, the captured `wg set fake0 listen-port 51821 fwmark 0x10 private-key
/// /dev/null peer K1 preshared-key F endpoint '[2001:db8::5]:51820' persistent-keepalive off
/// allowed-ips '10.0.0.0/24, +10.1.0.0/16,-10.2.0.0/16' peer K2 remove`.
fn captured_example() -> (DeviceSet, String) {
    let mut k1 = PeerSet::new([0x11; 32]);
    k1.preshared_key = Some(SecretKey::new([0x33; 32]));
    k1.endpoint = Some("[2001:db8::5]:51820".parse().unwrap());
    k1.persistent_keepalive_interval = Some(0);
    k1.allowed_ips = vec![
        change("10.0.0.0/24", false),
        change("10.1.0.0/16", false),
        change("10.2.0.0/16", true),
    ];
    let mut k2 = PeerSet::new([0x22; 32]);
    k2.remove = true;
    let set = DeviceSet {
        private_key: Some(SecretKey::new([0; 32])),
        listen_port: Some(51821),
        fwmark: Some(16),
        replace_peers: false,
        peers: vec![k1, k2],
    };
    let text = format!(
        "set=1\n\
         private_key=0000000000000000000000000000000000000000000000000000000000000000\n\
         listen_port=51821\n\
         fwmark=16\n\
         public_key={}\n\
         preshared_key={}\n\
         endpoint=[2001:db8::5]:51820\n\
         persistent_keepalive_interval=0\n\
         allowed_ip=10.0.0.0/24\n\
         allowed_ip=10.1.0.0/16\n\
         allowed_ip=-10.2.0.0/16\n\
         public_key={}\n\
         remove=true\n\
         \n",
        hex(0x11),
        hex(0x33),
        hex(0x22)
    );
    (set, text)
}

#[test]
fn emit_set_reproduces_the_captured_wg_text() {
    let (set, text) = captured_example();
    assert_eq!(emit_set(&set), text);
    assert_eq!(parse_set(&text).unwrap(), set);
}

#[test]
fn emit_set_setconf_style() {
    let mut a = PeerSet::new([0xaa; 32]);
    a.endpoint = Some("192.0.2.1:51820".parse().unwrap());
    a.replace_allowed_ips = true;
    a.allowed_ips = vec![change("10.0.0.2/32", false), change("fd00::2/128", false)];
    let mut b = PeerSet::new([0xbb; 32]);
    b.replace_allowed_ips = true; // `AllowedIPs` absent: the list is cleared
    let set = DeviceSet {
        private_key: Some(SecretKey::new([0x44; 32])),
        listen_port: Some(0),
        fwmark: Some(0),
        replace_peers: true,
        peers: vec![a, b],
    };
    let expected = format!(
        "set=1\nprivate_key={}\nlisten_port=0\nfwmark=0\nreplace_peers=true\n\
         public_key={}\nendpoint=192.0.2.1:51820\nreplace_allowed_ips=true\n\
         allowed_ip=10.0.0.2/32\nallowed_ip=fd00::2/128\n\
         public_key={}\nreplace_allowed_ips=true\n\n",
        hex(0x44),
        hex(0xaa),
        hex(0xbb)
    );
    assert_eq!(emit_set(&set), expected);
    assert_eq!(parse_set(&expected).unwrap(), set);
}

#[test]
fn emit_set_peer_field_order_and_remove_alone() {
    let mut p = PeerSet::new([1; 32]);
    p.update_only = true;
    p.protocol_version = Some(1);
    p.preshared_key = Some(SecretKey::new([2; 32]));
    p.endpoint = Some("[fe80::1%2]:51820".parse::<SocketAddr>().unwrap());
    p.persistent_keepalive_interval = Some(25);
    p.replace_allowed_ips = true;
    p.allowed_ips = vec![change("::/0", false)];
    let mut gone = PeerSet::new([3; 32]);
    gone.remove = true;
    gone.endpoint = p.endpoint; // ignored: remove is sent alone
    let set = DeviceSet {
        peers: vec![p, gone],
        ..DeviceSet::default()
    };
    assert_eq!(
        emit_set(&set),
        format!(
            "set=1\npublic_key={}\nupdate_only=true\nprotocol_version=1\npreshared_key={}\n\
             endpoint=[fe80::1%2]:51820\npersistent_keepalive_interval=25\n\
             replace_allowed_ips=true\nallowed_ip=::/0\npublic_key={}\nremove=true\n\n",
            hex(1),
            hex(2),
            hex(3)
        )
    );
    assert_eq!(emit_set(&DeviceSet::default()), "set=1\n\n");
}

#[test]
fn parse_accepts_uppercase_hex_leading_zeros_and_host_bits() {
    let text = format!(
        "set=1\nlisten_port=051820\npublic_key={}\nallowed_ip=10.0.0.1/24\n\
         endpoint=[fe80::1%2]:51820\nprotocol_version=1\n\n",
        hex(0xab).to_uppercase()
    );
    let set = parse_set(&text).unwrap();
    assert_eq!(set.listen_port, Some(51820));
    assert_eq!(set.peers[0].public_key, [0xab; 32]);
    assert_eq!(set.peers[0].allowed_ips, vec![change("10.0.0.1/24", false)]);
    assert_eq!(set.peers[0].protocol_version, Some(1));
    match set.peers[0].endpoint.unwrap() {
        SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
        SocketAddr::V4(_) => panic!("expected IPv6"),
    }
}

#[test]
fn replace_allowed_ips_drops_entries_sent_before_it() {
    let text = format!(
        "set=1\npublic_key={}\nallowed_ip=10.0.0.0/8\nreplace_allowed_ips=true\n\
         allowed_ip=10.1.0.0/16\n\n",
        hex(1)
    );
    let peer = &parse_set(&text).unwrap().peers[0];
    assert!(peer.replace_allowed_ips);
    assert_eq!(peer.allowed_ips, vec![change("10.1.0.0/16", false)]);
}

#[test]
fn zero_keys_are_kept_as_removal_requests() {
    let text = format!(
        "set=1\nprivate_key={z}\npublic_key={}\npreshared_key={z}\n\n",
        hex(1),
        z = hex(0)
    );
    let set = parse_set(&text).unwrap();
    assert_eq!(set.private_key, Some(SecretKey::new([0; 32])));
    assert_eq!(set.peers[0].preshared_key, Some(SecretKey::new([0; 32])));
}

/// Parses `set=1\n` + `body` + `\n` and returns the error.
fn refused(body: &str) -> UapiError {
    let text = format!("set=1\n{body}\n");
    match parse_set(&text) {
        Ok(set) => panic!("accepted {body:?} as {set:?}"),
        Err(e) => e,
    }
}

/// The error has `errno`, names `key`, and its message mentions `key` and `shown`.
fn assert_refused(body: &str, errno: i32, key: Option<&str>, shown: &str) {
    let e = refused(body);
    assert_eq!(e.errno, errno, "{body:?}: {e}");
    assert_eq!(e.key.as_deref(), key, "{body:?}: {e}");
    if let Some(key) = key {
        assert!(e.message.contains(key), "{body:?}: {e}");
    }
    assert!(
        e.message.contains(shown),
        "{body:?}: {e} should show {shown:?}"
    );
    assert_eq!(e.wire_errno(), -errno);
}

fn with_peer(lines: &str) -> String {
    format!("public_key={}\n{lines}", hex(7))
}

#[test]
fn device_keys_after_a_public_key_are_einval() {
    for (line, key, shown) in [
        ("listen_port=1\n", "listen_port", "\"1\""),
        ("fwmark=1\n", "fwmark", "\"1\""),
        ("replace_peers=true\n", "replace_peers", "true"),
    ] {
        assert_refused(&with_peer(line), errno::EINVAL, Some(key), shown);
    }
    // A secret value is described, not echoed.
    let e = refused(&with_peer(&format!("private_key={}\n", hex(9))));
    assert_eq!(
        (e.errno, e.key.as_deref()),
        (errno::EINVAL, Some("private_key"))
    );
    assert!(e.message.contains("first public_key"), "{e}");
    assert!(!e.message.contains(&hex(9)), "{e}");
}

#[test]
fn flags_accept_only_true() {
    for value in ["false", "1", "TRUE", "", "true "] {
        let line = format!("replace_peers={value}\n");
        assert_refused(&line, errno::EINVAL, Some("replace_peers"), value);
    }
    for key in ["remove", "update_only", "replace_allowed_ips"] {
        for value in ["false", "1", "TRUE", "", "true "] {
            assert_refused(
                &with_peer(&format!("{key}={value}\n")),
                errno::EINVAL,
                Some(key),
                value,
            );
        }
    }
}

#[test]
fn protocol_version_must_be_1() {
    for value in ["0", "2", "01", "", "one"] {
        assert_refused(
            &with_peer(&format!("protocol_version={value}\n")),
            errno::EINVAL,
            Some("protocol_version"),
            &format!("{value:?}"),
        );
    }
}

#[test]
fn hex_keys_must_be_64_hex_digits() {
    let short = "ab".repeat(31) + "a";
    let long = "ab".repeat(32) + "a";
    let not_hex = "zz".repeat(32);
    for value in [&short, &long, &not_hex, &String::new()] {
        assert_refused(
            &format!("public_key={value}\n"),
            errno::EINVAL,
            Some("public_key"),
            value,
        );
        // Secrets: the message names the key and the length, never the value.
        for (key, line) in [
            ("private_key", format!("private_key={value}\n")),
            (
                "preshared_key",
                with_peer(&format!("preshared_key={value}\n")),
            ),
        ] {
            let e = refused(&line);
            assert_eq!((e.errno, e.key.as_deref()), (errno::EINVAL, Some(key)));
            assert!(
                e.message.contains(key) && e.message.contains("64 hex digits"),
                "{e}"
            );
            assert!(
                e.message.contains(&format!("{} characters", value.len())),
                "{e}"
            );
            assert!(
                value.is_empty() || !e.message.contains(value.as_str()),
                "{e}"
            );
        }
    }
}

#[test]
fn numbers_are_decimal_and_in_range() {
    for value in ["65536", "-1", "+1", "", "0x10", " 1", "1.0"] {
        assert_refused(
            &format!("listen_port={value}\n"),
            errno::EINVAL,
            Some("listen_port"),
            value,
        );
        assert_refused(
            &with_peer(&format!("persistent_keepalive_interval={value}\n")),
            errno::EINVAL,
            Some("persistent_keepalive_interval"),
            value,
        );
    }
    for value in ["4294967296", "-1", "0x10", ""] {
        assert_refused(
            &format!("fwmark={value}\n"),
            errno::EINVAL,
            Some("fwmark"),
            value,
        );
    }
    let set = parse_set("set=1\nfwmark=4294967295\nlisten_port=65535\n\n").unwrap();
    assert_eq!(
        (set.fwmark, set.listen_port),
        (Some(u32::MAX), Some(u16::MAX))
    );
}

#[test]
fn endpoints_are_numeric_ip_and_port() {
    for value in [
        "192.0.2.1",
        "192.0.2.1:65536",
        "::1:51820",
        "[::1]",
        "[192.0.2.1]:5",
        "[fe80::1%no-such-if0]:51820",
        "vpn.example.com:51820",
        "",
    ] {
        assert_refused(
            &with_peer(&format!("endpoint={value}\n")),
            errno::EINVAL,
            Some("endpoint"),
            value,
        );
    }
}

#[test]
fn allowed_ips_need_a_valid_prefix() {
    for value in [
        "10.0.0.0",
        "10.0.0.0/33",
        "::/129",
        "--10.0.0.0/8",
        "+10.0.0.0/8",
        "10.0.0.0/-1",
        "10.0.0.256/8",
        "",
    ] {
        assert_refused(
            &with_peer(&format!("allowed_ip={value}\n")),
            errno::EINVAL,
            Some("allowed_ip"),
            value,
        );
    }
    let set = parse_set(&format!("set=1\n{}\n", with_peer("allowed_ip=-fd00::/8\n"))).unwrap();
    assert_eq!(set.peers[0].allowed_ips, vec![change("fd00::/8", true)]);
}

#[test]
fn structural_errors() {
    // No '=' at all: EPROTO.
    assert_refused("listen_port\n", errno::EPROTO, None, "listen_port");
    assert_refused(&with_peer("garbage\n"), errno::EPROTO, None, "garbage");
    // Unknown keys, device and peer: EINVAL.
    assert_refused(
        "listen-port=1\n",
        errno::EINVAL,
        Some("listen-port"),
        "listen-port",
    );
    assert_refused(
        &with_peer("keepalive=5\n"),
        errno::EINVAL,
        Some("keepalive"),
        "keepalive",
    );
    assert_refused("=1\n", errno::EINVAL, Some(""), "\"1\"");
    // A peer key before any public_key: EINVAL.
    assert_refused(
        "endpoint=192.0.2.1:1\n",
        errno::EINVAL,
        Some("endpoint"),
        "192.0.2.1:1",
    );
    assert_refused(
        "allowed_ip=10.0.0.0/8\n",
        errno::EINVAL,
        Some("allowed_ip"),
        "10.0.0.0/8",
    );
    // The same public key twice is accepted as two entries applied in order, as the kernel
    // and wireguard-go do (wg setconf sends that for two [Peer] sections of one key).
    let twice = format!(
        "set=1\npublic_key={}\nallowed_ip=10.0.0.1/32\npublic_key={}\nendpoint=192.0.2.1:1\n\n",
        hex(5),
        hex(5).to_uppercase()
    );
    match ferrowg_uapi::read_request(&mut twice.as_bytes()).unwrap() {
        Some(ferrowg_uapi::Request::Set(set)) => {
            assert_eq!(set.peers.len(), 2);
            assert_eq!(set.peers[0].public_key, set.peers[1].public_key);
            assert_eq!(set.peers[0].allowed_ips.len(), 1);
            assert!(set.peers[1].endpoint.is_some());
        }
        other => panic!("expected a set, got {other:?}"),
    }
    // Not UTF-8: EPROTO.
    let raw = b"set=1\nlisten_port=\xff\n\n";
    let e = ferrowg_uapi::read_request(&mut &raw[..]).unwrap_err();
    assert_eq!(e.errno, errno::EPROTO);
}

#[test]
fn the_first_error_is_reported() {
    let e = refused("listen_port=x\nfwmark=y\n");
    assert_eq!(e.key.as_deref(), Some("listen_port"));
}

#[test]
fn parse_set_wants_exactly_one_set_message() {
    for text in [
        "",
        "get=1\n\n",
        "set=1\n\nget=1\n\n",
        "set=1\nlisten_port=1\n",
    ] {
        assert_eq!(
            parse_set(text).unwrap_err().errno,
            errno::EPROTO,
            "{text:?}"
        );
    }
}
