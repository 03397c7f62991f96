//! Value syntax shared by both directions: decimal numbers, hex keys, endpoints, prefixes.
//! Each parser returns a short reason on failure; callers wrap it with the key and value.

use crate::model::{Key, SecretKey};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use zeroize::{Zeroize, Zeroizing};

/// An unsigned decimal number no greater than `max`: ASCII digits only (no sign, no
/// spaces, no `0x`), leading zeros allowed. That is what wireguard-go's `ParseUint(v, 10,
/// bits)` and `wg`'s `isdigit` + `strtoull` both accept, and nothing more. (Rust's own
/// `u16::from_str` would also take a leading `+`.)
pub(crate) fn parse_decimal(text: &str, max: u64) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut n: u64 = 0;
    for digit in text.bytes().map(|b| u64::from(b - b'0')) {
        n = n.checked_mul(10)?.checked_add(digit)?;
    }
    (n <= max).then_some(n)
}

pub(crate) fn parse_key(text: &str) -> Option<Key> {
    ferrowg_proto::keys::decode_hex_key(text)
}

/// 64 hex digits (either case) decoded straight into a [`SecretKey`], so that no plain copy
/// of the key is left behind (a refused value is wiped with the key being filled).
pub(crate) fn parse_secret_key(text: &str) -> Option<SecretKey> {
    let mut key = SecretKey::zero();
    ferrowg_proto::keys::decode_hex_key_into(text, key.as_mut_bytes()).then_some(key)
}

/// Writes a key as the 64 lowercase hex digits the protocol carries, straight into the
/// formatter from a stack buffer that is wiped afterwards: no `String` ever holds the text
/// of a secret key on its own.
pub(crate) struct Hex<'a>(pub &'a [u8; 32]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut text = Zeroizing::new([0u8; 64]);
        for (pair, &byte) in text.chunks_exact_mut(2).zip(self.0) {
            pair[0] = DIGITS[usize::from(byte >> 4)];
            pair[1] = DIGITS[usize::from(byte & 15)];
        }
        // Hex digits are ASCII.
        f.write_str(std::str::from_utf8(&text[..]).map_err(|_| fmt::Error)?)
    }
}

/// Text that holds secrets (UAPI messages, `showconf`/`show` output): wiped when dropped,
/// and never leaving a stale copy behind: when the text outgrows its allocation it moves to
/// a bigger one itself and wipes the old one, instead of letting `String` reallocate (which
/// frees the old block without clearing it). Write to it with `write!`.
pub struct SecretText(Zeroizing<String>);

impl SecretText {
    pub fn with_capacity(capacity: usize) -> Self {
        SecretText(Zeroizing::new(String::with_capacity(capacity)))
    }

    pub fn push_str(&mut self, s: &str) {
        let _ = fmt::Write::write_str(self, s);
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The text, still wiped on drop.
    pub fn into_inner(self) -> Zeroizing<String> {
        self.0
    }

    /// The text as a plain `String`. Its allocation has never been moved, so it is the only
    /// copy; the caller is responsible for wiping it.
    pub(crate) fn into_string(mut self) -> String {
        std::mem::take(&mut *self.0)
    }
}

impl fmt::Write for SecretText {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let needed = self.0.len() + s.len();
        if needed > self.0.capacity() {
            let mut bigger = String::with_capacity(needed.max(2 * self.0.capacity()).max(64));
            bigger.push_str(&self.0);
            // Wipes the whole old allocation, spare capacity included, before it is freed.
            self.0.zeroize();
            *self.0 = bigger;
        }
        self.0.push_str(s);
        Ok(())
    }
}

