//! A byte trie of literal patterns with the connections subscribed at each node.
//!
//! Each node carries two connection lists: `exact` (connections subscribed to exactly the
//! bytes spelled by the path to the node) and `wild` (connections subscribed to every key that
//! continues the path: prefixes in the forward trie, suffixes in the trie of reversed bytes).
//! A list holds one entry per (connection, pattern) subscription, so the same connection may
//! appear several times (two spellings of one literal); callers deduplicate.
//!
//! Costs (L = length of the walked bytes, f = fan-out of a node, at most 256):
//! * `insert` / `remove`: O(L·f), plus O(c) for the removal from a list of c connections;
//!   `remove` frees nodes left empty, so memory stays proportional to the live literals.
//! * `walk`: O(L), a bit test and a popcount per byte, allocation-free (besides `out`).
//! * `collect_subtree`: O(nodes under the start node).
//!
//! Memory: one `Node` (a 32-byte child bitmap and 3 small vectors, ~110 bytes) per distinct
//! byte-prefix of the stored
//! literals. Node 0 is the root (the empty literal) and is never freed.

use super::ConnId;

/// Which list of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    Exact,
    Wild,
}

#[derive(Default)]
struct Node {
    /// Which bytes have a child: a miss (the usual way a walk ends) is one bit test, and a hit
    /// finds its child at the bit's rank in `kids`, whatever the fan-out.
    bits: [u64; 4],
    /// Children in label order.
    kids: Vec<u32>,
    exact: Vec<ConnId>,
    wild: Vec<ConnId>,
}

impl Node {
    /// Index in `kids` of the child labelled `byte`, and whether it exists.
    #[inline]
    fn rank(&self, byte: u8) -> (usize, bool) {
        let (word, bit) = (usize::from(byte >> 6), byte & 63);
        let mut below = (self.bits[word] & ((1u64 << bit) - 1)).count_ones();
        for w in &self.bits[..word] {
            if *w != 0 {
                below += w.count_ones();
            }
        }
        (below as usize, self.bits[word] & (1u64 << bit) != 0)
    }

    #[inline]
    fn child(&self, byte: u8) -> Option<u32> {
        if self.bits[usize::from(byte >> 6)] & (1u64 << (byte & 63)) == 0 {
            return None;
        }
        // Chains of single children are the common case: no rank to compute.
        if self.kids.len() == 1 {
            return self.kids.first().copied();
        }
        self.kids.get(self.rank(byte).0).copied()
    }

    fn set_bit(&mut self, byte: u8, on: bool) {
        let mask = 1u64 << (byte & 63);
        let word = &mut self.bits[usize::from(byte >> 6)];
        if on { *word |= mask } else { *word &= !mask }
    }

    fn is_empty(&self) -> bool {
        self.kids.is_empty() && self.exact.is_empty() && self.wild.is_empty()
    }

    fn list(&mut self, slot: Slot) -> &mut Vec<ConnId> {
        match slot {
            Slot::Exact => &mut self.exact,
            Slot::Wild => &mut self.wild,
        }
    }
}

pub(crate) struct Trie {
    nodes: Vec<Node>,
    free: Vec<u32>,
}

impl Default for Trie {
    fn default() -> Self {
        Trie {
            nodes: vec![Node::default()],
            free: Vec::new(),
        }
    }
}

impl Trie {
    fn alloc(&mut self) -> u32 {
        if let Some(id) = self.free.pop() {
            return id;
        }
        self.nodes.push(Node::default());
        (self.nodes.len() - 1) as u32
    }

    /// Add one occurrence of `conn` to the `slot` list of the node spelled by `bytes`.
    pub(crate) fn insert(&mut self, bytes: impl Iterator<Item = u8>, slot: Slot, conn: ConnId) {
        let mut at = 0u32;
        for byte in bytes {
            let (i, found) = self.nodes[at as usize].rank(byte);
            at = if found {
                self.nodes[at as usize].kids[i]
            } else {
                let id = self.alloc();
                let node = &mut self.nodes[at as usize];
                node.kids.insert(i, id);
                node.set_bit(byte, true);
                id
            };
        }
        self.nodes[at as usize].list(slot).push(conn);
    }

