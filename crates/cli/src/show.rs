//! `show [ <interface> | all | interfaces ] [FIELD]`: the running configuration, as `wg`
//! prints it — the coloured pretty form, every single-field form, `dump` — and, beyond `wg`,
//! a JSON form (`--json`, see [`json`]).
//!
//! Addresses are formatted here rather than with std's `Display`, because `wg` prints what
//! glibc's `inet_ntop`/`getnameinfo` produce, which differs from std for some IPv6 addresses
//! (`::1.2.3.4`) and for link-local scopes (printed by interface name).

use crate::ipc;
use crate::stdio::{print_err, print_out};
use crate::terminal::{colour_wanted, Painter, BOLD, FG_CYAN, FG_GREEN, FG_RED, FG_YELLOW, RESET};
use crate::wipe::{base64_secret, extend_wiping, SecretText};
use ferrowg_proto::keys::encode_base64_key;
use ferrowg_uapi::{DeviceInfo, Key, PeerInfo, SecretKey};
use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};
use zeroize::Zeroizing;

const FIELDS: &str = "public-key | private-key | listen-port | fwmark | peers | preshared-keys | endpoints | allowed-ips | latest-handshakes | transfer | persistent-keepalive | dump";

fn usage(prog: &OsStr, subcommand: &OsStr) -> Vec<u8> {
    let mut text = b"Usage: ".to_vec();
    text.extend_from_slice(prog.as_bytes());
    text.push(b' ');
    text.extend_from_slice(subcommand.as_bytes());
    text.extend_from_slice(
        format!(" {{ <interface> | all | interfaces }} [{FIELDS}]\n").as_bytes(),
    );
    text
}

pub fn show(prog: &OsStr, args: &[OsString]) -> ExitCode {
    let subcommand = args[0].as_os_str();
    let rest = &args[1..];
    if rest.iter().any(|a| a == "--json") {
        return json::show_json(prog, subcommand, rest);
    }
    if rest.len() > 2 {
        print_err(&usage(prog, subcommand));
        return ExitCode::FAILURE;
    }
    let field = rest.get(1).map(OsString::as_os_str);
    match rest.first().map(|a| a.as_bytes()) {
        None | Some(b"all") => show_all(prog, subcommand, field),
        Some(b"interfaces") => {
            if rest.len() > 1 {
                print_err(&usage(prog, subcommand));
                return ExitCode::FAILURE;
            }
            show_interfaces()
        }
        Some(b"-h" | b"--help" | b"help") if rest.len() == 1 => {
            print_err(&usage(prog, subcommand));
            ExitCode::SUCCESS
        }
        Some(_) => show_one(prog, subcommand, &rest[0], field),
    }
}

/// `wg`'s status for `show all`: failure only if there were interfaces and none could be
/// shown, or a field name was invalid.
fn show_all(prog: &OsStr, subcommand: &OsStr, field: Option<&OsStr>) -> ExitCode {
    let names = match list_or_complain() {
        Ok(names) => names,
        Err(code) => return code,
    };
    let mut failed = !names.is_empty();
    for (i, name) in names.iter().enumerate() {
        let info = match ipc::get(OsStr::from_bytes(name)) {
            Ok(info) => info,
            Err(e) => {
                let mut msg = b"Unable to access interface ".to_vec();
                msg.extend_from_slice(name);
                msg.extend_from_slice(format!(": {e}\n").as_bytes());
                print_err(&msg);
                continue;
            }
        };
        let device = Device::new(ipc::display_name(name), &info);
        match field {
            Some(field) => match field_form(&device, field.as_bytes(), true) {
                Some(text) => print_out(&text),
                None => {
                    invalid_field(prog, subcommand, field);
                    failed = true;
                    break;
                }
            },
            None => {
                let mut text = pretty(&device, colour_wanted(), unix_now());
                if i + 1 < names.len() {
                    text.push(b'\n');
                }
                print_out(&text);
            }
        }
        failed = false;
    }
    exit_status(failed)
}

