//! delta-rs-reader: reads walhouse's Delta tables with the Rust `deltalake`
//! crate (delta-rs) and its DataFusion table provider, and prints what it
//! read in a form check.sh compares with walhouse's own recovery.
//!
//! ```text
//! delta-rs-reader TABLE_ROOT [--version N] [--changelog] [--txn APPID]...
//!                 [--lookup HEXKEY]... [--sql QUERY]
//! ```
//!
//! TABLE_ROOT is a local folder: a walhouse store root holding the Delta
//! tables `changelog/` and `state/`. Output (stdout), in this order:
//!
//! - the state table (`TABLE_ROOT/state`) at version N (default: latest), read
//!   through DataFusion SQL (`SELECT key, value FROM t ORDER BY key`, the
//!   DeltaTable registered as the table provider `t`, so delta-rs applies the
//!   deletion vectors): one line per row, `hex(key)<TAB>hex(value)`;
//! - with `--changelog`: `changelog<TAB>OP<TAB>COUNT` per op of the changelog
//!   table at version N (`SELECT op, count(*) FROM t GROUP BY op`);
//! - with `--txn APPID` (repeatable): `txn<TAB>TABLE<TAB>APPID<TAB>VERSION`
//!   (VERSION `none` when the snapshot has no txn for that app id) for both
//!   tables at version N, from the snapshot's application transaction
//!   version (`DeltaTableState::transaction_version`);
//! - with `--lookup HEXKEY` (repeatable): `lookup<TAB>HEXKEY<TAB>hex(value)`,
//!   or `absent`, from `SELECT value FROM t WHERE key = X'HEXKEY'` on the
//!   state table at version N (a filtered scan: predicate pushed into the
//!   Parquet scan of files that have deletion vectors);
//! - with `--sql QUERY`: QUERY over the state table at version N (as `t`),
//!   printed as a table, after everything else (for looking around).
//!
//! SQL runs in delta-rs's DataFusion session (`create_session()`);
//! `DELTA_RS_READER_PLAIN_SESSION=1` uses a plain `SessionContext::new()`.
//!
//! Hex lines hold only `0-9a-f` and a tab, so they never start like the
//! `changelog`/`txn` lines. On stderr: one `#` line per table with its version,
//! files, files with a deletion vector, physical rows (the add actions'
//! `numRecords`), rows the deletion vectors mark deleted (their
//! `cardinality`) and rows returned. The program fails (exit 1) when the rows
//! DataFusion returned differ from physical rows minus DV cardinalities, or
//! when the state holds a key twice.

use std::process::ExitCode;
use std::sync::Arc;

use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::DataType;
use deltalake::arrow::record_batch::RecordBatch;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::create_session;
use deltalake::{DeltaTable, DeltaTableBuilder};
use url::Url;

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    root: std::path::PathBuf,
    version: Option<u64>,
    changelog: bool,
    txn: Vec<String>,
    lookup: Vec<Vec<u8>>,
    sql: Option<String>,
}

const USAGE: &str = "usage: delta-rs-reader TABLE_ROOT [--version N] [--changelog] \
                     [--txn APPID]... [--lookup HEXKEY]... [--sql QUERY]";

fn unhex(s: &str) -> Result<Vec<u8>, Error> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("--lookup {s}: not an even number of hex digits").into());
    }
    Ok((0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect())
}

fn parse_args() -> Result<Args, Error> {
    let mut root = None;
    let mut version = None;
    let mut changelog = false;
    let mut txn = Vec::new();
    let mut lookup = Vec::new();
    let mut sql = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--version" => {
                let v = it.next().ok_or("--version needs a number")?;
                version = Some(
                    v.parse::<u64>()
                        .map_err(|e| format!("--version {v}: {e}"))?,
                );
            }
            "--changelog" => changelog = true,
            "--txn" => txn.push(it.next().ok_or("--txn needs an app id")?),
            "--lookup" => lookup.push(unhex(&it.next().ok_or("--lookup needs a hex key")?)?),
            "--sql" => sql = Some(it.next().ok_or("--sql needs a query")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            s if s.starts_with('-') => return Err(format!("unknown flag {s}\n{USAGE}").into()),
            s if root.is_none() => root = Some(std::path::PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s}\n{USAGE}").into()),
        }
    }
    let root = root.ok_or(USAGE)?;
    Ok(Args {
        root,
        version,
        changelog,
        txn,
        lookup,
        sql,
    })
}

