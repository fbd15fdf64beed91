//! Request framing as read off the connection, to catch requests that carry both
//! `Content-Length` and `Transfer-Encoding` (the shape of request smuggling).
//!
//! hyper frames such a request by its chunked body and drops the `Content-Length`, so the
//! router never sees both. A [`FramingTracker`] is fed every byte hyper reads (by
//! [`super::envelope_io::EnvelopeIo`]) and follows HTTP/1.1 framing as hyper does: a head
//! (parsed with `httparse`), then its body by `Content-Length`, chunked (size lines with
//! extensions, data, the last chunk, trailers) or none, then the next head (keep-alive,
//! pipelining). A head with both headers sets the connection's [`ConnectionFlags`] for good;
//! `serve_http` hands every request that handle and refuses it with 400 once set
//! ([`super::refuse_ambiguous_framing`]). Only a head or a chunk-size line is ever kept, at most
//! hyper's own head limit; bodies are counted, never stored. HTTP/2, an oversized head or
//! anything that does not parse stops the tracking: hyper refuses those itself.
//!
//! Key types: [`FramingTracker`], [`ConnectionFlags`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Most bytes of a head (or a chunk-size line) kept: hyper's default read buffer limit
/// (408 KiB), beyond which hyper refuses the head itself.
const MAX_HEAD: usize = 8192 + 4096 * 100;
/// Most header fields in a head, as hyper.
const MAX_HEADERS: usize = 100;
/// How an HTTP/2 connection starts.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// What is known of a connection's requests; cheap to clone, shared with its tracker.
#[derive(Debug, Clone, Default)]
pub struct ConnectionFlags {
    smuggling_shape: Arc<AtomicBool>,
}

impl ConnectionFlags {
    /// Whether a request head on this connection carried both `Content-Length` and
    /// `Transfer-Encoding`; once set it stays set.
    pub fn smuggling_shape_seen(&self) -> bool {
        self.smuggling_shape.load(Ordering::Acquire)
    }
}

/// Where in the byte stream the tracker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum State {
    /// In a head.
    #[default]
    Head,
    /// In a `Content-Length` body, this many bytes left.
    Body(u64),
    /// In a chunk-size line (kept in the buffer).
    ChunkSize,
    /// In a chunk's data, this many bytes left.
    ChunkData(u64),
    /// At the CRLF after a chunk's data (true once the CR is in).
    ChunkEnd(bool),
    /// After the last chunk: trailer lines up to the blank one, as hyper reads them: 0 at a
    /// line's start, 1 after a CR there, 2 within a line, 3 after a CR within one.
    Trailers(u8),
    /// Not tracking any more.
    Off,
}

/// Follows HTTP/1.1 request framing over the bytes read from one connection, in order.
#[derive(Debug, Default)]
pub struct FramingTracker {
    state: State,
    /// How much of the head's end (`\n\n` or `\n\r\n`) was seen: 1 after `\n`, 2 after `\n\r`.
    eoh: u8,
    /// The head (or chunk-size line) read so far.
    buf: Vec<u8>,
    /// Whether a head was parsed already (the HTTP/2 preface can only come first).
    past_first_head: bool,
    flags: ConnectionFlags,
}

impl FramingTracker {
    /// The connection's flags, as this tracker sets them.
    pub fn flags(&self) -> ConnectionFlags {
        self.flags.clone()
    }

    /// Whether the tracker still follows the stream (it stops for good on HTTP/2, an
    /// oversized head or anything it cannot parse).
    pub fn is_tracking(&self) -> bool {
        self.state != State::Off
    }

