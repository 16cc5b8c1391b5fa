//! The server keys tables and the records they keep. This server's signing keys, current and retired.
//! Declared here, below every service of the domain, so that the store's set of tables
//! (`crate::db::Tables`) can name them without importing the domain's services.

use hemicycle_core::db::{codec::Json, Table};

hemicycle_core::tables! {
    /// The server keys column families.
    pub struct Tables {
        /// This server's signing keys: key id (`ed25519:…`) → PKCS#8 document.
        pub serverkeyid_keypair: Table<String, Vec<u8>>,
        /// Our retired signing keys: key id → (public key, when it was retired), still published.
        pub serverkeyid_oldkey: Table<String, Json<(String, u64)>>,
    }
}
