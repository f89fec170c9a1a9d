//! The embedded live hub: every invocation's messages in process memory, for [`LINGER`] after
//! its latest message and within [`MAX_BYTES`] altogether (the invocations written longest ago
//! go first), read by streams of this process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::{LINGER, LiveError, LiveMessage, LiveOutput, LiveStream};

/// Most bytes of output the hub holds, as the distributed stream does.
pub const MAX_BYTES: usize = super::jetstream::MAX_BYTES as usize;
/// How often at most the hub looks for entries to drop.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// One invocation's messages.
struct Entry {
    messages: Vec<Arc<LiveMessage>>,
    /// Bytes of chunk data held.
    bytes: usize,
    /// Bumped on every message; subscribers wait on it.
    changed: watch::Sender<usize>,
    /// When the entry was last written (or, for an entry only waited on, created).
    touched: Instant,
}

/// Every entry, and what they hold.
#[derive(Default)]
struct Hub {
    entries: HashMap<String, Entry>,
    bytes: usize,
    last_sweep: Option<Instant>,
}

/// [`LiveOutput`] in process memory.
pub struct MemoryLive {
    hub: Arc<Mutex<Hub>>,
    linger: Duration,
    max_bytes: usize,
}

impl Default for MemoryLive {
    fn default() -> Self {
        Self::new(LINGER)
    }
}

impl MemoryLive {
    /// A hub keeping each invocation's messages for `linger` after its latest one.
    pub fn new(linger: Duration) -> Self {
        Self::with_limits(linger, MAX_BYTES)
    }

    /// A hub keeping messages for `linger` and at most `max_bytes` of output.
    pub fn with_limits(linger: Duration, max_bytes: usize) -> Self {
        Self {
            hub: Arc::new(Mutex::new(Hub::default())),
            linger,
            max_bytes,
        }
    }

    /// Invocations whose messages are held (tests).
    pub fn held(&self) -> usize {
        self.hub
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    /// Drops entries nobody wrote for `linger` (unless a stream still waits on one with
    /// nothing in it), then the entries written longest ago while the hub holds more than
    /// `max_bytes`. At most every [`SWEEP_EVERY`] unless over the byte limit.
    fn sweep(&self, hub: &mut Hub, now: Instant) {
        let due = hub
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY);
        if !due && hub.bytes <= self.max_bytes {
            return;
        }
        hub.last_sweep = Some(now);
        let linger = self.linger;
        hub.entries.retain(|_, e| {
            now.duration_since(e.touched) < linger
                || (e.messages.is_empty() && e.changed.receiver_count() > 0)
        });
        hub.bytes = hub.entries.values().map(|e| e.bytes).sum();
        while hub.bytes > self.max_bytes {
            let Some(oldest) = hub
                .entries
                .iter()
                .filter(|(_, e)| e.bytes > 0)
                .min_by_key(|(_, e)| e.touched)
                .map(|(id, _)| id.clone())
            else {
                break;
            };
            if let Some(entry) = hub.entries.remove(&oldest) {
                hub.bytes -= entry.bytes;
            }
        }
    }
}

fn entry(now: Instant) -> Entry {
    Entry {
        messages: Vec::new(),
        bytes: 0,
        changed: watch::channel(0).0,
        touched: now,
    }
}

#[async_trait::async_trait]
impl LiveOutput for MemoryLive {
    async fn publish(&self, message: &LiveMessage) -> Result<(), LiveError> {
        let now = Instant::now();
        let size = match message {
            LiveMessage::OutputChunk(c) => c.data.len(),
            LiveMessage::OutputEnd(_) => 0,
        };
        let mut hub = self.hub.lock().unwrap_or_else(PoisonError::into_inner);
        let held = hub
            .entries
            .entry(message.invocation_id().to_owned())
            .or_insert_with(|| entry(now));
        held.messages.push(Arc::new(message.clone()));
        held.bytes += size;
        held.touched = now;
        let count = held.messages.len();
        held.changed.send_replace(count);
        hub.bytes += size;
        self.sweep(&mut hub, now);
        Ok(())
    }

    async fn subscribe(&self, invocation_id: &str) -> Result<LiveStream, LiveError> {
        let changed = {
            let now = Instant::now();
            let mut hub = self.hub.lock().unwrap_or_else(PoisonError::into_inner);
            self.sweep(&mut hub, now);
            hub.entries
                .entry(invocation_id.to_owned())
                .or_insert_with(|| entry(now))
                .changed
                .subscribe()
        };
        let state = (self.hub.clone(), invocation_id.to_owned(), 0usize, changed);
        let stream = futures::stream::unfold(state, |(hub, id, next, mut changed)| async move {
            loop {
                // Marked seen before looking: a message pushed after the look wakes the wait.
                changed.borrow_and_update();
                let found = {
                    let held = hub.lock().unwrap_or_else(PoisonError::into_inner);
                    held.entries
                        .get(&id)
                        .and_then(|e| e.messages.get(next).cloned())
                };
                if let Some(message) = found {
                    return Some(((*message).clone(), (hub, id, next + 1, changed)));
                }
                // The entry was swept away: nothing more will come on this receiver.
                changed.changed().await.ok()?;
            }
        });
        Ok(Box::pin(stream))
    }

    async fn last(&self, invocation_id: &str) -> Result<Option<LiveMessage>, LiveError> {
        let hub = self.hub.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(hub
            .entries
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
    async fn past_its_byte_limit_the_hub_drops_the_invocations_written_longest_ago() {
        let hub = MemoryLive::with_limits(LINGER, 10);
        hub.publish(&chunk("inv-old", 0, "123456")).await.unwrap();
        hub.publish(&chunk("inv-new", 0, "abcdef")).await.unwrap();
        assert_eq!(hub.last("inv-old").await.unwrap(), None);
        assert_eq!(
            hub.last("inv-new").await.unwrap(),
            Some(chunk("inv-new", 0, "abcdef"))
        );
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
