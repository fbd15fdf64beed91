//! `ScheduleConfig`: one entry of the `schedules:` config list, and its validation. Every
//! field's doc comment is its user documentation (the README's config reference follows it).

use std::collections::HashSet;
use std::fmt;

use dms_common::config::ConfigIssue;
use dms_common::{Interval, Symbol};
use serde::{Deserialize, Serialize};

use super::cron::{parse_cron, parse_timezone};
use crate::replication::nodes::validate_node_id;
use crate::tasks::TaskKind;

/// A job the master runs by itself at the times its cron expression gives.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique name (1 to 64 of `A-Za-z0-9._-`): the REST paths, the run history and the
    /// pause state use it.
    pub name: String,
    /// When it fires: a cron expression of 5 fields (minute hour day-of-month month
    /// day-of-week) or 6 with seconds first, read in `timezone`.
    pub cron: String,
    /// The IANA time zone the cron expression is read in (`America/New_York`, `Asia/Shanghai`);
    /// a daily time stays the same local time across daylight saving changes.
    #[serde(default = "default_timezone")]
    pub timezone: String,
    /// What it runs: `update`, `import`, `backfill`, `validate` (tasks) or `verify_replicas`.
    pub kind: ScheduleKind,
    /// (tasks) The symbols of these watchlists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watchlists: Vec<String>,
    /// (tasks) These symbols (with `watchlists`: as well). Neither: every kept series.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub symbols: Vec<Symbol>,
    /// (tasks) Only series of this source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// (tasks) Only this interval (default: every interval kept for the selected symbols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Interval>,
    /// (update) Days before each series' last bar fetched again (default
    /// `tasks.refetch_bars` bars); (import) days of history before the fire time (default
    /// `tasks.default_history`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// (update) Leave series with nothing stored alone.
    #[serde(default)]
    pub only_existing: bool,
    /// (verify_replicas) Which replicas: `all` (every connected replica, the default) or a
    /// list of node ids.
    #[serde(default, skip_serializing_if = "NodeSelection::is_all")]
    pub nodes: NodeSelection,
    /// Whether it starts active; `false` starts it paused. A pause or resume at run time
    /// wins over this until this value is changed in the config.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// A fire missed while the master was down runs once at start (once, however many were
    /// missed); `false` records it as `missed` instead.
    #[serde(default = "yes")]
    pub catch_up: bool,
    /// (tasks) A fire whose local date (in `timezone`) is not a trading day of any selected
    /// series' exchange calendar is skipped and recorded as `skipped_non_trading_day`.
    #[serde(default = "yes")]
    pub skip_non_trading_days: bool,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// What a schedule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// An incremental update task (skipped when every selected series is complete).
    Update,
    /// A full import task.
    Import,
    /// A gap backfill task.
    Backfill,
    /// A validation task (changes nothing).
    Validate,
    /// Compares replicas' digests with the master's.
    VerifyReplicas,
    /// A backup (`backup:` says where, and how many are kept).
    Backup,
}

impl ScheduleKind {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::Update => "update",
            ScheduleKind::Import => "import",
            ScheduleKind::Backfill => "backfill",
            ScheduleKind::Validate => "validate",
            ScheduleKind::VerifyReplicas => "verify_replicas",
            ScheduleKind::Backup => "backup",
        }
    }

    /// The task kind it starts; None for `verify_replicas`, which runs no task.
    pub fn task_kind(self) -> Option<TaskKind> {
        match self {
            ScheduleKind::Update => Some(TaskKind::IncrementalUpdate),
            ScheduleKind::Import => Some(TaskKind::FullImport),
            ScheduleKind::Backfill => Some(TaskKind::Backfill),
            ScheduleKind::Validate => Some(TaskKind::Validate),
            ScheduleKind::VerifyReplicas => None,
            ScheduleKind::Backup => Some(TaskKind::Backup),
        }
    }
}

impl fmt::Display for ScheduleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which replicas a `verify_replicas` job compares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NodeSelection {
    /// Every replica connected when it fires.
    #[default]
    All,
    /// These node ids.
    Nodes(Vec<String>),
}

impl NodeSelection {
    /// Whether it is [`NodeSelection::All`].
    pub fn is_all(&self) -> bool {
        *self == NodeSelection::All
    }
}

