//! What producers hold: [`IngestHandle`] (routes each key to its core and
//! queues the write), [`WriteOp`], and [`Durable`], the future of a write's
//! fdatasync.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::oneshot;

use super::core::{Request, Work};
use super::IngestError;

/// One write of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
}

impl WriteOp {
    pub(super) fn key(&self) -> &[u8] {
        match self {
            Self::Put { key, .. } | Self::Delete { key } => key,
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::Put { key, value } => key.len() + value.len(),
            Self::Delete { key } => key.len(),
        }
    }
}

/// The future of a write's durability: resolves after the fdatasync that
/// covers it (`Ok`), or with the error that prevented it.
#[must_use = "a write is durable only when its Durable future resolves"]
pub struct Durable {
    pub(super) acks: Vec<oneshot::Receiver<Result<(), IngestError>>>,
    pub(super) next: usize,
}

impl std::fmt::Debug for Durable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Durable")
            .field("acks", &self.acks.len())
            .field("done", &self.next)
            .finish()
    }
}

impl Future for Durable {
    type Output = Result<(), IngestError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        while self.next < self.acks.len() {
            let i = self.next;
            match Pin::new(&mut self.acks[i]).poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(Ok(()))) => self.next += 1,
                Poll::Ready(Ok(Err(e))) => {
                    self.next = self.acks.len();
                    return Poll::Ready(Err(e));
                }
                Poll::Ready(Err(_)) => {
                    self.next = self.acks.len();
                    return Poll::Ready(Err(IngestError::ShutDown));
                }
            }
        }
        Poll::Ready(Ok(()))
    }
}

pub(super) struct HandleInner {
    pub(super) senders: Vec<flume::Sender<Request>>,
    pub(super) max_op_bytes: usize,
}

/// A cheap, cloneable handle for producers (`Send + Sync`).
#[derive(Clone)]
pub struct IngestHandle {
    pub(super) inner: Arc<HandleInner>,
}

impl std::fmt::Debug for IngestHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestHandle")
            .field("cores", &self.inner.senders.len())
            .finish()
    }
}

impl IngestHandle {
    /// Number of cores.
    #[must_use]
    pub fn cores(&self) -> usize {
        self.inner.senders.len()
    }

    /// The core a key is routed to (crc32c of the key modulo the cores).
    #[must_use]
    pub fn core_of(&self, key: &[u8]) -> usize {
        crc32c::crc32c(key) as usize % self.inner.senders.len()
    }

    pub(super) async fn send(
        &self,
        core: usize,
        work: Work,
    ) -> Result<oneshot::Receiver<Result<(), IngestError>>, IngestError> {
        let (ack, rx) = oneshot::channel();
        let req = Request {
            work,
            enqueued: Instant::now(),
            ack,
        };
        self.inner.senders[core]
            .send_async(req)
            .await
            .map_err(|_| IngestError::ShutDown)?;
        Ok(rx)
    }

    /// The most key plus value bytes one put takes (the WAL's record limit,
    /// 16 MiB by default, less the record's own fields).
    #[must_use]
    pub fn max_write_bytes(&self) -> usize {
        self.inner.max_op_bytes
    }

    /// Checks a write the way [`IngestHandle::submit`] does before queueing
    /// it: a write refused here is never written, and a write that passes is
    /// one every checkpoint can store.
    pub fn validate(&self, op: &WriteOp) -> Result<(), IngestError> {
        self.check(op)
    }

    /// Checks a commit the way [`IngestHandle::submit_commit`] does: every
    /// offset must fit a signed 64-bit column (checkpoints and Delta `txn`
    /// actions store them so), and the sources must fit one WAL record.
    pub fn validate_commit(&self, offsets: &HashMap<String, u64>) -> Result<(), IngestError> {
        let reject = |reason: String| IngestError::Rejected { core_id: 0, reason };
        for (source, &offset) in offsets {
            if i64::try_from(offset).is_err() {
                return Err(reject(format!(
                    "offset {offset} of source {source:?} is above {}, the largest a \
                     checkpoint stores (a signed 64-bit column)",
                    i64::MAX
                )));
            }
        }
        let bytes: usize = offsets.keys().map(|s| s.len() + 16).sum();
        if bytes > self.inner.max_op_bytes {
            return Err(reject(format!(
                "a commit of {} sources takes about {bytes} bytes, more than the {} a WAL \
                 record holds",
                offsets.len(),
                self.inner.max_op_bytes
            )));
        }
        Ok(())
    }

