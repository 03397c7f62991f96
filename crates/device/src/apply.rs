//! The UAPI model meets the engine: a parsed `set` applied to the device, and a `get` reply
//! built from it. Everything that can fail (binding a new port) happens before anything
//! changes, so a failed `set` leaves the device as it was.

use crate::udp::UdpSockets;
use ferrowg_proto::device::Device;
use ferrowg_proto::keys::PublicKey;
use ferrowg_uapi::{errno, DeviceInfo, DeviceSet, UapiError};
use std::time::Instant;

/// The part of the daemon state a configuration change touches.
pub struct Engine {
    pub dev: Device,
    pub sockets: Option<UdpSockets>,
    /// The configured port (0 = random; the bound port is in `sockets`).
    pub listen_port: u16,
    pub fwmark: u32,
    /// Bumped whenever the sockets are replaced, so reader threads of old sockets retire.
    pub socket_generation: u64,
}

/// What a successful `set` changed that the caller must act on.
#[derive(Default)]
pub struct Applied {
    /// New sockets were bound: start readers for them (the old ones were closed).
    pub new_sockets: bool,
}

pub fn apply_set(engine: &mut Engine, set: &DeviceSet, now: Instant) -> Result<Applied, UapiError> {
    let mut applied = Applied::default();
    let new_mark = set.fwmark.unwrap_or(engine.fwmark);
    // Rebind first: it is the only step that can fail, and it must fail before any change.
    let mut new_sockets = None;
    if let Some(port) = set.listen_port {
        let bound = engine.sockets.as_ref().map(|s| s.port);
        if port != engine.listen_port || bound.is_none() || (port != 0 && bound != Some(port)) {
            match UdpSockets::bind(port, new_mark) {
                Ok(s) => new_sockets = Some((port, s)),
                Err(e) => {
                    return Err(UapiError::new(
                        errno::EADDRINUSE,
                        Some("listen_port"),
                        format!("cannot bind port {port}: {e}"),
                    ))
                }
            }
        }
    }
    if set.fwmark.is_some() && new_mark != engine.fwmark && new_sockets.is_none() {
        if let Some(s) = &engine.sockets {
            s.set_fwmark(new_mark).map_err(|e| {
                UapiError::new(
                    errno::EADDRINUSE,
                    Some("fwmark"),
                    format!("cannot set fwmark: {e}"),
                )
            })?;
        }
    }
    if set.fwmark.is_some() && new_mark != engine.fwmark {
        engine.fwmark = new_mark;
        engine.dev.clear_endpoint_sources();
    }
    if let Some((port, sockets)) = new_sockets {
        if let Some(old) = engine.sockets.replace(sockets) {
            old.close();
        }
        engine.listen_port = port;
        engine.socket_generation += 1;
        engine.dev.clear_endpoint_sources();
        applied.new_sockets = true;
    }
    if set.replace_peers {
        engine.dev.remove_all_peers();
    }
    if let Some(key) = &set.private_key {
        // All zeros means "remove the key"; test before clamping, which would make it non-zero.
        let key = (!key.is_zero()).then(|| key.to_private_key());
        engine.dev.set_private_key(key);
    }
    for p in &set.peers {
        let public = PublicKey(p.public_key);
        // A peer with our own key is ignored, as the kernel and wireguard-go do.
        if engine.dev.public_key() == Some(&public) {
            continue;
        }
        let existing = engine.dev.peer_id(&public);
        if p.remove {
            if let Some(id) = existing {
                engine.dev.remove_peer(id);
            }
            continue;
        }
        if p.update_only && existing.is_none() {
            continue;
        }
        let id = match existing {
            Some(id) => id,
            None => match engine.dev.add_peer(public) {
                Ok(id) => id,
                Err(_) => continue,
            },
        };
        if let Some(psk) = &p.preshared_key {
            let _ = engine.dev.set_preshared_key(id, psk.to_preshared_key());
        }
        if let Some(ep) = p.endpoint {
            let _ = engine.dev.set_endpoint(id, ep);
        }
        if p.replace_allowed_ips {
            engine.dev.clear_allowed_ips(id);
        }
        for change in &p.allowed_ips {
            if change.remove {
                engine.dev.remove_allowed_ip(id, change.ip, change.cidr);
            } else {
                // The parser checked the prefix length; nothing else can fail here.
                let _ = engine.dev.add_allowed_ip(id, change.ip, change.cidr);
            }
        }
        if let Some(interval) = p.persistent_keepalive_interval {
            let _ = engine.dev.set_persistent_keepalive(now, id, interval);
        }
    }
    Ok(applied)
}

pub fn device_info(engine: &Engine) -> DeviceInfo {
    let listen_port = engine
        .sockets
        .as_ref()
        .map_or(engine.listen_port, |s| s.port);
    DeviceInfo::from_device(&engine.dev, listen_port, engine.fwmark)
}
