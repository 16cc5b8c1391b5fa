//! Document libraries as MSC3089 file trees, exactly as matrix-js-sdk (`MSC3089TreeSpace`,
//! `MSC3089Branch`) and matrix-files-sdk read and write them, so a library made by the bot opens
//! in those SDKs and one made by them is read by the bot:
//!
//! - a library (and each folder) is a space room with the state event
//!   `org.matrix.msc3088.purpose` / `org.matrix.msc3089.data_tree` = `{"org.matrix.msc3088.enabled": true}`,
//!   power levels from matrix-js-sdk's tree template (viewer 0, editor 50, owner 100);
//! - folders are sub-spaces: `m.space.child` (with `via`, optional `order`) in the parent,
//!   `m.space.parent` in the folder;
//! - a file is an `m.room.message` (`msgtype: m.file`, `body` = name, `url` or `file`,
//!   `org.matrix.msc3089.leaf: {}`) indexed by an `org.matrix.msc3089.branch` state event keyed
//!   by its event id: `{active, name, version, locked}`; a new version is a file event replacing
//!   the old (`m.relates_to` `m.replace` + `m.new_content`) with its own branch at version + 1,
//!   the old branch set `active: false`; deleting sets the branch to `{}` and redacts the file.
//!
//! Branches also carry the file's SHA-256 and size (`org.hemicycle.sha256`, `org.hemicycle.size`),
//! which the SDKs ignore, so the same content filed twice is found.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::{
    commands::Lang,
    matrix::segment,
    rights::Role,
    service::{hex_sha256, Failure, Workspace},
};

pub const PURPOSE_TYPE: &str = "org.matrix.msc3088.purpose";
pub const TREE_SUBTYPE: &str = "org.matrix.msc3089.data_tree";
pub const ENABLED: &str = "org.matrix.msc3088.enabled";
pub const BRANCH_TYPE: &str = "org.matrix.msc3089.branch";
pub const LEAF: &str = "org.matrix.msc3089.leaf";
/// State in a work room (`state_key` ""): `{"library": room id}`, the library its files go to.
/// The bot records a link only when an editor of the library made it (see [`Workspace::link_library`]).
pub const LINK_TYPE: &str = "org.hemicycle.library";

/// An `org.matrix.msc3089.branch` content; `{}` (a deleted file) does not parse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Branch {
    pub active: bool,
    pub name: String,
    #[serde(default = "first_version")]
    pub version: u32,
    #[serde(default)]
    pub locked: bool,
    #[serde(rename = "org.hemicycle.sha256", default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(rename = "org.hemicycle.size", default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

fn first_version() -> u32 {
    1
}

/// matrix-js-sdk's `DEFAULT_TREE_POWER_LEVELS_TEMPLATE` with the given users.
fn tree_power_levels(users: Value) -> Value {
    json!({
        "invite": 100, "kick": 100, "ban": 100,
        "redact": 50, "state_default": 50, "events_default": 50,
        "users_default": 0,
        "events": {
            "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.tombstone": 100,
            "m.room.encryption": 100, "m.room.name": 50, "m.room.message": 50,
            "m.room.encrypted": 50, "m.sticker": 50
        },
        "users": users,
    })
}

fn io(e: std::io::Error) -> Failure {
    Failure::new(500, "M_UNKNOWN", e.to_string(), e.to_string())
}

/// A locked file gets no new version and does not move.
fn locked(name: &str) -> Failure {
    Failure::new(403, "M_FORBIDDEN", format!("« {name} » est verrouillé"), format!("\"{name}\" is locked"))
}

fn not_found(what: &str) -> Failure {
    Failure::new(404, "M_NOT_FOUND", format!("introuvable : {what}"), format!("not found: {what}"))
}

