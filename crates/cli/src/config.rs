//! Configuration values and files: the one parser behind `set`, `setconf`, `addconf`,
//! `syncconf` and (later) `up`.
//!
//! Two dialects share it. [`Dialect::Wg`] is exactly what `wg` accepts in a configuration
//! file; `wg-quick`'s own keys (Address, DNS, MTU, Table, the hooks, SaveConfig) are then
//! "unrecognized lines", as `wg` reports them. [`Dialect::Quick`] also understands those keys,
//! following `wg-quick`'s rules, and hands everything else to the `wg` rules.
//!
//! Every value parser returns `wg`'s exact message on failure ([`ValueError`]); non-fatal
//! notes `wg` prints while parsing (a host part in an allowed IP, a DNS retry) go to a
//! caller-supplied sink as they happen, so they interleave with errors the way `wg`'s do.
//! [`ConfigError`] can render itself both as `wg` prints it and, for ferrowg's own commands,
//! naming the file, line and key.

use crate::ipc::io_strerror;
use ferrowg_proto::keys::decode_base64_key;
use ferrowg_uapi::{AllowedIpChange, DeviceSet, Key, PeerSet, SecretKey};
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;
use zeroize::{Zeroize, Zeroizing};

/// Where notes printed during parsing go (one line each, without the newline).
pub type Notes<'a> = &'a mut dyn FnMut(&[u8]);

/// A value `wg` refuses, with `wg`'s message (bytes: it may quote bytes from a file verbatim).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    pub text: Vec<u8>,
    /// `wg` exits on the spot for this one (a bad `WG_ENDPOINT_RESOLUTION_RETRIES`), without
    /// the "Configuration parsing error" line a file error otherwise gets.
    pub exit_now: bool,
}

impl ValueError {
    fn new(text: impl Into<Vec<u8>>) -> Self {
        ValueError {
            text: text.into(),
            exit_now: false,
        }
    }

    /// `PREFIX: `VALUE'`, `wg`'s usual shape.
    fn quoting(prefix: &str, value: &[u8]) -> Self {
        let mut text = format!("{prefix}: `").into_bytes();
        text.extend_from_slice(value);
        text.push(b'\'');
        Self::new(text)
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.text))
    }
}

/// C's `isspace` in the "C" locale, which is what `wg` strips and skips.
pub fn is_c_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// C `strtoul(text, &end, 10)` with a 64-bit `unsigned long`: optional leading spaces and
/// sign, then digits; overflow saturates; a minus sign negates modulo 2^64. Returns the value
/// and the unparsed rest, which is the whole text when there are no digits.
fn strtoul10(text: &[u8]) -> (u64, &[u8]) {
    let mut i = text.iter().take_while(|&&b| is_c_space(b)).count();
    let negative = match text.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = text[i..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return (0, text);
    }
    let value = saturating_decimal(&text[i..i + digits]);
    let value = if value == u64::MAX || !negative {
        value
    } else {
        value.wrapping_neg()
    };
    (value, &text[i + digits..])
}

/// ASCII digits (already checked) as a number, saturating at `u64::MAX` like `strtoul`.
fn saturating_decimal(digits: &[u8]) -> u64 {
    digits
        .iter()
        .try_fold(0u64, |n, &d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .unwrap_or(u64::MAX)
}

/// True if `text` starts with an ASCII digit (`wg` demands it before calling `strtoul`, which
/// keeps signs and spaces out of fwmarks, keepalives and prefix lengths).
fn starts_with_digit(text: &str) -> bool {
    text.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// A port or service name as `getaddrinfo` resolves it for `wg` (glibc's rules): text that
/// `strtoul` consumes entirely is a number, kept modulo 2^16 once it has been narrowed to a
/// C `int` — unless that `int` is negative, in which case (as for any other text) it is looked
/// up as a UDP service name. `99999` is therefore port 34463 and `-1` an unknown service.
fn resolve_service(text: &str) -> Result<u16, &'static str> {
    const EAI_SERVICE_TEXT: &str = "Servname not supported for ai_socktype";
    let (value, rest) = strtoul10(text.as_bytes());
    if rest.is_empty() {
        let as_c_int = value as u32 as i32;
        if as_c_int >= 0 {
            return Ok(as_c_int as u16);
        }
    }
    lookup_udp_service(text).ok_or(EAI_SERVICE_TEXT)
}

/// `getservbyname(name, "udp")` from `/etc/services` (the "files" source every system has).
fn lookup_udp_service(name: &str) -> Option<u16> {
    let table = std::fs::read("/etc/services").ok()?;
    for line in table.split(|&b| b == b'\n') {
        let line = line.split(|&b| b == b'#').next().unwrap_or_default();
        let mut fields = line
            .split(|&b| b == b' ' || b == b'\t')
            .filter(|f| !f.is_empty());
        let (Some(official), Some(port_proto)) = (fields.next(), fields.next()) else {
            continue;
        };
        let Some(slash) = port_proto.iter().position(|&b| b == b'/') else {
            continue;
        };
        if &port_proto[slash + 1..] != b"udp" {
            continue;
        }
        if official == name.as_bytes() || fields.any(|alias| alias == name.as_bytes()) {
            let digits = &port_proto[..slash];
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            return Some(saturating_decimal(digits) as u16);
        }
    }
    None
}

/// `listen-port` / `ListenPort`: a number or a service name.
pub fn parse_port(value: &str) -> Result<u16, ValueError> {
    if value.is_empty() {
        return Err(ValueError::new("Unable to parse empty port"));
    }
    resolve_service(value).map_err(|text| ValueError::quoting(text, value.as_bytes()))
}

/// `fwmark` / `FwMark`: `off` (any case), a decimal number, or `0x` + hex, at most 32 bits.
pub fn parse_fwmark(value: &str) -> Result<u32, ValueError> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let error =
        || ValueError::quoting("Fwmark is neither 0/off nor 0-0xffffffff", value.as_bytes());
    if !starts_with_digit(value) {
        return Err(error());
    }
    // Only a lowercase `0x` selects hex, and only with something after it.
    let number = match value.strip_prefix("0x").filter(|_| value.len() > 2) {
        Some(hex) if hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            // Saturate like strtoul so that long inputs are rejected, not wrapped.
            hex.bytes().try_fold(0u64, |n, d| {
                let digit = (d as char).to_digit(16)? as u64;
                n.checked_mul(16)?.checked_add(digit)
            })
        }
        Some(_) => None,
        None if value.bytes().all(|b| b.is_ascii_digit()) => {
            Some(saturating_decimal(value.as_bytes()))
        }
        None => None,
    };
    number.and_then(|n| u32::try_from(n).ok()).ok_or_else(error)
}

