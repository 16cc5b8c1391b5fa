//! Outgoing federation requests: server discovery (well-known, SRV), X-Matrix signing, one pooled HTTPS client with
//! timeouts, and per-destination backoff so a dead peer costs nothing after its first failure.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ruma::{
    api::{
        auth_scheme::{AuthScheme, NoAuthentication},
        federation::authentication::{ServerSignatures, ServerSignaturesInput},
        path_builder::SinglePath,
        IncomingResponse, OutgoingRequest,
    },
    OwnedServerName, ServerName,
};
use serde::Deserialize;

use crate::{
    error::{Error, Result},
    server_keys::ServerKeys,
};

/// How long a request to another server may take before the caller is answered with an error.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a discovery result (well-known delegation) is kept.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The most bytes of a well-known document read (Synapse reads 50 KiB).
const WELL_KNOWN_MAX: usize = 50 * 1024;
/// Backoff after failures: doubles from the first up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_secs(2);
const BACKOFF_CAP: Duration = Duration::from_secs(300);

/// Where a server name's federation API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://host:port`
    pub base_url: String,
}

/// Splits a server name into host and optional port (IPv6 literals keep their brackets).
pub fn split_host_port(name: &str) -> (&str, Option<u16>) {
    if let Some(rest) = name.strip_prefix('[') {
        if let Some(end) = rest.find(']') {
            let host = &name[..end + 2];
            let port = name[end + 2..].strip_prefix(':').and_then(|p| p.parse().ok());
            return (host, port);
        }
    }
    match name.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (name, None),
    }
}

fn is_ip_literal(host: &str) -> bool {
    host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok()
}

#[derive(Deserialize)]
struct WellKnownServer {
    #[serde(rename = "m.server")]
    server: String,
}

/// Which ruma authentication schemes outgoing federation requests can carry.
pub trait OutgoingAuth: AuthScheme {
    fn input<'a>(origin: &ServerName, destination: &ServerName, keys: &'a ServerKeys) -> Self::Input<'a>;
}

impl OutgoingAuth for ServerSignatures {
    fn input<'a>(origin: &ServerName, destination: &ServerName, keys: &'a ServerKeys) -> ServerSignaturesInput<'a> {
        ServerSignaturesInput::new(origin.to_owned(), destination.to_owned(), keys.keypair())
    }
}

impl OutgoingAuth for NoAuthentication {
    fn input(_: &ServerName, _: &ServerName, _: &ServerKeys) {}
}

struct Backoff {
    failures: u32,
    until: Instant,
    wait: Duration,
    /// When this run of failures began and when the last one happened (ms since the epoch).
    first_failure_ms: u64,
    last_failure_ms: u64,
    last_error: String,
}

/// How sending to one destination goes, for the admin API and the console.
#[derive(Debug, Clone, Default)]
pub struct DestinationHealth {
    /// Failures in a row (0: the last request worked).
    pub failures: u32,
    /// How long the current backoff lasts, in ms (0 when not backing off).
    pub retry_interval_ms: u64,
    pub first_failure_ms: Option<u64>,
    pub last_failure_ms: Option<u64>,
    pub last_success_ms: Option<u64>,
    /// Failed requests since start-up (the metrics' counter).
    pub total_failures: u64,
    /// What went wrong the last time, while failing.
    pub last_error: Option<String>,
}

/// Addresses found by SRV lookups, by host: what federation connections to that host use (their
/// TLS name and `Host` stay the server's, as the spec wants).
#[derive(Default)]
struct SrvTargets(Mutex<HashMap<String, Vec<SocketAddr>>>);

/// The addresses federation may connect to (`federation.deny_ranges` less `allow_ranges`):
/// checked on every address a name resolves to and on IP literals, for discovery, requests and
/// media `Location`s alike.
#[derive(Debug, Clone, Default)]
pub struct AddressFilter {
    pub deny: Vec<crate::config::Cidr>,
    pub allow: Vec<crate::config::Cidr>,
}

impl AddressFilter {
    pub fn permits(&self, ip: IpAddr) -> bool {
        crate::config::address_allowed(&self.deny, &self.allow, ip)
    }

