//! The homeserver's client API as the bot uses it: the `as_token`, with `user_id` when acting
//! for a user of the namespace. Any homeserver implementing the Application Service API works
//! (Hemicycle or Synapse): nothing here is specific to one.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

/// A failed call: the HTTP status and the Matrix error body (or why there is none).
#[derive(Debug, Clone)]
pub struct MatrixError {
    pub status: u16,
    pub errcode: String,
    pub error: String,
}

impl std::fmt::Display for MatrixError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status, self.errcode, self.error)
    }
}

impl MatrixError {
    /// Unreachable, or failing on its side: a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        self.status == 0 || self.status >= 500
    }
}

pub type Result<T> = std::result::Result<T, MatrixError>;

pub struct Matrix {
    http: reqwest::Client,
    base: String,
    as_token: String,
    /// The bot's user id.
    pub bot: String,
    /// Whether the bot is a user of the namespace rather than the appservice's `sender`: its
    /// calls then name it (`user_id`), as the Application Service API has it.
    masquerades: bool,
}

/// Percent-encodes one path segment.
pub fn segment(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>().replace('+', "%20")
}

impl Matrix {
    /// `sender` is the registration's `sender_localpart` as a user id; `bot` the user the bot
    /// is, the same or one of the registration's namespace.
    pub fn new(base: &str, as_token: &str, sender: &str, bot: String) -> Matrix {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("HTTP client");
        let masquerades = bot != sender;
        Matrix { http, base: base.trim_end_matches('/').to_owned(), as_token: as_token.to_owned(), bot, masquerades }
    }