/// The interfaces `show all`/`interfaces` cover, or wg's complaint and status.
fn list_or_complain() -> Result<Vec<Vec<u8>>, ExitCode> {
    ipc::list().map_err(|e| {
        print_err(format!("Unable to list interfaces: {e}\n").as_bytes());
        ExitCode::FAILURE
    })
}

fn show_interfaces() -> ExitCode {
    let names = match list_or_complain() {
        Ok(names) => names,
        Err(code) => return code,
    };
    if !names.is_empty() {
        let mut line = names.join(&b' ');
        line.push(b'\n');
        print_out(&line);
    }
    ExitCode::SUCCESS
}

fn show_one(prog: &OsStr, subcommand: &OsStr, name: &OsStr, field: Option<&OsStr>) -> ExitCode {
    let info = match ipc::get(name) {
        Ok(info) => info,
        Err(e) => {
            print_err(format!("Unable to access interface: {e}\n").as_bytes());
            return ExitCode::FAILURE;
        }
    };
    let device = Device::new(ipc::display_name(name.as_bytes()), &info);
    match field {
        None => {
            print_out(&pretty(&device, colour_wanted(), unix_now()));
            ExitCode::SUCCESS
        }
        Some(field) => match field_form(&device, field.as_bytes(), false) {
            Some(text) => {
                print_out(&text);
                ExitCode::SUCCESS
            }
            None => {
                invalid_field(prog, subcommand, field);
                ExitCode::FAILURE
            }
        },
    }
}

fn invalid_field(prog: &OsStr, subcommand: &OsStr, field: &OsStr) {
    let mut msg = b"Invalid parameter: `".to_vec();
    msg.extend_from_slice(field.as_bytes());
    msg.extend_from_slice(b"'\n");
    msg.extend_from_slice(&usage(prog, subcommand));
    print_err(&msg);
}

fn exit_status(failed: bool) -> ExitCode {
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// An interface as every form prints it: its name as `wg` keeps it and its state, with the
/// public key derived from the private key (the protocol does not carry it).
struct Device<'a> {
    name: &'a [u8],
    info: &'a DeviceInfo,
    public_key: Option<Key>,
}

impl<'a> Device<'a> {
    fn new(name: &'a [u8], info: &'a DeviceInfo) -> Self {
        let public_key = info
            .private_key
            .as_ref()
            .map(|k| *k.to_private_key().public_key().as_bytes());
        Device {
            name,
            info,
            public_key,
        }
    }
}

/// `WG_HIDE_KEYS=never` shows secrets in the pretty (and JSON) forms.
fn hide_secrets() -> bool {
    std::env::var_os("WG_HIDE_KEYS").is_none_or(|v| v != "never")
}

fn b64(key: &Key) -> String {
    encode_base64_key(key)
}

/// A private or preshared key for the pretty and JSON forms: `(hidden)` unless
/// `WG_HIDE_KEYS=never`.
fn secret(key: &SecretKey) -> Zeroizing<String> {
    if hide_secrets() {
        Zeroizing::new("(hidden)".to_owned())
    } else {
        base64_secret(key.as_bytes())
    }
}

fn key_or_none(key: Option<&Key>) -> String {
    key.map_or_else(|| "(none)".to_owned(), b64)
}

/// A private or preshared key for the field forms, which always show it (as `wg` does).
fn secret_or_none(key: Option<&SecretKey>) -> Zeroizing<String> {
    key.map_or_else(
        || Zeroizing::new("(none)".to_owned()),
        |k| base64_secret(k.as_bytes()),
    )
}

// ---------------------------------------------------------------------------------------------
// Address text, as glibc writes it

/// `inet_ntop`: IPv4 dotted quad; IPv6 with the longest run (≥ 2) of zero groups compressed
/// (the first on ties) and an embedded IPv4 for `::a.b.c.d` and `::ffff:a.b.c.d`.
pub fn format_ip(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format_ipv6(v6),
    }
}

