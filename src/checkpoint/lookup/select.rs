//! Which rows of a file a lookup or a scan reads: a key or a range against a
//! row group's statistics and its pages' column index.

use std::ops::{Bound, Range};

use parquet::file::metadata::ParquetMetaData;
use parquet::file::page_index::column_index::ColumnIndexMetaData;

/// Whether `key` is in `range`.
pub(super) fn in_range(range: &(Bound<Vec<u8>>, Bound<Vec<u8>>), key: &[u8]) -> bool {
    let above_start = match &range.0 {
        Bound::Included(lo) => key >= lo.as_slice(),
        Bound::Excluded(lo) => key > lo.as_slice(),
        Bound::Unbounded => true,
    };
    let below_end = match &range.1 {
        Bound::Included(hi) => key <= hi.as_slice(),
        Bound::Excluded(hi) => key < hi.as_slice(),
        Bound::Unbounded => true,
    };
    above_start && below_end
}

/// Whether keys between `min` and `max` (a row group's statistics; `None`:
/// unknown) can be in `range`.
pub(super) fn overlaps(
    range: &(Bound<Vec<u8>>, Bound<Vec<u8>>),
    min: Option<&[u8]>,
    max: Option<&[u8]>,
) -> bool {
    let below = match (&range.0, max) {
        (Bound::Included(lo), Some(max)) => max < lo.as_slice(),
        (Bound::Excluded(lo), Some(max)) => max <= lo.as_slice(),
        _ => false,
    };
    let above = match (&range.1, min) {
        (Bound::Included(hi), Some(min)) => min > hi.as_slice(),
        (Bound::Excluded(hi), Some(min)) => min >= hi.as_slice(),
        _ => false,
    };
    !below && !above
}

/// A page of a column chunk: its number in the chunk and the rows of the
/// row group it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Page {
    /// The page's number; [`WHOLE_CHUNK`] when the file has no page index
    /// (the "page" is then the row group's whole column chunk).
    pub(super) page: usize,
    pub(super) rows: Range<usize>,
}

/// The page number of a column chunk read whole.
pub(super) const WHOLE_CHUNK: usize = usize::MAX;

/// The pages of row group `rg`'s `key` column (`column`) whose min/max can
/// hold `key`, in file order (empty: none can). Without page indexes, the
/// whole chunk.
pub(super) fn key_pages(
    parquet: &ParquetMetaData,
    rg: usize,
    column: usize,
    key: &[u8],
) -> Vec<Page> {
    let rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
    let whole = || {
        vec![Page {
            page: WHOLE_CHUNK,
            rows: 0..rows,
        }]
    };
    let (Some(columns), Some(offsets)) = (parquet.column_index(), parquet.offset_index()) else {
        return whole();
    };
    let (Some(ColumnIndexMetaData::BYTE_ARRAY(index)), Some(offset)) = (
        columns.get(rg).and_then(|c| c.get(column)),
        offsets.get(rg).and_then(|o| o.get(column)),
    ) else {
        return whole();
    };
    let pages = offset.page_locations();
    let mut found = Vec::new();
    for (p, page) in pages.iter().enumerate() {
        if index.is_null_page(p) {
            continue;
        }
        let min = index.min_value(p);
        let max = index.max_value(p);
        if min.is_some_and(|m| key < m) || max.is_some_and(|m| key > m) {
            continue;
        }
        let start = usize::try_from(page.first_row_index).unwrap_or(0);
        let end = pages
            .get(p + 1)
            .map_or(rows, |n| usize::try_from(n.first_row_index).unwrap_or(rows));
        found.push(Page {
            page: p,
            rows: start..end.max(start),
        });
    }
    found
}

/// The page of row group `rg`'s column `column` that holds row `row` of the
/// row group. Without an offset index, the whole chunk.
pub(super) fn page_of_row(parquet: &ParquetMetaData, rg: usize, column: usize, row: usize) -> Page {
    let rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
    let Some(offset) = parquet
        .offset_index()
        .and_then(|o| o.get(rg))
        .and_then(|o| o.get(column))
    else {
        return Page {
            page: WHOLE_CHUNK,
            rows: 0..rows,
        };
    };
    let first = |p: &parquet::file::page_index::offset_index::PageLocation| {
        usize::try_from(p.first_row_index).unwrap_or(rows)
    };
    let pages = offset.page_locations();
    // The last page starting at or before the row.
    let p = pages
        .partition_point(|page| first(page) <= row)
        .saturating_sub(1);
    let start = pages.get(p).map_or(0, first);
    let end = pages.get(p + 1).map_or(rows, first);
    Page {
        page: p,
        rows: start..end.max(start),
    }
}
