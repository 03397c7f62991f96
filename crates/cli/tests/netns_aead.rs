//! The batch AEAD in the data path (needs root; see `common::netns`).
//!
//! ferrowgd seals and opens runs of packets under one key with `ferrowg-chacha`'s
//! multi-buffer AVX-512 kernels where the CPU has AVX-512 F and IFMA, and with ring one
//! message at a time otherwise or with `FERROWG_NO_AVX512=1`. The two must be the same
//! cipher on the wire: one end of each kind, both directions, bulk TCP (long runs under one
//! key, the kernels' path) and pings (single packets, ring's path).

mod common;

use common::netns::*;

fn cpu_has_batch_kernels() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512ifma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

#[test]
fn batch_aead_and_ring_interoperate_and_the_log_says_which_runs() {
    if !require_netns() {
        return;
    }
    // Empty means "unset" for ferrowgd's switches: the default, whatever the test run's
    // environment says.
    let batch = DaemonOptions::with_env(&[("FERROWG_NO_AVX512", "")]);
    let ring = DaemonOptions::with_env(&[("FERROWG_NO_AVX512", "1")]);
    let pair = tunnel_pair(
        &DaemonKind::Ferrowgd,
        &DaemonKind::Ferrowgd,
        &PairOptions {
            daemon_options: (batch, ring),
            ..PairOptions::default()
        },
    );
    assert_pings_both_ways(&pair);
    let ab = tcp_transfer(&pair.b.ns, pair.b.inner(Family::V4), &pair.a.ns, 32 << 20);
    assert!(ab.received_ok, "TCP a → b: {:?}", ab.error);
    let ba = tcp_transfer(&pair.a.ns, pair.a.inner(Family::V6), &pair.b.ns, 32 << 20);
    assert!(ba.received_ok, "TCP b → a: {:?}", ba.error);

    let expected_a = if cpu_has_batch_kernels() {
        "batch AEAD: AVX-512"
    } else {
        "batch AEAD: off"
    };
    assert!(
        pair.a.daemon.log().contains(expected_a),
        "{}",
        pair.a.daemon.log()
    );
    assert!(
        pair.b.daemon.log().contains("batch AEAD: off"),
        "{}",
        pair.b.daemon.log()
    );
}
