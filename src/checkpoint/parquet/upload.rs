//! Upload: the parts of one object on their way to the object store. The
//! encoder writes into a [`PartWriter`] (synchronous, fixed-size parts);
//! [`Upload`] sends the full parts as a single PUT or a multipart upload
//! and hands their buffers back for reuse.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{MultipartUpload, PutOptions, PutPayloadMut};
use parquet::errors::ParquetError;
use tokio::task::JoinSet;

use super::MAX_PARTS_IN_FLIGHT;
use crate::store::Store;

/// The bytes of one object on their way to the store: a single PUT if the
/// whole file fits in one part, otherwise a multipart upload of parts of
/// exactly `part_bytes` (the last one shorter). Counts the bytes and their
/// crc32c: each part's crc32c is computed by its upload task, off the
/// encoder's thread, and the parts' are combined in order at the end.
///
/// The first store error is kept (parquet's writer only sees a message) so
/// the sink reports it as [`CheckpointError::Store`].
pub(super) struct Upload {
    store: Store,
    /// The object's path under the table root.
    relative: String,
    path: Path,
    part_bytes: usize,
    buffer: PutPayloadMut,
    multipart: Option<Box<dyn MultipartUpload>>,
    /// Uploads in flight; each returns its part number, crc32c and length.
    parts: JoinSet<object_store::Result<(usize, u32, usize)>>,
    /// Per part sent (by number): its crc32c and length, once uploaded.
    part_crcs: Vec<Option<(u32, usize)>>,
    /// A second handle on each whole part sent: once the store has dropped
    /// its own, the part's buffer is unique again and goes back to the
    /// [`PartWriter`] ([`Upload::returned_buffers`]).
    sent: Vec<Bytes>,
    pub(super) size: u64,
    pub(super) crc: u32,
    pub(super) failure: Option<(&'static str, object_store::Error)>,
}

impl Upload {
    pub(super) fn new(store: Store, relative: String, part_bytes: usize) -> Self {
        Self {
            path: store.path(&relative),
            store,
            relative,
            part_bytes,
            buffer: PutPayloadMut::new(),
            multipart: None,
            parts: JoinSet::new(),
            part_crcs: Vec::new(),
            sent: Vec::new(),
            size: 0,
            crc: 0,
            failure: None,
        }
    }

    /// Keeps the first store error; parquet gets a description.
    fn fail(&mut self, op: &'static str, source: object_store::Error) -> ParquetError {
        let message = format!("{op} of {} failed: {source}", self.path);
        if self.failure.is_none() {
            self.failure = Some((op, source));
        }
        ParquetError::General(message)
    }

    pub(super) async fn append(&mut self, mut bytes: Bytes) -> Result<(), ParquetError> {
        self.size += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = self.part_bytes - self.buffer.content_length();
            if bytes.len() < room {
                self.buffer.push(bytes);
                break;
            }
            let piece = bytes.split_to(room);
            if piece.len() == self.part_bytes {
                self.sent.push(piece.clone());
            }
            self.buffer.push(piece);
            let part = std::mem::take(&mut self.buffer);
            self.send_part(part).await?;
        }
        Ok(())
    }

    /// Starts the multipart upload if needed, waits until a slot among
    /// [`MAX_PARTS_IN_FLIGHT`] is free, and starts uploading `part`.
    async fn send_part(&mut self, part: PutPayloadMut) -> Result<(), ParquetError> {
        if self.multipart.is_none() {
            match self.store.put_multipart(&self.relative).await {
                Ok(upload) => self.multipart = Some(upload),
                Err(e) => return Err(self.fail("start multipart upload", e)),
            }
        }
        self.wait_for_parts(MAX_PARTS_IN_FLIGHT - 1).await?;
        if let Some(upload) = self.multipart.as_mut() {
            let payload = part.freeze();
            let bytes = payload.clone();
            let put = upload.put_part(payload);
            let number = self.part_crcs.len();
            self.part_crcs.push(None);
            self.parts.spawn(async move {
                let crc = bytes.iter().fold(0, |crc, b| crc32c::crc32c_append(crc, b));
                put.await.map(|()| (number, crc, bytes.content_length()))
            });
        }
        Ok(())
    }

    /// Waits until at most `in_flight` parts are still uploading.
    async fn wait_for_parts(&mut self, in_flight: usize) -> Result<(), ParquetError> {
        while self.parts.len() > in_flight {
            match self.parts.join_next().await {
                Some(Ok(Ok((number, crc, len)))) => {
                    if let Some(slot) = self.part_crcs.get_mut(number) {
                        *slot = Some((crc, len));
                    }
                }
                None => {}
                Some(Ok(Err(e))) => return Err(self.fail("upload part", e)),
                Some(Err(join)) => {
                    let e = object_store::Error::Generic {
                        store: "walhouse upload",
                        source: Box::new(join),
                    };
                    return Err(self.fail("upload part", e));
                }
            }
        }
        Ok(())
    }

