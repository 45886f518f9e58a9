//! Delta Lake deletion-vector (DV) codec.
//!
//! Encodes and decodes deletion vectors exactly as `delta-kernel-rs` reads and writes them
//! (checked against `kernel/src/actions/deletion_vector.rs` and
//! `kernel/src/actions/deletion_vector_writer.rs`), which is also what Delta Spark writes.
//!
//! # Serialized bitmap (`RoaringBitmapArray` format)
//!
//! ```text
//! u32 LE   magic 1681511377 (bytes d1 d3 39 64)
//! u64 LE   number of 32-bit buckets
//! per bucket, keys ascending:
//!   u32 LE   high 32 bits of the row indices in the bucket (top bit must be 0)
//!   ...      portable 32-bit RoaringBitmap (cookie 12346 or 12347)
//! ```
//!
//! Everything after the magic is the "portable" 64-bit Roaring serialization, which is what
//! `roaring::RoaringTreemap::serialize_into` produces byte for byte.
//!
//! # DV file (`deletion_vector_<uuid>.bin`)
//!
//! ```text
//! u8       version = 1                      (file offset 0)
//! per DV, starting at the descriptor's `offset`:
//!   u32 BE   dataSize = 4 + bitmap length   (== descriptor `sizeInBytes`)
//!   ...      serialized bitmap: magic + portable treemap (dataSize bytes)
//!   u32 BE   CRC-32 (IEEE / ISO-HDLC, as `crc32fast`) of those dataSize bytes
//! ```
//!
//! The descriptor `offset` points at the `dataSize` field (the first DV is at offset 1), and
//! `sizeInBytes` counts the magic plus the treemap, not the size field or the CRC. An absent
//! `offset` is read as 1, like the kernel does.
//!
//! # Inline DVs
//!
//! `pathOrInlineDv` is the Z85 text of the serialized bitmap (magic + treemap), zero-padded to
//! a multiple of 4 bytes before encoding (as Delta Spark does); `sizeInBytes` is the unpadded
//! length and `offset` is absent. There is no size field and no CRC.

use std::fmt::Write as _;
use std::io;

use roaring::RoaringTreemap;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Magic number of the portable `RoaringBitmapArray` serialization, stored little-endian
/// (bytes `d1 d3 39 64`) in front of every serialized deletion vector.
pub const DV_MAGIC: u32 = 1_681_511_377;

/// Magic number of Delta's "native" Roaring serialization, which the kernel rejects and so do we.
pub const DV_NATIVE_MAGIC: u32 = 1_681_511_376;

/// Version byte at offset 0 of every DV file.
pub const DV_FILE_VERSION: u8 = 1;

/// Length of a Z85-encoded UUID inside a `"u"` descriptor's `pathOrInlineDv`.
pub const ENCODED_UUID_LEN: usize = 20;

/// Storage type of a DV stored in a file named from a UUID, relative to the table root.
pub const STORAGE_TYPE_RELATIVE: &str = "u";
/// Storage type of a DV stored inline (Z85) in the log.
pub const STORAGE_TYPE_INLINE: &str = "i";
/// Storage type of a DV stored in a file given by an absolute path.
pub const STORAGE_TYPE_ABSOLUTE: &str = "p";

/// Largest row index Delta allows: every 32-bit bucket key must have its top bit clear, so row
/// indices are below 2^63.
pub const MAX_ROW_INDEX: u64 = (1 << 63) - 1;

/// Bytes a DV occupies in a file besides its serialized bitmap: size field and CRC.
const FRAME_OVERHEAD: usize = 8;

/// Z85 alphabet (`ZeroMQ` RFC 32), the Base85 variant Delta uses.
const Z85_ALPHABET: &[u8; 85] =
    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

