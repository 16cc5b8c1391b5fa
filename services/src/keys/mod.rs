//! The end-to-end encryption key server: device keys, one-time and fallback keys, cross-signing
//! keys and signatures. The server never sees plaintext; it stores what devices publish, checks
//! every signature before storing, and tells the users who share rooms with someone when that
//! someone's devices or keys change (the device list stream, `pos_keychange`, which the federation
//! sender will also tail for `m.device_list_update`).

pub mod backup;
pub mod tables;
pub mod verify;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use ruma::{DeviceId, OwnedDeviceId, OwnedRoomId, OwnedUserId, UserId};
use serde_json::{json, Value};

pub use self::tables::FallbackKey;
use crate::{
    db::{
        codec::{prefix, prefix2, Be64, Codec, Json},
        Batch, Database,
    },
    error::{Error, Result},
    rooms::Rooms,
    stream::{wait_durable, Audience, Cleanup, Writer},
    users::Users,
};

/// Users whose devices a client must refresh, and users it no longer shares a room with.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct DeviceLists {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

impl DeviceLists {
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.left.is_empty()
    }
}

/// Cross-signing key usages, as stored.
pub const MASTER: &str = "master";
pub const SELF_SIGNING: &str = "self_signing";
pub const USER_SIGNING: &str = "user_signing";
/// Key in `meta` of the highest position of the device list stream (`pos_keychange`) pruned:
/// the changes up to it are no longer there to tell (`crate::retention`).
pub const CHANGES_PRUNED: &str = "keychange_pruned";

/// The cross-signing keys a query returns for one user.
#[derive(Debug, Default)]
pub struct CrossSigning {
    pub master: Option<Value>,
    pub self_signing: Option<Value>,
    pub user_signing: Option<Value>,
}

/// Everything `/keys/query` answers.
#[derive(Debug, Default)]
pub struct QueryResult {
    pub device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    pub cross_signing: BTreeMap<OwnedUserId, CrossSigning>,
}

/// Told, in the batch of a key write and at its stream position, whose devices' one-time or
/// fallback keys the write changes: the appservices that asked for their users' key counts
/// (MSC3202) queue them there, in the same write, so no change is lost to a crash in between.
pub type KeyCountWatch = Arc<dyn Fn(&mut Batch, u64, &[(OwnedUserId, OwnedDeviceId)]) + Send + Sync>;

pub struct Keys {
    db: Arc<Database>,
    writer: Arc<Writer>,
    key_count_watch: Option<KeyCountWatch>,
    /// Per-user write locks (striped): a one-time key is never handed out twice, and an upload's
    /// "already exists" check sees every earlier upload of that user, while different users'
    /// writes run side by side and share the stream's group commit.
    locks: Vec<tokio::sync::Mutex<()>>,
}

/// Number of per-user key write locks.
const LOCK_STRIPES: usize = 64;

fn device_prefix(user: &UserId, device: &DeviceId) -> Vec<u8> {
    prefix2(&user.to_owned(), &device.to_owned())
}

/// The one public key of a cross-signing key object.
fn public_key_of(key: &Value) -> Option<String> {
    key.get("keys")?.as_object()?.values().next()?.as_str().map(str::to_owned)
}

