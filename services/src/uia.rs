//! User-interactive authentication (spec "User-Interactive Authentication API").
//!
//! Sessions live in memory: they last minutes, and a restart only makes a client start its UIA flow
//! again. Each session is bound to the operation and user it was opened for, so a session completed
//! for one request cannot authorize another.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::{
    api::client::uiaa::{AuthData, UserIdentifier},
    OwnedUserId, UserId,
};
use serde_json::json;

use crate::{
    error::{Error, Result},
    users::Users,
};

pub const DUMMY: &str = "m.login.dummy";
pub const PASSWORD: &str = "m.login.password";
pub const REGISTRATION_TOKEN: &str = "m.login.registration_token";
/// Offered only where the caller has already checked the validation session it names (a
/// password reset), so the stage itself passes here.
pub const EMAIL_IDENTITY: &str = "m.login.email.identity";
/// The OAuth stage (spec v1.17, MSC4312): the person approves the operation at the account
/// management URL; nothing a request carries completes it.
pub const OAUTH: &str = "m.oauth";
/// The stage's unstable name, which clients written before MSC4312 was merged look for.
pub const OAUTH_UNSTABLE: &str = "org.matrix.cross_signing_reset";

const SESSION_LIFETIME: Duration = Duration::from_secs(15 * 60);
const MAX_SESSIONS: usize = 100_000;

pub use crate::error::UiaChallenge;

struct Session {
    purpose: String,
    user: Option<OwnedUserId>,
    completed: Vec<String>,
    expires: Instant,
}

pub struct Uia {
    sessions: Mutex<HashMap<String, Session>>,
    registration_token: Option<String>,
    /// The tokens admins made (the configured one is checked first).
    tokens: std::sync::Arc<crate::users::registration_tokens::RegistrationTokens>,
}

