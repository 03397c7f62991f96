//! What `up`, `down`, `save` and `strip` share: `wg-quick`'s command line, how it finds and
//! reads the configuration file, its `[#] …` echo, hooks, DNS through resolvconf, the
//! firewall script, and the record of what `up` changed.
//!
//! Behaviour follows `wg-quick` v1.0.20260223 (PROTOCOL.md §9). Differences, all additions:
//! the interface is always `ferrowgd` (started by `up`, found next to this executable, else on
//! `PATH`, or `$FERROWG_DAEMON`); addresses, routes and rules go through netlink instead of
//! `ip` (the `[#]` lines show the equivalent `ip` command); `--netns NAME` puts the interface
//! into another network namespace; and `up` writes down what it changed
//! (`/run/ferrowg/IF.state`), so `down` can undo exactly that even when the daemon — and with
//! it the interface — is already gone.

use crate::config::{self, QuickSettings, Table};
use crate::netlink::{self, Family, Rtnl};
use crate::netns;
use crate::stdio::print_err;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

/// Where `up` records what it changed, one file per interface.
pub const STATE_DIR: &str = "/run/ferrowg";

/// Prints `PROG: MESSAGE` and returns the failure status (wg-quick's `die`).
pub fn die(prog: &OsStr, message: &str) -> ExitCode {
    crate::stdio::print_prog_err(prog, message);
    ExitCode::FAILURE
}

/// `[#] COMMAND` on stderr, as wg-quick echoes every command it runs.
pub fn echo(command: &str) {
    print_err(format!("[#] {command}\n").as_bytes());
}

/// An error already reduced to the text to print after `PROG: ` (or on its own line when it
/// is the tool's own message, like `RTNETLINK answers: …`).
#[derive(Debug)]
pub enum Failure {
    /// `PROG: TEXT`.
    Prog(String),
    /// TEXT alone (what `ip`, a hook or resolvconf would have printed).
    Bare(String),
}

impl Failure {
    pub fn print(&self, prog: &OsStr) {
        match self {
            Failure::Prog(text) => crate::stdio::print_prog_err(prog, text),
            Failure::Bare(text) => print_err(format!("{text}\n").as_bytes()),
        }
    }
}

/// A netlink error as `ip` reports it.
pub fn rtnl_failure(e: io::Error) -> Failure {
    Failure::Bare(netlink::answer_text(&e))
}

// ---------------------------------------------------------------------------------------------
// Command line

/// `SUBCOMMAND [ CONFIG_FILE | INTERFACE ] [--netns NAME]`.
pub struct Invocation {
    pub target: OsString,
    pub netns: Option<String>,
}

pub fn usage(prog: &OsStr) -> String {
    let prog = prog.to_string_lossy();
    format!(
        "Usage: {prog} [ up | down | save | strip ] [ CONFIG_FILE | INTERFACE ] [ --netns NAME ]

  CONFIG_FILE is a configuration file, whose filename is the interface name
  followed by `.conf'. Otherwise, INTERFACE is an interface name, with
  configuration found at /etc/wireguard/INTERFACE.conf. It is to be readable
  by `{prog} setconf' with the exception of the following additions
  to the [Interface] section, which are handled by `{prog} up':

  - Address: may be specified one or more times and contains one or more
    IP addresses (with an optional CIDR mask) to be set for the interface.
  - DNS: an optional DNS server to use while the device is up.
  - MTU: an optional MTU for the interface; if unspecified, auto-calculated.
  - Table: an optional routing table to which routes will be added; if
    unspecified or `auto', the default table is used. If `off', no routes
    are added.
  - PreUp, PostUp, PreDown, PostDown: script snippets which will be executed
    by bash(1) at the corresponding phases of the link, most commonly used
    to configure DNS. The string `%i' is expanded to INTERFACE.
  - SaveConfig: if set to `true', the configuration is saved from the current
    state of the interface upon shutdown.

  --netns NAME (up, down, save): the interface is created here, where its UDP
  sockets stay, and then moved into network namespace NAME (created if
  missing), which gets the addresses, routes (a plain default route for
  0.0.0.0/0 and ::/0) and, from DNS, /etc/netns/NAME/resolv.conf. Processes
  started in NAME (ip netns exec NAME …) can only use the tunnel.

  The interface is ferrowgd, found next to {prog}, else on PATH (or set
  FERROWG_DAEMON).
"
    )
}

