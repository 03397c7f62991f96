//! Handshake cost, next to the X25519 it is made of.
//!
//! * `handshake/noise`: one complete Noise_IKpsk2 exchange with the `noise` functions alone —
//!   initiation created and consumed, response created and consumed, both sides' transport
//!   keys derived. Per side that is 3 X25519 + 1 key generation (the static-static DH is
//!   precomputed per peer, as the kernel does), so 6 DH + 2 keygens in all.
//! * `handshake/responder_only`: consuming one initiation and creating the response (3 DH +
//!   1 keygen), i.e. how many initiations per second one core can answer.
//! * `handshake/device`: the same through two `Device`s, with everything around it (mac1
//!   computed and checked, index table, session slots, timers, TAI64N, one confirming
//!   transport message that moves the responder's keypair to "current").
//! * `handshake/boringtun`: boringtun 0.7's `Tunn` pair doing the same exchange, for scale.
//! * `x25519/*`: the X25519 crate's limits — one DH (`StaticSecret::diffie_hellman`) and one
//!   key generation (`PublicKey::from(&StaticSecret)`, a fixed-base multiplication).
//! * `primitives/*`: BLAKE2s HASH, KDF3 (HMAC-BLAKE2s) and the 48-byte handshake AEAD, to see
//!   where the rest of the time goes.
//!
//! Read handshakes/s (criterion's `thrpt` in elem/s) against DH/s: the handshake cannot beat
//! (DH/s) / (6 + 2 × keygen/DH ratio).

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use ferrowg_proto::crypto;
use ferrowg_proto::device::{Device, Outgoing, Received};
use ferrowg_proto::keys::{PresharedKey, PrivateKey};
use ferrowg_proto::noise::{self, Identity, PeerKeys};
use ferrowg_proto::peer::Endpoint;
use ferrowg_proto::tai64n::Tai64N;
use rand_core::{CryptoRng, RngCore};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// xorshift64*: cheap and deterministic, so the figures are the protocol's, not the OS RNG's.
/// Marked CryptoRng for benchmarking only.
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

