use std::path::Path;
use std::sync::Arc;

use time::macros::datetime;
use ulid::Ulid;
use workspace_events::{AggregateType, EventEnvelope, RecordedEvent};

use super::*;

const SESSION: AggregateType = AggregateType::Session;
const INVOCATION: AggregateType = AggregateType::Invocation;

fn event(aggregate_type: AggregateType, id: &str, version: u64) -> EventEnvelope {
    EventEnvelope {
        event_id: Ulid::generate(),
        aggregate_type,
        aggregate_id: id.to_owned(),
        aggregate_version: version,
        event_type: "test.happened".into(),
        schema_version: 1,
        occurred_at: datetime!(2026-01-02 03:04:05.000000006 UTC),
        correlation_id: Some(format!("corr-{id}-{version}")),
        causation_id: None,
        actor: None,
        payload: serde_json::json!({"version": version, "text": "x".repeat(40)}).into(),
    }
}

/// `count` events of one aggregate following `after`.
fn events(aggregate_type: AggregateType, id: &str, after: u64, count: u64) -> Vec<EventEnvelope> {
    (after + 1..=after + count)
        .map(|v| event(aggregate_type, id, v))
        .collect()
}

async fn open(dir: &Path) -> Arc<FileEventLog> {
    FileEventLog::open(dir, FsyncPolicy::Never).await.unwrap()
}

async fn open_small_cache(dir: &Path, cache_events: usize) -> Arc<FileEventLog> {
    FileEventLog::open_with(
        dir,
        FileEventLogOptions {
            fsync: FsyncPolicy::Never,
            cache_events,
            ..FileEventLogOptions::default()
        },
    )
    .await
    .unwrap()
}

fn sequences(events: &[Arc<RecordedEvent>]) -> Vec<u64> {
    events.iter().map(|e| e.sequence).collect()
}

fn envelopes(events: &[Arc<RecordedEvent>]) -> Vec<EventEnvelope> {
    events.iter().map(|e| e.envelope.clone()).collect()
}

fn log_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join(LOG_FILE)).unwrap()
}

/// Offsets where each record starts, and the file length.
fn record_offsets(bytes: &[u8]) -> Vec<usize> {
    let mut offsets = vec![0];
    let mut at = 0;
    while at < bytes.len() {
        let (_, len) = record::decode_prefix(&bytes[at..]).unwrap();
        at += len;
        offsets.push(at);
    }
    offsets
}

fn corrupt_copies(dir: &Path) -> Vec<Vec<u8>> {
    let mut copies: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events.log.corrupt-"))
        })
        .collect();
    copies.sort();
    copies.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// Writes `n` single-event appends to distinct aggregates and closes the log.
async fn write_singles(dir: &Path, n: u64) {
    let log = open(dir).await;
    for i in 0..n {
        log.append(
            SESSION,
            &format!("session-{i}"),
            0,
            events(SESSION, &format!("session-{i}"), 0, 1),
        )
        .await
        .unwrap();
    }
    log.close().await.unwrap();
}

/// An append whose caller goes away while it waits for company in the group commit is still
/// committed at once (not whenever the next append comes), like one whose reply was lost.
#[tokio::test]
async fn an_append_abandoned_after_it_was_queued_is_committed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path()).await;
    let mut append =
        Box::pin(log.append(SESSION, "session-a", 0, events(SESSION, "session-a", 0, 2)));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    assert!(
        append.as_mut().poll(&mut cx).is_pending(),
        "the append yields once"
    );
    drop(append);
    assert_eq!(
        sequences(&log.load(SESSION, "session-a").await.unwrap()),
        [1, 2]
    );
    assert_eq!(*log.head().borrow(), 2);
}