    /// The buffers of sent parts the store no longer holds, emptied, with
    /// their capacity.
    pub(super) fn returned_buffers(&mut self) -> Vec<Vec<u8>> {
        let mut returned = Vec::new();
        for part in std::mem::take(&mut self.sent) {
            match part.try_into_mut() {
                Ok(unique) => {
                    let mut buffer = Vec::from(unique);
                    buffer.clear();
                    returned.push(buffer);
                }
                Err(shared) => self.sent.push(shared),
            }
        }
        returned
    }

    /// Uploads what is buffered and completes the object.
    pub(super) async fn finish_upload(&mut self) -> Result<(), ParquetError> {
        let rest = std::mem::take(&mut self.buffer);
        if self.multipart.is_none() {
            let payload = rest.freeze();
            self.crc = payload
                .iter()
                .fold(0, |crc, b| crc32c::crc32c_append(crc, b));
            return match self
                .store
                .object_store()
                .put_opts(&self.path, payload, PutOptions::default())
                .await
            {
                Ok(_) => Ok(()),
                Err(e) => Err(self.fail("put", e)),
            };
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        self.wait_for_parts(0).await?;
        let mut crc = 0;
        for (number, part) in self.part_crcs.iter().enumerate() {
            let Some((part_crc, len)) = *part else {
                return Err(ParquetError::General(format!(
                    "part {number} of {} has no checksum",
                    self.path
                )));
            };
            crc = if number == 0 {
                part_crc
            } else {
                crc32c::crc32c_combine(crc, part_crc, len)
            };
        }
        self.crc = crc;
        let Some(upload) = self.multipart.as_mut() else {
            return Ok(());
        };
        match upload.complete().await {
            Ok(_) => {
                self.multipart = None;
                Ok(())
            }
            Err(e) => Err(self.fail("complete multipart upload", e)),
        }
    }

    /// Cancels the parts in flight and aborts the multipart upload, so no
    /// object and (on stores that keep them) no parts are left. Best effort.
    pub(super) async fn abort(&mut self) {
        self.parts.shutdown().await;
        self.part_crcs.clear();
        self.buffer = PutPayloadMut::new();
        self.sent.clear();
        if let Some(mut upload) = self.multipart.take() {
            if let Err(e) = upload.abort().await {
                tracing::warn!(path = %self.path, error = %e, "cannot abort multipart upload");
            }
        }
    }
}

impl Drop for Upload {
    // A sink dropped mid-upload (its future cancelled) aborts its multipart
    // upload in the background rather than leaving parts behind.
    fn drop(&mut self) {
        if let Some(mut upload) = self.multipart.take() {
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = upload.abort().await;
                });
            }
        }
    }
}

/// The synchronous side of an upload: the Parquet encoder writes into it,
/// and it cuts the bytes into parts of exactly `part_bytes`, each allocated
/// at its full size (no buffer growing by reallocation, no copy of a whole
/// row group). The async side takes the full parts after each write, and
/// gives back the buffers of parts the store is done with, so a file reuses
/// a few part buffers instead of allocating (and page-faulting) a fresh one
/// per part.
pub(super) struct PartWriter {
    /// Size of each part.
    part_bytes: usize,
    /// The part being filled.
    pub(super) current: Vec<u8>,
    /// Full parts not yet handed to the upload.
    pub(super) full: Vec<Bytes>,
    /// Empty buffers of `part_bytes` capacity, to fill next (at most
    /// [`MAX_PARTS_IN_FLIGHT`] + 1: as many as can be in flight).
    spare: Vec<Vec<u8>>,
    /// Parts filled in a recycled buffer.
    pub(super) reused: u64,
}

impl PartWriter {
    pub(super) fn new(part_bytes: usize) -> Self {
        Self {
            part_bytes,
            current: Vec::new(),
            full: Vec::new(),
            spare: Vec::new(),
            reused: 0,
        }
    }

    /// Keeps `buffers` (empty) for the next parts.
    pub(super) fn recycle(&mut self, buffers: Vec<Vec<u8>>) {
        for buffer in buffers {
            if buffer.capacity() >= self.part_bytes && self.spare.len() <= MAX_PARTS_IN_FLIGHT {
                self.spare.push(buffer);
            }
        }
    }
}

impl std::io::Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while !rest.is_empty() {
            if self.current.capacity() == 0 {
                self.current = match self.spare.pop() {
                    Some(buffer) => {
                        self.reused += 1;
                        buffer
                    }
                    None => Vec::with_capacity(self.part_bytes),
                };
            }
            let n = (self.part_bytes - self.current.len()).min(rest.len());
            self.current.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.current.len() == self.part_bytes {
                self.full
                    .push(Bytes::from(std::mem::take(&mut self.current)));
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
