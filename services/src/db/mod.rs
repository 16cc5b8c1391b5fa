//! The store as the services see it: the storage layer of `hemicycle-core` opened with every
//! domain's column families ([`tables`]).

pub mod tables;

pub use hemicycle_core::db::*;
pub use tables::Tables;

/// The open store with every domain's tables.
pub type Database = hemicycle_core::db::Database<Tables>;