/// Parses the arguments after the subcommand. `Err` carries the exit status after usage
/// was printed (status 0 for an explicit `--help`).
pub fn parse_args(
    prog: &OsStr,
    args: &[OsString],
    netns_allowed: bool,
) -> Result<Invocation, ExitCode> {
    let rest = &args[1..];
    if rest.len() == 1 && matches!(rest[0].as_bytes(), b"-h" | b"--help" | b"help") {
        print_err(usage(prog).as_bytes());
        return Err(ExitCode::SUCCESS);
    }
    let mut target = None;
    let mut netns = None;
    let mut i = 0;
    let bad = || {
        print_err(usage(prog).as_bytes());
        Err(ExitCode::FAILURE)
    };
    while i < rest.len() {
        let arg = rest[i].as_bytes();
        if netns_allowed && arg == b"--netns" {
            let Some(name) = rest.get(i + 1) else {
                return bad();
            };
            netns = Some(name.to_string_lossy().into_owned());
            i += 2;
            continue;
        }
        if let Some(name) = arg.strip_prefix(b"--netns=").filter(|_| netns_allowed) {
            netns = Some(String::from_utf8_lossy(name).into_owned());
            i += 1;
            continue;
        }
        if target.is_some() {
            return bad();
        }
        target = Some(rest[i].clone());
        i += 1;
    }
    let Some(target) = target else {
        return bad();
    };
    if let Some(name) = &netns {
        if !netns::valid_name(name) {
            return Err(die(
                prog,
                &format!("`{name}' is not a valid namespace name"),
            ));
        }
    }
    Ok(Invocation { target, netns })
}

/// Root, or a message and failure (wg-quick re-executes itself through sudo instead).
pub fn require_root(prog: &OsStr, subcommand: &OsStr) -> Result<(), ExitCode> {
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    Err(die(
        prog,
        &format!(
            "`{}' must be run as root (try sudo)",
            subcommand.to_string_lossy()
        ),
    ))
}

// ---------------------------------------------------------------------------------------------
// The configuration file

/// `[a-zA-Z0-9_=+.-]{1,15}`: an interface name as wg-quick accepts it.
pub fn is_interface_name(name: &[u8]) -> bool {
    (1..=15).contains(&name.len())
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'=' | b'+' | b'.' | b'-'))
}

/// The configuration file and the interface it names.
pub struct Located {
    /// Canonical path (symbolic links resolved), as wg-quick uses it from then on.
    pub path: PathBuf,
    pub ifname: String,
}

/// The common start of `up`, `down` and `save`: arguments, root, and the config file.
pub fn prelude(prog: &OsStr, args: &[OsString]) -> Result<(Invocation, Located), ExitCode> {
    let inv = parse_args(prog, args, true)?;
    require_root(prog, &args[0])?;
    let located = locate(prog, &inv.target)?;
    Ok((inv, located))
}

/// wg-quick's rules (§9.2): a bare interface name means `/etc/wireguard/NAME.conf`; the file
/// must exist and be called `IFNAME.conf`; a warning if others may read it.
pub fn locate(prog: &OsStr, target: &OsStr) -> Result<Located, ExitCode> {
    let given: PathBuf = if is_interface_name(target.as_bytes()) {
        let mut name = target.to_os_string();
        name.push(".conf");
        Path::new("/etc/wireguard").join(name)
    } else {
        PathBuf::from(target)
    };
    if !given.exists() {
        return Err(die(prog, &format!("`{}' does not exist", given.display())));
    }
    let file_name = given.as_os_str().as_bytes();
    let base_start = file_name
        .iter()
        .rposition(|&b| b == b'/')
        .map_or(0, |p| p + 1);
    let base = &file_name[base_start..];
    let ifname = match base.strip_suffix(b".conf") {
        Some(name) if is_interface_name(name) => String::from_utf8_lossy(name).into_owned(),
        _ => {
            return Err(die(
                prog,
                "The config file must be a valid interface name, followed by .conf",
            ))
        }
    };
    let path = fs::canonicalize(&given).unwrap_or(given);
    warn_if_world_accessible(&path);
    Ok(Located { path, ifname })
}

