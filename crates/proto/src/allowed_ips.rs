//! Cryptokey routing: the allowed-IPs table mapping address prefixes to peers.
//!
//! Semantics follow the Linux kernel's `allowedips` (and wireguard-go's): one longest-prefix
//! match table per address family, host bits masked off on insert, an existing prefix is
//! reassigned to whichever value inserts it last, and each value lists its prefixes in the
//! order they were given to it.
//!
//! Design, per family:
//! - A direct-indexed first level on the top [`SLOT_BITS`] bits of the address. The data plane
//!   looks up every packet, and with a million prefixes the upper levels of a plain binary trie
//!   are a long chain of dependent memory loads; one array index replaces them.
//! - Below each slot, a path-compressed binary trie holding the prefixes of length
//!   `>= SLOT_BITS` inside that slot. Path compression bounds the walk by the number of prefixes
//!   in the slot rather than by the address width.
//! - Prefixes shorter than `SLOT_BITS` cover whole slots. They live in a small heap-indexed
//!   array, and every slot caches the longest of them covering it, so a lookup that matches
//!   nothing in the slot's trie falls back to that cached entry without a second walk.
//! - All nodes of a family sit in one arena `Vec` addressed by `u32` indices with a free list:
//!   no per-node allocation, no pointers, and every walk is an iterative loop, so /128 chains
//!   cannot overflow the stack.
//!
//! Per-value listing is an intrusive doubly linked list threaded through the arena nodes of both
//! families, headed from a `HashMap<V, _>`: append, reassignment and removal of one prefix are
//! O(1), and listing or removing all of a value's prefixes is linear in that value's prefixes.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Width in bits of the direct-indexed first level of each family's table.
const SLOT_BITS: u8 = 16;
/// Number of first-level slots per family.
const SLOT_COUNT: usize = 1 << SLOT_BITS;
/// Index of each arena's sentinel node, which no address matches. As a link it means "no
/// node": lookups step onto it instead of branching, and it is never an entry.
const NONE: u32 = 0;
/// Tag bit marking a per-value list reference as pointing into the IPv6 arena.
const V6_TAG: u32 = 1 << 31;
/// Arena indices must stay below the tag bit.
const MAX_NODES: usize = V6_TAG as usize;
/// Most nodes on one root-to-leaf path of a slot trie: one per length from `SLOT_BITS` to 128.
const MAX_PATH: usize = 128 - SLOT_BITS as usize + 1;

/// A CIDR length larger than the address width was given to [`AllowedIps::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidCidr {
    /// The CIDR length that was refused.
    pub cidr: u8,
    /// The largest CIDR length valid for the address family (32 or 128).
    pub max: u8,
}

impl fmt::Display for InvalidCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CIDR length /{} exceeds the maximum of /{} for this address family",
            self.cidr, self.max
        )
    }
}

impl std::error::Error for InvalidCidr {}

/// An address of one family as an unsigned integer, most significant bit first.
trait Key: Copy + Eq + fmt::Debug {
    /// Address width in bits.
    const BITS: u8;
    /// A key no masked address equals (bits past a /0), for the sentinel node.
    const SENTINEL: Self;
    /// The address with every bit past the first `cidr` cleared.
    fn masked(self, cidr: u8) -> Self;
    /// Number of leading bits the two addresses share (`BITS` when equal).
    fn common_len(self, other: Self) -> u8;
    /// Bit `index` counted from the most significant bit. For `index == BITS` the result is
    /// meaningless but does not panic: it selects a child of a full-length node, which has
    /// none.
    fn bit(self, index: u8) -> usize;
    /// The top `SLOT_BITS` bits, as a first-level slot index.
    fn slot(self) -> usize;
    /// The address as a standard library address.
    fn to_ip(self) -> IpAddr;
}

