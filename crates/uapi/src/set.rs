//! The body of a `set=1` operation: validating its lines into a [`DeviceSet`], and writing
//! a [`DeviceSet`] back as the exact text `wg` sends.

use crate::error::{may_hold_a_key, quote, quote_unknown, UapiError};
use crate::model::{AllowedIpChange, DeviceSet, PeerSet, SecretKey};
use crate::value::{
    format_endpoint, parse_decimal, parse_endpoint, parse_key, parse_prefix, parse_secret_key,
    push_line, Hex, SecretText,
};
use std::fmt::Write as _;

/// Accumulates the lines of one `set` body. Nothing is applied anywhere: the caller gets a
/// [`DeviceSet`] only when every line was valid.
#[derive(Default)]
pub(crate) struct SetParser {
    set: DeviceSet,
}

impl SetParser {
    /// Validates one line (without its `\n`; never the terminating empty line).
    pub(crate) fn line(&mut self, raw: &[u8]) -> Result<(), UapiError> {
        let text = std::str::from_utf8(raw)
            .map_err(|_| UapiError::protocol(None, "a set line is not valid UTF-8"))?;
        let (key, value) = text.split_once('=').ok_or_else(|| {
            UapiError::protocol(None, format!("set line {} has no '='", quote_unknown(text)))
        })?;
        if key == "public_key" {
            return self.start_peer(value);
        }
        match self.set.peers.last_mut() {
            None => device_line(&mut self.set, key, value),
            Some(peer) => peer_line(peer, key, value),
        }
    }

    fn start_peer(&mut self, value: &str) -> Result<(), UapiError> {
        let public_key = parse_key(value).ok_or_else(|| {
            UapiError::invalid(
                "public_key",
                format!(
                    "invalid public_key {}: expected 64 hex digits",
                    quote(value)
                ),
            )
        })?;
        // XPLAT says a public key may not repeat within one message, but `wg setconf` sends a
        // key twice for a file with two [Peer] sections of one key, and the kernel and
        // wireguard-go apply both in order. So do we: each entry is applied after the previous
        // one (later values win, a later replace_allowed_ips replaces).
        self.set.peers.push(PeerSet::new(public_key));
        Ok(())
    }

    pub(crate) fn finish(mut self) -> DeviceSet {
        // A removed peer's other lines were validated but have no effect (wireguard-go
        // turns the entry into a placeholder), so the model does not carry them.
        for peer in self.set.peers.iter_mut().filter(|p| p.remove) {
            *peer = PeerSet {
                remove: true,
                ..PeerSet::new(peer.public_key)
            };
        }
        self.set
    }
}

fn device_line(set: &mut DeviceSet, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "private_key" => set.private_key = Some(secret_key(key, value)?),
        "listen_port" => set.listen_port = Some(number(key, value, u16::MAX.into())? as u16),
        "fwmark" => set.fwmark = Some(number(key, value, u32::MAX.into())? as u32),
        "replace_peers" => set.replace_peers = flag(key, value)?,
        _ if is_peer_key(key) => {
            return Err(UapiError::invalid(
                key,
                format!(
                    "peer key {key} (value {}) before any public_key",
                    shown(key, value)
                ),
            ))
        }
        _ => return Err(unknown_key(key, value)),
    }
    Ok(())
}

fn peer_line(peer: &mut PeerSet, key: &str, value: &str) -> Result<(), UapiError> {
    match key {
        "remove" => peer.remove = flag(key, value)?,
        "update_only" => peer.update_only = flag(key, value)?,
        "preshared_key" => peer.preshared_key = Some(secret_key(key, value)?),
        "endpoint" => {
            let endpoint = parse_endpoint(value).map_err(|why| {
                UapiError::invalid(key, format!("invalid endpoint {}: {why}", quote(value)))
            })?;
            peer.endpoint = Some(endpoint);
        }
        "persistent_keepalive_interval" => {
            peer.persistent_keepalive_interval = Some(number(key, value, u16::MAX.into())? as u16)
        }
        "replace_allowed_ips" => {
            peer.replace_allowed_ips = flag(key, value)?;
            // wireguard-go clears the list when it reads this line, so entries sent before
            // it in the same message are gone afterwards; dropping them keeps "clear, then
            // apply allowed_ips in order" equivalent for the daemon.
            peer.allowed_ips.clear();
        }
        "allowed_ip" => {
            let (remove, prefix) = match value.strip_prefix('-') {
                Some(prefix) => (true, prefix),
                None => (false, value),
            };
            let (ip, cidr) = parse_prefix(prefix).map_err(|why| {
                UapiError::invalid(key, format!("invalid allowed_ip {}: {why}", quote(value)))
            })?;
            peer.allowed_ips.push(AllowedIpChange { ip, cidr, remove });
        }
        "protocol_version" => {
            // wireguard-go compares the text with "1"; so do we ("01" is refused too).
            if value != "1" {
                return Err(UapiError::invalid(
                    key,
                    format!(
                        "unsupported protocol_version {}: only 1 exists",
                        quote(value)
                    ),
                ));
            }
            peer.protocol_version = Some(1);
        }
        _ if is_device_key(key) => {
            return Err(UapiError::invalid(
                key,
                format!(
                    "device key {key} (value {}) after the first public_key",
                    shown(key, value)
                ),
            ))
        }
        _ => return Err(unknown_key(key, value)),
    }
    Ok(())
}

