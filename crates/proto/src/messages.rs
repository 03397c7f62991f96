//! Wire layouts of the four message types. Parsing is strict: the first four bytes are read as
//! one little-endian word (type plus three zero reserved bytes) and handshake messages must have
//! their exact length, as in every interoperating implementation; anything else is not a
//! WireGuard message and is dropped without a reply.

use crate::constants::*;

/// The kind of a datagram that passed the type and length checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    Initiation,
    Response,
    CookieReply,
    Transport,
}

/// Classifies a datagram by its header word and length. `None` means "not ours": drop it.
pub fn classify(datagram: &[u8]) -> Option<MessageType> {
    if datagram.len() < 4 || datagram.len() > MAX_DATAGRAM_LEN {
        return None;
    }
    let word = u32::from_le_bytes([datagram[0], datagram[1], datagram[2], datagram[3]]);
    match (word, datagram.len()) {
        (w, INITIATION_LEN) if w == MESSAGE_INITIATION as u32 => Some(MessageType::Initiation),
        (w, RESPONSE_LEN) if w == MESSAGE_RESPONSE as u32 => Some(MessageType::Response),
        (w, COOKIE_REPLY_LEN) if w == MESSAGE_COOKIE_REPLY as u32 => Some(MessageType::CookieReply),
        (w, n) if w == MESSAGE_TRANSPORT as u32 && n >= TRANSPORT_OVERHEAD => {
            Some(MessageType::Transport)
        }
        _ => None,
    }
}

fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[..N]);
    a
}

/// Message type 1, 148 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Initiation {
    pub sender: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_static: [u8; 48],
    pub encrypted_timestamp: [u8; 28],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Initiation {
    /// Offset of mac1: the bytes before it are what mac1 covers.
    pub const MAC1_OFFSET: usize = 116;
    pub const MAC2_OFFSET: usize = 132;

    pub fn parse(b: &[u8]) -> Option<Self> {
        if classify(b) != Some(MessageType::Initiation) {
            return None;
        }
        Some(Initiation {
            sender: le32(&b[4..]),
            ephemeral: arr(&b[8..]),
            encrypted_static: arr(&b[40..]),
            encrypted_timestamp: arr(&b[88..]),
            mac1: arr(&b[116..]),
            mac2: arr(&b[132..]),
        })
    }

    pub fn to_bytes(&self) -> [u8; INITIATION_LEN] {
        let mut b = [0u8; INITIATION_LEN];
        b[0] = MESSAGE_INITIATION;
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..40].copy_from_slice(&self.ephemeral);
        b[40..88].copy_from_slice(&self.encrypted_static);
        b[88..116].copy_from_slice(&self.encrypted_timestamp);
        b[116..132].copy_from_slice(&self.mac1);
        b[132..148].copy_from_slice(&self.mac2);
        b
    }
}

/// Message type 2, 92 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub sender: u32,
    pub receiver: u32,
    pub ephemeral: [u8; 32],
    pub encrypted_nothing: [u8; 16],
    pub mac1: [u8; 16],
    pub mac2: [u8; 16],
}

impl Response {
    pub const MAC1_OFFSET: usize = 60;
    pub const MAC2_OFFSET: usize = 76;

    pub fn parse(b: &[u8]) -> Option<Self> {
        if classify(b) != Some(MessageType::Response) {
            return None;
        }
        Some(Response {
            sender: le32(&b[4..]),
            receiver: le32(&b[8..]),
            ephemeral: arr(&b[12..]),
            encrypted_nothing: arr(&b[44..]),
            mac1: arr(&b[60..]),
            mac2: arr(&b[76..]),
        })
    }

    pub fn to_bytes(&self) -> [u8; RESPONSE_LEN] {
        let mut b = [0u8; RESPONSE_LEN];
        b[0] = MESSAGE_RESPONSE;
        b[4..8].copy_from_slice(&self.sender.to_le_bytes());
        b[8..12].copy_from_slice(&self.receiver.to_le_bytes());
        b[12..44].copy_from_slice(&self.ephemeral);
        b[44..60].copy_from_slice(&self.encrypted_nothing);
        b[60..76].copy_from_slice(&self.mac1);
        b[76..92].copy_from_slice(&self.mac2);
        b
    }
}

/// Message type 3, 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieReply {
    pub receiver: u32,
    pub nonce: [u8; COOKIE_NONCE_LEN],
    pub encrypted_cookie: [u8; COOKIE_LEN + TAG_LEN],
}

impl CookieReply {
    pub fn parse(b: &[u8]) -> Option<Self> {
        if classify(b) != Some(MessageType::CookieReply) {
            return None;
        }
        Some(CookieReply {
            receiver: le32(&b[4..]),
            nonce: arr(&b[8..]),
            encrypted_cookie: arr(&b[32..]),
        })
    }

    pub fn to_bytes(&self) -> [u8; COOKIE_REPLY_LEN] {
        let mut b = [0u8; COOKIE_REPLY_LEN];
        b[0] = MESSAGE_COOKIE_REPLY;
        b[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        b[8..32].copy_from_slice(&self.nonce);
        b[32..64].copy_from_slice(&self.encrypted_cookie);
        b
    }
}

/// The 16-byte header of a transport message: type, receiver index, counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransportHeader {
    pub receiver: u32,
    pub counter: u64,
}

