//! The appservice's own durable state, small enough for one JSON file: written to a temporary
//! file, fsynced and renamed over the old one, so a crash leaves the old or the new version.
//! What it holds cannot be read back from the rooms: transactions already handled, reminders
//! already sent, direct-message rooms with users, the (hashed) ICS feed tokens, and the verified
//! links of work rooms to libraries.

use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io::Write,
    path::PathBuf,
    sync::Mutex,
};

use serde::{Deserialize, Serialize};

/// Transactions remembered, newest last: the homeserver resends only its latest.
const TXNS_KEPT: usize = 1000;

/// Encrypted events remembered as handled, newest last: a sync replayed after a crash carries
/// only the events of the batches not yet marked done.
const HANDLED_KEPT: usize = 1000;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Persisted {
    #[serde(default)]
    pub txns: VecDeque<String>,
    /// `room|task id|due` of every reminder sent.
    #[serde(default)]
    pub reminded: BTreeSet<String>,
    /// user id → the direct-message room the bot opened with them.
    #[serde(default)]
    pub dm_rooms: BTreeMap<String, String>,
    /// SHA-256 (hex) of a feed token → whose feed of which room.
    #[serde(default)]
    pub feeds: BTreeMap<String, Feed>,
    /// Rooms the bot created (libraries, folders), by the id of the command that asked: a
    /// command handled again finds its room instead of creating a second one.
    #[serde(default)]
    pub created: BTreeMap<String, String>,
    /// Work room → the library its files are filed in. Only links the bot verified (asked or
    /// written by an editor of the library) are recorded; the `org.hemicycle.library` state in
    /// a room is not trusted by itself.
    #[serde(default)]
    pub links: BTreeMap<String, String>,
    /// The bot's device's sync position up to which every encrypted event was handled: after a
    /// crash the device syncs again from here (matrix-sdk's own position moves on before the
    /// events are handled), so an encrypted command received but not answered comes back.
    #[serde(default)]
    pub e2ee_since: Option<String>,
    /// Ids of the encrypted events handled since, so one replayed is not handled twice.
    #[serde(default)]
    pub e2ee_handled: VecDeque<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Feed {
    pub user: String,
    pub room: String,
}

pub struct Store {
    path: PathBuf,
    state: Mutex<Persisted>,
}

impl Store {
    pub fn open(dir: &std::path::Path) -> Result<Store, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let path = dir.join("workspace-state.json");
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Persisted::default(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        Ok(Store { path, state: Mutex::new(state) })
    }

    pub fn read<R>(&self, f: impl FnOnce(&Persisted) -> R) -> R {
        f(&self.state.lock().expect("store"))
    }

    /// Applies `f` and makes the result durable before returning.
    pub fn update<R>(&self, f: impl FnOnce(&mut Persisted) -> R) -> std::io::Result<R> {
        let mut state = self.state.lock().expect("store");
        let mut next = state.clone();
        let out = f(&mut next);
        while next.txns.len() > TXNS_KEPT {
            next.txns.pop_front();
        }
        while next.e2ee_handled.len() > HANDLED_KEPT {
            next.e2ee_handled.pop_front();
        }
        write_atomically(&self.path, &serde_json::to_vec(&next).expect("state serializes"))?;
        *state = next;
        Ok(out)
    }
}

/// Replaces `path` with `bytes`: a temporary file, fsynced, renamed over it, and the folder
/// fsynced, so a crash leaves the old content or the new one.
pub fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
