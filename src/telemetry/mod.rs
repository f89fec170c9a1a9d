//! Telemetry: logging setup and the Prometheus metrics served at `/metrics`.
//!
//! The metric families keep the original names (`invocations_total`, `denied_total`,
//! `duration_ms`). They are fed by the projector from terminal invocation events, so after a
//! restart they count the whole log again: counters stay monotonic across restarts. The
//! `duration_ms` histogram observes each run's exact duration (nanoseconds, in fractional
//! milliseconds), so runs shorter than a millisecond still add to its sum. The
//! `projection_lag` gauge is set when `/metrics` or `/readyz` is asked; the
//! `projection_lag_ms` histogram observes, for each event the running projector applies, the
//! time from the event's `occurred_at` (decided, just before its append) to its views written.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use workspace_events::InvocationStatus;
use workspace_projections::InvocationView;

const BUCKETS_MS: [f64; 11] = [
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// Buckets of `projection_lag_ms`: the target is a p99 of 5 ms.
const LAG_BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

#[derive(Default)]
struct LagHistogram {
    buckets: [u64; LAG_BUCKETS_MS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Histogram {
    buckets: [u64; BUCKETS_MS.len()],
    count: u64,
    sum: f64,
}

#[derive(Default)]
struct Families {
    invocations: BTreeMap<(String, String), u64>,
    denied: BTreeMap<(String, String), u64>,
    duration: BTreeMap<String, Histogram>,
    lag: LagHistogram,
}

/// The service's metrics.
#[derive(Default)]
pub struct Metrics {
    families: Mutex<Families>,
    projection_lag: AtomicU64,
}

impl Metrics {
    /// Sets how many events of the log the read models have not applied yet.
    pub fn set_projection_lag(&self, events: u64) {
        self.projection_lag.store(events, Ordering::Relaxed);
    }

    /// Records how long after they were decided the projector wrote these events' views, in
    /// milliseconds.
    pub fn observe_projection_lag(&self, lags_ms: impl IntoIterator<Item = f64>) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let h = &mut f.lag;
        for ms in lags_ms {
            for (i, le) in LAG_BUCKETS_MS.iter().enumerate() {
                if ms <= *le {
                    h.buckets[i] += 1;
                }
            }
            h.count += 1;
            h.sum += ms;
        }
    }

    /// Records one terminal invocation.
    pub fn observe_invocation(&self, view: &InvocationView) {
        let mut f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        *f.invocations
            .entry((view.tool_name.clone(), view.status.as_str().to_owned()))
            .or_default() += 1;
        if view.status == InvocationStatus::Denied {
            let reason = view
                .error
                .as_ref()
                .map(|e| e.code.to_string())
                .unwrap_or_else(|| "unspecified".into());
            *f.denied
                .entry((view.tool_name.clone(), reason))
                .or_default() += 1;
        }
        let h = f.duration.entry(view.tool_name.clone()).or_default();
        let ms = view.duration_ns as f64 / 1_000_000.0;
        for (i, le) in BUCKETS_MS.iter().enumerate() {
            if ms <= *le {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += ms;
    }

    /// Prometheus text exposition (version 0.0.4).
    pub fn render(&self) -> String {
        let f = self.families.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP invocations_total Terminal invocations by tool and status."
        );
        let _ = writeln!(out, "# TYPE invocations_total counter");
        for ((tool, status), n) in &f.invocations {
            let _ = writeln!(
                out,
                "invocations_total{{tool=\"{}\",status=\"{}\"}} {n}",
                escape(tool),
                escape(status)
            );
        }
        let _ = writeln!(
            out,
            "# HELP denied_total Denied invocations by tool and reason code."
        );
        let _ = writeln!(out, "# TYPE denied_total counter");
        for ((tool, reason), n) in &f.denied {
            let _ = writeln!(
                out,
                "denied_total{{tool=\"{}\",reason=\"{}\"}} {n}",
                escape(tool),
                escape(reason)
            );
        }
        let _ = writeln!(
            out,
            "# HELP duration_ms Invocation run time in milliseconds."
        );
        let _ = writeln!(out, "# TYPE duration_ms histogram");
        for (tool, h) in &f.duration {
            let tool = escape(tool);
            for (i, le) in BUCKETS_MS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "duration_ms_bucket{{tool=\"{tool}\",le=\"{le}\"}} {}",
                    h.buckets[i]
                );
            }
            let _ = writeln!(
                out,
                "duration_ms_bucket{{tool=\"{tool}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(out, "duration_ms_sum{{tool=\"{tool}\"}} {:.3}", h.sum);
            let _ = writeln!(out, "duration_ms_count{{tool=\"{tool}\"}} {}", h.count);
        }
        let _ = writeln!(
            out,
            "# HELP projection_lag_ms Time from an event's decision to its views written by the running projector, in milliseconds."
        );
        let _ = writeln!(out, "# TYPE projection_lag_ms histogram");
        for (i, le) in LAG_BUCKETS_MS.iter().enumerate() {
            let _ = writeln!(
                out,
                "projection_lag_ms_bucket{{le=\"{le}\"}} {}",
                f.lag.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "projection_lag_ms_bucket{{le=\"+Inf\"}} {}",
            f.lag.count
        );
        let _ = writeln!(out, "projection_lag_ms_sum {:.3}", f.lag.sum);
        let _ = writeln!(out, "projection_lag_ms_count {}", f.lag.count);
        let _ = writeln!(
            out,
            "# HELP projection_lag Events in the log the read models have not applied yet."
        );
        let _ = writeln!(out, "# TYPE projection_lag gauge");
        let _ = writeln!(
            out,
            "projection_lag {}",
            self.projection_lag.load(Ordering::Relaxed)
        );
        out
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Installs the JSON log subscriber; `level` is `LOG_LEVEL` (`debug`, `info`, `warn`, `error`).
///
/// Lines go to stderr through a writer thread, so a request never waits for a `write` to
/// stderr (one per line, unbuffered, cost a fifth of the throughput at `info`). The channel
/// blocks when full instead of dropping lines: audit lines are never lost. Keep the returned
/// guard alive until exit: dropping it flushes what is queued.
pub fn init_logging(level: &str) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_new(level.to_ascii_lowercase())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("log-writer")
        .finish(std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(duration_ns: u64) -> InvocationView {
        InvocationView {
            id: "inv-1".into(),
            session_id: "session-1".into(),
            tool_name: "fs.read_file".into(),
            correlation_id: None,
            status: InvocationStatus::Succeeded,
            approved: false,
            started_at: time::OffsetDateTime::UNIX_EPOCH,
            run_started_at: None,
            completed_at: None,
            duration_ms: duration_ns / 1_000_000,
            duration_ns,
            trace_name: "workspace.tools".into(),
            span_name: "fs.read_file".into(),
            exit_code: Some(0),
            output: None,
            output_ref: None,
            logs: Vec::new(),
            logs_ref: None,
            artifacts: Vec::new(),
            error: None,
            version: 3,
        }
    }

    #[test]
    fn the_duration_histogram_sums_exact_durations_below_a_millisecond() {
        let metrics = Metrics::default();
        metrics.observe_invocation(&view(1_260_000));
        metrics.observe_invocation(&view(400_000));
        let text = metrics.render();
        assert!(
            text.contains("duration_ms_sum{tool=\"fs.read_file\"} 1.660"),
            "{text}"
        );
        assert!(
            text.contains("duration_ms_bucket{tool=\"fs.read_file\",le=\"10\"} 2"),
            "{text}"
        );
    }
}
