//! Known-answer tests: RFC 7748 (X25519), RFC 8439 (ChaCha20-Poly1305), RFC 7693 (BLAKE2s),
//! draft-irtf-cfrg-xchacha (XChaCha20-Poly1305), wireguard-go's KDF vectors, and the
//! deterministic full-handshake vectors of the project's protocol fact sheet (§10.1), which
//! were validated against boringtun.

use ferrowg_proto::constants::*;
use ferrowg_proto::cookie::{self, CookieChecker, CookieGenerator};
use ferrowg_proto::crypto::{self, AeadKey};
use ferrowg_proto::keys::{PresharedKey, PrivateKey, PublicKey};
use ferrowg_proto::messages::{CookieReply, Initiation, Response};
use ferrowg_proto::noise::{self, Identity, PeerKeys};
use ferrowg_proto::session::Keypair;
use ferrowg_proto::tai64n::Tai64N;
use rand_core::{CryptoRng, RngCore};
use std::time::{Duration, Instant};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn h32(s: &str) -> [u8; 32] {
    hex(s).try_into().unwrap()
}

fn seq(start: u8, n: usize) -> Vec<u8> {
    (0..n).map(|i| start.wrapping_add(i as u8)).collect()
}

/// An "RNG" that returns one fixed byte: the document's ephemeral keys are 0x11… and 0x22….
struct Fixed(u8);
impl RngCore for Fixed {
    fn next_u32(&mut self) -> u32 {
        u32::from_le_bytes([self.0; 4])
    }
    fn next_u64(&mut self) -> u64 {
        u64::from_le_bytes([self.0; 8])
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        dest.fill(self.0)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        dest.fill(self.0);
        Ok(())
    }
}
impl CryptoRng for Fixed {}

