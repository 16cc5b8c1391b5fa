//! End-to-end encryption keys (`/keys/*`) and key backup (`/room_keys/*`): thin handlers over
//! [`crate::keys`].

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    api::client::{
        backup::{
            add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
            delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
            get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
            get_latest_backup_info, update_backup_version, RoomKeyBackup,
        },
        keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    },
    serde::Raw,
    OneTimeKeyAlgorithm, OwnedOneTimeKeyId, OwnedRoomId, UInt,
};
use serde_json::Value;

use crate::{
    api::ruma::Ruma,
    error::{Error, Result},
    keys::{backup::Scope, MASTER, SELF_SIGNING, USER_SIGNING},
    rooms::pdu::to_raw,
    services::Services,
    sync::SyncToken,
    uia,
};

fn value<T>(raw: &Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::BadJson(e.to_string()))
}

fn uint(n: u64) -> UInt {
    UInt::new(n).unwrap_or(UInt::MAX)
}

/// How long a key query or claim waits for other servers before reporting them as failures.
const REMOTE_KEYS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Users of other servers grouped by server.
fn by_server<'a, T: Clone + 'a>(
    services: &Services,
    entries: impl Iterator<Item = (&'a ruma::OwnedUserId, &'a T)>,
) -> BTreeMap<ruma::OwnedServerName, BTreeMap<ruma::OwnedUserId, T>> {
    let mut out: BTreeMap<ruma::OwnedServerName, BTreeMap<ruma::OwnedUserId, T>> = BTreeMap::new();
    for (user, value) in entries {
        if !services.users.is_local(user) {
            out.entry(user.server_name().to_owned()).or_default().insert(user.clone(), value.clone());
        }
    }
    out
}

fn failure(error: &Error) -> Value {
    serde_json::json!({ "status": 503, "message": error.to_string() })
}

fn counts(counts: BTreeMap<String, u64>) -> BTreeMap<OneTimeKeyAlgorithm, UInt> {
    counts.into_iter().map(|(alg, n)| (OneTimeKeyAlgorithm::from(alg.as_str()), uint(n))).collect()
}

pub async fn upload(
    services: Arc<Services>,
    request: Ruma<upload_keys::v3::Request>,
) -> Result<upload_keys::v3::Response> {
    let owner = request.sender()?.clone();
    let body = request.body;
    let device_keys = body.device_keys.as_ref().map(value).transpose()?;
    let one_time_keys =
        body.one_time_keys.iter().map(|(id, key)| Ok((id.to_string(), value(key)?))).collect::<Result<_>>()?;
    let fallback_keys =
        body.fallback_keys.iter().map(|(id, key)| Ok((id.to_string(), value(key)?))).collect::<Result<_>>()?;
    let result =
        services.keys.upload(&owner.user_id, &owner.device_id, device_keys, one_time_keys, fallback_keys).await?;
    Ok(upload_keys::v3::Response::new(counts(result)))
}

pub async fn query(services: Arc<Services>, request: Ruma<get_keys::v3::Request>) -> Result<get_keys::v3::Response> {
    let requester = request.sender()?.user_id.clone();
    let result = services.keys.query(&services.users, &requester, &request.body.device_keys)?;
    let mut response = get_keys::v3::Response::new();
    let asks = by_server(&services, request.body.device_keys.iter()).into_iter().map(|(server, users)| {
        let services = services.clone();
        async move {
            let request = ruma::api::federation::keys::get_keys::v1::Request::new(users);
            let answer = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, services.federation.send(&server, request)).await;
            (server, answer.unwrap_or_else(|_| Err(Error::RemoteUnreachable("no answer in time".into()))))
        }
    });
    for (server, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(remote) => {
                // Only what the server may speak for: its own users.
                let own = |u: &ruma::OwnedUserId| u.server_name() == server;
                response.device_keys.extend(remote.device_keys.into_iter().filter(|(u, _)| own(u)));
                for (user, master) in remote.master_keys.into_iter().filter(|(u, _)| own(u)) {
                    // The requester's own signatures of it are kept here, not there.
                    let mut master = value(&master)?;
                    services.keys.add_own_signatures(&requester, &user, &mut master)?;
                    response.master_keys.insert(user, to_raw(&master));
                }
                response.self_signing_keys.extend(remote.self_signing_keys.into_iter().filter(|(u, _)| own(u)));
            }
            Err(error) => {
                response.failures.insert(server.to_string(), failure(&error));
            }
        }
    }
    for (user, devices) in result.device_keys {
        response.device_keys.insert(user, devices.into_iter().map(|(d, k)| (d, to_raw(&k))).collect());
    }
    for (user, cross) in result.cross_signing {
        if let Some(k) = cross.master {
            response.master_keys.insert(user.clone(), to_raw(&k));
        }
        if let Some(k) = cross.self_signing {
            response.self_signing_keys.insert(user.clone(), to_raw(&k));
        }
        if let Some(k) = cross.user_signing {
            response.user_signing_keys.insert(user, to_raw(&k));
        }
    }
    Ok(response)
}

