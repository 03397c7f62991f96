//! Per-source rate limiting of handshake messages while the device is under load (the
//! kernel's `ratelimiter.c` semantics).
//!
//! It is consulted only after a message carried a valid mac2, so the source address has been
//! shown to receive our cookie replies; it bounds how much handshake work any one source can
//! cost us. Each source gets a token bucket measured in nanoseconds of credit: a packet costs
//! `1 s / RATELIMIT_PACKETS_PER_SECOND`, and the bucket holds at most `RATELIMIT_BURST`
//! packets' worth.

use crate::constants::{RATELIMIT_BURST, RATELIMIT_PACKETS_PER_SECOND};
use siphasher::sip::SipHasher24;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::time::{Duration, Instant};

const NANOS_PER_SECOND: u64 = 1_000_000_000;
const PACKET_COST: u64 = NANOS_PER_SECOND / RATELIMIT_PACKETS_PER_SECOND;
const TOKEN_MAX: u64 = PACKET_COST * RATELIMIT_BURST;

/// A source idle this long has refilled its bucket long ago, so forgetting it changes no
/// decision: a new entry starts where a full bucket would be after one packet.
const IDLE_EXPIRY: Duration = Duration::from_secs(1);
const GC_INTERVAL: Duration = Duration::from_secs(1);

// Forgetting an idle entry is only invisible if it would have refilled completely by then.
const _: () = assert!(IDLE_EXPIRY.as_nanos() >= TOKEN_MAX as u128);

/// Most sources tracked at once (the kernel's largest table, 8192 buckets, times 8). Beyond
/// it, unknown sources are refused rather than letting a spoofing flood grow memory without
/// bound; known sources keep their buckets.
pub const MAX_ENTRIES: usize = 8192 * 8;

/// Builds SipHash-2-4 hashers under one secret key, so that a remote party choosing the keys
/// of a hash table cannot predict which of them collide.
#[derive(Clone)]
pub struct SipBuildHasher {
    key: [u8; 16],
}

impl SipBuildHasher {
    pub fn new(key: [u8; 16]) -> Self {
        SipBuildHasher { key }
    }
}

impl BuildHasher for SipBuildHasher {
    type Hasher = SipHasher24;

    fn build_hasher(&self) -> SipHasher24 {
        SipHasher24::new_with_key(&self.key)
    }
}

impl fmt::Debug for SipBuildHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key is what keeps collisions unpredictable; keep it out of logs.
        f.debug_struct("SipBuildHasher").finish_non_exhaustive()
    }
}

/// What a bucket is keyed by. IPv4 and IPv6 are separate variants so that an IPv4 address
/// can never share a bucket with an IPv6 prefix that happens to have the same bits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Source {
    V4(u32),
    /// The top 64 bits: a single subscriber is routinely handed a whole /64, so anything
    /// finer would let one attacker spread over 2^64 buckets.
    V6Prefix(u64),
}

impl Source {
    fn of(ip: IpAddr) -> Source {
        // A dual-stack socket reports IPv4 peers as `::ffff:a.b.c.d`, whose top 64 bits are
        // zero: without unmapping, every IPv4 source would share one bucket.
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// Credit in nanoseconds, at most `TOKEN_MAX`.
    tokens: u64,
    last: Instant,
}

/// Token buckets for every source that sent a handshake message recently.
pub struct RateLimiter {
    buckets: HashMap<Source, Bucket, SipBuildHasher>,
    last_gc: Option<Instant>,
}

impl RateLimiter {
    /// `sip_key` must be secret and random, or an attacker can aim its sources at one hash
    /// chain and make every lookup slow.
    pub fn new(sip_key: [u8; 16]) -> Self {
        RateLimiter {
            buckets: HashMap::with_hasher(SipBuildHasher::new(sip_key)),
            last_gc: None,
        }
    }

    /// Whether a handshake message from `ip` arriving at `now` may be processed; charges the
    /// source's bucket if so.
    pub fn allow(&mut self, now: Instant, ip: IpAddr) -> bool {
        self.collect_garbage(now);
        let source = Source::of(ip);
        if let Some(bucket) = self.buckets.get_mut(&source) {
            let elapsed = now.saturating_duration_since(bucket.last);
            let elapsed_nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            let tokens = bucket.tokens.saturating_add(elapsed_nanos).min(TOKEN_MAX);
            // Never move backwards: a caller's out-of-order `now` would otherwise let the
            // same interval be credited twice.
            bucket.last = bucket.last.max(now);
            let allowed = tokens >= PACKET_COST;
            bucket.tokens = if allowed {
                tokens - PACKET_COST
            } else {
                tokens
            };
            return allowed;
        }
        if self.buckets.len() >= MAX_ENTRIES {
            return false;
        }
        self.buckets.insert(
            source,
            Bucket {
                tokens: TOKEN_MAX - PACKET_COST,
                last: now,
            },
        );
        true
    }

