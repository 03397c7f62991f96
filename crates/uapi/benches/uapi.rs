//! UAPI at scale: 10,000 peers.
//!
//! * `parse_set_10k`: a 10k-peer `set` text (what `wg setconf` sends) parsed into a
//!   [`DeviceSet`];
//! * `emit_get_10k`: the `get` reply for 10k peers emitted from a [`DeviceInfo`];
//! * `apply_set_10k`: the parsed set applied to a fresh proto [`Device`] with a private key,
//!   call for call as the daemon's `apply_set` does it (that function needs the daemon's UDP
//!   sockets, so it is mirrored here on the engine alone);
//! * `replace_peers_10k`: the same set applied again over 10k existing peers with
//!   `replace_peers` (every peer removed, then re-added);
//! * `remove_peers_10k`: 10k `remove=true` peers applied one by one (what `syncconf` sends
//!   when the file drops every peer);
//! * `device_info_10k`: building the [`DeviceInfo`] of a 10k-peer device (the `get` side of
//!   the daemon, before emission);
//! * `poll_timeout_10k`: one `Device::poll_timeout` over 10k idle peers (the daemon's timer
//!   loop calls it every 50 ms).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrowg_proto::device::Device;
use ferrowg_proto::keys::PublicKey;
use ferrowg_uapi::{emit_get_response, emit_set, parse_set, DeviceInfo, DeviceSet, PeerInfo};
use ferrowg_uapi::{AllowedIpChange, PeerSet, SecretKey};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

const PEERS: usize = 10_000;

fn peer_key(i: usize) -> [u8; 32] {
    let mut k = [1u8; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    k[8..16].copy_from_slice(&((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
    k
}

fn peer_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1))
}

/// What `wg setconf` sends for a 10k-peer file: private key, replace_peers, and per peer a
/// key, an endpoint, replace_allowed_ips and one /32.
fn big_set() -> DeviceSet {
    let peers = (0..PEERS)
        .map(|i| {
            let mut p = PeerSet::new(peer_key(i));
            p.endpoint = Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1)),
                10_000 + (i % 50_000) as u16,
            ));
            p.replace_allowed_ips = true;
            p.allowed_ips = vec![AllowedIpChange {
                ip: peer_ip(i),
                cidr: 32,
                remove: false,
            }];
            p
        })
        .collect();
    DeviceSet {
        private_key: Some(SecretKey::new([7; 32])),
        listen_port: None,
        fwmark: None,
        replace_peers: true,
        peers,
    }
}

fn big_info() -> DeviceInfo {
    let peers = (0..PEERS)
        .map(|i| {
            let mut p = PeerInfo::new(peer_key(i));
            p.endpoint = Some(SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, (i % 250) as u8 + 1)),
                10_000 + (i % 50_000) as u16,
            ));
            p.last_handshake_time_sec = 1_700_000_000 + i as u64;
            p.last_handshake_time_nsec = 123_456_789;
            p.rx_bytes = 1_000_000 + i as u64;
            p.tx_bytes = 2_000_000 + i as u64;
            p.persistent_keepalive_interval = 25;
            p.allowed_ips = vec![(peer_ip(i), 32)];
            p
        })
        .collect();
    DeviceInfo {
        private_key: Some(SecretKey::new([7; 32])),
        listen_port: 51820,
        fwmark: 0,
        peers,
    }
}

fn fresh_device() -> Device {
    Device::new(
        Box::new(rand_core::OsRng),
        Instant::now(),
        Duration::from_secs(1_700_000_000),
    )
}

/// `apply_set` of crates/device/src/apply.rs on the engine alone (no sockets to bind).
fn apply(dev: &mut Device, set: &DeviceSet, now: Instant) {
    if set.replace_peers {
        dev.remove_all_peers();
    }
    if let Some(key) = &set.private_key {
        let key = (!key.is_zero()).then(|| key.to_private_key());
        dev.set_private_key(key);
    }
    for p in &set.peers {
        let public = PublicKey(p.public_key);
        if dev.public_key() == Some(&public) {
            continue;
        }
        let existing = dev.peer_id(&public);
        if p.remove {
            if let Some(id) = existing {
                dev.remove_peer(id);
            }
            continue;
        }
        if p.update_only && existing.is_none() {
            continue;
        }
        let id = match existing {
            Some(id) => id,
            None => match dev.add_peer(public) {
                Ok(id) => id,
                Err(_) => continue,
            },
        };
        if let Some(psk) = &p.preshared_key {
            let _ = dev.set_preshared_key(id, psk.to_preshared_key());
        }
        if let Some(ep) = p.endpoint {
            let _ = dev.set_endpoint(id, ep);
        }
        if p.replace_allowed_ips {
            dev.clear_allowed_ips(id);
        }
        for change in &p.allowed_ips {
            if change.remove {
                dev.remove_allowed_ip(id, change.ip, change.cidr);
            } else {
                let _ = dev.add_allowed_ip(id, change.ip, change.cidr);
            }
        }
        if let Some(interval) = p.persistent_keepalive_interval {
            let _ = dev.set_persistent_keepalive(now, id, interval);
        }
    }
}

/// What the daemon's `get` builds, without the socket fields.
fn device_info(dev: &Device) -> DeviceInfo {
    DeviceInfo::from_device(dev, 0, 0)
}

fn benches(c: &mut Criterion) {
    let set = big_set();
    let text = emit_set(&set);
    assert_eq!(parse_set(&text).as_ref(), Ok(&set));
    let info = big_info();

    let mut g = c.benchmark_group("uapi_10k_peers");
    g.sample_size(10);
    g.throughput(Throughput::Elements(PEERS as u64));

    g.bench_function("parse_set_10k", |b| {
        b.iter(|| black_box(parse_set(black_box(&text)).unwrap()))
    });
    g.bench_function("emit_get_10k", |b| {
        b.iter(|| black_box(emit_get_response(black_box(&info))))
    });
    let now = Instant::now();
    g.bench_function("apply_set_10k", |b| {
        b.iter_batched(
            fresh_device,
            |mut dev| {
                apply(&mut dev, &set, now);
                dev
            },
            BatchSize::PerIteration,
        )
    });
    let populated = || {
        let mut dev = fresh_device();
        apply(&mut dev, &set, now);
        dev
    };
    g.bench_function("replace_peers_10k", |b| {
        b.iter_batched(
            populated,
            |mut dev| {
                apply(&mut dev, &set, now);
                dev
            },
            BatchSize::PerIteration,
        )
    });
    let removal = DeviceSet {
        peers: (0..PEERS)
            .map(|i| {
                let mut p = PeerSet::new(peer_key(i));
                p.remove = true;
                p
            })
            .collect(),
        ..DeviceSet::default()
    };
    g.bench_function("remove_peers_10k", |b| {
        b.iter_batched(
            populated,
            |mut dev| {
                apply(&mut dev, &removal, now);
                assert_eq!(dev.peer_count(), 0);
                dev
            },
            BatchSize::PerIteration,
        )
    });
    let dev = populated();
    g.bench_function("device_info_10k", |b| {
        b.iter(|| black_box(device_info(black_box(&dev))))
    });
    g.bench_function("device_info_and_emit_10k", |b| {
        b.iter(|| black_box(emit_get_response(&device_info(black_box(&dev)))))
    });
    g.bench_function("poll_timeout_10k", |b| {
        b.iter(|| black_box(black_box(&dev).poll_timeout()))
    });
    g.finish();
}

criterion_group!(uapi, benches);
criterion_main!(uapi);
