//! Hemicycle bridges: connections from a ministry's existing systems into the homeserver.
//!
//! [`ldap`] reads the ministry's directory (OpenLDAP, Active Directory) with `ldap3`: it checks
//! passwords at login and plans the directory sync (accounts created, refreshed, deactivated;
//! group members put into their rooms). The homeserver calls it and applies the plan through its
//! own services ([`ldap::sync::Accounts`]), so this crate knows nothing of HTTP or the database.

pub mod ldap;
pub mod testing;
