//! `demo`: a WireGuard tunnel on one machine in a few seconds, then gone.
//!
//! Two fresh network namespaces joined by a veth pair, a key pair for each side, ferrowgd in
//! each, configured over its UAPI socket; then a ping and a few MiB of TCP through the
//! tunnel, and `show` for both ends. Everything is held by guards that undo it when dropped —
//! after success, on any failure, and on Ctrl-C (SIGINT/SIGTERM/SIGHUP only raise a flag that
//! every step checks) — so the machine is left as it was found.

use crate::ipc;
use crate::netlink::Rtnl;
use crate::netns;
use crate::quick;
use crate::stdio::{print_bare_usage, print_out};
use ferrowg_proto::keys::PrivateKey;
use ferrowg_uapi::{AllowedIpChange, DeviceSet, PeerSet, SecretKey};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bytes moved over TCP through the tunnel.
const TRANSFER_BYTES: usize = 8 << 20;
const OUTER: [Ipv4Addr; 2] = [Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)];
const INNER_V4: [Ipv4Addr; 2] = [
    Ipv4Addr::new(198, 51, 100, 1),
    Ipv4Addr::new(198, 51, 100, 2),
];
const INNER_V6: [Ipv6Addr; 2] = [
    Ipv6Addr::new(0xfd00, 0xdead, 0xbeef, 0, 0, 0, 0, 1),
    Ipv6Addr::new(0xfd00, 0xdead, 0xbeef, 0, 0, 0, 0, 2),
];
const PORTS: [u16; 2] = [51820, 51821];

pub fn demo(prog: &OsStr, args: &[OsString]) -> ExitCode {
    if args.len() != 1 {
        print_bare_usage(prog, &args[0]);
        return ExitCode::FAILURE;
    }
    if !nix::unistd::geteuid().is_root() {
        return quick::die(
            prog,
            "`demo' must be run as root: it creates network namespaces, a veth pair and two \
             ferrowgd daemons (all removed at the end)",
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(signal, stop.clone());
    }
    let result = {
        let mut demo = Demo {
            daemons: Vec::new(),
            namespaces: Vec::new(),
            stop: stop.clone(),
        };
        let r = demo.run(prog);
        say("cleaning up: stopping the daemons, deleting the namespaces");
        drop(demo);
        r
    };
    match result {
        Ok(()) => {
            say("done: nothing is left behind");
            ExitCode::SUCCESS
        }
        Err(why) => {
            quick::die(prog, &format!("demo: {why} (everything was cleaned up)"));
            ExitCode::FAILURE
        }
    }
}

fn say(text: &str) {
    print_out(format!("{text}\n").as_bytes());
}

/// A namespace this demo created; deleted on drop.
struct NamespaceGuard {
    name: String,
}

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let _ = netns::delete(&self.name);
    }
}

/// A ferrowgd this demo started (in the foreground, as our child); stopped on drop, its
/// socket removed if it could not remove it itself.
struct DaemonGuard {
    child: Child,
    ifname: String,
}

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(3);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                let _ = self.child.kill();
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(ferrowg_uapi::client::socket_path(&self.ifname));
    }
}

/// Field order is drop order: daemons stop before their namespaces go.
struct Demo {
    daemons: Vec<DaemonGuard>,
    namespaces: Vec<NamespaceGuard>,
    stop: Arc<AtomicBool>,
}

struct Side {
    ns_path: PathBuf,
    ifname: String,
    key: PrivateKey,
}

fn io_text(what: &str, e: io::Error) -> String {
    format!("{what}: {}", ipc::io_strerror(&e))
}

impl Demo {
    fn check(&self) -> Result<(), String> {
        if self.stop.load(Ordering::SeqCst) {
            return Err("interrupted".into());
        }
        Ok(())
    }

    fn run(&mut self, prog: &OsStr) -> Result<(), String> {
        let started = Instant::now();
        let pid = std::process::id();
        let names = [
            format!("ferrowg-demo-{pid}-a"),
            format!("ferrowg-demo-{pid}-b"),
        ];
        say("ferrowg demo: two network namespaces, one WireGuard tunnel, all in user space");

        // 1. Namespaces and the wire between them.
        for name in &names {
            netns::create(name)
                .map_err(|e| io_text(&format!("cannot create namespace {name}"), e))?;
            self.namespaces.push(NamespaceGuard { name: name.clone() });
        }
        let paths = [netns::path(&names[0]), netns::path(&names[1])];
        let mut rtnl_a = Rtnl::open_in(&paths[0]).map_err(|e| io_text("netlink", e))?;
        let mut rtnl_b = Rtnl::open_in(&paths[1]).map_err(|e| io_text("netlink", e))?;
        let ns_b = File::open(&paths[1]).map_err(|e| io_text("namespace", e))?;
        rtnl_a
            .add_veth_pair("veth0", "veth0", ns_b.as_fd())
            .map_err(|e| io_text("cannot create the veth pair", e))?;
        for (i, rtnl) in [&mut rtnl_a, &mut rtnl_b].into_iter().enumerate() {
            for name in ["lo", "veth0"] {
                let link = rtnl
                    .link_by_name(name)
                    .map_err(|e| io_text("netlink", e))?
                    .ok_or_else(|| format!("{name} is missing"))?;
                if name == "veth0" {
                    rtnl.add_address(link.index, OUTER[i].into(), 24)
                        .map_err(|e| io_text("cannot add an address", e))?;
                }
                rtnl.set_link_up(link.index, None)
                    .map_err(|e| io_text("cannot set a link up", e))?;
            }
        }
        say(&format!(
            "[1/6] namespaces {} and {}, joined by a veth pair ({}/24 <-> {}/24)",
            names[0], names[1], OUTER[0], OUTER[1]
        ));
        self.check()?;

        // 2. Keys.
        let mut sides: Vec<Side> = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            sides.push(Side {
                ns_path: path.clone(),
                ifname: format!("fwdemo{pid}{}", ['a', 'b'][i]),
                key: PrivateKey::generate(&mut rand_core::OsRng),
            });
        }
        say(&format!(
            "[2/6] keys: side a {}, side b {} (public)",
            sides[0].key.public_key().to_base64(),
            sides[1].key.public_key().to_base64()
        ));
        self.check()?;

