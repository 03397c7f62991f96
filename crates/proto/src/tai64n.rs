//! TAI64N timestamps as carried in handshake initiations.
//!
//! A responder refuses an initiation whose timestamp is not greater than the last one it
//! accepted from that peer, which defeats replayed initiations. The encoding is big-endian,
//! so "greater" is plain byte order and the type can derive its ordering from its bytes.

use crate::constants::TIMESTAMP_LEN;
use std::time::Duration;

/// 2^62 + 10: the TAI64 label for the Unix epoch, as WireGuard computes it (the 10 s is the
/// TAI-UTC offset of 1970; later leap seconds are not counted, and every peer agrees).
const UNIX_EPOCH_LABEL: u64 = 0x4000_0000_0000_000a;

/// Nanoseconds are rounded down to a multiple of 2^24 ns (about 16.8 ms) so the timestamp does
/// not leak a precise clock reading that could fingerprint the host or help timing attacks.
const WHITENING_MASK: u32 = !0x00ff_ffff;

/// A 12-byte TAI64N timestamp: 8 bytes of seconds, 4 of nanoseconds, both big-endian.
#[derive(Copy, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct Tai64N([u8; TIMESTAMP_LEN]);

impl Tai64N {
    /// Older than every real timestamp: the starting point before any initiation is seen.
    pub const ZERO: Tai64N = Tai64N([0; TIMESTAMP_LEN]);

    /// The whitened timestamp for a wall-clock time given as the time since the Unix epoch.
    pub fn from_unix(since_epoch: Duration) -> Tai64N {
        // Saturating keeps later inputs from ever producing smaller timestamps; no real clock
        // is anywhere near the 2^62 seconds it would take to matter.
        let seconds = UNIX_EPOCH_LABEL.saturating_add(since_epoch.as_secs());
        let nanos = since_epoch.subsec_nanos() & WHITENING_MASK;
        let mut bytes = [0; TIMESTAMP_LEN];
        bytes[..8].copy_from_slice(&seconds.to_be_bytes());
        bytes[8..].copy_from_slice(&nanos.to_be_bytes());
        Tai64N(bytes)
    }

    /// Wraps bytes received on the wire; no validation, as the responder only compares them.
    pub const fn from_bytes(bytes: [u8; TIMESTAMP_LEN]) -> Tai64N {
        Tai64N(bytes)
    }

    pub const fn as_bytes(&self) -> &[u8; TIMESTAMP_LEN] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    #[test]
    fn document_vector() {
        let stamp = Tai64N::from_unix(Duration::from_secs(1_700_000_000));
        assert_eq!(hex(stamp.as_bytes()), "400000006553f10a00000000");
    }

    #[test]
    fn unix_epoch() {
        let stamp = Tai64N::from_unix(Duration::ZERO);
        assert_eq!(hex(stamp.as_bytes()), "400000000000000a00000000");
    }

    #[test]
    fn nanoseconds_are_whitened() {
        let stamp = Tai64N::from_unix(Duration::new(1_700_000_000, 123_456_789));
        let nanos = u32::from_be_bytes(stamp.as_bytes()[8..].try_into().unwrap());
        assert_eq!(nanos, 117_440_512);
        assert_eq!(hex(stamp.as_bytes()), "400000006553f10a07000000");

        let last_bucket = Tai64N::from_unix(Duration::new(0, 999_999_999));
        assert_eq!(hex(&last_bucket.as_bytes()[8..]), "3b000000");
    }

    #[test]
    fn bytes_round_trip() {
        let stamp = Tai64N::from_unix(Duration::new(1_234_567_890, 987_654_321));
        assert_eq!(Tai64N::from_bytes(*stamp.as_bytes()), stamp);
        assert_eq!(Tai64N::ZERO.as_bytes(), &[0; TIMESTAMP_LEN]);
    }

    #[test]
    fn later_times_never_compare_smaller() {
        let mut previous = Tai64N::ZERO;
        let mut time = Duration::new(1_699_999_998, 0);
        // Steps that cross bucket, second and byte boundaries of both fields.
        for step_nanos in [1, 999, 16_777_215, 16_777_216, 16_777_217, 250_000_000] {
            for _ in 0..20 {
                let stamp = Tai64N::from_unix(time);
                assert!(stamp >= previous, "{time:?}");
                assert!(stamp > Tai64N::ZERO);
                previous = stamp;
                time += Duration::from_nanos(step_nanos);
            }
        }
        let a = Tai64N::from_unix(Duration::new(255, 999_000_000));
        let b = Tai64N::from_unix(Duration::new(256, 0));
        assert!(a < b, "second carry outranks any nanoseconds");
        let c = Tai64N::from_unix(Duration::new(100, 16_777_216));
        let d = Tai64N::from_unix(Duration::new(100, 16_777_215));
        assert!(d < c, "next whitening bucket is greater");
    }

    #[test]
    fn same_whitening_bucket_compares_equal() {
        // Both fall in the bucket [2 * 2^24, 3 * 2^24) ns, about 16.77 ms wide.
        let early = Tai64N::from_unix(Duration::new(1_700_000_000, 2 * 16_777_216));
        let late = Tai64N::from_unix(Duration::new(1_700_000_000, 3 * 16_777_216 - 1));
        assert_eq!(early, late);
        assert!(
            late <= early,
            "a responder would refuse the second as a replay"
        );
    }

    #[test]
    fn huge_input_saturates() {
        let stamp = Tai64N::from_unix(Duration::new(u64::MAX, 0));
        assert_eq!(&stamp.as_bytes()[..8], &[0xff; 8]);
    }
}
