//! Who may do what on a daemon: bearer tokens for every HTTP endpoint of both daemons and for
//! the master's admin gRPC service (`dms.v1.Admin`).
//!
//! Two tokens may be configured (`auth:` in the config):
//! - `token` / `token_file`: full access, reads and writes (start and cancel tasks, trigger,
//!   pause and resume schedules, verify or forget replicas, delete, restore).
//! - `read_only.token` / `read_only.token_file`: reads only; a write with it is refused with
//!   `PermissionDenied` (gRPC) or 403 (REST).
//!
//! Without `token`, nothing is checked: allowed only on a loopback listener, or with the
//! explicit `http.allow_unauthenticated: true` ([`crate::daemon::HttpConfig::validate`]). With
//! it, every request needs a token ([`needed_access`]): reads (`GET`/`HEAD`: bars, export, tasks,
//! series, sources, overview, nodes) the read-only or the full token, everything else the full
//! token; only `/healthz`, `/readyz` and, with `auth.public_metrics: true`, `/metrics` stay
//! open. Replication checks its own tokens (the master's `replication` section). Tokens are at
//! least 32 characters, compared in constant time and never logged.
//!
//! Key types: [`AuthConfig`] (the config section), [`Authorizer`] (the checker both servers
//! share), [`Access`] (what a call needs) and [`Denied`] (why it was refused).

use std::sync::Arc;

use crate::config::{ConfigIssue, Secret, TokenConfig};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// The `auth:` config section.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The full-access token (prefer `token_file`; also `DMS_AUTH__TOKEN`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the full-access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<std::path::PathBuf>,
    /// The read-only token (`read_only.token` or `read_only.token_file`).
    #[serde(default)]
    pub read_only: TokenConfig,
    /// Serve `/metrics` without a token (for a Prometheus that cannot send one). Default:
    /// `/metrics` needs the read-only or the full token like every other read.
    #[serde(default)]
    pub public_metrics: bool,
}

impl AuthConfig {
    /// Problems with the section (unreadable or empty token files, a read-only token without
    /// a full one, the same token twice).
    pub fn issues(&self) -> Vec<ConfigIssue> {
        match Authorizer::from_config(self) {
            Ok(_) => Vec::new(),
            Err(i) => vec![i],
        }
    }
}

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reads: status, lists, bars, history.
    Read,
    /// Anything that changes state or starts work.
    Write,
}

/// Why a call was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `authorization: Bearer …` was presented.
    Missing,
    /// A token was presented that is not one of the configured ones.
    Invalid,
    /// The read-only token was presented for a write.
    ReadOnly,
}

impl Denied {
    /// A one-line reason for the client.
    pub fn message(self) -> &'static str {
        match self {
            Denied::Missing => "a bearer token is required (authorization: Bearer <token>)",
            Denied::Invalid => "the bearer token is not valid",
            Denied::ReadOnly => "the read-only token may not change anything",
        }
    }

    /// The gRPC status for this refusal: `Unauthenticated` or `PermissionDenied`.
    pub fn to_status(self) -> tonic::Status {
        match self {
            Denied::Missing | Denied::Invalid => tonic::Status::unauthenticated(self.message()),
            Denied::ReadOnly => tonic::Status::permission_denied(self.message()),
        }
    }

    /// The REST answer: 401 with `WWW-Authenticate: Bearer`, or 403, in the JSON envelope.
    pub fn to_response(self) -> Response {
        let body = axum::Json(serde_json::json!({"success": false, "error": self.message()}));
        match self {
            Denied::Missing | Denied::Invalid => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                body,
            )
                .into_response(),
            Denied::ReadOnly => (StatusCode::FORBIDDEN, body).into_response(),
        }
    }
}

/// Checks bearer tokens against the configured ones. Cheap to clone.
#[derive(Clone, Default)]
pub struct Authorizer {
    full: Option<Arc<Secret>>,
    read_only: Option<Arc<Secret>>,
}

impl std::fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authorizer")
            .field("enabled", &self.enabled())
            .field("read_only_token", &self.read_only.is_some())
            .finish()
    }
}

impl Authorizer {
    /// An authorizer that lets everything through.
    pub fn open() -> Authorizer {
        Authorizer::default()
    }

    /// Reads the tokens of `config` (token files included).
    pub fn from_config(config: &AuthConfig) -> Result<Authorizer, ConfigIssue> {
        let full = TokenConfig {
            token: config.token.clone(),
            token_file: config.token_file.clone(),
        }
        .resolve("auth")?;
        let read_only = config.read_only.resolve("auth.read_only")?;
        match (&full, &read_only) {
            (None, Some(_)) => Err(ConfigIssue::new(
                "auth.read_only",
                "a read-only token needs a full-access `auth.token` too (writes would be open)",
            )),
            (Some(f), Some(r)) if f.expose() == r.expose() => Err(ConfigIssue::new(
                "auth.read_only",
                "the read-only token must differ from the full-access token",
            )),
            _ => Ok(Authorizer {
                full: full.map(Arc::new),
                read_only: read_only.map(Arc::new),
            }),
        }
    }

    /// The full-access token, for the one other place that accepts it (replication).
    pub fn full_token(&self) -> Option<&str> {
        self.full.as_deref().map(Secret::expose)
    }

    /// Whether any token is required.
    pub fn enabled(&self) -> bool {
        self.full.is_some()
    }

