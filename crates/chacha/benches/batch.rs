//! Seal and open of batches of transport-sized messages: one by one through ring, and in one
//! `seal_many`/`open_many` call (the multi-buffer kernels where the CPU has them).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ferrowg_chacha::{open_many, seal_many, Key, Message, TAG_LEN};

fn batches(c: &mut Criterion) {
    let key = Key::new(&[7; 32]);
    for (count, len) in [
        (8usize, 1420usize),
        (64, 1420),
        (8, 64),
        (2, 1420),
        (3, 1420),
        (4, 1420),
        (5, 1420),
    ] {
        let mut bufs: Vec<Vec<u8>> = (0..count).map(|i| vec![i as u8; len + TAG_LEN]).collect();
        let mut group = c.benchmark_group(format!("{count}x{len}"));
        group.throughput(Throughput::Bytes((count * len) as u64));
        group.bench_function(BenchmarkId::new("seal", "ring"), |b| {
            b.iter(|| {
                for (i, buf) in bufs.iter_mut().enumerate() {
                    key.seal_in_place(i as u64, &[], buf);
                }
            })
        });
        group.bench_function(BenchmarkId::new("seal", "many"), |b| {
            b.iter(|| {
                let mut msgs: Vec<Message> = bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, buf)| Message::new(i as u64, buf))
                    .collect();
                seal_many(&key, &mut msgs);
            })
        });
        // Authentic messages to open.
        let sealed: Vec<Vec<u8>> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut b = b.clone();
                key.seal_in_place(i as u64, &[], &mut b);
                b
            })
            .collect();
        group.bench_function(BenchmarkId::new("open", "ring"), |b| {
            b.iter(|| {
                for (i, buf) in bufs.iter_mut().enumerate() {
                    buf.copy_from_slice(&sealed[i]);
                    assert!(key.open_in_place(i as u64, &[], buf).is_some());
                }
            })
        });
        group.bench_function(BenchmarkId::new("open", "many"), |b| {
            let mut ok = vec![false; count];
            b.iter(|| {
                let mut msgs: Vec<Message> = bufs
                    .iter_mut()
                    .enumerate()
                    .map(|(i, buf)| {
                        buf.copy_from_slice(&sealed[i]);
                        Message::new(i as u64, buf)
                    })
                    .collect();
                open_many(&key, &mut msgs, &mut ok);
                assert!(ok.iter().all(|&o| o));
            })
        });
        group.finish();
    }
}

criterion_group!(benches, batches);
criterion_main!(benches);
