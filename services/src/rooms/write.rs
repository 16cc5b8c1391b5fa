//! The one write path of events: a local user's event is checked (size, suspension, what the
//! event means), built on the room's forward extremities with its auth events, checked against
//! the room version's authorization rules, then persisted with a stream position and the state
//! after it in one batch; the stream is notified once the batch is durable.

use std::sync::Arc;

use ruma::{
    canonical_json::{redact, RedactedBecause},
    events::{StateEventType, TimelineEventType},
    room_version_rules::{EventIdFormatVersion, EventsReferenceFormatVersion},
    signatures::reference_hash,
    CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId, RoomId, RoomVersionId, UserId,
};
use tokio::sync::oneshot;

use super::{
    canonical, check_size_limits, pdu, pdu::Pdu, rel_type, relates_to, rules_of, state, visibility, AuthInputs,
    EventMeta, Links, MembershipRecord, NewEvent, Plan, Resolved, RoomRecord, Rooms, TxnKey, AUTH_OUTCOMES,
    MAX_PDU_BYTES, SIGNATURE_ROOM,
};
use crate::{
    db::codec::{Be64, Json},
    error::{Error, Result},
    stream::{wait_durable, Audience, Cleanup},
    time::now_ms,
};

impl Rooms {
    /// A suspended local account may leave rooms and redact, nothing else (`None`: creating a room).
    pub(super) fn check_not_suspended(&self, sender: &UserId, event: Option<&NewEvent>) -> Result<()> {
        if !self.is_local(sender) {
            return Ok(());
        }
        let accounts = &self.db.tables.users.userid_account;
        let suspended = self.recent_suspended.get_or_read(sender, accounts.generation(), || {
            Ok::<_, Error>(accounts.get(&sender.to_owned())?.is_some_and(|Json(a)| a.suspended))
        })?;
        if !suspended {
            return Ok(());
        }
        let allowed = event.is_some_and(|e| {
            e.kind == TimelineEventType::RoomRedaction
                || (e.kind == TimelineEventType::RoomMember
                    && e.state_key.as_deref() == Some(sender.as_str())
                    && e.content["membership"] == "leave")
        });
        if allowed {
            Ok(())
        } else {
            Err(Error::UserSuspended)
        }
    }

    /// Creates a room with its `m.room.create` event and returns its id.
    pub async fn create(
        &self,
        sender: &UserId,
        version: RoomVersionId,
        mut content: serde_json::Map<String, serde_json::Value>,
    ) -> Result<OwnedRoomId> {
        let rules = rules_of(&version)?;
        self.check_not_suspended(sender, None)?;
        content.insert("room_version".into(), version.as_str().into());
        if !rules.authorization.use_room_create_sender {
            content.insert("creator".into(), sender.as_str().into());
        }
        let event = NewEvent::state(StateEventType::RoomCreate, "", serde_json::Value::Object(content));
        // Room version 12 derives the room id from the create event: two identical create
        // events from one user in one millisecond would name one room. A collision waits for the
        // clock to move (a new `origin_server_ts`, so a new id) and tries again.
        for _ in 0..100 {
            let room_id: Option<OwnedRoomId> = if rules.authorization.room_create_event_id_as_room_id {
                None
            } else {
                let local = crate::users::random_password();
                Some(
                    OwnedRoomId::try_from(format!("!{local}:{}", self.server_name))
                        .map_err(|e| Error::Internal(e.to_string()))?,
                )
            };
            let (event_id, _, json) = self.build(
                &rules,
                room_id.as_deref(),
                sender,
                &event,
                Links { prev_events: &[], auth_events: &[], depth: 1 },
                false,
            )?;
            let room_id = match room_id {
                Some(id) => id,
                None => OwnedRoomId::try_from(format!("!{}", &event_id.as_str()[1..]))
                    .map_err(|e| Error::Internal(e.to_string()))?,
            };
            let lock = self.lock(&room_id);
            let guard = lock.lock().await;
            if self.exists(&room_id)? {
                drop(guard);
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                continue;
            }
            let durable = self.check_and_persist(&room_id, None, version, event_id, json, None)?;
            drop(guard);
            wait_durable(durable).await?;
            return Ok(room_id);
        }
        Err(Error::Internal("no free room id after 100 tries".into()))
    }

