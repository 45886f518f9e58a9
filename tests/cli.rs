//! The `walhouse` command line end to end: ingest with acks, a malformed
//! line, a checkpoint asked of a running ingest, recover --dump (and its
//! output ingested back, binary keys and values included), the lock, and
//! output written for people (counts of records, no `Debug`, warnings by
//! default, no colour in a pipe).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{assert_for_people, output_with_input, segment_files, text};

fn walhouse(args: &[&str], dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walhouse"));
    cmd.args(args)
        .arg("--data-dir")
        .arg(dir)
        .env_remove("WALHOUSE_STORE")
        .env_remove("WALHOUSE_CONFIG")
        .env("WALHOUSE_LOG", "error");
    cmd
}

fn run_with_input(args: &[&str], dir: &Path, input: &str) -> Output {
    output_with_input(walhouse(args, dir), input)
}

#[test]
fn ingest_acknowledges_in_order_and_stops_at_a_malformed_line() {
    let dir = tempfile::tempdir().unwrap();
    let input = "{\"key\":\"a\",\"value\":\"1\"}\n\
                 {\"key\":\"b\",\"value\":\"2\"}\n\
                 \n\
                 {\"key\":\"a\",\"value\":null}\n\
                 {\"commit\":{\"src\":7},\"watermark\":3}\n\
                 {\"key\":\"c\"}\n\
                 {\"key\":\"d\",\"value\":\"never\"}\n";
    let out = run_with_input(&["ingest", "--cores", "2", "--no-pin"], dir.path(), input);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "a malformed line must fail the run");
    assert!(stderr.contains("line 6"), "stderr: {stderr}");
    assert!(stderr.contains("missing \"value\""), "stderr: {stderr}");
    assert!(
        stderr.contains("lines 1 to 5 are durable and acknowledged"),
        "stderr: {stderr}"
    );
    assert_for_people("ingest with a malformed line", &out);
    let acks: Vec<u64> = stdout
        .lines()
        .map(|l| l.strip_prefix("ack ").unwrap().parse().unwrap())
        .collect();
    assert!(
        acks.windows(2).all(|w| w[0] < w[1]),
        "acks must grow: {acks:?}"
    );
    assert_eq!(
        acks.last(),
        Some(&5),
        "every line before the bad one is acknowledged"
    );

    let out = walhouse(&["recover", "--dump"], dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "{\"key\":\"b\",\"value\":\"2\"}\n");
    let said = text(&out.stderr);
    assert!(
        said.contains("source offsets: src=7; watermark 3"),
        "{said}"
    );
    // Three records (two puts, a delete); the commit is no record.
    assert!(
        said.contains("recovered 1 key from 3 records of the WAL (no checkpoint yet)"),
        "{said}"
    );
    assert_for_people("recover --dump", &out);
    println!("acks {acks:?}; line 6 reported; recovered exactly b=2 with offset src=7");
}

#[test]
fn checkpoint_asks_the_running_ingest_and_recover_waits_for_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = walhouse(
        &[
            "ingest",
            "--cores",
            "2",
            "--no-pin",
            "--checkpoint-interval-ms",
            "0",
        ],
        dir.path(),
    )
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut acks = BufReader::new(child.stdout.take().unwrap()).lines();
    stdin
        .write_all(b"{\"key\":\"x\",\"value\":\"1\"}\n{\"key\":\"y\",\"value\":\"2\"}\n")
        .unwrap();
    stdin.flush().unwrap();
    // Wait for both lines to be durable.
    loop {
        let line = acks.next().unwrap().unwrap();
        if line == "ack 2" {
            break;
        }
    }
    let out = walhouse(&["checkpoint"], dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    assert!(said.contains("by the running ingest"), "{said}");
    assert!(said.contains("2 records (2 puts, 0 deletes)"), "{said}");

    let got = walhouse(&["get", "y"], dir.path()).output().unwrap();
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "2\n");
    assert!(
        text(&got.stderr).contains("1 read"),
        "{}",
        text(&got.stderr)
    );
    assert!(
        text(&got.stderr).contains("a running walhouse holds"),
        "{}",
        text(&got.stderr)
    );
    let missing = walhouse(&["get", "nope"], dir.path()).output().unwrap();
    assert!(!missing.status.success());
    assert!(
        text(&missing.stderr).contains("key \"nope\" not found at checkpoint 1"),
        "{}",
        text(&missing.stderr)
    );

    let locked = walhouse(&["recover"], dir.path()).output().unwrap();
    assert!(!locked.status.success());
    assert!(
        text(&locked.stderr).contains("locked by another walhouse process"),
        "{}",
        text(&locked.stderr)
    );

    drop(stdin); // end of input: the ingest syncs and exits 0
    let status = child.wait().unwrap();
    assert!(status.success());
    let out = walhouse(&["checkpoints"], dir.path()).output().unwrap();
    assert_eq!(
        text(&out.stdout).lines().count(),
        2,
        "{}",
        text(&out.stdout)
    );
    let out = walhouse(&["recover", "--dump"], dir.path())
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout),
        "{\"key\":\"x\",\"value\":\"1\"}\n{\"key\":\"y\",\"value\":\"2\"}\n"
    );
    println!("checkpoint answered by the running ingest: {said}");
}

