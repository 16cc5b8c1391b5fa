//! "This node": version, uptime, counts, activity, database size, signing keys (and their
//! rotation, with the admin's second factor) and the TLS certificate's expiry; and the audit log.

use std::{
    sync::{Arc, OnceLock},
    time::Instant,
};

use axum::{
    extract::State,
    response::{IntoResponse, Redirect},
    routing::{get, post},
    Router,
};
use maud::html;
use serde_json::{json, Value};

use super::{done, duration, page, pager, when, Change, Page, Query, Session, BASE};
use crate::{db::codec::Be64, error::Error, services::Services, time::now_ms};

/// When the console was mounted, i.e. when the server started serving.
static STARTED: OnceLock<Instant> = OnceLock::new();

/// Notes the start time (called once, when the router is built at start-up).
pub fn started() {
    STARTED.get_or_init(Instant::now);
}

/// The window over which "events per second" is averaged.
const RATE_WINDOW_MS: u64 = 60_000;

/// The most events read back to measure the rate, so the page stays cheap under load.
const RATE_SCAN_CAP: usize = 20_000;

pub fn routes(router: Router<Arc<Services>>) -> Router<Arc<Services>> {
    router
        .route(BASE, get(overview))
        .route(&format!("{BASE}/"), get(|| async { Redirect::to(BASE).into_response() }))
        .route(&format!("{BASE}/audit"), get(audit))
        .route(&format!("{BASE}/keys/rotate"), post(rotate_key))
}

/// `POST /keys/rotate`: a new signing key from now on, the old one published as retired (what
/// `hemicycle server rotate-key` does on a stopped server). Asks the admin's second factor: a
/// rotation makes every other server fetch our keys again.
async fn rotate_key(State(services): State<Arc<Services>>, change: Change) -> Page {
    change.second_factor(&services)?;
    let old = services.server_keys.key_id();
    let new = services.server_keys.rotate_live(&services.db)?;
    change.admin().audit(&services, "server.rotate_key", &new, json!({ "retired": old }))?;
    done(&change.session, "", vec![], &format!("Signing key rotated: {new} signs from now on, {old} is retired."))
}

/// Events appended (local or received) over the last minute, per second: the newest stream
/// entries read back until one is older than the window.
fn events_per_second(services: &Services) -> Result<f64, Error> {
    let since = now_ms().saturating_sub(RATE_WINDOW_MS);
    let table = &services.db.tables.rooms.pos_eventid;
    let mut count = 0usize;
    for entry in table.scan_from(Vec::new(), Be64(u64::MAX).0.to_be_bytes().to_vec(), false).take(RATE_SCAN_CAP) {
        let (_, event_id) = entry?;
        let Some(pdu) = services.rooms.pdu(&event_id)? else { continue };
        if u64::from(pdu.origin_server_ts.0) < since {
            break;
        }
        count += 1;
    }
    Ok(count as f64 / (RATE_WINDOW_MS as f64 / 1000.0))
}

/// The expiry (`notAfter`, ms since the epoch) of the first certificate of a PEM file.
fn certificate_expiry(path: &std::path::Path) -> Result<u64, String> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let cert = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{} holds no certificate", path.display()))?
        .map_err(|e| format!("{} is not PEM: {e}", path.display()))?;
    x509_not_after(&cert).ok_or_else(|| format!("{} is not a certificate this console can read", path.display()))
}

/// One DER element: (tag, contents, rest).
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        (rest[..n].iter().fold(0usize, |acc, b| acc << 8 | *b as usize), &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// `tbsCertificate.validity.notAfter` of an X.509 certificate (RFC 5280 §4.1), as ms.
fn x509_not_after(cert: &[u8]) -> Option<u64> {
    let (_, certificate, _) = der(cert)?;
    let (_, tbs, _) = der(certificate)?;
    let mut rest = tbs;
    // The optional explicit [0] version, then serial number and signature algorithm.
    if rest.first() == Some(&0xa0) {
        rest = der(rest)?.2;
    }
    rest = der(rest)?.2;
    rest = der(rest)?.2;
    rest = der(rest)?.2; // issuer
    let (_, validity, _) = der(rest)?;
    let (_, _, after) = der(validity)?;
    let (tag, time, _) = der(after)?;
    let text = std::str::from_utf8(time).ok()?.strip_suffix('Z')?;
    let (year, rest) = match tag {
        0x17 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, text.get(2..)?)
        }
        0x18 => (text.get(..4)?.parse().ok()?, text.get(4..)?),
        _ => return None,
    };
    let field = |i: usize| -> Option<i64> { rest.get(i..i + 2)?.parse().ok() };
    let (month, day, hour, minute, second) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