macro_rules! impl_key {
    ($int:ty, $addr:ty) => {
        impl Key for $int {
            const BITS: u8 = <$int>::BITS as u8;
            const SENTINEL: Self = 1;

            #[inline(always)]
            fn masked(self, cidr: u8) -> Self {
                // `checked_shr` turns the width-sized shift of /0 into an all-zero mask.
                self & !(<$int>::MAX.checked_shr(u32::from(cidr)).unwrap_or(0))
            }

            #[inline(always)]
            fn common_len(self, other: Self) -> u8 {
                (self ^ other).leading_zeros() as u8
            }

            #[inline(always)]
            fn bit(self, index: u8) -> usize {
                (self.wrapping_shl(u32::from(index)) >> (<$int>::BITS - 1)) as usize
            }

            #[inline(always)]
            fn slot(self) -> usize {
                (self >> (<$int>::BITS - u32::from(SLOT_BITS))) as usize
            }

            fn to_ip(self) -> IpAddr {
                IpAddr::from(<$addr>::from(self))
            }
        }
    };
}

impl_key!(u32, Ipv4Addr);
impl_key!(u128, Ipv6Addr);

/// Position of a node in a per-value list: the neighbours, as tagged references.
#[derive(Debug, Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

const UNLINKED: Links = Links {
    prev: NONE,
    next: NONE,
};

/// One arena node: a prefix, and either an entry (`value` is set) or a pure branch point.
///
/// Invariants inside a slot trie: `key` has no bits past `cidr`; children extend the prefix
/// (child `b` has bit `cidr` equal to `b`); a node without a value has two children; `height`
/// is the number of nodes on the longest path down from this one (the sentinel's is 0).
/// Nodes for prefixes shorter than `SLOT_BITS` have no children and are reached only through
/// `Family::short`. On the free list, `children[0]` links to the next free node.
#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    children: [u32; 2],
    links: Links,
    cidr: u8,
    height: u8,
    value: Option<V>,
}

impl<K: Key, V> Node<K, V> {
    fn new(key: K, cidr: u8) -> Self {
        Node {
            key,
            children: [NONE; 2],
            links: UNLINKED,
            cidr,
            height: 1,
            value: None,
        }
    }
}

/// First-level entry for the addresses sharing one value of the top `SLOT_BITS` bits.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Root of the trie of this slot's prefixes of length `>= SLOT_BITS`.
    root: u32,
    /// Node of the longest prefix shorter than `SLOT_BITS` covering this slot.
    short: u32,
    /// Height of the trie under `root`: how many steps a lookup takes.
    height: u8,
}

const EMPTY_SLOT: Slot = Slot {
    root: NONE,
    short: NONE,
    height: 0,
};

/// A place holding a node index: a slot's root or one child of a node.
#[derive(Debug, Clone, Copy)]
enum Link {
    Root(usize),
    Child(u32, usize),
}

/// The nodes above the current position in a walk down a slot trie, root first. A fixed
/// array: updates neither recurse nor allocate for it.
struct Path {
    nodes: [u32; MAX_PATH],
    len: usize,
}

impl Path {
    fn new() -> Self {
        Path {
            nodes: [NONE; MAX_PATH],
            len: 0,
        }
    }

    fn push(&mut self, node: u32) {
        self.nodes[self.len] = node;
        self.len += 1;
    }

    fn pop(&mut self) {
        self.len -= 1;
    }

    fn last(&self) -> Option<u32> {
        self.len.checked_sub(1).map(|i| self.nodes[i])
    }

    fn bottom_up(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes[..self.len].iter().rev().copied()
    }
}

/// Index into `Family::short` of the prefix `key/cidr`, for `cidr < SLOT_BITS`: a heap layout
/// where length `c` occupies indices `2^c .. 2^(c+1)`.
#[inline]
fn short_index<K: Key>(key: K, cidr: u8) -> usize {
    (1 << cidr) | (key.slot() >> (SLOT_BITS - cidr))
}

