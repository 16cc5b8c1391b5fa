//! OpenID tokens as callers of the REST API present them (`Authorization: OpenID <server>
//! <token>`): a widget or an agent of another node has no access token of our homeserver, but
//! its own homeserver hands it an OpenID token (`/user/{id}/openid/request_token`, or the
//! widget API's `get_openid`), which that homeserver confirms to anyone through
//! `/_matrix/federation/v1/openid/userinfo`. We ask it, and believe the answer only for users of
//! that same server: a hostile server can vouch for its own users, never for another's.
//!
//! Every check costs a request to another server, which a flood of made-up tokens would turn
//! against that server and us: only servers we are configured to trust are asked, at most
//! [`FETCHES`] checks run at once, each bounded in time and size, and a confirmed token is
//! remembered for [`CONFIRMED_FOR`] (short, so an expired or revoked token stops working soon).

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use sha2::Digest;
use tokio::sync::Semaphore;

use crate::service::Failure;

/// How long a confirmed token is believed without asking again.
pub const CONFIRMED_FOR: Duration = Duration::from_secs(60);
/// How long a server's federation address (found through `.well-known`) is kept.
const DISCOVERED_FOR: Duration = Duration::from_secs(3600);
/// Checks running at once, for all servers.
const FETCHES: usize = 8;
/// How long a request waits for a free check before being refused (429).
const QUEUE_WAIT: Duration = Duration::from_secs(5);
/// Confirmed tokens remembered at most (the oldest go first).
const CACHE_SIZE: usize = 4096;
/// Largest answer read from another server (userinfo and `.well-known` are a few bytes).
const MAX_ANSWER: usize = 64 << 10;

pub struct OpenId {
    http: reqwest::Client,
    own: String,
    allowed: Vec<String>,
    fetches: Semaphore,
    /// SHA-256 of `server`, NUL, token → the user and until when they are believed.
    confirmed: Mutex<HashMap<[u8; 32], (String, Instant)>>,
    /// Server name → base URL of its federation API, and until when.
    discovered: Mutex<HashMap<String, (String, Instant)>>,
}

fn refused(status: u16, errcode: &'static str, message: &str) -> Failure {
    Failure::new(status, errcode, message, message)
}

fn unknown_token() -> Failure {
    refused(401, "M_UNKNOWN_TOKEN", "the OpenID token's homeserver does not confirm it")
}

/// `host` and explicit port of a server name (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`).
fn split_server_name(name: &str) -> Option<(&str, Option<u16>)> {
    if name.is_empty() || name.len() > 255 {
        return None;
    }
    let (host, port) = if let Some(rest) = name.strip_prefix('[') {
        let end = rest.find(']')?;
        let host = &name[..end + 2];
        host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().ok()?;
        match &rest[end + 1..] {
            "" => (host, None),
            tail => (host, Some(tail.strip_prefix(':')?.parse().ok()?)),
        }
    } else {
        match name.rsplit_once(':') {
            Some((host, port)) => (host, Some(port.parse().ok()?)),
            None => (name, None),
        }
    };
    let valid = host.starts_with('[')
        || host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.') && !host.is_empty();
    valid.then_some((host, port))
}

fn is_ip_literal(host: &str) -> bool {
    host.starts_with('[') || host.parse::<IpAddr>().is_ok()
}

fn cache_key(server: &str, token: &str) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(server.as_bytes());
    hasher.update([0]);
    hasher.update(token.as_bytes());
    hasher.finalize().into()
}

