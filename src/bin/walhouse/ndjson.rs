//! Newline-delimited JSON ingest with in-order acknowledgements (what
//! `walhouse ingest` runs).
//!
//! Input lines:
//! - `{"key": "k", "value": "v"}` sets `k` to `v`; `{"key": "k", "value": null}` deletes `k`;
//! - `{"commit": {"source": offset, ...}, "watermark": N}` records source
//!   offsets (and an optional watermark) once every earlier line is durable;
//! - empty lines are skipped (and acknowledged with their neighbours).
//!
//! A key or value is a JSON string, stored as its UTF-8 bytes; bytes that
//! are not UTF-8 are given as `key_hex` / `value_hex` instead, two hex
//! digits a byte (either case): `{"key_hex": "ff00", "value_hex": "c328"}`.
//! A line has exactly one of `key` and `key_hex`, and one of `value` and
//! `value_hex` (only `value` may be null). `walhouse recover --dump` writes
//! this format (`key`/`value` where the bytes are UTF-8), so its output
//! ingests back unchanged.
//!
//! Output: `ack N` each time every line up to `N` is durable; `N` only grows.
//! A malformed line stops the ingest after every earlier line is durable
//! and acknowledged; the error names the line. So does a line that could
//! not be checkpointed: a put whose key and value exceed
//! [`IngestHandle::max_write_bytes`], or a commit offset above `i64::MAX`.

use std::collections::HashMap;
use std::future::Future;
use std::io::{BufRead, Write};
use std::pin::Pin;

use futures::stream::FuturesOrdered;
use futures::{FutureExt, StreamExt};

use walhouse::runtime::{Durable, IngestError, IngestHandle, WriteOp};

/// Lines taken from the reader per batch at most.
const BATCH_LINES: usize = 4096;

/// Why an NDJSON ingest stopped early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NdjsonError {
    /// A line is not one of the accepted shapes. Every earlier line is
    /// durable and acknowledged.
    #[error("line {line}: {reason} ({})", durable_lines(*acked))]
    Malformed {
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
        /// Last line acknowledged.
        acked: u64,
    },
    /// Reading the input failed.
    #[error("reading the input after line {line}: {source}")]
    Read {
        /// Last line read.
        line: u64,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Writing an acknowledgement failed.
    #[error("writing acknowledgements: {0}")]
    Ack(#[source] std::io::Error),
    /// The ingester failed a write (it is not acknowledged).
    #[error("ingest failed after line {acked} was acknowledged: {source}")]
    Ingest {
        /// Last line acknowledged.
        acked: u64,
        /// The error.
        #[source]
        source: IngestError,
    },
}

/// `lines 1 to 5 are durable and acknowledged`, in words.
fn durable_lines(acked: u64) -> String {
    match acked {
        0 => "no line is acknowledged".to_owned(),
        1 => "line 1 is durable and acknowledged".to_owned(),
        n => format!("lines 1 to {n} are durable and acknowledged"),
    }
}

/// What an NDJSON ingest did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NdjsonSummary {
    /// Lines read and acknowledged.
    pub lines: u64,
    /// Puts written.
    pub puts: u64,
    /// Deletes written.
    pub deletes: u64,
    /// Commits written.
    pub commits: u64,
}

enum Item {
    Write(u64, WriteOp),
    Commit(u64, HashMap<String, u64>, Option<i64>),
    Blank(u64),
    Bad(u64, String),
    ReadError(u64, std::io::Error),
}

/// Parses one line and checks it against the handle's limits, so that a
/// line that could not be written or checkpointed is refused by number
/// before anything after it is written.
fn parse_checked(handle: &IngestHandle, line_no: u64, line: &[u8]) -> Item {
    let item = parse(line_no, line);
    let refused = match &item {
        Item::Write(_, op) => handle.validate(op).err(),
        Item::Commit(_, offsets, _) => handle.validate_commit(offsets).err(),
        _ => None,
    };
    match refused {
        Some(IngestError::Rejected { reason, .. }) => Item::Bad(line_no, reason),
        Some(e) => Item::Bad(line_no, e.to_string()),
        None => item,
    }
}