impl Workspace {
    /// Creates a library (or, with `parent`, a folder in one): a tree space owned by the bot,
    /// `owner` (who asked) given power 100 and invited. A folder needs its asker to be an editor
    /// of `parent`. `encrypted` (asked from an encrypted room, or in an encrypted folder): the
    /// tree is an encrypted room, so the files filed there keep their keys from the servers.
    pub async fn create_tree(
        &self,
        name: &str,
        owner: &str,
        parent: Option<&str>,
        seed: &str,
        encrypted: bool,
    ) -> Result<String, Failure> {
        if let Some(parent) = parent {
            self.tree(parent)?;
            self.require(parent, owner, Role::Editor).await?;
        }
        if let Some(existing) = self.store.read(|s| s.created.get(seed).cloned()) {
            return Ok(existing);
        }
        let name = name.trim();
        if name.is_empty() || name.len() > 255 || name.contains('/') {
            return Err(Failure::bad(
                "nom vide, trop long, ou contenant « / »",
                "the name is empty, too long or has a \"/\"",
            ));
        }
        // From room version 12 the creator's power is implicit and may not be listed.
        let version = self.matrix.default_room_version().await?;
        let v12_or_later = version.parse::<u32>().is_ok_and(|v| v >= 12);
        let mut users = json!({ owner: 100 });
        if !v12_or_later {
            users[&self.matrix.bot] = json!(100);
        }
        let mut initial_state =
            vec![json!({ "type": PURPOSE_TYPE, "state_key": TREE_SUBTYPE, "content": { ENABLED: true } })];
        if encrypted {
            initial_state.push(json!({ "type": "m.room.encryption", "state_key": "", "content": { "algorithm": "m.megolm.v1.aes-sha2" } }));
        }
        let body = json!({
            "name": name,
            "preset": "private_chat",
            "creation_content": { "type": "m.space" },
            "initial_state": initial_state,
            "power_level_content_override": tree_power_levels(users),
            "invite": [owner],
        });
        let created = self.matrix.call(reqwest::Method::POST, "/_matrix/client/v3/createRoom", Some(&body)).await?;
        let room = created["room_id"].as_str().unwrap_or_default().to_owned();
        self.store.update(|s| s.created.insert(seed.to_owned(), room.clone())).map_err(io)?;
        if let Some(parent) = parent {
            let via = json!({ "via": [self.config.server_name] });
            self.write_state(parent, "m.space.child", &room, &via).await?;
            self.matrix.put_state(&room, "m.space.parent", parent, &via).await?;
        }
        self.load_room(&room).await?;
        Ok(room)
    }

    fn tree(&self, room: &str) -> Result<crate::service::RoomView, Failure> {
        self.view(room).filter(|v| v.space && v.tree).ok_or_else(|| {
            Failure::bad(
                format!("{room} n'est pas une bibliothèque de documents que je connais"),
                format!("{room} is not a document library I know"),
            )
        })
    }

    /// Links a work room to a library at `asker`'s request: files posted there are filed in it.
    /// The asker must be an editor of the library and allowed to write the link's state event
    /// in the work room themselves. The link is written to the room, then recorded in the bot's
    /// store (a link the homeserver refused to write is not recorded).
    pub async fn link_library(&self, room: &str, library: &str, asker: &str) -> Result<(), Failure> {
        self.tree(library)?;
        self.require(library, asker, Role::Editor).await?;
        self.require_state_right(room, asker, LINK_TYPE).await?;
        self.record_link(room, library).await
    }

    /// Writes and records a link whose asker was checked (by [`Workspace::link_library`], or
    /// `!doc new`, whose asker owns the library just made and was checked in the work room).
    pub async fn record_link(&self, room: &str, library: &str) -> Result<(), Failure> {
        let content = json!({ "library": library });
        self.matrix.put_state(room, LINK_TYPE, "", &content).await?;
        self.store.update(|s| s.links.insert(room.to_owned(), library.to_owned())).map_err(io)?;
        Ok(())
    }