        // 3. The daemons, configured over UAPI, and the tunnel interfaces.
        let daemon = crate::up::daemon_program();
        for side in &sides {
            self.start_daemon(&daemon, side)?;
        }
        for (i, side) in sides.iter().enumerate() {
            let other = &sides[1 - i];
            let mut peer = PeerSet::new(*other.key.public_key().as_bytes());
            peer.endpoint = Some(SocketAddr::new(OUTER[1 - i].into(), PORTS[1 - i]));
            peer.replace_allowed_ips = true;
            peer.allowed_ips = vec![
                AllowedIpChange {
                    ip: INNER_V4[1 - i].into(),
                    cidr: 32,
                    remove: false,
                },
                AllowedIpChange {
                    ip: INNER_V6[1 - i].into(),
                    cidr: 128,
                    remove: false,
                },
            ];
            let request = DeviceSet {
                private_key: Some(SecretKey::from(&side.key)),
                listen_port: Some(PORTS[i]),
                fwmark: None,
                replace_peers: true,
                peers: vec![peer],
            };
            ipc::set(OsStr::new(&side.ifname), &request)
                .map_err(|e| format!("cannot configure {}: {e}", side.ifname))?;
            let rtnl = if i == 0 { &mut rtnl_a } else { &mut rtnl_b };
            let link = rtnl
                .link_by_name(&side.ifname)
                .map_err(|e| io_text("netlink", e))?
                .ok_or_else(|| format!("{} is missing", side.ifname))?;
            rtnl.add_address(link.index, INNER_V4[i].into(), 24)
                .map_err(|e| io_text("cannot add an address", e))?;
            rtnl.add_address(link.index, INNER_V6[i].into(), 64)
                .map_err(|e| io_text("cannot add an address", e))?;
            rtnl.set_link_up(link.index, Some(1420))
                .map_err(|e| io_text("cannot set a link up", e))?;
        }
        say(&format!(
            "[3/6] ferrowgd running in each namespace: {} ({}, {}) and {} ({}, {})",
            sides[0].ifname, INNER_V4[0], INNER_V6[0], sides[1].ifname, INNER_V4[1], INNER_V6[1]
        ));
        self.check()?;

        // 4. Ping.
        self.ping(&sides[0], INNER_V4[1].into())?;
        self.check()?;

        // 5. TCP through the tunnel.
        self.transfer(&sides[0], &sides[1], INNER_V6[1].into())?;
        self.check()?;