/// Compares without an early exit, so timing does not reveal how much of a token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Uia {
    pub fn new(
        registration_token: Option<String>,
        tokens: std::sync::Arc<crate::users::registration_tokens::RegistrationTokens>,
    ) -> Self {
        Self { sessions: Mutex::new(HashMap::new()), registration_token, tokens }
    }

    /// Whether `token` is the configured registration token or a valid admin-made one.
    pub fn registration_token_matches(&self, token: &str) -> Result<bool> {
        let configured = self
            .registration_token
            .as_ref()
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), token.as_bytes()));
        Ok(configured || self.tokens.is_valid(token)?)
    }

    /// Passes the token stage: the configured token, or one use of an admin-made token.
    pub fn use_registration_token(&self, token: &str) -> Result<bool> {
        let configured = self
            .registration_token
            .as_ref()
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), token.as_bytes()));
        Ok(configured || self.tokens.take_use(token)?)
    }

    /// Runs one UIA round for `purpose` (an operation name) on behalf of `user` (none for
    /// registration). Returns `Ok` once a whole flow is complete, or the challenge to send back.
    pub async fn authorize(
        &self,
        users: &Users,
        auth: Option<&AuthData>,
        flows: &[&[&'static str]],
        user: Option<&UserId>,
        purpose: &str,
    ) -> Result<()> {
        let Some(auth) = auth else {
            return Err(self.challenge(self.open_session(purpose, user), flows, &[], None, json!({})));
        };
        let session_id = match auth.session() {
            Some(id) if self.session_matches(id, purpose, user)? => id.to_owned(),
            Some(_) => return Err(Error::forbidden("this authentication session belongs to another request")),
            None => self.open_session(purpose, user),
        };
        let stage = auth.auth_type().map(|t| t.to_string()).unwrap_or_default();
        if !flows.iter().any(|f| f.contains(&stage.as_str())) {
            return Err(Error::invalid_param(format!("authentication stage {stage:?} is not offered here")));
        }
        let failure = match auth {
            AuthData::Dummy(_) => None,
            AuthData::EmailIdentity(_) => None,
            AuthData::RegistrationToken(t) if self.use_registration_token(&t.token)? => None,
            AuthData::RegistrationToken(_) => Some("invalid registration token"),
            AuthData::Password(p) => match (user, &p.identifier) {
                (Some(user), UserIdentifier::Matrix(id)) => {
                    let claimed = users.parse_login_user(&id.user).ok();
                    if claimed.as_deref() != Some(user) {
                        Some("invalid password")
                    } else {
                        match users.check_password(user, &p.password).await {
                            Ok(()) => None,
                            // Too many wrong passwords: the wait applies here as at /login.
                            Err(limit @ Error::LimitExceeded { .. }) => return Err(limit),
                            Err(_) => Some("invalid password"),
                        }
                    }
                }
                _ => Some("password authentication needs the user's own Matrix identifier"),
            },
            _ => return Err(Error::invalid_param(format!("authentication stage {stage:?} is not supported"))),
        };
        let mut sessions = self.sessions.lock().expect("uia lock");
        let session =
            sessions.get_mut(&session_id).ok_or_else(|| Error::forbidden("authentication session expired"))?;
        if let Some(reason) = failure {
            let completed = session.completed.clone();
            drop(sessions);
            return Err(self.challenge(session_id, flows, &completed, Some(reason), json!({})));
        }
        if !session.completed.contains(&stage) {
            session.completed.push(stage);
        }
        let done = flows.iter().any(|flow| flow.iter().all(|s| session.completed.iter().any(|c| c == s)));
        if done {
            sessions.remove(&session_id);
            return Ok(());
        }
        let completed = session.completed.clone();
        drop(sessions);
        Err(self.challenge(session_id, flows, &completed, None, json!({})))
    }

    /// The `m.oauth` stage for `purpose` (MSC4312), offered under its stable and unstable names
    /// with `url`, where the person approves the operation. The approval is kept where the
    /// operation is (the caller lets the request through while it lasts), so this only ever
    /// answers the challenge: again and again to a client retrying until the person has
    /// approved, in the session it retries with (a new one when that is unknown or another
    /// request's), with an error once it has tried without the approval.
    pub fn oauth_challenge(&self, auth: Option<&AuthData>, user: &UserId, purpose: &str, url: &str) -> Error {
        let known = auth
            .and_then(AuthData::session)
            .filter(|id| self.session_matches(id, purpose, Some(user)).unwrap_or(false));
        let session = match known {
            Some(id) => id.to_owned(),
            None => self.open_session(purpose, Some(user)),
        };
        let failure = auth.map(|_| "the operation has not been approved at the account management URL yet");
        let params: serde_json::Map<String, serde_json::Value> =
            [OAUTH, OAUTH_UNSTABLE].into_iter().map(|stage| (stage.to_owned(), json!({ "url": url }))).collect();
        self.challenge(session, &[&[OAUTH], &[OAUTH_UNSTABLE]], &[], failure, params.into())
    }

    fn session_matches(&self, id: &str, purpose: &str, user: Option<&UserId>) -> Result<bool> {
        let mut sessions = self.sessions.lock().expect("uia lock");
        match sessions.get(id) {
            Some(s) if s.expires > Instant::now() => Ok(s.purpose == purpose && s.user.as_deref() == user),
            Some(_) => {
                sessions.remove(id);
                Err(Error::forbidden("authentication session expired"))
            }
            None => Err(Error::forbidden("unknown authentication session")),
        }
    }

    fn open_session(&self, purpose: &str, user: Option<&UserId>) -> String {
        let id = crate::users::random_password();
        let mut sessions = self.sessions.lock().expect("uia lock");
        if sessions.len() >= MAX_SESSIONS {
            let now = Instant::now();
            sessions.retain(|_, s| s.expires > now);
        }
        sessions.insert(
            id.clone(),
            Session {
                purpose: purpose.to_owned(),
                user: user.map(ToOwned::to_owned),
                completed: Vec::new(),
                expires: Instant::now() + SESSION_LIFETIME,
            },
        );
        id
    }

    fn challenge(
        &self,
        session: String,
        flows: &[&[&str]],
        completed: &[String],
        failure: Option<&str>,
        params: serde_json::Value,
    ) -> Error {
        let mut body = json!({
            "flows": flows.iter().map(|stages| json!({ "stages": stages })).collect::<Vec<_>>(),
            "params": params,
            "session": session,
            "completed": completed,
        });
        if let Some(reason) = failure {
            body["errcode"] = json!("M_FORBIDDEN");
            body["error"] = json!(reason);
        }
        Error::Uia(Box::new(UiaChallenge { body }))
    }
}