/// wg-quick's test: the file's and its directory's "other" permission bits, ANDed.
fn warn_if_world_accessible(path: &Path) {
    let mode = |p: &Path| fs::metadata(p).map(|m| m.permissions().mode()).unwrap_or(0);
    let dir = path.parent().unwrap_or(Path::new("/"));
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    if mode(path) & mode(dir) & 0o007 != 0 {
        print_err(format!("Warning: `{}' is world accessible\n", path.display()).as_bytes());
    }
}

fn config_error(prog: &OsStr, path: &Path, e: &config::ConfigError) -> ExitCode {
    die(prog, &e.describe(path))
}

/// The file read with wg-quick's own rules only (no `wg` parsing, nothing resolved): the
/// settings and the text `strip` prints.
/// The text holds the private key: it is wiped when dropped.
pub fn load_quick(
    prog: &OsStr,
    located: &Located,
) -> Result<(QuickSettings, zeroize::Zeroizing<Vec<u8>>), ExitCode> {
    config::read_file(located.path.as_os_str())
        .and_then(|text| config::parse_quick(&text))
        .map_err(|e| config_error(prog, &located.path, &e))
}

/// The whole file, both dialects' rules, endpoints resolved (what `up` applies).
pub fn load_full(prog: &OsStr, located: &Located) -> Result<config::Config, ExitCode> {
    let mut note = |n: &[u8]| {
        let mut line = n.to_vec();
        line.push(b'\n');
        print_err(&line);
    };
    config::read_file(located.path.as_os_str())
        .and_then(|text| config::parse(&text, config::Dialect::Quick, &mut note))
        .map_err(|e| config_error(prog, &located.path, &e))
}

/// `Table =` as the file wrote it (for `save`).
pub fn table_text(table: &Table) -> String {
    match table {
        Table::Auto => "auto".into(),
        Table::Off => "off".into(),
        Table::Id(n) => n.to_string(),
        Table::Name(name) => name.clone(),
    }
}

/// A table name or number as `ip` resolves it (`/etc/iproute2/rt_tables` and friends).
pub fn resolve_table(name: &str) -> Option<u32> {
    match name {
        "main" => return Some(netlink::RT_TABLE_MAIN),
        "local" => return Some(255),
        "default" => return Some(253),
        "unspec" => return Some(0),
        _ => {}
    }
    if let Some(n) = parse_number(name) {
        return Some(n);
    }
    let mut files = Vec::new();
    for dir in ["/etc/iproute2", "/usr/share/iproute2", "/usr/lib/iproute2"] {
        files.push(Path::new(dir).join("rt_tables"));
        if let Ok(entries) = fs::read_dir(Path::new(dir).join("rt_tables.d")) {
            let mut more: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension() == Some(OsStr::new("conf")))
                .collect();
            more.sort();
            files.extend(more);
        }
    }
    for file in files {
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let mut fields = line.split_whitespace();
            if let (Some(id), Some(table_name)) = (fields.next(), fields.next()) {
                if table_name == name {
                    if let Some(id) = parse_number(id) {
                        return Some(id);
                    }
                }
            }
        }
    }
    None
}

