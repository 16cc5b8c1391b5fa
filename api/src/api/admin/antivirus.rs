//! `GET /_synapse/admin/v1/antivirus` (Hemicycle's own; Synapse has no antivirus): clamd's state,
//! the policy, and every quarantined (infected) file with the signature that matched.

use std::sync::Arc;

use axum::{extract::State, routing::get, Router};
use serde_json::{json, Value};

use super::{ok, Admin, Answer};
use crate::{config::WhenUnavailable, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route("/_synapse/admin/v1/antivirus", get(report))
}

/// What the admin API and the console show of the antivirus.
pub(crate) fn summary(services: &Services) -> Result<Value, crate::error::Error> {
    let Some(antivirus) = services.media.antivirus() else {
        return Ok(json!({ "enabled": false, "quarantined": [], "total": 0 }));
    };
    let status = antivirus.status();
    let quarantined: Vec<Value> = services
        .media
        .infected_media()?
        .into_iter()
        .map(|m| {
            json!({
                "media_id": m.media_id,
                "server_name": m.server_name,
                "mxc": format!("mxc://{}/{}", m.server_name, m.media_id),
                "uploader": m.uploader,
                "content_type": m.content_type,
                "upload_name": m.filename,
                "media_length": m.size,
                "sha256": m.sha256,
                "signature": m.signature,
                "found_ts": m.found_ts,
                "created_ts": m.created_ts,
            })
        })
        .collect();
    Ok(json!({
        "enabled": true,
        "clamd": antivirus.clamd_address(),
        "when_unavailable": match antivirus.when_unavailable() {
            WhenUnavailable::Refuse => "refuse",
            WhenUnavailable::Serve => "serve",
        },
        "max_scan_size": antivirus.max_scan_size(),
        "last_ok_ts": status.last_ok_ts,
        "last_error": status.last_error.as_ref().map(|(_, e)| e),
        "last_error_ts": status.last_error.as_ref().map(|(ts, _)| ts),
        "served_unscanned": status.served_unscanned,
        "signatures": status.signatures,
        "total": quarantined.len(),
        "quarantined": quarantined,
    }))
}

async fn report(State(services): State<Arc<Services>>, _admin: Admin) -> Answer {
    ok(summary(&services)?)
}
