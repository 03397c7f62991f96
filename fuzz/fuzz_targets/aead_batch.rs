//! The batch AEAD (`ferrowg-chacha`, the only crate with `unsafe` outside the OS wrappers)
//! on arbitrary batches: any key, 0-20 messages of any length up to 2 KiB, any counters, in
//! place or from a separate plaintext with padding. Sealing must equal one-by-one sealing
//! (ring), opening must give the plaintexts back, and a batch with one byte changed must
//! fail exactly that message. Run it with FUZZ_SANITIZER=address to check the loads and
//! stores too.
#![no_main]

use ferrowg_chacha::{open_many, seal_many, Key, Message, TAG_LEN};
use libfuzzer_sys::fuzz_target;

struct Spec {
    counter: u64,
    plaintext: Vec<u8>,
    pad: usize,
    separate: bool,
}

fn specs(mut data: &[u8]) -> Vec<Spec> {
    let mut out = Vec::new();
    while data.len() >= 11 && out.len() < 20 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize % 2049;
        let counter = u64::from_le_bytes(data[2..10].try_into().unwrap());
        let mode = data[10];
        data = &data[11..];
        let take = len.min(data.len());
        let mut plaintext = data[..take].to_vec();
        plaintext.resize(len, mode);
        data = &data[take..];
        out.push(Spec {
            counter,
            plaintext,
            pad: (mode >> 1) as usize % 64,
            separate: mode & 1 == 1,
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 34 {
        return;
    }
    let key_bytes: [u8; 32] = data[..32].try_into().unwrap();
    let flip = data[32] as usize;
    let specs = specs(&data[33..]);
    let key = Key::new(&key_bytes);

    // Seal in one batch.
    let mut bufs: Vec<Vec<u8>> = specs
        .iter()
        .map(|s| {
            let mut b = vec![0x5a; s.plaintext.len() + s.pad + TAG_LEN];
            if !s.separate {
                b[..s.plaintext.len()].copy_from_slice(&s.plaintext);
                b[s.plaintext.len()..s.plaintext.len() + s.pad].fill(0);
            }
            b
        })
        .collect();
    let mut msgs: Vec<Message> = bufs
        .iter_mut()
        .zip(&specs)
        .map(|(buf, s)| Message {
            counter: s.counter,
            buf,
            plaintext: s.separate.then_some(&s.plaintext[..]),
        })
        .collect();
    seal_many(&key, &mut msgs);

    // One by one, through ring.
    for (s, sealed) in specs.iter().zip(&bufs) {
        let mut one = s.plaintext.clone();
        one.resize(s.plaintext.len() + s.pad + TAG_LEN, 0);
        key.seal_in_place(s.counter, &[], &mut one);
        assert_eq!(&one, sealed);
    }

    // Change one byte of one message (if any), open the batch.
    let changed = (!bufs.is_empty()).then(|| {
        let i = flip % bufs.len();
        let at = (flip * 31) % bufs[i].len();
        bufs[i][at] ^= 1 | (flip as u8);
        i
    });
    let mut ok = vec![false; specs.len()];
    let mut msgs: Vec<Message> = bufs
        .iter_mut()
        .zip(&specs)
        .map(|(buf, s)| Message::new(s.counter, buf))
        .collect();
    open_many(&key, &mut msgs, &mut ok);
    for (i, (s, opened)) in specs.iter().zip(&bufs).enumerate() {
        if Some(i) == changed {
            assert!(!ok[i], "a changed message opened");
        } else {
            assert!(ok[i], "an authentic message did not open");
            assert_eq!(&opened[..s.plaintext.len()], &s.plaintext[..]);
        }
    }
});