#[tokio::test]
async fn reopening_preserves_events_indexes_head_and_dedup() {
    let dir = tempfile::tempdir().unwrap();
    let s1 = events(SESSION, "session-1", 0, 2);
    let i1 = events(INVOCATION, "inv-1", 0, 1);
    {
        let log = FileEventLog::open(dir.path(), FsyncPolicy::Always)
            .await
            .unwrap();
        log.append(SESSION, "session-1", 0, s1.clone())
            .await
            .unwrap();
        log.append(INVOCATION, "inv-1", 0, i1.clone())
            .await
            .unwrap();
        log.close().await.unwrap();
    }
    let log = FileEventLog::open(dir.path(), FsyncPolicy::default())
        .await
        .unwrap();
    assert_eq!(*log.head().borrow(), 3);
    assert_eq!(
        envelopes(&log.load(SESSION, "session-1").await.unwrap()),
        s1
    );
    assert_eq!(envelopes(&log.load(INVOCATION, "inv-1").await.unwrap()), i1);
    assert_eq!(sequences(&log.read_from(0, 10).await.unwrap()), [1, 2, 3]);
    // Versions survived: a stale append conflicts, the next version is accepted.
    assert!(matches!(
        log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
            .await,
        Err(StoreError::Conflict { actual: 2, .. })
    ));
    // Dedup survived.
    let retry = log.append(SESSION, "session-1", 0, s1).await.unwrap();
    assert_eq!(
        (retry.first_sequence, retry.last_sequence, retry.duplicate),
        (1, 2, true)
    );
    let next = log
        .append(SESSION, "session-1", 2, events(SESSION, "session-1", 2, 1))
        .await
        .unwrap();
    assert_eq!(next.first_sequence, 4);
    // Dropping without close also syncs and releases the lock before returning.
    drop(log);
    let log = open(dir.path()).await;
    assert_eq!(*log.head().borrow(), 4);
}

#[tokio::test]
async fn a_retry_after_the_duplicate_window_is_recognised_by_reading_the_aggregate() {
    let dir = tempfile::tempdir().unwrap();
    let options = FileEventLogOptions {
        fsync: FsyncPolicy::Never,
        dedup_window: std::time::Duration::ZERO,
        ..FileEventLogOptions::default()
    };
    let log = FileEventLog::open_with(dir.path(), options.clone())
        .await
        .unwrap();
    let s1 = events(SESSION, "session-1", 0, 2);
    log.append(SESSION, "session-1", 0, s1.clone())
        .await
        .unwrap();
    let s2 = events(SESSION, "session-1", 2, 1);
    log.append(SESSION, "session-1", 2, s2.clone())
        .await
        .unwrap();
    log.close().await.unwrap();
    drop(log);
    // Reopened with a zero window the scan keeps no ids: retries are settled from the
    // aggregate, and none writes anything.
    let log = FileEventLog::open_with(dir.path(), options).await.unwrap();
    let retry = log
        .append(SESSION, "session-1", 0, s1.clone())
        .await
        .unwrap();
    assert_eq!(
        (retry.first_sequence, retry.last_sequence, retry.duplicate),
        (1, 2, true)
    );
    let retry = log
        .append(SESSION, "session-1", 2, s2.clone())
        .await
        .unwrap();
    assert_eq!((retry.first_sequence, retry.duplicate), (3, true));
    // Part of the original events: refused.
    let mut partial = s1.clone();
    partial[1] = event(SESSION, "session-1", 2);
    assert!(matches!(
        log.append(SESSION, "session-1", 0, partial).await,
        Err(StoreError::InvalidAppend(_))
    ));
    // New events at a stale version: the conflict.
    assert!(matches!(
        log.append(SESSION, "session-1", 1, events(SESSION, "session-1", 1, 1))
            .await,
        Err(StoreError::Conflict { actual: 3, .. })
    ));
    assert_eq!(*log.head().borrow(), 3);
}

#[tokio::test]
async fn an_open_waits_for_a_lock_its_holder_releases_a_moment_later() {
    let dir = tempfile::tempdir().unwrap();
    // The lock's open file description held elsewhere, as a forked child that has not exec'd
    // yet holds it after the log itself closed.
    let held = std::fs::File::open(dir.path().join(super::LOCK_FILE))
        .or_else(|_| {
            std::fs::create_dir_all(dir.path())?;
            std::fs::File::create(dir.path().join(super::LOCK_FILE))
        })
        .unwrap();
    held.try_lock().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
    });
    let log = open(dir.path()).await;
    log.ping().await.unwrap();
    release.join().unwrap();
}

