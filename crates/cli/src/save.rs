//! `save [ CONFIG_FILE | INTERFACE ] [--netns NAME]`: the running interface written back to
//! its wg-quick file (PROTOCOL.md §9.6), also what `SaveConfig = true` does on `down`.
//!
//! A new `[Interface]` head — the link's addresses, the DNS servers registered for it (search
//! domains are not kept, as in wg-quick), MTU and Table if the file had them, SaveConfig, the
//! hooks — replaces the first `[Interface]` line of `showconf`; the result goes to
//! `FILE.tmp` (mode 0600), is synced, and renamed over the file.

use crate::config::QuickSettings;
use crate::ipc;
use crate::netlink::Rtnl;
use crate::netns;
use crate::quick::{self, echo, rtnl_failure, Failure, Located, State};
use crate::show::format_ip;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::process::{Command, ExitCode, Stdio};

pub fn save(prog: &OsStr, args: &[OsString]) -> ExitCode {
    let (inv, located) = match quick::prelude(prog, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (settings, _) = match quick::load_quick(prog, &located) {
        Ok(q) => q,
        Err(code) => return code,
    };
    if !quick::is_wireguard_interface(&located.ifname) {
        return quick::die(
            prog,
            &format!("`{}' is not a WireGuard interface", located.ifname),
        );
    }
    let netns = inv
        .netns
        .or_else(|| State::load(&located.ifname).and_then(|s| s.netns));
    match save_config(prog, &located, &settings, netns.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// Writes the running configuration of `located.ifname` into `located.path`.
pub fn save_config(
    prog: &OsStr,
    located: &Located,
    settings: &QuickSettings,
    netns: Option<&str>,
) -> Result<(), ExitCode> {
    build_and_write(prog, located, settings, netns).map_err(|f| {
        f.print(prog);
        ExitCode::FAILURE
    })
}

fn build_and_write(
    prog: &OsStr,
    located: &Located,
    settings: &QuickSettings,
    netns: Option<&str>,
) -> Result<(), Failure> {
    let ifname = &located.ifname;
    let mut rtnl = match netns {
        Some(ns) => Rtnl::open_in(&netns::path(ns)),
        None => Rtnl::open(),
    }
    .map_err(rtnl_failure)?;
    let link = rtnl.link_by_name(ifname).map_err(rtnl_failure)?;

    let mut head = String::from("[Interface]\n");
    if let Some(link) = &link {
        for (ip, prefix) in rtnl.addresses(link.index, None).map_err(rtnl_failure)? {
            head += &format!("Address = {}/{prefix}\n", format_ip(&ip));
        }
    }
    for server in registered_dns(ifname, netns) {
        head += &format!("DNS = {server}\n");
    }
    if settings.mtu.is_some() {
        if let Some(mtu) = link.as_ref().and_then(|l| l.mtu) {
            head += &format!("MTU = {mtu}\n");
        }
    }
    if let Some(table) = &settings.table {
        head += &format!("Table = {}\n", quick::table_text(table));
    }
    if settings.save_config == Some(true) {
        head += "SaveConfig = true\n";
    }
    for (key, hooks) in [
        ("PreUp", &settings.pre_up),
        ("PostUp", &settings.post_up),
        ("PreDown", &settings.pre_down),
        ("PostDown", &settings.post_down),
    ] {
        for hook in hooks {
            head += &format!("{key} = {hook}\n");
        }
    }

    echo(&format!("{} showconf {ifname}", prog.to_string_lossy()));
    let info = ipc::get(OsStr::new(ifname))
        .map_err(|e| Failure::Bare(format!("Unable to access interface: {e}")))?;
    let current = crate::showconf::render(&info);
    // `echo "${current_config/\[Interface\]$'\n'/$new_config}"` with current_config from
    // `$(…)`, which drops trailing newlines. The text holds the keys: it is assembled in one
    // allocation of the final size (`replacen` would grow and leave stale copies) and wiped.
    let mut text = zeroize::Zeroizing::new(String::with_capacity(current.len() + head.len() + 1));
    match current.find("[Interface]\n") {
        Some(at) => {
            text.push_str(&current[..at]);
            text.push_str(&head);
            text.push_str(&current[at + "[Interface]\n".len()..]);
        }
        None => text.push_str(&current),
    }
    while text.ends_with('\n') {
        text.pop();
    }
    text.push('\n');

    let tmp = {
        let mut name = located.path.as_os_str().to_os_string();
        name.push(".tmp");
        std::path::PathBuf::from(name)
    };
    if quick::write_private_file(&tmp, text.as_bytes()).is_err() {
        let _ = fs::remove_file(&tmp);
        return Err(Failure::Prog("Could not write configuration file".into()));
    }
    if fs::rename(&tmp, &located.path).is_err() {
        let _ = fs::remove_file(&tmp);
        return Err(Failure::Prog("Could not move configuration file".into()));
    }
    Ok(())
}

/// `nameserver` entries registered for the interface: `resolvconf -l NAME` (else resolvconf's
/// run file), or the namespace's resolv.conf.
fn registered_dns(ifname: &str, netns: Option<&str>) -> Vec<String> {
    let text = match netns {
        Some(ns) => fs::read_to_string(quick::netns_resolv_conf(ns)).unwrap_or_default(),
        None => {
            let name = quick::resolvconf_name(ifname);
            let listed = quick::find_program("resolvconf").and_then(|p| {
                Command::new(p)
                    .args(["-l", &name])
                    .stderr(Stdio::null())
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            });
            listed.unwrap_or_else(|| {
                fs::read_to_string(format!("/etc/resolvconf/run/interface/{name}"))
                    .unwrap_or_default()
            })
        }
    };
    text.lines()
        .filter_map(|line| {
            line.trim_matches(|c| c == ' ' || c == '\t')
                .strip_prefix("nameserver ")
        })
        .filter(|v| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_=+:%.-".contains(&b))
        })
        .map(str::to_owned)
        .collect()
}
