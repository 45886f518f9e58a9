//! [`StateMap`]: the state recovery rebuilds, a sorted key/value map whose
//! bytes live in a few large arenas instead of two allocations per key.
//!
//! An arena is a shared, immutable buffer ([`Bytes`]). WAL replay uses the
//! segments themselves as arenas (mapped read-only by the real file
//! system): it sorts the positions of the operations by key and merges the
//! cores' sorted runs into one sorted list of slots (offsets into the
//! arenas), so no key or value is copied. A slot takes 16 bytes. A segment
//! whose live bytes fall under half of it is copied down to them after
//! replay (see `recovery`), so segments of mostly dead entries are not kept
//! for a few live ones. Cloning a map shares its arenas.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;

use crate::arena::{bytes, Pos};

/// Where one key and its value are, in 16 bytes: the key's [`Pos`] and
/// both lengths. The value follows the key in every arena: a WAL record
/// holds the key then the value, and the arenas built here append them so.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pos: Pos,
    pub(crate) key_len: u32,
    pub(crate) value_len: u32,
}

impl Slot {
    /// # Panics
    ///
    /// If the position does not fit a [`Pos`] (arenas of at most 1 TiB, at
    /// most 16 M of them): replay checks this when it reads the segments.
    pub(crate) fn new(arena: usize, key_at: u64, key_len: u32, value_len: u32) -> Self {
        Self {
            pos: Pos::new(arena, key_at).expect("arenas of at most 1 TiB, at most 16 M of them"),
            key_len,
            value_len,
        }
    }

    pub(crate) fn arena(&self) -> usize {
        self.pos.arena()
    }

    pub(crate) fn key_at(&self) -> u64 {
        self.pos.at()
    }

    /// The key's bytes in `arenas`.
    pub(crate) fn key<'a>(&self, arenas: &'a [Bytes]) -> &'a [u8] {
        self.pos.bytes(arenas, self.key_len)
    }

    /// The value's bytes in `arenas`.
    pub(crate) fn value<'a>(&self, arenas: &'a [Bytes]) -> &'a [u8] {
        let value_at = self.key_at() + u64::from(self.key_len);
        bytes(&arenas[self.arena()], value_at, self.value_len)
    }
}

/// A sorted map from keys to values (both byte strings), read-only once
/// built: what recovery returns as the latest value of every live key.
///
/// Look-ups are binary searches (`get`), iteration is in key order
/// (`iter`, `for (key, value) in &map`). Build one from a `BTreeMap` or any
/// iterator of pairs (a later pair wins over an earlier one with the same
/// key); `to_btree_map` copies it out. Two maps are equal when they hold
/// the same pairs, and a map equals a `BTreeMap<Vec<u8>, Vec<u8>>` holding
/// the same pairs.
#[derive(Clone, Default)]
pub struct StateMap {
    arenas: Vec<Bytes>,
    /// Sorted by key, keys unique.
    slots: Vec<Slot>,
}

