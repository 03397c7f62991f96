//! Transport throughput: sealing and opening data messages, next to the raw AEADs.
//!
//! * `keypair/{seal,open}_1420`: `session::Keypair::seal/open` on a 1420-byte padded payload
//!   (a full default-MTU packet) — header write + ring ChaCha20-Poly1305 in place.
//! * `device/{handle_outgoing,handle_datagram}_1420`: the same through `Device` (routing,
//!   padding, counters, replay window, timers, allowed-IPs source check).
//! * `boringtun/{encapsulate,decapsulate}_1420`: boringtun 0.7's `Tunn` data path, for scale.
//! * `ring/{seal,open}_N` and `rustcrypto/{seal,open}_N` for N = 64, 1420, 16384: the two
//!   ChaCha20-Poly1305 implementations the crate depends on, with a WireGuard-style nonce.
//!
//! Opening decrypts in place, so every open gets a fresh copy of the sealed message, made
//! outside the timed section (`iter_batched_ref`). Compare with LIMITS.md's openssl row.

use boringtun::noise::rate_limiter::RateLimiter;
use boringtun::noise::{Tunn, TunnResult};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrowg_proto::constants::*;
use ferrowg_proto::device::{Device, Outgoing, Received};
use ferrowg_proto::keys::PrivateKey;
use ferrowg_proto::noise::SessionKeys;
use ferrowg_proto::peer::Endpoint;
use ferrowg_proto::session::Keypair;
use rand_core::{CryptoRng, RngCore};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SIZES: [usize; 3] = [64, 1420, 16384];
const MTU_PAYLOAD: usize = 1420;

