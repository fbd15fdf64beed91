//! [`TasksConfig`]: the `tasks:` section, how fetch tasks behave.

use dms_common::config::ConfigDuration;
use serde::{Deserialize, Serialize};

/// How fetch tasks behave.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TasksConfig {
    /// How far back a full import starts when the request gives no start date.
    #[serde(default = "default_history")]
    pub default_history: ConfigDuration,
    /// Bars before a series' last bar fetched again on every update (corrections, the
    /// provisional last bar).
    #[serde(default = "default_refetch_bars")]
    pub refetch_bars: u32,
    /// Series fetched at once within a task (the provider's rate limit still applies).
    #[serde(default = "default_task_concurrency")]
    pub concurrency: usize,
    /// Pause before the second pass over series that failed with a retryable error.
    #[serde(default = "default_second_pass_delay")]
    pub second_pass_delay: ConfigDuration,
    /// How long a session the provider answered with no bar is left alone by backfills
    /// before they ask for it again.
    #[serde(default = "default_provider_missing_retry")]
    pub provider_missing_retry: ConfigDuration,
    /// How often an update also asks the provider for the corporate actions over a series'
    /// whole stored history (one small request), so that a split reported late for a date
    /// before the re-fetch window is still seen. `0s`: on every update.
    #[serde(default = "default_actions_check_interval")]
    pub actions_check_interval: ConfigDuration,
    /// Most tasks waiting to run: a request that would queue more is refused with 429 (and
    /// `Retry-After`) until some have run.
    #[serde(default = "default_max_pending")]
    pub max_pending: usize,
}

fn default_max_pending() -> usize {
    100
}

fn default_history() -> ConfigDuration {
    ConfigDuration::from_secs(5 * 365 * 86_400 + 86_400)
}

fn default_refetch_bars() -> u32 {
    5
}

fn default_task_concurrency() -> usize {
    8
}

fn default_second_pass_delay() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}

fn default_actions_check_interval() -> ConfigDuration {
    ConfigDuration::from_secs(86_400)
}

fn default_provider_missing_retry() -> ConfigDuration {
    ConfigDuration::from_secs(7 * 86_400)
}

impl Default for TasksConfig {
    fn default() -> Self {
        TasksConfig {
            default_history: default_history(),
            refetch_bars: default_refetch_bars(),
            concurrency: default_task_concurrency(),
            second_pass_delay: default_second_pass_delay(),
            provider_missing_retry: default_provider_missing_retry(),
            actions_check_interval: default_actions_check_interval(),
            max_pending: default_max_pending(),
        }
    }
}
