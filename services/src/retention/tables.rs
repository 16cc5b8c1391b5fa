//! The retention tables: when the stream reached which position, so that a record keyed by a
//! stream position can be told its age. Declared here, below every service of the domain, so
//! that the store's set of tables (`crate::db::Tables`) can name them without importing it.

use hemicycle_core::db::{codec::Be64, Table};

hemicycle_core::tables! {
    /// The retention column families.
    pub struct Tables {
        /// Wall-clock ms → the stream position published then: one entry per pruning run, the
        /// ones no retention needs any more dropped by the next.
        pub timems_streampos: Table<Be64, Be64>,
    }
}
