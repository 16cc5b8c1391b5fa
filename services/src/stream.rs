//! The stream: every write that clients sync (events, account data, …) gets a position from the
//! global counter and is persisted by one writer thread with group commit.
//!
//! Writes are handed to one writer thread in stream-position order (positions are allocated while
//! holding the queue lock). The thread writes every queued batch as one RocksDB write, syncs the
//! WAL once for the whole group, then acknowledges each sender and advances the stream
//! notification to the group's highest position, so consumers never see a position before
//! everything below it is durable. Until its batch is durable, an event stays readable from the
//! in-memory [`Overlay`], so the next event of the same room can be built and authorized
//! without waiting for the disk.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{
        atomic::{AtomicU64, Ordering},
        mpsc, Arc, Mutex, RwLock,
    },
};

use ruma::{OwnedDeviceId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use tokio::sync::{oneshot, watch, Notify};

use crate::db::{
    codec::{prefix, Json},
    Batch, Database,
};

/// Transaction key of an idempotent client send.
pub type TxnId = (OwnedUserId, OwnedDeviceId, String);

/// What readers consult before the database for writes not durable yet: the writer tells it
/// what each durable batch's [`Cleanup`] names, in stream order. Its contents belong to the
/// domain that writes them (the rooms' events and state snapshots), which the stream does not
/// know.
pub trait Overlay: Send {
    fn made_durable(&mut self, cleanup: &Cleanup);
}

/// The overlay of a writer whose writes are readable at once (tests, and stores with nothing
/// in flight).
impl Overlay for () {
    fn made_durable(&mut self, _: &Cleanup) {}
}

/// What to drop from the overlay once a batch is durable.
#[derive(Default)]
pub struct Cleanup {
    pub pdus: Vec<OwnedEventId>,
    pub txn: Option<TxnId>,
    pub snapshots: Vec<u64>,
    /// Whose waiting syncs this write concerns.
    pub wake: Audience,
}

/// Who is woken when a write becomes durable: only the users it concerns, so a message in one
/// room costs nothing to the idle syncs of everyone else.
#[derive(Debug, Clone, Default)]
pub enum Audience {
    #[default]
    Nobody,
    User(OwnedUserId),
    Users(Vec<OwnedUserId>),
    /// Everyone with a membership in the room (joined, invited, left…).
    Room(OwnedRoomId),
    /// The user and everyone sharing a joined room with them.
    SharedWith(OwnedUserId),
}

/// Per-user wake-ups for long-polling syncs.
#[derive(Default)]
pub struct Notifier {
    users: Mutex<HashMap<OwnedUserId, Arc<Notify>>>,
    /// Rooms whose writes wake no one and through which no one is woken: the discovery room
    /// (`users::discovery`), which every agent of the network joins and no client is shown, so a
    /// join, a leave or a member's presence there has nothing for anyone's sync.
    quiet: RwLock<BTreeSet<OwnedRoomId>>,
    /// Long-polls woken so far (each user's handle counts once per wake, whoever waits on it).
    woken: AtomicU64,
}

impl Notifier {
    /// The user's notification handle; register (`Notified::enable`) before checking for news.
    pub fn subscribe(&self, user: &UserId) -> Arc<Notify> {
        let mut users = self.users.lock().expect("notifier lock");
        if users.len() > 10_000 {
            users.retain(|_, n| Arc::strong_count(n) > 1);
        }
        users.entry(user.to_owned()).or_default().clone()
    }

    /// Long-polls registered right now (each holds its user's handle while it runs).
    pub fn waiting(&self) -> usize {
        self.users.lock().expect("notifier lock").values().map(|n| Arc::strong_count(n) - 1).sum()
    }

    /// Wakes the long-polls of everyone in `audience` for news that is not a stream write (typing).
    pub fn wake_audience(&self, db: &Database, audience: &Audience) {
        let mut users = BTreeSet::new();
        self.audience_users(db, audience, &mut users);
        for user in users {
            self.wake(&user);
        }
    }

    fn wake(&self, user: &UserId) {
        if let Some(n) = self.users.lock().expect("notifier lock").get(user) {
            self.woken.fetch_add(1, Ordering::Relaxed);
            n.notify_waiters();
        }
    }

    /// How many wake-ups went to users with a sync subscribed so far: what writes cost the
    /// idle syncs of others (the sync cost tests hold it to the users a write concerns).
    pub fn woken(&self) -> u64 {
        self.woken.load(Ordering::Relaxed)
    }

    /// Makes `room` quiet (see [`Notifier::quiet`]); `previous`, a room that was, no longer is.
    pub fn set_quiet_room(&self, room: &RoomId, previous: Option<&RoomId>) {
        let mut quiet = self.quiet.write().expect("quiet rooms");
        if let Some(previous) = previous {
            quiet.remove(previous);
        }
        quiet.insert(room.to_owned());
    }

    fn is_quiet(&self, room: &RoomId) -> bool {
        self.quiet.read().expect("quiet rooms").contains(room)
    }

    fn audience_users(&self, db: &Database, audience: &Audience, out: &mut BTreeSet<OwnedUserId>) {
        out.extend(self.group_audience(db, [audience]));
    }

    /// The users a group of writes wakes, each room's members read once however many writes of
    /// the group name the room: the writes of a busy room come in groups of tens, and reading its
    /// members once per write took a fifth of the writer thread's time (docs/performance.md).
    /// Quiet rooms wake nobody through their membership.
    fn group_audience<'a>(
        &self,
        db: &Database,
        audiences: impl IntoIterator<Item = &'a Audience>,
    ) -> BTreeSet<OwnedUserId> {
        let mut out = BTreeSet::new();
        let mut rooms = BTreeSet::new();
        for audience in audiences {
            match audience {
                Audience::Nobody => {}
                Audience::User(u) => {
                    out.insert(u.clone());
                }
                Audience::Users(users) => out.extend(users.iter().cloned()),
                Audience::Room(room) => {
                    rooms.insert(room.clone());
                }
                Audience::SharedWith(user) => {
                    out.insert(user.clone());
                    for entry in db.tables.rooms.useridroomid_membership.scan_prefix(prefix(user)).flatten() {
                        let ((_, room), Json(m)) = entry;
                        if m.membership == "join" {
                            rooms.insert(room);
                        }
                    }
                }
            }
        }
        for room in rooms.iter().filter(|room| !self.is_quiet(room)) {
            for entry in db.tables.rooms.roomiduserid_membership.scan_prefix(prefix(room)).flatten() {
                out.insert((entry.0).1);
            }
        }
        out
    }
}

