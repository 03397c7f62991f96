//! Coalescing received packets into TUN super-packets (generic receive offload).
//!
//! The packets one receive batch decrypts are mostly consecutive segments of a few TCP flows.
//! Written one `write(2)` each, the kernel would also run its TCP receive path once per
//! segment; coalesced, a 64 KiB super-packet costs one system call and one pass through the
//! stack. The kernel learns how to treat a super-packet from the virtio-net header in front of
//! it (the TUN is opened with `IFF_VNET_HDR` and TSO/USO offered, see `tun_io`).
//!
//! Written by hand rather than taken from `tun-rs` (which we use for the reading side): its
//! TCP coalescing copied every packet into a fresh heap buffer before looking at it (about
//! 70,000 allocations a second at 2 Gbit/s, each freed — and wiped by our allocator — again),
//! and kept flows in a hash map where a batch holds a handful.
//!
//! Rules, those of Linux's own GRO where they differ from wireguard-go's:
//! - only the newest packet group of a flow grows, so a flow's packets leave in the order they
//!   came (a packet of the flow that cannot join closes the group);
//! - TCP segments join when they follow in sequence, carry only ACK (PSH on the last one), the
//!   same ACK number, window, options and IP header fields, and a payload no larger than the
//!   first one's; a shorter one ends the group;
//! - UDP datagrams join under the same rules of size, only where the kernel takes UDP
//!   super-packets (USO);
//! - transport checksums are not verified, as Linux's WireGuard does not verify them: a packet
//!   that opened under its peer's key was not changed on the way (Poly1305), so the kernel's
//!   WireGuard hands every decrypted packet to the stack as `CHECKSUM_UNNECESSARY` at all
//!   levels, and a super-packet arrives as "checksum to be completed", which the stack trusts
//!   the same way. (Verifying them cost 1.2-1.5 % of both daemons' time under TCP.) A UDP
//!   datagram without a checksum stays alone: a super-packet would give it one on our word.

/// Length of `struct virtio_net_hdr`, in front of every packet written to the TUN.
pub const VNET_HDR_LEN: usize = 10;
/// Largest IP packet a group may grow to (the 16-bit length fields).
pub const MAX_GROUP: usize = 65_535;
/// Most packets in a group: Linux's own UDP GRO limit (`UDP_GRO_CNT_MAX`). A receiver
/// without UDP GRO gets a UDP super-packet cut back into datagrams all at once, and ~700
/// 64-byte datagrams in one go overflowed iperf3's socket (64-byte flood through two
/// ferrowgd: 89k packets/s delivered without this limit, 100-117k with it).
pub const MAX_SEGMENTS: usize = 64;

const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const F_NEEDS_CSUM: u8 = 1;

const TCP: u8 = 6;
const UDP: u8 = 17;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// The addresses, ports and protocol of a packet.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct FlowKey {
    src: [u8; 16],
    dst: [u8; 16],
    ports: [u8; 4],
    proto: u8,
    v6: bool,
}

/// What a packet offers for coalescing.
#[derive(Clone, Copy)]
struct Candidate {
    key: FlowKey,
    iph_len: usize,
    /// TCP header length, or 8 for UDP.
    l4h_len: usize,
    payload: usize,
    /// TCP sequence number (0 for UDP).
    seq: u32,
    psh: bool,
}

/// A packet or group of packets in one buffer.
#[derive(Clone, Copy)]
struct Group {
    cand: Candidate,
    /// Payload length of the first packet: every later one is at most this long.
    gso_size: usize,
    merged: usize,
    next_seq: u32,
    /// No packet can join any more (PSH, a short segment, or a newer group of the flow).
    closed: bool,
}

/// Packets waiting to be written, coalesced where possible. No system calls here: the TUN
/// writer drains it with `drain`.
pub struct Gro {
    /// Each buffer: `VNET_HDR_LEN` bytes of room for the header, then the packet.
    bufs: Vec<Vec<u8>>,
    /// `Some` for a buffer that holds a coalescing candidate.
    groups: Vec<Option<Group>>,
    used: usize,
    capacity: usize,
    /// Off for a TUN without offloads: packets are queued as they are.
    coalesce: bool,
    udp: bool,
}

impl Gro {
    /// Room for `capacity` buffers (allocated as used, each up to 64 KiB); `coalesce` when
    /// the TUN takes super-packets, `udp` when it takes UDP ones too.
    pub fn new(capacity: usize, coalesce: bool, udp: bool) -> Gro {
        Gro {
            bufs: Vec::new(),
            groups: Vec::new(),
            used: 0,
            capacity,
            coalesce,
            udp,
        }
    }