/// `persistent-keepalive` / `PersistentKeepalive`: `off` (any case) or 0–65535 seconds.
pub fn parse_keepalive(value: &str) -> Result<u16, ValueError> {
    if value.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    if starts_with_digit(value) && value.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(n) = u16::try_from(saturating_decimal(value.as_bytes())) {
            return Ok(n);
        }
    }
    Err(ValueError::quoting(
        "Persistent keepalive interval is neither 0/off nor 1-65535",
        value.as_bytes(),
    ))
}

/// A key written inline in base64 (`peer KEY`, `PublicKey = KEY`, …).
///
/// On failure the message quotes the value, as `wg` does — even for a private or preshared
/// key (`PrivateKey = …` in a file, or a key file's text): the wg-compatible tests pin that
/// text. The value is then not a valid key, but it may be a near miss of one.
pub fn parse_key(value: &[u8]) -> Result<Key, ValueError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| decode_base64_key(text).ok())
        .ok_or_else(|| ValueError::quoting("Key is not the correct length or format", value))
}

/// A private or preshared key in base64: [`parse_key`], into a key that wipes itself.
pub fn parse_secret_key(value: &[u8]) -> Result<SecretKey, ValueError> {
    let mut bytes = parse_key(value)?;
    let key = SecretKey::new(bytes);
    bytes.zeroize();
    Ok(key)
}

