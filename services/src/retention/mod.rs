//! Pruning of what is kept only for a while (`[retention]`): ids of federation transactions
//! received, the device list stream, client transaction ids, what removed devices leave
//! behind, and notification records once read or old. Synapse keeps most of their counterparts
//! until its operators purge them by hand
//! (`device_lists_stream`, `received_transactions`, `event_txn_id_device_id`); here one task
//! drops them on a timer, each
//! kind after its configured retention, in writes of at most `retention.batch` records, so a
//! large backlog never makes one long write that stalls the stream writer behind it.
//!
//! Records keyed by a stream position carry no time. Each run writes a checkpoint (now → the
//! position the stream has published), so a position is known to be older than a retention when
//! a checkpoint at least that old covers it; checkpoints no retention needs any more go.

pub mod tables;

#[cfg(test)]
mod tests;

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedDeviceId, OwnedRoomId, OwnedUserId};

use crate::{
    db::{
        codec::{prefix, prefix2, Be64, Codec, Json},
        Batch,
    },
    error::Result,
    push::{
        evaluate::MAIN_TIMELINE,
        tables::{NotificationRecord, NotifyFold, TotalsAt},
    },
    services::Services,
};

/// What one run dropped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Ids of federation transactions received.
    pub federation_transactions: u64,
    /// Entries of the device list stream.
    pub device_list_changes: u64,
    /// Client transaction ids (event sends and to-device sends) older than their retention.
    pub client_transactions: u64,
    /// Client transaction ids (event sends and to-device sends) of removed devices.
    pub departed_device_records: u64,
    /// Removed devices whose records are all gone (or that came back under the same id).
    pub departed_devices: u64,
    /// Notification records (and thread totals by position) of events the user has read, or
    /// older than their retention, and the folds no longer needed.
    pub notifications: u64,
    /// Entries of the notification index earlier releases wrote (`useridpos_notification`),
    /// which nothing reads any more.
    pub legacy_notification_index: u64,
}

/// Starts the pruning task: a run at start-up, then one every `retention.interval`.
pub fn start(services: Arc<Services>) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(services.config.retention.interval.0);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match prune(&services, crate::time::now_ms()).await {
                Ok(pruned) if pruned != Pruned::default() => tracing::info!(?pruned, "pruned expired records"),
                Ok(_) => {}
                Err(error) => tracing::error!(%error, "pruning expired records failed; the next run retries"),
            }
        }
    });
}

/// One run at wall-clock `now_ms` (a parameter, so tests say when "now" is instead of waiting):
/// records the checkpoint, then drops every expired record of each kind, batch after batch.
pub async fn prune(services: &Services, now_ms: u64) -> Result<Pruned> {
    let retention = &services.config.retention;
    let before = |kept: &crate::config::HumanDuration| now_ms.saturating_sub(kept.as_millis());
    checkpoint(services, now_ms)?;
    index_older_client_transactions(services).await?;
    let federation_transactions = federation_transactions(services, before(&retention.federation_transactions)).await?;
    let device_list_changes = device_list_changes(services, before(&retention.device_list_changes)).await?;
    let client_transactions = client_transactions(services, before(&retention.client_transactions)).await?;
    let (departed_device_records, departed_devices) =
        departed_devices(services, before(&retention.departed_devices)).await?;
    // The kinds keyed by stream position read the checkpoint at or before their cutoff: the
    // ones older than that of the longest retention are needed by none (cutoffs only move
    // forwards).
    let cutoffs = NotificationCutoffs {
        old: covered_at(services, before(&retention.notifications))?.map(|(_, pos)| pos),
        highlights: covered_at(services, before(&retention.highlights))?.map(|(_, pos)| pos),
    };
    let oldest = [
        &retention.device_list_changes,
        &retention.client_transactions,
        &retention.notifications,
        &retention.highlights,
    ]
    .into_iter()
    .map(before)
    .min()
    .unwrap_or(now_ms);
    drop_checkpoints_before(services, oldest)?;
    let legacy_notification_index = legacy_notification_index(services).await?;
    let notifications = notifications(services, cutoffs).await?;
    Ok(Pruned {
        federation_transactions,
        device_list_changes,
        client_transactions,
        departed_device_records,
        departed_devices,
        legacy_notification_index,
        notifications,
    })
}

