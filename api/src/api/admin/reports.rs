//! Event reports users filed (`POST /rooms/{room}/report/{event}`): list, details, delete.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    routing::get,
    Router,
};
use ruma::events::StateEventType;
use serde_json::{json, Value};

use super::{ok, paginate, Admin, Answer, Params};
use crate::{
    api::error::ApiError,
    error::Error,
    reports::{Report, Subject},
    services::Services,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route("/_synapse/admin/v1/event_reports", get(list))
        .route("/_synapse/admin/v1/event_reports/{report_id}", get(details).delete(delete))
}

/// A report of an event as Synapse lists it; none for reports of rooms or users.
pub(crate) fn report_json(services: &Services, id: u64, report: &Report) -> Result<Option<Value>, ApiError> {
    let Subject::Event { room_id, event_id } = &report.subject else { return Ok(None) };
    let text = |kind: StateEventType, field: &str| -> Result<Value, ApiError> {
        Ok(services
            .rooms
            .state_event(room_id, &kind, "")?
            .and_then(|e| serde_json::from_str::<Value>(e.content.get()).ok())
            .and_then(|c| c.get(field).cloned())
            .unwrap_or(Value::Null))
    };
    let sender = services.rooms.pdu(event_id)?.map(|p| p.sender.to_string());
    Ok(Some(json!({
        "id": id,
        "received_ts": report.received_ts,
        "room_id": room_id,
        "name": text(StateEventType::RoomName, "name")?,
        "canonical_alias": text(StateEventType::RoomCanonicalAlias, "alias")?,
        "event_id": event_id,
        "user_id": report.reporter,
        "reason": report.reason,
        "score": Value::Null,
        "sender": sender,
    })))
}

/// Every report of an event, oldest first, as [`report_json`] shows it (the admin API's list and
/// the console's).
pub(crate) fn event_reports(services: &Services) -> Result<Vec<Value>, ApiError> {
    let mut rows = Vec::new();
    for (id, report) in services.reports.list()? {
        rows.extend(report_json(services, id, &report)?);
    }
    Ok(rows)
}

/// `GET /_synapse/admin/v1/event_reports`: newest first (`dir=f`: oldest first), filtered by
/// `room_id`, `user_id` (the reporter), `event_sender_user_id`; `from`, `limit`.
async fn list(State(services): State<Arc<Services>>, _: Admin, params: Params) -> Answer {
    let (from, limit) = params.page()?;
    let oldest_first = match params.str("dir") {
        None | Some("b") => false,
        Some("f") => true,
        Some(_) => return Err(Error::invalid_param("dir must be f or b").into()),
    };
    let mut rows = Vec::new();
    for json in event_reports(&services)? {
        let matches = |param: &str, field: &str| params.str(param).is_none_or(|v| json[field].as_str() == Some(v));
        if matches("room_id", "room_id") && matches("user_id", "user_id") && matches("event_sender_user_id", "sender") {
            rows.push(json);
        }
    }
    if !oldest_first {
        rows.reverse();
    }
    let total = rows.len();
    let (page, next) = paginate(rows, from, limit);
    let mut body = json!({ "event_reports": page, "total": total });
    if let Some(next) = next {
        body["next_token"] = json!(next);
    }
    ok(body)
}

/// A report id from a path or form: 400 when it is not a number.
pub(crate) fn report_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse().map_err(|_| {
        Error::invalid_param("The report_id parameter must be a string representing a positive integer.").into()
    })
}

async fn details(State(services): State<Arc<Services>>, _: Admin, Path(id): Path<String>) -> Answer {
    let id = report_id(&id)?;
    let report = services.reports.get(id)?.ok_or_else(|| Error::not_found("Event report not found"))?;
    let mut json = report_json(&services, id, &report)?.ok_or_else(|| Error::not_found("Event report not found"))?;
    let event_id = json["event_id"].as_str().and_then(|e| ruma::EventId::parse(e).ok());
    json["event_json"] = match event_id {
        Some(event_id) => {
            services.rooms.pdu_json(&event_id)?.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null)
        }
        None => Value::Null,
    };
    ok(json)
}

async fn delete(State(services): State<Arc<Services>>, admin: Admin, Path(id): Path<String>) -> Answer {
    delete_report(&services, &admin, report_id(&id)?)?;
    ok(json!({}))
}

/// Deletes a report (404 when there is none) and records it; shared with the console.
pub(crate) fn delete_report(services: &Services, admin: &Admin, id: u64) -> Result<(), ApiError> {
    if !services.reports.delete(id)? {
        return Err(Error::not_found("Event report not found").into());
    }
    admin.audit(services, "report.delete", &id.to_string(), json!({}))
}
