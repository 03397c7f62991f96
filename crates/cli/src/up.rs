//! `up [ CONFIG_FILE | INTERFACE ] [--netns NAME]`: wg-quick's `up` (PROTOCOL.md §9.3–9.4)
//! with ferrowgd as the interface.
//!
//! Order of operations, as wg-quick v1.0.20260223: refuse an existing interface; start the
//! daemon; PreUp; `addconf` of the stripped file; addresses; MTU and link up; DNS; a route per
//! allowed IP (longest prefix first), `/0` through the fwmark table with its rules and
//! firewall; PostUp. Any failure (or SIGINT/SIGTERM/SIGHUP between steps) undoes everything
//! done so far, as wg-quick's trap does, and exits 1.
//!
//! With `--netns NAME` the interface is born here (its UDP sockets stay here) and moved into
//! NAME before it gets addresses; routes there are plain (a `/0` is a default route, no fwmark
//! table), and DNS goes to `/etc/netns/NAME/resolv.conf`.

use crate::config::{Config, Table};
use crate::ipc;
use crate::netlink::{self, Family, Rtnl, RT_TABLE_MAIN};
use crate::netns;
use crate::quick::{self, echo, ip_prefix, rtnl_failure, Failure, Located, State};
use crate::show::format_ip;
use ferrowg_uapi::DeviceSet;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn up(prog: &OsStr, args: &[OsString]) -> ExitCode {
    let (inv, located) = match quick::prelude(prog, args) {
        Ok(v) => v,
        Err(code) => return code,
    };
    let config = match quick::load_full(prog, &located) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    for signal in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        let _ = signal_hook::flag::register(signal, interrupted.clone());
    }
    let mut up = Up {
        prog,
        located,
        config,
        netns: inv.netns,
        state: State::default(),
        changed: false,
        interrupted,
        fwmark_table: None,
    };
    match up.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            failure.print(prog);
            if up.changed {
                quick::teardown(
                    prog,
                    &up.located.ifname,
                    Some(&up.state),
                    &up.config.interface.quick,
                    up.netns.as_deref(),
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// The daemon to start: `$FERROWG_DAEMON`, else `ferrowgd` next to this executable, else
/// `ferrowgd` on `PATH`.
pub fn daemon_program() -> PathBuf {
    if let Some(p) = std::env::var_os("FERROWG_DAEMON").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("ferrowgd");
        if quick::is_executable(&sibling) {
            return sibling;
        }
    }
    quick::find_program("ferrowgd").unwrap_or_else(|| PathBuf::from("ferrowgd"))
}

struct Up<'a> {
    prog: &'a OsStr,
    located: Located,
    config: Config,
    netns: Option<String>,
    state: State,
    /// Something was changed, so a failure must undo.
    changed: bool,
    interrupted: Arc<AtomicBool>,
    /// The fwmark table once the first `/0` chose it.
    fwmark_table: Option<u32>,
}

/// Where the link lives now: a socket in that namespace and the link's index there.
struct Target {
    rtnl: Rtnl,
    index: u32,
}