/// The table of one address family.
#[derive(Debug, Clone)]
struct Family<K, V> {
    /// Arena; index 0 is the sentinel.
    nodes: Vec<Node<K, V>>,
    /// Head of the free list threaded through `children[0]`.
    free: u32,
    /// `SLOT_COUNT` entries, or empty while the family has never held a prefix (an empty
    /// table then costs no memory).
    slots: Vec<Slot>,
    /// Nodes of prefixes shorter than `SLOT_BITS`, by [`short_index`]; same lazy sizing.
    short: Vec<u32>,
    /// Number of entries (nodes holding a value).
    len: usize,
}

impl<K: Key, V: Copy> Family<K, V> {
    fn new() -> Self {
        Family {
            nodes: Vec::new(),
            free: NONE,
            slots: Vec::new(),
            short: Vec::new(),
            len: 0,
        }
    }

    /// Longest-prefix match of `key`.
    ///
    /// The walk is the hot path of the data plane, and with a large table every step is a
    /// cache miss. It therefore takes exactly `slot.height` steps, a count known as soon as
    /// the (cache-resident) slot is read, and after a mismatch it continues on the sentinel
    /// rather than breaking out. No branch waits on a node load, so the CPU can already start
    /// the next lookup's loads while this one's are in flight.
    #[inline]
    fn lookup(&self, key: K) -> Option<V> {
        // An empty `slots` means the family never held anything.
        let slot = self.slots.get(key.slot())?;
        let fallback = self.nodes[slot.short as usize].value;
        let mut found = None;
        let mut at = slot.root;
        for _ in 0..slot.height {
            let node = &self.nodes[at as usize];
            let covers = key.masked(node.cidr) == node.key;
            let next = node.children[key.bit(node.cidr)];
            // A prefix that does not cover `key` has no descendant that does.
            found = if covers { node.value.or(found) } else { found };
            at = if covers { next } else { NONE };
        }
        found.or(fallback)
    }

    fn ensure_tables(&mut self) {
        if self.slots.is_empty() {
            self.slots = vec![EMPTY_SLOT; SLOT_COUNT];
            self.short = vec![NONE; SLOT_COUNT];
            let mut sentinel = Node::new(K::SENTINEL, 0);
            sentinel.height = 0;
            self.nodes.push(sentinel);
        }
    }

