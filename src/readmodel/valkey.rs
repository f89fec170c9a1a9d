//! [`ValkeyStore`]: the read models in Valkey (distributed mode; any Redis-protocol server with
//! Lua scripting, Redis 7.0 and Valkey alike).
//!
//! Every read and write is one Lua script, run atomically by the server (EVALSHA, loaded again
//! on NOSCRIPT), so a reader resolves the active generation and reads its keys in one step, and
//! a batch writes its views, its indexes and its checkpoint in one step: a crash between writes
//! never moves the checkpoint past unapplied events. Key layout (`I` is
//! `INVOCATION_STORE_KEY_PREFIX`, `S` is `SESSION_STORE_KEY_PREFIX`, `g` the generation, ids
//! and other caller-supplied parts query-escaped):
//!
//! ```text
//! I:active                          string  the active generation (absent: "0")
//! I:generations                     string  counter naming new generations
//! I:g:checkpoint                    string  the global sequence applied up to
//! I:g:inv:<id>                      hash    v (aggregate version), s (sequence), json
//! I:g:by-session:<session>          zset    invocation ids by creating sequence
//! I:g:by-session:<session>:exp      zset    terminal entries by the time they leave (Unix ms)
//! I:g:corr:<session>:<tool>:<corr>  string  invocation id
//! I:g:open                          zset    queued and running invocation ids by creating sequence
//! S:g:ses:<id>                      hash    v, s, json
//! S:g:by-principal:<tenant>:<actor> zset    session ids by creating sequence (+ :exp as above)
//! S:g:live                          zset    provisioning and ready session ids by expires_at (ms)
//! ```
//!
//! A terminal view, its correlation key and its index entries leave at the same moment (the
//! time of the event that ended it plus its retention, `PEXPIREAT`); an index key lives as long
//! as its longest-lived entry. The scripts name keys they build themselves: that is fine on a
//! single server or a primary with replicas, not on a cluster (see docs/adr/0006).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ConnectionAddr, IntoConnectionInfo, RedisConnectionInfo, Script, Value};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use workspace_events::RecordedEvent;
use workspace_events::upcast::{self, Upcaster};
use workspace_projections::{Applied, InvocationView, SessionView, TypedEvent};

use super::{
    Fold, Page, ReadModelError, ReadModelStore, Rebuild, Retention, correlation_key, deadline,
    fold, query_escape, touched, unix_ms,
};

/// How to reach Valkey and where the read models live in it.
#[derive(Debug, Clone)]
pub struct ValkeyConfig {
    /// Server host (`VALKEY_HOST`, or the host of `VALKEY_ADDR`).
    pub host: String,
    /// Server port (`VALKEY_PORT`, or the port of `VALKEY_ADDR`).
    pub port: u16,
    /// Database number (`VALKEY_DB`).
    pub db: i64,
    /// Password (`VALKEY_PASSWORD`).
    pub password: Option<String>,
    /// Prefix of invocation keys and of the store's own keys (`INVOCATION_STORE_KEY_PREFIX`).
    pub invocation_prefix: String,
    /// Prefix of session keys (`SESSION_STORE_KEY_PREFIX`).
    pub session_prefix: String,
    /// How long terminal views are kept (`INVOCATION_STORE_TTL_SECONDS`,
    /// `SESSION_STORE_TTL_SECONDS`).
    pub retention: Retention,
    /// Bound on connecting, and on each answer.
    pub timeout: Duration,
}

impl Default for ValkeyConfig {
    /// The seed's defaults.
    fn default() -> Self {
        ValkeyConfig {
            host: "localhost".into(),
            port: 6379,
            db: 0,
            password: None,
            invocation_prefix: "workspace:invocation".into(),
            session_prefix: "workspace:session".into(),
            retention: Retention::default(),
            timeout: Duration::from_secs(2),
        }
    }
}

impl ValkeyConfig {
    /// The server address: `VALKEY_ADDR` (`host:port`, `[v6]:port`) when set, else
    /// `VALKEY_HOST` and `VALKEY_PORT`.
    pub fn address(addr: Option<&str>, host: &str, port: u16) -> Result<(String, u16), String> {
        let Some(addr) = addr.map(str::trim).filter(|a| !a.is_empty()) else {
            return Ok((host.to_owned(), port));
        };
        let bad = || format!("VALKEY_ADDR must be host:port, not {addr:?}");
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = port.parse::<u16>().map_err(|_| bad())?;
        if host.is_empty() {
            return Err(bad());
        }
        Ok((host.to_owned(), port))
    }

    /// Checks the prefixes: non-empty, and neither inside the other's key space (a rebuild
    /// discards whole generations by prefix).
    pub fn validate(&self) -> Result<(), String> {
        let (i, s) = (&self.invocation_prefix, &self.session_prefix);
        if i.is_empty() || s.is_empty() {
            return Err(
                "INVOCATION_STORE_KEY_PREFIX and SESSION_STORE_KEY_PREFIX must be set".into(),
            );
        }
        if i != s && (s.starts_with(&format!("{i}:")) || i.starts_with(&format!("{s}:"))) {
            return Err(format!(
                "INVOCATION_STORE_KEY_PREFIX {i:?} and SESSION_STORE_KEY_PREFIX {s:?} nest"
            ));
        }
        Ok(())
    }
}

/// The read models in Valkey.
#[derive(Clone)]
pub struct ValkeyStore {
    con: ConnectionManager,
    inner: Arc<Inner>,
    /// The generation this handle reads and writes: `None` follows the active one.
    pinned: Option<String>,
}

/// Announcements kept for a slow listener before it misses some (it then polls).
const ANNOUNCED_CAPACITY: usize = 4096;

