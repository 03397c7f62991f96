//! Cryptokey routing: the allowed-IPs table mapping address prefixes to peers.
//!
//! Semantics follow the Linux kernel's `allowedips` (and wireguard-go's): one longest-prefix
//! match table per address family, host bits masked off on insert, an existing prefix is
//! reassigned to whichever value inserts it last, and each value lists its prefixes in the
//! order they were given to it.
//!
//! Layout, per family:
//! - A direct-indexed first level on the top `bits` bits of the address, sized like a hash
//!   table's bucket array: one to two slots per prefix (`bits` from 8 to 22). It is rebuilt,
//!   in time linear in the family, when the prefix count reaches the slot count or falls
//!   below an eighth of it, so the cost is amortized O(1) per insertion or removal. In a large
//!   table every
//!   trie level is a cache miss; a first level in proportion to the table leaves a lookup
//!   with a step or two below it.
//! - Below each slot, a path-compressed binary trie of the slot's prefixes of length
//!   `>= bits`. Its nodes live in one arena `Vec` per family, addressed by `u32` indices with a
//!   free list; every walk is an iterative loop, so /128 chains cannot overflow the stack.
//! - Prefixes shorter than `bits` cover whole slots. They sit in the same arena, reached
//!   through a small heap-layout index, and every slot records the longest one covering it,
//!   which is where a lookup starts.
//! - A lookup walks exactly the slot trie's height with branch-free steps (see
//!   `Family::lookup`), so consecutive lookups overlap their cache misses.
//!
//! Per-value listing uses a side table of entries, one per prefix, doubly linked per value in
//! insertion order and headed from a `HashMap<V, _>`: append, reassignment and removal of one
//! prefix are O(1) on the lists, and listing or removing all of a value's prefixes is linear
//! in that value's prefixes. Lookups never touch it.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::iter::FusedIterator;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Fewest first-level bits: a small table's first level costs a few KiB.
#[cfg(not(test))]
const MIN_SLOT_BITS: u8 = 8;
/// Unit tests use a tiny first level, so that their small tables go through rebuilds.
#[cfg(test)]
const MIN_SLOT_BITS: u8 = 1;
/// Most first-level bits: beyond about four million prefixes per family, slots get fuller
/// rather than the first level bigger.
const MAX_SLOT_BITS: u8 = 22;
/// How far (in powers of two) a family may shrink below its first level's size before the
/// first level is shrunk: hysteresis, so that alternating insertions and removals around a
/// boundary do not rebuild every time.
const SHRINK_SLACK: u8 = 2;
/// Index 0 of every arena and of the entry table. As a link it means "no node"; as a node it
/// is the sentinel: no value, no children, height 0, so a lookup can step onto it instead of
/// branching. It never holds an entry.
const NONE: u32 = 0;
/// Tag bit of `Entry::node` marking the IPv6 family's arena.
const V6_TAG: u32 = 1 << 31;
/// Most nodes on one root-to-leaf path of a slot trie: at most one per prefix length.
const MAX_PATH: usize = 129;

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
trait Key: Copy + Eq + Default + fmt::Debug {
    /// Address width in bits.
    const BITS: u8;
    /// The address with every bit past the first `cidr` cleared.
    fn masked(self, cidr: u8) -> Self;
    /// Number of leading bits the two addresses share (`BITS` when equal).
    fn common_len(self, other: Self) -> u8;
    /// Bit `index` counted from the most significant bit. For `index == BITS` the result is
    /// meaningless but does not panic: it picks a child of a full-length node, which has none.
    fn bit(self, index: u8) -> usize;
    /// The first `bits` bits (`1 <= bits <= BITS`, at most `usize::BITS`) as an integer.
    fn top(self, bits: u8) -> usize;
    /// The address as a standard library address.
    fn to_ip(self) -> IpAddr;
}

macro_rules! impl_key {
    ($int:ty, $addr:ty) => {
        impl Key for $int {
            const BITS: u8 = <$int>::BITS as u8;

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
            fn top(self, bits: u8) -> usize {
                (self >> (<$int>::BITS - u32::from(bits))) as usize
            }

            fn to_ip(self) -> IpAddr {
                IpAddr::from(<$addr>::from(self))
            }
        }
    };
}

impl_key!(u32, Ipv4Addr);
impl_key!(u128, Ipv6Addr);

/// One arena node: a prefix, and either an entry (`value` is set) or a pure branch point.
///
/// Invariants inside a slot trie: `key` has no bits past `cidr`; children extend the prefix
/// (child `b` has bit `cidr` equal to `b`); a node without a value has two children; `height`
/// is the number of nodes on the longest path down from this one. Short-prefix nodes have no
/// children. On the free list, `children[0]` links to the next free node.
#[derive(Debug, Clone)]
struct Node<K, V> {
    key: K,
    children: [u32; 2],
    /// Index of this prefix's [`Entry`]; `NONE` for branch nodes.
    entry: u32,
    cidr: u8,
    height: u8,
    value: Option<V>,
}

impl<K: Key, V> Node<K, V> {
    fn new(key: K, cidr: u8) -> Self {
        Node {
            key,
            children: [NONE; 2],
            entry: NONE,
            cidr,
            height: 1,
            value: None,
        }
    }

    fn sentinel() -> Self {
        Node {
            height: 0,
            ..Node::new(K::default(), 0)
        }
    }
}

/// First-level entry: the addresses sharing one value of the top `bits` bits.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// Root of the trie of this slot's prefixes of length `>= bits`.
    root: u32,
    /// Node of the longest prefix shorter than `bits` covering this slot.
    short: u32,
    /// Height of the trie under `root`: the number of steps a lookup takes.
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

/// First-level bits suited to `len` prefixes: one to two slots per prefix.
fn bits_for(len: usize) -> u8 {
    let needed = (usize::BITS - len.leading_zeros()) as u8;
    needed.clamp(MIN_SLOT_BITS, MAX_SLOT_BITS)
}

/// The table of one address family.
#[derive(Debug, Clone)]
struct Family<K, V> {
    /// Width of the first level, in bits.
    bits: u8,
    /// `2^bits` slots, or empty while the family holds nothing (it then costs no memory).
    slots: Vec<Slot>,
    /// Nodes of prefixes shorter than `bits`, by [`Family::short_position`]; sized like
    /// `slots`.
    short_index: Vec<u32>,
    /// Arena of all nodes; index 0 is the sentinel.
    nodes: Vec<Node<K, V>>,
    /// Head of the free list threaded through `children[0]`.
    free: u32,
    /// Number of entries (nodes holding a value).
    len: usize,
}

impl<K: Key, V: Copy> Family<K, V> {
    const fn new() -> Self {
        Family {
            bits: MIN_SLOT_BITS,
            slots: Vec::new(),
            short_index: Vec::new(),
            nodes: Vec::new(),
            free: NONE,
            len: 0,
        }
    }

