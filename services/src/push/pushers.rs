//! Pushers: where a user's devices want push notifications delivered (a push gateway URL for
//! `http` pushers), as `POST /pushers/set` records them, keyed by (user, app id, pushkey).

use ruma::{
    api::client::push::{Pusher, PusherIds, PusherKind},
    OwnedDeviceId, OwnedUserId, UserId,
};

pub use super::tables::PusherRecord;
use crate::{
    db::{
        codec::{prefix, prefix2, Json},
        Batch,
    },
    error::{Error, Result},
    services::Services,
};

/// The path a push gateway serves notifications on (Push Gateway API).
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// The user's pushers.
pub fn list(services: &Services, user: &UserId) -> Result<Vec<Pusher>> {
    let mut out = Vec::new();
    for entry in services.db.tables.push.useridpushkey_pusher.scan_prefix(prefix(&user.to_owned())) {
        let (_, Json(record)) = entry?;
        match serde_json::from_value(record.pusher) {
            Ok(pusher) => out.push(pusher),
            Err(error) => tracing::warn!(%user, %error, "a stored pusher is unreadable"),
        }
    }
    Ok(out)
}

/// Checks a pusher before it is stored: an `http` pusher needs an absolute http(s) URL to a push
/// gateway's notify path; `email` pushers need an email sender this server does not have.
fn validate(pusher: &Pusher) -> Result<()> {
    if pusher.ids.app_id.is_empty() || pusher.ids.app_id.len() > 64 {
        return Err(Error::invalid_param("app_id must be 1 to 64 bytes"));
    }
    if pusher.ids.pushkey.is_empty() || pusher.ids.pushkey.len() > 512 {
        return Err(Error::invalid_param("pushkey must be 1 to 512 bytes"));
    }
    match &pusher.kind {
        PusherKind::Http(http) => {
            let url = reqwest::Url::parse(&http.url)
                .map_err(|e| Error::invalid_param(format!("the pusher url is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.path() != NOTIFY_PATH {
                return Err(Error::invalid_param(format!(
                    "the pusher url must be an http(s) URL ending in {NOTIFY_PATH}"
                )));
            }
            Ok(())
        }
        PusherKind::Email(_) => {
            Err(Error::invalid_param("email pushers are not supported: this server sends no email"))
        }
        _ => Err(Error::invalid_param("kind must be http")),
    }
}

/// Creates or replaces a pusher. Without `append`, the same app id and pushkey registered by
/// other users is removed (the device now belongs to this user).
pub fn set(services: &Services, user: &UserId, device: &OwnedDeviceId, pusher: Pusher, append: bool) -> Result<()> {
    validate(&pusher)?;
    let tables = &services.db.tables;
    let _guard = services.push.pusher_writes.lock().expect("pusher writes");
    let (app_id, pushkey) = (pusher.ids.app_id.clone(), pusher.ids.pushkey.clone());
    let mut batch = Batch::new();
    if !append {
        for entry in tables.push.appidpushkey_userid.scan_prefix(prefix2(&app_id, &pushkey)) {
            let ((_, _, other), _) = entry?;
            if other != user {
                tables.push.useridpushkey_pusher.remove(&mut batch, &(other.clone(), app_id.clone(), pushkey.clone()));
                tables.push.appidpushkey_userid.remove(&mut batch, &(app_id.clone(), pushkey.clone(), other));
            }
        }
    }
    let value = serde_json::to_value(&pusher).map_err(|e| Error::Internal(e.to_string()))?;
    let record = PusherRecord { pusher: value, device_id: device.clone(), created_ms: crate::time::now_ms() };
    let owner: OwnedUserId = user.to_owned();
    services.push.add_pusher_owner(user);
    tables.push.useridpushkey_pusher.insert(
        &mut batch,
        &(owner.clone(), app_id.clone(), pushkey.clone()),
        &Json(record),
    );
    tables.push.appidpushkey_userid.insert(&mut batch, &(app_id, pushkey, owner), &Vec::new());
    services.db.commit(batch)?;
    Ok(())
}

/// Removes a pusher (nothing to do when there is none).
pub fn delete(services: &Services, user: &UserId, ids: PusherIds) -> Result<()> {
    let tables = &services.db.tables;
    let _guard = services.push.pusher_writes.lock().expect("pusher writes");
    let mut batch = Batch::new();
    let owner: OwnedUserId = user.to_owned();
    tables.push.useridpushkey_pusher.remove(&mut batch, &(owner.clone(), ids.app_id.clone(), ids.pushkey.clone()));
    tables.push.appidpushkey_userid.remove(&mut batch, &(ids.app_id, ids.pushkey, owner));
    services.db.commit(batch)?;
    Ok(())
}
