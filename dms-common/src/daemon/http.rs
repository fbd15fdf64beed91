//! The HTTP server of both daemons ([`serve_http`]): TLS when configured, the request rules in
//! front of the router, and the limits that keep one slow or stuck client from holding the
//! process ([`HttpLimits`]: connections in all and per client, header and request timeouts,
//! idle connections closed). Requests hyper refuses before the router sees them are still
//! answered in the JSON error envelope, and a request whose head carries both `Content-Length`
//! and `Transfer-Encoding` is refused with 400 before routing ([`refuse_ambiguous_framing`]).

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::envelope_io::EnvelopeIo;
use super::framing::ConnectionFlags;
use crate::tls::TlsAcceptor;

/// Limits of the HTTP listener of both daemons (REST and gRPC on one port).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Time to receive a request's headers; it also closes a keep-alive connection left idle
    /// this long. A client that sends half a request line and then nothing is dropped.
    pub header_read_timeout: std::time::Duration,
    /// Time for a REST request from its headers to its answer (reading its body included); a
    /// body shorter than its `Content-Length` answers 408 instead of hanging. gRPC calls are
    /// not bounded: streams live while data or heartbeats flow, and HTTP/2 keep-alive pings
    /// (every 20 s, 20 s to answer) drop dead peers.
    pub request_timeout: std::time::Duration,
    /// Most open connections; more wait to be accepted.
    pub max_connections: usize,
    /// Most open connections from one client address; more are closed at once.
    pub max_connections_per_client: usize,
    /// A connection with no traffic this long is closed.
    pub idle_timeout: std::time::Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            header_read_timeout: std::time::Duration::from_secs(10),
            request_timeout: std::time::Duration::from_secs(60),
            max_connections: 1024,
            max_connections_per_client: 64,
            idle_timeout: std::time::Duration::from_secs(300),
        }
    }
}

