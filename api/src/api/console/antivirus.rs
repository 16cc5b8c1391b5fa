//! Antivirus: clamd's state and the `when_unavailable` policy, a probe of clamd, and every
//! quarantined (infected) file with the signature that matched (docs/antivirus.md).

use std::sync::Arc;

use axum::{extract::State, routing::post, Router};
use maud::html;

use super::{button_form, done, page, when, Change, Page, Query, Session, BASE};
use crate::{config::WhenUnavailable, services::Services};

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(&format!("{BASE}/antivirus"), axum::routing::get(overview))
        .route(&format!("{BASE}/antivirus/probe"), post(probe))
}

/// `GET /antivirus`.
async fn overview(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let Some(antivirus) = services.media.antivirus() else {
        let content = html! {
            p { "No antivirus is set up: files are served unscanned. Set " code { "[antivirus] clamd" } " (docs/antivirus.md)." }
        };
        return page(&session, "/antivirus", "Antivirus", query.notice(&session), content);
    };
    let status = antivirus.status();
    let infected = services.media.infected_media()?;
    let content = html! {
        section aria-labelledby="clamd" {
            h2 #clamd { "ClamAV" }
            dl {
                dt { "clamd" } dd { code { (antivirus.clamd_address()) } }
                dt { "State" }
                dd {
                    @match &status.last_error {
                        Some((at, error)) => span.bad { "unreachable since " (when(Some(*at))) ": " (error) },
                        None if status.last_ok_ts.is_some() => span.good { "answering (last at " (when(status.last_ok_ts)) ")" },
                        None => "not asked yet",
                    }
                }
                dt { "Signatures" }
                dd {
                    @match &status.signatures {
                        Some(version) => code { (version) },
                        None => "not known yet",
                    }
                }
                dt { "While clamd is down" }
                dd {
                    @match antivirus.when_unavailable() {
                        WhenUnavailable::Refuse => "downloads are refused (when_unavailable = \"refuse\")",
                        WhenUnavailable::Serve => span.bad { "files are served unscanned (when_unavailable = \"serve\")" },
                    }
                }
                dt { "Served unscanned since start" } dd { (status.served_unscanned) }
                dt { "Largest file scanned" } dd { (antivirus.max_scan_size()) " bytes" }
            }
            (button_form(&session, "/antivirus/probe", &[], "Ask clamd now", None))
        }
        section aria-labelledby="quarantine" {
            h2 #quarantine { "Quarantined files" }
            @if infected.is_empty() {
                p { "No infected file has been found." }
            } @else {
                div.scroll {
                    table {
                        caption { "Files found infected: served to nobody" }
                        thead { tr {
                            th scope="col" { "Media" }
                            th scope="col" { "Signature" }
                            th scope="col" { "Found" }
                            th scope="col" { "Uploader" }
                            th scope="col" { "Name and type" }
                            th scope="col" { "Size" }
                        } }
                        tbody {
                            @for file in &infected {
                                tr {
                                    th scope="row" { code { "mxc://" (file.server_name.as_str()) "/" (file.media_id) } }
                                    td.bad { (file.signature) }
                                    td { (when(Some(file.found_ts))) }
                                    td {
                                        @match &file.uploader {
                                            Some(user) => code { (user.as_str()) },
                                            None => { "from " code { (file.server_name.as_str()) } },
                                        }
                                    }
                                    td { (file.filename.as_deref().unwrap_or("—")) " · " (file.content_type.as_deref().unwrap_or("—")) }
                                    td { (file.size) " bytes" }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(&session, "/antivirus", "Antivirus", query.notice(&session), content)
}

/// `POST /antivirus/probe`: asks clamd for its version now.
async fn probe(State(services): State<Arc<Services>>, change: Change) -> Page {
    let message = match services.media.antivirus() {
        None => "No antivirus is set up.".to_owned(),
        Some(antivirus) => match antivirus.probe().await {
            Ok(version) => format!("clamd answers: {version}."),
            Err(error) => format!("clamd does not answer: {error}."),
        },
    };
    done(&change.session, "/antivirus", vec![], &message)
}
