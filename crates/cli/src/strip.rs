//! `strip [ CONFIG_FILE | INTERFACE ]`: the configuration file without wg-quick's own keys,
//! exactly as `wg-quick strip` prints it — for `ferrowg syncconf IF <(ferrowg strip IF)`.
//!
//! Unlike wg-quick it does not insist on root: reading the file is the only privilege needed.

use crate::quick;
use crate::stdio::print_out;
use std::ffi::{OsStr, OsString};
use std::process::ExitCode;

pub fn strip(prog: &OsStr, args: &[OsString]) -> ExitCode {
    let inv = match quick::parse_args(prog, args, false) {
        Ok(inv) => inv,
        Err(code) => return code,
    };
    let located = match quick::locate(prog, &inv.target) {
        Ok(l) => l,
        Err(code) => return code,
    };
    match quick::load_quick(prog, &located) {
        Ok((_, mut text)) => {
            // `echo "$WG_CONFIG"`: the kept lines and one more newline.
            text.push(b'\n');
            print_out(&text);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}
