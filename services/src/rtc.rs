//! The LiveKit authorisation service, built in (`[matrix_rtc.livekit]`): what
//! element-hq/lk-jwt-service does next to other homeservers, so a ministry runs only the SFU.
//!
//! A caller proves who they are with an OpenID token of their homeserver (ours: looked up in our
//! own store; another: asked at its `/_matrix/federation/v1/openid/userinfo`), and gets a LiveKit
//! access token (an HS256 JWT signed with the secret shared with the SFU) for the LiveKit room of
//! one Matrix room and MatrixRTC slot. Room names and identities are derived as MSC4195 and
//! lk-jwt-service derive them, so every service of a call's participants agrees on them. Users of
//! `full_access_servers` make the SFU open the room (its room API, `CreateRoom`); others only get
//! a token to join, which the SFU honours only for a room that exists when it runs with
//! `room.auto_create: false` (docs/calls.md).

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ruma::{OwnedUserId, ServerName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::{config::LiveKitConfig, error::Error, services::Services, time::now_ms};

/// How long a token lets its holder join (lk-jwt-service's hour): a call that lasts longer
/// keeps its connection, a rejoin asks for a new token.
const TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The room-API tokens we sign for ourselves live only as long as one request.
const API_TOKEN_LIFETIME: Duration = Duration::from_secs(60);

/// Bounds of a call to the SFU's room API.
const SFU_TIMEOUT: Duration = Duration::from_secs(10);
const SFU_MAX_ANSWER: usize = 64 * 1024;

/// How long a room the service opens waits for its first participant, and stays after its last
/// one left (lk-jwt-service's values): a participant's reconnect does not lose the room.
const EMPTY_TIMEOUT_S: u64 = 5 * 60;
const DEPARTURE_TIMEOUT_S: u64 = 20;

/// The MatrixRTC slot of the legacy `/sfu/get`, which names only a room.
pub const LEGACY_SLOT: &str = "m.call#ROOM";

/// Why a token is refused, in the terms lk-jwt-service answers with.
#[derive(Debug)]
pub enum Refusal {
    /// The OpenID token is unknown to its server, or names someone else: 401 `M_UNAUTHORIZED`.
    Unauthorized,
    /// The SFU did not open the room: 500 `M_UNKNOWN`.
    Sfu(String),
}

/// A token and the SFU it is for: the `{url, jwt}` answer.
pub struct Grant {
    pub url: String,
    pub jwt: String,
}

/// What a token is asked for: the caller's proof and the LiveKit room and identity it names.
pub struct TokenRequest<'a> {
    pub openid_token: &'a str,
    pub matrix_server_name: &'a str,
    /// The user the client says it is (`member.claimed_user_id`): must be the token's subject.
    pub claimed_user_id: Option<&'a str>,
    pub room: String,
    /// The LiveKit identity, or `None` to derive the legacy `<user id>:<device id>` once the
    /// user is known.
    pub identity: Identity<'a>,
}

pub enum Identity<'a> {
    /// `/get_token`: the hash of (user, `claimed_device_id`, member id).
    Member { device_id: &'a str, member_id: &'a str },
    /// `/sfu/get`: `<user id>:<device id>`.
    Legacy { device_id: &'a str },
}

pub struct LiveKit {
    config: LiveKitConfig,
    secret: String,
    /// The SFU's room API (`http(s)://…`, from the `ws(s)://` URL clients are given).
    api_url: String,
    http: reqwest::Client,
}

impl LiveKit {
    pub fn new(config: &LiveKitConfig) -> crate::error::Result<Self> {
        let secret = config.read_secret().map_err(|e| Error::Internal(e.to_string()))?;
        let base = config.url.trim_end_matches('/');
        let api_url = match base.strip_prefix("wss://") {
            Some(rest) => format!("https://{rest}"),
            None => format!("http://{}", base.strip_prefix("ws://").unwrap_or(base)),
        };
        let http = reqwest::Client::builder()
            .timeout(SFU_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(format!("the SFU's HTTP client: {e}")))?;
        Ok(Self { config: config.clone(), secret, api_url, http })
    }

    /// Checks the caller's OpenID token, then signs their token; for a full-access server's
    /// user, has the SFU open the room first (so a failure there leaves nothing half done).
    pub async fn grant(&self, services: &Services, request: TokenRequest<'_>) -> Result<Grant, Refusal> {
        let user = self.verify_openid(services, request.openid_token, request.matrix_server_name).await?;
        if request.claimed_user_id.is_some_and(|claimed| claimed != user.as_str()) {
            tracing::warn!(%user, claimed = ?request.claimed_user_id, "LiveKit token: the claimed user is not the token's");
            return Err(Refusal::Unauthorized);
        }
        let identity = match request.identity {
            Identity::Member { device_id, member_id } => member_identity(user.as_str(), device_id, member_id),
            Identity::Legacy { device_id } => format!("{user}:{device_id}"),
        };
        let full_access = self.config.full_access(request.matrix_server_name);
        if full_access {
            self.create_room(&request.room).await.map_err(Refusal::Sfu)?;
        }
        let now = now_ms() / 1000;
        let mut video = json!({
            "roomJoin": true,
            "room": request.room,
            "canPublish": true,
            "canSubscribe": true,
            "canUpdateOwnMetadata": true,
        });
        if full_access {
            video["roomCreate"] = json!(true);
        }
        let claims = json!({
            "iss": self.config.key,
            "sub": identity,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "video": video,
        });
        tracing::info!(%user, room = %request.room, full_access, "LiveKit token granted");
        Ok(Grant { url: self.config.url.clone(), jwt: self.sign(&claims) })
    }