/// Days since 1970-01-01 of a Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `GET /_hemicycle/console`: the node at a glance.
async fn overview(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let config = &services.config;
    let accounts = services.users.list()?;
    let active = accounts.iter().filter(|(_, a)| !a.deactivated).count();
    let admins = accounts.iter().filter(|(_, a)| a.admin && !a.deactivated).count();
    let rooms = services.db.tables.rooms.roomid_room.iter().count();
    let rate = events_per_second(&services)?;
    let uptime = STARTED.get().map(|s| s.elapsed().as_millis() as u64).unwrap_or(0);
    let document = services.server_keys.key_document()?;
    let valid_until = document.get("valid_until_ts").and_then(|v| v.to_string().parse::<u64>().ok());
    let old_keys: Vec<(String, Option<u64>)> = match document.get("old_verify_keys") {
        Some(ruma::CanonicalJsonValue::Object(keys)) => keys
            .iter()
            .map(|(id, key)| {
                let expired = match key {
                    ruma::CanonicalJsonValue::Object(k) => k.get("expired_ts").and_then(|v| v.to_string().parse().ok()),
                    _ => None,
                };
                (id.clone(), expired)
            })
            .collect(),
        _ => Vec::new(),
    };
    let certificate = config.tls.cert.as_ref().map(|path| (path.display().to_string(), certificate_expiry(path)));
    let now = now_ms();
    let content = html! {
        section aria-labelledby="node-facts" {
            h2 #node-facts { "Server" }
            dl.facts {
                dt { "Server name" } dd { (config.server_name.as_str()) }
                dt { "Version" } dd { "Hemicycle " (env!("CARGO_PKG_VERSION")) }
                dt { "Uptime" } dd { (duration(uptime)) }
                dt { "Accounts" } dd { (active) " active (" (admins) " admins), " (accounts.len() - active) " deactivated" }
                dt { "Rooms" } dd { (rooms) }
                dt { "Events per second" } dd { (format!("{rate:.2}")) " (last minute)" }
                dt { "Database size" } dd { (bytes(services.db.size_on_disk())) }
                dt { "Federation" } dd {
                    @if !config.federation.enabled { "disabled" }
                    @else { @match services.federation.allow_list.servers() {
                        None => "open to every server",
                        Some(list) => { "only with " (list.len()) " allowed servers" },
                    } }
                }
            }
        }
        section aria-labelledby="keys" {
            h2 #keys { "Signing keys" }
            table {
                caption { "This node's ed25519 keys, as other servers fetch them" }
                thead { tr { th scope="col" { "Key id" } th scope="col" { "Status" } th scope="col" { "Valid until / retired" } } }
                tbody {
                    tr {
                        th scope="row" { code { (services.server_keys.key_id()) } }
                        td { "current" }
                        td { (when(valid_until)) " (renewed with every fetch)" }
                    }
                    @for (id, expired) in &old_keys {
                        tr { th scope="row" { code { (id) } } td { "retired" } td { (when(*expired)) } }
                    }
                }
            }
            form.stack method="post" action=(format!("{BASE}/keys/rotate")) data-confirm="Rotate the signing key? Every other server fetches the new one." {
                (session.csrf_field())
                (super::totp_field("rotate-totp"))
                button.danger type="submit" { "Rotate the signing key" }
            }
        }
        section aria-labelledby="tls" {
            h2 #tls { "TLS certificate" }
            @match &certificate {
                None => p { "No " code { "tls.cert" } " is set: the federation listener is off." },
                Some((path, Ok(expiry))) => p {
                    code { (path) } " expires " (when(Some(*expiry)))
                    @if *expiry <= now { strong.bad { " — expired" } }
                    @else { " (in " (duration(expiry - now)) ")" }
                },
                Some((path, Err(reason))) => p.error { "Cannot read " code { (path) } ": " (reason) },
            }
        }
    };
    page(&session, "", "This node", query.notice(&session), content)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The audit log page size.
const AUDIT_PAGE: usize = 50;

/// `GET /audit?from=`: every admin change, newest first, from the admin API and the console.
async fn audit(State(services): State<Arc<Services>>, session: Session, query: Query) -> Page {
    let from = query.from()?;
    let all = services.audit.list()?;
    let total = all.len();
    let (entries, next) = crate::api::admin::paginate(all, from, AUDIT_PAGE);
    let content = html! {
        p { (total) " entries, newest first." }
        div.scroll {
            table {
                caption { "Changes made by admins" }
                thead { tr {
                    th scope="col" { "When" } th scope="col" { "Admin" } th scope="col" { "Action" }
                    th scope="col" { "Target" } th scope="col" { "Details" }
                } }
                tbody {
                    @for (id, entry) in &entries {
                        tr id=(format!("audit-{id}")) {
                            td { (when(Some(entry.ts))) }
                            td { (entry.admin) }
                            th scope="row" { code { (entry.action) } }
                            td { (entry.target) }
                            td { @if entry.details != Value::Null { code { (entry.details.to_string()) } } }
                        }
                    }
                }
            }
        }
        (pager("Audit log pages", "/audit", &[], from, AUDIT_PAGE, next))
    };
    page(&session, "/audit", "Audit log", query.notice(&session), content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_certificates_expiry() {
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2031, 7, 15);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ms = x509_not_after(cert.der()).unwrap();
        assert_eq!(super::super::when(Some(ms)), "2031-07-15 00:00:00 UTC");
        assert_eq!(x509_not_after(b"\x30\x03\x02\x01"), None);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 + 512 * 1024), "3.5 MiB");
    }
}
