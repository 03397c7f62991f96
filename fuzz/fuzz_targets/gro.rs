//! The TUN writer's coalescing (`crates/device/src/gro.rs`, compiled in with `#[path]`: the
//! device crate would bring the whole daemon) on arbitrary packets, as a peer could send them
//! once decrypted. Besides "no panic": every packet comes out exactly once, unchanged — alone,
//! or as one segment of a super-packet, which is checked by cutting it up again as the kernel
//! would (lengths, sequence numbers, PSH on the last piece, checksums computed afresh) and
//! finding each piece among the packets pushed (IPv4 ID, IPv4 header checksum and transport
//! checksum aside: the super-packet carries its first packet's header, and the kernel computes
//! the pieces' checksums, also for packets whose sender got them wrong), and no packet leaves
//! after a later one between the same two addresses. A super-packet holds 2-64 segments within
//! 64 KiB, has a valid IPv4 header checksum, and the partial checksum the kernel completes
//! (the pseudo-header's sum) is right.
#![no_main]

#[allow(dead_code)]
#[path = "../../crates/device/src/gro.rs"]
mod gro;

use gro::{
    fold, pseudo_header_sum, sum_bytes, Gro, VnetHdr, MAX_GROUP, MAX_SEGMENTS, VNET_HDR_LEN,
};
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
            let pseudo = pseudo_header_sum(&p, proto, v6, len - start);
            let c = !fold(sum_bytes(&p[start..], pseudo));
            p[at..at + 2].copy_from_slice(&c.to_be_bytes());
            p
        })
        .collect()
}

/// Source and destination addresses of an IP packet.
fn addresses(p: &[u8]) -> Option<&[u8]> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(&p[12..20]),
        6 if p.len() >= 40 => Some(&p[8..40]),
        _ => None,
    }
}

/// Addresses, protocol and ports of an unfragmented TCP/UDP packet without IPv4 options or
/// IPv6 extension headers.
fn tuple(p: &[u8]) -> Option<Vec<u8>> {
    let (l4, proto) = match p.first()? >> 4 {
        4 if p.len() >= 24 && p[0] & 0x0f == 5 && p[6] & 0x3f == 0 && p[7] == 0 => (20, p[9]),
        6 if p.len() >= 44 => (40, p[6]),
        _ => return None,
    };
    if proto != 6 && proto != 17 {
        return None;
    }
    let mut t = addresses(p)?.to_vec();
    t.push(proto);
    t.extend_from_slice(&p[l4..l4 + 4]);
    Some(t)
}

/// IPv4 ID and header checksum cleared, and the TCP/UDP checksum of a packet that has one.
fn normalized(p: &[u8]) -> Vec<u8> {
    let mut p = p.to_vec();
    if p.len() >= 20 && p[0] >> 4 == 4 {
        p[4..6].fill(0);
        p[10..12].fill(0);
    }
    if tuple(&p).is_some() {
        let l4 = if p[0] >> 4 == 4 { 20 } else { 40 };
        let at = l4 + if p[if l4 == 20 { 9 } else { 6 }] == 6 { 16 } else { 6 };
        if let Some(field) = p.get_mut(at..at + 2) {
            field.fill(0);
        }
    }
    p
}

/// Whether the checksum of a "needs checksum" super-packet comes out right when the kernel
/// completes it: the field must hold the pseudo-header's sum.
fn partial_checksum_ok(pkt: &[u8], h: &VnetHdr) -> bool {
    let (start, at) = (
        usize::from(h.csum_start),
        usize::from(h.csum_start + h.csum_offset),
    );
    let mut p = pkt.to_vec();
    let completed = !fold(sum_bytes(&p[start..], 0));
    p[at..at + 2].copy_from_slice(&completed.to_be_bytes());
    let v6 = p[0] >> 4 == 6;
    let proto = if v6 { p[6] } else { p[9] };
    let pseudo = pseudo_header_sum(&p, proto, v6, p.len() - start);
    fold(sum_bytes(&p[start..], pseudo)) == 0xffff
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
    // identical one but for its ID, written alone, needs. `at[i]`: the output holding packet i.
    let mut at: Vec<Option<usize>> = vec![None; pkts.len()];
    let take = |at: &mut Vec<Option<usize>>, o: usize, same: &dyn Fn(&[u8]) -> bool| {
        let i = (0..pkts.len())
            .find(|&i| at[i].is_none() && same(&pkts[i]))
            .expect("every packet written is one of those pushed");
        at[i] = Some(o);
    };
    let mut segments = 0;
    for (o, b) in out.iter().enumerate() {
        let h = VnetHdr::parse(&b[..VNET_HDR_LEN]);
        if h.is_plain() {
            let pkt = &b[VNET_HDR_LEN..];
            take(&mut at, o, &|p| p == pkt);
            segments += 1;
        }
    }
    for (o, b) in out.iter().enumerate() {
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
        assert!(partial_checksum_ok(pkt, &h), "partial checksum");
        for piece in resegment(pkt, &h, n) {
            let want = normalized(&piece);
            take(&mut at, o, &|p| normalized(p) == want);
        }
    }
    // Order: a packet never leaves after a later one of the same flow, nor after a later one
    // between the same two addresses when either is not a plain TCP/UDP packet (a fragment,
    // IP options...) — packets of different flows may pass each other, as in Linux's GRO.
    // Checked for packets no other one equals, where the matching above is unambiguous.
    let unique: Vec<bool> = (0..pkts.len())
        .map(|i| (0..pkts.len()).all(|j| j == i || normalized(&pkts[j]) != normalized(&pkts[i])))
        .collect();
    for j in 0..pkts.len() {
        for i in 0..j {
            let (ti, tj) = (tuple(&pkts[i]), tuple(&pkts[j]));
            let related = addresses(&pkts[i]).is_some()
                && addresses(&pkts[i]) == addresses(&pkts[j])
                && (ti.is_none() || tj.is_none() || ti == tj);
            if unique[i] && unique[j] && related {
                assert!(at[i] <= at[j], "packet {j} written before packet {i}");
            }
        }
    }
    assert_eq!(segments, pkts.len(), "every packet once");
});