impl Keys {
    pub fn new(db: Arc<Database>, writer: Arc<Writer>) -> Self {
        Self {
            db,
            writer,
            key_count_watch: None,
            locks: (0..LOCK_STRIPES).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Reports every change of one-time or fallback keys to `watch` (see [`KeyCountWatch`]).
    pub fn with_key_count_watch(mut self, watch: Option<KeyCountWatch>) -> Self {
        self.key_count_watch = watch;
        self
    }

    /// Locks the stripes of `users`, in stripe order so two callers never wait on each other.
    async fn lock_users<'a>(
        &self,
        users: impl IntoIterator<Item = &'a UserId>,
    ) -> Vec<tokio::sync::MutexGuard<'_, ()>> {
        let stripes: BTreeSet<usize> = users
            .into_iter()
            .map(|user| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                std::hash::Hash::hash(user.as_str(), &mut hasher);
                (std::hash::Hasher::finish(&hasher) % LOCK_STRIPES as u64) as usize
            })
            .collect();
        let mut guards = Vec::with_capacity(stripes.len());
        for stripe in stripes {
            guards.push(self.locks[stripe].lock().await);
        }
        guards
    }

    fn tables(&self) -> &tables::Tables {
        &self.db.tables.keys
    }

    /// Writes `fill`'s batch on the stream; when `changed` names a user, records a device list
    /// change for them and wakes everyone sharing a room with them. `counted` are the devices
    /// whose one-time or fallback keys the write changes.
    async fn write(
        &self,
        changed: Option<&UserId>,
        counted: &[(OwnedUserId, OwnedDeviceId)],
        fill: impl FnOnce(&mut Batch) -> Result<()>,
    ) -> Result<()> {
        let tables = self.tables();
        let durable = self.writer.submit(&self.db, |batch, pos| {
            fill(batch)?;
            if let Some(watch) = self.key_count_watch.as_ref().filter(|_| !counted.is_empty()) {
                watch(batch, pos, counted);
            }
            let mut cleanup = Cleanup::default();
            if let Some(user) = changed {
                tables.pos_keychange.insert(batch, &Be64(pos), &user.to_owned());
                cleanup.wake = Audience::SharedWith(user.to_owned());
            }
            Ok(cleanup)
        })?;
        wait_durable(durable).await
    }

    /// A user of another server announced a change of their devices or cross-signing keys: local
    /// users sharing a room with them see it in `device_lists.changed` and query again.
    pub async fn remote_keys_changed(&self, user: &UserId) -> Result<()> {
        self.write(Some(user), &[], |_| Ok(())).await
    }

    /// The device's stored identity keys.
    pub fn device_keys(&self, user: &UserId, device: &DeviceId) -> Result<Option<Value>> {
        Ok(self.tables().userdeviceid_devicekeys.get(&(user.to_owned(), device.to_owned()))?.map(|Json(v)| v))
    }

    fn cross_signing_key(&self, user: &UserId, usage: &str) -> Result<Option<Value>> {
        Ok(self.tables().useridusage_crosssigningkey.get(&(user.to_owned(), usage.to_owned()))?.map(|Json(v)| v))
    }

    /// `/keys/upload`: stores device keys, one-time keys and fallback keys after checking every
    /// one of them; on any error nothing is stored. Returns the device's one-time key counts.
    pub async fn upload(
        &self,
        user: &UserId,
        device: &DeviceId,
        device_keys: Option<Value>,
        one_time_keys: Vec<(String, Value)>,
        fallback_keys: Vec<(String, Value)>,
    ) -> Result<BTreeMap<String, u64>> {
        // Signatures are checked before taking the lock: that is the costly part.
        let ed25519 = match &device_keys {
            Some(keys) => Some(verify::device_keys(user.as_str(), device.as_str(), keys)?),
            None => self
                .device_keys(user, device)?
                .and_then(|k| k["keys"][format!("ed25519:{device}")].as_str().map(str::to_owned)),
        };
        for (key_id, key) in one_time_keys.iter().chain(&fallback_keys) {
            verify::one_time_key(user.as_str(), device.as_str(), key_id, key, ed25519.as_deref())?;
        }
        let _guard = self.lock_users([user]).await;
        let tables = self.tables();
        let stored = self.device_keys(user, device)?;
        let mut new_device_keys = None;
        if let Some(keys) = &device_keys {
            let mut fresh = verify::signed_part(keys);
            fresh["signatures"] = keys["signatures"].clone();
            match &stored {
                // The same identity again: keep the signatures others added.
                Some(old) if verify::signed_part(old) == verify::signed_part(keys) => {
                    let mut merged = old.clone();
                    for (signer, sigs) in keys["signatures"].as_object().into_iter().flatten() {
                        for key_id in sigs.as_object().into_iter().flatten().map(|(k, _)| k) {
                            verify::copy_signature(&mut merged, keys, signer, key_id);
                        }
                    }
                    if &merged != old {
                        new_device_keys = Some(merged);
                    }
                }
                _ => new_device_keys = Some(fresh),
            }
        }

        let mut otks = Vec::new();
        for (key_id, key) in one_time_keys {
            let db_key = (user.to_owned(), device.to_owned(), key_id.clone());
            match tables.userdevicekeyid_onetimekey.get(&db_key)? {
                Some(Json(existing)) if existing == key => {}
                Some(_) => {
                    return Err(Error::invalid_param(format!(
                        "one-time key {key_id} already exists with another value"
                    )))
                }
                None => otks.push((db_key, key)),
            }
        }
        let mut fallbacks = BTreeMap::new();
        for (key_id, key) in fallback_keys {
            let algorithm = key_id.split_once(':').map(|(a, _)| a.to_owned()).unwrap_or_default();
            if fallbacks.insert(algorithm.clone(), (key_id, key)).is_some() {
                return Err(Error::invalid_param(format!("more than one fallback key for {algorithm}")));
            }
        }
        let mut fallback_writes = Vec::new();
        for (algorithm, (key_id, key)) in fallbacks {
            let db_key = (user.to_owned(), device.to_owned(), algorithm);
            let existing = tables.userdevicealgorithm_fallbackkey.get(&db_key)?.map(|Json(f)| f);
            // Uploading the same fallback key again keeps whether it was used.
            if existing.as_ref().is_some_and(|f| f.key_id == key_id && f.key == key) {
                continue;
            }
            fallback_writes.push((db_key, FallbackKey { key_id, key, used: false }));
        }

        if new_device_keys.is_some() || !otks.is_empty() || !fallback_writes.is_empty() {
            let identity_changed = new_device_keys.is_some();
            let counted = if otks.is_empty() && fallback_writes.is_empty() {
                Vec::new()
            } else {
                vec![(user.to_owned(), device.to_owned())]
            };
            self.write(identity_changed.then_some(user), &counted, |batch| {
                if let Some(keys) = &new_device_keys {
                    tables.userdeviceid_devicekeys.insert(
                        batch,
                        &(user.to_owned(), device.to_owned()),
                        &Json(keys.clone()),
                    );
                }
                for (db_key, key) in &otks {
                    tables.userdevicekeyid_onetimekey.insert(batch, db_key, &Json(key.clone()));
                }
                for (db_key, fallback) in &fallback_writes {
                    tables.userdevicealgorithm_fallbackkey.insert(batch, db_key, &Json(fallback.clone()));
                }
                Ok(())
            })
            .await?;
        }
        self.one_time_key_counts(user, device)
    }

    /// Unclaimed one-time keys per algorithm (`signed_curve25519` always present, so clients know
    /// to top up from zero).
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for entry in self.tables().userdevicekeyid_onetimekey.scan_prefix(device_prefix(user, device)) {
            let ((_, _, key_id), _) = entry?;
            let algorithm = key_id.split_once(':').map_or(key_id.as_str(), |(a, _)| a);
            *counts.entry(algorithm.to_owned()).or_default() += 1;
        }
        Ok(counts)
    }

    /// Algorithms for which the device has a fallback key nobody has claimed yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in self.tables().userdevicealgorithm_fallbackkey.scan_prefix(device_prefix(user, device)) {
            let ((_, _, algorithm), Json(fallback)) = entry?;
            if !fallback.used {
                out.push(algorithm);
            }
        }
        Ok(out)
    }

    /// `/keys/query` for local users: device keys (with the device's display name), master and
    /// self-signing keys, the requester's own user-signing key, and the signatures the requester
    /// made on others' master keys.
    pub fn query(
        &self,
        users: &Users,
        requester: &UserId,
        wanted: &BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
    ) -> Result<QueryResult> {
        let tables = self.tables();
        let mut result = QueryResult::default();
        for (user, devices) in wanted {
            if !users.is_local(user) {
                continue;
            }
            let mut found = BTreeMap::new();
            let mut add = |device: OwnedDeviceId, mut keys: Value| -> Result<()> {
                let name = users.device(user, &device)?.and_then(|d| d.display_name);
                keys["unsigned"] = json!({});
                if let Some(name) = name {
                    keys["unsigned"]["device_display_name"] = json!(name);
                }
                found.insert(device, keys);
                Ok(())
            };
            if devices.is_empty() {
                for entry in tables.userdeviceid_devicekeys.scan_prefix(prefix(user)) {
                    let ((_, device), Json(keys)) = entry?;
                    add(device, keys)?;
                }
            } else {
                for device in devices {
                    if let Some(keys) = self.device_keys(user, device)? {
                        add(device.clone(), keys)?;
                    }
                }
            }
            result.device_keys.insert(user.clone(), found);

            let mut cross = CrossSigning::default();
            if let Some(mut master) = self.cross_signing_key(user, MASTER)? {
                self.add_own_signatures(requester, user, &mut master)?;
                cross.master = Some(master);
            }
            cross.self_signing = self.cross_signing_key(user, SELF_SIGNING)?;
            if user == requester {
                cross.user_signing = self.cross_signing_key(user, USER_SIGNING)?;
            }
            if cross.master.is_some() || cross.self_signing.is_some() || cross.user_signing.is_some() {
                result.cross_signing.insert(user.clone(), cross);
            }
        }
        Ok(result)
    }

    /// `/keys/claim`: one one-time key per asked device and algorithm, removed as it is handed
    /// out; when none is left, the device's fallback key (marked used, not removed).
    pub async fn claim(
        &self,
        wanted: &BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>> {
        let _guard = self.lock_users(wanted.keys().map(|u| &**u)).await;
        let tables = self.tables();
        let mut claimed: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>> = BTreeMap::new();
        let mut removals = Vec::new();
        let mut used = Vec::new();
        for (user, devices) in wanted {
            for (device, algorithm) in devices {
                let mut start = device_prefix(user, device);
                start.extend(format!("{algorithm}:").into_bytes());
                let first = tables.userdevicekeyid_onetimekey.scan_prefix(start).next().transpose()?;
                if let Some((db_key, Json(key))) = first {
                    claimed
                        .entry(user.clone())
                        .or_default()
                        .entry(device.clone())
                        .or_default()
                        .insert(db_key.2.clone(), key);
                    removals.push(db_key);
                    continue;
                }
                let fallback_key = (user.clone(), device.clone(), algorithm.clone());
                if let Some(Json(mut fallback)) = tables.userdevicealgorithm_fallbackkey.get(&fallback_key)? {
                    claimed
                        .entry(user.clone())
                        .or_default()
                        .entry(device.clone())
                        .or_default()
                        .insert(fallback.key_id.clone(), fallback.key.clone());
                    if !fallback.used {
                        fallback.used = true;
                        used.push((fallback_key, fallback));
                    }
                }
            }
        }
        if !removals.is_empty() || !used.is_empty() {
            let counted: BTreeSet<(OwnedUserId, OwnedDeviceId)> = removals
                .iter()
                .map(|(user, device, _)| (user.clone(), device.clone()))
                .chain(used.iter().map(|((user, device, _), _)| (user.clone(), device.clone())))
                .collect();
            let counted: Vec<_> = counted.into_iter().collect();
            self.write(None, &counted, |batch| {
                for key in &removals {
                    tables.userdevicekeyid_onetimekey.remove(batch, key);
                }
                for (key, fallback) in &used {
                    tables.userdevicealgorithm_fallbackkey.insert(batch, key, &Json(fallback.clone()));
                }
                Ok(())
            })
            .await?;
        }
        Ok(claimed)
    }

    /// Whether uploading these cross-signing keys needs user-interactive auth: not for a user's
    /// first master key, nor for re-uploading exactly the keys already stored (spec v1.11).
    pub fn signing_upload_needs_auth(&self, user: &UserId, uploads: &[(&str, &Value)]) -> Result<bool> {
        if self.cross_signing_key(user, MASTER)?.is_none() {
            return Ok(false);
        }
        for (usage, key) in uploads {
            match self.cross_signing_key(user, usage)? {
                Some(stored) if verify::signed_part(&stored) == verify::signed_part(key) => {}
                _ => return Ok(true),
            }
        }
        Ok(false)
    }

    /// `/keys/device_signing/upload`: stores cross-signing keys once each is well-formed and the
    /// self-signing and user-signing keys are signed by the (new or stored) master key.
    pub async fn upload_signing_keys(&self, user: &UserId, uploads: &[(&str, &Value)]) -> Result<()> {
        let _guard = self.lock_users([user]).await;
        let mut master_public = None;
        for (usage, key) in uploads {
            let public = verify::cross_signing_key(user.as_str(), usage, key)?;
            if *usage == MASTER {
                master_public = Some(public);
            }
        }
        let new_master = master_public.is_some();
        let master_public = match master_public {
            Some(p) => p,
            None => self
                .cross_signing_key(user, MASTER)?
                .as_ref()
                .and_then(public_key_of)
                .ok_or_else(|| Error::invalid_param("upload a master key before the other cross-signing keys"))?,
        };
        let master_id = format!("ed25519:{master_public}");
        for (usage, key) in uploads {
            if *usage != MASTER && !verify::signed_by(key, user.as_str(), &master_id, &master_public) {
                return Err(Error::invalid_param(format!("the {usage} key must be signed by the master key")));
            }
        }
        let tables = self.tables();
        self.write(Some(user), &[], |batch| {
            if new_master {
                // Keys signed by a replaced master key no longer chain to the user's identity.
                for usage in [SELF_SIGNING, USER_SIGNING] {
                    tables.useridusage_crosssigningkey.remove(batch, &(user.to_owned(), usage.to_owned()));
                }
            }
            for (usage, key) in uploads {
                tables.useridusage_crosssigningkey.insert(
                    batch,
                    &(user.to_owned(), usage.to_string()),
                    &Json((*key).clone()),
                );
            }
            Ok(())
        })
        .await
    }

    /// Adds to `user`'s master key the signatures `requester` made of it (kept by this server,
    /// shown only to them): how the requester's client sees the users it verified — whether
    /// `user` is ours or another server's, whose answer carries only its own signatures.
    pub fn add_own_signatures(&self, requester: &UserId, user: &UserId, master: &mut Value) -> Result<()> {
        let Some(public) = public_key_of(master) else { return Ok(()) };
        let theirs = (user.to_owned(), format!("ed25519:{public}"), requester.to_owned());
        if let Some(Json(signatures)) = self.tables().targetkeysigner_signatures.get(&theirs)? {
            let signed = json!({ "signatures": { requester.as_str(): signatures.clone() } });
            for id in signatures.as_object().into_iter().flatten().map(|(k, _)| k) {
                verify::copy_signature(master, &signed, requester.as_str(), id);
            }
        }
        Ok(())
    }

    /// `/keys/signatures/upload`: adds verified signatures to stored keys. A user's own device
    /// keys take signatures by their self-signing key, their master key signatures by their
    /// devices; another user's master key takes a signature by the signer's user-signing key,
    /// which only the signer sees. A signature already stored is no change: nothing is written
    /// and nobody is sent to fetch keys that are as they were. Returns the failures per user and
    /// key id.
    /// `remote_masters` are the master keys of other servers' users being signed, as their
    /// servers answered just now.
    pub async fn upload_signatures(
        &self,
        signer: &UserId,
        signed: Vec<(OwnedUserId, Vec<(String, Value)>)>,
        remote_masters: &BTreeMap<OwnedUserId, Value>,
    ) -> Result<BTreeMap<OwnedUserId, BTreeMap<String, Value>>> {
        let _guard = self.lock_users([signer]).await;
        let tables = self.tables();
        let failure = |code: &str, msg: &str| json!({ "errcode": code, "error": msg });
        let mut failures: BTreeMap<OwnedUserId, BTreeMap<String, Value>> = BTreeMap::new();
        let mut device_writes = Vec::new();
        let mut master_write = None;
        let mut foreign_writes = Vec::new();
        let self_signing = self.cross_signing_key(signer, SELF_SIGNING)?.and_then(|k| public_key_of(&k));
        let user_signing = self.cross_signing_key(signer, USER_SIGNING)?.and_then(|k| public_key_of(&k));
        for (target, keys) in signed {
            for (key_id, object) in keys {
                let outcome = self.one_signature(
                    signer,
                    &target,
                    &key_id,
                    &object,
                    self_signing.as_deref(),
                    user_signing.as_deref(),
                    &mut master_write,
                    remote_masters.get(&target),
                );
                match outcome {
                    Ok(Signed::Device(device, keys)) => device_writes.push(((target.clone(), device), keys)),
                    Ok(Signed::Master | Signed::Unchanged) => {}
                    Ok(Signed::Foreign(key, signatures)) => foreign_writes.push((key, signatures)),
                    Err((code, msg)) => {
                        failures.entry(target.clone()).or_default().insert(key_id, failure(code, &msg));
                    }
                }
            }
        }
        // A signature changes the *signed* user's keys: the signer for their own devices and
        // master key, the other user for a signature of their master key — whose watchers (the
        // signer's other devices among them) must fetch that user's keys again, or a
        // verification never shows as done.
        let mut changed: Vec<OwnedUserId> = Vec::new();
        if !device_writes.is_empty() || master_write.is_some() {
            changed.push(signer.to_owned());
        }
        for ((target, _, _), _) in &foreign_writes {
            if !changed.contains(target) {
                changed.push(target.clone());
            }
        }
        if !device_writes.is_empty() || master_write.is_some() || !foreign_writes.is_empty() {
            self.write(changed.first().map(|u| u.as_ref()), &[], |batch| {
                for (key, keys) in &device_writes {
                    tables.userdeviceid_devicekeys.insert(batch, key, &Json(keys.clone()));
                }
                if let Some(master) = &master_write {
                    tables.useridusage_crosssigningkey.insert(
                        batch,
                        &(signer.to_owned(), MASTER.to_owned()),
                        &Json(master.clone()),
                    );
                }
                for (key, signatures) in &foreign_writes {
                    tables.targetkeysigner_signatures.insert(batch, key, &Json(signatures.clone()));
                }
                Ok(())
            })
            .await?;
            // One stream position records one user's change: the others get their own.
            for user in changed.iter().skip(1) {
                self.write(Some(user), &[], |_| Ok(())).await?;
            }
        }
        Ok(failures)
    }

    #[allow(clippy::too_many_arguments)]
    fn one_signature(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        object: &Value,
        self_signing: Option<&str>,
        user_signing: Option<&str>,
        master_write: &mut Option<Value>,
        remote_master: Option<&Value>,
    ) -> std::result::Result<Signed, (&'static str, String)> {
        let internal = |e: Error| ("M_UNKNOWN", e.to_string());
        let bad_signature = || ("M_INVALID_SIGNATURE", "no valid signature by an allowed key".to_owned());
        let tables = self.tables();
        if target == signer {
            if let Some(mut stored) = self.device_keys(signer, key_id.into()).map_err(internal)? {
                let ssk = self_signing.ok_or(("M_INVALID_SIGNATURE", "upload a self-signing key first".to_owned()))?;
                if verify::signed_part(&stored) != verify::signed_part(object) {
                    return Err(("M_INVALID_PARAM", "the signed object differs from the stored device keys".into()));
                }
                let ssk_id = format!("ed25519:{ssk}");
                if !verify::signed_by(object, signer.as_str(), &ssk_id, ssk) {
                    return Err(bad_signature());
                }
                let before = stored.clone();
                verify::copy_signature(&mut stored, object, signer.as_str(), &ssk_id);
                if stored == before {
                    return Ok(Signed::Unchanged);
                }
                return Ok(Signed::Device(key_id.into(), stored));
            }
            let stored_master = match master_write.clone() {
                Some(m) => Some(m),
                None => self.cross_signing_key(signer, MASTER).map_err(internal)?,
            };
            if let Some(mut master) = stored_master.filter(|m| public_key_of(m).as_deref() == Some(key_id)) {
                if verify::signed_part(&master) != verify::signed_part(object) {
                    return Err(("M_INVALID_PARAM", "the signed object differs from the stored master key".into()));
                }
                let before = master.clone();
                let mut any = false;
                let signatures = object["signatures"][signer.as_str()].as_object().cloned().unwrap_or_default();
                for sig_key in signatures.keys() {
                    let Some(device) = sig_key.strip_prefix("ed25519:") else { continue };
                    let Some(keys) = self.device_keys(signer, device.into()).map_err(internal)? else { continue };
                    let Some(public) = keys["keys"][sig_key].as_str() else { continue };
                    if verify::signed_by(object, signer.as_str(), sig_key, public) {
                        verify::copy_signature(&mut master, object, signer.as_str(), sig_key);
                        any = true;
                    }
                }
                if !any {
                    return Err(bad_signature());
                }
                if master == before {
                    return Ok(Signed::Unchanged);
                }
                *master_write = Some(master);
                return Ok(Signed::Master);
            }
            return Err(("M_NOT_FOUND", format!("{key_id} is neither a device nor the master key of {signer}")));
        }
        let master = match remote_master {
            Some(master) => Some(master.clone()),
            None => self.cross_signing_key(target, MASTER).map_err(internal)?,
        };
        let Some(master) = master.filter(|m| public_key_of(m).as_deref() == Some(key_id)) else {
            return Err(("M_NOT_FOUND", format!("{key_id} is not the master key of {target}")));
        };
        if verify::signed_part(&master) != verify::signed_part(object) {
            return Err(("M_INVALID_PARAM", "the signed object differs from the stored master key".into()));
        }
        let usk = user_signing.ok_or(("M_INVALID_SIGNATURE", "upload a user-signing key first".to_owned()))?;
        let usk_id = format!("ed25519:{usk}");
        if !verify::signed_by(object, signer.as_str(), &usk_id, usk) {
            return Err(bad_signature());
        }
        let db_key = (target.to_owned(), format!("ed25519:{key_id}"), signer.to_owned());
        let mut signatures = tables
            .targetkeysigner_signatures
            .get(&db_key)
            .map_err(|e| internal(e.into()))?
            .map_or(json!({}), |Json(s)| s);
        let signature = &object["signatures"][signer.as_str()][&usk_id];
        if signatures[&usk_id] == *signature {
            return Ok(Signed::Unchanged);
        }
        signatures[&usk_id] = signature.clone();
        Ok(Signed::Foreign(db_key, signatures))
    }

    /// Device list changes a client at position `since` must learn about up to `until`: users it
    /// shares a room with whose devices or keys changed, users who joined a room it is in (or who
    /// are in a room it joined), and users it no longer shares any room with.
    pub fn device_list_changes(&self, rooms: &Rooms, user: &UserId, since: u64, until: u64) -> Result<DeviceLists> {
        self.device_list_changes_in(rooms, user, &rooms.memberships_of(user)?, since, until)
    }

    /// [`Keys::device_list_changes`] with the user's memberships already read (sync has them).
    pub fn device_list_changes_in(
        &self,
        rooms: &Rooms,
        user: &UserId,
        memberships: &[(OwnedRoomId, crate::rooms::MembershipRecord)],
        since: u64,
        until: u64,
    ) -> Result<DeviceLists> {
        let joined: BTreeSet<OwnedRoomId> =
            memberships.iter().filter(|(_, m)| m.membership == "join").map(|(r, _)| r.clone()).collect();
        let shares_a_room = |other: &UserId| -> Result<bool> {
            Ok(other == user || rooms.rooms_of(other, "join")?.iter().any(|r| joined.contains(r)))
        };
        let mut changed = BTreeSet::new();
        let mut left = BTreeSet::new();
        // The stream's changes up to `pruned` are gone (`retention.device_list_changes`): a
        // client from before that learns that every member of its rooms may have changed.
        let pruned = self.db.tables.meta.get(&CHANGES_PRUNED.to_owned())?.map_or(0, |Be64(p)| p);
        let too_old = since < pruned;
        for (room, membership) in memberships {
            let fresh = too_old || (membership.pos > since && membership.pos <= until);
            let joined_here = membership.membership == "join";
            if !fresh && !joined_here {
                continue;
            }
            // No membership change in the room after `since`: nobody joined or left.
            if !fresh && rooms.last_member_change(room)? <= since {
                continue;
            }
            for (member, record) in rooms.members(room)? {
                if member == user {
                    continue;
                }
                let is_joined = record.membership == "join";
                let moved = record.pos > since && record.pos <= until;
                match (joined_here, is_joined) {
                    (true, true) if fresh || moved => {
                        changed.insert(member);
                    }
                    (true, false) if moved => {
                        left.insert(member);
                    }
                    (false, true) => {
                        left.insert(member);
                    }
                    _ => {}
                }
            }
        }
        let start = Be64(since.saturating_add(1)).encode();
        for entry in self.tables().pos_keychange.scan_from(Vec::new(), start, true) {
            let (Be64(pos), who) = entry?;
            if pos > until {
                break;
            }
            if !changed.contains(&who) && shares_a_room(&who)? {
                changed.insert(who);
            }
        }
        let mut gone = Vec::new();
        for candidate in left {
            if !shares_a_room(&candidate)? {
                gone.push(candidate);
            }
        }
        Ok(DeviceLists { changed: changed.into_iter().collect(), left: gone })
    }
}

enum Signed {
    Device(OwnedDeviceId, Value),
    Master,
    Foreign((OwnedUserId, String, OwnedUserId), Value),
    /// The very signature is stored already (matrix-sdk signs again at every verification).
    Unchanged,
}
