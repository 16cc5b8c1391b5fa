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
//! `room.auto_create: false` (docs/calls.md). The delayed leave events participants hand over
//! are kept by [`delegation`].

pub mod delegation;
pub mod state;
pub mod tables;

use std::{sync::Arc, time::Duration};

use base64::Engine as _;
use hmac::{Hmac, Mac};
use ruma::{OwnedUserId, ServerName};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub use self::state::{LiveKit, Presence};
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
    /// A delayed leave this service cannot keep: 400 `M_BAD_JSON`.
    Delegation(&'static str),
    /// A delayed leave handed over by a user of a server without full access: lk-jwt-service
    /// answers 403 `M_FORBIDDEN` at `/delegate_delayed_leave`, 400 `M_BAD_JSON` with a token.
    NotFullAccess,
    /// The participant's server already has as many delegations as we keep: 429
    /// `M_LIMIT_EXCEEDED`.
    TooManyDelegations,
    /// The delegation could not be recorded: 500 `M_UNKNOWN`.
    Internal,
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

/// A delayed leave event handed over with a token request (`delay_id`, `delay_timeout`).
pub struct Delegation<'a> {
    pub delay_id: &'a str,
    pub timeout: Duration,
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
        Ok(Self {
            config: config.clone(),
            secret,
            api_url,
            http,
            delegations: Default::default(),
            client_apis: Default::default(),
        })
    }

    /// Checks the caller's OpenID token, then signs their token; for a full-access server's
    /// user, has the SFU open the room first (so a failure there leaves nothing half done).
    pub async fn grant(
        &self,
        services: &Arc<Services>,
        request: TokenRequest<'_>,
        delegation: Option<Delegation<'_>>,
    ) -> Result<Grant, Refusal> {
        let (user, identity) = self.authenticate(services, &request).await?;
        let full_access = self.config.full_access(request.matrix_server_name);
        if let Some(delegation) = &delegation {
            self.check_delegation(services, &user, full_access, delegation).await?;
        }
        if full_access {
            self.create_room(&request.room).await.map_err(Refusal::Sfu)?;
        }
        if let Some(delegation) = delegation {
            self.delegate(services, &user, &request.room, &identity, &delegation)?;
        }
        let now = now_ms() / 1000;
        // lk-jwt-service's grant, the same for every user: joining one room. Never `roomCreate`,
        // even for full access (the room was opened above): LiveKit checks that grant on its room
        // API, where it also lets the holder delete any room of the SFU, ending others' calls.
        let claims = json!({
            "iss": self.config.key,
            "sub": identity,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME.as_secs(),
            "video": {
                "roomJoin": true,
                "room": request.room,
                "canPublish": true,
                "canSubscribe": true,
                "canUpdateOwnMetadata": true,
            },
        });
        tracing::info!(%user, room = %request.room, full_access, "LiveKit token granted");
        Ok(Grant { url: self.config.url.clone(), jwt: self.sign(&claims) })
    }

    /// The caller's user id (checked with their server) and LiveKit identity.
    async fn authenticate(
        &self,
        services: &Services,
        request: &TokenRequest<'_>,
    ) -> Result<(OwnedUserId, String), Refusal> {
        let user = self.verify_openid(services, request.openid_token, request.matrix_server_name).await?;
        if request.claimed_user_id.is_some_and(|claimed| claimed != user.as_str()) {
            tracing::warn!(%user, claimed = ?request.claimed_user_id, "LiveKit token: the claimed user is not the token's");
            return Err(Refusal::Unauthorized);
        }
        let identity = match request.identity {
            Identity::Member { device_id, member_id } => member_identity(user.as_str(), device_id, member_id),
            Identity::Legacy { device_id } => format!("{user}:{device_id}"),
        };
        Ok((user, identity))
    }

    /// `POST …/delegate_delayed_leave`: a participant already on the SFU hands over its
    /// delayed leave. No webhook will say it joined: its task asks the SFU.
    pub async fn delegate_leave(
        &self,
        services: &Arc<Services>,
        request: TokenRequest<'_>,
        delegation: Delegation<'_>,
    ) -> Result<(), Refusal> {
        let (user, identity) = self.authenticate(services, &request).await?;
        let full_access = self.config.full_access(request.matrix_server_name);
        self.check_delegation(services, &user, full_access, &delegation).await?;
        self.delegate(services, &user, &request.room, &identity, &delegation)
    }

    /// A delegation is kept only for users of full-access servers (as lk-jwt-service). Of this
    /// server's delayed events, only the caller's own; another server's must be reachable
    /// through its client API, and its delay id must fit in a URL as it is.
    async fn check_delegation(
        &self,
        services: &Services,
        user: &OwnedUserId,
        full_access: bool,
        delegation: &Delegation<'_>,
    ) -> Result<(), Refusal> {
        if !full_access {
            return Err(Refusal::NotFullAccess);
        }
        if delegation.timeout.is_zero() {
            return Err(Refusal::Delegation("The request body is missing `delay_id` or `delay_timeout`"));
        }
        if user.server_name() == services.config.server_name {
            let owned =
                services.delayed_events.get(delegation.delay_id).ok().flatten().is_some_and(|d| d.owner == *user);
            if !owned {
                return Err(Refusal::Delegation("The request body has an unknown `delay_id`"));
            }
            return Ok(());
        }
        if !crate::rtc::delegation::usable_delay_id(delegation.delay_id) {
            return Err(Refusal::Delegation("The request body has an unknown `delay_id`"));
        }
        if let Err(error) = self.client_api(services, user.server_name().as_str()).await {
            tracing::info!(server = %user.server_name(), %error, "a delegated leave's client API was not found");
            return Err(Refusal::Delegation("Unable to resolve client-server API"));
        }
        Ok(())
    }

    fn delegate(
        &self,
        services: &Arc<Services>,
        user: &OwnedUserId,
        room: &str,
        identity: &str,
        delegation: &Delegation<'_>,
    ) -> Result<(), Refusal> {
        let server = user.server_name().as_str();
        match self.hand_over(services, server, room, identity, delegation.delay_id, delegation.timeout) {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::warn!(%server, "a delegated leave was refused: too many delegations");
                Err(Refusal::TooManyDelegations)
            }
            Err(error) => {
                tracing::error!(%error, "a delegated leave was not recorded");
                Err(Refusal::Internal)
            }
        }
    }

    /// Checks a webhook of the SFU as LiveKit signs them: an HS256 JWT of our key and secret in
    /// `Authorization`, whose `sha256` claim is the base64 SHA-256 of the body.
    pub fn verify_webhook(&self, authorization: &str, body: &[u8]) -> bool {
        let Some(claims) = self.verify_jwt(authorization.trim_start_matches("Bearer ").trim()) else {
            return false;
        };
        let claimed = claims["sha256"].as_str().unwrap_or("");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(claimed)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(claimed));
        decoded.is_ok_and(|hash| hash == Sha256::digest(body).as_slice())
    }

    /// The claims of a JWT signed with our secret and issued under our key, unexpired.
    fn verify_jwt(&self, token: &str) -> Option<Value> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (signing_input, signature) = token.rsplit_once('.')?;
        let (header, payload) = signing_input.split_once('.')?;
        let header: Value = serde_json::from_slice(&b64.decode(header).ok()?).ok()?;
        if header["alg"] != "HS256" {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&b64.decode(signature).ok()?).ok()?;
        let claims: Value = serde_json::from_slice(&b64.decode(payload).ok()?).ok()?;
        let now = now_ms() / 1000;
        let fresh = claims["exp"].as_u64().is_some_and(|exp| exp + 60 >= now)
            && claims["nbf"].as_u64().is_none_or(|nbf| nbf <= now + 60);
        (claims["iss"] == self.config.key.as_str() && fresh).then_some(claims)
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

    /// Whether the SFU has `identity` in `room` (`GetParticipant` of its room API): `Ok(false)`
    /// only when the SFU says it has not (Twirp `not_found`), an error when it cannot say.
    pub(crate) async fn participant_present(&self, room: &str, identity: &str) -> Result<bool, String> {
        let now = now_ms() / 1000;
        let claims = json!({
            "iss": self.config.key,
            "nbf": now,
            "exp": now + API_TOKEN_LIFETIME.as_secs(),
            "video": { "roomAdmin": true, "room": room },
        });
        let url = format!("{}/twirp/livekit.RoomService/GetParticipant", self.api_url);
        let answer = self
            .http
            .post(&url)
            .bearer_auth(self.sign(&claims))
            .json(&json!({ "room": room, "identity": identity }))
            .send()
            .await
            .map_err(|e| format!("the SFU's room API at {url}: {e}"))?;
        let status = answer.status();
        if status.is_success() {
            return Ok(true);
        }
        if answer.content_length().is_some_and(|len| len > SFU_MAX_ANSWER as u64) {
            return Err(format!("the SFU's room API answered {status} with a body over {SFU_MAX_ANSWER} bytes"));
        }
        let body: Value = answer.json().await.unwrap_or_default();
        if status == reqwest::StatusCode::NOT_FOUND && body["code"] == "not_found" {
            return Ok(false);
        }
        Err(format!("the SFU's room API answered {status}: {body}"))
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