/// Errors from encoding or decoding deletion vectors.
#[derive(Debug, thiserror::Error)]
pub enum DvError {
    /// Z85 text whose length is not a multiple of 5.
    #[error("z85 text is {len} characters long, which is not a multiple of 5")]
    Z85Length {
        /// Length of the text in bytes.
        len: usize,
    },
    /// A byte outside the Z85 alphabet.
    #[error("invalid z85 character {byte:#04x} at position {position}")]
    Z85Char {
        /// Byte position in the text.
        position: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A 5-character group whose value does not fit in 32 bits.
    #[error("z85 group at position {position} encodes {value}, more than u32::MAX")]
    Z85Overflow {
        /// Byte position of the group's first character.
        position: usize,
        /// Decoded value of the group.
        value: u64,
    },
    /// Serialized bitmap too short to hold the magic number.
    #[error("serialized deletion vector is {len} bytes, need at least 4 for the magic number")]
    BitmapTooShort {
        /// Length of the input.
        len: usize,
    },
    /// Delta's native Roaring serialization, which the kernel does not support either.
    #[error(
        "deletion vector uses the native serialization (magic {DV_NATIVE_MAGIC}), \
         only the portable one (magic {DV_MAGIC}) is supported"
    )]
    NativeMagic,
    /// Unknown magic number.
    #[error("bad deletion vector magic: expected {DV_MAGIC} (little-endian), found {found}")]
    BadMagic {
        /// Little-endian u32 read from the first four bytes.
        found: u32,
    },
    /// The portable treemap after the magic could not be parsed.
    #[error("invalid portable RoaringTreemap after the magic: {0}")]
    Roaring(#[source] io::Error),
    /// A row index of 2^63 or more, which Delta forbids.
    #[error("row index {row} is above the Delta maximum {MAX_ROW_INDEX} (bucket keys need a clear top bit)")]
    RowIndexTooLarge {
        /// The largest row index in the set.
        row: u64,
    },
    /// A value that does not fit in the descriptor's `i32`/`i64` fields.
    #[error("{what} {value} does not fit in the descriptor (at most {max})")]
    TooLarge {
        /// Which quantity overflowed.
        what: &'static str,
        /// Its value.
        value: u64,
        /// The largest value allowed.
        max: u64,
    },
    /// An empty DV file (no version byte).
    #[error("deletion vector file is empty: no version byte")]
    EmptyFile,
    /// Version byte other than 1.
    #[error("deletion vector file version at offset 0 is {found}, expected {DV_FILE_VERSION}")]
    UnsupportedVersion {
        /// The version byte found.
        found: u8,
    },
    /// Descriptor offset that cannot point at a DV (negative, or 0 which is the version byte).
    #[error("deletion vector offset {offset} is invalid: DVs start at offset 1 or later")]
    InvalidOffset {
        /// The offset from the descriptor.
        offset: i64,
    },
    /// Descriptor `sizeInBytes` that cannot hold the magic number.
    #[error(
        "deletion vector sizeInBytes {size} is invalid: must be at least 4 (the magic number)"
    )]
    InvalidSize {
        /// The size from the descriptor.
        size: i64,
    },
    /// The file ends before the DV does.
    #[error(
        "deletion vector at offset {offset} needs the file to be at least {needed} bytes, \
         but it is {file_len} bytes"
    )]
    Truncated {
        /// Offset of the DV's size field.
        offset: u64,
        /// File length the DV needs.
        needed: u64,
        /// Actual file length.
        file_len: u64,
    },
    /// The size field in the file disagrees with the descriptor's `sizeInBytes`.
    #[error("deletion vector at offset {offset}: descriptor sizeInBytes is {expected}, file says {found}")]
    SizeMismatch {
        /// Offset of the DV's size field.
        offset: u64,
        /// `sizeInBytes` from the descriptor.
        expected: u32,
        /// Big-endian size field read from the file.
        found: u32,
    },
    /// CRC-32 mismatch.
    #[error(
        "deletion vector at offset {offset}: CRC-32 stored at offset {crc_offset} is \
         {stored:#010x}, computed {computed:#010x}"
    )]
    ChecksumMismatch {
        /// Offset of the DV's size field.
        offset: u64,
        /// Offset of the stored CRC.
        crc_offset: u64,
        /// CRC read from the file.
        stored: u32,
        /// CRC computed over the magic and bitmap.
        computed: u32,
    },
    /// A bitmap error inside a DV file.
    #[error(
        "deletion vector at offset {offset}, bitmap starting at offset {data_offset}: {source}"
    )]
    AtOffset {
        /// Offset of the DV's size field.
        offset: u64,
        /// Offset of the magic number.
        data_offset: u64,
        /// What is wrong with the bitmap.
        #[source]
        source: Box<DvError>,
    },
    /// A descriptor whose storage type cannot be used for the requested operation.
    #[error("deletion vector storage type {found:?} cannot be used here: expected {expected}")]
    StorageType {
        /// The storage type found.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A `"u"` path too short to hold the 20-character encoded UUID.
    #[error("relative deletion vector path is {len} bytes, need at least {ENCODED_UUID_LEN} for the z85 UUID")]
    PathTooShort {
        /// Length of `pathOrInlineDv`.
        len: usize,
    },
    /// A `"u"` path whose last 20 characters are not a Z85 UUID.
    #[error("relative deletion vector path {path:?} does not end with a z85 UUID: {source}")]
    BadEncodedUuid {
        /// The whole `pathOrInlineDv`.
        path: String,
        /// The decoding error.
        #[source]
        source: Box<DvError>,
    },
    /// A random prefix that is not a plain directory name.
    #[error(
        "relative deletion vector path has random prefix {prefix:?}; only ASCII letters, \
         digits, '-' and '_' are accepted"
    )]
    UnsafePrefix {
        /// The prefix (lossily decoded).
        prefix: String,
    },
}

/// Encodes bytes as Z85 (`ZeroMQ` RFC 32): each 4-byte big-endian group becomes 5 characters.
///
/// Input whose length is not a multiple of 4 is zero-padded to the next multiple of 4 first, as
/// Delta Spark's `Base85Codec.encodeBytes` does; the decoder then returns the padded bytes, and
/// callers cut them to the length they stored (inline DVs keep it in `sizeInBytes`).
#[must_use]
pub fn z85_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(4) * 5);
    for chunk in bytes.chunks(4) {
        let mut group = [0u8; 4];
        group[..chunk.len()].copy_from_slice(chunk);
        let mut value = u32::from_be_bytes(group);
        let mut chars = [0u8; 5];
        for slot in chars.iter_mut().rev() {
            *slot = Z85_ALPHABET[(value % 85) as usize];
            value /= 85;
        }
        out.extend(chars.iter().map(|&c| char::from(c)));
    }
    out
}

/// Decodes Z85 text; its length must be a multiple of 5 and every group must fit in 32 bits.
///
/// # Errors
///
/// `DvError::Z85Length`, `DvError::Z85Char` (with the byte position) or
/// `DvError::Z85Overflow` (with the group's position).
pub fn z85_decode(s: &str) -> Result<Vec<u8>, DvError> {
    z85_decode_bytes(s.as_bytes())
}

fn z85_digit(byte: u8) -> Option<u64> {
    Z85_ALPHABET
        .iter()
        .position(|&c| c == byte)
        .map(|d| d as u64)
}

fn z85_decode_bytes(text: &[u8]) -> Result<Vec<u8>, DvError> {
    if !text.len().is_multiple_of(5) {
        return Err(DvError::Z85Length { len: text.len() });
    }
    let mut out = Vec::with_capacity(text.len() / 5 * 4);
    for (group_index, group) in text.chunks_exact(5).enumerate() {
        let start = group_index * 5;
        let mut value: u64 = 0;
        for (i, &byte) in group.iter().enumerate() {
            let digit = z85_digit(byte).ok_or(DvError::Z85Char {
                position: start + i,
                byte,
            })?;
            value = value * 85 + digit;
        }
        let value = u32::try_from(value).map_err(|_| DvError::Z85Overflow {
            position: start,
            value,
        })?;
        out.extend_from_slice(&value.to_be_bytes());
    }
    Ok(out)
}

/// Serializes a row set as Delta's bitmap: little-endian `DV_MAGIC` followed by the portable
/// 64-bit Roaring serialization.
///
/// This is infallible and does not check `MAX_ROW_INDEX`; `DvFileWriter::add` and
/// `DeletionVectorDescriptor::inline` do.
#[must_use]
pub fn serialize_bitmap(rows: &RoaringTreemap) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + rows.serialized_size());
    out.extend_from_slice(&DV_MAGIC.to_le_bytes());
    // `impl io::Write for Vec<u8>` never returns an error, so this cannot fail.
    let written = rows.serialize_into(&mut out);
    debug_assert!(written.is_ok(), "writing into a Vec cannot fail");
    out
}