    /// The user an OpenID token was issued to by `server`: our own store for our tokens, the
    /// server's `/openid/userinfo` for others (bounded in time and size by the federation
    /// client), whose answer must name one of its own users.
    async fn verify_openid(&self, services: &Services, token: &str, server: &str) -> Result<OwnedUserId, Refusal> {
        if server == services.config.server_name.as_str() {
            return services.users.openid_user(token).map_err(|_| Refusal::Unauthorized);
        }
        let Ok(server) = <&ServerName>::try_from(server) else {
            return Err(Refusal::Unauthorized);
        };
        match services.federation.openid_userinfo(server, token).await {
            Ok(user) if user.server_name() == server => Ok(user),
            Ok(user) => {
                tracing::warn!(%server, %user, "an OpenID userinfo answer named a user of another server");
                Err(Refusal::Unauthorized)
            }
            Err(error) => {
                tracing::info!(%server, %error, "an OpenID token was not confirmed");
                Err(Refusal::Unauthorized)
            }
        }
    }

    /// `CreateRoom` of the SFU's room API (Twirp, JSON), which answers the room when it
    /// exists already.
    async fn create_room(&self, room: &str) -> Result<(), String> {
        let now = now_ms() / 1000;
        let claims = json!({
            "iss": self.config.key,
            "nbf": now,
            "exp": now + API_TOKEN_LIFETIME.as_secs(),
            "video": { "roomCreate": true },
        });
        let url = format!("{}/twirp/livekit.RoomService/CreateRoom", self.api_url);
        let body = json!({ "name": room, "empty_timeout": EMPTY_TIMEOUT_S, "departure_timeout": DEPARTURE_TIMEOUT_S });
        let answer = self
            .http
            .post(&url)
            .bearer_auth(self.sign(&claims))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("the SFU's room API at {url}: {e}"))?;
        let status = answer.status();
        if answer.content_length().is_some_and(|len| len > SFU_MAX_ANSWER as u64) {
            return Err(format!("the SFU's room API answered {status} with a body over {SFU_MAX_ANSWER} bytes"));
        }
        if !status.is_success() {
            tracing::error!(%room, %status, "the SFU refused to open a room");
            return Err(format!("the SFU's room API answered {status}"));
        }
        Ok(())
    }

    /// An HS256 JWT of `claims` under the shared secret.
    fn sign(&self, claims: &Value) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = b64.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(signing_input.as_bytes());
        let signature = b64.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// The SFU's URL as clients are given it.
    pub fn url(&self) -> &str {
        &self.config.url
    }
}

/// The LiveKit room of a Matrix room's MatrixRTC slot (MSC4195): unpadded base64 of the SHA-256
/// of the JSON array `[room, slot]`.
pub fn room_alias(room: &str, slot: &str) -> String {
    hash_of(&[room, slot])
}

/// A participant's LiveKit identity (MSC4195): the same hash of `[user, device, member id]`.
pub fn member_identity(user: &str, device: &str, member: &str) -> String {
    hash_of(&[user, device, member])
}

/// The array serialised as Go's `encoding/json` does (lk-jwt-service's and the MSC's test vectors
/// come from it): compact, with `<`, `>`, `&`, U+2028 and U+2029 escaped, so ids holding them
/// give the same names as the other services of a call.
fn hash_of(parts: &[&str]) -> String {
    let json = serde_json::to_string(parts).expect("strings serialise");
    let mut go = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => go.push_str("\\u003c"),
            '>' => go.push_str("\\u003e"),
            '&' => go.push_str("\\u0026"),
            '\u{2028}' => go.push_str("\\u2028"),
            '\u{2029}' => go.push_str("\\u2029"),
            c => go.push(c),
        }
    }
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(go.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vectors of MSC4195's appendix (which lk-jwt-service checks too).
    #[test]
    fn names_are_derived_as_msc4195_says() {
        assert_eq!(room_alias("!roomid:example.com", "slot1234"), "O8437W3+jmzMVjoIP3tNwbm+XxHQk2iKpOA7aqw3qSc");
        assert_eq!(
            member_identity("@alice:example.com", "DEVICE123", "memberABC"),
            "J+T45tGruxc+HrUOqJJlyQSV33m728Cme4+vt8/SWrU"
        );
    }

    #[test]
    fn html_characters_are_escaped_as_go_escapes_them() {
        // sha256 of `["a\u003cb\u0026","c\u003e"]`, as Go's json.Marshal writes ["a<b&","c>"].
        let expected =
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(br#"["a\u003cb\u0026","c\u003e"]"#));
        assert_eq!(room_alias("a<b&", "c>"), expected);
    }
}
