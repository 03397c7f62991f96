//! `get` replies: the text the server writes, and how the client reads what real daemons send.

use ferrowg_uapi::{
    emit_get_response, errno, parse_get_response, write_errno, write_get_response, DeviceInfo,
    PeerInfo, SecretKey,
};

fn hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(32)
}

fn sample() -> DeviceInfo {
    let mut a = PeerInfo::new([0xaa; 32]);
    a.preshared_key = Some(SecretKey::new([0x33; 32]));
    a.endpoint = Some("[2001:db8::5]:51820".parse().unwrap());
    a.last_handshake_time_sec = 1_700_000_000;
    a.last_handshake_time_nsec = 123_456_789;
    a.rx_bytes = 1000;
    a.tx_bytes = 2000;
    a.persistent_keepalive_interval = 25;
    a.allowed_ips = vec![
        ("10.0.0.0".parse().unwrap(), 24),
        ("fd00::".parse().unwrap(), 64),
    ];
    let b = PeerInfo::new([0xbb; 32]);
    DeviceInfo {
        private_key: Some(SecretKey::new([0x44; 32])),
        listen_port: 51820,
        fwmark: 0,
        peers: vec![a, b],
    }
}

#[test]
fn reply_has_wireguard_go_order_and_format() {
    let expected = format!(
        "private_key={}\nlisten_port=51820\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=[2001:db8::5]:51820\n\
         last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=123456789\n\
         tx_bytes=2000\nrx_bytes=1000\npersistent_keepalive_interval=25\n\
         allowed_ip=10.0.0.0/24\nallowed_ip=fd00::/64\n\
         public_key={}\npreshared_key={}\nprotocol_version=1\n\
         last_handshake_time_sec=0\nlast_handshake_time_nsec=0\n\
         tx_bytes=0\nrx_bytes=0\npersistent_keepalive_interval=0\n\
         errno=0\n\n",
        hex(0x44),
        hex(0xaa),
        hex(0x33),
        hex(0xbb),
        hex(0)
    );
    assert_eq!(emit_get_response(&sample()), expected);
    let mut written = Vec::new();
    write_get_response(&mut written, &sample()).unwrap();
    assert_eq!(written, expected.as_bytes());
    assert_eq!(parse_get_response(&expected).unwrap(), sample());
}

#[test]
fn empty_device_omits_zero_fields() {
    assert_eq!(emit_get_response(&DeviceInfo::default()), "errno=0\n\n");
    let with_mark = DeviceInfo {
        fwmark: 16,
        private_key: Some(SecretKey::new([0; 32])), // a zero key is no key
        ..DeviceInfo::default()
    };
    assert_eq!(emit_get_response(&with_mark), "fwmark=16\nerrno=0\n\n");
}

#[test]
fn errno_replies() {
    let mut out = Vec::new();
    write_errno(&mut out, 0).unwrap();
    write_errno(&mut out, -22).unwrap();
    assert_eq!(out, b"errno=0\n\nerrno=-22\n\n");
}

#[test]
fn parses_a_boringtun_reply() {
    // boringtun: own_public_key instead of private_key, no protocol_version, elapsed times.
    let text = format!(
        "own_public_key={}\nlisten_port=51820\nfwmark=0\n\
         public_key={}\nendpoint=192.0.2.7:40000\nlast_handshake_time_sec=12\n\
         last_handshake_time_nsec=5\nrx_bytes=10\ntx_bytes=20\n\
         persistent_keepalive_interval=0\npreshared_key={}\nallowed_ip=10.9.0.0/16\n\
         errno=0\n\n",
        hex(0x55),
        hex(0xaa),
        hex(0)
    );
    let info = parse_get_response(&text).unwrap();
    assert_eq!(info.private_key, None);
    assert_eq!(info.listen_port, 51820);
    assert_eq!(info.peers.len(), 1);
    let peer = &info.peers[0];
    assert_eq!(peer.public_key, [0xaa; 32]);
    assert_eq!(peer.preshared_key, None);
    assert_eq!(peer.endpoint, Some("192.0.2.7:40000".parse().unwrap()));
    assert_eq!(peer.last_handshake_time_sec, 12);
    assert_eq!(peer.last_handshake_time_nsec, 5);
    assert_eq!((peer.rx_bytes, peer.tx_bytes), (10, 20));
    assert_eq!(peer.allowed_ips, vec![("10.9.0.0".parse().unwrap(), 16)]);
    assert_eq!(peer.protocol_version, 0);
}

