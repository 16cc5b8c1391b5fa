//! Third-party ids of accounts (email addresses) and their validation by email.
//!
//! A client asks for a token (`requestToken`): the server stores a validation session (only the
//! token's hash) and mails the token and a link. The user proves the address by submitting the
//! token (the link, or the client posting it to `submit_url`); the validated session then lets
//! the account add the address (`/account/3pid/add`) or reset its password. Nothing is mailed
//! without `email.smtp_host`: the endpoints answer `M_THREEPID_DENIED`.

use std::{sync::Arc, time::Duration};

use lettre::{
    message::{header::ContentType, Mailbox},
    transport::smtp::authentication::Credentials,
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
};
use ruma::{OwnedUserId, UserId};
use sha2::{Digest, Sha256};

pub use super::tables::{BoundThreepid, Purpose, ThreepidRecord, ValidationSession};
use crate::{
    config::{Config, SmtpTls},
    db::{
        codec::{prefix, Be64, Json},
        Batch, Database,
    },
    error::{Error, Result},
};

/// How long a validated session may be used to add an address or reset a password.
const VALIDATED_FOR: Duration = Duration::from_secs(3600);

pub struct Threepids {
    db: Arc<Database>,
    config: Arc<Config>,
    /// Woken when an address is bound: the third-party invites of it are then taken up.
    bound: Arc<tokio::sync::Notify>,
}

fn hash(text: &str) -> Vec<u8> {
    Sha256::digest(text.as_bytes()).to_vec()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The address as stored and compared: trimmed, lower-cased (Synapse does the same).
pub(crate) fn canonical_email(address: &str) -> Result<String> {
    let address = address.trim().to_lowercase();
    let valid = address.len() <= 254
        && address.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.')
        })
        && !address.chars().any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
    if !valid {
        return Err(Error::invalid_param(format!("{address:?} is not an email address")));
    }
    Ok(address)
}

impl Threepids {
    pub fn new(db: Arc<Database>, config: Arc<Config>) -> Self {
        Self { db, config, bound: Arc::new(tokio::sync::Notify::new()) }
    }

    /// Whether this server mails validation tokens.
    pub fn sends_email(&self) -> bool {
        self.config.email.smtp_host.is_some()
    }

    /// `POST …/email/requestToken`: opens (or, for a repeated `send_attempt`, returns) a
    /// validation session for `address` and mails its token. Returns the session id.
    pub async fn request_email_token(
        &self,
        purpose: Purpose,
        client_secret: &str,
        address: &str,
        send_attempt: u64,
    ) -> Result<String> {
        if !self.sends_email() {
            return Err(Error::ThreepidDenied("this server does not send email".into()));
        }
        let address = canonical_email(address)?;
        let bound = self.owner("email", &address)?;
        match purpose {
            Purpose::AddToAccount | Purpose::Register if bound.is_some() => return Err(Error::ThreepidInUse),
            Purpose::ResetPassword if bound.is_none() => return Err(Error::ThreepidNotFound),
            _ => {}
        }
        let tables = &self.db.tables;
        let attempt_key = hash(&format!("{purpose:?}\0{client_secret}\0{address}"));
        if let Some(Json((sid, last_attempt))) = tables.users.attempthash_sid.get(&attempt_key)? {
            if send_attempt <= last_attempt {
                if let Some(Json(session)) = tables.users.sid_threepidsession.get(&sid)? {
                    if session.expires_ts > crate::time::now_ms() {
                        return Ok(sid);
                    }
                }
            }
        }
        let sid = super::random_password();
        let token = super::random_password();
        let lifetime = Duration::from_secs(self.config.email.token_lifetime_s.max(60));
        let session = ValidationSession {
            purpose,
            client_secret_hash: hash(client_secret),
            address: address.clone(),
            token_hash: hash(&token),
            expires_ts: crate::time::now_ms() + lifetime.as_millis() as u64,
            send_attempt,
            validated_ts: None,
        };
        self.send_token(&address, purpose, &sid, client_secret, &token, lifetime).await?;
        let mut batch = Batch::new();
        tables.users.sid_threepidsession.insert(&mut batch, &sid, &Json(session));
        tables.users.attempthash_sid.insert(&mut batch, &attempt_key, &Json((sid.clone(), send_attempt)));
        self.db.commit(batch)?;
        Ok(sid)
    }

    /// The link a user follows (or a client posts to) to prove the address.
    pub fn submit_url(&self) -> String {
        format!("{}/_hemicycle/client/email/submit_token", self.config.client_base_url())
    }

