//! Links, addresses, routes and rules through rtnetlink — what `wg-quick` does with `ip`.
//!
//! Synchronous on purpose: `netlink-packet-route` builds and parses the messages and
//! `netlink-sys` is the socket; a request is one `send` and a few `recv`s. (`rtnetlink` would
//! bring tokio and an executor into a tool that runs a dozen requests in sequence, and its
//! current release needs a newer Rust than this workspace's minimum.)
//!
//! Every request asks for an acknowledgement, so errors come back as the kernel's errno,
//! which callers print the way `ip` does (`RTNETLINK answers: File exists`).

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteMetric, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

pub const RT_TABLE_MAIN: u32 = 254;
const ENODEV: i32 = 19;
const ENOENT: i32 = 2;

/// IPv4 or IPv6, as `ip -4` / `ip -6` choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    /// `-4` / `-6`, for the `[#]` lines.
    pub fn flag(self) -> &'static str {
        match self {
            Family::V4 => "-4",
            Family::V6 => "-6",
        }
    }
    fn af(self) -> AddressFamily {
        match self {
            Family::V4 => AddressFamily::Inet,
            Family::V6 => AddressFamily::Inet6,
        }
    }
    pub fn max_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

/// A link as `ip link show` reports it.
#[derive(Debug, Clone)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: Option<u32>,
}

/// A route as `ip route show table all` lists it (only what wg-quick looks at).
#[derive(Debug, Clone)]
pub struct Route {
    /// `None`: the default route (no destination attribute).
    pub destination: Option<IpAddr>,
    pub prefix_len: u8,
    pub table: u32,
    pub oif: Option<u32>,
    /// The route's `mtu` metric.
    pub mtu: Option<u32>,
}

/// A policy routing rule, as dumped.
#[derive(Debug, Clone)]
pub struct Rule {
    pub family: Family,
    pub table: u32,
    pub priority: Option<u32>,
    pub fwmark: Option<u32>,
    pub fwmask: Option<u32>,
    pub invert: bool,
    pub suppress_prefixlen: Option<u32>,
    /// A `from`/`to`/`iif`/`oif`/… selector beyond the ones above: not "from all".
    pub has_selector: bool,
    action: RuleAction,
    header_table: u8,
}

/// What `ip route get ADDR` answers: the output device and an MTU if the route has one.
#[derive(Debug, Clone, Copy)]
pub struct RouteLookup {
    pub oif: Option<u32>,
    pub mtu: Option<u32>,
}

/// A rtnetlink socket, bound to the network namespace it was opened in.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// `true` for the errno meaning "no such device".
pub fn is_no_device(e: &io::Error) -> bool {
    e.raw_os_error() == Some(ENODEV)
}

fn table_in_header(table: u32) -> u8 {
    u8::try_from(table).unwrap_or(0)
}

impl Rtnl {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// A socket in the namespace at `ns_path` (`/run/netns/NAME`).
    pub fn open_in(ns_path: &Path) -> io::Result<Rtnl> {
        crate::netns::run_in(ns_path, Rtnl::open)?
    }

