//! Cryptokey-routing table benchmarks: longest-prefix lookup among a million prefixes, and
//! bulk work on one value holding 130,000 prefixes.
//!
//! Tables and query addresses are built outside the timed closures, from a fixed-seed
//! xorshift generator so every run measures the same data.

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use ferrowg_proto::allowed_ips::AllowedIps;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Prefixes in the lookup table.
const TABLE_PREFIXES: usize = 1_000_000;
/// Share of the table that is IPv6, in percent.
const V6_PERCENT: u64 = 10;
/// Distinct peers the table's prefixes are spread over.
const PEERS: u64 = 10_000;
/// Query addresses per benchmark, cycled through; a power of two.
const QUERIES: usize = 1 << 16;
/// Prefixes given to the single value of the bulk benchmarks.
const ONE_VALUE_PREFIXES: usize = 130_000;

/// xorshift64*: deterministic and dependency-free.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound
    }

    fn u128(&mut self) -> u128 {
        (u128::from(self.next()) << 64) | u128::from(self.next())
    }
}

/// True for addresses in the family's first eighth (`0.0.0.0/3`, `::/3`). No prefix shorter
/// than /16 is placed there, so random addresses in it can miss, yet they share their
/// neighbourhood with the /16-and-longer prefixes that do land there: a miss is not merely
/// an empty region of the table.
fn in_miss_region_v4(addr: u32) -> bool {
    addr >> 29 == 0
}

fn in_miss_region_v6(addr: u128) -> bool {
    addr >> 125 == 0
}

/// A random prefix: IPv4 /8–/32 (uniform length) or, `V6_PERCENT` of the time, IPv6 /8–/128.
fn random_prefix(rng: &mut XorShift) -> (IpAddr, u8) {
    loop {
        if rng.below(100) < V6_PERCENT {
            let cidr = 8 + rng.below(121) as u8;
            let addr = rng.u128();
            if cidr >= 16 || !in_miss_region_v6(addr) {
                return (IpAddr::V6(Ipv6Addr::from(addr)), cidr);
            }
        } else {
            let cidr = 8 + rng.below(25) as u8;
            let addr = rng.next() as u32;
            if cidr >= 16 || !in_miss_region_v4(addr) {
                return (IpAddr::V4(Ipv4Addr::from(addr)), cidr);
            }
        }
    }
}

struct LookupData {
    table: AllowedIps<u32>,
    v4_hit: Vec<[u8; 4]>,
    v4_miss: Vec<[u8; 4]>,
    v6_hit: Vec<[u8; 16]>,
    v6_miss: Vec<[u8; 16]>,
}

fn lookup_data() -> LookupData {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut table = AllowedIps::new();
    let mut v4_prefixes = Vec::new();
    let mut v6_prefixes = Vec::new();
    // Short prefixes repeat often (there are only 256 /8s); keep drawing until the table
    // holds the full count of distinct prefixes.
    while table.len() < TABLE_PREFIXES {
        let (addr, cidr) = random_prefix(&mut rng);
        table
            .insert(addr, cidr, rng.below(PEERS) as u32)
            .expect("valid cidr");
        match addr {
            IpAddr::V4(a) => v4_prefixes.push((u32::from(a), cidr)),
            IpAddr::V6(a) => v6_prefixes.push((u128::from(a), cidr)),
        }
    }

    // Hits: a random inserted prefix with random host bits, so hits weigh towards the long
    // prefixes that make up most of the table (the deepest walks).
    let v4_hit: Vec<[u8; 4]> = (0..QUERIES)
        .map(|_| {
            let (prefix, cidr) = v4_prefixes[rng.below(v4_prefixes.len() as u64) as usize];
            let host = (rng.next() as u32)
                .checked_shr(u32::from(cidr))
                .unwrap_or(0);
            (prefix | host).to_be_bytes()
        })
        .collect();
    let v6_hit: Vec<[u8; 16]> = (0..QUERIES)
        .map(|_| {
            let (prefix, cidr) = v6_prefixes[rng.below(v6_prefixes.len() as u64) as usize];
            let host = rng.u128().checked_shr(u32::from(cidr)).unwrap_or(0);
            (prefix | host).to_be_bytes()
        })
        .collect();
    let mut v4_miss = Vec::with_capacity(QUERIES);
    while v4_miss.len() < QUERIES {
        let addr = (rng.next() as u32) >> 3;
        if table.lookup_v4(&addr.to_be_bytes()).is_none() {
            v4_miss.push(addr.to_be_bytes());
        }
    }
    let mut v6_miss = Vec::with_capacity(QUERIES);
    while v6_miss.len() < QUERIES {
        let addr = rng.u128() >> 3;
        if table.lookup_v6(&addr.to_be_bytes()).is_none() {
            v6_miss.push(addr.to_be_bytes());
        }
    }
    for q in &v4_hit {
        assert!(table.lookup_v4(q).is_some());
    }
    for q in &v6_hit {
        assert!(table.lookup_v6(q).is_some());
    }
    LookupData {
        table,
        v4_hit,
        v4_miss,
        v6_hit,
        v6_miss,
    }
}