fn format_ipv6(ip: &Ipv6Addr) -> String {
    let words = ip.segments();
    let mut best: Option<(usize, usize)> = None;
    let mut run: Option<(usize, usize)> = None;
    for (i, &w) in words.iter().enumerate() {
        if w == 0 {
            run = Some(run.map_or((i, 1), |(start, len)| (start, len + 1)));
        }
        if w != 0 || i == 7 {
            if let Some((start, len)) = run.take() {
                if best.is_none_or(|(_, best_len)| len > best_len) {
                    best = Some((start, len));
                }
            }
        }
    }
    let best = best.filter(|&(_, len)| len >= 2);
    let mut out = String::new();
    let mut i = 0;
    while i < 8 {
        if let Some((start, len)) = best {
            if i >= start && i < start + len {
                if i == start {
                    out.push(':');
                }
                i += 1;
                continue;
            }
        }
        if i != 0 {
            out.push(':');
        }
        let embeds_v4 = best.is_some_and(|(start, len)| {
            start == 0 && (len == 6 || (len == 5 && words[5] == 0xffff))
        });
        if i == 6 && embeds_v4 {
            let o = ip.octets();
            let _ = write!(out, "{}", Ipv4Addr::new(o[12], o[13], o[14], o[15]));
            break;
        }
        let _ = write!(out, "{:x}", words[i]);
        i += 1;
    }
    if best.is_some_and(|(start, len)| start + len == 8) {
        out.push(':');
    }
    out
}