    fn alloc(&mut self, key: K, cidr: u8) -> u32 {
        let node = Node::new(key, cidr);
        if self.free != NONE {
            let index = self.free;
            self.free = self.nodes[index as usize].children[0];
            self.nodes[index as usize] = node;
            index
        } else {
            assert!(self.nodes.len() < MAX_NODES, "allowed-IPs arena is full");
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    fn release(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.value = None;
        node.height = 0;
        node.children = [self.free, NONE];
        self.free = index;
    }

    fn get_link(&self, link: Link) -> u32 {
        match link {
            Link::Root(slot) => self.slots[slot].root,
            Link::Child(parent, side) => self.nodes[parent as usize].children[side],
        }
    }

    fn set_link(&mut self, link: Link, to: u32) {
        match link {
            Link::Root(slot) => self.slots[slot].root = to,
            Link::Child(parent, side) => self.nodes[parent as usize].children[side] = to,
        }
    }

    /// The link below `path`'s last node that leads towards `key`, or the slot root.
    fn link_below(&self, path: &Path, key: K) -> Link {
        match path.last() {
            Some(parent) => Link::Child(parent, key.bit(self.nodes[parent as usize].cidr)),
            None => Link::Root(key.slot()),
        }
    }

    /// Recomputes the heights of the nodes on `path` (whose subtrees changed) and the slot's.
    fn fix_heights(&mut self, slot: usize, path: &Path) {
        for at in path.bottom_up() {
            let [a, b] = self.nodes[at as usize].children;
            let height = 1 + self.nodes[a as usize]
                .height
                .max(self.nodes[b as usize].height);
            if self.nodes[at as usize].height == height {
                // Unchanged here, so unchanged above.
                break;
            }
            self.nodes[at as usize].height = height;
        }
        let root = self.slots[slot].root;
        self.slots[slot].height = self.nodes[root as usize].height;
    }

    /// The node of exactly `key/cidr` (`key` already masked), holding a value or not.
    fn find(&self, key: K, cidr: u8) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        if cidr < SLOT_BITS {
            let index = self.short[short_index(key, cidr)];
            return (index != NONE).then_some(index);
        }
        let mut at = self.slots[key.slot()].root;
        while at != NONE {
            let node = &self.nodes[at as usize];
            if node.cidr > cidr || key.masked(node.cidr) != node.key {
                return None;
            }
            if node.cidr == cidr {
                return Some(at);
            }
            at = node.children[key.bit(node.cidr)];
        }
        None
    }

    /// The node of exactly `key/cidr` (`key` already masked), created without a value if
    /// absent. The caller must give a new node a value before the next operation.
    fn find_or_create(&mut self, key: K, cidr: u8) -> u32 {
        self.ensure_tables();
        if cidr < SLOT_BITS {
            self.find_or_create_short(key, cidr)
        } else {
            self.find_or_create_in_slot(key, cidr)
        }
    }

    fn find_or_create_short(&mut self, key: K, cidr: u8) -> u32 {
        let index = short_index(key, cidr);
        if self.short[index] != NONE {
            return self.short[index];
        }
        let new = self.alloc(key, cidr);
        self.short[index] = new;
        // A slot covered by the new prefix now falls back to it, unless a longer short prefix
        // already covers that slot. (None of equal length can: that would be this prefix.)
        let first = key.slot();
        let count = 1 << (SLOT_BITS - cidr);
        for slot in &mut self.slots[first..first + count] {
            if slot.short == NONE || self.nodes[slot.short as usize].cidr < cidr {
                slot.short = new;
            }
        }
        new
    }

    fn find_or_create_in_slot(&mut self, key: K, cidr: u8) -> u32 {
        let slot = key.slot();
        let mut path = Path::new();
        let mut link = Link::Root(slot);
        loop {
            let at = self.get_link(link);
            if at == NONE {
                let new = self.alloc(key, cidr);
                self.set_link(link, new);
                self.fix_heights(slot, &path);
                return new;
            }
            let (at_key, at_cidr, at_height) = {
                let node = &self.nodes[at as usize];
                (node.key, node.cidr, node.height)
            };
            let common = at_key.common_len(key).min(at_cidr).min(cidr);
            if common == at_cidr {
                if at_cidr == cidr {
                    return at;
                }
                // `at` covers the new prefix: descend (at_cidr < cidr <= BITS).
                path.push(at);
                link = Link::Child(at, key.bit(at_cidr));
                continue;
            }
            let new = self.alloc(key, cidr);
            if common == cidr {
                // The new prefix covers `at`: it takes `at`'s place, `at` below it.
                let node = &mut self.nodes[new as usize];
                node.children[at_key.bit(cidr)] = at;
                node.height = at_height + 1;
                self.set_link(link, new);
            } else {
                // The prefixes diverge at bit `common`: a branch node joins them there.
                let branch = self.alloc(key.masked(common), common);
                let node = &mut self.nodes[branch as usize];
                node.children[key.bit(common)] = new;
                node.children[at_key.bit(common)] = at;
                node.height = at_height.max(1) + 1;
                self.set_link(link, branch);
            }
            self.fix_heights(slot, &path);
            return new;
        }
    }

    /// Removes the entry held by node `index` and frees whatever the trie no longer needs.
    /// Returns the value the entry held.
    fn remove_entry(&mut self, index: u32) -> Option<V> {
        let (key, cidr, value) = {
            let node = &mut self.nodes[index as usize];
            (node.key, node.cidr, node.value.take())
        };
        value?;
        self.len -= 1;
        if cidr < SLOT_BITS {
            self.remove_short(index, key, cidr);
        } else {
            self.prune_in_slot(index, key);
        }
        value
    }

    fn remove_short(&mut self, index: u32, key: K, cidr: u8) {
        self.short[short_index(key, cidr)] = NONE;
        // Slots that fell back to this prefix fall back to the next shorter one covering it
        // instead; slots under a longer short prefix keep theirs.
        let parent = (0..cidr)
            .rev()
            .map(|shorter| self.short[short_index(key, shorter)])
            .find(|&node| node != NONE)
            .unwrap_or(NONE);
        let first = key.slot();
        let count = 1 << (SLOT_BITS - cidr);
        for slot in &mut self.slots[first..first + count] {
            if slot.short == index {
                slot.short = parent;
            }
        }
        self.release(index);
    }

    /// Restores the trie invariants after node `index` (of prefix `key/..`) lost its value.
    fn prune_in_slot(&mut self, index: u32, key: K) {
        let slot = key.slot();
        let mut path = Path::new();
        let mut link = Link::Root(slot);
        loop {
            let at = self.get_link(link);
            if at == index {
                break;
            }
            path.push(at);
            link = Link::Child(at, key.bit(self.nodes[at as usize].cidr));
        }
        match self.nodes[index as usize].children {
            // Still joins two subtries: it stays as a pure branch, no height changes.
            [a, b] if a != NONE && b != NONE => return,
            // A leaf: unhook it. A valueless parent is left with one child: splice it out.
            [NONE, NONE] => {
                self.set_link(link, NONE);
                self.release(index);
                if let Link::Child(parent, side) = link {
                    let parent_node = &self.nodes[parent as usize];
                    if parent_node.value.is_none() {
                        let sibling = parent_node.children[1 - side];
                        path.pop();
                        let parent_link = self.link_below(&path, key);
                        self.set_link(parent_link, sibling);
                        self.release(parent);
                    }
                }
            }
            // One child: it takes this node's place.
            [a, b] => {
                self.set_link(link, if a != NONE { a } else { b });
                self.release(index);
            }
        }
        self.fix_heights(slot, &path);
    }
}

/// Head of one value's list of prefixes (tagged arena references, in insertion order).
#[derive(Debug, Clone, Copy)]
struct Chain {
    head: u32,
    tail: u32,
    len: usize,
}

/// The cryptokey-routing table: longest-prefix match from IP addresses to values (peers).
///
/// IPv4 and IPv6 are independent tables; an IPv4-mapped IPv6 address is an ordinary IPv6
/// address. Lookups never allocate.
#[derive(Debug, Clone)]
pub struct AllowedIps<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
    chains: HashMap<V, Chain>,
}

