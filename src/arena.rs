//! Sorted arenas: keys and values kept in a few large buffers (arenas) and
//! sorted by moving small fixed-size positions instead of the bytes.
//!
//! Two things are shared by every sort of this kind in the crate (WAL
//! replay's runs and merged state, the state build's external sort):
//!
//! - [`Pos`]: where bytes are, the arena's number and the offset in it,
//!   packed in 8 bytes ([`AT_BITS`] of offset, so arenas of at most 1 TiB
//!   and at most 16 M of them).
//! - [`KeyHead`]: a key's first [`HEAD_LEN`] bytes as two big-endian
//!   words. Comparing heads orders most keys without reading them; only
//!   keys that share their first 16 bytes are compared byte by byte.

use std::cmp::Ordering;

use bytes::Bytes;

/// Bits of a [`Pos`] that hold the offset in its arena (1 TiB); the bits
/// above hold the arena's number.
pub(crate) const AT_BITS: u32 = 40;

/// Bytes of a key a [`KeyHead`] holds.
pub(crate) const HEAD_LEN: usize = 16;

/// An arena's number and an offset in it, packed ([`AT_BITS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos(u64);

impl Pos {
    /// `None` if the offset is 1 TiB or more or the number 16 M or more.
    pub(crate) fn new(arena: usize, at: u64) -> Option<Self> {
        let arena = u64::try_from(arena).ok()?;
        (at >> AT_BITS == 0 && arena >> (64 - AT_BITS) == 0)
            .then_some(Self((arena << AT_BITS) | at))
    }

    /// The arena's number.
    pub(crate) fn arena(self) -> usize {
        usize::try_from(self.0 >> AT_BITS).expect("arena numbers fit in memory")
    }

    /// The offset in the arena.
    pub(crate) fn at(self) -> u64 {
        self.0 & ((1 << AT_BITS) - 1)
    }

    /// The `len` bytes at this position of `arenas`.
    pub(crate) fn bytes(self, arenas: &[Bytes], len: u32) -> &[u8] {
        bytes(&arenas[self.arena()], self.at(), len)
    }
}

/// `arena[at..at + len]`.
pub(crate) fn bytes(arena: &[u8], at: u64, len: u32) -> &[u8] {
    let at = usize::try_from(at).expect("arena offsets fit in memory");
    &arena[at..at + len as usize]
}

/// A key's first [`HEAD_LEN`] bytes as two big-endian words, zero-padded:
/// their order is the keys' byte order wherever they differ.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct KeyHead(u64, u64);

impl KeyHead {
    pub(crate) fn of(key: &[u8]) -> Self {
        let mut head = [0_u8; HEAD_LEN];
        let n = key.len().min(HEAD_LEN);
        head[..n].copy_from_slice(&key[..n]);
        let (a, b) = head.split_at(8);
        Self(
            u64::from_be_bytes(a.try_into().expect("8 bytes")),
            u64::from_be_bytes(b.try_into().expect("8 bytes")),
        )
    }

    /// The order of two keys from their heads and lengths, when these
    /// decide it: different heads, or equal heads of keys of at most
    /// [`HEAD_LEN`] bytes (then the shorter key is a prefix of the longer).
    /// `None`: compare the bytes.
    pub(crate) fn order(self, len: u32, other: Self, other_len: u32) -> Option<Ordering> {
        match self.cmp(&other) {
            Ordering::Equal if len as usize <= HEAD_LEN && other_len as usize <= HEAD_LEN => {
                Some(len.cmp(&other_len))
            }
            Ordering::Equal => None,
            order => Some(order),
        }
    }

    /// The order of keys `a` and `b`, whose heads are `self` and `other`.
    pub(crate) fn cmp_keys(self, a: &[u8], other: Self, b: &[u8]) -> Ordering {
        match self.cmp(&other) {
            Ordering::Equal => a.cmp(b),
            order => order,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_position_keeps_its_arena_and_offset_and_refuses_what_does_not_fit() {
        let p = Pos::new(7, (1 << AT_BITS) - 1).unwrap();
        assert_eq!((p.arena(), p.at()), (7, (1 << AT_BITS) - 1));
        assert_eq!(Pos::new(0, 1 << AT_BITS), None);
        assert_eq!(Pos::new(1 << (64 - AT_BITS), 0), None);
        let arenas = [Bytes::from_static(b"xx"), Bytes::from_static(b"abcdef")];
        assert_eq!(Pos::new(1, 2).unwrap().bytes(&arenas, 3), b"cde");
    }

    #[test]
    fn head_order_agrees_with_byte_order() {
        let keys: Vec<&[u8]> = vec![
            b"",
            b"\0",
            b"\0\0",
            b"a",
            b"a\0",
            b"ab",
            b"abcdefghijklmnop",
            b"abcdefghijklmnop\0",
            b"abcdefghijklmnopq",
            b"abcdefghijklmnopr",
            b"abcdefgh\xff",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\xff",
        ];
        for a in &keys {
            for b in &keys {
                let len = |k: &[u8]| u32::try_from(k.len()).unwrap();
                let (ha, hb) = (KeyHead::of(a), KeyHead::of(b));
                let by_head = ha.order(len(a), hb, len(b)).unwrap_or_else(|| a.cmp(b));
                assert_eq!(by_head, a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(ha.cmp_keys(a, hb, b), a.cmp(b), "{a:?} vs {b:?}");
            }
        }
    }
}