/// `getnameinfo(NI_NUMERICHOST | NI_NUMERICSERV)` as `wg` formats it: `a.b.c.d:port` or
/// `[v6]:port`, where a link-local address's scope is the interface name when it exists.
pub fn format_endpoint(endpoint: &SocketAddr) -> String {
    match endpoint {
        SocketAddr::V4(v4) => format!("{}:{}", v4.ip(), v4.port()),
        SocketAddr::V6(v6) => {
            let mut host = format_ipv6(v6.ip());
            let scope = v6.scope_id();
            if scope != 0 {
                let octets = v6.ip().octets();
                let link_local = (octets[0] == 0xfe && octets[1] & 0xc0 == 0x80)
                    || (octets[0] == 0xff && octets[1] & 0x0f == 0x02);
                let by_name = link_local
                    .then(|| ipc::interface_name_of_index(scope))
                    .flatten();
                host.push('%');
                host.push_str(&by_name.unwrap_or_else(|| scope.to_string()));
            }
            format!("[{host}]:{}", v6.port())
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The pretty form

/// Peers as the pretty form lists them: most recent handshake first, never-handshaken peers
/// last, otherwise in device order (the sort is stable, as glibc's qsort is for small lists).
fn sorted_peers(peers: &[PeerInfo]) -> Vec<&PeerInfo> {
    let mut sorted: Vec<&PeerInfo> = peers.iter().collect();
    sorted.sort_by(|a, b| {
        let never =
            |p: &PeerInfo| p.last_handshake_time_sec == 0 && p.last_handshake_time_nsec == 0;
        never(a).cmp(&never(b)).then_with(|| {
            (b.last_handshake_time_sec, b.last_handshake_time_nsec)
                .cmp(&(a.last_handshake_time_sec, a.last_handshake_time_nsec))
        })
    });
    sorted
}

/// `N unit` components (years of 365 days, days, hours, minutes, seconds), zero components
/// left out, joined by `, `, unit words in cyan.
fn duration_text(mut left: u64) -> String {
    const UNITS: [(&str, u64); 5] = [
        ("year", 365 * 24 * 60 * 60),
        ("day", 24 * 60 * 60),
        ("hour", 60 * 60),
        ("minute", 60),
        ("second", 1),
    ];
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = left / size;
        left %= size;
        if n == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        let plural = if n == 1 { "" } else { "s" };
        let _ = write!(out, "{n} {FG_CYAN}{unit}{plural}{RESET}");
    }
    out
}

fn ago(handshake_sec: i64, now: i64) -> String {
    if now == handshake_sec {
        "Now".to_owned()
    } else if now < handshake_sec {
        format!("({FG_RED}System clock wound backward; connection problems may ensue.{RESET})")
    } else {
        format!("{} ago", duration_text((now - handshake_sec) as u64))
    }
}

fn every(seconds: u16) -> String {
    format!("every {}", duration_text(u64::from(seconds)))
}

fn bytes_text(b: u64) -> String {
    const KIB: u64 = 1024;
    let (value, unit) = if b < KIB {
        return format!("{} {FG_CYAN}B{RESET}", b as u32);
    } else if b < KIB * KIB {
        (b as f64 / 1024.0, "KiB")
    } else if b < KIB * KIB * KIB {
        (b as f64 / (1024.0 * 1024.0), "MiB")
    } else if b < KIB * KIB * KIB * KIB {
        (b as f64 / (1024.0 * 1024.0 * 1024.0), "GiB")
    } else {
        (b as f64 / (1024.0 * 1024.0 * 1024.0) / 1024.0, "TiB")
    };
    format!("{value:.2} {FG_CYAN}{unit}{RESET}")
}

fn pretty(device: &Device, colour: bool, now: i64) -> Vec<u8> {
    let info = device.info;
    let mut p = Painter::new(colour);
    let label = |name: &str| format!("  {BOLD}{name}{RESET}: ");
    p.put(RESET);
    p.put(&format!(
        "{FG_GREEN}{BOLD}interface{RESET}: {FG_GREEN}{}{RESET}\n",
        String::from_utf8_lossy(device.name)
    ));
    if let Some(public) = &device.public_key {
        p.put(&format!("{}{}\n", label("public key"), b64(public)));
    }
    if let Some(private) = &info.private_key {
        p.put(&format!(
            "{}{}\n",
            label("private key"),
            secret(private).as_str()
        ));
    }
    if info.listen_port != 0 {
        p.put(&format!(
            "{}{}\n",
            label("listening port"),
            info.listen_port
        ));
    }
    if info.fwmark != 0 {
        p.put(&format!("{}0x{:x}\n", label("fwmark"), info.fwmark));
    }
    let peers = sorted_peers(&info.peers);
    if !peers.is_empty() {
        p.put("\n");
    }
    for (i, peer) in peers.iter().enumerate() {
        p.put(&format!(
            "{FG_YELLOW}{BOLD}peer{RESET}: {FG_YELLOW}{}{RESET}\n",
            b64(&peer.public_key)
        ));
        if let Some(psk) = &peer.preshared_key {
            p.put(&format!(
                "{}{}\n",
                label("preshared key"),
                secret(psk).as_str()
            ));
        }
        if let Some(endpoint) = &peer.endpoint {
            p.put(&format!(
                "{}{}\n",
                label("endpoint"),
                format_endpoint(endpoint)
            ));
        }
        p.put(&label("allowed ips"));
        if peer.allowed_ips.is_empty() {
            p.put("(none)\n");
        }
        for (j, (ip, cidr)) in peer.allowed_ips.iter().enumerate() {
            let sep = if j + 1 < peer.allowed_ips.len() {
                ", "
            } else {
                "\n"
            };
            p.put(&format!("{}{FG_CYAN}/{RESET}{cidr}{sep}", format_ip(ip)));
        }
        if peer.last_handshake_time_sec != 0 {
            let when = ago(peer.last_handshake_time_sec as i64, now);
            p.put(&format!("{}{when}\n", label("latest handshake")));
        }
        if peer.rx_bytes != 0 || peer.tx_bytes != 0 {
            p.put(&label("transfer"));
            p.put(&format!("{} received, ", bytes_text(peer.rx_bytes)));
            p.put(&format!("{} sent\n", bytes_text(peer.tx_bytes)));
        }
        if peer.persistent_keepalive_interval != 0 {
            let text = every(peer.persistent_keepalive_interval);
            p.put(&format!("{}{text}\n", label("persistent keepalive")));
        }
        if i + 1 < peers.len() {
            p.put("\n");
        }
    }
    p.take()
}

// ---------------------------------------------------------------------------------------------
// Field forms (`show IF FIELD`, `show all FIELD`), in device order

fn endpoint_or_none(peer: &PeerInfo) -> String {
    peer.endpoint
        .as_ref()
        .map_or_else(|| "(none)".to_owned(), format_endpoint)
}

fn allowed_ips_joined(peer: &PeerInfo, separator: &str) -> String {
    if peer.allowed_ips.is_empty() {
        return "(none)".to_owned();
    }
    peer.allowed_ips
        .iter()
        .map(|(ip, cidr)| format!("{}/{cidr}", format_ip(ip)))
        .collect::<Vec<_>>()
        .join(separator)
}

fn fwmark_or_off(mark: u32) -> String {
    if mark == 0 {
        "off".to_owned()
    } else {
        format!("0x{mark:x}")
    }
}

/// The text of one field form, or `None` for an unknown field. With `prefix`, every line
/// starts with the interface name and a TAB (`show all FIELD`).
///
/// `private-key`, `preshared-keys` and `dump` print keys, as `wg` does: every line is built
/// in a [`SecretText`] and the whole text in a buffer that grows by [`extend_wiping`], so
/// that the returned text, wiped on drop, is the only copy.
fn field_form(device: &Device, field: &[u8], prefix: bool) -> Option<Zeroizing<Vec<u8>>> {
    let info = device.info;
    let mut out = Zeroizing::new(Vec::new());
    let mut line = |text: &str| {
        if prefix {
            extend_wiping(&mut out, device.name);
            extend_wiping(&mut out, b"\t");
        }
        extend_wiping(&mut out, text.as_bytes());
        extend_wiping(&mut out, b"\n");
    };
    let per_peer = |line: &mut dyn FnMut(&str), f: &dyn Fn(&PeerInfo) -> Zeroizing<String>| {
        for peer in &info.peers {
            let mut text = SecretText::with_capacity(128);
            let _ = write!(text, "{}\t{}", b64(&peer.public_key), f(peer).as_str());
            line(text.as_str());
        }
    };
    let plain = |text: String| Zeroizing::new(text);
    let keepalive = |p: &PeerInfo| match p.persistent_keepalive_interval {
        0 => "off".to_owned(),
        n => n.to_string(),
    };
    match field {
        b"public-key" => line(&key_or_none(device.public_key.as_ref())),
        b"private-key" => line(&secret_or_none(info.private_key.as_ref())),
        b"listen-port" => line(&info.listen_port.to_string()),
        b"fwmark" => line(&fwmark_or_off(info.fwmark)),
        b"peers" => {
            for peer in &info.peers {
                line(&b64(&peer.public_key));
            }
        }
        b"preshared-keys" => per_peer(&mut line, &|p| secret_or_none(p.preshared_key.as_ref())),
        b"endpoints" => per_peer(&mut line, &|p| plain(endpoint_or_none(p))),
        b"allowed-ips" => per_peer(&mut line, &|p| plain(allowed_ips_joined(p, " "))),
        b"latest-handshakes" => {
            per_peer(&mut line, &|p| plain(p.last_handshake_time_sec.to_string()))
        }
        b"transfer" => per_peer(&mut line, &|p| {
            plain(format!("{}\t{}", p.rx_bytes, p.tx_bytes))
        }),
        b"persistent-keepalive" => per_peer(&mut line, &|p| plain(keepalive(p))),
        b"dump" => {
            let mut text = SecretText::with_capacity(128);
            let _ = write!(
                text,
                "{}\t{}\t{}\t{}",
                secret_or_none(info.private_key.as_ref()).as_str(),
                key_or_none(device.public_key.as_ref()),
                info.listen_port,
                fwmark_or_off(info.fwmark)
            );
            line(text.as_str());
            for p in &info.peers {
                let mut text = SecretText::with_capacity(256);
                let _ = write!(
                    text,
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    b64(&p.public_key),
                    secret_or_none(p.preshared_key.as_ref()).as_str(),
                    endpoint_or_none(p),
                    allowed_ips_joined(p, ","),
                    p.last_handshake_time_sec,
                    p.rx_bytes,
                    p.tx_bytes,
                    keepalive(p)
                );
                line(text.as_str());
            }
        }
        _ => return None,
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------

pub mod json {
    //! `show [ <interface> | all ] --json` — ferrowg's machine-readable form.
    //!
    //! `show IF --json` prints one interface object; `show --json` and `show all --json`
    //! print an array of them (possibly `[]`), in `show all` order. Interfaces that cannot
    //! be read are reported on stderr as by `show` and left out; the exit status is `show`'s.
    //! The document is pretty-printed with two-space indentation and ends with a newline.
    //!
    //! Interface object, every key always present, in this order:
    //!
    //! | key | type | meaning |
    //! |---|---|---|
    //! | `name` | string | interface name |
    //! | `public_key` | string or null | base64; null without a private key |
    //! | `private_key` | string or null | base64, or `"(hidden)"` unless `WG_HIDE_KEYS=never`; null if none |
    //! | `listen_port` | number | UDP port; 0 when not listening |
    //! | `fwmark` | number | 0 when unset |
    //! | `peers` | array of peer objects | device order (not the pretty form's sort) |
    //!
    //! Peer object:
    //!
    //! | key | type | meaning |
    //! |---|---|---|
    //! | `public_key` | string | base64 |
    //! | `preshared_key` | string or null | base64, or `"(hidden)"` unless `WG_HIDE_KEYS=never`; null if none |
    //! | `endpoint` | string or null | `a.b.c.d:port` or `[v6]:port`, as `wg show` prints it |
    //! | `allowed_ips` | array of strings | `ip/cidr` |
    //! | `latest_handshake` | number | Unix time in seconds; 0 = never |
    //! | `rx_bytes`, `tx_bytes` | number | bytes received / sent (may exceed 2^53) |
    //! | `persistent_keepalive` | number | seconds; 0 = off |
    //!
    //! Keys are only ever added to this shape, never renamed or removed.

    use super::*;

    fn usage_error(prog: &OsStr, subcommand: &OsStr) -> ExitCode {
        print_err(&usage(prog, subcommand));
        ExitCode::FAILURE
    }

    pub fn show_json(prog: &OsStr, subcommand: &OsStr, args: &[OsString]) -> ExitCode {
        let rest: Vec<&OsString> = args.iter().filter(|a| *a != "--json").collect();
        match rest.as_slice() {
            [] => all(),
            [one] if one.as_bytes() == b"all" => all(),
            [one] if !matches!(one.as_bytes(), b"interfaces" | b"-h" | b"--help" | b"help") => {
                match ipc::get(one.as_os_str()) {
                    Ok(info) => {
                        let device = Device::new(ipc::display_name(one.as_bytes()), &info);
                        let mut out = String::new();
                        interface(&mut out, &device, 0);
                        out.push('\n');
                        print_out(out.as_bytes());
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        print_err(format!("Unable to access interface: {e}\n").as_bytes());
                        ExitCode::FAILURE
                    }
                }
            }
            _ => usage_error(prog, subcommand),
        }
    }

    fn all() -> ExitCode {
        let names = match list_or_complain() {
            Ok(names) => names,
            Err(code) => return code,
        };
        let mut failed = !names.is_empty();
        let mut objects = Vec::new();
        for name in &names {
            match ipc::get(OsStr::from_bytes(name)) {
                Ok(info) => {
                    let device = Device::new(ipc::display_name(name), &info);
                    let mut out = String::new();
                    interface(&mut out, &device, 1);
                    objects.push(out);
                    failed = false;
                }
                Err(e) => {
                    let mut msg = b"Unable to access interface ".to_vec();
                    msg.extend_from_slice(name);
                    msg.extend_from_slice(format!(": {e}\n").as_bytes());
                    print_err(&msg);
                }
            }
        }
        let text = if objects.is_empty() {
            "[]\n".to_owned()
        } else {
            format!("[\n{}\n]\n", objects.join(",\n"))
        };
        print_out(text.as_bytes());
        exit_status(failed)
    }

    /// A JSON string literal: quotes, backslashes and control characters escaped; bytes
    /// that are not UTF-8 replaced (U+FFFD), since JSON text must be Unicode.
    pub fn string(text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if (c as u32) < 0x20 || c == '\u{7f}' => {
                    let _ = write!(out, "\\u{:04x}", c as u32);
                }
                c => out.push(c),
            }
        }
        out.push('"');
        out
    }

    fn optional(value: Option<String>) -> String {
        value.map_or_else(|| "null".to_owned(), |v| string(&v))
    }

    /// `"(hidden)"` unless `WG_HIDE_KEYS=never`. (With `never`, the document's buffers hold
    /// the keys and are not wiped: that setting asks for them to be shown.)
    fn optional_secret(key: Option<&SecretKey>) -> String {
        key.map_or_else(|| "null".to_owned(), |k| string(&secret(k)))
    }

    /// Writes `fields` as an object whose braces sit at `depth` levels of indentation.
    fn object(out: &mut String, fields: &[(&str, String)], depth: usize) {
        let pad = "  ".repeat(depth);
        out.push_str(&pad);
        out.push_str("{\n");
        for (i, (key, value)) in fields.iter().enumerate() {
            let comma = if i + 1 < fields.len() { "," } else { "" };
            let _ = writeln!(out, "{pad}  {}: {value}{comma}", string(key));
        }
        out.push_str(&pad);
        out.push('}');
    }

    fn interface(out: &mut String, device: &Device, depth: usize) {
        let info = device.info;
        let peers = if info.peers.is_empty() {
            "[]".to_owned()
        } else {
            let pad = "  ".repeat(depth + 1);
            let items: Vec<String> = info
                .peers
                .iter()
                .map(|p| {
                    let mut text = String::new();
                    peer(&mut text, p, depth + 2);
                    text
                })
                .collect();
            format!("[\n{}\n{pad}]", items.join(",\n"))
        };
        object(
            out,
            &[
                ("name", string(&String::from_utf8_lossy(device.name))),
                ("public_key", optional(device.public_key.as_ref().map(b64))),
                ("private_key", optional_secret(info.private_key.as_ref())),
                ("listen_port", info.listen_port.to_string()),
                ("fwmark", info.fwmark.to_string()),
                ("peers", peers),
            ],
            depth,
        );
    }

    fn peer(out: &mut String, p: &PeerInfo, depth: usize) {
        let allowed: Vec<String> = p
            .allowed_ips
            .iter()
            .map(|(ip, cidr)| string(&format!("{}/{cidr}", format_ip(ip))))
            .collect();
        object(
            out,
            &[
                ("public_key", string(&b64(&p.public_key))),
                ("preshared_key", optional_secret(p.preshared_key.as_ref())),
                (
                    "endpoint",
                    optional(p.endpoint.as_ref().map(format_endpoint)),
                ),
                ("allowed_ips", format!("[{}]", allowed.join(", "))),
                ("latest_handshake", p.last_handshake_time_sec.to_string()),
                ("rx_bytes", p.rx_bytes.to_string()),
                ("tx_bytes", p.tx_bytes.to_string()),
                (
                    "persistent_keepalive",
                    p.persistent_keepalive_interval.to_string(),
                ),
            ],
            depth,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_text_matches_glibc() {
        for (addr, text) in [
            ("::", "::"),
            ("::1", "::1"),
            ("::1.2.3.4", "::1.2.3.4"),
            ("::ffff:1.2.3.4", "::ffff:1.2.3.4"),
            ("::ffff:0:1.2.3.4", "::ffff:0:102:304"),
            ("2001:db8::1", "2001:db8::1"),
            ("2001:db8:0:1:0:0:0:1", "2001:db8:0:1::1"),
            ("2001:0:0:1:0:0:1:1", "2001::1:0:0:1:1"),
            ("1:0:2:3:4:5:6:7", "1:0:2:3:4:5:6:7"),
            ("fe80::", "fe80::"),
            ("1::", "1::"),
            ("0:0:1::", "0:0:1::"),
        ] {
            let ip: Ipv6Addr = addr.parse().unwrap();
            assert_eq!(format_ipv6(&ip), text, "{addr}");
        }
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            format_endpoint(&"192.0.2.1:51820".parse().unwrap()),
            "192.0.2.1:51820"
        );
        assert_eq!(
            format_endpoint(&"[2001:db8::1]:51821".parse().unwrap()),
            "[2001:db8::1]:51821"
        );
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "2001:db8::1".parse().unwrap(),
            5,
            0,
            7,
        ));
        assert_eq!(format_endpoint(&scoped), "[2001:db8::1%7]:5");
    }

    #[test]
    fn durations_and_sizes() {
        let plain =
            |s: String| String::from_utf8(crate::terminal::strip_ansi(s.as_bytes())).unwrap();
        assert_eq!(plain(ago(100, 100)), "Now");
        assert_eq!(plain(ago(53, 100)), "47 seconds ago");
        assert_eq!(plain(ago(0, 62)), "1 minute, 2 seconds ago");
        assert_eq!(
            plain(ago(0, 93784)),
            "1 day, 2 hours, 3 minutes, 4 seconds ago"
        );
        assert_eq!(
            plain(ago(101, 100)),
            "(System clock wound backward; connection problems may ensue.)"
        );
        assert_eq!(plain(every(1)), "every 1 second");
        assert_eq!(plain(every(65)), "every 1 minute, 5 seconds");
        assert_eq!(plain(bytes_text(5)), "5 B");
        assert_eq!(plain(bytes_text(4660)), "4.55 KiB");
        assert_eq!(plain(bytes_text(1258291)), "1.20 MiB");
        assert_eq!(plain(bytes_text(1 << 40)), "1.00 TiB");
        assert_eq!(plain(bytes_text(1152)), "1.12 KiB");
    }

    #[test]
    fn pretty_sorts_by_latest_handshake() {
        let mut a = PeerInfo::new([1; 32]);
        let mut b = PeerInfo::new([2; 32]);
        let c = PeerInfo::new([3; 32]);
        a.last_handshake_time_sec = 10;
        b.last_handshake_time_sec = 20;
        let peers = vec![c.clone(), a.clone(), b.clone()];
        let order: Vec<u8> = sorted_peers(&peers)
            .iter()
            .map(|p| p.public_key[0])
            .collect();
        assert_eq!(order, [2, 1, 3]);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json::string("a\"b\\c\n\u{1}"), "\"a\\\"b\\\\c\\n\\u0001\"");
    }

    #[test]
    fn field_forms_print_keys_as_wg_does() {
        let private = SecretKey::new([3; 32]);
        let public = *private.to_private_key().public_key().as_bytes();
        let mut peer = PeerInfo::new([1; 32]);
        peer.preshared_key = Some(SecretKey::new([0xf0; 32]));
        peer.allowed_ips = vec![
            ("10.0.0.0".parse().unwrap(), 8),
            ("fd00::".parse().unwrap(), 64),
        ];
        peer.rx_bytes = 5;
        peer.tx_bytes = 6;
        let info = DeviceInfo {
            private_key: Some(private),
            listen_port: 51820,
            fwmark: 0,
            peers: vec![peer, PeerInfo::new([2; 32])],
        };
        let device = Device::new(b"wg0", &info);
        let form = |field: &[u8], prefix| {
            String::from_utf8(field_form(&device, field, prefix).unwrap().to_vec()).unwrap()
        };
        let (k1, k2) = (b64(&[1; 32]), b64(&[2; 32]));
        let psk = "8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PDw8PA=";
        let private_text = "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=";
        assert_eq!(form(b"private-key", false), format!("{private_text}\n"));
        assert_eq!(
            form(b"public-key", true),
            format!("wg0\t{}\n", b64(&public))
        );
        assert_eq!(
            form(b"preshared-keys", true),
            format!("wg0\t{k1}\t{psk}\nwg0\t{k2}\t(none)\n")
        );
        assert_eq!(
            form(b"dump", false),
            format!(
                "{private_text}\t{}\t51820\toff\n\
                 {k1}\t{psk}\t(none)\t10.0.0.0/8,fd00::/64\t0\t5\t6\toff\n\
                 {k2}\t(none)\t(none)\t(none)\t0\t0\t0\toff\n",
                b64(&public)
            )
        );
        assert_eq!(
            form(b"allowed-ips", false),
            format!("{k1}\t10.0.0.0/8 fd00::/64\n{k2}\t(none)\n")
        );
        assert!(field_form(&device, b"bogus", false).is_none());
    }
}