impl<V: Copy + Eq + Hash> Default for AllowedIps<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq + Hash> AllowedIps<V> {
    /// An empty table. Allocates nothing until the first insertion into each family.
    pub fn new() -> Self {
        AllowedIps {
            v4: Family::new(),
            v6: Family::new(),
            chains: HashMap::new(),
        }
    }

    /// Total number of prefixes in the table (both families).
    pub fn len(&self) -> usize {
        self.v4.len + self.v6.len
    }

    /// Whether the table holds no prefix.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every prefix and releases the table's memory.
    pub fn clear(&mut self) {
        *self = Self::new();
    }

    /// Routes `addr/cidr` to `value`. Host bits past `cidr` are ignored (`10.9.9.9/24` is
    /// stored as `10.9.9.0/24`).
    ///
    /// If the prefix already belongs to another value it is reassigned: it leaves that value's
    /// list and is appended to `value`'s. If it already belongs to `value`, nothing changes,
    /// including its position in `value`'s list.
    ///
    /// # Errors
    /// [`InvalidCidr`] if `cidr` exceeds 32 for IPv4 or 128 for IPv6; the table is unchanged.
    pub fn insert(&mut self, addr: IpAddr, cidr: u8, value: V) -> Result<(), InvalidCidr> {
        let tagged = match addr {
            IpAddr::V4(a) => {
                let key = checked_key(u32::from(a), cidr)?;
                self.v4.find_or_create(key, cidr)
            }
            IpAddr::V6(a) => {
                let key = checked_key(u128::from(a), cidr)?;
                self.v6.find_or_create(key, cidr) | V6_TAG
            }
        };
        match self.value_of(tagged) {
            Some(old) if old == value => {}
            Some(old) => {
                self.unlink(old, tagged);
                self.set_value(tagged, value);
                self.append(value, tagged);
            }
            None => {
                // New entry, or an existing branch node of the same prefix that now gets one.
                self.set_value(tagged, value);
                match tagged & V6_TAG {
                    0 => self.v4.len += 1,
                    _ => self.v6.len += 1,
                }
                self.append(value, tagged);
            }
        }
        Ok(())
    }