/// One lookup per iteration, cycling through `queries`: the reported time is per lookup.
fn bench_queries<const N: usize>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    queries: &[[u8; N]],
    lookup: impl Fn(&[u8; N]) -> Option<u32>,
) {
    group.bench_function(name, |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) & (QUERIES - 1);
            lookup(black_box(&queries[i]))
        })
    });
}

fn lookup_1m(c: &mut Criterion) {
    let data = lookup_data();
    let table = &data.table;
    let mut group = c.benchmark_group("lookup_1m_prefixes");
    group.throughput(Throughput::Elements(1));
    bench_queries(&mut group, "v4_hit", &data.v4_hit, |a| table.lookup_v4(a));
    bench_queries(&mut group, "v4_miss", &data.v4_miss, |a| table.lookup_v4(a));
    bench_queries(&mut group, "v6_hit", &data.v6_hit, |a| table.lookup_v6(a));
    bench_queries(&mut group, "v6_miss", &data.v6_miss, |a| table.lookup_v6(a));
    group.finish();
}

/// 130,000 distinct prefixes for one value: IPv4 /32s and /24s and some IPv6 /128s.
fn one_value_prefixes() -> Vec<(IpAddr, u8)> {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let mut seen = std::collections::HashSet::new();
    let mut prefixes = Vec::with_capacity(ONE_VALUE_PREFIXES);
    while prefixes.len() < ONE_VALUE_PREFIXES {
        let prefix = match rng.below(8) {
            0 => (IpAddr::V6(Ipv6Addr::from(rng.u128())), 128),
            1 => (IpAddr::V4(Ipv4Addr::from(rng.next() as u32 & !0xff)), 24),
            _ => (IpAddr::V4(Ipv4Addr::from(rng.next() as u32)), 32),
        };
        if seen.insert(prefix) {
            prefixes.push(prefix);
        }
    }
    prefixes
}

fn one_value_130k(c: &mut Criterion) {
    let prefixes = one_value_prefixes();
    let build = || {
        let mut table = AllowedIps::new();
        for &(addr, cidr) in &prefixes {
            table.insert(addr, cidr, 7u32).expect("valid cidr");
        }
        table
    };
    let built = build();
    assert_eq!(built.len(), ONE_VALUE_PREFIXES);

    let mut group = c.benchmark_group("one_value_130k_prefixes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(ONE_VALUE_PREFIXES as u64));
    group.bench_function("insert", |b| b.iter_with_large_drop(build));
    group.bench_function("list", |b| {
        b.iter(|| {
            let listing = black_box(&built).prefixes_of(7);
            listing.map(|(_, cidr)| usize::from(cidr)).sum::<usize>()
        })
    });
    group.bench_function("remove_value", |b| {
        b.iter_batched(
            || built.clone(),
            |mut table| {
                table.remove_value(7);
                table
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Listing one value's prefixes among 10,000 values with four prefixes each: the cost must
/// not grow with the rest of the table.
fn many_values(c: &mut Criterion) {
    const VALUES: u32 = 10_000;
    let mut rng = XorShift(0x0123_4567_89ab_cdef);
    let mut table = AllowedIps::new();
    for value in 0..VALUES {
        for _ in 0..3 {
            let addr = Ipv4Addr::from(rng.next() as u32);
            table
                .insert(IpAddr::V4(addr), 32, value)
                .expect("valid cidr");
        }
        let addr = Ipv6Addr::from(rng.u128());
        table
            .insert(IpAddr::V6(addr), 128, value)
            .expect("valid cidr");
    }
    let mut group = c.benchmark_group("values_10k");
    group.bench_function("prefixes_of_one", |b| {
        let mut value = 0;
        b.iter(|| {
            value = (value + 1) % VALUES;
            let listing = black_box(&table).prefixes_of(black_box(value));
            listing.map(|(_, cidr)| usize::from(cidr)).sum::<usize>()
        })
    });
    group.finish();
}

criterion_group!(benches, lookup_1m, one_value_130k, many_values);
criterion_main!(benches);
