//! Signing in through upstream OpenID Connect providers (`[[oauth.upstream]]`, ProConnect and
//! the like): the authorization code flow with PKCE and a nonce towards the provider, then the
//! ProConnect-style mapping of the person to an account — the account their provider subject is
//! linked to, else the one holding their verified email address (with the configured fallbacks
//! for agencies whose domain changed), else a new account when the network's domain map says the
//! address lives on this node.
//!
//! The ID token and the userinfo answer come straight from the provider's token and userinfo
//! endpoints over the connection we opened, so — as OpenID Connect Core section 3.1.3.7 allows —
//! the transport vouches for their issuer and their signature is not checked again; the claims
//! are (issuer, audience, expiry, nonce, subject).

use base64::Engine;
use ruma::OwnedUserId;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::{
    state::jwt_claims,
    tables::{Origin, UpstreamSession},
};
use crate::{
    db::{codec::Json, Batch},
    error::{Error, Result},
    services::Services,
    time::now_ms,
    users::token_hash,
};

/// How long a person may take at the provider.
const SESSION_LIFETIME_MS: u64 = 15 * 60 * 1000;

/// Why a person of an upstream provider is not signed in; the page says it in their language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamRefusal {
    /// The provider refused or failed (its error, or ours reading its answer).
    Provider(String),
    /// The browser came back without the sign-in it started (expired, or another browser).
    UnknownState,
    NoEmail,
    UnverifiedEmail,
    /// The address lives on another node of the network: the person signs in there.
    OtherNode(String),
    /// No account holds the address, and none is created for it here.
    NoAccount,
    Deactivated,
}

/// What a provider says of the person.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub subject: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub given_name: Option<String>,
    pub family_name: Option<String>,
    pub organisation: Option<String>,
}

impl Identity {
    /// "Given Family [Organisation]", as the state's messenger names its agents.
    pub fn display_name(&self) -> Option<String> {
        let name = [self.given_name.as_deref(), self.family_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if name.is_empty() {
            return None;
        }
        Some(match self.organisation.as_deref().map(str::trim).filter(|o| !o.is_empty()) {
            Some(org) => format!("{name} [{org}]"),
            None => name,
        })
    }
}

fn random(bytes: usize) -> String {
    use rand::Rng;
    let mut buffer = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

fn claim_str(claims: &Map<String, Value>, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).map(str::to_owned).filter(|v| !v.trim().is_empty())
}

/// Starts a sign-in at provider `id`: records it under a new `state` and answers where to
/// send the browser, and the state (which the caller binds to the browser with a cookie).
/// `register`: the person came to make an account (`m.login.sso`'s `action=register`), which a
/// provider that announces `prompt=create` is asked to show.
pub async fn start(
    services: &Services,
    id: &str,
    callback: &str,
    origin: Origin,
    register: bool,
) -> std::result::Result<(String, String), UpstreamRefusal> {
    let (config, _) =
        services.upstreams.provider(id).ok_or_else(|| UpstreamRefusal::Provider(format!("no provider {id}")))?;
    let discovery = services.upstreams.discover(config).await.map_err(UpstreamRefusal::Provider)?;
    let state = random(24);
    let session = UpstreamSession {
        provider: id.to_owned(),
        nonce: random(24),
        verifier: random(48),
        expires_ms: now_ms().saturating_add(SESSION_LIFETIME_MS),
        origin,
    };
    let challenge =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(session.verifier.as_bytes()));
    let mut query = form_urlencoded::Serializer::new(String::new());
    if register && discovery.prompt_values.iter().any(|p| p == "create") {
        query.append_pair("prompt", "create");
    }
    let query = query
        .append_pair("response_type", "code")
        .append_pair("client_id", &config.client_id)
        .append_pair("redirect_uri", callback)
        .append_pair("scope", &config.scopes.join(" "))
        .append_pair("state", &state)
        .append_pair("nonce", &session.nonce)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let separator = if discovery.authorization_endpoint.contains('?') { '&' } else { '?' };
    let mut batch = Batch::new();
    services.db.tables.oauth.statehash_upstream.insert(&mut batch, &token_hash(&state), &Json(session));
    services.db.commit(batch).map_err(|e| UpstreamRefusal::Provider(e.to_string()))?;
    Ok((format!("{}{separator}{query}", discovery.authorization_endpoint), state))
}

