//! The master's side of replication: the `dms.v1.Replication` gRPC service.
//!
//! - [`ReplicationService`] answers `Subscribe` with a [`session`] per replica that streams the
//!   journal from the replica's cursor, and serves repair: `ListSeries` (every series with its
//!   digest), `Digests` (bucket digests of many series) and `PullRange` (bars of a range).
//! - [`nodes`]: [`nodes::NodeRegistry`], the replicas the master knows, their live state and
//!   their sync history.
//! - [`verify`]: compares a replica's digests with the master's.
//! - [`api`]: the REST view, `/api/nodes`.
//!
//! Every call needs `authorization: Bearer <token>` as soon as any token is configured
//! ([`ReplicationAuth`]): the replication token, the full admin token, or a node's own token,
//! which may subscribe only as that node. Each replica
//! follows the journal with its own cursor (`replica:<node id>`), moved by its acks, so the
//! journal keeps what a replica still needs up to the retention limits.
//!
//! # Layout
//!
//! - this module: [`ReplicationService`], the gRPC service.
//! - [`session`]: one replica's stream from its cursor; [`nodes`]: the registry of replicas and
//!   their sync history; [`lag`]: how far each is behind; [`verify`]: digests compared;
//!   [`api`]: `/api/nodes`.
//!
//! Imports only `auth`, `metrics` and `dms-common`.

pub mod api;
pub mod lag;
pub mod nodes;
pub mod session;
pub mod verify;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dms_common::journal::{Journal, Seq};
use dms_common::pb::replication_server::{Replication, ReplicationServer};
use dms_common::pb::{self, replica_message};
use dms_common::store::digest::DIGEST_VERSION;
use dms_common::store::{DigestBucketing, SharedStore, StoreError};
use dms_common::{SeriesKey, TimeRange};
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status, Streaming};

use self::nodes::{NodeRegistry, validate_node_id};
use self::session::Session;

/// Limits of the change stream.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// A heartbeat is sent after this long without other messages.
    pub heartbeat: Duration,
    /// Most journal entries sent and not yet acknowledged.
    pub max_unacked_entries: u64,
    /// About the most journal payload bytes sent and not yet acknowledged.
    pub max_unacked_bytes: u64,
    /// About the most payload bytes in one message.
    pub message_bytes: u64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            heartbeat: Duration::from_secs(1),
            max_unacked_entries: 4_096,
            max_unacked_bytes: 64 << 20,
            message_bytes: 1 << 20,
        }
    }
}

/// How long a subscriber has to send its Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most bars in one `PullRange` page.
const MAX_PAGE: usize = 50_000;
/// Most series in one `Digests` call.
const MAX_DIGEST_SERIES: usize = 10_000;

/// What the service needs from the running master.
#[derive(Debug, Clone)]
pub struct ReplicationContext {
    pub journal: Journal,
    pub store: SharedStore,
    /// The last journal seq the primary store applied.
    pub store_applied: watch::Receiver<Seq>,
    pub nodes: NodeRegistry,
    /// Who may replicate.
    pub auth: ReplicationAuth,
    /// Whether the journal holds every change of the store since its first entry (see
    /// [`NodeRegistry::record_journal_coverage`]); if not, new replicas start with a repair.
    pub journal_covers_store: bool,
    pub options: StreamOptions,
    /// Fires when the master shuts down: open sessions end.
    pub shutdown: CancellationToken,
}

/// The `dms.v1.Replication` service.
#[derive(Debug, Clone)]
pub struct ReplicationService {
    ctx: ReplicationContext,
}

impl ReplicationService {
    pub fn new(ctx: ReplicationContext) -> Self {
        ReplicationService { ctx }
    }

    /// The tonic server for this service, with compression on.
    pub fn into_server(self) -> ReplicationServer<ReplicationService> {
        ReplicationServer::new(self)
            .accept_compressed(CompressionEncoding::Zstd)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(16 << 20)
    }

    fn authorize<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.ctx.auth.check(req.metadata())
    }
}

/// Who presented a token: a holder of a shared token (replication or full admin), a replica
/// with its own token, or nobody (no token is configured at all).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token is configured anywhere: replication is open (a loopback or explicitly open
    /// master).
    Anyone,
    /// The replication token or the full admin token: may act as any node without a token of
    /// its own.
    Shared,
    /// A node's own token: may subscribe only as this node.
    Node(String),
}

/// The tokens replication accepts. When the master has any token (admin `auth`, the
/// replication token, node tokens), every call needs one of them.
#[derive(Debug, Clone, Default)]
pub struct ReplicationAuth {
    shared: Vec<Arc<str>>,
    nodes: Arc<std::collections::BTreeMap<String, Arc<str>>>,
}

