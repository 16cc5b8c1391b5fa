//! The rooms' writes not durable yet (events, their metadata, state snapshots, transaction ids),
//! read before the database: the next event of a room is built and authorized on its
//! predecessor without waiting for the disk. The stream's writer tells it, through
//! [`Overlay`], what each batch made durable.

use std::collections::HashMap;

use ruma::{EventId, OwnedEventId};

use super::{state::Snapshot, EventMeta};
use crate::stream::{Cleanup, Overlay, TxnId};

/// Written-but-not-yet-durable data, consulted before the database.
#[derive(Default)]
pub struct Pending {
    pub pdus: HashMap<OwnedEventId, (Vec<u8>, EventMeta)>,
    /// The latest events made durable, as the overlay held them: each consumer of the stream
    /// (push rules, search, appservices, federation) reads every new event right after its
    /// write, and these reads were a sixth of a send's point reads (docs/performance.md).
    /// Bounded by [`RECENT_EVENTS`], oldest out first. A change of a stored event goes through
    /// the overlay (a redaction puts the redacted form there, which then replaces this copy)
    /// or calls [`Pending::forget`] (outliers, backfill, purges).
    recent: HashMap<OwnedEventId, (Vec<u8>, EventMeta)>,
    recent_order: std::collections::VecDeque<OwnedEventId>,
    pub txns: HashMap<TxnId, OwnedEventId>,
    pub snapshots: HashMap<u64, Snapshot>,
}

/// Events kept in [`Pending::recent`].
const RECENT_EVENTS: usize = 2_048;

impl Pending {
    /// An event's stored form and metadata if pending or recently durable (`None`: read the store).
    pub fn event(&self, id: &EventId) -> Option<&(Vec<u8>, EventMeta)> {
        self.pdus.get(id).or_else(|| self.recent.get(id))
    }

    /// Drops the recent copy of events whose stored form is changed or removed outside the
    /// overlay.
    pub fn forget<'a>(&mut self, ids: impl IntoIterator<Item = &'a OwnedEventId>) {
        for id in ids {
            self.recent.remove(id);
        }
    }

    /// Moves a pending event that became durable to the recent ones.
    fn event_durable(&mut self, id: &EventId) {
        let Some(entry) = self.pdus.remove(id) else { return };
        self.recent.insert(id.to_owned(), entry);
        self.recent_order.push_back(id.to_owned());
        while self.recent_order.len() > RECENT_EVENTS {
            if let Some(oldest) = self.recent_order.pop_front() {
                // An id queued twice (its redacted form replaced it) goes with its first turn.
                self.recent.remove(&oldest);
            }
        }
    }
}

impl Overlay for Pending {
    fn made_durable(&mut self, cleanup: &Cleanup) {
        for id in &cleanup.pdus {
            self.event_durable(id);
        }
        if let Some(txn) = &cleanup.txn {
            self.txns.remove(txn);
        }
        for s in &cleanup.snapshots {
            self.snapshots.remove(s);
        }
    }
}
