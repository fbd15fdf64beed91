//! The process's Prometheus recorder, shared by both daemons.
//!
//! Figures are recorded through the `metrics` facade (`metrics::counter!`, `gauge!`,
//! `histogram!`) wherever the event happens; [`handle`] installs the recorder behind that
//! facade the first time it is called (once per process: unit tests start several daemons in
//! one process) and [`render`] turns everything recorded into the Prometheus text format for a
//! `GET /metrics` answer. Histograms whose name ends in `_seconds` get [`SECONDS_BUCKETS`], so
//! they are real Prometheus histograms (`_bucket`, `_sum`, `_count`), not summaries. Gauges
//! are set from state at every scrape; one not set for [`GAUGE_IDLE`] is dropped (e.g. the
//! lag of a replica that was forgotten).

use std::sync::OnceLock;
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

/// Upper bounds of the buckets of every `*_seconds` histogram: 1 ms to 10 minutes.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// How long a gauge that is not set any more stays on the page.
pub const GAUGE_IDLE: Duration = Duration::from_secs(600);

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The recorder's handle, installing the recorder as the process's `metrics` recorder on first
/// use. If another recorder was installed first, figures go there and this one stays empty (a
/// warning says so).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
            .expect("the bucket list is not empty")
            .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE))
            .build_recorder();
        let handle = recorder.handle();
        if let Err(e) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %e, "another metrics recorder is installed; /metrics stays empty");
        }
        handle
    })
}

/// Everything recorded so far, in the Prometheus text format.
pub fn render() -> String {
    let handle = handle();
    // Folds histogram samples recorded since the last call into their buckets.
    handle.run_upkeep();
    handle.render()
}

/// A `GET /metrics` answer with `body` (the output of [`render`]).
pub fn response(body: String) -> Response {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_histograms_render_as_buckets_and_counters_as_counters() {
        handle();
        metrics::counter!("dms_test_events_total", "kind" => "a").increment(3);
        metrics::histogram!("dms_test_wait_seconds").record(0.2);
        let text = render();
        assert!(
            text.contains("dms_test_events_total{kind=\"a\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("dms_test_wait_seconds_bucket{le=\"0.25\"} 1"),
            "{text}"
        );
        assert!(text.contains("dms_test_wait_seconds_count 1"), "{text}");
    }
}