/// xorshift64*, marked CryptoRng for benchmarking only.
struct BenchRng(u64);
impl RngCore for BenchRng {
    fn next_u32(&mut self) -> u32 {
        self.next_u64() as u32
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for BenchRng {}

fn nonce(counter: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    n
}

/// An IPv4 packet of `len` bytes from 10.0.0.1 to 10.0.0.2 (or the reverse).
fn ipv4(len: usize, reverse: bool) -> Vec<u8> {
    let mut p = vec![0xabu8; len];
    p[0] = 0x45;
    p[1] = 0;
    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
    let (s, d) = if reverse { (2, 1) } else { (1, 2) };
    p[12..16].copy_from_slice(&[10, 0, 0, s]);
    p[16..20].copy_from_slice(&[10, 0, 0, d]);
    p
}

fn bench_keypair(c: &mut Criterion) {
    let now = Instant::now();
    let k1 = [0x11u8; 32];
    let k2 = [0x22u8; 32];
    let sender = Keypair::new(&SessionKeys { send: k1, recv: k2 }, true, 1, 2, now);
    let receiver = Keypair::new(&SessionKeys { send: k2, recv: k1 }, false, 2, 1, now);

    let mut g = c.benchmark_group("keypair");
    g.throughput(Throughput::Bytes(MTU_PAYLOAD as u64));
    let total = MTU_PAYLOAD + TRANSPORT_OVERHEAD;
    g.bench_function("seal_1420", |b| {
        let mut buf = vec![0x5au8; total];
        let mut ctr = 0u64;
        b.iter(|| {
            ctr += 1;
            black_box(sender.seal(ctr, &mut buf, MTU_PAYLOAD))
        })
    });
    let mut sealed = vec![0x5au8; total];
    sender.seal(7, &mut sealed, MTU_PAYLOAD);
    assert_eq!(receiver.open(7, &mut sealed.clone()), Ok(MTU_PAYLOAD));
    g.bench_function("open_1420", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |buf| black_box(receiver.open(7, buf)),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn device_pair() -> (Device, Device, Instant) {
    let now = Instant::now();
    let unix = Duration::from_secs(1_750_000_000);
    let mut rng = BenchRng(99);
    let ka = PrivateKey::generate(&mut rng);
    let kb = PrivateKey::generate(&mut rng);
    let mut a = Device::new(Box::new(BenchRng(1)), now, unix);
    let mut b = Device::new(Box::new(BenchRng(2)), now, unix);
    a.set_private_key(Some(ka.clone()));
    b.set_private_key(Some(kb.clone()));
    let pb = a.add_peer(kb.public_key()).unwrap();
    let pa = b.add_peer(ka.public_key()).unwrap();
    a.set_endpoint(pb, "192.0.2.2:51820".parse().unwrap())
        .unwrap();
    a.add_allowed_ip(pb, "10.0.0.2".parse().unwrap(), 32)
        .unwrap();
    b.add_allowed_ip(pa, "10.0.0.1".parse().unwrap(), 32)
        .unwrap();
    // Handshake: A's first packet is staged and starts it.
    let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    let mut buf = vec![0u8; 2048];
    let first = ipv4(60, false);
    assert!(matches!(
        a.handle_outgoing(now, &first, &mut buf),
        Outgoing::Staged { .. }
    ));
    let t = a.poll_transmit(now, &mut buf).unwrap();
    b.handle_datagram(now, Endpoint::new(a_addr), &mut buf[..t.len])
        .unwrap();
    let t = b.poll_transmit(now, &mut buf).unwrap();
    a.handle_datagram(now, Endpoint::new(b_addr), &mut buf[..t.len])
        .unwrap();
    let t = a.poll_transmit(now, &mut buf).unwrap();
    let r = b.handle_datagram(now, Endpoint::new(a_addr), &mut buf[..t.len]);
    assert!(matches!(r, Ok(Received::Packet { .. })));
    (a, b, now)
}

fn bench_device(c: &mut Criterion) {
    let (mut a, mut b, now) = device_pair();
    let a_addr = Endpoint::new("192.0.2.1:51820".parse().unwrap());
    let packet = ipv4(MTU_PAYLOAD, false);
    let mut g = c.benchmark_group("device");
    g.throughput(Throughput::Bytes(MTU_PAYLOAD as u64));
    g.bench_function("handle_outgoing_1420", |bch| {
        let mut out = vec![0u8; MTU_PAYLOAD + TRANSPORT_OVERHEAD + PADDING_MULTIPLE];
        bch.iter(|| black_box(a.handle_outgoing(now, black_box(&packet), &mut out)))
    });
    // Each open needs a datagram with a fresh counter: A seals it in the untimed setup.
    g.bench_function("handle_datagram_1420", |bch| {
        let mut out = vec![0u8; MTU_PAYLOAD + TRANSPORT_OVERHEAD + PADDING_MULTIPLE];
        bch.iter_batched_ref(
            || match a.handle_outgoing(now, &packet, &mut out) {
                Outgoing::Sent { len, .. } => out[..len].to_vec(),
                other => panic!("{other:?}"),
            },
            |d| {
                let r = b.handle_datagram(now, a_addr, d);
                debug_assert!(matches!(
                    r,
                    Ok(Received::Packet {
                        len: MTU_PAYLOAD,
                        ..
                    })
                ));
                black_box(r)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_boringtun(c: &mut Criterion) {
    use boringtun::x25519;
    let mut rng = BenchRng(7);
    let si = x25519::StaticSecret::from(*PrivateKey::generate(&mut rng).as_bytes());
    let sr = x25519::StaticSecret::from(*PrivateKey::generate(&mut rng).as_bytes());
    let pi = x25519::PublicKey::from(&si);
    let pr = x25519::PublicKey::from(&sr);
    let mut ti = Tunn::new(
        si,
        pr,
        None,
        None,
        1,
        Some(Arc::new(RateLimiter::new(&pi, u64::MAX))),
    );
    let mut tr = Tunn::new(
        sr,
        pi,
        None,
        None,
        2,
        Some(Arc::new(RateLimiter::new(&pr, u64::MAX))),
    );
    let ip = Some("192.0.2.1".parse().unwrap());
    let mut b1 = vec![0u8; 2048];
    let mut b2 = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = ti.format_handshake_initiation(&mut b1, false) else {
        panic!()
    };
    let TunnResult::WriteToNetwork(resp) = tr.decapsulate(ip, init, &mut b2) else {
        panic!()
    };
    let TunnResult::WriteToNetwork(ka) = ti.decapsulate(ip, resp, &mut b1) else {
        panic!()
    };
    assert!(matches!(tr.decapsulate(ip, ka, &mut b2), TunnResult::Done));

    let packet = ipv4(MTU_PAYLOAD, false);
    let mut g = c.benchmark_group("boringtun");
    g.throughput(Throughput::Bytes(MTU_PAYLOAD as u64));
    g.bench_function("encapsulate_1420", |bch| {
        bch.iter(|| match ti.encapsulate(black_box(&packet), &mut b1) {
            TunnResult::WriteToNetwork(d) => black_box(d.len()),
            _ => panic!(),
        })
    });
    g.bench_function("decapsulate_1420", |bch| {
        bch.iter_batched_ref(
            || match ti.encapsulate(&packet, &mut b1) {
                TunnResult::WriteToNetwork(d) => d.to_vec(),
                _ => panic!(),
            },
            |d| match tr.decapsulate(ip, d, &mut b2) {
                TunnResult::WriteToTunnelV4(p, _) => black_box(p.len()),
                other => panic!("{other:?}"),
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn bench_ring(c: &mut Criterion) {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let key = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &[0x33; 32]).unwrap());
    let mut g = c.benchmark_group("ring");
    for n in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("seal_{n}"), |b| {
            let mut buf = vec![0x5au8; n];
            let mut ctr = 0u64;
            b.iter(|| {
                ctr += 1;
                let nonce = Nonce::assume_unique_for_key(nonce(ctr));
                black_box(
                    key.seal_in_place_separate_tag(nonce, Aad::empty(), &mut buf)
                        .unwrap(),
                )
            })
        });
        let mut sealed = vec![0x5au8; n];
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(9)),
                Aad::empty(),
                &mut sealed,
            )
            .unwrap();
        sealed.extend_from_slice(tag.as_ref());
        g.bench_function(format!("open_{n}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    let nonce = Nonce::assume_unique_for_key(nonce(9));
                    black_box(key.open_in_place(nonce, Aad::empty(), buf).unwrap().len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_rustcrypto(c: &mut Criterion) {
    use chacha20poly1305::aead::{AeadInPlace, KeyInit};
    use chacha20poly1305::{ChaCha20Poly1305, Tag};
    let cipher = ChaCha20Poly1305::new(&[0x33u8; 32].into());
    let mut g = c.benchmark_group("rustcrypto");
    for n in SIZES {
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(format!("seal_{n}"), |b| {
            let mut buf = vec![0x5au8; n];
            let mut ctr = 0u64;
            b.iter(|| {
                ctr += 1;
                black_box(
                    cipher
                        .encrypt_in_place_detached(&nonce(ctr).into(), &[], &mut buf)
                        .unwrap(),
                )
            })
        });
        let mut sealed = vec![0x5au8; n];
        let tag: Tag = cipher
            .encrypt_in_place_detached(&nonce(9).into(), &[], &mut sealed)
            .unwrap();
        g.bench_function(format!("open_{n}"), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |buf| {
                    cipher
                        .decrypt_in_place_detached(&nonce(9).into(), &[], buf, &tag)
                        .unwrap();
                    black_box(buf.len())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    targets = bench_keypair, bench_device, bench_boringtun, bench_ring, bench_rustcrypto
}
criterion_main!(benches);
