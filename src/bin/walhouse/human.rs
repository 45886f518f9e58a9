//! Numbers, sizes, durations and lists as people read them: `1,000,004
//! records`, `8.4 MiB`, `9.1 ms`, `1.2 M records/s`, `checkpoints 1 to 3`,
//! `kafka-0=42`. Nothing the CLI prints goes through `Debug`.
#![expect(
    clippy::cast_precision_loss,
    reason = "sizes, durations and rates are printed to 3 significant digits"
)]

use std::fmt::Write as _;
use std::time::Duration;

/// A count with thousands separators: `1,000,004`.
pub(crate) fn count(n: impl Into<u64>) -> String {
    let digits = n.into().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count and its noun: `1 file`, `2 files`, `1,000 records`.
pub(crate) fn counted(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

/// `x` with one decimal below 100 and none from 100 on: `9.1`, `41.2`, `412`.
fn short(x: f64) -> String {
    if (x * 10.0).round() < 1000.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.0}")
    }
}

/// `value` in the largest of `units` (factor, name; ascending) it reaches
/// once rounded: `scaled(1_202_769.0, SI, "records/s")` is `1.2 M records/s`.
fn scaled(value: f64, units: &[(f64, &str)]) -> String {
    let mut pick = units[0];
    for &(factor, name) in units {
        // 999.96 ms is shown as 1.0 s, not as 1000.0 ms.
        if (value / factor * 10.0).round() >= 10.0 {
            pick = (factor, name);
        }
    }
    format!("{} {}", short(value / pick.0), pick.1)
}

/// A duration: `850 ns`, `412 µs`, `9.1 ms`, `1.2 s`, `2 min 5 s`.
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 120.0 {
        let whole = d.as_secs();
        return format!("{} min {} s", whole / 60, whole % 60);
    }
    if d.is_zero() {
        return "0 s".to_owned();
    }
    scaled(
        secs,
        &[(1e-9, "ns"), (1e-6, "µs"), (1e-3, "ms"), (1.0, "s")],
    )
}

/// `n` per `d` of `unit`: `1.2 M records/s`, `894 k entries/s`, `307 MB/s`
/// (decimal prefixes, as for rates).
pub(crate) fn rate(n: f64, d: Duration, unit: &str) -> String {
    let secs = d.as_secs_f64();
    if secs <= 0.0 {
        return format!("- {unit}/s");
    }
    let scaled = scaled(n / secs, &[(1.0, ""), (1e3, "k"), (1e6, "M"), (1e9, "G")]);
    let (number, prefix) = scaled.split_once(' ').unwrap_or((&scaled, ""));
    // A symbol takes the prefix (`MB/s`), a word is apart from it
    // (`M records/s`).
    let gap = if prefix.is_empty() || unit.chars().count() <= 1 {
        ""
    } else {
        " "
    };
    format!("{number} {prefix}{gap}{unit}/s")
}

/// A size in bytes: `512 bytes`, `12.3 KiB`, `8.4 MiB`, `1.1 GiB`.
pub(crate) fn bytes(n: u64) -> String {
    if n < 1024 {
        return counted(n, "byte", "bytes");
    }
    scaled(
        n as f64,
        &[
            (1.0, "bytes"),
            (1024.0, "KiB"),
            (1024.0 * 1024.0, "MiB"),
            (1024.0 * 1024.0 * 1024.0, "GiB"),
            (1024.0 * 1024.0 * 1024.0 * 1024.0, "TiB"),
        ],
    )
}

/// Numbers in words, runs of three or more as ranges: `1 to 3`, `1 and 2`,
/// `1, 3 to 5 and 9`; `none` for no number. `numbers` is sorted.
pub(crate) fn numbers(numbers: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < numbers.len() {
        let mut j = i;
        while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
            j += 1;
        }
        if j - i >= 2 {
            parts.push(format!("{} to {}", numbers[i], numbers[j]));
        } else {
            parts.extend(numbers[i..=j].iter().map(u64::to_string));
        }
        i = j + 1;
    }
    match parts.split_last() {
        None => "none".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}

/// Source offsets as `source=offset`, sorted by source: `kafka-0=42,
/// kafka-1=7`, or `none`.
pub(crate) fn offsets<'a>(offsets: impl IntoIterator<Item = (&'a String, &'a u64)>) -> String {
    let mut sorted: Vec<_> = offsets.into_iter().collect();
    sorted.sort();
    if sorted.is_empty() {
        return "none".to_owned();
    }
    let mut out = String::new();
    for (i, (source, offset)) in sorted.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{source}={offset}");
    }
    out
}

/// An epoch range: `epoch 3`, or `epochs 0 to 1`.
pub(crate) fn epochs(first: u64, last: u64) -> String {
    if first == last {
        format!("epoch {first}")
    } else {
        format!("epochs {first} to {last}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_words() {
        assert_eq!(count(0u64), "0");
        assert_eq!(count(999u64), "999");
        assert_eq!(count(1000u64), "1,000");
        assert_eq!(count(1_000_004u64), "1,000,004");
        assert_eq!(counted(1u64, "file", "files"), "1 file");
        assert_eq!(counted(2u64, "file", "files"), "2 files");
        assert_eq!(numbers(&[]), "none");
        assert_eq!(numbers(&[4]), "4");
        assert_eq!(numbers(&[1, 2]), "1 and 2");
        assert_eq!(numbers(&[1, 2, 3]), "1 to 3");
        assert_eq!(numbers(&[1, 3, 4, 5, 9]), "1, 3 to 5 and 9");
        assert_eq!(numbers(&[2, 4, 6]), "2, 4 and 6");
        assert_eq!(epochs(0, 1), "epochs 0 to 1");
        assert_eq!(epochs(3, 3), "epoch 3");
    }

    #[test]
    fn sizes_durations_and_rates_are_short() {
        assert_eq!(bytes(1), "1 byte");
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(12_595), "12.3 KiB");
        assert_eq!(bytes(8_808_038), "8.4 MiB");
        assert_eq!(bytes(1_048_575), "1.0 MiB");
        let ms = Duration::from_millis;
        assert_eq!(duration(Duration::from_nanos(9_107_331)), "9.1 ms");
        assert_eq!(duration(Duration::from_nanos(850)), "850 ns");
        assert_eq!(duration(Duration::from_micros(412)), "412 µs");
        assert_eq!(duration(Duration::from_micros(999_960)), "1.0 s");
        assert_eq!(duration(ms(830)), "830 ms");
        assert_eq!(duration(ms(1234)), "1.2 s");
        assert_eq!(duration(ms(125_000)), "2 min 5 s");
        assert_eq!(duration(Duration::ZERO), "0 s");
        assert_eq!(rate(1_000_000.0, ms(831), "records"), "1.2 M records/s");
        assert_eq!(rate(42.0, ms(1000), "records"), "42.0 records/s");
        assert_eq!(rate(307e6, ms(1000), "B"), "307 MB/s");
        assert_eq!(rate(512.0, ms(1000), "B"), "512 B/s");
        let a = "a".to_owned();
        let b = "b".to_owned();
        assert_eq!(offsets([(&b, &7), (&a, &42)]), "a=42, b=7");
        assert_eq!(offsets(std::iter::empty()), "none");
    }
}
