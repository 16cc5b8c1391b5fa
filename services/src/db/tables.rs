//! Every column family of the store: each domain declares its own tables next to its records
//! (`<domain>/tables.rs`, modules that import no service), and this set gathers them for the
//! storage layer (`hemicycle_core::db`), which knows none of them.

use std::sync::Arc;

use super::{codec::Be64, Table, TableCounters, TableSet, DB};

/// Every domain's tables, and the store's own counters.
pub struct Tables {
    /// Named counters (the global stream counter).
    pub meta: Table<String, Be64>,
    pub users: crate::users::tables::Tables,
    pub push: crate::push::tables::Tables,
    pub ephemeral: crate::ephemeral::tables::Tables,
    pub rooms: crate::rooms::tables::Tables,
    pub keys: crate::keys::tables::Tables,
    pub media: crate::media::tables::Tables,
    pub federation: crate::federation::tables::Tables,
    pub server_keys: crate::server_keys::tables::Tables,
    pub reports: crate::reports::tables::Tables,
    pub audit: crate::audit::tables::Tables,
    pub rtc: crate::rtc::tables::Tables,
    pub oauth: crate::oauth::tables::Tables,
    pub retention: crate::retention::tables::Tables,
    pub network: crate::network::tables::Tables,
    pub appservice: crate::appservice::tables::Tables,
}

/// The column families of every domain, in one list for the store to open.
const PARTS: &[&[&str]] = &[
    &["metakey_count"],
    crate::users::tables::Tables::NAMES,
    crate::push::tables::Tables::NAMES,
    crate::ephemeral::tables::Tables::NAMES,
    crate::rooms::tables::Tables::NAMES,
    crate::keys::tables::Tables::NAMES,
    crate::media::tables::Tables::NAMES,
    crate::federation::tables::Tables::NAMES,
    crate::server_keys::tables::Tables::NAMES,
    crate::reports::tables::Tables::NAMES,
    crate::audit::tables::Tables::NAMES,
    crate::rtc::tables::Tables::NAMES,
    crate::oauth::tables::Tables::NAMES,
    crate::retention::tables::Tables::NAMES,
    crate::network::tables::Tables::NAMES,
    crate::appservice::tables::Tables::NAMES,
];

const COUNT: usize = hemicycle_core::db::names_count(PARTS);
const NAMES: [&str; COUNT] = hemicycle_core::db::names_concat(PARTS);

impl TableSet for Tables {
    const NAMES: &'static [&'static str] = &NAMES;

    fn meta(&self) -> &Table<String, Be64> {
        &self.meta
    }

    fn new(db: &Arc<DB>, counters: &Arc<TableCounters>) -> Self {
        Self {
            meta: Table::new(db, counters, "metakey_count"),
            users: crate::users::tables::Tables::new(db, counters),
            push: crate::push::tables::Tables::new(db, counters),
            ephemeral: crate::ephemeral::tables::Tables::new(db, counters),
            rooms: crate::rooms::tables::Tables::new(db, counters),
            keys: crate::keys::tables::Tables::new(db, counters),
            media: crate::media::tables::Tables::new(db, counters),
            federation: crate::federation::tables::Tables::new(db, counters),
            server_keys: crate::server_keys::tables::Tables::new(db, counters),
            reports: crate::reports::tables::Tables::new(db, counters),
            audit: crate::audit::tables::Tables::new(db, counters),
            rtc: crate::rtc::tables::Tables::new(db, counters),
            oauth: crate::oauth::tables::Tables::new(db, counters),
            retention: crate::retention::tables::Tables::new(db, counters),
            network: crate::network::tables::Tables::new(db, counters),
            appservice: crate::appservice::tables::Tables::new(db, counters),
        }
    }
}