/// Forwards the announcements published on `channel` (by every process writing this store)
/// to `announced`, resubscribing after a lost connection. Messages are `i <id> <view json>` (an
/// invocation finished: its view as written; `i <id>` alone from an older build) or `s <id>` (a
/// session's status moved), published by the apply script that wrote them ([`APPLY`]). The view
/// travels as text and is decoded only by a process waiting for it.
async fn listen(
    client: redis::Client,
    channel: String,
    announced: tokio::sync::broadcast::WeakSender<super::Announcement>,
) {
    use futures::StreamExt;
    loop {
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let payload = String::from_utf8_lossy(message.get_payload_bytes());
                    let announcement = match payload.split_once(' ') {
                        Some(("i", rest)) => match rest.split_once(' ') {
                            Some((id, json)) => super::Announcement::Invocation {
                                id: id.to_owned(),
                                view: Some(json.into()),
                            },
                            None => super::Announcement::Invocation {
                                id: rest.to_owned(),
                                view: None,
                            },
                        },
                        Some(("s", id)) => super::Announcement::Session(id.to_owned()),
                        _ => continue,
                    };
                    // The store is gone: so is the need to listen.
                    let Some(announced) = announced.upgrade() else {
                        return;
                    };
                    // No receiver yet is fine: nobody waits.
                    let _ = announced.send(announcement);
                }
            }
            Err(error) => {
                tracing::debug!(%error, "valkey: announcements unavailable; waiters poll");
            }
        }
        if announced.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Inner {
    /// Where announcements of this store arrive ([`listen`]).
    announced: tokio::sync::broadcast::Sender<super::Announcement>,
    /// The channel they are published on.
    announce_channel: String,
    invocation_prefix: String,
    session_prefix: String,
    retention: Retention,
    upcasters: Vec<Box<dyn Upcaster>>,
    scripts: Scripts,
    /// The highest checkpoint this process has seen, to wake waiters without a round trip.
    seen: watch::Sender<u64>,
    /// The open views this handle's last batches wrote, so the next batch need not load them.
    open: std::sync::Mutex<OpenViews>,
}

/// The views not yet terminal that this writer's own batches wrote, valid while the store's
/// checkpoint is the one they left (a projector is the store's only writer in the steady
/// state): a batch that touches only these, and views its own events create, is folded onto
/// them without a load, and its write checks the store still is at that checkpoint (`exact`),
/// so a batch written by anyone else in between is noticed and the views are loaded again.
/// A load is a round trip per batch on the path of every invocation (ninth session).
///
/// Kept only along an unbroken chain: a batch whose write found the checkpoint where the
/// previous one left it, every view of it written. Anything else (another writer, a gap, a
/// refused or unknown write, a change of generation) forgets them all.
#[derive(Default)]
struct OpenViews {
    generation: String,
    /// The checkpoint the views are valid at; 0 when none are held.
    checkpoint: u64,
    sessions: foldhash::HashMap<String, Arc<SessionView>>,
    invocations: foldhash::HashMap<String, Arc<InvocationView>>,
}

/// Open views held at most; past it they are all forgotten (and loaded again). Far above the
/// invocations open at once under any load measured here.
const OPEN_VIEWS_HELD: usize = 16_384;

impl OpenViews {
    fn forget(&mut self) {
        self.checkpoint = 0;
        self.sessions.clear();
        self.invocations.clear();
    }

    /// The generation and the views to fold a batch onto, when every view it touches is held
    /// or created by the batch (its first event for it is the aggregate's first: with the
    /// checkpoint at `after`, no view of it exists).
    #[allow(clippy::type_complexity)]
    fn held(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        session_ids: &[String],
        invocation_ids: &[String],
    ) -> Option<(String, Vec<Arc<SessionView>>, Vec<Arc<InvocationView>>)> {
        if self.checkpoint == 0 || self.checkpoint != after {
            return None;
        }
        // The version of each aggregate's first event in the batch, in one pass (a batch of a
        // catch-up holds a thousand events).
        let mut first =
            foldhash::HashMap::with_capacity_and_hasher(events.len(), Default::default());
        for e in events {
            let env = &e.envelope;
            first
                .entry((env.aggregate_type, env.aggregate_id.as_str()))
                .or_insert(env.aggregate_version);
        }
        let created =
            |kind: workspace_events::AggregateType, id: &str| first.get(&(kind, id)) == Some(&1);
        let mut sessions = Vec::new();
        for id in session_ids {
            match self.sessions.get(id) {
                Some(v) => sessions.push(v.clone()),
                None if created(workspace_events::AggregateType::Session, id) => {}
                None => return None,
            }
        }
        let mut invocations = Vec::new();
        for id in invocation_ids {
            match self.invocations.get(id) {
                Some(v) => invocations.push(v.clone()),
                None if created(workspace_events::AggregateType::Invocation, id) => {}
                None => return None,
            }
        }
        Some((self.generation.clone(), sessions, invocations))
    }

    /// After a batch from `after` written into `generation`, which found the store at
    /// `before`: holds its open views (or forgets everything when the chain broke).
    fn wrote(
        &mut self,
        generation: &str,
        after: u64,
        before: u64,
        folded: &Fold,
        written: &[bool],
    ) {
        let chained = self.checkpoint == after && self.generation == generation;
        let complete = written.iter().all(|w| *w)
            && written.len() == folded.sessions.len() + folded.invocations.len();
        if before != after || !complete {
            self.forget();
            return;
        }
        if !chained {
            self.forget();
            self.generation = generation.to_owned();
        }
        for c in &folded.sessions {
            if c.view.is_terminal() {
                self.sessions.remove(&c.view.id);
            } else {
                self.sessions.insert(c.view.id.clone(), c.view.clone());
            }
        }
        for c in &folded.invocations {
            if c.view.is_terminal() {
                self.invocations.remove(&c.view.id);
            } else {
                self.invocations.insert(c.view.id.clone(), c.view.clone());
            }
        }
        if self.sessions.len() + self.invocations.len() > OPEN_VIEWS_HELD {
            self.forget();
            return;
        }
        self.checkpoint = folded.last;
    }
}