        // 6. What `show` says about both ends.
        say("[6/6] show for both ends:\n");
        for (i, side) in sides.iter().enumerate() {
            crate::show::show(prog, &["show".into(), side.ifname.clone().into()]);
            if i == 0 {
                say("");
            }
        }
        say(&format!(
            "\n(took {:.1} s)",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    fn start_daemon(&mut self, program: &std::path::Path, side: &Side) -> Result<(), String> {
        let capture = quick::stderr_capture();
        let mut cmd = Command::new(program);
        cmd.args(["-f", &side.ifname])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .env_remove("WG_TUN_FD")
            .env_remove("WG_UAPI_FD");
        match capture.as_ref().and_then(|f| f.try_clone().ok()) {
            Some(file) => cmd.stderr(file),
            None => cmd.stderr(Stdio::null()),
        };
        let child = netns::spawn_in(&side.ns_path, cmd)
            .map_err(|e| io_text(&format!("cannot start {}", program.display()), e))?;
        self.daemons.push(DaemonGuard {
            child,
            ifname: side.ifname.clone(),
        });
        let guard = self.daemons.last_mut().expect("just pushed");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if ipc::get(OsStr::new(&side.ifname)).is_ok() {
                return Ok(());
            }
            let exited = guard.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline || self.stop.load(Ordering::SeqCst) {
                let said = capture
                    .as_ref()
                    .map(quick::captured_text)
                    .unwrap_or_default();
                return Err(format!(
                    "{} {} did not start{}{}",
                    program.display(),
                    side.ifname,
                    exited.map(|s| format!(" ({s})")).unwrap_or_default(),
                    if said.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", String::from_utf8_lossy(&said).trim_end())
                    }
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Three pings through the tunnel (the first one also triggers the handshake).
    fn ping(&self, from: &Side, to: IpAddr) -> Result<(), String> {
        let Some(ping) = quick::find_program("ping") else {
            say("[4/6] ping: not installed, skipped (the TCP transfer below still proves the tunnel)");
            return Ok(());
        };
        let mut cmd = Command::new(ping);
        cmd.args([
            "-n",
            "-q",
            "-c",
            "3",
            "-i",
            "0.2",
            "-w",
            "5",
            &to.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let child =
            netns::spawn_in(&from.ns_path, cmd).map_err(|e| io_text("cannot run ping", e))?;
        let out = child.wait_with_output().map_err(|e| io_text("ping", e))?;
        self.check()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let summary: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("transmitted") || l.starts_with("rtt"))
            .collect();
        if !out.status.success() {
            return Err(format!(
                "ping {to} through the tunnel failed: {}{}",
                summary.join("; "),
                String::from_utf8_lossy(&out.stderr).trim_end()
            ));
        }
        say(&format!(
            "[4/6] ping {to} through the tunnel: {}",
            summary.join("; ")
        ));
        Ok(())
    }

    /// [`TRANSFER_BYTES`] of pseudo-random data from `from` to `to` over TCP, every byte
    /// checked by the receiver.
    fn transfer(&self, from: &Side, to: &Side, address: IpAddr) -> Result<(), String> {
        let listener = netns::run_in(&to.ns_path, move || TcpListener::bind((address, 0)))
            .and_then(|r| r)
            .map_err(|e| io_text("cannot listen", e))?;
        let target = listener.local_addr().map_err(|e| io_text("listen", e))?;
        let stop = self.stop.clone();
        let receiver = std::thread::spawn(move || -> io::Result<u64> {
            listener.set_nonblocking(true)?;
            let deadline = Instant::now() + Duration::from_secs(10);
            let (mut conn, _) = loop {
                match listener.accept() {
                    Ok(c) => break c,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if stop.load(Ordering::SeqCst) || Instant::now() > deadline {
                            return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection"));
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e),
                }
            };
            conn.set_nonblocking(false)?;
            conn.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut expected = Stream::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut check = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            loop {
                if stop.load(Ordering::SeqCst) {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
                }
                let n = conn.read(&mut buf)?;
                if n == 0 {
                    return Ok(total);
                }
                expected.fill(&mut check[..n]);
                if buf[..n] != check[..n] {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("corrupted data after {total} bytes"),
                    ));
                }
                total += n as u64;
            }
        });

        let started = Instant::now();
        let sent = (|| -> io::Result<()> {
            let mut conn = netns::run_in(&from.ns_path, move || {
                TcpStream::connect_timeout(&target, Duration::from_secs(5))
            })??;
            conn.set_write_timeout(Some(Duration::from_secs(5)))?;
            let mut data = Stream::new();
            let mut buf = vec![0u8; 64 * 1024];
            let mut left = TRANSFER_BYTES;
            while left > 0 {
                if self.stop.load(Ordering::SeqCst) {
                    return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
                }
                let n = left.min(buf.len());
                data.fill(&mut buf[..n]);
                conn.write_all(&buf[..n])?;
                left -= n;
            }
            conn.shutdown(std::net::Shutdown::Write)
        })();
        let received = receiver
            .join()
            .map_err(|_| "the receiving thread panicked".to_string())?;
        let elapsed = started.elapsed().as_secs_f64();
        self.check()?;
        sent.map_err(|e| io_text("sending", e))?;
        let received = received.map_err(|e| io_text("receiving", e))?;
        if received != TRANSFER_BYTES as u64 {
            return Err(format!(
                "{received} bytes arrived instead of {TRANSFER_BYTES}"
            ));
        }
        say(&format!(
            "[5/6] {} MiB over TCP through the tunnel, {} -> {}: {:.2} s, {:.0} Mbit/s, every byte checked",
            TRANSFER_BYTES >> 20,
            from.ifname,
            target,
            elapsed,
            TRANSFER_BYTES as f64 * 8.0 / elapsed / 1e6
        ));
        Ok(())
    }
}

/// A deterministic byte stream (xorshift64*), regenerated by the receiver to check the data;
/// continuous across calls of any length.
struct Stream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl Stream {
    fn new() -> Stream {
        Stream {
            state: 0x9e37_79b9_7f4a_7c15,
            word: [0; 8],
            used: 8,
        }
    }
    fn fill(&mut self, out: &mut [u8]) {
        for byte in out {
            if self.used == 8 {
                self.state ^= self.state >> 12;
                self.state ^= self.state << 25;
                self.state ^= self.state >> 27;
                self.word = self.state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
                self.used = 0;
            }
            *byte = self.word[self.used];
            self.used += 1;
        }
    }
}