    /// Remove one occurrence of `conn` from the `slot` list of the node spelled by `bytes`,
    /// freeing the nodes left empty. Returns whether it was there.
    pub(crate) fn remove(
        &mut self,
        bytes: impl Iterator<Item = u8>,
        slot: Slot,
        conn: ConnId,
    ) -> bool {
        // The path (parent, label) from the root, to unlink empty nodes bottom-up.
        let mut path: Vec<(u32, u8)> = Vec::new();
        let mut at = 0u32;
        for byte in bytes {
            match self.nodes[at as usize].child(byte) {
                Some(next) => {
                    path.push((at, byte));
                    at = next;
                }
                None => return false,
            }
        }
        let list = self.nodes[at as usize].list(slot);
        let Some(pos) = list.iter().position(|&c| c == conn) else {
            return false;
        };
        list.swap_remove(pos);
        while let Some((parent, byte)) = path.pop() {
            if !self.nodes[at as usize].is_empty() {
                break;
            }
            let node = &mut self.nodes[parent as usize];
            if let (i, true) = node.rank(byte) {
                node.kids.remove(i);
                node.set_bit(byte, false);
            }
            self.nodes[at as usize] = Node::default();
            self.free.push(at);
            at = parent;
        }
        true
    }

    /// Walk `bytes` from the root: push the `wild` connections of every node on the path
    /// (the root included: the empty prefix matches everything), and, if every byte was
    /// consumed and `exact` is set, the `exact` connections of the last node. Returns the last
    /// node if every byte was consumed.
    pub(crate) fn walk(
        &self,
        bytes: impl Iterator<Item = u8>,
        exact: bool,
        out: &mut Vec<ConnId>,
    ) -> Option<u32> {
        let mut node = &self.nodes[0];
        let mut at = 0u32;
        out.extend_from_slice(&node.wild);
        for byte in bytes {
            at = node.child(byte)?;
            node = &self.nodes[at as usize];
            out.extend_from_slice(&node.wild);
        }
        if exact {
            out.extend_from_slice(&node.exact);
        }
        Some(at)
    }

    /// The node spelled by `bytes`, if any.
    #[cfg(test)]
    pub(crate) fn find(&self, bytes: impl Iterator<Item = u8>) -> Option<u32> {
        let mut at = 0u32;
        for byte in bytes {
            at = self.nodes[at as usize].child(byte)?;
        }
        Some(at)
    }

    /// Push the chosen lists of `start` and of every node below it.
    pub(crate) fn collect_subtree(
        &self,
        start: u32,
        exact: bool,
        wild: bool,
        out: &mut Vec<ConnId>,
    ) {
        let mut stack = vec![start];
        while let Some(at) = stack.pop() {
            let node = &self.nodes[at as usize];
            if exact {
                out.extend_from_slice(&node.exact);
            }
            if wild {
                out.extend_from_slice(&node.wild);
            }
            stack.extend_from_slice(&node.kids);
        }
    }

    /// Number of live nodes (for memory accounting in tests and metrics).
    #[cfg(test)]
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len() - self.free.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_collects_prefixes_and_exact() {
        let mut t = Trie::default();
        t.insert("ab".bytes(), Slot::Wild, 1);
        t.insert("abc".bytes(), Slot::Exact, 2);
        t.insert("".bytes(), Slot::Wild, 3);
        t.insert("abd".bytes(), Slot::Wild, 4);
        let mut out = Vec::new();
        t.walk("abc".bytes(), true, &mut out);
        out.sort();
        assert_eq!(out, vec![1, 2, 3]);
        out.clear();
        t.walk("abcd".bytes(), true, &mut out);
        out.sort();
        assert_eq!(out, vec![1, 3]);
    }

    #[test]
    fn remove_frees_empty_nodes() {
        let mut t = Trie::default();
        t.insert("abc".bytes(), Slot::Exact, 1);
        t.insert("abx".bytes(), Slot::Exact, 1);
        assert_eq!(t.node_count(), 5);
        assert!(t.remove("abc".bytes(), Slot::Exact, 1));
        assert!(!t.remove("abc".bytes(), Slot::Exact, 1));
        assert_eq!(t.node_count(), 4);
        assert!(t.remove("abx".bytes(), Slot::Exact, 1));
        assert_eq!(t.node_count(), 1);
        let mut out = Vec::new();
        let root = t.find("".bytes()).unwrap();
        t.collect_subtree(root, true, true, &mut out);
        assert!(out.is_empty());
    }
}