/// The provider's answer at our callback: the sign-in it belongs to (used up here, once),
/// then the code exchanged for the person's claims. `iss`, when the provider names itself in its
/// answer (RFC 9207), must be the provider the sign-in went to, so that another provider cannot
/// have us send it a code meant for the first (a mix-up).
pub async fn finish(
    services: &Services,
    state: &str,
    code: &str,
    iss: Option<&str>,
    callback: &str,
) -> std::result::Result<(UpstreamSession, Identity), UpstreamRefusal> {
    let table = &services.db.tables.oauth.statehash_upstream;
    let hash = token_hash(state);
    let provider_error = |e: Error| UpstreamRefusal::Provider(e.to_string());
    let Some(Json(session)) = table.get(&hash).map_err(|e| provider_error(e.into()))? else {
        return Err(UpstreamRefusal::UnknownState);
    };
    let mut batch = Batch::new();
    table.remove(&mut batch, &hash);
    services.db.commit(batch).map_err(|e| provider_error(e.into()))?;
    if now_ms() >= session.expires_ms {
        return Err(UpstreamRefusal::UnknownState);
    }
    let (config, secret) = services
        .upstreams
        .provider(&session.provider)
        .ok_or_else(|| UpstreamRefusal::Provider(format!("no provider {}", session.provider)))?;
    if iss.is_some_and(|iss| iss.trim_end_matches('/') != config.issuer.trim_end_matches('/')) {
        return Err(UpstreamRefusal::Provider("the answer comes from another issuer".into()));
    }
    let discovery = services.upstreams.discover(config).await.map_err(UpstreamRefusal::Provider)?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", callback),
        ("code_verifier", session.verifier.as_str()),
    ];
    let mut request = services.upstreams.http.post(&discovery.token_endpoint);
    if config.token_endpoint_auth_method == "client_secret_post" {
        form.push(("client_id", config.client_id.as_str()));
        form.push(("client_secret", secret.as_str()));
    } else {
        let encode = |v: &str| form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
        let pair = format!("{}:{}", encode(&config.client_id), encode(secret));
        let basic = base64::engine::general_purpose::STANDARD.encode(pair);
        request = request.header(reqwest::header::AUTHORIZATION, format!("Basic {basic}"));
    }
    let body = form_urlencoded::Serializer::new(String::new()).extend_pairs(&form).finish();
    let request = request.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded").body(body);
    let (answer, ok) = services.upstreams.read_json(request).await.map_err(UpstreamRefusal::Provider)?;
    if !ok {
        let error = answer.get("error").and_then(Value::as_str).unwrap_or("an error");
        return Err(UpstreamRefusal::Provider(format!("the provider's token endpoint answered {error}")));
    }
    let id_token = answer
        .get("id_token")
        .and_then(Value::as_str)
        .ok_or(UpstreamRefusal::Provider("the provider answered no ID token".into()))?;
    let mut claims = jwt_claims(id_token).map_err(UpstreamRefusal::Provider)?;
    let issuer_ok = claims.get("iss").and_then(Value::as_str).map(|i| i.trim_end_matches('/'))
        == Some(config.issuer.trim_end_matches('/'));
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => *aud == config.client_id,
        Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(&config.client_id)),
        _ => false,
    };
    let unexpired = claims.get("exp").and_then(Value::as_u64).is_some_and(|exp| exp.saturating_mul(1000) > now_ms());
    let nonce_ok = claims.get("nonce").and_then(Value::as_str) == Some(session.nonce.as_str());
    if !(issuer_ok && audience_ok && unexpired && nonce_ok) {
        return Err(UpstreamRefusal::Provider("the ID token is not for this sign-in".into()));
    }
    let subject = claim_str(&claims, "sub").ok_or(UpstreamRefusal::Provider("the ID token names no subject".into()))?;
    if let (Some(endpoint), Some(access_token)) =
        (&discovery.userinfo_endpoint, answer.get("access_token").and_then(Value::as_str))
    {
        let (info, ok) = services
            .upstreams
            .read_json(services.upstreams.http.get(endpoint).bearer_auth(access_token))
            .await
            .map_err(UpstreamRefusal::Provider)?;
        if ok && info.get("sub").and_then(Value::as_str) == Some(subject.as_str()) {
            if let Value::Object(info) = info {
                claims.extend(info);
            }
        }
    }
    let names = &config.claims;
    let verified = match claims.get(&names.email_verified) {
        Some(Value::Bool(verified)) => *verified,
        Some(Value::String(text)) => text == "true",
        _ => config.assume_email_verified,
    };
    let identity = Identity {
        subject,
        email: claim_str(&claims, &names.email).map(|e| e.trim().to_lowercase()),
        email_verified: verified,
        given_name: claim_str(&claims, &names.given_name),
        family_name: claim_str(&claims, &names.family_name),
        organisation: names.organisation.as_deref().and_then(|n| claim_str(&claims, n)),
    };
    Ok((session, identity))
}