fn is_device_key(key: &str) -> bool {
    matches!(
        key,
        "private_key" | "listen_port" | "fwmark" | "replace_peers"
    )
}

fn is_peer_key(key: &str) -> bool {
    matches!(
        key,
        "remove"
            | "update_only"
            | "preshared_key"
            | "endpoint"
            | "persistent_keepalive_interval"
            | "replace_allowed_ips"
            | "allowed_ip"
            | "protocol_version"
    )
}

fn is_secret_key(key: &str) -> bool {
    matches!(key, "private_key" | "preshared_key")
}

/// A value for an error message; secrets are described by length only, because error
/// messages end up in logs and a near-valid private key is still a private key.
fn shown(key: &str, value: &str) -> String {
    if is_secret_key(key) {
        format!("<secret, {} characters>", value.len())
    } else {
        quote(value)
    }
}

/// An unknown key may be a misspelt secret one (`privatekey=…`), or a base64 key sent where a
/// line belongs (its final `=` makes the key text the "key"): text long enough to be a key is
/// described by its length only, in the message and in [`UapiError::key`].
fn unknown_key(key: &str, value: &str) -> UapiError {
    let message = format!(
        "unknown key {} (value {})",
        quote_unknown(key),
        quote_unknown(value)
    );
    if may_hold_a_key(key) {
        UapiError::new(crate::errno::EINVAL, None, message)
    } else {
        UapiError::invalid(key, message)
    }
}

fn secret_key(key: &str, value: &str) -> Result<SecretKey, UapiError> {
    parse_secret_key(value).ok_or_else(|| {
        UapiError::invalid(
            key,
            format!(
                "invalid {key} {}: expected 64 hex digits",
                shown(key, value)
            ),
        )
    })
}

fn number(key: &str, value: &str, max: u64) -> Result<u64, UapiError> {
    parse_decimal(value, max).ok_or_else(|| {
        UapiError::invalid(
            key,
            format!(
                "invalid {key} {}: expected a decimal number in 0..={max}",
                quote(value)
            ),
        )
    })
}

/// Flags have exactly one valid value; wireguard-go refuses `false` and anything else
/// rather than treating it as "off".
fn flag(key: &str, value: &str) -> Result<bool, UapiError> {
    if value == "true" {
        Ok(true)
    } else {
        Err(UapiError::invalid(
            key,
            format!(
                "invalid {key} {}: the only valid value is true",
                quote(value)
            ),
        ))
    }
}

/// The text `wg` sends for `set`: `set=1`, device keys (private_key, listen_port, fwmark,
/// replace_peers), then per peer public_key and either `remove=true` alone or update_only,
/// protocol_version, preshared_key, endpoint, persistent_keepalive_interval,
/// replace_allowed_ips, allowed_ip lines; then an empty line.
///
/// `wg` never sends `protocol_version`; it is written (after `update_only`) only when set,
/// so that every [`DeviceSet`] the parser accepts survives a round trip.
///
/// The text holds the private and preshared keys in hex. It is built without leaving copies
/// behind in freed memory (see `SecretText`), and the caller should wipe it after use
/// (`zeroize::Zeroizing::new(emit_set(&set))`), as [`crate::client::set_at`] does.
pub fn emit_set(set: &DeviceSet) -> String {
    // Device lines take under 128 bytes, a peer's other lines under 256, each allowed_ip
    // under 64; should that be short, the text grows by moving and wiping.
    let estimate = 128
        + set
            .peers
            .iter()
            .map(|p| 256 + 64 * p.allowed_ips.len())
            .sum::<usize>();
    let mut out = SecretText::with_capacity(estimate);
    push_line(&mut out, "set", 1);
    if let Some(key) = &set.private_key {
        push_line(&mut out, "private_key", Hex(key.as_bytes()));
    }
    if let Some(port) = set.listen_port {
        push_line(&mut out, "listen_port", port);
    }
    if let Some(mark) = set.fwmark {
        push_line(&mut out, "fwmark", mark);
    }
    if set.replace_peers {
        push_line(&mut out, "replace_peers", "true");
    }
    for peer in &set.peers {
        push_line(&mut out, "public_key", Hex(&peer.public_key));
        if peer.remove {
            push_line(&mut out, "remove", "true");
            continue;
        }
        if peer.update_only {
            push_line(&mut out, "update_only", "true");
        }
        if let Some(version) = peer.protocol_version {
            push_line(&mut out, "protocol_version", version);
        }
        if let Some(key) = &peer.preshared_key {
            push_line(&mut out, "preshared_key", Hex(key.as_bytes()));
        }
        if let Some(endpoint) = &peer.endpoint {
            push_line(&mut out, "endpoint", format_endpoint(endpoint));
        }
        if let Some(interval) = peer.persistent_keepalive_interval {
            push_line(&mut out, "persistent_keepalive_interval", interval);
        }
        if peer.replace_allowed_ips {
            push_line(&mut out, "replace_allowed_ips", "true");
        }
        for change in &peer.allowed_ips {
            let sign = if change.remove { "-" } else { "" };
            push_line(
                &mut out,
                "allowed_ip",
                format_args!("{sign}{}/{}", change.ip, change.cidr),
            );
        }
    }
    let _ = out.write_str("\n");
    out.into_string()
}
