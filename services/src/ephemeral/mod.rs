//! Ephemeral room data: typing notifications (in memory) and read receipts (persisted on the
//! stream, since clients rely on them across restarts).

pub mod presence;
pub mod receipts;
pub mod tables;
pub mod to_device;
pub mod typing;