fn parse(line_no: u64, line: &[u8]) -> Item {
    let text = line.strip_suffix(b"\n").unwrap_or(line);
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Item::Blank(line_no);
    }
    let bad = |reason: String| Item::Bad(line_no, reason);
    let value: serde_json::Value = match serde_json::from_slice(text) {
        Ok(v) => v,
        Err(e) => return bad(format!("not JSON: {e}")),
    };
    let serde_json::Value::Object(obj) = value else {
        return bad("expected a JSON object".into());
    };
    if let Some(commit) = obj.get("commit") {
        if let Some(other) = obj.keys().find(|k| *k != "commit" && *k != "watermark") {
            return bad(format!("unexpected field {other:?} in a commit line"));
        }
        let serde_json::Value::Object(sources) = commit else {
            return bad("\"commit\" must be an object of source -> offset".into());
        };
        let mut offsets = HashMap::with_capacity(sources.len());
        for (source, offset) in sources {
            let Some(o) = offset.as_u64() else {
                return bad(format!(
                    "offset of source {source:?} must be a non-negative integer"
                ));
            };
            offsets.insert(source.clone(), o);
        }
        let watermark = match obj.get("watermark") {
            None | Some(serde_json::Value::Null) => None,
            Some(w) => match w.as_i64() {
                Some(w) => Some(w),
                None => return bad("\"watermark\" must be an integer".into()),
            },
        };
        return Item::Commit(line_no, offsets, watermark);
    }
    if let Some(other) = obj
        .keys()
        .find(|k| !matches!(k.as_str(), "key" | "key_hex" | "value" | "value_hex"))
    {
        return bad(format!("unexpected field {other:?}"));
    }
    let key = match bytes_field(&obj, "key") {
        Ok(Some(key)) => key,
        Ok(None) => return bad("missing \"key\" (or \"key_hex\")".into()),
        Err(reason) => return bad(reason),
    };
    match bytes_field(&obj, "value") {
        Ok(Some(value)) => Item::Write(line_no, WriteOp::Put { key, value }),
        Ok(None) if obj.get("value") == Some(&serde_json::Value::Null) => {
            Item::Write(line_no, WriteOp::Delete { key })
        }
        Ok(None) => bad("missing \"value\" (use null to delete)".into()),
        Err(reason) => bad(reason),
    }
}

/// The bytes of field `name` (a string, its UTF-8 bytes) or `<name>_hex`
/// (hex digits); `None` when neither is there or `name` is null.
fn bytes_field(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Option<Vec<u8>>, String> {
    let hex_name = format!("{name}_hex");
    match (obj.get(name), obj.get(&hex_name)) {
        (Some(_), Some(_)) => Err(format!("both \"{name}\" and \"{hex_name}\": give one")),
        (Some(serde_json::Value::String(text)), None) => Ok(Some(text.clone().into_bytes())),
        (Some(serde_json::Value::Null), None) if name == "value" => Ok(None),
        (Some(_), None) if name == "value" => Err("\"value\" must be a string or null".into()),
        (Some(_), None) => Err(format!("\"{name}\" must be a string")),
        (None, Some(serde_json::Value::String(digits))) => from_hex(digits)
            .map(Some)
            .ok_or_else(|| format!("\"{hex_name}\" must be hex digits, two a byte")),
        (None, Some(_)) => Err(format!("\"{hex_name}\" must be a string of hex digits")),
        (None, None) => Ok(None),
    }
}

/// The bytes of `digits` (two hex digits a byte, either case).
fn from_hex(digits: &str) -> Option<Vec<u8>> {
    let digits = digits.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| char::from(c).to_digit(16);
    digits
        .chunks_exact(2)
        .map(|pair| u8::try_from(nibble(pair[0])? * 16 + nibble(pair[1])?).ok())
        .collect()
}

type Pending = Pin<Box<dyn Future<Output = (u64, Result<(), IngestError>)> + Send>>;

struct Acker<W: Write> {
    out: W,
    acked: u64,
    inflight: FuturesOrdered<Pending>,
}

impl<W: Write> Acker<W> {
    fn record(&mut self, line: u64, r: Result<(), IngestError>) -> Result<(), NdjsonError> {
        r.map_err(|source| NdjsonError::Ingest {
            acked: self.acked,
            source,
        })?;
        self.acked = self.acked.max(line);
        Ok(())
    }

    /// Queues the durability of lines up to `line` behind the earlier ones.
    fn queue(
        &mut self,
        line: u64,
        submitted: Result<Durable, IngestError>,
    ) -> Result<(), NdjsonError> {
        let durable = submitted.map_err(|source| NdjsonError::Ingest {
            acked: self.acked,
            source,
        })?;
        self.inflight
            .push_back(Box::pin(async move { (line, durable.await) }));
        Ok(())
    }

    fn write_ack(&mut self) -> Result<(), NdjsonError> {
        writeln!(self.out, "ack {}", self.acked).map_err(NdjsonError::Ack)?;
        self.out.flush().map_err(NdjsonError::Ack)
    }

    /// Records every completed group already finished, then prints one ack.
    fn on_done(&mut self, line: u64, r: Result<(), IngestError>) -> Result<(), NdjsonError> {
        self.record(line, r)?;
        while let Some(Some((line, r))) = self.inflight.next().now_or_never() {
            self.record(line, r)?;
        }
        self.write_ack()
    }

    async fn drain(&mut self) -> Result<(), NdjsonError> {
        let before = self.acked;
        while let Some((line, r)) = self.inflight.next().await {
            self.record(line, r)?;
        }
        if self.acked > before {
            self.write_ack()?;
        }
        Ok(())
    }
}

/// Reads NDJSON from `input` (on a thread of its own), writes through
/// `handle`, and prints `ack N` to `acks` as lines become durable.
pub async fn ingest_ndjson<R, W>(
    handle: &IngestHandle,
    input: R,
    acks: W,
) -> Result<NdjsonSummary, NdjsonError>
where
    R: BufRead + Send + 'static,
    W: Write,
{
    let (tx, rx) = flume::bounded::<Item>(BATCH_LINES * 4);
    let checker = handle.clone();
    let reader = std::thread::Builder::new()
        .name("walhouse-ndjson".into())
        .spawn(move || read_lines(&checker, input, &tx))
        .map_err(|source| NdjsonError::Read { line: 0, source })?;
    let mut acker = Acker {
        out: acks,
        acked: 0,
        inflight: FuturesOrdered::new(),
    };
    let mut summary = NdjsonSummary::default();
    let result = run(handle, &rx, &mut acker, &mut summary).await;
    drop(rx);
    let _ = reader.join();
    result.map(|()| summary)
}

fn read_lines<R: BufRead>(handle: &IngestHandle, mut input: R, tx: &flume::Sender<Item>) {
    let mut line_no = 0u64;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match input.read_until(b'\n', &mut buf) {
            Ok(0) => return,
            Ok(_) => {
                line_no += 1;
                let item = parse_checked(handle, line_no, &buf);
                let stop = matches!(item, Item::Bad(..));
                if tx.send(item).is_err() || stop {
                    return;
                }
            }
            Err(e) => {
                let _ = tx.send(Item::ReadError(line_no, e));
                return;
            }
        }
    }
}