#[tokio::test]
async fn a_second_open_of_the_same_directory_fails_while_the_first_is_alive() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let second = FileEventLog::open(dir.path(), FsyncPolicy::Never)
        .await
        .unwrap_err();
    assert!(
        matches!(second, StoreError::Unavailable(ref m) if m.contains("already open")),
        "{second:?}"
    );
    first.close().await.unwrap();
    // Closed: appends fail, reads still work, and the directory can be opened again.
    assert!(matches!(
        first
            .append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
            .await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(first.ping().await.is_err());
    assert!(first.read_from(0, 10).await.unwrap().is_empty());
    first.close().await.unwrap();
    let again = open(dir.path()).await;
    again.ping().await.unwrap();
}

#[tokio::test]
async fn events_older_than_the_cache_are_read_back_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_cache(dir.path(), 4).await;
    let mut written = Vec::new();
    for i in 0..10u64 {
        // Two aggregates interleaved, so loads read several separate runs from disk.
        let id = format!("session-{}", i % 2);
        let batch = events(SESSION, &id, i / 2 * 2, 2);
        log.append(SESSION, &id, i / 2 * 2, batch.clone())
            .await
            .unwrap();
        written.extend(batch);
    }
    let all = log.read_from(0, 100).await.unwrap();
    assert_eq!(sequences(&all), (1..=20).collect::<Vec<_>>());
    assert_eq!(envelopes(&all), written);
    // A range that straddles the cache boundary (cache holds 17..=20).
    assert_eq!(
        sequences(&log.read_from(14, 4).await.unwrap()),
        [15, 16, 17, 18]
    );
    let session0 = log.load(SESSION, "session-0").await.unwrap();
    assert_eq!(
        session0
            .iter()
            .map(|e| e.envelope.aggregate_version)
            .collect::<Vec<_>>(),
        (1..=10).collect::<Vec<_>>()
    );
    // No cache at all.
    log.close().await.unwrap();
    drop(log);
    let log = open_small_cache(dir.path(), 0).await;
    assert_eq!(envelopes(&log.read_from(0, 100).await.unwrap()), written);
    assert_eq!(log.load(SESSION, "session-1").await.unwrap().len(), 10);
}