    async fn send_token(
        &self,
        address: &str,
        purpose: Purpose,
        sid: &str,
        client_secret: &str,
        token: &str,
        lifetime: Duration,
    ) -> Result<()> {
        let link = format!(
            "{}?sid={}&client_secret={}&token={}",
            self.submit_url(),
            form_urlencoded::byte_serialize(sid.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(client_secret.as_bytes()).collect::<String>(),
            form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>(),
        );
        let (subject, what_fr, what_en) = match purpose {
            Purpose::AddToAccount => (
                "Validez votre adresse / Validate your address",
                format!("ajouter cette adresse à votre compte sur {}", self.config.server_name),
                format!("add this address to your account on {}", self.config.server_name),
            ),
            Purpose::Register => (
                "Validez votre adresse / Validate your address",
                format!("créer votre compte sur {}", self.config.server_name),
                format!("create your account on {}", self.config.server_name),
            ),
            Purpose::ResetPassword => (
                "Réinitialisation du mot de passe / Password reset",
                format!("réinitialiser le mot de passe de votre compte sur {}", self.config.server_name),
                format!("reset the password of your account on {}", self.config.server_name),
            ),
        };
        let minutes = lifetime.as_secs() / 60;
        let body = format!(
            "Bonjour,\n\nPour {what_fr}, ouvrez ce lien (valable {minutes} minutes) :\n{link}\n\
             ou saisissez ce code : {token}\n\nSi vous n'êtes pas à l'origine de cette demande, ignorez ce message.\n\n\
             ---\n\nHello,\n\nTo {what_en}, open this link (valid for {minutes} minutes):\n{link}\n\
             or enter this code: {token}\n\nIf you did not ask for this, ignore this message.\n"
        );
        self.send_email(address, subject, body).await
    }

    /// Mails a plain-text message through `[email]`'s relay (validation tokens, renewal links).
    pub async fn send_email(&self, address: &str, subject: &str, body: String) -> Result<()> {
        let email = &self.config.email;
        let host = email.smtp_host.as_deref().unwrap_or_default();
        let from: Mailbox = match &email.notif_from {
            Some(from) => from.parse().map_err(|e| Error::Internal(format!("email.notif_from: {e}")))?,
            None => format!("Hemicycle <noreply@{}>", self.config.server_name)
                .parse()
                .map_err(|e| Error::Internal(format!("default sender: {e}")))?,
        };
        let to: Mailbox =
            address.parse().map_err(|_| Error::invalid_param(format!("{address:?} is not an email address")))?;
        let message = Message::builder()
            .from(from)
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| Error::Internal(format!("building the email: {e}")))?;
        let builder = match email.smtp_tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host),
            SmtpTls::None => Ok(AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)),
        }
        .map_err(|e| Error::Internal(format!("email.smtp_host: {e}")))?;
        let mut builder = builder.port(email.smtp_port).timeout(Some(Duration::from_millis(email.timeout_ms.max(1))));
        if let (Some(user), Some(file)) = (&email.smtp_user, &email.smtp_password_file) {
            let password =
                std::fs::read_to_string(file).map_err(|e| Error::Internal(format!("email.smtp_password_file: {e}")))?;
            builder = builder.credentials(Credentials::new(user.clone(), password.trim_end().to_owned()));
        }
        builder.build().send(message).await.map_err(|e| {
            tracing::warn!(error = %e, "sending an email failed");
            Error::RemoteUnreachable(format!("the email could not be sent: {e}"))
        })?;
        Ok(())
    }

    /// The submitted token proves the address: the session is validated (once; a wrong or
    /// expired token changes nothing).
    pub fn submit_token(&self, sid: &str, client_secret: &str, token: &str) -> Result<()> {
        let refused = || Error::ThreepidAuthFailed("unknown session, wrong client secret or wrong token".into());
        let tables = &self.db.tables;
        let Some(Json(mut session)) = tables.users.sid_threepidsession.get(&sid.to_owned())? else {
            return Err(refused());
        };
        if !constant_time_eq(&session.client_secret_hash, &hash(client_secret))
            || !constant_time_eq(&session.token_hash, &hash(token))
        {
            return Err(refused());
        }
        let now = crate::time::now_ms();
        if session.expires_ts <= now {
            return Err(Error::ThreepidAuthFailed("the token has expired; ask for a new one".into()));
        }
        if session.validated_ts.is_none() {
            session.validated_ts = Some(now);
            let mut batch = Batch::new();
            tables.users.sid_threepidsession.insert(&mut batch, &sid.to_owned(), &Json(session));
            self.db.commit(batch)?;
        }
        Ok(())
    }

    /// The address a validated session proved, for `purpose`; the session is used up.
    pub fn take_validated(&self, sid: &str, client_secret: &str, purpose: Purpose) -> Result<String> {
        let address = self.validated(sid, client_secret, purpose)?;
        let mut batch = Batch::new();
        self.db.tables.users.sid_threepidsession.remove(&mut batch, &sid.to_owned());
        self.db.commit(batch)?;
        Ok(address)
    }

    /// The address a validated session proved, for `purpose`, the session left as it is (checked
    /// before a step that may still refuse, used up after).
    pub fn validated(&self, sid: &str, client_secret: &str, purpose: Purpose) -> Result<String> {
        let refused = || Error::ThreepidAuthFailed(format!("no validated session {sid} for this request"));
        let tables = &self.db.tables;
        let Some(Json(session)) = tables.users.sid_threepidsession.get(&sid.to_owned())? else { return Err(refused()) };
        let fresh =
            session.validated_ts.is_some_and(|at| crate::time::now_ms() < at + VALIDATED_FOR.as_millis() as u64);
        if session.purpose != purpose || !fresh || !constant_time_eq(&session.client_secret_hash, &hash(client_secret))
        {
            return Err(refused());
        }
        Ok(session.address)
    }

    /// The account an address belongs to.
    pub fn owner(&self, medium: &str, address: &str) -> Result<Option<OwnedUserId>> {
        Ok(self.db.tables.users.mediumaddress_userid.get(&(medium.to_owned(), address.to_owned()))?)
    }

    pub fn add(&self, user: &UserId, medium: &str, address: &str) -> Result<()> {
        let mut batch = Batch::new();
        self.add_into(&mut batch, user, medium, address)?;
        self.db.commit(batch)?;
        self.wake_bound();
        Ok(())
    }

    /// Adds the address in the caller's batch (an account created with its address at once);
    /// the caller calls [`Self::wake_bound`] once the batch is written.
    pub fn add_into(&self, batch: &mut Batch, user: &UserId, medium: &str, address: &str) -> Result<()> {
        if self.owner(medium, address)?.is_some_and(|u| u != user) {
            return Err(Error::ThreepidInUse);
        }
        let now = crate::time::now_ms();
        let tables = &self.db.tables;
        tables.users.useridmediumaddress_threepid.insert(
            batch,
            &(user.to_owned(), medium.to_owned(), address.to_owned()),
            &Json(ThreepidRecord { added_at: now, validated_at: now }),
        );
        tables.users.mediumaddress_userid.insert(batch, &(medium.to_owned(), address.to_owned()), &user.to_owned());
        self.queue_bound_into(batch, user, medium, address);
        Ok(())
    }

    fn queue_bound_into(&self, batch: &mut Batch, user: &UserId, medium: &str, address: &str) {
        let pos = self.db.next_count(batch);
        let record = BoundThreepid { user: user.to_owned(), medium: medium.to_owned(), address: address.to_owned() };
        self.db.tables.users.pos_boundthreepid.insert(batch, &Be64(pos), &Json(record));
    }

    /// Queues `address` (bound to `user` already) for its third-party invites to be taken up
    /// again: another node just told us of an invite of it.
    pub fn requeue_bound(&self, user: &UserId, medium: &str, address: &str) -> Result<()> {
        let mut batch = Batch::new();
        self.queue_bound_into(&mut batch, user, medium, address);
        self.db.commit(batch)?;
        self.wake_bound();
        Ok(())
    }

    /// Wakes whoever takes up the invites of bound addresses.
    pub fn wake_bound(&self) {
        self.bound.notify_one();
    }

    /// What [`Self::wake_bound`] wakes.
    pub fn bound_notify(&self) -> Arc<tokio::sync::Notify> {
        self.bound.clone()
    }

    /// The bound addresses whose invites are still to be taken up, oldest first (at most `limit`).
    pub fn bound_queue(&self, limit: usize) -> Result<Vec<(u64, BoundThreepid)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.users.pos_boundthreepid.iter().take(limit) {
            let (Be64(pos), Json(record)) = entry?;
            out.push((pos, record));
        }
        Ok(out)
    }

    /// The invites of a bound address have been taken up.
    pub fn bound_done(&self, pos: u64) -> Result<()> {
        let mut batch = Batch::new();
        self.db.tables.users.pos_boundthreepid.remove(&mut batch, &Be64(pos));
        Ok(self.db.commit(batch)?)
    }

    /// Removes an address from the account; removing one it does not have changes nothing.
    pub fn remove(&self, user: &UserId, medium: &str, address: &str) -> Result<()> {
        let address = if medium == "email" { canonical_email(address)? } else { address.to_owned() };
        let tables = &self.db.tables;
        let key = (user.to_owned(), medium.to_owned(), address.clone());
        if tables.users.useridmediumaddress_threepid.get(&key)?.is_none() {
            return Ok(());
        }
        let mut batch = Batch::new();
        tables.users.useridmediumaddress_threepid.remove(&mut batch, &key);
        tables.users.mediumaddress_userid.remove(&mut batch, &(medium.to_owned(), address));
        Ok(self.db.commit(batch)?)
    }

    /// The account's addresses: (medium, address, record).
    pub fn list(&self, user: &UserId) -> Result<Vec<(String, String, ThreepidRecord)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.users.useridmediumaddress_threepid.scan_prefix(prefix(&user.to_owned())) {
            let ((_, medium, address), Json(record)) = entry?;
            out.push((medium, address, record));
        }
        Ok(out)
    }
}