/// Positions at or before which notification records are older than their retention (`None`:
/// no checkpoint is that old yet).
#[derive(Debug, Clone, Copy)]
struct NotificationCutoffs {
    /// `retention.notifications`: every record but highlights.
    old: Option<u64>,
    /// `retention.highlights`.
    highlights: Option<u64>,
}

/// Drops the notification records each user no longer needs: one per notified member and
/// event, the largest table of a busy server. Synapse deletes its push actions up to each new
/// read receipt and the others a day old, keeping the counts in its summaries, but keeps
/// highlights until an operator purges them. Here, per user and room:
/// - the records a user has read: unread counts need only, for each receipt, the newest record at
///   or before it (the running totals there), and receipts never move back (`Receipts::set`), so
///   everything older than that record goes, except highlights (`/notifications?only=highlight`
///   lists them) and thread replies still unread in their thread;
/// - the records older than `retention.notifications` (highlights: `retention.highlights`), read
///   or not. What the unread counts need of them is first written down as a `NotifyFold` of the
///   timeline, in a write of its own before any of them goes (`push::evaluate::unread` reads the
///   counts again when it sees one change).
///
/// The same for each thread's totals by position, per thread and its receipt.
async fn notifications(services: &Services, cutoffs: NotificationCutoffs) -> Result<u64> {
    let tables = &services.db.tables;
    let mut out = Drops::new(services.config.retention.batch);
    for entry in tables.push.useridroomid_notifytotal.iter() {
        let ((user, room), _) = entry?;
        let pair = prefix2(&user, &room);
        let receipts = &services.receipts;
        let unthreaded = receipts.read_position(&room, &user)?.unwrap_or(0);
        let main_read = unthreaded.max(receipts.read_position_in(&room, &user, Some("main"))?.unwrap_or(0));
        let mut thread_read: HashMap<String, u64> = HashMap::new();
        let mut read_in = |root: &str| -> Result<u64> {
            if let Some(read) = thread_read.get(root) {
                return Ok(*read);
            }
            let read = unthreaded.max(receipts.read_position_in(&room, &user, Some(root))?.unwrap_or(0));
            thread_read.insert(root.to_owned(), read);
            Ok(read)
        };
        let records = &tables.push.useridroomidpos_notification;
        let newest_at = |pos: u64| -> Result<Option<(u64, NotificationRecord)>> {
            let start = (user.clone(), room.clone(), Be64(pos)).encode();
            Ok(records.scan_from(pair.clone(), start, false).next().transpose()?.map(|(k, r)| (k.2 .0, r)))
        };
        let main_totals = |r: &NotificationRecord| r.main.unwrap_or((r.notify, r.highlight));
        let cut = match cutoffs.old {
            Some(old) => newest_at(old)?.map(|(pos, _)| pos),
            None => None,
        };
        let bounds = fold(services, &mut out, (&user, &room, MAIN_TIMELINE), main_read, cut, |pos| {
            Ok(newest_at(pos)?.map(|(p, r)| (p, main_totals(&r))))
        })
        .await?;
        if let Some(Bounds { below, old_below }) = bounds {
            for entry in records.scan_prefix(pair.clone()) {
                let (key, record) = entry?;
                let pos = key.2 .0;
                if pos >= below {
                    break;
                }
                let young_highlight = record.actions.iter().any(ruma::push::Action::is_highlight)
                    && cutoffs.highlights.is_none_or(|h| pos > h);
                let gone = !young_highlight
                    && (pos < old_below
                        || match &record.thread {
                            None => true,
                            Some(root) => pos <= read_in(root)?,
                        });
                if gone {
                    records.remove(&mut out.batch, &key);
                    out.one_more(services).await?;
                }
            }
        }
        // Each thread's totals by position, the same way per thread and its receipt.
        let mut roots = Vec::new();
        for entry in tables.push.useridroomidthread_notifytotal.scan_prefix(pair.clone()) {
            roots.push(entry?.0 .2);
        }
        let totals = &tables.push.useridroomidthreadpos_notifytotal;
        for root in roots {
            let read = read_in(&root)?;
            let mut thread = pair.clone();
            thread.extend(prefix(&root));
            let newest_at = |pos: u64| -> Result<Option<(u64, (u64, u64))>> {
                let start = (user.clone(), room.clone(), root.clone(), Be64(pos)).encode();
                Ok(totals.scan_from(thread.clone(), start, false).next().transpose()?.map(|(k, Json(t))| (k.3 .0, t)))
            };
            let cut = match cutoffs.old {
                Some(old) => newest_at(old)?.map(|(pos, _)| pos),
                None => None,
            };
            let bounds = fold(services, &mut out, (&user, &room, &root), read, cut, newest_at).await?;
            let Some(Bounds { below, .. }) = bounds else { continue };
            for entry in totals.scan_prefix(thread.clone()) {
                let (key, _) = entry?;
                if key.3 .0 >= below {
                    break;
                }
                totals.remove(&mut out.batch, &key);
                out.one_more(services).await?;
            }
        }
    }
    out.finish(services)
}