/// A key read from a file (`private-key FILE`, `preshared-key FILE`): its first 44 bytes are
/// the key, then only whitespace may follow; an empty file (such as /dev/null) yields the
/// all-zero key, which removes the key. A file that cannot be read counts as too short, as it
/// does for `wg` (a directory opens fine and then fails to read).
pub fn read_key_file(path: &OsStr) -> Result<SecretKey, ValueError> {
    const KEY_TEXT_LEN: usize = 44;
    let mut file =
        File::open(path).map_err(|e| ValueError::new(format!("fopen: {}", io_strerror(&e))))?;
    let mut text = Zeroizing::new([0u8; KEY_TEXT_LEN]);
    let mut filled = 0;
    let mut failed = false;
    while filled < KEY_TEXT_LEN {
        match file.read(&mut text[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    if filled < KEY_TEXT_LEN {
        if filled == 0 && !failed {
            return Ok(SecretKey::zero());
        }
        return Err(ValueError::new("Invalid length key in key file"));
    }
    // Only whitespace is expected here, but anything else (a second key?) is wiped too.
    let mut rest = Zeroizing::new([0u8; 256]);
    loop {
        match file.read(&mut rest[..]) {
            Ok(0) => break,
            Ok(n) => {
                if let Some(&c) = rest[..n].iter().find(|&&b| !is_c_space(b)) {
                    let mut msg = b"Found trailing character in key file: `".to_vec();
                    msg.extend_from_slice(&[c, b'\'']);
                    return Err(ValueError::new(msg));
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(ValueError::new(format!("getc: {}", io_strerror(&e)))),
        }
    }
    // `wg` handles the text as a C string: a NUL byte ends it (and makes it invalid).
    let end = text.iter().position(|&b| b == 0).unwrap_or(KEY_TEXT_LEN);
    parse_secret_key(&text[..end])
}

/// How often a failed name lookup is retried: `WG_ENDPOINT_RESOLUTION_RETRIES` (a number or
/// `infinity`, i.e. `None`), 15 by default.
fn dns_retries() -> Result<Option<u64>, ValueError> {
    let Some(raw) = std::env::var_os("WG_ENDPOINT_RESOLUTION_RETRIES") else {
        return Ok(Some(15));
    };
    let raw = std::os::unix::ffi::OsStrExt::as_bytes(raw.as_os_str()).to_vec();
    if raw == b"infinity" {
        return Ok(None);
    }
    let (value, rest) = strtoul10(&raw);
    if rest.is_empty() && value <= i32::MAX as u64 {
        return Ok(Some(value));
    }
    let mut error = ValueError::quoting("Unable to parse WG_ENDPOINT_RESOLUTION_RETRIES", &raw);
    error.exit_now = true;
    Err(error)
}

/// Why a lookup failed: glibc's `gai_strerror` text, and whether retrying is pointless.
struct LookupFailure {
    text: String,
    permanent: bool,
}

/// Resolves `host` and `port` as `getaddrinfo(host, port)` does for `wg`: the service first
/// (so a bad port is reported even for a bad host), then the host, keeping the first answer.
fn lookup(host: &str, port: &str) -> Result<SocketAddr, LookupFailure> {
    let port = resolve_service(port).map_err(|text| LookupFailure {
        text: text.to_owned(),
        permanent: false,
    })?;
    match (host, port).to_socket_addrs() {
        Ok(mut found) => found.next().ok_or(LookupFailure {
            text: "Name or service not known".to_owned(),
            permanent: true,
        }),
        Err(e) => {
            // std reports getaddrinfo failures as "failed to lookup address information: " +
            // gai_strerror; EAI_SYSTEM comes back as the OS error itself.
            let text = match e.raw_os_error() {
                Some(_) => io_strerror(&e),
                None => {
                    let full = e.to_string();
                    match full.strip_prefix("failed to lookup address information: ") {
                        Some(gai) => gai.to_owned(),
                        None => full,
                    }
                }
            };
            // EAI_NONAME, EAI_FAIL and EAI_NODATA: the answers `wg` never retries.
            let permanent = matches!(
                text.as_str(),
                "Name or service not known"
                    | "Non-recoverable failure in name resolution"
                    | "No address associated with hostname"
            );
            Err(LookupFailure { text, permanent })
        }
    }
}

/// `endpoint` / `Endpoint`: `HOST:PORT` (split at the last colon) or `[HOST]:PORT`, names
/// resolved, transient failures retried with `wg`'s messages and growing delays.
pub fn parse_endpoint(value: &str, notes: Notes) -> Result<SocketAddr, ValueError> {
    let retries = dns_retries()?;
    if value.is_empty() {
        return Err(ValueError::new("Unable to parse empty endpoint"));
    }
    let no_port = || ValueError::quoting("Unable to find port of endpoint", value.as_bytes());
    let (host, port) = match value.strip_prefix('[') {
        Some(inner) => {
            let Some(close) = inner.find(']') else {
                return Err(ValueError::quoting(
                    "Unable to find matching brace of endpoint",
                    value.as_bytes(),
                ));
            };
            match inner[close + 1..].strip_prefix(':') {
                Some(port) if !port.is_empty() => (&inner[..close], port),
                _ => return Err(no_port()),
            }
        }
        None => match value.rsplit_once(':') {
            Some((host, port)) if !port.is_empty() => (host, port),
            _ => return Err(no_port()),
        },
    };

    let mut retries_left = retries;
    let mut delay_us: u64 = 1_000_000;
    loop {
        let failure = match lookup(host, port) {
            Ok(address) => return Ok(address),
            Err(failure) => failure,
        };
        let give_up = failure.permanent
            || match retries_left.as_mut() {
                Some(0) => true,
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            };
        if give_up {
            return Err(ValueError::quoting(&failure.text, value.as_bytes()));
        }
        notes(
            format!(
                "{}: `{value}'. Trying again in {:.2} seconds...",
                failure.text,
                delay_us as f64 / 1_000_000.0
            )
            .as_bytes(),
        );
        std::thread::sleep(Duration::from_micros(delay_us));
        delay_us = (delay_us * 6 / 5).min(20_000_000);
    }
}

/// What one `allowed-ips` / `AllowedIPs` value says.
pub struct AllowedIps {
    pub changes: Vec<AllowedIpChange>,
    /// Some entry carried `+` or `-`, which makes the peer's update incremental.
    pub incremental: bool,
}

/// A comma-separated list of `[+|-]IP[/CIDR]` (whitespace already removed by the caller, as
/// `wg` removes it); a missing `/CIDR` means a single address. An empty list is valid and
/// means "no addresses".
pub fn parse_allowed_ips(value: &str, notes: Notes) -> Result<AllowedIps, ValueError> {
    let mut result = AllowedIps {
        changes: Vec::new(),
        incremental: false,
    };
    if value.is_empty() {
        return Ok(result);
    }
    for entry in value.split(',') {
        // A sign on any entry makes the whole update incremental (no replacement).
        let (entry, remove, signed) = match entry.as_bytes().first() {
            Some(b'+') => (&entry[1..], false, true),
            Some(b'-') => (&entry[1..], true, true),
            _ => (entry, false, false),
        };
        result.incremental |= signed;
        let (ip_text, mask) = match entry.split_once('/') {
            Some((ip, mask)) => (ip, Some(mask)),
            None => (entry, None),
        };
        let Ok(ip) = ip_text.parse::<IpAddr>() else {
            return Err(ValueError::quoting(
                "Unable to parse IP address",
                ip_text.as_bytes(),
            ));
        };
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let cidr = match mask {
            None => max,
            Some(mask) => {
                if !starts_with_digit(mask) || !mask.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(ValueError::quoting(
                        "AllowedIP is not in the correct format",
                        entry.as_bytes(),
                    ));
                }
                match u8::try_from(saturating_decimal(mask.as_bytes())) {
                    Ok(c) if c <= max => c,
                    _ => {
                        return Err(ValueError::quoting(
                            "AllowedIP is not in the correct format",
                            entry.as_bytes(),
                        ))
                    }
                }
            }
        };
        if let Some(mask) = mask.filter(|_| has_host_bits(ip, cidr)) {
            notes(format!("Warning: AllowedIP has nonzero host part: {ip_text}/{mask}").as_bytes());
        }
        result.changes.push(AllowedIpChange { ip, cidr, remove });
    }
    Ok(result)
}

fn has_host_bits(ip: IpAddr, cidr: u8) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            cidr < 32 && bits & (u32::MAX >> cidr) != 0
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            cidr < 128 && bits & (u128::MAX >> cidr) != 0
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration files

/// Which tool's rules a configuration file is read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `wg setconf` / `addconf` / `syncconf`: wg-quick keys are unrecognized lines.
    Wg,
    /// `wg-quick`: its keys in `[Interface]` are understood, everything else is `Wg`.
    Quick,
}

/// A parsed configuration file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Config {
    pub interface: Interface,
    pub peers: Vec<Peer>,
}

/// `[Interface]` (every `[Interface]` section of the file, later values winning).
#[derive(Default, Clone, PartialEq, Eq)]
pub struct Interface {
    pub private_key: Option<SecretKey>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub quick: QuickSettings,
}

/// The `wg-quick` keys (only filled in [`Dialect::Quick`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QuickSettings {
    /// `Address`: addresses for the interface, each with its prefix length if given.
    pub addresses: Vec<(IpAddr, Option<u8>)>,
    /// `DNS` entries that are addresses: name servers.
    pub dns_servers: Vec<IpAddr>,
    /// `DNS` entries that are not addresses: search domains.
    pub dns_search: Vec<String>,
    pub mtu: Option<u32>,
    pub table: Option<Table>,
    pub pre_up: Vec<String>,
    pub post_up: Vec<String>,
    pub pre_down: Vec<String>,
    pub post_down: Vec<String>,
    pub save_config: Option<bool>,
}

/// `Table =`: which routing table the allowed IPs go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Table {
    /// `auto` (the default): the main table, default routes via a fwmark table.
    Auto,
    /// `off`: no routes at all.
    Off,
    Id(u32),
    /// A name from `/etc/iproute2/rt_tables`.
    Name(String),
}

/// One `[Peer]` section.
#[derive(Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: Key,
    pub preshared_key: Option<SecretKey>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    pub allowed_ips: Vec<AllowedIpChange>,
    /// True unless the last `AllowedIPs` line of the section used `+`/`-` entries.
    pub replace_allowed_ips: bool,
    /// Line of the `[Peer]` header (1-based), for messages.
    pub line: usize,
}