    pub fn is_full(&self) -> bool {
        self.used == self.capacity
    }

    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Queues a packet; the caller makes room with `drain` first when `is_full`.
    pub fn push(&mut self, pkt: &[u8]) {
        assert!(!self.is_full(), "Gro::push on a full queue");
        if !self.coalesce {
            return self.start(pkt, None);
        }
        let cand = candidate(pkt, self.udp);
        if let Some(c) = &cand {
            if let Some(i) = self.open_group(&c.key) {
                if self.try_join(i, pkt, c) {
                    return;
                }
                if let Some(g) = self.groups[i].as_mut() {
                    g.closed = true;
                }
            }
        } else if let Some((src, dst)) = addresses(pkt) {
            // A packet that cannot join (SYN, FIN, a pure ACK, a fragment, IP options...)
            // must not be overtaken by later packets joining an earlier group. Its ports may
            // be out of reach (a fragment), so every group between the same two addresses in
            // the same direction is closed.
            for g in self.groups[..self.used].iter_mut().flatten() {
                if g.cand.key.src == src && g.cand.key.dst == dst {
                    g.closed = true;
                }
            }
        }
        self.start(pkt, cand);
    }

    /// Hands each queued buffer, header included, to `write` in order and empties the queue.
    pub fn drain(&mut self, mut write: impl FnMut(&[u8])) {
        for i in 0..self.used {
            let buf = &mut self.bufs[i];
            match &self.groups[i] {
                Some(g) if g.merged > 0 => finish_group(buf, g),
                _ => buf[..VNET_HDR_LEN].fill(0),
            }
            write(buf);
        }
        self.used = 0;
    }

    fn open_group(&self, key: &FlowKey) -> Option<usize> {
        // Newest first: the group a packet joins is nearly always the last one started.
        (0..self.used)
            .rev()
            .find(|&i| matches!(&self.groups[i], Some(g) if !g.closed && g.cand.key == *key))
    }

    fn start(&mut self, pkt: &[u8], cand: Option<Candidate>) {
        if self.used == self.bufs.len() {
            self.bufs.push(Vec::with_capacity(VNET_HDR_LEN + MAX_GROUP));
            self.groups.push(None);
        }
        let buf = &mut self.bufs[self.used];
        buf.clear();
        buf.resize(VNET_HDR_LEN, 0);
        buf.extend_from_slice(pkt);
        self.groups[self.used] = cand.map(|c| Group {
            cand: c,
            gso_size: c.payload,
            merged: 0,
            next_seq: c.seq.wrapping_add(c.payload as u32),
            closed: c.psh,
        });
        self.used += 1;
    }

    fn try_join(&mut self, i: usize, pkt: &[u8], c: &Candidate) -> bool {
        let buf = &mut self.bufs[i];
        let Some(g) = self.groups[i].as_mut() else {
            return false;
        };
        let head = &buf[VNET_HDR_LEN..];
        let hl = c.iph_len + c.l4h_len;
        if g.closed
            || g.cand.l4h_len != c.l4h_len
            || c.payload > g.gso_size
            || head.len() + c.payload > MAX_GROUP
            || g.merged + 1 >= MAX_SEGMENTS
            || !ip_headers_match(head, pkt, c.key.v6)
        {
            return false;
        }
        if !c.key.v6 && pkt[6] & 0x40 == 0 {
            // Without DF the kernel may fragment the pieces when forwarding them, numbered
            // from the first one's ID: only packets numbered that way already may join (as in
            // Linux's GRO).
            let id = |p: &[u8]| u16::from_be_bytes([p[4], p[5]]);
            if id(pkt) != id(head).wrapping_add(g.merged as u16 + 1) {
                return false;
            }
        }
        if c.key.proto == TCP {
            // Same ACK number, data offset, flags but PSH, window, urgent pointer (meaningless
            // without URG, but a super-packet must stand for its packets exactly) and options.
            let (th, tp) = (&head[c.iph_len..], &pkt[c.iph_len..]);
            if c.seq != g.next_seq
                || th[8..12] != tp[8..12]
                || th[12] != tp[12]
                || th[13] & !TCP_PSH != tp[13] & !TCP_PSH
                || th[14..16] != tp[14..16]
                || th[18..20] != tp[18..20]
                || th[20..c.l4h_len] != tp[20..c.l4h_len]
            {
                return false;
            }
        }
        buf.extend_from_slice(&pkt[hl..]);
        g.merged += 1;
        g.next_seq = c.seq.wrapping_add(c.payload as u32);
        if c.psh {
            buf[VNET_HDR_LEN + c.iph_len + 13] |= TCP_PSH;
        }
        // Nothing may follow a PSH or a segment shorter than the first.
        g.closed = c.psh || c.payload < g.gso_size;
        true
    }
}

/// Source and destination address of any IPv4/IPv6 packet (IPv4 in the first four bytes), as
/// in a `FlowKey`.
fn addresses(pkt: &[u8]) -> Option<([u8; 16], [u8; 16])> {
    let (mut src, mut dst) = ([0u8; 16], [0u8; 16]);
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            src[..4].copy_from_slice(&pkt[12..16]);
            dst[..4].copy_from_slice(&pkt[16..20]);
        }
        6 if pkt.len() >= 40 => {
            src.copy_from_slice(&pkt[8..24]);
            dst.copy_from_slice(&pkt[24..40]);
        }
        _ => return None,
    }
    Some((src, dst))
}