impl StateMap {
    /// An empty map.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True if the map holds no key.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The value of `key`, if the map holds it.
    #[must_use]
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        let i = self
            .slots
            .binary_search_by(|s| self.key_of(s).cmp(key))
            .ok()?;
        Some(self.value_of(&self.slots[i]))
    }

    /// True if the map holds `key`.
    #[must_use]
    pub fn contains_key(&self, key: &[u8]) -> bool {
        self.get(key).is_some()
    }

    /// The pairs in key order.
    #[must_use]
    pub fn iter(&self) -> StateMapIter<'_> {
        StateMapIter {
            map: self,
            slots: self.slots.iter(),
        }
    }

    /// The keys in order.
    #[must_use = "iterators do nothing unless consumed"]
    pub fn keys(&self) -> impl DoubleEndedIterator<Item = &[u8]> + ExactSizeIterator + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// A copy of the pairs as a `BTreeMap` (two allocations per key).
    #[must_use]
    pub fn to_btree_map(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.iter().map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
    }

    pub(crate) fn key_of(&self, s: &Slot) -> &[u8] {
        s.key(&self.arenas)
    }

    fn value_of(&self, s: &Slot) -> &[u8] {
        s.value(&self.arenas)
    }

    /// Takes the map apart: its arenas and its sorted slots.
    pub(crate) fn into_parts(self) -> (Vec<Bytes>, Vec<Slot>) {
        (self.arenas, self.slots)
    }

    /// A map from arenas and slots sorted by key with unique keys (the
    /// caller's guarantee; debug builds check it).
    pub(crate) fn from_parts(arenas: Vec<Bytes>, slots: Vec<Slot>) -> Self {
        let map = Self { arenas, slots };
        debug_assert!(map
            .slots
            .windows(2)
            .all(|w| map.key_of(&w[0]) < map.key_of(&w[1])));
        map
    }

    /// This map with `changes` applied in one merge: `Some(value)` sets a
    /// key, `None` removes it. The new values go to one new arena.
    #[must_use]
    pub(crate) fn with_changes(self, changes: BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> Self {
        if changes.is_empty() {
            return self;
        }
        let (mut arenas, old) = self.into_parts();
        let new_arena = u32::try_from(arenas.len()).expect("fewer than 4 G arenas");
        let mut arena = Vec::with_capacity(
            changes
                .iter()
                .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                .sum(),
        );
        let mut slots = Vec::with_capacity(old.len() + changes.len());
        let mut old = old.into_iter().peekable();
        for (key, value) in changes {
            while let Some(s) = old.peek() {
                match s.key(&arenas).cmp(&key) {
                    Ordering::Less => slots.extend(old.next()),
                    Ordering::Equal => {
                        old.next();
                        break;
                    }
                    Ordering::Greater => break,
                }
            }
            if let Some(value) = value {
                slots.push(append(&mut arena, new_arena, &key, &value));
            }
        }
        slots.extend(old);
        arenas.push(Bytes::from(arena));
        Self::from_parts(arenas, slots)
    }
}

/// Appends `key` then `value` to `arena` (number `id`) and returns their slot.
fn append(arena: &mut Vec<u8>, id: u32, key: &[u8], value: &[u8]) -> Slot {
    let key_at = arena.len() as u64;
    arena.extend_from_slice(key);
    arena.extend_from_slice(value);
    Slot::new(
        id as usize,
        key_at,
        u32::try_from(key.len()).expect("keys are shorter than 4 GiB"),
        u32::try_from(value.len()).expect("values are shorter than 4 GiB"),
    )
}

/// Builds a map from pairs, in one arena. Pairs given in increasing key
/// order need no sort; otherwise `finish` sorts (stably, so of equal keys
/// the last pushed wins).
#[derive(Debug, Default)]
pub(crate) struct StateMapBuilder {
    arena: Vec<u8>,
    slots: Vec<Slot>,
    sorted: bool,
}

impl StateMapBuilder {
    pub(crate) fn new() -> Self {
        Self {
            sorted: true,
            ..Self::default()
        }
    }

    pub(crate) fn reserve(&mut self, pairs: usize, bytes: usize) {
        self.slots.reserve(pairs);
        self.arena.reserve(bytes);
    }

    pub(crate) fn push(&mut self, key: &[u8], value: &[u8]) {
        if self.sorted {
            if let Some(last) = self.slots.last() {
                self.sorted = bytes(&self.arena, last.key_at(), last.key_len) < key;
            }
        }
        let slot = append(&mut self.arena, 0, key, value);
        self.slots.push(slot);
    }

    pub(crate) fn finish(self) -> StateMap {
        let Self {
            arena, mut slots, ..
        } = self;
        if !self.sorted {
            slots.sort_by(|a, b| {
                bytes(&arena, a.key_at(), a.key_len).cmp(bytes(&arena, b.key_at(), b.key_len))
            });
            // Of a run of equal keys keep the last (the latest pushed).
            let mut kept: Vec<Slot> = Vec::with_capacity(slots.len());
            for s in slots {
                match kept.last_mut() {
                    Some(last)
                        if bytes(&arena, last.key_at(), last.key_len)
                            == bytes(&arena, s.key_at(), s.key_len) =>
                    {
                        *last = s;
                    }
                    _ => kept.push(s),
                }
            }
            slots = kept;
        }
        StateMap::from_parts(vec![Bytes::from(arena)], slots)
    }
}

/// Iterator over a [`StateMap`]'s pairs in key order.
#[derive(Debug, Clone)]
pub struct StateMapIter<'a> {
    map: &'a StateMap,
    slots: std::slice::Iter<'a, Slot>,
}