    /// Longest-prefix match of `key`.
    ///
    /// This is the data plane's hot path, and in a large table every step is a cache miss.
    /// The walk therefore takes exactly `slot.height` steps, a count known as soon as the slot
    /// is read, and selects with masks rather than `if`s. No branch waits for a node to
    /// arrive from memory, so the CPU overlaps consecutive lookups' misses instead of stalling
    /// on a mispredicted loop exit in each.
    #[inline]
    fn lookup(&self, key: K) -> Option<V> {
        // An empty `slots` means the family holds nothing.
        let slot = self.slots.get(key.top(self.bits))?;
        // Best entry so far: to start, the covering short prefix (or the sentinel).
        let mut best = slot.short;
        let mut at = slot.root;
        for _ in 0..slot.height {
            let node = &self.nodes[at as usize];
            let covers = key.masked(node.cidr) == node.key;
            // All-ones when `node` covers `key`. A prefix that does not cover `key` has no
            // descendant that does, so the walk then idles on the sentinel.
            let covers_mask = 0u32.wrapping_sub(u32::from(covers));
            let entry_mask = 0u32.wrapping_sub(u32::from(covers & node.value.is_some()));
            best = (at & entry_mask) | (best & !entry_mask);
            at = node.children[key.bit(node.cidr)] & covers_mask;
        }
        self.nodes[best as usize].value
    }

    /// Index into `short_index` of the prefix `key/cidr`, for `cidr < bits`: a heap layout
    /// where length `c` occupies indices `2^c .. 2^(c+1)`.
    fn short_position(&self, key: K, cidr: u8) -> usize {
        (1 << cidr) | (key.top(self.bits) >> (self.bits - cidr))
    }

    /// The slots under the short prefix `key/cidr`.
    fn covered_slots(&self, key: K, cidr: u8) -> std::ops::Range<usize> {
        let first = key.top(self.bits);
        first..first + (1 << (self.bits - cidr))
    }

    fn alloc(&mut self, key: K, cidr: u8) -> u32 {
        if self.nodes.is_empty() {
            self.nodes.push(Node::sentinel());
        }
        let node = Node::new(key, cidr);
        if self.free != NONE {
            let index = self.free;
            self.free = self.nodes[index as usize].children[0];
            self.nodes[index as usize] = node;
            index
        } else {
            // Indices must leave the IPv6 tag bit free.
            let index = u32::try_from(self.nodes.len())
                .ok()
                .filter(|&index| index < V6_TAG)
                .expect("allowed-IPs arena is full");
            self.nodes.push(node);
            index
        }
    }

    fn release(&mut self, index: u32) {
        let free = self.free;
        let node = &mut self.nodes[index as usize];
        node.value = None;
        node.entry = NONE;
        node.height = 0;
        node.children = [free, NONE];
        self.free = index;
    }