    /// How many sources are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Drops sources idle for longer than `IDLE_EXPIRY`, at most once per `GC_INTERVAL`, so
    /// the full sweep's cost is spread over a second of traffic.
    fn collect_garbage(&mut self, now: Instant) {
        if let Some(last_gc) = self.last_gc {
            if now.saturating_duration_since(last_gc) < GC_INTERVAL {
                return;
            }
        }
        self.last_gc = Some(now);
        self.buckets
            .retain(|_, bucket| now.saturating_duration_since(bucket.last) <= IDLE_EXPIRY);
        // After a flood has passed, give back the memory it made the table grow to.
        let wanted = self.buckets.len().max(64) * 2;
        if self.buckets.capacity() > 2 * wanted {
            self.buckets.shrink_to(wanted);
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Listing the tracked sources would put peer addresses in logs.
        f.debug_struct("RateLimiter")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::net::Ipv4Addr;

    const KEY: [u8; 16] = *b"0123456789abcdef";

    fn ms(millis: u64) -> Duration {
        Duration::from_millis(millis)
    }

    fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(a, b, c, d))
    }

    fn v6(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// Sends `count` packets at `now`, returning how many were allowed.
    fn burst(limiter: &mut RateLimiter, now: Instant, ip: IpAddr, count: usize) -> usize {
        (0..count).filter(|_| limiter.allow(now, ip)).count()
    }

    #[test]
    fn constants_match_kernel() {
        assert_eq!(PACKET_COST, 50_000_000);
        assert_eq!(TOKEN_MAX, 250_000_000);
    }

    #[test]
    fn upstream_expected_pattern() {
        // (wait before this packet, allowed?) as in the kernel self-test, in exact time.
        let pattern = [
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (50, true),
            (0, false),
            (100, true),
            (0, true),
            (0, false),
        ];
        for ip in [v4(192, 0, 2, 1), v6("2001:db8::1")] {
            let mut limiter = RateLimiter::new(KEY);
            let mut now = Instant::now();
            for (index, &(wait, expected)) in pattern.iter().enumerate() {
                now += ms(wait);
                assert_eq!(limiter.allow(now, ip), expected, "{ip}, packet {index}");
            }
        }
    }

    #[test]
    fn steady_rate_is_sustained() {
        let mut limiter = RateLimiter::new(KEY);
        let ip = v4(198, 51, 100, 7);
        let mut now = Instant::now();
        assert_eq!(burst(&mut limiter, now, ip, 10), 5);
        for _ in 0..100 {
            now += ms(50);
            assert!(limiter.allow(now, ip));
            assert!(!limiter.allow(now, ip));
        }
    }

    #[test]
    fn bucket_caps_at_burst() {
        let mut limiter = RateLimiter::new(KEY);
        let ip = v4(198, 51, 100, 7);
        let start = Instant::now();
        assert_eq!(burst(&mut limiter, start, ip, 10), 5);
        // Long enough to earn 18 packets, but the bucket holds 5; short of GC.
        assert_eq!(burst(&mut limiter, start + ms(900), ip, 10), 5);
    }

    #[test]
    fn sources_are_independent() {
        let mut limiter = RateLimiter::new(KEY);
        let now = Instant::now();
        let a = v4(192, 0, 2, 1);
        let b = v4(192, 0, 2, 2);
        assert_eq!(burst(&mut limiter, now, a, 10), 5);
        assert_eq!(burst(&mut limiter, now, b, 10), 5);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn ipv6_is_limited_per_64() {
        let mut limiter = RateLimiter::new(KEY);
        let now = Instant::now();
        let first = v6("2001:db8:1:2::1");
        let same_64 = v6("2001:db8:1:2:ffff:ffff:ffff:ffff");
        let other_64 = v6("2001:db8:1:3::1");
        assert_eq!(burst(&mut limiter, now, first, 3), 3);
        assert_eq!(burst(&mut limiter, now, same_64, 10), 2);
        assert_eq!(burst(&mut limiter, now, other_64, 10), 5);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn families_never_share_buckets() {
        let mut limiter = RateLimiter::new(KEY);
        let now = Instant::now();
        // All-zero bits in both families, and an IPv4 address whose bits equal a v6 prefix.
        assert_eq!(burst(&mut limiter, now, v4(0, 0, 0, 0), 10), 5);
        assert_eq!(burst(&mut limiter, now, v6("::"), 10), 5);
        assert_eq!(burst(&mut limiter, now, v4(0, 0, 0, 1), 10), 5);
        assert_eq!(burst(&mut limiter, now, v6("0:0:0:1::"), 10), 5);
        assert_eq!(limiter.len(), 4);
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4() {
        let mut limiter = RateLimiter::new(KEY);
        let now = Instant::now();
        assert_eq!(burst(&mut limiter, now, v6("::ffff:192.0.2.1"), 3), 3);
        assert_eq!(burst(&mut limiter, now, v4(192, 0, 2, 1), 10), 2);
        assert_eq!(burst(&mut limiter, now, v6("::ffff:192.0.2.2"), 10), 5);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn idle_entries_are_collected() {
        let mut limiter = RateLimiter::new(KEY);
        assert!(limiter.is_empty());
        let start = Instant::now();
        let (a, b, c, d) = (
            v4(10, 0, 0, 1),
            v4(10, 0, 0, 2),
            v4(10, 0, 0, 3),
            v4(10, 0, 0, 4),
        );
        assert!(limiter.allow(start, a));
        assert!(limiter.allow(start + ms(500), b));
        // A second after the first sweep: a sweep runs, but `a` has been idle exactly 1 s.
        assert!(limiter.allow(start + ms(1000), c));
        assert_eq!(limiter.len(), 3);
        // `a` is now idle past the limit, but the last sweep was only 600 ms ago.
        assert!(limiter.allow(start + ms(1600), c));
        assert_eq!(limiter.len(), 3);
        // Sweeping again drops `a` (idle 2 s) and `b` (1.5 s) and keeps `c` (0.4 s).
        assert!(limiter.allow(start + ms(2000), d));
        assert_eq!(limiter.len(), 2);
        assert!(!limiter.is_empty());
    }

    #[test]
    fn collected_source_starts_with_full_burst() {
        let mut limiter = RateLimiter::new(KEY);
        let start = Instant::now();
        let ip = v4(10, 9, 8, 7);
        assert_eq!(burst(&mut limiter, start, ip, 10), 5);
        assert_eq!(burst(&mut limiter, start + ms(1500), ip, 10), 5);
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn full_table_refuses_new_sources_only() {
        let mut limiter = RateLimiter::new(KEY);
        let start = Instant::now();
        for index in 0..MAX_ENTRIES as u32 {
            assert!(limiter.allow(start, IpAddr::V4(Ipv4Addr::from(index))));
        }
        assert_eq!(limiter.len(), MAX_ENTRIES);
        let stranger = v4(203, 0, 113, 9);
        assert!(!limiter.allow(start, stranger));
        assert!(!limiter.allow(start + ms(10), v6("2001:db8::1")));
        assert!(limiter.allow(start + ms(10), IpAddr::V4(Ipv4Addr::from(7))));
        assert_eq!(limiter.len(), MAX_ENTRIES);
        // Once the flood's entries go idle and are collected, the stranger gets in.
        assert!(limiter.allow(start + ms(1500), stranger));
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn earlier_time_mints_no_tokens() {
        let mut limiter = RateLimiter::new(KEY);
        let start = Instant::now();
        let ip = v4(10, 0, 0, 1);
        let later = start + ms(300);
        assert_eq!(burst(&mut limiter, later, ip, 10), 5);
        assert!(!limiter.allow(start, ip));
        assert!(!limiter.allow(later, ip));
        assert!(limiter.allow(later + ms(50), ip));
    }

    #[test]
    fn hasher_is_keyed_and_cloneable() {
        let hasher = SipBuildHasher::new(KEY);
        let copy = hasher.clone();
        assert_eq!(hasher.hash_one(12345u64), copy.hash_one(12345u64));
        let other = SipBuildHasher::new([7; 16]);
        assert_ne!(hasher.hash_one(12345u64), other.hash_one(12345u64));
        assert_eq!(format!("{hasher:?}"), "SipBuildHasher { .. }");
    }

    proptest! {
        /// Whatever the arrival pattern, one source never gets more than the burst plus what
        /// the elapsed time has earned, and a packet after a full cost's pause always passes.
        #[test]
        fn never_exceeds_rate(gaps in prop::collection::vec(0u64..120, 1..300)) {
            let mut limiter = RateLimiter::new(KEY);
            let ip = v6("2001:db8:77::5");
            let start = Instant::now();
            let mut now = start;
            let mut allowed = 0u64;
            for &gap in &gaps {
                now += ms(gap);
                let elapsed = now.duration_since(start).as_nanos() as u64;
                let ok = limiter.allow(now, ip);
                allowed += u64::from(ok);
                prop_assert!(allowed <= RATELIMIT_BURST + elapsed / PACKET_COST);
                if gap >= 50 {
                    prop_assert!(ok);
                }
            }
        }
    }
}
