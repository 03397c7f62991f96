//! `ferrowgd [-f|--foreground] INTERFACE-NAME`: the WireGuard interface as a process, with
//! wireguard-go's command line and environment (`WG_PROCESS_FOREGROUND`, `LOG_LEVEL`,
//! `WG_TUN_FD`, `WG_UAPI_FD`), so anything built for wireguard-go runs it unchanged
//! (e.g. `WG_QUICK_USERSPACE_IMPLEMENTATION=ferrowgd wg-quick up wg0`).

use ferrowg_device::daemon::{run, Options};
use std::process::ExitCode;

fn usage(prog: &str) -> ExitCode {
    eprintln!("Usage: {prog} [-f/--foreground] INTERFACE-NAME");
    ExitCode::from(1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let prog = args.first().map(String::as_str).unwrap_or("ferrowgd");
    let (foreground_flag, ifname) = match args.len() {
        2 if args[1] == "--version" => {
            println!(
                "ferrowgd v{} - user-space WireGuard",
                env!("CARGO_PKG_VERSION")
            );
            return ExitCode::SUCCESS;
        }
        2 if !args[1].starts_with('-') => (false, args[1].clone()),
        3 if args[1] == "-f" || args[1] == "--foreground" => (true, args[2].clone()),
        _ => return usage(prog),
    };
    let foreground =
        foreground_flag || std::env::var("WG_PROCESS_FOREGROUND").as_deref() == Ok("1");
    ExitCode::from(run(Options { ifname, foreground }) as u8)
}