fn bench_noise(c: &mut Criterion) {
    let mut rng = BenchRng(0x1234_5678);
    let ki = PrivateKey::generate(&mut rng);
    let kr = PrivateKey::generate(&mut rng);
    let psk = PresharedKey::generate(&mut rng);
    let id_i = Identity::new(ki);
    let id_r = Identity::new(kr);
    // Each side's view of the other, static-static DH precomputed.
    let peer_of_i = PeerKeys::new(Some(&id_i), id_r.public, psk.clone());
    let peer_of_r = PeerKeys::new(Some(&id_r), id_i.public, psk);
    let ts = Tai64N::from_unix(Duration::from_secs(1_750_000_000));

    let mut g = c.benchmark_group("handshake");
    g.throughput(Throughput::Elements(1));
    g.bench_function("noise", |b| {
        b.iter(|| {
            let (init, st_i) =
                noise::create_initiation(&id_i, &peer_of_i, 1, ts, &mut rng).expect("init");
            let partial = noise::consume_initiation_begin(&id_r, black_box(&init)).expect("begin");
            let (_ts, st_r) =
                noise::consume_initiation_finish(&partial, &peer_of_r).expect("finish");
            let (resp, keys_r) =
                noise::create_response(&st_r, &peer_of_r, 2, &mut rng).expect("resp");
            let keys_i = noise::consume_response(&st_i, &id_i, &peer_of_i, black_box(&resp))
                .expect("consume");
            debug_assert_eq!(keys_i.send, keys_r.recv);
            black_box((keys_i, keys_r))
        })
    });

    // The responder's share alone (what answering one initiation costs: 3 DH + 1 keygen), the
    // figure that bounds how many initiations per second one core can answer.
    let (init, _st) = noise::create_initiation(&id_i, &peer_of_i, 1, ts, &mut rng).expect("init");
    g.bench_function("responder_only", |b| {
        b.iter(|| {
            let partial = noise::consume_initiation_begin(&id_r, black_box(&init)).expect("begin");
            let (_ts, st_r) =
                noise::consume_initiation_finish(&partial, &peer_of_r).expect("finish");
            black_box(noise::create_response(&st_r, &peer_of_r, 2, &mut rng).expect("resp"))
        })
    });

    // Two devices; each iteration moves simulated time past REJECT_AFTER_TIME so the next
    // packet from A finds no usable session and starts a fresh handshake (the initiation rate
    // limit, flood check and timestamp ordering are all satisfied by the time step).
    let now0 = Instant::now();
    let unix = Duration::from_secs(1_750_000_000);
    let mut a = Device::new(Box::new(BenchRng(1)), now0, unix);
    let mut bdev = Device::new(Box::new(BenchRng(2)), now0, unix);
    let ka = PrivateKey::generate(&mut rng);
    let kb = PrivateKey::generate(&mut rng);
    a.set_private_key(Some(ka.clone()));
    bdev.set_private_key(Some(kb.clone()));
    let pb = a.add_peer(kb.public_key()).unwrap();
    let pa = bdev.add_peer(ka.public_key()).unwrap();
    let a_addr: SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let b_addr: SocketAddr = "192.0.2.2:51820".parse().unwrap();
    a.set_endpoint(pb, b_addr).unwrap();
    a.add_allowed_ip(pb, "10.0.0.2".parse().unwrap(), 32)
        .unwrap();
    bdev.add_allowed_ip(pa, "10.0.0.1".parse().unwrap(), 32)
        .unwrap();
    let mut packet = vec![0u8; 28];
    packet[0] = 0x45;
    packet[2..4].copy_from_slice(&28u16.to_be_bytes());
    packet[12..16].copy_from_slice(&[10, 0, 0, 1]);
    packet[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let mut now = now0;
    let mut buf = [0u8; 256];
    g.bench_function("device", |b| {
        b.iter(|| {
            now += Duration::from_secs(181);
            let r = a.handle_outgoing(now, &packet, &mut buf);
            debug_assert!(matches!(r, Outgoing::Staged { .. }));
            let t = a.poll_transmit(now, &mut buf).expect("initiation");
            let r = bdev.handle_datagram(now, Endpoint::new(a_addr), &mut buf[..t.len]);
            debug_assert_eq!(r, Ok(Received::Nothing));
            let t = bdev.poll_transmit(now, &mut buf).expect("response");
            let r = a.handle_datagram(now, Endpoint::new(b_addr), &mut buf[..t.len]);
            debug_assert_eq!(r, Ok(Received::Nothing));
            let t = a.poll_transmit(now, &mut buf).expect("staged packet");
            let r = bdev.handle_datagram(now, Endpoint::new(a_addr), &mut buf[..t.len]);
            debug_assert!(matches!(r, Ok(Received::Packet { .. })));
            black_box(r)
        })
    });
    assert!(a.peer(pb).unwrap().last_handshake().is_some());

    // boringtun 0.7 for comparison: a Tunn pair, with a rate limiter that never reports load
    // (its default, 10 handshakes/s per Tunn, would start answering with cookies).
    {
        use boringtun::noise::rate_limiter::RateLimiter;
        use boringtun::noise::{Tunn, TunnResult};
        use boringtun::x25519;
        let si = x25519::StaticSecret::from(*PrivateKey::generate(&mut rng).as_bytes());
        let sr = x25519::StaticSecret::from(*PrivateKey::generate(&mut rng).as_bytes());
        let pi = x25519::PublicKey::from(&si);
        let pr = x25519::PublicKey::from(&sr);
        let rl_i = Arc::new(RateLimiter::new(&pi, u64::MAX));
        let rl_r = Arc::new(RateLimiter::new(&pr, u64::MAX));
        let mut ti = Tunn::new(si, pr, Some([7; 32]), None, 1, Some(rl_i));
        let mut tr = Tunn::new(sr, pi, Some([7; 32]), None, 2, Some(rl_r));
        let ip = Some(a_addr.ip());
        let mut b1 = vec![0u8; 256];
        let mut b2 = vec![0u8; 256];
        let mut b3 = vec![0u8; 256];
        g.bench_function("boringtun", |b| {
            b.iter(|| {
                let TunnResult::WriteToNetwork(init) =
                    ti.format_handshake_initiation(&mut b1, true)
                else {
                    panic!("no initiation")
                };
                let TunnResult::WriteToNetwork(resp) = tr.decapsulate(ip, init, &mut b2) else {
                    panic!("no response")
                };
                let TunnResult::WriteToNetwork(ka) = ti.decapsulate(ip, resp, &mut b3) else {
                    panic!("no keepalive")
                };
                let r = tr.decapsulate(ip, ka, &mut b1);
                debug_assert!(matches!(r, TunnResult::Done));
                black_box(matches!(r, TunnResult::Done))
            })
        });
    }
    g.finish();
}

fn bench_x25519(c: &mut Criterion) {
    let mut rng = BenchRng(0xdead_beef);
    let mut a = [0u8; 32];
    let mut b = [0u8; 32];
    rng.fill_bytes(&mut a);
    rng.fill_bytes(&mut b);
    let sa = x25519_dalek::StaticSecret::from(a);
    let pb = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(b));

    let mut g = c.benchmark_group("x25519");
    g.throughput(Throughput::Elements(1));
    g.bench_function("diffie_hellman", |bch| {
        bch.iter(|| black_box(black_box(&sa).diffie_hellman(black_box(&pb))))
    });
    g.bench_function("keygen", |bch| {
        bch.iter_batched(
            || {
                let mut k = [0u8; 32];
                rng.fill_bytes(&mut k);
                x25519_dalek::StaticSecret::from(k)
            },
            |s| black_box(x25519_dalek::PublicKey::from(&s)),
            BatchSize::SmallInput,
        )
    });
    // The crate wrapper the handshake uses (adds the all-zero check).
    g.bench_function("crypto::dh", |bch| {
        bch.iter(|| black_box(crypto::dh(black_box(&a), pb.as_bytes())))
    });
    g.finish();
}

fn bench_primitives(c: &mut Criterion) {
    let key = [0x42u8; 32];
    let data = [0x17u8; 148];
    let mut g = c.benchmark_group("primitives");
    g.throughput(Throughput::Elements(1));
    g.bench_function("hash_64B", |b| {
        b.iter(|| black_box(crypto::hash(&[black_box(&data[..64])])))
    });
    g.bench_function("mac1_116B", |b| {
        b.iter(|| black_box(crypto::mac(&key, &[black_box(&data[..116])])))
    });
    g.bench_function("kdf3", |b| {
        b.iter(|| black_box(crypto::kdf::<3>(&key, black_box(&data[..32]))))
    });
    g.bench_function("aead_seal_32B", |b| {
        let mut out = [0u8; 48];
        b.iter(|| {
            crypto::aead_seal(&key, 0, black_box(&data[..32]), &key, &mut out);
            black_box(out[0])
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(20);
    targets = bench_noise, bench_x25519, bench_primitives
}
criterion_main!(benches);