    /// Sends one request and collects the answers: until the acknowledgement for a plain
    /// request, until "done" for a dump.
    fn request(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags | if dump { 0 } else { NLM_F_ACK };
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;

        let mut answers = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset + 16 <= data.len() {
                let len = u32::from_ne_bytes([
                    data[offset],
                    data[offset + 1],
                    data[offset + 2],
                    data[offset + 3],
                ]) as usize;
                if len < 16 || offset + len > data.len() {
                    return Err(invalid("truncated netlink message"));
                }
                let raw = &data[offset..offset + len];
                offset += (len + 3) & !3;
                let seq = u32::from_ne_bytes([raw[8], raw[9], raw[10], raw[11]]);
                if seq != self.seq {
                    continue;
                }
                // A message this crate cannot parse (a newer kernel's attribute) is skipped
                // rather than failing the whole dump.
                let Ok(message) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(raw) else {
                    continue;
                };
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Links

    fn parse_link(message: LinkMessage) -> Link {
        let mut link = Link {
            index: message.header.index,
            name: String::new(),
            mtu: None,
        };
        for attribute in message.attributes {
            match attribute {
                LinkAttribute::IfName(name) => link.name = name,
                LinkAttribute::Mtu(mtu) => link.mtu = Some(mtu),
                _ => {}
            }
        }
        link
    }

    fn get_link(&mut self, message: LinkMessage) -> io::Result<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(message), 0) {
            Ok(answers) => Ok(answers.into_iter().find_map(|a| match a {
                RouteNetlinkMessage::NewLink(m) => Some(Self::parse_link(m)),
                _ => None,
            })),
            Err(e) if is_no_device(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `ip link show dev NAME`; `None` if there is no such link.
    pub fn link_by_name(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        self.get_link(message)
    }

    pub fn link_by_index(&mut self, index: u32) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.get_link(message)
    }

    /// `ip link set [mtu MTU] up dev …`.
    pub fn set_link_up(&mut self, index: u32, mtu: Option<u32>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message.header.flags = LinkFlags::Up;
        message.header.change_mask = LinkFlags::Up;
        if let Some(mtu) = mtu {
            message.attributes.push(LinkAttribute::Mtu(mtu));
        }
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link set dev … netns NS` (the namespace given as an open descriptor).
    pub fn move_link(&mut self, index: u32, netns: BorrowedFd<'_>) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        message
            .attributes
            .push(LinkAttribute::NetNsFd(netns.as_raw_fd()));
        self.request(RouteNetlinkMessage::SetLink(message), 0)
            .map(drop)
    }

    /// `ip link delete dev …`.
    pub fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut message = LinkMessage::default();
        message.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(message), 0)
            .map(drop)
    }

    /// `ip link add NAME type veth peer name PEER netns NS`: the peer end goes straight
    /// into the namespace given as a descriptor.
    pub fn add_veth_pair(
        &mut self,
        name: &str,
        peer: &str,
        peer_netns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut peer_message = LinkMessage::default();
        peer_message
            .attributes
            .push(LinkAttribute::IfName(peer.to_owned()));
        peer_message
            .attributes
            .push(LinkAttribute::NetNsFd(peer_netns.as_raw_fd()));
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        message.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_message))),
        ]));
        self.request(
            RouteNetlinkMessage::NewLink(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    // -----------------------------------------------------------------------------------
    // Addresses

    /// `ip -4|-6 address add IP/PREFIX dev …`, with iproute2's defaults (local = address,
    /// scope host for 127/8, otherwise global).
    pub fn add_address(&mut self, index: u32, ip: IpAddr, prefix_len: u8) -> io::Result<()> {
        let mut message = AddressMessage::default();
        message.header.family = Family::of(&ip).af();
        message.header.prefix_len = prefix_len;
        message.header.index = index;
        message.header.scope = match ip {
            IpAddr::V4(v4) if v4.octets()[0] == 127 => AddressScope::Host,
            _ => AddressScope::Universe,
        };
        message.attributes.push(AddressAttribute::Local(ip));
        message.attributes.push(AddressAttribute::Address(ip));
        self.request(
            RouteNetlinkMessage::NewAddress(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// The addresses of a link in the kernel's order (IPv4 first), as `ip address show dev`
    /// lists them: the local address (for IPv4 point-to-point setups the `IFA_LOCAL` one).
    pub fn addresses(
        &mut self,
        index: u32,
        family: Option<Family>,
    ) -> io::Result<Vec<(IpAddr, u8)>> {
        let mut message = AddressMessage::default();
        message.header.family = family.map_or(AddressFamily::Unspec, Family::af);
        let answers = self.request(RouteNetlinkMessage::GetAddress(message), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewAddress(m) = answer else {
                continue;
            };
            if m.header.index != index {
                continue;
            }
            let mut local = None;
            let mut address = None;
            for attribute in &m.attributes {
                match attribute {
                    AddressAttribute::Local(ip) => local = Some(*ip),
                    AddressAttribute::Address(ip) => address = Some(*ip),
                    _ => {}
                }
            }
            if let Some(ip) = local.or(address) {
                out.push((ip, m.header.prefix_len));
            }
        }
        Ok(out)
    }

    // -----------------------------------------------------------------------------------
    // Routes

    /// `ip -4|-6 route add PREFIX dev … [table T]`, with iproute2's defaults (protocol boot,
    /// scope link for a route without gateway, type unicast).
    pub fn add_route(
        &mut self,
        destination: IpAddr,
        prefix_len: u8,
        oif: u32,
        table: u32,
    ) -> io::Result<()> {
        let mut message = RouteMessage::default();
        let family = Family::of(&destination);
        message.header.address_family = family.af();
        message.header.destination_prefix_length = prefix_len;
        message.header.table = table_in_header(table);
        message.header.protocol = RouteProtocol::Boot;
        message.header.scope = RouteScope::Link;
        message.header.kind = RouteType::Unicast;
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        if table > 255 {
            message.attributes.push(RouteAttribute::Table(table));
        }
        message.attributes.push(RouteAttribute::Oif(oif));
        self.request(
            RouteNetlinkMessage::NewRoute(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Every route of one family, in every table (`ip route show table all`).
    pub fn routes(&mut self, family: Family) -> io::Result<Vec<Route>> {
        let mut message = RouteMessage::default();
        message.header.address_family = family.af();
        let answers = self.request(RouteNetlinkMessage::GetRoute(message), NLM_F_DUMP)?;
        Ok(answers
            .into_iter()
            .filter_map(|answer| match answer {
                RouteNetlinkMessage::NewRoute(m) => Some(Self::parse_route(m)),
                _ => None,
            })
            .collect())
    }

    fn parse_route(m: RouteMessage) -> Route {
        let mut route = Route {
            destination: None,
            prefix_len: m.header.destination_prefix_length,
            table: u32::from(m.header.table),
            oif: None,
            mtu: None,
        };
        for attribute in m.attributes {
            match attribute {
                RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                    route.destination = Some(a.into())
                }
                RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                    route.destination = Some(a.into())
                }
                RouteAttribute::Table(t) => route.table = t,
                RouteAttribute::Oif(i) => route.oif = Some(i),
                RouteAttribute::Metrics(metrics) => {
                    for metric in metrics {
                        if let RouteMetric::Mtu(mtu) = metric {
                            route.mtu = Some(mtu);
                        }
                    }
                }
                _ => {}
            }
        }
        route
    }

    /// `ip route get ADDR`.
    pub fn route_get(&mut self, destination: IpAddr) -> io::Result<RouteLookup> {
        let family = Family::of(&destination);
        let mut message = RouteMessage::default();
        message.header.address_family = family.af();
        message.header.destination_prefix_length = family.max_prefix();
        message
            .attributes
            .push(RouteAttribute::Destination(RouteAddress::from(destination)));
        let answers = self.request(RouteNetlinkMessage::GetRoute(message), 0)?;
        let mut lookup = RouteLookup {
            oif: None,
            mtu: None,
        };
        for answer in answers {
            let RouteNetlinkMessage::NewRoute(m) = answer else {
                continue;
            };
            for attribute in m.attributes {
                match attribute {
                    RouteAttribute::Oif(i) => lookup.oif = Some(i),
                    RouteAttribute::Metrics(metrics) => {
                        for metric in metrics {
                            if let RouteMetric::Mtu(mtu) = metric {
                                lookup.mtu = Some(mtu);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(lookup)
    }

    // -----------------------------------------------------------------------------------
    // Rules

    /// `ip -4|-6 rule add [not] [fwmark M] table T [suppress_prefixlength N]`.
    pub fn add_rule(
        &mut self,
        family: Family,
        table: u32,
        fwmark: Option<u32>,
        invert: bool,
        suppress_prefixlen: Option<u32>,
    ) -> io::Result<()> {
        let mut message = RuleMessage::default();
        message.header.family = family.af();
        message.header.table = table_in_header(table);
        message.header.action = RuleAction::ToTable;
        if invert {
            message.header.flags = RuleFlags::Invert;
        }
        if table > 255 {
            message.attributes.push(RuleAttribute::Table(table));
        }
        if let Some(mark) = fwmark {
            message.attributes.push(RuleAttribute::FwMark(mark));
        }
        if let Some(len) = suppress_prefixlen {
            message
                .attributes
                .push(RuleAttribute::SuppressPrefixLen(len));
        }
        self.request(
            RouteNetlinkMessage::NewRule(message),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(drop)
    }

    /// Every rule of one family, in priority order (`ip rule show`).
    pub fn rules(&mut self, family: Family) -> io::Result<Vec<Rule>> {
        let mut message = RuleMessage::default();
        message.header.family = family.af();
        let answers = self.request(RouteNetlinkMessage::GetRule(message), NLM_F_DUMP)?;
        let mut out = Vec::new();
        for answer in answers {
            let RouteNetlinkMessage::NewRule(m) = answer else {
                continue;
            };
            let mut rule = Rule {
                family,
                table: u32::from(m.header.table),
                priority: None,
                fwmark: None,
                fwmask: None,
                invert: m.header.flags.contains(RuleFlags::Invert),
                suppress_prefixlen: None,
                has_selector: m.header.src_len != 0 || m.header.dst_len != 0 || m.header.tos != 0,
                action: m.header.action,
                header_table: m.header.table,
            };
            for attribute in m.attributes {
                match attribute {
                    RuleAttribute::Table(t) => rule.table = t,
                    RuleAttribute::Priority(p) => rule.priority = Some(p),
                    RuleAttribute::FwMark(mark) => rule.fwmark = Some(mark),
                    RuleAttribute::FwMask(mask) => rule.fwmask = Some(mask),
                    RuleAttribute::SuppressPrefixLen(len) => rule.suppress_prefixlen = Some(len),
                    RuleAttribute::Iifname(_)
                    | RuleAttribute::Oifname(_)
                    | RuleAttribute::Source(_)
                    | RuleAttribute::Destination(_)
                    | RuleAttribute::UidRange(_)
                    | RuleAttribute::IpProtocol(_)
                    | RuleAttribute::SourcePortRange(_)
                    | RuleAttribute::DestinationPortRange(_) => rule.has_selector = true,
                    _ => {}
                }
            }
            out.push(rule);
        }
        Ok(out)
    }

    /// Deletes exactly this rule (matched on priority, table, mark and suppressor).
    pub fn delete_rule(&mut self, rule: &Rule) -> io::Result<()> {
        let mut message = RuleMessage::default();
        message.header.family = rule.family.af();
        message.header.table = rule.header_table;
        message.header.action = rule.action;
        if rule.invert {
            message.header.flags = RuleFlags::Invert;
        }
        if rule.table > 255 || rule.header_table == 0 {
            message.attributes.push(RuleAttribute::Table(rule.table));
        }
        if let Some(p) = rule.priority {
            message.attributes.push(RuleAttribute::Priority(p));
        }
        if let Some(mark) = rule.fwmark {
            message.attributes.push(RuleAttribute::FwMark(mark));
        }
        if let Some(mask) = rule.fwmask {
            message.attributes.push(RuleAttribute::FwMask(mask));
        }
        if let Some(len) = rule.suppress_prefixlen {
            message
                .attributes
                .push(RuleAttribute::SuppressPrefixLen(len));
        }
        match self.request(RouteNetlinkMessage::DelRule(message), 0) {
            Err(e) if e.raw_os_error() == Some(ENOENT) => Ok(()),
            other => other.map(drop),
        }
    }
}

impl Rule {
    /// wg-quick's `not fwmark T table T`.
    pub fn is_fwmark_rule(&self, table: u32) -> bool {
        self.table == table && self.invert && self.fwmark == Some(table)
    }
    /// wg-quick's `from all lookup main suppress_prefixlength 0`.
    pub fn is_suppress_main(&self) -> bool {
        self.table == RT_TABLE_MAIN
            && self.suppress_prefixlen == Some(0)
            && !self.invert
            && self.fwmark.is_none()
            && !self.has_selector
    }
}

/// `true` if `ip route show … match PREFIX` would list `route`: the route's destination
/// covers the whole prefix.
pub fn route_covers(route: &Route, prefix: IpAddr, prefix_len: u8) -> bool {
    if route.prefix_len > prefix_len {
        return false;
    }
    let destination = route.destination.unwrap_or(match prefix {
        IpAddr::V4(_) => IpAddr::V4(0.into()),
        IpAddr::V6(_) => IpAddr::V6(0.into()),
    });
    same_network(destination, prefix, route.prefix_len)
}

/// `a` and `b` agree on their first `bits` bits (and are of the same family).
pub fn same_network(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(bits.min(32)))
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(bits.min(128)))
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// `RTNETLINK answers: <strerror>`, what `ip` prints when the kernel refuses.
pub fn answer_text(e: &io::Error) -> String {
    format!("RTNETLINK answers: {}", crate::ipc::io_strerror(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(dst: &str, len: u8) -> Route {
        Route {
            destination: Some(dst.parse().unwrap()),
            prefix_len: len,
            table: RT_TABLE_MAIN,
            oif: Some(3),
            mtu: None,
        }
    }

    #[test]
    fn match_is_containment() {
        let r = route("198.51.100.0", 24);
        assert!(route_covers(&r, "198.51.100.0".parse().unwrap(), 24));
        assert!(route_covers(&r, "198.51.100.7".parse().unwrap(), 32));
        assert!(!route_covers(&r, "198.51.100.0".parse().unwrap(), 16));
        assert!(!route_covers(&r, "192.0.2.0".parse().unwrap(), 24));
        let mut default = route("0.0.0.0", 0);
        default.destination = None;
        assert!(route_covers(&default, "192.0.2.0".parse().unwrap(), 24));
        assert!(same_network(
            "fd00::1".parse().unwrap(),
            "fd00::2".parse().unwrap(),
            64
        ));
        assert!(!same_network(
            "fd00::1".parse().unwrap(),
            "198.51.100.1".parse().unwrap(),
            0
        ));
    }
}