impl OpenId {
    /// `verify_tls`: whether the certificates of the servers asked are checked (test setups
    /// with self-signed nodes only turn it off).
    pub fn new(own: &str, allowed: &[String], verify_tls: bool) -> OpenId {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::limited(3))
            .tls_danger_accept_invalid_certs(!verify_tls)
            .build()
            .expect("HTTP client");
        OpenId {
            http,
            own: own.to_ascii_lowercase(),
            allowed: allowed.iter().map(|s| s.to_ascii_lowercase()).collect(),
            fetches: Semaphore::new(FETCHES),
            confirmed: Mutex::default(),
            discovered: Mutex::default(),
        }
    }

    /// Whether tokens of `server` are checked at all: our own server's and the allowed ones'.
    pub fn trusts(&self, server: &str) -> bool {
        let server = server.to_ascii_lowercase();
        server == self.own || self.allowed.contains(&server)
    }

    /// The user `server` issued `token` to.
    pub async fn user(&self, server: &str, token: &str) -> Result<String, Failure> {
        if split_server_name(server).is_none() || token.is_empty() || token.len() > 1024 {
            return Err(unknown_token());
        }
        if !self.trusts(server) {
            return Err(refused(403, "M_FORBIDDEN", "OpenID tokens of this server are not accepted here"));
        }
        let key = cache_key(&server.to_ascii_lowercase(), token);
        if let Some(user) = self.remembered(&key, Instant::now()) {
            return Ok(user);
        }
        let _permit = tokio::time::timeout(QUEUE_WAIT, self.fetches.acquire())
            .await
            .map_err(|_| refused(429, "M_LIMIT_EXCEEDED", "too many OpenID checks under way; try again"))?
            .expect("the semaphore is never closed");
        let base = self.federation_base(server).await;
        let url = format!(
            "{base}/_matrix/federation/v1/openid/userinfo?access_token={}",
            form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()
        );
        let (status, body) = self.fetch(&url).await.map_err(|e| {
            tracing::info!(%server, error = %e, "an OpenID token could not be checked");
            refused(502, "M_UNKNOWN", "the OpenID token's homeserver could not be reached")
        })?;
        match status {
            200 => {}
            401 | 403 | 404 => return Err(unknown_token()),
            _ => return Err(refused(502, "M_UNKNOWN", "the OpenID token's homeserver failed to answer")),
        }
        let sub = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["sub"].as_str().map(str::to_owned))
            .ok_or_else(|| refused(502, "M_UNKNOWN", "the OpenID token's homeserver answered no user"))?;
        let user_server = sub.strip_prefix('@').and_then(|u| u.split_once(':')).map(|(_, s)| s);
        if !user_server.is_some_and(|s| s.eq_ignore_ascii_case(server)) {
            tracing::warn!(%server, %sub, "an OpenID userinfo answer named a user of another server");
            return Err(unknown_token());
        }
        self.remember(key, sub.clone(), Instant::now());
        Ok(sub)
    }

    fn remembered(&self, key: &[u8; 32], now: Instant) -> Option<String> {
        let confirmed = self.confirmed.lock().expect("openid cache");
        confirmed.get(key).filter(|(_, until)| *until > now).map(|(user, _)| user.clone())
    }

    fn remember(&self, key: [u8; 32], user: String, now: Instant) {
        let mut confirmed = self.confirmed.lock().expect("openid cache");
        if confirmed.len() >= CACHE_SIZE {
            confirmed.retain(|_, (_, until)| *until > now);
        }
        if confirmed.len() >= CACHE_SIZE {
            if let Some(oldest) = confirmed.iter().min_by_key(|(_, (_, until))| *until).map(|(k, _)| *k) {
                confirmed.remove(&oldest);
            }
        }
        confirmed.insert(key, (user, now + CONFIRMED_FOR));
    }

    /// A GET whose answer is read up to [`MAX_ANSWER`] bytes.
    async fn fetch(&self, url: &str) -> Result<(u16, Vec<u8>), reqwest::Error> {
        let mut response = self.http.get(url).send().await?;
        let status = response.status().as_u16();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > MAX_ANSWER {
                return Ok((502, Vec::new()));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// The base URL of `server`'s federation API (server discovery of the spec, without SRV
    /// records): an IP literal or an explicit port is used as is; otherwise the server's
    /// `/.well-known/matrix/server` delegation if any, else port 8448.
    async fn federation_base(&self, server: &str) -> String {
        let (host, port) = split_server_name(server).expect("checked by the caller");
        if let Some(port) = port {
            return format!("https://{host}:{port}");
        }
        if is_ip_literal(host) {
            return format!("https://{host}:8448");
        }
        let now = Instant::now();
        if let Some((base, _)) =
            self.discovered.lock().expect("discovery cache").get(server).filter(|(_, until)| *until > now)
        {
            return base.clone();
        }
        let delegated = match self.fetch(&format!("https://{host}/.well-known/matrix/server")).await {
            Ok((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["m.server"].as_str().map(str::to_owned))
                .filter(|d| split_server_name(d).is_some()),
            _ => None,
        };
        let base = match delegated.as_deref().and_then(split_server_name) {
            Some((host, Some(port))) => format!("https://{host}:{port}"),
            Some((host, None)) => format!("https://{host}:8448"),
            None => format!("https://{host}:8448"),
        };
        let mut discovered = self.discovered.lock().expect("discovery cache");
        if discovered.len() >= CACHE_SIZE {
            discovered.retain(|_, (_, until)| *until > now);
        }
        discovered.insert(server.to_owned(), (base.clone(), now + DISCOVERED_FOR));
        base
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_split_as_the_spec_writes_them() {
        assert_eq!(split_server_name("budget.gouv.fr"), Some(("budget.gouv.fr", None)));
        assert_eq!(split_server_name("127.0.0.1:8448"), Some(("127.0.0.1", Some(8448))));
        assert_eq!(split_server_name("[::1]:8008"), Some(("[::1]", Some(8008))));
        assert_eq!(split_server_name("[::1]"), Some(("[::1]", None)));
        for bad in ["", "a b", "x:y", "[nope]:1", "evil.example/path", "a:99999", "user@host"] {
            assert_eq!(split_server_name(bad), None, "{bad:?}");
        }
        assert!(is_ip_literal("127.0.0.1") && is_ip_literal("[::1]") && !is_ip_literal("budget.gouv.fr"));
    }

    #[tokio::test]
    async fn only_its_own_and_the_allowed_servers_are_asked() {
        let openid = OpenId::new("budget.gouv.fr", &["Finances.gouv.fr".to_owned()], true);
        assert!(openid.trusts("budget.gouv.fr") && openid.trusts("finances.gouv.fr"));
        let refusal = openid.user("evil.example", "token").await.unwrap_err();
        assert_eq!((refusal.status, refusal.errcode), (403, "M_FORBIDDEN"));
        let refusal = openid.user("finances.gouv.fr/x", "token").await.unwrap_err();
        assert_eq!((refusal.status, refusal.errcode), (401, "M_UNKNOWN_TOKEN"));
    }

    #[test]
    fn a_confirmed_token_is_believed_for_a_short_while_only_and_the_cache_is_bounded() {
        let openid = OpenId::new("budget.gouv.fr", &[], true);
        let now = Instant::now();
        let key = cache_key("budget.gouv.fr", "t");
        openid.remember(key, "@alice:budget.gouv.fr".into(), now);
        assert_eq!(openid.remembered(&key, now + CONFIRMED_FOR / 2).as_deref(), Some("@alice:budget.gouv.fr"));
        assert_eq!(openid.remembered(&key, now + CONFIRMED_FOR), None, "expired: asked again");
        assert_eq!(openid.remembered(&cache_key("other.example", "t"), now), None, "the server is in the key");
        for i in 0..CACHE_SIZE + 10 {
            openid.remember(cache_key("s", &i.to_string()), "@u:s".into(), now);
        }
        assert!(openid.confirmed.lock().unwrap().len() <= CACHE_SIZE);
    }
}
