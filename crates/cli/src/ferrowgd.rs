//! `ferrowgd [-f|--foreground] [--user NAME] INTERFACE-NAME`: the WireGuard interface as a
//! process, with wireguard-go's command line and environment (`WG_PROCESS_FOREGROUND`,
//! `LOG_LEVEL`, `WG_TUN_FD`, `WG_UAPI_FD`), so anything built for wireguard-go runs it
//! unchanged (e.g. `WG_QUICK_USERSPACE_IMPLEMENTATION=ferrowgd wg-quick up wg0`).
//! `--user NAME` (or `FERROWGD_USER=NAME`) drops root after set-up, keeping only
//! `CAP_NET_ADMIN` and `CAP_NET_BIND_SERVICE` (see `ferrowg_device::privilege`).

use ferrowg_device::daemon::{run, Options};

/// Freed memory is wiped: key copies inside dependencies (ring's expanded AEAD keys) and
/// transient strings do not linger in the heap.
#[global_allocator]
static ALLOC: ferrowg_device::wipe_alloc::Wiping<std::alloc::System> =
    ferrowg_device::wipe_alloc::WIPING_SYSTEM;
use std::process::ExitCode;

fn usage(prog: &str) -> ExitCode {
    eprintln!("Usage: {prog} [-f/--foreground] [--user NAME] INTERFACE-NAME");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prog = args.first().map(String::as_str).unwrap_or("ferrowgd");
    if args.len() == 2 && args[1] == "--version" {
        println!(
            "ferrowgd v{} - user-space WireGuard",
            env!("CARGO_PKG_VERSION")
        );
        return ExitCode::SUCCESS;
    }
    let mut foreground_flag = false;
    let mut user = None;
    let mut ifname = None;
    let mut rest = args.iter().skip(1);
    while let Some(a) = rest.next() {
        match a.as_str() {
            "-f" | "--foreground" if !foreground_flag => foreground_flag = true,
            "--user" if user.is_none() => match rest.next() {
                Some(u) if !u.is_empty() => user = Some(u.clone()),
                _ => return usage(prog),
            },
            _ if a.starts_with("--user=") && user.is_none() => {
                user = Some(a["--user=".len()..].to_string());
            }
            _ if !a.starts_with('-') && ifname.is_none() => ifname = Some(a.clone()),
            _ => return usage(prog),
        }
    }
    let Some(ifname) = ifname else {
        return usage(prog);
    };
    if let Some(u) = user {
        // The daemon reads it after set-up (see `privilege`); a daemonized child inherits it.
        std::env::set_var(ferrowg_device::privilege::USER_ENV, u);
    }
    let foreground =
        foreground_flag || std::env::var("WG_PROCESS_FOREGROUND").as_deref() == Ok("1");
    ExitCode::from(run(Options { ifname, foreground }) as u8)
}