/// Which of a timeline's records may go: those before `below`; of them, those before
/// `old_below` because they are old, the others only if read.
struct Bounds {
    below: u64,
    old_below: u64,
}

/// Brings a timeline's fold up to date for receipt `read` and `cut`, the newest record older than
/// the retention, and says which records may go. While the receipt is before that record the
/// timeline is folded there (`NotifyFold`: the totals at the receipt kept, written alone before
/// anything goes) and every record before it may go; once the receipt is past it, the fold is
/// dropped and the records before the newest one at or before the receipt may go.
/// `newest_at(pos)` is the timeline's newest record at or before `pos`, with its totals.
async fn fold(
    services: &Services,
    out: &mut Drops,
    (user, room, timeline): (&OwnedUserId, &OwnedRoomId, &str),
    read: u64,
    cut: Option<u64>,
    newest_at: impl Fn(u64) -> Result<Option<(u64, (u64, u64))>>,
) -> Result<Option<Bounds>> {
    let folds = &services.db.tables.push.useridroomidthread_notifyfold;
    let key = (user.clone(), room.clone(), timeline.to_owned());
    let before = folds.get(&key)?.map(|Json(f)| f);
    let upto = before.map(|f| f.upto).max(cut);
    match upto {
        Some(upto) if read < upto => {
            let at_read = match NotifyFold::totals_at(before.as_ref(), read) {
                TotalsAt::Kept(totals) => totals,
                TotalsAt::Record(pos) => newest_at(pos)?.map_or((0, 0), |(_, totals)| totals),
            };
            let after = NotifyFold { read, at_read, upto };
            if before != Some(after) {
                let mut batch = Batch::new();
                folds.insert(&mut batch, &key, &Json(after));
                services.db.write_unsynced(batch)?;
            }
            Ok(Some(Bounds { below: upto, old_below: upto }))
        }
        _ => {
            if before.is_some() {
                folds.remove(&mut out.batch, &key);
                out.one_more(services).await?;
            }
            let kept = newest_at(read)?.map(|(pos, _)| pos);
            Ok(kept.map(|below| Bounds { below, old_below: upto.unwrap_or(0) }))
        }
    }
}

/// Removals gathered into writes of at most `retention.batch`, for a pass that finds what to
/// drop as it scans.
struct Drops {
    batch: Batch,
    pending: usize,
    total: u64,
    limit: usize,
}

