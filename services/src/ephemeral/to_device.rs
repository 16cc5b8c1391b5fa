//! Send-to-device messages: a per-device inbox on the stream. A message is delivered by sync and
//! deleted only when the device syncs again with a token past it, so it arrives exactly once even
//! if a sync response is lost or the server restarts.

use std::sync::Arc;

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::{json, Value};

pub use super::tables::ToDeviceMessage;
use crate::{
    db::{
        codec::{prefix2, Be64, Codec, Json},
        Batch, Database,
    },
    error::Result,
    stream::{wait_durable, Audience, Cleanup, Writer},
};

pub struct ToDevice {
    db: Arc<Database>,
    writer: Arc<Writer>,
}

/// Key prefix of one device's inbox.
pub fn inbox(user: &UserId, device: &DeviceId) -> Vec<u8> {
    prefix2(&user.to_owned(), &device.to_owned())
}

impl ToDevice {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self { db, writer }
    }

    /// Queues messages for local devices; idempotent per (sender, sender device, txn id).
    pub async fn send(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        deliveries: Vec<(OwnedUserId, OwnedDeviceId, ToDeviceMessage)>,
    ) -> Result<()> {
        let txn = (sender.to_owned(), sender_device.to_owned(), txn_id.to_owned());
        let tables = &self.db.tables;
        if tables.ephemeral.useriddevicetxn_todevice.contains(&txn)? {
            return Ok(());
        }
        let durable = self.writer.submit(&self.db, |batch, pos| {
            for (user, device, message) in &deliveries {
                tables.ephemeral.useriddevicepos_todevice.insert(
                    batch,
                    &(user.clone(), device.clone(), Be64(pos)),
                    &Json(message.clone()),
                );
            }
            tables.ephemeral.useriddevicetxn_todevice.insert(batch, &txn, &Vec::new());
            // Found by age by the pruning task (`retention.client_transactions`).
            tables.retention.pos_todevicetxn.insert(batch, &Be64(pos), &Json(txn.clone()));
            Ok(Cleanup {
                wake: Audience::Users(deliveries.iter().map(|(u, _, _)| u.clone()).collect()),
                ..Default::default()
            })
        })?;
        wait_durable(durable).await
    }

    /// Messages for the device after `after` up to `until`, as sync events.
    pub fn pending(&self, user: &UserId, device: &DeviceId, after: u64, until: u64) -> Result<Vec<Value>> {
        let start = (user.to_owned(), device.to_owned(), Be64(after + 1)).encode();
        let mut out = Vec::new();
        for entry in self.db.tables.ephemeral.useriddevicepos_todevice.scan_from(inbox(user, device), start, true) {
            let ((_, _, Be64(pos)), Json(m)) = entry?;
            if pos > until {
                break;
            }
            out.push(json!({ "sender": m.sender, "type": m.kind, "content": m.content }));
        }
        Ok(out)
    }

    /// Deletes what the device acknowledged by syncing with a token at `upto`.
    pub fn acknowledge(&self, user: &UserId, device: &DeviceId, upto: u64) -> Result<()> {
        let mut batch = Batch::new();
        let mut any = false;
        for entry in self.db.tables.ephemeral.useriddevicepos_todevice.scan_prefix(inbox(user, device)) {
            let (key, _) = entry?;
            if key.2 .0 > upto {
                break;
            }
            self.db.tables.ephemeral.useriddevicepos_todevice.remove(&mut batch, &key);
            any = true;
        }
        // No fsync (this runs on every sync, on the async runtime): a deletion lost in a crash
        // only leaves messages the client's token already puts behind it, never returned again.
        if any {
            self.db.write_unsynced(batch)?;
        }
        Ok(())
    }

    /// Drops a device's whole inbox (the device was deleted).
    pub fn clear(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        self.acknowledge(user, device, u64::MAX)
    }
}
