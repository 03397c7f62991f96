//! Logging in wireguard-go's shape (`LOG_LEVEL` = `silent`, `error`, `verbose`/`debug`), with
//! peers named by a shortened public key and never a secret.

use ferrowg_proto::keys::PublicKey;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Silent,
    Error,
    Verbose,
}

impl Level {
    pub fn from_env() -> Level {
        match std::env::var("LOG_LEVEL").as_deref() {
            Ok("verbose") | Ok("debug") => Level::Verbose,
            Ok("silent") => Level::Silent,
            _ => Level::Error,
        }
    }
}

#[derive(Clone)]
pub struct Logger {
    pub level: Level,
    pub ifname: String,
}

/// `peer(AbCd…WxYz)`: enough to tell peers apart in a log without printing whole keys.
pub fn peer_name(key: &PublicKey) -> String {
    let b = key.to_base64();
    format!("peer({}…{})", &b[..4], &b[39..43])
}

fn timestamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = ((secs / 86400) as i64, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}/{m:02}/{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl Logger {
    pub fn verbose(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Verbose {
            eprintln!("DEBUG: ({}) {} {}", self.ifname, timestamp(), msg.as_ref());
        }
    }
    pub fn error(&self, msg: impl AsRef<str>) {
        if self.level >= Level::Error {
            eprintln!("ERROR: ({}) {} {}", self.ifname, timestamp(), msg.as_ref());
        }
    }
    pub fn enabled(&self, level: Level) -> bool {
        self.level >= level
    }
}