    fn height(&self, index: u32) -> u8 {
        self.nodes[index as usize].height
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

    /// The link below `path`'s last node that leads towards `key`, or the slot's root.
    fn link_below(&self, path: &Path, key: K) -> Link {
        match path.last() {
            Some(parent) => Link::Child(parent, key.bit(self.nodes[parent as usize].cidr)),
            None => Link::Root(key.top(self.bits)),
        }
    }

    /// Recomputes the heights of the nodes on `path` (whose subtrees changed), and the slot's.
    fn fix_heights(&mut self, slot: usize, path: &Path) {
        for at in path.bottom_up() {
            let [a, b] = self.nodes[at as usize].children;
            let height = 1 + self.height(a).max(self.height(b));
            if self.height(at) == height {
                // Unchanged here, so unchanged above.
                break;
            }
            self.nodes[at as usize].height = height;
        }
        self.slots[slot].height = self.height(self.slots[slot].root);
    }

    /// The node of exactly `key/cidr` (`key` already masked), holding a value or not.
    fn find(&self, key: K, cidr: u8) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        if cidr < self.bits {
            let index = self.short_index[self.short_position(key, cidr)];
            return (index != NONE).then_some(index);
        }
        let mut at = self.slots[key.top(self.bits)].root;
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
    /// absent. The caller gives a new node its value and entry.
    fn find_or_create(&mut self, key: K, cidr: u8) -> u32 {
        if self.slots.is_empty() {
            let count = 1 << self.bits;
            self.slots = vec![EMPTY_SLOT; count];
            self.short_index = vec![NONE; count];
        }
        if cidr < self.bits {
            self.find_or_create_short(key, cidr)
        } else {
            self.find_or_create_in_slot(key, cidr)
        }
    }

    fn find_or_create_short(&mut self, key: K, cidr: u8) -> u32 {
        let position = self.short_position(key, cidr);
        if self.short_index[position] != NONE {
            return self.short_index[position];
        }
        let new = self.alloc(key, cidr);
        self.short_index[position] = new;
        // A slot covered by the new prefix now starts from it, unless a longer short prefix
        // already covers that slot. (None of equal length can: that would be this prefix.)
        for slot in self.covered_slots(key, cidr) {
            let current = self.slots[slot].short;
            if current == NONE || self.nodes[current as usize].cidr < cidr {
                self.slots[slot].short = new;
            }
        }
        new
    }

    fn find_or_create_in_slot(&mut self, key: K, cidr: u8) -> u32 {
        let slot = key.top(self.bits);
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

    /// Removes the entry of node `index` and frees what the structure no longer needs. The
    /// caller has taken the entry out of the per-value lists.
    fn remove_entry(&mut self, index: u32) {
        let node = &mut self.nodes[index as usize];
        node.value = None;
        node.entry = NONE;
        let (key, cidr) = (node.key, node.cidr);
        self.len -= 1;
        if cidr < self.bits {
            self.remove_short(index, key, cidr);
        } else {
            self.prune(index, key);
        }
    }

    fn remove_short(&mut self, index: u32, key: K, cidr: u8) {
        let position = self.short_position(key, cidr);
        self.short_index[position] = NONE;
        // Slots that started from this prefix start from the next shorter one covering it;
        // slots under a longer short prefix keep theirs.
        let parent = (0..cidr)
            .rev()
            .map(|shorter| self.short_index[self.short_position(key, shorter)])
            .find(|&node| node != NONE)
            .unwrap_or(NONE);
        for slot in self.covered_slots(key, cidr) {
            if self.slots[slot].short == index {
                self.slots[slot].short = parent;
            }
        }
        self.release(index);
    }

    /// Restores the trie invariants after node `index` (prefix `key/..`) lost its entry.
    fn prune(&mut self, index: u32, key: K) {
        let slot = key.top(self.bits);
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

    /// Resizes the first level if the number of prefixes calls for it (see `bits_for`),
    /// telling `entries` where each entry's node moved (`tag` marks the family).
    fn resize_if_needed(&mut self, entries: &mut [Entry], tag: u32) {
        if self.len == 0 {
            // Give all memory back.
            *self = Family::new();
            return;
        }
        let wanted = bits_for(self.len);
        if wanted > self.bits || wanted + SHRINK_SLACK < self.bits {
            self.rebuild(wanted, entries, tag);
        }
    }

    /// Rebuilds the family with a first level of `bits` bits by reinserting every entry.
    ///
    /// Entries go in in address order (short prefixes, then each slot's trie depth first),
    /// so that the new arena keeps each slot's nodes together.
    fn rebuild(&mut self, bits: u8, entries: &mut [Entry], tag: u32) {
        let old = std::mem::replace(self, Family::new());
        self.bits = bits;
        self.nodes.reserve(old.nodes.len());
        let mut order: Vec<u32> = Vec::with_capacity(old.len);
        order.extend(old.short_index.iter().filter(|&&at| at != NONE));
        let mut stack = Vec::new();
        for slot in &old.slots {
            stack.push(slot.root);
            while let Some(at) = stack.pop() {
                if at != NONE {
                    order.push(at);
                    let [left, right] = old.nodes[at as usize].children;
                    stack.extend([right, left]);
                }
            }
        }
        for at in order {
            let node = &old.nodes[at as usize];
            if let Some(value) = node.value {
                let index = self.find_or_create(node.key, node.cidr);
                let new = &mut self.nodes[index as usize];
                new.value = Some(value);
                new.entry = node.entry;
                entries[node.entry as usize].node = index | tag;
            }
        }
        self.len = old.len;
    }
}

/// A prefix's place in its value's list, and where its node is.
#[derive(Debug, Clone, Copy)]
struct Entry {
    /// Arena index of the node, with `V6_TAG` set for the IPv6 family.
    node: u32,
    prev: u32,
    next: u32,
}

const FREE_ENTRY: Entry = Entry {
    node: NONE,
    prev: NONE,
    next: NONE,
};

/// Head of one value's list of entries, in insertion order.
#[derive(Debug, Clone, Copy)]
struct Chain {
    head: u32,
    tail: u32,
    len: usize,
}

/// The per-value lists: the entry table and each value's chain through it.
#[derive(Debug, Clone)]
struct Lists<V> {
    /// Index 0 is unused (`NONE`); free entries are linked through `next`.
    entries: Vec<Entry>,
    free: u32,
    chains: HashMap<V, Chain>,
}

impl<V: Copy + Eq + Hash> Lists<V> {
    fn new() -> Self {
        Lists {
            entries: Vec::new(),
            free: NONE,
            chains: HashMap::new(),
        }
    }

    /// A new entry for node `node` (tagged), appended to `value`'s list.
    fn push(&mut self, value: V, node: u32) -> u32 {
        if self.entries.is_empty() {
            self.entries.push(FREE_ENTRY);
        }
        let entry = Entry { node, ..FREE_ENTRY };
        let index = if self.free != NONE {
            let index = self.free;
            self.free = self.entries[index as usize].next;
            self.entries[index as usize] = entry;
            index
        } else {
            let index = u32::try_from(self.entries.len()).expect("allowed-IPs table is full");
            self.entries.push(entry);
            index
        };
        self.append(value, index);
        index
    }

    /// Returns entry `entry`, already out of any list, to the free list.
    fn release(&mut self, entry: u32) {
        self.entries[entry as usize] = Entry {
            next: self.free,
            ..FREE_ENTRY
        };
        self.free = entry;
    }

    /// Appends `entry` to the end of `value`'s list.
    fn append(&mut self, value: V, entry: u32) {
        let chain = self.chains.entry(value).or_insert(Chain {
            head: NONE,
            tail: NONE,
            len: 0,
        });
        let old_tail = chain.tail;
        chain.tail = entry;
        if old_tail == NONE {
            chain.head = entry;
        }
        chain.len += 1;
        let links = &mut self.entries[entry as usize];
        links.prev = old_tail;
        links.next = NONE;
        if old_tail != NONE {
            self.entries[old_tail as usize].next = entry;
        }
    }

    /// Takes `entry` out of `value`'s list, dropping the list when it empties.
    fn unlink(&mut self, value: V, entry: u32) {
        let Entry { prev, next, .. } = self.entries[entry as usize];
        if prev != NONE {
            self.entries[prev as usize].next = next;
        }
        if next != NONE {
            self.entries[next as usize].prev = prev;
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

/// The cryptokey-routing table: longest-prefix match from IP addresses to values (peers).
///
/// IPv4 and IPv6 are independent tables; an IPv4-mapped IPv6 address is an ordinary IPv6
/// address. Lookups never allocate.
#[derive(Clone)]
pub struct AllowedIps<V> {
    v4: Family<u32, V>,
    v6: Family<u128, V>,
    lists: Lists<V>,
}

impl<V> fmt::Debug for AllowedIps<V> {
    /// A summary: the internals run to megabytes in a large table.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AllowedIps")
            .field("ipv4_prefixes", &self.v4.len)
            .field("ipv6_prefixes", &self.v6.len)
            .finish_non_exhaustive()
    }
}

impl<V: Copy + Eq + Hash> Default for AllowedIps<V> {
    fn default() -> Self {
        Self::new()
    }
}

impl<V: Copy + Eq + Hash> AllowedIps<V> {
    /// An empty table. Allocates nothing until the first insertion.
    pub fn new() -> Self {
        AllowedIps {
            v4: Family::new(),
            v6: Family::new(),
            lists: Lists::new(),
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
    /// Cost: O(prefix length), amortized over the occasional rebuild of the family's first
    /// level (linear in the family, when its prefix count reaches the slot count). A prefix
    /// shorter than the first level's width (so at most /21) also updates the slots it
    /// covers: for a /0, the whole first level, about one slot per prefix of the family.
    ///
    /// # Errors
    /// [`InvalidCidr`] if `cidr` exceeds 32 for IPv4 or 128 for IPv6; the table is unchanged.
    pub fn insert(&mut self, addr: IpAddr, cidr: u8, value: V) -> Result<(), InvalidCidr> {
        match addr {
            IpAddr::V4(a) => {
                let key = checked_key(u32::from(a), cidr)?;
                insert_into(&mut self.v4, &mut self.lists, 0, key, cidr, value);
            }
            IpAddr::V6(a) => {
                let key = checked_key(u128::from(a), cidr)?;
                insert_into(&mut self.v6, &mut self.lists, V6_TAG, key, cidr, value);
            }
        }
        Ok(())
    }

    /// Removes `addr/cidr` (host bits ignored) if it is in the table and belongs to `value`.
    /// Returns whether it was removed; an absent prefix, one owned by another value, or an
    /// out-of-range `cidr` leaves the table unchanged and returns `false`.
    pub fn remove(&mut self, addr: IpAddr, cidr: u8, value: V) -> bool {
        match addr {
            IpAddr::V4(a) => checked_key(u32::from(a), cidr)
                .is_ok_and(|key| remove_from(&mut self.v4, &mut self.lists, 0, key, cidr, value)),
            IpAddr::V6(a) => checked_key(u128::from(a), cidr).is_ok_and(|key| {
                remove_from(&mut self.v6, &mut self.lists, V6_TAG, key, cidr, value)
            }),
        }
    }

    /// Removes every prefix belonging to `value` (peer removal, or the first half of
    /// replacing a peer's allowed IPs). Returns how many were removed. Takes time linear in
    /// `value`'s prefixes, independent of the rest of the table (unless a family shrinks
    /// enough to have its first level rebuilt, which is amortized as for insertion).
    pub fn remove_value(&mut self, value: V) -> usize {
        let Some(chain) = self.lists.chains.remove(&value) else {
            return 0;
        };
        let mut at = chain.head;
        while at != NONE {
            let Entry { node, next, .. } = self.lists.entries[at as usize];
            if node & V6_TAG == 0 {
                self.v4.remove_entry(node);
            } else {
                self.v6.remove_entry(node & !V6_TAG);
            }
            self.lists.release(at);
            at = next;
        }
        self.v4.resize_if_needed(&mut self.lists.entries, 0);
        self.v6.resize_if_needed(&mut self.lists.entries, V6_TAG);
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
        let chain = self.lists.chains.get(&value);
        PrefixesOf {
            table: self,
            at: chain.map_or(NONE, |c| c.head),
            remaining: chain.map_or(0, |c| c.len),
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

/// [`AllowedIps::insert`] for one family; `tag` marks the family in entries.
fn insert_into<K: Key, V: Copy + Eq + Hash>(
    family: &mut Family<K, V>,
    lists: &mut Lists<V>,
    tag: u32,
    key: K,
    cidr: u8,
    value: V,
) {
    let index = family.find_or_create(key, cidr);
    let node = &mut family.nodes[index as usize];
    match node.value {
        Some(old) if old == value => {}
        Some(old) => {
            node.value = Some(value);
            let entry = node.entry;
            lists.unlink(old, entry);
            lists.append(value, entry);
        }
        None => {
            // A new node, or an existing branch node of the same prefix: a new entry.
            node.value = Some(value);
            node.entry = lists.push(value, index | tag);
            family.len += 1;
            family.resize_if_needed(&mut lists.entries, tag);
        }
    }
}

/// [`AllowedIps::remove`] for one family; `tag` marks the family in entries.
fn remove_from<K: Key, V: Copy + Eq + Hash>(
    family: &mut Family<K, V>,
    lists: &mut Lists<V>,
    tag: u32,
    key: K,
    cidr: u8,
    value: V,
) -> bool {
    let Some(index) = family.find(key, cidr) else {
        return false;
    };
    let node = &family.nodes[index as usize];
    if node.value != Some(value) {
        return false;
    }
    let entry = node.entry;
    lists.unlink(value, entry);
    lists.release(entry);
    family.remove_entry(index);
    family.resize_if_needed(&mut lists.entries, tag);
    true
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
        let Entry { node, next, .. } = self.table.lists.entries[self.at as usize];
        let item = if node & V6_TAG == 0 {
            let node = &self.table.v4.nodes[node as usize];
            (node.key.to_ip(), node.cidr)
        } else {
            let node = &self.table.v6.nodes[(node & !V6_TAG) as usize];
            (node.key.to_ip(), node.cidr)
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

impl<V: Copy + Eq + Hash> FusedIterator for PrefixesOf<'_, V> {}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fmt::Debug;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("test address")
    }

    fn listing<V: Copy + Eq + Hash>(table: &AllowedIps<V>, value: V) -> Vec<(IpAddr, u8)> {
        table.prefixes_of(value).collect()
    }

    fn prefixes(items: &[(&str, u8)]) -> Vec<(IpAddr, u8)> {
        items.iter().map(|&(a, c)| (ip(a), c)).collect()
    }

    // ---- structural invariants ----

    impl<K: Key, V: Copy + Eq + Debug> Family<K, V> {
        /// Panics unless every structural invariant holds; returns nothing.
        fn check(&self, entries: &[Entry], tag: u32) {
            if self.slots.is_empty() {
                assert_eq!(self.len, 0, "entries without a first level");
                assert!(self.nodes.is_empty(), "nodes without a first level");
                return;
            }
            assert_eq!(self.slots.len(), 1 << self.bits);
            assert_eq!(self.short_index.len(), 1 << self.bits);
            let wanted = bits_for(self.len);
            assert!(
                wanted <= self.bits && self.bits <= wanted + SHRINK_SLACK,
                "first level of {} bits for {} prefixes",
                self.bits,
                self.len
            );
            let sentinel = &self.nodes[0];
            assert!(sentinel.value.is_none() && sentinel.children == [NONE; 2]);
            assert_eq!((sentinel.height, sentinel.entry), (0, NONE));

            let mut seen = vec![false; self.nodes.len()];
            seen[0] = true;
            let mut found = 0;
            let mut check_entry = |at: u32, node: &Node<K, V>| {
                assert_eq!(node.value.is_some(), node.entry != NONE, "entry link");
                if node.value.is_some() {
                    assert_eq!(
                        entries[node.entry as usize].node,
                        at | tag,
                        "entry back-link"
                    );
                    found += 1;
                }
            };
            for (index, slot) in self.slots.iter().enumerate() {
                assert_eq!(slot.height, self.height(slot.root), "slot height");
                let mut stack = vec![(slot.root, None::<(K, u8, usize)>)];
                while let Some((at, parent)) = stack.pop() {
                    if at == NONE {
                        continue;
                    }
                    assert!(!seen[at as usize], "node reachable twice");
                    seen[at as usize] = true;
                    let node = &self.nodes[at as usize];
                    assert!(node.cidr >= self.bits && node.cidr <= K::BITS);
                    assert_eq!(node.key.masked(node.cidr), node.key, "host bits set");
                    assert_eq!(node.key.top(self.bits), index, "node in the wrong slot");
                    if let Some((parent_key, parent_cidr, side)) = parent {
                        assert!(node.cidr > parent_cidr);
                        assert_eq!(node.key.masked(parent_cidr), parent_key);
                        assert_eq!(node.key.bit(parent_cidr), side);
                    }
                    let [a, b] = node.children;
                    assert!(
                        node.value.is_some() || (a != NONE && b != NONE),
                        "useless node"
                    );
                    assert_eq!(node.height, 1 + self.height(a).max(self.height(b)));
                    check_entry(at, node);
                    stack.push((a, Some((node.key, node.cidr, 0))));
                    stack.push((b, Some((node.key, node.cidr, 1))));
                }
            }
            let mut expected_short = vec![NONE; self.slots.len()];
            let mut shorts = Vec::new();
            for (position, &at) in self.short_index.iter().enumerate() {
                if at == NONE {
                    continue;
                }
                assert!(!seen[at as usize], "node reachable twice");
                seen[at as usize] = true;
                let node = &self.nodes[at as usize];
                assert!(node.cidr < self.bits);
                assert_eq!(node.key.masked(node.cidr), node.key, "host bits set");
                assert_eq!(self.short_position(node.key, node.cidr), position);
                assert!(node.value.is_some() && node.children == [NONE; 2]);
                check_entry(at, node);
                shorts.push(at);
            }
            shorts.sort_by_key(|&at| self.nodes[at as usize].cidr);
            for at in shorts {
                let node = &self.nodes[at as usize];
                for slot in self.covered_slots(node.key, node.cidr) {
                    expected_short[slot] = at;
                }
            }
            for (slot, expected) in self.slots.iter().zip(expected_short) {
                assert_eq!(slot.short, expected, "slot's covering short prefix");
            }
            assert_eq!(found, self.len, "entry count");
            let mut at = self.free;
            while at != NONE {
                assert!(!seen[at as usize], "free node in use");
                seen[at as usize] = true;
                assert!(self.nodes[at as usize].value.is_none());
                at = self.nodes[at as usize].children[0];
            }
            assert!(seen.iter().all(|&s| s), "leaked node");
        }
    }

    fn check_invariants<V: Copy + Eq + Hash + Debug>(table: &AllowedIps<V>) {
        table.v4.check(&table.lists.entries, 0);
        table.v6.check(&table.lists.entries, V6_TAG);
        let lists = &table.lists;
        let mut total = 0;
        for (value, chain) in &lists.chains {
            assert!(chain.len > 0, "empty chain kept");
            let (mut prev, mut at, mut count) = (NONE, chain.head, 0);
            while at != NONE {
                let entry = lists.entries[at as usize];
                assert_eq!(entry.prev, prev, "broken back link");
                let node = if entry.node & V6_TAG == 0 {
                    let n = &table.v4.nodes[entry.node as usize];
                    (n.value, n.entry)
                } else {
                    let n = &table.v6.nodes[(entry.node & !V6_TAG) as usize];
                    (n.value, n.entry)
                };
                assert_eq!(node, (Some(*value), at), "entry in the wrong chain");
                prev = at;
                at = entry.next;
                count += 1;
            }
            assert_eq!(chain.tail, prev);
            assert_eq!(count, chain.len);
            total += count;
        }
        assert_eq!(total, table.len());
        let mut free = 0;
        let mut at = lists.free;
        while at != NONE {
            free += 1;
            at = lists.entries[at as usize].next;
        }
        if !lists.entries.is_empty() {
            assert_eq!(lists.entries.len(), total + free + 1, "leaked entry");
        }
    }

    // ---- the reference model ----

    /// Masks `addr` to `cidr` bits with plain integer arithmetic, independently of the table.
    fn model_mask(addr: IpAddr, cidr: u8) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let keep = if cidr == 0 {
                    0
                } else {
                    u32::MAX << (32 - cidr)
                };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & keep))
            }
            IpAddr::V6(a) => {
                let keep = if cidr == 0 {
                    0
                } else {
                    u128::MAX << (128 - cidr)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & keep))
            }
        }
    }

    fn max_cidr(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }

    /// A naive table: entries in order, with reassignment moving an entry to the end.
    #[derive(Debug, Default)]
    struct Model {
        entries: Vec<(IpAddr, u8, u8)>,
    }

    impl Model {
        fn insert(&mut self, addr: IpAddr, cidr: u8, value: u8) -> bool {
            if cidr > max_cidr(addr) {
                return false;
            }
            let prefix = model_mask(addr, cidr);
            match self
                .entries
                .iter()
                .position(|&(p, c, _)| p == prefix && c == cidr)
            {
                Some(i) if self.entries[i].2 == value => {}
                Some(i) => {
                    self.entries.remove(i);
                    self.entries.push((prefix, cidr, value));
                }
                None => self.entries.push((prefix, cidr, value)),
            }
            true
        }

        fn remove(&mut self, addr: IpAddr, cidr: u8, value: u8) -> bool {
            if cidr > max_cidr(addr) {
                return false;
            }
            let prefix = model_mask(addr, cidr);
            let found = self
                .entries
                .iter()
                .position(|&e| e == (prefix, cidr, value));
            found.map(|i| self.entries.remove(i)).is_some()
        }

        fn remove_value(&mut self, value: u8) -> usize {
            let before = self.entries.len();
            self.entries.retain(|e| e.2 != value);
            before - self.entries.len()
        }

        fn lookup(&self, addr: IpAddr) -> Option<u8> {
            self.entries
                .iter()
                .filter(|&&(p, c, _)| p.is_ipv4() == addr.is_ipv4() && model_mask(addr, c) == p)
                .max_by_key(|e| e.1)
                .map(|e| e.2)
        }

        fn prefixes_of(&self, value: u8) -> Vec<(IpAddr, u8)> {
            let mine = self.entries.iter().filter(|e| e.2 == value);
            mine.map(|&(p, c, _)| (p, c)).collect()
        }
    }

    /// Checks one lookup through every entry point against the model.
    fn check_lookup(table: &AllowedIps<u8>, model: &Model, addr: IpAddr) {
        let expected = model.lookup(addr);
        assert_eq!(table.lookup(addr), expected, "lookup {addr}");
        let raw = match addr {
            IpAddr::V4(a) => table.lookup_v4(&a.octets()),
            IpAddr::V6(a) => table.lookup_v6(&a.octets()),
        };
        assert_eq!(raw, expected, "raw lookup {addr}");
    }

    /// Addresses near `addr`: itself, its last and first bit flipped, its host bits all set.
    fn probes(addr: IpAddr) -> [IpAddr; 4] {
        match addr {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                [a, a ^ 1, a ^ (1 << 31), a | 0xff].map(|x| IpAddr::V4(x.into()))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                [a, a ^ 1, a ^ (1 << 127), a | 0xffff].map(|x| IpAddr::V6(x.into()))
            }
        }
    }

    /// A deterministic pseudo-random generator for the non-proptest tests (xorshift64*).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    // ---- unit tests ----

    #[test]
    fn empty_table_finds_nothing() {
        let table = AllowedIps::<u8>::new();
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        assert_eq!(table.lookup(ip("10.0.0.1")), None);
        assert_eq!(table.lookup_v6(&[0; 16]), None);
        assert_eq!(table.prefixes_of(1).count(), 0);
        check_invariants(&table);
    }

    #[test]
    fn overlapping_ipv4_prefixes_pick_the_longest() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 'a').unwrap();
        table.insert(ip("10.1.0.0"), 16, 'b').unwrap();
        table.insert(ip("10.1.1.1"), 32, 'c').unwrap();
        check_invariants(&table);
        assert_eq!(table.len(), 3);
        assert_eq!(table.lookup(ip("10.1.1.1")), Some('c'));
        assert_eq!(table.lookup(ip("10.1.1.2")), Some('b'));
        assert_eq!(table.lookup(ip("10.1.255.255")), Some('b'));
        assert_eq!(table.lookup(ip("10.2.0.1")), Some('a'));
        assert_eq!(table.lookup(ip("10.0.0.0")), Some('a'));
        assert_eq!(table.lookup(ip("10.255.255.255")), Some('a'));
        assert_eq!(table.lookup(ip("11.0.0.0")), None);
        assert_eq!(table.lookup(ip("9.255.255.255")), None);
        assert_eq!(table.lookup_v4(&[10, 1, 1, 1]), Some('c'));
        assert_eq!(table.lookup_v4(&[10, 1, 2, 1]), Some('b'));

        // Inserted in the other order, the answers are the same.
        let mut reversed = AllowedIps::new();
        reversed.insert(ip("10.1.1.1"), 32, 'c').unwrap();
        reversed.insert(ip("10.1.0.0"), 16, 'b').unwrap();
        reversed.insert(ip("10.0.0.0"), 8, 'a').unwrap();
        check_invariants(&reversed);
        for probe in ["10.1.1.1", "10.1.1.2", "10.2.0.1", "11.0.0.0"] {
            assert_eq!(
                reversed.lookup(ip(probe)),
                table.lookup(ip(probe)),
                "{probe}"
            );
        }
    }

    #[test]
    fn kernel_selftest_style_ipv4_and_ipv6() {
        let mut table = AllowedIps::new();
        let (a, b, c, d, e, f, g, h) = (1, 2, 3, 4, 5, 6, 7, 8);
        table.insert(ip("192.168.4.0"), 24, a).unwrap();
        table.insert(ip("192.168.4.4"), 32, b).unwrap();
        table.insert(ip("192.168.0.0"), 16, c).unwrap();
        table.insert(ip("192.95.5.64"), 27, d).unwrap();
        // This one overwrites the previous insertion of the same prefix.
        table.insert(ip("192.95.5.65"), 27, c).unwrap();
        table.insert(ip("2607:5300:60:6b00::"), 64, d).unwrap();
        table
            .insert(ip("2607:5300:60:6b00::c05f:543"), 128, e)
            .unwrap();
        table.insert(ip("2607:5300:60:6b00::"), 56, f).unwrap();
        table.insert(ip("2001:db8::"), 32, g).unwrap();
        table.insert(ip("2001:db8:1234::"), 48, h).unwrap();
        check_invariants(&table);
        assert_eq!(table.len(), 9);

        assert_eq!(table.lookup(ip("192.168.4.20")), Some(a));
        assert_eq!(table.lookup(ip("192.168.4.0")), Some(a));
        assert_eq!(table.lookup(ip("192.168.4.4")), Some(b));
        assert_eq!(table.lookup(ip("192.168.200.182")), Some(c));
        assert_eq!(table.lookup(ip("192.95.5.68")), Some(c));
        assert_eq!(table.lookup(ip("192.95.5.96")), None);
        assert_eq!(table.lookup(ip("2607:5300:60:6b00::c05f:543")), Some(e));
        assert_eq!(table.lookup(ip("2607:5300:60:6b00::c02e:1ee")), Some(d));
        assert_eq!(table.lookup(ip("2607:5300:60:6bff::")), Some(f));
        assert_eq!(table.lookup(ip("2607:5300:60:6c00::")), None);
        assert_eq!(table.lookup(ip("2001:db8:1234::1")), Some(h));
        assert_eq!(table.lookup(ip("2001:db8:1235::1")), Some(g));
        assert_eq!(table.lookup(ip("2001:db9::")), None);
        assert_eq!(listing(&table, d), prefixes(&[("2607:5300:60:6b00::", 64)]));
        assert_eq!(
            listing(&table, c),
            prefixes(&[("192.168.0.0", 16), ("192.95.5.64", 27)])
        );
    }

    #[test]
    fn default_routes_match_everything_of_their_family_only() {
        let mut table = AllowedIps::new();
        table.insert(ip("0.0.0.0"), 0, 1u8).unwrap();
        for probe in ["0.0.0.0", "1.2.3.4", "128.0.0.0", "255.255.255.255"] {
            assert_eq!(table.lookup(ip(probe)), Some(1), "{probe}");
        }
        assert_eq!(table.lookup(ip("::")), None);
        assert_eq!(table.lookup(ip("2001:db8::1")), None);

        table.insert(ip("::"), 0, 2).unwrap();
        table.insert(ip("10.0.0.0"), 8, 3).unwrap();
        check_invariants(&table);
        assert_eq!(table.lookup(ip("2001:db8::1")), Some(2));
        assert_eq!(table.lookup(ip("ffff:ffff::")), Some(2));
        assert_eq!(table.lookup(ip("10.20.30.40")), Some(3));
        assert_eq!(table.lookup(ip("11.20.30.40")), Some(1));

        // Host bits given with a /0 are ignored too.
        table.insert(ip("1.2.3.4"), 0, 4).unwrap();
        assert_eq!(listing(&table, 4), prefixes(&[("0.0.0.0", 0)]));
        assert_eq!(table.lookup(ip("11.20.30.40")), Some(4));
        assert!(table.remove(ip("0.0.0.0"), 0, 4));
        assert_eq!(table.lookup(ip("11.20.30.40")), None);
        assert_eq!(table.lookup(ip("10.20.30.40")), Some(3));
        check_invariants(&table);
    }

    #[test]
    fn ipv4_mapped_ipv6_addresses_are_not_ipv4() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        assert_eq!(table.lookup(ip("::ffff:10.0.0.1")), None);
        table.insert(ip("::ffff:192.168.0.0"), 112, 2).unwrap();
        assert_eq!(table.lookup(ip("192.168.0.1")), None);
        assert_eq!(table.lookup(ip("::ffff:192.168.0.1")), Some(2));
        assert_eq!(table.lookup(ip("10.0.0.1")), Some(1));
        assert!(!table.remove(ip("::ffff:10.0.0.0"), 104, 1));
        check_invariants(&table);
    }