struct Scripts {
    view: Script,
    correlation: Script,
    page: Script,
    list: Script,
    checkpoint: Script,
    load: Script,
    apply: Script,
    activate: Script,
}

/// Helpers every script starts with.
const PRELUDE: &str = r#"
local function generation(ip, pinned)
  if pinned ~= '' then return pinned end
  return redis.call('GET', ip .. ':active') or '0'
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Drops index entries whose view has left (their deadline passed).
local function prune(idx, now)
  local exp = idx .. ':exp'
  while true do
    local due = redis.call('ZRANGEBYSCORE', exp, '-inf', now, 'LIMIT', 0, 500)
    if #due == 0 then return end
    redis.call('ZREM', idx, unpack(due))
    redis.call('ZREM', exp, unpack(due))
  end
end
"#;

/// ARGV: ip, sp, pinned, kind (`inv`/`ses`), id. The view's JSON, or, when there is none, the
/// checkpoint (an integer), read in the same step: a miss read before a batch and a
/// checkpoint read after it would answer a view that exists as missing during a rebuild.
const VIEW: &str = r#"
local g = generation(ARGV[1], ARGV[3])
local base = ARGV[4] == 'inv' and ARGV[1] or ARGV[2]
local json = redis.call('HGET', base .. ':' .. g .. ':' .. ARGV[4] .. ':' .. ARGV[5], 'json')
if json then return json end
return tonumber(redis.call('GET', ARGV[1] .. ':' .. g .. ':checkpoint') or '0')
"#;

/// ARGV: ip, sp, pinned, correlation key. The invocation's JSON, or nil.
const CORRELATION: &str = r#"
local g = generation(ARGV[1], ARGV[3])
local I = ARGV[1] .. ':' .. g .. ':'
local id = redis.call('GET', I .. 'corr:' .. ARGV[4])
if not id then return false end
return redis.call('HGET', I .. 'inv:' .. id, 'json')
"#;

/// ARGV: ip, sp, pinned, kind, index, offset, limit. {total, json or false...}, newest first.
const PAGE: &str = r#"
local g = generation(ARGV[1], ARGV[3])
local kind = ARGV[4]
local P = (kind == 'inv' and ARGV[1] or ARGV[2]) .. ':' .. g .. ':'
local idx = P .. ARGV[5]
prune(idx, now_ms())
local out = {redis.call('ZCARD', idx)}
local offset, limit = tonumber(ARGV[6]), tonumber(ARGV[7])
if limit <= 0 then return out end
for _, id in ipairs(redis.call('ZREVRANGE', idx, offset, offset + limit - 1)) do
  out[#out + 1] = redis.call('HGET', P .. kind .. ':' .. id, 'json') or false
end
return out
"#;

/// ARGV: ip, sp, pinned, kind, index, highest score (`+inf` for all). {json or false...},
/// lowest score first.
const LIST: &str = r#"
local g = generation(ARGV[1], ARGV[3])
local kind = ARGV[4]
local P = (kind == 'inv' and ARGV[1] or ARGV[2]) .. ':' .. g .. ':'
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P .. ARGV[5], '-inf', ARGV[6])) do
  out[#out + 1] = redis.call('HGET', P .. kind .. ':' .. id, 'json') or false
end
return out
"#;

/// ARGV: ip, sp, pinned. The checkpoint.
const CHECKPOINT: &str = r#"
local g = generation(ARGV[1], ARGV[3])
return tonumber(redis.call('GET', ARGV[1] .. ':' .. g .. ':checkpoint') or '0')
"#;

/// ARGV: ip, sp, pinned, n sessions, session ids..., invocation ids...
/// {generation, checkpoint, session json or false..., invocation json or false...}.
const LOAD: &str = r#"
local g = generation(ARGV[1], ARGV[3])
local I, S = ARGV[1] .. ':' .. g .. ':', ARGV[2] .. ':' .. g .. ':'
local out = {g, tonumber(redis.call('GET', I .. 'checkpoint') or '0')}
local ns = tonumber(ARGV[4])
for k = 5, #ARGV do
  local key = (k < 5 + ns) and (S .. 'ses:' .. ARGV[k]) or (I .. 'inv:' .. ARGV[k])
  out[#out + 1] = redis.call('HGET', key, 'json') or false
end
return out
"#;

/// ARGV: ip, sp, pinned, expected generation, after, last, n sessions, n invocations, the
/// announcement channel (empty: announce nothing, as a rebuild does), then per session: id, version, sequence, created, deadline, live score (`-` when terminal),
/// principal key, json; per invocation: id, version, sequence, created, deadline, terminal
/// (`1`/`0`), session id, correlation key (empty when none), json. Numbers travel as decimal
/// strings; 0 means none. With `exact` (ARGV[10], `1`) the batch must continue the checkpoint
/// exactly (the writer folded it onto the views it holds, [`OpenViews`], not onto a load).
/// Every session view written is announced (`s <id>`) and every terminal
/// invocation view written with its json (`i <id> <json>`), in the same script as the writes,
/// so a reader woken by one finds the view in the store (and need not read it).
/// {1, checkpoint before the batch, written (1/0) per view...}, or {-1, checkpoint} for a gap,
/// or {-2, generation} when the active generation changed since the load, or {-3, checkpoint}
/// when `exact` and the checkpoint is not `after`.
const APPLY: &str = r#"
local ip, sp, pinned = ARGV[1], ARGV[2], ARGV[3]
local g = generation(ip, pinned)
if g ~= ARGV[4] then return {-2, g} end
local I, S = ip .. ':' .. g .. ':', sp .. ':' .. g .. ':'
local cp = tonumber(redis.call('GET', I .. 'checkpoint') or '0')
if cp < tonumber(ARGV[5]) then return {-1, cp} end
if ARGV[10] == '1' and cp ~= tonumber(ARGV[5]) then return {-3, cp} end
local now = now_ms()
-- Put-if-newer: a view is written only past the checkpoint and at a newer version.
local function put(key, v, seq, json)
  if tonumber(seq) <= cp then return false end
  local cur = redis.call('HGET', key, 'v')
  if cur and tonumber(cur) >= tonumber(v) then return false end
  redis.call('HSET', key, 'v', v, 's', seq, 'json', json)
  return true
end
-- An index key lives as long as its longest-lived entry: for good while any entry is live.
local function settle(idx)
  local exp = idx .. ':exp'
  local n = redis.call('ZCARD', idx)
  if n == 0 then redis.call('DEL', exp) return end
  if redis.call('ZCARD', exp) >= n then
    local top = redis.call('ZRANGE', exp, -1, -1, 'WITHSCORES')
    redis.call('PEXPIREAT', idx, top[2])
    redis.call('PEXPIREAT', exp, top[2])
  else
    redis.call('PERSIST', idx)
    redis.call('PERSIST', exp)
  end
end
-- The indexes the batch added to, each pruned and settled once, after the batch's views (the
-- same end state as after each addition, for a fraction of the calls: a batch adds many
-- entries to few indexes).
local touched, order = {}, {}
local function index(idx, member, created, dl)
  -- Nothing to add (a view that moved on, not created or ended here): the index is as it
  -- was, and readers prune it before they read.
  if created == '0' and dl == '0' then return end
  if created ~= '0' then redis.call('ZADD', idx, created, member) end
  if dl ~= '0' then redis.call('ZADD', idx .. ':exp', dl, member) end
  if not touched[idx] then
    touched[idx] = true
    order[#order + 1] = idx
  end
end
local out = {1, cp}
local chan = ARGV[9]
local a = 11
for _ = 1, tonumber(ARGV[7]) do
  local id, v, seq, created, dl, live, pk, json =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7]
  a = a + 8
  local key = S .. 'ses:' .. id
  if put(key, v, seq, json) then
    if live == '-' then redis.call('ZREM', S .. 'live', id) else redis.call('ZADD', S .. 'live', live, id) end
    index(S .. 'by-principal:' .. pk, id, created, dl)
    if dl ~= '0' then redis.call('PEXPIREAT', key, dl) end
    if chan ~= '' then redis.call('PUBLISH', chan, 's ' .. id) end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for _ = 1, tonumber(ARGV[8]) do
  local id, v, seq, created, dl, terminal, sid, corr, json =
    ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], ARGV[a + 6], ARGV[a + 7], ARGV[a + 8]
  a = a + 9
  local key = I .. 'inv:' .. id
  if put(key, v, seq, json) then
    if terminal == '1' then
      redis.call('ZREM', I .. 'open', id)
    elseif created ~= '0' then
      redis.call('ZADD', I .. 'open', created, id)
    end
    index(I .. 'by-session:' .. sid, id, created, dl)
    if corr ~= '' then
      local ck = I .. 'corr:' .. corr
      if created ~= '0' then redis.call('SET', ck, id) end
      if dl ~= '0' then redis.call('PEXPIREAT', ck, dl) end
    end
    if dl ~= '0' then redis.call('PEXPIREAT', key, dl) end
    if terminal == '1' and chan ~= '' then redis.call('PUBLISH', chan, 'i ' .. id .. ' ' .. json) end
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
for _, idx in ipairs(order) do
  prune(idx, now)
  settle(idx)