    async fn call_with(&self, token: &str, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        let send = || {
            let mut request = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(token);
            if let Some(body) = body {
                request = request.json(body);
            }
            request.send()
        };
        // A pooled connection the homeserver closed (it restarted) fails the first request on
        // it: idempotent requests (GET, PUT with a transaction id) are tried once more.
        let sent = match send().await {
            Err(_) if method == Method::GET || method == Method::PUT => send().await,
            other => other,
        };
        let response =
            sent.map_err(|e| MatrixError { status: 0, errcode: "M_CONNECTION_FAILED".into(), error: e.to_string() })?;
        let status = response.status().as_u16();
        let value: Value = response.json().await.unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(value);
        }
        Err(MatrixError {
            status,
            errcode: value["errcode"].as_str().unwrap_or("M_UNKNOWN").to_owned(),
            error: value["error"].as_str().unwrap_or("").to_owned(),
        })
    }

    /// A call as the bot.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        if !self.masquerades {
            return self.call_with(&self.as_token, method, path, body).await;
        }
        let join = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{join}user_id={}", segment(&self.bot));
        self.call_with(&self.as_token, method, &path, body).await
    }

    /// A call as the appservice itself (its `sender`), for what only it does: registering and
    /// logging in its users, pinging.
    pub async fn call_as_service(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value> {
        self.call_with(&self.as_token, method, path, body).await
    }

    /// Makes the bot's user when it is a user of the namespace the homeserver does not hold
    /// yet (one it holds answers M_USER_IN_USE): the homeserver lets the appservice act only as
    /// users it registered.
    pub async fn register_bot(&self) -> Result<()> {
        if !self.masquerades {
            return Ok(());
        }
        let localpart = self.bot.trim_start_matches('@').split(':').next().unwrap_or_default();
        let body = json!({ "type": "m.login.application_service", "username": localpart, "inhibit_login": true });
        match self.call_as_service(Method::POST, "/_matrix/client/v3/register", Some(&body)).await {
            Err(e) if e.errcode != "M_USER_IN_USE" => Err(e),
            _ => Ok(()),
        }
    }

    /// Who owns a user's access token (`/account/whoami` with that token).
    pub async fn whoami(&self, token: &str) -> Result<String> {
        let me = self.call_with(token, Method::GET, "/_matrix/client/v3/account/whoami", None).await?;
        me["user_id"].as_str().map(str::to_owned).ok_or_else(|| MatrixError {
            status: 502,
            errcode: "M_UNKNOWN".into(),
            error: "whoami answered no user_id".into(),
        })
    }

    pub async fn join(&self, room: &str) -> Result<()> {
        self.call(Method::POST, &format!("/_matrix/client/v3/join/{}", segment(room)), Some(&json!({}))).await?;
        Ok(())
    }

    pub async fn joined_rooms(&self) -> Result<Vec<String>> {
        let rooms = self.call(Method::GET, "/_matrix/client/v3/joined_rooms", None).await?;
        Ok(rooms["joined_rooms"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect())
    }

    pub async fn state(&self, room: &str) -> Result<Vec<Value>> {
        let state = self.call(Method::GET, &format!("/_matrix/client/v3/rooms/{}/state", segment(room)), None).await?;
        Ok(state.as_array().cloned().unwrap_or_default())
    }

    pub async fn state_event(&self, room: &str, kind: &str, key: &str) -> Result<Option<Value>> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", segment(room), segment(kind), segment(key));
        match self.call(Method::GET, &path, None).await {
            Ok(content) => Ok(Some(content)),
            Err(e) if e.status == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn put_state(&self, room: &str, kind: &str, key: &str, content: &Value) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/state/{}/{}", segment(room), segment(kind), segment(key));
        let sent = self.call(Method::PUT, &path, Some(content)).await?;
        Ok(sent["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Sends a notice (bots speak in notices, which other bots ignore). `txn` makes a resend of
    /// the same reply (after a crash, or a transaction delivered again) a no-op.
    pub async fn notice(&self, room: &str, txn: &str, text: &str) -> Result<String> {
        let path = format!("/_matrix/client/v3/rooms/{}/send/m.room.message/{}", segment(room), segment(txn));
        let sent = self.call(Method::PUT, &path, Some(&json!({ "msgtype": "m.notice", "body": text }))).await?;
        Ok(sent["event_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Opens a direct-message room with `user` (the bot invites them, `is_direct`).
    pub async fn create_dm(&self, user: &str) -> Result<String> {
        let body = json!({ "is_direct": true, "invite": [user], "preset": "trusted_private_chat" });
        let room = self.call(Method::POST, "/_matrix/client/v3/createRoom", Some(&body)).await?;
        Ok(room["room_id"].as_str().unwrap_or_default().to_owned())
    }

    /// The room version the homeserver creates rooms with (`/capabilities`).
    pub async fn default_room_version(&self) -> Result<String> {
        let caps = self.call(Method::GET, "/_matrix/client/v3/capabilities", None).await?;
        Ok(caps["capabilities"]["m.room_versions"]["default"].as_str().unwrap_or("10").to_owned())
    }

    /// SHA-256 (hex) and length of a media file (`mxc` without its scheme: `server/media id`),
    /// read through authenticated media and hashed as it streams (files may be large).
    pub async fn download_digest(&self, mxc: &str) -> Result<(String, u64)> {
        use sha2::Digest;
        let (server, id) = mxc.split_once('/').ok_or_else(|| MatrixError {
            status: 400,
            errcode: "M_INVALID_PARAM".into(),
            error: format!("mxc://{mxc} is not a media URI"),
        })?;
        let url = format!("{}/_matrix/client/v1/media/download/{}/{}", self.base, segment(server), segment(id));
        let failed =
            |e: reqwest::Error| MatrixError { status: 0, errcode: "M_CONNECTION_FAILED".into(), error: e.to_string() };
        let mut response = self.http.get(url).bearer_auth(&self.as_token).send().await.map_err(failed)?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(MatrixError {
                status,
                errcode: "M_UNKNOWN".into(),
                error: format!("download answered {status}"),
            });
        }
        let mut hasher = sha2::Sha256::new();
        let mut length = 0u64;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            length += chunk.len() as u64;
            hasher.update(&chunk);
        }
        Ok((hasher.finalize().iter().map(|b| format!("{b:02x}")).collect(), length))
    }

    /// The membership of `user` in `room` as the bot sees it (`None`: never a member).
    pub async fn membership(&self, room: &str, user: &str) -> Result<Option<String>> {
        Ok(self
            .state_event(room, "m.room.member", user)
            .await?
            .and_then(|c| c["membership"].as_str().map(str::to_owned)))
    }
}
