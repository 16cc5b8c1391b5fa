//! The ministry network's rules on the room write path (`crate::network`): every event this
//! server builds, and every event it takes in from another server, is judged against the state
//! before it; new rooms get their rule and power levels; the last admin's leave promotes others.

use std::{collections::HashSet, sync::Arc};

use ruma::{events::StateEventType, RoomId, UserId};
use serde_json::Value;

use super::tables::{InviteNotice, PendingInvite};
use super::{create::CreateRoom, create::Preset, pdu::Pdu, state::StateMap, NewEvent, Rooms};
use crate::{
    db::codec::Json,
    error::{Error, Result},
    network::{
        access_rules::{self, Candidate, Policy, RoomRule, Rule, StateView, ACCESS_RULES},
        last_admin, Network,
    },
};

/// The state before an event, as the rules read it.
struct View<'a> {
    rooms: &'a Rooms,
    state: &'a StateMap,
}

impl View<'_> {
    fn pdu(&self, kind: &str, state_key: &str) -> Option<std::sync::Arc<Pdu>> {
        let short = self.rooms.state.short_key(&StateEventType::from(kind), state_key).ok()??;
        self.rooms.auth_pdu(self.state.get(&short)?)
    }
}

fn content_of(pdu: &Pdu) -> Value {
    serde_json::from_str(pdu.content.get()).unwrap_or(Value::Null)
}

fn non_empty(value: &Value) -> bool {
    value.as_object().is_some_and(|o| !o.is_empty())
}

impl StateView for View<'_> {
    fn event(&self, kind: &str, state_key: &str) -> Option<(String, Value)> {
        self.pdu(kind, state_key).map(|p| (p.sender.to_string(), content_of(&p)))
    }

    fn members_and_tokens(&self) -> (Vec<String>, Vec<String>) {
        let (mut members, mut tokens) = (Vec::new(), Vec::new());
        for (short, id) in self.state {
            let Ok((kind, key)) = self.rooms.state.state_key_of(*short) else { continue };
            let list = match kind.to_string().as_str() {
                "m.room.member" => &mut members,
                "m.room.third_party_invite" => &mut tokens,
                _ => continue,
            };
            if self.rooms.auth_pdu(id).is_some_and(|p| non_empty(&content_of(&p))) {
                list.push(key);
            }
        }
        (members, tokens)
    }
}

impl Rooms {
    /// Gives the room service the network's settings (none by default).
    pub fn with_network(mut self, network: Arc<Network>) -> Self {
        self.network = network;
        self
    }

    pub fn network(&self) -> &Network {
        &self.network
    }

    /// Whether `user` is exempt from the access rules: on the network's bypass list, or an admin
    /// of this server (no server can vouch for another's admins).
    pub fn bypasses_access_rules(&self, user: &str) -> bool {
        if self.network.in_bypass_list(user) {
            return true;
        }
        let Ok(user) = UserId::parse(user) else { return false };
        self.is_local(&user)
            && self.db.tables.users.userid_account.get(&user.to_owned()).ok().flatten().is_some_and(|Json(a)| a.admin)
    }