    /// An `org.hemicycle.library` state event written by `sender` (not the bot) in `room`: the
    /// homeserver let them write it, but the bot records the link only when they are an editor
    /// of that library. An event naming no library removes the link. Returns the library linked.
    pub async fn link_from_state(&self, room: &str, sender: &str, content: &Value) -> Result<Option<String>, Failure> {
        let Some(library) = content["library"].as_str().filter(|l| !l.is_empty()) else {
            self.store.update(|s| s.links.remove(room)).map_err(io)?;
            return Ok(None);
        };
        let verified = async {
            self.tree(library)?;
            self.require(library, sender, Role::Editor).await
        };
        if let Err(failure) = verified.await {
            // A refused link also ends any link the room had: its members now expect no filing there.
            self.store.update(|s| s.links.remove(room)).map_err(io)?;
            return Err(failure);
        }
        self.store.update(|s| s.links.insert(room.to_owned(), library.to_owned())).map_err(io)?;
        Ok(Some(library.to_owned()))
    }

    /// The library `room` is linked to, as the bot verified it.
    pub fn linked_library(&self, room: &str) -> Option<String> {
        self.store.read(|s| s.links.get(room).cloned())
    }

    /// The folder at `path` (`a/b`, by folder names) under `library`.
    pub fn folder(&self, library: &str, path: &str) -> Result<String, Failure> {
        let mut current = library.to_owned();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            let view = self.tree(&current)?;
            current = view
                .children
                .keys()
                .find(|child| self.view(child).is_some_and(|v| v.name == part))
                .cloned()
                .ok_or_else(|| not_found(part))?;
        }
        self.tree(&current)?;
        Ok(current)
    }

    /// The active file named `name` in `folder`: (event id, branch).
    fn active_file(&self, folder: &str, name: &str) -> Option<(String, Branch)> {
        let view = self.view(folder)?;
        view.branches.into_iter().find(|(_, b)| b.active && b.name == name)
    }

    /// Files `content` (an `m.file`-like message content) into `folder` as `name`: a new file,
    /// or a new version of the active file of that name. `seed` (the source event) makes a
    /// resend of the same filing a no-op. Returns the branch and the name of an active file
    /// with the same content, if any. `asker` must be an editor of `folder`.
    pub async fn file(
        &self,
        asker: &str,
        folder: &str,
        name: &str,
        source: &Value,
        seed: &str,
        key_already_public: bool,
    ) -> Result<(Branch, Option<String>), Failure> {
        self.tree(folder)?;
        self.require(folder, asker, Role::Editor).await?;
        self.file_unchecked(folder, name, source, seed, key_already_public).await
    }

    async fn file_unchecked(
        &self,
        folder: &str,
        name: &str,
        source: &Value,
        seed: &str,
        key_already_public: bool,
    ) -> Result<(Branch, Option<String>), Failure> {
        let view = self.tree(folder)?;
        if !view.encrypted && !source["file"].is_null() && !key_already_public {
            return Err(Failure::bad(
                "ce fichier est chiffré et la bibliothèque ne l'est pas : sa clé y serait lisible par les serveurs (créez la bibliothèque depuis un salon chiffré)",
                "this file is encrypted and the library is not: its key would be readable by the servers there (create the library from an encrypted room)",
            ));
        }
        let (sha256, size) = self.digest(source).await;
        let previous = self.active_file(folder, name);
        if previous.as_ref().is_some_and(|(_, branch)| branch.locked) {
            return Err(locked(name));
        }
        let duplicate = sha256.as_ref().and_then(|h| {
            self.view(folder)?
                .branches
                .values()
                .find(|b| b.active && b.sha256.as_ref() == Some(h) && b.name != name)
                .map(|b| b.name.clone())
        });
        let mut file = json!({ "msgtype": "m.file", "body": name });
        for key in ["url", "file", "info"] {
            if !source[key].is_null() {
                file[key] = source[key].clone();
            }
        }
        let mut content = file.clone();
        content[LEAF] = json!({});
        if let Some((old_id, _)) = &previous {
            content["m.new_content"] = file;
            content["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": old_id });
        }
        let txn = format!("file-{}", &hex_sha256(seed)[..24]);
        let event_id = if view.encrypted {
            // The leaf (and an encrypted file's key in it) is read only by the members' devices.
            let device = self.e2ee.get().ok_or_else(|| {
                Failure::bad(
                    "bibliothèque chiffrée, et le chiffrement du robot est désactivé",
                    "an encrypted library, and the bot's encryption is off (encryption = false)",
                )
            })?;
            device.send(folder, &txn, "m.room.message", content).await?
        } else {
            let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}", segment(folder));
            let sent = self.matrix.call(reqwest::Method::PUT, &path, Some(&content)).await?;
            sent["event_id"].as_str().unwrap_or_default().to_owned()
        };
        if let Some(done) = self.view(folder).and_then(|v| v.branches.get(&event_id).cloned()) {
            return Ok((done, duplicate));
        }
        let version = previous.as_ref().map_or(1, |(_, b)| b.version + 1);
        let branch = Branch { active: true, name: name.to_owned(), version, locked: false, sha256, size };
        self.write_branch(folder, &event_id, &serde_json::to_value(&branch).expect("branch serializes")).await?;
        if let Some((old_id, mut old)) = previous {
            old.active = false;
            self.write_branch(folder, &old_id, &serde_json::to_value(&old).expect("branch serializes")).await?;
        }
        Ok((branch, duplicate))
    }

    async fn write_branch(&self, folder: &str, event_id: &str, content: &Value) -> Result<(), Failure> {
        self.write_state(folder, BRANCH_TYPE, event_id, content).await?;
        Ok(())
    }

    /// SHA-256 (hex) and size of a file: downloaded when unencrypted, from the encrypted
    /// file's own `hashes.sha256` otherwise (the ciphertext's, which identifies it as well).
    async fn digest(&self, content: &Value) -> (Option<String>, Option<u64>) {
        let size = content["info"]["size"].as_u64();
        if let Some(hash) = content["file"]["hashes"]["sha256"].as_str() {
            return (Some(hash.to_owned()), size);
        }
        let Some(mxc) = content["url"].as_str().and_then(|u| u.strip_prefix("mxc://")) else { return (None, size) };
        match self.matrix.download_digest(mxc).await {
            Ok((hash, length)) => (Some(hash), Some(length)),
            Err(error) => {
                tracing::warn!(%error, "could not download a file to hash it");
                (None, size)
            }
        }
    }

    /// Deletes the active file `name`: its branch becomes `{}` and its event is redacted.
    /// `asker` must be an editor of `folder`.
    pub async fn remove_file(&self, asker: &str, folder: &str, name: &str, seed: &str) -> Result<(), Failure> {
        self.tree(folder)?;
        self.require(folder, asker, Role::Editor).await?;
        self.remove_unchecked(folder, name, seed).await
    }

    async fn remove_unchecked(&self, folder: &str, name: &str, seed: &str) -> Result<(), Failure> {
        let (id, _) = self.active_file(folder, name).ok_or_else(|| not_found(name))?;
        self.write_branch(folder, &id, &json!({})).await?;
        let path = format!(
            "/_matrix/client/v3/rooms/{}/redact/{}/{}",
            segment(folder),
            segment(&id),
            format_args!("rm-{}", &hex_sha256(seed)[..24])
        );
        self.matrix.call(reqwest::Method::PUT, &path, Some(&json!({ "reason": "deleted from the library" }))).await?;
        Ok(())
    }

    /// Locks or unlocks the active file `name`; `asker` must be an editor of `folder`.
    pub async fn set_locked(&self, asker: &str, folder: &str, name: &str, locked: bool) -> Result<Branch, Failure> {
        self.tree(folder)?;
        self.require(folder, asker, Role::Editor).await?;
        let (id, mut branch) = self.active_file(folder, name).ok_or_else(|| not_found(name))?;
        branch.locked = locked;
        self.write_branch(folder, &id, &serde_json::to_value(&branch).expect("branch serializes")).await?;
        Ok(branch)
    }

    /// Moves the active file `name` to `target`: filed there (same content, its version
    /// history restarting), removed here. `asker` must be an editor of both folders.
    pub async fn move_file(
        &self,
        asker: &str,
        folder: &str,
        name: &str,
        target: &str,
        seed: &str,
    ) -> Result<(), Failure> {
        self.tree(folder)?;
        self.tree(target)?;
        if folder == target {
            // Filed again where it is, then removed: the file would be lost.
            return Err(Failure::bad(
                format!("« {name} » est déjà dans ce dossier"),
                format!("\"{name}\" is already in that folder"),
            ));
        }
        self.require(folder, asker, Role::Editor).await?;
        self.require(target, asker, Role::Editor).await?;
        let (id, branch) = self.active_file(folder, name).ok_or_else(|| not_found(name))?;
        if branch.locked {
            return Err(locked(name));
        }
        let path = format!("/_matrix/client/v3/rooms/{}/event/{}", segment(folder), segment(&id));
        let mut event = self.matrix.call(reqwest::Method::GET, &path, None).await?;
        if event["type"] == "m.room.encrypted" {
            // A leaf of an encrypted folder: read through the bot's device, which holds its key.
            let device = self.e2ee.get().ok_or_else(|| Failure::bad("fichier chiffré", "an encrypted file"))?;
            event = device.event(folder, &id).await?;
        }
        self.file_unchecked(target, name, &event["content"], &format!("mv-{seed}"), false).await?;
        self.remove_unchecked(folder, name, &format!("mv-{seed}")).await
    }

    /// Versions of `name` in `folder`, newest first: (event id, branch), following the branches
    /// of the same name, active or not. `asker` must be joined to `folder`.
    pub async fn history(&self, asker: &str, folder: &str, name: &str) -> Result<Vec<(String, Branch)>, Failure> {
        let view = self.tree(folder)?;
        self.require(folder, asker, Role::Viewer).await?;
        let mut versions: Vec<(String, Branch)> = view.branches.into_iter().filter(|(_, b)| b.name == name).collect();
        if versions.is_empty() {
            return Err(not_found(name));
        }
        versions.sort_by_key(|(_, b)| std::cmp::Reverse(b.version));
        Ok(versions)
    }

    /// The folder's listing as text: folders first (in `order`, then by name), then files.
    /// `asker` must be joined to `folder`.
    pub async fn listing(&self, asker: &str, folder: &str, lang: Lang) -> Result<String, Failure> {
        let view = self.tree(folder)?;
        self.require(folder, asker, Role::Viewer).await?;
        let mut folders: Vec<(Option<String>, String)> = view
            .children
            .iter()
            .map(|(room, order)| (order.clone(), self.view(room).map(|v| v.name).unwrap_or_else(|| room.clone())))
            .collect();
        folders.sort_by(|a, b| match (&a.0, &b.0) {
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a.1.cmp(&b.1),
        });
        let mut lines: Vec<String> = folders.into_iter().map(|(_, name)| format!("📁 {name}/")).collect();
        let mut files: Vec<&Branch> = view.branches.values().filter(|b| b.active).collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        for b in files {
            let lock = if b.locked { lang.pick(" (verrouillé)", " (locked)") } else { "" };
            let size = b.size.map(|s| format!(", {s} o")).unwrap_or_default();
            lines.push(format!("📄 {} — v{}{size}{lock}", b.name, b.version));
        }
        if lines.is_empty() {
            return Ok(lang.pick("Bibliothèque vide.", "Empty library.").to_owned());
        }
        Ok(lines.join("\n"))
    }
}
