//! Batch direct get (ADR-31, nats-server ≥ 2.11): up to [`MAX_BATCH`] messages matching a filter
//! from a start sequence in one request, answered from the stream's store without creating a
//! consumer. async-nats 0.51 has no API for it, so the request is sent by hand: the messages
//! arrive on an inbox, then an end-of-batch status (`204 EOB`); `404` means nothing matched.
//! The end is always a server message, never a timeout (the timeout only bounds a lost reply).

use std::time::Duration;

use async_nats::{Client, StatusCode};
use bytes::Bytes;
use futures::StreamExt;

use crate::eventstore::StoreError;

/// Most messages one batch direct get returns (the server's limit).
pub const MAX_BATCH: usize = 1000;

/// One stored message as a direct get returns it.
#[derive(Debug)]
pub struct StoredMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// The subject it was published on.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
}

/// `DIRECT.GET` request body.
#[derive(serde::Serialize)]
struct Request<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
}

/// `DIRECT.GET` request body for one message.
#[derive(serde::Serialize)]
struct One<'a> {
    last_by_subj: &'a str,
}

/// The last message matching `filter` (wildcards allowed: the filter travels in the body, not
/// in the request subject); `None` when nothing matches.
pub async fn last(
    client: &Client,
    stream: &str,
    filter: &str,
    timeout: Duration,
) -> Result<Option<StoredMessage>, StoreError> {
    one(
        client,
        stream,
        &One {
            last_by_subj: filter,
        },
        timeout,
    )
    .await
}

async fn one(
    client: &Client,
    stream: &str,
    request: &One<'_>,
    timeout: Duration,
) -> Result<Option<StoredMessage>, StoreError> {
    let body = serde_json::to_vec(request)
        .map_err(|e| StoreError::Unavailable(format!("encoding a direct get failed: {e}")))?;
    let message = tokio::time::timeout(
        timeout,
        client.request(format!("$JS.API.DIRECT.GET.{stream}"), body.into()),
    )
    .await
    .map_err(|_| {
        StoreError::Unavailable(format!(
            "no answer to a direct get on {stream} within {timeout:?}"
        ))
    })?
    .map_err(|e| unavailable("a direct get", e))?;
    stored(stream, message)
}

/// A direct get reply as a message; `None` for `404`.
fn stored(stream: &str, message: async_nats::Message) -> Result<Option<StoredMessage>, StoreError> {
    match message.status {
        None | Some(StatusCode::OK) => {}
        Some(StatusCode::NOT_FOUND) => return Ok(None),
        Some(status) => {
            return Err(StoreError::Unavailable(format!(
                "direct get on {stream} failed: {status} {}",
                message.description.as_deref().unwrap_or("")
            )));
        }
    }
    let headers = message.headers.unwrap_or_default();
    let header = |name: &str| headers.get(name).map(|v| v.as_str().to_owned());
    let (Some(sequence), Some(subject)) = (
        header("Nats-Sequence").and_then(|s| s.parse::<u64>().ok()),
        header("Nats-Subject"),
    ) else {
        return Err(StoreError::Unavailable(format!(
            "the direct get on {stream} was answered without Nats-Sequence and Nats-Subject"
        )));
    };
    Ok(Some(StoredMessage {
        sequence,
        subject,
        payload: message.payload,
    }))
}

/// Up to `batch` (≤ [`MAX_BATCH`]) messages matching `filter` with sequence ≥ `start`, in order.
pub async fn batch(
    client: &Client,
    stream: &str,
    start: u64,
    filter: &str,
    batch: usize,
    timeout: Duration,
) -> Result<Vec<StoredMessage>, StoreError> {
    let batch = batch.clamp(1, MAX_BATCH);
    let body = serde_json::to_vec(&Request {
        seq: start.max(1),
        next_by_subj: filter,
        batch,
    })
    .map_err(|e| StoreError::Unavailable(format!("encoding a direct get failed: {e}")))?;
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| unavailable("subscribing for a direct get", e))?;
    client
        .publish_with_reply(format!("$JS.API.DIRECT.GET.{stream}"), inbox, body.into())
        .await
        .map_err(|e| unavailable("sending a direct get", e))?;
    let mut messages = Vec::with_capacity(batch.min(64));
    loop {
        let message = tokio::time::timeout(timeout, replies.next())
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "no end of batch from the direct get on {stream} within {timeout:?}"
                ))
            })?
            .ok_or_else(|| StoreError::Unavailable("the NATS connection closed".into()))?;
        if message.status.is_some_and(|s| s.as_u16() == 204) {
            return Ok(messages);
        }
        match stored(stream, message)? {
            Some(message) => messages.push(message),
            None => return Ok(messages),
        }
        if messages.len() == batch {
            // The server still sends the end-of-batch marker; it is not needed.
            return Ok(messages);
        }
    }
}

/// Every message matching `filter` with sequence ≥ `start`, in pages of [`MAX_BATCH`], up to
/// `limit` messages.
pub async fn all(
    client: &Client,
    stream: &str,
    mut start: u64,
    filter: &str,
    limit: usize,
    timeout: Duration,
) -> Result<Vec<StoredMessage>, StoreError> {
    let mut out = Vec::new();
    while out.len() < limit {
        let want = (limit - out.len()).min(MAX_BATCH);
        let page = batch(client, stream, start, filter, want, timeout).await?;
        let full = page.len() == want;
        if let Some(last) = page.last() {
            start = last.sequence + 1;
        }
        out.extend(page);
        if !full {
            break;
        }
    }
    Ok(out)
}

pub(super) fn unavailable(what: &str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("{what} failed: {error}"))
}
