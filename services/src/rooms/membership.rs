//! Membership changes (join, invite, leave, kick, ban, unban, knock) as `m.room.member` events, and
//! forgetting rooms. The auth rules decide who may do what; these functions add the checks the
//! spec asks of the server before it even builds an event.

use ruma::{events::StateEventType, OwnedEventId, OwnedUserId, RoomId, UserId};
use serde_json::{json, Map, Value};

use super::{NewEvent, Rooms};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
};

impl Rooms {
    /// Display name and avatar for a local user's member events.
    pub fn profile_of(&self, user: &UserId) -> Result<(Option<String>, Option<String>)> {
        let profile = self.profiles.get(user)?;
        let get = |k: &str| profile.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        Ok((get("displayname"), get("avatar_url")))
    }

    fn current_membership(&self, room: &RoomId, user: &UserId) -> Result<Option<String>> {
        Ok(self.membership(user, room)?.map(|m| m.membership))
    }

    /// Joins a local room (remote joins come with federation).
    pub async fn join(&self, room: &RoomId, user: &UserId, reason: Option<String>) -> Result<OwnedEventId> {
        if !self.exists(room)? {
            return Err(Error::not_found("this server does not know the room and cannot join it over federation yet"));
        }
        if let Some(m) = self.membership(user, room)? {
            if m.membership == "join" {
                return Ok(m.event_id);
            }
        }
        let mut extra = Map::new();
        let (displayname, avatar_url) = self.profile_of(user)?;
        if let Some(d) = displayname {
            extra.insert("displayname".into(), json!(d));
        }
        if let Some(a) = avatar_url {
            extra.insert("avatar_url".into(), json!(a));
        }
        if let Some(authoriser) = self.restricted_join_authoriser(room, user)? {
            extra.insert("join_authorised_via_users_server".into(), json!(authoriser));
        }
        self.set_membership(room, user, user, "join", reason, extra).await
    }

    /// For a join to a `restricted` (or `knock_restricted`) room by someone not invited: checks
    /// that they are in one of the rooms the join rules allow, and picks a local member who may
    /// invite to vouch for the join (`join_authorised_via_users_server`), as the auth rules
    /// require. `None` when the room's join rule needs no such thing.
    pub fn restricted_join_authoriser(&self, room: &RoomId, user: &UserId) -> Result<Option<OwnedUserId>> {
        let Some(rules) = self.state_event(room, &StateEventType::RoomJoinRules, "")? else { return Ok(None) };
        let content: Value = serde_json::from_str(rules.content.get()).unwrap_or_default();
        if !matches!(content["join_rule"].as_str(), Some("restricted" | "knock_restricted")) {
            return Ok(None);
        }
        if matches!(self.current_membership(room, user)?.as_deref(), Some("invite" | "join")) {
            return Ok(None);
        }
        let allowed = content["allow"].as_array().into_iter().flatten().any(|entry| {
            entry["type"] == "m.room_membership"
                && entry["room_id"]
                    .as_str()
                    .and_then(|r| RoomId::parse(r).ok())
                    .is_some_and(|r| self.is_joined(user, &r).unwrap_or(false))
        });
        if !allowed {
            return Err(Error::forbidden("joining this room needs membership of a room it allows, or an invite"));
        }
        let power = self.power(room)?;
        let authoriser = self
            .members(room)?
            .into_iter()
            .filter(|(member, m)| m.membership == "join" && self.is_local(member))
            .map(|(member, _)| (power.of_user(&member), member))
            .filter(|(level, _)| *level >= power.invite)
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
            .map(|(_, member)| member);
        authoriser
            .map(Some)
            .ok_or_else(|| Error::forbidden("no member of this server may authorise the join (it needs invite power)"))
    }

    /// A remote join that names one of our users in `join_authorised_via_users_server` gets our
    /// signature, so it is checked again here rather than trusted from `make_join`: the room is
    /// restricted, the joiner is in a room its rules allow (or already invited), and the named
    /// user is ours, joined, and may invite.
    pub fn check_join_authoriser(&self, room: &RoomId, user: &UserId, authoriser: &UserId) -> Result<()> {
        if self.restricted_join_authoriser(room, user)?.is_none()
            && !matches!(self.current_membership(room, user)?.as_deref(), Some("invite" | "join"))
        {
            return Err(Error::forbidden("this room's join rule needs no authorising server"));
        }
        let power = self.power(room)?;
        if !self.is_local(authoriser) || !self.is_joined(authoriser, room)? || power.of_user(authoriser) < power.invite
        {
            return Err(Error::forbidden(format!("{authoriser} may not authorise joins to this room")));
        }
        Ok(())
    }

