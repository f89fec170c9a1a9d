//! Live output: the chunks of a running program's stdout and stderr, on their way from the
//! executor that runs the tool to whoever streams the invocation (`GET
//! /v1/invocations/{id}/events` with `Accept: text/event-stream`, on any API replica).
//!
//! Chunks are not events (ADR 0010): they never enter the event log, never change an
//! aggregate's version, and are kept only for a while ([`LINGER`]) after the run, for streams
//! that resume. The invocation's `completed` event stays the record of its output. A
//! [`LiveOutput`] is an in-process hub in embedded mode ([`memory::MemoryLive`]) and a
//! JetStream stream in memory storage beside the event stream in distributed mode
//! ([`jetstream::JetStreamLive`], subjects [`subject`]).
//!
//! This module never decides what a chunk is for and never writes an event.

pub mod jetstream;
pub mod memory;

use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::runner::OutputChannel;

/// How long a run's chunks stay available after they were published: a stream resumed within
/// this long gets every chunk it missed.
pub const LINGER: Duration = Duration::from_secs(15 * 60);

/// The subject of one invocation's live output in distributed mode.
pub fn subject(invocation_id: &str) -> String {
    format!("live.invocation.{invocation_id}.output")
}

/// Every invocation's live output (the live stream's subjects).
pub const ALL_SUBJECTS: &str = "live.invocation.*.output";

/// How a chunk's `data` is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    /// The bytes are UTF-8 text, `data` is that text.
    #[serde(rename = "utf-8")]
    Utf8,
    /// Anything else (including text cut inside a character): `data` is standard base64.
    #[serde(rename = "base64")]
    Base64,
}

/// Part of the output of an invocation's program.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputChunk {
    /// The invocation.
    pub invocation_id: String,
    /// `stdout` or `stderr`.
    pub channel: OutputChannel,
    /// Position of the chunk's first byte in the invocation's output on `channel`, from 0.
    /// An invocation that runs several programs numbers their output on, one after the other.
    pub offset: u64,
    /// How `data` is written.
    pub encoding: Encoding,
    /// The bytes.
    pub data: String,
}

impl OutputChunk {
    /// A chunk of `bytes`, as text when they are UTF-8.
    pub fn new(invocation_id: &str, channel: OutputChannel, offset: u64, bytes: &[u8]) -> Self {
        let (encoding, data) = match std::str::from_utf8(bytes) {
            Ok(text) => (Encoding::Utf8, text.to_owned()),
            Err(_) => {
                use base64::Engine;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                (Encoding::Base64, data)
            }
        };
        Self {
            invocation_id: invocation_id.to_owned(),
            channel,
            offset,
            encoding,
            data,
        }
    }

    /// The bytes of the chunk.
    pub fn bytes(&self) -> Result<Vec<u8>, LiveError> {
        match self.encoding {
            Encoding::Utf8 => Ok(self.data.clone().into_bytes()),
            Encoding::Base64 => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(self.data.as_bytes())
                    .map_err(|e| LiveError::Decode(e.to_string()))
            }
        }
    }

    /// The chunk without its first `skip` bytes (a stream that already sent them), or `None`
    /// when nothing is left. A cut inside a character turns the rest into base64.
    pub fn after(&self, skip: u64) -> Option<Self> {
        let bytes = self.bytes().ok()?;
        let skip = usize::try_from(skip).unwrap_or(usize::MAX);
        if skip >= bytes.len() {
            return None;
        }
        if skip == 0 {
            return Some(self.clone());
        }
        Some(Self::new(
            &self.invocation_id,
            self.channel,
            self.offset + skip as u64,
            &bytes[skip..],
        ))
    }

    /// Length of the chunk in bytes.
    pub fn len(&self) -> u64 {
        match self.encoding {
            Encoding::Utf8 => self.data.len() as u64,
            Encoding::Base64 => self.bytes().map_or(0, |b| b.len() as u64),
        }
    }

    /// Whether the chunk holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The end of an invocation's live output: nothing follows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputEnd {
    /// The invocation.
    pub invocation_id: String,
    /// Bytes of stdout published (every chunk's bytes together).
    pub stdout_bytes: u64,
    /// Bytes of stderr published.
    pub stderr_bytes: u64,
}

/// One message of an invocation's live output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveMessage {
    /// Output.
    OutputChunk(OutputChunk),
    /// The end of the output.
    OutputEnd(OutputEnd),
}

impl LiveMessage {
    /// The invocation the message is about.
    pub fn invocation_id(&self) -> &str {
        match self {
            Self::OutputChunk(c) => &c.invocation_id,
            Self::OutputEnd(e) => &e.invocation_id,
        }
    }
}

/// Why live output could not be published or read.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The live stream is unreachable or refused the operation.
    #[error("live output unavailable: {0}")]
    Unavailable(String),
    /// A message could not be decoded.
    #[error("live output message is not valid: {0}")]
    Decode(String),
}

/// The messages of one invocation, oldest first, then each as it is published.
pub type LiveStream = BoxStream<'static, LiveMessage>;

