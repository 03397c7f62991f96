//! `ferrowg`: the command-line tool, compatible with `wg` (and later `wg-quick`).
//!
//! Every message is meant to be byte-for-byte what `wg` prints, with `argv[0]` used verbatim as
//! the program name, so scripts written against `wg` keep working unchanged. Each subcommand
//! lives in its own file and is reached through the single [`SUBCOMMANDS`] table, which also
//! produces the usage text.
#![forbid(unsafe_code)]

/// Freed memory is wiped, as in ferrowgd: keys read from files and configs do not linger.
#[global_allocator]
static ALLOC: ferrowg_device::wipe_alloc::Wiping<std::alloc::System> =
    ferrowg_device::wipe_alloc::WIPING_SYSTEM;

mod config;
mod demo;
mod down;
mod genkey;
mod ipc;
mod netlink;
mod netns;
mod pubkey;
mod quick;
mod reresolve;
mod save;
mod set;
mod setconf;
mod show;
mod showconf;
mod stdio;
mod strip;
mod terminal;
mod up;
mod wipe;

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use stdio::{print_err, print_out};

/// What a subcommand receives: the program name (`argv[0]` as invoked, for messages) and its
/// arguments starting with the subcommand name itself (usage messages repeat it as typed).
type SubcommandFn = fn(prog: &OsStr, args: &[OsString]) -> ExitCode;

struct Subcommand {
    name: &'static str,
    run: SubcommandFn,
    description: &'static str,
}

/// In `wg`'s order. New subcommands (show, showconf, set, setconf, addconf, syncconf before
/// genkey; up, down, demo after pubkey) are added here and nowhere else.
const SUBCOMMANDS: &[Subcommand] = &[
    Subcommand {
        name: "show",
        run: show::show,
        description: "Shows the current configuration and device information",
    },
    Subcommand {
        name: "showconf",
        run: showconf::showconf,
        description:
            "Shows the current configuration of a given WireGuard interface, for use with `setconf'",
    },
    Subcommand {
        name: "set",
        run: set::set,
        description: "Change the current configuration, add peers, remove peers, or change peers",
    },
    Subcommand {
        name: "setconf",
        run: setconf::setconf,
        description: "Applies a configuration file to a WireGuard interface",
    },
    Subcommand {
        name: "addconf",
        run: setconf::addconf,
        description: "Appends a configuration file to a WireGuard interface",
    },
    Subcommand {
        name: "syncconf",
        run: setconf::syncconf,
        description: "Synchronizes a configuration file to a WireGuard interface",
    },
    Subcommand {
        name: "genkey",
        run: genkey::genkey,
        description: "Generates a new private key and writes it to stdout",
    },
    Subcommand {
        name: "genpsk",
        run: genkey::genpsk,
        description: "Generates a new preshared key and writes it to stdout",
    },
    Subcommand {
        name: "pubkey",
        run: pubkey::pubkey,
        description: "Reads a private key from stdin and writes a public key to stdout",
    },
    Subcommand {
        name: "up",
        run: up::up,
        description: "Brings up an interface from a wg-quick configuration file, with ferrowgd",
    },
    Subcommand {
        name: "down",
        run: down::down,
        description: "Takes down an interface brought up with `up', undoing all it set up",
    },
    Subcommand {
        name: "save",
        run: save::save,
        description: "Saves an interface's running configuration into its wg-quick file",
    },
    Subcommand {
        name: "strip",
        run: strip::strip,
        description:
            "Prints a wg-quick configuration file without its wg-quick keys, for `setconf'",
    },
    Subcommand {
        name: "reresolve",
        run: reresolve::reresolve,
        description: "Re-resolves the endpoint names of a configuration file for stale peers",
    },
    Subcommand {
        name: "demo",
        run: demo::demo,
        description: "Runs a tunnel between two throw-away network namespaces (as root)",
    },
];

const VERSION_LINE: &str = concat!(
    "ferrowg v",
    env!("CARGO_PKG_VERSION"),
    " - user-space WireGuard (wg-compatible)\n"
);

fn usage(prog: &OsStr) -> Vec<u8> {
    let mut text = b"Usage: ".to_vec();
    text.extend_from_slice(prog.as_bytes());
    text.extend_from_slice(b" <cmd> [<args>]\n\nAvailable subcommands:\n");
    for sub in SUBCOMMANDS {
        text.extend_from_slice(format!("  {}: {}\n", sub.name, sub.description).as_bytes());
    }
    text.extend_from_slice(b"You may pass `--help' to any of these subcommands to view usage.\n");
    text
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // An empty argv is possible with execve(); a name is still needed for messages.
    let prog: OsString = args
        .first()
        .cloned()
        .unwrap_or_else(|| OsString::from("ferrowg"));
    let rest = args.get(1..).unwrap_or(&[]);

    // `wg` honours version/help only as the sole argument; `wg help genkey` is an invalid
    // subcommand, so the same is done here.
    if rest.len() == 1 {
        match rest[0].as_bytes() {
            b"-v" | b"--version" | b"version" => {
                print_out(VERSION_LINE.as_bytes());
                return ExitCode::SUCCESS;
            }
            b"-h" | b"--help" | b"help" => {
                print_out(&usage(&prog));
                return ExitCode::SUCCESS;
            }
            _ => {}
        }
    }

    let Some(name) = rest.first() else {
        // With no arguments `wg` runs `show` for all interfaces, as if invoked as `show`.
        return show::show(&prog, &[OsString::from("show")]);
    };

    match SUBCOMMANDS
        .iter()
        .find(|s| name.as_bytes() == s.name.as_bytes())
    {
        Some(sub) => (sub.run)(&prog, rest),
        None => {
            let mut msg = b"Invalid subcommand: `".to_vec();
            msg.extend_from_slice(name.as_bytes());
            msg.extend_from_slice(b"'\n");
            msg.extend_from_slice(&usage(&prog));
            print_err(&msg);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_lists_every_subcommand_once_in_table_order() {
        let text = String::from_utf8(usage(OsStr::new("PROG"))).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .map(|l| l.split(':').next().unwrap())
            .collect();
        let expected: Vec<&str> = SUBCOMMANDS.iter().map(|s| s.name).collect();
        assert_eq!(names, expected);
        assert!(text.starts_with("Usage: PROG <cmd> [<args>]\n\nAvailable subcommands:\n"));
    }
}