#[tokio::test]
async fn a_record_damaged_after_open_is_reported_as_corrupt_not_misread() {
    let dir = tempfile::tempdir().unwrap();
    let log = open_small_cache(dir.path(), 0).await;
    log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
        .await
        .unwrap();
    let file = OpenOptions::new()
        .write(true)
        .open(dir.path().join(LOG_FILE))
        .unwrap();
    file.write_all_at(b"X", 30).unwrap();
    assert!(matches!(
        log.read_from(0, 10).await,
        Err(StoreError::Corrupt(_))
    ));
    assert!(matches!(
        log.load(SESSION, "session-1").await,
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn a_log_cut_at_every_byte_of_its_last_record_loses_only_that_record() {
    const N: u64 = 5;
    let source = tempfile::tempdir().unwrap();
    write_singles(source.path(), N).await;
    let bytes = log_bytes(source.path());
    let offsets = record_offsets(&bytes);
    let (last_start, last_end) = (offsets[N as usize - 1], offsets[N as usize]);
    assert_eq!(last_end, bytes.len());

    for cut in last_start..last_end {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOG_FILE), &bytes[..cut]).unwrap();

        let log = open(dir.path()).await;
        assert_eq!(*log.head().borrow(), N - 1, "cut at {cut}");
        let survivors = log.read_from(0, 100).await.unwrap();
        assert_eq!(
            sequences(&survivors),
            (1..N).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        assert!(
            log.load(SESSION, &format!("session-{}", N - 1))
                .await
                .unwrap()
                .is_empty()
        );
        assert_eq!(log_bytes(dir.path()), &bytes[..last_start], "cut at {cut}");
        let copies = corrupt_copies(dir.path());
        if cut == last_start {
            assert!(copies.is_empty(), "nothing to drop at a record boundary");
        } else {
            assert_eq!(copies, [bytes[last_start..cut].to_vec()], "cut at {cut}");
        }

        let appended = log
            .append(
                SESSION,
                "session-new",
                0,
                events(SESSION, "session-new", 0, 1),
            )
            .await
            .unwrap();
        assert_eq!(appended.first_sequence, N, "cut at {cut}");
        log.close().await.unwrap();
        drop(log);

        let log = open(dir.path()).await;
        assert_eq!(*log.head().borrow(), N, "cut at {cut}");
        assert_eq!(
            log.load(SESSION, "session-new").await.unwrap()[0].sequence,
            N
        );
        assert_eq!(log.read_from(0, 100).await.unwrap().len(), N as usize);
    }
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_drops_only_that_record() {
    let source = tempfile::tempdir().unwrap();
    write_singles(source.path(), 3).await;
    let bytes = log_bytes(source.path());
    let offsets = record_offsets(&bytes);
    // Every payload byte of the last record, one at a time.
    for at in offsets[2] + record::HEADER_LEN..offsets[3] {
        let dir = tempfile::tempdir().unwrap();
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x20;
        std::fs::write(dir.path().join(LOG_FILE), &damaged).unwrap();
        let log = open(dir.path()).await;
        assert_eq!(*log.head().borrow(), 2, "flip at {at}");
        assert_eq!(log_bytes(dir.path()), &bytes[..offsets[2]]);
        assert_eq!(corrupt_copies(dir.path()), [damaged[offsets[2]..].to_vec()]);
    }
}

#[tokio::test]
async fn garbage_after_the_last_record_is_cut_off_and_kept_for_forensics() {
    let dir = tempfile::tempdir().unwrap();
    write_singles(dir.path(), 3).await;
    let bytes = log_bytes(dir.path());
    let garbage: Vec<u8> = b"\x00\x00\x00\x00garbage{\"sequence\":4}\xff\xfe"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(0u8, 4096))
        .collect();
    std::fs::write(
        dir.path().join(LOG_FILE),
        [bytes.as_slice(), &garbage].concat(),
    )
    .unwrap();

    let log = open(dir.path()).await;
    assert_eq!(*log.head().borrow(), 3);
    assert_eq!(log.read_from(0, 10).await.unwrap().len(), 3);
    assert_eq!(log_bytes(dir.path()), bytes);
    assert_eq!(corrupt_copies(dir.path()), [garbage]);
}

#[tokio::test]
async fn a_replayed_record_at_the_tail_is_dropped_as_out_of_sequence() {
    let dir = tempfile::tempdir().unwrap();
    write_singles(dir.path(), 3).await;
    let bytes = log_bytes(dir.path());
    let offsets = record_offsets(&bytes);
    let repeated = bytes[offsets[2]..].to_vec();
    std::fs::write(
        dir.path().join(LOG_FILE),
        [bytes.as_slice(), &repeated].concat(),
    )
    .unwrap();

    let log = open(dir.path()).await;
    assert_eq!(*log.head().borrow(), 3);
    assert_eq!(log_bytes(dir.path()), bytes);
    assert_eq!(corrupt_copies(dir.path()), [repeated]);
}

#[tokio::test]
async fn an_append_cut_short_by_a_crash_is_dropped_as_a_whole() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = open(dir.path()).await;
        log.append(SESSION, "session-1", 0, events(SESSION, "session-1", 0, 1))
            .await
            .unwrap();
        log.append(SESSION, "session-2", 0, events(SESSION, "session-2", 0, 3))
            .await
            .unwrap();
        log.close().await.unwrap();
    }
    let bytes = log_bytes(dir.path());
    let offsets = record_offsets(&bytes);
    assert_eq!(offsets.len(), 5);
    // Cut exactly after the append's second record: every remaining record is intact, but the
    // append is incomplete, so all of it goes.
    for cut in [offsets[2], offsets[3], offsets[3] + 5, offsets[4] - 1] {
        std::fs::write(dir.path().join(LOG_FILE), &bytes[..cut]).unwrap();
        let log = open(dir.path()).await;
        assert_eq!(*log.head().borrow(), 1, "cut at {cut}");
        assert!(log.load(SESSION, "session-2").await.unwrap().is_empty());
        assert_eq!(log_bytes(dir.path()), &bytes[..offsets[1]]);
        log.close().await.unwrap();
    }
}

