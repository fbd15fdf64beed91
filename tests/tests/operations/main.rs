//! End-to-end tests of operating DMS (issue 7): scheduling, the admin service and `dmsctl`,
//! authentication and TLS, systemd integration, metrics and alerts. One test binary; each
//! concern is its own module.

mod metrics;
