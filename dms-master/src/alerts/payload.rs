//! The JSON bodies of alert messages, one shape per [`WebhookFormat`].

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::config::WebhookFormat;
use super::{Alert, Status};

/// The body `format` expects for `alert` in `status`, sent at `at`.
pub fn render(format: WebhookFormat, alert: &Alert, status: Status, at: DateTime<Utc>) -> Value {
    let at = at.to_rfc3339_opts(SecondsFormat::Secs, true);
    match format {
        WebhookFormat::Generic => json!({
            "status": status.as_str(),
            "key": alert.key,
            "kind": alert.kind.as_str(),
            "severity": alert.severity.as_str(),
            "summary": alert.summary,
            "details": alert.details,
            "at": at,
        }),
        WebhookFormat::Dingtalk => json!({
            "msgtype": "markdown",
            "markdown": {"title": title(alert, status), "text": markdown(alert, status, &at)},
        }),
        WebhookFormat::Wecom => json!({
            "msgtype": "markdown",
            "markdown": {"content": markdown(alert, status, &at)},
        }),
        WebhookFormat::Slack => json!({"text": slack_text(alert, status, &at)}),
    }
}

fn title(alert: &Alert, status: Status) -> String {
    format!("[DMS {}] {}", status.as_str().to_uppercase(), alert.summary)
}

/// Markdown as DingTalk and WeCom robots render it.
fn markdown(alert: &Alert, status: Status, at: &str) -> String {
    let mut text = format!(
        "### {}\n\n- **key**: {}\n- **kind**: {}\n- **severity**: {}\n- **at**: {}",
        title(alert, status),
        alert.key,
        alert.kind.as_str(),
        alert.severity.as_str(),
        at
    );
    if !alert.details.is_empty() {
        text.push_str("\n\n");
        text.push_str(&alert.details);
    }
    text
}

/// Slack's mrkdwn: bold is `*…*`.
fn slack_text(alert: &Alert, status: Status, at: &str) -> String {
    let mut text = format!(
        "*{}*\nkey: `{}` · kind: {} · severity: {} · at: {}",
        title(alert, status),
        alert.key,
        alert.kind.as_str(),
        alert.severity.as_str(),
        at
    );
    if !alert.details.is_empty() {
        text.push('\n');
        text.push_str(&alert.details);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::alerts::{AlertKind, Severity};

    fn alert() -> Alert {
        Alert {
            key: "task_failed:t-1".into(),
            kind: AlertKind::TaskFailed,
            severity: Severity::Critical,
            summary: "task t-1 (full_import) failed".into(),
            details: "every series failed".into(),
        }
    }

    fn keys(m: &serde_json::Map<String, Value>) -> Vec<&str> {
        let mut k: Vec<&str> = m.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    fn at() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-23T18:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn generic_payload_is_a_flat_object_with_every_field() {
        let v = render(WebhookFormat::Generic, &alert(), Status::Firing, at());
        assert_eq!(
            v,
            json!({
                "status": "firing",
                "key": "task_failed:t-1",
                "kind": "task_failed",
                "severity": "critical",
                "summary": "task t-1 (full_import) failed",
                "details": "every series failed",
                "at": "2026-11-23T18:00:00Z",
            })
        );
        let v = render(WebhookFormat::Generic, &alert(), Status::Resolved, at());
        assert_eq!(v["status"], "resolved");
    }

    #[test]
    fn dingtalk_payload_is_markdown_with_title_and_text() {
        let v = render(WebhookFormat::Dingtalk, &alert(), Status::Firing, at());
        assert_eq!(v["msgtype"], "markdown");
        let md = v["markdown"].as_object().unwrap();
        assert_eq!(keys(md), ["text", "title"], "exactly title and text");
        assert_eq!(md["title"], "[DMS FIRING] task t-1 (full_import) failed");
        let text = md["text"].as_str().unwrap();
        assert!(text.starts_with("### [DMS FIRING]"), "{text}");
        assert!(text.contains("task_failed:t-1") && text.contains("every series failed"));
    }

    #[test]
    fn wecom_payload_is_markdown_with_content() {
        let v = render(WebhookFormat::Wecom, &alert(), Status::Resolved, at());
        assert_eq!(v["msgtype"], "markdown");
        let md = v["markdown"].as_object().unwrap();
        assert_eq!(keys(md), ["content"]);
        let content = md["content"].as_str().unwrap();
        assert!(content.starts_with("### [DMS RESOLVED]"), "{content}");
        assert!(content.contains("2026-11-23T18:00:00Z"));
    }

    #[test]
    fn slack_payload_is_text_only() {
        let v = render(WebhookFormat::Slack, &alert(), Status::Firing, at());
        let obj = v.as_object().unwrap();
        assert_eq!(keys(obj), ["text"]);
        let text = obj["text"].as_str().unwrap();
        assert!(
            text.starts_with("*[DMS FIRING] task t-1 (full_import) failed*\n"),
            "{text}"
        );
        assert!(text.contains("`task_failed:t-1`") && text.ends_with("every series failed"));
    }
}
