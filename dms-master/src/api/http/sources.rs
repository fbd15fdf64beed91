//! The SQL sources' routes: the tables of a source's database (`/api/sources/{name}/tables`)
//! and a preview of its first rows as they would be imported (`/api/sources/{name}/preview`).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{bad_request, error};
use crate::api::state::ApiState;

/// The SQL-table source `name`, or the 404 naming it.
fn sql_source<'a>(
    s: &'a ApiState,
    name: &str,
) -> Result<&'a crate::sources::sql::SqlTable, Response> {
    s.tasks.sql_source(name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            format!("no SQL source named {name:?} (see sources[] with type: sql)"),
        )
    })
}

/// `GET /api/sources/{name}/tables`: the tables of a SQL source's database and their columns
/// with types, to choose a table and a mapping.
pub(super) async fn source_tables(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let table = match sql_source(&s, &name) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match table.tables().await {
        Ok(t) => Json(json!({"success": true, "count": t.len(), "data": t})).into_response(),
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}

/// Query of `GET /api/sources/{name}/preview`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreviewQuery {
    limit: Option<usize>,
}

/// `GET /api/sources/{name}/preview?limit=`: the first rows of a SQL source as they would be
/// imported with its mapping (bars with their series), and the rows that are not bars.
pub(super) async fn source_preview(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    query: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let limit = match query {
        Ok(Query(q)) => q.limit.unwrap_or(20),
        Err(_) => return bad_request("parameter `limit`: give a number of rows, 1 to 1000"),
    };
    if !(1..=1000).contains(&limit) {
        return bad_request(format!(
            "parameter `limit`: {limit} is not between 1 and 1000"
        ));
    }
    let table = match sql_source(&s, &name) {
        Ok(t) => t,
        Err(r) => return r,
    };
    match table.preview(limit).await {
        Ok(rows) => {
            let (mut bars, mut problems) = (Vec::new(), Vec::new());
            for row in rows {
                match row {
                    crate::sources::sql::SqlRow::Bar(key, bar) => {
                        let mut v = bar.to_json();
                        v["symbol"] = json!(key.symbol);
                        v["interval"] = json!(key.interval);
                        bars.push(v);
                    }
                    crate::sources::sql::SqlRow::Problem(p) => problems.push(p),
                }
            }
            Json(json!({
                "success": true,
                "mode": table.config().mode,
                "key": table.config().key_columns(),
                "data": bars,
                "problems": problems,
            }))
            .into_response()
        }
        Err(e) => error(StatusCode::BAD_GATEWAY, e),
    }
}