/// The flow of a packet whose IP header `ip_header` has read.
fn key(pkt: &[u8], iph_len: usize, proto: u8, v6: bool) -> FlowKey {
    let (src, dst) = addresses(pkt).expect("a header ip_header has read");
    let mut ports = [0; 4];
    ports.copy_from_slice(&pkt[iph_len..iph_len + 4]);
    FlowKey {
        src,
        dst,
        ports,
        proto,
        v6,
    }
}

/// IP header length, protocol and family of a well-formed, unfragmented packet whose length
/// fields match its size. IPv4 options and IPv6 extension headers are left alone.
fn ip_header(pkt: &[u8]) -> Option<(usize, u8, bool)> {
    match pkt.first()? >> 4 {
        4 if pkt.len() >= 20 => {
            let total = u16::from_be_bytes([pkt[2], pkt[3]]) as usize;
            let fragmented = pkt[6] & 0x20 != 0 || (pkt[6] & 0x1f) != 0 || pkt[7] != 0;
            (pkt[0] & 0x0f == 5 && total == pkt.len() && !fragmented).then_some((20, pkt[9], false))
        }
        6 if pkt.len() >= 40 => {
            let payload = u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
            (payload + 40 == pkt.len()).then_some((40, pkt[6], true))
        }
        _ => None,
    }
}

/// The packet as a coalescing candidate: a TCP segment with data and only ACK (and PSH) set,
/// or (with `udp`) a UDP datagram with data.
fn candidate(pkt: &[u8], udp: bool) -> Option<Candidate> {
    let (iph_len, proto, v6) = ip_header(pkt)?;
    // Joined, a packet's IPv4 header is dropped and the group's rewritten: one that the
    // kernel would drop for its header checksum must stay on its own (Linux's GRO checks it
    // too).
    if !v6 && fold(sum_bytes(&pkt[..20], 0)) != 0xffff {
        return None;
    }
    let l4 = &pkt[iph_len..];
    let (l4h_len, seq, psh) = match proto {
        TCP => {
            if l4.len() < 20 {
                return None;
            }
            let len = usize::from(l4[12] >> 4) * 4;
            let flags = l4[13];
            if len < 20 || len > l4.len() || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) {
                return None;
            }
            let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
            (len, seq, flags & TCP_PSH != 0)
        }
        UDP if udp => {
            // A zero checksum: none over IPv4, invalid over IPv6 (RFC 8200).
            if l4.len() < 8
                || usize::from(u16::from_be_bytes([l4[4], l4[5]])) != l4.len()
                || l4[6..8] == [0, 0]
            {
                return None;
            }
            (8, 0, false)
        }
        _ => return None,
    };
    let payload = l4.len() - l4h_len;
    (payload > 0).then(|| Candidate {
        key: key(pkt, iph_len, proto, v6),
        iph_len,
        l4h_len,
        payload,
        seq,
        psh,
    })
}

/// The IP header fields that must agree for packets to share one header: IPv4 TOS, DF and
/// TTL; IPv6 traffic class, flow label and hop limit. (Lengths, IDs and checksums differ.)
fn ip_headers_match(a: &[u8], b: &[u8], v6: bool) -> bool {
    if v6 {
        a[..4] == b[..4] && a[7] == b[7]
    } else {
        a[1] == b[1] && a[6] == b[6] && a[8] == b[8]
    }
}