impl Audience {
    /// The audience as an explicit list, resolved now by the caller (off the writer thread, whose
    /// time every write shares) rather than by the writer after the write.
    pub fn resolved(self, db: &Database, notifier: &Notifier) -> Audience {
        let mut users = BTreeSet::new();
        notifier.audience_users(db, &self, &mut users);
        Audience::Users(users.into_iter().collect())
    }
}

struct Job {
    batch: Batch,
    pos: u64,
    cleanup: Cleanup,
    done: oneshot::Sender<Result<(), String>>,
}

pub struct Writer {
    queue: Mutex<mpsc::Sender<Job>>,
    /// The writer thread, joined on drop so the database it holds is closed before the process
    /// exits (RocksDB must not be torn down by exit while its handle is still open).
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    pub notifier: Arc<Notifier>,
    /// The highest durable position; changes wake the stream's consumers.
    position: watch::Receiver<u64>,
    /// The latest position that wrote to each room (events, receipts), so an incremental sync
    /// skips the rooms where nothing happened since its token without reading them.
    activity: Mutex<HashMap<OwnedRoomId, u64>>,
    /// The latest position that changed a membership in each room (device list changes).
    member_activity: Mutex<HashMap<OwnedRoomId, u64>>,
}

/// Most batches merged into one fsync.
const MAX_GROUP: usize = 512;

impl Writer {
    pub fn start(db: Arc<Database>, overlay: Arc<Mutex<dyn Overlay>>) -> Self {
        let (stream, position) = watch::channel(db.current_count());
        let (tx, rx) = mpsc::channel::<Job>();
        let notifier = Arc::new(Notifier::default());
        let wakes = notifier.clone();
        let thread = std::thread::Builder::new()
            .name("event-writer".into())
            .spawn(move || run(db, rx, overlay, stream, wakes))
            .expect("spawn the event writer thread");
        Self {
            queue: Mutex::new(tx),
            thread: Mutex::new(Some(thread)),
            notifier,
            position,
            activity: Mutex::default(),
            member_activity: Mutex::default(),
        }
    }