impl TransportHeader {
    /// Reads the header of a datagram already classified as transport.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if classify(b) != Some(MessageType::Transport) {
            return None;
        }
        Some(TransportHeader {
            receiver: le32(&b[4..]),
            counter: u64::from_le_bytes(arr(&b[8..])),
        })
    }

    pub fn write(&self, out: &mut [u8]) {
        out[..4].copy_from_slice(&(MESSAGE_TRANSPORT as u32).to_le_bytes());
        out[4..8].copy_from_slice(&self.receiver.to_le_bytes());
        out[8..16].copy_from_slice(&self.counter.to_le_bytes());
    }
}

/// Length of a transport plaintext after padding: a multiple of 16, but never past the MTU
/// (so a full-MTU packet is not pushed over the path MTU by its padding). An MTU of 0 means
/// "unknown" and pads to the next multiple of 16.
pub fn padded_len(len: usize, mtu: usize) -> usize {
    let round = |n: usize| n.div_ceil(PADDING_MULTIPLE) * PADDING_MULTIPLE;
    if mtu == 0 {
        return round(len);
    }
    // Packets longer than the MTU (GSO super-packets cannot reach here; this is for MTU
    // changes racing a queued packet) pad only their last partial MTU-sized piece.
    let last = if len > mtu { len % mtu } else { len };
    let padded_last = round(last).min(mtu);
    len - last + padded_last
}

/// The length of the IP packet at the start of a decrypted plaintext, from its own header, or
/// `None` if the plaintext is not a plausible IPv4/IPv6 packet. The receiver trusts this length
/// and drops the padding after it.
pub fn inner_packet_len(plaintext: &[u8]) -> Option<usize> {
    let first = *plaintext.first()?;
    let len = match first >> 4 {
        4 => {
            if plaintext.len() < 20 {
                return None;
            }
            let total = u16::from_be_bytes([plaintext[2], plaintext[3]]) as usize;
            if total < 20 {
                return None;
            }
            total
        }
        6 => {
            if plaintext.len() < 40 {
                return None;
            }
            u16::from_be_bytes([plaintext[4], plaintext[5]]) as usize + 40
        }
        _ => return None,
    };
    (len <= plaintext.len()).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classify_checks_reserved_bytes_and_lengths() {
        let mut init = [0u8; INITIATION_LEN];
        init[0] = 1;
        assert_eq!(classify(&init), Some(MessageType::Initiation));
        init[1] = 1;
        assert_eq!(classify(&init), None);
        assert_eq!(classify(&init[..147]), None);
        let mut t = [0u8; 31];
        t[0] = 4;
        assert_eq!(classify(&t), None);
        let mut t = [0u8; 32];
        t[0] = 4;
        assert_eq!(classify(&t), Some(MessageType::Transport));
        let mut r = [0u8; 93];
        r[0] = 2;
        assert_eq!(classify(&r), None);
        let mut c = [0u8; 64];
        c[0] = 3;
        assert_eq!(classify(&c), Some(MessageType::CookieReply));
        c[0] = 5;
        assert_eq!(classify(&c), None);
        assert_eq!(classify(&[]), None);
        assert_eq!(classify(&vec![4u8; 70000]), None);
    }

    #[test]
    fn padding_rule() {
        assert_eq!(padded_len(0, 1420), 0);
        assert_eq!(padded_len(28, 1420), 32);
        assert_eq!(padded_len(84, 1420), 96);
        assert_eq!(padded_len(1419, 1420), 1420);
        assert_eq!(padded_len(1420, 1420), 1420);
        assert_eq!(padded_len(1418, 1419), 1419);
        assert_eq!(padded_len(17, 0), 32);
    }

    #[test]
    fn round_trips() {
        let i = Initiation {
            sender: 0x11223344,
            ephemeral: [1; 32],
            encrypted_static: [2; 48],
            encrypted_timestamp: [3; 28],
            mac1: [4; 16],
            mac2: [5; 16],
        };
        assert_eq!(Initiation::parse(&i.to_bytes()), Some(i));
        let r = Response {
            sender: 7,
            receiver: 9,
            ephemeral: [1; 32],
            encrypted_nothing: [2; 16],
            mac1: [3; 16],
            mac2: [4; 16],
        };
        assert_eq!(Response::parse(&r.to_bytes()), Some(r));
        let c = CookieReply {
            receiver: 5,
            nonce: [6; 24],
            encrypted_cookie: [7; 32],
        };
        assert_eq!(CookieReply::parse(&c.to_bytes()), Some(c));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), t in 0u8..6) {
            let mut b = bytes;
            if !b.is_empty() { b[0] = t; }
            let _ = classify(&b);
            let _ = Initiation::parse(&b);
            let _ = Response::parse(&b);
            let _ = CookieReply::parse(&b);
            let _ = TransportHeader::parse(&b);
            let _ = inner_packet_len(&b);
        }

        #[test]
        fn padding_is_multiple_of_16_or_mtu(len in 0usize..3000, mtu in 0usize..9000) {
            let p = padded_len(len, mtu);
            prop_assert!(p >= len);
            if mtu == 0 || len <= mtu {
                prop_assert!(p.is_multiple_of(16) || p == mtu);
                prop_assert!(mtu == 0 || p <= mtu.max(len));
            }
        }
    }
}
