//! The counters of STATS as Prometheus text: [`render`] turns STATS'
//! snapshot into the exposition format, so every counter is drawn from the
//! one place that collects them. The web listener (`crate::web`) serves it
//! on `/metrics`.

use std::fmt::Write as _;

use serde_json::Value;

/// A label value, escaped as the text format wants.
fn label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// STATS' snapshot (see `Stats::snapshot`) as Prometheus text, with when
/// the last tick succeeded (ms since the epoch).
pub fn render(s: &Value, last_good_tick: Option<i64>) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>| {
        let _ = writeln!(out, "# HELP meetingd_{name} {help}");
        let _ = writeln!(out, "# TYPE meetingd_{name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "meetingd_{name}{labels} {value}");
        }
    };
    let number = |v: &Value| v.as_f64().unwrap_or(0.0);
    let plain = |v: &Value| vec![(String::new(), number(v))];
    let labelled = |key: &str, map: &Value| -> Vec<(String, f64)> {
        map.as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (format!("{{{key}=\"{}\"}}", label(k)), number(v)))
                    .collect()
            })
            .unwrap_or_default()
    };
    let c = &s["connections"];
    metric(
        "connections_open",
        "gauge",
        "Client connections open now.",
        plain(&c["open"]),
    );
    metric(
        "connections_total",
        "counter",
        "Client connections accepted.",
        plain(&c["total"]),
    );
    metric(
        "connections_refused_total",
        "counter",
        "Connections turned away with unavailable, by the limit they met.",
        labelled("reason", &c["refused_by_reason"]),
    );
    metric(
        "partial_lines_total",
        "counter",
        "Last lines without their newline, dropped when their connection closed (never run).",
        plain(&c["partial_lines"]),
    );
    metric(
        "connections_buffered_bytes",
        "gauge",
        "Bytes the connections' read and write buffers hold now (0 when every connection waits).",
        plain(&c["buffered_bytes"]),
    );
    metric(
        "requests_total",
        "counter",
        "Requests by command.",
        labelled("command", &s["requests"]),
    );
    metric(
        "errors_total",
        "counter",
        "Error replies by code.",
        labelled("code", &s["errors"]),
    );
    metric(
        "command_errors_total",
        "counter",
        "Error replies by command.",
        labelled("command", &s["errors_by_command"]),
    );
    let mut quantiles = Vec::new();
    let mut counts = Vec::new();
    if let Some(latency) = s["latency"].as_object() {
        for (command, h) in latency {
            let command = label(command);
            for (q, field) in [
                ("0.5", "p50_ms"),
                ("0.9", "p90_ms"),
                ("0.99", "p99_ms"),
                ("0.999", "p999_ms"),
            ] {
                quantiles.push((
                    format!("{{command=\"{command}\",quantile=\"{q}\"}}"),
                    number(&h[field]) / 1000.0,
                ));
            }
            counts.push((format!("{{command=\"{command}\"}}"), number(&h["count"])));
        }
    }
    metric(
        "request_latency_seconds",
        "gauge",
        "Request latency quantiles by command since start.",
        quantiles,
    );
    metric(
        "request_latency_count",
        "counter",
        "Requests timed, by command.",
        counts,
    );
    let t = &s["ticks"];
    metric(
        "ticks_total",
        "counter",
        "Scheduler ticks by result.",
        ["run", "failed", "skipped", "retried"]
            .iter()
            .map(|r| (format!("{{result=\"{r}\"}}"), number(&t[*r])))
            .collect(),
    );
    let last_good = last_good_tick.map_or(0.0, |ms| ms as f64 / 1000.0);
    metric(
        "last_good_tick_timestamp_seconds",
        "gauge",
        "When the last tick succeeded (0: never).",
        vec![(String::new(), last_good)],
    );
    let w = &s["watch"];
    metric(
        "watchers",
        "gauge",
        "Connections watching an instance.",
        plain(&w["watchers"]),
    );
    metric(
        "watched_instances",
        "gauge",
        "Instances with a reader.",
        plain(&w["instances"]),
    );
    metric(
        "watch_readers",
        "gauge",
        "Readers of watched instances, a Redis connection each.",
        plain(&w["readers"]),
    );
    metric(
        "watchers_dropped_total",
        "counter",
        "Watchers dropped for falling behind.",
        plain(&w["watchers_dropped"]),
    );
    metric(
        "watch_dropped_events_total",
        "counter",
        "Entries dropped watchers missed.",
        plain(&w["dropped_events"]),
    );
    let a = &s["archive"];
    if a.is_object() {
        metric(
            "archive_waiting",
            "gauge",
            "Outbox entries waiting to be archived, every partition.",
            plain(&a["waiting"]),
        );
        metric(
            "archive_oldest_age_seconds",
            "gauge",
            "Age of the oldest outbox entry waiting (0: none).",
            plain(&a["oldest_age_s"]),
        );
        metric(
            "archive_entries_total",
            "counter",
            "Outbox entries archived by this daemon.",
            plain(&a["entries"]),
        );
        metric(
            "archive_rows_total",
            "counter",
            "Rows written to the archive database by this daemon.",
            plain(&a["rows"]),
        );
        metric(
            "archive_failures_total",
            "counter",
            "Failed archiving attempts (they are retried).",
            plain(&a["failures"]),
        );
        metric(
            "archive_paused_seconds_total",
            "counter",
            "Time the archiver paused to leave Redis to the requests (archive.busy_percent).",
            plain(&a["paused_s"]),
        );
    }
    if let Some(rtt) = s["redis_rtt_ms"].as_f64() {
        metric(
            "redis_rtt_seconds",
            "gauge",
            "One PING to Redis, at this scrape.",
            vec![(String::new(), rtt / 1000.0)],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Refusal, Stats};
    use std::time::Duration;

    #[test]
    fn refusals_are_labelled_by_reason() {
        let stats = Stats::default();
        stats.connection_refused(Refusal::PerUid);
        stats.connection_refused(Refusal::PerUid);
        stats.connection_refused(Refusal::FileDescriptors);
        let text = render(&stats.snapshot(), None);
        for line in [
            "meetingd_connections_refused_total{reason=\"max_connections\"} 0",
            "meetingd_connections_refused_total{reason=\"admin_reserve\"} 0",
            "meetingd_connections_refused_total{reason=\"per_uid\"} 2",
            "meetingd_connections_refused_total{reason=\"file_descriptors\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
        assert_eq!(stats.snapshot()["connections"]["refused"], 3);
    }

    #[test]
    fn buffered_bytes_follow_the_buffers() {
        let stats = Stats::default();
        stats.buffers_resized(0, 4096);
        stats.buffers_resized(0, 100);
        stats.buffers_resized(4096, 0);
        let text = render(&stats.snapshot(), None);
        let line = "meetingd_connections_buffered_bytes 100";
        assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
    }

    #[test]
    fn the_archive_is_rendered_only_when_the_daemon_archives() {
        let stats = Stats::default();
        let text = render(&stats.snapshot(), None);
        assert!(!text.contains("meetingd_archive"), "{text}");
        stats.archive_started();
        stats.archived(10);
        stats.archived(5);
        stats.archive_failed();
        stats.archive_backlog(7, None);
        stats.archive_paused(Duration::from_millis(1500));
        let text = render(&stats.snapshot(), None);
        for line in [
            "meetingd_archive_waiting 7",
            "meetingd_archive_oldest_age_seconds 0",
            "meetingd_archive_entries_total 2",
            "meetingd_archive_rows_total 15",
            "meetingd_archive_failures_total 1",
            "meetingd_archive_paused_seconds_total 1.5",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in {text}");
        }
    }
}