#[tokio::test]
async fn damage_followed_by_intact_records_refuses_to_open_and_keeps_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_singles(dir.path(), 4).await;
    let bytes = log_bytes(dir.path());
    let offsets = record_offsets(&bytes);
    for at in [offsets[1] + 2, offsets[1] + 5, offsets[1] + 20] {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x01;
        std::fs::write(dir.path().join(LOG_FILE), &damaged).unwrap();
        let error = FileEventLog::open(dir.path(), FsyncPolicy::Never)
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::Corrupt(_)),
            "flip at {at}: {error:?}"
        );
        assert_eq!(
            log_bytes(dir.path()),
            damaged,
            "the file must be left as it was"
        );
        assert!(corrupt_copies(dir.path()).is_empty());
    }
}

#[tokio::test]
async fn every_fsync_policy_stores_and_reopens() {
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval(Duration::from_millis(5)),
        FsyncPolicy::Never,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let log = FileEventLog::open(dir.path(), policy.clone())
            .await
            .unwrap();
        for v in 0..20 {
            log.append(SESSION, "session-1", v, events(SESSION, "session-1", v, 1))
                .await
                .unwrap();
        }
        log.close().await.unwrap();
        drop(log);
        let log = FileEventLog::open(dir.path(), policy).await.unwrap();
        assert_eq!(log.load(SESSION, "session-1").await.unwrap().len(), 20);
    }
}

#[test]
fn fsync_policies_parse_from_configuration_strings() {
    let cases = [
        ("always", FsyncPolicy::Always),
        ("Never", FsyncPolicy::Never),
        ("interval", FsyncPolicy::Interval(Duration::from_secs(1))),
        (" 200ms ", FsyncPolicy::Interval(Duration::from_millis(200))),
        ("2s", FsyncPolicy::Interval(Duration::from_secs(2))),
        ("500us", FsyncPolicy::Interval(Duration::from_micros(500))),
        ("1m", FsyncPolicy::Interval(Duration::from_secs(60))),
    ];
    for (text, policy) in cases {
        assert_eq!(text.parse::<FsyncPolicy>().unwrap(), policy, "{text}");
        assert_eq!(policy.to_string().parse::<FsyncPolicy>().unwrap(), policy);
    }
    for bad in ["", "sometimes", "0ms", "10", "ms", "-1s", "1.5s", "10h"] {
        assert!(bad.parse::<FsyncPolicy>().is_err(), "{bad}");
    }
    assert_eq!(
        FsyncPolicy::default(),
        FsyncPolicy::Interval(Duration::from_secs(1))
    );
}

/// A writer for `dir` that has not started, so a test can queue a whole batch before it runs.
/// With `read_only`, every write the writer attempts fails.
fn idle_writer(
    dir: &Path,
    read_only: bool,
) -> (
    Arc<Shared>,
    mpsc::Sender<Command>,
    (mpsc::Receiver<Command>, Writer),
) {
    let lock = lock_dir(dir).unwrap();
    let options = FileEventLogOptions {
        fsync: FsyncPolicy::Never,
        cache_events: 16,
        ..FileEventLogOptions::default()
    };
    let (mut file, recovered) = open_log(dir, &options).unwrap();
    if read_only {
        file = File::open(dir.join(LOG_FILE)).unwrap();
    }
    let (shared, commands, receiver, writer) = assemble(file, recovered, lock, &options).unwrap();
    (shared, commands, (receiver, writer))
}