/// Returns the bytes 00, 01, 02, … (the cookie nonce of the vector).
struct Counting(u8);
impl RngCore for Counting {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for b in dest {
            *b = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for Counting {}

// ----- primitives ------------------------------------------------------------------------

#[test]
fn blake2s_rfc7693_and_kat() {
    assert_eq!(
        crypto::hash(&[b"abc"]).to_vec(),
        hex("508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982")
    );
    assert_eq!(
        crypto::hash(&[b""]).to_vec(),
        hex("69217a3079908094e11121d042354a7c1f55b6482ca1a51e1b250dfd1ed0eef9")
    );
    assert_eq!(
        crypto::hash(&[&[0u8]]).to_vec(),
        hex("e34d74dbaf4ff4c6abd871cc220451d2ea2648846c7757fbaac82fe51ad64bea")
    );
    // Split input gives the same digest as one piece.
    assert_eq!(crypto::hash(&[b"a", b"bc"]), crypto::hash(&[b"abc"]));
}

#[test]
fn mac_is_keyed_blake2s_with_16_byte_output() {
    // Not a truncation of the 32-byte keyed digest: the output length is in the parameter block.
    let key = seq(0, 32);
    let full = blake2s_simd::Params::new()
        .key(&key)
        .hash(b"")
        .as_bytes()
        .to_vec();
    assert_eq!(
        full,
        hex("48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49")
    );
    let m = crypto::mac(&key, &[b""]);
    assert_ne!(&m[..], &full[..16]);
    let direct = blake2s_simd::Params::new()
        .hash_length(16)
        .key(&key)
        .hash(b"");
    assert_eq!(&m[..], direct.as_bytes());
}

#[test]
fn kdf_vectors_from_wireguard_go() {
    let cases = [
        (
            "746573742d6b6579",
            "746573742d696e707574",
            [
                "6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633",
                "df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a",
                "fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24",
            ],
        ),
        (
            "776972656775617264",
            "776972656775617264",
            [
                "491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8",
                "1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f",
                "31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160",
            ],
        ),
        (
            "",
            "",
            [
                "8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0",
                "58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e",
                "0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e",
            ],
        ),
    ];
    for (key, input, expect) in cases {
        // The vectors use keys shorter than 32 bytes; the HMAC pads them, so a 32-byte
        // zero-padded chaining key is equivalent.
        let mut ck = [0u8; 32];
        let k = hex(key);
        ck[..k.len()].copy_from_slice(&k);
        let out = crypto::kdf::<3>(&ck, &hex(input));
        for i in 0..3 {
            assert_eq!(out[i].to_vec(), hex(expect[i]), "KDF output {}", i + 1);
        }
        let two = crypto::kdf::<2>(&ck, &hex(input));
        assert_eq!(two[..], out[..2]);
        let one = crypto::kdf::<1>(&ck, &hex(input));
        assert_eq!(one[0], out[0]);
    }
}

#[test]
fn x25519_rfc7748() {
    let cases = [
        (
            "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
            "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552",
        ),
        (
            "4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d",
            "e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493",
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957",
        ),
    ];
    for (k, u, out) in cases {
        assert_eq!(crypto::dh(&h32(k), &h32(u)).unwrap(), h32(out));
    }
    // Iterated: after 1 and 1000 rounds.
    let mut k = [0u8; 32];
    k[0] = 9;
    let mut u = k;
    for i in 1..=1000 {
        let r = crypto::dh(&k, &u).unwrap();
        u = k;
        k = r;
        if i == 1 {
            assert_eq!(
                k,
                h32("422c8e7a6227d7bca1350b3e2bb7279f7897b87bb6854b783c60e80311ae3079")
            );
        }
    }
    assert_eq!(
        k,
        h32("684cf59ba83309552800ef566f2f4d3c1c3887c49360e3875f2eb94d99532c51")
    );
    // §6.1 key agreement.
    let a = h32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
    let b = h32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
    assert_eq!(
        crypto::public_key(&a),
        h32("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
    );
    assert_eq!(
        crypto::public_key(&b),
        h32("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    );
    let shared = h32("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
    assert_eq!(crypto::dh(&a, &crypto::public_key(&b)).unwrap(), shared);
    assert_eq!(crypto::dh(&b, &crypto::public_key(&a)).unwrap(), shared);
}

#[test]
fn low_order_points_give_no_shared_secret() {
    let private = PrivateKey::from_base64("cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=").unwrap();
    for k in [
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "4Ot6fDtBuK4WVuP68Z/EatoJjeucMrH9hmIFFl9JuAA=",
        "X5yVvKNQjCSx0LFVnIPvWwREXMRYHI6G2CJO3dCfEVc=",
        "7P///////////////////////////////////////38=",
        "7f///////////////////////////////////////38=",
        "7v///////////////////////////////////////38=",
    ] {
        let public = PublicKey::from_base64(k).unwrap();
        assert_eq!(
            crypto::dh(private.as_bytes(), public.as_bytes()),
            None,
            "{k}"
        );
        let id = Identity::new(private.clone());
        assert!(!PeerKeys::new(Some(&id), public, PresharedKey::default()).can_handshake());
    }
}

const SUNSCREEN: &[u8] = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";

#[test]
fn chacha20poly1305_rfc8439() {
    let key: [u8; 32] = seq(0x80, 32).try_into().unwrap();
    let nonce = hex("070000004041424344454647");
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let expect_ct = hex("d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc3ff4def08e4b7a9de576d26586cec64b6116");
    let expect_tag = hex("1ae10b594f09e26a7e902ecbd0600691");
    // Our nonce layout is 4 zero bytes + LE64 counter; the RFC nonce 07000000 4041424344454647
    // is not of that form, so check the primitive through ring directly and our layout below.
    let k = ring::aead::LessSafeKey::new(
        ring::aead::UnboundKey::new(&ring::aead::CHACHA20_POLY1305, &key).unwrap(),
    );
    let mut buf = SUNSCREEN.to_vec();
    let tag = k
        .seal_in_place_separate_tag(
            ring::aead::Nonce::try_assume_unique_for_key(&nonce).unwrap(),
            ring::aead::Aad::from(&aad),
            &mut buf,
        )
        .unwrap();
    assert_eq!(buf, expect_ct);
    assert_eq!(tag.as_ref(), &expect_tag[..]);

    // WireGuard's nonce for counter 7: 00000000 0700000000000000.
    assert_eq!(
        crypto::nonce_bytes(7).to_vec(),
        hex("000000000700000000000000")
    );
    // Our AeadKey against ring with that nonce, and the round trip / tamper checks.
    let ours = AeadKey::new(&key);
    let mut m = SUNSCREEN.to_vec();
    m.extend_from_slice(&[0u8; 16]);
    ours.seal_in_place(7, &aad, &mut m);
    let mut r = SUNSCREEN.to_vec();
    let t = k
        .seal_in_place_separate_tag(
            ring::aead::Nonce::assume_unique_for_key(crypto::nonce_bytes(7)),
            ring::aead::Aad::from(&aad),
            &mut r,
        )
        .unwrap();
    r.extend_from_slice(t.as_ref());
    assert_eq!(m, r);
    let mut bad = m.clone();
    bad[3] ^= 1;
    assert!(ours.open_in_place(7, &aad, &mut bad).is_err());
    assert!(ours.open_in_place(8, &aad, &mut m.clone()).is_err());
    let n = ours.open_in_place(7, &aad, &mut m).unwrap();
    assert_eq!(&m[..n], SUNSCREEN);
}

#[test]
fn xchacha20poly1305_draft_vector() {
    let key: [u8; 32] = seq(0x80, 32).try_into().unwrap();
    let nonce: [u8; 24] = seq(0x40, 24).try_into().unwrap();
    let aad = hex("50515253c0c1c2c3c4c5c6c7");
    let mut out = vec![0u8; SUNSCREEN.len() + 16];
    crypto::xaead_seal(&key, &nonce, SUNSCREEN, &aad, &mut out);
    let expect = hex("bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b4522f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff921f9664c97637da9768812f615c68b13b52ec0875924c1c7987947deafd8780acf49");
    assert_eq!(out, expect);
    let mut back = vec![0u8; SUNSCREEN.len()];
    crypto::xaead_open(&key, &nonce, &out, &aad, &mut back).unwrap();
    assert_eq!(back, SUNSCREEN);
    out[0] ^= 1;
    assert!(crypto::xaead_open(&key, &nonce, &out, &aad, &mut back).is_err());
}

// ----- the deterministic handshake (PROTOCOL.md §10.1) -------------------------------------

const SI_PRIV: &str = "70076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c6a";
const SR_PRIV: &str = "58ab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e06b";
const INITIATION: &str = "01000000443322117b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13ec3f8bbe944e0c99
daaae8f27b8b12f1c67e00c86b77d0eeb515d0b423a739cda3c6afd3e0110c93bb54eb8484ada1232962bac03df010b8
03013f7bcc2ea6fbe47e2f0de44f69d716bf91ea7e9eb0f0886f35f472cff21dfc79fdb1000000000000000000000000
00000000";

struct Sides {
    initiator: Identity,
    responder: Identity,
}

fn sides() -> Sides {
    Sides {
        initiator: Identity::new(PrivateKey::from_bytes(h32(SI_PRIV))),
        responder: Identity::new(PrivateKey::from_bytes(h32(SR_PRIV))),
    }
}

fn timestamp() -> Tai64N {
    Tai64N::from_unix(Duration::from_secs(1_700_000_000))
}

#[test]
fn derived_constants_and_keys() {
    let s = sides();
    assert_eq!(
        s.initiator.public.to_base64(),
        "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo="
    );
    assert_eq!(
        s.responder.public.to_base64(),
        "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08="
    );
    assert_eq!(
        crypto::hash(&[CONSTRUCTION]),
        h32("60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36")
    );
    let c0 = crypto::hash(&[CONSTRUCTION]);
    assert_eq!(
        crypto::hash(&[&c0, IDENTIFIER]),
        h32("2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3")
    );
    assert_eq!(
        cookie::mac1_key(&s.responder.public),
        h32("52c0a95717f46ba7941f80cec1ead35984c9f023a996170d9e47e314d260dc96")
    );
    assert_eq!(
        cookie::cookie_key(&s.responder.public),
        h32("da2c25a7f8182d2a7a58b0978d9dcd7e5f76c3fcf138fd6e5754404304cacba0")
    );
    assert_eq!(
        cookie::mac1_key(&s.initiator.public),
        h32("0ec72453412f9befa2f799ea837d0b88429321711dd01f9025163123bd1905be")
    );
    assert_eq!(
        cookie::cookie_key(&s.initiator.public),
        h32("9c357cf611ac8d2e8e2369cda113f1ae6dc10d4f90c4d0f91fb235a27f890afd")
    );
}

fn make_initiation(s: &Sides, psk: PresharedKey) -> ([u8; 148], noise::InitiatorState) {
    let keys = PeerKeys::new(Some(&s.initiator), s.responder.public, psk);
    let (msg, state) = noise::create_initiation(
        &s.initiator,
        &keys,
        0x11223344,
        timestamp(),
        &mut Fixed(0x11),
    )
    .unwrap();
    let mut bytes = msg.to_bytes();
    CookieGenerator::new(&s.responder.public).add_macs(Instant::now(), &mut bytes);
    (bytes, state)
}

fn vector(
    psk: PresharedKey,
    response_hex: &str,
    t1: &str,
    t2: &str,
    data_hex: &str,
    keepalive_hex: &str,
) {
    let s = sides();
    let (init, istate) = make_initiation(&s, psk.clone());
    assert_eq!(init.to_vec(), hex(INITIATION), "initiation bytes");

    // Responder side.
    let checker = CookieChecker::new(&s.responder.public);
    assert!(checker.check_mac1(&init));
    let msg = Initiation::parse(&init).unwrap();
    let partial = noise::consume_initiation_begin(&s.responder, &msg).unwrap();
    assert_eq!(partial.initiator_static, s.initiator.public);
    let rkeys = PeerKeys::new(Some(&s.responder), s.initiator.public, psk.clone());
    let (ts, rstate) = noise::consume_initiation_finish(&partial, &rkeys).unwrap();
    assert_eq!(ts, timestamp());
    assert_eq!(ts.as_bytes().to_vec(), hex("400000006553f10a00000000"));
    let (resp, rsession) =
        noise::create_response(&rstate, &rkeys, 0x55667788, &mut Fixed(0x22)).unwrap();
    let mut resp_bytes = resp.to_bytes();
    CookieGenerator::new(&s.initiator.public).add_macs(Instant::now(), &mut resp_bytes);
    assert_eq!(resp_bytes.to_vec(), hex(response_hex), "response bytes");
    assert_eq!(rsession.recv, h32(t1));
    assert_eq!(rsession.send, h32(t2));

    // Initiator side.
    let ikeys = PeerKeys::new(Some(&s.initiator), s.responder.public, psk);
    assert!(CookieChecker::new(&s.initiator.public).check_mac1(&resp_bytes));
    let isession = noise::consume_response(
        &istate,
        &s.initiator,
        &ikeys,
        &Response::parse(&resp_bytes).unwrap(),
    )
    .unwrap();
    assert_eq!(isession.send, h32(t1));
    assert_eq!(isession.recv, h32(t2));

    // Transport: the 28-byte ICMP echo, padded to 32, counter 0.
    let now = Instant::now();
    let ikp = Keypair::new(&isession, true, 0x11223344, 0x55667788, now);
    let rkp = Keypair::new(&rsession, false, 0x55667788, 0x11223344, now);
    let inner = hex("4500001c000100004001f7cc0a0000010a0000020800f7ff00000000");
    let padded = ferrowg_proto::messages::padded_len(inner.len(), 1420);
    assert_eq!(padded, 32);
    let mut buf = vec![0u8; 16 + padded + 16];
    buf[16..16 + inner.len()].copy_from_slice(&inner);
    let n = ikp.seal(0, &mut buf, padded);
    assert_eq!(buf[..n].to_vec(), hex(data_hex), "transport bytes");
    let len = rkp.open(0, &mut buf[..n]).unwrap();
    assert_eq!(&buf[16..16 + inner.len()], &inner[..]);
    assert_eq!(len, 32);
    let mut ka = vec![0u8; 32];
    let n = rkp.seal(0, &mut ka, 0);
    assert_eq!(ka[..n].to_vec(), hex(keepalive_hex), "keepalive bytes");
    assert_eq!(ikp.open(0, &mut ka).unwrap(), 0);
}

#[test]
fn handshake_vector_a_with_psk() {
    vector(
        PresharedKey::from_bytes(seq(0x40, 32).try_into().unwrap()),
        "0200000088776655443322110faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20d071f3e3
         d8fa05f53ebd7085098abcf519a3dd6906a0246edc6593f0bfe2fabc00000000000000000000000000000000",
        "898e29c8eb2b84613067bd3b56e6023a3b76c10db35ba4fc74f508e26dd071d7",
        "11d318e95684f9aac78fcb86fee0ec4bbda02af666938f2b54c3dab62c56439a",
        "04000000887766550000000000000000446e19c741243569ad2c65e620cedd587bd00aac1b82fd672cff7f5abf78c62c
         6fbfe9c68c103261170943fadaa44102",
        "04000000443322110000000000000000e707bcf1aa6c9b295f32d4dd8cf684e0",
    );
}

#[test]
fn handshake_vector_b_without_psk() {
    vector(
        PresharedKey::default(),
        "0200000088776655443322110faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f209e46a356
         c83312dc8767cee2d0bad22e11782cb95417e42dc25c2088fcd9d60100000000000000000000000000000000",
        "35592ddce740c40650069356f4a3d91e834bf0980df0aabc3052c9be8189b883",
        "4fee8ac7c06a9542da3523251820536713c7e4b3b53c9216b9b9e1ebd7170b91",
        "040000008877665500000000000000003bb732039dcffc49a8232e65a4b0d1d8ea453e8a2f3855079420faf9f8c03298
         1f72b8a5a050cd3ed740157b933e40b9",
        "040000004433221100000000000000002c139c814ac7f2256a219bcd4fea41dc",
    );
}

#[test]
fn cookie_vector_a() {
    let s = sides();
    let (init, _) = make_initiation(&s, PresharedKey::default());
    let now = Instant::now();
    let mut checker = CookieChecker::new(&s.responder.public);
    checker.set_secret_for_test(seq(0, 32).try_into().unwrap(), now);
    let src: std::net::SocketAddr = "192.0.2.1:51820".parse().unwrap();
    let reply = checker
        .create_reply(now, &init, &src, &mut Counting(0))
        .unwrap();
    assert_eq!(
        reply.to_vec(),
        hex("0300000044332211000102030405060708090a0b0c0d0e0f101112131415161751e653fb82585bbd77e7eef4c4dcbf43
             114848128fd854f9a8269a117b5464fd")
    );
    // The initiator opens it and its next initiation carries the documented mac2.
    let mut gen = CookieGenerator::new(&s.responder.public);
    let mut again = init;
    gen.add_macs(now, &mut again);
    gen.consume_reply(now, &CookieReply::parse(&reply).unwrap())
        .unwrap();
    // A second copy of the same reply is refused: one cookie per sent mac1.
    assert!(gen
        .consume_reply(now, &CookieReply::parse(&reply).unwrap())
        .is_err());
    let mut with_cookie = init;
    gen.add_macs(now, &mut with_cookie);
    assert_eq!(
        with_cookie[132..].to_vec(),
        hex("e1f473dde4c04abc6cffdb06a7f2c7ec")
    );
    assert!(checker.check_mac2(now, &with_cookie, &src));
    // Bound to address *and* port; stale after the secret's two minutes.
    let other_port: std::net::SocketAddr = "192.0.2.1:51821".parse().unwrap();
    assert!(!checker.check_mac2(now, &with_cookie, &other_port));
    assert!(!checker.check_mac2(now + Duration::from_secs(121), &with_cookie, &src));
    // The sender stops using a cookie 115 s after receiving it.
    let mut late = init;
    gen.add_macs(now + Duration::from_secs(116), &mut late);
    assert_eq!(&late[132..], &[0u8; 16]);
}

#[test]
fn tampered_handshakes_are_refused() {
    let s = sides();
    let (init, _) = make_initiation(&s, PresharedKey::default());
    let checker = CookieChecker::new(&s.responder.public);
    for i in 0..148 {
        let mut t = init;
        t[i] ^= 0x40;
        let ok_mac = checker.check_mac1(&t);
        if i < 116 {
            assert!(!ok_mac, "byte {i} flip must break mac1");
        }
        if (8..116).contains(&i) {
            // Even with mac1 ignored, the AEADs catch every change to the encrypted parts.
            let m = Initiation::parse(&t).unwrap();
            let r = noise::consume_initiation_begin(&s.responder, &m).and_then(|p| {
                let k = PeerKeys::new(
                    Some(&s.responder),
                    p.initiator_static,
                    PresharedKey::default(),
                );
                noise::consume_initiation_finish(&p, &k).map(|_| ())
            });
            if i >= 40 {
                assert!(r.is_none(), "byte {i} flip must break the AEAD");
            }
        }
    }
}
