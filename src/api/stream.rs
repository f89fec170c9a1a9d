//! Live event streams: the `text/event-stream` form of `GET /v1/invocations/{id}/events` and
//! `GET /v1/sessions/{id}/events` (Server-Sent Events).
//!
//! Events come from the event log, never from the read model, so any replica serves any stream
//! from the shared log. A stream catches up from its resume point, then waits on the log's
//! `head()` and reads only what was appended since it last looked, in batches of [`BATCH`]: a
//! stream holds at most one batch (an invocation's catch-up: that invocation's events, as its
//! JSON answer does; a session's stream also the ids of its invocations in flight), and the
//! client's reading speed never reaches a writer: a slow client just reads the log later. A
//! stream never writes events and never decides anything.
//!
//! What a stream sends, and its ids:
//! - an invocation's stream: every event of the invocation (any type, so events a tool adds
//!   later flow through unchanged); `id` is the event's `aggregate_version`; it ends after the
//!   invocation's terminal event. Between `started` and the terminal event it also sends the
//!   output of the programs the tool runs as they run (`invocation.output_chunk`, from the
//!   [`LiveOutput`], not the log: ADR 0010), with id `<version>.<stdout>.<stderr>`: the version
//!   of the last event before it and the bytes of each stream sent so far. A stream resumed
//!   from such an id sends what follows those bytes; one resumed from a plain version sends
//!   the output from its start. The terminal event waits until the output before it was sent
//!   (the executor publishes all of it before appending that event);
//! - a session's stream: the session's events and every event of its invocations, in global
//!   order; `id` is the event's global `sequence`; it ends after `session.closed`.
//!
//! A graceful shutdown waits for every open answer, and a session's stream may never end: every
//! stream also ends when the [`StopStreams`] token of its request is cancelled.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::Deserialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use workspace_events::{AggregateType, InvocationEvent, RecordedEvent, SessionEvent};

use super::ApiError;
use crate::error_code::ErrorCode;
use crate::eventstore::EventLog;
use crate::ids::{InvocationId, SessionId};
use crate::live::{LiveMessage, LiveOutput, LiveStream};
use crate::runner::OutputChannel;

/// Most events read from the log at once, and so held by one stream.
const BATCH: usize = 256;
/// How long a stream waits before reading again when the head announced events the log did
/// not return yet (a replica's head can run ahead of what its reads see for a moment).
const REREAD: Duration = Duration::from_millis(200);
/// How long a stream that holds an invocation's terminal event waits for the next piece of the
/// output published before it, before it gives up on the rest (a live output that lost it)
/// and sends the terminal event, which records the output anyway.
const SETTLE: Duration = Duration::from_secs(5);
/// The SSE event name of a chunk of live output.
pub const OUTPUT_CHUNK: &str = "invocation.output_chunk";

/// Where an invocation's stream resumes: after event version `version`, and after `stdout` and
/// `stderr` bytes of its live output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resume {
    /// The aggregate version of the last event seen.
    pub version: u64,
    /// Bytes of stdout seen.
    pub stdout: u64,
    /// Bytes of stderr seen.
    pub stderr: u64,
}

impl Resume {
    /// Parses an id the invocation stream sent: `<version>` or `<version>.<stdout>.<stderr>`.
    fn parse(id: &str) -> Option<Self> {
        let mut parts = id.split('.');
        let version = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(Self {
                version,
                ..Self::default()
            }),
            (Some(out), Some(err), None) => Some(Self {
                version,
                stdout: out.parse().ok()?,
                stderr: err.parse().ok()?,
            }),
            _ => None,
        }
    }
}

/// Ends every open stream when cancelled. The service adds it to every request (an
/// [`axum::Extension`]) and cancels it as it begins to stop; a request without one streams
/// until its end condition or its client leaves.
#[derive(Debug, Clone, Default)]
pub struct StopStreams(pub CancellationToken);

/// Whether the caller asked for a stream: `Accept` names `text/event-stream` with a non-zero
/// quality. Anything else (no `Accept`, `*/*`, `application/json`) keeps the JSON answer.
pub(super) fn wanted(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut params = range.split(';').map(str::trim);
            let media = params.next().unwrap_or("");
            media.eq_ignore_ascii_case("text/event-stream")
                && !params.any(|p| {
                    p.split_once('=').is_some_and(|(k, q)| {
                        k.trim().eq_ignore_ascii_case("q")
                            && q.trim().parse::<f32>().is_ok_and(|q| q <= 0.0)
                    })
                })
        })
}

