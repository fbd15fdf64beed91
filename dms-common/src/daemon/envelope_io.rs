//! `EnvelopeIo`: gives the answers hyper writes by itself the API's JSON error envelope.
//!
//! A request that cannot be parsed (a malformed request line, a URI beyond hyper's 64 KiB, a
//! head beyond the read buffer or with too many header fields) never reaches the router:
//! hyper answers it with an empty 400, 414 or 431 and closes the connection. This wrapper
//! around the connection's stream recognizes such an answer as it is written (an HTTP/1.1
//! status line of one of those codes with `content-length: 0`, the whole head in one write)
//! and writes `{"success": false, "error": "..."}` in its place, with its content type and
//! length. Everything else passes through untouched.
//!
//! On the read side it feeds every byte read to a [`FramingTracker`], whose
//! [`ConnectionFlags`] ([`EnvelopeIo::flags`]) tell the connection's service when a request
//! head carried both `Content-Length` and `Transfer-Encoding`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::framing::{ConnectionFlags, FramingTracker};

/// A connection stream whose empty hyper error answers get a JSON body, and whose requests'
/// framing is followed.
#[derive(Debug)]
pub struct EnvelopeIo<T> {
    inner: T,
    /// Follows the requests read.
    framing: FramingTracker,
    /// A replacement being written: its bytes, how many are written, and the length of the
    /// write it stands for (reported once all of it is out).
    replacing: Option<(Vec<u8>, usize, usize)>,
}

impl<T> EnvelopeIo<T> {
    pub fn new(inner: T) -> Self {
        EnvelopeIo {
            inner,
            framing: FramingTracker::default(),
            replacing: None,
        }
    }

    /// The connection's flags (take them before the stream goes to hyper).
    pub fn flags(&self) -> ConnectionFlags {
        self.framing.flags()
    }
}

/// The message for an empty answer hyper gives with `status`.
fn message(status: u16) -> Option<&'static str> {
    match status {
        400 => Some("the request is not valid HTTP/1.1 (a malformed request line or header)"),
        414 => Some("the request URI is too long (at most 64 KiB)"),
        431 => Some(
            "the request's header fields are too large or too many (at most 100 fields and 400 KiB in all)",
        ),
        _ => None,
    }
}

/// The JSON answer standing for `head`, when `head` is one of hyper's empty error answers.
fn replacement(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head.get(..head.len().min(512))?).ok()?;
    let rest = text.strip_prefix("HTTP/1.1 ")?;
    let status: u16 = rest.get(..3)?.parse().ok()?;
    let message = message(status)?;
    let lower = text.to_ascii_lowercase();
    if !lower.contains("\r\ncontent-length: 0\r\n") || !text.ends_with("\r\n\r\n") {
        return None;
    }
    let status_line = &text[..text.find("\r\n")?];
    let body = serde_json::json!({"success": false, "error": message}).to_string();
    Some(
        format!(
            "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for EnvelopeIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = read {
            this.framing.feed(&buf.filled()[before..]);
        }
        read
    }
}

impl<T: AsyncWrite + Unpin> EnvelopeIo<T> {
    /// Writes what is left of the replacement; Ready with the replaced write's length once
    /// all of it is out.
    fn poll_replacing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        loop {
            let Some((bytes, done, stands_for)) = &mut self.replacing else {
                return Poll::Ready(Ok(0));
            };
            if *done == bytes.len() {
                let n = *stands_for;
                self.replacing = None;
                return Poll::Ready(Ok(n));
            }
            match Pin::new(&mut self.inner).poll_write(cx, &bytes[*done..]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Poll::Ready(Ok(n)) => *done += n,
                other => return other,
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for EnvelopeIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            match replacement(buf) {
                Some(bytes) => this.replacing = Some((bytes, 0, buf.len())),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        this.poll_replacing(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.replacing.is_none() {
            let mut non_empty = bufs.iter().filter(|b| !b.is_empty());
            if let (Some(only), None) = (non_empty.next(), non_empty.next())
                && let Some(bytes) = replacement(only)
            {
                this.replacing = Some((bytes, 0, only.len()));
            } else {
                return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            }
        }
        this.poll_replacing(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.replacing.is_some() {
            match self.poll_replacing(cx) {
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_error_answers_get_the_envelope() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Mon, 23 Nov 2026 21:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(replacement(head).unwrap()).unwrap();
        assert!(out.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}", body.len())));
        assert!(head.contains("content-type: application/json"));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["success"], false);
        assert!(v["error"].as_str().unwrap().contains("header fields"));
    }

    #[test]
    fn other_answers_pass_untouched() {
        // An answer with a body, a success, and a head split over writes are left alone.
        for head in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 40\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n",
            b"{\"success\":false}",
        ] {
            assert_eq!(replacement(head), None, "{}", String::from_utf8_lossy(head));
        }
    }

    #[tokio::test]
    async fn a_replacement_is_written_whole_and_reported_as_the_original_write() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, server) = tokio::io::duplex(16);
        let mut io = EnvelopeIo::new(server);
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\n\r\n";
        let reader = tokio::spawn(async move {
            let mut client = client;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            String::from_utf8(all).unwrap()
        });
        // The small pipe makes the replacement go out over many writes.
        let n = io.write(head).await.unwrap();
        assert_eq!(n, head.len());
        io.shutdown().await.unwrap();
        drop(io);
        let out = reader.await.unwrap();
        assert!(out.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{out}");
        assert!(out.contains("\"success\":false"), "{out}");
        assert!(out.contains("URI is too long"), "{out}");
    }
}