    /// Appends a local event to a room: the single write path.
    #[tracing::instrument(name = "rooms.append", skip_all, fields(room = %room, kind = %event.kind))]
    pub async fn append(
        &self,
        room: &RoomId,
        sender: &UserId,
        mut event: NewEvent,
        txn: Option<TxnKey>,
    ) -> Result<OwnedEventId> {
        let lock = self.lock(room);
        let guard = lock.lock().await;
        if let Some(txn) = &txn {
            if let Some(existing) = self.txn_event(txn)? {
                return Ok(existing);
            }
        }
        if event.kind == TimelineEventType::RoomPowerLevels && event.state_key.as_deref() == Some("") {
            self.keep_an_admin_on_demotion(room, sender, &mut event.content);
        }
        let record = self.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let rules = rules_of(&record.version)?;
        check_size_limits(&event)?;
        self.check_not_suspended(sender, Some(&event))?;
        self.check_event_semantics(room, sender, &event)?;
        let auth_events = self.auth_events_for(&record, &rules, sender, &event)?;
        let sign = self.leaves_at_once(room, record.snapshot, &event)?;
        let (event_id, _, json) = self.build(
            &rules,
            Some(room),
            sender,
            &event,
            Links { prev_events: &record.extremities, auth_events: &auth_events, depth: pdu::next_depth(record.depth) },
            sign,
        )?;
        let version = record.version.clone();
        let durable = self.check_and_persist(room, Some(record), version, event_id.clone(), json, txn)?;
        // The next event of this room may be built now; this one is acknowledged once durable.
        drop(guard);
        wait_durable(durable).await?;
        if event.kind == TimelineEventType::RoomMember {
            self.forget_directory_entries(room);
        }
        Ok(event_id)
    }

    /// The auth events a new event by `sender` needs, from the room's current state.
    pub(super) fn auth_events_for(
        &self,
        record: &RoomRecord,
        rules: &ruma::room_version_rules::RoomVersionRules,
        sender: &UserId,
        event: &NewEvent,
    ) -> Result<Vec<OwnedEventId>> {
        let state = self.state.load(record.snapshot)?;
        let content_raw = serde_json::value::to_raw_value(&event.content).map_err(|e| Error::BadJson(e.to_string()))?;
        let auth_types = ruma::state_res::auth_types_for_event(
            &event.kind,
            sender,
            event.state_key.as_deref(),
            &content_raw,
            &rules.authorization,
        )
        .map_err(Error::BadJson)?;
        let mut auth_events = Vec::new();
        for (kind, key) in auth_types {
            if let Some(short) = self.state.short_key(&kind, &key)? {
                if let Some(id) = state.get(&short) {
                    if !auth_events.contains(id) {
                        auth_events.push(id.clone());
                    }
                }
            }
        }
        Ok(auth_events)
    }

    /// An unsigned event template for a remote server's user (`make_join`, `make_leave`,
    /// `make_knock`): linked to the room's current extremities and state, checked against the auth
    /// rules as if it were sent now, so a template we hand out would be accepted back.
    pub async fn template(
        &self,
        room: &RoomId,
        sender: &UserId,
        event: NewEvent,
    ) -> Result<(RoomVersionId, CanonicalJsonObject)> {
        let lock = self.lock(room);
        let _guard = lock.lock().await;
        let record = self.room(room)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let rules = rules_of(&record.version)?;
        let auth_events = self.auth_events_for(&record, &rules, sender, &event)?;
        let (object, _, _) = self.assemble(
            &rules,
            Some(room),
            sender,
            &event,
            Links { prev_events: &record.extremities, auth_events: &auth_events, depth: pdu::next_depth(record.depth) },
        )?;
        let json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        let placeholder = OwnedEventId::try_from("$template").map_err(|e| Error::Internal(e.to_string()))?;
        let pdu = Pdu::from_json(placeholder, &json).map_err(|e| Error::Internal(e.to_string()))?;
        let state = self.state.load(record.snapshot)?;
        self.check_auth(&rules, &pdu, Some(&state)).map_err(Error::Forbidden)?;
        self.enforce_access_rules(room, &pdu, &state)?;
        Ok((record.version, object))
    }