/// Serves `app` on `listener` until `shutdown` fires, then stops accepting, lets open requests
/// and streams finish for at most `deadline`, and closes what is left. With `tls`, every
/// connection is a TLS connection (its handshake bounded by `limits.header_read_timeout`, and
/// holding one of the `max_connections` slots meanwhile).
pub async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    shutdown: &CancellationToken,
    deadline: std::time::Duration,
    limits: HttpLimits,
    tls: Option<TlsAcceptor>,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = app.layer(axum::middleware::from_fn(move |req, next| {
        bound_rest_request(req, next, limits.request_timeout)
    }));
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(std::time::Duration::from_secs(20))
        .keep_alive_timeout(std::time::Duration::from_secs(20));
    let graceful = GracefulShutdown::new();
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let per_client = PerClient::new(limits.max_connections_per_client);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment rather than spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        let Some(client_slot) = per_client.take(peer.ip()) else {
            tracing::debug!(%peer, "connection refused: too many from this client (http.max_connections_per_client)");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app_service = TowerToHyperService::new(app.clone());
        let watcher = graceful.watcher();
        let requests = Requests::default();
        let Some(tls) = tls.clone() else {
            let io = EnvelopeIo::new(stream);
            let service = ConnectionService {
                app: app_service,
                flags: io.flags(),
                requests: requests.clone(),
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            tokio::spawn(async move {
                let _slots = (permit, client_slot);
                tokio::select! {
                    ended = watcher.watch(conn) => if let Err(e) = ended {
                        tracing::debug!(error = %e, "connection ended with an error");
                    },
                    _ = requests.idle_for(limits.idle_timeout) => {
                        tracing::debug!(%peer, "closing a connection idle for {:?}", limits.idle_timeout);
                    }
                }
            });
            continue;
        };
        let (builder, shutdown) = (builder.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _slots = (permit, client_slot);
            let stream = tokio::select! {
                s = tls.accept(stream, limits.header_read_timeout) => match s {
                    Some(s) => s,
                    None => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let io = EnvelopeIo::new(stream);
            let service = ConnectionService {
                app: app_service,
                flags: io.flags(),
                requests: requests.clone(),
            };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
                .into_owned();
            tokio::select! {
                ended = watcher.watch(conn) => if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                },
                _ = requests.idle_for(limits.idle_timeout) => {
                    tracing::debug!(%peer, "closing a connection idle for {:?}", limits.idle_timeout);
                }
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(deadline) => {
            tracing::warn!("open connections did not finish within {deadline:?}; closing them");
        }
    }
    Ok(())
}

/// Open connections per client address, each at most `max`.
#[derive(Debug, Clone)]
struct PerClient {
    max: usize,
    open: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>,
}

/// One of a client's connection slots, given back on drop.
#[derive(Debug)]
struct ClientSlot {
    ip: std::net::IpAddr,
    owner: PerClient,
}

impl PerClient {
    fn new(max: usize) -> PerClient {
        PerClient {
            max,
            open: std::sync::Arc::default(),
        }
    }

    /// A slot for one more connection from `ip`, unless it has `max` open.
    fn take(&self, ip: std::net::IpAddr) -> Option<ClientSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            ip,
            owner: self.clone(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.owner.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The requests of one connection that are open (their answer, streamed bodies included, not
/// yet sent or dropped), and when the last one ended: a connection with none open for the
/// idle timeout is closed (HTTP/2 keep-alive pings are traffic, not use).
#[derive(Debug, Clone, Default)]
struct Requests(std::sync::Arc<RequestsInner>);

#[derive(Debug, Default)]
struct RequestsInner {
    open: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

/// One open request; its drop (once the answer's body is done) ends it.
#[derive(Debug)]
struct OpenRequest(Requests);

impl Requests {
    fn start(&self) -> OpenRequest {
        self.0
            .open
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
        OpenRequest(self.clone())
    }

    /// Returns once no request has been open for `idle`.
    async fn idle_for(&self, idle: std::time::Duration) {
        loop {
            let changed = self.0.changed.notified();
            if self.0.open.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = changed => {}
                _ = tokio::time::sleep(idle) => return,
            }
        }
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        (self.0)
            .0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        (self.0).0.changed.notify_waiters();
    }
}

/// A response body that holds its request open until it is sent (or dropped).
struct TrackedBody {
    inner: axum::body::Body,
    _open: OpenRequest,
}

impl axum::body::HttpBody for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// One connection's service: every request carries the connection's [`ConnectionFlags`] as an
/// extension and goes to `app`, unless [`refuse_ambiguous_framing`] answers it first; each
/// request is counted open until its answer is sent ([`Requests`]).
#[derive(Clone)]
struct ConnectionService {
    app: hyper_util::service::TowerToHyperService<axum::Router>,
    flags: ConnectionFlags,
    requests: Requests,
}

impl hyper::service::Service<axum::http::Request<hyper::body::Incoming>> for ConnectionService {
    type Response = axum::http::Response<TrackedBody>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn call(&self, mut req: axum::http::Request<hyper::body::Incoming>) -> Self::Future {
        let open = self.requests.start();
        req.extensions_mut().insert(self.flags.clone());
        let track =
            move |r: axum::response::Response| r.map(|inner| TrackedBody { inner, _open: open });
        match refuse_ambiguous_framing(&req) {
            Some(answer) => Box::pin(std::future::ready(Ok(track(answer)))),
            None => {
                let answer = self.app.call(req);
                Box::pin(async move {
                    let answer = answer.await?;
                    Ok(track(answer))
                })
            }
        }
    }
}

/// The 400 answer (closing the connection) for a request on a connection where a request head
/// carried both `Content-Length` and `Transfer-Encoding`, per its [`ConnectionFlags`]
/// extension; `None` for any other request (one without the extension included).
pub fn refuse_ambiguous_framing<B>(
    req: &axum::http::Request<B>,
) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let flags = req.extensions().get::<ConnectionFlags>()?;
    if !flags.smuggling_shape_seen() {
        return None;
    }
    let body = serde_json::json!({
        "success": false,
        "error": "a request may not carry both Content-Length and Transfer-Encoding",
    });
    Some(
        (
            axum::http::StatusCode::BAD_REQUEST,
            [(axum::http::header::CONNECTION, "close")],
            axum::Json(body),
        )
            .into_response(),
    )
}

/// Bounds a REST request by `timeout`. gRPC calls ([`crate::http_rules::is_grpc`]: HTTP/2, a
/// gRPC path and content type; never a path under `/api/`) pass untouched: their streams may
/// live long.
async fn bound_rest_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
    timeout: std::time::Duration,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if crate::http_rules::is_grpc(&req) {
        return next.run(req).await;
    }
    let what = format!("{} {}", req.method(), req.uri().path());
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (
            axum::http::StatusCode::REQUEST_TIMEOUT,
            axum::Json(serde_json::json!({
                "success": false,
                "error": format!("{what}: the request (its body included) did not arrive within {timeout:?}"),
            })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_at_most_its_share_of_connections() {
        let per_client = PerClient::new(2);
        let (a, b): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let first = per_client.take(a).unwrap();
        let _second = per_client.take(a).unwrap();
        assert!(
            per_client.take(a).is_none(),
            "a third from the same address"
        );
        assert!(
            per_client.take(b).is_some(),
            "another address is not held up"
        );
        drop(first);
        assert!(
            per_client.take(a).is_some(),
            "a closed connection frees its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_is_idle_only_without_open_requests() {
        let requests = Requests::default();
        let idle = std::time::Duration::from_secs(300);
        let open = requests.start();
        // An open request (a stream, a slow answer) keeps the connection in use.
        let waited = tokio::time::timeout(idle * 3, requests.idle_for(idle)).await;
        assert!(waited.is_err(), "idle while a request is open");
        drop(open);
        let started = tokio::time::Instant::now();
        requests.idle_for(idle).await;
        assert!(started.elapsed() >= idle);
    }

    #[tokio::test]
    async fn idle_connections_are_closed_and_busy_ones_are_not() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let stop = CancellationToken::new();
        let limits = HttpLimits {
            idle_timeout: std::time::Duration::from_millis(300),
            header_read_timeout: std::time::Duration::from_secs(30),
            max_connections_per_client: 2,
            ..HttpLimits::default()
        };
        let server = tokio::spawn({
            let stop = stop.clone();
            async move {
                serve_http(
                    listener,
                    app,
                    &stop,
                    std::time::Duration::from_secs(1),
                    limits,
                    None,
                )
                .await
            }
        });
        // An HTTP/2 connection (prior knowledge) sending nothing after its preface: closed.
        let mut h2 = tokio::net::TcpStream::connect(addr).await.unwrap();
        h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
            .await
            .unwrap();
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            h2.read_to_end(&mut sink),
        )
        .await;
        assert!(closed.is_ok(), "the idle HTTP/2 connection was closed");
        // A third connection from one address is closed at once.
        let _one = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _two = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let mut three = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), three.read(&mut buf))
            .await
            .expect("closed, not left waiting")
            .unwrap_or(0);
        assert_eq!(n, 0, "the connection over the per-client cap is closed");
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
