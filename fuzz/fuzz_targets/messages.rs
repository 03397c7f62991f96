//! The wire parsers on arbitrary bytes: `classify`, the four message parsers,
//! `inner_packet_len`, `padded_len` and the device's inner-address readers.
//!
//! Beyond "never panics", the parsers must agree with `classify` (a parser accepts exactly
//! the datagrams classified as its type), re-emit what they parsed byte for byte, and the
//! length readers must stay inside the buffer they were given.
#![no_main]

use ferrowg_proto::constants::*;
use ferrowg_proto::device::{destination_address, source_address};
use ferrowg_proto::messages::{
    classify, inner_packet_len, padded_len, CookieReply, Initiation, MessageType, Response,
    TransportHeader,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let kind = classify(data);
    if let Some(kind) = kind {
        assert!(data.len() >= TRANSPORT_OVERHEAD.min(COOKIE_REPLY_LEN));
        assert!(data.len() <= MAX_DATAGRAM_LEN);
        assert_eq!(&data[1..4], &[0, 0, 0], "reserved bytes must be zero");
        let expect_len = match kind {
            MessageType::Initiation => Some(INITIATION_LEN),
            MessageType::Response => Some(RESPONSE_LEN),
            MessageType::CookieReply => Some(COOKIE_REPLY_LEN),
            MessageType::Transport => None,
        };
        match expect_len {
            Some(n) => assert_eq!(data.len(), n),
            None => assert!(data.len() >= TRANSPORT_OVERHEAD),
        }
    }

    let init = Initiation::parse(data);
    assert_eq!(init.is_some(), kind == Some(MessageType::Initiation));
    if let Some(m) = init {
        assert_eq!(&m.to_bytes()[..], data);
    }
    let resp = Response::parse(data);
    assert_eq!(resp.is_some(), kind == Some(MessageType::Response));
    if let Some(m) = resp {
        assert_eq!(&m.to_bytes()[..], data);
    }
    let cookie = CookieReply::parse(data);
    assert_eq!(cookie.is_some(), kind == Some(MessageType::CookieReply));
    if let Some(m) = cookie {
        assert_eq!(&m.to_bytes()[..], data);
    }
    let hdr = TransportHeader::parse(data);
    assert_eq!(hdr.is_some(), kind == Some(MessageType::Transport));
    if let Some(h) = hdr {
        let mut out = [0u8; TRANSPORT_HEADER_LEN];
        h.write(&mut out);
        assert_eq!(&out[..], &data[..TRANSPORT_HEADER_LEN]);
    }

    // The inner packet readers see decrypted plaintexts: any bytes at all.
    if let Some(len) = inner_packet_len(data) {
        assert!(len <= data.len());
        assert!(len >= 20, "shorter than any IP header: {len}");
        assert!(source_address(data).is_some());
        assert!(destination_address(data).is_some());
    }
    let _ = source_address(data);
    let _ = destination_address(data);

    // Padding: the first bytes choose a packet length and an MTU.
    if data.len() >= 4 {
        let len = u16::from_le_bytes([data[0], data[1]]) as usize;
        let mtu = u16::from_le_bytes([data[2], data[3]]) as usize;
        let p = padded_len(len, mtu);
        assert!(p >= len && p < len + PADDING_MULTIPLE, "{len} {mtu} -> {p}");
        if mtu == 0 || len <= mtu {
            assert!(p % PADDING_MULTIPLE == 0 || p == mtu, "{len} {mtu} -> {p}");
            assert!(mtu == 0 || p <= mtu, "{len} {mtu} -> {p}");
        }
    }
});