    fn check(&self, op: &WriteOp) -> Result<(), IngestError> {
        if op.len() > self.inner.max_op_bytes {
            return Err(IngestError::Rejected {
                core_id: self.core_of(op.key()),
                reason: format!(
                    "key and value take {} bytes, more than the {} a WAL record holds",
                    op.len(),
                    self.inner.max_op_bytes
                ),
            });
        }
        Ok(())
    }

    /// Queues one put or delete (waiting while its core's channel is full)
    /// and returns the future of its durability. Not durable on return.
    pub async fn submit(&self, op: WriteOp) -> Result<Durable, IngestError> {
        self.check(&op)?;
        let core = self.core_of(op.key());
        let rx = self.send(core, Work::One(op)).await?;
        Ok(Durable {
            acks: vec![rx],
            next: 0,
        })
    }

    /// Queues a batch (split by core; each key's writes keep their order)
    /// and returns the future of its durability: it resolves when every
    /// write of the batch is durable. Not durable on return.
    pub async fn submit_batch(&self, ops: Vec<WriteOp>) -> Result<Durable, IngestError> {
        for op in &ops {
            self.check(op)?;
        }
        let cores = self.cores();
        let mut acks = Vec::new();
        if cores == 1 {
            if !ops.is_empty() {
                acks.push(self.send(0, Work::Write(ops)).await?);
            }
        } else {
            let mut per_core: Vec<Vec<WriteOp>> = vec![Vec::new(); cores];
            for op in ops {
                per_core[self.core_of(op.key())].push(op);
            }
            for (core, ops) in per_core.into_iter().enumerate() {
                if !ops.is_empty() {
                    acks.push(self.send(core, Work::Write(ops)).await?);
                }
            }
        }
        Ok(Durable { acks, next: 0 })
    }

    /// Sets `key` to `value`; returns once that is durable.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<(), IngestError> {
        self.submit(WriteOp::Put {
            key: key.into(),
            value: value.into(),
        })
        .await?
        .await
    }

    /// Removes `key`; returns once that is durable.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<(), IngestError> {
        self.submit(WriteOp::Delete { key: key.into() })
            .await?
            .await
    }

    /// Writes a batch; returns once all of it is durable.
    pub async fn put_batch(&self, ops: Vec<WriteOp>) -> Result<(), IngestError> {
        self.submit_batch(ops).await?.await
    }

    /// Waits until everything queued before the call, on every core, is
    /// durable.
    pub async fn flush(&self) -> Result<(), IngestError> {
        let mut acks = Vec::with_capacity(self.cores());
        for core in 0..self.cores() {
            acks.push(self.send(core, Work::Flush).await?);
        }
        Durable { acks, next: 0 }.await
    }

    /// Records the source offsets and watermark of an exactly-once source.
    /// First waits until every write queued before the call is durable on
    /// every core, so a recovered offset never runs ahead of the data; then
    /// queues the commit and returns its durability future.
    pub async fn submit_commit(
        &self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<Durable, IngestError> {
        self.validate_commit(&offsets)?;
        self.flush().await?;
        let rx = self.send(0, Work::Commit { offsets, watermark }).await?;
        Ok(Durable {
            acks: vec![rx],
            next: 0,
        })
    }

    /// [`IngestHandle::submit_commit`], then waits until the commit is durable.
    pub async fn commit(
        &self,
        offsets: HashMap<String, u64>,
        watermark: Option<i64>,
    ) -> Result<(), IngestError> {
        self.submit_commit(offsets, watermark).await?.await
    }
}
