//! [`LinkProxy`]: a TCP proxy on loopback between a replica and its master, to cut, slow down
//! and flap the link the way a network does.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the link does now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LinkMode {
    /// Bytes pass as they come.
    Open,
    /// Every connection is dropped, new ones are refused (accepted and closed at once).
    Cut,
    /// Bytes pass at most this many per second in each direction.
    Throttled(u64),
}

/// A proxy from a free loopback port to `target`.
#[derive(Debug)]
pub struct LinkProxy {
    pub port: u16,
    mode: watch::Sender<LinkMode>,
    accept: JoinHandle<()>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl LinkProxy {
    /// Starts forwarding to `127.0.0.1:target_port`.
    pub async fn start(target_port: u16) -> LinkProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("proxy addr").port();
        let (mode, rx) = watch::channel(LinkMode::Open);
        let connections: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let conns = connections.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                if *rx.borrow() == LinkMode::Cut {
                    drop(client);
                    continue;
                }
                let rx = rx.clone();
                let task = tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    let up = tokio::spawn(pipe(cr, sw, rx.clone()));
                    let down = tokio::spawn(pipe(sr, cw, rx));
                    let _ = tokio::join!(up, down);
                });
                let mut all = conns.lock().unwrap_or_else(|p| p.into_inner());
                all.retain(|t| !t.is_finished());
                all.push(task);
            }
        });
        LinkProxy {
            port,
            mode,
            accept,
            connections,
        }
    }

    /// Changes what the link does; cutting drops every open connection.
    pub fn set(&self, mode: LinkMode) {
        self.mode.send_replace(mode);
        if mode == LinkMode::Cut {
            self.drop_connections();
        }
    }

    fn drop_connections(&self) {
        for t in self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            t.abort();
        }
    }

    /// Cuts and reopens the link every `period` for `total`.
    pub async fn flap(&self, period: Duration, total: Duration) {
        let end = tokio::time::Instant::now() + total;
        let mut cut = true;
        while tokio::time::Instant::now() < end {
            self.set(if cut { LinkMode::Cut } else { LinkMode::Open });
            cut = !cut;
            tokio::time::sleep(period).await;
        }
        self.set(LinkMode::Open);
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.drop_connections();
    }
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mode: watch::Receiver<LinkMode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let current = *mode.borrow();
        match current {
            LinkMode::Cut => return,
            LinkMode::Throttled(rate) => {
                let secs = n as f64 / rate.max(1) as f64;
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            LinkMode::Open => {}
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
