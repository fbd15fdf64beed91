//! End-to-end tests of operating DMS (issue 7): the real daemons as processes under the
//! conditions operators create: systemd supervision, TLS and tokens, schedules, admin calls,
//! metrics and alerts. One test binary; one module per area.

mod auth;
mod systemd;
mod tls;
