//! The thread-per-core ingester: acknowledged writes survive, checkpoints
//! run while producers write, a failed fsync poisons its core, the data
//! directory is locked, and core counts are kept.

#![allow(
    clippy::unwrap_used,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::too_many_lines
)]

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::simfs::SimFs;
use walhouse::checkpoint::recover;
use walhouse::per_core_wal::PerCoreWalConfig;
use walhouse::runtime::{IngestError, IngestSettings, Ingester, Ownership, WriteOp};
use walhouse::store::Store;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn settings(cores: usize) -> IngestSettings {
    common::manual_settings(cores)
}

fn apply(model: &mut Model, op: &WriteOp) {
    match op {
        WriteOp::Put { key, value } => {
            model.insert(key.clone(), value.clone());
        }
        WriteOp::Delete { key } => {
            model.remove(key);
        }
    }
}

/// Producer `p` writes `n` ops in batches of 1..=64: keys shared between
/// producers are avoided so the model does not depend on interleaving.
fn ops_for(p: usize, round: usize, n: usize) -> Vec<WriteOp> {
    (0..n)
        .map(|i| {
            let key = format!("p{p}-k{:04}", (i * 7919) % 500).into_bytes();
            if i % 11 == 5 {
                WriteOp::Delete { key }
            } else {
                WriteOp::Put {
                    key,
                    value: format!("r{round}-p{p}-v{i}").into_bytes(),
                }
            }
        })
        .collect()
}

async fn produce(ingester: &Ingester, round: usize, producers: usize, n: usize) -> Model {
    let mut tasks = Vec::new();
    for p in 0..producers {
        let h = ingester.handle();
        tasks.push(tokio::spawn(async move {
            let ops = ops_for(p, round, n);
            let mut i = 0;
            while i < ops.len() {
                let size = 1 + (i * 31 + p) % 64;
                let chunk: Vec<WriteOp> = ops[i..(i + size).min(ops.len())].to_vec();
                if chunk.len() == 1 {
                    h.submit(chunk[0].clone()).await.unwrap().await.unwrap();
                } else {
                    h.put_batch(chunk).await.unwrap();
                }
                i += size;
            }
            ops
        }));
    }
    let mut model = Model::new();
    for t in tasks {
        for op in t.await.unwrap() {
            apply(&mut model, &op);
        }
    }
    model
}