/// Parses Delta's bitmap (magic + portable treemap), as the kernel does.
///
/// Bytes after the treemap are ignored (inline DVs carry zero padding, and the kernel ignores
/// them too). Every count in the input is bounded by the bytes actually present: the treemap's
/// bucket count is consumed bucket by bucket, and `roaring` caps containers at 65536 per
/// bucket and reads each one before keeping it, so a huge count in a short buffer errors
/// instead of allocating.
///
/// # Errors
///
/// `DvError::BitmapTooShort`, `DvError::NativeMagic`, `DvError::BadMagic` or
/// `DvError::Roaring` for a malformed treemap (truncated, unsorted, unknown cookie...).
pub fn deserialize_bitmap(bytes: &[u8]) -> Result<RoaringTreemap, DvError> {
    let Some((magic, rest)) = bytes.split_first_chunk::<4>() else {
        return Err(DvError::BitmapTooShort { len: bytes.len() });
    };
    match u32::from_le_bytes(*magic) {
        DV_MAGIC => RoaringTreemap::deserialize_from(rest).map_err(DvError::Roaring),
        DV_NATIVE_MAGIC => Err(DvError::NativeMagic),
        found => Err(DvError::BadMagic { found }),
    }
}

fn check_row_indices(rows: &RoaringTreemap) -> Result<(), DvError> {
    match rows.max() {
        Some(row) if row > MAX_ROW_INDEX => Err(DvError::RowIndexTooLarge { row }),
        _ => Ok(()),
    }
}

fn i32_limit(what: &'static str, value: usize) -> Result<u32, DvError> {
    let too_large = || DvError::TooLarge {
        what,
        value: value as u64,
        max: i32::MAX as u64,
    };
    let value = i32::try_from(value).map_err(|_| too_large())?;
    u32::try_from(value).map_err(|_| too_large())
}

/// Where `DvFileWriter::add` put a deletion vector: the values for its descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DvLocation {
    /// Byte offset of the DV's big-endian size field from the start of the file (the first DV
    /// is at 1, right after the version byte). At most `i32::MAX`.
    pub offset: u32,
    /// Length of magic + treemap, the value of the size field (excludes the size field and the
    /// CRC). At most `i32::MAX`.
    pub size_in_bytes: u32,
    /// Number of deleted rows.
    pub cardinality: u64,
}

/// Builds a DV file holding one or more deletion vectors, in memory.
#[derive(Clone, Debug)]
pub struct DvFileWriter {
    buf: Vec<u8>,
}

impl Default for DvFileWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl DvFileWriter {
    /// Starts a file: just the version byte.
    #[must_use]
    pub fn new() -> Self {
        Self {
            buf: vec![DV_FILE_VERSION],
        }
    }

    /// Appends one deletion vector and returns where it is.
    ///
    /// Fails, leaving the file unchanged, if a row index is above `MAX_ROW_INDEX`, or if the
    /// DV's offset or size does not fit the descriptor's `i32` (the kernel's limits too).
    ///
    /// # Errors
    ///
    /// `DvError::RowIndexTooLarge` or `DvError::TooLarge`.
    pub fn add(&mut self, rows: &RoaringTreemap) -> Result<DvLocation, DvError> {
        check_row_indices(rows)?;
        let offset = i32_limit("deletion vector offset", self.buf.len())?;
        let data = serialize_bitmap(rows);
        let size_in_bytes = i32_limit("deletion vector sizeInBytes", data.len())?;
        self.buf.reserve(data.len() + FRAME_OVERHEAD);
        self.buf.extend_from_slice(&size_in_bytes.to_be_bytes());
        self.buf.extend_from_slice(&data);
        self.buf
            .extend_from_slice(&crc32fast::hash(&data).to_be_bytes());
        Ok(DvLocation {
            offset,
            size_in_bytes,
            cardinality: rows.len(),
        })
    }

    /// Returns the whole file. A writer with no DVs yields just the version byte.
    #[must_use]
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

fn slice_u32_be(file: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes: [u8; 4] = file.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes))
}

/// Reads one deletion vector from a whole DV file, given the descriptor's `offset` and
/// `sizeInBytes`.
///
/// Checks, in order: the version byte, the offset (absent means 1, like the kernel), that the
/// size field is in the file and equals `size_in_bytes`, that the data and CRC are in the file,
/// the CRC-32 over magic + treemap, then the magic and the treemap.
///
/// # Errors
///
/// `DvError::EmptyFile`, `DvError::UnsupportedVersion`, `DvError::InvalidOffset`,
/// `DvError::InvalidSize`, `DvError::Truncated`, `DvError::SizeMismatch`,
/// `DvError::ChecksumMismatch`, or `DvError::AtOffset` wrapping a
/// `deserialize_bitmap` error; each names the DV's offset.
pub fn read_dv(
    file: &[u8],
    offset: Option<i32>,
    size_in_bytes: i32,
) -> Result<RoaringTreemap, DvError> {
    let version = *file.first().ok_or(DvError::EmptyFile)?;
    if version != DV_FILE_VERSION {
        return Err(DvError::UnsupportedVersion { found: version });
    }
    let raw_offset = offset.unwrap_or(1);
    let start = match usize::try_from(raw_offset) {
        Ok(start) if start >= 1 => start,
        _ => {
            return Err(DvError::InvalidOffset {
                offset: i64::from(raw_offset),
            })
        }
    };
    let expected = match u32::try_from(size_in_bytes) {
        Ok(size) if size >= 4 => size,
        _ => {
            return Err(DvError::InvalidSize {
                size: i64::from(size_in_bytes),
            })
        }
    };
    let file_len = file.len() as u64;
    let start_u64 = start as u64;
    let found = slice_u32_be(file, start).ok_or(DvError::Truncated {
        offset: start_u64,
        needed: start_u64 + 4,
        file_len,
    })?;
    if found != expected {
        return Err(DvError::SizeMismatch {
            offset: start_u64,
            expected,
            found,
        });
    }
    let data_start = start + 4;
    let crc_start = data_start + expected as usize;
    let needed = start_u64 + 4 + u64::from(expected) + 4;
    let data = file.get(data_start..crc_start).ok_or(DvError::Truncated {
        offset: start_u64,
        needed,
        file_len,
    })?;
    let stored = slice_u32_be(file, crc_start).ok_or(DvError::Truncated {
        offset: start_u64,
        needed,
        file_len,
    })?;
    let computed = crc32fast::hash(data);
    if stored != computed {
        return Err(DvError::ChecksumMismatch {
            offset: start_u64,
            crc_offset: crc_start as u64,
            stored,
            computed,
        });
    }
    deserialize_bitmap(data).map_err(|source| DvError::AtOffset {
        offset: start_u64,
        data_offset: data_start as u64,
        source: Box::new(source),
    })
}

