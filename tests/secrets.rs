//! No secret ever reaches the output: the `walhouse` binary runs with a
//! secret access key and session token in the environment and
//! `WALHOUSE_LOG=debug`, against an unreachable endpoint (errors, retries)
//! and, when `WALHOUSE_S3_TEST_URL` is set, against the real server
//! (demo, checkpoints, verify, gc), and for `--help`; the secrets appear in
//! nothing it prints. `Store`'s `{:?}` and its errors' `{:?}` are checked
//! too.
//!
//! One test function, so that setting the process environment for the
//! in-process part never races another test.
#![allow(clippy::unwrap_used)]

use std::process::{Command, Output};

use walhouse::checkpoint::{CheckpointSettings, Checkpointer};
use walhouse::store::Store;

const SECRET_KEY: &str = "wh-secret-key-7Q2xZk9vLp0RmTfE3uYa";
const SESSION_TOKEN: &str = "wh-session-token-Jd8sN1wQ4cXo6bVr";
const SECRETS: [&str; 2] = [SECRET_KEY, SESSION_TOKEN];

/// Runs the binary with the secrets, debug logging and `endpoint`.
fn walhouse(endpoint: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_walhouse"));
    for var in [
        "AWS_PROFILE",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    ] {
        cmd.env_remove(var);
    }
    cmd.args(args)
        .env("AWS_ENDPOINT", endpoint)
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "walhouse-test-key-id")
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .env("AWS_SESSION_TOKEN", SESSION_TOKEN)
        .env("AWS_REGION", "us-east-1")
        .env("WALHOUSE_LOG", "debug")
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap()
}

/// Asserts no secret is in `text`; returns its length.
fn assert_clean(what: &str, text: &str) -> usize {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} printed a secret:\n{text}");
    }
    text.len()
}

fn check(what: &str, out: &Output) -> usize {
    assert_clean(what, &String::from_utf8_lossy(&out.stdout))
        + assert_clean(what, &String::from_utf8_lossy(&out.stderr))
}

#[test]
fn no_secret_in_anything_the_cli_prints_or_debug_formats() {
    let mut runs = 0;
    let mut bytes = 0;
    let mut failures = 0;
    // Nothing listens on port 1: every request fails after object_store's
    // retries, and the errors are printed.
    let unreachable = "http://127.0.0.1:1";
    let url = "s3://walhouse-secrets/table";
    for args in [
        vec!["--help"],
        vec!["checkpoints", "--help"],
        vec!["verify", "--help"],
        vec!["demo", "--help"],
        vec!["checkpoints", "--store", url],
        vec!["verify", "--store", url],
        vec!["gc", "--store", url],
    ] {
        let out = walhouse(unreachable, &args);
        bytes += check(&args.join(" "), &out);
        runs += 1;
        if !out.status.success() {
            failures += 1;
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("walhouse: error:"),
                "{args:?} failed with a message: {stderr}"
            );
        }
    }
    assert_eq!(
        failures, 3,
        "the three store commands fail, --help does not"
    );

    let mut reached = "no S3 server (WALHOUSE_S3_TEST_URL not set)".to_owned();
    if let (Ok(base), Ok(endpoint)) = (
        std::env::var("WALHOUSE_S3_TEST_URL"),
        std::env::var("AWS_ENDPOINT"),
    ) {
        let table = format!(
            "{}/secrets-{}",
            base.trim_end_matches('/'),
            uuid::Uuid::new_v4().simple()
        );
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().to_str().unwrap();
        for args in [
            vec![
                "demo",
                "--data-dir",
                data,
                "--records",
                "2000",
                "--cores",
                "2",
                "--store",
                &table,
            ],
            vec!["checkpoints", "--store", &table],
            vec!["verify", "--store", &table],
            vec!["gc", "--store", &table, "--grace-secs", "0", "--force"],
        ] {
            let out = walhouse(&endpoint, &args);
            bytes += check(&args.join(" "), &out);
            runs += 1;
            assert!(
                out.status.success(),
                "{args:?} against {endpoint}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        reached = format!("the S3 server at {endpoint} (demo, checkpoints, verify, gc succeeded)");
    } else {
        println!("SKIPPED (the reachable-server half): WALHOUSE_S3_TEST_URL not set");
    }

    // In process: the store and a failed operation's error, with `{:?}`.
    std::env::set_var("AWS_ENDPOINT", unreachable);
    std::env::set_var("AWS_ALLOW_HTTP", "true");
    std::env::set_var("AWS_ACCESS_KEY_ID", "walhouse-test-key-id");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    std::env::set_var("AWS_SESSION_TOKEN", SESSION_TOKEN);
    std::env::set_var("AWS_REGION", "us-east-1");
    let store = Store::from_url(url).unwrap();
    let debug = format!("{store:?}");
    bytes += assert_clean("Store's {:?}", &debug);
    let cp = Checkpointer::new(store.clone(), CheckpointSettings::default()).unwrap();
    let err = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(cp.checkpoints())
        .unwrap_err();
    bytes += assert_clean("an error's {:?}", &format!("{err:?}"));
    bytes += assert_clean("an error's message", &err.to_string());
    let probe = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(store.probe())
        .unwrap_err();
    bytes += assert_clean("the probe's error", &format!("{probe} {probe:?}"));
    println!(
        "secrets checked in {runs} CLI runs at debug log level ({failures} failing against an \
         unreachable endpoint, then {reached}) and in Store / error Debug output: \
         {bytes} bytes of output, no secret"
    );
}