impl<'a> Iterator for StateMapIter<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let s = self.slots.next()?;
        Some((self.map.key_of(s), self.map.value_of(s)))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.slots.size_hint()
    }
}

impl DoubleEndedIterator for StateMapIter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let s = self.slots.next_back()?;
        Some((self.map.key_of(s), self.map.value_of(s)))
    }
}

impl ExactSizeIterator for StateMapIter<'_> {}

impl<'a> IntoIterator for &'a StateMap {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = StateMapIter<'a>;

    fn into_iter(self) -> StateMapIter<'a> {
        self.iter()
    }
}

impl<K: AsRef<[u8]>, V: AsRef<[u8]>> FromIterator<(K, V)> for StateMap {
    /// Of pairs with the same key, the last one wins.
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut builder = StateMapBuilder::new();
        for (k, v) in iter {
            builder.push(k.as_ref(), v.as_ref());
        }
        builder.finish()
    }
}

impl From<BTreeMap<Vec<u8>, Vec<u8>>> for StateMap {
    fn from(map: BTreeMap<Vec<u8>, Vec<u8>>) -> Self {
        let mut builder = StateMapBuilder::new();
        builder.reserve(map.len(), map.iter().map(|(k, v)| k.len() + v.len()).sum());
        for (k, v) in &map {
            builder.push(k, v);
        }
        builder.finish()
    }
}

impl PartialEq for StateMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for StateMap {}

impl PartialEq<BTreeMap<Vec<u8>, Vec<u8>>> for StateMap {
    fn eq(&self, other: &BTreeMap<Vec<u8>, Vec<u8>>) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .zip(other)
                .all(|((k, v), (ok, ov))| k == ok.as_slice() && v == ov.as_slice())
    }
}

impl PartialEq<StateMap> for BTreeMap<Vec<u8>, Vec<u8>> {
    fn eq(&self, other: &StateMap) -> bool {
        other == self
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Escaped<'a>(&'a [u8]);
        impl fmt::Debug for Escaped<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "b\"{}\"", self.0.escape_ascii())
            }
        }
        f.debug_map()
            .entries(self.iter().map(|(k, v)| (Escaped(k), Escaped(v))))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(pairs: &[(&str, &str)]) -> BTreeMap<Vec<u8>, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn unsorted_pairs_sort_and_the_last_of_a_key_wins() {
        let pairs = [("b", "1"), ("a", "2"), ("c", "3"), ("a", "4"), ("", "5")];
        let map: StateMap = pairs.iter().copied().collect();
        let want = model(&pairs);
        assert_eq!(map, want);
        assert_eq!(want, map);
        assert_eq!(map.get(b"a"), Some(&b"4"[..]));
        assert_eq!(map.get(b""), Some(&b"5"[..]));
        assert_eq!(map.get(b"d"), None);
        assert!(!map.contains_key(b"ab"));
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            vec![&b""[..], b"a", b"b", b"c"]
        );
        assert_eq!(map.iter().next_back(), Some((&b"c"[..], &b"3"[..])));
        assert_eq!(map.to_btree_map(), want);
        assert_eq!(StateMap::from(want.clone()), map);
        assert_ne!(map, StateMap::new());
        assert_eq!(
            format!("{:?}", StateMap::from(model(&[("k\n", "v")]))),
            r#"{b"k\n": b"v"}"#
        );
    }

    #[test]
    fn changes_set_and_remove_keys_like_a_btree_map() {
        let base = model(&[("a", "1"), ("c", "3"), ("e", "5")]);
        let changes: BTreeMap<Vec<u8>, Option<Vec<u8>>> = [
            ("a", None),
            ("b", Some("2")),
            ("e", Some("five")),
            ("f", None),
            ("g", Some("7")),
        ]
        .into_iter()
        .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
        .collect();
        let mut want = base.clone();
        for (k, v) in &changes {
            match v {
                Some(v) => want.insert(k.clone(), v.clone()),
                None => want.remove(k),
            };
        }
        let got = StateMap::from(base).with_changes(changes);
        assert_eq!(got, want);
        assert_eq!(got.get(b"e"), Some(&b"five"[..]));
    }
}