/// File name of the DV file for `uuid`: `deletion_vector_<uuid hyphenated lowercase>.bin`.
#[must_use]
pub fn dv_file_name(uuid: Uuid) -> String {
    format!("deletion_vector_{}.bin", uuid.hyphenated())
}

/// A Delta deletion-vector descriptor, the `deletionVector` field of `add`/`remove` actions.
///
/// Field names and types follow the protocol's "Deletion Vector Descriptor Schema" and the
/// kernel: `storageType` string, `pathOrInlineDv` string, `offset` optional int (absent, not
/// null, for inline DVs), `sizeInBytes` int, `cardinality` long. Unknown fields (for example
/// Spark's transient `maxRowIndex`) are ignored on input.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletionVectorDescriptor {
    /// `"u"` (file relative to the table, named from a UUID), `"i"` (inline) or `"p"`
    /// (absolute path).
    pub storage_type: String,
    /// `"u"`: optional random prefix + 20-character Z85 UUID; `"i"`: Z85 of the bitmap;
    /// `"p"`: absolute path.
    pub path_or_inline_dv: String,
    /// Offset of the DV's size field in its file; `None` for inline DVs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<i32>,
    /// Length of magic + treemap (before Z85 encoding for inline DVs).
    pub size_in_bytes: i32,
    /// Number of rows the DV deletes.
    pub cardinality: i64,
}

impl DeletionVectorDescriptor {
    /// Descriptor of a DV written with `DvFileWriter` to the file
    /// `dv_file_name``(uuid)` at the table root (storage type `"u"`, no random prefix).
    ///
    /// # Errors
    ///
    /// `DvError::TooLarge` if `loc` holds values above `i32::MAX` (offset, size) or
    /// `i64::MAX` (cardinality); `DvFileWriter::add` never returns such values.
    pub fn on_disk(uuid: Uuid, loc: &DvLocation) -> Result<Self, DvError> {
        let offset = i32::try_from(loc.offset).map_err(|_| DvError::TooLarge {
            what: "deletion vector offset",
            value: u64::from(loc.offset),
            max: i32::MAX as u64,
        })?;
        let size_in_bytes = i32::try_from(loc.size_in_bytes).map_err(|_| DvError::TooLarge {
            what: "deletion vector sizeInBytes",
            value: u64::from(loc.size_in_bytes),
            max: i32::MAX as u64,
        })?;
        let cardinality = i64::try_from(loc.cardinality).map_err(|_| DvError::TooLarge {
            what: "deletion vector cardinality",
            value: loc.cardinality,
            max: i64::MAX as u64,
        })?;
        Ok(Self {
            storage_type: STORAGE_TYPE_RELATIVE.to_owned(),
            path_or_inline_dv: z85_encode(uuid.as_bytes()),
            offset: Some(offset),
            size_in_bytes,
            cardinality,
        })
    }

