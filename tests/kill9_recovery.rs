//! The kill -9 loop: `walhouse ingest` is killed with SIGKILL at a random
//! moment while a writer streams puts, overwrites and deletes into it;
//! `walhouse recover --dump` must then show every acknowledged line: a
//! key's recovered value is its last acknowledged write or a later one.
//!
//! Every fourth round asks the running ingest for a checkpoint (`walhouse
//! checkpoint`) before the kill; the others run with a checkpoint interval of
//! 0, 20 or 150 ms, so kills also land during checkpoints.
//!
//! `WALHOUSE_KILL9_ROUNDS` sets the number of kills (default 20; the long
//! mode is 200), `WALHOUSE_KILL9_STORE` the store URL (default: the data
//! directory's local store), `WALHOUSE_KILL9_SEED` the seed.
#![allow(
    clippy::unwrap_used,
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::too_many_lines
)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEYS: u64 = 2_000;
const MAX_LINES_PER_ROUND: u64 = 30_000;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Per key: every value sent, in order (`None`: a delete), and the index of
/// the last acknowledged one.
#[derive(Default)]
struct History {
    sent: Vec<Option<String>>,
    acked: Option<usize>,
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn every_acknowledged_line_survives_kill_9() {
    let rounds = env_u64("WALHOUSE_KILL9_ROUNDS", 20);
    let seed = env_u64("WALHOUSE_KILL9_SEED", 0x5eed_0009);
    let store = std::env::var("WALHOUSE_KILL9_STORE").ok();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bin = env!("CARGO_BIN_EXE_walhouse");
    let mut rng = Rng(seed | 1);
    let mut model: HashMap<String, History> = HashMap::new();
    let mut recovery_ms = Vec::new();
    let (mut acked_total, mut sent_total, mut lost, mut checked_keys) = (0u64, 0u64, 0u64, 0u64);
    let mut checkpoints = 0u64;
    for round in 0..rounds {
        let mut cmd = Command::new(bin);
        cmd.arg("ingest")
            .arg("--data-dir")
            .arg(&data)
            .args(["--cores", "2", "--no-pin"])
            .args([
                "--checkpoint-interval-ms",
                ["0", "20", "150"][(round % 3) as usize],
            ])
            .env("WALHOUSE_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(s) = &store {
            cmd.arg("--store").arg(s);
        }
        let mut child = cmd.spawn().unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        // The lines of this round, generated up front.
        let lines: Vec<(String, Option<String>)> = (0..MAX_LINES_PER_ROUND)
            .map(|l| {
                let key = format!("key-{:05}", rng.below(KEYS));
                let value =
                    (rng.below(100) >= 15).then(|| format!("r{round}-l{l}-{}", rng.below(1 << 20)));
                (key, value)
            })
            .collect();
        let written = Arc::new(Mutex::new(0usize));
        let writer = {
            let lines = lines.clone();
            let written = written.clone();
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                for (i, (key, value)) in lines.iter().enumerate() {
                    buf.clear();
                    let line = serde_json::json!({"key": key, "value": value});
                    serde_json::to_writer(&mut buf, &line).unwrap();
                    buf.push(b'\n');
                    if stdin.write_all(&buf).is_err() {
                        return;
                    }
                    *written.lock().unwrap() = i + 1;
                }
                // All sent: keep stdin open, so the process only ends by the kill.
                std::thread::sleep(Duration::from_secs(3600));
                drop(stdin);
            })
        };
        let acked = Arc::new(Mutex::new(0u64));
        let reader = {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { return };
                    let n: u64 = line.strip_prefix("ack ").unwrap().parse().unwrap();
                    let mut a = acked.lock().unwrap();
                    assert!(n >= *a, "ack went back: {n} after {a}");
                    *a = n;
                }
            })
        };
        std::thread::sleep(Duration::from_millis(30 + rng.below(400)));
        if round % 4 == 3 {
            // Every fourth round asks the running ingest for a checkpoint
            // first (through its control socket), so the WAL is trimmed and
            // later kills land on a checkpointed table. Only once it is up
            // (it acknowledged a line): a slow start (a loaded machine, a
            // remote store) is not a failed checkpoint.
            let up = Instant::now();
            while *acked.lock().unwrap() == 0 && up.elapsed() < Duration::from_secs(30) {
                std::thread::sleep(Duration::from_millis(10));
            }
            let mut ask = Command::new(bin);
            ask.arg("checkpoint").arg("--data-dir").arg(&data);
            if let Some(s) = &store {
                ask.arg("--store").arg(s);
            }
            let out = ask.output().unwrap();
            assert!(
                out.status.success(),
                "round {round}: checkpoint failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checkpoints += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        reader.join().unwrap();
        drop(writer); // blocked in its sleep or gone after EPIPE: detached
        let acked = *acked.lock().unwrap();
        let sent = (*written.lock().unwrap()).max(usize::try_from(acked).unwrap());
        assert!(
            !status.success(),
            "round {round}: ingest ended before the kill"
        );
        for (i, (key, value)) in lines.iter().take(sent).enumerate() {
            let h = model.entry(key.clone()).or_default();
            h.sent.push(value.clone());
            if (i as u64) < acked {
                h.acked = Some(h.sent.len() - 1);
            }
        }
        acked_total += acked;
        sent_total += sent as u64;
        if acked == 0 && !data.join("walhouse.json").exists() {
            // Killed before the data directory was created: nothing was
            // acknowledged, and there is nothing to recover yet.
            println!("round {round:3}: killed before the data directory existed, 0 acknowledged");
            continue;
        }

        let started = Instant::now();
        let mut rec = Command::new(bin);
        rec.arg("recover")
            .arg("--data-dir")
            .arg(&data)
            .arg("--dump");
        if let Some(s) = &store {
            rec.arg("--store").arg(s);
        }
        let out = rec.output().unwrap();
        recovery_ms.push(started.elapsed().as_secs_f64() * 1e3);
        assert!(
            out.status.success(),
            "round {round}: recover failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut recovered: BTreeMap<String, String> = BTreeMap::new();
        for line in out.stdout.lines() {
            let v: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
            recovered.insert(
                v["key"].as_str().unwrap().to_owned(),
                v["value"].as_str().unwrap().to_owned(),
            );
        }
        let mut round_lost = 0;
        for (key, h) in &model {
            let got = recovered.get(key).cloned();
            // Allowed: the last acknowledged write or any later one; with no
            // acknowledged write, also the absence of the key.
            let from = h.acked.unwrap_or(0);
            let ok = h.sent[from..].contains(&got) || (h.acked.is_none() && got.is_none());
            if !ok {
                round_lost += 1;
                if round_lost <= 5 {
                    eprintln!(
                        "round {round}: key {key}: recovered {got:?}, last acknowledged {:?}",
                        h.acked.map(|i| &h.sent[i])
                    );
                }
            }
        }
        let unknown = recovered.keys().filter(|k| !model.contains_key(*k)).count();
        assert_eq!(
            unknown, 0,
            "round {round}: recovered keys that were never written"
        );
        checked_keys += model.len() as u64;
        lost += round_lost;
        println!(
            "round {round:>3}: sent {sent:>6} lines, acknowledged {acked:>6}, recovered {} keys in {:.0} ms, {round_lost} lost",
            recovered.len(),
            recovery_ms.last().unwrap()
        );
    }
    recovery_ms.sort_by(f64::total_cmp);
    let pct = |q: f64| recovery_ms[((recovery_ms.len() - 1) as f64 * q).round() as usize];
    println!(
        "kill -9 loop: {rounds} kills, {sent_total} lines sent, {acked_total} acknowledged, \
         {checkpoints} checkpoints asked of the running ingest, {checked_keys} key checks, \
         {lost} acknowledged lines lost; recovery p50 {:.0} ms, p99 {:.0} ms (store: {})",
        pct(0.5),
        pct(0.99),
        store.as_deref().unwrap_or("local folder")
    );
    assert_eq!(lost, 0, "acknowledged lines lost");
    assert!(
        acked_total > 0,
        "nothing was acknowledged: the loop proved nothing"
    );
}
