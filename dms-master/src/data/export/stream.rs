//! Running an export: [`start`] turns an [`ExportPlan`] into an [`ExportStream`] of byte
//! chunks, the one producer behind both transports (the REST body, the gRPC stream).
//!
//! Two workers and two bounded channels, so memory stays bounded and a slow reader of the
//! stream slows everything down instead of piling data up:
//!
//! ```text
//!  reader task ──pages (≤ PAGES_IN_FLIGHT)──▶ encoder (blocking) ──chunks (≤ CHUNKS_IN_FLIGHT)──▶ transport
//!  store.read_paged                           Encoder → ChunkWriter
//! ```
//!
//! Reading and encoding run in parallel. When the stream is dropped (the client went away),
//! the encoder's next send fails and both workers stop.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use dms_common::store::{SharedStore, StoreError};
use dms_common::{Bar, SeriesKey, TimeRange};
use futures::{Stream, TryStreamExt};
use tokio::sync::mpsc;

use super::{CHUNK_BYTES, EncoderOptions, ExportError, ExportFormat, ExportPlan, PAGE_BARS};

/// Pages read ahead of the encoder.
const PAGES_IN_FLIGHT: usize = 4;
/// Chunks encoded ahead of the transport.
const CHUNKS_IN_FLIGHT: usize = 8;

/// A piece of the file.
#[derive(Debug, Clone)]
pub struct Chunk {
    pub data: Bytes,
    /// Bars encoded so far (for progress).
    pub bars: u64,
}

/// What an export stream yields: the file's bytes in order, then `Done` once it is complete.
#[derive(Debug, Clone)]
pub enum ExportEvent {
    Data(Chunk),
    /// The file is complete.
    Done {
        bars: u64,
        bytes: u64,
    },
}

/// A running export. Ends with [`ExportEvent::Done`], or an error; a stream that ends without
/// either was cut short ([`ExportError::Incomplete`]).
#[derive(Debug)]
pub struct ExportStream {
    events: mpsc::Receiver<Result<ExportEvent, ExportError>>,
    finished: bool,
}

impl ExportStream {
    /// The next event; `None` after `Done` or an error.
    pub async fn next(&mut self) -> Option<Result<ExportEvent, ExportError>> {
        if self.finished {
            return None;
        }
        let event = self
            .events
            .recv()
            .await
            .unwrap_or(Err(ExportError::Incomplete));
        if !matches!(event, Ok(ExportEvent::Data(_))) {
            self.finished = true;
        }
        Some(event)
    }

    /// The file's bytes; the stream fails when the export does, so a transport can cut the
    /// answer off rather than end it as if it were complete.
    pub fn into_bytes(self) -> impl Stream<Item = Result<Bytes, ExportError>> + Send + 'static {
        futures::stream::unfold(self, |mut s| async move {
            match s.next().await? {
                Ok(ExportEvent::Data(c)) => Some((Ok(c.data), s)),
                Ok(ExportEvent::Done { .. }) => None,
                Err(e) => Some((Err(e), s)),
            }
        })
    }
}

/// Starts exporting `plan` from `store`. Needs a Tokio runtime.
pub fn start(store: SharedStore, plan: &ExportPlan) -> ExportStream {
    let (page_tx, page_rx) = mpsc::channel(PAGES_IN_FLIGHT);
    let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
    let keys: Arc<[SeriesKey]> = plan.series.iter().map(|s| s.key.clone()).collect();
    tokio::spawn(read_pages(store, keys.clone(), plan.request.range, page_tx));
    let job = EncodeJob {
        format: plan.request.format,
        options: plan.encoder_options(),
        keys,
        file_name: plan.file_name.clone(),
    };
    tokio::task::spawn_blocking(move || job.run(page_rx, tx));
    ExportStream {
        events: rx,
        finished: false,
    }
}

/// What the reader hands the encoder.
enum Page {
    /// Bars of the series at this index of the plan.
    Bars(usize, Vec<Bar>),
    /// Every series was read.
    End,
}

