//! The RocksDB store behind a small typed-table layer.
//!
//! Every mapping is its own column family named `<key>_<value>` (declared by the domains that own
//! them, as a [`TableSet`] the store opens: this layer knows no record type), keys and values go
//! through the codecs in [`codec`], and writes that belong together are committed as
//! one [`Batch`] with the WAL synced, so an acknowledged write survives `kill -9` and a failed
//! request leaves nothing half-written.

pub mod codec;

use std::{
    marker::PhantomData,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, IteratorMode, Options, WriteBatch, WriteOptions};

pub use rocksdb::DB;

pub use self::codec::Codec;

/// The column families the store opens, declared above this layer (by the domains that own
/// them): the store needs their names at open, and its own named counters.
pub trait TableSet: Send + Sync + Sized + 'static {
    /// Every column family of the set; [`Database::open`] creates those missing.
    const NAMES: &'static [&'static str];
    /// The typed tables over the open store.
    fn new(db: &Arc<DB>, counters: &Arc<TableCounters>) -> Self;
    /// Named counters (`metakey_count`): the global counter behind stream positions and ids.
    fn meta(&self) -> &Table<String, codec::Be64>;
}

/// Declares a domain's tables: a struct with one typed [`Table`] per column family, named as its
/// field, with the list of those names (`NAMES`, for the [`TableSet`] that gathers every domain's)
/// and the constructor over the open store. One list, so a name and its field cannot drift apart.
#[macro_export]
macro_rules! tables {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident: $ty:ty,)* }) => {
        $(#[$meta])*
        pub struct $name {
            $($(#[$fmeta])* pub $field: $ty,)*
        }

        impl $name {
            /// The column families of these tables.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($field)),*];

            pub fn new(
                db: &::std::sync::Arc<$crate::db::DB>,
                counters: &::std::sync::Arc<$crate::db::TableCounters>,
            ) -> Self {
                Self { $($field: $crate::db::Table::new(db, counters, stringify!($field)),)* }
            }
        }
    };
}

/// How many names the lists hold together (the length of [`names_concat`]'s answer).
pub const fn names_count(parts: &[&[&'static str]]) -> usize {
    let mut count = 0;
    let mut i = 0;
    while i < parts.len() {
        count += parts[i].len();
        i += 1;
    }
    count
}

/// The lists of column family names of several domains as one list, at compile time.
pub const fn names_concat<const N: usize>(parts: &[&[&'static str]]) -> [&'static str; N] {
    let mut out = [""; N];
    let mut k = 0;
    let mut i = 0;
    while i < parts.len() {
        let mut j = 0;
        while j < parts[i].len() {
            out[k] = parts[i][j];
            k += 1;
            j += 1;
        }
        i += 1;
    }
    assert!(k == N, "N is names_count of the same lists");
    out
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// Another process (normally the running server) holds the database lock.
    #[error("the database at {0} is in use by another process")]
    Locked(String),
    #[error("database error: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("{0}")]
    Io(String),
    #[error("corrupt record in {table}: {reason}")]
    Corrupt { table: &'static str, reason: String },
}

/// The open database: the RocksDB handle, its tables and the global counter.
pub struct Database<T> {
    db: Arc<DB>,
    pub tables: T,
    /// The last number handed out by [`Database::next_count`]; persisted with every batch that uses it.
    counter: AtomicU64,
    /// Positions for history fetched later from other servers are handed out downwards from
    /// here ([`Database::backfill_positions`]), below every stream position.
    backfill_floor: std::sync::Mutex<(u64, u64)>,
    /// Fault injection for the durability test only ([`SKIP_FSYNC_ENV`]): write without ever
    /// syncing, to show that the test catches a server that acknowledges before the disk has it.
    skip_sync: bool,
    /// What the tables share: the reads so far and each column family's writes.
    counters: Arc<TableCounters>,
    /// RocksDB writes so far (each a log record and a memtable insert round, however many
    /// entries): tests show that a group of batches is written at once.
    writes: AtomicU64,
    path: std::path::PathBuf,
}

/// Test hook: when set to `1`, nothing is ever fsynced. Never set in production (not `HEMICYCLE_*`:
/// those are configuration keys).
pub const SKIP_FSYNC_ENV: &str = "FAULT_HEMICYCLE_SKIP_FSYNC";

const COUNTER_KEY: &str = "counter";
const SCHEMA_KEY: &str = "schema_version";
/// The stored format this release writes. A release that changes it migrates older databases at
/// open; a database of a newer format is refused rather than misread (a downgrade).
///
/// 2: our events of rooms no other server is in may be stored unsigned (an earlier release would
/// hand them to other servers so), and notification records may be in a compact binary form
/// (which an earlier release cannot read). Everything format 1 wrote reads the same: a format 1
/// database is marked 2 at open, nothing rewritten.
pub const SCHEMA_VERSION: u64 = 2;
const BACKFILL_FLOOR_KEY: &str = "backfill_floor";
const BACKFILL_LOW_KEY: &str = "backfill_low";

/// Where stream positions start: the numbers below are kept for history fetched from other
/// servers after a join, which must sort before everything the room already has.
pub const STREAM_BASE: u64 = 1 << 40;

impl<T: TableSet> Database<T> {
    /// Opens (or creates) the store at `path` with the default memory budget.
    pub fn open(path: &Path) -> Result<Self, DbError> {
        Self::open_with_budget(path, crate::config::DatabaseConfig::default().cache_mb)
    }

    /// Opens the store with `cache_mb` MiB for the block cache and the write buffers together:
    /// one LRU cache shared by every column family (index and filter blocks included), and the
    /// memtables charged to it, so the store's memory stays within the budget however many
    /// column families are written.
    pub fn open_with_budget(path: &Path, cache_mb: u64) -> Result<Self, DbError> {
        std::fs::create_dir_all(path).map_err(|e| DbError::Io(format!("cannot create {}: {e}", path.display())))?;
        let budget = (cache_mb.max(8) as usize) << 20;
        let cache = rocksdb::Cache::new_lru_cache(budget);
        let write_buffers =
            rocksdb::WriteBufferManager::new_write_buffer_manager_with_cache(budget / 2, false, cache.clone());
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        // A Bloom filter per table file (10 bits a key, about 1 % false positives): a lookup
        // of a key that is not there — every new client transaction id, every unknown event
        // id a peer names — otherwise reads an index and a data block of every file that
        // could hold it. About 1.25 bytes a key on disk.
        table.set_bloom_filter(10.0, false);
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        opts.set_max_background_jobs(2);
        opts.set_keep_log_file_num(4);
        opts.set_write_buffer_manager(&write_buffers);
        opts.set_block_based_table_factory(&table);
        let descriptors = T::NAMES.iter().map(|name| {
            let mut cf = Options::default();
            // LZ4 where files are young and soon rewritten (cheap both ways); Zstandard (its
            // default level, 3) on the last level, which holds nearly everything once compacted:
            // measured with `storage_bench` (docs/performance.md), for a slower decompression of
            // cold blocks only (hot ones sit in the block cache uncompressed). No dictionary: its
            // training buffers a whole table file in memory during each compaction.
            cf.set_compression_type(rocksdb::DBCompressionType::Lz4);
            cf.set_bottommost_compression_type(rocksdb::DBCompressionType::Zstd);
            cf.set_block_based_table_factory(&table);
            // Small memtables: most families see few writes, and the manager flushes the
            // largest when the budget is reached.
            cf.set_write_buffer_size((budget / 8).clamp(1 << 20, 16 << 20));
            cf.set_max_write_buffer_number(2);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, path, descriptors).map_err(|e| {
            if e.as_ref().contains("lock") {
                DbError::Locked(path.display().to_string())
            } else {
                DbError::Rocks(e)
            }
        })?;
        let db = Arc::new(db);
        let counters = Arc::new(TableCounters::new(T::NAMES));
        let tables = T::new(&db, &counters);
        let schema = tables.meta().get(&SCHEMA_KEY.to_owned())?.map(|c: codec::Be64| c.0);
        if let Some(found) = schema.filter(|v| *v > SCHEMA_VERSION) {
            return Err(DbError::Io(format!(
                "the database at {} was written by a newer Hemicycle (format {found}; this release reads up to {SCHEMA_VERSION}): run that release or restore a backup",
                path.display()
            )));
        }
        let mut counter = tables.meta().get(&COUNTER_KEY.to_owned())?.map(|c: codec::Be64| c.0).unwrap_or(0);
        let skip_sync = std::env::var(SKIP_FSYNC_ENV).is_ok_and(|v| v == "1");
        if skip_sync {
            tracing::error!("{SKIP_FSYNC_ENV}=1: writes are never synced (fault injection for tests)");
        }
        // A database made before positions started at STREAM_BASE moves its counter up once;
        // the numbers between its old counter and the base are free for backfilled history.
        let stored_floor = tables.meta().get(&BACKFILL_FLOOR_KEY.to_owned())?.map(|c: codec::Be64| c.0);
        let stored_low = tables.meta().get(&BACKFILL_LOW_KEY.to_owned())?.map(|c: codec::Be64| c.0);
        let migrate = stored_floor.is_none() || stored_low.is_none();
        let low = stored_low.unwrap_or(counter.min(STREAM_BASE));
        let floor = stored_floor.unwrap_or(STREAM_BASE);
        if migrate {
            counter = counter.max(STREAM_BASE);
        }
        let database = Self {
            db,
            tables,
            counter: AtomicU64::new(counter),
            backfill_floor: std::sync::Mutex::new((floor, low)),
            skip_sync,
            counters,
            writes: AtomicU64::new(0),
            path: path.to_owned(),
        };
        if schema != Some(SCHEMA_VERSION) {
            let mut batch = Batch::new();
            database.tables.meta().insert(&mut batch, &SCHEMA_KEY.to_owned(), &codec::Be64(SCHEMA_VERSION));
            database.commit(batch)?;
        }
        if migrate {
            let mut batch = Batch::new();
            database.tables.meta().insert(&mut batch, &COUNTER_KEY.to_owned(), &codec::Be64(counter));
            database.tables.meta().insert(&mut batch, &BACKFILL_FLOOR_KEY.to_owned(), &codec::Be64(floor));
            database.tables.meta().insert(&mut batch, &BACKFILL_LOW_KEY.to_owned(), &codec::Be64(low));
            database.commit(batch)?;
        }
        Ok(database)
    }

    /// A RocksDB integer property (`rocksdb.total-sst-files-size`, `rocksdb.block-cache-usage`, …)
    /// summed over every column family, for the metrics and the console. Properties of the shared
    /// block cache are the same in every family, so those are read from one.
    pub fn property(&self, name: &str) -> u64 {
        let shared = name.starts_with("rocksdb.block-cache");
        let mut total = 0;
        for family in T::NAMES {
            let Some(cf) = self.db.cf_handle(family) else { continue };
            total += self.db.property_int_value_cf(cf, name).ok().flatten().unwrap_or(0);
            if shared {
                break;
            }
        }
        total
    }

    /// Bytes of table files (`rocksdb.total-sst-files-size`) of each column family, largest
    /// first: what takes the space, for `hemicycle server compact` and the storage figures. The
    /// write-ahead log and what is still in memtables are not in it.
    pub fn table_sizes(&self) -> Vec<(&'static str, u64)> {
        let mut sizes: Vec<(&'static str, u64)> = T::NAMES
            .iter()
            .filter_map(|family| {
                let cf = self.db.cf_handle(family)?;
                let bytes = self.db.property_int_value_cf(cf, "rocksdb.total-sst-files-size").ok().flatten()?;
                Some((*family, bytes))
            })
            .collect();
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        sizes
    }

    /// Flushes every memtable, then compacts every column family down to its last level: what
    /// the disk holds afterwards is what the records need (deleted and overwritten ones gone,
    /// every file compressed as the last level is). RocksDB does this by itself over time; an
    /// operator asks for it after a large purge, and the storage figures are measured after it.
    /// Blocking and long on a large store; reads and writes go on meanwhile.
    pub fn compact(&self) -> Result<(), DbError> {
        self.flush()?;
        let mut options = rocksdb::CompactOptions::default();
        options.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
        options.set_exclusive_manual_compaction(false);
        for name in T::NAMES {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &options);
            }
        }
        Ok(())
    }

    /// A consistent copy of the store in `dir` (which must not exist), taken while the server
    /// runs: RocksDB's checkpoint hard-links the immutable table files and copies the rest.
    pub fn checkpoint(&self, dir: &Path) -> Result<(), DbError> {
        self.db.flush_wal(true)?;
        rocksdb::checkpoint::Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        Ok(())
    }

    /// Bytes of the store on disk: every file of its directory (tables, write-ahead log,
    /// manifest), which RocksDB keeps flat.
    pub fn size_on_disk(&self) -> u64 {
        std::fs::read_dir(&self.path)
            .map(|entries| {
                entries.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()
            })
            .unwrap_or(0)
    }

    /// Hands out `n` consecutive positions for backfilled history, all below `below` (the oldest
    /// position the room already has) and below every stream position; records the new floor in
    /// `batch`. `None` when that space is used up for this room.
    pub fn backfill_positions(&self, batch: &mut Batch, n: u64, below: u64) -> Option<u64> {
        let mut guard = self.backfill_floor.lock().expect("backfill floor");
        let (floor, low) = *guard;
        let first = floor.min(below).checked_sub(n)?;
        if first <= low {
            return None;
        }
        *guard = (first, low);
        self.tables.meta().insert(batch, &BACKFILL_FLOOR_KEY.to_owned(), &codec::Be64(first));
        Some(first)
    }

    /// Returns a fresh, never reused number (for stream positions, filter ids, …) and records the new
    /// high-water mark in `batch`, so it is persisted together with whatever uses it.
    pub fn next_count(&self, batch: &mut Batch) -> u64 {
        let n = self.counter.fetch_add(1, Ordering::SeqCst) + 1;
        // A later batch may commit first; the stored value only ever needs to be >= every used number,
        // so store the max seen at commit time.
        batch.counter = batch.counter.max(n);
        n
    }

    /// The highest number handed out so far.
    pub fn current_count(&self) -> u64 {
        self.counter.load(Ordering::SeqCst)
    }

    /// Reads done so far (point lookups and iterator steps, every table together).
    pub fn reads(&self) -> u64 {
        self.counters.reads.load(Ordering::Relaxed)
    }

    /// RocksDB writes done so far (see [`Database::write_unsynced`]).
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Relaxed)
    }

    /// Commits the batch atomically with the WAL synced to disk.
    pub fn commit(&self, batch: Batch) -> Result<(), DbError> {
        self.write(batch, true)
    }

    /// Writes the batch atomically without waiting for the disk; durable only after a later
    /// [`Database::sync_wal`] (group commit: many batches, one fsync).
    pub fn write_unsynced(&self, batch: Batch) -> Result<(), DbError> {
        self.write(batch, false)
    }

    /// Makes every write so far durable.
    pub fn sync_wal(&self) -> Result<(), DbError> {
        self.db.flush_wal(!self.skip_sync)?;
        Ok(())
    }

    fn write(&self, mut batch: Batch, sync: bool) -> Result<(), DbError> {
        if batch.counter > 0 {
            let current = self.counter.load(Ordering::SeqCst).max(batch.counter);
            self.tables.meta().insert(&mut batch, &COUNTER_KEY.to_owned(), &codec::Be64(current));
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(sync && !self.skip_sync);
        self.writes.fetch_add(1, Ordering::Relaxed);
        let touched = batch.touched;
        self.db.write_opt(batch.inner, &opts)?;
        // After the write, so that a cache which read a generation and then the tables never
        // keeps what it read under a generation newer than the write it missed.
        self.counters.written(&touched);
        Ok(())
    }

    /// Flushes memtables to SST files; called on graceful shutdown so start-up need not replay the WAL.
    pub fn flush(&self) -> Result<(), DbError> {
        for name in T::NAMES {
            if let Some(cf) = self.db.cf_handle(name) {
                self.db.flush_cf(cf)?;
            }
        }
        self.db.flush_wal(true)?;
        Ok(())
    }
}

/// Writes that must land together.
#[derive(Default)]
pub struct Batch {
    inner: WriteBatch,
    counter: u64,
    /// The column families written, by slot ([`TableCounters`]): bit `i % 64` of word `i / 64`.
    touched: [u64; MAX_FAMILIES / 64],
}

/// The most column families a store may declare (the width of [`Batch`]'s set of those written).
const MAX_FAMILIES: usize = 256;

/// What every table of one store shares: the point reads and iterator steps so far (tests show
/// with them that a request's cost follows what changed rather than the size of what is
/// stored), and per column family a generation, raised by every write that touched it. A cache
/// of records above this layer keeps the generations it read them at and is stale as soon as
/// one moved: no write site has to remember to invalidate it.
pub struct TableCounters {
    reads: AtomicU64,
    names: &'static [&'static str],
    generations: Box<[AtomicU64]>,
}

impl TableCounters {
    fn new(names: &'static [&'static str]) -> Self {
        assert!(names.len() <= MAX_FAMILIES, "at most {MAX_FAMILIES} column families");
        Self { reads: AtomicU64::new(0), names, generations: names.iter().map(|_| AtomicU64::new(0)).collect() }
    }

    fn slot(&self, name: &str) -> usize {
        self.names.iter().position(|n| *n == name).unwrap_or_else(|| panic!("column family {name} is declared"))
    }

    fn written(&self, touched: &[u64; MAX_FAMILIES / 64]) {
        for (word, bits) in touched.iter().enumerate() {
            let mut bits = *bits;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                self.generations[word * 64 + bit].fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// Bytes before the first record of a RocksDB write batch: the sequence number (8 bytes,
/// assigned by the write) and the record count (4 bytes, little-endian).
const BATCH_HEADER: usize = 12;

impl Batch {
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes queued so far.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// One batch holding the writes of `batches`, in their order: the stream writer commits a
    /// group of concurrent writes as one RocksDB write (one write-ahead log record, one system
    /// call, one counter update) instead of one each. The records are copied as they are, after
    /// one header whose count is the sum of theirs.
    pub fn concat(batches: impl IntoIterator<Item = Batch>) -> Batch {
        let mut data = Vec::new();
        let (mut count, mut counter) = (0u32, 0u64);
        let mut touched = [0u64; MAX_FAMILIES / 64];
        for batch in batches {
            counter = counter.max(batch.counter);
            for (all, these) in touched.iter_mut().zip(batch.touched) {
                *all |= these;
            }
            if batch.inner.is_empty() {
                continue;
            }
            let bytes = batch.inner.data();
            if data.is_empty() {
                data.extend_from_slice(&bytes[..BATCH_HEADER]);
            }
            data.extend_from_slice(&bytes[BATCH_HEADER..]);
            count += batch.inner.len() as u32;
        }
        let inner = if data.is_empty() {
            WriteBatch::default()
        } else {
            data[8..BATCH_HEADER].copy_from_slice(&count.to_le_bytes());
            WriteBatch::from_data(&data)
        };
        Batch { inner, counter, touched }
    }

    fn touch(&mut self, slot: usize) {
        self.touched[slot / 64] |= 1 << (slot % 64);
    }
}

/// Records read from tables (or derived from them), each kept with the generation of those
/// tables it was read at ([`Table::generation`], or the sum of several) and used only while that
/// has not moved: a cache no write site has to invalidate. Bounded: once full it starts again
/// empty (the hot keys of a busy server come back at once; a flood of new ones costs reads).
pub struct Recent<K, V> {
    entries: std::sync::Mutex<std::collections::HashMap<K, (u64, V)>>,
    bound: usize,
}

impl<K: std::hash::Hash + Eq, V: Clone> Recent<K, V> {
    pub fn new(bound: usize) -> Self {
        Self { entries: Default::default(), bound }
    }

    /// The value kept for `key` at `generation` (read before calling), or `read`'s, kept when Ok.
    pub fn get_or_read<Q, E>(&self, key: &Q, generation: u64, read: impl FnOnce() -> Result<V, E>) -> Result<V, E>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        if let Some((at, value)) = self.entries.lock().expect("recent records").get(key) {
            if *at == generation {
                return Ok(value.clone());
            }
        }
        let value = read()?;
        let mut entries = self.entries.lock().expect("recent records");
        if entries.len() >= self.bound {
            entries.clear();
        }
        entries.insert(key.to_owned(), (generation, value.clone()));
        Ok(value)
    }
}

/// One column family with typed keys and values.
pub struct Table<K, V> {
    db: Arc<DB>,
    name: &'static str,
    counters: Arc<TableCounters>,
    slot: usize,
    _types: PhantomData<fn(K, V)>,
}

impl<K: Codec, V: Codec> Table<K, V> {
    pub fn new(db: &Arc<DB>, counters: &Arc<TableCounters>, name: &'static str) -> Self {
        assert!(db.cf_handle(name).is_some(), "column family {name} is declared in its TableSet's NAMES");
        let slot = counters.slot(name);
        Self { db: db.clone(), name, counters: counters.clone(), slot, _types: PhantomData }
    }

    fn count_read(&self) {
        self.counters.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// How many writes have touched this table since the store opened (raised once each
    /// write is done). Read it before reading records to cache them: a different number
    /// later means the copy may be stale.
    pub fn generation(&self) -> u64 {
        self.counters.generations[self.slot].load(Ordering::Acquire)
    }

    fn cf(&self) -> &ColumnFamily {
        self.db.cf_handle(self.name).expect("column family opened at start-up")
    }

    fn decode<T: Codec>(&self, bytes: &[u8]) -> Result<T, DbError> {
        T::decode(bytes).map_err(|reason| DbError::Corrupt { table: self.name, reason })
    }

    pub fn get(&self, key: &K) -> Result<Option<V>, DbError> {
        self.count_read();
        match self.db.get_pinned_cf(self.cf(), key.encode())? {
            Some(bytes) => Ok(Some(self.decode(&bytes)?)),
            None => Ok(None),
        }
    }

    pub fn contains(&self, key: &K) -> Result<bool, DbError> {
        self.count_read();
        Ok(self.db.get_pinned_cf(self.cf(), key.encode())?.is_some())
    }

    pub fn insert(&self, batch: &mut Batch, key: &K, value: &V) {
        batch.inner.put_cf(self.cf(), key.encode(), value.encode());
        batch.touch(self.slot);
    }

    pub fn remove(&self, batch: &mut Batch, key: &K) {
        batch.inner.delete_cf(self.cf(), key.encode());
        batch.touch(self.slot);
    }

    /// Every entry whose key starts with the encoded `prefix` (use [`codec::prefix`] for the first
    /// parts of a composite key), in key order.
    pub fn scan_prefix(&self, prefix: Vec<u8>) -> impl Iterator<Item = Result<(K, V), DbError>> + '_ {
        self.scan_from(prefix.clone(), prefix, true)
    }

    /// Entries under `prefix`, starting at `start` (inclusive, or the nearest key before it when
    /// going backwards) and moving forwards or backwards.
    pub fn scan_from(
        &self,
        prefix: Vec<u8>,
        start: Vec<u8>,
        forward: bool,
    ) -> impl Iterator<Item = Result<(K, V), DbError>> + '_ {
        let direction = if forward { rocksdb::Direction::Forward } else { rocksdb::Direction::Reverse };
        self.count_read();
        self.db
            .iterator_cf(self.cf(), IteratorMode::From(&start, direction))
            .take_while(move |item| match item {
                Ok((key, _)) => key.starts_with(&prefix),
                Err(_) => true,
            })
            .map(move |item| {
                self.count_read();
                let (key, value) = item?;
                Ok((self.decode(&key)?, self.decode(&value)?))
            })
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> impl Iterator<Item = Result<(K, V), DbError>> + '_ {
        self.scan_prefix(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store's own counters and nothing else.
    struct Counters {
        meta: Table<String, codec::Be64>,
    }

    impl TableSet for Counters {
        const NAMES: &'static [&'static str] = &["metakey_count"];
        fn new(db: &Arc<DB>, counters: &Arc<TableCounters>) -> Self {
            Self { meta: Table::new(db, counters, "metakey_count") }
        }
        fn meta(&self) -> &Table<String, codec::Be64> {
            &self.meta
        }
    }

    type Database = super::Database<Counters>;

    /// A write raises the generation of each table it touched once it is done, a
    /// concatenated group raises those of all its batches', and reads raise nothing.
    #[test]
    fn a_write_raises_the_generation_of_the_tables_it_touched() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let meta = db.tables.meta();
        let before = meta.generation();
        let _ = meta.get(&"a".to_owned()).unwrap();
        assert_eq!(meta.generation(), before, "a read");
        let mut batch = Batch::new();
        meta.insert(&mut batch, &"a".to_owned(), &codec::Be64(1));
        assert_eq!(meta.generation(), before, "not written yet");
        db.write_unsynced(batch).unwrap();
        assert_eq!(meta.generation(), before + 1);
        let (mut one, mut two) = (Batch::new(), Batch::new());
        meta.remove(&mut one, &"a".to_owned());
        meta.insert(&mut two, &"b".to_owned(), &codec::Be64(2));
        db.commit(Batch::concat([one, two])).unwrap();
        assert_eq!(meta.generation(), before + 2, "one write");
        db.commit(Batch::new()).unwrap();
        assert_eq!(meta.generation(), before + 2, "an empty batch touches nothing");
    }

    /// A group of batches concatenated writes every entry of each, in order (a later write of a
    /// key wins), in one write; the stored counter covers the highest number any of them used.
    #[test]
    fn concatenated_batches_write_every_entry_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path()).unwrap();
        let meta = db.tables.meta();
        let mut batches = Vec::new();
        let mut numbers = Vec::new();
        for i in 0..5u64 {
            let mut batch = Batch::new();
            numbers.push(db.next_count(&mut batch));
            meta.insert(&mut batch, &format!("key{i}"), &codec::Be64(i));
            meta.insert(&mut batch, &"shared".to_owned(), &codec::Be64(100 + i));
            if i == 3 {
                meta.remove(&mut batch, &"key1".to_owned());
            }
            batches.push(batch);
        }
        batches.insert(2, Batch::new());
        let group = Batch::concat(batches);
        assert_eq!(group.len(), 11, "every write of every batch, once");
        db.write_unsynced(group).unwrap();
        db.sync_wal().unwrap();
        let read = |key: &str| meta.get(&key.to_owned()).unwrap().map(|c: codec::Be64| c.0);
        assert_eq!(read("key0"), Some(0));
        assert_eq!(read("key1"), None, "a later batch's delete applies after the earlier put");
        assert_eq!(read("key4"), Some(4));
        assert_eq!(read("shared"), Some(104), "the last batch's write of a key wins");
        drop(db);
        let db = Database::open(dir.path()).unwrap();
        assert_eq!(db.current_count(), *numbers.iter().max().unwrap(), "the counter is stored with the group");
    }

    /// A database of an older format opens, and is marked with this release's format so that
    /// an earlier release no longer opens what this one may have written.
    #[test]
    fn a_database_of_an_older_format_is_marked_with_this_one() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path()).unwrap();
            let mut batch = Batch::new();
            db.tables.meta().insert(&mut batch, &SCHEMA_KEY.to_owned(), &codec::Be64(SCHEMA_VERSION - 1));
            db.commit(batch).unwrap();
        }
        let db = Database::open(dir.path()).expect("an older format opens");
        let stored = db.tables.meta().get(&SCHEMA_KEY.to_owned()).unwrap().map(|c: codec::Be64| c.0);
        assert_eq!(stored, Some(SCHEMA_VERSION));
    }

    #[test]
    fn a_database_of_a_newer_format_is_refused_and_left_as_it_is() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::open(dir.path()).unwrap();
            let stored = db.tables.meta().get(&SCHEMA_KEY.to_owned()).unwrap().map(|c: codec::Be64| c.0);
            assert_eq!(stored, Some(SCHEMA_VERSION), "a new database records its format");
            let mut batch = Batch::new();
            db.tables.meta().insert(&mut batch, &SCHEMA_KEY.to_owned(), &codec::Be64(SCHEMA_VERSION + 1));
            db.commit(batch).unwrap();
        }
        let error = Database::open(dir.path()).err().expect("refused");
        assert!(error.to_string().contains("newer Hemicycle"), "{error}");
        let db = DB::open_cf(&Options::default(), dir.path(), Counters::NAMES).unwrap();
        let meta = db.cf_handle("metakey_count").unwrap();
        let raw = db.get_cf(meta, SCHEMA_KEY.as_bytes()).unwrap().unwrap();
        assert_eq!(raw, (SCHEMA_VERSION + 1).to_be_bytes(), "the refusal wrote nothing");
    }
}