    /// Sends an `m.room.member` event for `target`, checking the preconditions the spec names.
    pub async fn set_membership(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        reason: Option<String>,
        extra: Map<String, Value>,
    ) -> Result<OwnedEventId> {
        if !self.exists(room)? {
            return Err(Error::forbidden("unknown room"));
        }
        if matches!(membership, "join" | "invite" | "knock") {
            self.check_not_blocked(room)?;
        }
        let current = self.current_membership(room, target)?;
        match membership {
            "invite" => {
                if matches!(current.as_deref(), Some("join")) {
                    return Err(Error::forbidden(format!("{target} is already in the room")));
                }
                if self.is_local(target) && !self.profiles_user_exists(target)? {
                    return Err(Error::not_found(format!("{target} does not exist")));
                }
            }
            "leave" if sender == target && !matches!(current.as_deref(), Some("join" | "invite" | "knock")) => {
                return Err(Error::forbidden("you are not in this room"));
            }
            // Someone else's leave is an unban or a kick: the target must be in the room or banned.
            "leave" if sender != target && matches!(current.as_deref(), None | Some("leave")) => {
                return Err(Error::forbidden(format!("{target} is not in the room")));
            }
            _ => {}
        }
        let mut content = extra;
        content.insert("membership".into(), json!(membership));
        if let Some(reason) = reason {
            content.insert("reason".into(), json!(reason));
        }
        if membership != "join" && sender != target {
            // Carry the target's display name so clients can render "X was kicked".
            if let Some(old) = self.state_event(room, &StateEventType::RoomMember, target.as_str())? {
                let old: Value = serde_json::from_str(old.content.get()).unwrap_or_default();
                if let Some(d) = old.get("displayname") {
                    content.entry("displayname").or_insert(d.clone());
                }
            }
        }
        if membership == "leave" && sender == target {
            self.keep_an_admin(room, sender).await;
        }
        self.append(
            room,
            sender,
            NewEvent::state(StateEventType::RoomMember, target.as_str(), Value::Object(content)),
            None,
        )
        .await
    }

    /// After a profile change: a new `m.room.member` join in every room the user is in, carrying
    /// the new display name and avatar (other fields of their member event kept), so members see
    /// the new name and the user directory finds it. Rooms where nothing changed are skipped.
    pub async fn refresh_profile(&self, user: &UserId) -> Result<()> {
        for room in self.rooms_of(user, "join")? {
            if let Err(error) = self.refresh_profile_in(&room, user).await {
                tracing::warn!(%user, %room, %error, "could not update the member event after a profile change");
            }
        }
        Ok(())
    }

    /// Brings `user`'s member event in one joined room to their current profile. Also called
    /// after a join through another server: the join's content was written before the resident
    /// answered, and a profile change meanwhile skipped the room (not joined yet).
    pub async fn refresh_profile_in(&self, room: &RoomId, user: &UserId) -> Result<()> {
        let (displayname, avatar_url) = self.profile_of(user)?;
        let Some(current) = self.state_event(room, &StateEventType::RoomMember, user.as_str())? else { return Ok(()) };
        let mut content: Map<String, Value> = serde_json::from_str(current.content.get()).unwrap_or_default();
        if content.get("membership").and_then(Value::as_str) != Some("join") {
            return Ok(());
        }
        let same = content.get("displayname").and_then(Value::as_str) == displayname.as_deref()
            && content.get("avatar_url").and_then(Value::as_str) == avatar_url.as_deref();
        if same {
            return Ok(());
        }
        for (key, value) in [("displayname", &displayname), ("avatar_url", &avatar_url)] {
            match value {
                Some(v) => content.insert(key.into(), json!(v)),
                None => content.remove(key),
            };
        }
        content.remove("reason");
        content.remove("join_authorised_via_users_server");
        let event = NewEvent::state(StateEventType::RoomMember, user.as_str(), Value::Object(content));
        self.append(room, user, event, None).await?;
        Ok(())
    }

    /// Unbans: only for banned users (a plain `leave` would be a kick).
    pub async fn unban(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        if self.current_membership(room, target)?.as_deref() != Some("ban") {
            return Err(Error::forbidden(format!("{target} is not banned")));
        }
        self.set_membership(room, sender, target, "leave", reason, Map::new()).await
    }

    /// Kicks: only users who are in the room (joined, invited or knocking).
    pub async fn kick(
        &self,
        room: &RoomId,
        sender: &UserId,
        target: &UserId,
        reason: Option<String>,
    ) -> Result<OwnedEventId> {
        if !matches!(self.current_membership(room, target)?.as_deref(), Some("join" | "invite" | "knock")) {
            return Err(Error::forbidden(format!("{target} is not in the room")));
        }
        self.set_membership(room, sender, target, "leave", reason, Map::new()).await
    }

    /// Forgets a room the user has left: it disappears from their room lists for good.
    pub fn forget(&self, room: &RoomId, user: &UserId) -> Result<()> {
        match self.current_membership(room, user)?.as_deref() {
            Some("join") | Some("invite") | Some("knock") => {
                Err(Error::BadState("leave the room before forgetting it".into()))
            }
            Some(_) => {
                let mut batch = Batch::new();
                self.db.tables.rooms.useridroomid_membership.remove(&mut batch, &(user.to_owned(), room.to_owned()));
                self.db.commit(batch)?;
                Ok(())
            }
            None => Ok(()),
        }
    }

    pub fn is_local(&self, user: &UserId) -> bool {
        user.server_name() == self.server_name
    }

    pub fn profiles_user_exists(&self, user: &UserId) -> Result<bool> {
        Ok(self.db.tables.users.userid_account.get(&user.to_owned())?.is_some_and(|Json(a)| !a.deactivated))
    }
}