    /// Judges `pdu` by the room access rules against `state`, the state before it. `Err` names
    /// the rule broken.
    pub(crate) fn check_access_rules(
        &self,
        room: &RoomId,
        pdu: &Pdu,
        state: &StateMap,
    ) -> std::result::Result<(), &'static str> {
        if !self.network.access_rules() || pdu.state_key.is_none() {
            return Ok(());
        }
        let content = content_of(pdu);
        let sender = pdu.sender.to_string();
        let candidate = Candidate {
            kind: &pdu.kind.to_string(),
            state_key: pdu.state_key.as_deref(),
            sender: &sender,
            content: &content,
        };
        let external = |server: &str| self.network.is_external_server(server);
        let bypasses = |user: &str| self.bypasses_access_rules(user);
        let published = || self.is_published(room).unwrap_or(false);
        let policy = Policy { is_external_server: &external, bypasses: &bypasses, is_published: &published };
        access_rules::check(&candidate, &View { rooms: self, state }, &policy)
    }

    /// [`Self::check_access_rules`] for an event this server builds: a refusal is the
    /// reference's `403 M_FORBIDDEN`.
    pub(crate) fn enforce_access_rules(&self, room: &RoomId, pdu: &Pdu, state: &StateMap) -> Result<()> {
        self.check_access_rules(room, pdu, state).map_err(|reason| {
            tracing::info!(%room, sender = %pdu.sender, kind = %pdu.kind, reason, "refused by the room access rules");
            Error::forbidden(access_rules::REFUSED)
        })
    }

    /// The room's access rule now.
    pub fn access_rule(&self, room: &RoomId) -> Result<RoomRule> {
        let content = self.state_event(room, &StateEventType::from(ACCESS_RULES), "")?.map(|p| content_of(&p));
        Ok(RoomRule::from_content(content.as_ref()))
    }

    /// Whether an email address may be invited into `room` (a third-party invite), as Tchap's
    /// module decides: only emails; in a restricted room, only addresses the domain map sends to
    /// a node that is not external. Refused with the reference's `403 M_FORBIDDEN`.
    pub fn check_threepid_invite(&self, sender: &UserId, room: &RoomId, medium: &str, address: &str) -> Result<()> {
        if !self.network.access_rules() || self.bypasses_access_rules(sender.as_str()) {
            return Ok(());
        }
        let refuse = || Err(Error::forbidden("This third-party identifier can not be invited in this room"));
        if medium != "email" {
            return refuse();
        }
        if self.access_rule(room)?.rule != Rule::Restricted {
            return Ok(());
        }
        let plain = address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && !domain.is_empty()
                && !address.chars().any(|c| c.is_whitespace() || "<>,;\"()".contains(c))
        });
        if !plain {
            return refuse();
        }
        match self.network.server_of_address(address)? {
            Some(server) if !self.network.is_external_server(&server) => Ok(()),
            _ => refuse(),
        }
    }

    /// Whether the room may be listed in the public directory: restricted rooms only, and never
    /// by the externals' users.
    pub fn check_publication(&self, user: &UserId, room: &RoomId) -> Result<()> {
        if !self.network.access_rules() || self.bypasses_access_rules(user.as_str()) {
            return Ok(());
        }
        if self.network.is_external_user(user) || !self.access_rule(room)?.may_be_published() {
            return Err(Error::Refused("Not allowed to publish room".into()));
        }
        Ok(())
    }

    /// Shapes a `createRoom` request as the network wants it, before anything is written: the
    /// access rule in its initial state (checked against `is_direct`), the network's power
    /// levels (a creator's own checked), a history visibility; refuses what the reference refuses,
    /// with its messages.
    pub(crate) fn prepare_network_room(
        &self,
        sender: &UserId,
        request: &mut CreateRoom,
        privileged_creators: bool,
    ) -> Result<()> {
        if !self.network.may_create_rooms(sender) {
            return Err(Error::forbidden("You are not permitted to create rooms"));
        }
        if !self.network.access_rules() || self.bypasses_access_rules(sender.as_str()) {
            return Ok(());
        }
        let invalid_rule = || Error::BadState("Invalid access rule".into());
        let given = request.initial_state.iter().find(|(kind, key, _)| kind == ACCESS_RULES && key.is_empty());
        let rule = match given {
            Some((_, _, content)) => {
                let rule =
                    content.get("rule").and_then(Value::as_str).and_then(Rule::parse).ok_or_else(invalid_rule)?;
                if request.is_direct != (rule == Rule::Direct) {
                    return Err(invalid_rule());
                }
                rule
            }
            None => {
                let rule = if request.is_direct { Rule::Direct } else { Rule::Restricted };
                request.initial_state.push((
                    ACCESS_RULES.into(),
                    String::new(),
                    serde_json::json!({ "rule": rule.as_str() }),
                ));
                rule
            }
        };
        let initial_join_rule = request
            .initial_state
            .iter()
            .find(|(kind, key, _)| kind == "m.room.join_rules" && key.is_empty())
            .and_then(|(_, _, c)| c.get("join_rule").and_then(Value::as_str).map(str::to_owned));
        let public = initial_join_rule.as_deref() == Some("public")
            || request.preset == Some(Preset::PublicChat)
            || (request.preset.is_none() && request.public);
        if public && rule == Rule::Direct {
            return Err(invalid_rule());
        }
        if request.public && rule != Rule::Restricted {
            return Err(Error::Refused("Room visibility value not allowed.".into()));
        }
        // Room version 12 creators are above every level and must not be listed.
        let mut defaults = access_rules::default_power_levels((!privileged_creators).then_some(sender.as_str()));
        if request.preset == Some(Preset::TrustedPrivateChat) && !privileged_creators {
            for invitee in &request.invite {
                defaults["users"][invitee.as_str()] = 100.into();
            }
        }
        let external = |server: &str| self.network.is_external_server(server);
        let never = |_: &str| false;
        let unpublished = || false;
        let policy = Policy { is_external_server: &external, bypasses: &never, is_published: &unpublished };
        if let Some(overrides) = &request.power_level_override {
            if !access_rules::creation_power_levels_allowed(&Value::Object(overrides.clone()), rule, &policy) {
                return Err(Error::BadState("Invalid power levels content override".into()));
            }
        }
        if let Some((_, _, content)) =
            request.initial_state.iter_mut().find(|(kind, key, _)| kind == "m.room.power_levels" && key.is_empty())
        {
            if !access_rules::creation_power_levels_allowed(content, rule, &policy) {
                return Err(Error::BadState("Invalid power levels content".into()));
            }
            if let Some(content) = content.as_object_mut() {
                access_rules::fill_missing(content, &defaults);
            }
        }
        if privileged_creators {
            let mut additional: Vec<String> = request
                .creation_content
                .get("additional_creators")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            if request.preset == Some(Preset::TrustedPrivateChat) {
                additional.extend(request.invite.iter().map(|u| u.to_string()));
            }
            let creators = std::iter::once(sender.as_str()).chain(additional.iter().map(String::as_str));
            if !access_rules::creators_allowed(creators, rule, &policy) {
                return Err(invalid_rule());
            }
        }
        let mut power = request.power_level_override.take().unwrap_or_default();
        access_rules::fill_missing(&mut power, &defaults);
        request.power_level_override = Some(power);
        let has_visibility =
            request.initial_state.iter().any(|(kind, key, _)| kind == "m.room.history_visibility" && key.is_empty());
        if !has_visibility {
            let visibility = if public { "shared" } else { "invited" };
            request.initial_state.push((
                "m.room.history_visibility".into(),
                String::new(),
                serde_json::json!({ "history_visibility": visibility }),
            ));
        }
        Ok(())
    }

    /// Before a local user leaves `room`: when they are its last admin, others are promoted first
    /// (by them, while they still may), so that no room is left without an admin. A promotion
    /// that fails is logged; the leave goes on.
    pub(crate) async fn keep_an_admin(&self, room: &RoomId, leaver: &UserId) {
        if !self.network.access_rules() {
            return;
        }
        match self.promotion_before_leave(room, leaver) {
            Ok(Some(content)) => {
                let event = NewEvent::state(StateEventType::RoomPowerLevels, "", content);
                match self.append(room, leaver, event, None).await {
                    Ok(_) => tracing::info!(%room, %leaver, "the last admin leaves: others promoted"),
                    Err(e) => {
                        tracing::warn!(%room, %leaver, error = %e, "the last admin leaves; promoting others failed")
                    }
                }
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%room, %leaver, error = %e, "the last admin check failed"),
        }
    }

    fn promotion_before_leave(&self, room: &RoomId, leaver: &UserId) -> Result<Option<Value>> {
        let external = |user: &str| UserId::parse(user).is_ok_and(|u| self.network.is_external_user(&u));
        self.with_admin_view(room, |view| last_admin::before_leave(leaver.as_str(), view, &external))
    }

    /// A local user's new power levels (`content`), under the room lock: when they make the
    /// room's last admin (the sender) no longer one, the content gets the promotion a leave would
    /// have made, so that no room is left without an admin (docs/network.md).
    pub(crate) fn keep_an_admin_on_demotion(&self, room: &RoomId, sender: &UserId, content: &mut Value) {
        if !self.network.access_rules() {
            return;
        }
        let external = |user: &str| UserId::parse(user).is_ok_and(|u| self.network.is_external_user(&u));
        match self.with_admin_view(room, |view| last_admin::on_power_levels(sender.as_str(), view, content, &external))
        {
            Ok(Some(promoted)) => {
                tracing::info!(%room, %sender, "the last admin demotes themselves: others promoted with it");
                *content = promoted;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(%room, %sender, error = %e, "the last admin check failed"),
        }
    }

    /// Runs `decide` on what the last-admin rules read of the room now.
    fn with_admin_view<T>(
        &self,
        room: &RoomId,
        decide: impl FnOnce(&last_admin::Room<'_>) -> Option<T>,
    ) -> Result<Option<T>> {
        let Some(power) = self.state_event(room, &StateEventType::RoomPowerLevels, "")? else {
            return Ok(None);
        };
        let power = content_of(&power);
        let mut creators = Vec::new();
        let privileged = self
            .room(room)?
            .and_then(|r| r.version.rules())
            .is_some_and(|r| r.authorization.explicitly_privilege_room_creators);
        if privileged {
            if let Some(create) = self.state_event(room, &StateEventType::RoomCreate, "")? {
                creators.push(create.sender.to_string());
                let content = content_of(&create);
                if let Some(more) = content.get("additional_creators").and_then(Value::as_array) {
                    creators.extend(more.iter().filter_map(Value::as_str).map(str::to_owned));
                }
            }
        }
        let mut present = HashSet::new();
        let mut joined = HashSet::new();
        for (user, record) in self.members(room)? {
            match record.membership.as_str() {
                "join" => {
                    joined.insert(user.to_string());
                    present.insert(user.to_string());
                }
                "invite" => {
                    present.insert(user.to_string());
                }
                _ => {}
            }
        }
        let rules = self.state_event(room, &StateEventType::from(ACCESS_RULES), "")?.map(|p| content_of(&p));
        let view = last_admin::Room {
            power_levels: &power,
            creators: &creators,
            present: &present,
            joined: &joined,
            access_rules: rules.as_ref(),
        };
        Ok(decide(&view))
    }
}

/// The signing entity and key id of an invite's own key, in `signed.signatures`.
const INVITE_KEY_VERSION: &str = "0";

fn base64_unpadded(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(bytes)
}

/// What the room shows of an invited address: its first letters and its domain, as identity
/// services show it (the room's members do not all get to read the address).
fn redacted_address(address: &str) -> String {
    let (local, domain) = address.split_once('@').unwrap_or((address, ""));
    let shown: String = local.chars().take(3).collect();
    format!("{shown}…@{domain}")
}

impl Rooms {
    /// Invites an email address into `room` (a third-party invite), this node acting as the
    /// network's identity service for it: an `m.room.third_party_invite` event (state key: a
    /// new token; content: the redacted address and the invite's public key) judged by the rules
    /// like any event (a direct chat takes one), the invite kept until the address is bound to
    /// an account, here ([`Self::exchange_threepid_invites`]) or on the node the domain map sends
    /// it to (which `federation::threepid` tells). Refusals of the address itself are
    /// [`Self::check_threepid_invite`]'s, asked first.
    pub async fn invite_by_email(&self, sender: &UserId, room: &RoomId, address: &str) -> Result<()> {
        let address = crate::users::threepid::canonical_email(address)?;
        let token = crate::users::random_password();
        let document = ruma::signatures::Ed25519KeyPair::generate();
        let pair = ruma::signatures::Ed25519KeyPair::from_der(&document, INVITE_KEY_VERSION.to_owned())
            .map_err(|e| Error::Internal(format!("generated key unreadable: {e}")))?;
        let public_key = base64_unpadded(&pair.public_key());
        let validity = format!("https://{}/_matrix/identity/v2/pubkey/ephemeral/isvalid", self.server_name);
        let display_name = redacted_address(&address);
        let content = serde_json::json!({
            "display_name": display_name,
            "key_validity_url": validity,
            "public_key": public_key,
            "public_keys": [{ "public_key": public_key, "key_validity_url": validity }],
        });
        let record = PendingInvite {
            room: room.to_owned(),
            sender: sender.to_owned(),
            display_name,
            key: document.to_vec(),
            public_key: public_key.clone(),
            created_ts: crate::time::now_ms(),
        };
        // Kept before the event exists: whoever reads the event (the notice to the address's
        // node, an exchange, a key check) finds the invite.
        let tables = &self.db.tables.rooms;
        let mut batch = crate::db::Batch::new();
        tables.addresstoken_threepidinvite.insert(&mut batch, &(address.clone(), token.clone()), &Json(record));
        tables.token_threepidinvite.insert(&mut batch, &token, &address);
        tables.publickey_threepidinvite.insert(&mut batch, &public_key, &token);
        self.db.commit(batch)?;
        let event = NewEvent::state(StateEventType::RoomThirdPartyInvite, token.clone(), content);
        if let Err(e) = self.append(room, sender, event, None).await {
            self.forget_invite(&address, &token)?;
            return Err(e);
        }
        Ok(())
    }

    /// Whether a kept invite still stands: not expired, and its event still in the room's state
    /// with a content (emptying or redacting the event revokes the invite, as the spec has it).
    fn invite_stands(&self, token: &str, invite: &PendingInvite) -> bool {
        if crate::time::now_ms() >= invite.created_ts.saturating_add(self.network.invite_lifetime_ms()) {
            return false;
        }
        self.state_event(&invite.room, &StateEventType::RoomThirdPartyInvite, token)
            .ok()
            .flatten()
            .is_some_and(|pdu| non_empty(&content_of(&pdu)))
    }

    /// Every invite kept for `address`, standing or not: (token, invite, whether it stands).
    fn all_kept_invites(&self, address: &str) -> Result<Vec<(String, PendingInvite, bool)>> {
        let Ok(address) = crate::users::threepid::canonical_email(address) else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.addresstoken_threepidinvite.scan_prefix(crate::db::codec::prefix(&address)) {
            let ((_, token), Json(invite)) = entry?;
            let stands = self.invite_stands(&token, &invite);
            out.push((token, invite, stands));
        }
        Ok(out)
    }

    /// The invites kept for `address` that still stand: (token, invite).
    pub fn kept_invites(&self, address: &str) -> Result<Vec<(String, PendingInvite)>> {
        Ok(self
            .all_kept_invites(address)?
            .into_iter()
            .filter(|(_, _, stands)| *stands)
            .map(|(t, i, _)| (t, i))
            .collect())
    }

    /// The invite kept under `token`, with its address, whether it stands or not.
    pub fn kept_invite(&self, token: &str) -> Result<Option<(String, PendingInvite)>> {
        let Some(address) = self.db.tables.rooms.token_threepidinvite.get(&token.to_owned())? else { return Ok(None) };
        let key = (address.clone(), token.to_owned());
        Ok(self.db.tables.rooms.addresstoken_threepidinvite.get(&key)?.map(|Json(invite)| (address, invite)))
    }

    /// Drops a kept invite (taken up, revoked, or never sent).
    pub fn forget_invite(&self, address: &str, token: &str) -> Result<()> {
        let tables = &self.db.tables.rooms;
        let key = (address.to_owned(), token.to_owned());
        let mut batch = crate::db::Batch::new();
        if let Some(Json(invite)) = tables.addresstoken_threepidinvite.get(&key)? {
            tables.publickey_threepidinvite.remove(&mut batch, &invite.public_key);
        }
        tables.addresstoken_threepidinvite.remove(&mut batch, &key);
        tables.token_threepidinvite.remove(&mut batch, &token.to_owned());
        Ok(self.db.commit(batch)?)
    }

    /// Whether `address` is invited, as the identity `info` answers and the binding check ask:
    /// a standing invite kept here, or one another node of the network told us of.
    pub fn has_pending_invite(&self, address: &str) -> Result<bool> {
        Ok(!self.kept_invites(address)?.is_empty() || !self.invite_notices(address)?.is_empty())
    }

    /// Whether `public_key` is the key of an invite kept here that still stands: what the
    /// `key_validity_url` of our invites answers.
    pub fn invite_key_is_valid(&self, public_key: &str) -> Result<bool> {
        let Some(token) = self.db.tables.rooms.publickey_threepidinvite.get(&public_key.to_owned())? else {
            return Ok(false);
        };
        Ok(self
            .kept_invite(&token)?
            .is_some_and(|(_, invite)| invite.public_key == public_key && self.invite_stands(&token, &invite)))
    }

    /// The `signed` block of a kept invite for `user`: `{mxid, sender, token}` signed by the
    /// invite's own key, which the auth rules check against the key in the room.
    pub fn sign_invite(&self, token: &str, invite: &PendingInvite, user: &UserId) -> Result<ruma::CanonicalJsonObject> {
        let pair = ruma::signatures::Ed25519KeyPair::from_der(&invite.key, INVITE_KEY_VERSION.to_owned())
            .map_err(|e| Error::Internal(format!("invite key unreadable: {e}")))?;
        let mut signed = ruma::CanonicalJsonObject::new();
        signed.insert("mxid".into(), ruma::CanonicalJsonValue::String(user.to_string()));
        signed.insert("sender".into(), ruma::CanonicalJsonValue::String(invite.sender.to_string()));
        signed.insert("token".into(), ruma::CanonicalJsonValue::String(token.to_owned()));
        ruma::signatures::sign_json(self.server_name.as_str(), &pair, &mut signed)
            .map_err(|e| Error::Internal(format!("signing a third-party invite: {e}")))?;
        Ok(signed)
    }

    /// Once `address` is bound to `user`, an account of this node: each standing third-party
    /// invite of it kept here becomes a member invite of `user`, sent as its inviter with the
    /// invite's signed token (which the auth rules check against the key in the room, and the
    /// direct-chat rule against its one pending token). An invite that cannot be made (the
    /// inviter left, the rules refuse) is logged and dropped: its room no longer wants it; so are
    /// expired and revoked ones.
    pub async fn exchange_threepid_invites(&self, address: &str, user: &UserId) -> Result<()> {
        let address = crate::users::threepid::canonical_email(address)?;
        for (token, invite, stands) in self.all_kept_invites(&address)? {
            if stands {
                match self.exchange_one(&token, &invite, user).await {
                    Ok(()) => tracing::info!(room = %invite.room, %user, "third-party invite taken up"),
                    Err(e) => {
                        tracing::warn!(room = %invite.room, %user, error = %e, "a third-party invite could not be taken up")
                    }
                }
            }
            self.forget_invite(&address, &token)?;
        }
        Ok(())
    }

    async fn exchange_one(&self, token: &str, invite: &PendingInvite, user: &UserId) -> Result<()> {
        let signed = self.sign_invite(token, invite, user)?;
        let content = serde_json::json!({
            "membership": "invite",
            "third_party_invite": { "display_name": invite.display_name, "signed": signed },
        });
        self.append(
            &invite.room,
            &invite.sender,
            NewEvent::state(StateEventType::RoomMember, user.as_str(), content),
            None,
        )
        .await
        .map(drop)
    }

    /// Keeps what another node of the network told us: `address` (whose home is this node) was
    /// invited under `token`. At most [`MAX_NOTICES_PER_ADDRESS`] per address (a node may be
    /// hostile); `false` when refused for that.
    pub fn record_invite_notice(&self, address: &str, token: &str, notice: &InviteNotice) -> Result<bool> {
        let address = crate::users::threepid::canonical_email(address)?;
        let table = &self.db.tables.rooms.addresstoken_invitenotice;
        let key = (address.clone(), token.to_owned());
        if table.get(&key)?.is_none()
            && table.scan_prefix(crate::db::codec::prefix(&address)).count() >= MAX_NOTICES_PER_ADDRESS
        {
            return Ok(false);
        }
        let mut batch = crate::db::Batch::new();
        table.insert(&mut batch, &key, &Json(notice.clone()));
        self.db.commit(batch)?;
        Ok(true)
    }

    /// The unexpired invites other nodes told us of for `address`: (token, notice).
    pub fn invite_notices(&self, address: &str) -> Result<Vec<(String, InviteNotice)>> {
        let Ok(address) = crate::users::threepid::canonical_email(address) else { return Ok(Vec::new()) };
        let now = crate::time::now_ms();
        let mut out = Vec::new();
        for entry in self.db.tables.rooms.addresstoken_invitenotice.scan_prefix(crate::db::codec::prefix(&address)) {
            let ((_, token), Json(notice)) = entry?;
            if notice.expires_ts > now {
                out.push((token, notice));
            }
        }
        Ok(out)
    }

    /// Drops a notice (taken up, revoked).
    pub fn forget_invite_notice(&self, address: &str, token: &str) -> Result<()> {
        let Ok(address) = crate::users::threepid::canonical_email(address) else { return Ok(()) };
        let mut batch = crate::db::Batch::new();
        self.db.tables.rooms.addresstoken_invitenotice.remove(&mut batch, &(address, token.to_owned()));
        Ok(self.db.commit(batch)?)
    }
}

/// How many pending invites of one address another node may tell us of.
const MAX_NOTICES_PER_ADDRESS: usize = 50;