impl Drops {
    fn new(limit: usize) -> Self {
        Self { batch: Batch::new(), pending: 0, total: 0, limit }
    }

    /// Counts a removal just put in the batch; writes the batch once it holds `limit`.
    async fn one_more(&mut self, services: &Services) -> Result<()> {
        self.pending += 1;
        if self.pending >= self.limit {
            services.db.write_unsynced(std::mem::take(&mut self.batch))?;
            self.total += self.pending as u64;
            self.pending = 0;
            tokio::task::yield_now().await;
        }
        Ok(())
    }

    fn finish(mut self, services: &Services) -> Result<u64> {
        if self.pending > 0 {
            services.db.write_unsynced(self.batch)?;
            self.total += self.pending as u64;
            self.pending = 0;
        }
        Ok(self.total)
    }
}

/// Empties the index of notifications by user and position that releases before `0d536ed`
/// wrote for `/notifications` (it merges the rooms' records now): left alone it would be kept
/// forever. Batch after batch, like the other kinds; nothing writes it any more.
async fn legacy_notification_index(services: &Services) -> Result<u64> {
    let table = &services.db.tables.push.useridpos_notification;
    let limit = services.config.retention.batch;
    let mut total = 0;
    loop {
        let mut batch = Batch::new();
        let mut dropped = 0;
        for entry in table.iter().take(limit) {
            let (key, _) = entry?;
            table.remove(&mut batch, &key);
            dropped += 1;
        }
        if dropped == 0 {
            return Ok(total);
        }
        services.db.write_unsynced(batch)?;
        total += dropped as u64;
        tokio::task::yield_now().await;
    }
}

/// The newest checkpoint at or before `cutoff_ms`: (its time, the position it covers). Every
/// position up to the one covered was published at least as long ago as the cutoff.
fn covered_at(services: &Services, cutoff_ms: u64) -> Result<Option<(u64, u64)>> {
    let checkpoints = &services.db.tables.retention.timems_streampos;
    Ok(checkpoints.scan_from(Vec::new(), Be64(cutoff_ms).encode(), false).next().transpose()?.map(|(a, c)| (a.0, c.0)))
}

fn drop_checkpoints_before(services: &Services, cutoff_ms: u64) -> Result<()> {
    let Some((at, _)) = covered_at(services, cutoff_ms)? else { return Ok(()) };
    let checkpoints = &services.db.tables.retention.timems_streampos;
    let mut batch = Batch::new();
    for entry in checkpoints.iter().take(services.config.retention.batch) {
        let (Be64(time), _) = entry?;
        if time >= at {
            break;
        }
        checkpoints.remove(&mut batch, &Be64(time));
    }
    services.db.write_unsynced(batch)?;
    Ok(())
}

/// Marks (in `metakey_count`) that the client transaction ids recorded before their index by
/// position existed have been filed in it.
const CLIENT_TXNS_INDEXED: &str = "client_txns_indexed";

/// Once per database: files the client transaction ids recorded before `pos_eventtxn` and
/// `pos_todevicetxn` existed under the numbers 1, 2, 3… (below every stream position, so every
/// checkpoint covers them): they go a retention after the first checkpoint.
async fn index_older_client_transactions(services: &Services) -> Result<()> {
    let tables = &services.db.tables;
    let flag = CLIENT_TXNS_INDEXED.to_owned();
    if tables.meta.get(&flag)?.is_some() {
        return Ok(());
    }
    let limit = services.config.retention.batch;
    let mut number = 0u64;
    let mut batch = Batch::new();
    let mut pending = 0;
    for entry in tables.rooms.useriddevicetxn_eventid.iter() {
        let (key, _) = entry?;
        number += 1;
        tables.retention.pos_eventtxn.insert(&mut batch, &Be64(number), &Json(key));
        pending += 1;
        if pending == limit {
            services.db.write_unsynced(std::mem::take(&mut batch))?;
            pending = 0;
            tokio::task::yield_now().await;
        }
    }
    for entry in tables.ephemeral.useriddevicetxn_todevice.iter() {
        let (key, _) = entry?;
        number += 1;
        tables.retention.pos_todevicetxn.insert(&mut batch, &Be64(number), &Json(key));
        pending += 1;
        if pending == limit {
            services.db.write_unsynced(std::mem::take(&mut batch))?;
            pending = 0;
            tokio::task::yield_now().await;
        }
    }
    tables.meta.insert(&mut batch, &flag, &Be64(1));
    services.db.commit(batch)?;
    Ok(())
}