fn parse_number(text: &str) -> Option<u32> {
    match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

// ---------------------------------------------------------------------------------------------
// Programs and hooks

/// `name` on `PATH`, else in the usual system directories (`type -p`, made robust to a
/// `PATH` without the sbin directories).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path_var).collect();
    dirs.extend(
        [
            "/usr/local/sbin",
            "/usr/local/bin",
            "/usr/sbin",
            "/usr/bin",
            "/sbin",
            "/bin",
        ]
        .map(PathBuf::from),
    );
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(path: &Path) -> bool {
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Runs each hook with `%i` replaced by the interface name, echoed first, through bash (sh
/// where there is no bash), as wg-quick's `execute_hooks` does. Stops at the first failure.
pub fn run_hooks(hooks: &[String], ifname: &str) -> Result<(), Failure> {
    for hook in hooks {
        let hook = hook.replace("%i", ifname);
        echo(&hook);
        let shell = find_program("bash").unwrap_or_else(|| PathBuf::from("/bin/sh"));
        let status = Command::new(&shell)
            .arg("-c")
            .arg(&hook)
            .status()
            .map_err(|e| Failure::Prog(format!("cannot run {}: {e}", shell.display())))?;
        if !status.success() {
            return Err(Failure::Prog(format!(
                "hook `{hook}' failed ({})",
                exit_text(status)
            )));
        }
    }
    Ok(())
}

pub fn exit_text(status: std::process::ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => status.to_string(),
    }
}

/// Runs `program args` with `input` on its stdin; `Ok` only on success.
pub fn run_with_input(program: &Path, args: &[&str], input: &[u8]) -> Result<(), Failure> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::Prog(format!("cannot run {}: {e}", program.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input);
    }
    let status = child
        .wait()
        .map_err(|e| Failure::Prog(format!("{}: {e}", program.display())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::Prog(format!(
            "`{} {}' failed ({})",
            program.display(),
            args.join(" "),
            exit_text(status)
        )))
    }
}

/// An anonymous in-memory file for a daemon's stderr: what it says before going to the
/// background can be shown, and nothing it writes later can block or fail (as a pipe whose
/// reader has gone would make it).
pub fn stderr_capture() -> Option<fs::File> {
    nix::sys::memfd::memfd_create(c"ferrowgd-stderr", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .ok()
        .map(fs::File::from)
}

/// The first 64 KiB written to a [`stderr_capture`] file.
pub fn captured_text(file: &fs::File) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut text = vec![0u8; 64 * 1024];
    let n = file.read_at(&mut text, 0).unwrap_or(0);
    text.truncate(n);
    text
}

// ---------------------------------------------------------------------------------------------
// DNS

/// resolvconf's record name for the interface: wg-quick prefixes it with the first
/// `NAME*` entry of `/etc/resolvconf/interface-order` (Debian's resolvconf), unless
/// `resolvconf` is a symbolic link (systemd-resolved's emulation).
pub fn resolvconf_name(ifname: &str) -> String {
    let order = Path::new("/etc/resolvconf/interface-order");
    let is_link = find_program("resolvconf")
        .and_then(|p| fs::symlink_metadata(p).ok())
        .is_some_and(|m| m.file_type().is_symlink());
    if order.is_file() && !is_link {
        if let Ok(text) = fs::read_to_string(order) {
            for line in text.lines() {
                let line = line.trim_matches(|c| c == ' ' || c == '\t');
                if let Some(name) = line.strip_suffix('*') {
                    if !name.is_empty()
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    {
                        return format!("{name}.{ifname}");
                    }
                }
            }
        }
    }
    ifname.to_owned()
}

/// The resolv.conf text for the `DNS` settings: `nameserver` lines, then `search`.
pub fn resolv_conf_text(quick: &QuickSettings) -> String {
    let mut text = String::new();
    for server in &quick.dns_servers {
        text.push_str(&format!("nameserver {server}\n"));
    }
    if !quick.dns_search.is_empty() {
        text.push_str(&format!("search {}\n", quick.dns_search.join(" ")));
    }
    text
}

/// `/etc/netns/NAME/resolv.conf`: what `ip netns exec NAME` binds over `/etc/resolv.conf`.
pub fn netns_resolv_conf(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns).join("resolv.conf")
}

// ---------------------------------------------------------------------------------------------
// Firewall (full tunnel)

