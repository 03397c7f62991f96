//! The batch AEAD against ring, one message at a time, as the oracle: same ciphertexts, same
//! tags, the same verdicts on tampered messages — for any mix of lengths and counters.

use ferrowg_chacha::{lanes_enabled, open_many, seal_many, Key, Message, TAG_LEN};
use proptest::prelude::*;

fn ring_seal(key: &[u8; 32], counter: u64, plaintext: &[u8]) -> Vec<u8> {
    use ring::aead::*;
    let k = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).unwrap());
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_le_bytes());
    let mut out = plaintext.to_vec();
    let tag = k
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(n), Aad::empty(), &mut out)
        .unwrap();
    out.extend_from_slice(tag.as_ref());
    out
}

fn batch_strategy() -> impl Strategy<Value = ([u8; 32], Vec<(u64, Vec<u8>)>)> {
    let message = (
        prop_oneof![any::<u64>(), 0u64..4, Just(u64::MAX - 1)],
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..200),
            proptest::collection::vec(any::<u8>(), 1400..1500),
            proptest::collection::vec(any::<u8>(), 0..5000),
        ],
    );
    (any::<[u8; 32]>(), proptest::collection::vec(message, 0..20))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn seal_many_matches_ring_and_opens_back((key, batch) in batch_strategy()) {
        let k = Key::new(&key);
        let mut bufs: Vec<Vec<u8>> = batch
            .iter()
            .map(|(_, p)| { let mut b = p.clone(); b.resize(p.len() + TAG_LEN, 0); b })
            .collect();
        let mut msgs: Vec<Message> = bufs
            .iter_mut()
            .zip(&batch)
            .map(|(buf, (counter, _))| Message::new(*counter, buf))
            .collect();
        seal_many(&k, &mut msgs);
        for ((counter, plaintext), sealed) in batch.iter().zip(&bufs) {
            prop_assert_eq!(sealed, &ring_seal(&key, *counter, plaintext));
        }
        let mut ok = vec![false; batch.len()];
        let mut msgs: Vec<Message> = bufs
            .iter_mut()
            .zip(&batch)
            .map(|(buf, (counter, _))| Message::new(*counter, buf))
            .collect();
        open_many(&k, &mut msgs, &mut ok);
        prop_assert!(ok.iter().all(|&o| o));
        for ((_, plaintext), opened) in batch.iter().zip(&bufs) {
            prop_assert_eq!(&opened[..plaintext.len()], &plaintext[..]);
        }
    }

    #[test]
    fn open_many_rejects_exactly_the_tampered(
        (key, batch) in batch_strategy(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0u8..8, any::<bool>()), 0..6),
    ) {
        let k = Key::new(&key);
        let mut bufs: Vec<Vec<u8>> =
            batch.iter().map(|(c, p)| ring_seal(&key, *c, p)).collect();
        let mut counters: Vec<u64> = batch.iter().map(|(c, _)| *c).collect();
        let mut tampered = vec![false; batch.len()];
        for (which, bit, wrong_counter) in flips {
            if batch.is_empty() { break; }
            let i = which.index(batch.len());
            if wrong_counter {
                counters[i] = counters[i].wrapping_add(1);
            } else {
                let at = bit as usize * 7919 % bufs[i].len();
                bufs[i][at] ^= 1 << bit;
            }
            // Two flips of the same bit cancel; compare with ring's verdict, not the count.
            let mut probe = bufs[i].clone();
            tampered[i] = Key::new(&key).open_in_place(counters[i], &[], &mut probe).is_none();
        }
        let mut ok = vec![false; batch.len()];
        let mut msgs: Vec<Message> = bufs
            .iter_mut()
            .zip(&counters)
            .map(|(buf, counter)| Message::new(*counter, buf))
            .collect();
        open_many(&k, &mut msgs, &mut ok);
        for (i, (ok, tampered)) in ok.iter().zip(&tampered).enumerate() {
            prop_assert_eq!(*ok, !tampered, "message {}", i);
            if *ok {
                prop_assert_eq!(&bufs[i][..batch[i].1.len()], &batch[i].1[..]);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Sealing from a separate plaintext into a buffer with anything in it, zero-padded up
    /// to the buffer (as the data plane pads packets to 16 bytes), is ring's seal of the
    /// padded plaintext.
    #[test]
    fn seal_many_from_a_separate_plaintext_pads_with_zeros(
        (key, batch) in batch_strategy(),
        pads in proptest::collection::vec(0usize..70, 20),
        junk in any::<u8>(),
        in_place in proptest::collection::vec(any::<bool>(), 20),
    ) {
        let k = Key::new(&key);
        let mut bufs: Vec<Vec<u8>> = batch
            .iter()
            .zip(&pads)
            .map(|((_, p), pad)| vec![junk; p.len() + pad + TAG_LEN])
            .collect();
        for (((_, p), buf), &in_place) in batch.iter().zip(bufs.iter_mut()).zip(&in_place) {
            if in_place {
                buf.fill(0);
                buf[..p.len()].copy_from_slice(p);
            }
        }
        let mut msgs: Vec<Message> = bufs
            .iter_mut()
            .zip(&batch)
            .zip(&in_place)
            .map(|((buf, (counter, p)), &in_place)| Message {
                counter: *counter,
                buf,
                plaintext: (!in_place).then_some(&p[..]),
            })
            .collect();
        seal_many(&k, &mut msgs);
        for (((counter, plaintext), pad), sealed) in batch.iter().zip(&pads).zip(&bufs) {
            let mut padded = plaintext.clone();
            padded.resize(plaintext.len() + pad, 0);
            prop_assert_eq!(sealed, &ring_seal(&key, *counter, &padded));
        }
    }
}

/// The cases a random batch reaches only by chance, in one group of eight (the multi-buffer
/// path where the CPU has it): an empty message, separate plaintexts that are empty or end
/// blocks before their buffer does, lengths around a block, and messages whose runs of
/// ChaCha20 blocks straddle the sixteen-lane steps.
#[test]
fn edge_cases_of_one_group_match_ring() {
    let key = [0x5au8; 32];
    let k = Key::new(&key);
    // (plaintext length, zero padding after it, sealed from a separate plaintext)
    let cases: [(usize, usize, bool); 8] = [
        (0, 0, false),
        (0, 70, true),
        (200, 130, true),
        (1420, 0, true),
        (1, 15, false),
        (63, 1, true),
        (64, 0, false),
        (1421, 3, true),
    ];
    let plaintexts: Vec<Vec<u8>> = cases
        .iter()
        .enumerate()
        .map(|(i, &(n, _, _))| (0..n).map(|b| (b * 13 + i) as u8).collect())
        .collect();
    let mut bufs: Vec<Vec<u8>> = cases
        .iter()
        .zip(&plaintexts)
        .map(|(&(n, pad, separate), p)| {
            let mut b = vec![0xee; n + pad + TAG_LEN];
            if !separate {
                b.fill(0);
                b[..n].copy_from_slice(p);
            }
            b
        })
        .collect();
    let mut msgs: Vec<Message> = bufs
        .iter_mut()
        .zip(&cases)
        .zip(&plaintexts)
        .enumerate()
        .map(|(i, ((buf, &(_, _, separate)), p))| Message {
            counter: 1000 + i as u64,
            buf,
            plaintext: separate.then_some(&p[..]),
        })
        .collect();
    seal_many(&k, &mut msgs);
    for (i, ((&(n, pad, _), p), sealed)) in cases.iter().zip(&plaintexts).zip(&bufs).enumerate() {
        let mut padded = p.clone();
        padded.resize(n + pad, 0);
        assert_eq!(
            sealed,
            &ring_seal(&key, 1000 + i as u64, &padded),
            "message {i}"
        );
    }
    let mut ok = [false; 8];
    let mut msgs: Vec<Message> = bufs
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| Message::new(1000 + i as u64, buf))
        .collect();
    open_many(&k, &mut msgs, &mut ok);
    assert_eq!(ok, [true; 8]);
    for (i, ((&(n, pad, _), p), opened)) in cases.iter().zip(&plaintexts).zip(&bufs).enumerate() {
        assert_eq!(&opened[..n], &p[..], "message {i}");
        assert!(opened[n..n + pad].iter().all(|&b| b == 0), "message {i}");
    }
}

#[test]
fn a_buffer_shorter_than_a_tag_fails_to_open_and_spares_the_others() {
    let key = [9u8; 32];
    let k = Key::new(&key);
    let mut good: Vec<Vec<u8>> = (0..9)
        .map(|i| ring_seal(&key, i, &[i as u8; 100]))
        .collect();
    let mut short = vec![1u8; 10];
    let mut msgs: Vec<Message> = good
        .iter_mut()
        .enumerate()
        .map(|(i, buf)| Message::new(i as u64, buf))
        .collect();
    msgs.insert(4, Message::new(4, &mut short));
    let mut ok = vec![false; msgs.len()];
    open_many(&k, &mut msgs, &mut ok);
    let expected: Vec<bool> = (0..10).map(|i| i != 4).collect();
    assert_eq!(ok, expected);
}

#[test]
fn kernels_are_on_where_the_cpu_has_them_and_off_when_disabled() {
    // Whether this machine runs the kernels or only ring, say so: the proptests above cover
    // whichever path it has.
    #[cfg(target_arch = "x86_64")]
    let cpu =
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512ifma");
    #[cfg(not(target_arch = "x86_64"))]
    let cpu = false;
    assert_eq!(lanes_enabled(), cpu);
    eprintln!(
        "multi-buffer kernels: {}",
        if cpu { "on" } else { "absent (ring only)" }
    );
}