    /// Refuses a URL whose host is an IP literal out of bounds (names are checked when resolved).
    fn check_url(&self, url: &str) -> std::result::Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if !matches!(parsed.scheme(), "https" | "http") {
            return Err(format!("{url}: only http(s) URLs are fetched"));
        }
        let ip = parsed.host_str().and_then(|h| h.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok());
        match ip {
            Some(ip) if !self.permits(ip) => Err(format!("{ip} is in federation.deny_ranges")),
            _ => Ok(()),
        }
    }
}

/// The federation client's DNS: a host found through SRV connects to its SRV target; any other
/// host is looked up with the configured name servers (`federation.nameservers`), or the
/// system's resolver (hosts file included) when none are configured.
struct FederationDns {
    srv: Option<Arc<SrvTargets>>,
    configured: Option<hickory_resolver::TokioResolver>,
    filter: Arc<AddressFilter>,
}

impl reqwest::dns::Resolve for FederationDns {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let known = self.srv.as_ref().and_then(|srv| srv.0.lock().expect("SRV targets").get(name.as_str()).cloned());
        let configured = self.configured.clone();
        let filter = self.filter.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match (known, configured) {
                (Some(addrs), _) => addrs,
                (None, Some(dns)) => {
                    dns.lookup_ip(format!("{host}.")).await?.iter().map(|ip| SocketAddr::new(ip, 0)).collect()
                }
                (None, None) => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            // Every address must be allowed: a name that resolves to one internal address among
            // public ones is refused whole.
            if let Some(bad) = addrs.iter().find(|a| !filter.permits(a.ip())) {
                let refused = format!("{host} resolves to {}, in federation.deny_ranges", bad.ip());
                return Err(refused.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The federation HTTP client.
pub struct FederationClient {
    http: reqwest::Client,
    /// For what is not the federation API (well-known documents, media `Location`s): plain DNS.
    plain: reqwest::Client,
    dns: hickory_resolver::TokioResolver,
    srv: Arc<SrvTargets>,
    origin: OwnedServerName,
    max_response: usize,
    filter: Arc<AddressFilter>,
    /// Pinned peers' addresses (`federation.pinned.*.address`), used instead of discovery.
    pinned_addresses: HashMap<OwnedServerName, String>,
    discovered: Mutex<HashMap<OwnedServerName, (Endpoint, Instant)>>,
    backoff: Mutex<HashMap<OwnedServerName, Backoff>>,
    /// When a request to each destination last worked (ms since the epoch).
    last_success: Mutex<HashMap<OwnedServerName, u64>>,
    /// Failed requests to each destination since start-up.
    total_failures: Mutex<HashMap<OwnedServerName, u64>>,
}

impl FederationClient {
    /// `max_response` bounds what one answer may weigh (a join's state, a media file).
    pub fn new(
        origin: OwnedServerName,
        verify_tls: bool,
        max_response: usize,
        nameservers: &[SocketAddr],
        filter: AddressFilter,
        pinned_addresses: HashMap<OwnedServerName, String>,
    ) -> Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .danger_accept_invalid_certs(!verify_tls)
                .connect_timeout(Duration::from_secs(5))
                .timeout(REQUEST_TIMEOUT)
                .pool_idle_timeout(Duration::from_secs(90))
                .pool_max_idle_per_host(16)
                // A redirect would take a request where no check was made: none are followed.
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .user_agent(concat!("Hemicycle/", env!("CARGO_PKG_VERSION")))
        };
        let failed = |e: reqwest::Error| Error::Internal(format!("cannot build the federation client: {e}"));
        let srv = Arc::new(SrvTargets::default());
        let dns = resolver(nameservers)?;
        let configured = (!nameservers.is_empty()).then(|| dns.clone());
        let filter = Arc::new(filter);
        let federation_dns =
            FederationDns { srv: Some(srv.clone()), configured: configured.clone(), filter: filter.clone() };
        let http = builder().dns_resolver(Arc::new(federation_dns)).build().map_err(failed)?;
        let plain_dns = FederationDns { srv: None, configured, filter: filter.clone() };
        let plain = builder().dns_resolver(Arc::new(plain_dns)).build().map_err(failed)?;
        Ok(Self {
            http,
            plain,
            dns,
            srv,
            origin,
            max_response,
            filter,
            pinned_addresses,
            discovered: Mutex::new(HashMap::new()),
            backoff: Mutex::new(HashMap::new()),
            last_success: Mutex::new(HashMap::new()),
            total_failures: Mutex::new(HashMap::new()),
        })
    }

    /// Resolves a server name to the base URL of its federation API, as the spec's discovery
    /// steps say: IP literals and explicit ports are used as they are; otherwise the
    /// `/.well-known/matrix/server` delegation (cached) is followed; otherwise port 8448.
    pub async fn endpoint(&self, server: &ServerName) -> Endpoint {
        if let Some((endpoint, at)) = self.discovered.lock().expect("discovery cache").get(server) {
            if at.elapsed() < DISCOVERY_TTL {
                return endpoint.clone();
            }
        }
        let endpoint = self.discover(server).await;
        self.discovered.lock().expect("discovery cache").insert(server.to_owned(), (endpoint.clone(), Instant::now()));
        endpoint
    }

    /// The spec's discovery steps: an IP literal or an explicit port is used as it is; else the
    /// `/.well-known/matrix/server` delegation (whose host, when it has no port, goes through
    /// the SRV step in turn); else SRV `_matrix-fed._tcp`, then the deprecated `_matrix._tcp`;
    /// else port 8448.
    async fn discover(&self, server: &ServerName) -> Endpoint {
        if let Some(address) = self.pinned_addresses.get(server) {
            return Endpoint { base_url: format!("https://{address}") };
        }
        let (host, port) = split_host_port(server.as_str());
        if is_ip_literal(host) || port.is_some() {
            return Endpoint { base_url: format!("https://{host}:{}", port.unwrap_or(8448)) };
        }
        let url = format!("https://{host}/.well-known/matrix/server");
        if let Ok(response) = self.plain.get(&url).timeout(Duration::from_secs(10)).send().await {
            if response.status().is_success() {
                let known = read_bounded(response, WELL_KNOWN_MAX)
                    .await
                    .ok()
                    .and_then(|body| serde_json::from_slice::<WellKnownServer>(&body).ok());
                if let Some(known) = known {
                    let (dhost, dport) = split_host_port(&known.server);
                    if !dhost.is_empty() {
                        if is_ip_literal(dhost) || dport.is_some() {
                            return Endpoint { base_url: format!("https://{dhost}:{}", dport.unwrap_or(8448)) };
                        }
                        return self.srv_or_default(dhost).await;
                    }
                }
            }
        }
        self.srv_or_default(host).await
    }

    /// The SRV step for a host name: its `_matrix-fed._tcp` (then `_matrix._tcp`) record's
    /// target, connected to under the host's own name; port 8448 of the host without one.
    async fn srv_or_default(&self, host: &str) -> Endpoint {
        for service in ["_matrix-fed._tcp", "_matrix._tcp"] {
            let Ok(found) = self.dns.srv_lookup(format!("{service}.{host}.")).await else { continue };
            let mut records: Vec<_> = found.iter().collect();
            // Lowest priority first; among equals the heaviest (a fixed choice, so retries agree).
            records.sort_by_key(|r| (r.priority(), std::cmp::Reverse(r.weight())));
            for record in records {
                let target = record.target().to_utf8();
                let target = target.trim_end_matches('.');
                if target.is_empty() {
                    continue;
                }
                let addrs: Vec<SocketAddr> = match target.parse::<IpAddr>() {
                    Ok(ip) => vec![SocketAddr::new(ip, record.port())],
                    Err(_) => match self.dns.lookup_ip(format!("{target}.")).await {
                        Ok(ips) => ips.iter().map(|ip| SocketAddr::new(ip, record.port())).collect(),
                        Err(error) => {
                            tracing::info!(%host, %target, %error, "an SRV target has no address");
                            continue;
                        }
                    },
                };
                if addrs.is_empty() {
                    continue;
                }
                self.srv.0.lock().expect("SRV targets").insert(host.to_owned(), addrs);
                return Endpoint { base_url: format!("https://{host}") };
            }
        }
        self.srv.0.lock().expect("SRV targets").remove(host);
        Endpoint { base_url: format!("https://{host}:8448") }
    }

    /// Whether the destination is in backoff after recent failures.
    pub fn backing_off(&self, server: &ServerName) -> Option<Duration> {
        let backoff = self.backoff.lock().expect("backoff");
        backoff.get(server).and_then(|b| b.until.checked_duration_since(Instant::now()))
    }

    fn failed(&self, server: &ServerName, error: &str) {
        *self.total_failures.lock().expect("failure counts").entry(server.to_owned()).or_default() += 1;
        let now_ms = crate::time::now_ms();
        let mut backoff = self.backoff.lock().expect("backoff");
        let entry = backoff.entry(server.to_owned()).or_insert(Backoff {
            failures: 0,
            until: Instant::now(),
            wait: Duration::ZERO,
            first_failure_ms: now_ms,
            last_failure_ms: now_ms,
            last_error: String::new(),
        });
        entry.last_error = error.to_owned();
        entry.failures = entry.failures.saturating_add(1);
        let wait = BACKOFF_FIRST.saturating_mul(1 << entry.failures.min(10).saturating_sub(1)).min(BACKOFF_CAP);
        entry.until = Instant::now() + wait;
        entry.wait = wait;
        entry.last_failure_ms = now_ms;
    }

    fn succeeded(&self, server: &ServerName) {
        self.backoff.lock().expect("backoff").remove(server);
        self.last_success.lock().expect("last success").insert(server.to_owned(), crate::time::now_ms());
    }

    pub fn health(&self, server: &ServerName) -> DestinationHealth {
        let last_success_ms = self.last_success.lock().expect("last success").get(server).copied();
        let total_failures = self.total_failures.lock().expect("failure counts").get(server).copied().unwrap_or(0);
        match self.backoff.lock().expect("backoff").get(server) {
            Some(b) => DestinationHealth {
                failures: b.failures,
                retry_interval_ms: b.wait.as_millis() as u64,
                first_failure_ms: Some(b.first_failure_ms),
                last_failure_ms: Some(b.last_failure_ms),
                last_success_ms,
                total_failures,
                last_error: Some(b.last_error.clone()),
            },
            None => DestinationHealth { last_success_ms, total_failures, ..Default::default() },
        }
    }

    /// Forgets a destination's failures, so the next request goes at once (an admin's
    /// "reset connection").
    pub fn reset_backoff(&self, server: &ServerName) {
        self.backoff.lock().expect("backoff").remove(server);
    }

    /// Sends a ruma request to another server, signed with X-Matrix when the endpoint asks for it.
    /// Network failures and timeouts are `RemoteUnreachable` (502); the remote's Matrix errors
    /// keep their status and errcode.
    pub async fn send<R>(&self, keys: &ServerKeys, destination: &ServerName, request: R) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuth,
    {
        self.send_with_timeout(keys, destination, request, REQUEST_TIMEOUT).await
    }

    pub async fn send_with_timeout<R>(
        &self,
        keys: &ServerKeys,
        destination: &ServerName,
        request: R,
        timeout: Duration,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuth,
    {
        self.send_limited(keys, destination, request, timeout, self.max_response).await
    }

    /// [`Self::send_with_timeout`] reading at most `max_bytes` of the answer: what a request can
    /// legitimately weigh (one event, one page of history) rather than the largest answer of all.
    pub async fn send_limited<R>(
        &self,
        keys: &ServerKeys,
        destination: &ServerName,
        request: R,
        timeout: Duration,
        max_bytes: usize,
    ) -> Result<R::IncomingResponse>
    where
        R: OutgoingRequest<PathBuilder = SinglePath>,
        R::Authentication: OutgoingAuth,
    {
        let endpoint = self.endpoint(destination).await;
        let input = <R::Authentication as OutgoingAuth>::input(&self.origin, destination, keys);
        let http_request = request
            .try_into_http_request::<Vec<u8>>(&endpoint.base_url, input, ())
            .map_err(|e| Error::Internal(format!("cannot build the request to {destination}: {e}")))?;
        let (mut parts, body) = http_request.into_parts();
        crate::telemetry::inject(&mut parts.headers);
        let url = parts.uri.to_string();
        if let Err(refused) = self.filter.check_url(&url) {
            let error = format!("{destination} is not reached: {refused}");
            self.failed(destination, &error);
            return Err(Error::RemoteUnreachable(error));
        }
        let mut builder = self.http.request(parts.method, &url).headers(parts.headers).timeout(timeout);
        if !body.is_empty() {
            builder = builder.body(body);
        }
        let response = match builder.send().await {
            Ok(r) => r,
            Err(e) => {
                let what = if e.is_timeout() { "did not answer in time" } else { "cannot be reached" };
                let error = format!("{destination} {what}: {e}");
                self.failed(destination, &error);
                return Err(Error::RemoteUnreachable(error));
            }
        };
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = match read_bounded(response, max_bytes.min(self.max_response)).await {
            Ok(b) => b,
            Err(e) => {
                let error = format!("{destination} broke off its answer: {e}");
                self.failed(destination, &error);
                return Err(Error::RemoteUnreachable(error));
            }
        };
        if status.is_server_error() {
            self.failed(destination, &format!("{destination} answered HTTP {status}"));
        } else {
            self.succeeded(destination);
        }
        if !status.is_success() {
            return Err(remote_error(destination, status, &bytes));
        }
        let mut http_response = http::Response::builder().status(status);
        for (name, value) in &headers {
            http_response = http_response.header(name, value);
        }
        let http_response = http_response.body(bytes.to_vec()).map_err(|e| Error::Internal(e.to_string()))?;
        R::IncomingResponse::try_from_http_response(http_response)
            .map_err(|e| Error::RemoteUnreachable(format!("{destination} answered something unreadable: {e}")))
    }
}

impl FederationClient {
    /// The client API's base URL `server` publishes in its `/.well-known/matrix/client`
    /// (`m.homeserver.base_url`), fetched with the address filter, bounded in time and size.
    pub async fn client_api_url(&self, server: &ServerName, timeout: Duration) -> Result<String> {
        let url = format!("https://{server}/.well-known/matrix/client");
        let unreachable = |e: String| Error::RemoteUnreachable(format!("{url}: {e}"));
        let response = self.plain.get(&url).timeout(timeout).send().await.map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status())));
        }
        let body = read_bounded(response, WELL_KNOWN_MAX).await.map_err(unreachable)?;
        let known: serde_json::Value = serde_json::from_slice(&body).map_err(|e| unreachable(e.to_string()))?;
        let base = known["m.homeserver"]["base_url"].as_str().unwrap_or("").trim_end_matches('/');
        if base.is_empty() {
            return Err(unreachable("no m.homeserver.base_url".into()));
        }
        self.filter.check_url(base).map_err(unreachable)?;
        Ok(base.to_owned())
    }

    /// POSTs JSON to a URL outside the federation API (another server's client API) with the
    /// address filter and no redirects; answers the status, the body read only up to a few
    /// KiB and dropped.
    pub async fn post_plain(&self, url: &str, body: &serde_json::Value, timeout: Duration) -> Result<http::StatusCode> {
        let unreachable = |e: String| Error::RemoteUnreachable(format!("{url}: {e}"));
        self.filter.check_url(url).map_err(unreachable)?;
        let response =
            self.plain.post(url).json(body).timeout(timeout).send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = response.status();
        let _ = read_bounded(response, 4096).await;
        Ok(status)
    }

    /// Follows the `Location` a media answer may give instead of the file (a plain GET, as the
    /// spec says: the URL is the file's, not a federation endpoint). Answers the bytes and the
    /// content type.
    pub async fn get_location(&self, url: &str, timeout: Duration) -> Result<(Vec<u8>, Option<String>)> {
        let unreachable = |e: String| Error::RemoteUnreachable(format!("the media location {url}: {e}"));
        self.filter.check_url(url).map_err(unreachable)?;
        let response = self.plain.get(url).timeout(timeout).send().await.map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(unreachable(format!("HTTP {}", response.status())));
        }
        let content_type =
            response.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = read_bounded(response, self.max_response).await.map_err(unreachable)?;
        Ok((bytes, content_type))
    }
}

