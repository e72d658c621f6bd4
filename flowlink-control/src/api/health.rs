//! `/healthz` (the process answers), `/readyz` (the database answers and its schema is
//! current) and `/metrics` (Prometheus text; the database gauges are refreshed at each scrape).

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use crate::metrics::refresh_store_gauges;
use crate::store::MigrationStatus;

/// How long `/readyz` waits for the database before answering 503.
pub const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// The health routes (outside `/api/v1`: probes and scrapers, not people).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok\n"
}

fn unavailable(message: String) -> Response {
    (StatusCode::SERVICE_UNAVAILABLE, message).into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let check = async {
        state.store.ping().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: database unreachable");
            "database unreachable\n".to_string()
        })?;
        state.store.migration_status().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness: cannot read migrations");
            "cannot read the migration state\n".to_string()
        })
    };
    match tokio::time::timeout(READY_TIMEOUT, check).await {
        Err(_) => unavailable(format!(
            "database did not answer within {} s\n",
            READY_TIMEOUT.as_secs()
        )),
        Ok(Err(message)) => unavailable(message),
        Ok(Ok(status)) => match schema_problem(&status) {
            None => "ready\n".into_response(),
            Some(problem) => {
                tracing::warn!(%problem, "readiness: database schema");
                unavailable(format!("{problem}\n"))
            }
        },
    }
}

/// What is wrong with the schema, in words an operator can act on; `None` when it is current.
pub fn schema_problem(status: &MigrationStatus) -> Option<String> {
    if status.is_current() {
        return None;
    }
    if status.applied.is_empty() {
        return Some(format!(
            "database schema missing: no migrations are applied (this binary has {:?}); the \
             schema may have been dropped, or database_url points at the wrong database or \
             schema; run `flowlink-control migrate` or restore it",
            status.known
        ));
    }
    let unknown: Vec<i64> = status
        .applied
        .iter()
        .filter(|v| !status.known.contains(v))
        .copied()
        .collect();
    if !unknown.is_empty() {
        return Some(format!(
            "database schema is newer than this binary: migration(s) {unknown:?} are applied \
             but this binary only knows {:?}; run the flowlink-control version that applied \
             them (or restore the database)",
            status.known
        ));
    }
    let missing: Vec<i64> = status
        .known
        .iter()
        .filter(|v| !status.applied.contains(v))
        .copied()
        .collect();
    Some(format!(
        "database schema is behind: migration(s) {missing:?} are not applied; run \
         `flowlink-control migrate`"
    ))
}

async fn metrics(State(state): State<AppState>) -> Response {
    refresh_store_gauges(
        &state.metrics,
        &state.store,
        state.config.session_idle_timeout,
    )
    .await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(applied: &[i64], known: &[i64]) -> MigrationStatus {
        MigrationStatus {
            applied: applied.to_vec(),
            known: known.to_vec(),
        }
    }

    #[test]
    fn schema_problems_are_named() {
        assert_eq!(schema_problem(&status(&[1, 2], &[1, 2])), None);
        let dropped = schema_problem(&status(&[], &[1])).unwrap_or_default();
        assert!(dropped.starts_with("database schema missing"), "{dropped}");
        let newer = schema_problem(&status(&[1, 9999], &[1])).unwrap_or_default();
        assert!(
            newer.contains("[9999]") && newer.contains("newer"),
            "{newer}"
        );
        let behind = schema_problem(&status(&[1], &[1, 2])).unwrap_or_default();
        assert!(behind.contains("[2] are not applied"), "{behind}");
    }
}
