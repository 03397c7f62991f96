//! End-to-end flows between two of our devices in simulated time: handshake on first packet,
//! data both ways, key confirmation, byte counters.

mod common;
use common::*;
use ferrowg_proto::constants::*;
use ferrowg_proto::device::Outgoing;
use std::time::Duration;

#[test]
fn first_packet_triggers_handshake_and_is_delivered() {
    let mut p = Pair::new(true, true, true);
    let pkt = ipv4_packet(A_TUN, B_TUN, 56, 1);
    assert!(matches!(p.send(Side::A, &pkt), Outgoing::Staged { .. }));
    p.run();
    // initiation, response, then the staged packet (no keepalive needed).
    assert_eq!(p.count(0, Side::A, MESSAGE_INITIATION), 1);
    assert_eq!(p.count(0, Side::B, MESSAGE_RESPONSE), 1);
    assert_eq!(p.delivered_b, vec![pkt.clone()]);
    // B answers on the confirmed session directly.
    let back = ipv4_packet(B_TUN, A_TUN, 56, 2);
    assert!(matches!(p.send(Side::B, &back), Outgoing::Sent { .. }));
    p.run();
    assert_eq!(p.delivered_a, vec![back]);
}

#[test]
fn byte_counters_count_wire_messages() {
    let mut p = Pair::new(false, true, true);
    for i in 0..10 {
        // 84-byte ICMP packets pad to 96 and travel as 128-byte messages.
        let pkt = ipv4_packet(A_TUN, B_TUN, 64, i);
        assert_eq!(pkt.len(), 84);
        p.send(Side::A, &pkt);
        p.run();
    }
    let a = p.a.peers().next().unwrap().1;
    assert_eq!(a.tx_bytes(), 148 + 10 * 128);
    assert_eq!(a.rx_bytes(), 92);
    let b = p.b.peers().next().unwrap().1;
    assert_eq!(b.rx_bytes(), 148 + 10 * 128);
    assert_eq!(b.tx_bytes(), 92);
    assert!(a.last_handshake().is_some());
    assert!(b.last_handshake().is_some());
    let _ = Duration::ZERO;
}
