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

/// The row (in its row group) of the `ordinal`-th row that `pages` select.
pub(super) fn selected_row(pages: &[Range<usize>], mut ordinal: usize) -> Option<usize> {
    for p in pages {
        let len = p.end - p.start;
        if ordinal < len {
            return Some(p.start + ordinal);
        }
        ordinal -= len;
    }
    None
}

/// The rows of row group `rg` in pages whose `key` min/max can hold `key`
/// (`None`: no page can). Without page indexes, every row.
pub(super) fn page_selection(
    parquet: &ParquetMetaData,
    rg: usize,
    column: usize,
    key: &[u8],
) -> Option<Vec<Range<usize>>> {
    let rows = usize::try_from(parquet.row_group(rg).num_rows()).unwrap_or(0);
    let all = || Some(std::iter::once(0..rows).collect());
    let (Some(columns), Some(offsets)) = (parquet.column_index(), parquet.offset_index()) else {
        return all();
    };
    let (Some(ColumnIndexMetaData::BYTE_ARRAY(index)), Some(offset)) = (
        columns.get(rg).and_then(|c| c.get(column)),
        offsets.get(rg).and_then(|o| o.get(column)),
    ) else {
        return all();
    };
    let pages = offset.page_locations();
    let mut ranges: Vec<Range<usize>> = Vec::new();
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
        match ranges.last_mut() {
            Some(last) if last.end == start => last.end = end,
            _ => ranges.push(start..end.max(start)),
        }
    }
    if ranges.is_empty() {
        return None;
    }
    Some(ranges)
}