/// The DNS resolver of SRV lookups: the configured name servers, else the system's (else
/// hickory's defaults when the system has no resolver configuration).
fn resolver(nameservers: &[SocketAddr]) -> Result<hickory_resolver::TokioResolver> {
    use hickory_resolver::{
        config::{NameServerConfig, ResolverConfig},
        name_server::TokioConnectionProvider,
        proto::xfer::Protocol,
        Resolver,
    };
    if nameservers.is_empty() {
        return Ok(match Resolver::builder_tokio() {
            Ok(builder) => builder.build(),
            Err(error) => {
                tracing::warn!(%error, "no system DNS configuration: SRV lookups use public resolvers");
                Resolver::builder_with_config(ResolverConfig::default(), TokioConnectionProvider::default()).build()
            }
        });
    }
    let mut config = ResolverConfig::new();
    for server in nameservers {
        config.add_name_server(NameServerConfig::new(*server, Protocol::Udp));
    }
    Ok(Resolver::builder_with_config(config, TokioConnectionProvider::default()).build())
}

/// Reads an answer's body, refusing one larger than `limit` (announced or actual) rather than
/// holding whatever a peer sends in memory.
async fn read_bounded(mut response: reqwest::Response, limit: usize) -> std::result::Result<Vec<u8>, String> {
    if response.content_length().is_some_and(|len| len > limit as u64) {
        return Err(format!(
            "an answer of {} bytes is over the {limit}-byte limit",
            response.content_length().unwrap_or(0)
        ));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > limit {
            return Err(format!("the answer is over the {limit}-byte limit"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A remote server's error answer, kept in Matrix terms where it maps to one of ours.
fn remote_error(destination: &ServerName, status: http::StatusCode, body: &[u8]) -> Error {
    let value: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let errcode = value["errcode"].as_str().unwrap_or("M_UNKNOWN");
    let message = format!("{destination}: {}", value["error"].as_str().unwrap_or("no reason given"));
    match (status.as_u16(), errcode) {
        (403, _) => Error::Forbidden(message),
        (404, _) => Error::NotFound(message),
        (_, "M_UNSUPPORTED_ROOM_VERSION" | "M_INCOMPATIBLE_ROOM_VERSION") => Error::UnsupportedRoomVersion(message),
        (400, "M_BAD_JSON") => Error::BadJson(message),
        // A server without the endpoint (Synapse answers unknown paths so).
        (_, "M_UNRECOGNIZED") => Error::Unrecognized(message),
        (400, _) => Error::InvalidParam(message),
        (429, _) => Error::RemoteUnreachable(format!("{message} (rate limited)")),
        _ => Error::RemoteUnreachable(format!("{message} (HTTP {status})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_and_port_are_split_as_the_spec_writes_server_names() {
        assert_eq!(split_host_port("example.org"), ("example.org", None));
        assert_eq!(split_host_port("example.org:8449"), ("example.org", Some(8449)));
        assert_eq!(split_host_port("127.0.0.1:1234"), ("127.0.0.1", Some(1234)));
        assert_eq!(split_host_port("[::1]:8448"), ("[::1]", Some(8448)));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert!(is_ip_literal("[::1]"));
        assert!(is_ip_literal("10.0.0.1"));
        assert!(!is_ip_literal("example.org"));
    }

    fn test_client() -> FederationClient {
        FederationClient::new(
            "a.example".try_into().unwrap(),
            true,
            1 << 20,
            &[],
            Default::default(),
            Default::default(),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn ip_literals_and_explicit_ports_need_no_lookup() {
        let client = test_client();
        let ep = client.endpoint(<&ServerName>::try_from("127.0.0.1:9000").unwrap()).await;
        assert_eq!(ep.base_url, "https://127.0.0.1:9000");
        let ep = client.endpoint(<&ServerName>::try_from("10.1.2.3").unwrap()).await;
        assert_eq!(ep.base_url, "https://10.1.2.3:8448");
        let ep = client.endpoint(<&ServerName>::try_from("[::1]:8000").unwrap()).await;
        assert_eq!(ep.base_url, "https://[::1]:8000");
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let client = test_client();
        let peer = <&ServerName>::try_from("b.example").unwrap();
        assert!(client.backing_off(peer).is_none());
        client.failed(peer, "test failure");
        let first = client.backing_off(peer).unwrap();
        assert!(first <= BACKOFF_FIRST);
        for _ in 0..20 {
            client.failed(peer, "test failure");
        }
        assert!(client.backing_off(peer).unwrap() <= BACKOFF_CAP);
        assert!(client.backing_off(peer).unwrap() > BACKOFF_CAP / 2);
        client.succeeded(peer);
        assert!(client.backing_off(peer).is_none());
    }
}