/// The `nft -f` script wg-quick feeds for one family (§9.4): marks the tunnel's own UDP so
/// replies keep it, and drops packets for the interface's addresses arriving elsewhere.
pub fn nft_script(
    family: Family,
    ifname: &str,
    table: u32,
    addresses: &[std::net::IpAddr],
) -> String {
    let pf = match family {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    let t = format!("wg-quick-{ifname}");
    let mut s = format!("add table {pf} {t}\n");
    s += &format!("add chain {pf} {t} preraw {{ type filter hook prerouting priority -300; }}\n");
    s +=
        &format!("add chain {pf} {t} premangle {{ type filter hook prerouting priority -150; }}\n");
    s += &format!(
        "add chain {pf} {t} postmangle {{ type filter hook postrouting priority -150; }}\n"
    );
    for address in addresses {
        s += &format!(
            "add rule {pf} {t} preraw iifname != \"{ifname}\" {pf} daddr {address} fib saddr type != local drop\n"
        );
    }
    s += &format!("add rule {pf} {t} postmangle meta l4proto udp mark {table} ct mark set mark \n");
    s += &format!("add rule {pf} {t} premangle meta l4proto udp meta mark set ct mark \n");
    s
}

/// The same for `iptables-restore -n` (hosts without nft).
pub fn iptables_script(ifname: &str, table: u32, addresses: &[std::net::IpAddr]) -> String {
    let marker = format!("-m comment --comment \"wg-quick(8) rule for {ifname}\"");
    let mut s = String::from("*raw\n");
    for address in addresses {
        s += &format!(
            "-I PREROUTING ! -i {ifname} -d {address} -m addrtype ! --src-type LOCAL -j DROP {marker}\n"
        );
    }
    s += &format!(
        "COMMIT\n*mangle\n-I POSTROUTING -m mark --mark {table} -p udp -j CONNMARK --save-mark {marker}\n\
         -I PREROUTING -p udp -j CONNMARK --restore-mark {marker}\nCOMMIT\n"
    );
    s
}

/// wg-quick's `remove_firewall`: every nft table called `wg-quick-IF`, every iptables rule
/// with its comment. Failures are ignored (as `down` ignores them).
pub fn remove_firewall(ifname: &str) {
    if let Some(nft) = find_program("nft") {
        let listed = Command::new(&nft)
            .args(["list", "tables"])
            .stderr(Stdio::null())
            .output();
        if let Ok(out) = listed {
            let mut script = String::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let line = line.trim();
                if line.ends_with(&format!(" wg-quick-{ifname}")) {
                    script += &format!("delete {line}\n");
                }
            }
            if !script.is_empty() {
                echo("nft -f -");
                let _ = run_with_input(&nft, &["-f", "-"], script.as_bytes());
            }
        }
    }
    let marker = format!("-m comment --comment \"wg-quick(8) rule for {ifname}\"");
    for tool in ["iptables", "ip6tables"] {
        let (Some(save), Some(restore)) = (
            find_program(&format!("{tool}-save")),
            find_program(&format!("{tool}-restore")),
        ) else {
            continue;
        };
        let Ok(out) = Command::new(save).stderr(Stdio::null()).output() else {
            continue;
        };
        let mut script = String::new();
        let mut found = false;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let line = line.trim();
            if line.starts_with('*') || line == "COMMIT" {
                script += line;
                script.push('\n');
            } else if line.starts_with("-A ") && line.contains(&marker) {
                found = true;
                script += &format!("-D{}\n", &line[2..]);
            }
        }
        if found {
            echo(&format!("{tool}-restore -n"));
            let _ = run_with_input(&restore, &["-n"], script.as_bytes());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// What `up` changed

/// The record of one `up`: enough for `down` to undo exactly that, written after every step
/// so that a crash in the middle leaves an accurate record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct State {
    /// The namespace the interface was moved into.
    pub netns: Option<String>,
    /// `up` created that namespace (so `down` removes it).
    pub netns_created: bool,
    /// The fwmark routing table of a full tunnel.
    pub table: Option<u32>,
    /// Policy rules were added for IPv4 / IPv6.
    pub rules_v4: bool,
    pub rules_v6: bool,
    /// The nft tables / iptables rules were added.
    pub firewall: bool,
    /// The name registered with `resolvconf -a`.
    pub resolvconf: Option<String>,
    /// A namespace's resolv.conf written by `up`, the file it replaced (moved aside), and a
    /// directory created for it.
    pub resolv_file: Option<PathBuf>,
    pub resolv_backup: Option<PathBuf>,
    pub resolv_dir_created: Option<PathBuf>,
}

impl State {
    pub fn path(ifname: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{ifname}.state"))
    }

    pub fn load(ifname: &str) -> Option<State> {
        fs::read_to_string(Self::path(ifname))
            .ok()
            .map(|text| Self::parse(&text))
    }

    fn parse(text: &str) -> State {
        let mut state = State::default();
        for line in text.lines() {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "netns" => state.netns = Some(value.to_owned()),
                "netns-created" => state.netns_created = true,
                "table" => state.table = value.parse().ok(),
                "rules-v4" => state.rules_v4 = true,
                "rules-v6" => state.rules_v6 = true,
                "firewall" => state.firewall = true,
                "resolvconf" => state.resolvconf = Some(value.to_owned()),
                "resolv-file" => state.resolv_file = Some(value.into()),
                "resolv-backup" => state.resolv_backup = Some(value.into()),
                "resolv-dir-created" => state.resolv_dir_created = Some(value.into()),
                _ => {}
            }
        }
        state
    }

    fn text(&self) -> String {
        let mut text = String::from("# ferrowg up: what to undo on down\n");
        let mut line = |key: &str, value: Option<String>| {
            text.push_str(key);
            if let Some(v) = value {
                text.push(' ');
                text.push_str(&v);
            }
            text.push('\n');
        };
        if let Some(ns) = &self.netns {
            line("netns", Some(ns.clone()));
        }
        if self.netns_created {
            line("netns-created", None);
        }
        if let Some(t) = self.table {
            line("table", Some(t.to_string()));
        }
        if self.rules_v4 {
            line("rules-v4", None);
        }
        if self.rules_v6 {
            line("rules-v6", None);
        }
        if self.firewall {
            line("firewall", None);
        }
        if let Some(name) = &self.resolvconf {
            line("resolvconf", Some(name.clone()));
        }
        for (key, value) in [
            ("resolv-file", &self.resolv_file),
            ("resolv-backup", &self.resolv_backup),
            ("resolv-dir-created", &self.resolv_dir_created),
        ] {
            if let Some(p) = value {
                line(key, Some(p.display().to_string()));
            }
        }
        text
    }

    /// Writes the record (atomically: a temporary file renamed over the old one).
    pub fn store(&self, ifname: &str) -> io::Result<()> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(STATE_DIR)?;
        let path = Self::path(ifname);
        let tmp = path.with_extension("state.tmp");
        write_private_file(&tmp, self.text().as_bytes())?;
        fs::rename(tmp, path)
    }

    pub fn remove(ifname: &str) {
        let _ = fs::remove_file(Self::path(ifname));
    }
}

