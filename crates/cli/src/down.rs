//! `down [ CONFIG_FILE | INTERFACE ] [--netns NAME]`: wg-quick's `down` (PROTOCOL.md §9.5).
//!
//! PreDown; SaveConfig; then everything `up` did is undone — from its record
//! (`/run/ferrowg/IF.state`) when there is one, so rules, nft tables, DNS and a namespace it
//! created go even if the daemon crashed and took the interface with it; from wg-quick's own
//! inference otherwise (an interface `wg-quick up` made). PostDown last.
//!
//! Unlike wg-quick, a failing PreDown hook does not stop the teardown (it is reported, and the
//! exit status is 1): `down` is what a user runs to get the machine back.

use crate::quick::{self, State};
use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

pub fn down(prog: &OsStr, args: &[OsString]) -> ExitCode {
    let (inv, located) = match quick::prelude(prog, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let (settings, _) = match quick::load_quick(prog, &located) {
        Ok(q) => q,
        Err(code) => return code,
    };
    let ifname = located.ifname.clone();
    let state = State::load(&ifname);
    let netns = inv
        .netns
        .clone()
        .or_else(|| state.as_ref().and_then(|s| s.netns.clone()));
    let live = quick::is_wireguard_interface(&ifname);
    if !live && state.is_none() {
        return quick::die(prog, &format!("`{ifname}' is not a WireGuard interface"));
    }
    // Teardown is not to be cut short by a Ctrl-C; hooks still get the signal themselves.
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGHUP] {
        let _ = signal_hook::flag::register(signal, std::sync::Arc::new(Default::default()));
    }

    let mut ok = true;
    if let Err(f) = quick::run_hooks(&settings.pre_down, &ifname) {
        f.print(prog);
        ok = false;
    }
    if settings.save_config == Some(true) && live {
        if let Err(code) = crate::save::save_config(prog, &located, &settings, netns.as_deref()) {
            return code;
        }
    }
    ok &= quick::teardown(prog, &ifname, state.as_ref(), &settings, netns.as_deref());
    if let Err(f) = quick::run_hooks(&settings.post_down, &ifname) {
        f.print(prog);
        ok = false;
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