async fn recovered(
    dir: &std::path::Path,
    store: &Store,
    cores: usize,
) -> walhouse::checkpoint::Recovered {
    recover(store, &PerCoreWalConfig::new(&dir.join("wal"), cores))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_restarts_and_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("table")).unwrap();
    let mut model = Model::new();
    let mut offsets = HashMap::new();
    for round in 0..3 {
        let ingester = Ingester::builder(dir.path(), store.clone())
            .settings(settings(2))
            .open()
            .await
            .unwrap();
        // Checkpoints run while the producers write.
        let h = ingester.handle();
        let (written, checkpoints) = tokio::join!(produce(&ingester, round, 6, 2_000), async {
            let mut done = 0;
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                ingester.checkpoint().await.unwrap();
                done += 1;
            }
            done
        });
        for p in 0..6 {
            for op in ops_for(p, round, 2_000) {
                apply(&mut model, &op);
            }
        }
        assert!(written.iter().all(|(k, v)| model.get(k) == Some(v)));
        offsets.insert("source-a".to_string(), 100 * (round as u64 + 1));
        h.commit(offsets.clone(), Some(round as i64)).await.unwrap();
        let m = ingester.metrics();
        assert_eq!(m.entries, 6 * 2_000 + 1, "every acknowledged entry counted");
        assert!(m.fsyncs > 0 && m.fsyncs <= m.entries);
        let report = ingester.shutdown(round == 1).await.unwrap();
        println!(
            "round {round}: {} entries acked, {} fsyncs ({:.1} entries per fsync), {checkpoints} \
             checkpoints during ingest, final checkpoint: {}, ack p50 {:?} p99 {:?}",
            report.metrics.entries,
            report.metrics.fsyncs,
            report.metrics.entries as f64 / report.metrics.fsyncs as f64,
            report.final_checkpoint.is_some(),
            report.metrics.ack_latency.quantile(0.5),
            report.metrics.ack_latency.quantile(0.99),
        );
        assert_eq!(report.final_checkpoint.is_some(), round == 1);
        let r = recovered(dir.path(), &store, 2).await;
        let lost = model
            .iter()
            .filter(|(k, v)| r.state.state.get(k) != Some(*v))
            .count();
        let extra = r
            .state
            .state
            .keys()
            .filter(|k| !model.contains_key(*k))
            .count();
        println!(
            "round {round}: recovered {} keys from checkpoint {:?} + {} WAL entries: {lost} lost, {extra} extra",
            r.state.state.len(),
            r.checkpoint,
            r.state.entries_replayed
        );
        assert_eq!((lost, extra), (0, 0));
        assert_eq!(r.state.source_offsets, offsets);
        assert_eq!(r.state.watermark, Some(round as i64));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduler_checkpoints_on_its_interval() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("table")).unwrap();
    let ingester = Ingester::builder(dir.path(), store.clone())
        .settings(IngestSettings {
            checkpoint_interval_ms: 20,
            ..settings(2)
        })
        .open()
        .await
        .unwrap();
    ingester.put("a", "1").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while ingester.metrics().checkpoints == 0 {
        assert!(
            Instant::now() < deadline,
            "no scheduled checkpoint within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Nothing new: no more checkpoints.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after_idle = ingester.metrics().checkpoints;
    ingester.shutdown(false).await.unwrap();
    let listed = walhouse::checkpoint::Checkpointer::new(
        store,
        walhouse::checkpoint::CheckpointSettings::default(),
    )
    .unwrap()
    .checkpoints()
    .await
    .unwrap();
    println!(
        "scheduled checkpoints: {after_idle} (listed {})",
        listed.len()
    );
    assert_eq!(after_idle, 1, "an idle ingester does not checkpoint again");
    assert_eq!(listed.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_poisons_the_core_and_nothing_unsynced_is_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::memory();
    let sim = SimFs::new(7);
    let ingester = Ingester::builder(dir.path(), store)
        .settings(settings(1))
        .file_system(sim.shared())
        .open()
        .await
        .unwrap();
    ingester.put("before", "ok").await.unwrap();
    // Every operation from now on fails: the next group's write or fsync.
    sim.set_crash_at(Some(sim.ops()));
    let mut failed = 0;
    let mut poisoned = 0;
    for i in 0..20 {
        match ingester.put(format!("k{i}"), "v").await {
            Ok(()) => panic!("a write was acknowledged after the fsync failed"),
            Err(IngestError::Poisoned { core_id, cause }) => {
                assert_eq!(core_id, 0);
                assert!(!cause.is_empty());
                poisoned += 1;
                failed += 1;
            }
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    let e = ingester.put("later", "v").await.unwrap_err();
    assert!(e.to_string().contains("recover"), "{e}");
    let m = ingester.metrics();
    println!(
        "poisoning: 1 write acknowledged before the failure, {failed} refused after it \
         ({poisoned} with Poisoned), errors counted {}",
        m.errors
    );
    assert_eq!(m.entries, 1);
    assert_eq!(m.errors, 21);
    ingester.shutdown(false).await.unwrap();
}

/// A write that fails in the middle of a group poisons the core before the
/// group's fdatasync: the requests appended before it in that group were
/// never synced, so none of them is acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_in_a_group_acknowledges_none_of_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SimFs::new(11);
    let mut s = settings(1);
    // Room for the whole group to form before its fdatasync.
    s.group_commit_delay_us = 20_000;
    let ingester = Ingester::builder(dir.path(), Store::memory())
        .settings(s)
        .file_system(sim.shared())
        .open()
        .await
        .unwrap();
    ingester.put("before", "ok").await.unwrap();
    sim.set_crash_at(Some(sim.ops()));
    // Small puts stay in the writer's buffer; the large one makes it write
    // to the file, which fails.
    let mut pending = Vec::new();
    for i in 0..5 {
        pending.push(
            ingester
                .submit(WriteOp::Put {
                    key: format!("small{i}").into_bytes(),
                    value: b"v".to_vec(),
                })
                .await
                .unwrap(),
        );
    }
    pending.push(
        ingester
            .submit(WriteOp::Put {
                key: b"large".to_vec(),
                value: vec![7; 1 << 20],
            })
            .await
            .unwrap(),
    );
    let mut acknowledged = 0;
    for (i, durable) in pending.into_iter().enumerate() {
        match durable.await {
            Ok(()) => acknowledged += 1,
            Err(e) => println!("request {i}: {e}"),
        }
    }
    println!("a group with a failed write: {acknowledged} of 6 acknowledged");
    assert_eq!(acknowledged, 0, "nothing of the group was synced");
    ingester.shutdown(false).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_locked_and_keeps_its_cores() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("table")).unwrap();
    let first = Ingester::builder(dir.path(), store.clone())
        .settings(settings(2))
        .open()
        .await
        .unwrap();
    first.put("x", "1").await.unwrap();
    let second = Ingester::builder(dir.path(), store.clone())
        .settings(settings(2))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(second, IngestError::Locked { .. }), "{second}");
    first.shutdown(false).await.unwrap();
    let fewer = Ingester::builder(dir.path(), store.clone())
        .settings(settings(1))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(fewer, IngestError::Mismatch { .. }), "{fewer}");
    assert!(
        fewer.to_string().contains("cores 2") && fewer.to_string().contains("cores 1"),
        "{fewer}"
    );
    let oversized = Ingester::builder(dir.path(), store)
        .settings(settings(2))
        .open()
        .await
        .unwrap();
    let e = oversized.put("big", vec![0u8; 17 << 20]).await.unwrap_err();
    assert!(matches!(e, IngestError::Rejected { .. }), "{e}");
    oversized.put("after", "ok").await.unwrap();
    oversized.shutdown(false).await.unwrap();
    println!(
        "lock refused a second opener; 1 core refused for a 2-core WAL; a 17 MiB record refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_machine_resumes_after_the_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::local(&dir.path().join("table")).unwrap();
    let ingester = Ingester::builder(dir.path().join("a"), store.clone())
        .settings(settings(2))
        .open()
        .await
        .unwrap();
    let model = produce(&ingester, 0, 2, 300).await;
    ingester.shutdown(true).await.unwrap();
    // Another machine: no local WAL, the same table. The table is owned by
    // the lost data directory: refused, then taken over.
    let other = dir.path().join("b");
    let refused = Ingester::builder(&other, store.clone())
        .settings(settings(2))
        .open()
        .await
        .unwrap_err();
    assert!(matches!(refused, IngestError::NotOwner { .. }), "{refused}");
    let ingester = Ingester::builder(&other, store.clone())
        .settings(settings(2))
        .ownership(Ownership::TakeOver)
        .open()
        .await
        .unwrap();
    ingester.put("p0-k0000", "new").await.unwrap();
    ingester.shutdown(false).await.unwrap();
    let r = recovered(&other, &store, 2).await;
    let mut want = model;
    want.insert(b"p0-k0000".to_vec(), b"new".to_vec());
    assert_eq!(r.state.state, want);
    println!(
        "new machine: {} keys from checkpoint {:?} + {} WAL entries, sequences resumed {:?}",
        r.state.state.len(),
        r.checkpoint,
        r.state.entries_replayed,
        r.state.next_sequences
    );
}