/// Creates (or truncates) `path` readable by its owner only, writes `bytes` and syncs them:
/// the first half of an atomic replace (the caller renames it into place).
pub fn write_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `ip -n NS ` for the `[#]` lines of commands run inside a namespace.
pub fn ip_prefix(netns: Option<&str>) -> String {
    match netns {
        Some(ns) => format!("ip -n {ns} "),
        None => "ip ".into(),
    }
}

/// What `down` (and a failed `up`) does after the hooks: undo every recorded change, in
/// wg-quick's order — rules, the link, DNS, the firewall — then the namespace `up` created.
/// Without a record (an interface `wg-quick` brought up), wg-quick's own inference is used:
/// its rules are found from the interface's fwmark and a `/0` allowed IP. Every step is
/// attempted; failures are printed as they happen, and `false` returned if there were any.
pub fn teardown(
    prog: &OsStr,
    ifname: &str,
    state: Option<&State>,
    quick: &QuickSettings,
    netns: Option<&str>,
) -> bool {
    let mut ok = true;
    let mut fail = |f: Failure| {
        f.print(prog);
        ok = false;
    };
    let netns = netns.or(state.and_then(|s| s.netns.as_deref()));

    // 1. Policy rules (in this namespace: full tunnels are never moved).
    let (table, families) = match state {
        Some(s) => (
            s.table,
            [(Family::V4, s.rules_v4), (Family::V6, s.rules_v6)],
        ),
        None => {
            // wg-quick: Table auto, a fwmark set and some /0 allowed IP.
            let auto = matches!(quick.table, None | Some(Table::Auto));
            let info = crate::ipc::get(OsStr::new(ifname)).ok();
            let t = info.as_ref().map_or(0, |i| i.fwmark);
            let has_default = info.as_ref().is_some_and(|i| {
                i.peers
                    .iter()
                    .any(|p| p.allowed_ips.iter().any(|a| a.1 == 0))
            });
            if auto && t != 0 && has_default && netns.is_none() {
                (Some(t), [(Family::V4, true), (Family::V6, true)])
            } else {
                (None, [(Family::V4, false), (Family::V6, false)])
            }
        }
    };
    if let Some(t) = table {
        match Rtnl::open() {
            Ok(mut rtnl) => {
                for (family, wanted) in families {
                    if !wanted {
                        continue;
                    }
                    if let Err(f) = delete_rules(&mut rtnl, family, t, state.is_some()) {
                        fail(f);
                    }
                }
            }
            Err(e) => fail(rtnl_failure(e)),
        }
    }

    // 2. The link (the daemon ends with it): in the namespace, or still here if it never
    //    got there.
    let mut places: Vec<Option<&str>> = Vec::new();
    if let Some(ns) = netns.filter(|ns| netns::exists(ns)) {
        places.push(Some(ns));
    }
    places.push(None);
    for place in places {
        let rtnl = match place {
            Some(ns) => Rtnl::open_in(&netns::path(ns)),
            None => Rtnl::open(),
        };
        let found = rtnl.and_then(|mut r| r.link_by_name(ifname).map(|l| (r, l)));
        match found {
            Ok((mut rtnl, Some(link))) => {
                echo(&format!("{}link delete dev {ifname}", ip_prefix(place)));
                if let Err(e) = rtnl.delete_link(link.index) {
                    fail(rtnl_failure(e));
                }
                break;
            }
            Ok((_, None)) => {}
            Err(e) => fail(rtnl_failure(e)),
        }
    }
    wait_for_daemon_exit(ifname);

    // 3. DNS.
    let resolvconf = match state {
        Some(s) => s.resolvconf.clone(),
        None if netns.is_none() && !quick.dns_servers.is_empty() => Some(resolvconf_name(ifname)),
        None => None,
    };
    if let (Some(name), Some(program)) = (resolvconf, find_program("resolvconf")) {
        echo(&format!("resolvconf -d {name} -f"));
        // Failure ignored, as wg-quick ignores it.
        let _ = Command::new(program).args(["-d", &name, "-f"]).status();
    }
    if let Some(s) = state {
        if let Some(file) = &s.resolv_file {
            match &s.resolv_backup {
                Some(backup) => {
                    echo(&format!("mv {} {}", backup.display(), file.display()));
                    let _ = fs::rename(backup, file);
                }
                None => {
                    echo(&format!("rm {}", file.display()));
                    let _ = fs::remove_file(file);
                }
            }
        }
        if let Some(dir) = &s.resolv_dir_created {
            if fs::remove_dir(dir).is_ok() {
                echo(&format!("rmdir {}", dir.display()));
            }
        }
    }

    // 4. Firewall.
    if netns.is_none() {
        remove_firewall(ifname);
    }

    // 5. The namespace `up` created.
    if let (Some(s), Some(ns)) = (state, netns) {
        if s.netns_created && netns::exists(ns) {
            echo(&format!("ip netns delete {ns}"));
            if let Err(e) = netns::delete(ns) {
                fail(Failure::Prog(format!(
                    "cannot delete namespace `{ns}': {e}"
                )));
            }
        }
    }

    State::remove(ifname);
    ok
}