    /// Records that `pos` writes to `room` (call inside the `submit` that allocated it).
    pub fn touch_room(&self, room: &RoomId, pos: u64) {
        raise(&self.activity, room, pos);
    }

    /// The latest position known to have written to `room` since start-up, if any.
    pub fn room_activity(&self, room: &RoomId) -> Option<u64> {
        self.activity.lock().expect("room activity").get(room).copied()
    }

    /// Records that `pos` changes memberships in `room` (or, at most, that the last change was
    /// before `pos`).
    pub fn touch_members(&self, room: &RoomId, pos: u64) {
        raise(&self.member_activity, room, pos);
    }

    pub fn room_member_activity(&self, room: &RoomId) -> Option<u64> {
        self.member_activity.lock().expect("member activity").get(room).copied()
    }

    /// A receiver of the highest durable stream position.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.position.clone()
    }

    /// Allocates the next stream position and queues the batch `fill` builds for it, in one
    /// critical section so queue order is position order. Returns a receiver that resolves once
    /// the batch is durable.
    pub fn submit(
        &self,
        db: &Database,
        fill: impl FnOnce(&mut Batch, u64) -> crate::error::Result<Cleanup>,
    ) -> crate::error::Result<oneshot::Receiver<Result<(), String>>> {
        self.submit_with(db, Batch::new(), fill)
    }

    /// Like [`Writer::submit`], with a batch already holding the writes that need no position:
    /// the slow part (scans) is done before the queue's lock, which `fill` then holds briefly.
    pub fn submit_with(
        &self,
        db: &Database,
        mut batch: Batch,
        fill: impl FnOnce(&mut Batch, u64) -> crate::error::Result<Cleanup>,
    ) -> crate::error::Result<oneshot::Receiver<Result<(), String>>> {
        let queue = self.queue.lock().expect("writer queue");
        let pos = db.next_count(&mut batch);
        let cleanup = fill(&mut batch, pos)?;
        let (done, receiver) = oneshot::channel();
        queue
            .send(Job { batch, pos, cleanup, done })
            .map_err(|_| crate::error::Error::Internal("the event writer has stopped".into()))?;
        Ok(receiver)
    }
}

fn raise(map: &Mutex<HashMap<OwnedRoomId, u64>>, room: &RoomId, pos: u64) {
    let mut map = map.lock().expect("room activity");
    match map.get_mut(room) {
        Some(last) => *last = (*last).max(pos),
        None => {
            map.insert(room.to_owned(), pos);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        drop(std::mem::replace(self.queue.get_mut().expect("writer queue"), mpsc::channel().0));
        if let Some(thread) = self.thread.get_mut().expect("writer thread").take() {
            let _ = thread.join();
        }
    }
}

fn run(
    db: Arc<Database>,
    rx: mpsc::Receiver<Job>,
    pending: Arc<Mutex<dyn Overlay>>,
    stream: watch::Sender<u64>,
    notifier: Arc<Notifier>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        if !write_group(&db, group, &pending, &stream, &notifier) {
            return;
        }
    }
}