impl ReplicationAuth {
    /// Accepts `replication` (the replication token), `admin` (the full admin token) and each
    /// node's own token.
    pub fn new(
        replication: Option<&str>,
        admin: Option<&str>,
        nodes: impl IntoIterator<Item = (String, String)>,
    ) -> ReplicationAuth {
        ReplicationAuth {
            shared: replication
                .into_iter()
                .chain(admin)
                .map(Arc::from)
                .collect(),
            nodes: Arc::new(nodes.into_iter().map(|(n, t)| (n, Arc::from(t))).collect()),
        }
    }

    /// Whether any token is required.
    pub fn required(&self) -> bool {
        !self.shared.is_empty() || !self.nodes.is_empty()
    }

    /// Who the call's `authorization: Bearer <token>` names.
    pub fn check(&self, md: &tonic::metadata::MetadataMap) -> Result<Caller, Status> {
        if !self.required() {
            return Ok(Caller::Anyone);
        }
        let presented = md
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| {
                Status::unauthenticated(
                    "a bearer token is required (authorization: Bearer <token>)",
                )
            })?;
        if self
            .shared
            .iter()
            .any(|t| constant_time_eq(presented.as_bytes(), t.as_bytes()))
        {
            return Ok(Caller::Shared);
        }
        for (node, t) in self.nodes.iter() {
            if constant_time_eq(presented.as_bytes(), t.as_bytes()) {
                return Ok(Caller::Node(node.clone()));
            }
        }
        Err(Status::unauthenticated("the bearer token is not valid"))
    }

    /// Whether `caller` may subscribe as `node_id`: its own token for a node that has one, a
    /// shared token otherwise.
    pub fn may_act_as(&self, caller: &Caller, node_id: &str) -> Result<(), Status> {
        match caller {
            Caller::Anyone => Ok(()),
            Caller::Node(n) if n == node_id => Ok(()),
            Caller::Node(n) => Err(Status::permission_denied(format!(
                "this token belongs to node {n:?}; it may not subscribe as {node_id:?}"
            ))),
            Caller::Shared if self.nodes.contains_key(node_id) => {
                // The full or replication token could, but a node with its own token is
                // only ever itself: a shared token must not take its place.
                Err(Status::permission_denied(format!(
                    "node {node_id:?} has a token of its own (replication.node_tokens): subscribe with it"
                )))
            }
            Caller::Shared => Ok(()),
        }
    }
}

use crate::auth::constant_time_eq;

fn store_status(e: &StoreError) -> Status {
    if e.is_transient() {
        Status::unavailable(format!("the master's store is unavailable: {e}"))
    } else {
        Status::internal(format!("the master's store failed: {e}"))
    }
}

