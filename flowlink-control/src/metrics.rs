//! Prometheus metrics, exposed at `/metrics` in the text format: requests and their latencies
//! by route pattern, `flowlink_build_info`, plus gauges other parts set. The gauges the health
//! module refreshes at each scrape are `flowlink_db_up` and `flowlink_sessions_active`
//! ([`refresh_store_gauges`]).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{Method, StatusCode};

use crate::store::{Store, now_us};

/// Gauge: 1 when the database answered the last scrape's query, else 0.
pub const DB_UP: &str = "flowlink_db_up";
/// Gauge: signed-in browser sessions (second factor done, not revoked, not expired, used within
/// the idle timeout).
pub const SESSIONS_ACTIVE: &str = "flowlink_sessions_active";
/// How long a scrape waits for the database before reporting it down.
pub const DB_TIMEOUT: Duration = Duration::from_secs(2);

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    gauges: Mutex<BTreeMap<&'static str, (&'static str, i64)>>,
}

impl Metrics {
    /// Counts one request.
    pub fn observe_request(
        &self,
        method: &Method,
        route: &str,
        status: StatusCode,
        took: Duration,
    ) {
        if let Ok(mut r) = self.requests.lock() {
            *r.entry((method.to_string(), route.to_string(), status.as_u16()))
                .or_insert(0) += 1;
        }
        if let Ok(mut l) = self.latency.lock() {
            let h = l.entry(route.to_string()).or_default();
            let secs = took.as_secs_f64();
            for (i, bound) in BUCKETS.iter().enumerate() {
                if secs <= *bound {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    /// Sets a gauge (created on first use with its help text).
    pub fn set_gauge(&self, name: &'static str, help: &'static str, value: i64) {
        if let Ok(mut g) = self.gauges.lock() {
            g.insert(name, (help, value));
        }
    }

    /// Removes a gauge (its value is not known any more).
    pub fn remove_gauge(&self, name: &str) {
        if let Ok(mut g) = self.gauges.lock() {
            g.remove(name);
        }
    }

    /// A gauge's current value, if set.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        self.gauges
            .lock()
            .ok()
            .and_then(|g| g.get(name).map(|(_, v)| *v))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP flowlink_build_info The running flowlink-control's version (value always 1).\n",
        );
        out.push_str("# TYPE flowlink_build_info gauge\n");
        let _ = writeln!(
            out,
            "flowlink_build_info{{version=\"{}\"}} 1",
            escape(env!("CARGO_PKG_VERSION"))
        );
        out.push_str("# HELP flowlink_http_requests_total HTTP requests by method, route pattern and status.\n");
        out.push_str("# TYPE flowlink_http_requests_total counter\n");
        if let Ok(r) = self.requests.lock() {
            for ((method, route, status), n) in r.iter() {
                let _ = writeln!(
                    out,
                    "flowlink_http_requests_total{{method=\"{method}\",route=\"{}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP flowlink_http_request_duration_seconds HTTP request latency by route pattern.\n");
        out.push_str("# TYPE flowlink_http_request_duration_seconds histogram\n");
        if let Ok(l) = self.latency.lock() {
            for (route, h) in l.iter() {
                let route = escape(route);
                for (i, bound) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "flowlink_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{bound}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "flowlink_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "flowlink_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "flowlink_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    h.count
                );
            }
        }
        if let Ok(g) = self.gauges.lock() {
            for (name, (help, value)) in g.iter() {
                let _ = writeln!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Refreshes the gauges that come from the database: [`DB_UP`] (a `SELECT 1` round trip) and
/// [`SESSIONS_ACTIVE`]. Each query waits at most [`DB_TIMEOUT`]. When the database does not
/// answer, `flowlink_db_up` is 0; when the sessions cannot be counted (database down, schema
/// gone), the session gauge is withdrawn rather than left stale.
pub async fn refresh_store_gauges(metrics: &Metrics, store: &Store, idle_timeout: Duration) {
    let up = matches!(
        tokio::time::timeout(DB_TIMEOUT, store.ping()).await,
        Ok(Ok(()))
    );
    metrics.set_gauge(DB_UP, DB_UP_HELP, i64::from(up));
    if !up {
        tracing::warn!("metrics: the database did not answer");
        metrics.remove_gauge(SESSIONS_ACTIVE);
        return;
    }
    let idle_us = i64::try_from(idle_timeout.as_micros()).unwrap_or(i64::MAX / 2);
    let now = now_us();
    // Counted here rather than in the store module: a metrics-only query over the sessions
    // table, with the conditions of `Store::live_session` for a signed-in session.
    let count = sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM sessions WHERE revoked_at IS NULL AND stage = 'complete' \
         AND expires_at > $1 AND last_seen_at > $2",
    )
    .bind(now)
    .bind(now.saturating_sub(idle_us))
    .fetch_one(store.pool());
    match tokio::time::timeout(DB_TIMEOUT, count).await {
        Ok(Ok(n)) => metrics.set_gauge(SESSIONS_ACTIVE, SESSIONS_HELP, n),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "metrics: cannot count sessions");
            metrics.remove_gauge(SESSIONS_ACTIVE);
        }
        Err(_) => {
            tracing::warn!("metrics: counting sessions timed out");
            metrics.remove_gauge(SESSIONS_ACTIVE);
        }
    }
}

const DB_UP_HELP: &str = "Whether the database answered at the last scrape (1) or not (0).";
const SESSIONS_HELP: &str =
    "Signed-in browser sessions: not revoked, not expired, used within the idle timeout.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_counters_histogram_gauges_and_build_info() {
        let m = Metrics::default();
        m.observe_request(
            &Method::GET,
            "/api/v1/orgs/{org}",
            StatusCode::OK,
            Duration::from_millis(3),
        );
        m.set_gauge(DB_UP, DB_UP_HELP, 1);
        let text = m.render();
        assert!(text.contains(
            "flowlink_http_requests_total{method=\"GET\",route=\"/api/v1/orgs/{org}\",status=\"200\"} 1"
        ));
        assert!(text.contains(
            "flowlink_http_request_duration_seconds_bucket{route=\"/api/v1/orgs/{org}\",le=\"0.0025\"} 0"
        ));
        assert!(text.contains(
            "flowlink_http_request_duration_seconds_bucket{route=\"/api/v1/orgs/{org}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("# TYPE flowlink_db_up gauge\nflowlink_db_up 1\n"));
        assert!(text.contains(&format!(
            "flowlink_build_info{{version=\"{}\"",
            env!("CARGO_PKG_VERSION")
        )));
        m.remove_gauge(DB_UP);
        assert!(!m.render().contains("flowlink_db_up"));
        assert_eq!(m.gauge(DB_UP), None);
    }
}