    #[test]
    fn host_bits_are_masked_off() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.9.9.9"), 24, 1u8).unwrap();
        table.insert(ip("2001:db8::dead:beef"), 64, 1).unwrap();
        assert_eq!(
            listing(&table, 1),
            prefixes(&[("10.9.9.0", 24), ("2001:db8::", 64)])
        );
        assert_eq!(table.lookup(ip("10.9.9.200")), Some(1));
        assert_eq!(table.lookup(ip("10.9.10.1")), None);
        assert_eq!(table.lookup(ip("2001:db8::1")), Some(1));
        // The same prefix written with other host bits is the same prefix.
        table.insert(ip("10.9.9.1"), 24, 1).unwrap();
        assert_eq!(table.len(), 2);
        assert!(table.remove(ip("10.9.9.77"), 24, 1));
        assert!(table.remove(ip("2001:db8::1"), 64, 1));
        assert!(table.is_empty());
        check_invariants(&table);
    }

    #[test]
    fn reassignment_moves_a_prefix_to_the_end_of_the_new_value() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 24, 'a').unwrap();
        table.insert(ip("10.0.1.0"), 24, 'a').unwrap();
        table.insert(ip("fd00::"), 64, 'a').unwrap();
        table.insert(ip("10.0.2.0"), 24, 'a').unwrap();
        table.insert(ip("192.168.0.1"), 32, 'b').unwrap();

        table.insert(ip("10.0.1.0"), 24, 'b').unwrap();
        table.insert(ip("fd00::"), 64, 'b').unwrap();
        check_invariants(&table);
        assert_eq!(table.len(), 5);
        assert_eq!(
            listing(&table, 'a'),
            prefixes(&[("10.0.0.0", 24), ("10.0.2.0", 24)])
        );
        assert_eq!(
            listing(&table, 'b'),
            prefixes(&[("192.168.0.1", 32), ("10.0.1.0", 24), ("fd00::", 64)])
        );
        assert_eq!(table.lookup(ip("10.0.1.7")), Some('b'));
        assert_eq!(table.lookup(ip("fd00::7")), Some('b'));
        assert_eq!(table.lookup(ip("10.0.2.7")), Some('a'));

        // Reassigning a value's last prefix removes the value from the listings entirely.
        table.insert(ip("192.168.0.1"), 32, 'c').unwrap();
        table.insert(ip("10.0.1.0"), 24, 'c').unwrap();
        table.insert(ip("fd00::"), 64, 'c').unwrap();
        assert_eq!(listing(&table, 'b'), vec![]);
        assert_eq!(table.prefixes_of('c').len(), 3);
        check_invariants(&table);
    }

    #[test]
    fn reinserting_for_the_same_value_keeps_the_position() {
        let mut table = AllowedIps::new();
        for (addr, cidr) in [("10.0.0.1", 32), ("10.0.0.2", 32), ("10.0.0.3", 32)] {
            table.insert(ip(addr), cidr, 7u8).unwrap();
        }
        table.insert(ip("10.0.0.1"), 32, 7).unwrap();
        assert_eq!(
            listing(&table, 7),
            prefixes(&[("10.0.0.1", 32), ("10.0.0.2", 32), ("10.0.0.3", 32)])
        );
        assert_eq!(table.len(), 3);
        check_invariants(&table);
    }

    #[test]
    fn remove_only_removes_a_prefix_owned_by_the_value() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        table.insert(ip("10.1.0.0"), 16, 2).unwrap();
        assert!(
            !table.remove(ip("10.1.0.0"), 16, 1),
            "owned by another value"
        );
        assert!(!table.remove(ip("10.1.0.0"), 17, 2), "other length");
        assert!(!table.remove(ip("10.2.0.0"), 16, 2), "absent");
        assert!(!table.remove(ip("::a01:0"), 112, 2), "other family");
        assert_eq!(table.lookup(ip("10.1.2.3")), Some(2));
        assert!(table.remove(ip("10.1.0.0"), 16, 2));
        assert!(!table.remove(ip("10.1.0.0"), 16, 2), "already removed");
        assert_eq!(table.lookup(ip("10.1.2.3")), Some(1));
        assert_eq!(listing(&table, 2), vec![]);
        assert_eq!(table.len(), 1);
        check_invariants(&table);
    }

    #[test]
    fn removing_an_inner_prefix_keeps_the_ones_around_it() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        table.insert(ip("10.1.0.0"), 16, 2).unwrap();
        table.insert(ip("10.1.1.0"), 24, 3).unwrap();
        table.insert(ip("10.1.128.0"), 24, 4).unwrap();
        assert!(table.remove(ip("10.1.0.0"), 16, 2));
        check_invariants(&table);
        assert_eq!(table.lookup(ip("10.1.1.1")), Some(3));
        assert_eq!(table.lookup(ip("10.1.128.1")), Some(4));
        assert_eq!(table.lookup(ip("10.1.2.1")), Some(1));
        assert!(table.remove(ip("10.1.1.0"), 24, 3));
        check_invariants(&table);
        assert_eq!(table.lookup(ip("10.1.1.1")), Some(1));
        assert_eq!(table.lookup(ip("10.1.128.1")), Some(4));
    }

    #[test]
    fn remove_value_removes_all_of_its_prefixes_and_nothing_else() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        table.insert(ip("10.1.0.0"), 16, 2).unwrap();
        table.insert(ip("10.1.1.1"), 32, 2).unwrap();
        table.insert(ip("2001:db8::"), 32, 2).unwrap();
        table.insert(ip("0.0.0.0"), 0, 2).unwrap();
        table.insert(ip("2001:db8::1"), 128, 3).unwrap();
        assert_eq!(table.remove_value(2), 4);
        assert_eq!(table.remove_value(2), 0);
        assert_eq!(table.remove_value(9), 0);
        check_invariants(&table);
        assert_eq!(table.len(), 2);
        assert_eq!(listing(&table, 2), vec![]);
        assert_eq!(table.lookup(ip("10.1.1.1")), Some(1));
        assert_eq!(table.lookup(ip("11.0.0.1")), None);
        assert_eq!(table.lookup(ip("2001:db8::1")), Some(3));
        assert_eq!(table.lookup(ip("2001:db8::2")), None);
        assert_eq!(listing(&table, 1), prefixes(&[("10.0.0.0", 8)]));
        // The value can be given prefixes again afterwards.
        table.insert(ip("10.1.1.1"), 32, 2).unwrap();
        assert_eq!(table.lookup(ip("10.1.1.1")), Some(2));
        check_invariants(&table);
    }

    #[test]
    fn listing_follows_insertion_order_across_families() {
        let mut table = AllowedIps::new();
        let order = [
            ("fd00::1", 128),
            ("10.0.0.0", 8),
            ("0.0.0.0", 0),
            ("192.168.1.0", 24),
            ("::", 0),
            ("10.0.0.1", 32),
            ("fe80::", 10),
        ];
        for &(addr, cidr) in &order {
            table.insert(ip(addr), cidr, 5u8).unwrap();
            table.insert(ip("172.16.0.0"), 12, 6).unwrap();
        }
        assert_eq!(listing(&table, 5), prefixes(&order));
        assert_eq!(listing(&table, 6), prefixes(&[("172.16.0.0", 12)]));
        let mut iter = table.prefixes_of(5);
        assert_eq!(iter.len(), order.len());
        iter.next();
        assert_eq!(iter.len(), order.len() - 1);
        check_invariants(&table);
    }

    #[test]
    fn cidr_out_of_range_is_an_error_and_changes_nothing() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        assert_eq!(
            table.insert(ip("10.0.0.0"), 33, 2),
            Err(InvalidCidr { cidr: 33, max: 32 })
        );
        assert_eq!(
            table.insert(ip("::"), 129, 2),
            Err(InvalidCidr {
                cidr: 129,
                max: 128
            })
        );
        assert_eq!(
            table.insert(ip("::"), 255, 2),
            Err(InvalidCidr {
                cidr: 255,
                max: 128
            })
        );
        assert!(!table.remove(ip("10.0.0.0"), 33, 1));
        assert!(!table.remove(ip("10.0.0.0"), 255, 1));
        assert!(!table.remove(ip("::"), 129, 1));
        assert_eq!(table.len(), 1);
        assert_eq!(listing(&table, 2), vec![]);
        assert_eq!(table.lookup(ip("10.1.2.3")), Some(1));
        check_invariants(&table);
        let message = InvalidCidr { cidr: 33, max: 32 }.to_string();
        assert!(
            message.contains("/33") && message.contains("/32"),
            "{message}"
        );
    }

    #[test]
    fn clear_empties_the_table() {
        let mut table = AllowedIps::new();
        table.insert(ip("10.0.0.0"), 8, 1u8).unwrap();
        table.insert(ip("::"), 0, 2).unwrap();
        assert_eq!(
            format!("{table:?}"),
            "AllowedIps { ipv4_prefixes: 1, ipv6_prefixes: 1, .. }"
        );
        table.clear();
        assert!(table.is_empty());
        assert_eq!(table.lookup(ip("10.0.0.1")), None);
        assert_eq!(table.lookup(ip("::1")), None);
        assert_eq!(listing(&table, 1), vec![]);
        table.insert(ip("10.0.0.0"), 8, 3).unwrap();
        assert_eq!(table.lookup(ip("10.0.0.1")), Some(3));
        check_invariants(&table);
    }

    /// Every length from /0 to /128 on one address: the deepest possible chain.
    #[test]
    fn full_length_chains_in_both_families() {
        for (full, width) in [(ip("255.255.255.255"), 32u8), (ip("ffff::ffff:ffff"), 128)] {
            let mut table = AllowedIps::new();
            let mut model = Model::default();
            for cidr in (0..=width).rev() {
                table.insert(full, cidr, cidr).unwrap();
                model.insert(full, cidr, cidr);
            }
            check_invariants(&table);
            let probe = |index: u8| match full {
                IpAddr::V4(a) => IpAddr::V4((u32::from(a) ^ (1 << (31 - index))).into()),
                IpAddr::V6(a) => IpAddr::V6((u128::from(a) ^ (1 << (127 - index))).into()),
            };
            assert_eq!(table.lookup(full), Some(width));
            for index in 0..width {
                // Differs from `full` first at bit `index`: the /index prefix is the longest.
                assert_eq!(table.lookup(probe(index)), Some(index));
            }
            // Remove in a scrambled order, comparing with the model as the chain breaks up.
            let mut rng = XorShift(u64::from(width));
            let mut order: Vec<u8> = (0..=width).collect();
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
            for cidr in order {
                assert!(table.remove(full, cidr, cidr));
                model.remove(full, cidr, cidr);
                check_invariants(&table);
                check_lookup(&table, &model, full);
                for index in (0..width).step_by(7) {
                    check_lookup(&table, &model, probe(index));
                }
            }
            assert!(table.is_empty());
        }
    }

    /// Thousands of random prefixes: growing and shrinking the first level keeps every
    /// answer and every listing.
    #[test]
    fn many_random_prefixes_match_the_model_while_growing_and_shrinking() {
        let mut rng = XorShift(0x5eed);
        let mut table = AllowedIps::new();
        let mut model = Model::default();
        let random_prefix = |rng: &mut XorShift| -> (IpAddr, u8) {
            if rng.below(4) == 0 {
                // IPv6 within 2001:db8::/32 and fd00::/8, lengths /0../128.
                let base = if rng.below(2) == 0 {
                    0x2001_0db8u128 << 96
                } else {
                    0xfdu128 << 120
                };
                let low = ((u128::from(rng.next()) << 64) | u128::from(rng.next())) >> 32;
                (IpAddr::V6((base | low).into()), rng.below(129) as u8)
            } else {
                // IPv4 within 10.0.0.0/8 and a few others, lengths /0../32.
                let first = [10u32, 10, 10, 192, 172, 1][rng.below(6) as usize];
                let addr = (first << 24) | (rng.next() as u32 >> 8);
                (IpAddr::V4(addr.into()), rng.below(33) as u8)
            }
        };
        for _ in 0..4000 {
            let (addr, cidr) = random_prefix(&mut rng);
            let value = rng.below(40) as u8;
            table.insert(addr, cidr, value).unwrap();
            model.insert(addr, cidr, value);
        }
        check_invariants(&table);
        assert_eq!(table.len(), model.entries.len());
        assert!(table.v4.bits > 8, "the first level grew");
        for _ in 0..1500 {
            let (addr, _) = random_prefix(&mut rng);
            check_lookup(&table, &model, addr);
        }
        for value in 0..40 {
            assert_eq!(listing(&table, value), model.prefixes_of(value));
        }
        // Shrink: drop most values, and single prefixes of the rest.
        for value in 0..36 {
            assert_eq!(table.remove_value(value), model.remove_value(value));
        }
        let leftovers: Vec<_> = model.entries.iter().step_by(2).copied().collect();
        for (addr, cidr, value) in leftovers {
            assert!(table.remove(addr, cidr, value));
            model.remove(addr, cidr, value);
        }
        check_invariants(&table);
        assert_eq!(table.len(), model.entries.len());
        for _ in 0..1500 {
            let (addr, _) = random_prefix(&mut rng);
            check_lookup(&table, &model, addr);
        }
        for value in 0..40 {
            assert_eq!(listing(&table, value), model.prefixes_of(value));
        }
    }

    /// One value with tens of thousands of prefixes: listing returns them all, in order.
    #[test]
    fn one_value_with_many_prefixes_lists_them_in_order() {
        let mut rng = XorShift(42);
        let mut table = AllowedIps::new();
        let mut expected = Vec::new();
        let mut seen = std::collections::HashSet::new();
        while expected.len() < 30_000 {
            let prefix = if rng.below(8) == 0 {
                (IpAddr::V6(Ipv6Addr::from(u128::from(rng.next()) << 64)), 64)
            } else {
                (IpAddr::V4(Ipv4Addr::from(rng.next() as u32)), 32)
            };
            if seen.insert(prefix) {
                table.insert(prefix.0, prefix.1, 1u16).unwrap();
                expected.push(prefix);
            }
        }
        assert_eq!(listing(&table, 1), expected);
        for &(addr, _) in expected.iter().step_by(97) {
            assert_eq!(table.lookup(addr), Some(1));
        }
        check_invariants(&table);
        assert_eq!(table.remove_value(1), expected.len());
        assert!(table.is_empty());
        check_invariants(&table);
    }

    // ---- property test against the model ----

    #[derive(Debug, Clone)]
    enum Op {
        Insert(IpAddr, u8, u8),
        Remove(IpAddr, u8, u8),
        /// Removes the model's entry at this index, with its own value or a wrong one.
        RemoveExisting(prop::sample::Index, bool),
        RemoveValue(u8),
        Lookup(IpAddr),
        Clear,
    }

    /// IPv4 addresses from a handful of octets, so that prefixes collide and nest often.
    fn v4_addr() -> impl Strategy<Value = Ipv4Addr> {
        prop::array::uniform4(prop::sample::select(vec![0u8, 1, 10, 0x80, 0xff]))
            .prop_map(Ipv4Addr::from)
    }

    /// IPv6 addresses from a handful of 64-bit halves, plus IPv4-mapped ones.
    fn v6_addr() -> impl Strategy<Value = Ipv6Addr> {
        let halves = prop::sample::select(vec![
            0u64,
            1,
            0x2001_0db8_0000_0000,
            0x8000_0000_0000_0000,
            u64::MAX,
        ]);
        prop_oneof![
            4 => (halves.clone(), halves)
                .prop_map(|(high, low)| Ipv6Addr::from((u128::from(high) << 64) | u128::from(low))),
            1 => v4_addr().prop_map(|a| a.to_ipv6_mapped()),
        ]
    }

    fn addr() -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            v4_addr().prop_map(IpAddr::V4),
            v6_addr().prop_map(IpAddr::V6)
        ]
    }

    /// A prefix length, one past the maximum sometimes (invalid), biased towards boundaries.
    fn prefix() -> impl Strategy<Value = (IpAddr, u8)> {
        addr().prop_flat_map(|a| {
            let cidr = if a.is_ipv4() {
                prop_oneof![
                    0u8..=33,
                    prop::sample::select(vec![0u8, 1, 8, 16, 24, 31, 32])
                ]
                .boxed()
            } else {
                prop_oneof![
                    0u8..=129,
                    prop::sample::select(vec![0u8, 1, 63, 64, 65, 127, 128])
                ]
                .boxed()
            };
            (Just(a), cidr)
        })
    }

    fn op() -> impl Strategy<Value = Op> {
        let value = 0u8..4;
        prop_oneof![
            40 => (prefix(), value.clone()).prop_map(|((a, c), v)| Op::Insert(a, c, v)),
            10 => (prefix(), value.clone()).prop_map(|((a, c), v)| Op::Remove(a, c, v)),
            15 => (any::<prop::sample::Index>(), any::<bool>())
                .prop_map(|(i, owner)| Op::RemoveExisting(i, owner)),
            4 => value.prop_map(Op::RemoveValue),
            15 => addr().prop_map(Op::Lookup),
            // Rare: most sequences should build up a sizeable table.
            1 => Just(Op::Clear),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_the_naive_model(ops in prop::collection::vec(op(), 0..200)) {
            let mut table = AllowedIps::new();
            let mut model = Model::default();
            for op in ops {
                let touched = match op {
                    Op::Insert(a, c, v) => {
                        let inserted = table.insert(a, c, v).is_ok();
                        prop_assert_eq!(inserted, model.insert(a, c, v), "{:?}", op);
                        Some(a)
                    }
                    Op::Remove(a, c, v) => {
                        prop_assert_eq!(table.remove(a, c, v), model.remove(a, c, v), "{:?}", op);
                        Some(a)
                    }
                    Op::RemoveExisting(index, owner) => {
                        if model.entries.is_empty() {
                            None
                        } else {
                            let (a, c, v) = model.entries[index.index(model.entries.len())];
                            let v = if owner { v } else { (v + 1) % 4 };
                            prop_assert_eq!(table.remove(a, c, v), model.remove(a, c, v));
                            Some(a)
                        }
                    }
                    Op::RemoveValue(v) => {
                        prop_assert_eq!(table.remove_value(v), model.remove_value(v));
                        None
                    }
                    Op::Lookup(a) => Some(a),
                    Op::Clear => {
                        table.clear();
                        model = Model::default();
                        None
                    }
                };
                check_invariants(&table);
                prop_assert_eq!(table.len(), model.entries.len());
                prop_assert_eq!(table.is_empty(), model.entries.is_empty());
                for v in 0..4 {
                    prop_assert_eq!(listing(&table, v), model.prefixes_of(v));
                }
                if let Some(a) = touched {
                    for probe in probes(a) {
                        check_lookup(&table, &model, probe);
                    }
                }
            }
        }
    }
}
