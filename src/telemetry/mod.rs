//! Telemetry: logging setup and the metrics served at `/metrics`, through `prometheus-client`
//! (the Prometheus organisation's client) in the OpenMetrics text format.
//!
//! The metric families keep the original names (`invocations_total`, `denied_total`,
//! `duration_ms`). They are fed by the projector from terminal invocation events, so after a
//! restart they count the whole log again: counters stay monotonic across restarts. The
//! `duration_ms` histogram observes each run's exact duration (nanoseconds, in fractional
//! milliseconds), so runs shorter than a millisecond still add to its sum. The
//! `projection_lag` gauge is set when `/metrics` or `/readyz` is asked; the
//! `projection_lag_ms` histogram observes, for each event the running projector applies, the
//! time from the event's `occurred_at` (decided, just before its append) to its views written,
//! and `projection_batch_events` / `projection_apply_ms` each batch it wrote and how long the
//! write took, which tell whether the lag is the write or the wait before it.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use workspace_events::InvocationStatus;
use workspace_projections::InvocationView;

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const BUCKETS_MS: [f64; 11] = [
    10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0, 60000.0,
];

/// Buckets of `projection_lag_ms`: the target is a p99 of 5 ms.
const LAG_BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 1000.0, 5000.0,
];

/// Buckets of `projection_apply_ms`: one store write of a batch.
const APPLY_BUCKETS_MS: [f64; 12] = [
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 25.0, 100.0, 1000.0, 5000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolStatus {
    tool: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolReason {
    tool: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToolLabel {
    tool: String,
}

fn duration_histogram() -> Histogram {
    Histogram::new(BUCKETS_MS)
}

/// The service's metrics.
pub struct Metrics {
    registry: Registry,
    invocations: Family<ToolStatus, Counter>,
    denied: Family<ToolReason, Counter>,
    duration: Family<ToolLabel, Histogram, fn() -> Histogram>,
    lag: Histogram,
    apply: Histogram,
    batch: Histogram,
    projection_lag: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let invocations = Family::<ToolStatus, Counter>::default();
        let denied = Family::<ToolReason, Counter>::default();
        let duration = Family::<ToolLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        let lag = Histogram::new(LAG_BUCKETS_MS);
        let apply = Histogram::new(APPLY_BUCKETS_MS);
        // 1, 2, 4 … 1024 events: a projector batch holds at most about a thousand.
        let batch = Histogram::new(exponential_buckets(1.0, 2.0, 11));
        let projection_lag = Gauge::default();
        let mut registry = Registry::default();
        // Counters are registered without `_total`: the client adds it to their samples.
        registry.register(
            "invocations",
            "Terminal invocations by tool and status",
            invocations.clone(),
        );
        registry.register(
            "denied",
            "Denied invocations by tool and reason code",
            denied.clone(),
        );
        registry.register(
            "duration_ms",
            "Invocation run time in milliseconds",
            duration.clone(),
        );
        registry.register(
            "projection_lag_ms",
            "Time from an event's decision to its views written by the running projector, in \
             milliseconds",
            lag.clone(),
        );
        registry.register(
            "projection_apply_ms",
            "Time the running projector took to write one batch's views, in milliseconds",
            apply.clone(),
        );
        registry.register(
            "projection_batch_events",
            "Events in each batch the running projector wrote",
            batch.clone(),
        );
        registry.register(
            "projection_lag",
            "Events in the log the read models have not applied yet",
            projection_lag.clone(),
        );
        Self {
            registry,
            invocations,
            denied,
            duration,
            lag,
            apply,
            batch,
            projection_lag,
        }
    }
}

impl Metrics {
    /// Sets how many events of the log the read models have not applied yet.
    pub fn set_projection_lag(&self, events: u64) {
        self.projection_lag
            .set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// Records how long after they were decided the projector wrote these events' views, in
    /// milliseconds.
    pub fn observe_projection_lag(&self, lags_ms: impl IntoIterator<Item = f64>) {
        for ms in lags_ms {
            self.lag.observe(ms);
        }
    }

    /// Records one batch the running projector wrote: its events, and how long the write took
    /// in milliseconds (with [`Metrics::observe_projection_lag`], where the lag goes: waiting
    /// for the batch before, or the write itself).
    pub fn observe_projection_batch(&self, events: usize, apply_ms: f64) {
        self.batch.observe(events as f64);
        self.apply.observe(apply_ms);
    }

    /// Records one terminal invocation.
    pub fn observe_invocation(&self, view: &InvocationView) {
        self.invocations
            .get_or_create(&ToolStatus {
                tool: view.tool_name.clone(),
                status: view.status.as_str().to_owned(),
            })
            .inc();
        if view.status == InvocationStatus::Denied {
            let reason = view
                .error
                .as_ref()
                .map(|e| e.code.to_string())
                .unwrap_or_else(|| "unspecified".into());
            self.denied
                .get_or_create(&ToolReason {
                    tool: view.tool_name.clone(),
                    reason,
                })
                .inc();
        }
        self.duration
            .get_or_create(&ToolLabel {
                tool: view.tool_name.clone(),
            })
            .observe(view.duration_ns as f64 / 1_000_000.0);
    }

    /// OpenMetrics text exposition ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
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
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("duration_ms_sum{tool=\"fs.read_file\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(sum.is_some_and(|s| (s - 1.66).abs() < 1e-9), "{text}");
        assert!(
            text.contains("duration_ms_bucket{le=\"10.0\",tool=\"fs.read_file\"} 2\n"),
            "{text}"
        );
    }

    #[test]
    fn every_family_is_exported_with_its_type_once_it_holds_a_series() {
        // Before anything is observed: the gauge and the lag histogram only (a labelled
        // family without a series is left out, as OpenMetrics allows).
        let empty = Metrics::default().render();
        assert!(
            empty.contains("# TYPE projection_lag gauge\nprojection_lag 0\n"),
            "{empty}"
        );
        assert!(
            empty.contains("# TYPE projection_lag_ms histogram"),
            "{empty}"
        );
        assert!(!empty.contains("invocations_total"), "{empty}");
        let metrics = Metrics::default();
        let mut denied = view(0);
        denied.status = InvocationStatus::Denied;
        metrics.observe_invocation(&denied);
        metrics.observe_projection_lag([0.7, 4.0]);
        let text = metrics.render();
        for line in [
            "# TYPE invocations counter",
            "# TYPE denied counter",
            "# TYPE duration_ms histogram",
            "# TYPE projection_lag_ms histogram",
            "# TYPE projection_lag gauge",
            "projection_lag_ms_bucket{le=\"1.0\"} 1\n",
            "projection_lag_ms_bucket{le=\"5.0\"} 2\n",
            "projection_lag_ms_count 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn a_projector_batch_is_counted_with_its_events_and_its_write_time() {
        let metrics = Metrics::default();
        metrics.observe_projection_batch(3, 0.4);
        metrics.observe_projection_batch(40, 2.5);
        let text = metrics.render();
        for line in [
            "projection_batch_events_sum 43.0\n",
            "projection_batch_events_count 2\n",
            "projection_batch_events_bucket{le=\"4.0\"} 1\n",
            "projection_apply_ms_bucket{le=\"0.5\"} 1\n",
            "projection_apply_ms_bucket{le=\"3.0\"} 2\n",
            "projection_apply_ms_count 2\n",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }

    #[test]
    fn counters_are_sampled_with_total_and_label_values_are_escaped() {
        let metrics = Metrics::default();
        let mut denied = view(0);
        denied.status = InvocationStatus::Denied;
        denied.tool_name = "fs.\"odd\"\ntool".into();
        metrics.observe_invocation(&denied);
        let text = metrics.render();
        assert!(
            text.contains(
                "invocations_total{tool=\"fs.\\\"odd\\\"\\ntool\",status=\"denied\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "denied_total{tool=\"fs.\\\"odd\\\"\\ntool\",reason=\"unspecified\"} 1\n"
            ),
            "{text}"
        );
    }
}
