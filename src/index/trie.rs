//! A byte trie of literal patterns with the connections subscribed at each node.
//!
//! Each node carries two connection lists: `exact` (connections subscribed to exactly the
//! bytes spelled by the path to the node) and `wild` (connections subscribed to every key that
//! continues the path: prefixes in the forward trie, suffixes in the trie of reversed bytes).
//! A list holds one entry per (connection, pattern) subscription, so the same connection may
//! appear several times (two spellings of one literal); callers deduplicate.
//!
//! Costs (L = length of the walked bytes, f = fan-out of a node, at most 256):
//! * `insert` / `remove`: O(L log f), plus O(c) for the removal from a list of c connections;
//!   `remove` frees nodes left empty, so memory stays proportional to the live literals.
//! * `walk`: O(L log f) and allocation-free (besides growing `out`).
//! * `collect_subtree`: O(nodes under the start node).
//!
//! Memory: one `Node` (3 small vectors, ~80 bytes) per distinct byte-prefix of the stored
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
    /// Children as `label << 32 | node`, sorted by label: one array per node, so a step of a
    /// walk touches the node and this array only (the walk is memory-bound).
    edges: Vec<u64>,
    exact: Vec<ConnId>,
    wild: Vec<ConnId>,
}

fn label(edge: u64) -> u8 {
    (edge >> 32) as u8
}

fn target(edge: u64) -> u32 {
    edge as u32
}

impl Node {
    #[inline]
    fn child(&self, byte: u8) -> Option<u32> {
        // Most nodes have a handful of children: a linear scan beats a binary search there.
        if self.edges.len() <= 8 {
            return self.edges.iter().find(|&&e| label(e) == byte).map(|&e| target(e));
        }
        self.edges.binary_search_by_key(&byte, |&e| label(e)).ok().map(|i| target(self.edges[i]))
    }

    fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.exact.is_empty() && self.wild.is_empty()
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
            let node = &self.nodes[at as usize];
            at = match node.edges.binary_search_by_key(&byte, |&e| label(e)) {
                Ok(i) => target(node.edges[i]),
                Err(i) => {
                    let id = self.alloc();
                    let node = &mut self.nodes[at as usize];
                    node.edges.insert(i, (u64::from(byte) << 32) | u64::from(id));
                    id
                }
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
            if let Ok(i) = node.edges.binary_search_by_key(&byte, |&e| label(e)) {
                node.edges.remove(i);
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
            stack.extend(node.edges.iter().map(|&e| target(e)));
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
