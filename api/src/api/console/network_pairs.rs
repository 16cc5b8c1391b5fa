//! The network view's data and its pairs' history: `GET /network/data` answers, as JSON, what the
//! network page draws (every node, what each says of reaching each other, what disagrees, the
//! minutes of the last day), for scripts and for the tests that check the page against it; and
//! the page's matrix of small plots, one per pair of nodes, from the minutes kept by
//! `network/links.rs`. Drawn on the server as inline SVG: no script, no download.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, response::IntoResponse, routing::get, Json, Router};
use maud::{html, Markup};
use ruma::OwnedServerName;
use serde_json::{json, Value};

use super::{duration, network::KEY_WARNING_MS, when, Page, Session, BASE};
use crate::{
    network::{
        links::{self, LinkSample, PairHistory, MINUTE_MS},
        status::{self, Link, NodeView, StatusOutcome, HISTORY_MS},
    },
    services::Services,
    time::now_ms,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router.route(&format!("{BASE}/network/data"), get(data))
}

fn link_json(link: Link) -> Value {
    match link {
        Link::Unknown => json!({ "state": "unknown" }),
        Link::NotPeer => json!({ "state": "not_peer" }),
        Link::Untried => json!({ "state": "untried" }),
        Link::Up { lag_ms } => json!({ "state": "up", "lag_ms": lag_ms }),
        Link::Down { failures, since, lag_ms } => {
            json!({ "state": "down", "failures": failures, "since": since, "lag_ms": lag_ms })
        }
    }
}

fn node_json(node: &NodeView) -> Value {
    let (status, error, fetched_ts) = match &node.stored {
        None => ("this_node", None, None),
        Some(stored) => {
            let (status, error) = match &stored.outcome {
                StatusOutcome::Document => ("document", None),
                StatusOutcome::NoStatus => ("no_status", None),
                StatusOutcome::Refused { error } => ("refused", Some(error.clone())),
                StatusOutcome::Failed { error } => ("failed", Some(error.clone())),
            };
            (status, error, Some(stored.fetched_ts))
        }
    };
    let software = node.software();
    json!({
        "server": node.server,
        "status": status,
        "error": error,
        "fetched_ts": fetched_ts,
        "document_ts": node.stored.as_ref().and_then(|s| s.last_document.as_ref()).map(|(ts, _)| *ts),
        "software": software.as_ref().map(|s| &s.name),
        "version": software.as_ref().map(|s| &s.version),
        "healthy": node.document.as_ref().map(|d| d.healthy),
        "signing_keys": node.document.as_ref().map(|d| &d.signing_keys),
        "allow": node.document.as_ref().map(|d| &d.federation.allow),
    })
}

/// `GET /network/data`: what the page shows, as JSON.
async fn data(State(services): State<Arc<Services>>, _session: Session) -> Page {
    let now = now_ms();
    let nodes = status::nodes(&services)?;
    let own_hashes = status::own_hashes(&services, &nodes)?;
    let mut links = Vec::new();
    for from in &nodes {
        for to in nodes.iter().filter(|to| to.server != from.server) {
            let mut link = link_json(status::link(from, &to.server));
            link["from"] = json!(from.server);
            link["to"] = json!(to.server);
            links.push(link);
        }
    }
    let split: Vec<Value> = status::split_rooms(&own_hashes, &nodes)
        .into_iter()
        .map(|(room, hashes)| json!({ "room_id": room, "hashes": hashes.into_iter().collect::<BTreeMap<_, _>>() }))
        .collect();
    let expiring: Vec<Value> = status::expiring_keys(&nodes, now + KEY_WARNING_MS)
        .into_iter()
        .map(|(server, key_id, until)| json!({ "server": server, "key_id": key_id, "valid_until_ts": until }))
        .collect();
    let disagreements: Vec<Value> = status::allow_disagreements(&nodes)
        .into_iter()
        .map(|(allows, refuses)| json!({ "allows": allows, "refused_by": refuses }))
        .collect();
    let mut pairs = Vec::new();
    for (from, row) in links::history(&services, now.saturating_sub(HISTORY_MS))? {
        for (to, minutes) in row {
            let minutes: Vec<Value> = minutes
                .iter()
                .map(|(minute, s)| json!({ "minute_ts": minute, "up": s.up, "down": s.down, "max_lag_ms": s.max_lag_ms }))
                .collect();
            pairs.push(json!({ "from": from, "to": to, "minutes": minutes }));
        }
    }
    let body = json!({
        "now": now,
        "nodes": nodes.iter().map(node_json).collect::<Vec<_>>(),
        "links": links,
        "problems": {
            "allow_disagreements": disagreements,
            "versions": status::versions(&nodes),
            "expiring_keys": expiring,
            "split_rooms": split,
        },
        "shared_rooms_compared": own_hashes.len(),
        "history": { "minute_ms": MINUTE_MS, "pairs": pairs },
    });
    Ok(Json(body).into_response())
}