/// The account the person signs in to (see the module's comment); creates it when the rules
/// allow. The outcome is the caller's to audit.
pub async fn account_for(
    services: &Services,
    provider: &str,
    identity: &Identity,
) -> std::result::Result<OwnedUserId, UpstreamRefusal> {
    let (config, _) = services
        .upstreams
        .provider(provider)
        .ok_or_else(|| UpstreamRefusal::Provider(format!("no provider {provider}")))?;
    let failed = |e: Error| UpstreamRefusal::Provider(e.to_string());
    let tables = &services.db.tables.oauth;
    let link = (provider.to_owned(), identity.subject.clone());
    let active = |user: &OwnedUserId| services.users.is_active(user).map_err(failed);
    if let Some(user) = tables.providersubject_userid.get(&link).map_err(|e| failed(e.into()))? {
        return if active(&user)? { Ok(user) } else { Err(UpstreamRefusal::Deactivated) };
    }
    let email = identity.email.clone().ok_or(UpstreamRefusal::NoEmail)?;
    if !identity.email_verified {
        return Err(UpstreamRefusal::UnverifiedEmail);
    }
    let (local, domain) = email.rsplit_once('@').ok_or(UpstreamRefusal::NoEmail)?;
    let mut candidates = vec![email.clone()];
    for fallback in &config.domain_fallbacks {
        if fallback.match_domain.eq_ignore_ascii_case(domain) {
            candidates.push(format!("{local}@{}", fallback.search.to_lowercase()));
        }
    }
    for address in &candidates {
        if let Some(user) = services.threepids.owner("email", address).map_err(failed)? {
            if !active(&user)? {
                return Err(UpstreamRefusal::Deactivated);
            }
            let mut batch = Batch::new();
            tables.providersubject_userid.insert(&mut batch, &link, &user);
            services.db.commit(batch).map_err(|e| failed(e.into()))?;
            return Ok(user);
        }
    }
    if let Some(server) = services.network.server_of_address(&email).map_err(failed)? {
        if !server.eq_ignore_ascii_case(services.network.own_server()) {
            return Err(UpstreamRefusal::OtherNode(server));
        }
    } else if services.network.has_domain_map() {
        return Err(UpstreamRefusal::NoAccount);
    }
    if !config.create_accounts {
        return Err(UpstreamRefusal::NoAccount);
    }
    match create_account(services, provider, identity, &email) {
        Ok(user) => Ok(user),
        // Another sign-in of the same person made the account meanwhile: it is theirs.
        Err(Error::ThreepidInUse) => match services.threepids.owner("email", &email).map_err(failed)? {
            Some(user) => Ok(user),
            None => Err(UpstreamRefusal::Provider("the account could not be created".into())),
        },
        Err(other) => Err(failed(other)),
    }
}