/// Drops the client transaction ids (of event and to-device sends) recorded at positions
/// published before `cutoff_ms`, oldest first: a scan of their index by position up to the
/// position the checkpoint covers, so its cost is what is dropped.
async fn client_transactions(services: &Services, cutoff_ms: u64) -> Result<u64> {
    let Some((_, covered)) = covered_at(services, cutoff_ms)? else { return Ok(0) };
    let tables = &services.db.tables;
    let limit = services.config.retention.batch;
    let mut total = 0;
    loop {
        let mut batch = Batch::new();
        let mut dropped = 0;
        for entry in tables.retention.pos_eventtxn.iter() {
            let (Be64(pos), Json(key)) = entry?;
            if pos > covered || dropped == limit {
                break;
            }
            tables.retention.pos_eventtxn.remove(&mut batch, &Be64(pos));
            if let Some(event_id) = tables.rooms.useriddevicetxn_eventid.get(&key)? {
                tables.rooms.eventid_devicetxn.remove(&mut batch, &event_id);
            }
            tables.rooms.useriddevicetxn_eventid.remove(&mut batch, &key);
            dropped += 1;
        }
        for entry in tables.retention.pos_todevicetxn.iter() {
            let (Be64(pos), Json(key)) = entry?;
            if pos > covered || dropped == limit {
                break;
            }
            tables.retention.pos_todevicetxn.remove(&mut batch, &Be64(pos));
            tables.ephemeral.useriddevicetxn_todevice.remove(&mut batch, &key);
            dropped += 1;
        }
        if dropped == 0 {
            return Ok(total);
        }
        services.db.write_unsynced(batch)?;
        total += dropped as u64;
        tokio::task::yield_now().await;
    }
}

/// Records that every position the stream has published now is at most `now_ms` old.
fn checkpoint(services: &Services, now_ms: u64) -> Result<()> {
    let head = *services.rooms.subscribe().borrow();
    let mut batch = Batch::new();
    services.db.tables.retention.timems_streampos.insert(&mut batch, &Be64(now_ms), &Be64(head));
    // Unsynced: a checkpoint lost in a crash only delays pruning until the next one is old enough.
    services.db.write_unsynced(batch)?;
    Ok(())
}

/// Drops the ids of transactions received before `cutoff_ms`: a scan of the received-order
/// index (keys are `ms << 20 | sequence`) up to the cutoff, so its cost is what is dropped.
async fn federation_transactions(services: &Services, cutoff_ms: u64) -> Result<u64> {
    let tables = &services.db.tables.federation;
    let cutoff = cutoff_ms << 20;
    let limit = services.config.retention.batch;
    let mut total = 0;
    loop {
        let mut batch = Batch::new();
        let mut dropped = 0;
        for entry in tables.receivedseq_origintxn.iter() {
            let (Be64(seq), Json(key)) = entry?;
            if seq >= cutoff || dropped == limit {
                break;
            }
            tables.receivedseq_origintxn.remove(&mut batch, &Be64(seq));
            tables.origintxn_done.remove(&mut batch, &key);
            dropped += 1;
        }
        if dropped == 0 {
            return Ok(total);
        }
        services.db.write_unsynced(batch)?;
        total += dropped as u64;
        tokio::task::yield_now().await;
    }
}