impl Serialize for NodeSelection {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            NodeSelection::All => s.serialize_str("all"),
            NodeSelection::Nodes(ids) => ids.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for NodeSelection {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(d)
            .map_err(|_| serde::de::Error::custom("expected `all` or a list of node ids"))?
        {
            Raw::One(s) if s == "all" => Ok(NodeSelection::All),
            Raw::One(s) => Err(serde::de::Error::custom(format!(
                "{s:?}: expected `all` or a list of node ids"
            ))),
            Raw::Many(ids) => Ok(NodeSelection::Nodes(ids)),
        }
    }
}

/// Whether `name` can name a schedule (it appears in URL paths).
fn check_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(format!(
            "{name:?} must be 1 to 64 characters of A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Every problem of `schedules`, each naming its key (`schedules[2].cron`); `watchlists` and
/// `sources` are the names the config defines.
pub fn validate(
    schedules: &[ScheduleConfig],
    watchlists: &HashSet<&str>,
    sources: &HashSet<&str>,
) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut names = HashSet::new();
    for (i, s) in schedules.iter().enumerate() {
        let key = |field: &str| format!("schedules[{i}].{field}");
        if let Err(e) = check_name(&s.name) {
            issues.push(ConfigIssue::new(key("name"), e));
        } else if !names.insert(s.name.as_str()) {
            issues.push(ConfigIssue::new(
                key("name"),
                format!("{:?} is used by another schedule", s.name),
            ));
        }
        if let Err(e) = parse_cron(&s.cron) {
            issues.push(ConfigIssue::new(key("cron"), e));
        }
        if let Err(e) = parse_timezone(&s.timezone) {
            issues.push(ConfigIssue::new(key("timezone"), e));
        }
        for (j, w) in s.watchlists.iter().enumerate() {
            if !watchlists.contains(w.as_str()) {
                issues.push(ConfigIssue::new(
                    format!("schedules[{i}].watchlists[{j}]"),
                    format!("no watchlist is named {w:?}"),
                ));
            }
        }
        if let Some(source) = &s.source
            && !sources.contains(source.as_str())
        {
            issues.push(ConfigIssue::new(
                key("source"),
                format!("no source is named {source:?}"),
            ));
        }
        if let Some(d) = s.days
            && !(1..=crate::tasks::MAX_DAYS).contains(&d)
        {
            issues.push(ConfigIssue::new(
                key("days"),
                format!("{d} is out of range; use 1 to {}", crate::tasks::MAX_DAYS),
            ));
        }
        issues.extend(kind_issues(i, s));
    }
    issues
}

/// Fields that do not fit the schedule's kind.
fn kind_issues(i: usize, s: &ScheduleConfig) -> Vec<ConfigIssue> {
    let mut issues = Vec::new();
    let mut wrong = |field: &str, set: bool, applies: &str| {
        if set {
            issues.push(ConfigIssue::new(
                format!("schedules[{i}].{field}"),
                format!("applies to {applies} only, not to kind {}", s.kind),
            ));
        }
    };
    // Jobs whose task works on a selection of series.
    let is_task = !matches!(s.kind, ScheduleKind::VerifyReplicas | ScheduleKind::Backup);
    let tasks = "update, import, backfill and validate";
    wrong("watchlists", !is_task && !s.watchlists.is_empty(), tasks);
    wrong("symbols", !is_task && !s.symbols.is_empty(), tasks);
    wrong("source", !is_task && s.source.is_some(), tasks);
    wrong("interval", !is_task && s.interval.is_some(), tasks);
    wrong(
        "days",
        s.days.is_some() && !matches!(s.kind, ScheduleKind::Update | ScheduleKind::Import),
        "update and import",
    );
    wrong(
        "only_existing",
        s.only_existing && s.kind != ScheduleKind::Update,
        "update",
    );
    wrong(
        "nodes",
        s.kind != ScheduleKind::VerifyReplicas && s.nodes != NodeSelection::All,
        "verify_replicas",
    );
    if let NodeSelection::Nodes(ids) = &s.nodes {
        if ids.is_empty() {
            issues.push(ConfigIssue::new(
                format!("schedules[{i}].nodes"),
                "list at least one node id, or write `all`",
            ));
        }
        for (j, id) in ids.iter().enumerate() {
            if let Err(e) = validate_node_id(id) {
                issues.push(ConfigIssue::new(format!("schedules[{i}].nodes[{j}]"), e));
            }
        }
    }
    issues
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use dms_common::config::ConfigError;

    use crate::config::MasterConfig;

    fn load(text: &str) -> Result<MasterConfig, ConfigError> {
        dms_common::config::load_str(Path::new("dms-master.yaml"), text, Vec::new())
    }

    const BASE: &str = "
sources:
  - {type: csv, name: sample, dir: x}
watchlists:
  - {name: us, source: sample, symbols: [AAPL]}
schedules:
";

    fn error_of(schedules: &str) -> String {
        load(&format!("{BASE}{schedules}"))
            .expect_err("config is refused")
            .to_string()
    }

    #[test]
    fn a_full_schedule_loads_with_its_defaults() {
        let c = load(&format!(
            "{BASE}  - {{name: nightly, cron: '0 20,22 * * *', kind: update, watchlists: [us]}}\n  - {{name: check, cron: '*/2 * * * * *', timezone: Asia/Shanghai, kind: verify_replicas, nodes: [r1, r2]}}\n"
        ))
        .unwrap();
        let s = &c.schedules[0];
        assert_eq!(
            (
                s.timezone.as_str(),
                s.enabled,
                s.catch_up,
                s.skip_non_trading_days
            ),
            ("UTC", true, true, true)
        );
        assert_eq!(s.nodes, super::NodeSelection::All);
        assert_eq!(
            c.schedules[1].nodes,
            super::NodeSelection::Nodes(vec!["r1".into(), "r2".into()])
        );
    }

    #[test]
    fn the_shipped_default_config_has_a_daily_update_of_the_sample_data() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dms-master.yaml");
        let c: MasterConfig = dms_common::config::load(&path, Vec::new()).unwrap();
        let s = &c.schedules[0];
        assert_eq!(
            (s.kind, s.source.as_deref(), s.cron.as_str()),
            (super::ScheduleKind::Update, Some("sample"), "0 18 * * *")
        );
    }

    #[test]
    fn bad_schedules_are_refused_naming_the_key() {
        let err = error_of(
            "  - {name: a, cron: '0 18 * * *', kind: update}\n  - {name: b, cron: '0 18 * * *', kind: update}\n  - {name: c, cron: '61 18 * * *', kind: update}\n",
        );
        assert!(err.contains("schedules[2].cron"), "{err}");
        let err = error_of("  - {name: a, cron: '0 18 * *', kind: update}\n");
        assert!(
            err.contains("schedules[0].cron") && err.contains("4 fields"),
            "{err}"
        );
        let err =
            error_of("  - {name: a, cron: '0 18 * * *', timezone: Mars/Olympus, kind: update}\n");
        assert!(
            err.contains("schedules[0].timezone") && err.contains("Mars/Olympus"),
            "{err}"
        );
        let err = error_of("  - {name: a, cron: '0 18 * * *', kind: update, watchlists: [eu]}\n");
        assert!(
            err.contains("schedules[0].watchlists[0]") && err.contains("\"eu\""),
            "{err}"
        );
        let err = error_of(
            "  - {name: a, cron: '0 18 * * *', kind: update}\n  - {name: a, cron: '0 19 * * *', kind: validate}\n",
        );
        assert!(
            err.contains("schedules[1].name") && err.contains("another schedule"),
            "{err}"
        );
        let err = error_of("  - {name: a, cron: '0 18 * * *', kind: refresh}\n");
        assert!(
            err.contains("schedules[0].kind") && err.contains("refresh"),
            "{err}"
        );
        let err = error_of("  - {name: 'a b', cron: '0 18 * * *', kind: update}\n");
        assert!(err.contains("schedules[0].name"), "{err}");
        let err =
            error_of("  - {name: a, cron: '0 18 * * *', kind: verify_replicas, symbols: [AAPL]}\n");
        assert!(err.contains("schedules[0].symbols"), "{err}");
        let err = error_of("  - {name: a, cron: '0 18 * * *', kind: update, nodes: [r1]}\n");
        assert!(err.contains("schedules[0].nodes"), "{err}");
        let err = error_of("  - {name: a, cron: '0 18 * * *', kind: update, source: nope}\n");
        assert!(err.contains("schedules[0].source"), "{err}");
    }
}