end
if tonumber(ARGV[6]) > cp then redis.call('SET', I .. 'checkpoint', ARGV[6]) end
return out
"#;

/// ARGV: ip, previous generation, new generation. {1, checkpoint}, or {-1, active generation}
/// when another rebuild switched first, or {-2, active checkpoint, rebuild checkpoint}.
const ACTIVATE: &str = r#"
local ip = ARGV[1]
local cur = redis.call('GET', ip .. ':active') or '0'
if cur ~= ARGV[2] then return {-1, cur} end
local active = tonumber(redis.call('GET', ip .. ':' .. cur .. ':checkpoint') or '0')
local fresh = tonumber(redis.call('GET', ip .. ':' .. ARGV[3] .. ':checkpoint') or '0')
if fresh < active then return {-2, active, fresh} end
redis.call('SET', ip .. ':active', ARGV[3])
return {1, fresh}
"#;

impl Scripts {
    fn new() -> Self {
        let s = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            view: s(VIEW),
            correlation: s(CORRELATION),
            page: s(PAGE),
            list: s(LIST),
            checkpoint: s(CHECKPOINT),
            load: s(LOAD),
            apply: s(APPLY),
            activate: s(ACTIVATE),
        }
    }
}

/// Classifies a client error: connection-class failures are `Unavailable` (retryable).
fn redis_error(e: redis::RedisError) -> ReadModelError {
    use redis::{ErrorKind, ServerErrorKind};
    let unavailable = e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || matches!(
            e.kind(),
            ErrorKind::AuthenticationFailed
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::ReadOnly
                )
        );
    if unavailable {
        ReadModelError::Unavailable {
            source: Box::new(e),
        }
    } else {
        ReadModelError::Backend {
            source: Box::new(e),
        }
    }
}

fn unexpected(what: &str, value: &Value) -> ReadModelError {
    ReadModelError::Backend {
        source: format!("unexpected answer to {what}: {value:?}").into(),
    }
}

fn int(what: &str, value: &Value) -> Result<i64, ReadModelError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected(what, value)),
        other => Err(unexpected(what, other)),
    }
}

fn text(what: &str, value: &Value) -> Result<String, ReadModelError> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).map_err(|_| unexpected(what, value)),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(n) => Ok(n.to_string()),
        other => Err(unexpected(what, other)),
    }
}

/// A view's JSON, or `None` for a nil answer.
fn view<V: DeserializeOwned>(key: &str, value: &Value) -> Result<Option<Arc<V>>, ReadModelError> {
    match value {
        Value::Nil => Ok(None),
        Value::BulkString(b) => serde_json::from_slice(b)
            .map(|v| Some(Arc::new(v)))
            .map_err(|source| ReadModelError::Corrupt {
                key: key.to_owned(),
                source,
            }),
        other => Err(unexpected("a view", other)),
    }
}

