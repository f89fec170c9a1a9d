//! The embedded live hub: every invocation's messages in process memory, for [`LINGER`] after
//! its end (or its latest message), read by streams of this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{LINGER, LiveError, LiveMessage, LiveOutput, LiveStream};

/// One invocation's messages.
struct Entry {
    messages: Vec<Arc<LiveMessage>>,
    /// Bumped on every message; subscribers wait on it.
    changed: watch::Sender<usize>,
    /// When the entry was last written (or, for an entry only waited on, created).
    touched: Instant,
}

/// [`LiveOutput`] in process memory.
pub struct MemoryLive {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    linger: Duration,
}

impl Default for MemoryLive {
    fn default() -> Self {
        Self::new(LINGER)
    }
}

impl MemoryLive {
    /// A hub keeping each invocation's messages for `linger` after its latest one.
    pub fn new(linger: Duration) -> Self {
        Self {
            entries: Arc::new(Mutex::new(HashMap::new())),
            linger,
        }
    }

    /// Invocations whose messages are held (tests).
    pub fn held(&self) -> usize {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Drops entries nobody wrote for `linger`, unless a stream still waits on one with
    /// nothing in it.
    fn sweep(entries: &mut HashMap<String, Entry>, linger: Duration, now: Instant) {
        entries.retain(|_, e| {
            now.duration_since(e.touched) < linger
                || (e.messages.is_empty() && e.changed.receiver_count() > 0)
        });
    }
}

#[async_trait::async_trait]
impl LiveOutput for MemoryLive {
    async fn publish(&self, message: &LiveMessage) -> Result<(), LiveError> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Self::sweep(&mut entries, self.linger, now);
        let entry = entries
            .entry(message.invocation_id().to_owned())
            .or_insert_with(|| Entry {
                messages: Vec::new(),
                changed: watch::channel(0).0,
                touched: now,
            });
        entry.messages.push(Arc::new(message.clone()));
        entry.touched = now;
        let count = entry.messages.len();
        entry.changed.send_replace(count);
        Ok(())
    }

    async fn subscribe(&self, invocation_id: &str) -> Result<LiveStream, LiveError> {
        let changed = {
            let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
            entries
                .entry(invocation_id.to_owned())
                .or_insert_with(|| Entry {
                    messages: Vec::new(),
                    changed: watch::channel(0).0,
                    touched: Instant::now(),
                })
                .changed
                .subscribe()
        };
        let state = (
            self.entries.clone(),
            invocation_id.to_owned(),
            0usize,
            changed,
        );
        let stream =
            futures::stream::unfold(state, |(entries, id, next, mut changed)| async move {
                loop {
                    // Marked seen before looking: a message pushed after the look wakes the wait.
                    changed.borrow_and_update();
                    let found = {
                        let entries = entries.lock().unwrap_or_else(PoisonError::into_inner);
                        entries.get(&id).and_then(|e| e.messages.get(next).cloned())
                    };
                    if let Some(message) = found {
                        return Some(((*message).clone(), (entries, id, next + 1, changed)));
                    }
                    // The entry was swept away: nothing more will come on this receiver.
                    changed.changed().await.ok()?;
                }
            });
        Ok(Box::pin(stream))
    }

    async fn last(&self, invocation_id: &str) -> Result<Option<LiveMessage>, LiveError> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(entries
            .get(invocation_id)
            .and_then(|e| e.messages.last())
            .map(|m| (**m).clone()))
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;
    use crate::live::{OutputChunk, OutputEnd};
    use crate::runner::OutputChannel;

    fn chunk(id: &str, offset: u64, text: &str) -> LiveMessage {
        LiveMessage::OutputChunk(OutputChunk::new(
            id,
            OutputChannel::Stdout,
            offset,
            text.as_bytes(),
        ))
    }

    #[tokio::test]
    async fn a_subscriber_gets_what_was_published_before_and_after_it_subscribed_once_each() {
        let hub = MemoryLive::default();
        hub.publish(&chunk("inv-a", 0, "one\n")).await.unwrap();
        hub.publish(&chunk("inv-b", 0, "other\n")).await.unwrap();
        let mut stream = hub.subscribe("inv-a").await.unwrap();
        assert_eq!(stream.next().await.unwrap(), chunk("inv-a", 0, "one\n"));
        let waiting = tokio::spawn(async move {
            let second = stream.next().await.unwrap();
            let third = stream.next().await.unwrap();
            (second, third)
        });
        hub.publish(&chunk("inv-a", 4, "two\n")).await.unwrap();
        let end = LiveMessage::OutputEnd(OutputEnd {
            invocation_id: "inv-a".into(),
            stdout_bytes: 8,
            stderr_bytes: 0,
        });
        hub.publish(&end).await.unwrap();
        let (second, third) = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(second, chunk("inv-a", 4, "two\n"));
        assert_eq!(third, end);
        assert_eq!(hub.last("inv-a").await.unwrap(), Some(end));
        assert_eq!(hub.last("inv-c").await.unwrap(), None);
    }

    #[tokio::test]
    async fn messages_are_dropped_after_the_linger() {
        let hub = MemoryLive::new(Duration::from_millis(50));
        hub.publish(&chunk("inv-a", 0, "x")).await.unwrap();
        assert_eq!(hub.held(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            hub.publish(&chunk("inv-b", 0, "y")).await.unwrap();
            if hub.last("inv-a").await.unwrap().is_none() {
                break;
            }
            assert!(Instant::now() < deadline, "inv-a was kept");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
