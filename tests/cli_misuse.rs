//! The command line under misuse: lines that could never be checkpointed,
//! two data directories on one table, a data directory opened without its
//! store or with other cores, read-only commands pointed at nothing, and a
//! checkpoint or key that is not there. Each case prints what it proved.
#![allow(clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use common::{assert_for_people, output_with_input, text};

fn walhouse(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walhouse"));
    cmd.args(args)
        .env_remove("WALHOUSE_STORE")
        .env_remove("WALHOUSE_DATA_DIR")
        .env_remove("WALHOUSE_CONFIG")
        .env_remove("WALHOUSE_CORES")
        .env("WALHOUSE_LOG", "error");
    cmd
}

fn run(args: &[&str]) -> Output {
    walhouse(args).output().unwrap()
}

fn run_with_input(args: &[&str], input: &str) -> Output {
    output_with_input(walhouse(args), input)
}

fn last_ack(out: &Output) -> Option<u64> {
    text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("ack "))
        .map(|n| n.parse().unwrap())
        .next_back()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn lines(from: u32, to: u32) -> String {
    let mut out = String::new();
    for i in from..to {
        writeln!(out, "{{\"key\":\"k{i}\",\"value\":\"v{i}\"}}").unwrap();
    }
    out
}

fn dump(data_dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["recover", "--dump", "--data-dir", p(data_dir)];
    args.extend_from_slice(extra);
    run(&args)
}

fn dumped_keys(out: &Output) -> usize {
    text(&out.stdout).lines().count()
}

#[test]
fn a_line_no_checkpoint_could_store_is_refused_by_number_before_its_ack() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let input = format!(
        "{}{{\"commit\": {{\"s\": 9223372036854775808}}}}\n{}",
        lines(0, 3),
        lines(3, 5)
    );
    let out = run_with_input(
        &["ingest", "--data-dir", p(&d), "--cores", "2", "--no-pin"],
        &input,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 4"), "{stderr}");
    assert!(stderr.contains("9223372036854775808"), "{stderr}");
    assert_eq!(last_ack(&out), Some(3), "{stderr}");

    // A 20 MB value: refused naming its line, not "after line 0".
    let big = format!(
        "{}{{\"key\":\"big\",\"value\":\"{}\"}}\n",
        lines(10, 12),
        "x".repeat(20 << 20)
    );
    let out = run_with_input(
        &["ingest", "--data-dir", p(&d), "--cores", "2", "--no-pin"],
        &big,
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("line 3"), "{stderr}");
    assert!(stderr.contains("more than the"), "{stderr}");
    assert_eq!(last_ack(&out), Some(2), "{stderr}");

    // Whatever was acknowledged checkpoints, and a later commit works.
    let out = run_with_input(
        &[
            "ingest",
            "--data-dir",
            p(&d),
            "--no-pin",
            "--final-checkpoint",
        ],
        "{\"commit\": {\"s\": 9223372036854775807}}\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["checkpoint", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dump(&d, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(dumped_keys(&out), 5, "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("source offsets: s=9223372036854775807"),
        "{}",
        text(&out.stderr)
    );
    println!(
        "offset 2^63 refused as line 4 (lines 1..=3 acked), a 20 MB value refused as line 3 \
         (lines 1..=2 acked); the acked lines and an offset of i64::MAX checkpointed and recovered"
    );
}

