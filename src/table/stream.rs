//! Streams in and out of a table: [`TableStream`] for [`Table::with_stream`], and chunked,
//! back-pressured ingest for [`Table::put_stream`].

use std::cell::Cell;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::{SinkExt, Stream, StreamExt};

use super::{Entries, Guard, KeyValue, Table};
use crate::backends::RawBatch;
use crate::error::{Result, StorageError};
use crate::formats::{KeyFormat, ValueFormat};
use crate::storage::Storage;

/// The stream given to the closure of [`Table::with_stream`]: every entry of one snapshot,
/// as `(key, guard)`. It never waits: items are ready as soon as they are polled.
pub struct TableStream<'s, K, V, KF, VF> {
    entries: Option<Entries<'s, K, V, KF, VF>>,
    error: &'s Cell<Option<StorageError>>,
}

impl<'s, K, V, KF, VF> TableStream<'s, K, V, KF, VF> {
    pub(crate) fn new(entries: Entries<'s, K, V, KF, VF>, error: &'s Cell<Option<StorageError>>) -> Self {
        Self { entries: Some(entries), error }
    }
}

impl<'s, K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> Stream for TableStream<'s, K, V, KF, VF> {
    type Item = (K, Guard<'s, V, VF>);

    fn poll_next(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let Some(entries) = this.entries.as_mut() else { return Poll::Ready(None) };
        match entries.next() {
            Some(Ok(item)) => Poll::Ready(Some(item)),
            Some(Err(e)) => {
                // The stream's items are not `Result`s: end here and let `with_stream`
                // return the error.
                this.error.set(Some(e));
                this.entries = None;
                Poll::Ready(None)
            }
            None => {
                this.entries = None;
                Poll::Ready(None)
            }
        }
    }
}

/// How [`Table::put_stream_with`] cuts a stream into commits.
///
/// ```
/// use typed_kv::IngestOptions;
///
/// let options = IngestOptions::default()
///     .chunk_records(50_000)
///     .chunk_bytes(16 << 20)
///     .on_progress(|p| eprintln!("{} records in {} commits", p.records, p.chunks));
/// ```
pub struct IngestOptions {
    chunk_records: usize,
    chunk_bytes: usize,
    queue_depth: usize,
    on_progress: Option<Box<dyn FnMut(IngestProgress) + Send>>,
}

impl Default for IngestOptions {
    fn default() -> Self {
        Self { chunk_records: 10_000, chunk_bytes: 4 << 20, queue_depth: 2, on_progress: None }
    }
}

impl fmt::Debug for IngestOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IngestOptions")
            .field("chunk_records", &self.chunk_records)
            .field("chunk_bytes", &self.chunk_bytes)
            .field("queue_depth", &self.queue_depth)
            .field("on_progress", &self.on_progress.is_some())
            .finish()
    }
}

impl IngestOptions {
    /// A chunk is committed once it holds this many records (default 10,000; at least 1).
    pub fn chunk_records(mut self, records: usize) -> Self {
        self.chunk_records = records.max(1);
        self
    }

    /// ... or once it holds this many bytes of encoded keys and values (default 4 MiB).
    pub fn chunk_bytes(mut self, bytes: usize) -> Self {
        self.chunk_bytes = bytes;
        self
    }

    /// How many full chunks may wait for the writer before the stream is no longer polled
    /// (default 2; at least 1).
    pub fn queue_depth(mut self, chunks: usize) -> Self {
        self.queue_depth = chunks.max(1);
        self
    }

    /// Calls `f` after every committed chunk, on the writer thread.
    pub fn on_progress(mut self, f: impl FnMut(IngestProgress) + Send + 'static) -> Self {
        self.on_progress = Some(Box::new(f));
        self
    }
}

/// Progress of an ingest: what is committed so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestProgress {
    /// Records committed.
    pub records: u64,
    /// Bytes of encoded keys and values committed.
    pub bytes: u64,
    /// Commits made.
    pub chunks: u64,
}

/// What [`Table::put_stream`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IngestReport {
    /// Records committed.
    pub records: u64,
    /// Bytes of encoded keys and values committed.
    pub bytes: u64,
    /// Commits made (each one atomic).
    pub chunks: u64,
    /// Time from the first poll to the last commit.
    pub elapsed: Duration,
}