#[test]
fn errno_line_is_mandatory_and_non_negative() {
    let body = format!("private_key={}\nlisten_port=1\n", hex(1));
    let missing = parse_get_response(&format!("{body}\n")).unwrap_err();
    assert_eq!(
        (missing.errno, missing.key.as_deref()),
        (errno::EPROTO, Some("errno"))
    );
    for value in ["-22", "x", "", "+5", "2147483648"] {
        let e = parse_get_response(&format!("{body}errno={value}\n\n")).unwrap_err();
        assert_eq!(e.errno, errno::EPROTO, "{value:?}");
        assert!(e.message.contains(&format!("{value:?}")), "{e}");
    }
    let e = parse_get_response("errno=5\n\n").unwrap_err();
    assert_eq!((e.errno, e.key.as_deref()), (5, Some("errno")));
    // The last errno line counts, and lines after errno=0 are still read.
    assert!(parse_get_response("errno=5\nerrno=0\n\n").is_ok());
    assert_eq!(
        parse_get_response("errno=0\nlisten_port=9\n\n")
            .unwrap()
            .listen_port,
        9
    );
}

#[test]
fn malformed_replies_are_protocol_errors() {
    for text in [
        "errno=0\n".to_owned(), // no empty line
        "errno=0".to_owned(),   // no newline at all
        "".to_owned(),
        "listen_port\nerrno=0\n\n".to_owned(), // no '='
        "listen_port=65536\nerrno=0\n\n".to_owned(),
        "fwmark=-1\nerrno=0\n\n".to_owned(),
        "public_key=xyz\nerrno=0\n\n".to_owned(),
        format!("private_key={}\nerrno=0\n\n", "ab".repeat(31)),
        format!("public_key={}\nendpoint=nowhere\nerrno=0\n\n", hex(1)),
        format!("public_key={}\nallowed_ip=10.0.0.0\nerrno=0\n\n", hex(1)),
        format!("public_key={}\nallowed_ip=-10.0.0.0/8\nerrno=0\n\n", hex(1)),
        format!(
            "public_key={}\nrx_bytes=18446744073709551616\nerrno=0\n\n",
            hex(1)
        ),
        format!(
            "public_key={}\nlast_handshake_time_sec=9223372036854775808\nerrno=0\n\n",
            hex(1)
        ),
        format!(
            "public_key={}\npersistent_keepalive_interval=x\nerrno=0\n\n",
            hex(1)
        ),
        // A malformed line after a positive errno still makes it a protocol error.
        "errno=5\nlisten_port=x\n\n".to_owned(),
    ] {
        let e = parse_get_response(&text).unwrap_err();
        assert_eq!(e.errno, errno::EPROTO, "{text:?}: {e}");
    }
    let e = parse_get_response("listen_port=70000\nerrno=0\n\n").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("listen_port"));
    assert!(e.message.contains("70000"), "{e}");
}

#[test]
fn keys_out_of_place_and_unknown_keys_are_ignored_like_wg() {
    let text = format!(
        "preshared_key={}\nrx_bytes=5\nfuture_key=1\n\
         public_key={}\nlisten_port=1\nprivate_key={}\nprotocol_version=x\nfuture_peer_key=2\n\
         errno=0\n\ntrailing text is not read",
        hex(9),
        hex(1),
        hex(2)
    );
    let info = parse_get_response(&text).unwrap();
    assert_eq!(info.private_key, None);
    assert_eq!(info.listen_port, 0);
    assert_eq!(info.peers.len(), 1);
    assert_eq!(info.peers[0].rx_bytes, 0);
    assert_eq!(info.peers[0].protocol_version, 0);
}

#[test]
fn zero_keys_mean_none() {
    let text = format!(
        "private_key={z}\npublic_key={}\npreshared_key={z}\nerrno=0\n\n",
        hex(1),
        z = hex(0)
    );
    let info = parse_get_response(&text).unwrap();
    assert_eq!(info.private_key, None);
    assert_eq!(info.peers[0].preshared_key, None);
}

#[test]
fn debug_output_hides_secrets() {
    let shown = format!("{:?}", sample());
    assert!(!shown.contains(&hex(0x44)), "{shown}");
    assert!(!shown.contains(&hex(0x33)), "{shown}");
    assert!(!shown.contains("68, 68"), "{shown}");
    assert!(shown.contains("<hidden>"), "{shown}");
    assert!(
        shown.contains(&hex(0xaa)),
        "public keys stay visible: {shown}"
    );
}
