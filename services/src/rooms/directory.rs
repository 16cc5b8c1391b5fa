//! Room aliases, the public room directory and the user directory.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{events::StateEventType, OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::Value;

use super::{AliasRecord, Rooms};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
};

/// A user directory result: id, display name, avatar URL.
pub type UserHit = (OwnedUserId, Option<String>, Option<String>);

/// A joined member as the user directory searches it: id and display name lowercased once.
#[derive(Debug, Clone)]
pub struct DirectoryEntry {
    pub user: OwnedUserId,
    pub name: Option<String>,
    pub avatar: Option<String>,
    search_key: String,
}

/// A public room as the directory lists it.
#[derive(Debug, Clone)]
pub struct PublicRoom {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub canonical_alias: Option<String>,
    pub avatar_url: Option<String>,
    pub joined_members: u64,
    pub world_readable: bool,
    pub guest_can_join: bool,
    pub join_rule: Option<String>,
    pub room_type: Option<String>,
}

impl Rooms {
    pub fn resolve_alias(&self, alias: &RoomAliasId) -> Result<Option<AliasRecord>> {
        Ok(self.db.tables.rooms.alias_roomid.get(&alias.to_string())?.map(|Json(r)| r))
    }

    /// Creates an alias for a room the user is joined to.
    pub fn create_alias(&self, user: &UserId, alias: &RoomAliasId, room: &RoomId) -> Result<()> {
        if self.resolve_alias(alias)?.is_some() {
            return Err(Error::RoomInUse("this room alias is already taken".into()));
        }
        if !self.exists(room)? {
            return Err(Error::not_found("unknown room"));
        }
        if !self.is_joined(user, room)? {
            return Err(Error::forbidden("you must be in the room to give it an alias"));
        }
        self.set_alias(alias, &room.to_owned(), user)
    }

    /// Deletes an alias: its creator, or anyone who may change the room's canonical alias.
    /// Answers the room it named.
    pub fn delete_alias(&self, user: &UserId, alias: &RoomAliasId) -> Result<ruma::OwnedRoomId> {
        let record = self.resolve_alias(alias)?.ok_or_else(|| Error::not_found("unknown alias"))?;
        let allowed = record.creator == user
            || (self.is_joined(user, &record.room_id)?
                && self.power(&record.room_id)?.can_send(user, "m.room.canonical_alias", true));
        if !allowed {
            return Err(Error::forbidden("only the alias creator or a room moderator can delete it"));
        }
        let mut batch = Batch::new();
        self.db.tables.rooms.alias_roomid.remove(&mut batch, &alias.to_string());
        self.db.commit(batch)?;
        Ok(record.room_id)
    }

