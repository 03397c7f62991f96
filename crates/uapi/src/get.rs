//! The `get=1` reply in both directions, and the `errno=` status line.

use crate::error::{quote, quote_unknown, UapiError};
use crate::model::{DeviceInfo, PeerInfo};
use crate::value::{
    format_endpoint, parse_decimal, parse_endpoint, parse_key, parse_prefix, parse_secret_key,
    push_line, Hex, SecretText,
};
use std::fmt::Write as _;
use std::io::{self, Write};
use zeroize::Zeroizing;

/// The reply to `get=1` in wireguard-go's order and format, ending with `errno=0` and an
/// empty line (PROTOCOL.md §7.5):
/// private_key (omitted if none), listen_port (omitted if 0), fwmark (omitted if 0); per
/// peer public_key, preshared_key (64 zeros if none), protocol_version (omitted if 0),
/// endpoint (if any), last_handshake_time_sec, last_handshake_time_nsec, tx_bytes,
/// rx_bytes, persistent_keepalive_interval, then one allowed_ip line per prefix.
///
/// The text holds the private and preshared keys in hex. It is built without leaving copies
/// behind in freed memory, and the caller should wipe it after use, as
/// [`write_get_response`] does.
pub fn emit_get_response(info: &DeviceInfo) -> String {
    // Device lines take under 128 bytes; a peer's fixed lines under 512, each prefix under 64.
    let estimate = 128
        + info
            .peers
            .iter()
            .map(|p| 512 + 64 * p.allowed_ips.len())
            .sum::<usize>();
    let mut out = SecretText::with_capacity(estimate);
    if let Some(key) = info.private_key.as_ref().filter(|k| !k.is_zero()) {
        push_line(&mut out, "private_key", Hex(key.as_bytes()));
    }
    if info.listen_port != 0 {
        push_line(&mut out, "listen_port", info.listen_port);
    }
    if info.fwmark != 0 {
        push_line(&mut out, "fwmark", info.fwmark);
    }
    for peer in &info.peers {
        push_line(&mut out, "public_key", Hex(&peer.public_key));
        let psk = peer
            .preshared_key
            .as_ref()
            .map_or(&[0; 32], |k| k.as_bytes());
        push_line(&mut out, "preshared_key", Hex(psk));
        if peer.protocol_version != 0 {
            push_line(&mut out, "protocol_version", peer.protocol_version);
        }
        if let Some(endpoint) = &peer.endpoint {
            push_line(&mut out, "endpoint", format_endpoint(endpoint));
        }
        push_line(
            &mut out,
            "last_handshake_time_sec",
            peer.last_handshake_time_sec,
        );
        push_line(
            &mut out,
            "last_handshake_time_nsec",
            peer.last_handshake_time_nsec,
        );
        push_line(&mut out, "tx_bytes", peer.tx_bytes);
        push_line(&mut out, "rx_bytes", peer.rx_bytes);
        push_line(
            &mut out,
            "persistent_keepalive_interval",
            peer.persistent_keepalive_interval,
        );
        for (ip, cidr) in &peer.allowed_ips {
            push_line(&mut out, "allowed_ip", format_args!("{ip}/{cidr}"));
        }
    }
    let _ = out.write_str("errno=0\n\n");
    out.into_string()
}