    /// Takes in the next bytes read from the connection.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.state != State::Off {
            let (used, next) = match self.state {
                State::Head => self.head(data),
                State::ChunkSize => self.chunk_size(data),
                State::Body(left) | State::ChunkData(left) => {
                    let used = usize::try_from(left).unwrap_or(usize::MAX).min(data.len());
                    let left = left - used as u64;
                    let next = match self.state {
                        State::Body(_) if left == 0 => State::Head,
                        State::Body(_) => State::Body(left),
                        _ if left == 0 => State::ChunkEnd(false),
                        _ => State::ChunkData(left),
                    };
                    (used, next)
                }
                State::ChunkEnd(cr) => match (cr, data[0]) {
                    (false, b'\r') => (1, State::ChunkEnd(true)),
                    (true, b'\n') => (1, State::ChunkSize),
                    _ => (1, State::Off),
                },
                State::Trailers(at) => match (at, data[0]) {
                    (0 | 2, b'\r') => (1, State::Trailers(at + 1)),
                    (0 | 2, _) => (1, State::Trailers(2)),
                    (1, b'\n') => (1, State::Head),
                    (3, b'\n') => (1, State::Trailers(0)),
                    _ => (1, State::Off),
                },
                State::Off => break,
            };
            self.state = next;
            data = &data[used..];
        }
        if self.state == State::Off {
            self.buf = Vec::new();
        }
    }

    /// Keeps `bytes` of a head or chunk-size line; false (tracking stops) beyond the limit.
    fn keep(&mut self, bytes: &[u8]) -> bool {
        let fits = self.buf.len() + bytes.len() <= MAX_HEAD;
        if fits {
            self.buf.extend_from_slice(bytes);
        }
        fits
    }

    /// Once a head or line is used: empties the buffer, and gives back what a large one took.
    fn clear(&mut self) {
        self.buf.clear();
        self.buf.shrink_to(8192);
    }

    /// Reads head bytes up to the head's end, where it parses it: bytes used, next state.
    fn head(&mut self, data: &[u8]) -> (usize, State) {
        // Empty lines before a request line are skipped (as httparse does).
        let skip = match self.buf.is_empty() {
            true => data
                .iter()
                .take_while(|b| matches!(b, b'\r' | b'\n'))
                .count(),
            false => 0,
        };
        let mut end = None;
        for (i, &b) in data[skip..].iter().enumerate() {
            self.eoh = match (self.eoh, b) {
                (1 | 2, b'\n') => {
                    end = Some(i + 1);
                    break;
                }
                (_, b'\n') => 1,
                (1, b'\r') => 2,
                _ => 0,
            };
        }
        let take = end.unwrap_or(data.len() - skip);
        if !self.keep(&data[skip..skip + take]) {
            return (data.len(), State::Off);
        }
        if end.is_none() {
            return (data.len(), State::Head);
        }
        let next = self.parse_head();
        (self.eoh, self.past_first_head) = (0, true);
        self.clear();
        (skip + take, next)
    }

    /// The state after the complete head in the buffer; records a head with both headers.
    fn parse_head(&self) -> State {
        if !self.past_first_head && self.buf.starts_with(H2_PREFACE) {
            return State::Off;
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.buf) {
            Ok(httparse::Status::Complete(n)) if n == self.buf.len() => {}
            _ => return State::Off,
        }
        let (mut length, mut bad_length, mut saw_length) = (None, false, false);
        let mut chunked = None;
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                // As hyper: chunked must be the last coding of the last such field.
                let last = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.rsplit(',').next());
                chunked = Some(last.is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked")));
            } else if h.name.eq_ignore_ascii_case("content-length") {
                saw_length = true;
                match (decimal(h.value), length) {
                    (Some(n), None) => length = Some(n),
                    (Some(n), Some(m)) if n == m => {}
                    _ => bad_length = true,
                }
            }
        }
        if saw_length && chunked.is_some() {
            self.flags.smuggling_shape.store(true, Ordering::Release);
        }
        match (chunked, length) {
            (Some(true), _) if req.version == Some(1) => State::ChunkSize,
            (Some(_), _) => State::Off,
            _ if bad_length => State::Off,
            (None, Some(n)) if n > 0 => State::Body(n),
            (None, _) => State::Head,
        }
    }

    /// Reads a chunk-size line up to its LF, where it parses it: bytes used, next state.
    fn chunk_size(&mut self, data: &[u8]) -> (usize, State) {
        let lf = data.iter().position(|&b| b == b'\n');
        let take = lf.map_or(data.len(), |i| i + 1);
        if !self.keep(&data[..take]) {
            return (data.len(), State::Off);
        }
        if lf.is_none() {
            return (take, State::ChunkSize);
        }
        // hyper wants a digit first and a CRLF end, which httparse alone does not check.
        let digit_first = self.buf.first().is_some_and(u8::is_ascii_hexdigit);
        let next = match httparse::parse_chunk_size(&self.buf) {
            Ok(httparse::Status::Complete((n, 0))) if digit_first && n == self.buf.len() => {
                State::Trailers(0)
            }
            Ok(httparse::Status::Complete((n, size))) if digit_first && n == self.buf.len() => {
                State::ChunkData(size)
            }
            _ => State::Off,
        };
        self.clear();
        (take, next)
    }
}