async fn open(
    root: &std::path::Path,
    name: &str,
    version: Option<u64>,
) -> Result<DeltaTable, Error> {
    let dir = root
        .join(name)
        .canonicalize()
        .map_err(|e| format!("{}/{name}: {e}", root.display()))?;
    let url = Url::from_directory_path(&dir)
        .map_err(|_| format!("not a directory path: {}", dir.display()))?;
    let mut builder = DeltaTableBuilder::from_url(url)?;
    if let Some(v) = version {
        builder = builder.with_version(v);
    }
    let table = builder
        .load()
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(table)
}

/// What the snapshot's add actions say: (files, files with a DV, physical
/// rows, rows marked deleted). Physical rows are None when a file has no
/// numRecords statistic.
fn file_stats(table: &DeltaTable) -> Result<(usize, usize, Option<u64>, u64), Error> {
    let state = table.snapshot()?;
    let (mut files, mut dv_files, mut rows, mut deleted) = (0, 0, Some(0u64), 0u64);
    for f in state.log_data().iter() {
        files += 1;
        rows = match (rows, f.num_records()) {
            (Some(r), Some(n)) => Some(r + n as u64),
            _ => None,
        };
        if let Some(dv) = f.deletion_vector_descriptor() {
            dv_files += 1;
            deleted += dv.cardinality as u64;
        }
    }
    Ok((files, dv_files, rows, deleted))
}

/// Runs `sql` over `table` registered as `t` in a delta-rs DataFusion session.
/// delta-rs's DataFusion session (`deltalake::delta_datafusion::create_session`:
/// its planner and settings); with `DELTA_RS_READER_PLAIN_SESSION=1`, a plain
/// `SessionContext::new()` instead, to see what a DataFusion user who only
/// registers the table provider gets.
fn session() -> SessionContext {
    if std::env::var_os("DELTA_RS_READER_PLAIN_SESSION").is_some_and(|v| v == "1") {
        SessionContext::new()
    } else {
        create_session().into_inner()
    }
}

async fn query(table: &DeltaTable, sql: &str) -> Result<Vec<RecordBatch>, Error> {
    let ctx = session();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    ctx.register_table("t", provider)?;
    Ok(ctx.sql(sql).await?.collect().await?)
}

fn hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
}

fn binary_column(batch: &RecordBatch, i: usize) -> Result<Arc<dyn Array>, Error> {
    // key and value are Binary in walhouse's schema; DataFusion may hand them
    // out as BinaryView or LargeBinary. One form for all.
    Ok(cast(batch.column(i), &DataType::Binary)?)
}

fn version_of(table: &DeltaTable) -> String {
    table.version().map_or("?".into(), |v| v.to_string())
}