/// The localpart the state's messenger gives an address: `first.last-agency.gouv.fr`.
pub fn localpart_of(email: &str) -> String {
    email
        .to_lowercase()
        .replace('@', "-")
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() || "._=-/+".contains(c) { c } else { '_' })
        .collect()
}

/// A new account (no password: the person signs in through their provider) named after the
/// address, with a number after it when the name is taken; the account, its name, its address
/// and the provider subject's link to it are one write.
fn create_account(services: &Services, provider: &str, identity: &Identity, email: &str) -> Result<OwnedUserId> {
    let base = localpart_of(email);
    let link = (provider.to_owned(), identity.subject.clone());
    for attempt in 0..100u32 {
        let localpart = if attempt == 0 { base.clone() } else { format!("{base}{}", attempt + 1) };
        // Capped as a display name set through the client API is.
        let name =
            identity.display_name().map(|n| n.chars().take(crate::users::profile::MAX_DISPLAYNAME_CHARS).collect());
        let created = services.users.create_with(&localpart, name, |batch, user| {
            services.threepids.add_into(batch, user, "email", email)?;
            services.db.tables.oauth.providersubject_userid.insert(batch, &link, &user.to_owned());
            Ok(())
        });
        match created {
            Ok(user) => {
                // Its address is bound like any other: third-party invites of it are taken up.
                services.threepids.wake_bound();
                return Ok(user);
            }
            Err(Error::UserInUse) => continue,
            Err(other) => return Err(other),
        }
    }
    Err(Error::Internal(format!("no free user name for {email}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_state_messenger_writes_them() {
        let identity = Identity {
            given_name: Some("Marie".into()),
            family_name: Some("Curie".into()),
            organisation: Some("DINUM".into()),
            ..Default::default()
        };
        assert_eq!(identity.display_name().as_deref(), Some("Marie Curie [DINUM]"));
        assert_eq!(localpart_of("Marie.Curie@Numerique.gouv.fr"), "marie.curie-numerique.gouv.fr");
        assert_eq!(localpart_of("é@x.fr"), "_-x.fr");
    }

    /// The account, its name, its address and the provider's link are one write: when the
    /// address turns out to be taken, no account is left behind for the next sign-in to miss.
    #[tokio::test]
    async fn a_new_account_comes_with_its_address_and_link_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = crate::config::Config::default();
        config.database.path = dir.path().join("db");
        let services = Services::open(config).unwrap();
        let person = |subject: &str, email: &str| Identity {
            subject: subject.into(),
            email: Some(email.into()),
            email_verified: true,
            given_name: Some("Marie".into()),
            family_name: Some("Curie".into()),
            organisation: Some("DINUM".into()),
        };

        let holder = services.users.create("holder", None, false).await.unwrap();
        services.threepids.add(&holder, "email", "taken@x.fr").unwrap();
        let refused = create_account(&services, "p", &person("s1", "taken@x.fr"), "taken@x.fr");
        assert!(matches!(refused, Err(Error::ThreepidInUse)), "{refused:?}");
        let would_be = services.users.user_id_for_localpart(&localpart_of("taken@x.fr")).unwrap();
        assert!(!services.users.exists(&would_be).unwrap(), "no account without its address");

        let user = create_account(&services, "p", &person("s2", "marie@x.fr"), "marie@x.fr").unwrap();
        assert_eq!(services.threepids.owner("email", "marie@x.fr").unwrap().as_ref(), Some(&user));
        let link = services.db.tables.oauth.providersubject_userid.get(&("p".to_owned(), "s2".to_owned())).unwrap();
        assert_eq!(link.as_ref(), Some(&user));
        let profile = services.profiles.get(&user).unwrap();
        assert_eq!(profile.get("displayname").and_then(Value::as_str), Some("Marie Curie [DINUM]"));
    }

    #[test]
    fn jwt_payloads_are_read() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"sub":"42"}"#);
        assert_eq!(jwt_claims(&format!("h.{payload}.s")).unwrap()["sub"], "42");
        assert!(jwt_claims("nope").is_err());
    }
}