    /// Checks the server makes beyond the auth rules: a redaction needs the redacted event's sender
    /// or the power to redact; a canonical alias must point at this room.
    pub(super) fn check_event_semantics(&self, room: &RoomId, sender: &UserId, event: &NewEvent) -> Result<()> {
        if event.kind == TimelineEventType::RoomRedaction {
            let target = event
                .redacts
                .clone()
                .or_else(|| {
                    event.content.get("redacts").and_then(|r| r.as_str()).and_then(|r| OwnedEventId::try_from(r).ok())
                })
                .ok_or_else(|| Error::BadJson("a redaction names the event it redacts".into()))?;
            let original = self.pdu(&target)?.filter(|p| {
                p.room_id.as_deref() == Some(room)
                    || self.meta(&target).ok().flatten().is_some_and(|m| m.room_id == room)
            });
            let original = original.ok_or_else(|| Error::not_found("the event to redact is not in this room"))?;
            let power = self.power(room)?;
            if original.sender != sender && power.of_user(sender) < power.redact {
                return Err(Error::forbidden("you may only redact your own events"));
            }
        }
        if event.kind.to_string() == "m.room.canonical_alias" && event.state_key.as_deref() == Some("") {
            let alias = event.content.get("alias").and_then(|a| a.as_str());
            let alt = event.content.get("alt_aliases").and_then(|a| a.as_array()).cloned().unwrap_or_default();
            for name in alias.into_iter().chain(alt.iter().filter_map(|a| a.as_str())) {
                let alias = ruma::RoomAliasId::parse(name)
                    .map_err(|e| Error::invalid_param(format!("invalid alias {name}: {e}")))?;
                if self.resolve_alias(&alias)?.is_none_or(|r| r.room_id != room) {
                    return Err(Error::BadAlias(format!("{name} does not point to this room")));
                }
            }
        }
        Ok(())
    }