    /// Checks the value of an `authorization` header (`Bearer <token>`) for `need`.
    pub fn check(&self, authorization: Option<&str>, need: Access) -> Result<(), Denied> {
        let Some(full) = &self.full else {
            return Ok(());
        };
        let presented = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Denied::Missing)?;
        if constant_time_eq(presented.as_bytes(), full.expose().as_bytes()) {
            return Ok(());
        }
        match &self.read_only {
            Some(r) if constant_time_eq(presented.as_bytes(), r.expose().as_bytes()) => {
                match need {
                    Access::Read => Ok(()),
                    Access::Write => Err(Denied::ReadOnly),
                }
            }
            _ => Err(Denied::Invalid),
        }
    }

    /// Checks a gRPC call's metadata for `need`.
    pub fn check_grpc(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        need: Access,
    ) -> Result<(), tonic::Status> {
        let value = metadata.get("authorization").and_then(|v| v.to_str().ok());
        self.check(value, need).map_err(Denied::to_status)
    }
}

/// What an HTTP request (not a gRPC call: each gRPC service checks its own) needs: nothing
/// for the health probes (and `/metrics` when `public_metrics`), [`Access::Read`] for `GET` and
/// `HEAD`, [`Access::Write`] for everything else.
pub fn needed_access(method: &Method, path: &str, public_metrics: bool) -> Option<Access> {
    match path {
        "/healthz" | "/readyz" => return None,
        "/metrics" if public_metrics => return None,
        _ => {}
    }
    if matches!(*method, Method::GET | Method::HEAD) {
        Some(Access::Read)
    } else {
        Some(Access::Write)
    }
}

/// Checks an HTTP request's `authorization` header for what its method and path need
/// ([`needed_access`]); the refusal is the answer to send.
#[allow(clippy::result_large_err)] // built once per refused request
pub fn check_request(
    auth: &Authorizer,
    public_metrics: bool,
    method: &Method,
    path: &str,
    headers: &axum::http::HeaderMap,
) -> Result<(), Response> {
    let Some(need) = needed_access(method, path, public_metrics) else {
        return Ok(());
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    auth.check(value, need).map_err(Denied::to_response)
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(full: Option<&str>, read: Option<&str>) -> Result<Authorizer, ConfigIssue> {
        Authorizer::from_config(&AuthConfig {
            token: full.map(Secret::new),
            token_file: None,
            read_only: TokenConfig {
                token: read.map(Secret::new),
                token_file: None,
            },
            public_metrics: false,
        })
    }

    #[test]
    fn without_a_token_everything_passes() {
        let a = auth(None, None).unwrap();
        assert!(!a.enabled());
        assert_eq!(a.check(None, Access::Write), Ok(()));
    }

    #[test]
    fn full_and_read_only_tokens() {
        const FULL: &str = "full-secret-0123456789abcdef0123456789";
        const READ: &str = "read-secret-0123456789abcdef0123456789";
        let a = auth(Some(FULL), Some(READ)).unwrap();
        assert_eq!(a.check(None, Access::Read), Err(Denied::Missing));
        assert_eq!(a.check(Some(FULL), Access::Read), Err(Denied::Missing));
        assert_eq!(
            a.check(Some("Bearer nope"), Access::Read),
            Err(Denied::Invalid)
        );
        let bearer = |t: &str| format!("Bearer {t}");
        assert_eq!(a.check(Some(&bearer(FULL)), Access::Write), Ok(()));
        assert_eq!(a.check(Some(&bearer(READ)), Access::Read), Ok(()));
        assert_eq!(
            a.check(Some(&bearer(READ)), Access::Write),
            Err(Denied::ReadOnly)
        );
        assert_eq!(
            Denied::ReadOnly.to_status().code(),
            tonic::Code::PermissionDenied
        );
        assert_eq!(
            Denied::Invalid.to_status().code(),
            tonic::Code::Unauthenticated
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let long = "0123456789abcdef0123456789abcdef";
        assert_eq!(auth(None, Some(long)).unwrap_err().key, "auth.read_only");
        assert_eq!(
            auth(Some(long), Some(long)).unwrap_err().key,
            "auth.read_only"
        );
        assert_eq!(auth(Some("  "), None).unwrap_err().key, "auth.token");
        let short = auth(Some("only-twenty-characte"), None).unwrap_err();
        assert_eq!(short.key, "auth.token");
        assert!(short.message.contains("at least 32"), "{}", short.message);
        assert!(
            !short.message.contains("only-twenty"),
            "never shown: {}",
            short.message
        );
    }

    #[test]
    fn every_endpoint_but_the_probes_needs_a_token() {
        assert_eq!(needed_access(&Method::GET, "/healthz", false), None);
        assert_eq!(needed_access(&Method::GET, "/readyz", false), None);
        assert_eq!(
            needed_access(&Method::GET, "/metrics", false),
            Some(Access::Read)
        );
        assert_eq!(needed_access(&Method::GET, "/metrics", true), None);
        assert_eq!(
            needed_access(&Method::GET, "/api/data/bars", false),
            Some(Access::Read)
        );
        assert_eq!(
            needed_access(&Method::POST, "/api/data/update", false),
            Some(Access::Write)
        );
        assert_eq!(
            needed_access(&Method::OPTIONS, "/api/data/bars", false),
            Some(Access::Write)
        );
    }
}