/// Commits chunks as they arrive, off the async executor.
fn run_writer(
    storage: Storage,
    chunks: mpsc::Receiver<RawBatch>,
    mut on_progress: Option<Box<dyn FnMut(IngestProgress) + Send>>,
) -> Result<IngestProgress> {
    let mut progress = IngestProgress::default();
    for batch in futures::executor::block_on_stream(chunks) {
        storage.inner.engine.write(&batch)?;
        progress.records += batch.len() as u64;
        progress.bytes += batch.payload_bytes() as u64;
        progress.chunks += 1;
        if let Some(f) = on_progress.as_mut() {
            f(progress);
        }
    }
    Ok(progress)
}

impl<K, V, KF: KeyFormat<K>, VF: ValueFormat<V>> Table<K, V, KF, VF> {
    /// Stores every item of `stream`, committing in chunks; see [`put_stream_with`](Self::put_stream_with).
    pub async fn put_stream<S>(&self, stream: S) -> Result<IngestReport>
    where
        S: Stream,
        S::Item: KeyValue<K, V>,
    {
        self.put_stream_with(stream, IngestOptions::default()).await
    }

    /// Stores every item of `stream`: items are encoded as they come, and full chunks go to
    /// a writer thread that commits them, so the executor never waits on disk. Each chunk is
    /// one atomic commit; when the writer falls behind by `queue_depth` chunks, the stream is
    /// no longer polled (back-pressure). Works on any executor.
    ///
    /// On error, chunks committed before it stay committed.
    ///
    /// On sled, whose writers wait for every snapshot to end, calling it from a thread that
    /// holds a snapshot of the same store (e.g. inside [`with_stream`](Self::with_stream)) is
    /// [`StorageError::Busy`] at once, as [`put`](Self::put) there is: the writer would wait
    /// for the caller forever. If the stream takes such a snapshot itself, the ingest stops
    /// with `Busy` before it would wait for the writer; chunks handed to the writer before
    /// are committed once the snapshot ends.
    pub async fn put_stream_with<S>(&self, stream: S, options: IngestOptions) -> Result<IngestReport>
    where
        S: Stream,
        S::Item: KeyValue<K, V>,
    {
        let started = Instant::now();
        let engine = &self.storage().inner.engine;
        engine.may_await_writer()?;
        let IngestOptions { chunk_records, chunk_bytes, queue_depth, on_progress } = options;
        let (mut sender, receiver) = mpsc::channel::<RawBatch>(queue_depth.saturating_sub(1));
        let (done_tx, done_rx) = oneshot::channel();
        let storage = self.storage().clone();
        let table = self.name().to_owned();
        std::thread::Builder::new()
            .name(format!("typed-kv-ingest-{table}"))
            .spawn(move || {
                let _ = done_tx.send(run_writer(storage, receiver, on_progress));
            })
            .map_err(|e| StorageError::Ingest {
                table: table.clone(),
                reason: format!("cannot start the writer: {e}"),
            })?;

        let mut stream = std::pin::pin!(stream);
        let mut batch = RawBatch::default();
        let mut encode_error = None;
        while let Some(item) = stream.next().await {
            if let Err(e) = self.inner().encode_put(&mut batch, item.key(), item.value()) {
                encode_error = Some(e);
                break;
            }
            if batch.len() >= chunk_records || batch.payload_bytes() >= chunk_bytes {
                engine.may_await_writer()?;
                // A send error means the writer stopped on an error, which `done_rx` carries.
                if sender.send(std::mem::take(&mut batch)).await.is_err() {
                    break;
                }
            }
        }
        engine.may_await_writer()?;
        if encode_error.is_none() && !batch.is_empty() {
            let _ = sender.send(batch).await;
        }
        drop(sender);
        let written = done_rx.await.map_err(|_| StorageError::Ingest {
            table: table.clone(),
            reason: "the writer thread ended without a result".into(),
        })?;
        if let Some(e) = encode_error {
            return Err(e);
        }
        let progress = written?;
        Ok(IngestReport {
            records: progress.records,
            bytes: progress.bytes,
            chunks: progress.chunks,
            elapsed: started.elapsed(),
        })
    }
}
