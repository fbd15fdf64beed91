//! `POST /api/data/import-file`: a file import from an uploaded body ([`spool`]ed to the
//! uploads directory within the size and free-space limits) or from a named file.

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{bad_request, error, internal, task_error};
use crate::api::state::ApiState;
use crate::tasks::request;

/// `POST /api/data/import-file?…`: the body is the file (streamed to the uploads directory,
/// at most `file_import.max_upload_bytes`, leaving `file_import.min_free_bytes` free), or
/// `path=` names a file inside `file_import.allowed_dirs` and the body is empty. A dry run
/// answers 200 with its report; an import is queued (202).
pub(super) async fn import_file(
    State(s): State<ApiState>,
    Query(params): Query<Vec<(String, String)>>,
    headers: axum::http::HeaderMap,
    body: axum::body::Body,
) -> Response {
    let (query, filename) = match crate::data::import::file::FileImportQuery::from_params(params) {
        Ok(q) => q,
        Err(e) => return bad_request(e),
    };
    let upload = if query.path.is_some() {
        None
    } else {
        let name = filename.unwrap_or_else(|| "upload".into());
        let announced = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        match spool(body, &s.uploads_dir, &name, announced, &s.file_import).await {
            Ok(Some(path)) => Some((path, name)),
            Ok(None) => None,
            Err(e) => return e,
        }
    };
    let allowed = &s.file_import.allowed_dirs;
    match request::import_file(&s.tasks, query, upload, allowed).await {
        Ok(request::FileImportAnswer::Queued(task)) => (
            StatusCode::ACCEPTED,
            Json(json!({
                "success": true,
                "task_id": task.id,
                "message": format!("file import queued as {}", task.id),
            })),
        )
            .into_response(),
        Ok(request::FileImportAnswer::DryRun(report)) => {
            Json(json!({"success": true, "data": report})).into_response()
        }
        Err(e) => task_error(e),
    }
}

/// Bytes free for an unprivileged writer on the disk of `dir` (None when it cannot be told).
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    Some(st.blocks_available() as u64 * st.fragment_size() as u64)
}

/// How often an upload re-checks the free space while it is written.
const FREE_SPACE_CHECK_BYTES: u64 = 64 << 20;

/// Writes a request body to a new file in `dir` (synced), or None when the body is empty.
/// Refuses a body over `limits.max_upload_bytes` (413) and one that would leave less than
/// `limits.min_free_bytes` free on the disk (507), before it starts (from the announced
/// length) and while it is written; nothing is left behind.
async fn spool(
    body: axum::body::Body,
    dir: &std::path::Path,
    name: &str,
    announced: Option<u64>,
    limits: &crate::data::import::file::config::FileImportConfig,
) -> Result<Option<std::path::PathBuf>, Response> {
    use futures::TryStreamExt;
    use tokio::io::AsyncWriteExt;
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let max = limits.max_upload_bytes.0;
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the upload is larger than file_import.max_upload_bytes ({})",
                limits.max_upload_bytes
            ),
        )
    };
    let no_space = |free: u64| {
        error(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the upload would leave less than file_import.min_free_bytes ({}) free on the disk of the uploads directory ({free} bytes free)",
                limits.min_free_bytes
            ),
        )
    };
    if announced.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    if let Err(e) = tokio::fs::create_dir_all(dir).await {
        return Err(internal(format!(
            "the uploads directory {} cannot be created: {e}",
            dir.display()
        )));
    }
    let enough = |free: Option<u64>, more: u64| match free {
        Some(f) if f < more.saturating_add(limits.min_free_bytes.0) => Err(f),
        _ => Ok(()),
    };
    if let Err(free) = enough(free_bytes(dir), announced.unwrap_or(0)) {
        return Err(no_space(free));
    }
    let safe: String = std::path::Path::new(name)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("upload")
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || ".-_".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!(
        "{}-{}-{safe}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.f"),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    enum Stop {
        Io(std::io::Error),
        TooLarge,
        NoSpace(u64),
    }
    let write = async {
        let mut file = tokio::fs::File::create(&path).await.map_err(Stop::Io)?;
        let mut stream = body.into_data_stream();
        let (mut written, mut checked) = (0u64, 0u64);
        while let Some(chunk) = stream
            .try_next()
            .await
            .map_err(|e| Stop::Io(std::io::Error::other(format!("the upload was cut: {e}"))))?
        {
            written += chunk.len() as u64;
            if written > max {
                return Err(Stop::TooLarge);
            }
            if written - checked >= FREE_SPACE_CHECK_BYTES {
                checked = written;
                enough(free_bytes(dir), 0).map_err(Stop::NoSpace)?;
            }
            file.write_all(&chunk).await.map_err(Stop::Io)?;
        }
        file.sync_all().await.map_err(Stop::Io)?;
        Ok::<u64, Stop>(written)
    };
    let result = write.await;
    if !matches!(result, Ok(n) if n > 0) {
        let _ = tokio::fs::remove_file(&path).await;
    }
    match result {
        Ok(0) => Ok(None),
        Ok(_) => Ok(Some(path)),
        Err(Stop::TooLarge) => Err(too_large()),
        Err(Stop::NoSpace(free)) => Err(no_space(free)),
        Err(Stop::Io(e)) => Err(internal(format!(
            "the upload cannot be stored in {}: {e}",
            dir.display()
        ))),
    }
}