fn array(what: &str, value: Value) -> Result<Vec<Value>, ReadModelError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(unexpected(what, &other)),
    }
}

impl ValkeyStore {
    /// Connects (within `config.timeout`) and checks the server answers PING. A connection lost
    /// later is re-established in the background; meanwhile calls fail `Unavailable`.
    pub async fn connect(config: &ValkeyConfig) -> Result<Self, ReadModelError> {
        config
            .validate()
            .map_err(|e| ReadModelError::Backend { source: e.into() })?;
        let mut redis = RedisConnectionInfo::default().set_db(config.db);
        if let Some(p) = &config.password {
            redis = redis.set_password(p);
        }
        let info = ConnectionAddr::Tcp(config.host.clone(), config.port)
            .into_connection_info()
            .map_err(redis_error)?
            .set_redis_settings(redis);
        let client = redis::Client::open(info).map_err(redis_error)?;
        let announce_channel = format!("{}:announce", config.invocation_prefix);
        let (announced, _) = tokio::sync::broadcast::channel(ANNOUNCED_CAPACITY);
        tokio::spawn(listen(
            client.clone(),
            announce_channel.clone(),
            announced.downgrade(),
        ));
        let manager = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(config.timeout))
            .set_response_timeout(Some(config.timeout))
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(1));
        let connect = ConnectionManager::new_with_config(client, manager);
        let mut con = tokio::time::timeout(config.timeout * 4, connect)
            .await
            .map_err(|_| ReadModelError::Unavailable {
                source: format!(
                    "no answer from {}:{} within {:?}",
                    config.host,
                    config.port,
                    config.timeout * 4
                )
                .into(),
            })?
            .map_err(redis_error)?;
        let _: () = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        Ok(ValkeyStore {
            con,
            inner: Arc::new(Inner {
                invocation_prefix: config.invocation_prefix.clone(),
                session_prefix: config.session_prefix.clone(),
                retention: config.retention,
                upcasters: upcast::registry(),
                scripts: Scripts::new(),
                seen: watch::channel(0).0,
                open: Default::default(),
                announced: announced.clone(),
                announce_channel: announce_channel.clone(),
            }),
            pinned: None,
        })
    }

    fn pinned(&self) -> &str {
        self.pinned.as_deref().unwrap_or("")
    }

    /// Runs `script` with the prefixes and the pinned generation first, then `args`.
    async fn run(
        &self,
        script: &Script,
        args: impl FnOnce(&mut redis::ScriptInvocation<'_>),
    ) -> Result<Value, ReadModelError> {
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(&self.inner.invocation_prefix)
            .arg(&self.inner.session_prefix)
            .arg(self.pinned());
        args(&mut invocation);
        let mut con = self.con.clone();
        invocation
            .invoke_async::<Value>(&mut con)
            .await
            .map_err(redis_error)
    }

    async fn view<V: DeserializeOwned>(
        &self,
        kind: &str,
        id: &str,
    ) -> Result<Option<Arc<V>>, ReadModelError> {
        let id = query_escape(id);
        let seen = *self.inner.seen.borrow();
        let value = self
            .run(&self.inner.scripts.view, |i| {
                i.arg(kind).arg(&id);
            })
            .await?;
        if let Value::Int(checkpoint) = value {
            self.unless_behind(seen, u64::try_from(checkpoint).unwrap_or_default())?;
            return Ok(None);
        }
        view(&format!("{kind}:{id}"), &value)
    }

    /// The active generation's checkpoint as the store holds it now.
    async fn stored_checkpoint(&self) -> Result<u64, ReadModelError> {
        let value = self.run(&self.inner.scripts.checkpoint, |_| {}).await?;
        Ok(u64::try_from(int("a checkpoint", &value)?).unwrap_or_default())
    }

    /// Called when a read found nothing: `Unavailable` when the store holds less than this
    /// process saw applied to it (it restarted empty or was flushed, and the projector is
    /// folding the log into it again), so a view that exists is never answered as missing,
    /// nor a used idempotency key as unused.
    async fn unless_reset(&self) -> Result<(), ReadModelError> {
        if *self.inner.seen.borrow() == 0 {
            return Ok(());
        }
        let seen = *self.inner.seen.borrow();
        self.unless_behind(seen, self.stored_checkpoint().await?)
    }

    /// [`ValkeyStore::unless_reset`] with the store's checkpoint read alongside the miss, and
    /// `seen` read before it (read after, it may include a batch applied since).
    fn unless_behind(&self, seen: u64, checkpoint: u64) -> Result<(), ReadModelError> {
        if checkpoint < seen {
            return Err(ReadModelError::Unavailable {
                source: format!(
                    "the store is at sequence {checkpoint}, behind the {seen} it held before \
                     (restarted empty or flushed); it is being rebuilt from the event log"
                )
                .into(),
            });
        }
        Ok(())
    }

    async fn page<V: DeserializeOwned>(
        &self,
        kind: &str,
        index: String,
        offset: usize,
        limit: usize,
    ) -> Result<Page<V>, ReadModelError> {
        let value = self
            .run(&self.inner.scripts.page, |i| {
                i.arg(kind).arg(&index).arg(offset).arg(limit);
            })
            .await?;
        let mut items = array("a page", value)?.into_iter();
        let total = int("a page", &items.next().unwrap_or_default())?;
        if total == 0 {
            self.unless_reset().await?;
        }
        Ok(Page {
            items: items
                .map(|v| view(&index, &v))
                .filter_map(Result::transpose)
                .collect::<Result<_, _>>()?,
            total: usize::try_from(total).unwrap_or_default(),
        })
    }

    async fn list<V: DeserializeOwned>(
        &self,
        kind: &str,
        index: &str,
        highest: Option<i64>,
    ) -> Result<Vec<Arc<V>>, ReadModelError> {
        let highest = highest.map_or_else(|| "+inf".to_owned(), |h| h.to_string());
        let value = self
            .run(&self.inner.scripts.list, |i| {
                i.arg(kind).arg(index).arg(&highest);
            })
            .await?;
        array("a list", value)?
            .iter()
            .map(|v| view(index, v))
            .filter_map(Result::transpose)
            .collect()
    }

    fn saw(&self, checkpoint: u64) {
        self.inner.seen.send_if_modified(|c| {
            let newer = checkpoint > *c;
            if newer {
                *c = checkpoint;
            }
            newer
        });
    }

    /// One attempt at a batch: load (unless [`OpenViews`] holds every view it touches), fold,
    /// write. `Ok(None)` when the active generation changed in between, or the views held were
    /// not the store's (try again).
    async fn try_apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: &mut Vec<Option<TypedEvent>>,
    ) -> Result<Option<(Vec<Applied>, Vec<Arc<InvocationView>>)>, ReadModelError> {
        let (session_ids, invocation_ids) = touched(events);
        let held = self
            .inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .held(after, events, &session_ids, &invocation_ids);
        let exact = held.is_some();
        let (generation, checkpoint, sessions, invocations) = match held {
            Some((generation, sessions, invocations)) => (generation, after, sessions, invocations),
            None => self.load(after, &session_ids, &invocation_ids).await?,
        };
        let mut folded = fold(
            &self.inner.upcasters,
            checkpoint,
            sessions,
            invocations,
            events,
            std::mem::take(typed),
        );
        let args = self.apply_args(&generation, after, exact, &folded)?;
        let answer = self
            .run(&self.inner.scripts.apply, |i| {
                for a in &args {
                    i.arg(a.as_slice());
                }
            })
            .await;
        let answer = match answer.and_then(|a| array("an apply", a)) {
            Ok(answer) => answer,
            Err(e) => {
                // Written or not: what the store holds is unknown.
                self.inner
                    .open
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget();
                return Err(e);
            }
        };
        let status = answer.first().map(|v| int("an apply", v)).transpose()?;
        if status != Some(1) {
            self.inner
                .open
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .forget();
        }
        match status {
            Some(1) => {}
            Some(-1) => {
                let checkpoint = int("an apply", answer.get(1).unwrap_or(&Value::Nil))?;
                return Err(ReadModelError::Gap {
                    after,
                    checkpoint: u64::try_from(checkpoint).unwrap_or_default(),
                });
            }
            // Another generation, or views held that another writer moved on: load them.
            Some(-2) | Some(-3) => return Ok(None),
            _ => return Err(unexpected("an apply", &Value::Array(answer))),
        }
        let before = u64::try_from(int("an apply", answer.get(1).unwrap_or(&Value::Nil))?)
            .unwrap_or_default();
        let written = answer[2..]
            .iter()
            .map(|v| int("an apply", v).map(|n| n == 1))
            .collect::<Result<Vec<_>, _>>()?;
        let skipped: Vec<usize> = folded
            .sessions
            .iter()
            .map(|c| &c.events)
            .chain(folded.invocations.iter().map(|c| &c.events))
            .zip(written.iter().chain(std::iter::repeat(&false)))
            .filter(|(_, w)| !**w)
            .flat_map(|(events, _)| events.iter().copied())
            .collect();
        folded.skip(&skipped);
        self.inner
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wrote(&generation, after, before, &folded, &written);
        let finished = folded
            .invocations
            .iter()
            .zip(written.iter().skip(folded.sessions.len()))
            .filter(|(c, written)| **written && c.view.is_terminal())
            .map(|(c, _)| c.view.clone())
            .collect();
        self.saw(folded.last);
        Ok(Some((folded.applied, finished)))
    }

    /// The views a batch touches as the store holds them: {generation, checkpoint, sessions,
    /// invocations}, after checking the batch continues the checkpoint.
    async fn load(
        &self,
        after: u64,
        session_ids: &[String],
        invocation_ids: &[String],
    ) -> Result<(String, u64, Vec<Arc<SessionView>>, Vec<Arc<InvocationView>>), ReadModelError>
    {
        let escaped_sessions: Vec<String> = session_ids.iter().map(|i| query_escape(i)).collect();
        let escaped_invocations: Vec<String> =
            invocation_ids.iter().map(|i| query_escape(i)).collect();
        let loaded = self
            .run(&self.inner.scripts.load, |i| {
                i.arg(escaped_sessions.len())
                    .arg(&escaped_sessions)
                    .arg(&escaped_invocations);
            })
            .await?;
        let mut loaded = array("a load", loaded)?.into_iter();
        let generation = text("a load", &loaded.next().unwrap_or_default())?;
        let checkpoint =
            u64::try_from(int("a load", &loaded.next().unwrap_or_default())?).unwrap_or_default();
        if checkpoint < after {
            return Err(ReadModelError::Gap { after, checkpoint });
        }
        let mut sessions = Vec::new();
        for (id, v) in session_ids.iter().zip(loaded.by_ref()) {
            sessions.extend(view::<SessionView>(&format!("ses:{id}"), &v)?);
        }
        let mut invocations = Vec::new();
        for (id, v) in invocation_ids.iter().zip(loaded) {
            invocations.extend(view::<InvocationView>(&format!("inv:{id}"), &v)?);
        }
        Ok((generation, checkpoint, sessions, invocations))
    }

    fn apply_args(
        &self,
        generation: &str,
        after: u64,
        exact: bool,
        folded: &Fold,
    ) -> Result<Vec<Vec<u8>>, ReadModelError> {
        let retention = self.inner.retention;
        let n = |v: u64| v.to_string().into_bytes();
        let ms = |v: Option<i64>| v.unwrap_or(0).max(0).to_string().into_bytes();
        let mut args = vec![
            generation.as_bytes().to_vec(),
            n(after),
            n(folded.last),
            n(folded.sessions.len() as u64),
            n(folded.invocations.len() as u64),
            // A rebuild's views are not read by anyone yet: nothing to announce.
            if self.pinned.is_some() {
                Vec::new()
            } else {
                self.inner.announce_channel.as_bytes().to_vec()
            },
            if exact { b"1".to_vec() } else { b"0".to_vec() },
        ];
        for c in &folded.sessions {
            let v = &c.view;
            let live = if v.is_terminal() {
                "-".into()
            } else {
                unix_ms(v.expires_at).to_string()
            };
            // A deadline of 0 means none: a view whose deadline is 0 or before has left anyway.
            let dl = deadline(c.ended_at_ms, retention.sessions).map(|d| d.max(1));
            args.extend([
                query_escape(&v.id).into_bytes(),
                n(v.version),
                n(c.sequence),
                n(c.created.unwrap_or(0)),
                ms(dl),
                live.into_bytes(),
                format!(
                    "{}:{}",
                    query_escape(&v.principal.tenant_id),
                    query_escape(&v.principal.actor_id)
                )
                .into_bytes(),
                serde_json::to_vec(&**v).map_err(|e| ReadModelError::Backend {
                    source: Box::new(e),
                })?,
            ]);
        }
        for c in &folded.invocations {
            let v = &c.view;
            let dl = deadline(c.ended_at_ms, retention.invocations).map(|d| d.max(1));
            let mut json = Vec::with_capacity(512);
            v.write_json(&mut json)
                .map_err(|e| ReadModelError::Backend {
                    source: Box::new(e),
                })?;
            args.extend([
                query_escape(&v.id).into_bytes(),
                n(v.version),
                n(c.sequence),
                n(c.created.unwrap_or(0)),
                ms(dl),
                if v.is_terminal() {
                    b"1".to_vec()
                } else {
                    b"0".to_vec()
                },
                query_escape(&v.session_id).into_bytes(),
                v.correlation_id
                    .as_deref()
                    .map(|c| correlation_key(&v.session_id, &v.tool_name, c))
                    .unwrap_or_default()
                    .into_bytes(),
                json,
            ]);
        }
        Ok(args)
    }

    /// Deletes every generation under the prefixes but `keep`, a batch of keys at a time.
    async fn discard_generations_but(&self, keep: &str) -> Result<usize, ReadModelError> {
        let mut con = self.con.clone();
        let mut deleted = 0;
        let prefixes = [&self.inner.invocation_prefix, &self.inner.session_prefix];
        for (n, prefix) in prefixes.iter().enumerate() {
            if n == 1 && prefixes[0] == prefixes[1] {
                break;
            }
            let pattern = format!("{}:*", glob_escape(prefix));
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut con)
                    .await
                    .map_err(redis_error)?;
                let doomed: Vec<&String> = keys
                    .iter()
                    .filter(|k| {
                        let generation = k[prefix.len() + 1..].split(':').next().unwrap_or("");
                        let numbered = !generation.is_empty()
                            && generation.bytes().all(|b| b.is_ascii_digit());
                        numbered && generation != keep && k[prefix.len() + 1..].contains(':')
                    })
                    .collect();
                if !doomed.is_empty() {
                    let n: usize = redis::cmd("UNLINK")
                        .arg(&doomed)
                        .query_async(&mut con)
                        .await
                        .map_err(redis_error)?;
                    deleted += n;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(deleted)
    }
}