#[test]
fn a_second_data_directory_is_refused_by_the_owned_table() {
    let tmp = tempfile::tempdir().unwrap();
    let (d1, d2) = (tmp.path().join("d1"), tmp.path().join("d2"));
    let store = tmp.path().join("shared-table");
    let store_url = format!("file://{}", p(&store));
    let base = |d: &Path| {
        vec![
            "ingest".to_owned(),
            "--data-dir".to_owned(),
            p(d).to_owned(),
            "--store".to_owned(),
            store_url.clone(),
            "--cores".to_owned(),
            "2".to_owned(),
            "--no-pin".to_owned(),
        ]
    };
    let args1 = base(&d1);
    let args1: Vec<&str> = args1.iter().map(String::as_str).collect();
    let out = run_with_input(&args1, &lines(0, 300));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_ack(&out), Some(300));
    let out = run(&["checkpoint", "--data-dir", p(&d1)]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let args2 = base(&d2);
    let args2: Vec<&str> = args2.iter().map(String::as_str).collect();
    let out = run_with_input(&args2, &lines(1000, 1300));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "the second directory was let in");
    assert_eq!(
        last_ack(&out),
        None,
        "the refused directory acknowledged lines"
    );
    assert!(stderr.contains("is owned by"), "{stderr}");
    assert!(
        stderr.contains(p(&d1)),
        "the error must name the owner: {stderr}"
    );

    let out = dump(&d1, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(dumped_keys(&out), 300);
    assert!(!text(&out.stdout).contains("k1000"));
    println!(
        "second data directory refused before any ack, naming {}; the owner's 300 keys intact",
        d1.display()
    );

    // Taking over (the owner is gone) works, and the old owner can no longer
    // commit: its checkpoint fails and its WAL is kept.
    let mut args3 = args2.clone();
    args3.push("--take-over");
    let out = run_with_input(&args3, &lines(1000, 1010));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(last_ack(&out), Some(10));
    let out = run_with_input(&args1, &lines(300, 310));
    assert!(
        !out.status.success(),
        "the old owner may not write after a take-over"
    );
    assert_eq!(last_ack(&out), None);
}

#[test]
fn a_data_directory_remembers_its_store_and_cores() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let store = tmp.path().join("elsewhere");
    let store_url = format!("file://{}", p(&store));
    let out = run_with_input(
        &[
            "ingest",
            "--data-dir",
            p(&d),
            "--store",
            &store_url,
            "--cores",
            "2",
            "--no-pin",
        ],
        &lines(0, 50),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&["checkpoint", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        store.join("changelog").join("_delta_log").is_dir(),
        "checkpoint without --store must go to the recorded store"
    );
    assert!(!d.join("table").exists(), "a default table was created");
    let out = run_with_input(&["ingest", "--data-dir", p(&d), "--no-pin"], &lines(50, 60));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = dump(&d, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(dumped_keys(&out), 60, "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("from checkpoint 1"),
        "{}",
        text(&out.stderr)
    );

    let other = format!("file://{}", p(&tmp.path().join("other")));
    let out = dump(&d, &["--store", &other]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&store_url) || stderr.contains(p(&store)),
        "{stderr}"
    );
    let out = run_with_input(
        &["ingest", "--data-dir", p(&d), "--cores", "1", "--no-pin"],
        &lines(60, 61),
    );
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("cores 2") && stderr.contains("cores 1"),
        "{stderr}"
    );
    assert_eq!(last_ack(&out), None);
    let out = run(&["checkpoint", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wal_cores: std::collections::BTreeSet<String> = std::fs::read_dir(d.join("wal"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_prefix("wal-")
                .and_then(|r| r.split('-').next())
                .map(str::to_owned)
        })
        .collect();
    assert!(
        wal_cores.len() <= 2,
        "a log for a core that does not exist: {wal_cores:?}"
    );
    println!("recorded store used by checkpoint and recover; --store and --cores conflicts named both values");
}

#[test]
fn read_only_commands_create_nothing_and_say_what_is_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("nonexistent");
    let url = format!("file://{}", p(&missing));
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let empty_url = format!("file://{}", p(&empty));
    let mut checked = 0;
    for (args, want) in [
        (vec!["verify", "--store", url.as_str()], "no table at"),
        (vec!["checkpoints", "--store", url.as_str()], "no table at"),
        (vec!["get", "--store", url.as_str(), "k"], "no table at"),
        (vec!["gc", "--store", url.as_str()], "no table at"),
        (vec!["verify", "--store", empty_url.as_str()], "no table at"),
        (
            vec!["checkpoints", "--store", empty_url.as_str()],
            "no table at",
        ),
        (
            vec!["recover", "--data-dir", p(&missing)],
            "no data directory at",
        ),
        (vec!["get", "--data-dir", p(&missing), "k"], "no table at"),
    ] {
        let out = run(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded on nothing");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
        checked += 1;
    }
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "something was created in an empty store"
    );
    println!("{checked} read-only commands on a missing or empty store/data directory: non-zero exit, named what is missing, created nothing");
}