/// Makes a group of queued writes durable: one RocksDB write for all of them (one log record,
/// one system call, one counter update; each job's writes still land together), then one sync;
/// then the overlay drops them, the position advances and their audience is woken. `false` when
/// the write failed: every job of the group is told, and the writer must stop.
fn write_group(
    db: &Database,
    group: Vec<Job>,
    pending: &Mutex<dyn Overlay>,
    stream: &watch::Sender<u64>,
    notifier: &Notifier,
) -> bool {
    let mut batches = Vec::with_capacity(group.len());
    let mut jobs = Vec::with_capacity(group.len());
    for job in group {
        let Job { batch, pos, cleanup, done } = job;
        batches.push(batch);
        jobs.push((pos, cleanup, done));
    }
    let written = db.write_unsynced(Batch::concat(batches)).and_then(|()| db.sync_wal()).map_err(|e| e.to_string());
    if let Err(error) = &written {
        // The services' memory (room records, the overlay) is already ahead of the disk for
        // these writes. Rather than let later events build on state that may not exist, the
        // writer stops: every waiting and later write fails, reads keep the overlay, and a
        // restart resumes from what the disk holds.
        tracing::error!(%error, "a write to the database failed: the stream writer stops; restart the server");
        for (_, _, done) in jobs {
            let _ = done.send(Err(format!("the database write failed: {error}")));
        }
        return false;
    }
    let mut highest = None;
    {
        let mut overlay = pending.lock().expect("pending overlay");
        for (pos, cleanup, _) in &jobs {
            overlay.made_durable(cleanup);
            highest = Some(*pos);
        }
    }
    // Advance the position before acknowledging, so a writer that reads the position right
    // after its write returns sees (at least) its own.
    if let Some(pos) = highest {
        stream.send_replace(pos);
        for user in notifier.group_audience(db, jobs.iter().map(|(_, cleanup, _)| &cleanup.wake)) {
            notifier.wake(&user);
        }
    }
    for (_, _, done) in jobs {
        let _ = done.send(Ok(()));
    }
    true
}

/// Waits until the writer reports a submitted batch durable.
#[tracing::instrument(name = "db.commit", skip_all)]
pub async fn wait_durable(durable: oneshot::Receiver<Result<(), String>>) -> crate::error::Result<()> {
    use crate::error::Error;
    match durable.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(Error::Internal(format!("persisting failed: {e}"))),
        Err(_) => Err(Error::Internal("the stream writer stopped".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::{Audience, Notifier};

    /// A group of queued writes is made durable with one RocksDB write (and one sync), not one
    /// per job; every job's entries are stored, each job is acknowledged, and the stream
    /// position is the group's highest.
    #[test]
    fn a_group_of_writes_is_one_database_write() {
        use crate::db::{codec::Be64, Batch, Database};
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Database::open(dir.path()).expect("database");
        let (stream, position) = tokio::sync::watch::channel(0);
        let (pending, notifier) = (std::sync::Mutex::new(()), Notifier::default());
        let mut group = Vec::new();
        let mut acks = Vec::new();
        for i in 0..20u64 {
            let mut batch = Batch::new();
            let pos = db.next_count(&mut batch);
            db.tables.meta.insert(&mut batch, &format!("job{i}"), &Be64(pos));
            let (done, ack) = tokio::sync::oneshot::channel();
            group.push(super::Job { batch, pos, cleanup: super::Cleanup::default(), done });
            acks.push((i, pos, ack));
        }
        let before = db.writes();
        assert!(super::write_group(&db, group, &pending, &stream, &notifier), "written");
        assert_eq!(db.writes() - before, 1, "twenty jobs, one RocksDB write");
        for (i, pos, mut ack) in acks {
            assert_eq!(ack.try_recv().expect("acknowledged"), Ok(()));
            assert_eq!(db.tables.meta.get(&format!("job{i}")).expect("read"), Some(Be64(pos)), "job {i} stored");
            assert!(*position.borrow() >= pos, "the position covers job {i}");
        }
    }

    /// A group of writes to one room reads the room's members once, not once per write, and
    /// wakes the same users as each write on its own.
    #[tokio::test]
    async fn a_group_reads_each_room_of_its_audience_once() {
        let (_dir, services, [alice, bob, carol], room) = crate::services::testing::three_users_and_a_room().await;
        let db = &services.db;
        let one = Audience::Room(room.clone());
        let before = db.reads();
        let notifier = Notifier::default();
        let alone = notifier.group_audience(db, [&one]);
        let reads_alone = db.reads() - before;
        let writes: Vec<Audience> = (0..20).map(|_| Audience::Room(room.clone())).collect();
        let carols = Audience::User(carol.clone());
        let before = db.reads();
        let grouped = notifier.group_audience(db, writes.iter().chain([&carols]));
        let reads_grouped = db.reads() - before;
        assert_eq!(alone.into_iter().collect::<Vec<_>>(), vec![alice.clone(), bob.clone()]);
        assert_eq!(grouped.into_iter().collect::<Vec<_>>(), vec![alice, bob, carol]);
        assert_eq!(reads_grouped, reads_alone, "twenty writes to the room read its members once");
    }
}