/// `?after=` for clients that cannot set `Last-Event-ID`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeQuery {
    #[serde(default)]
    after: Option<u64>,
}

/// Where a stream resumes: after the event whose id the client last saw, from `Last-Event-ID`,
/// else `?after=`, else from the start (0). The header wins: an `EventSource` reconnecting to
/// a URL with `?after=` sends the id it reached since. A value that is not a whole number is
/// `invalid_argument`, never silently a replay from the start.
pub(super) fn resume_point(headers: &HeaderMap, uri: &Uri, rid: &str) -> Result<u64, ApiError> {
    let invalid = |what: &str| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("{what} must be the id of an event of this stream (a whole number)"),
            rid,
        )
    };
    let Query(query) = Query::<ResumeQuery>::try_from_uri(uri).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidArgument,
            format!("invalid query: {}", e.body_text()),
            rid,
        )
    })?;
    let given = match headers.get("last-event-id") {
        None => "",
        Some(value) => value.to_str().map_err(|_| invalid("Last-Event-ID"))?.trim(),
    };
    // An empty Last-Event-ID (an id reset by the stream) says nothing: as if absent.
    if given.is_empty() {
        return Ok(query.after.unwrap_or(0));
    }
    given.parse().map_err(|_| invalid("Last-Event-ID"))
}

/// Where an invocation's stream resumes: [`resume_point`], where `Last-Event-ID` may also be
/// an output chunk's id (`<version>.<stdout>.<stderr>`).
pub(super) fn resume_cursor(headers: &HeaderMap, uri: &Uri, rid: &str) -> Result<Resume, ApiError> {
    if let Some(value) = headers.get("last-event-id")
        && let Ok(text) = value.to_str()
        && text.contains('.')
    {
        return Resume::parse(text.trim()).ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidArgument,
                "Last-Event-ID must be the id of an event of this stream",
                rid,
            )
        });
    }
    resume_point(headers, uri, rid).map(|version| Resume {
        version,
        ..Resume::default()
    })
}

/// The stream of one invocation with its live output, resuming after `resume`. 204 when the
/// invocation has ended and no event follows `resume` (an `EventSource` stops reconnecting).
pub(super) async fn invocation(
    (log, live): (Arc<dyn EventLog>, Arc<dyn LiveOutput>),
    stop: Option<StopStreams>,
    id: &InvocationId,
    resume: Resume,
    rid: &str,
) -> Result<Response, ApiError> {
    let after = resume.version;
    let head = log.head();
    // The aggregate's own events are the filtered read: one `load`, not a scan of the log.
    let events = log
        .load(AggregateType::Invocation, id.as_str())
        .await
        .map_err(|e| unavailable(&e, rid))?;
    let Some(last) = events.last() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "invocation not found",
            rid,
        ));
    };
    let ended = is_terminal(last);
    let cursor = last.sequence;
    // Output follows `started`: one the client saw allows it at once.
    let started_seen = events.iter().any(|e| {
        e.envelope.aggregate_version <= after && e.envelope.event_type == InvocationEvent::STARTED
    });
    let pending: VecDeque<_> = events
        .into_iter()
        .filter(|e| e.envelope.aggregate_version > after)
        .collect();
    if ended && pending.is_empty() {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let follow = Follow {
        log,
        stop: stop.unwrap_or_default().0,
        head,
        cursor,
        pending,
        ended,
        filter: Filter::Invocation {
            id: id.as_str().to_owned(),
            after,
        },
        live: Some(Live {
            source: live,
            id: id.as_str().to_owned(),
            messages: None,
            sent: [resume.stdout, resume.stderr],
            version: after,
            allowed: started_seen,
            ended: false,
            target: None,
            ready: VecDeque::new(),
        }),
    };
    Ok(respond(follow))
}