impl Up<'_> {
    fn ifname(&self) -> &str {
        &self.located.ifname
    }

    fn store(&self) -> Result<(), Failure> {
        self.state.store(self.ifname()).map_err(|e| {
            quick::io_failure(
                &format!("cannot write {}", State::path(self.ifname()).display()),
                e,
            )
        })
    }

    fn check_interrupt(&self) -> Result<(), Failure> {
        if self.interrupted.load(Ordering::SeqCst) {
            return Err(Failure::Prog("interrupted".into()));
        }
        Ok(())
    }

    fn ip(&self) -> String {
        ip_prefix(self.netns.as_deref())
    }

    fn run(&mut self) -> Result<(), Failure> {
        let ifname = self.ifname().to_owned();
        let mut main = Rtnl::open().map_err(rtnl_failure)?;

        // Nothing is changed until these checks pass.
        let already = || Failure::Prog(format!("`{ifname}' already exists"));
        if main.link_by_name(&ifname).map_err(rtnl_failure)?.is_some() {
            return Err(already());
        }
        if let Some(ns) = &self.netns {
            if netns::exists(ns) {
                let mut inner = Rtnl::open_in(&netns::path(ns)).map_err(rtnl_failure)?;
                if inner.link_by_name(&ifname).map_err(rtnl_failure)?.is_some() {
                    return Err(already());
                }
            }
        }
        // A daemon still answering for the name (its interface possibly in another
        // namespace) means the same: it is up.
        if ipc::get(OsStr::new(&ifname)).is_ok() {
            return Err(already());
        }
        let route_table = self.route_table()?;
        if let Some(old) = State::load(&ifname) {
            crate::stdio::print_err(
                format!("[!] Undoing what an earlier `up' of `{ifname}' left behind\n").as_bytes(),
            );
            quick::teardown(self.prog, &ifname, Some(&old), &Default::default(), None);
        }
        self.check_interrupt()?;

        self.changed = true;
        self.store()?;
        self.start_daemon()?;
        let index = main
            .link_by_name(&ifname)
            .map_err(rtnl_failure)?
            .ok_or_else(|| Failure::Prog(format!("the daemon did not create `{ifname}'")))?
            .index;
        self.check_interrupt()?;

        quick::run_hooks(&self.config.interface.quick.pre_up, &ifname)?;
        self.check_interrupt()?;

        echo(&format!(
            "{prog} addconf {ifname} <({prog} strip {path})",
            prog = self.prog.to_string_lossy(),
            path = self.located.path.display()
        ));
        ipc::set(OsStr::new(&ifname), &self.config.device_set(false))
            .map_err(|e| Failure::Bare(format!("Unable to modify interface: {e}")))?;
        self.check_interrupt()?;

        let mut target = match self.netns.clone() {
            Some(ns) => self.move_to_netns(&mut main, index, &ns)?,
            None => Target {
                rtnl: Rtnl::open().map_err(rtnl_failure)?,
                index,
            },
        };

        for (ip, prefix) in self.config.interface.quick.addresses.clone() {
            let family = Family::of(&ip);
            let text = match prefix {
                Some(p) => format!("{}/{p}", format_ip(&ip)),
                None => format_ip(&ip),
            };
            echo(&format!(
                "{}{} address add {text} dev {ifname}",
                self.ip(),
                family.flag()
            ));
            target
                .rtnl
                .add_address(target.index, ip, prefix.unwrap_or(family.max_prefix()))
                .map_err(rtnl_failure)?;
        }
        self.check_interrupt()?;

        let mtu = match self.config.interface.quick.mtu {
            Some(mtu) => mtu,
            None => auto_mtu(&mut main, &ifname).saturating_sub(80),
        };
        echo(&format!("{}link set mtu {mtu} up dev {ifname}", self.ip()));
        target
            .rtnl
            .set_link_up(target.index, Some(mtu))
            .map_err(rtnl_failure)?;
        self.check_interrupt()?;

        self.set_dns()?;
        self.check_interrupt()?;

        self.add_routes(&mut main, &mut target, route_table)?;
        self.check_interrupt()?;

        quick::run_hooks(&self.config.interface.quick.post_up, &ifname)?;
        Ok(())
    }

    /// `Table =` resolved to a number (`None`: auto; `Some(None)`: off), checked before
    /// anything changes.
    fn route_table(&self) -> Result<Option<Option<u32>>, Failure> {
        Ok(match &self.config.interface.quick.table {
            None | Some(Table::Auto) => None,
            Some(Table::Off) => Some(None),
            Some(Table::Id(n)) => Some(Some(*n)),
            Some(Table::Name(name)) => match quick::resolve_table(name) {
                Some(n) => Some(Some(n)),
                None => {
                    return Err(Failure::Bare(format!(
                        "Error: argument \"{name}\" is wrong: \"table\" value is invalid"
                    )))
                }
            },
        })
    }

    /// Starts ferrowgd, which creates the interface and its UAPI socket and then goes to the
    /// background. Its messages are shown if it fails; later ones are not kept on our stderr
    /// (a closed pipe must not hurt it), unless `LOG_LEVEL` asks for logs, which then go where
    /// ours go (the journal under systemd).
    fn start_daemon(&self) -> Result<(), Failure> {
        let ifname = self.ifname();
        let program = daemon_program();
        echo(&format!("{} {ifname}", program.display()));
        let mut cmd = Command::new(&program);
        cmd.arg(ifname)
            .stdin(Stdio::null())
            .env_remove("WG_PROCESS_FOREGROUND")
            .env_remove("WG_TUN_FD")
            .env_remove("WG_UAPI_FD")
            .env_remove("FERROWGD_DAEMON_CHILD");
        let logs_wanted = std::env::var_os("LOG_LEVEL").is_some_and(|v| !v.is_empty());
        let capture = if logs_wanted {
            None
        } else {
            quick::stderr_capture()
        };
        if let Some(file) = &capture {
            if let Ok(copy) = file.try_clone() {
                cmd.stdout(Stdio::null()).stderr(copy);
            }
        }
        let status = cmd
            .status()
            .map_err(|e| Failure::Prog(format!("cannot run {}: {e}", program.display())))?;
        if !status.success() {
            if let Some(file) = &capture {
                crate::stdio::print_err(&quick::captured_text(file));
            }
            return Err(Failure::Prog(format!(
                "`{} {ifname}' failed ({})",
                program.display(),
                quick::exit_text(status)
            )));
        }
        // ferrowgd answers at once; other daemons may need a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match ipc::get(OsStr::new(ifname)) {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(Failure::Prog(format!(
                        "{} for `{ifname}' does not answer: {e}",
                        program.display()
                    )))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    /// The namespace pattern: create NS if needed, then move the link there.
    fn move_to_netns(&mut self, main: &mut Rtnl, index: u32, ns: &str) -> Result<Target, Failure> {
        let ifname = self.ifname().to_owned();
        self.state.netns = Some(ns.to_owned());
        if !netns::exists(ns) {
            echo(&format!("ip netns add {ns}"));
            self.state.netns_created = true;
            self.store()?;
            netns::create(ns)
                .map_err(|e| quick::io_failure(&format!("cannot create namespace `{ns}'"), e))?;
            // Loopback up, so that local services in the namespace work.
            let mut inner = Rtnl::open_in(&netns::path(ns)).map_err(rtnl_failure)?;
            if let Ok(Some(lo)) = inner.link_by_name("lo") {
                echo(&format!("ip -n {ns} link set lo up"));
                let _ = inner.set_link_up(lo.index, None);
            }
        }
        self.store()?;
        echo(&format!("ip link set dev {ifname} netns {ns}"));
        let handle = File::open(netns::path(ns))
            .map_err(|e| quick::io_failure(&format!("cannot open namespace `{ns}'"), e))?;
        main.move_link(index, handle.as_fd())
            .map_err(rtnl_failure)?;
        let mut rtnl = Rtnl::open_in(&netns::path(ns)).map_err(rtnl_failure)?;
        let index = rtnl
            .link_by_name(&ifname)
            .map_err(rtnl_failure)?
            .ok_or_else(|| Failure::Prog(format!("`{ifname}' did not arrive in `{ns}'")))?
            .index;
        Ok(Target { rtnl, index })
    }

    /// wg-quick's `set_dns` (resolvconf), or the namespace's own resolv.conf.
    fn set_dns(&mut self) -> Result<(), Failure> {
        let quick_settings = &self.config.interface.quick;
        if quick_settings.dns_servers.is_empty() {
            return Ok(());
        }
        let text = quick::resolv_conf_text(quick_settings);
        let ifname = self.ifname().to_owned();
        match self.netns.clone() {
            Some(ns) => {
                let file = quick::netns_resolv_conf(&ns);
                let dir = file.parent().expect("a directory").to_path_buf();
                if !dir.exists() {
                    fs::create_dir_all(&dir).map_err(|e| {
                        quick::io_failure(&format!("cannot create {}", dir.display()), e)
                    })?;
                    self.state.resolv_dir_created = Some(dir);
                }
                if file.exists() {
                    let backup = file.with_file_name(format!("resolv.conf.ferrowg-{ifname}"));
                    echo(&format!("mv {} {}", file.display(), backup.display()));
                    fs::rename(&file, &backup).map_err(|e| {
                        quick::io_failure(&format!("cannot move {}", file.display()), e)
                    })?;
                    self.state.resolv_backup = Some(backup);
                }
                self.state.resolv_file = Some(file.clone());
                self.store()?;
                echo(&format!("tee {}", file.display()));
                fs::write(&file, text)
                    .map_err(|e| quick::io_failure(&format!("cannot write {}", file.display()), e))
            }
            None => {
                let name = quick::resolvconf_name(&ifname);
                self.state.resolvconf = Some(name.clone());
                self.store()?;
                echo(&format!("resolvconf -a {name} -m 0 -x"));
                let program = quick::find_program("resolvconf").ok_or_else(|| {
                    Failure::Prog("DNS is set but resolvconf(8) is not installed".into())
                })?;
                quick::run_with_input(&program, &["-a", &name, "-m", "0", "-x"], text.as_bytes())
            }
        }
    }

    /// A route for every allowed IP of every peer, longest prefix first (wg-quick sorts the
    /// `ip/cidr` texts with `sort -nr -k 2 -t /`).
    fn add_routes(
        &mut self,
        main: &mut Rtnl,
        target: &mut Target,
        table: Option<Option<u32>>,
    ) -> Result<(), Failure> {
        let ifname = self.ifname().to_owned();
        let info = ipc::get(OsStr::new(&ifname))
            .map_err(|e| Failure::Bare(format!("Unable to access interface: {e}")))?;
        let mut prefixes: Vec<(IpAddr, u8, String)> = info
            .peers
            .iter()
            .flat_map(|p| p.allowed_ips.iter())
            .map(|&(ip, cidr)| (ip, cidr, format!("{}/{cidr}", format_ip(&ip))))
            .collect();
        prefixes.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| b.2.as_bytes().cmp(a.2.as_bytes()))
        });
        let table_text = self
            .config
            .interface
            .quick
            .table
            .as_ref()
            .map(quick::table_text)
            .unwrap_or_default();
        for (ip, cidr, text) in prefixes {
            let family = Family::of(&ip);
            let f = family.flag();
            match table {
                Some(None) => {}
                Some(Some(t)) => {
                    echo(&format!(
                        "{}{f} route add {text} dev {ifname} table {table_text}",
                        self.ip()
                    ));
                    target
                        .rtnl
                        .add_route(ip, cidr, target.index, t)
                        .map_err(rtnl_failure)?;
                }
                None if cidr == 0 && self.netns.is_none() => {
                    self.add_default(main, target.index, ip)?;
                }
                None => {
                    let routes = target.rtnl.routes(family).map_err(rtnl_failure)?;
                    let present = routes.iter().any(|r| {
                        r.table == RT_TABLE_MAIN
                            && r.oif == Some(target.index)
                            && netlink::route_covers(r, ip, cidr)
                    });
                    if !present {
                        echo(&format!("{}{f} route add {text} dev {ifname}", self.ip()));
                        target
                            .rtnl
                            .add_route(ip, cidr, target.index, RT_TABLE_MAIN)
                            .map_err(rtnl_failure)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// wg-quick's `add_default` (§9.4): the fwmark table, its two rules, the route, the
    /// firewall script.
    fn add_default(
        &mut self,
        main: &mut Rtnl,
        index: u32,
        destination: IpAddr,
    ) -> Result<(), Failure> {
        let ifname = self.ifname().to_owned();
        let family = Family::of(&destination);
        let f = family.flag();
        let table = match self.fwmark_table {
            Some(t) => t,
            None => {
                let info = ipc::get(OsStr::new(&ifname))
                    .map_err(|e| Failure::Bare(format!("Unable to access interface: {e}")))?;
                let t = if info.fwmark != 0 {
                    info.fwmark
                } else {
                    let mut t = 51820u32;
                    let v4 = main.routes(Family::V4).map_err(rtnl_failure)?;
                    let v6 = main.routes(Family::V6).map_err(rtnl_failure)?;
                    while v4.iter().chain(v6.iter()).any(|r| r.table == t) {
                        t += 1;
                    }
                    echo(&format!(
                        "{} set {ifname} fwmark {t}",
                        self.prog.to_string_lossy()
                    ));
                    let request = DeviceSet {
                        fwmark: Some(t),
                        ..DeviceSet::default()
                    };
                    ipc::set(OsStr::new(&ifname), &request)
                        .map_err(|e| Failure::Bare(format!("Unable to modify interface: {e}")))?;
                    t
                };
                self.fwmark_table = Some(t);
                t
            }
        };
        self.state.table = Some(table);
        match family {
            Family::V4 => self.state.rules_v4 = true,
            Family::V6 => self.state.rules_v6 = true,
        }
        self.store()?;
        echo(&format!("ip {f} rule add not fwmark {table} table {table}"));
        main.add_rule(family, table, Some(table), true, None)
            .map_err(rtnl_failure)?;
        echo(&format!(
            "ip {f} rule add table main suppress_prefixlength 0"
        ));
        main.add_rule(family, RT_TABLE_MAIN, None, false, Some(0))
            .map_err(rtnl_failure)?;
        let text = format!("{}/0", format_ip(&destination));
        echo(&format!(
            "ip {f} route add {text} dev {ifname} table {table}"
        ));
        main.add_route(destination, 0, index, table)
            .map_err(rtnl_failure)?;

        let addresses: Vec<IpAddr> = main
            .addresses(index, Some(family))
            .map_err(rtnl_failure)?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect();
        if family == Family::V4 {
            let knob = "/proc/sys/net/ipv4/conf/all/src_valid_mark";
            if fs::read_to_string(knob)
                .map(|v| v.trim() != "1")
                .unwrap_or(true)
            {
                echo("sysctl -q net.ipv4.conf.all.src_valid_mark=1");
                fs::write(knob, "1")
                    .map_err(|e| quick::io_failure(&format!("cannot write {knob}"), e))?;
            }
        }
        self.state.firewall = true;
        self.store()?;
        if let Some(nft) = quick::find_program("nft") {
            echo("nft -f -");
            let script = quick::nft_script(family, &ifname, table, &addresses);
            quick::run_with_input(&nft, &["-f", "-"], script.as_bytes())
        } else {
            let tool = match family {
                Family::V4 => "iptables-restore",
                Family::V6 => "ip6tables-restore",
            };
            let program = quick::find_program(tool).ok_or_else(|| {
                Failure::Prog(format!(
                    "a full tunnel needs nft or {tool} for its firewall rules; neither is installed"
                ))
            })?;
            echo(&format!("{tool} -n"));
            let script = quick::iptables_script(&ifname, table, &addresses);
            quick::run_with_input(&program, &["-n"], script.as_bytes())
        }
    }
}

/// wg-quick's MTU guess (§9.3 step 7, before subtracting 80): the smallest MTU of the routes
/// to the peers' endpoints, else that of the first IPv4 default route, else 1500.
pub fn auto_mtu(main: &mut Rtnl, ifname: &str) -> u32 {
    let mut found: Vec<u32> = Vec::new();
    if let Ok(info) = ipc::get(OsStr::new(ifname)) {
        for peer in &info.peers {
            let Some(endpoint) = peer.endpoint else {
                continue;
            };
            // wg-quick's pattern skips endpoints printed with a `%scope`.
            if let std::net::SocketAddr::V6(v6) = endpoint {
                if v6.scope_id() != 0 {
                    continue;
                }
            }
            if let Ok(lookup) = main.route_get(endpoint.ip()) {
                found.extend(lookup_mtu(main, lookup.mtu, lookup.oif));
            }
        }
    }
    found.retain(|&m| m > 0);
    if found.is_empty() {
        if let Ok(routes) = main.routes(Family::V4) {
            if let Some(default) = routes
                .iter()
                .find(|r| r.table == RT_TABLE_MAIN && r.prefix_len == 0)
            {
                found.extend(lookup_mtu(main, default.mtu, default.oif));
            }
        }
        found.retain(|&m| m > 0);
    }
    found.into_iter().min().unwrap_or(1500)
}

/// The route's own `mtu`, else its device's.
fn lookup_mtu(main: &mut Rtnl, route_mtu: Option<u32>, oif: Option<u32>) -> Option<u32> {
    route_mtu.or_else(|| {
        oif.and_then(|i| main.link_by_index(i).ok().flatten())
            .and_then(|l| l.mtu)
    })
}