#[test]
fn a_missing_checkpoint_or_key_is_named_in_words() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    for round in 0..3 {
        let out = run_with_input(
            &["ingest", "--data-dir", p(&d), "--cores", "2", "--no-pin"],
            &lines(round * 10, round * 10 + 10),
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = run(&["checkpoint", "--data-dir", p(&d)]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let mut checked = 0;
    for (args, want) in [
        (
            vec!["get", "k1", "--checkpoint", "5"],
            "no checkpoint 5; the table has checkpoints 1 to 3",
        ),
        (
            vec!["get", "k1", "--checkpoint", "0"],
            "no checkpoint 0; the table has checkpoints 1 to 3",
        ),
        (
            vec!["verify", "--checkpoint", "5"],
            "no checkpoint 5; the table has checkpoints 1 to 3",
        ),
        (
            vec!["get", "nope", "--checkpoint", "2"],
            "key \"nope\" not found at checkpoint 2",
        ),
        (
            vec!["get", "nope"],
            "key \"nope\" not found in checkpoint 3 nor in the 0 records of the WAL after it",
        ),
        (
            vec!["get", "k25", "--checkpoint", "2"],
            "key \"k25\" not found at checkpoint 2",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--data-dir", p(&d)]);
        let out = run(&args);
        let said = assert_for_people(&format!("{args:?}"), &out);
        assert!(!out.status.success(), "{args:?} succeeded: {said}");
        assert!(said.contains(want), "{args:?}: {said}");
        checked += 1;
    }
    let out = run(&["get", "k25", "--checkpoint", "3", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v25\n");

    // A table with an owner and no checkpoint yet.
    let e = tmp.path().join("e");
    let out = run_with_input(&["ingest", "--data-dir", p(&e), "--no-pin"], &lines(0, 1));
    assert!(out.status.success(), "{}", text(&out.stderr));
    for (args, want) in [
        (
            vec!["get", "k0", "--checkpoint", "1"],
            "no checkpoint 1; the table has no checkpoint yet",
        ),
        (
            vec!["get", "nope"],
            "key \"nope\" not found in the 1 record of the WAL (no checkpoint yet)",
        ),
    ] {
        let mut args = args.clone();
        args.extend(["--data-dir", p(&e)]);
        let out = run(&args);
        let said = assert_for_people(&format!("{args:?}"), &out);
        assert!(!out.status.success(), "{args:?} succeeded: {said}");
        assert!(said.contains(want), "{args:?}: {said}");
        checked += 1;
    }
    let out = run(&["verify", "--data-dir", p(&e)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("the table has no checkpoint yet"),
        "{}",
        text(&out.stdout)
    );
    println!("{checked} lookups and verifications of a checkpoint or key that is not there: non-zero exit, said in words which checkpoints the table has");
}

#[test]
fn get_reads_the_wal_after_the_newest_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("d");
    let ingest = |input: &str| {
        let out = run_with_input(
            &["ingest", "--data-dir", p(&d), "--cores", "2", "--no-pin"],
            input,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    ingest(&lines(0, 1));
    let out = run(&["get", "k0", "--data-dir", p(&d)]);
    assert!(
        out.status.success(),
        "k0, only in the WAL: {}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "v0\n");
    ingest(&lines(1, 30));
    let out = run(&["checkpoint", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    ingest("{\"key\":\"k40\",\"value\":\"v40\"}\n{\"key\":\"k25\",\"value\":null}\n");
    let mut checked = 0;
    for (key, want) in [("k40", Some("v40\n")), ("k3", Some("v3\n")), ("k25", None)] {
        let out = run(&["get", key, "--data-dir", p(&d)]);
        let said = assert_for_people(&format!("get {key}"), &out);
        if let Some(value) = want {
            assert!(out.status.success(), "get {key}: {said}");
            assert_eq!(text(&out.stdout), value, "get {key}");
        } else {
            assert!(
                !out.status.success(),
                "deleted in the WAL, yet found: {said}"
            );
            assert!(
                said.contains(
                    "key \"k25\" not found in checkpoint 1 nor in the 2 records of the WAL after it"
                ),
                "{said}"
            );
        }
        checked += 1;
    }
    // The checkpoint alone still answers with --checkpoint.
    let out = run(&["get", "k25", "--checkpoint", "1", "--data-dir", p(&d)]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "v25\n");
    println!("{checked} lookups after checkpoint 1 read the WAL after it (a put, a key of the checkpoint, a delete); --checkpoint 1 reads the checkpoint alone");
}