fn series_key(k: Option<&pb::SeriesKey>) -> Result<SeriesKey, Status> {
    let k = k.ok_or_else(|| Status::invalid_argument("field `series` is missing"))?;
    SeriesKey::try_from(k).map_err(|e| Status::invalid_argument(e.to_string()))
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Replication for ReplicationService {
    type SubscribeStream = BoxStream<pb::MasterMessage>;
    type PullRangeStream = BoxStream<pb::BarPage>;

    async fn subscribe(
        &self,
        req: Request<Streaming<pb::ReplicaMessage>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let caller = self.authorize(&req)?;
        let mut inbound = req.into_inner();
        let first = tokio::select! {
            m = tokio::time::timeout(HELLO_TIMEOUT, inbound.message()) => m.map_err(|_| {
                Status::deadline_exceeded(format!("no Hello within {HELLO_TIMEOUT:?}"))
            })??,
            _ = self.ctx.shutdown.cancelled() => {
                return Err(Status::unavailable("the master is shutting down"));
            }
        };
        let hello = match first {
            Some(pb::ReplicaMessage {
                msg: Some(replica_message::Msg::Hello(h)),
            }) => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message of Subscribe must be a Hello",
                ));
            }
        };
        validate_node_id(&hello.node_id).map_err(Status::invalid_argument)?;
        self.ctx.auth.may_act_as(&caller, &hello.node_id)?;
        if hello.digest_version != u32::from(DIGEST_VERSION) {
            return Err(Status::failed_precondition(format!(
                "the replica computes digest version {}, the master {DIGEST_VERSION}; upgrade the older one",
                hello.digest_version
            )));
        }
        let (tx, rx) = mpsc::channel(4);
        let session = Session::new(self.ctx.clone(), hello, inbound, tx);
        tokio::spawn(session.run());
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn pull_range(
        &self,
        req: Request<pb::PullRangeRequest>,
    ) -> Result<Response<Self::PullRangeStream>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        let key = series_key(req.series.as_ref())?;
        let range = req
            .range
            .as_ref()
            .map(TimeRange::from)
            .ok_or_else(|| Status::invalid_argument("field `range` is missing"))?;
        let page = match req.page_size as usize {
            0 => dms_common::store::DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE),
        };
        let pages = self.ctx.store.read_paged(&key, range, page).map(|page| {
            page.map(|bars| pb::BarPage {
                bars: bars.iter().map(pb::Bar::from).collect(),
            })
            .map_err(|e| store_status(&e))
        });
        Ok(Response::new(Box::pin(pages)))
    }

    async fn digests(
        &self,
        req: Request<pb::DigestsRequest>,
    ) -> Result<Response<pb::DigestsResponse>, Status> {
        self.authorize(&req)?;
        let req = req.into_inner();
        if req.series.len() > MAX_DIGEST_SERIES {
            return Err(Status::invalid_argument(format!(
                "field `series`: at most {MAX_DIGEST_SERIES} series per call, got {}",
                req.series.len()
            )));
        }
        let range = req.range.as_ref().map_or(TimeRange::all(), TimeRange::from);
        let mut out = Vec::with_capacity(req.series.len());
        for k in &req.series {
            let key = series_key(Some(k))?;
            let buckets = self
                .ctx
                .store
                .bucket_digests(&key, range)
                .await
                .map_err(|e| store_status(&e))?;
            out.push(series_digests(&key, &buckets));
        }
        Ok(Response::new(pb::DigestsResponse {
            series: out,
            digest_version: DIGEST_VERSION.into(),
        }))
    }

    async fn list_series(
        &self,
        req: Request<pb::ListSeriesRequest>,
    ) -> Result<Response<pb::ListSeriesResponse>, Status> {
        self.authorize(&req)?;
        // Read before the listing: the store holds at least this much when it is read.
        let store_applied = *self.ctx.store_applied.borrow();
        let overview = self
            .ctx
            .store
            .overview()
            .await
            .map_err(|e| store_status(&e))?;
        Ok(Response::new(pb::ListSeriesResponse {
            series: overview.iter().map(pb::SeriesSummary::from).collect(),
            history_id: self.ctx.journal.history_id().0.clone(),
            store_applied: store_applied.0,
            head: self.ctx.journal.head().0,
            digest_version: DIGEST_VERSION.into(),
        }))
    }
}

/// The protobuf form of the bucket digests of one series.
pub fn series_digests(
    key: &SeriesKey,
    buckets: &[dms_common::store::BucketDigest],
) -> pb::SeriesDigests {
    pb::SeriesDigests {
        series: Some(key.into()),
        bucket_secs: DigestBucketing::for_interval(key.interval).width_secs,
        buckets: buckets.iter().map(pb::BucketDigest::from).collect(),
    }
}

#[cfg(test)]
mod auth_tests {
    use super::*;

    const SHARED: &str = "replication-token-0123456789abcdef0123";
    const ADMIN: &str = "admin-token-0123456789abcdef0123456789";
    const NODE: &str = "node-one-token-0123456789abcdef0123456";

    fn md(token: Option<&str>) -> tonic::metadata::MetadataMap {
        let mut md = tonic::metadata::MetadataMap::new();
        if let Some(t) = token {
            md.insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        md
    }

    #[test]
    fn no_token_configured_is_open_any_token_configured_closes_it() {
        let open = ReplicationAuth::default();
        assert_eq!(open.check(&md(None)).unwrap(), Caller::Anyone);
        let admin_only = ReplicationAuth::new(None, Some(ADMIN), Vec::new());
        assert_eq!(
            admin_only.check(&md(None)).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(admin_only.check(&md(Some(ADMIN))).unwrap(), Caller::Shared);
        assert_eq!(
            admin_only.check(&md(Some(SHARED))).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn a_node_token_is_only_its_own_node() {
        let auth = ReplicationAuth::new(
            Some(SHARED),
            Some(ADMIN),
            vec![("replica-1".to_owned(), NODE.to_owned())],
        );
        let node = auth.check(&md(Some(NODE))).unwrap();
        assert_eq!(node, Caller::Node("replica-1".into()));
        assert!(auth.may_act_as(&node, "replica-1").is_ok());
        assert_eq!(
            auth.may_act_as(&node, "replica-2").unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        let shared = auth.check(&md(Some(SHARED))).unwrap();
        assert!(auth.may_act_as(&shared, "replica-2").is_ok());
        assert_eq!(
            auth.may_act_as(&shared, "replica-1").unwrap_err().code(),
            tonic::Code::PermissionDenied,
            "a node with its own token cannot be taken with the shared one"
        );
    }
}