/// Removes the policy rules of fwmark table `table` for one family. With a record, exactly
/// what `up` added (its `not fwmark` rules and one `suppress_prefixlength 0` rule); without
/// one, wg-quick's loops (every rule of the table, every such suppressor).
fn delete_rules(rtnl: &mut Rtnl, family: Family, table: u32, exact: bool) -> Result<(), Failure> {
    let f = family.flag();
    loop {
        let rules = rtnl.rules(family).map_err(rtnl_failure)?;
        let found = rules.iter().find(|r| {
            if exact {
                r.is_fwmark_rule(table)
            } else {
                r.table == table
            }
        });
        let Some(rule) = found else { break };
        echo(&format!("ip {f} rule delete table {table}"));
        rtnl.delete_rule(rule).map_err(rtnl_failure)?;
    }
    let mut deleted = false;
    loop {
        if exact && deleted {
            break;
        }
        let rules = rtnl.rules(family).map_err(rtnl_failure)?;
        let Some(rule) = rules.iter().find(|r| r.is_suppress_main()) else {
            break;
        };
        echo(&format!(
            "ip {f} rule delete table main suppress_prefixlength 0"
        ));
        rtnl.delete_rule(rule).map_err(rtnl_failure)?;
        deleted = true;
    }
    Ok(())
}