/// Claims one-time keys of this server's users among `wanted` (others are ignored), in the
/// shape both the client and the federation answers take.
pub async fn claim_local(
    services: &Services,
    wanted: &BTreeMap<ruma::OwnedUserId, BTreeMap<ruma::OwnedDeviceId, ruma::OneTimeKeyAlgorithm>>,
) -> Result<BTreeMap<ruma::OwnedUserId, claim_keys::v3::OneTimeKeys>> {
    let wanted = wanted
        .iter()
        .filter(|(user, _)| services.users.is_local(user))
        .map(|(user, devices)| (user.clone(), devices.iter().map(|(d, alg)| (d.clone(), alg.to_string())).collect()))
        .collect();
    let claimed = services.keys.claim(&wanted).await?;
    let mut one_time_keys = BTreeMap::new();
    for (user, devices) in claimed {
        let mut out: claim_keys::v3::OneTimeKeys = BTreeMap::new();
        for (device, keys) in devices {
            let keys = keys
                .into_iter()
                .filter_map(|(id, key)| OwnedOneTimeKeyId::try_from(id.as_str()).ok().map(|id| (id, to_raw(&key))))
                .collect();
            out.insert(device, keys);
        }
        one_time_keys.insert(user, out);
    }
    Ok(one_time_keys)
}

pub async fn claim(
    services: Arc<Services>,
    request: Ruma<claim_keys::v3::Request>,
) -> Result<claim_keys::v3::Response> {
    request.sender()?;
    let one_time_keys = claim_local(&services, &request.body.one_time_keys).await?;
    let mut response = claim_keys::v3::Response::new(one_time_keys);
    let asks = by_server(&services, request.body.one_time_keys.iter()).into_iter().map(|(server, users)| {
        let services = services.clone();
        async move {
            let request = ruma::api::federation::keys::claim_keys::v1::Request::new(users);
            let answer = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, services.federation.send(&server, request)).await;
            (server, answer.unwrap_or_else(|_| Err(Error::RemoteUnreachable("no answer in time".into()))))
        }
    });
    for (server, answer) in futures::future::join_all(asks).await {
        match answer {
            Ok(remote) => response
                .one_time_keys
                .extend(remote.one_time_keys.into_iter().filter(|(u, _)| u.server_name() == server)),
            Err(error) => {
                response.failures.insert(server.to_string(), failure(&error));
            }
        }
    }
    Ok(response)
}

pub async fn changes(
    services: Arc<Services>,
    request: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let from = crate::sync::checked_position(&services, SyncToken::parse(&request.body.from)?.pos)?;
    let to = crate::sync::checked_position(&services, SyncToken::parse(&request.body.to)?.pos)?;
    let lists = services.keys.device_list_changes(&services.rooms, &user, from, to)?;
    Ok(get_key_changes::v3::Response::new(lists.changed, lists.left))
}