async fn run<W: Write>(
    handle: &IngestHandle,
    rx: &flume::Receiver<Item>,
    acker: &mut Acker<W>,
    summary: &mut NdjsonSummary,
) -> Result<(), NdjsonError> {
    let mut batch: Vec<WriteOp> = Vec::new();
    let mut last_line = 0u64;
    loop {
        let first = tokio::select! {
            biased;
            Some((line, r)) = acker.inflight.next(), if !acker.inflight.is_empty() => {
                acker.on_done(line, r)?;
                continue;
            }
            item = rx.recv_async() => item,
        };
        let Ok(first) = first else {
            // End of input.
            submit(handle, &mut batch, last_line, acker).await?;
            acker.drain().await?;
            summary.lines = last_line;
            return Ok(());
        };
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(item) = next.take() {
            taken += 1;
            match item {
                Item::Write(line, op) => {
                    match op {
                        WriteOp::Put { .. } => summary.puts += 1,
                        WriteOp::Delete { .. } => summary.deletes += 1,
                    }
                    batch.push(op);
                    last_line = line;
                }
                Item::Blank(line) => last_line = line,
                Item::Commit(line, offsets, watermark) => {
                    submit(handle, &mut batch, last_line, acker).await?;
                    // The commit waits for every earlier write itself.
                    acker.queue(line, handle.submit_commit(offsets, watermark).await)?;
                    summary.commits += 1;
                    last_line = line;
                }
                Item::Bad(line, reason) => {
                    submit(handle, &mut batch, last_line, acker).await?;
                    acker.drain().await?;
                    return Err(NdjsonError::Malformed {
                        line,
                        reason,
                        acked: acker.acked,
                    });
                }
                Item::ReadError(line, source) => {
                    submit(handle, &mut batch, last_line, acker).await?;
                    acker.drain().await?;
                    return Err(NdjsonError::Read { line, source });
                }
            }
            if taken < BATCH_LINES {
                next = rx.try_recv().ok();
            }
        }
        submit(handle, &mut batch, last_line, acker).await?;
    }
}