/// A numeric endpoint: `a.b.c.d:port`, `[v6]:port` or `[v6%scope]:port`.
///
/// IPv6 must be bracketed (as wireguard-go's parser requires, and as every implementation
/// prints it) and an IPv4 address must not be. The scope is an interface index, or a name
/// (what `wg` sends) resolved through sysfs in the caller's network namespace.
pub(crate) fn parse_endpoint(text: &str) -> Result<SocketAddr, &'static str> {
    if let Some(inner) = text.strip_prefix('[') {
        let (host, port) = inner.split_once("]:").ok_or("expected [IPv6]:port")?;
        let (address, scope) = match host.split_once('%') {
            Some((address, scope)) => (address, Some(scope)),
            None => (host, None),
        };
        let ip: Ipv6Addr = address
            .parse()
            .map_err(|_| "not a numeric IPv6 address inside the brackets")?;
        let scope_id = match scope {
            None => 0,
            Some(scope) => match parse_decimal(scope, u64::from(u32::MAX)) {
                Some(index) => index as u32,
                // `wg` sends the scope as the interface name (`[fe80::1%eth0]:51820`), as
                // getnameinfo prints it; the kernel and wireguard-go resolve it to its index.
                None => interface_index(scope)
                    .ok_or("the scope must be an interface index or an existing interface name")?,
            },
        };
        let port = parse_port(port)?;
        Ok(SocketAddr::V6(SocketAddrV6::new(ip, port, 0, scope_id)))
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or("expected IPv4:port or [IPv6]:port")?;
        let ip: Ipv4Addr = host.parse().map_err(|_| {
            if host.contains(':') {
                "an IPv6 endpoint must be written [IPv6]:port"
            } else {
                "not a numeric IPv4 address"
            }
        })?;
        let port = parse_port(port)?;
        Ok(SocketAddr::new(IpAddr::V4(ip), port))
    }
}

/// The index of interface `name` in this network namespace (sysfs; no libc call needed).
fn interface_index(name: &str) -> Option<u32> {
    if name.is_empty() || name.len() > 15 || name.contains('/') || name.starts_with('.') {
        return None;
    }
    std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn parse_port(text: &str) -> Result<u16, &'static str> {
    parse_decimal(text, u64::from(u16::MAX))
        .map(|p| p as u16)
        .ok_or("the port must be a decimal number in 0..=65535")
}

/// The text form every implementation prints: `a.b.c.d:port`, `[v6]:port`, and `%scope`
/// inside the brackets when the scope id is not 0. (Flow info is not part of the protocol.)
pub(crate) fn format_endpoint(endpoint: &SocketAddr) -> String {
    match endpoint {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) if v6.scope_id() != 0 => {
            format!("[{}%{}]:{}", v6.ip(), v6.scope_id(), v6.port())
        }
        SocketAddr::V6(v6) => format!("[{}]:{}", v6.ip(), v6.port()),
    }
}

/// `IP/cidr`, with cidr at most 32 (IPv4) or 128 (IPv6). Host bits are allowed. The `/cidr`
/// part is required: only `wg`'s command line supplies a default.
pub(crate) fn parse_prefix(text: &str) -> Result<(IpAddr, u8), &'static str> {
    let (address, cidr) = text.split_once('/').ok_or("expected IP/cidr")?;
    let ip: IpAddr = address.parse().map_err(|_| "not a numeric IP address")?;
    let max = match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    };
    let cidr = parse_decimal(cidr, max).ok_or(match ip {
        IpAddr::V4(_) => "the prefix length must be a decimal number in 0..=32",
        IpAddr::V6(_) => "the prefix length must be a decimal number in 0..=128",
    })?;
    Ok((ip, cidr as u8))
}

/// `buf.extend_from_slice(bytes)`, except that growing moves the contents to a new
/// allocation and wipes the old one rather than letting `Vec` free it unwiped.
pub fn extend_wiping(buf: &mut Vec<u8>, bytes: &[u8]) {
    let needed = buf.len() + bytes.len();
    if needed > buf.capacity() {
        let mut bigger = Vec::with_capacity(needed.max(2 * buf.capacity()));
        bigger.extend_from_slice(buf);
        buf.zeroize();
        *buf = bigger;
    }
    buf.extend_from_slice(bytes);
}

