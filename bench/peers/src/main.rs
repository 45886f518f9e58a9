//! `peers`: walhouse beside fjall, RocksDB, SlateDB (and delta-rs for the
//! export) on identical workloads, in one run, alternating walhouse,
//! rocksdb, fjall, slatedb, walhouse, ... at equal durability (every
//! acknowledged write fdatasync'd or fsync'd). See README.md.
//!
//! ```text
//! peers [--quick] [--json FILE] [--peers P,Q] all | SECTION...   (ingest export reopen lookup)
//! peers child-write walhouse|rocksdb|fjall|slatedb DIR ROWS   (the reopen section's writer)
//! ```

#[path = "../../../benches/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[cfg(feature = "deltalake")]
mod delta;
mod peer;
mod sections;
#[cfg(feature = "slatedb")]
mod slate;
mod walhouse_side;
mod workload;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, BoxError>;

/// One compared figure: walhouse's runs and one peer's runs, from the same
/// run of this program, with the fdatasync rate probed before each run.
#[derive(Debug)]
pub struct Figure {
    pub name: String,
    pub unit: &'static str,
    pub peer: &'static str,
    pub higher_is_better: bool,
    pub walhouse: Vec<f64>,
    pub value: Vec<f64>,
    pub walhouse_fsync: Vec<f64>,
    pub peer_fsync: Vec<f64>,
}

pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sizes: `--quick` divides them so that `all` ends in a few minutes.
#[derive(Debug, Clone, Copy)]
pub struct Scale {
    pub quick: bool,
    /// Rounds of every comparison (walhouse and each peer per round).
    pub rounds: usize,
    /// Seconds of one ingest run.
    pub ingest_secs: f64,
    /// Rows of the export, reopen and lookup tables.
    pub rows: u64,
    /// Lookups per pass.
    pub lookups: usize,
}

impl Scale {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                rounds: 3,
                ingest_secs: 0.6,
                rows: 200_000,
                lookups: 20_000,
            }
        } else {
            Self {
                quick,
                rounds: 5,
                ingest_secs: 2.0,
                rows: 1_000_000,
                lookups: 100_000,
            }
        }
    }
}

fn usage() -> BoxError {
    "usage: peers [--quick] [--json FILE] [--peers rocksdb,fjall,slatedb,deltalake] all | ingest | export | reopen | lookup ...\n       peers child-write walhouse|rocksdb|fjall|slatedb DIR ROWS".into()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [cmd, engine, dir, rows] = args.as_slice() {
        if cmd == "child-write" {
            return sections::child_write(engine, &PathBuf::from(dir), rows.parse()?);
        }
    }
    let mut quick = false;
    let mut json: Option<PathBuf> = None;
    let mut wanted: Vec<String> = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--json" => json = Some(it.next().ok_or_else(usage)?.into()),
            "--peers" => peer::Kind::choose(&it.next().ok_or_else(usage)?)?,
            "all" => wanted.extend(["ingest", "export", "reopen", "lookup"].map(String::from)),
            "ingest" | "export" | "reopen" | "lookup" => wanted.push(arg),
            _ => return Err(usage()),
        }
    }
    if wanted.is_empty() {
        return Err(usage());
    }
    let scale = Scale::new(quick);
    let root = std::env::var_os("PEERS_DIR")
        .map_or_else(|| PathBuf::from("target/peers-tmp"), PathBuf::from);
    fs::create_dir_all(&root)?;
    let run_dir = tempfile::Builder::new().prefix("run-").tempdir_in(&root)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut figures = Vec::new();
    for section in &wanted {
        println!("\n## {section}\n");
        let ctx = sections::Ctx {
            rt: &rt,
            root: run_dir.path(),
            scale,
        };
        match section.as_str() {
            "ingest" => sections::ingest(&ctx, &mut figures)?,
            "export" => sections::export(&ctx, &mut figures)?,
            "reopen" => sections::reopen(&ctx, &mut figures)?,
            "lookup" => sections::lookup(&ctx, &mut figures)?,
            _ => unreachable!("checked above"),
        }
    }
    print!("{}", summary(&figures));
    if let Some(path) = json {
        fs::write(&path, json_of(&figures))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

fn summary(figures: &[Figure]) -> String {
    let mut out = String::from(
        "\n## Summary (medians over rounds; ratio = walhouse / peer)\n\n\
         | figure | peer | walhouse | peer value | ratio | better | fdatasync/s (walhouse runs / peer runs) |\n\
         |---|---|---:|---:|---:|---|---:|\n",
    );
    for f in figures {
        let (w, p) = (median(&f.walhouse), median(&f.value));
        let better = if (w > p) == f.higher_is_better {
            "walhouse"
        } else {
            f.peer
        };
        let _ = writeln!(
            out,
            "| {} ({}) | {} | {} | {} | {:.2} | {} | {:.0} / {:.0} |",
            f.name,
            f.unit,
            f.peer,
            num(w),
            num(p),
            w / p,
            better,
            median(&f.walhouse_fsync),
            median(&f.peer_fsync)
        );
    }
    out
}

/// A figure with three significant digits or so.
pub fn num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn json_of(figures: &[Figure]) -> String {
    let rows: Vec<String> = figures
        .iter()
        .map(|f| {
            format!(
                "    {{\"name\": \"{} ({})\", \"peer\": \"{}\", \"walhouse\": {}, \"value\": {}, \"higher_is_better\": {}}}",
                f.name.replace('"', "'"),
                f.unit,
                f.peer,
                json_num(median(&f.walhouse)),
                json_num(median(&f.value)),
                f.higher_is_better
            )
        })
        .collect();
    format!("{{\"figures\": [\n{}\n]}}\n", rows.join(",\n"))
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}