/// Writes [`emit_get_response`]'s text in one call (a reader never sees half a reply
/// because of our buffering) and flushes.
///
/// The text is wiped once written (a buffering `w` keeps its own copy, for its owner to
/// deal with).
pub fn write_get_response<W: Write>(w: &mut W, info: &DeviceInfo) -> io::Result<()> {
    let text = Zeroizing::new(emit_get_response(info));
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// Writes `errno=N` and the empty line ending a reply, then flushes. `N` is written as
/// given: 0 for success, [`UapiError::wire_errno`] (negative) for a failure.
pub fn write_errno<W: Write>(w: &mut W, errno: i32) -> io::Result<()> {
    write!(w, "errno={errno}\n\n")?;
    w.flush()
}

/// Parses a `get=1` reply the way `wg` does (PROTOCOL.md §7.5):
///
/// * the reply ends at its first empty line; the end of the text before that is EPROTO;
/// * a line without `=` or with a malformed value is EPROTO;
/// * an `errno` line is mandatory: missing or negative → EPROTO; a positive value → an error
///   carrying that errno; the last `errno` line wins;
/// * device keys count only before the first `public_key`, peer keys only after it; keys out
///   of place and unknown keys (boringtun's `own_public_key`, for one) are ignored;
/// * an all-zero `private_key` or `preshared_key` means none;
/// * a peer without a `protocol_version` line (boringtun) gets 0; an unparsable one is
///   ignored too, since `wg` does not read it.
pub fn parse_get_response(text: &str) -> Result<DeviceInfo, UapiError> {
    let mut info = DeviceInfo::default();
    let mut status: Option<i32> = None;
    let mut rest = text;
    loop {
        let (line, after) = rest.split_once('\n').ok_or_else(|| {
            UapiError::protocol(None, "the get reply ended before its empty line")
        })?;
        rest = after;
        if line.is_empty() {
            break;
        }
        let (key, value) = line.split_once('=').ok_or_else(|| {
            UapiError::protocol(
                None,
                format!("get reply line {} has no '='", quote_unknown(line)),
            )
        })?;
        if key == "errno" {
            let n = parse_decimal(value, i32::MAX as u64).ok_or_else(|| {
                UapiError::protocol(
                    Some(key),
                    format!(
                        "invalid errno {} in a get reply: expected a non-negative decimal",
                        quote(value)
                    ),
                )
            })?;
            status = Some(n as i32);
            continue;
        }
        if key == "public_key" {
            let public_key = parse_key(value).ok_or_else(|| malformed(key, value))?;
            let mut peer = PeerInfo::new(public_key);
            peer.protocol_version = 0; // until the reply says otherwise
            info.peers.push(peer);
            continue;
        }
        match info.peers.last_mut() {
            None => device_field(&mut info, key, value)?,
            Some(peer) => peer_field(peer, key, value)?,
        }
    }
    match status {
        None => Err(UapiError::protocol(
            Some("errno"),
            "the get reply has no errno line",
        )),
        Some(0) => Ok(info),
        Some(n) => Err(UapiError::new(
            n,
            Some("errno"),
            format!("the daemon answered get with errno={n}"),
        )),
    }
}

fn device_field(info: &mut DeviceInfo, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => {
            let k = parse_secret_key(value).ok_or_else(|| malformed_secret(key, value))?;
            info.private_key = (!k.is_zero()).then_some(k);
        }
        "listen_port" => info.listen_port = number(key, value, u16::MAX.into())? as u16,
        "fwmark" => info.fwmark = number(key, value, u32::MAX.into())? as u32,
        _ => {} // unknown or out of place: ignored, as `wg` ignores it
    }
    Ok(())
}

fn peer_field(peer: &mut PeerInfo, key: &str, value: &str) -> Result<(), UapiError> {
    // `wg` reads times as signed 64-bit values.
    const TIME_MAX: u64 = i64::MAX as u64;
    match key {
        "preshared_key" => {
            let k = parse_secret_key(value).ok_or_else(|| malformed_secret(key, value))?;
            peer.preshared_key = (!k.is_zero()).then_some(k);
        }
        "endpoint" => {
            peer.endpoint = Some(parse_endpoint(value).map_err(|why| {
                UapiError::protocol(
                    Some(key),
                    format!("invalid endpoint {}: {why}", quote(value)),
                )
            })?)
        }
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive_interval = number(key, value, u16::MAX.into())? as u16
        }
        "allowed_ip" => {
            let prefix = parse_prefix(value).map_err(|why| {
                UapiError::protocol(
                    Some(key),
                    format!("invalid allowed_ip {}: {why}", quote(value)),
                )
            })?;
            peer.allowed_ips.push(prefix);
        }
        "last_handshake_time_sec" => peer.last_handshake_time_sec = number(key, value, TIME_MAX)?,
        "last_handshake_time_nsec" => {
            peer.last_handshake_time_nsec = number(key, value, u32::MAX.into())? as u32
        }
        "rx_bytes" => peer.rx_bytes = number(key, value, u64::MAX)?,
        "tx_bytes" => peer.tx_bytes = number(key, value, u64::MAX)?,
        "protocol_version" => {
            if let Some(v) = parse_decimal(value, u32::MAX.into()) {
                peer.protocol_version = v as u32;
            }
        }
        _ => {} // unknown or out of place: ignored, as `wg` ignores it
    }
    Ok(())
}

fn number(key: &str, value: &str, max: u64) -> Result<u64, UapiError> {
    parse_decimal(value, max).ok_or_else(|| {
        UapiError::protocol(
            Some(key),
            format!(
                "invalid {key} {} in a get reply: expected a decimal number in 0..={max}",
                quote(value)
            ),
        )
    })
}

fn malformed(key: &str, value: &str) -> UapiError {
    UapiError::protocol(
        Some(key),
        format!(
            "invalid {key} {} in a get reply: expected 64 hex digits",
            quote(value)
        ),
    )
}

fn malformed_secret(key: &str, value: &str) -> UapiError {
    UapiError::protocol(
        Some(key),
        format!(
            "invalid {key} (<secret, {} characters>) in a get reply: expected 64 hex digits",
            value.len()
        ),
    )
}