/// The width and height of one pair's plot.
const W: f64 = 160.0;
const H: f64 = 36.0;

/// One pair's last day as a small plot: a red band for each minute in which the sending node
/// said it could not reach the other, the lag as a line (scaled to the pair's own highest), on a
/// time axis shared by every plot of the matrix so that a cut lines up across pairs.
fn sparkline(from: &str, to: &str, minutes: &[(u64, LinkSample)], start: u64, now: u64) -> Markup {
    let span = now.saturating_sub(start).max(MINUTE_MS) as f64;
    let x = |ts: u64| ts.saturating_sub(start) as f64 / span * W;
    let width = (MINUTE_MS as f64 / span * W).max(2.0);
    let highest = minutes.iter().map(|(_, s)| s.max_lag_ms).max().unwrap_or(0);
    let y = |lag: u64| H - 3.0 - (lag as f64 / highest.max(1) as f64) * (H - 8.0);
    let points: Vec<String> =
        minutes.iter().map(|(ts, s)| format!("{:.1},{:.1}", x(*ts) + width / 2.0, y(s.max_lag_ms))).collect();
    let down = links::minutes_down(minutes);
    let last_down = minutes.iter().rev().find(|(_, s)| s.down > 0).map(|(ts, _)| *ts);
    let mut summary = format!(
        "{from} to {to}: {} minutes observed, unreachable in {down}, longest lag {}",
        minutes.len(),
        duration(highest)
    );
    if let Some(ts) = last_down {
        summary.push_str(&format!(", last unreachable in the minute of {}", when(Some(ts))));
    }
    html! {
        svg.spark viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label=(summary) xmlns="http://www.w3.org/2000/svg" {
            rect x="0" y="0" width=(W) height=(H) fill="#f6f7f9" stroke="#6b7280" {}
            @for (ts, s) in minutes {
                @if s.down > 0 {
                    rect.cut x=(format!("{:.1}", x(*ts))) y="0" width=(format!("{width:.1}")) height=(H) fill="#f4b4bd" {}
                } @else {
                    rect.ok x=(format!("{:.1}", x(*ts))) y=(H - 3.0) width=(format!("{width:.1}")) height="3" fill="#18753c" {}
                }
            }
            @if points.len() > 1 {
                polyline points=(points.join(" ")) fill="none" stroke="#1d4ed8" stroke-width="1.5" {}
            }
        }
        br;
        span.detail {
            @if down > 0 { span.bad { (down) " min unreachable" } } @else { "always reachable" }
            @if highest > 0 { ", lag up to " (duration(highest)) }
        }
    }
}

/// The page's section of pair plots: one row and one column per node, as the reachability matrix.
pub fn pairs_section(services: &Services, nodes: &[NodeView]) -> Result<Markup, super::Failure> {
    let now = now_ms();
    let history = links::history(services, now.saturating_sub(HISTORY_MS))?;
    let start = history
        .values()
        .flat_map(|row| row.values())
        .filter_map(|minutes| minutes.first().map(|(ts, _)| *ts))
        .min()
        .unwrap_or(now);
    let none: PairHistory = Vec::new();
    let row_of = |from: &OwnedServerName| history.get(from);
    Ok(html! {
        section aria-labelledby="pairs" {
            h2 #pairs { "Each pair over the last 24 hours" }
            p {
                "One plot per pair, minute by minute since " (when(Some(start))) ": red where the row's node said it could not reach the column's node, the line its lag, green underneath where it could."
            }
            div.scroll {
                table.pairs {
                    caption { "What each node (row) said of reaching each other node (column), minute by minute" }
                    thead { tr {
                        th scope="col" { "From \\ to" }
                        @for node in nodes { th scope="col" { code { (node.server.as_str()) } } }
                    } }
                    tbody {
                        @for from in nodes {
                            tr {
                                th scope="row" { code { (from.server.as_str()) } }
                                @for to in nodes {
                                    @if from.server == to.server {
                                        td.self { "—" }
                                    } @else {
                                        @let minutes = row_of(&from.server).and_then(|row| row.get(&to.server)).unwrap_or(&none);
                                        @if minutes.is_empty() {
                                            td.unknown { "no history" }
                                        } @else {
                                            td { (sparkline(from.server.as_str(), to.server.as_str(), minutes, start, now)) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}