/// Fills in the lengths, the checksums and the virtio-net header of a coalesced group.
fn finish_group(buf: &mut [u8], g: &Group) {
    let c = &g.cand;
    let len = buf.len() - VNET_HDR_LEN;
    let l4_len = len - c.iph_len;
    let pkt = &mut buf[VNET_HDR_LEN..];
    if c.key.v6 {
        pkt[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        pkt[10..12].fill(0);
        let sum = !fold(sum_bytes(&pkt[..20], 0));
        pkt[10..12].copy_from_slice(&sum.to_be_bytes());
    }
    // The kernel completes the transport checksum ("needs checksum"): the field holds the
    // pseudo-header sum, not yet complemented.
    let csum_offset = if c.key.proto == TCP { 16 } else { 6 };
    if c.key.proto == UDP {
        pkt[c.iph_len + 4..c.iph_len + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let pseudo = fold(pseudo_header_sum(pkt, c.key.proto, c.key.v6, l4_len));
    let at = c.iph_len + csum_offset;
    pkt[at..at + 2].copy_from_slice(&pseudo.to_be_bytes());
    let gso_type = match (c.key.proto, c.key.v6) {
        (TCP, false) => GSO_TCPV4,
        (TCP, true) => GSO_TCPV6,
        _ => GSO_UDP_L4,
    };
    write_vnet_hdr(
        &mut buf[..VNET_HDR_LEN],
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: (c.iph_len + c.l4h_len) as u16,
            gso_size: g.gso_size as u16,
            csum_start: c.iph_len as u16,
            csum_offset: csum_offset as u16,
        },
    );
}

/// `struct virtio_net_hdr`. The TUN reads its fields in the machine's byte order (we never
/// switch it with TUNSETVNETLE/BE).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> VnetHdr {
        let u = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn is_plain(&self) -> bool {
        self.flags == 0 && self.gso_type == GSO_NONE
    }
}

fn write_vnet_hdr(b: &mut [u8], h: VnetHdr) {
    b[0] = h.flags;
    b[1] = h.gso_type;
    b[2..4].copy_from_slice(&h.hdr_len.to_ne_bytes());
    b[4..6].copy_from_slice(&h.gso_size.to_ne_bytes());
    b[6..8].copy_from_slice(&h.csum_start.to_ne_bytes());
    b[8..10].copy_from_slice(&h.csum_offset.to_ne_bytes());
}

/// The ones'-complement sum (unfolded) of the TCP/UDP pseudo-header of `pkt` for a transport
/// part of `l4_len` bytes.
pub fn pseudo_header_sum(pkt: &[u8], proto: u8, v6: bool, l4_len: usize) -> u64 {
    let addrs = if v6 { &pkt[8..40] } else { &pkt[12..20] };
    sum_bytes(addrs, u64::from(proto) + l4_len as u64)
}

/// The ones'-complement sum of `data` as big-endian 16-bit words, added to `initial`, not yet
/// folded. The data is summed as 32-bit halves of 64-bit words in the machine's byte order
/// into 64 bits (no carry is lost below 2^31 words), a loop the compiler vectorises with
/// full-width loads, and the folded sum is put into network order at the end: a
/// ones'-complement sum of byte-swapped words is the byte-swapped sum (RFC 1071, 2(B)).
pub fn sum_bytes(data: &[u8], initial: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    let mut sum: u64 = 0;
    for c in &mut chunks {
        let w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
        sum += (w & 0xffff_ffff) + (w >> 32);
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 8];
    tail[..rest.len()].copy_from_slice(rest);
    let w = u64::from_ne_bytes(tail);
    sum += (w & 0xffff_ffff) + (w >> 32);
    initial + u64::from(u16::from_be(fold(sum)))
}

/// Folds a wide ones'-complement sum into 16 bits.
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A TCP or UDP packet built with correct lengths and checksums.
    #[derive(Clone, Debug)]
    struct Spec {
        v6: bool,
        proto: u8,
        /// Source port; tells flows apart.
        port: u16,
        seq: u32,
        flags: u8,
        options: Vec<u8>,
        payload: Vec<u8>,
        id: u16,
        ttl: u8,
    }

    fn spec(v6: bool, proto: u8, port: u16, seq: u32, flags: u8, payload: Vec<u8>) -> Spec {
        Spec {
            v6,
            proto,
            port,
            seq,
            flags,
            options: Vec::new(),
            payload,
            id: 1,
            ttl: 64,
        }
    }

    fn build(s: &Spec) -> Vec<u8> {
        let l4h = if s.proto == TCP {
            20 + s.options.len()
        } else {
            8
        };
        let iph = if s.v6 { 40 } else { 20 };
        let l4_len = l4h + s.payload.len();
        let mut p = vec![0u8; iph + l4_len];
        if s.v6 {
            p[0] = 0x60;
            p[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            p[6] = s.proto;
            p[7] = s.ttl;
            p[8..24].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            p[24..40]
                .copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        } else {
            p[0] = 0x45;
            let total = p.len() as u16;
            p[2..4].copy_from_slice(&total.to_be_bytes());
            p[4..6].copy_from_slice(&s.id.to_be_bytes());
            p[6] = 0x40;
            p[8] = s.ttl;
            p[9] = s.proto;
            p[12..16].copy_from_slice(&[192, 0, 2, 1]);
            p[16..20].copy_from_slice(&[192, 0, 2, 2]);
            let c = !fold(sum_bytes(&p[..20], 0));
            p[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = &mut p[iph..];
        l4[0..2].copy_from_slice(&s.port.to_be_bytes());
        l4[2..4].copy_from_slice(&5201u16.to_be_bytes());
        if s.proto == TCP {
            l4[4..8].copy_from_slice(&s.seq.to_be_bytes());
            l4[8..12].copy_from_slice(&77u32.to_be_bytes());
            l4[12] = ((l4h / 4) as u8) << 4;
            l4[13] = s.flags;
            l4[14..16].copy_from_slice(&512u16.to_be_bytes());
            l4[20..l4h].copy_from_slice(&s.options);
        } else {
            l4[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
        }
        l4[l4h..].copy_from_slice(&s.payload);
        set_l4_checksum(&mut p, iph, s.proto, s.v6);
        p
    }

    fn set_l4_checksum(p: &mut [u8], iph: usize, proto: u8, v6: bool) {
        let at = iph + if proto == TCP { 16 } else { 6 };
        p[at..at + 2].fill(0);
        let l4_len = p.len() - iph;
        let pseudo = pseudo_header_sum(p, proto, v6, l4_len);
        let c = !fold(sum_bytes(&p[iph..], pseudo));
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }

    fn run(gro: &mut Gro, pkts: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for p in pkts {
            if gro.is_full() {
                gro.drain(|b| out.push(b.to_vec()));
            }
            gro.push(p);
        }
        gro.drain(|b| out.push(b.to_vec()));
        out
    }

    /// Whether the TCP/UDP checksum of a packet is right.
    fn l4_checksum_ok(pkt: &[u8], iph_len: usize, proto: u8, v6: bool) -> bool {
        let l4 = &pkt[iph_len..];
        let sum = sum_bytes(l4, pseudo_header_sum(pkt, proto, v6, l4.len()));
        fold(sum) == 0xffff
    }

    /// What the kernel does with a super-packet, by the virtio-net header's rules: completes
    /// the checksum, then cuts the payload into `gso_size` pieces behind copies of the header,
    /// each with its own lengths and checksums (the sequence number advanced for TCP, PSH on the
    /// last piece only).
    fn resegment(buf: &[u8]) -> Vec<Vec<u8>> {
        let h = VnetHdr::parse(&buf[..VNET_HDR_LEN]);
        let mut pkt = buf[VNET_HDR_LEN..].to_vec();
        if h.is_plain() {
            return vec![pkt];
        }
        assert_eq!(h.flags, F_NEEDS_CSUM);
        let (start, at) = (
            h.csum_start as usize,
            (h.csum_start + h.csum_offset) as usize,
        );
        let completed = !fold(sum_bytes(&pkt[start..], 0));
        pkt[at..at + 2].copy_from_slice(&completed.to_be_bytes());
        let v6 = pkt[0] >> 4 == 6;
        let proto = if v6 { pkt[6] } else { pkt[9] };
        assert!(
            l4_checksum_ok(&pkt, start, proto, v6),
            "completed checksum of the super-packet"
        );
        assert_eq!(
            h.gso_type,
            match (proto, v6) {
                (TCP, false) => GSO_TCPV4,
                (TCP, true) => GSO_TCPV6,
                _ => GSO_UDP_L4,
            }
        );
        if !v6 {
            assert_eq!(
                fold(sum_bytes(&pkt[..20], 0)),
                0xffff,
                "IPv4 header checksum"
            );
        }
        assert!(pkt.len() <= MAX_GROUP);
        let hl = h.hdr_len as usize;
        let gso = h.gso_size as usize;
        let payload = &pkt[hl..];
        let n = payload.len().div_ceil(gso);
        assert!(n >= 2, "a super-packet holds at least two packets");
        (0..n)
            .map(|i| {
                let piece = &payload[i * gso..((i + 1) * gso).min(payload.len())];
                let mut p = pkt[..hl].to_vec();
                p.extend_from_slice(piece);
                let len = p.len();
                if v6 {
                    p[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
                } else {
                    p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
                }
                if proto == TCP {
                    let seq = u32::from_be_bytes(p[start + 4..start + 8].try_into().unwrap());
                    let seq = seq.wrapping_add((i * gso) as u32);
                    p[start + 4..start + 8].copy_from_slice(&seq.to_be_bytes());
                    if i + 1 < n {
                        p[start + 13] &= !TCP_PSH;
                    }
                } else {
                    p[start + 4..start + 6].copy_from_slice(&((len - start) as u16).to_be_bytes());
                }
                set_l4_checksum(&mut p, start, proto, v6);
                p
            })
            .collect()
    }

    /// A packet as compared: IPv4 ID and header checksum cleared (a super-packet carries its
    /// first packet's; the kernel numbers the pieces itself), and the TCP/UDP checksum (the
    /// kernel computes the pieces' afresh, also for a packet whose sender got it wrong).
    fn normalized(mut p: Vec<u8>) -> Vec<u8> {
        if p[0] >> 4 == 4 {
            p[4..6].fill(0);
            p[10..12].fill(0);
        }
        if let Some((iph, proto, _)) = ip_header(&p) {
            let at = iph + if proto == TCP { 16 } else { 6 };
            if (proto == TCP || proto == UDP) && p.len() >= at + 2 {
                p[at..at + 2].fill(0);
            }
        }
        p
    }

    /// The flow of a TCP/UDP packet whose header can be read.
    fn flow(p: &[u8]) -> Option<FlowKey> {
        let (iph_len, proto, v6) = ip_header(p)?;
        ((proto == TCP || proto == UDP) && p.len() >= iph_len + 4)
            .then(|| key(p, iph_len, proto, v6))
    }

    #[test]
    fn consecutive_segments_become_one_super_packet() {
        for v6 in [false, true] {
            let pkts: Vec<_> = (0..5u32)
                .map(|i| {
                    let flags = if i == 4 { TCP_ACK | TCP_PSH } else { TCP_ACK };
                    let mut s = spec(v6, TCP, 40000, 1000 + i * 100, flags, vec![i as u8; 100]);
                    s.id = i as u16;
                    build(&s)
                })
                .collect();
            let out = run(&mut Gro::new(8, true, true), &pkts);
            assert_eq!(out.len(), 1, "v6={v6}");
            let h = VnetHdr::parse(&out[0]);
            let (iph, gso_type) = if v6 { (40, GSO_TCPV6) } else { (20, GSO_TCPV4) };
            assert_eq!(
                h,
                VnetHdr {
                    flags: F_NEEDS_CSUM,
                    gso_type,
                    hdr_len: iph + 20,
                    gso_size: 100,
                    csum_start: iph,
                    csum_offset: 16,
                }
            );
            assert_eq!(out[0].len(), VNET_HDR_LEN + iph as usize + 20 + 500);
            let back: Vec<_> = resegment(&out[0]).into_iter().map(normalized).collect();
            let want: Vec<_> = pkts.into_iter().map(normalized).collect();
            assert_eq!(back, want);
        }
    }

    #[test]
    fn udp_datagrams_coalesce_only_where_the_kernel_takes_them() {
        let pkts: Vec<_> = (0..4)
            .map(|i| {
                build(&spec(
                    false,
                    UDP,
                    40000,
                    0,
                    0,
                    vec![i; if i == 3 { 30 } else { 64 }],
                ))
            })
            .collect();
        let out = run(&mut Gro::new(8, true, true), &pkts);
        assert_eq!(out.len(), 1);
        assert_eq!(VnetHdr::parse(&out[0]).gso_type, GSO_UDP_L4);
        assert_eq!(VnetHdr::parse(&out[0]).csum_offset, 6);
        let back: Vec<_> = resegment(&out[0]).into_iter().map(normalized).collect();
        assert_eq!(
            back,
            pkts.iter().cloned().map(normalized).collect::<Vec<_>>()
        );

        let out = run(&mut Gro::new(8, true, false), &pkts);
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|b| VnetHdr::parse(b).is_plain()));
    }

    #[test]
    fn without_offloads_packets_pass_unchanged() {
        let pkts: Vec<_> = (0..3u32)
            .map(|i| build(&spec(false, TCP, 1, i * 10, TCP_ACK, vec![1; 10])))
            .collect();
        let out = run(&mut Gro::new(8, false, false), &pkts);
        assert_eq!(out.len(), 3);
        for (o, p) in out.iter().zip(&pkts) {
            assert_eq!(&o[VNET_HDR_LEN..], &p[..]);
        }
    }

    #[test]
    fn what_must_not_join_stays_apart() {
        let base = |seq: u32, len: usize| spec(false, TCP, 7, seq, TCP_ACK, vec![3; len]);
        let cases: Vec<(&str, Vec<Spec>)> = vec![
            ("gap in sequence", vec![base(0, 100), base(150, 100)]),
            ("larger after smaller", vec![base(0, 50), base(50, 100)]),
            (
                "after a short one",
                vec![base(0, 100), base(100, 50), base(150, 50)],
            ),
            ("after PSH", {
                let mut a = base(0, 100);
                a.flags |= TCP_PSH;
                vec![a, base(100, 100)]
            }),
            ("SYN", {
                let mut b = base(100, 100);
                b.flags |= 0x02;
                vec![base(0, 100), b]
            }),
            ("other options", {
                let mut a = base(0, 100);
                a.options = vec![1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
                let mut b = base(100, 100);
                b.options = vec![1, 1, 8, 10, 0, 0, 0, 2, 0, 0, 0, 2];
                vec![a, b]
            }),
            ("other TTL", {
                let mut b = base(100, 100);
                b.ttl = 3;
                vec![base(0, 100), b]
            }),
            ("no payload", vec![base(0, 0), base(0, 0)]),
        ];
        for (name, specs) in cases {
            let pkts: Vec<_> = specs.iter().map(build).collect();
            let out = run(&mut Gro::new(8, true, true), &pkts);
            let merged = out.iter().filter(|b| !VnetHdr::parse(b).is_plain()).count();
            let expect_merged = usize::from(name == "after a short one");
            assert_eq!(merged, expect_merged, "{name}");
            let back: Vec<_> = out
                .iter()
                .flat_map(|b| resegment(b))
                .map(normalized)
                .collect();
            assert_eq!(
                back,
                pkts.into_iter().map(normalized).collect::<Vec<_>>(),
                "{name}"
            );
        }
    }

    #[test]
    fn header_fields_outside_the_specs_keep_packets_apart() {
        // The urgent pointer (ignored without URG) and the window, changed after building.
        for at in [18, 14] {
            let a = build(&spec(false, TCP, 7, 0, TCP_ACK, vec![1; 100]));
            let mut b = build(&spec(false, TCP, 7, 100, TCP_ACK, vec![2; 100]));
            b[20 + at + 1] = 9;
            set_l4_checksum(&mut b, 20, TCP, false);
            let out = run(&mut Gro::new(8, true, true), &[a.clone(), b.clone()]);
            assert_eq!(out.len(), 2, "byte {at}");
            assert_eq!(out[1][VNET_HDR_LEN..], b[..]);
        }
    }

    #[test]
    fn a_bad_ipv4_header_checksum_keeps_a_packet_apart() {
        for bad in [0, 1] {
            let mut pkts: Vec<_> = (0..2u32)
                .map(|i| build(&spec(false, TCP, 7, i * 100, TCP_ACK, vec![1; 100])))
                .collect();
            pkts[bad][10] ^= 0x01;
            let out = run(&mut Gro::new(8, true, true), &pkts);
            assert_eq!(out.len(), 2, "packet {bad}");
            assert!(out.iter().any(|b| b[VNET_HDR_LEN..] == pkts[bad][..]));
        }
    }

    #[test]
    fn a_udp_datagram_with_a_zero_checksum_stays_apart() {
        let a = build(&spec(true, UDP, 9, 0, 0, vec![1; 8]));
        // Checksum field 0 and the last payload word chosen so that the sum is all ones:
        // "valid" by the arithmetic, invalid by RFC 8200.
        let mut b = build(&spec(true, UDP, 9, 0, 0, vec![2; 8]));
        let end = b.len();
        b[46..48].fill(0);
        b[end - 2..].fill(0);
        let pseudo = pseudo_header_sum(&b, UDP, true, 16);
        let rest = fold(sum_bytes(&b[40..], pseudo));
        b[end - 2..].copy_from_slice(&(0xffff - rest).to_be_bytes());
        assert_eq!(fold(sum_bytes(&b[40..], pseudo)), 0xffff);
        let out = run(&mut Gro::new(8, true, true), &[a, b.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1][VNET_HDR_LEN..], b[..]);
        // Over IPv4 a zero checksum means "none", which a super-packet would replace.
        let a = build(&spec(false, UDP, 9, 0, 0, vec![1; 8]));
        let mut b = build(&spec(false, UDP, 9, 0, 0, vec![2; 8]));
        b[26..28].fill(0);
        let out = run(&mut Gro::new(8, true, true), &[a, b.clone()]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[1][VNET_HDR_LEN..], b[..]);
    }

    #[test]
    fn packets_of_the_same_hosts_that_cannot_be_read_are_not_overtaken() {
        let d = |seq: u32| build(&spec(false, UDP, 9, seq, 0, vec![seq as u8; 100]));
        // A first fragment (MF) and an IPv4 packet with options between the same addresses.
        let mut fragment = d(7);
        fragment[6] |= 0x20;
        let mut options = build(&spec(false, TCP, 9, 0, TCP_ACK | 0x04, vec![]));
        options.splice(20..20, [1, 1, 1, 0]);
        options[0] = 0x46;
        let total = options.len() as u16;
        options[2..4].copy_from_slice(&total.to_be_bytes());
        for between in [fragment, options] {
            let pkts = [d(1), between.clone(), d(2)];
            let out = run(&mut Gro::new(8, true, true), &pkts);
            let order: Vec<&[u8]> = out.iter().map(|b| &b[VNET_HDR_LEN..]).collect();
            assert_eq!(order, [&pkts[0][..], &between[..], &pkts[2][..]]);
        }
    }

    #[test]
    fn ipv4_without_df_joins_only_with_consecutive_ids() {
        for (ids, groups) in [([5u16, 6, 7], 1), ([5, 5, 6], 2), ([5, 7, 9], 3)] {
            let pkts: Vec<_> = (0..3u32)
                .map(|i| {
                    let mut s = spec(false, TCP, 7, i * 100, TCP_ACK, vec![1; 100]);
                    s.id = ids[i as usize];
                    let mut p = build(&s);
                    p[6] = 0;
                    p[10..12].fill(0);
                    let c = !fold(sum_bytes(&p[..20], 0));
                    p[10..12].copy_from_slice(&c.to_be_bytes());
                    p
                })
                .collect();
            let out = run(&mut Gro::new(8, true, true), &pkts);
            assert_eq!(out.len(), groups, "{ids:?}");
        }
    }

    #[test]
    fn a_segment_with_a_wrong_checksum_joins_as_linux_wireguard_passes_it() {
        // The checksum of the third, then of the first segment wrong: the payloads come back
        // whole from one super-packet whose own checksum is right.
        for bad in [2, 0] {
            let mut pkts: Vec<_> = (0..4u32)
                .map(|i| build(&spec(bad == 2, TCP, 9, i * 100, TCP_ACK, vec![5; 100])))
                .collect();
            let last = pkts[bad].len() - 1;
            pkts[bad][last] ^= 0x40;
            let out = run(&mut Gro::new(8, true, true), &pkts);
            assert_eq!(out.len(), 1, "segment {bad}");
            let back = resegment(&out[0]);
            assert_eq!(
                back.into_iter().map(normalized).collect::<Vec<_>>(),
                pkts.iter().cloned().map(normalized).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn groups_stop_at_64_segments() {
        let pkts: Vec<_> = (0..150u32)
            .map(|i| build(&spec(false, UDP, 9, 0, 0, vec![i as u8; 64])))
            .collect();
        let out = run(&mut Gro::new(128, true, true), &pkts);
        let sizes: Vec<usize> = out.iter().map(|b| resegment(b).len()).collect();
        assert_eq!(sizes, [MAX_SEGMENTS, MAX_SEGMENTS, 150 - 2 * MAX_SEGMENTS]);
    }

    #[test]
    fn groups_stop_at_64_kib() {
        let pkts: Vec<_> = (0..60u32)
            .map(|i| build(&spec(false, TCP, 9, i * 1400, TCP_ACK, vec![i as u8; 1400])))
            .collect();
        let out = run(&mut Gro::new(128, true, true), &pkts);
        assert_eq!(out.len(), 2);
        assert!(out.iter().all(|b| b.len() - VNET_HDR_LEN <= MAX_GROUP));
        let back: Vec<_> = out
            .iter()
            .flat_map(|b| resegment(b))
            .map(normalized)
            .collect();
        assert_eq!(back, pkts.into_iter().map(normalized).collect::<Vec<_>>());
    }

    #[test]
    fn checksum_sums_match_a_word_by_word_model() {
        let data: Vec<u8> = (0..1001u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 2, 3, 4, 5, 63, 64, 1000, 1001] {
            let d = &data[..len];
            let mut model: u64 = 9;
            for w in d.chunks(2) {
                model += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
            }
            assert_eq!(fold(sum_bytes(d, 9)), fold(model), "len {len}");
        }
    }

    /// One step of a generated traffic mix.
    #[derive(Clone, Debug)]
    enum Step {
        /// Next in-order data segment of flow `f` (0, 1: TCP over v4/v6; 2: UDP).
        Data {
            f: usize,
            len: usize,
            psh: bool,
        },
        /// A segment that skips ahead (loss) or goes back (retransmission).
        Jump {
            f: usize,
            back: bool,
        },
        PureAck {
            f: usize,
        },
        Corrupt {
            f: usize,
        },
        Icmp,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => (0..3usize, prop_oneof![3 => Just(1200usize), 1 => 1..1300usize], prop::bool::weighted(0.1))
                .prop_map(|(f, len, psh)| Step::Data { f, len, psh }),
            1 => (0..3usize, any::<bool>()).prop_map(|(f, back)| Step::Jump { f, back }),
            1 => (0..2usize).prop_map(|f| Step::PureAck { f }),
            1 => (0..3usize).prop_map(|f| Step::Corrupt { f }),
            1 => Just(Step::Icmp),
        ]
    }

    fn traffic(steps: &[Step]) -> Vec<Vec<u8>> {
        let mut seq = [0u32; 3];
        let mut id = 0u16;
        let mut fill = 0u8;
        steps
            .iter()
            .map(|s| {
                id = id.wrapping_add(1);
                fill = fill.wrapping_add(1);
                let mk = |f: usize, seq: u32, flags: u8, len: usize| {
                    let (v6, proto) = [(false, TCP), (true, TCP), (false, UDP)][f];
                    let mut s = spec(v6, proto, 1000 + f as u16, seq, flags, vec![fill; len]);
                    s.id = id;
                    build(&s)
                };
                match *s {
                    Step::Data { f, len, psh } => {
                        let flags = if psh { TCP_ACK | TCP_PSH } else { TCP_ACK };
                        let p = mk(f, seq[f], flags, len);
                        seq[f] = seq[f].wrapping_add(len as u32);
                        p
                    }
                    Step::Jump { f, back } => {
                        let at = if back {
                            seq[f].wrapping_sub(2400)
                        } else {
                            seq[f].wrapping_add(5000)
                        };
                        let p = mk(f, at, TCP_ACK, 1200);
                        if !back {
                            seq[f] = at.wrapping_add(1200);
                        }
                        p
                    }
                    Step::PureAck { f } => mk(f, seq[f], TCP_ACK, 0),
                    Step::Corrupt { f } => {
                        let mut p = mk(f, seq[f], TCP_ACK, 1200);
                        seq[f] = seq[f].wrapping_add(1200);
                        let at = p.len() - 7;
                        p[at] ^= 0x10;
                        p
                    }
                    Step::Icmp => {
                        let mut p = build(&spec(false, TCP, 1, 0, TCP_ACK, vec![0; 8]));
                        p[9] = 1;
                        p
                    }
                }
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Against the kernel's reading of the output: every packet comes back exactly once,
        /// each flow's in the order it was pushed (packets with wrong checksums too).
        #[test]
        fn output_is_the_input_in_flow_order(
            steps in prop::collection::vec(step(), 1..120),
            capacity in 1..20usize,
            udp in any::<bool>(),
        ) {
            let pkts = traffic(&steps);
            let out = run(&mut Gro::new(capacity, true, udp), &pkts);
            prop_assert!(out.len() <= pkts.len());
            let back: Vec<Vec<u8>> = out.iter().flat_map(|b| resegment(b)).collect();
            prop_assert_eq!(back.len(), pkts.len());
            let keys: Vec<Option<FlowKey>> = pkts.iter().map(|p| flow(p)).collect();
            for k in keys.iter().collect::<std::collections::HashSet<_>>() {
                let of = |v: &[Vec<u8>]| -> Vec<Vec<u8>> {
                    v.iter().filter(|p| flow(p) == *k).cloned().map(normalized).collect()
                };
                prop_assert_eq!(of(&back), of(&pkts));
            }
        }
    }
}
