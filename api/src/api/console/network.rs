//! The network: every node this one federates with, drawn from the signed status documents they
//! publish (network/status.rs): a matrix of who reaches whom and with what lag, keys about to
//! expire, allow-lists that disagree, versions that differ, rooms whose state differs between
//! nodes, and a day of history as plots (inline SVG drawn here: no script, no download).

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, routing::post, Router};
use maud::{html, Markup};
use ruma::OwnedServerName;

use super::{button_form, done, duration, page, when, Change, Page, Query, Session, BASE};
use crate::{
    network::status::{self, Link, NodeView, Sample, StatusOutcome},
    services::Services,
    time::now_ms,
};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/network"), axum::routing::get(view))
        .route(&format!("{BASE}/network/refresh"), post(refresh))
}

/// Keys whose published validity ends within this are shown as about to expire.
pub(super) const KEY_WARNING_MS: u64 = 6 * 3600 * 1000;

/// How a node's document came, in words, and whether that is good.
fn outcome(node: &NodeView) -> (String, bool) {
    let Some(stored) = &node.stored else { return ("this node".to_owned(), true) };
    match &stored.outcome {
        StatusOutcome::Document => (format!("status at {}", when(Some(stored.fetched_ts))), true),
        StatusOutcome::NoStatus => ("no status (the server publishes none)".to_owned(), true),
        StatusOutcome::Refused { error } => (format!("refused: {error}"), false),
        StatusOutcome::Failed { error } => (format!("unreachable: {error}"), false),
    }
}

fn cell(from: &NodeView, to: &NodeView) -> Markup {
    if from.server == to.server {
        return html! { td.self { "—" } };
    }
    match status::link(from, &to.server) {
        Link::Unknown => html! { td.unknown { "no status" } },
        Link::NotPeer => html! { td.unknown { "not a peer" } },
        Link::Untried => html! { td.unknown { "not tried" } },
        Link::Up { lag_ms } => html! {
            td.up { span.good { "reachable" } @if lag_ms > 0 { br; "lag " (duration(lag_ms)) } }
        },
        Link::Down { failures, since, lag_ms } => html! {
            td.down {
                span.bad { "unreachable" } br; (failures) " failures since " (when(since))
                @if lag_ms > 0 { br; "lag " (duration(lag_ms)) }
            }
        },
    }
}

