//! The state this component keeps for the server's lifetime, held by `Services`: declared
//! apart from the workers and functions that use it, which take the services they read, so the
//! aggregate of services depends only on what lies below it.

use std::sync::Mutex;
use tantivy::{schema::Field, IndexReader, IndexWriter};
use tokio::sync::watch;

/// The search index and the position it has indexed up to.
pub struct Search {
    pub(crate) reader: IndexReader,
    pub(crate) writer: Mutex<IndexWriter>,
    pub(crate) fields: Fields,
    pub(crate) indexed: watch::Sender<u64>,
    /// The lowest position of backfilled history indexed (history fetched later is stored below
    /// every stream position, handed out downwards): [`crate::db::STREAM_BASE`] before any.
    pub(crate) backfill_indexed: watch::Sender<u64>,
    /// A search is waiting: the indexer commits what it holds now instead of at the interval.
    pub(crate) commit_wanted: tokio::sync::Notify,
}
pub struct Fields {
    pub(crate) event_id: Field,
    pub(crate) room_id: Field,
    pub(crate) sender: Field,
    pub(crate) key: Field,
    pub(crate) text: Field,
    pub(crate) pos: Field,
}