/// Appends `key=value\n`.
pub(crate) fn push_line(out: &mut impl fmt::Write, key: &str, value: impl fmt::Display) {
    // Writing to a String (or a SecretText) cannot fail.
    let _ = writeln!(out, "{key}={value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_accepts_digits_only() {
        assert_eq!(parse_decimal("0", 10), Some(0));
        assert_eq!(parse_decimal("0051820", 65535), Some(51820));
        assert_eq!(parse_decimal("65535", 65535), Some(65535));
        assert_eq!(parse_decimal("65536", 65535), None);
        assert_eq!(
            parse_decimal("18446744073709551615", u64::MAX),
            Some(u64::MAX)
        );
        assert_eq!(parse_decimal("18446744073709551616", u64::MAX), None);
        for bad in ["", "+1", "-1", " 1", "1 ", "0x10", "1_0", "١"] {
            assert_eq!(parse_decimal(bad, u64::MAX), None, "{bad:?}");
        }
    }

    #[test]
    fn endpoints_parse_and_print_back() {
        for text in [
            "192.0.2.1:51820",
            "[2001:db8::5]:51820",
            "[fe80::1%2]:51820",
            "[::ffff:192.0.2.1]:1",
            "0.0.0.0:0",
        ] {
            let parsed = parse_endpoint(text).unwrap();
            assert_eq!(format_endpoint(&parsed), text);
        }
        let scoped = parse_endpoint("[fe80::1%2]:51820").unwrap();
        match scoped {
            SocketAddr::V6(v6) => assert_eq!(v6.scope_id(), 2),
            SocketAddr::V4(_) => panic!("v4"),
        }
        for bad in [
            "192.0.2.1",
            "192.0.2.1:",
            "192.0.2.1:65536",
            "192.0.2.1:+5",
            "::1:51820",
            "[::1]",
            "[::1]:",
            "[::1]51820",
            "[192.0.2.1]:5",
            "[fe80::1%no-such-if0]:5",
            "[fe80::1%]:5",
            "example.com:51820",
            "",
        ] {
            assert!(parse_endpoint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn scope_names_resolve_to_their_index() {
        // `lo` exists in every network namespace, with index 1.
        let a = parse_endpoint("[fe80::1%lo]:51820").unwrap();
        let SocketAddr::V6(v6) = a else { panic!("{a}") };
        assert_eq!(v6.scope_id(), 1);
    }

    #[test]
    fn prefixes() {
        assert_eq!(
            parse_prefix("10.0.0.1/24").unwrap(),
            ("10.0.0.1".parse().unwrap(), 24)
        );
        assert_eq!(parse_prefix("::/0").unwrap(), ("::".parse().unwrap(), 0));
        assert_eq!(
            parse_prefix("2001:db8::/128").unwrap(),
            ("2001:db8::".parse().unwrap(), 128)
        );
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/-1",
            "10.0.0.0/ 8",
            "10.0.0/8",
            "fe80::1%2/64",
            "10.0.0.0/8/8",
        ] {
            assert!(parse_prefix(bad).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;
    use ferrowg_proto::keys::encode_hex_key;

    #[test]
    fn secret_keys_parse_like_public_keys() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 37 + 11) as u8);
        let hex = encode_hex_key(&key);
        assert_eq!(parse_secret_key(&hex).unwrap().as_bytes(), &key);
        assert_eq!(
            parse_secret_key(&hex.to_uppercase()).unwrap().as_bytes(),
            &key
        );
        let bad_last = format!("{}g", &hex[..63]);
        for bad in [
            &hex[..62],
            &bad_last,
            &format!("{hex}0"),
            "",
            &"é".repeat(32),
        ] {
            assert!(parse_secret_key(bad).is_none(), "{bad:?}");
            assert_eq!(parse_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hex_display_is_the_protocol_text() {
        let key: [u8; 32] = std::array::from_fn(|i| (i * 53 + 7) as u8);
        assert_eq!(Hex(&key).to_string(), encode_hex_key(&key));
    }

    #[test]
    fn wiping_writers_keep_all_text_across_growth() {
        let mut text = SecretText::with_capacity(1);
        let mut expected = String::new();
        for i in 0..500 {
            push_line(&mut text, "line", i);
            expected.push_str(&format!("line={i}\n"));
        }
        assert_eq!(text.into_string(), expected);

        let mut bytes = Vec::with_capacity(1);
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let chunk = i.to_le_bytes();
            extend_wiping(&mut bytes, &chunk[..(i as usize % 4) + 1]);
            expected.extend_from_slice(&chunk[..(i as usize % 4) + 1]);
        }
        assert_eq!(bytes, expected);
    }
}