type Pending = oneshot::Receiver<Answer>;

fn queue(
    commands: &mpsc::Sender<Command>,
    aggregate_id: &str,
    expected_version: u64,
    events: Vec<EventEnvelope>,
) -> Pending {
    let (reply, answer) = oneshot::channel();
    let request = AppendRequest {
        aggregate_type: INVOCATION,
        aggregate_id: aggregate_id.to_owned(),
        expected_version,
        encoded: encode(&events).unwrap(),
        events: events
            .into_iter()
            .map(|envelope| {
                Arc::new(RecordedEvent {
                    sequence: 0,
                    envelope,
                })
            })
            .collect(),
        reply,
    };
    assert!(commands.try_send(Command::Append(request)).is_ok());
    answer
}

/// Queues `close` and runs the writer over everything queued (one batch) until it stops.
fn run_one_batch(commands: &mpsc::Sender<Command>, writer: (mpsc::Receiver<Command>, Writer)) {
    let (reply, _answer) = oneshot::channel();
    assert!(commands.try_send(Command::Close(reply)).is_ok());
    let (receiver, writer) = writer;
    let writer = Arc::new(std::sync::Mutex::new(writer));
    std::thread::spawn(move || Writer::run(writer, receiver))
        .join()
        .unwrap();
}

#[tokio::test]
async fn one_batch_decides_each_request_against_the_requests_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let (shared, commands, writer) = idle_writer(dir.path(), false);
    let a = events(INVOCATION, "inv-x", 0, 2);
    let ok_a = queue(&commands, "inv-x", 0, a.clone());
    let conflict = queue(&commands, "inv-x", 0, events(INVOCATION, "inv-x", 0, 1));
    let ok_next = queue(&commands, "inv-x", 2, events(INVOCATION, "inv-x", 2, 1));
    let retry_a = queue(&commands, "inv-x", 0, a.clone());
    let overlap = queue(
        &commands,
        "inv-x",
        0,
        vec![a[0].clone(), event(INVOCATION, "inv-x", 2)],
    );
    let ok_other = queue(&commands, "inv-y", 0, events(INVOCATION, "inv-y", 0, 1));
    run_one_batch(&commands, writer);

    let appended = |first, last, duplicate| Appended {
        first_sequence: first,
        last_sequence: last,
        duplicate,
    };
    assert_eq!(ok_a.await.unwrap().result.unwrap(), appended(1, 2, false));
    assert!(matches!(
        conflict.await.unwrap().result,
        Err(StoreError::Conflict {
            expected: 0,
            actual: 2,
            ..
        })
    ));
    assert_eq!(
        ok_next.await.unwrap().result.unwrap(),
        appended(3, 3, false)
    );
    assert_eq!(retry_a.await.unwrap().result.unwrap(), appended(1, 2, true));
    assert!(matches!(
        overlap.await.unwrap().result,
        Err(StoreError::InvalidAppend(_))
    ));
    assert_eq!(
        ok_other.await.unwrap().result.unwrap(),
        appended(4, 4, false)
    );
    assert_eq!(*shared.head.borrow(), 4);
    drop(shared);

    let log = open(dir.path()).await;
    let x = log.load(INVOCATION, "inv-x").await.unwrap();
    assert_eq!(sequences(&x), [1, 2, 3]);
    assert_eq!(envelopes(&x)[..2], a[..]);
    assert_eq!(
        sequences(&log.load(INVOCATION, "inv-y").await.unwrap()),
        [4]
    );
}

