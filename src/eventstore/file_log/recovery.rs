//! Opening an existing log: scan every record, rebuild the indexes, and repair a torn tail.
//!
//! A crash can leave the end of the file short (a header or payload cut off), garbled, or ending
//! inside an append whose later records never reached the disk. All of that is cut off at the last
//! complete append, after the dropped bytes are copied to `events.log.corrupt-<unix_ts>`. Damage
//! followed by an intact record is not a torn tail (bit rot, or someone edited the file): the open
//! fails with [`StoreError::Corrupt`] and the file is left untouched, because truncating there
//! would throw away good records.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use workspace_events::RecordedEvent;

use super::dedup::DedupWindow;
use super::index::Index;
use super::record::{self, FrameError, HEADER_LEN};
use crate::eventstore::StoreError;

/// What the scan rebuilt.
pub(super) struct Recovered {
    pub index: Index,
    /// Event id → sequence of the ids within the deduplication window (owned by the writer).
    pub dedup: DedupWindow,
}

/// Scans `file` (the log at `path`), truncating a torn tail.
pub(super) fn recover(
    file: &File,
    path: &Path,
    cache_events: usize,
    dedup_window: Duration,
) -> Result<Recovered, StoreError> {
    let file_len = file.metadata()?.len();
    let mut index = Index::new(cache_events);
    // Every id of the log while scanning (each must be stored once), the window's afterwards.
    let mut dedup = DedupWindow::new(dedup_window);
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(0))?;
    let mut payload = Vec::new();
    // Records of an append whose last record has not been seen yet: published only once it has.
    let mut unfinished: Vec<(u64, RecordedEvent)> = Vec::new();
    // Where the next unread record starts, and where the last complete append ends.
    let mut pos = 0u64;
    let mut complete = 0u64;

    let damage = loop {
        if pos == file_len {
            break None;
        }
        let (event, len, continues) = match next_record(&mut reader, file_len - pos, &mut payload)?
        {
            Ok(read) => read,
            Err(e) => break Some(e),
        };
        if let Err(e) = check_order(&index, &dedup, &unfinished, &event) {
            break Some(e);
        }
        pos += len;
        unfinished.push((len, event));
        if !continues {
            for (len, event) in unfinished.drain(..) {
                dedup.insert(event.envelope.event_id, event.sequence);
                // Recovery has no one else to free evicted events; dropping them here is fine.
                drop(index.push(len, Arc::new(event)));
            }
            complete = pos;
        }
    };

    if complete < file_len {
        let reason = match &damage {
            Some(e) => e.to_string(),
            None => "the file ends inside an append".to_owned(),
        };
        // The damaged record starts at `pos`; everything from `complete` to `pos` is intact but
        // belongs to an append that never finished, so only what follows `pos` is probed.
        let probe_from = if damage.is_some() { pos + 1 } else { file_len };
        repair_tail(file, path, complete, probe_from, file_len, &reason)?;
    }
    dedup.expire_and_shrink();
    Ok(Recovered { index, dedup })
}

/// Reads the record at the reader's position; `remaining` is how many bytes the file holds from
/// there. IO errors are errors; bytes that are not a record are a [`FrameError`].
fn next_record(
    reader: &mut impl Read,
    remaining: u64,
    payload: &mut Vec<u8>,
) -> io::Result<Result<(RecordedEvent, u64, bool), FrameError>> {
    if remaining < HEADER_LEN as u64 {
        return Ok(Err(FrameError::Truncated));
    }
    let mut header = [0u8; HEADER_LEN];
    reader.read_exact(&mut header)?;
    let word = match record::length_word(&header) {
        Ok(word) => word,
        Err(e) => return Ok(Err(e)),
    };
    if remaining - (HEADER_LEN as u64) < word.payload_len as u64 {
        return Ok(Err(FrameError::Truncated));
    }
    payload.resize(word.payload_len, 0);
    reader.read_exact(payload)?;
    let frame_len = (HEADER_LEN + word.payload_len) as u64;
    Ok(record::decode(&header, payload).map(|event| (event, frame_len, word.continues)))
}

