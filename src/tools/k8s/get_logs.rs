//! `k8s.get_logs`: the log of a pod's container, capped.
//!
//! The API server is asked for at most [`READ_CEILING`] bytes (after `tail_lines` and
//! `since_seconds`); all of them are read and counted (`total_bytes`), and the **last**
//! `max_bytes` of them are returned (the end of a log is what explains a failure), starting
//! at a line when one starts in that window. `truncated` says bytes were left out;
//! `total_bytes_exact` is false when the ceiling was reached (the log may be longer).

use futures::AsyncReadExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::LogParams;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{ObjectName, api_failure, base, foreign_runner, namespace, object_name};
use crate::error_code::ErrorCode;
use crate::tools::args::Count;
use crate::tools::{Completed, Metadata, Tool, ToolContext, ToolFailure};

/// The most log bytes read from the API server for one call.
pub const READ_CEILING: u64 = 8 * 1024 * 1024;

/// Arguments of `k8s.get_logs`.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The pod.
    pub pod_name: ObjectName,
    /// Namespace (default and only allowed value: the session's).
    #[serde(default)]
    pub namespace: Option<String>,
    /// The container (default: the pod's only container).
    #[serde(default)]
    pub container: Option<ObjectName>,
    /// Only the last this many lines (capped at 100000).
    #[serde(default)]
    pub tail_lines: Option<Count<1000, 100_000>>,
    /// Only lines of the last this many seconds.
    #[serde(default)]
    pub since_seconds: Option<Count<3600, { 30 * 86_400 }>>,
    /// The previous (terminated) instance of the container.
    #[serde(default)]
    pub previous: bool,
    /// Return at most this many bytes, the last ones (default 65536, capped at 1048576).
    #[serde(default)]
    pub max_bytes: Count<{ 64 * 1024 }, { 1024 * 1024 }>,
}

/// Output of `k8s.get_logs`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Output {
    /// The pod.
    pub pod_name: String,
    /// Its namespace.
    pub namespace: String,
    /// The container asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The log text (the last `returned_bytes` bytes read; invalid UTF-8 replaced).
    pub logs: String,
    /// Bytes returned.
    pub returned_bytes: usize,
    /// Bytes the API server sent.
    pub total_bytes: u64,
    /// Whether bytes were left out (`returned_bytes < total_bytes`).
    pub truncated: bool,
    /// False when the read stopped at the ceiling (8 MiB): the log may be longer.
    pub total_bytes_exact: bool,
}

/// `k8s.get_logs`.
pub struct GetLogs;

/// The last `max` bytes of `buf` (`dropped`: bytes before `buf` were already let go), from
/// the first line start in that window unless the window starts a line itself.
fn tail(buf: &[u8], max: usize, dropped: bool) -> &[u8] {
    if buf.len() <= max && !dropped {
        return buf;
    }
    let start = buf.len().saturating_sub(max);
    let window = &buf[start..];
    if start > 0 && buf[start - 1] == b'\n' {
        return window;
    }
    match window.iter().position(|&b| b == b'\n') {
        Some(i) if i + 1 < window.len() => &window[i + 1..],
        _ => window,
    }
}

impl Tool for GetLogs {
    type Args = Args;
    type Output = Output;

    fn metadata(&self) -> Metadata {
        Metadata {
            examples: vec![
                json!({"pod_name": "web-5d8c7b9f4-x2x7q"}),
                json!({"pod_name": "web-5d8c7b9f4-x2x7q", "container": "web", "tail_lines": 200, "previous": true}),
            ],
            ..base(
                "k8s.get_logs",
                "Read a pod container's log (tail_lines, since_seconds, previous). The last \
                 max_bytes are returned (default 65536, capped at 1 MiB) with total_bytes and \
                 truncated; at most 8 MiB are read. Runner pods of other sessions cannot be \
                 read.",
                30,
            )
        }
    }

    async fn run(&self, ctx: &ToolContext, args: Args) -> Result<Completed<Output>, ToolFailure> {
        let (client, ns) = namespace(ctx, args.namespace.as_deref())?;
        let pod_name = object_name("pod_name", &args.pod_name)?.to_owned();
        let container = match &args.container {
            Some(c) => Some(object_name("container", c)?.to_owned()),
            None => None,
        };
        let api: Api<Pod> = Api::namespaced(client, &ns);
        // Another session's runner answers as if it did not exist.
        let pod = api
            .get(&pod_name)
            .await
            .map_err(|e| api_failure(&format!("pod {pod_name}"), e))?;
        if foreign_runner(ctx, &pod.metadata) {
            return Err(ToolFailure::new(
                ErrorCode::NotFound,
                format!("pod {pod_name}: not found"),
            ));
        }
        let lp = LogParams {
            container: container.clone(),
            previous: args.previous,
            tail_lines: args.tail_lines.map(|t| t.get() as i64),
            since_seconds: args.since_seconds.map(|s| s.get() as i64),
            limit_bytes: Some(READ_CEILING as i64),
            ..LogParams::default()
        };
        let mut stream = api
            .log_stream(&pod_name, &lp)
            .await
            .map_err(|e| api_failure(&format!("logs of pod {pod_name}"), e))?;
        let max = usize::try_from(args.max_bytes.get()).unwrap_or(usize::MAX);
        // Keeps at most 2 × max bytes: cut back to max + 1 (the byte before the window tells
        // whether it starts a line) whenever it doubles.
        let mut kept: Vec<u8> = Vec::new();
        let mut dropped = false;
        let mut total: u64 = 0;
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = stream.read(&mut chunk).await.map_err(|e| {
                tracing::warn!(error = %e, "reading a pod log failed");
                ToolFailure::new(
                    ErrorCode::Unavailable,
                    format!("logs of pod {pod_name}: the stream broke"),
                )
            })?;
            if n == 0 {
                break;
            }
            total += n as u64;
            kept.extend_from_slice(&chunk[..n]);
            if kept.len() > 2 * max + 1 {
                kept.drain(..kept.len() - (max + 1));
                dropped = true;
            }
        }
        let returned = tail(&kept, max, dropped);
        let logs = String::from_utf8_lossy(returned).into_owned();
        let returned_bytes = returned.len();
        let summary = format!(
            "read {total} bytes of logs from pod {pod_name}, returned {returned_bytes}"
        );
        Ok(Completed::new(
            Output {
                pod_name,
                namespace: ns,
                container,
                logs,
                returned_bytes,
                total_bytes: total,
                truncated: (returned_bytes as u64) < total,
                total_bytes_exact: total < READ_CEILING,
            },
            summary,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::tail;

    #[test]
    fn the_tail_starts_at_a_line_inside_the_window() {
        assert_eq!(tail(b"a\nb\nc\n", 100, false), b"a\nb\nc\n");
        assert_eq!(tail(b"line one\nline two\n", 11, false), b"line two\n");
        assert_eq!(tail(b"one\ntwo\n", 4, false), b"two\n");
        assert_eq!(tail(b"abcdefgh", 3, false), b"fgh");
        assert_eq!(tail(b"e\nline\n", 7, true), b"line\n", "dropped: the window is cut");
    }
}
