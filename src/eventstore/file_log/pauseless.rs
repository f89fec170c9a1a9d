//! Collections for the log's indexes that grow without long pauses.
//!
//! The indexes grow with the log (one entry per event or aggregate). A plain `HashMap` or `Vec`
//! grows by copying everything at each doubling: measured here, the event-id map's rehash at
//! ~460k entries stalled the writer, and with it every append, for ~50 ms, and the pause doubles
//! with every doubling of the log. Splitting the map into shards, and the vector into fixed-size
//! chunks, bounds each growth step to a small fraction of the whole.

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};

use foldhash::fast::RandomState;

/// Maps on the hot path hash with foldhash (seeded per process): SipHash was ~5% of the CPU
/// of an invocation. Their keys are ids this service generates, not caller-chosen strings.
type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// Shards per map: each rehash touches 1/256 of the entries.
const SHARDS: usize = 256;

/// A `HashMap` split into shards by key hash.
#[derive(Debug)]
pub(super) struct ShardedMap<K, V> {
    shards: Box<[HashMap<K, V>]>,
    /// Picks the shard; each shard hashes again with its own keys.
    router: RandomState,
    len: usize,
}

impl<K: Hash + Eq, V> Default for ShardedMap<K, V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            router: RandomState::default(),
            len: 0,
        }
    }
}

impl<K: Hash + Eq, V> ShardedMap<K, V> {
    fn shard<Q: Hash + ?Sized>(&self, key: &Q) -> usize {
        // The top bits: hashbrown uses the top 7 bits as tag and the low bits as the bucket
        // index of its own (differently seeded) hash, so this choice is independent of both.
        (self.router.hash_one(key) >> 56) as usize % SHARDS
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(key)].get(key)
    }

    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let shard = self.shard(&key);
        let previous = self.shards[shard].insert(key, value);
        if previous.is_none() {
            self.len += 1;
        }
        previous
    }

    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let shard = self.shard(key);
        let removed = self.shards[shard].remove(key);
        if removed.is_some() {
            self.len -= 1;
        }
        removed
    }

    /// Gives back the memory of removed entries.
    pub fn shrink_to_fit(&mut self) {
        for shard in &mut self.shards {
            shard.shrink_to_fit();
        }
    }
}

/// Entries per chunk of a [`ChunkedVec`] (512 KiB of `u64`).
const CHUNK: usize = 1 << 16;

/// An append-only vector stored in fixed-size chunks: growing never moves existing entries.
#[derive(Debug, Default)]
pub(super) struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Copy> ChunkedVec<T> {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            _ => {
                let mut chunk = Vec::with_capacity(CHUNK);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    pub fn get(&self, at: usize) -> Option<T> {
        self.chunks.get(at / CHUNK)?.get(at % CHUNK).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sharded_map_behaves_like_a_map() {
        let mut map = ShardedMap::default();
        for i in 0..10_000u64 {
            assert_eq!(map.insert(format!("k{i}"), i), None);
        }
        assert_eq!(map.insert("k7".to_owned(), 70), Some(7));
        assert_eq!(map.len(), 10_000);
        assert_eq!(map.get("k7"), Some(&70));
        *map.get_mut("k8").unwrap() += 1;
        assert_eq!(map.get("k8"), Some(&9));
        assert!(map.get("k9999").is_some());
        assert!(map.get("k10000").is_none());
        assert_eq!(map.remove("k9999"), Some(9999));
        assert_eq!(map.remove("k9999"), None);
        assert_eq!(map.len(), 9_999);
    }

    #[test]
    fn a_chunked_vec_indexes_across_chunk_boundaries() {
        let mut vec = ChunkedVec::default();
        for i in 0..(CHUNK as u64 * 2 + 5) {
            vec.push(i * 3);
        }
        assert_eq!(vec.len(), CHUNK * 2 + 5);
        for at in [0, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 4] {
            assert_eq!(vec.get(at), Some(at as u64 * 3));
        }
        assert_eq!(vec.get(2 * CHUNK + 5), None);
    }
}
