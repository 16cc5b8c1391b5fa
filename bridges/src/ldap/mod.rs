//! The LDAP bridge: the directory is the authority for its users' passwords, names, addresses,
//! admin rights, existence and group rooms. See docs/ldap.md.

pub mod config;
pub mod directory;
pub mod localpart;
pub mod sync;

pub use config::LdapConfig;
pub use directory::{AuthError, Directory, DirectoryError, Entry};
