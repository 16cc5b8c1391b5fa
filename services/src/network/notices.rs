//! Server notices to many accounts at once (all of the node's, or chosen ones): sent in batches
//! by a background task, so the admin's request returns at once and the console shows how far
//! it got; one account that cannot be reached does not stop the others.

use std::sync::Arc;

use ruma::{OwnedUserId, UserId};
use serde_json::json;

pub use super::state::NoticeBatch;
use crate::{services::Services, time::now_ms};

/// Accounts sent to before the task lets others run.
const BATCH: usize = 50;
/// Batches remembered for the console.
const KEPT: usize = 20;

/// Starts sending `text` to `targets`; answers the batch's id.
pub fn start(
    services: Arc<Services>,
    by: &UserId,
    audience: String,
    targets: Vec<OwnedUserId>,
    text: String,
) -> String {
    let id = crate::users::random_password().chars().filter(char::is_ascii_alphanumeric).take(12).collect::<String>();
    {
        let mut batches = services.network_status.notice_batches.lock().expect("notice batches");
        batches.push(NoticeBatch {
            id: id.clone(),
            by: by.to_string(),
            audience,
            started_ts: now_ms(),
            total: targets.len(),
            ..Default::default()
        });
        let excess = batches.len().saturating_sub(KEPT);
        batches.drain(..excess);
    }
    let batch_id = id.clone();
    tokio::spawn(async move {
        let content = json!({ "msgtype": "m.text", "body": text });
        for chunk in targets.chunks(BATCH) {
            let (mut sent, mut failed) = (0, 0);
            for user in chunk {
                match crate::rooms::notices::send(&services, user, "m.room.message", None, content.clone()).await {
                    Ok(_) => sent += 1,
                    Err(error) => {
                        tracing::warn!(%user, %error, "a server notice of a batch was not sent");
                        failed += 1;
                    }
                }
            }
            update(&services, &batch_id, |b| {
                b.sent += sent;
                b.failed += failed;
            });
            tokio::task::yield_now().await;
        }
        update(&services, &batch_id, |b| b.finished_ts = Some(now_ms()));
    });
    id
}

fn update(services: &Services, id: &str, change: impl FnOnce(&mut NoticeBatch)) {
    let mut batches = services.network_status.notice_batches.lock().expect("notice batches");
    if let Some(batch) = batches.iter_mut().find(|b| b.id == id) {
        change(batch);
    }
}

/// The batches since start-up, newest first.
pub fn batches(services: &Services) -> Vec<NoticeBatch> {
    let mut out = services.network_status.notice_batches.lock().expect("notice batches").clone();
    out.reverse();
    out
}