    /// `Self::on_disk` for a file in the folder `prefix` (ASCII letters,
    /// digits, `-` and `_`) of the table: `<prefix>/``dv_file_name``(uuid)`.
    ///
    /// # Errors
    ///
    /// As `Self::on_disk`, and `DvError::UnsafePrefix` for a prefix
    /// with other characters.
    pub fn on_disk_with_prefix(
        prefix: &str,
        uuid: Uuid,
        loc: &DvLocation,
    ) -> Result<Self, DvError> {
        if !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(DvError::UnsafePrefix {
                prefix: prefix.to_owned(),
            });
        }
        let mut descriptor = Self::on_disk(uuid, loc)?;
        descriptor.path_or_inline_dv.insert_str(0, prefix);
        Ok(descriptor)
    }

    /// Inline descriptor (storage type `"i"`) holding `rows` in the log itself.
    ///
    /// # Errors
    ///
    /// `DvError::RowIndexTooLarge` if a row index is above `MAX_ROW_INDEX`, or
    /// `DvError::TooLarge` if the bitmap exceeds `i32::MAX` bytes.
    pub fn inline(rows: &RoaringTreemap) -> Result<Self, DvError> {
        check_row_indices(rows)?;
        let data = serialize_bitmap(rows);
        let size_in_bytes = i32::try_from(data.len()).map_err(|_| DvError::TooLarge {
            what: "deletion vector sizeInBytes",
            value: data.len() as u64,
            max: i32::MAX as u64,
        })?;
        let cardinality = i64::try_from(rows.len()).map_err(|_| DvError::TooLarge {
            what: "deletion vector cardinality",
            value: rows.len(),
            max: i64::MAX as u64,
        })?;
        Ok(Self {
            storage_type: STORAGE_TYPE_INLINE.to_owned(),
            path_or_inline_dv: z85_encode(&data),
            offset: None,
            size_in_bytes,
            cardinality,
        })
    }

    /// Splits a `"u"` path into its random prefix and UUID.
    fn prefix_and_uuid(&self) -> Result<(&str, Uuid), DvError> {
        let bytes = self.path_or_inline_dv.as_bytes();
        let Some(prefix_len) = bytes.len().checked_sub(ENCODED_UUID_LEN) else {
            return Err(DvError::PathTooShort { len: bytes.len() });
        };
        // Byte slicing: a non-ASCII character straddling the split must not panic.
        let (prefix, encoded) = bytes.split_at(prefix_len);
        let decoded = z85_decode_bytes(encoded).map_err(|source| DvError::BadEncodedUuid {
            path: self.path_or_inline_dv.clone(),
            source: Box::new(source),
        })?;
        let uuid = Uuid::from_slice(&decoded).map_err(|_| DvError::BadEncodedUuid {
            path: self.path_or_inline_dv.clone(),
            source: Box::new(DvError::Z85Length { len: encoded.len() }),
        })?;
        let safe = prefix
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        match std::str::from_utf8(prefix) {
            Ok(prefix) if safe => Ok((prefix, uuid)),
            _ => Err(DvError::UnsafePrefix {
                prefix: String::from_utf8_lossy(prefix).into_owned(),
            }),
        }
    }

    /// UUID of the DV file for `"u"` descriptors, `None` for inline ones.
    ///
    /// # Errors
    ///
    /// As `Self::relative_path`.
    pub fn uuid(&self) -> Result<Option<Uuid>, DvError> {
        match self.storage_type.as_str() {
            STORAGE_TYPE_RELATIVE => Ok(Some(self.prefix_and_uuid()?.1)),
            STORAGE_TYPE_INLINE => Ok(None),
            other => Err(DvError::StorageType {
                found: other.to_owned(),
                expected: "\"u\" or \"i\"",
            }),
        }
    }

    /// Path of the DV file relative to the table root for `"u"` descriptors
    /// (`[<prefix>/]deletion_vector_<uuid>.bin`), `None` for inline ones.
    ///
    /// The random prefix is whatever precedes the last 20 characters (the Z85 UUID); it becomes
    /// a directory, as in the kernel. Unlike the kernel, a prefix with characters other than
    /// ASCII letters, digits, `-` and `_` is rejected so it cannot escape the table root
    /// (Spark writes alphanumeric prefixes). `"p"` descriptors are an error: their path is
    /// absolute and is `path_or_inline_dv` itself.
    ///
    /// # Errors
    ///
    /// `DvError::StorageType` for storage types other than `"u"`/`"i"`;
    /// `DvError::PathTooShort`, `DvError::BadEncodedUuid` or `DvError::UnsafePrefix`
    /// for a malformed `"u"` path.
    pub fn relative_path(&self) -> Result<Option<String>, DvError> {
        match self.storage_type.as_str() {
            STORAGE_TYPE_RELATIVE => {
                let (prefix, uuid) = self.prefix_and_uuid()?;
                let mut path = String::new();
                if !prefix.is_empty() {
                    let _ = write!(path, "{prefix}/");
                }
                path.push_str(&dv_file_name(uuid));
                Ok(Some(path))
            }
            STORAGE_TYPE_INLINE => Ok(None),
            other => Err(DvError::StorageType {
                found: other.to_owned(),
                expected: "\"u\" or \"i\" (a \"p\" descriptor's path is absolute)",
            }),
        }
    }

    /// The protocol's `uniqueId`: `<storageType><pathOrInlineDv>[@<offset>]`.
    #[must_use]
    pub fn unique_id(&self) -> String {
        match self.offset {
            Some(offset) => format!("{}{}@{offset}", self.storage_type, self.path_or_inline_dv),
            None => format!("{}{}", self.storage_type, self.path_or_inline_dv),
        }
    }

    /// Decodes an inline (`"i"`) descriptor's rows.
    ///
    /// The decoded bytes are cut to `sizeInBytes` when longer (Z85 padding), as Spark does.
    ///
    /// # Errors
    ///
    /// `DvError::StorageType` unless the storage type is `"i"`, `DvError::InvalidSize` for
    /// a negative size, or a `z85_decode` / `deserialize_bitmap` error.
    pub fn read_inline(&self) -> Result<RoaringTreemap, DvError> {
        if self.storage_type != STORAGE_TYPE_INLINE {
            return Err(DvError::StorageType {
                found: self.storage_type.clone(),
                expected: "\"i\"",
            });
        }
        let size = usize::try_from(self.size_in_bytes).map_err(|_| DvError::InvalidSize {
            size: i64::from(self.size_in_bytes),
        })?;
        let mut bytes = z85_decode(&self.path_or_inline_dv)?;
        bytes.truncate(size);
        deserialize_bitmap(&bytes)
    }

    /// Reads an on-disk (`"u"` or `"p"`) descriptor's rows from the whole DV file.
    ///
    /// # Errors
    ///
    /// `DvError::StorageType` unless the storage type is `"u"` or `"p"`, or a `read_dv`
    /// error.
    pub fn read_from_file(&self, file: &[u8]) -> Result<RoaringTreemap, DvError> {
        match self.storage_type.as_str() {
            STORAGE_TYPE_RELATIVE | STORAGE_TYPE_ABSOLUTE => {
                read_dv(file, self.offset, self.size_in_bytes)
            }
            other => Err(DvError::StorageType {
                found: other.to_owned(),
                expected: "\"u\" or \"p\"",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn treemap(rows: &[u64]) -> RoaringTreemap {
        rows.iter().copied().collect()
    }

    // Source: delta-io/delta-kernel-rs @ b14c3fb84003346db99e4bcc6b473d87b43e034b,
    // kernel/tests/data/table-with-dv-small/deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin
    // (45 bytes, written by Databricks Runtime). Kernel test `test_deletion_vector_read`
    // expects rows [0, 9].
    const TABLE_WITH_DV_SMALL_BIN: &str = "01 00000024 d1d33964 0100000000000000 00000000 \
        3a300000 01000000 00000100 10000000 0000 0900 2a671846";
    // Same repo and commit, kernel/tests/data/table-with-dv-small/_delta_log/00000000000000000001.json
    const TABLE_WITH_DV_SMALL_DESCRIPTOR: &str = r#"{"storageType":"u","pathOrInlineDv":"vBn[lx{q8@P<9BNH/isA","offset":1,"sizeInBytes":36,"cardinality":2}"#;

    // Same repo and commit, kernel/tests/data/with-short-dv/deletion_vector_ae7177f2-6d17-4ea8-819b-8d62fa2c5469.bin
    // (47 bytes). Its table's expected output (ffi/tests/read-table-testing/expected-data/
    // with-short-dv.expected) drops ids 0, 1, 2 of the first 5-row file.
    const WITH_SHORT_DV_BIN: &str = "01 00000026 d1d33964 0100000000000000 00000000 \
        3a300000 01000000 00000200 10000000 0000 0100 0200 748ad0d0";
    // kernel/tests/data/with-short-dv/_delta_log/00000000000000000000.json (spaces as in file)
    const WITH_SHORT_DV_DESCRIPTOR: &str = r#"{"storageType": "u", "pathOrInlineDv": "U5OWRz5k%CFT.Td}yCPW", "offset": 1, "sizeInBytes": 38, "cardinality": 3}"#;

    // kernel/src/actions/deletion_vector.rs tests `dv_inline()` / `test_inline_read`:
    // rows 3, 4, 7, 11, 18, 29, sizeInBytes 44.
    const KERNEL_INLINE: &str = "^Bg9^0rr910000000000iXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L";

    #[test]
    fn golden_table_with_dv_small() {
        let file = hex(TABLE_WITH_DV_SMALL_BIN);
        assert_eq!(file.len(), 45);
        let desc: DeletionVectorDescriptor =
            serde_json::from_str(TABLE_WITH_DV_SMALL_DESCRIPTOR).unwrap();
        assert_eq!(
            desc.relative_path().unwrap().as_deref(),
            Some("deletion_vector_61d16c75-6994-46b7-a15b-8b538852e50e.bin")
        );
        let rows = desc.read_from_file(&file).unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), vec![0, 9]);
        assert_eq!(rows.len(), 2);

        // Our writer reproduces the Databricks-written file byte for byte.
        let mut w = DvFileWriter::new();
        let loc = w.add(&rows).unwrap();
        assert_eq!(w.finish(), file);
        let uuid = Uuid::parse_str("61d16c75-6994-46b7-a15b-8b538852e50e").unwrap();
        let ours = DeletionVectorDescriptor::on_disk(uuid, &loc).unwrap();
        assert_eq!(ours, desc);
        assert_eq!(
            serde_json::to_string(&ours).unwrap(),
            TABLE_WITH_DV_SMALL_DESCRIPTOR
        );
    }

    #[test]
    fn golden_with_short_dv() {
        let file = hex(WITH_SHORT_DV_BIN);
        assert_eq!(file.len(), 47);
        let desc: DeletionVectorDescriptor =
            serde_json::from_str(WITH_SHORT_DV_DESCRIPTOR).unwrap();
        assert_eq!(
            desc.relative_path().unwrap().as_deref(),
            Some("deletion_vector_ae7177f2-6d17-4ea8-819b-8d62fa2c5469.bin")
        );
        let rows = desc.read_from_file(&file).unwrap();
        assert_eq!(rows.iter().collect::<Vec<_>>(), vec![0, 1, 2]);
        assert_eq!(i64::try_from(rows.len()).unwrap(), desc.cardinality);
        let mut w = DvFileWriter::new();
        w.add(&rows).unwrap();
        assert_eq!(w.finish(), file);
    }

    #[test]
    fn golden_kernel_inline() {
        let rows = treemap(&[3, 4, 7, 11, 18, 29]);
        let desc = DeletionVectorDescriptor::inline(&rows).unwrap();
        assert_eq!(desc.path_or_inline_dv, KERNEL_INLINE);
        assert_eq!(desc.size_in_bytes, 44);
        assert_eq!(desc.cardinality, 6);
        assert_eq!(desc.offset, None);
        assert_eq!(desc.relative_path().unwrap(), None);
        assert_eq!(desc.read_inline().unwrap(), rows);
        // Serialized bitmap begins with the little-endian magic d1 d3 39 64.
        let bytes = serialize_bitmap(&rows);
        assert_eq!(&bytes[..4], &[0xd1, 0xd3, 0x39, 0x64]);
        assert_eq!(z85_decode(KERNEL_INLINE).unwrap(), bytes);
        // JSON leaves the offset out rather than writing null.
        assert_eq!(
            serde_json::to_string(&desc).unwrap(),
            format!(
                r#"{{"storageType":"i","pathOrInlineDv":"{KERNEL_INLINE}","sizeInBytes":44,"cardinality":6}}"#
            )
        );
    }

    #[test]
    fn protocol_md_inline_example_is_rejected() {
        // PROTOCOL.md "JSON Example 3 — Inline" (delta-io/delta @ bb1057f4): its first four
        // bytes are 64 39 d3 d0, the *native* magic 1681511376 in big-endian order, so the
        // little-endian read the kernel does sees neither magic.
        let bytes = z85_decode("wi5b=000010000siXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L").unwrap();
        assert_eq!(&bytes[..4], &DV_NATIVE_MAGIC.to_be_bytes());
        assert!(matches!(
            deserialize_bitmap(&bytes),
            Err(DvError::BadMagic { .. })
        ));
    }

    #[test]
    fn kernel_relative_path_cases() {
        let with_prefix = DeletionVectorDescriptor {
            storage_type: "u".into(),
            path_or_inline_dv: "ab^-aqEH.-t@S}K{vb[*k^".into(),
            offset: Some(4),
            size_in_bytes: 40,
            cardinality: 6,
        };
        assert_eq!(
            with_prefix.relative_path().unwrap().as_deref(),
            Some("ab/deletion_vector_d2c639aa-8816-431a-aaf6-d3fe2512ff61.bin")
        );
        assert_eq!(with_prefix.unique_id(), "uab^-aqEH.-t@S}K{vb[*k^@4");
        // Kernel test_deletion_vector_path_absolute_path_with_known_uuid_empty_prefix.
        let uuid = Uuid::parse_str("123e4567-e89b-12d3-a456-426614174000").unwrap();
        assert_eq!(z85_encode(uuid.as_bytes()), "5<w-%>:JjlQ/G/]6C<1m");
        let uuid = Uuid::parse_str("550e8400-e29b-41d4-a716-446655440000").unwrap();
        assert_eq!(z85_encode(uuid.as_bytes()), "rsTVZ&*Sl-RXRWjryu/!");
        assert_eq!(
            dv_file_name(uuid),
            "deletion_vector_550e8400-e29b-41d4-a716-446655440000.bin"
        );
    }

    #[test]
    fn relative_path_errors() {
        let mut d = DeletionVectorDescriptor {
            storage_type: "u".into(),
            path_or_inline_dv: "short".into(),
            offset: Some(1),
            size_in_bytes: 36,
            cardinality: 2,
        };
        assert!(matches!(
            d.relative_path(),
            Err(DvError::PathTooShort { len: 5 })
        ));
        d.path_or_inline_dv = "éaaaaaaaaaaaaaaaaaaa".into();
        assert!(d.relative_path().is_err());
        d.path_or_inline_dv = "____________________".into();
        assert!(matches!(
            d.relative_path(),
            Err(DvError::BadEncodedUuid { .. })
        ));
        d.path_or_inline_dv = "../vBn[lx{q8@P<9BNH/isA".into();
        assert!(matches!(
            d.relative_path(),
            Err(DvError::UnsafePrefix { .. })
        ));
        d.storage_type = "p".into();
        assert!(matches!(
            d.relative_path(),
            Err(DvError::StorageType { .. })
        ));
        d.storage_type = "r".into();
        assert!(d.read_from_file(&[1]).is_err());
    }

    #[test]
    fn z85_round_trip_and_errors() {
        // ZeroMQ RFC 32 test vector.
        let bytes = [0x86, 0x4F, 0xD2, 0x6F, 0xB5, 0x59, 0xF7, 0x5B];
        assert_eq!(z85_encode(&bytes), "HelloWorld");
        assert_eq!(z85_decode("HelloWorld").unwrap(), bytes);
        assert_eq!(z85_encode(&[]), "");
        assert_eq!(z85_encode(&[0xff; 4]), "%nSc0");
        assert_eq!(z85_decode("%nSc0").unwrap(), vec![0xff; 4]);
        // Non-multiple of 4 is zero padded.
        assert_eq!(
            z85_decode(&z85_encode(&[1, 2, 3])).unwrap(),
            vec![1, 2, 3, 0]
        );
        assert!(matches!(
            z85_decode("Hell"),
            Err(DvError::Z85Length { len: 4 })
        ));
        assert!(matches!(
            z85_decode("Hello Worl"),
            Err(DvError::Z85Char {
                position: 5,
                byte: b' '
            })
        ));
        assert!(matches!(
            z85_decode("#####"),
            Err(DvError::Z85Overflow { position: 0, .. })
        ));
        assert!(z85_decode("%nSc1").is_err());
    }

    #[test]
    fn file_with_several_vectors() {
        let sets = [
            treemap(&[0, 5, 10, 15]),
            treemap(&[]),
            treemap(&[1, 2, 3, 100, 200, 1 << 32, (1 << 40) + 7]),
            (0u64..100_000).collect(),
        ];
        let mut w = DvFileWriter::new();
        let locs: Vec<_> = sets.iter().map(|s| w.add(s).unwrap()).collect();
        let file = w.finish();
        assert_eq!(file[0], 1);
        assert_eq!(locs[0].offset, 1);
        for pair in locs.windows(2) {
            assert_eq!(
                pair[1].offset,
                pair[0].offset + 4 + pair[0].size_in_bytes + 4
            );
        }
        let last = locs[locs.len() - 1];
        assert_eq!(file.len(), (last.offset + last.size_in_bytes + 8) as usize);
        let uuid = Uuid::new_v4();
        for (loc, set) in locs.iter().zip(&sets) {
            assert_eq!(loc.cardinality, set.len());
            let desc = DeletionVectorDescriptor::on_disk(uuid, loc).unwrap();
            let json = serde_json::to_string(&desc).unwrap();
            let back: DeletionVectorDescriptor = serde_json::from_str(&json).unwrap();
            assert_eq!(back, desc);
            assert_eq!(back.read_from_file(&file).unwrap(), *set);
            assert_eq!(back.uuid().unwrap(), Some(uuid));
            assert_eq!(back.relative_path().unwrap(), Some(dv_file_name(uuid)));
        }
        // An absent offset means 1.
        assert_eq!(
            read_dv(&file, None, i32::try_from(locs[0].size_in_bytes).unwrap()).unwrap(),
            sets[0]
        );
    }

    #[test]
    fn read_dv_errors() {
        let mut w = DvFileWriter::new();
        let loc = w.add(&treemap(&[0, 9])).unwrap();
        let file = w.finish();
        let size = i32::try_from(loc.size_in_bytes).unwrap();
        assert!(matches!(
            read_dv(&[], Some(1), size),
            Err(DvError::EmptyFile)
        ));
        let mut bad = file.clone();
        bad[0] = 2;
        assert!(matches!(
            read_dv(&bad, Some(1), size),
            Err(DvError::UnsupportedVersion { found: 2 })
        ));
        assert!(matches!(
            read_dv(&file, Some(0), size),
            Err(DvError::InvalidOffset { offset: 0 })
        ));
        assert!(matches!(
            read_dv(&file, Some(-5), size),
            Err(DvError::InvalidOffset { offset: -5 })
        ));
        assert!(matches!(
            read_dv(&file, Some(1), 3),
            Err(DvError::InvalidSize { size: 3 })
        ));
        assert!(matches!(
            read_dv(&file, Some(1), size + 1),
            Err(DvError::SizeMismatch {
                offset: 1,
                expected: 37,
                found: 36
            })
        ));
        assert!(matches!(
            read_dv(&file, Some(100), size),
            Err(DvError::Truncated { offset: 100, .. })
        ));
        assert!(matches!(
            read_dv(&file[..file.len() - 1], Some(1), size),
            Err(DvError::Truncated {
                offset: 1,
                needed: 45,
                file_len: 44
            })
        ));
        let mut bad = file.clone();
        bad[20] ^= 1;
        let err = read_dv(&bad, Some(1), size).unwrap_err();
        assert!(matches!(
            err,
            DvError::ChecksumMismatch {
                offset: 1,
                crc_offset: 41,
                ..
            }
        ));
        assert!(err.to_string().contains("offset 1"), "{err}");
        // Bad magic with a matching CRC is reported with its offset.
        let mut bad = file.clone();
        bad[5] = 0;
        let crc = crc32fast::hash(&bad[5..41]);
        bad[41..45].copy_from_slice(&crc.to_be_bytes());
        let err = read_dv(&bad, Some(1), size).unwrap_err();
        assert!(
            matches!(&err, DvError::AtOffset { offset: 1, data_offset: 5, source }
                if matches!(**source, DvError::BadMagic { .. })),
            "{err}"
        );
    }

    #[test]
    fn deserialize_bitmap_errors() {
        assert!(matches!(
            deserialize_bitmap(&[0xd1, 0xd3]),
            Err(DvError::BitmapTooShort { len: 2 })
        ));
        assert!(matches!(
            deserialize_bitmap(&DV_NATIVE_MAGIC.to_le_bytes()),
            Err(DvError::NativeMagic)
        ));
        // Magic alone: no bucket count.
        assert!(matches!(
            deserialize_bitmap(&DV_MAGIC.to_le_bytes()),
            Err(DvError::Roaring(_))
        ));
        // Huge bucket count in a short buffer errors without allocating.
        let mut b = DV_MAGIC.to_le_bytes().to_vec();
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        assert!(deserialize_bitmap(&b).is_err());
        // Huge container count (no-run cookie) in a short buffer.
        b.extend_from_slice(&12346u32.to_le_bytes());
        b.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(deserialize_bitmap(&b).is_err());
    }

    #[test]
    fn writer_rejects_out_of_protocol_rows() {
        let mut w = DvFileWriter::new();
        let rows = treemap(&[1, 1 << 63]);
        assert!(matches!(
            w.add(&rows),
            Err(DvError::RowIndexTooLarge { row }) if row == 1 << 63
        ));
        assert_eq!(w.finish(), vec![1]);
        assert!(DeletionVectorDescriptor::inline(&rows).is_err());
        assert!(w_ok_at_max());
    }

    fn w_ok_at_max() -> bool {
        DvFileWriter::new().add(&treemap(&[MAX_ROW_INDEX])).is_ok()
    }

    #[test]
    fn run_containers_round_trip() {
        let mut rows = RoaringTreemap::new();
        rows.insert_range(0..70_000);
        rows.insert_range((5u64 << 32)..(5u64 << 32) + 65_536);
        let bytes = serialize_bitmap(&rows);
        // First bucket's 32-bit bitmap starts at 16 (magic 4 + count 8 + key 4) with the
        // run-container cookie 12347 (0x303b, little-endian).
        assert_eq!(&bytes[16..18], &[0x3b, 0x30]);
        assert_eq!(deserialize_bitmap(&bytes).unwrap(), rows);
    }

    #[test]
    fn descriptor_json_ignores_unknown_fields_and_null_offset() {
        let d: DeletionVectorDescriptor = serde_json::from_str(
            r#"{"storageType":"i","pathOrInlineDv":"^Bg9^0rr910000000000iXQKl0rr91000f55c8Xg0@@D72lkbi5=-{L","offset":null,"sizeInBytes":44,"cardinality":6,"maxRowIndex":29}"#,
        )
        .unwrap();
        assert_eq!(d.offset, None);
        assert_eq!(d.read_inline().unwrap(), treemap(&[3, 4, 7, 11, 18, 29]));
        assert!(d.read_from_file(&[1]).is_err());
    }

    fn arb_treemap() -> impl Strategy<Value = RoaringTreemap> {
        let point = prop_oneof![
            0u64..200_000,
            (0u64..8, any::<u32>()).prop_map(|(hi, lo)| (hi << 32) | u64::from(lo)),
            0u64..=MAX_ROW_INDEX,
        ];
        let range = (0u64..(1 << 34), 0u64..140_000);
        (
            prop::collection::vec(point, 0..300),
            prop::collection::vec(range, 0..3),
        )
            .prop_map(|(points, ranges)| {
                let mut t: RoaringTreemap = points.into_iter().collect();
                for (start, len) in ranges {
                    t.insert_range(start..start + len);
                }
                t
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn prop_bitmap_round_trip(rows in arb_treemap()) {
            let bytes = serialize_bitmap(&rows);
            prop_assert_eq!(&bytes[..4], &DV_MAGIC.to_le_bytes());
            prop_assert_eq!(deserialize_bitmap(&bytes).unwrap(), rows.clone());
            let inline = DeletionVectorDescriptor::inline(&rows).unwrap();
            prop_assert_eq!(usize::try_from(inline.size_in_bytes).unwrap(), bytes.len());
            prop_assert_eq!(inline.read_inline().unwrap(), rows);
        }

        #[test]
        fn prop_file_round_trip(sets in prop::collection::vec(arb_treemap(), 1..4)) {
            let mut w = DvFileWriter::new();
            let locs: Vec<_> = sets.iter().map(|s| w.add(s).unwrap()).collect();
            let file = w.finish();
            for (loc, set) in locs.iter().zip(&sets) {
                let got = read_dv(
                    &file,
                    Some(i32::try_from(loc.offset).unwrap()),
                    i32::try_from(loc.size_in_bytes).unwrap(),
                ).unwrap();
                prop_assert_eq!(&got, set);
            }
        }

        #[test]
        fn prop_z85_round_trip(mut bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            bytes.truncate(bytes.len() / 4 * 4);
            let text = z85_encode(&bytes);
            prop_assert_eq!(text.len(), bytes.len() / 4 * 5);
            prop_assert_eq!(z85_decode(&text).unwrap(), bytes);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(
            bytes in prop::collection::vec(any::<u8>(), 0..512),
            offset in any::<Option<i32>>(),
            size in any::<i32>(),
            small_offset in 0i32..64,
            small_size in 0i32..600,
        ) {
            let _ = deserialize_bitmap(&bytes);
            let mut with_magic = DV_MAGIC.to_le_bytes().to_vec();
            with_magic.extend_from_slice(&bytes);
            let _ = deserialize_bitmap(&with_magic);
            let _ = read_dv(&bytes, offset, size);
            let _ = read_dv(&bytes, Some(small_offset), small_size);
            let mut file = vec![1u8];
            file.extend_from_slice(&bytes);
            let _ = read_dv(&file, Some(small_offset), small_size);
            let _ = z85_decode(&String::from_utf8_lossy(&bytes));
            let text: String = bytes.iter().map(|&b| char::from(Z85_ALPHABET[usize::from(b) % 85])).collect();
            let _ = z85_decode(&text);
        }

        #[test]
        fn prop_framed_garbage_never_panics(body in prop::collection::vec(any::<u8>(), 0..512)) {
            // Valid frame (version, size, CRC) around arbitrary magic-prefixed bytes, so the
            // treemap parser itself sees the garbage.
            let mut data = DV_MAGIC.to_le_bytes().to_vec();
            data.extend_from_slice(&body);
            let mut file = vec![1u8];
            let size = u32::try_from(data.len()).unwrap();
            file.extend_from_slice(&size.to_be_bytes());
            file.extend_from_slice(&data);
            file.extend_from_slice(&crc32fast::hash(&data).to_be_bytes());
            let _ = read_dv(&file, Some(1), i32::try_from(size).unwrap());
        }

        #[test]
        fn prop_descriptor_paths_never_panic(path in ".{0,40}", st in "[uipr]") {
            let d = DeletionVectorDescriptor {
                storage_type: st,
                path_or_inline_dv: path,
                offset: None,
                size_in_bytes: 10,
                cardinality: 1,
            };
            let _ = d.relative_path();
            let _ = d.uuid();
            let _ = d.read_inline();
        }
    }
}