    /// Removes `addr/cidr` (host bits ignored) if it is in the table and belongs to `value`.
    /// Returns whether it was removed; an absent prefix, one owned by another value, or an
    /// out-of-range `cidr` leaves the table unchanged and returns `false`.
    pub fn remove(&mut self, addr: IpAddr, cidr: u8, value: V) -> bool {
        let found = match addr {
            IpAddr::V4(a) => checked_key(u32::from(a), cidr)
                .ok()
                .and_then(|key| self.v4.find(key, cidr)),
            IpAddr::V6(a) => checked_key(u128::from(a), cidr)
                .ok()
                .and_then(|key| self.v6.find(key, cidr))
                .map(|index| index | V6_TAG),
        };
        let Some(tagged) = found else {
            return false;
        };
        if self.value_of(tagged) != Some(value) {
            return false;
        }
        self.unlink(value, tagged);
        self.remove_entry(tagged);
        true
    }

    /// Removes every prefix belonging to `value` (peer removal, or the first half of
    /// replacing a peer's allowed IPs). Returns how many were removed. Takes time linear in
    /// `value`'s prefixes, independent of the rest of the table.
    pub fn remove_value(&mut self, value: V) -> usize {
        let Some(chain) = self.chains.remove(&value) else {
            return 0;
        };
        let mut at = chain.head;
        while at != NONE {
            let next = self.links(at).next;
            self.remove_entry(at);
            at = next;
        }
        chain.len
    }

    /// Longest-prefix match: the value of the most specific prefix containing `addr`.
    #[inline]
    pub fn lookup(&self, addr: IpAddr) -> Option<V> {
        match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        }
    }

    /// [`lookup`](Self::lookup) of an IPv4 address given as network-order bytes, as found in
    /// a packet header.
    #[inline]
    pub fn lookup_v4(&self, addr: &[u8; 4]) -> Option<V> {
        self.v4.lookup(u32::from_be_bytes(*addr))
    }

    /// [`lookup`](Self::lookup) of an IPv6 address given as network-order bytes, as found in
    /// a packet header.
    #[inline]
    pub fn lookup_v6(&self, addr: &[u8; 16]) -> Option<V> {
        self.v6.lookup(u128::from_be_bytes(*addr))
    }

    /// The prefixes belonging to `value`, as `(address with host bits zero, cidr)`, in the
    /// order they were assigned to `value`. Linear in `value`'s prefixes.
    pub fn prefixes_of(&self, value: V) -> PrefixesOf<'_, V> {
        let chain = self.chains.get(&value);
        PrefixesOf {
            table: self,
            at: chain.map_or(NONE, |c| c.head),
            remaining: chain.map_or(0, |c| c.len),
        }
    }

    // --- helpers over tagged references (IPv6 arena indices carry `V6_TAG`) ---

    fn value_of(&self, tagged: u32) -> Option<V> {
        match tagged & V6_TAG {
            0 => self.v4.nodes[tagged as usize].value,
            _ => self.v6.nodes[(tagged & !V6_TAG) as usize].value,
        }
    }

    fn set_value(&mut self, tagged: u32, value: V) {
        match tagged & V6_TAG {
            0 => self.v4.nodes[tagged as usize].value = Some(value),
            _ => self.v6.nodes[(tagged & !V6_TAG) as usize].value = Some(value),
        }
    }

    fn links(&self, tagged: u32) -> Links {
        match tagged & V6_TAG {
            0 => self.v4.nodes[tagged as usize].links,
            _ => self.v6.nodes[(tagged & !V6_TAG) as usize].links,
        }
    }

    fn links_mut(&mut self, tagged: u32) -> &mut Links {
        match tagged & V6_TAG {
            0 => &mut self.v4.nodes[tagged as usize].links,
            _ => &mut self.v6.nodes[(tagged & !V6_TAG) as usize].links,
        }
    }

    fn remove_entry(&mut self, tagged: u32) {
        match tagged & V6_TAG {
            0 => self.v4.remove_entry(tagged),
            _ => self.v6.remove_entry(tagged & !V6_TAG),
        };
    }

    /// Appends `tagged` to the end of `value`'s list.
    fn append(&mut self, value: V, tagged: u32) {
        let chain = self.chains.entry(value).or_insert(Chain {
            head: NONE,
            tail: NONE,
            len: 0,
        });
        let old_tail = chain.tail;
        chain.tail = tagged;
        if old_tail == NONE {
            chain.head = tagged;
        }
        chain.len += 1;
        *self.links_mut(tagged) = Links {
            prev: old_tail,
            next: NONE,
        };
        if old_tail != NONE {
            self.links_mut(old_tail).next = tagged;
        }
    }

    /// Takes `tagged` out of `value`'s list, dropping the list when it empties.
    fn unlink(&mut self, value: V, tagged: u32) {
        let Links { prev, next } = std::mem::replace(self.links_mut(tagged), UNLINKED);
        if prev != NONE {
            self.links_mut(prev).next = next;
        }
        if next != NONE {
            self.links_mut(next).prev = prev;
        }
        let chain = self
            .chains
            .get_mut(&value)
            .expect("an entry's value always has a list");
        if prev == NONE {
            chain.head = next;
        }
        if next == NONE {
            chain.tail = prev;
        }
        chain.len -= 1;
        if chain.len == 0 {
            self.chains.remove(&value);
        }
    }
}