/// Where executors publish live output and streams read it.
#[async_trait::async_trait]
pub trait LiveOutput: Send + Sync {
    /// Publishes one message. Returns once every subscriber can read it (and every message
    /// published before it by the caller): what one caller publishes is read in its order.
    async fn publish(&self, message: &LiveMessage) -> Result<(), LiveError>;

    /// Every retained message of the invocation, oldest first, then the ones published later;
    /// the stream never ends by itself.
    async fn subscribe(&self, invocation_id: &str) -> Result<LiveStream, LiveError>;

    /// The invocation's latest message, if any is retained.
    async fn last(&self, invocation_id: &str) -> Result<Option<LiveMessage>, LiveError>;
}

/// What a tool publishes its program's output through: numbers the invocation's output on each
/// channel across the programs it runs, and ends it once. Cheap to clone; [`OutputSink::discard`]
/// publishes nothing.
#[derive(Clone, Default)]
pub struct OutputSink {
    inner: Option<Arc<SinkInner>>,
}

struct SinkInner {
    live: Arc<dyn LiveOutput>,
    invocation_id: String,
    state: tokio::sync::Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    /// Bytes published on stdout and stderr.
    offsets: [u64; 2],
    /// Something was published (so an end is due).
    published: bool,
    /// A publish failed: nothing more is published for this run (a later chunk would leave a
    /// gap); streams fall back on the `completed` event.
    failed: bool,
    ended: bool,
}

impl std::fmt::Debug for OutputSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutputSink")
            .field(
                "invocation_id",
                &self.inner.as_ref().map(|i| i.invocation_id.as_str()),
            )
            .finish()
    }
}

fn index(channel: OutputChannel) -> usize {
    match channel {
        OutputChannel::Stdout => 0,
        OutputChannel::Stderr => 1,
    }
}

impl OutputSink {
    /// A sink that publishes nothing (tests of tools, and runs nobody can stream).
    pub fn discard() -> Self {
        Self { inner: None }
    }

    /// The sink of one invocation's run.
    pub fn new(live: Arc<dyn LiveOutput>, invocation_id: impl Into<String>) -> Self {
        Self {
            inner: Some(Arc::new(SinkInner {
                live,
                invocation_id: invocation_id.into(),
                state: tokio::sync::Mutex::new(SinkState::default()),
            })),
        }
    }

    /// Publishes `bytes` as the next output on `channel`, waiting until subscribers can read it.
    /// A failure is logged and ends publishing for the run; the tool goes on.
    pub async fn publish(&self, channel: OutputChannel, bytes: &[u8]) {
        let Some(inner) = &self.inner else { return };
        if bytes.is_empty() {
            return;
        }
        let mut state = inner.state.lock().await;
        if state.failed || state.ended {
            return;
        }
        let offset = state.offsets[index(channel)];
        let chunk = OutputChunk::new(&inner.invocation_id, channel, offset, bytes);
        match inner.live.publish(&LiveMessage::OutputChunk(chunk)).await {
            Ok(()) => {
                state.offsets[index(channel)] += bytes.len() as u64;
                state.published = true;
            }
            Err(error) => {
                tracing::warn!(invocation_id = %inner.invocation_id, %error, "live output could not be published; the rest of this run's output is only in its completed event");
                state.failed = true;
            }
        }
    }

    /// Ends the run's live output (an [`OutputEnd`], when anything was published): call it
    /// before the invocation's terminal event is appended, so a stream that reads that event
    /// finds every chunk before it.
    pub async fn finish(&self) {
        let Some(inner) = &self.inner else { return };
        let mut state = inner.state.lock().await;
        if state.ended {
            return;
        }
        state.ended = true;
        if !state.published {
            return;
        }
        let end = OutputEnd {
            invocation_id: inner.invocation_id.clone(),
            stdout_bytes: state.offsets[0],
            stderr_bytes: state.offsets[1],
        };
        if let Err(error) = inner.live.publish(&LiveMessage::OutputEnd(end)).await {
            tracing::warn!(invocation_id = %inner.invocation_id, %error, "the end of the live output could not be published");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_text_when_they_can_be_and_base64_otherwise() {
        let text = OutputChunk::new("inv-1", OutputChannel::Stdout, 3, "héllo".as_bytes());
        assert_eq!(text.encoding, Encoding::Utf8);
        assert_eq!(text.len(), 6);
        let json = serde_json::to_value(LiveMessage::OutputChunk(text.clone())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "output_chunk", "invocation_id": "inv-1", "channel": "stdout",
                "offset": 3, "encoding": "utf-8", "data": "héllo"})
        );
        // Cut inside "é": the rest is not text.
        let rest = text.after(2).unwrap();
        assert_eq!(
            (rest.offset, rest.encoding, rest.bytes().unwrap()),
            (5, Encoding::Base64, "\u{a9}llo".as_bytes()[1..].to_vec())
        );
        assert_eq!(rest.len(), 4);
        assert!(text.after(6).is_none());
        let binary = OutputChunk::new("inv-1", OutputChannel::Stderr, 0, &[0xff, 0]);
        assert_eq!(binary.encoding, Encoding::Base64);
        assert_eq!(binary.bytes().unwrap(), [0xff, 0]);
    }
}