/// Escapes the glob characters of a SCAN pattern.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[async_trait]
impl ReadModelStore for ValkeyStore {
    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<super::Announcement>> {
        Some(self.inner.announced.subscribe())
    }

    async fn session(&self, id: &str) -> Result<Option<Arc<SessionView>>, ReadModelError> {
        self.view("ses", id).await
    }

    async fn invocation(&self, id: &str) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        self.view("inv", id).await
    }

    async fn invocation_by_correlation(
        &self,
        session_id: &str,
        tool_name: &str,
        correlation_id: &str,
    ) -> Result<Option<Arc<InvocationView>>, ReadModelError> {
        let key = correlation_key(session_id, tool_name, correlation_id);
        let value = self
            .run(&self.inner.scripts.correlation, |i| {
                i.arg(&key);
            })
            .await?;
        let found = view(&format!("corr:{key}"), &value)?;
        if found.is_none() {
            self.unless_reset().await?;
        }
        Ok(found)
    }

    async fn session_invocations(
        &self,
        session_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<InvocationView>, ReadModelError> {
        let index = format!("by-session:{}", query_escape(session_id));
        self.page("inv", index, offset, limit).await
    }

    async fn principal_sessions(
        &self,
        tenant_id: &str,
        actor_id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<Page<SessionView>, ReadModelError> {
        let index = format!(
            "by-principal:{}:{}",
            query_escape(tenant_id),
            query_escape(actor_id)
        );
        self.page("ses", index, offset, limit).await
    }

    async fn live_sessions(&self) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        self.list("ses", "live", None).await
    }

    async fn sessions_due(
        &self,
        now: time::OffsetDateTime,
    ) -> Result<Vec<Arc<SessionView>>, ReadModelError> {
        self.list("ses", "live", Some(unix_ms(now))).await
    }

    async fn open_invocations(&self) -> Result<Vec<Arc<InvocationView>>, ReadModelError> {
        self.list("inv", "open", None).await
    }

    async fn apply(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<Vec<Applied>, ReadModelError> {
        Ok(self.apply_finished(after, events, typed).await?.0)
    }

    async fn apply_finished(
        &self,
        after: u64,
        events: &[Arc<RecordedEvent>],
        typed: Vec<Option<TypedEvent>>,
    ) -> Result<(Vec<Applied>, Vec<Arc<InvocationView>>), ReadModelError> {
        let mut typed = typed;
        // A rebuild activated between the load and the write: load again from the new one.
        for _ in 0..4 {
            if let Some(applied) = self.try_apply(after, events, &mut typed).await? {
                return Ok(applied);
            }
        }
        Err(ReadModelError::Backend {
            source: "the active generation kept changing during a batch".into(),
        })
    }

    async fn checkpoint(&self) -> Result<u64, ReadModelError> {
        let checkpoint = self.stored_checkpoint().await?;
        self.saw(checkpoint);
        Ok(checkpoint)
    }

    async fn wait_for(&self, sequence: u64, timeout: Duration) -> Result<bool, ReadModelError> {
        // Batches this process applies wake the wait at once; others are seen by polling the
        // checkpoint, more slowly the longer the wait.
        let deadline = Instant::now() + timeout;
        let mut seen = self.inner.seen.subscribe();
        let mut pause = Duration::from_millis(1);
        loop {
            if *seen.borrow_and_update() >= sequence || self.checkpoint().await? >= sequence {
                return Ok(true);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            tokio::select! {
                _ = seen.changed() => {}
                _ = tokio::time::sleep(pause.min(deadline - now)) => {}
            }
            pause = (pause * 2).min(Duration::from_millis(25));
        }
    }

    async fn rebuild(&self) -> Result<Box<dyn Rebuild>, ReadModelError> {
        let mut con = self.con.clone();
        let ip = &self.inner.invocation_prefix;
        let previous: Option<String> = redis::cmd("GET")
            .arg(format!("{ip}:active"))
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        let number: u64 = redis::cmd("INCR")
            .arg(format!("{ip}:generations"))
            .query_async(&mut con)
            .await
            .map_err(redis_error)?;
        let mut store = self.clone();
        store.pinned = Some(number.to_string());
        // Its own waiters: the rebuild's checkpoint is not the active one's.
        store.inner = Arc::new(Inner {
            invocation_prefix: self.inner.invocation_prefix.clone(),
            session_prefix: self.inner.session_prefix.clone(),
            retention: self.inner.retention,
            upcasters: upcast::registry(),
            scripts: Scripts::new(),
            seen: watch::channel(0).0,
            open: Default::default(),
            announced: self.inner.announced.clone(),
            announce_channel: self.inner.announce_channel.clone(),
        });
        Ok(Box::new(ValkeyRebuild {
            previous: previous.unwrap_or_else(|| "0".into()),
            generation: number,
            store,
            active: self.clone(),
        }))
    }

    fn backend(&self) -> &'static str {
        "valkey"
    }

    /// A PING, bounded by the response timeout.
    async fn ping(&self) -> Result<(), ReadModelError> {
        let mut con = self.con.clone();
        redis::cmd("PING")
            .query_async::<()>(&mut con)
            .await
            .map_err(redis_error)
    }
}

struct ValkeyRebuild {
    /// The active generation when the rebuild began.
    previous: String,
    /// The new generation's number (`I:generations` when the rebuild began).
    generation: u64,
    /// Pinned to the new generation.
    store: ValkeyStore,
    active: ValkeyStore,
}

#[async_trait]
impl Rebuild for ValkeyRebuild {
    fn store(&self) -> Arc<dyn ReadModelStore> {
        Arc::new(self.store.clone())
    }

    fn generation(&self) -> u64 {
        self.generation
    }

    async fn activate(&self) -> Result<(), ReadModelError> {
        let fresh = self.store.pinned().to_owned();
        let mut invocation = self.store.inner.scripts.activate.prepare_invoke();
        invocation
            .arg(&self.store.inner.invocation_prefix)
            .arg(&self.previous)
            .arg(&fresh);
        let mut con = self.store.con.clone();
        let answer = array(
            "an activation",
            invocation
                .invoke_async::<Value>(&mut con)
                .await
                .map_err(redis_error)?,
        )?;
        let at = |i: usize| int("an activation", answer.get(i).unwrap_or(&Value::Nil));
        match at(0)? {
            1 => {
                self.active.saw(u64::try_from(at(1)?).unwrap_or_default());
            }
            -1 => return Err(ReadModelError::Superseded),
            -2 => {
                return Err(ReadModelError::Behind {
                    active: u64::try_from(at(1)?).unwrap_or_default(),
                    rebuild: u64::try_from(at(2)?).unwrap_or_default(),
                });
            }
            _ => return Err(unexpected("an activation", &Value::Array(answer))),
        }
        // Readers resolve the generation inside each script: none reads the old one any more.
        match self.store.discard_generations_but(&fresh).await {
            Ok(n) => tracing::info!(generation = %fresh, keys_deleted = n, "read models switched"),
            Err(e) => tracing::warn!(
                generation = %fresh,
                error = %e,
                "read models switched; the previous generation could not be deleted"
            ),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valkey_addr_overrides_host_and_port() {
        assert_eq!(
            ValkeyConfig::address(None, "localhost", 6379).unwrap(),
            ("localhost".into(), 6379)
        );
        assert_eq!(
            ValkeyConfig::address(Some("valkey.svc:6380"), "localhost", 6379).unwrap(),
            ("valkey.svc".into(), 6380)
        );
        assert_eq!(
            ValkeyConfig::address(Some("[::1]:7000"), "localhost", 6379).unwrap(),
            ("::1".into(), 7000)
        );
        assert!(ValkeyConfig::address(Some("valkey"), "localhost", 6379).is_err());
        assert!(ValkeyConfig::address(Some(":80"), "localhost", 6379).is_err());
    }

    #[test]
    fn nested_key_prefixes_are_refused() {
        let mut c = ValkeyConfig::default();
        assert!(c.validate().is_ok());
        c.session_prefix = "workspace:invocation:s".into();
        assert!(c.validate().is_err());
        c.session_prefix = c.invocation_prefix.clone();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn glob_characters_in_a_prefix_are_escaped() {
        assert_eq!(glob_escape("ws:[a]*?\\"), "ws:\\[a\\]\\*\\?\\\\");
    }
}
