//! End-to-end tests of operating DMS (issue 7): the scheduler, admin gRPC and `dmsctl`, auth
//! and TLS, systemd integration, metrics and alerts, deleting, exporting and importing data. Each part has
//! its own module; all run the real daemons as processes.

mod auth;
mod delete;
mod dmsctl;
mod export;
mod import;
mod metrics;
mod scheduler;
mod systemd;
mod tls;