fn ingest(dir: &Path, input: &str) -> Output {
    let out = run_with_input(&["ingest", "--cores", "2", "--no-pin"], dir, input);
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

fn checkpoint(dir: &Path) -> Output {
    let out = walhouse(&["checkpoint"], dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

fn dump(dir: &Path) -> Output {
    let out = walhouse(&["recover", "--dump"], dir).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    out
}

#[test]
fn a_dump_ingests_back_byte_for_byte_binary_keys_and_values_included() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let input = r#"{"key":"plain","value":"text"}
{"key_hex":"ff00fe","value":"a key that is not UTF-8"}
{"key":"a value that is not UTF-8","value_hex":"00C328FF"}
{"key_hex":"c0","value_hex":""}
{"key":"\u00e9 \"quoted\"\n","value":"\u00fc"}
{"key":"gone","value":"x"}
{"key":"gone","value":null}
"#;
    ingest(&a, input);
    checkpoint(&a);
    let first = dump(&a);
    // Sorted by key bytes; a key or value that is UTF-8 (the empty value
    // too) is a string, other bytes are hex.
    let want = "{\"key\":\"a value that is not UTF-8\",\"value_hex\":\"00c328ff\"}\n\
                {\"key\":\"plain\",\"value\":\"text\"}\n\
                {\"key_hex\":\"c0\",\"value\":\"\"}\n\
                {\"key\":\"é \\\"quoted\\\"\\n\",\"value\":\"ü\"}\n\
                {\"key_hex\":\"ff00fe\",\"value\":\"a key that is not UTF-8\"}\n";
    assert_eq!(text(&first.stdout), want);
    // Read back from the checkpoint's Parquet, not from the WAL.
    let said = text(&first.stderr);
    assert!(
        said.contains("recovered 5 keys from checkpoint 1 and 0 records of the WAL after it"),
        "{said}"
    );

    let out = ingest(&b, &text(&first.stdout));
    assert!(
        text(&out.stderr).contains("5 records (5 puts, 0 deletes)"),
        "{}",
        text(&out.stderr)
    );
    checkpoint(&b);
    let second = dump(&b);
    assert_eq!(
        second.stdout, first.stdout,
        "the dump of the ingested dump differs"
    );
    println!(
        "dump of 5 keys (2 not UTF-8, 2 values not UTF-8) ingested into a fresh data directory, \
         checkpointed and dumped again: {} bytes, identical",
        first.stdout.len()
    );
}

#[test]
fn every_command_counts_records_and_prints_no_debug() {
    let dir = tempfile::tempdir().unwrap();
    let out = ingest(
        dir.path(),
        "{\"key\":\"a\",\"value\":\"1\"}\n{\"key\":\"b\",\"value\":\"2\"}\n\
         {\"commit\":{\"kafka-1\":7,\"kafka-0\":42},\"watermark\":1700000000}\n",
    );
    let said = assert_for_people("ingest", &out);
    assert!(
        said.contains("3 lines durable in ")
            && said.contains(": 2 records (2 puts, 0 deletes) and 1 commit"),
        "{said}"
    );
    assert!(said.contains("ack latency p50 "), "{said}");
    let out = checkpoint(dir.path());
    let said = assert_for_people("checkpoint", &out);
    // The checkpoint's changelog holds the commit too, and no epoch barrier
    // is a record.
    assert!(said.contains("2 records (2 puts, 0 deletes)"), "{said}");

    // After the checkpoint the WAL holds each core's epoch barrier, then
    // three records.
    let out = ingest(
        dir.path(),
        "{\"key\":\"c\",\"value\":\"3\"}\n{\"key\":\"a\",\"value\":null}\n{\"key\":\"d\",\"value\":\"4\"}\n",
    );
    assert_for_people("ingest", &out);
    let out = walhouse(&["recover"], dir.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = assert_for_people("recover", &out);
    assert!(
        said.contains("recovered 3 keys from checkpoint 1 and 3 records of the WAL after it"),
        "{said}"
    );
    assert!(
        said.contains("source offsets: kafka-0=42, kafka-1=7; watermark 1700000000"),
        "{said}"
    );
    assert!(said.contains("torn tails cut: none"), "{said}");

    let wal = dir.path().join("wal");
    let out = Command::new(env!("CARGO_BIN_EXE_walhouse"))
        .args(["inspect", wal.to_str().unwrap()])
        .env("WALHOUSE_LOG", "error")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = assert_for_people("inspect", &out);
    let mut lines = said.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (records, barriers) = (column("records"), column("barriers"));
    let (mut sum_records, mut sum_barriers) = (0, 0);
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        sum_records += cells[records].parse::<u64>().unwrap();
        sum_barriers += cells[barriers].parse::<u64>().unwrap();
    }
    assert_eq!(sum_records, 3, "{said}");
    assert!(
        sum_barriers >= 1,
        "no epoch barrier in the WAL tail:\n{said}"
    );

    checkpoint(dir.path());
    for (args, want) in [
        (&["get", "c"][..], "3\n"),
        (&["get", "b", "--checkpoint", "1"][..], "2\n"),
        (&["checkpoints"][..], "checkpoint 1, 1 file"),
        (&["verify"][..], "no problems"),
        (&["verify", "--checkpoint", "1"][..], "no problems"),
        (
            &["gc", "--retain", "1"][..],
            "kept checkpoints 2 readable; expired 1",
        ),
    ] {
        let out = walhouse(args, dir.path()).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let said = assert_for_people(&format!("{args:?}"), &out);
        assert!(said.contains(want), "{args:?}: {said}");
    }
    let out = walhouse(&["checkpoints"], dir.path()).output().unwrap();
    let rows: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().take(3).map(str::to_owned).collect())
        .collect();
    // Checkpoint number, epoch, records.
    assert_eq!(
        rows,
        [["1", "0", "2"], ["2", "1", "3"]],
        "{}",
        text(&out.stdout)
    );
    println!(
        "ingest, checkpoint, recover, inspect ({sum_records} records and {sum_barriers} epoch \
         barriers in the WAL tail, counted apart), get, checkpoints, verify and gc: counts of \
         records, offsets as source=offset, no Debug output"
    );
}

#[test]
fn warnings_are_shown_by_default_and_not_coloured_in_a_pipe() {
    let dir = tempfile::tempdir().unwrap();
    let torn = |dir: &Path| {
        ingest(dir, "{\"key\":\"a\",\"value\":\"1\"}\n");
        // A few bytes of a record that never became durable: a torn tail.
        let newest = segment_files(&dir.join("wal")).pop().unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&newest)
            .unwrap();
        f.write_all(&[7, 7, 7]).unwrap();
    };
    torn(dir.path());
    let out = walhouse(&["recover"], dir.path())
        .env_remove("WALHOUSE_LOG")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("WARN") && stderr.contains("WAL repair"),
        "the repair's warning is not shown by default: {stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a pipe: {stderr:?}"
    );
    let said = assert_for_people("recover of a torn tail", &out);
    assert!(said.contains("torn tails cut: core "), "{said}");
    assert!(said.contains("WAL repair: core "), "{said}");

    // WALHOUSE_LOG is still the filter.
    let quiet = tempfile::tempdir().unwrap();
    torn(quiet.path());
    let out = walhouse(&["recover"], quiet.path()).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("WARN"),
        "WALHOUSE_LOG=error shows warnings: {}",
        text(&out.stderr)
    );
    println!("a torn tail's repair warned on stderr without WALHOUSE_LOG, plain text in a pipe; WALHOUSE_LOG=error silenced it");
}
