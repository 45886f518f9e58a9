//! The `walhouse` command line end to end: ingest with acks, a malformed
//! line, a checkpoint asked of a running ingest, recover --dump, the lock.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{output_with_input, text};

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
    assert!(
        text(&out.stderr).contains("(\"src\", 7)"),
        "{}",
        text(&out.stderr)
    );
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
    assert!(said.contains("2 entries"), "{said}");

    let got = walhouse(&["get", "y"], dir.path()).output().unwrap();
    assert!(got.status.success(), "{}", text(&got.stderr));
    assert_eq!(text(&got.stdout), "2\n");
    assert!(
        text(&got.stderr).contains("1 read"),
        "{}",
        text(&got.stderr)
    );
    let missing = walhouse(&["get", "nope"], dir.path()).output().unwrap();
    assert!(!missing.status.success());
    assert!(text(&missing.stderr).contains("not found"));

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