/// A `Content-Length` value: decimal digits only, as hyper reads it.
fn decimal(value: &[u8]) -> Option<u64> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fed(chunks: &[&[u8]]) -> FramingTracker {
        let mut t = FramingTracker::default();
        for c in chunks {
            t.feed(c);
        }
        t
    }

    fn seen(t: &FramingTracker) -> bool {
        t.flags().smuggling_shape_seen()
    }

    const BOTH: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\ncontent-length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const BOTH_REVERSED: &[u8] = b"POST /a HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nHost: x\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    const CHUNKED: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;name=\"v\"\r\nhello\r\n3 ; x\r\nabc\r\n0\r\nX-Sum: 1\r\nX-More: 2\r\n\r\n";
    const LENGTH: &[u8] = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello";

    #[test]
    fn both_headers_in_either_order_are_seen_and_one_alone_is_not() {
        for req in [BOTH, BOTH_REVERSED] {
            assert!(seen(&fed(&[req])), "{}", String::from_utf8_lossy(req));
        }
        let t = fed(&[CHUNKED, LENGTH, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"]);
        assert!(!seen(&t));
        assert_eq!(t.state, State::Head);
    }

    #[test]
    fn a_pipelined_request_after_a_chunked_body_is_followed() {
        let mut t = fed(&[CHUNKED]);
        assert!(!seen(&t) && t.is_tracking());
        t.feed(BOTH);
        assert!(seen(&t));
        // All in one read, too.
        assert!(seen(&fed(&[&[CHUNKED, LENGTH, BOTH].concat()])));
    }

    #[test]
    fn a_head_split_into_single_bytes_is_read() {
        let all = [LENGTH, BOTH].concat();
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        let t = fed(&bytes[..LENGTH.len() + 40]);
        assert!(!seen(&t));
        let t = fed(&bytes);
        assert!(seen(&t));
    }

    #[test]
    fn http2_stops_the_tracking() {
        let t = fed(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", BOTH]);
        assert!(!t.is_tracking());
        assert!(!seen(&t));
    }

    #[test]
    fn bodies_are_skipped() {
        let body = b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let t = fed(&[head.as_bytes(), body, LENGTH]);
        assert!(!seen(&t));
        assert_eq!(t.state, State::Head);
    }

    #[test]
    fn an_oversized_head_stops_the_tracking_without_growing() {
        let mut t = fed(&[b"GET / HTTP/1.1\r\nX-Big: "]);
        for _ in 0..1000 {
            t.feed(&[b'a'; 1024]);
            assert!(t.buf.len() <= MAX_HEAD);
        }
        assert!(!t.is_tracking());
        assert_eq!(t.buf.capacity(), 0);
        t.feed(BOTH);
        assert!(!seen(&t));
    }

    #[test]
    fn unparsable_input_stops_the_tracking() {
        for junk in [
            &b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY",
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        ] {
            assert!(
                !fed(&[junk]).is_tracking(),
                "{}",
                String::from_utf8_lossy(junk)
            );
        }
    }

    /// Writes `raw` to the server at `addr` and reads the answer until it closes.
    async fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw).await.unwrap();
        let mut out = Vec::new();
        let read = s.read_to_end(&mut out);
        tokio::time::timeout(std::time::Duration::from_secs(5), read)
            .await
            .expect("the server closes the connection")
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn serve_http_refuses_both_headers_and_serves_chunked_bodies() {
        let app =
            axum::Router::new().route("/a", axum::routing::post(|body: String| async { body }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            let (deadline, limits) = (std::time::Duration::from_secs(1), Default::default());
            crate::daemon::serve_http(listener, app, &stop, deadline, limits, None).await
        });

        let out = exchange(addr, BOTH).await;
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");
        let v: serde_json::Value =
            serde_json::from_str(out.split_once("\r\n\r\n").unwrap().1).unwrap();
        assert_eq!(v["success"], false);
        assert_eq!(
            v["error"],
            "a request may not carry both Content-Length and Transfer-Encoding"
        );

        let chunked = String::from_utf8_lossy(CHUNKED)
            .replace("Host: x\r\n", "Host: x\r\nConnection: close\r\n");
        let out = exchange(addr, chunked.as_bytes()).await;
        assert!(out.starts_with("HTTP/1.1 200 "), "{out}");
        assert!(out.ends_with("\r\n\r\nhelloabc"), "{out}");

        shutdown.cancel();
        server.await.unwrap().unwrap();
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any bytes, in any cuts, on a connection: no panic, memory bounded by the head limit,
        /// and a flag only where a head had both framing headers.
        #[test]
        fn arbitrary_connection_bytes_are_tracked_safely(
            prefix in prop_oneof![
                Just(b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n".to_vec()),
                Just(b"GET / HTTP/1.1\r\ncontent-length: 3\r\n\r\nabc".to_vec()),
                Just(Vec::new()),
            ],
            noise in proptest::collection::vec(any::<u8>(), 0..4096),
            cuts in proptest::collection::vec(1usize..512, 1..16),
        ) {
            let mut tracker = FramingTracker::default();
            let data = [prefix, noise].concat();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= data.len() {
                    break;
                }
                let end = (at + cut).min(data.len());
                tracker.feed(&data[at..end]);
                at = end;
            }
            let lower = String::from_utf8_lossy(&data).to_ascii_lowercase();
            if tracker.flags().smuggling_shape_seen() {
                prop_assert!(lower.contains("content-length") && lower.contains("transfer-encoding"));
            }
        }
    }
}