    /// After an alias is deleted, the room's `m.room.canonical_alias` stops naming it (as its
    /// `alias` or among `alt_aliases`), sent by the user who deleted it, as Synapse does: clients
    /// and the directory would otherwise show an alias that leads nowhere. When that user may not
    /// change the canonical alias, it stays as it is.
    pub async fn forget_deleted_alias(&self, user: &UserId, room: &RoomId, alias: &RoomAliasId) -> Result<()> {
        let Some(event) = self.state_event(room, &StateEventType::RoomCanonicalAlias, "")? else { return Ok(()) };
        let mut content: serde_json::Value = serde_json::from_str(event.content.get()).unwrap_or_default();
        let mut changed = false;
        if content["alias"].as_str() == Some(alias.as_str()) {
            content.as_object_mut().map(|c| c.remove("alias"));
            changed = true;
        }
        if let Some(alt) = content["alt_aliases"].as_array_mut() {
            let before = alt.len();
            alt.retain(|a| a.as_str() != Some(alias.as_str()));
            changed |= alt.len() != before;
        }
        if !changed {
            return Ok(());
        }
        let event = super::NewEvent::state(StateEventType::RoomCanonicalAlias, "", content);
        match self.append(room, user, event, None).await {
            Ok(_) => Ok(()),
            Err(Error::Forbidden(reason)) => {
                tracing::info!(%room, %alias, %reason, "the canonical alias still names a deleted alias");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The local aliases of a room, for readers of the room.
    pub fn aliases_of(&self, user: &UserId, room: &RoomId) -> Result<Vec<ruma::OwnedRoomAliasId>> {
        self.reader(user, room)?.require_current()?;
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.alias_roomid.iter() {
            let (alias, Json(record)) = entry?;
            if record.room_id == room {
                if let Ok(alias) = RoomAliasId::parse(&alias) {
                    out.push(alias);
                }
            }
        }
        Ok(out)
    }

    /// Points an existing alias at another room (used by upgrades), keeping its creator.
    pub fn move_alias(&self, alias: &RoomAliasId, room: &RoomId) -> Result<()> {
        let _guard = self.alias_lock.lock().expect("alias lock");
        let mut record = self.resolve_alias(alias)?.ok_or_else(|| Error::not_found("unknown alias"))?;
        record.room_id = room.to_owned();
        let mut batch = Batch::new();
        self.db.tables.rooms.alias_roomid.insert(&mut batch, &alias.to_string(), &Json(record));
        self.db.commit(batch)?;
        Ok(())
    }

    pub fn is_published(&self, room: &RoomId) -> Result<bool> {
        Ok(self.db.tables.rooms.roomid_published.contains(&room.to_owned())?)
    }

    pub fn set_published(&self, room: &RoomId, public: bool) -> Result<()> {
        self.set_published_in(room, public, None)
    }

    /// Publishes a room in the server's own listing (`network` `None`) or in a third-party
    /// network's (`<appservice id>|<network id>`, the instance id `/thirdparty/protocols`
    /// gives), kept as the table's value; hiding removes it from whichever it is in.
    pub fn set_published_in(&self, room: &RoomId, public: bool, network: Option<&str>) -> Result<()> {
        let mut batch = Batch::new();
        if public {
            let value = network.map(|n| n.as_bytes().to_vec()).unwrap_or_default();
            self.db.tables.rooms.roomid_published.insert(&mut batch, &room.to_owned(), &value);
        } else {
            self.db.tables.rooms.roomid_published.remove(&mut batch, &room.to_owned());
        }
        self.db.commit(batch)?;
        Ok(())
    }

    /// Publishes or hides a room: for members allowed to change its canonical alias, and for
    /// server admins.
    pub fn set_visibility(&self, user: &UserId, room: &RoomId, public: bool, server_admin: bool) -> Result<()> {
        if !self.exists(room)? {
            return Err(Error::not_found("unknown room"));
        }
        let moderator = || -> Result<bool> {
            Ok(self.is_joined(user, room)? && self.power(room)?.can_send(user, "m.room.canonical_alias", true))
        };
        if !server_admin && !moderator()? {
            return Err(Error::forbidden("only room moderators can change the room's directory visibility"));
        }
        if public {
            self.check_publication(user, room)?;
        }
        self.set_published(room, public)
    }

    fn state_string(&self, room: &RoomId, kind: StateEventType, field: &str) -> Result<Option<String>> {
        Ok(self
            .state_event(room, &kind, "")?
            .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok())
            .and_then(|c| c.get(field).and_then(|v| v.as_str()).map(str::to_owned)))
    }

    pub fn public_room(&self, room: &RoomId) -> Result<PublicRoom> {
        let joined_members = self.members(room)?.iter().filter(|(_, m)| m.membership == "join").count() as u64;
        let history = self.state_string(room, StateEventType::RoomHistoryVisibility, "history_visibility")?;
        let guest = self.state_string(room, StateEventType::RoomGuestAccess, "guest_access")?;
        Ok(PublicRoom {
            room_id: room.to_owned(),
            name: self.state_string(room, StateEventType::RoomName, "name")?,
            topic: self.state_string(room, StateEventType::RoomTopic, "topic")?,
            canonical_alias: self.state_string(room, StateEventType::RoomCanonicalAlias, "alias")?,
            avatar_url: self.state_string(room, StateEventType::RoomAvatar, "url")?,
            joined_members,
            world_readable: history.as_deref() == Some("world_readable"),
            guest_can_join: guest.as_deref() == Some("can_join"),
            join_rule: self.state_string(room, StateEventType::RoomJoinRules, "join_rule")?,
            room_type: self.state_string(room, StateEventType::RoomCreate, "type")?,
        })
    }

    /// The public directory, biggest rooms first, optionally searched; `since` is an offset.
    /// `network`: the server's own listing, one third-party network's, or all of them.
    pub fn public_rooms(
        &self,
        search: Option<&str>,
        since: usize,
        limit: usize,
        network: &ruma::directory::RoomNetwork,
    ) -> Result<(Vec<PublicRoom>, usize)> {
        use ruma::directory::RoomNetwork;
        let needle = search.map(str::to_lowercase);
        let mut rooms = Vec::new();
        for entry in self.db.tables.rooms.roomid_published.iter() {
            let (room, listed_in) = entry?;
            let wanted = match network {
                RoomNetwork::All => true,
                RoomNetwork::ThirdParty(instance) => listed_in == instance.as_bytes(),
                _ => listed_in.is_empty(),
            };
            if !wanted {
                continue;
            }
            let info = self.public_room(&room)?;
            if let Some(needle) = &needle {
                let hay = [&info.name, &info.topic, &info.canonical_alias]
                    .iter()
                    .filter_map(|s| s.as_deref())
                    .map(str::to_lowercase)
                    .collect::<Vec<_>>();
                if !hay.iter().any(|h| h.contains(needle.as_str())) {
                    continue;
                }
            }
            rooms.push(info);
        }
        rooms.sort_by(|a, b| b.joined_members.cmp(&a.joined_members).then_with(|| a.room_id.cmp(&b.room_id)));
        let total = rooms.len();
        Ok((rooms.into_iter().skip(since).take(limit).collect(), total))
    }

    /// A room's joined members for the user directory, parsed once and kept until the room's
    /// membership changes (see [`Rooms::forget_directory_entries`]): a keystroke in the search box
    /// reads no member event.
    fn directory_entries(&self, room: &RoomId) -> Result<std::sync::Arc<Vec<DirectoryEntry>>> {
        if let Some(entries) = self.directory_cache.lock().expect("directory cache").get(room) {
            return Ok(entries.clone());
        }
        let mut entries = Vec::new();
        for (user, content) in self.joined_members(room)? {
            let name = content.get("displayname").and_then(|v| v.as_str()).map(str::to_owned);
            let avatar = content.get("avatar_url").and_then(|v| v.as_str()).map(str::to_owned);
            let search_key =
                format!("{}\n{}", user.as_str().to_lowercase(), name.as_deref().unwrap_or("").to_lowercase());
            entries.push(DirectoryEntry { user, name, avatar, search_key });
        }
        let entries = std::sync::Arc::new(entries);
        self.directory_cache.lock().expect("directory cache").insert(room.to_owned(), entries.clone());
        Ok(entries)
    }

    /// Drops a room's cached directory entries (its membership changed).
    pub(super) fn forget_directory_entries(&self, room: &RoomId) {
        self.directory_cache.lock().expect("directory cache").remove(room);
    }

    /// Users sharing a room with the searcher, and users in public rooms, whose id or display name
    /// contains the term. Returns (user, display name, avatar) and whether the list was cut.
    pub fn search_users(&self, searcher: &UserId, term: &str, limit: usize) -> Result<(Vec<UserHit>, bool)> {
        self.search_users_visible(searcher, term, limit, Vec::new(), |_| Ok(false))
    }

    /// [`Rooms::search_users`] also through the members of `everyones` (the discovery rooms,
    /// whose members every searcher finds, in them or not), leaving out the users `hidden` names
    /// (agents who asked to be hidden, expired accounts), asked only of users who match the term.
    pub fn search_users_visible(
        &self,
        searcher: &UserId,
        term: &str,
        limit: usize,
        everyones: Vec<OwnedRoomId>,
        hidden: impl Fn(&UserId) -> Result<bool>,
    ) -> Result<(Vec<UserHit>, bool)> {
        let term = term.to_lowercase();
        let mut rooms: BTreeSet<OwnedRoomId> = self.rooms_of(searcher, "join")?.into_iter().collect();
        rooms.extend(everyones);
        for entry in self.db.tables.rooms.roomid_published.iter() {
            rooms.insert(entry?.0);
        }
        let mut found: BTreeMap<OwnedUserId, (Option<String>, Option<String>)> = BTreeMap::new();
        for room in rooms {
            for entry in self.directory_entries(&room)?.iter() {
                let matches = entry.search_key.contains(&term);
                if matches && !found.contains_key(&entry.user) && !hidden(&entry.user)? {
                    found.entry(entry.user.clone()).or_insert((entry.name.clone(), entry.avatar.clone()));
                }
            }
        }
        let limited = found.len() > limit;
        Ok((found.into_iter().take(limit).map(|(u, (n, a))| (u, n, a)).collect(), limited))
    }
}