pub async fn upload_signing(
    services: Arc<Services>,
    request: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let sender = request.sender()?.clone();
    let user = sender.user_id.clone();
    // Spec v1.17: an application service uploads its users' cross-signing keys without UIA.
    let request_owner_is_appservice = sender.appservice.is_some();
    let body = request.body;
    let mut uploads = Vec::new();
    for (usage, key) in
        [(MASTER, &body.master_key), (SELF_SIGNING, &body.self_signing_key), (USER_SIGNING, &body.user_signing_key)]
    {
        if let Some(key) = key {
            uploads.push((usage, value(key)?));
        }
    }
    let uploads: Vec<(&str, &Value)> = uploads.iter().map(|(u, k)| (*u, k)).collect();
    let needs_auth = !request_owner_is_appservice && services.keys.signing_upload_needs_auth(&user, &uploads)?;
    let account = services.users.account(&user)?;
    // A replacement approved for a while: by an admin (MSC3967's admin API) or by the person on
    // the account page (the `m.oauth` stage, MSC4312).
    let approved =
        account.as_ref().and_then(|a| a.replace_keys_until_ms).is_some_and(|until| until > crate::time::now_ms());
    if needs_auth && !approved {
        // A session signed in through OAuth has no password to give the client (and an account
        // made by an upstream provider has none at all): the person approves on the account page.
        let through_oauth = services.oauth.enabled()
            && (services.oauth.grant_of_device(&user, &sender.device_id)?.is_some()
                || account.as_ref().is_some_and(|a| a.password_hash.is_none() && a.directory.is_none()));
        if through_oauth {
            let url = crate::api::oauth::action_url(&services, crate::api::oauth::CROSS_SIGNING_RESET);
            return Err(services.uia.oauth_challenge(body.auth.as_ref(), &user, "device_signing_upload", &url));
        }
        services
            .uia
            .authorize(&services.users, body.auth.as_ref(), &[&[uia::PASSWORD]], Some(&user), "device_signing_upload")
            .await?;
    }
    services.keys.upload_signing_keys(&user, &uploads).await?;
    if needs_auth && approved {
        // One approval, one replacement: the window the approval opened closes with its use, so
        // that a stolen access token cannot replace the identity again behind the person's back.
        services.users.end_key_replacement(&user).await?;
    }
    Ok(upload_signing_keys::v3::Response::new())
}

pub async fn upload_signatures(
    services: Arc<Services>,
    request: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let signer = request.sender()?.user_id.clone();
    let mut signed = Vec::new();
    for (user, keys) in &request.body.signed_keys {
        let mut objects = Vec::new();
        for (key_id, object) in keys.iter() {
            let object: Value = serde_json::from_str(object.get()).map_err(|e| Error::BadJson(e.to_string()))?;
            objects.push((key_id.to_owned(), object));
        }
        signed.push((user.clone(), objects));
    }
    // Another server's user's master key is checked against what their server says it is now
    // (a signature of it is kept here, for the signer only); a server that does not answer
    // leaves its users' keys unknown, and their signatures are refused as such.
    let remote_users = signed.iter().map(|(user, _)| (user, &()));
    let asks = by_server(&services, remote_users).into_iter().map(|(server, users)| {
        let services = services.clone();
        async move {
            let users = users.into_keys().map(|u| (u, Vec::new())).collect();
            let request = ruma::api::federation::keys::get_keys::v1::Request::new(users);
            let answer = tokio::time::timeout(REMOTE_KEYS_TIMEOUT, services.federation.send(&server, request)).await;
            (server, answer)
        }
    });
    let mut remote_masters = BTreeMap::new();
    for (server, answer) in futures::future::join_all(asks).await {
        let Ok(Ok(remote)) = answer else { continue };
        for (user, master) in remote.master_keys.into_iter().filter(|(u, _)| u.server_name() == server) {
            remote_masters.insert(user, value(&master)?);
        }
    }
    let failures = services.keys.upload_signatures(&signer, signed, &remote_masters).await?;
    let mut response = upload_signatures::v3::Response::new();
    for (user, keys) in failures {
        let mut out = BTreeMap::new();
        for (key_id, failure) in keys {
            let failure = serde_json::from_value(failure).map_err(|e| Error::Internal(e.to_string()))?;
            out.insert(key_id, failure);
        }
        response.failures.insert(user, out);
    }
    Ok(response)
}