/// Reads every series in `[range)` page by page, in order, until the encoder stops taking them.
async fn read_pages(
    store: SharedStore,
    keys: Arc<[SeriesKey]>,
    range: TimeRange,
    tx: mpsc::Sender<Result<Page, StoreError>>,
) {
    for (index, key) in keys.iter().enumerate() {
        let mut pages = store.read_paged(key, range, PAGE_BARS);
        loop {
            let page = tokio::select! {
                page = pages.try_next() => page,
                _ = tx.closed() => return,
            };
            let sent = match page {
                Ok(Some(bars)) => tx.send(Ok(Page::Bars(index, bars))).await,
                Ok(None) => break,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }
    let _ = tx.send(Ok(Page::End)).await;
}

/// The encoder's side of an export.
struct EncodeJob {
    format: ExportFormat,
    options: EncoderOptions,
    keys: Arc<[SeriesKey]>,
    file_name: String,
}

impl EncodeJob {
    fn run(
        self,
        pages: mpsc::Receiver<Result<Page, StoreError>>,
        tx: mpsc::Sender<Result<ExportEvent, ExportError>>,
    ) {
        let started = Instant::now();
        let progress = Progress::default();
        let events = tx.clone();
        let writer = ChunkWriter::new(tx, progress.clone());
        match self.encode(pages, writer, &progress, &events) {
            Ok(()) => {
                let (bars, bytes) = (progress.bars(), progress.bytes());
                tracing::info!(
                    file = %self.file_name,
                    bars,
                    bytes,
                    secs = started.elapsed().as_secs_f64(),
                    "export finished"
                );
                let _ = events.blocking_send(Ok(ExportEvent::Done { bars, bytes }));
            }
            Err(e) => {
                tracing::warn!(file = %self.file_name, bars = progress.bars(), error = %e, "export failed");
                let _ = events.blocking_send(Err(e));
            }
        }
    }

    fn encode(
        &self,
        mut pages: mpsc::Receiver<Result<Page, StoreError>>,
        writer: ChunkWriter,
        progress: &Progress,
        tx: &mpsc::Sender<Result<ExportEvent, ExportError>>,
    ) -> Result<(), ExportError> {
        let mut encoder = super::encoder(self.format, self.options, writer)?;
        loop {
            // Formats that write at the end (xlsx) send nothing for a while: notice a client
            // that went away between pages.
            if tx.is_closed() {
                return Err(gone().into());
            }
            match pages.blocking_recv() {
                Some(Ok(Page::Bars(index, bars))) => {
                    encoder.write(&self.keys[index], &bars)?;
                    progress.add_bars(bars.len() as u64);
                }
                Some(Ok(Page::End)) => break,
                Some(Err(e)) => return Err(e.into()),
                None => return Err(ExportError::Incomplete),
            }
        }
        encoder.finish()
    }
}

fn gone() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "the client stopped reading the export",
    )
}