/// `addr` masked to `cidr`, or the error for a `cidr` wider than the family.
fn checked_key<K: Key>(addr: K, cidr: u8) -> Result<K, InvalidCidr> {
    if cidr > K::BITS {
        return Err(InvalidCidr { cidr, max: K::BITS });
    }
    Ok(addr.masked(cidr))
}

/// Iterator over one value's prefixes, from [`AllowedIps::prefixes_of`].
#[derive(Debug, Clone)]
pub struct PrefixesOf<'a, V> {
    table: &'a AllowedIps<V>,
    at: u32,
    remaining: usize,
}

impl<V: Copy + Eq + Hash> Iterator for PrefixesOf<'_, V> {
    type Item = (IpAddr, u8);

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == NONE {
            return None;
        }
        let (item, next) = match self.at & V6_TAG {
            0 => {
                let node = &self.table.v4.nodes[self.at as usize];
                ((node.key.to_ip(), node.cidr), node.links.next)
            }
            _ => {
                let node = &self.table.v6.nodes[(self.at & !V6_TAG) as usize];
                ((node.key.to_ip(), node.cidr), node.links.next)
            }
        };
        self.at = next;
        self.remaining -= 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl<V: Copy + Eq + Hash> ExactSizeIterator for PrefixesOf<'_, V> {}

impl<V: Copy + Eq + Hash> AllowedIps<V> {
    #[doc(hidden)]
    pub fn debug_stats(&self, q4: &[[u8; 4]]) -> (f64, f64, usize, usize) {
        let mut hsum = 0usize;
        let mut dsum = 0usize;
        for q in q4 {
            let key = u32::from_be_bytes(*q);
            let slot = &self.v4.slots[key.slot()];
            hsum += slot.height as usize;
            let mut at = slot.root;
            while at != NONE {
                let node = &self.v4.nodes[at as usize];
                if key.masked(node.cidr) != node.key {
                    dsum += 1;
                    break;
                }
                dsum += 1;
                at = node.children[key.bit(node.cidr)];
            }
        }
        (
            hsum as f64 / q4.len() as f64,
            dsum as f64 / q4.len() as f64,
            self.v4.nodes.len(),
            self.v6.nodes.len(),
        )
    }
}