/// Drops the device list stream's entries older than `cutoff_ms` that the federation dispatcher
/// has passed (it announces local changes to other servers from this stream), and so have the
/// transactions of the appservices that take device lists (MSC3202). The highest
/// position dropped is written first (`keys::CHANGES_PRUNED`), so a sync from before it never
/// reads a stream with holes as if it were whole: it reports every member of its rooms instead.
async fn device_list_changes(services: &Services, cutoff_ms: u64) -> Result<u64> {
    let tables = &services.db.tables;
    let Some((_, covered)) = covered_at(services, cutoff_ms)? else { return Ok(0) };
    let dispatched = tables.meta.get(&crate::federation::sender::DISPATCHED.to_owned())?.map_or(0, |Be64(p)| p);
    let appservices = services.appservices.device_lists_delivered(&services.db)?.unwrap_or(u64::MAX);
    let upto = covered.min(dispatched).min(appservices);
    let floor_key = crate::keys::CHANGES_PRUNED.to_owned();
    let floor = tables.meta.get(&floor_key)?.map_or(0, |Be64(p)| p);
    let limit = services.config.retention.batch;
    let mut total = 0;
    if upto > floor {
        let mut batch = Batch::new();
        tables.meta.insert(&mut batch, &floor_key, &Be64(upto));
        services.db.write_unsynced(batch)?;
        loop {
            let mut batch = Batch::new();
            let mut dropped = 0;
            for entry in tables.keys.pos_keychange.iter() {
                let (Be64(pos), _) = entry?;
                if pos > upto || dropped == limit {
                    break;
                }
                tables.keys.pos_keychange.remove(&mut batch, &Be64(pos));
                dropped += 1;
            }
            if dropped == 0 {
                break;
            }
            services.db.write_unsynced(batch)?;
            total += dropped as u64;
            tokio::task::yield_now().await;
        }
    }
    Ok(total)
}

/// Drops the client transaction ids of devices removed before `cutoff_ms`, under the user's
/// lock (a device may come back under the same id: its ids are then its own again, and kept).
/// Returns the records dropped and the devices finished with.
async fn departed_devices(services: &Services, cutoff_ms: u64) -> Result<(u64, u64)> {
    let tables = &services.db.tables;
    let limit = services.config.retention.batch;
    let mut due: Vec<(OwnedUserId, OwnedDeviceId)> = Vec::new();
    for entry in tables.users.userdeviceid_departed.iter() {
        let (key, Be64(removed)) = entry?;
        if removed <= cutoff_ms {
            due.push(key);
        }
    }
    let (mut records, mut devices) = (0, 0);
    for (user, device) in due {
        let _guard = services.users.lock_user(&user).await;
        let key = (user.clone(), device.clone());
        if !tables.users.userdeviceid_device.contains(&key)? {
            loop {
                let mut batch = Batch::new();
                let mut dropped = 0;
                for entry in tables.rooms.useriddevicetxn_eventid.scan_prefix(prefix2(&user, &device)).take(limit) {
                    let (txn, event_id) = entry?;
                    tables.rooms.useriddevicetxn_eventid.remove(&mut batch, &txn);
                    tables.rooms.eventid_devicetxn.remove(&mut batch, &event_id);
                    dropped += 1;
                }
                let room = limit - dropped;
                for entry in tables.ephemeral.useriddevicetxn_todevice.scan_prefix(prefix2(&user, &device)).take(room) {
                    tables.ephemeral.useriddevicetxn_todevice.remove(&mut batch, &entry?.0);
                    dropped += 1;
                }
                if dropped == 0 {
                    break;
                }
                services.db.write_unsynced(batch)?;
                records += dropped as u64;
                tokio::task::yield_now().await;
            }
        }
        let mut batch = Batch::new();
        tables.users.userdeviceid_departed.remove(&mut batch, &key);
        services.db.write_unsynced(batch)?;
        devices += 1;
    }
    Ok((records, devices))
}