/// Bars encoded and bytes sent, shared by the encoder and its writer.
#[derive(Debug, Clone, Default)]
struct Progress {
    bars: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Progress {
    fn add_bars(&self, n: u64) {
        self.bars.fetch_add(n, Ordering::Relaxed);
    }

    fn bars(&self) -> u64 {
        self.bars.load(Ordering::Relaxed)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }
}

/// A `Write` that hands what is written to the transport in chunks of about [`CHUNK_BYTES`],
/// blocking while the transport is [`CHUNKS_IN_FLIGHT`] chunks behind. `flush` sends what is
/// buffered. Use it from a blocking thread, never from async code.
#[derive(Debug)]
pub struct ChunkWriter {
    tx: mpsc::Sender<Result<ExportEvent, ExportError>>,
    buf: Vec<u8>,
    progress: Progress,
}

impl ChunkWriter {
    fn new(tx: mpsc::Sender<Result<ExportEvent, ExportError>>, progress: Progress) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
            progress,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(CHUNK_BYTES),
        ));
        self.progress
            .bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let chunk = Chunk {
            data,
            bars: self.progress.bars(),
        };
        self.tx
            .blocking_send(Ok(ExportEvent::Data(chunk)))
            .map_err(|_| gone())
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK_BYTES {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::export::test_bars::goog;
    use crate::data::export::{ExportQuery, plan};
    use dms_common::store::sqlite::SqliteStore;
    use dms_common::{Interval, SeriesBars, Symbol, Timestamp};

    async fn store_with(series: &[(&str, Interval, Vec<Bar>)]) -> (tempfile::TempDir, SharedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store: SharedStore = Arc::new(SqliteStore::open(dir.path().join("bars.db")).unwrap());
        let batch: Vec<SeriesBars> = series
            .iter()
            .map(|(s, i, bars)| {
                SeriesBars::new(SeriesKey::new(Symbol::new(s).unwrap(), *i), bars.clone())
            })
            .collect();
        store.upsert(&batch).await.unwrap();
        (dir, store)
    }

    async fn export(store: &SharedStore, q: &str) -> (Vec<u8>, u64, u64) {
        let query: ExportQuery = serde_json::from_str(q).unwrap();
        let plan = plan(&**store, query.check().unwrap()).await.unwrap();
        let mut stream = start(store.clone(), &plan);
        let mut bytes = Vec::new();
        loop {
            match stream.next().await.expect("ends with Done") {
                Ok(ExportEvent::Data(c)) => bytes.extend_from_slice(&c.data),
                Ok(ExportEvent::Done { bars, bytes: n }) => return (bytes, bars, n),
                Err(e) => panic!("{e}"),
            }
        }
    }

    /// `n` hourly bars from `start`.
    fn hourly(n: i64) -> Vec<Bar> {
        (0..n)
            .map(|i| {
                Bar::ohlcv(
                    Timestamp(1_500_000_000 / 3600 * 3600 + i * 3600),
                    1.0,
                    2.0,
                    0.5,
                    1.5,
                    i as f64,
                )
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_page_of_every_series_reaches_the_file_in_order() {
        // More bars than a page, so a series spans several pages.
        let long = hourly(PAGE_BARS as i64 * 2 + 17);
        let (_dir, store) = store_with(&[
            ("GOOG", Interval::D1, goog()),
            ("EURUSD=X", Interval::H1, long.clone()),
        ])
        .await;
        let (bytes, bars, n) = export(&store, r#"{"format": "csv"}"#).await;
        assert_eq!(bars, long.len() as u64 + 3);
        assert_eq!(n, bytes.len() as u64);
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len() as u64, 1 + bars);
        // Symbol order: EURUSD=X before GOOG; each series in ts order.
        assert!(
            lines[1].starts_with("EURUSD=X,1h,2017-07-14T02:00:00Z,"),
            "{}",
            lines[1]
        );
        assert!(lines[long.len()].ends_with(&format!(",{},,,", long.len() - 1)));
        assert!(lines[long.len() + 1].starts_with("GOOG,1d,2004-08-19T00:00:00Z,100,104.06"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_range_and_a_symbol_select_what_is_exported() {
        let (_dir, store) = store_with(&[
            ("GOOG", Interval::D1, goog()),
            ("EURUSD=X", Interval::H1, hourly(50)),
        ])
        .await;
        let (bytes, bars, _) = export(
            &store,
            r#"{"format": "jsonl", "symbols": "GOOG", "start": "2004-08-20", "end": "2004-08-23"}"#,
        )
        .await;
        assert_eq!(bars, 1);
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["ts"], "2004-08-20T00:00:00Z");
        // Nothing in the range: a valid empty file, not an error.
        let (bytes, bars, _) = export(
            &store,
            r#"{"format": "csv", "start": "2030-01-01", "end": "2030-02-01"}"#,
        )
        .await;
        assert_eq!(bars, 0);
        assert_eq!(
            bytes,
            b"symbol,interval,ts,open,high,low,close,volume,adj_close,turnover,open_interest\n"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unknown_symbols_are_refused_by_name() {
        let (_dir, store) = store_with(&[("GOOG", Interval::D1, goog())]).await;
        for (q, want) in [
            (
                r#"{"format": "csv", "symbols": "GOOG,MSFT"}"#,
                "parameter `symbols`: no series of \"MSFT\" is stored",
            ),
            (
                r#"{"format": "csv", "symbols": "GOOG", "interval": "1h"}"#,
                "parameter `symbols`: no 1h series of \"GOOG\" is stored",
            ),
        ] {
            let query: ExportQuery = serde_json::from_str(q).unwrap();
            let e = plan(&*store, query.check().unwrap()).await.unwrap_err();
            assert_eq!(e.to_string(), want);
        }
    }

    #[test]
    fn the_encoder_stops_when_the_transport_is_gone() {
        for format in [ExportFormat::Csv, ExportFormat::Xlsx, ExportFormat::Parquet] {
            let (page_tx, page_rx) = mpsc::channel(PAGES_IN_FLIGHT);
            let (tx, rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
            let job = EncodeJob {
                format,
                options: EncoderOptions::default(),
                keys: vec![SeriesKey::new(Symbol::new("GOOG").unwrap(), Interval::D1)].into(),
                file_name: "dms-GOOG-1d.csv".into(),
            };
            let worker = std::thread::spawn(move || job.run(page_rx, tx));
            page_tx.blocking_send(Ok(Page::Bars(0, goog()))).unwrap();
            drop(rx);
            // The next page finds nobody reading: the encoder ends and takes no more.
            let _ = page_tx.blocking_send(Ok(Page::Bars(0, goog())));
            worker.join().unwrap();
            assert!(page_tx.is_closed(), "{format:?}");
        }
    }

    #[test]
    fn the_writer_sends_chunks_and_fails_once_nobody_reads() {
        let (tx, mut rx) = mpsc::channel(CHUNKS_IN_FLIGHT);
        let mut w = ChunkWriter::new(tx, Progress::default());
        w.write_all(&vec![7u8; CHUNK_BYTES + 10]).unwrap();
        w.write_all(b"tail").unwrap();
        w.flush().unwrap();
        let mut sizes = Vec::new();
        while let Ok(Ok(ExportEvent::Data(c))) = rx.try_recv() {
            sizes.push(c.data.len());
        }
        assert_eq!(sizes, [CHUNK_BYTES + 10, 4]);
        drop(rx);
        let e = w.write_all(&vec![0u8; CHUNK_BYTES]).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::BrokenPipe);
    }
}