impl fmt::Debug for Interface {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Interface")
            .field("private_key", &self.private_key)
            .field("listen_port", &self.listen_port)
            .field("fwmark", &self.fwmark)
            .field("quick", &self.quick)
            .finish()
    }
}

impl fmt::Debug for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field(
                "public_key",
                &ferrowg_proto::keys::encode_base64_key(&self.public_key),
            )
            .field("preshared_key", &self.preshared_key)
            .field("endpoint", &self.endpoint)
            .field("persistent_keepalive", &self.persistent_keepalive)
            .field("allowed_ips", &self.allowed_ips)
            .field("replace_allowed_ips", &self.replace_allowed_ips)
            .field("line", &self.line)
            .finish()
    }
}

impl Config {
    /// The `set` that applies this file. `whole` (setconf, syncconf) replaces everything:
    /// absent interface values are sent as zero (no key, random port, no mark) and existing
    /// peers are dropped; otherwise (addconf) only what the file names is sent.
    pub fn device_set(&self, whole: bool) -> DeviceSet {
        let iface = &self.interface;
        DeviceSet {
            private_key: if whole {
                Some(iface.private_key.clone().unwrap_or_else(SecretKey::zero))
            } else {
                iface.private_key.clone()
            },
            listen_port: if whole {
                Some(iface.listen_port.unwrap_or(0))
            } else {
                iface.listen_port
            },
            fwmark: if whole {
                Some(iface.fwmark.unwrap_or(0))
            } else {
                iface.fwmark
            },
            replace_peers: whole,
            peers: self
                .peers
                .iter()
                .map(|p| {
                    let mut set = PeerSet::new(p.public_key);
                    set.preshared_key = p.preshared_key.clone();
                    set.endpoint = p.endpoint;
                    set.persistent_keepalive_interval = p.persistent_keepalive;
                    set.replace_allowed_ips = p.replace_allowed_ips;
                    set.allowed_ips = p.allowed_ips.clone();
                    set
                })
                .collect(),
        }
    }
}

/// Why a file was refused.
#[derive(Debug)]
// `line`, `key` and `describe` serve ferrowg's own commands (`up`), not the wg-compatible ones.
#[allow(dead_code)]
pub struct ConfigError {
    /// 1-based line number; 0 when the error is not about one line.
    pub line: usize,
    /// The key of the offending line, when it has one.
    pub key: Option<String>,
    pub kind: ConfigErrorKind,
}

#[derive(Debug)]
pub enum ConfigErrorKind {
    /// The file could not be opened.
    Open(io::Error),
    /// A line that is no section header and no known key (whitespace already removed).
    Unrecognized(Vec<u8>),
    /// A known key with a bad value.
    Value(ValueError),
    /// A `[Peer]` without `PublicKey`.
    MissingPublicKey,
}

impl ConfigError {
    /// Exactly what `wg setconf/addconf/syncconf` prints on stderr for this error.
    pub fn wg_text(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match &self.kind {
            ConfigErrorKind::Open(e) => {
                out.extend_from_slice(format!("fopen: {}\n", io_strerror(e)).as_bytes())
            }
            ConfigErrorKind::Unrecognized(line) => {
                out.extend_from_slice(b"Line unrecognized: `");
                out.extend_from_slice(line);
                out.extend_from_slice(b"'\nConfiguration parsing error\n");
            }
            ConfigErrorKind::Value(v) => {
                out.extend_from_slice(&v.text);
                out.push(b'\n');
                if !v.exit_now {
                    out.extend_from_slice(b"Configuration parsing error\n");
                }
            }
            ConfigErrorKind::MissingPublicKey => {
                out.extend_from_slice(b"A peer is missing a public key\nInvalid configuration\n")
            }
        }
        out
    }

    /// ferrowg's own message: `PATH:LINE: KEY: what is wrong`.
    ///
    /// Unlike [`Self::wg_text`] (which must match `wg`, and quotes whatever it refused), it
    /// never quotes a private or preshared key: a bad `PrivateKey`/`PresharedKey` value is
    /// only said to be bad, and a misplaced `PrivateKey=…`/`PresharedKey=…` line is shown
    /// up to its `=`.
    #[allow(dead_code)]
    pub fn describe(&self, path: &Path) -> String {
        let mut text = path.display().to_string();
        if self.line > 0 {
            text.push_str(&format!(":{}", self.line));
        }
        text.push_str(": ");
        if let Some(key) = &self.key {
            text.push_str(&format!("{key}: "));
        }
        match &self.kind {
            ConfigErrorKind::Open(e) => text.push_str(&format!("cannot open: {}", io_strerror(e))),
            ConfigErrorKind::Unrecognized(line) if is_secret_line(line) => {
                let name_end = line.iter().position(|&b| b == b'=').unwrap_or(0);
                text.push_str(&format!(
                    "unrecognized line `{}=…' (value not shown)",
                    String::from_utf8_lossy(&line[..name_end])
                ))
            }
            ConfigErrorKind::Unrecognized(line) => text.push_str(&format!(
                "unrecognized line `{}'",
                String::from_utf8_lossy(line)
            )),
            ConfigErrorKind::Value(_) if self.key.as_deref().is_some_and(is_secret_key_name) => {
                text.push_str("Key is not the correct length or format (value not shown)")
            }
            ConfigErrorKind::Value(v) => text.push_str(&v.to_string()),
            ConfigErrorKind::MissingPublicKey => text.push_str("this [Peer] has no PublicKey"),
        }
        text
    }
}

/// `PrivateKey` and `PresharedKey` (as [`parse`] names them in a [`ConfigError`]).
fn is_secret_key_name(key: &str) -> bool {
    key == "PrivateKey" || key == "PresharedKey"
}

/// A line (spaces already removed) that sets a private or preshared key, in any case.
fn is_secret_line(line: &[u8]) -> bool {
    [&b"privatekey="[..], b"presharedkey="]
        .iter()
        .any(|prefix| {
            line.len() >= prefix.len() && line[..prefix.len()].eq_ignore_ascii_case(prefix)
        })
}

