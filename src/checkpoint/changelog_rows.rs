//! Reading rows of the `changelog` table back: the one decoder that
//! recovery, the state table's build and lookups share, so they agree on
//! every row (an op the writer never writes is corrupt everywhere).
//!
//! The ops are the ones [`super::parquet`] writes: `put` (key and value),
//! `delete` (key), and the markers `commit`, `checkpoint` and
//! `epoch_barrier`, which change no key.

use arrow_array::cast::AsArray;
use arrow_array::{Array, BinaryArray, Int64Array, RecordBatch, StringArray};

/// What one changelog row does to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change<'a> {
    /// `key` now holds `value`.
    Put(&'a [u8], &'a [u8]),
    /// `key` is gone.
    Delete(&'a [u8]),
    /// A marker (`commit`, `checkpoint`, `epoch_barrier`): no key changes.
    Marker,
}

/// The columns of a changelog batch that say what a row changes.
pub(crate) struct ChangelogRows<'b> {
    ops: &'b StringArray,
    keys: &'b BinaryArray,
    values: &'b BinaryArray,
}

impl<'b> ChangelogRows<'b> {
    /// The `op`, `key` and `value` columns of `batch`; a missing column or
    /// one of another type is an error saying which.
    pub(crate) fn of(batch: &'b RecordBatch) -> Result<Self, String> {
        Ok(Self {
            ops: string_column(batch, "op")?,
            keys: binary_column(batch, "key")?,
            values: binary_column(batch, "value")?,
        })
    }

    /// What row `row` (of the batch) does; `at` is its row number in the
    /// file, for the message of a bad row (a null op, a put or delete
    /// without its key or value, an unknown op).
    pub(crate) fn change(&self, row: usize, at: u64) -> Result<Change<'b>, String> {
        if self.ops.is_null(row) {
            return Err(format!("row {at} of the file: null op"));
        }
        let op = self.ops.value(row);
        let key = || {
            (!self.keys.is_null(row))
                .then(|| self.keys.value(row))
                .ok_or_else(|| format!("row {at} of the file: {op} without a key"))
        };
        match op {
            "put" => {
                let key = key()?;
                if self.values.is_null(row) {
                    return Err(format!("row {at} of the file: put without a value"));
                }
                Ok(Change::Put(key, self.values.value(row)))
            }
            "delete" => Ok(Change::Delete(key()?)),
            "commit" | "checkpoint" | "epoch_barrier" => Ok(Change::Marker),
            other => Err(format!("row {at} of the file: unknown op {other:?}")),
        }
    }
}

/// Column `name` of `batch` as Utf8.
pub(crate) fn string_column<'b>(
    batch: &'b RecordBatch,
    name: &str,
) -> Result<&'b StringArray, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name:?}"))?
        .as_string_opt::<i32>()
        .ok_or_else(|| format!("column {name:?} is not Utf8"))
}

/// Column `name` of `batch` as Binary.
pub(crate) fn binary_column<'b>(
    batch: &'b RecordBatch,
    name: &str,
) -> Result<&'b BinaryArray, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name:?}"))?
        .as_binary_opt::<i32>()
        .ok_or_else(|| format!("column {name:?} is not Binary"))
}

/// Column `name` of `batch` as Int64.
pub(crate) fn int64_column<'b>(
    batch: &'b RecordBatch,
    name: &str,
) -> Result<&'b Int64Array, String> {
    batch
        .column_by_name(name)
        .ok_or_else(|| format!("no column {name:?}"))?
        .as_primitive_opt::<arrow_array::types::Int64Type>()
        .ok_or_else(|| format!("column {name:?} is not Int64"))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray};

    use super::*;

    fn batch(
        ops: &[Option<&str>],
        keys: &[Option<&[u8]>],
        values: &[Option<&[u8]>],
    ) -> RecordBatch {
        RecordBatch::try_from_iter([
            ("op", Arc::new(StringArray::from(ops.to_vec())) as ArrayRef),
            (
                "key",
                Arc::new(BinaryArray::from(keys.to_vec())) as ArrayRef,
            ),
            (
                "value",
                Arc::new(BinaryArray::from(values.to_vec())) as ArrayRef,
            ),
        ])
        .unwrap()
    }

    #[test]
    fn every_op_decodes_and_every_bad_row_is_an_error_naming_its_row() {
        let b = batch(
            &[
                Some("put"),
                Some("delete"),
                Some("commit"),
                Some("checkpoint"),
                Some("epoch_barrier"),
            ],
            &[Some(b"k"), Some(b"k"), None, None, None],
            &[Some(b"v"), None, None, None, None],
        );
        let rows = ChangelogRows::of(&b).unwrap();
        let got: Vec<Change<'_>> = (0..5).map(|r| rows.change(r, r as u64).unwrap()).collect();
        assert_eq!(
            got,
            [
                Change::Put(b"k", b"v"),
                Change::Delete(b"k"),
                Change::Marker,
                Change::Marker,
                Change::Marker
            ]
        );
        let bad = batch(
            &[
                Some("upsert"),
                None,
                Some("put"),
                Some("put"),
                Some("delete"),
            ],
            &[Some(b"k"), Some(b"k"), None, Some(b"k"), None],
            &[Some(b"v"), None, Some(b"v"), None, None],
        );
        let rows = ChangelogRows::of(&bad).unwrap();
        let errors: Vec<String> = (0..5)
            .map(|r| rows.change(r, 100 + r as u64).unwrap_err())
            .collect();
        println!("{errors:#?}");
        assert!(errors[0].contains("unknown op \"upsert\""));
        assert!(errors[1].contains("null op"));
        assert!(errors[2].contains("put without a key"));
        assert!(errors[3].contains("put without a value"));
        assert!(errors[4].contains("delete without a key"));
        for (r, e) in errors.iter().enumerate() {
            assert!(e.starts_with(&format!("row {} ", 100 + r)), "{e}");
        }
        let no_op = RecordBatch::try_from_iter([(
            "key",
            Arc::new(BinaryArray::from(vec![Some(&b"k"[..])])) as ArrayRef,
        )])
        .unwrap();
        assert!(ChangelogRows::of(&no_op)
            .err()
            .unwrap()
            .contains("no column \"op\""));
    }
}
