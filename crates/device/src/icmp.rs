//! "Destination unreachable" answers for packets the tunnel cannot carry (no peer covers the
//! destination, or the peer has no endpoint), written back into the TUN as the kernel module
//! does, so the sender's stack fails fast instead of timing out.

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum_words(data: &[u8]) -> u32 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from_be_bytes([c[0], 0])
        };
        sum += w as u32;
    }
    sum
}

/// Builds the unreachable message for `packet` into `out`; returns its length, or `None` for a
/// packet that must not be answered (not IP, or itself an ICMP error).
pub fn unreachable(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    match packet.first()? >> 4 {
        4 => v4(packet, out),
        6 => v6(packet, out),
        _ => None,
    }
}

fn v4(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    let ihl = ((packet[0] & 0x0f) as usize) * 4;
    if packet.len() < 20 || ihl < 20 || packet.len() < ihl {
        return None;
    }
    // Never answer an ICMP error with another one (RFC 1122), nor a fragment other than the first.
    if packet[9] == 1 && packet.len() > ihl && matches!(packet[ihl], 3 | 4 | 5 | 11 | 12) {
        return None;
    }
    if u16::from_be_bytes([packet[6], packet[7]]) & 0x1fff != 0 {
        return None;
    }
    // Nor a datagram sent to a group (multicast, limited broadcast), or whose source is not a
    // single host (zero, loopback, multicast, broadcast, class E): RFC 1122 §3.2.2, as the
    // kernel's icmp_send. The kernel's own multicast/broadcast traffic (IGMP, mDNS, …) routed
    // into the tunnel must not come back as an error whose *source* would be the group.
    let (src, dst) = (&packet[12..16], &packet[16..20]);
    if dst[0] >= 224 || src[0] >= 224 || src[0] == 127 || src == [0, 0, 0, 0] {
        return None;
    }
    let quoted = packet.len().min(ihl + 8);
    let total = 20 + 8 + quoted;
    if out.len() < total {
        return None;
    }
    let o = &mut out[..total];
    o.fill(0);
    o[0] = 0x45;
    o[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    o[8] = 64;
    o[9] = 1;
    o[12..16].copy_from_slice(&packet[16..20]);
    o[16..20].copy_from_slice(&packet[12..16]);
    let c = fold(sum_words(&o[..20]));
    o[10..12].copy_from_slice(&c.to_be_bytes());
    o[20] = 3; // destination unreachable
    o[21] = 1; // host unreachable
    o[28..28 + quoted].copy_from_slice(&packet[..quoted]);
    let c = fold(sum_words(&o[20..]));
    o[22..24].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

fn v6(packet: &[u8], out: &mut [u8]) -> Option<usize> {
    if packet.len() < 40 {
        return None;
    }
    if packet[6] == 58 && packet.len() > 40 && packet[40] < 128 {
        return None; // an ICMPv6 error itself
    }
    // Nor a packet sent to a multicast address (router solicitations, MLD reports the
    // kernel sends on every interface), nor one whose source is unspecified or multicast:
    // RFC 4443 §2.4 (e), as the kernel's icmp6_send. Answering would write an error whose
    // source is the multicast group into the TUN.
    let (src, dst) = (&packet[8..24], &packet[24..40]);
    if dst[0] == 0xff || src[0] == 0xff || src.iter().all(|&b| b == 0) {
        return None;
    }
    let quoted = packet.len().min(1280 - 48);
    let total = 48 + quoted;
    if out.len() < total {
        return None;
    }
    let o = &mut out[..total];
    o.fill(0);
    o[0] = 0x60;
    o[4..6].copy_from_slice(&((8 + quoted) as u16).to_be_bytes());
    o[6] = 58;
    o[7] = 64;
    o[8..24].copy_from_slice(&packet[24..40]);
    o[24..40].copy_from_slice(&packet[8..24]);
    o[40] = 1; // destination unreachable
    o[41] = 3; // address unreachable
    o[48..].copy_from_slice(&packet[..quoted]);
    let mut sum = sum_words(&o[8..40]);
    sum += (8 + quoted) as u32 + 58;
    sum += sum_words(&o[40..]);
    let c = fold(sum);
    o[42..44].copy_from_slice(&c.to_be_bytes());
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_reply_has_valid_checksums_and_swapped_addresses() {
        let mut p = vec![0u8; 84];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&84u16.to_be_bytes());
        p[9] = 1;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 9, 9, 9]);
        p[20] = 8;
        let mut out = [0u8; 1500];
        let n = unreachable(&p, &mut out).unwrap();
        assert_eq!(n, 56);
        assert_eq!(fold(sum_words(&out[..20])), 0);
        assert_eq!(fold(sum_words(&out[20..n])), 0);
        assert_eq!(&out[12..16], &[10, 9, 9, 9]);
        assert_eq!(&out[16..20], &[10, 0, 0, 1]);
        assert_eq!((out[20], out[21]), (3, 1));
        // An ICMP error is never answered.
        assert_eq!(unreachable(&out[..n], &mut [0u8; 1500]), None);
    }

    #[test]
    fn v6_reply_checksum() {
        let mut p = vec![0u8; 64];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&24u16.to_be_bytes());
        p[6] = 17;
        p[8] = 0xfd;
        p[24] = 0xfd;
        p[39] = 2;
        let mut out = [0u8; 1500];
        let n = unreachable(&p, &mut out).unwrap();
        let mut sum = sum_words(&out[8..40]);
        sum += (n - 40) as u32 + 58;
        sum += sum_words(&out[40..n]);
        assert_eq!(fold(sum), 0);
        assert_eq!((out[40], out[41]), (1, 3));
    }

    #[test]
    fn group_and_unspecified_addresses_are_never_answered() {
        let mut out = [0u8; 1500];
        let v4 = |src: [u8; 4], dst: [u8; 4]| {
            let mut p = vec![0u8; 28];
            p[0] = 0x45;
            p[9] = 17;
            p[12..16].copy_from_slice(&src);
            p[16..20].copy_from_slice(&dst);
            p
        };
        assert!(unreachable(&v4([10, 0, 0, 1], [10, 9, 9, 9]), &mut out).is_some());
        for (src, dst) in [
            ([10, 0, 0, 1], [224, 0, 0, 22]),      // IGMP report
            ([10, 0, 0, 1], [255, 255, 255, 255]), // limited broadcast
            ([0, 0, 0, 0], [10, 9, 9, 9]),
            ([127, 0, 0, 1], [10, 9, 9, 9]),
            ([240, 0, 0, 1], [10, 9, 9, 9]),
        ] {
            assert_eq!(
                unreachable(&v4(src, dst), &mut out),
                None,
                "{src:?} → {dst:?}"
            );
        }
        let v6 = |src: [u8; 16], dst: [u8; 16]| {
            let mut p = vec![0u8; 48];
            p[0] = 0x60;
            p[6] = 58;
            p[40] = 133; // router solicitation
            p[8..24].copy_from_slice(&src);
            p[24..40].copy_from_slice(&dst);
            p
        };
        let mut link_local = [0u8; 16];
        link_local[..2].copy_from_slice(&[0xfe, 0x80]);
        link_local[15] = 1;
        let mut all_routers = [0u8; 16];
        all_routers[..2].copy_from_slice(&[0xff, 0x02]);
        all_routers[15] = 2;
        let mut unicast = [0u8; 16];
        unicast[0] = 0xfd;
        unicast[15] = 2;
        assert!(unreachable(&v6(link_local, unicast), &mut out).is_some());
        assert_eq!(unreachable(&v6(link_local, all_routers), &mut out), None);
        assert_eq!(unreachable(&v6([0; 16], unicast), &mut out), None);
        assert_eq!(unreachable(&v6(all_routers, unicast), &mut out), None);
    }
}
