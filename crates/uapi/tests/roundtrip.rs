//! Generated messages survive emit → parse in both directions, including through the
//! stream reader with several messages back to back.

use ferrowg_uapi::{
    emit_get_response, emit_set, parse_get_response, parse_set, read_request, AllowedIpChange,
    DeviceInfo, DeviceSet, PeerInfo, PeerSet, Request, SecretKey,
};
use proptest::prelude::*;
use std::io::{BufReader, Cursor};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

fn key() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn secret() -> impl Strategy<Value = SecretKey> {
    key().prop_map(SecretKey::new)
}

/// A secret key that is never all zeros (zero means "none" in a get reply).
fn nonzero_secret() -> impl Strategy<Value = SecretKey> {
    key().prop_map(|mut k| {
        k[31] |= 1;
        SecretKey::new(k)
    })
}

fn endpoint() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<u32>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port))),
        (
            any::<u128>(),
            any::<u16>(),
            prop_oneof![Just(0u32), any::<u32>()]
        )
            .prop_map(|(ip, port, scope)| SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                scope
            ))),
    ]
}

fn prefix() -> impl Strategy<Value = (IpAddr, u8)> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(ip, cidr)| (IpAddr::V4(Ipv4Addr::from(ip)), cidr)),
        (any::<u128>(), 0u8..=128).prop_map(|(ip, cidr)| (IpAddr::V6(Ipv6Addr::from(ip)), cidr)),
    ]
}

fn allowed_ip_change() -> impl Strategy<Value = AllowedIpChange> {
    (prefix(), any::<bool>()).prop_map(|((ip, cidr), remove)| AllowedIpChange { ip, cidr, remove })
}

fn peer_set() -> impl Strategy<Value = PeerSet> {
    let update = (
        key(),
        any::<bool>(),
        proptest::option::of(secret()),
        proptest::option::of(endpoint()),
        proptest::option::of(any::<u16>()),
        any::<bool>(),
        proptest::collection::vec(allowed_ip_change(), 0..5),
        proptest::option::of(Just(1u32)),
    )
        .prop_map(
            |(public_key, update_only, psk, endpoint, keepalive, replace, ips, version)| PeerSet {
                public_key,
                remove: false,
                update_only,
                preshared_key: psk,
                endpoint,
                persistent_keepalive_interval: keepalive,
                replace_allowed_ips: replace,
                allowed_ips: ips,
                protocol_version: version,
            },
        );
    // A removal carries nothing else: that is all `emit_set` sends for it.
    let removal = key().prop_map(|k| PeerSet {
        remove: true,
        ..PeerSet::new(k)
    });
    prop_oneof![4 => update, 1 => removal]
}

fn device_set() -> impl Strategy<Value = DeviceSet> {
    (
        proptest::option::of(secret()),
        proptest::option::of(any::<u16>()),
        proptest::option::of(any::<u32>()),
        any::<bool>(),
        proptest::collection::vec(peer_set(), 0..5),
    )
        .prop_map(
            |(private_key, listen_port, fwmark, replace_peers, mut peers)| {
                // Public keys may not repeat within one message: make them distinct.
                for (i, peer) in peers.iter_mut().enumerate() {
                    peer.public_key[0] = i as u8;
                }
                DeviceSet {
                    private_key,
                    listen_port,
                    fwmark,
                    replace_peers,
                    peers,
                }
            },
        )
}

fn peer_info() -> impl Strategy<Value = PeerInfo> {
    (
        (
            key(),
            proptest::option::of(nonzero_secret()),
            proptest::option::of(endpoint()),
            0..=i64::MAX as u64,
            any::<u32>(),
        ),
        (
            any::<u64>(),
            any::<u64>(),
            any::<u16>(),
            proptest::collection::vec(prefix(), 0..5),
            any::<u32>(),
        ),
    )
        .prop_map(
            |((public_key, psk, endpoint, sec, nsec), (rx, tx, keepalive, ips, version))| {
                PeerInfo {
                    public_key,
                    preshared_key: psk,
                    endpoint,
                    last_handshake_time_sec: sec,
                    last_handshake_time_nsec: nsec,
                    rx_bytes: rx,
                    tx_bytes: tx,
                    persistent_keepalive_interval: keepalive,
                    allowed_ips: ips,
                    protocol_version: version,
                }
            },
        )
}

fn device_info() -> impl Strategy<Value = DeviceInfo> {
    (
        proptest::option::of(nonzero_secret()),
        any::<u16>(),
        any::<u32>(),
        proptest::collection::vec(peer_info(), 0..5),
    )
        .prop_map(|(private_key, listen_port, fwmark, peers)| DeviceInfo {
            private_key,
            listen_port,
            fwmark,
            peers,
        })
}

proptest! {
    #[test]
    fn set_round_trips(set in device_set()) {
        let text = emit_set(&set);
        prop_assert_eq!(parse_set(&text).unwrap(), set);
    }

    #[test]
    fn sets_round_trip_through_the_stream_reader(sets in proptest::collection::vec(device_set(), 1..4)) {
        let mut stream = Vec::new();
        for set in &sets {
            stream.extend_from_slice(emit_set(set).as_bytes());
            stream.extend_from_slice(b"get=1\n\n");
        }
        let mut r = BufReader::with_capacity(16, Cursor::new(stream));
        for set in sets {
            prop_assert_eq!(read_request(&mut r).unwrap(), Some(Request::Set(set)));
            prop_assert_eq!(read_request(&mut r).unwrap(), Some(Request::Get));
        }
        prop_assert_eq!(read_request(&mut r).unwrap(), None);
    }

    #[test]
    fn get_response_round_trips(info in device_info()) {
        let text = emit_get_response(&info);
        prop_assert!(text.ends_with("errno=0\n\n"));
        prop_assert_eq!(parse_get_response(&text).unwrap(), info);
    }

    /// The parser never panics on arbitrary lines, and whatever it accepts emits back to
    /// something that parses to the same value.
    #[test]
    fn arbitrary_set_lines_are_handled(lines in proptest::collection::vec(
        prop_oneof![
            "[a-z_]{1,30}=[ -~]{0,70}",
            Just("public_key=".to_owned() + &"ab".repeat(32)),
            Just("allowed_ip=10.0.0.0/8".to_owned()),
            Just("replace_allowed_ips=true".to_owned()),
        ], 0..8)) {
        let text = format!("set=1\n{}\n", lines.iter().map(|l| format!("{l}\n")).collect::<String>());
        if let Ok(set) = parse_set(&text) {
            prop_assert_eq!(parse_set(&emit_set(&set)).unwrap(), set);
        }
    }
}
