//! The TUN writer's coalescing (`crates/device/src/gro.rs`, compiled in with `#[path]`: the
//! device crate would bring the whole daemon) on arbitrary packets, as a peer could send them
//! once decrypted. Besides "no panic": every packet comes out exactly once, unchanged — alone,
//! or as one segment of a super-packet, which is checked by cutting it up again as the kernel
//! would (lengths, sequence numbers, PSH on the last piece, checksums computed afresh) and
//! finding each piece among the packets pushed (IPv4 ID and header checksum aside: the
//! super-packet carries its first packet's). A super-packet holds 2-64 segments within 64 KiB
//! and has a valid IPv4 header checksum.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/device/src/gro.rs"]
mod gro;

use gro::{fold, sum_bytes, Gro, VnetHdr, MAX_GROUP, MAX_SEGMENTS, VNET_HDR_LEN};
use libfuzzer_sys::fuzz_target;

// Input: a mode byte (bits 0-3: queue capacity - 1; bit 4: UDP super-packets allowed; bit 5:
// offloads off), then packets, each a LE16 length and its bytes.
/// The packets a super-packet stands for, as the kernel cuts it.
fn resegment(pkt: &[u8], h: &VnetHdr, n: usize) -> Vec<Vec<u8>> {
    let (hl, gso, start) = (
        usize::from(h.hdr_len),
        usize::from(h.gso_size),
        usize::from(h.csum_start),
    );
    let v6 = pkt[0] >> 4 == 6;
    let proto = if v6 { pkt[6] } else { pkt[9] };
    let payload = &pkt[hl..];
    (0..n)
        .map(|i| {
            let mut p = pkt[..hl].to_vec();
            p.extend_from_slice(&payload[i * gso..((i + 1) * gso).min(payload.len())]);
            let len = p.len();
            if v6 {
                p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            } else {
                p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            }
            let at = if proto == 6 {
                let seq = u32::from_be_bytes(p[start + 4..start + 8].try_into().unwrap());
                let seq = seq.wrapping_add((i * gso) as u32);
                p[start + 4..start + 8].copy_from_slice(&seq.to_be_bytes());
                if i + 1 < n {
                    p[start + 13] &= !0x08;
                }
                start + 16
            } else {
                p[start + 4..start + 6].copy_from_slice(&((len - start) as u16).to_be_bytes());
                start + 6
            };
            p[at..at + 2].fill(0);
            let addrs = if v6 { &p[8..40] } else { &p[12..20] };
            let pseudo = sum_bytes(addrs, u64::from(proto) + (len - start) as u64);
            let c = !fold(sum_bytes(&p[start..], pseudo));
            p[at..at + 2].copy_from_slice(&c.to_be_bytes());
            p
        })
        .collect()
}

/// IPv4 ID and header checksum cleared.
fn normalized(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p.len() >= 20 && p[0] >> 4 == 4 {
        p[4..6].fill(0);
        p[10..12].fill(0);
    }
    p
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let capacity = 1 + usize::from(mode & 0x0f);
    let udp = mode & 0x10 != 0;
    let coalesce = mode & 0x20 == 0;
    let mut pkts: Vec<Vec<u8>> = Vec::new();
    while rest.len() >= 2 && pkts.len() < 300 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let take = len.min(rest.len());
        pkts.push(rest[..take].to_vec());
        rest = &rest[take..];
    }

    let mut gro = Gro::new(capacity, coalesce, udp);
    let mut out: Vec<Vec<u8>> = Vec::new();
    for p in &pkts {
        if gro.is_full() {
            gro.drain(|b| out.push(b.to_vec()));
        }
        gro.push(p);
    }
    gro.drain(|b| out.push(b.to_vec()));
    assert!(gro.is_empty());

    // Packets written alone first (exact matches), then the pieces of super-packets (equal but
    // for the IPv4 ID): matched the other way round, a piece could take the packet that an
    // identical one but for its ID, written alone, needs.
    let mut unused: Vec<&Vec<u8>> = pkts.iter().collect();
    let mut segments = 0;
    for b in &out {
        let h = VnetHdr::parse(&b[..VNET_HDR_LEN]);
        if h.is_plain() {
            let pkt = &b[VNET_HDR_LEN..];
            let i = unused
                .iter()
                .position(|p| p.as_slice() == pkt)
                .expect("a packet written alone is one of those pushed, unchanged");
            unused.swap_remove(i);
            segments += 1;
        }
    }
    for b in &out {
        let h = VnetHdr::parse(&b[..VNET_HDR_LEN]);
        let pkt = &b[VNET_HDR_LEN..];
        if h.is_plain() {
            continue;
        }
        assert!(coalesce, "super-packet without offloads");
        assert!(pkt.len() <= MAX_GROUP);
        let hl = usize::from(h.hdr_len);
        let gso = usize::from(h.gso_size);
        assert!(gso > 0 && hl < pkt.len());
        let n = (pkt.len() - hl).div_ceil(gso);
        assert!((2..=MAX_SEGMENTS).contains(&n), "{n} segments");
        segments += n;
        if pkt[0] >> 4 == 4 {
            assert_eq!(fold(sum_bytes(&pkt[..20], 0)), 0xffff, "IPv4 header checksum");
        }
        for piece in resegment(pkt, &h, n) {
            let i = unused
                .iter()
                .position(|p| normalized(p) == normalized(&piece))
                .expect("each segment of a super-packet is one of the packets pushed");
            unused.swap_remove(i);
        }
    }
    assert_eq!(segments, pkts.len(), "every packet once");
});
