//! [`HttpConfig`]: the `http:` section of both daemons' configs (listen address, TLS, the
//! connection limits, the names and origins requests may carry), with its validation and the
//! [`HttpLimits`](super::HttpLimits) and [`HttpRules`](crate::http_rules::HttpRules) built from it.

use super::HttpLimits;
use crate::http_rules::HttpRules;
use crate::tls::TlsAcceptor;

/// The HTTP listener section of a daemon's config (`http:`); `PORT` is the daemon's default
/// port (the master 11183, a replica 11184).
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig<const PORT: u16> {
    /// Address and port to listen on.
    #[serde(default = "default_listen::<PORT>")]
    pub listen: std::net::SocketAddr,
    /// Time to receive a request's headers; also how long a keep-alive connection may sit idle.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: crate::config::ConfigDuration,
    /// Time for a REST request from its headers to its answer, its body included (408 after).
    /// gRPC streams are not bounded by it.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: crate::config::ConfigDuration,
    /// Most open connections; more wait to be accepted.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most open connections from one client address; its further connections are closed at
    /// once, so one client cannot take every slot.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
    /// A connection that sends and receives nothing for this long is closed (HTTP/2 and gRPC
    /// included; a replica's stream carries heartbeats and is never idle this long).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: crate::config::ConfigDuration,
    /// TLS on the listener (HTTPS and gRPC over TLS); plaintext without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<crate::tls::ServerTlsConfig>,
    /// Serve a listener that is not on loopback without `auth` (every client on the network
    /// is then an administrator). Refused by default; logged as a warning at every start.
    #[serde(default)]
    pub allow_unauthenticated: bool,
    /// Host names clients reach the daemon by (`Host`), besides IP addresses and `localhost`,
    /// which are always accepted; any other name is refused with 403 (against DNS rebinding).
    #[serde(default)]
    pub server_names: Vec<String>,
    /// Web origins (`https://console.example.com`) whose pages may call the API, besides the
    /// daemon's own; a request with any other `Origin` is refused with 403.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

fn default_listen<const PORT: u16>() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], PORT))
}
fn default_max_connections_per_client() -> usize {
    64
}
fn default_idle_timeout() -> crate::config::ConfigDuration {
    crate::config::ConfigDuration::from_secs(300)
}
fn default_header_read_timeout() -> crate::config::ConfigDuration {
    crate::config::ConfigDuration::from_secs(10)
}
fn default_request_timeout() -> crate::config::ConfigDuration {
    crate::config::ConfigDuration::from_secs(60)
}
fn default_max_connections() -> usize {
    1024
}

impl<const PORT: u16> Default for HttpConfig<PORT> {
    fn default() -> Self {
        HttpConfig {
            listen: default_listen::<PORT>(),
            header_read_timeout: default_header_read_timeout(),
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
            idle_timeout: default_idle_timeout(),
            tls: None,
            allow_unauthenticated: false,
            server_names: Vec::new(),
            allowed_origins: Vec::new(),
        }
    }
}

impl<const PORT: u16> HttpConfig<PORT> {
    /// The listener's limits.
    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            header_read_timeout: self.header_read_timeout.0,
            request_timeout: self.request_timeout.0,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            idle_timeout: self.idle_timeout.0,
        }
    }

    /// The request rules ([`crate::http_rules`]) of this listener with `auth`'s tokens.
    pub fn rules(&self, auth: crate::auth::Authorizer, public_metrics: bool) -> HttpRules {
        HttpRules::new(
            auth,
            public_metrics,
            &self.server_names,
            &self.allowed_origins,
        )
    }

    /// Whether the listener is reachable from other machines (not a loopback address).
    pub fn exposed(&self) -> bool {
        !self.listen.ip().is_loopback()
    }

    /// The refusal of an exposed listener without tokens (`auth_enabled`: a full-access
    /// token is configured), unless `allow_unauthenticated` says so.
    pub fn exposure_issue(&self, auth_enabled: bool) -> Option<crate::config::ConfigIssue> {
        (self.exposed() && !auth_enabled && !self.allow_unauthenticated).then(|| {
            crate::config::ConfigIssue::new(
                "http.listen",
                format!(
                    "{} is reachable from other machines and no `auth` is configured: anyone who can reach it could delete and rewrite data. Set `auth.token_file` (a file holding a token of at least 32 characters), listen on 127.0.0.1, or set `http.allow_unauthenticated: true` to serve it open anyway",
                    self.listen
                ),
            )
        })
    }

    /// Logs a warning when the listener is exposed without tokens (allowed by
    /// `allow_unauthenticated`).
    pub fn warn_if_open(&self, auth_enabled: bool) {
        if self.exposed() && !auth_enabled {
            tracing::warn!(
                listen = %self.listen,
                "serving without tokens on an address other machines can reach (http.allow_unauthenticated): anyone who reaches it can change or delete data"
            );
        }
    }

    /// The TLS acceptor `http.tls` describes (its files read now), if TLS is configured.
    pub fn tls_acceptor(&self) -> Result<Option<TlsAcceptor>, crate::config::ConfigIssue> {
        self.tls
            .as_ref()
            .map(|t| t.server_config("http.tls").map(TlsAcceptor::new))
            .transpose()
    }

    /// Problems with the section, keys under `http.` (TLS files included).
    pub fn validate(&self) -> Vec<crate::config::ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(issue) = self.tls_acceptor() {
            issues.push(issue);
        }
        for (key, d) in [
            ("http.header_read_timeout", self.header_read_timeout),
            ("http.request_timeout", self.request_timeout),
        ] {
            if d.0.is_zero() {
                issues.push(crate::config::ConfigIssue::new(key, "must be more than 0s"));
            }
        }
        if self.max_connections == 0 {
            issues.push(crate::config::ConfigIssue::new(
                "http.max_connections",
                "must be at least 1",
            ));
        }
        if self.max_connections_per_client == 0 {
            issues.push(crate::config::ConfigIssue::new(
                "http.max_connections_per_client",
                "must be at least 1",
            ));
        }
        if self.idle_timeout.0 < std::time::Duration::from_secs(1) {
            issues.push(crate::config::ConfigIssue::new(
                "http.idle_timeout",
                "must be at least 1s",
            ));
        }
        for (i, name) in self.server_names.iter().enumerate() {
            if name.trim().is_empty() || name.contains([':', '/', ' ']) {
                issues.push(crate::config::ConfigIssue::new(
                    format!("http.server_names[{i}]"),
                    format!("{name:?} is not a host name (no port, no scheme)"),
                ));
            }
        }
        for (i, origin) in self.allowed_origins.iter().enumerate() {
            let o = origin.trim().trim_end_matches('/');
            let ok = (o.starts_with("http://") || o.starts_with("https://"))
                && !o
                    .split_once("://")
                    .is_some_and(|(_, a)| a.is_empty() || a.contains('/'));
            if !ok {
                issues.push(crate::config::ConfigIssue::new(
                    format!("http.allowed_origins[{i}]"),
                    format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                ));
            }
        }
        issues
    }
}