    /// Builds and hashes a PDU, and signs it when `sign` says; returns its event id (the
    /// reference hash), its JSON object and that object serialized (what is stored: serialized
    /// once, here).
    ///
    /// Neither the event id nor anything the server decides on depends on the signature, which
    /// only another server reads: an event of a room no other server is in is stored unsigned
    /// (an ed25519 signature is a seventh of what a message costs to send, and its hundred
    /// bytes an eighth of what the message weighs on disk), and signed when it first leaves —
    /// [`Rooms::pdu_json_for_peers`], the one way out of the store for another server. A
    /// signature is deterministic, so an event signed later is the event signed now.
    pub(super) fn build(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: Option<&RoomId>,
        sender: &UserId,
        event: &NewEvent,
        links: Links<'_>,
        sign: bool,
    ) -> Result<(OwnedEventId, CanonicalJsonObject, Vec<u8>)> {
        let (mut object, v1_event_id, unsigned_json) = self.assemble(rules, room, sender, event, links)?;
        // The content hash covers `unsigned_json`; the signature and the reference hash cover
        // the same signed bytes (see `signing`).
        let signed = super::signing::hash(&mut object, &unsigned_json, rules)
            .map_err(|e| Error::Internal(format!("hashing failed: {e}")))?;
        let signer = |object: &mut CanonicalJsonObject| {
            super::signing::sign(self.server_name.as_str(), self.keys.signer(), object, &signed)
        };
        if sign {
            signer(&mut object);
        }
        let mut json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        // The size limit counts the signatures: an event that might not stay under it once
        // signed is signed now, and measured so.
        if !sign && json.len() + SIGNATURE_ROOM > MAX_PDU_BYTES {
            signer(&mut object);
            json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        }
        let size = json.len();
        if size > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("the event would be {size} bytes; the limit is {MAX_PDU_BYTES}")));
        }
        let event_id = match v1_event_id {
            Some(id) => id,
            None => super::signing::reference_id(&signed, rules)
                .map_err(|e| Error::Internal(format!("hashing failed: {e}")))?
                .ok_or_else(|| Error::Internal("an event id format without reference hash".into()))?,
        };
        let event_id = OwnedEventId::try_from(event_id).map_err(|e| Error::Internal(e.to_string()))?;
        Ok((event_id, object, json))
    }

    /// The unsigned PDU: fields, links, depth (room versions 1 and 2 also get their event id),
    /// and that object serialized (what its content hash covers).
    pub(super) fn assemble(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        room: Option<&RoomId>,
        sender: &UserId,
        event: &NewEvent,
        links: Links<'_>,
    ) -> Result<(CanonicalJsonObject, Option<String>, Vec<u8>)> {
        let Links { prev_events, auth_events, depth } = links;
        if !event.content.is_object() {
            return Err(Error::BadJson("event content must be a JSON object".into()));
        }
        let ids = |ids: &[OwnedEventId]| -> Result<CanonicalJsonValue> {
            let mut refs = Vec::with_capacity(ids.len());
            for id in ids {
                refs.push(match rules.events_reference_format {
                    // Room versions 1 and 2 reference events as [id, {"sha256": reference hash}].
                    EventsReferenceFormatVersion::V1 => {
                        let json = self.pdu_json(id)?.ok_or_else(|| Error::Internal(format!("unknown event {id}")))?;
                        let referenced: CanonicalJsonObject =
                            serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
                        let hash = reference_hash(&referenced, rules).map_err(|e| Error::Internal(e.to_string()))?;
                        let mut hashes = CanonicalJsonObject::new();
                        hashes.insert("sha256".into(), CanonicalJsonValue::String(hash));
                        CanonicalJsonValue::Array(vec![
                            CanonicalJsonValue::String(id.to_string()),
                            CanonicalJsonValue::Object(hashes),
                        ])
                    }
                    _ => CanonicalJsonValue::String(id.to_string()),
                });
            }
            Ok(CanonicalJsonValue::Array(refs))
        };
        let mut object = CanonicalJsonObject::new();
        // Room versions 1 and 2 carry a server-chosen `$random:server` id inside the event.
        let v1_event_id = match rules.event_id_format {
            EventIdFormatVersion::V1 => {
                let id = format!("${}:{}", crate::users::random_password(), self.server_name);
                object.insert("event_id".into(), CanonicalJsonValue::String(id.clone()));
                Some(id)
            }
            _ => None,
        };
        object.insert("type".into(), CanonicalJsonValue::String(event.kind.to_string()));
        object.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        if let Some(room) = room {
            object.insert("room_id".into(), CanonicalJsonValue::String(room.to_string()));
        }
        object.insert("origin_server_ts".into(), canonical(serde_json::json!(now_ms()))?);
        object.insert("content".into(), canonical(event.content.clone())?);
        if let Some(key) = &event.state_key {
            object.insert("state_key".into(), CanonicalJsonValue::String(key.clone()));
        }
        if let Some(redacts) = &event.redacts {
            object.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
        object.insert("prev_events".into(), ids(prev_events)?);
        object.insert("auth_events".into(), ids(auth_events)?);
        object.insert("depth".into(), canonical(serde_json::json!(depth))?);
        // Hashes and one signature add about 200 bytes; refuse oversized events before signing.
        let unsigned_json = serde_json::to_vec(&object).map_err(|e| Error::Internal(e.to_string()))?;
        if unsigned_json.len() + 256 > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("the event would exceed {MAX_PDU_BYTES} bytes")));
        }
        Ok((object, v1_event_id, unsigned_json))
    }

    /// Authorizes the event against the room's current state (which, for a local event pointing
    /// at the current extremities, is the state before it), then queues it for persisting (the
    /// writer notifies the stream). Returns the receiver that resolves once the event is durable.
    pub(super) fn check_and_persist(
        &self,
        room: &RoomId,
        record: Option<RoomRecord>,
        version: RoomVersionId,
        event_id: OwnedEventId,
        json: Vec<u8>,
        txn: Option<TxnKey>,
    ) -> Result<oneshot::Receiver<Result<(), String>>> {
        let rules = rules_of(&version)?;
        let pdu = Pdu::from_json(event_id.clone(), &json).map_err(|e| Error::BadJson(format!("invalid event: {e}")))?;
        let state = match &record {
            Some(r) => Some(self.state.load(r.snapshot)?),
            None => None,
        };
        self.check_auth(&rules, &pdu, state.as_deref()).map_err(Error::Forbidden)?;
        if let Some(state) = &state {
            self.enforce_access_rules(room, &pdu, state)?;
        }
        let before = record.as_ref().map(|r| r.snapshot);
        let depth = u64::from(pdu.depth);
        self.persist(
            room,
            Plan {
                version,
                event_id: event_id.clone(),
                json,
                pdu,
                before,
                resolved: None,
                old_current: before,
                extremities: vec![event_id],
                depth,
                txn,
                historical: false,
                extra_visibility: Vec::new(),
                extra_members: Vec::new(),
                built_here: true,
            },
        )
    }

    /// Runs the room version's authorization rules for `pdu` against `state` (the state before
    /// it, or whatever state the caller checks against); `Err` carries the failed rule.
    ///
    /// A non-state event's state-dependent rules read only the create event, the power levels
    /// and the sender's membership: once an event of the same type passed them against the
    /// same three events, the next one does too, without parsing the power levels again (a
    /// twentieth of a message's cost). Only passes are kept; the state-independent rules (the
    /// event's own auth events) run every time.
    pub(crate) fn check_auth(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        pdu: &Pdu,
        state: Option<&state::StateMap>,
    ) -> Result<(), String> {
        let fetch_event = |id: &EventId| self.auth_pdu(id);
        ruma::state_res::check_state_independent_auth_rules(&rules.authorization, pdu, fetch_event)?;
        let state_id = |kind: &StateEventType, key: &str| -> Option<&OwnedEventId> {
            let short = self.state.short_key(kind, key).ok()??;
            state?.get(&short)
        };
        let inputs = (pdu.state_key.is_none() && outcome_depends_on_inputs_only(&pdu.kind))
            .then(|| {
                Some(AuthInputs {
                    create: state_id(&StateEventType::RoomCreate, "")?.clone(),
                    power_levels: state_id(&StateEventType::RoomPowerLevels, "").cloned(),
                    sender_member: state_id(&StateEventType::RoomMember, pdu.sender.as_str())?.clone(),
                    kind: pdu.kind.clone(),
                })
            })
            .flatten();
        if let Some(inputs) = &inputs {
            if self.auth_outcomes.lock().expect("auth outcomes").contains(inputs) {
                return Ok(());
            }
        }
        let fetch_state = |kind: &StateEventType, key: &str| self.auth_pdu(state_id(kind, key)?);
        ruma::state_res::check_state_dependent_auth_rules(&rules.authorization, pdu, fetch_state)?;
        if let Some(inputs) = inputs {
            let mut outcomes = self.auth_outcomes.lock().expect("auth outcomes");
            if outcomes.len() >= AUTH_OUTCOMES {
                outcomes.clear();
            }
            outcomes.insert(inputs);
        }
        Ok(())
    }

    /// Persists an authorized event with a stream position: its state, the room's new current
    /// state, extremities and depth, membership and visibility indexes, relations, a redaction's
    /// effect — one batch through the writer, local and remote events alike.
    pub(super) fn persist(&self, room: &RoomId, plan: Plan) -> Result<oneshot::Receiver<Result<(), String>>> {
        let Plan {
            version,
            event_id,
            json,
            pdu,
            before,
            resolved,
            old_current,
            extremities,
            depth,
            txn,
            historical,
            extra_visibility,
            extra_members,
            built_here,
        } = plan;
        let rules = rules_of(&version)?;
        // Interning commits on its own; do it before taking the writer's queue.
        let short = match &pdu.state_key {
            Some(key) => Some(self.state.intern(&pdu.kind.to_string().into(), key)?),
            None => None,
        };
        if short.is_none() && before.is_none() {
            return Err(Error::Internal("a room's first event must be a state event".into()));
        }
        let replaces = match (short, before) {
            (Some(short), Some(before)) => self.state.load(before)?.get(&short).cloned(),
            _ => None,
        };
        let tables = &self.db.tables;
        let member_of = |pdu: &Pdu| {
            (pdu.kind == TimelineEventType::RoomMember)
                .then(|| pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok()))
                .flatten()
                .map(|target| {
                    let membership = serde_json::from_str::<serde_json::Value>(pdu.content.get())
                        .ok()
                        .and_then(|c| c.get("membership").and_then(|m| m.as_str()).map(str::to_owned))
                        .unwrap_or_default();
                    (target, membership, pdu.event_id.clone())
                })
        };
        // The membership changes this write makes to the room's current state.
        let mut memberships = extra_members;
        let mut current_diff = None;
        let known = match &resolved {
            Some(Resolved::Snapshot(id)) => Some(*id),
            _ => None,
        };
        let target = match &resolved {
            None => None,
            Some(Resolved::Map(map)) => Some(std::borrow::Cow::Borrowed(map)),
            // The same snapshot as now: nothing changes.
            Some(Resolved::Snapshot(id)) if Some(*id) == old_current => None,
            Some(Resolved::Snapshot(id)) => Some(std::borrow::Cow::Owned((*self.state.load(*id)?).clone())),
        };
        match &target {
            None if resolved.is_some() || historical => {}
            None => memberships.extend(member_of(&pdu)),
            Some(target) => {
                let old = match old_current {
                    Some(s) => self.state.load(s)?,
                    None => Arc::new(state::StateMap::new()),
                };
                let added: Vec<(u64, OwnedEventId)> =
                    target.iter().filter(|(k, v)| old.get(k) != Some(v)).map(|(k, v)| (*k, v.clone())).collect();
                let removed: Vec<u64> = old.keys().filter(|k| !target.contains_key(k)).copied().collect();
                for (_, id) in &added {
                    let changed = if *id == event_id { Some(pdu.clone()) } else { self.pdu(id)? };
                    if let Some(changed) = changed {
                        memberships.extend(member_of(&changed));
                    }
                }
                current_diff = Some((added, removed));
            }
        }
        let visibility_change = if historical { None } else { visibility::VisibilityChange::of(&pdu) };
        // A join of someone already joined (a profile change) continues their joined period.
        let mut previous_joins = Vec::with_capacity(memberships.len());
        for (target, membership, _) in &memberships {
            previous_joins.push(if membership == "join" {
                self.membership(target, room)?.filter(|r| r.membership == "join").map(|r| r.period_start())
            } else {
                None
            });
        }
        // Relations are indexed within a room only: an event elsewhere naming one of this room's
        // events is not its relation.
        let relation =
            relates_to(&pdu).filter(|parent| self.meta(parent).ok().flatten().is_none_or(|m| m.room_id == room));
        let thread_root = relation.clone().filter(|_| rel_type(&pdu).as_deref() == Some("m.thread"));
        let redaction = match pdu.redacted_event() {
            Some(target) if self.redaction_applies(room, &pdu, &target)? => {
                self.auth_cache.lock().expect("auth cache").remove(&target);
                if self.pdu(&target)?.is_some_and(|p| p.is_state()) {
                    // State resolution reads the stored (now redacted) form of state events.
                    self.forget_derived_from_state();
                }
                self.redacted_form(&rules, &target, &event_id, &json)?
            }
            _ => None,
        };
        let txn_key = txn.map(|t| (t.stored(), t.txn_id));
        let previous_depth = self.room(room)?.map(|r| r.depth).unwrap_or(0);
        let durable = self.writer.submit(&self.db, |batch, pos| {
            self.writer.touch_room(room, pos);
            let mut room_record = None;
            let mut new_snapshots = Vec::new();
            let dag_snapshot = match short {
                Some(_) if historical => before.unwrap_or_default(),
                Some(short) => {
                    let id = self.state.derive(batch, before, &[(short, event_id.clone())], &[])?;
                    new_snapshots.push(id);
                    id
                }
                None => before.unwrap_or_default(),
            };
            let snapshot = match (known, &current_diff) {
                (Some(id), _) => id,
                (None, Some((added, removed))) => {
                    let id = self.state.derive(batch, old_current, added, removed)?;
                    new_snapshots.push(id);
                    id
                }
                (None, None) => dag_snapshot,
            };
            let record =
                RoomRecord { version: version.clone(), snapshot, extremities, depth: depth.max(previous_depth) };
            let meta = EventMeta {
                room_id: room.to_owned(),
                pos,
                snapshot,
                redacted_because: None,
                state_after: (dag_snapshot != snapshot).then_some(dag_snapshot),
                replaces: replaces.clone(),
            };
            tables.rooms.eventid_pdu.insert(batch, &event_id, &json);
            tables.rooms.eventid_meta.insert(batch, &event_id, &Json(meta.clone()));
            if !built_here {
                tables.rooms.eventid_outlier.remove(batch, &event_id);
            }
            tables.rooms.pos_eventid.insert(batch, &Be64(pos), &event_id);
            tables.rooms.roomidpos_eventid.insert(batch, &(room.to_owned(), Be64(pos)), &event_id);
            if !historical {
                tables.rooms.roomid_room.insert(batch, &room.to_owned(), &Json(record.clone()));
                room_record = Some(record);
            }
            for change in &extra_visibility {
                change.write(tables, batch, room, pos);
            }
            if !memberships.is_empty() {
                self.writer.touch_members(room, pos);
            }
            for ((target, membership, member_event), previous_join) in memberships.iter().zip(&previous_joins) {
                let joined_since = (membership == "join").then_some(previous_join.unwrap_or(pos));
                let record = Json(MembershipRecord {
                    membership: membership.clone(),
                    event_id: member_event.clone(),
                    pos,
                    joined_since,
                });
                tables.rooms.useridroomid_membership.insert(batch, &(target.clone(), room.to_owned()), &record);
                tables.rooms.roomiduserid_membership.insert(batch, &(room.to_owned(), target.clone()), &record);
            }
            if let Some(change) = &visibility_change {
                change.write(tables, batch, room, pos);
            }
            if let Some(parent) = &relation {
                tables.rooms.parentpos_childeventid.insert(batch, &(parent.clone(), Be64(pos)), &event_id);
            }
            if let Some(root) = &thread_root {
                tables.rooms.roomidpos_threadroot.insert(batch, &(room.to_owned(), Be64(pos)), root);
            }
            let mut cleanup = Cleanup {
                pdus: vec![event_id.clone()],
                txn: txn_key.as_ref().map(|(key, _)| key.clone()),
                snapshots: new_snapshots,
                wake: Audience::Room(room.to_owned()),
            };
            let mut overlay = self.pending.lock().expect("pending overlay");
            if let Some((target, redacted_json, target_meta)) = &redaction {
                tables.rooms.eventid_pdu.insert(batch, target, redacted_json);
                tables.rooms.eventid_meta.insert(batch, target, &Json(target_meta.clone()));
                overlay.pdus.insert(target.clone(), (redacted_json.clone(), target_meta.clone()));
                cleanup.pdus.push(target.clone());
            }
            if let Some((key, client_txn)) = &txn_key {
                tables.rooms.useriddevicetxn_eventid.insert(batch, key, &event_id);
                tables.rooms.eventid_devicetxn.insert(batch, &event_id, &Json((key.1.clone(), client_txn.clone())));
                // Found by age by the pruning task (`retention.client_transactions`).
                tables.retention.pos_eventtxn.insert(batch, &Be64(pos), &Json(key.clone()));
                overlay.txns.insert(key.clone(), event_id.clone());
            }
            overlay.pdus.insert(event_id.clone(), (json.clone(), meta));
            // Before the job is queued: once queued, the writer may make it durable and wake
            // readers (a sync showing this event) before this thread runs again, and a reader
            // must not then find the room's previous record (and state) in the cache.
            if let Some(record) = room_record {
                self.records.lock().expect("room records").insert(room.to_owned(), record);
            }
            Ok(cleanup)
        })?;
        #[cfg(test)]
        if let Some(hook) = &*self.after_queued.lock().expect("test hook") {
            hook(room);
        }
        let origin =
            if pdu.sender.server_name() == self.server_name { &self.appended.local } else { &self.appended.remote };
        origin.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if pdu.kind == TimelineEventType::RoomMember || current_diff.is_some() {
            self.forget_directory_entries(room);
        }
        Ok(durable)
    }

    /// Adds `unsigned.transaction_id` to the events `user` sent from `device` with a transaction
    /// id, as the spec asks for the sending device's copy: clients match their local echo by it.
    pub fn add_transaction_ids(
        &self,
        user: &UserId,
        device: &ruma::DeviceId,
        events: &mut [serde_json::Value],
    ) -> Result<()> {
        for event in events.iter_mut().filter(|e| e["sender"].as_str() == Some(user.as_str())) {
            let Some(id) = event["event_id"].as_str().and_then(|i| OwnedEventId::try_from(i).ok()) else { continue };
            if let Some(Json((sender_device, txn))) = self.db.tables.rooms.eventid_devicetxn.get(&id)? {
                if sender_device == device {
                    if !event["unsigned"].is_object() {
                        event["unsigned"] = serde_json::json!({});
                    }
                    event["unsigned"]["transaction_id"] = serde_json::json!(txn);
                }
            }
        }
        Ok(())
    }

    /// Whether a redaction takes effect on its target: the target is in the redaction's room, and
    /// the redaction's sender sent it, is on its sender's server, or holds the power to redact
    /// there (the auth rules of newer room versions leave this check to the server). A server is
    /// free to send a redaction naming any event id in a room where its user may redact; naming
    /// another room's event changes nothing.
    pub(super) fn redaction_applies(&self, room: &RoomId, redaction: &Pdu, target: &EventId) -> Result<bool> {
        let (Some(original), Some(meta)) = (self.pdu(target)?, self.meta(target)?) else { return Ok(true) };
        if meta.room_id != room {
            return Ok(false);
        }
        if original.sender.server_name() == redaction.sender.server_name() {
            return Ok(true);
        }
        let power = self.power(room)?;
        Ok(power.of_user(&redaction.sender) >= power.redact)
    }

    /// The metadata of a redaction's target in `room` when a redaction took effect on it. What
    /// follows the stream (the search index, third-party invites told to other nodes) acts on a
    /// redaction only through this: one naming another room's event, or sent without the right
    /// to redact, is stored and shown but redacts nothing.
    pub fn redacted_target(&self, room: &str, target: &EventId) -> Result<Option<EventMeta>> {
        Ok(self.meta(target)?.filter(|m| m.room_id.as_str() == room && m.redacted_because.is_some()))
    }

    /// The redacted form of a redaction's target (the room version's redaction algorithm), with
    /// its metadata pointing at the redaction; `None` when the target is unknown here.
    pub(super) fn redacted_form(
        &self,
        rules: &ruma::room_version_rules::RoomVersionRules,
        target: &EventId,
        redaction_id: &OwnedEventId,
        redaction_json: &[u8],
    ) -> Result<Option<(OwnedEventId, Vec<u8>, EventMeta)>> {
        let (Some(json), Some(mut meta)) = (self.pdu_json(target)?, self.meta(target)?) else { return Ok(None) };
        let object: CanonicalJsonObject = serde_json::from_slice(&json).map_err(|e| Error::Internal(e.to_string()))?;
        let because: CanonicalJsonObject =
            serde_json::from_slice(redaction_json).map_err(|e| Error::Internal(e.to_string()))?;
        let redacted = redact(object, &rules.redaction, Some(RedactedBecause::from_json(because)))
            .map_err(|e| Error::Internal(format!("redaction failed: {e}")))?;
        let bytes = serde_json::to_vec(&redacted).map_err(|e| Error::Internal(e.to_string()))?;
        meta.redacted_because = Some(redaction_id.clone());
        Ok(Some((target.to_owned(), bytes, meta)))
    }
}

/// Whether the state-dependent auth rules of a non-state event of this type read nothing but
/// the create event, the power levels and the sender's membership (the types with rules of
/// their own, in any room version, are left out even without a state key; `m.room.aliases`
/// without one always fails where it has rules of its own, so it is never kept there).
fn outcome_depends_on_inputs_only(kind: &TimelineEventType) -> bool {
    !matches!(
        kind,
        TimelineEventType::RoomCreate
            | TimelineEventType::RoomMember
            | TimelineEventType::RoomPowerLevels
            | TimelineEventType::RoomThirdPartyInvite
            | TimelineEventType::RoomRedaction
    )
}