/// The checks the writer made when it wrote the record, made again: a record that fails them
/// was not written by this store's writer in this position.
fn check_order(
    index: &Index,
    dedup: &DedupWindow,
    unfinished: &[(u64, RecordedEvent)],
    event: &RecordedEvent,
) -> Result<(), FrameError> {
    let envelope = &event.envelope;
    let expected_sequence = index.head() + unfinished.len() as u64 + 1;
    if event.sequence != expected_sequence {
        return Err(FrameError::Invalid(format!(
            "sequence {} where {expected_sequence} was expected",
            event.sequence
        )));
    }
    // Within an unfinished append every record names the same aggregate with the next version.
    let current = match unfinished.last() {
        Some((_, previous)) => {
            let p = &previous.envelope;
            if p.aggregate_type != envelope.aggregate_type
                || p.aggregate_id != envelope.aggregate_id
            {
                return Err(FrameError::Invalid(
                    "an append's records name different aggregates".into(),
                ));
            }
            p.aggregate_version
        }
        None => index.version(envelope.aggregate_type, &envelope.aggregate_id),
    };
    if envelope.aggregate_version != current + 1 {
        return Err(FrameError::Invalid(format!(
            "{} {} version {} does not follow version {current}",
            envelope.aggregate_type, envelope.aggregate_id, envelope.aggregate_version
        )));
    }
    let id = envelope.event_id;
    if dedup.get(&id).is_some() || unfinished.iter().any(|(_, e)| e.envelope.event_id == id) {
        return Err(FrameError::Invalid(format!(
            "event id {id} is stored twice"
        )));
    }
    Ok(())
}

/// Cuts the log at `keep` after saving the dropped bytes, unless an intact record starts at or
/// after `probe_from`.
fn repair_tail(
    file: &File,
    path: &Path,
    keep: u64,
    probe_from: u64,
    file_len: u64,
    reason: &str,
) -> Result<(), StoreError> {
    if let Some(intact) = find_intact_frame(file, probe_from, file_len)? {
        return Err(StoreError::Corrupt(format!(
            "{}: the record at offset {keep} or after it is damaged ({reason}), but an intact \
             record follows at offset {intact}; refusing to truncate good records: move the file \
             aside or repair it by hand",
            path.display()
        )));
    }
    let dropped = file_len - keep;
    let copy = save_tail(file, path, keep, dropped)?;
    file.set_len(keep)?;
    file.sync_all()?;
    tracing::warn!(
        log = %path.display(),
        offset = keep,
        dropped_bytes = dropped,
        reason,
        forensic_copy = %copy.display(),
        "event log ended in a torn or corrupt record; truncated it to the last complete append"
    );
    Ok(())
}

/// The offset of the first intact frame starting in `from..file_len`, if any. Reads the region
/// in chunks, so a long damaged region costs time, not memory.
fn find_intact_frame(file: &File, from: u64, file_len: u64) -> io::Result<Option<u64>> {
    const CHUNK: usize = 1 << 20;
    // Bytes `plausible_frame_start` looks at beyond the candidate offset.
    const PROBE: usize = HEADER_LEN + 2;
    let mut window = vec![0u8; CHUNK + PROBE];
    let mut base = from;
    while base < file_len {
        let available = usize::try_from(file_len - base).unwrap_or(usize::MAX);
        let filled = available.min(window.len());
        file.read_exact_at(&mut window[..filled], base)?;
        for at in 0..filled.min(CHUNK) {
            let offset = base + at as u64;
            let Some(payload_len) =
                record::plausible_frame_start(&window[at..filled], file_len - offset)
            else {
                continue;
            };
            let mut frame = vec![0u8; HEADER_LEN + payload_len];
            file.read_exact_at(&mut frame, offset)?;
            if record::decode_prefix(&frame).is_ok() {
                return Ok(Some(offset));
            }
        }
        base += CHUNK as u64;
    }
    Ok(None)
}

/// Copies `len` bytes from `offset` to a new `<log>.corrupt-<unix_ts>[-n]` file and syncs it,
/// before the log is truncated.
fn save_tail(file: &File, path: &Path, offset: u64, len: u64) -> Result<PathBuf, StoreError> {
    let stamp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut attempt = 0u32;
    let (mut copy, copy_path) = loop {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".corrupt-{stamp}"));
        if attempt > 0 {
            name.push(format!("-{attempt}"));
        }
        let candidate = PathBuf::from(name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(f) => break (f, candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 1000 => attempt += 1,
            Err(e) => return Err(e.into()),
        }
    };
    let mut source = file;
    source.seek(SeekFrom::Start(offset))?;
    let copied = io::copy(&mut source.take(len), &mut copy)?;
    if copied != len {
        return Err(StoreError::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("copied {copied} of {len} bytes of the damaged tail"),
        )));
    }
    copy.flush()?;
    copy.sync_all()?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(copy_path)
}