pub async fn create_backup(
    services: Arc<Services>,
    request: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let version = services.backups.create(&user, &value(&request.body.algorithm)?).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

pub async fn latest_backup(
    services: Arc<Services>,
    request: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let info = services.backups.get(&request.sender()?.user_id, None)?;
    Ok(get_latest_backup_info::v3::Response::new(to_raw(&info.algorithm), uint(info.count), info.etag, info.version))
}

pub async fn get_backup(
    services: Arc<Services>,
    request: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let info = services.backups.get(&request.sender()?.user_id, Some(&request.body.version))?;
    Ok(get_backup_info::v3::Response::new(to_raw(&info.algorithm), uint(info.count), info.etag, info.version))
}

pub async fn update_backup(
    services: Arc<Services>,
    request: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let user = request.sender()?.user_id.clone();
    services.backups.update(&user, &request.body.version, &value(&request.body.algorithm)?).await?;
    Ok(update_backup_version::v3::Response::new())
}

pub async fn delete_backup(
    services: Arc<Services>,
    request: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    let user = request.sender()?.user_id.clone();
    services.backups.delete_version(&user, &request.body.version).await?;
    Ok(delete_backup_version::v3::Response::new())
}

type Sessions = BTreeMap<String, Value>;

fn sessions_of(sessions: &BTreeMap<String, Raw<ruma::api::client::backup::KeyBackupData>>) -> Result<Sessions> {
    sessions.iter().map(|(id, data)| Ok((id.clone(), value(data)?))).collect()
}

fn raw_sessions(sessions: Sessions) -> BTreeMap<String, Raw<ruma::api::client::backup::KeyBackupData>> {
    sessions.into_iter().map(|(id, data)| (id, to_raw(&data))).collect()
}

pub async fn put_keys(
    services: Arc<Services>,
    request: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let keys = body
        .rooms
        .iter()
        .map(|(room, backup)| Ok((room.clone(), sessions_of(&backup.sessions)?)))
        .collect::<Result<_>>()?;
    let (etag, count) = services.backups.put_keys(&user, &body.version, keys).await?;
    Ok(add_backup_keys::v3::Response::new(etag, uint(count)))
}

pub async fn put_room_keys(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let keys = BTreeMap::from([(body.room_id.clone(), sessions_of(&body.sessions)?)]);
    let (etag, count) = services.backups.put_keys(&user, &body.version, keys).await?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, uint(count)))
}

pub async fn put_session_key(
    services: Arc<Services>,
    request: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = request.body;
    let keys = BTreeMap::from([(
        body.room_id.clone(),
        BTreeMap::from([(body.session_id.clone(), value(&body.session_data)?)]),
    )]);
    let (etag, count) = services.backups.put_keys(&user, &body.version, keys).await?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, uint(count)))
}

pub async fn get_keys(
    services: Arc<Services>,
    request: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let keys = services.backups.get_keys(&user, &request.body.version, Scope::All)?;
    let rooms: BTreeMap<OwnedRoomId, RoomKeyBackup> =
        keys.into_iter().map(|(room, sessions)| (room, RoomKeyBackup::new(raw_sessions(sessions)))).collect();
    Ok(get_backup_keys::v3::Response::new(rooms))
}

pub async fn get_room_keys(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = &request.body;
    let mut keys = services.backups.get_keys(&user, &body.version, Scope::Room(body.room_id.as_str()))?;
    let sessions = keys.remove(&body.room_id).unwrap_or_default();
    Ok(get_backup_keys_for_room::v3::Response::new(raw_sessions(sessions)))
}

pub async fn get_session_key(
    services: Arc<Services>,
    request: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = &request.body;
    let scope = Scope::Session(body.room_id.as_str(), &body.session_id);
    let keys = services.backups.get_keys(&user, &body.version, scope)?;
    let data = keys
        .get(&body.room_id)
        .and_then(|s| s.get(&body.session_id))
        .ok_or_else(|| Error::not_found("no backed-up key for this session"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(to_raw(data)))
}

pub async fn delete_keys(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let (etag, count) = services.backups.delete_keys(&user, &request.body.version, Scope::All).await?;
    Ok(delete_backup_keys::v3::Response::new(etag, uint(count)))
}

pub async fn delete_room_keys(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = &request.body;
    let (etag, count) = services.backups.delete_keys(&user, &body.version, Scope::Room(body.room_id.as_str())).await?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, uint(count)))
}

pub async fn delete_session_key(
    services: Arc<Services>,
    request: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let user = request.sender()?.user_id.clone();
    let body = &request.body;
    let scope = Scope::Session(body.room_id.as_str(), &body.session_id);
    let (etag, count) = services.backups.delete_keys(&user, &body.version, scope).await?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, uint(count)))
}