/// After its link is deleted, ferrowgd (like wireguard-go) notices and exits, removing its
/// UAPI socket. Waits for that (up to 3 s), then removes a socket nobody answers on.
pub fn wait_for_daemon_exit(ifname: &str) {
    let socket = ferrowg_uapi::client::socket_path(ifname);
    for _ in 0..60 {
        if !socket.exists() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if std::os::unix::net::UnixStream::connect(&socket).is_err() {
        let _ = fs::remove_file(&socket);
    }
}

/// True if `ifname` is listed as a WireGuard interface (what `wg show interfaces` prints).
pub fn is_wireguard_interface(ifname: &str) -> bool {
    crate::ipc::list()
        .map(|names| names.iter().any(|n| n.as_slice() == ifname.as_bytes()))
        .unwrap_or(false)
}

/// A `Failure` for a failed file or process step: `WHAT: <strerror>`.
pub fn io_failure(what: &str, e: io::Error) -> Failure {
    Failure::Prog(format!("{what}: {}", crate::ipc::io_strerror(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(is_interface_name(b"wg0"));
        assert!(is_interface_name(b"a_b=c+d.e-f"));
        assert!(is_interface_name(b"123456789012345"));
        assert!(!is_interface_name(b"1234567890123456"));
        assert!(!is_interface_name(b""));
        assert!(!is_interface_name(b"wg/0"));
        assert!(!is_interface_name(b"wg 0"));
    }

    #[test]
    fn state_round_trips() {
        let state = State {
            netns: Some("vpn".into()),
            netns_created: true,
            table: Some(51820),
            rules_v4: true,
            rules_v6: false,
            firewall: true,
            resolvconf: Some("tun.wg0".into()),
            resolv_file: Some("/etc/netns/vpn/resolv.conf".into()),
            resolv_backup: None,
            resolv_dir_created: Some("/etc/netns/vpn".into()),
        };
        let parsed = State::parse(&state.text());
        assert_eq!(parsed, state);
    }

    #[test]
    fn firewall_scripts_are_wg_quicks() {
        let ips = ["198.51.100.1".parse().unwrap()];
        let nft = nft_script(Family::V4, "wg0", 51820, &ips);
        assert_eq!(
            nft,
            "add table ip wg-quick-wg0\n\
             add chain ip wg-quick-wg0 preraw { type filter hook prerouting priority -300; }\n\
             add chain ip wg-quick-wg0 premangle { type filter hook prerouting priority -150; }\n\
             add chain ip wg-quick-wg0 postmangle { type filter hook postrouting priority -150; }\n\
             add rule ip wg-quick-wg0 preraw iifname != \"wg0\" ip daddr 198.51.100.1 fib saddr type != local drop\n\
             add rule ip wg-quick-wg0 postmangle meta l4proto udp mark 51820 ct mark set mark \n\
             add rule ip wg-quick-wg0 premangle meta l4proto udp meta mark set ct mark \n"
        );
        let ipt = iptables_script("wg0", 51820, &ips);
        assert!(ipt.starts_with("*raw\n-I PREROUTING ! -i wg0 -d 198.51.100.1 -m addrtype"));
        assert!(ipt.ends_with(
            "--restore-mark -m comment --comment \"wg-quick(8) rule for wg0\"\nCOMMIT\n"
        ));
    }

    #[test]
    fn strip_keeps_what_wg_quick_passes_to_wg() {
        let file = "# top\n  [Interface]  \nAddress = 198.51.100.1/24\n\tPrivateKey = x \n\
                    PostUp = echo %i # kept\nDNS = 198.51.100.53, example.com\n\
                    [Peer]\nAddress = stays\nPublicKey = y\r\n[interface]\nmtu = 1400";
        let (quick, stripped) = config::parse_quick(file.as_bytes()).unwrap();
        assert_eq!(
            String::from_utf8(stripped.to_vec()).unwrap(),
            "# top\n[Interface]\nPrivateKey = x\n[Peer]\nAddress = stays\nPublicKey = y\r\n[interface]\n"
        );
        assert_eq!(quick.post_up, ["echo %i # kept"]);
        assert_eq!(quick.mtu, Some(1400));
        assert_eq!(
            resolv_conf_text(&quick),
            "nameserver 198.51.100.53\nsearch example.com\n"
        );
    }

    #[test]
    fn tables_resolve() {
        assert_eq!(resolve_table("main"), Some(254));
        assert_eq!(resolve_table("1234"), Some(1234));
        assert_eq!(resolve_table("0x10"), Some(16));
        assert_eq!(resolve_table("no-such-table-name"), None);
    }
}
