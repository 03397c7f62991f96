//! `ferrowg-device`: the data plane and daemon around the sans-IO `ferrowg-proto` engine —
//! TUN and UDP I/O, the UAPI server, and the process contract of wireguard-go.
//!
//! Unsafe code lives only in the thin OS wrappers (`tun`, `sys`, and descriptor adoption in
//! `daemon`), each block with a `SAFETY:` comment.

pub mod apply;
pub mod daemon;
pub mod gro;
pub mod icmp;
pub mod log;
pub mod pipeline;
pub mod privilege;
pub mod sys;
pub mod tun;
pub mod tun_io;
pub mod udp;
pub mod udp_io;
pub mod wipe_alloc;
pub mod workers;

/// Whether an off switch such as `FERROWG_NO_TUN_OFFLOAD` is set: any value but the empty
/// string (which the tests use to mean "unset, whatever the environment says").
pub(crate) fn switched_off(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}