/// Reads a file the way `wg` does: an open failure is an error, a read failure just ends the
/// text (stdio's getline reports both end of file and errors as "no more lines").
///
/// The text may hold a private key, so it is wiped when dropped, and so is every buffer it
/// passed through: it is read straight into its final allocation (sized from the file's
/// length), which, should the file have grown meanwhile, grows by [`extend_wiping`].
pub fn read_file(path: &OsStr) -> Result<Zeroizing<Vec<u8>>, ConfigError> {
    let mut file = File::open(path).map_err(|e| ConfigError {
        line: 0,
        key: None,
        kind: ConfigErrorKind::Open(e),
    })?;
    let size = file.metadata().map_or(0, |m| m.len());
    // One byte more than the size, so that reaching the end needs no growth.
    let mut text = Zeroizing::new(Vec::with_capacity(
        usize::try_from(size)
            .unwrap_or(0)
            .saturating_add(1)
            .min(1 << 20),
    ));
    let mut chunk = Zeroizing::new([0u8; 8192]);
    loop {
        match file.read(&mut chunk[..]) {
            Ok(0) => break,
            Ok(n) => extend_wiping(&mut text, &chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    Ok(text)
}

pub use ferrowg_uapi::extend_wiping;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    None,
    Interface,
    Peer,
}

/// A `[Peer]` being read; becomes a [`Peer`] once its public key is known to be there.
struct PeerDraft {
    public_key: Option<Key>,
    peer: Peer,
}

/// Parses a configuration file's text. Notes (warnings, DNS retries) go to `notes` while
/// parsing; the first error ends it.
pub fn parse(text: &[u8], dialect: Dialect, notes: Notes) -> Result<Config, ConfigError> {
    let mut interface = Interface::default();
    let mut drafts: Vec<PeerDraft> = Vec::new();
    let mut section = Section::None;
    let mut quick_in_interface = false;

    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    for (index, raw) in lines.into_iter().enumerate() {
        let number = index + 1;
        // `wg` works on C strings: a NUL byte ends the line.
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();

        if dialect == Dialect::Quick
            && quick_line(raw, &mut quick_in_interface, &mut interface.quick)
                .map_err(|(key, v)| value_error(number, &key, v))?
        {
            continue;
        }

        let before_comment = raw.split(|&b| b == b'#').next().unwrap_or_default();
        // `PrivateKey=…` and `PresharedKey=…` lines: wiped when dropped. Sized up front
        // (no line is longer than the raw one), so it never reallocates.
        let mut line = Zeroizing::new(Vec::with_capacity(before_comment.len()));
        line.extend(before_comment.iter().copied().filter(|&b| !is_c_space(b)));
        if line.is_empty() {
            continue;
        }
        if line.eq_ignore_ascii_case(b"[Interface]") {
            section = Section::Interface;
            continue;
        }
        if line.eq_ignore_ascii_case(b"[Peer]") {
            section = Section::Peer;
            drafts.push(PeerDraft {
                public_key: None,
                peer: Peer {
                    public_key: [0; 32],
                    preshared_key: None,
                    endpoint: None,
                    persistent_keepalive: None,
                    allowed_ips: Vec::new(),
                    replace_allowed_ips: true,
                    line: number,
                },
            });
            continue;
        }
        let unrecognized = || ConfigError {
            line: number,
            key: None,
            kind: ConfigErrorKind::Unrecognized(line.to_vec()),
        };
        let keys: &[&str] = match section {
            Section::None => return Err(unrecognized()),
            Section::Interface => &["ListenPort", "FwMark", "PrivateKey"],
            Section::Peer => &[
                "Endpoint",
                "PublicKey",
                "AllowedIPs",
                "PersistentKeepalive",
                "PresharedKey",
            ],
        };
        // `Key=` must be followed by at least one character, otherwise the line is unknown.
        let Some((key, value)) = keys.iter().find_map(|&key| {
            let prefix_len = key.len() + 1;
            (line.len() > prefix_len
                && line[..key.len()].eq_ignore_ascii_case(key.as_bytes())
                && line[key.len()] == b'=')
                .then(|| (key, &line[prefix_len..]))
        }) else {
            return Err(unrecognized());
        };
        // Only for values that are not keys (a lossy copy of a key would not be wiped).
        let value_text = || String::from_utf8_lossy(value);
        let fail = |v: ValueError| value_error(number, key, v);
        match key {
            "ListenPort" => interface.listen_port = Some(parse_port(&value_text()).map_err(fail)?),
            "FwMark" => interface.fwmark = Some(parse_fwmark(&value_text()).map_err(fail)?),
            "PrivateKey" => interface.private_key = Some(parse_secret_key(value).map_err(fail)?),
            _ => {
                let draft = drafts.last_mut().expect("a [Peer] section is open");
                match key {
                    "Endpoint" => {
                        draft.peer.endpoint =
                            Some(parse_endpoint(&value_text(), notes).map_err(fail)?)
                    }
                    "PublicKey" => draft.public_key = Some(parse_key(value).map_err(fail)?),
                    "AllowedIPs" => {
                        let parsed = parse_allowed_ips(&value_text(), notes).map_err(fail)?;
                        draft.peer.replace_allowed_ips = !parsed.incremental;
                        draft.peer.allowed_ips.extend(parsed.changes);
                    }
                    "PersistentKeepalive" => {
                        draft.peer.persistent_keepalive =
                            Some(parse_keepalive(&value_text()).map_err(fail)?)
                    }
                    _ => draft.peer.preshared_key = Some(parse_secret_key(value).map_err(fail)?),
                }
            }
        }
    }

    let mut peers = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let Some(public_key) = draft.public_key else {
            return Err(ConfigError {
                line: draft.peer.line,
                key: None,
                kind: ConfigErrorKind::MissingPublicKey,
            });
        };
        peers.push(Peer {
            public_key,
            ..draft.peer
        });
    }
    Ok(Config { interface, peers })
}

/// `wg-quick`'s own pass over a file, without the `wg` part: its settings, and the text it
/// hands to `wg` — what `wg-quick strip` prints, less the final newline. Nothing is resolved,
/// so `strip`, `down` and `save` never wait for DNS. As bash's `read` does, each passed-on
/// line loses its leading and trailing spaces and TABs.
///
/// The text passed on holds the private key: it is wiped when dropped, and is allocated once
/// (it is never longer than `text` plus a newline), with room for one more byte (`strip`
/// adds a newline), so it is never reallocated.
pub fn parse_quick(text: &[u8]) -> Result<(QuickSettings, Zeroizing<Vec<u8>>), ConfigError> {
    let mut quick = QuickSettings::default();
    let mut in_interface = false;
    let mut stripped = Zeroizing::new(Vec::with_capacity(text.len() + 2));
    let mut lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    if text.ends_with(b"\n") || text.is_empty() {
        lines.pop();
    }
    for (index, raw) in lines.into_iter().enumerate() {
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        let is_blank = |b: &&u8| **b == b' ' || **b == b'\t';
        let start = raw.iter().take_while(is_blank).count();
        let end = raw.len() - raw.iter().rev().take_while(is_blank).count();
        let raw = &raw[start.min(end)..end];
        if !quick_line(raw, &mut in_interface, &mut quick)
            .map_err(|(key, v)| value_error(index + 1, &key, v))?
        {
            stripped.extend_from_slice(raw);
            stripped.push(b'\n');
        }
    }
    Ok((quick, stripped))
}

fn value_error(line: usize, key: &str, error: ValueError) -> ConfigError {
    ConfigError {
        line,
        key: Some(key.to_owned()),
        kind: ConfigErrorKind::Value(error),
    }
}

/// `wg-quick`'s reading of a line: consumes it (returns true) if it is one of its own keys
/// inside `[Interface]`. Its rules differ from `wg`'s: the key and value are trimmed, not
/// stripped of inner spaces, and hook commands keep any `#` text.
fn quick_line(
    raw: &[u8],
    in_interface: &mut bool,
    quick: &mut QuickSettings,
) -> Result<bool, (String, ValueError)> {
    let raw = String::from_utf8_lossy(raw);
    let stripped = raw.split('#').next().unwrap_or_default();
    let key = stripped.split('=').next().unwrap_or_default().trim();
    if key.starts_with('[') {
        *in_interface = key.eq_ignore_ascii_case("[Interface]");
    }
    if !*in_interface {
        return Ok(false);
    }
    let value = stripped.split_once('=').map_or("", |(_, v)| v).trim();
    let hook_value = || raw.split_once('=').map_or("", |(_, v)| v).trim().to_owned();
    let lower = key.to_ascii_lowercase();
    let error = |text: String| (key.to_owned(), ValueError::new(text));
    match lower.as_str() {
        "address" => {
            for item in list_items(value) {
                let (ip, cidr) = match item.split_once('/') {
                    Some((ip, cidr)) => (ip, Some(cidr)),
                    None => (item, None),
                };
                let parsed_ip: Option<IpAddr> = ip.parse().ok();
                let parsed_cidr = match (parsed_ip, cidr) {
                    (Some(_), None) => Some(None),
                    (Some(ip), Some(c)) if c.bytes().all(|b| b.is_ascii_digit()) => c
                        .parse::<u8>()
                        .ok()
                        .filter(|&c| c <= if ip.is_ipv4() { 32 } else { 128 })
                        .map(Some),
                    _ => None,
                };
                match (parsed_ip, parsed_cidr) {
                    (Some(ip), Some(cidr)) => quick.addresses.push((ip, cidr)),
                    _ => {
                        return Err(error(format!(
                            "`{item}' is not an IP address with an optional /prefix length"
                        )))
                    }
                }
            }
        }
        "dns" => {
            for item in list_items(value) {
                // wg-quick's test: only digits and dots, or any colon, means an address.
                let looks_like_address =
                    item.bytes().all(|b| b.is_ascii_digit() || b == b'.') || item.contains(':');
                if looks_like_address {
                    let ip = item.parse().map_err(|_| {
                        error(format!("`{item}' is not a valid DNS server address"))
                    })?;
                    quick.dns_servers.push(ip);
                } else {
                    quick.dns_search.push(item.to_owned());
                }
            }
        }
        "mtu" => {
            quick.mtu = Some(
                value
                    .parse()
                    .ok()
                    .filter(|_| value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| error(format!("`{value}' is not a valid MTU")))?,
            )
        }
        "table" => {
            quick.table = Some(match value.to_ascii_lowercase().as_str() {
                "auto" => Table::Auto,
                "off" => Table::Off,
                _ if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => Table::Id(
                    value
                        .parse()
                        .map_err(|_| error(format!("`{value}' is not a valid table")))?,
                ),
                _ if !value.is_empty() => Table::Name(value.to_owned()),
                _ => return Err(error("an empty table name".to_owned())),
            })
        }
        "preup" => quick.pre_up.push(hook_value()),
        "postup" => quick.post_up.push(hook_value()),
        "predown" => quick.pre_down.push(hook_value()),
        "postdown" => quick.post_down.push(hook_value()),
        "saveconfig" => {
            quick.save_config = Some(match value.to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(error(format!("`{value}' is neither true nor false"))),
            })
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// wg-quick splits list values on commas and whitespace.
fn list_items(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_ascii_whitespace())
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_notes() -> impl FnMut(&[u8]) {
        |note: &[u8]| panic!("unexpected note {:?}", String::from_utf8_lossy(note))
    }

    fn text(e: ValueError) -> String {
        String::from_utf8(e.text).unwrap()
    }

    #[test]
    fn strtoul_follows_c() {
        assert_eq!(strtoul10(b"  42"), (42, &b""[..]));
        assert_eq!(strtoul10(b"+7x"), (7, &b"x"[..]));
        assert_eq!(strtoul10(b"-1"), (u64::MAX, &b""[..]));
        assert_eq!(strtoul10(b"x"), (0, &b"x"[..]));
        assert_eq!(strtoul10(b" "), (0, &b" "[..]));
        assert_eq!(strtoul10(b"99999999999999999999999"), (u64::MAX, &b""[..]));
    }

    #[test]
    fn ports_follow_glibc() {
        assert_eq!(parse_port("51820"), Ok(51820));
        assert_eq!(parse_port(" 5"), Ok(5));
        assert_eq!(parse_port("99999"), Ok(34463));
        assert_eq!(parse_port("4294967296"), Ok(0));
        assert_eq!(
            text(parse_port("-1").unwrap_err()),
            "Servname not supported for ai_socktype: `-1'"
        );
        assert_eq!(
            text(parse_port("").unwrap_err()),
            "Unable to parse empty port"
        );
    }

    #[test]
    fn fwmarks() {
        assert_eq!(parse_fwmark("OFF"), Ok(0));
        assert_eq!(parse_fwmark("0x10"), Ok(16));
        assert_eq!(parse_fwmark("0xFFFFFFFF"), Ok(u32::MAX));
        assert_eq!(parse_fwmark("4294967295"), Ok(u32::MAX));
        for bad in [
            "0X10",
            "0x",
            "0xg",
            "+1",
            " 1",
            "4294967296",
            "0x100000000",
            "",
            "1 ",
        ] {
            assert_eq!(
                text(parse_fwmark(bad).unwrap_err()),
                format!("Fwmark is neither 0/off nor 0-0xffffffff: `{bad}'")
            );
        }
    }

    #[test]
    fn keepalives() {
        assert_eq!(parse_keepalive("Off"), Ok(0));
        assert_eq!(parse_keepalive("007"), Ok(7));
        assert_eq!(parse_keepalive("65535"), Ok(65535));
        assert!(parse_keepalive("65536").is_err());
        assert!(parse_keepalive("-1").is_err());
        assert!(parse_keepalive("").is_err());
    }

    #[test]
    fn allowed_ips() {
        let mut notes = no_notes();
        let parsed = parse_allowed_ips("10.0.0.0/8,fd00::/64,1.2.3.4", &mut notes).unwrap();
        assert!(!parsed.incremental);
        assert_eq!(parsed.changes.len(), 3);
        assert_eq!(parsed.changes[2].cidr, 32);
        let parsed = parse_allowed_ips("10.0.0.0/8,-10.1.0.0/16", &mut notes).unwrap();
        assert!(parsed.incremental);
        assert!(parsed.changes[1].remove);
        assert_eq!(
            text(parse_allowed_ips("+10.0.0.0/x", &mut notes).err().unwrap()),
            "AllowedIP is not in the correct format: `10.0.0.0/x'"
        );
        assert_eq!(
            text(parse_allowed_ips("10.0.0.0/8,", &mut notes).err().unwrap()),
            "Unable to parse IP address: `'"
        );
        let mut seen = Vec::new();
        let mut collect = |n: &[u8]| seen.push(String::from_utf8_lossy(n).into_owned());
        parse_allowed_ips("-10.0.0.1/8", &mut collect).unwrap();
        assert_eq!(
            seen,
            ["Warning: AllowedIP has nonzero host part: 10.0.0.1/8"]
        );
    }

    #[test]
    fn endpoint_syntax_errors() {
        let mut notes = no_notes();
        let mut err = |v: &str| text(parse_endpoint(v, &mut notes).unwrap_err());
        assert_eq!(err(""), "Unable to parse empty endpoint");
        assert_eq!(
            err("[::1"),
            "Unable to find matching brace of endpoint: `[::1'"
        );
        assert_eq!(err("[::1]"), "Unable to find port of endpoint: `[::1]'");
        assert_eq!(err("[::1]x5"), "Unable to find port of endpoint: `[::1]x5'");
        assert_eq!(
            err("1.2.3.4:"),
            "Unable to find port of endpoint: `1.2.3.4:'"
        );
        assert_eq!(err("host"), "Unable to find port of endpoint: `host'");
    }

    #[test]
    fn numeric_endpoints() {
        let mut notes = no_notes();
        assert_eq!(
            parse_endpoint("::1:51820", &mut notes).unwrap(),
            "[::1]:51820".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("[1.2.3.4]:5", &mut notes).unwrap(),
            "1.2.3.4:5".parse().unwrap()
        );
        assert_eq!(
            parse_endpoint("127.1:99999", &mut notes).unwrap(),
            "127.0.0.1:34463".parse().unwrap()
        );
    }

    const K1: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";

    #[test]
    fn files_strip_whitespace_and_comments() {
        let file = format!(
            "# comment\n[interface]\n listen port = 51820 # x\nFwMark=0x10\n\
             [PEER]\npublickey={K1}\nAllowedIPs = 10.0.0.0/8\r\n allowedips=fd00::/64\n"
        );
        let mut notes = no_notes();
        let config = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap();
        assert_eq!(config.interface.listen_port, Some(51820));
        assert_eq!(config.interface.fwmark, Some(16));
        assert_eq!(config.peers.len(), 1);
        assert_eq!(config.peers[0].allowed_ips.len(), 2);
        assert!(config.peers[0].replace_allowed_ips);
        assert_eq!(config.peers[0].line, 5);
    }

    #[test]
    fn file_errors_render_like_wg() {
        let mut notes = no_notes();
        let cases: &[(&str, &str)] = &[
            (
                "[Interface]\nAddress = 10.0.0.1/24\n",
                "Line unrecognized: `Address=10.0.0.1/24'\nConfiguration parsing error\n",
            ),
            (
                "ListenPort=5\n",
                "Line unrecognized: `ListenPort=5'\nConfiguration parsing error\n",
            ),
            (
                "[Interface]\nListenPort =\n",
                "Line unrecognized: `ListenPort='\nConfiguration parsing error\n",
            ),
            (
                "[Peer]\nEndpoint=1.2.3.4:5\n",
                "A peer is missing a public key\nInvalid configuration\n",
            ),
            (
                "[Interface]\nPrivateKey = abc\n",
                "Key is not the correct length or format: `abc'\nConfiguration parsing error\n",
            ),
        ];
        for (file, expected) in cases {
            let err = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap_err();
            assert_eq!(
                String::from_utf8(err.wg_text()).unwrap(),
                *expected,
                "{file:?}"
            );
        }
        let err = parse(b"[Interface]\nListenPort=x\n", Dialect::Wg, &mut notes).unwrap_err();
        assert_eq!(
            err.describe(Path::new("wg0.conf")),
            "wg0.conf:2: ListenPort: Servname not supported for ai_socktype: `x'"
        );
    }

    #[test]
    fn quick_dialect_reads_wg_quick_keys() {
        let file = format!(
            "[Interface]\nAddress = 10.0.0.1/24, fd00::1/64\nDNS = 1.1.1.1, example.com\n\
             MTU = 1420\nTable = off\nPostUp = echo %i # kept\nSaveConfig = true\n\
             ListenPort = 51820\n[Peer]\nPublicKey = {K1}\n"
        );
        let mut notes = no_notes();
        let config = parse(file.as_bytes(), Dialect::Quick, &mut notes).unwrap();
        let quick = &config.interface.quick;
        assert_eq!(quick.addresses.len(), 2);
        assert_eq!(quick.dns_servers, ["1.1.1.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(quick.dns_search, ["example.com"]);
        assert_eq!(quick.mtu, Some(1420));
        assert_eq!(quick.table, Some(Table::Off));
        assert_eq!(quick.post_up, ["echo %i # kept"]);
        assert_eq!(quick.save_config, Some(true));
        assert_eq!(config.interface.listen_port, Some(51820));
        // The same file is refused by the wg dialect at its first wg-quick key.
        let err = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap_err();
        assert_eq!(err.line, 2);
        let err = parse(
            b"[Interface]\nSaveConfig = maybe\n",
            Dialect::Quick,
            &mut notes,
        )
        .unwrap_err();
        assert_eq!(
            err.describe(Path::new("x.conf")),
            "x.conf:2: SaveConfig: `maybe' is neither true nor false"
        );
    }

    #[test]
    fn device_sets_for_setconf_and_addconf() {
        let file = format!("[Peer]\nPublicKey={K1}\nAllowedIPs=+10.0.0.0/8\n");
        let mut notes = no_notes();
        let config = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap();
        let whole = config.device_set(true);
        assert_eq!(whole.private_key, Some(SecretKey::zero()));
        assert_eq!(whole.listen_port, Some(0));
        assert!(whole.replace_peers);
        assert!(!whole.peers[0].replace_allowed_ips);
        let append = config.device_set(false);
        assert_eq!(append.private_key, None);
        assert!(!append.replace_peers);
    }

    const PRIVATE: &str = "cAdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LGo=";

    #[test]
    fn secret_keys_are_parsed_and_never_shown_by_debug() {
        let file = format!(
            "[Interface]\nPrivateKey = {PRIVATE}\n[Peer]\nPublicKey = {K1}\nPresharedKey = {PRIVATE}\n"
        );
        let mut notes = no_notes();
        let config = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap();
        let expected = SecretKey::new(decode_base64_key(PRIVATE).unwrap());
        assert_eq!(config.interface.private_key.as_ref(), Some(&expected));
        assert_eq!(config.peers[0].preshared_key.as_ref(), Some(&expected));
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains(&PRIVATE[..40]), "{shown}");
        assert!(!shown.contains("112, 7, 109"), "{shown}"); // the key's first bytes
        assert_eq!(shown.matches("<hidden>").count(), 4, "{shown}");
        assert!(shown.contains(K1), "public keys stay visible: {shown}");
        // The set built from it carries the keys on (and its Debug hides them too).
        let set = config.device_set(false);
        assert_eq!(set.private_key, Some(expected.clone()));
        assert_eq!(set.peers[0].preshared_key, Some(expected));
        assert!(!format!("{set:?}").contains(&PRIVATE[..40]));
    }

    /// A fresh file under the temp directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path =
                std::env::temp_dir().join(format!("ferrowg-config-{}-{name}", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn files_are_read_whole_into_wiped_buffers() {
        // Longer than one read chunk, so that it takes several reads.
        let mut contents = format!("[Interface]\nPrivateKey = {PRIVATE}\n").into_bytes();
        contents.extend(std::iter::repeat_n(b'#', 20_000));
        let file = TempFile::new("big.conf", &contents);
        let text = read_file(file.0.as_os_str()).unwrap();
        assert_eq!(&text[..], &contents[..]);
        let (_, stripped) = parse_quick(&text).unwrap();
        assert!(stripped.starts_with(format!("[Interface]\nPrivateKey = {PRIVATE}\n").as_bytes()));

        let key = TempFile::new("private.key", format!("{PRIVATE}\n\n").as_bytes());
        assert_eq!(
            read_key_file(key.0.as_os_str()).unwrap(),
            SecretKey::new(decode_base64_key(PRIVATE).unwrap())
        );
        let empty = TempFile::new("empty.key", b"");
        assert!(read_key_file(empty.0.as_os_str()).unwrap().is_zero());
    }

    #[test]
    fn own_messages_do_not_quote_secret_keys_but_wg_text_does() {
        let near_miss = &PRIVATE[..43];
        let mut notes = no_notes();
        for (file, wg) in [
            (
                format!("[Interface]\nPrivateKey = {near_miss}\n"),
                format!("Key is not the correct length or format: `{near_miss}'\n"),
            ),
            (
                format!("[Peer]\nPublicKey = {K1}\npresharedkey = {near_miss}x\n"),
                format!("Key is not the correct length or format: `{near_miss}x'\n"),
            ),
            (
                format!("PrivateKey = {PRIVATE}\n"),
                format!("Line unrecognized: `PrivateKey={PRIVATE}'\n"),
            ),
        ] {
            let err = parse(file.as_bytes(), Dialect::Wg, &mut notes).unwrap_err();
            // `wg` quotes the value; the wg-compatible text has to as well.
            assert!(
                String::from_utf8(err.wg_text()).unwrap().starts_with(&wg),
                "{file:?}"
            );
            let own = err.describe(Path::new("wg0.conf"));
            assert!(!own.contains(&near_miss[..30]), "{own}");
            assert!(own.contains("not shown"), "{own}");
        }
        let err = parse(b"PrivateKey = x\n", Dialect::Wg, &mut notes).unwrap_err();
        assert_eq!(
            err.describe(Path::new("wg0.conf")),
            "wg0.conf:1: unrecognized line `PrivateKey=…' (value not shown)"
        );
    }
}
