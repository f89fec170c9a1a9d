//! The distributed live output: a JetStream stream in memory storage, [`STREAM_NAME`] on
//! [`ALL_SUBJECTS`], beside the event stream. Executors publish (acknowledged, so a message is
//! stored before the next one and before the run's terminal event is appended); a stream on
//! any API replica reads one invocation's subject with an ordered consumer from its first
//! message. Messages leave after [`LINGER`]; the server drops the oldest when the stream is
//! full ([`MAX_BYTES`]).

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::{self, DirectGetErrorKind, DiscardPolicy, StorageType};
use async_nats::jetstream::{self as js};
use futures::StreamExt;

use super::{ALL_SUBJECTS, LINGER, LiveError, LiveMessage, LiveOutput, LiveStream, subject};

/// Name of the live output stream.
pub const STREAM_NAME: &str = "WORKSPACE_LIVE";
/// Most bytes the live stream holds (memory): beyond it the oldest messages go first.
pub const MAX_BYTES: i64 = 256 * 1024 * 1024;

/// [`LiveOutput`] on JetStream.
pub struct JetStreamLive {
    jetstream: js::Context,
    stream: stream::Stream,
}

fn unavailable(e: impl std::fmt::Display) -> LiveError {
    LiveError::Unavailable(e.to_string())
}

impl JetStreamLive {
    /// Opens (creating when missing) the live stream with `replicas` replicas.
    pub async fn open(jetstream: js::Context, replicas: usize) -> Result<Self, LiveError> {
        let stream = jetstream
            .get_or_create_stream(stream::Config {
                name: STREAM_NAME.to_owned(),
                description: Some(
                    "workspace live output: chunks of running programs, not events (ADR 0010)"
                        .into(),
                ),
                subjects: vec![ALL_SUBJECTS.to_owned()],
                storage: StorageType::Memory,
                num_replicas: replicas.max(1),
                discard: DiscardPolicy::Old,
                max_age: LINGER,
                max_bytes: MAX_BYTES,
                allow_direct: true,
                ..stream::Config::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(Self { jetstream, stream })
    }
}

#[async_trait::async_trait]
impl LiveOutput for JetStreamLive {
    async fn publish(&self, message: &LiveMessage) -> Result<(), LiveError> {
        let payload = serde_json::to_vec(message).map_err(|e| LiveError::Decode(e.to_string()))?;
        let ack = self
            .jetstream
            .publish(subject(message.invocation_id()), payload.into())
            .await
            .map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        Ok(())
    }

    async fn subscribe(&self, invocation_id: &str) -> Result<LiveStream, LiveError> {
        let consumer = self
            .stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject(invocation_id),
                deliver_policy: DeliverPolicy::All,
                ..pull::OrderedConfig::default()
            })
            .await
            .map_err(unavailable)?;
        let messages = consumer.messages().await.map_err(unavailable)?;
        let id = invocation_id.to_owned();
        let stream = messages
            .take_while(|m| std::future::ready(m.is_ok()))
            .filter_map(move |m| {
                let decoded = m.ok().and_then(|m| {
                    serde_json::from_slice::<LiveMessage>(&m.payload)
                        .map_err(|e| {
                            tracing::warn!(invocation_id = %id, error = %e, "a live output message that is not valid was skipped");
                        })
                        .ok()
                });
                std::future::ready(decoded)
            });
        Ok(Box::pin(stream))
    }

    async fn last(&self, invocation_id: &str) -> Result<Option<LiveMessage>, LiveError> {
        match self
            .stream
            .direct_get_last_for_subject(subject(invocation_id))
            .await
        {
            Ok(message) => serde_json::from_slice(&message.payload)
                .map(Some)
                .map_err(|e| LiveError::Decode(e.to_string())),
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}