/// A plot of one series of samples: a polyline in a fixed box from the first sample kept (a day
/// at most) to now, with the largest value and the time range written below it for those who
/// cannot see it.
fn plot(label: &str, samples: &[(u64, Sample)], value: impl Fn(&Sample) -> f64, unit: &str, now: u64) -> Markup {
    const W: f64 = 480.0;
    const H: f64 = 80.0;
    let start = samples.first().map_or(now, |(ts, _)| *ts).max(now.saturating_sub(status::HISTORY_MS));
    let span = now.saturating_sub(start).max(1000) as f64;
    let highest = samples.iter().map(|(_, s)| value(s)).fold(0.0_f64, f64::max);
    let scale = highest.max(1.0);
    let points: Vec<String> = samples
        .iter()
        .filter(|(ts, _)| *ts >= start)
        .map(|(ts, s)| {
            let x = (ts - start) as f64 / span * W;
            let y = H - value(s) / scale * (H - 4.0) - 2.0;
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let summary = format!("{label}: {} samples since {}, highest {highest:.0}{unit}", points.len(), when(Some(start)));
    html! {
        figure.plot {
            svg viewBox=(format!("0 0 {W} {H}")) width=(W) height=(H) role="img" aria-label=(summary) xmlns="http://www.w3.org/2000/svg" {
                rect x="0" y="0" width=(W) height=(H) fill="#f6f7f9" stroke="#6b7280" {}
                @if points.len() == 1 {
                    @let (x, y) = points[0].split_once(',').unwrap_or(("0", "0"));
                    circle cx=(x) cy=(y) r="3" fill="#1d4ed8" {}
                } @else if !points.is_empty() {
                    polyline points=(points.join(" ")) fill="none" stroke="#1d4ed8" stroke-width="2" {}
                }
            }
            figcaption { (summary) }
        }
    }
}

/// `GET /network`.
async fn view(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let now = now_ms();
    let nodes = status::nodes(&services)?;
    let own_hashes = status::own_hashes(&services, &nodes)?;
    let split = status::split_rooms(&own_hashes, &nodes);
    let disagreements = status::allow_disagreements(&nodes);
    let expiring = status::expiring_keys(&nodes, now + KEY_WARNING_MS);
    let versions = status::versions(&nodes);
    let mut histories: BTreeMap<OwnedServerName, Vec<(u64, Sample)>> = BTreeMap::new();
    for node in &nodes {
        histories.insert(
            node.server.clone(),
            status::history(&services, &node.server, now.saturating_sub(status::HISTORY_MS))?,
        );
    }
    let shared_rooms = own_hashes.len();
    let pairs = super::network_pairs::pairs_section(&services, &nodes)?;
    let content = html! {
        p {
            "Every node publishes a signed status document to the servers it federates with; this node asks each of its peers every "
            (duration(services.config.network.status_interval_ms())) " (" code { "network.status_interval" } ")."
        }
        (button_form(&session, "/network/refresh", &[], "Ask every node now", None))
        section aria-labelledby="matrix" {
            h2 #matrix { "Reachability" }
            div.scroll {
                table.matrix {
                    caption { "What each node (row) says of sending to each other node (column)" }
                    thead { tr {
                        th scope="col" { "From \\ to" }
                        @for node in &nodes { th scope="col" { code { (node.server.as_str()) } } }
                    } }
                    tbody {
                        @for from in &nodes {
                            tr {
                                th scope="row" { code { (from.server.as_str()) } }
                                @for to in &nodes { (cell(from, to)) }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="nodes" {
            h2 #nodes { "Nodes" }
            div.scroll {
                table {
                    caption { "Every node and what its status document says" }
                    thead { tr {
                        th scope="col" { "Node" }
                        th scope="col" { "Status" }
                        th scope="col" { "Version" }
                        th scope="col" { "Up for" }
                        th scope="col" { "Health" }
                        th scope="col" { "Signing keys" }
                        th scope="col" { "Allow-list" }
                        th scope="col" { "Access rules" }
                    } }
                    tbody {
                        @for node in &nodes {
                            @let (said, good) = outcome(node);
                            tr {
                                th scope="row" { code { (node.server.as_str()) } }
                                td { @if good { (said) } @else { span.bad { (said) } } }
                                @match &node.document {
                                    Some(d) => {
                                        td { (d.software) " " (d.version) }
                                        td { (duration(d.uptime_ms)) }
                                        td {
                                            @if d.healthy { span.good { "healthy" } } @else { span.bad { (d.problems.join("; ")) } }
                                            @if let Some(c) = &d.clamd { br; "clamd: " (service(c)) }
                                            @if let Some(s) = &d.smtp { br; "SMTP: " (service(s)) }
                                        }
                                        td {
                                            @for key in &d.signing_keys {
                                                code { (key.key_id) }
                                                @if let Some(until) = key.valid_until_ts { " valid until " (when(Some(until))) }
                                                @if let Some(at) = key.expired_ts { " retired " (when(Some(at))) }
                                                br;
                                            }
                                        }
                                        td {
                                            @if !d.federation.enabled { "federation off" }
                                            @else if let Some(list) = &d.federation.allow {
                                                @for s in list { code { (s.as_str()) } br; }
                                            } @else { "open to every server" }
                                        }
                                        td {
                                            (d.access_rules.role)
                                            @if d.access_rules.enabled { ", rules enforced" } @else { ", no rules" }
                                        }
                                    }
                                    None => {
                                        td { @if let Some(s) = node.software() { (s.name) " " (s.version) } @else { "—" } }
                                        td colspan="5" { "no status" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="problems" {
            h2 #problems { "What disagrees" }
            ul.problems {
                @for (a, b) in &disagreements {
                    li.bad { "Allow-lists disagree: " code { (a.as_str()) } " lets " code { (b.as_str()) } " in, but " code { (b.as_str()) } " does not let " code { (a.as_str()) } " in." }
                }
                @if versions.len() > 1 {
                    li.bad {
                        "Nodes run different versions: "
                        @for (version, servers) in &versions {
                            (version) " (" (servers.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")) "); "
                        }
                    }
                }
                @for (server, key, until) in &expiring {
                    li.bad { "The key " code { (key) } " of " code { (server.as_str()) } " is valid only until " (when(Some(*until))) "." }
                }
                @for (room, hashes) in &split {
                    li.bad {
                        "Room " code { (room.as_str()) } " is split: its state differs between "
                        @for (server, hash) in hashes { code { (server.as_str()) } " (" (hash.get(..12).unwrap_or(hash)) ") " }
                    }
                }
                @if disagreements.is_empty() && versions.len() <= 1 && expiring.is_empty() && split.is_empty() {
                    li.good { "Nothing: allow-lists agree, every node runs the same version, no key is about to expire, and the "
                        (shared_rooms) " shared rooms compared have the same state everywhere." }
                }
            }
        }
        section aria-labelledby="history" {
            h2 #history { "History (24 hours at most)" }
            @for node in &nodes {
                @let samples = histories.get(&node.server).map(Vec::as_slice).unwrap_or(&[]);
                h3 { code { (node.server.as_str()) } }
                @if samples.iter().all(|(_, s)| !s.answered) {
                    p { "No status in the last 24 hours." }
                } @else {
                    (plot("Peers reachable", samples, |s| f64::from(s.reachable_peers), "", now))
                    (plot("Longest lag (s)", samples, |s| s.max_lag_ms as f64 / 1000.0, " s", now))
                }
            }
        }
        (pairs)
    };
    page(&session, "/network", "Network", query.notice(&session), content)
}

fn service(health: &status::ServiceHealth) -> Markup {
    html! {
        @match (health.healthy, &health.error) {
            (Some(false), Some(e)) => span.bad { "down (" (e) ")" },
            (Some(false), None) => span.bad { "down" },
            (Some(true), _) => span.good { "up" },
            (None, _) => "not checked yet",
        }
    }
}

/// `POST /network/refresh`: asks every node for its document now.
async fn refresh(State(services): State<Arc<Services>>, change: Change) -> Page {
    services.network_status.refresh.notify_one();
    done(&change.session, "/network", vec![], "Every node is being asked for its status now.")
}