/// The stream of one session and its invocations, resuming after global sequence `after`. 204
/// when the session is closed and nothing follows `after`.
pub(super) async fn session(
    log: Arc<dyn EventLog>,
    stop: Option<StopStreams>,
    id: &SessionId,
    after: u64,
    rid: &str,
) -> Result<Response, ApiError> {
    let head = log.head();
    let own = log
        .load(AggregateType::Session, id.as_str())
        .await
        .map_err(|e| unavailable(&e, rid))?;
    let (Some(first), Some(last)) = (own.first(), own.last()) else {
        return Err(ApiError::new(ErrorCode::NotFound, "session not found", rid));
    };
    if last.envelope.event_type == SessionEvent::CLOSED && last.sequence <= after {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    // The log has no index by session: the stream reads it from the session's first event,
    // learning its invocations from their first events (which name the session), and sends
    // only what follows `after`.
    let follow = Follow {
        log,
        stop: stop.unwrap_or_default().0,
        head,
        cursor: first.sequence.saturating_sub(1),
        pending: VecDeque::new(),
        ended: false,
        filter: Filter::Session {
            id: id.as_str().to_owned(),
            after,
            in_flight: HashSet::new(),
        },
        live: None,
    };
    Ok(respond(follow))
}

fn unavailable(cause: &dyn std::fmt::Display, rid: &str) -> ApiError {
    ApiError::new(ErrorCode::Unavailable, "event store unavailable", rid).tap_log(cause)
}

fn is_terminal(event: &RecordedEvent) -> bool {
    event.envelope.aggregate_type == AggregateType::Invocation
        && InvocationEvent::TERMINAL_TYPES.contains(&event.envelope.event_type.as_str())
}

fn respond(follow: Follow) -> Response {
    let mut response = Sse::new(follow.into_stream())
        .keep_alive(KeepAlive::default())
        .into_response();
    // Proxies that buffer responses (nginx) would hold events back.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Which events of the log a stream sends.
enum Filter {
    /// One invocation's events after version `after`.
    Invocation { id: String, after: u64 },
    /// One session's events and its invocations' events, after sequence `after`.
    Session {
        id: String,
        after: u64,
        /// Invocations of the session seen starting and not yet ended: later events of these
        /// carry no session id, so membership is remembered until their terminal event.
        in_flight: HashSet<String>,
    },
}

/// What the filter makes of one event.
struct Verdict {
    send: bool,
    /// Nothing after this event belongs to the stream.
    last: bool,
}

impl Filter {
    fn judge(&mut self, event: &RecordedEvent) -> Verdict {
        let envelope = &event.envelope;
        match self {
            Filter::Invocation { id, after } => {
                let mine = envelope.aggregate_type == AggregateType::Invocation
                    && envelope.aggregate_id == *id;
                Verdict {
                    send: mine && envelope.aggregate_version > *after,
                    last: mine && is_terminal(event),
                }
            }
            Filter::Session {
                id,
                after,
                in_flight,
            } => {
                let mine = match envelope.aggregate_type {
                    AggregateType::Session => envelope.aggregate_id == *id,
                    AggregateType::Invocation if envelope.aggregate_version == 1 => {
                        let ours = first_event_session(event).is_some_and(|s| s == id.as_str());
                        if ours && !is_terminal(event) {
                            in_flight.insert(envelope.aggregate_id.clone());
                        }
                        ours
                    }
                    AggregateType::Invocation => {
                        if is_terminal(event) {
                            in_flight.remove(&envelope.aggregate_id)
                        } else {
                            in_flight.contains(&envelope.aggregate_id)
                        }
                    }
                };
                Verdict {
                    send: mine && event.sequence > *after,
                    last: mine
                        && envelope.aggregate_type == AggregateType::Session
                        && envelope.event_type == SessionEvent::CLOSED,
                }
            }
        }
    }

    /// The SSE id of an event: what a client sends back as `Last-Event-ID`.
    fn id_of(&self, event: &RecordedEvent) -> u64 {
        match self {
            Filter::Invocation { .. } => event.envelope.aggregate_version,
            Filter::Session { .. } => event.sequence,
        }
    }
}

/// The session an invocation's first event names (its request's `session_id`).
fn first_event_session(event: &RecordedEvent) -> Option<String> {
    #[derive(Deserialize)]
    struct Request<'a> {
        #[serde(borrow, default)]
        session_id: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Request<'_>>(event.envelope.payload.get())
        .ok()?
        .session_id
        .map(|s| s.into_owned())
}

/// A stream's position in the log and the events read but not yet sent.
struct Follow {
    log: Arc<dyn EventLog>,
    stop: CancellationToken,
    head: watch::Receiver<u64>,
    /// The last global sequence read from the log.
    cursor: u64,
    pending: VecDeque<Arc<RecordedEvent>>,
    /// The stream's last event is in `pending` (or already sent).
    ended: bool,
    filter: Filter,
    /// An invocation's live output, merged between its events.
    live: Option<Live>,
}

/// An invocation stream's view of the invocation's live output.
struct Live {
    source: Arc<dyn LiveOutput>,
    id: String,
    /// Subscribed once output may be sent.
    messages: Option<LiveStream>,
    /// Bytes of stdout and stderr sent (or seen before the resume point).
    sent: [u64; 2],
    /// Version of the last event sent (or seen before the resume point).
    version: u64,
    /// `started` was sent or seen: output may follow.
    allowed: bool,
    /// Nothing more comes: the end of the output was read, or the source was given up on.
    ended: bool,
    /// The latest message published before the terminal event, once that event is held.
    target: Option<Option<LiveMessage>>,
    /// Chunks to send.
    ready: VecDeque<Event>,
}

fn slot(channel: OutputChannel) -> usize {
    match channel {
        OutputChannel::Stdout => 0,
        OutputChannel::Stderr => 1,
    }
}

impl Live {
    /// The next message of the output; `None` when the source ended or failed (given up).
    async fn next(&mut self) -> Option<LiveMessage> {
        if self.messages.is_none() {
            match self.source.subscribe(&self.id).await {
                Ok(messages) => self.messages = Some(messages),
                Err(e) => {
                    tracing::warn!(invocation_id = %self.id, error = %e, "live output unavailable; the stream sends the events only");
                    self.ended = true;
                    return None;
                }
            }
        }
        let message = futures::StreamExt::next(self.messages.as_mut()?).await;
        if message.is_none() {
            self.ended = true;
        }
        message
    }

    /// Queues what of `message` was not sent yet.
    fn accept(&mut self, message: LiveMessage) {
        let chunk = match message {
            LiveMessage::OutputEnd(_) => {
                self.ended = true;
                return;
            }
            LiveMessage::OutputChunk(chunk) => chunk,
        };
        let at = slot(chunk.channel);
        let end = chunk.offset + chunk.len();
        if end <= self.sent[at] {
            return;
        }
        let Some(chunk) = chunk.after(self.sent[at].saturating_sub(chunk.offset)) else {
            return;
        };
        self.sent[at] = end;
        let id = format!("{}.{}.{}", self.version, self.sent[0], self.sent[1]);
        let event = Event::default()
            .id(id)
            .event(OUTPUT_CHUNK)
            .json_data(&chunk)
            .unwrap_or_else(|_| Event::default().comment("a chunk that cannot be encoded"));
        self.ready.push_back(event);
    }

    /// Whether everything published before the held terminal event was read.
    fn reached(&self) -> bool {
        match &self.target {
            Some(Some(LiveMessage::OutputChunk(c))) => {
                self.sent[slot(c.channel)] >= c.offset + c.len()
            }
            Some(None) => true,
            _ => self.ended,
        }
    }

    /// With the terminal event held: reads the output published before it (the executor
    /// published all of it before appending the event), a message at a time.
    async fn settle(&mut self) {
        if self.target.is_none() {
            match self.source.last(&self.id).await {
                Ok(last) => self.target = Some(last),
                Err(e) => {
                    tracing::warn!(invocation_id = %self.id, error = %e, "live output unavailable; the terminal event is sent without the rest of the output");
                    self.ended = true;
                    return;
                }
            }
        }
        if self.reached() {
            self.ended = true;
            return;
        }
        match tokio::time::timeout(SETTLE, self.next()).await {
            Ok(Some(message)) => {
                self.accept(message);
                if self.reached() {
                    self.ended = true;
                }
            }
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(invocation_id = %self.id, "live output stopped before its end; the terminal event is sent without the rest");
                self.ended = true;
            }
        }
    }
}

impl Follow {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
        futures::stream::unfold(self, |mut follow| async move {
            let event = follow.next().await?;
            Some((Ok(event), follow))
        })
    }

    /// The next event to send; `None` ends the stream, at once when the service stops.
    async fn next(&mut self) -> Option<Event> {
        let stop = self.stop.clone();
        stop.run_until_cancelled(self.follow()).await.flatten()
    }

    async fn follow(&mut self) -> Option<Event> {
        loop {
            if let Some(live) = self.live.as_mut().filter(|l| l.allowed)
                && let Some(chunk) = live.ready.pop_front()
            {
                return Some(chunk);
            }
            if let Some(event) = self.pending.front() {
                if let Some(live) = self.live.as_mut()
                    && live.allowed
                    && !live.ended
                    && is_terminal(event)
                {
                    live.settle().await;
                    continue;
                }
                let event = self.pending.pop_front()?;
                if let Some(live) = self.live.as_mut() {
                    live.version = event.envelope.aggregate_version;
                    if event.envelope.event_type == InvocationEvent::STARTED {
                        live.allowed = true;
                    }
                }
                return Some(self.render(&event));
            }
            if self.ended {
                return None;
            }
            let head = *self.head.borrow_and_update();
            if self.cursor >= head {
                let live = self.live.as_mut().filter(|l| l.allowed && !l.ended);
                let next_output = async {
                    match live {
                        Some(live) => live.next().await.map(|m| (live, m)),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    // The log closed (the service is stopping): end, the client resumes elsewhere.
                    changed = self.head.changed() => changed.ok()?,
                    Some((live, message)) = next_output => live.accept(message),
                }
                continue;
            }
            let batch = match self.log.read_from(self.cursor, BATCH).await {
                Ok(batch) => batch,
                Err(e) => {
                    // The answer has started: the stream can only end. Its client reconnects
                    // with the last id it saw and misses nothing.
                    tracing::warn!(error = %e, cursor = self.cursor, "event stream read failed");
                    return None;
                }
            };
            if batch.is_empty() {
                let _ = tokio::time::timeout(REREAD, self.head.changed()).await;
                continue;
            }
            for event in batch {
                self.cursor = event.sequence;
                let verdict = self.filter.judge(&event);
                if verdict.send {
                    self.pending.push_back(event);
                }
                if verdict.last {
                    self.ended = true;
                    break;
                }
            }
        }
    }

    fn render(&self, event: &RecordedEvent) -> Event {
        let mut sse = Event::default().id(self.filter.id_of(event).to_string());
        // An event name may not hold a line break (it would end the field); the service never
        // writes one, and a stream must not panic on a log it did not write.
        let name = &event.envelope.event_type;
        if !name.contains(['\r', '\n']) {
            sse = sse.event(name);
        }
        sse.json_data(event)
            .unwrap_or_else(|_| Event::default().comment("an event that cannot be encoded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, v.parse().unwrap());
        }
        headers
    }

    #[test]
    fn only_an_accept_naming_event_streams_asks_for_a_stream() {
        for yes in [
            &["text/event-stream"][..],
            &["Text/Event-Stream"],
            &["application/json, text/event-stream;q=0.5"],
            &["application/json", "text/event-stream"],
        ] {
            assert!(wanted(&accept(yes)), "{yes:?}");
        }
        for no in [
            &[][..],
            &["*/*"],
            &["application/json"],
            &["text/*"],
            &["text/event-stream;q=0"],
            &["text/event-streams"],
        ] {
            assert!(!wanted(&accept(no)), "{no:?}");
        }
    }

    #[test]
    fn last_event_id_wins_over_after_and_both_must_be_whole_numbers() {
        let uri: Uri = "/v1/x?after=4".parse().unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(resume_point(&headers, &uri, "r").unwrap(), 4);
        headers.insert("last-event-id", "9".parse().unwrap());
        assert_eq!(resume_point(&headers, &uri, "r").unwrap(), 9);
        headers.insert("last-event-id", " ".parse().unwrap());
        assert_eq!(
            resume_point(&headers, &uri, "r").unwrap(),
            4,
            "empty is absent"
        );
        headers.insert("last-event-id", "-1".parse().unwrap());
        assert!(resume_point(&headers, &uri, "r").is_err());
        let none: Uri = "/v1/x".parse().unwrap();
        assert_eq!(resume_point(&HeaderMap::new(), &none, "r").unwrap(), 0);
        for bad in ["/v1/x?after=soon", "/v1/x?from=3"] {
            let uri: Uri = bad.parse().unwrap();
            let err = resume_point(&HeaderMap::new(), &uri, "r").unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidArgument, "{bad}");
            let err = resume_point(&headers, &uri, "r").unwrap_err();
            assert_eq!(
                err.code,
                ErrorCode::InvalidArgument,
                "{bad} with Last-Event-ID"
            );
        }
    }

    /// A log that holds nothing and never changes.
    struct Quiet(watch::Sender<u64>);

    #[async_trait::async_trait]
    impl EventLog for Quiet {
        async fn append(
            &self,
            _: AggregateType,
            _: &str,
            _: u64,
            _: Vec<workspace_events::EventEnvelope>,
        ) -> Result<crate::eventstore::Appended, crate::eventstore::StoreError> {
            Err(crate::eventstore::StoreError::Unavailable(
                "read only".into(),
            ))
        }

        async fn load(
            &self,
            _: AggregateType,
            _: &str,
        ) -> Result<Vec<Arc<RecordedEvent>>, crate::eventstore::StoreError> {
            Ok(Vec::new())
        }

        async fn read_from(
            &self,
            _: u64,
            _: usize,
        ) -> Result<Vec<Arc<RecordedEvent>>, crate::eventstore::StoreError> {
            Ok(Vec::new())
        }

        fn head(&self) -> watch::Receiver<u64> {
            self.0.subscribe()
        }

        async fn ping(&self) -> Result<(), crate::eventstore::StoreError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_waiting_stream_ends_when_the_service_stops() {
        let log: Arc<dyn EventLog> = Arc::new(Quiet(watch::channel(0).0));
        let stop = CancellationToken::new();
        let mut follow = Follow {
            head: log.head(),
            log,
            stop: stop.clone(),
            cursor: 0,
            pending: VecDeque::new(),
            ended: false,
            filter: Filter::Session {
                id: "session-a".into(),
                after: 0,
                in_flight: HashSet::new(),
            },
            live: None,
        };
        let waiting = tokio::spawn(async move { follow.next().await.is_none() });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "nothing to send: the stream waits");
        stop.cancel();
        let ended = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the stream ended")
            .unwrap();
        assert!(ended);
    }

    fn recorded(
        sequence: u64,
        (aggregate_type, aggregate_id, aggregate_version): (AggregateType, &str, u64),
        event_type: &str,
        payload: serde_json::Value,
    ) -> RecordedEvent {
        RecordedEvent {
            sequence,
            envelope: workspace_events::EventEnvelope {
                event_id: ulid::Ulid::generate(),
                aggregate_type,
                aggregate_id: aggregate_id.into(),
                aggregate_version,
                event_type: event_type.into(),
                schema_version: 1,
                occurred_at: time::OffsetDateTime::UNIX_EPOCH,
                correlation_id: None,
                causation_id: None,
                actor: None,
                payload: workspace_events::RawJson::encode(&payload).unwrap(),
            },
        }
    }

    #[test]
    fn a_session_filter_follows_its_invocations_from_their_first_event_to_their_last() {
        use AggregateType::{Invocation, Session};
        let ours = serde_json::json!({"session_id": "session-a"});
        let theirs = serde_json::json!({"session_id": "session-b"});
        let none = serde_json::json!({});
        let log = [
            recorded(
                1,
                (Session, "session-a", 1),
                "session.created",
                none.clone(),
            ),
            recorded(2, (Invocation, "inv-b", 1), "invocation.queued", theirs),
            recorded(
                3,
                (Invocation, "inv-a", 1),
                "invocation.queued",
                ours.clone(),
            ),
            recorded(
                4,
                (Invocation, "inv-b", 2),
                "invocation.started",
                none.clone(),
            ),
            recorded(
                5,
                (Invocation, "inv-a", 2),
                "invocation.output_chunk",
                none.clone(),
            ),
            recorded(6, (Invocation, "inv-d", 1), "invocation.denied", ours),
            recorded(
                7,
                (Invocation, "inv-a", 3),
                "invocation.completed",
                none.clone(),
            ),
            recorded(
                8,
                (Invocation, "inv-a", 4),
                "invocation.started",
                none.clone(),
            ),
            recorded(9, (Session, "session-a", 2), "session.closed", none.clone()),
            recorded(10, (Session, "session-a", 3), "session.later", none),
        ];
        // Resumed after 3: inv-a's first event is not sent again, but still makes it ours.
        let mut filter = Filter::Session {
            id: "session-a".into(),
            after: 3,
            in_flight: HashSet::new(),
        };
        let mut sent = Vec::new();
        for event in &log {
            let verdict = filter.judge(event);
            if verdict.send {
                sent.push(filter.id_of(event));
            }
            if verdict.last {
                break;
            }
        }
        assert_eq!(sent, [5, 6, 7, 9]);
        let Filter::Session { in_flight, .. } = filter else {
            unreachable!()
        };
        assert!(in_flight.is_empty(), "{in_flight:?}");
    }
}
