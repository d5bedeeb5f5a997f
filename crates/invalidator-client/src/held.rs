//! The keys this client holds (cached or being filled), each with its tags.
//!
//! Every held key is tracked on the server (one-shot), so the set is what the client
//! re-tracks after a reconnect, and the tag index is how a tag invalidation finds the local
//! keys it covers: the event's `keys` are only the keys the server still tracked for this
//! connection, the client may hold more keys with the same tags.

use std::collections::{BTreeSet, HashMap, HashSet};

use invalidator_core::pattern::Pattern;

/// Held keys and their tags, with a tag → keys index.
#[derive(Debug, Default)]
pub(crate) struct HeldKeys {
    keys: HashMap<String, BTreeSet<String>>,
    by_tag: HashMap<String, HashSet<String>>,
}

impl HeldKeys {
    /// Hold `key`, adding `tags` to the tags it already carries.
    pub fn add<S: AsRef<str>>(&mut self, key: &str, tags: &[S]) {
        let entry = self.keys.entry(key.to_string()).or_default();
        for t in tags {
            let t = t.as_ref();
            if entry.insert(t.to_string()) {
                self.by_tag
                    .entry(t.to_string())
                    .or_default()
                    .insert(key.to_string());
            }
        }
    }

    /// Forget `key`; returns whether it was held.
    pub fn remove(&mut self, key: &str) -> bool {
        let Some(tags) = self.keys.remove(key) else {
            return false;
        };
        for t in tags {
            if let Some(keys) = self.by_tag.get_mut(&t) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_tag.remove(&t);
                }
            }
        }
        true
    }

    pub fn contains(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    /// The tags `key` carries (sorted).
    pub fn tags(&self, key: &str) -> Vec<String> {
        self.keys
            .get(key)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Held keys carrying any of `tags` (sorted, each once).
    pub fn keys_tagged<S: AsRef<str>>(&self, tags: &[S]) -> Vec<String> {
        let mut out: BTreeSet<&String> = BTreeSet::new();
        for t in tags {
            if let Some(keys) = self.by_tag.get(t.as_ref()) {
                out.extend(keys);
            }
        }
        out.into_iter().cloned().collect()
    }

    /// Forget every key `pattern` matches.
    pub fn remove_matching(&mut self, pattern: &Pattern) {
        let gone: Vec<String> = self
            .keys
            .keys()
            .filter(|k| pattern.is_match(k))
            .cloned()
            .collect();
        for k in gone {
            self.remove(&k);
        }
    }

    pub fn clear(&mut self) {
        self.keys.clear();
        self.by_tag.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// `track` frames that re-track `keys` (the held ones among them) with their tags: one
    /// frame per distinct tag set, at most `chunk` keys per frame.
    pub fn track_frames<'a>(
        &self,
        keys: impl IntoIterator<Item = &'a str>,
        chunk: usize,
    ) -> Vec<serde_json::Value> {
        let mut groups: HashMap<&BTreeSet<String>, Vec<&str>> = HashMap::new();
        for k in keys {
            if let Some((key, tags)) = self.keys.get_key_value(k) {
                groups.entry(tags).or_default().push(key.as_str());
            }
        }
        let mut groups: Vec<_> = groups.into_iter().collect();
        groups.sort();
        let mut frames = Vec::new();
        for (tags, mut keys) in groups {
            keys.sort_unstable();
            keys.dedup();
            for part in keys.chunks(chunk.max(1)) {
                frames.push(track_frame(part, tags.iter(), None));
            }
        }
        frames
    }

    /// `track` frames for every held key.
    pub fn all_track_frames(&self, chunk: usize) -> Vec<serde_json::Value> {
        self.track_frames(self.keys.keys().map(String::as_str), chunk)
    }
}

/// `{"op":"track","keys":[...],"tags":[...]?,"id":N?}` (no `tags` field when there are none).
pub(crate) fn track_frame<K: AsRef<str>, T: AsRef<str>>(
    keys: &[K],
    tags: impl IntoIterator<Item = T>,
    id: Option<u64>,
) -> serde_json::Value {
    let keys: Vec<&str> = keys.iter().map(AsRef::as_ref).collect();
    let tags: Vec<String> = tags.into_iter().map(|t| t.as_ref().to_string()).collect();
    let mut v = serde_json::json!({"op": "track", "keys": keys});
    if !tags.is_empty() {
        v["tags"] = tags.into();
    }
    if let Some(id) = id {
        v["id"] = id.into();
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use invalidator_core::pattern::PatternLimits;
    use serde_json::json;

    #[test]
    fn tags_index_follows_adds_and_removes() {
        let mut h = HeldKeys::default();
        h.add("p:1", &["product:1", "catalog"]);
        h.add("p:2", &["product:2", "catalog"]);
        h.add("u:1", &[] as &[&str]);
        h.add("p:1", &["sale"]);
        assert_eq!(h.tags("p:1"), ["catalog", "product:1", "sale"]);
        assert_eq!(h.keys_tagged(&["catalog"]), ["p:1", "p:2"]);
        assert_eq!(h.keys_tagged(&["product:2", "sale"]), ["p:1", "p:2"]);
        assert!(h.keys_tagged(&["nope"]).is_empty());
        assert!(h.remove("p:1"));
        assert!(!h.remove("p:1"));
        assert_eq!(h.keys_tagged(&["catalog", "sale"]), ["p:2"]);
        assert!(!h.by_tag.contains_key("sale"), "empty tag sets are dropped");
        let p = Pattern::parse("p:*", None, &PatternLimits::default()).unwrap();
        h.remove_matching(&p);
        assert!(h.by_tag.is_empty());
        assert_eq!(h.len(), 1);
        assert!(h.contains("u:1"));
    }

    #[test]
    fn re_track_frames_group_keys_by_their_tags() {
        let mut h = HeldKeys::default();
        h.add("a", &[] as &[&str]);
        h.add("b", &[] as &[&str]);
        h.add("c", &["t1"]);
        h.add("d", &["t1"]);
        h.add("e", &["t1", "t2"]);
        let frames = h.all_track_frames(1000);
        assert_eq!(
            frames,
            vec![
                json!({"op": "track", "keys": ["a", "b"]}),
                json!({"op": "track", "keys": ["c", "d"], "tags": ["t1"]}),
                json!({"op": "track", "keys": ["e"], "tags": ["t1", "t2"]}),
            ]
        );
        let chunked = h.track_frames(["a", "b", "zzz"], 1);
        assert_eq!(
            chunked,
            vec![
                json!({"op": "track", "keys": ["a"]}),
                json!({"op": "track", "keys": ["b"]}),
            ],
            "one key per frame, unheld keys skipped"
        );
    }
}