#[tokio::test]
async fn a_failed_write_fails_the_whole_batch_and_publishes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stored = events(INVOCATION, "inv-x", 0, 1);
    {
        let log = open(dir.path()).await;
        log.append(INVOCATION, "inv-x", 0, stored.clone())
            .await
            .unwrap();
        log.close().await.unwrap();
    }
    let bytes = log_bytes(dir.path());
    let (shared, commands, writer) = idle_writer(dir.path(), true);
    let a = events(INVOCATION, "inv-y", 0, 1);
    let write = queue(&commands, "inv-y", 0, a.clone());
    let conflict = queue(&commands, "inv-x", 0, events(INVOCATION, "inv-x", 0, 1));
    let old_retry = queue(&commands, "inv-x", 0, stored);
    let new_retry = queue(&commands, "inv-y", 0, a);
    run_one_batch(&commands, writer);

    assert!(matches!(
        write.await.unwrap().result,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        new_retry.await.unwrap().result,
        Err(StoreError::Unavailable(_))
    ));
    // Answers that did not depend on the write stand.
    assert!(matches!(
        conflict.await.unwrap().result,
        Err(StoreError::Conflict { .. })
    ));
    assert!(old_retry.await.unwrap().result.unwrap().duplicate);

    assert_eq!(*shared.head.borrow(), 1);
    assert_eq!(shared.read_index().head(), 1);
    assert!(
        shared
            .read_index()
            .sequences(INVOCATION, "inv-y")
            .is_empty()
    );
    assert_eq!(log_bytes(dir.path()), bytes);
    // The failed batch could not be cut off a read-only file: the log refuses further writes.
    assert!(shared.failure.get().is_some());
}

#[test]
fn the_envelope_encoder_writes_exactly_what_serde_writes() {
    use workspace_events::{Actor, RawJson};
    let strings = [
        "",
        "plain",
        "quote \" backslash \\ slash /",
        "control \u{1} \n \t \u{1f}",
        "unicode é 日本 😀",
        "</script>",
    ];
    let times = [
        datetime!(1970-01-01 00:00 UTC),
        datetime!(2026-11-23 10:00:00.6 UTC),
        datetime!(2026-11-23 10:00:00.000000001 UTC),
        datetime!(2026-11-23 10:00:00.123456789 +05:30),
        datetime!(0001-02-03 04:05:06 -01:00),
    ];
    let payloads = [
        r#"{"a":1}"#,
        "{ \"pretty\": [ 1, 2 ],\n  \"x\": null }",
        "null",
        r#""text""#,
    ];
    let mut checked = 0;
    for (i, text) in strings.iter().enumerate() {
        for (j, occurred_at) in times.iter().enumerate() {
            for (k, payload) in payloads.iter().enumerate() {
                let pick = |n: usize| (i + j + k + n) % 3;
                let envelope = EventEnvelope {
                    event_id: Ulid::from_parts(i as u64 * 1000 + j as u64, k as u128),
                    aggregate_type: if pick(0) == 0 { SESSION } else { INVOCATION },
                    aggregate_id: format!("inv-{text}"),
                    aggregate_version: [0, 1, u64::MAX][pick(1)],
                    event_type: (*text).to_owned(),
                    schema_version: [1, 7, u32::MAX][pick(2)],
                    occurred_at: *occurred_at,
                    correlation_id: (pick(0) != 1).then(|| text.to_string()),
                    causation_id: (pick(1) == 2).then(|| format!("cause {text}")),
                    actor: (pick(2) != 0).then(|| Actor {
                        tenant_id: text.to_string(),
                        actor_id: format!("{text}{text}"),
                    }),
                    payload: RawJson::parse((*payload).to_owned()).unwrap(),
                };
                let mut ours = Vec::new();
                encode_envelope(&mut ours, &envelope).unwrap();
                let theirs = serde_json::to_vec(&envelope).unwrap();
                assert_eq!(
                    String::from_utf8_lossy(&ours),
                    String::from_utf8_lossy(&theirs)
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, strings.len() * times.len() * payloads.len());

    // A timestamp RFC 3339 cannot express (an offset with seconds) is refused, as serde
    // refuses it.
    let mut odd = event(SESSION, "session-1", 1);
    odd.occurred_at = odd
        .occurred_at
        .to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
    assert!(serde_json::to_vec(&odd).is_err());
    assert!(encode_envelope(&mut Vec::new(), &odd).is_err());
}