async fn run(args: Args) -> Result<(), Error> {
    use std::io::Write;
    let mut stdout = std::io::BufWriter::new(std::io::stdout().lock());

    // The state table: every live row, deletion vectors applied by delta-rs.
    let state = open(&args.root, "state", args.version).await?;
    let (files, dv_files, physical, deleted) = file_stats(&state)?;
    let batches = query(&state, "SELECT key, value FROM t ORDER BY key").await?;
    let mut returned = 0u64;
    let mut line = String::new();
    let mut prev: Option<Vec<u8>> = None;
    for batch in &batches {
        let keys = binary_column(batch, 0)?;
        let values = binary_column(batch, 1)?;
        let (keys, values) = (keys.as_binary::<i32>(), values.as_binary::<i32>());
        for r in 0..batch.num_rows() {
            if keys.is_null(r) {
                return Err(format!("state v{}: a row with a null key", version_of(&state)).into());
            }
            let key = keys.value(r);
            if prev.as_deref() == Some(key) {
                let mut k = String::new();
                hex(&mut k, key);
                return Err(
                    format!("state v{}: key {k} returned twice", version_of(&state)).into(),
                );
            }
            prev = Some(key.to_vec());
            line.clear();
            hex(&mut line, key);
            line.push('\t');
            if values.is_null(r) {
                line.push_str("NULL");
            } else {
                hex(&mut line, values.value(r));
            }
            line.push('\n');
            stdout.write_all(line.as_bytes())?;
            returned += 1;
        }
    }
    eprintln!(
        "# state v{}: {files} files, {dv_files} with deletion vectors, {} physical rows, \
         {deleted} marked deleted by DVs, {returned} rows returned by DataFusion",
        version_of(&state),
        physical.map_or("?".into(), |p| p.to_string()),
    );
    if let Some(p) = physical {
        if p.checked_sub(deleted) != Some(returned) {
            return Err(format!(
                "state v{}: DataFusion returned {returned} rows, the log says {p} rows in files \
                 less {deleted} marked deleted by deletion vectors",
                version_of(&state),
            )
            .into());
        }
    }

    let changelog = if args.changelog || !args.txn.is_empty() {
        Some(open(&args.root, "changelog", args.version).await?)
    } else {
        None
    };
    if let (true, Some(cl)) = (args.changelog, &changelog) {
        let (files, dv_files, physical, deleted) = file_stats(cl)?;
        let batches = query(
            cl,
            "SELECT op, count(*) AS n FROM t GROUP BY op ORDER BY op",
        )
        .await?;
        let mut total = 0u64;
        for batch in &batches {
            let ops = cast(batch.column(0), &DataType::Utf8)?;
            let counts = cast(batch.column(1), &DataType::Int64)?;
            let (ops, counts) = (
                ops.as_string::<i32>(),
                counts.as_primitive::<deltalake::arrow::datatypes::Int64Type>(),
            );
            for r in 0..batch.num_rows() {
                writeln!(stdout, "changelog\t{}\t{}", ops.value(r), counts.value(r))?;
                total += counts.value(r) as u64;
            }
        }
        eprintln!(
            "# changelog v{}: {files} files, {dv_files} with deletion vectors, {} physical rows, \
             {deleted} marked deleted by DVs, {total} rows counted by DataFusion",
            version_of(cl),
            physical.map_or("?".into(), |p| p.to_string()),
        );
    }
    for app in &args.txn {
        for (name, table) in [
            ("changelog", changelog.as_ref().unwrap()),
            ("state", &state),
        ] {
            let v = table
                .snapshot()?
                .transaction_version(table.log_store().as_ref(), app)
                .await?;
            writeln!(
                stdout,
                "txn\t{name}\t{app}\t{}",
                v.map_or("none".into(), |v| v.to_string())
            )?;
        }
    }
    for key in &args.lookup {
        let mut k = String::new();
        hex(&mut k, key);
        let batches = query(&state, &format!("SELECT value FROM t WHERE key = X'{k}'")).await?;
        let mut found = Vec::new();
        for batch in &batches {
            let values = binary_column(batch, 0)?;
            let values = values.as_binary::<i32>();
            for r in 0..batch.num_rows() {
                let mut v = String::new();
                hex(&mut v, values.value(r));
                found.push(v);
            }
        }
        match found.len() {
            0 => writeln!(stdout, "lookup\t{k}\tabsent")?,
            1 => writeln!(stdout, "lookup\t{k}\t{}", found[0])?,
            n => return Err(format!("lookup {k}: {n} rows ({})", found.join(", ")).into()),
        }
    }
    stdout.flush()?;
    if let Some(sql) = &args.sql {
        let ctx = session();
        state.update_datafusion_session(&ctx.state())?;
        ctx.register_table("t", state.table_provider().await?)?;
        ctx.sql(sql).await?.show().await?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("delta-rs-reader: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("delta-rs-reader: {e}");
            ExitCode::FAILURE
        }
    }
}