/// Queues the batch (possibly empty: blank lines) as one in-order group.
async fn submit<W: Write>(
    handle: &IngestHandle,
    batch: &mut Vec<WriteOp>,
    last_line: u64,
    acker: &mut Acker<W>,
) -> Result<(), NdjsonError> {
    if last_line <= acker.acked && batch.is_empty() {
        return Ok(());
    }
    let ops = std::mem::take(batch);
    acker.queue(last_line, handle.submit_batch(ops).await)
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn parses_every_shape_and_names_what_is_wrong() {
        assert!(matches!(
            parse(1, b"{\"key\":\"a\",\"value\":\"b\"}\n"),
            Item::Write(1, WriteOp::Put { .. })
        ));
        assert!(matches!(
            parse(2, b"{\"key\":\"a\",\"value\":null}"),
            Item::Write(2, WriteOp::Delete { .. })
        ));
        assert!(matches!(parse(3, b"  \r\n"), Item::Blank(3)));
        match parse(4, b"{\"commit\":{\"kafka-0\":17},\"watermark\":-5}") {
            Item::Commit(4, o, Some(-5)) => assert_eq!(o.get("kafka-0"), Some(&17)),
            _ => panic!("commit not parsed"),
        }
        for (line, want) in [
            (&b"{\"key\":\"a\"}"[..], "missing \"value\""),
            (b"{\"key\":1,\"value\":\"b\"}", "\"key\" must be a string"),
            (b"[1]", "expected a JSON object"),
            (
                b"{\"key\":\"a\",\"value\":\"b\",\"x\":1}",
                "unexpected field \"x\"",
            ),
            (b"{\"commit\":{\"s\":-1}}", "non-negative"),
            (b"not json", "not JSON"),
            (
                b"{\"key\":\"a\",\"key_hex\":\"61\",\"value\":\"b\"}",
                "both \"key\" and \"key_hex\"",
            ),
            (b"{\"key_hex\":\"6\",\"value\":\"b\"}", "two a byte"),
            (b"{\"key_hex\":\"zz\",\"value\":\"b\"}", "two a byte"),
            (
                b"{\"key_hex\":\"61\",\"value_hex\":null}",
                "\"value_hex\" must be",
            ),
            (b"{\"value\":\"b\"}", "missing \"key\""),
        ] {
            match parse(9, line) {
                Item::Bad(9, reason) => assert!(reason.contains(want), "{reason} lacks {want}"),
                _ => panic!("{:?} accepted", String::from_utf8_lossy(line)),
            }
        }
    }

    #[test]
    fn hex_fields_carry_any_bytes() {
        match parse(1, b"{\"key_hex\":\"ff00\",\"value_hex\":\"C328\"}") {
            Item::Write(1, WriteOp::Put { key, value }) => {
                assert_eq!(key, [0xff, 0x00]);
                assert_eq!(value, [0xc3, 0x28]);
            }
            _ => panic!("hex put not parsed"),
        }
        match parse(2, b"{\"key_hex\":\"\",\"value\":null}") {
            Item::Write(2, WriteOp::Delete { key }) => assert!(key.is_empty()),
            _ => panic!("hex delete not parsed"),
        }
        match parse(3, b"{\"key\":\"k\",\"value_hex\":\"00\"}") {
            Item::Write(3, WriteOp::Put { key, value }) => {
                assert_eq!(key, b"k");
                assert_eq!(value, [0]);
            }
            _ => panic!("mixed put not parsed"),
        }
        for bytes in [vec![], vec![0_u8], (0..=255).collect::<Vec<u8>>()] {
            let digits = bytes.iter().fold(String::new(), |mut s, b| {
                let _ = write!(s, "{b:02x}");
                s
            });
            assert_eq!(from_hex(&digits), Some(bytes.clone()));
            assert_eq!(from_hex(&digits.to_uppercase()), Some(bytes));
        }
    }

    #[test]
    fn a_malformed_line_says_in_words_what_is_durable() {
        for (acked, want) in [
            (0, "no line is acknowledged"),
            (1, "line 1 is durable"),
            (5, "lines 1 to 5 are durable"),
        ] {
            let e = NdjsonError::Malformed {
                line: acked + 1,
                reason: "bad".into(),
                acked,
            };
            let said = e.to_string();
            assert!(said.contains(want), "{said}");
            assert!(!said.contains("..="), "{said}");
        }
    }
}
