//! The authorization endpoint's pages: where a person signs in and allows a client, server-rendered
//! (maud: every value escaped by construction), in French or English, usable without script and
//! with the console's conventions (its stylesheet, labelled fields, alerts read out, strict CSP).
//!
//! The page is stateless: the request's parameters travel in hidden fields and are checked again
//! when the form comes back, so nothing is stored before the person has signed in.

use std::{collections::HashMap, sync::Arc};

use axum::{
    extract::{Request, State},
    response::{Html, IntoResponse, Response},
    routing::get,
    Router,
};
use http::{header, HeaderValue, StatusCode};
use maud::{html, Markup, DOCTYPE};

use super::BASE;
use crate::{
    api::{console, error::ApiError, ruma::client_ip},
    error::Error,
    oauth::{AuthorizationRequest, ErrorCode, OauthError, PageReason, Refusal},
    ratelimit::Action,
    services::Services,
};

/// The authorization request's parameters a page carries along.
pub(super) const CARRIED: [&str; 11] = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "code_challenge",
    "code_challenge_method",
    "prompt",
    "login_hint",
    "ui_locales",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lang {
    En,
    Fr,
}

impl Lang {
    /// `lang` (the page's own switch), else the client's `ui_locales` (OpenID Connect), else the
    /// browser's `Accept-Language`; English when none names French first.
    pub(super) fn pick(params: &HashMap<String, String>, headers: &http::HeaderMap) -> Self {
        let first = |list: &str, separator: char| {
            list.split(separator).map(|l| l.trim().to_ascii_lowercase()).find(|l| !l.is_empty())
        };
        let chosen = params
            .get("lang")
            .cloned()
            .or_else(|| params.get("ui_locales").and_then(|l| first(l, ' ')))
            .or_else(|| headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).and_then(|l| first(l, ',')))
            .unwrap_or_default();
        if chosen.starts_with("fr") {
            Self::Fr
        } else {
            Self::En
        }
    }

    pub(super) fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Fr => "fr",
        }
    }

    fn other(self) -> Self {
        match self {
            Self::En => Self::Fr,
            Self::Fr => Self::En,
        }
    }

    /// The text of `key` in this language.
    pub(super) fn t(self, key: Text) -> &'static str {
        use Text::*;
        match (self, key) {
            (Self::En, Title) => "Sign in",
            (Self::Fr, Title) => "Connexion",
            (Self::En, Refused) => "Request refused",
            (Self::Fr, Refused) => "Demande refusée",
            (Self::En, Asks) => "asks to access your Matrix account on",
            (Self::Fr, Asks) => "demande à accéder à votre compte Matrix sur",
            (Self::En, Means) => {
                "If you allow it, this application will read and send your messages and manage your account as a \
                 new session of yours, until you sign it out."
            }
            (Self::Fr, Means) => {
                "Si vous l'autorisez, cette application lira et enverra vos messages et gérera votre compte, comme \
                 une nouvelle session à votre nom, jusqu'à ce que vous la déconnectiez."
            }
            (Self::En, Session) => "Session (device) name:",
            (Self::Fr, Session) => "Nom de la session (appareil) :",
            (Self::En, About) => "About this application",
            (Self::Fr, About) => "À propos de cette application",
            (Self::En, Terms) => "Terms of service",
            (Self::Fr, Terms) => "Conditions d'utilisation",
            (Self::En, Policy) => "Privacy policy",
            (Self::Fr, Policy) => "Politique de confidentialité",
            (Self::En, Username) => "User name or Matrix ID",
            (Self::Fr, Username) => "Identifiant ou identifiant Matrix",
            (Self::En, Password) => "Password",
            (Self::Fr, Password) => "Mot de passe",
            (Self::En, Allow) => "Sign in and allow",
            (Self::Fr, Allow) => "Se connecter et autoriser",
            (Self::En, Cancel) => "Cancel",
            (Self::Fr, Cancel) => "Annuler",
            (Self::En, Switch) => "Français",
            (Self::Fr, Switch) => "English",
            (Self::En, Missing) => "Enter a user name and a password.",
            (Self::Fr, Missing) => "Saisissez un identifiant et un mot de passe.",
            (Self::En, WrongPassword) => "Sign-in refused: wrong user name or password, or the account is deactivated.",
            (Self::Fr, WrongPassword) => {
                "Connexion refusée : identifiant ou mot de passe incorrect, ou compte désactivé."
            }
            (Self::En, TooMany) => "Too many attempts: wait a moment, then try again.",
            (Self::Fr, TooMany) => "Trop de tentatives : patientez un moment puis réessayez.",
            (Self::En, Failed) => "The sign-in could not be completed; try again in a moment.",
            (Self::Fr, Failed) => "La connexion n'a pas pu aboutir ; réessayez dans un moment.",
            (Self::En, NotFromHere) => "This form is only accepted from this server's own page.",
            (Self::Fr, NotFromHere) => "Ce formulaire n'est accepté que depuis la page de ce serveur.",
            (Self::En, Back) => "Go back to the application and start signing in again.",
            (Self::Fr, Back) => "Revenez à l'application et recommencez la connexion.",
            (Self::En, NoClient) => "The request names no application (client_id).",
            (Self::Fr, NoClient) => "La demande ne nomme aucune application (client_id).",
            (Self::En, UnknownClient) => "This application is not registered with this server.",
            (Self::Fr, UnknownClient) => "Cette application n'est pas enregistrée auprès de ce serveur.",
            (Self::En, NoRedirect) => "The request does not say where to return (redirect_uri).",
            (Self::Fr, NoRedirect) => "La demande ne dit pas où revenir (redirect_uri).",
            (Self::En, BadRedirect) => {
                "The return address (redirect_uri) is not one this application registered: the request may not \
                 come from it, so nothing is sent there."
            }
            (Self::Fr, BadRedirect) => {
                "L'adresse de retour (redirect_uri) n'est pas une de celles que cette application a enregistrées : \
                 la demande ne vient peut-être pas d'elle, rien n'y est donc envoyé."
            }
            (Self::En, ServerFault) => "The server could not read the request; try again in a moment.",
            (Self::Fr, ServerFault) => "Le serveur n'a pas pu lire la demande ; réessayez dans un moment.",
            (Self::En, Disabled) => "Signing in through OAuth 2.0 is not enabled on this server.",
            (Self::Fr, Disabled) => "La connexion par OAuth 2.0 n'est pas activée sur ce serveur.",
            (Self::En, SignInWith) => "Sign in with",
            (Self::Fr, SignInWith) => "Se connecter avec",
            (Self::En, ProviderFailed) => "Your identity provider could not sign you in:",
            (Self::Fr, ProviderFailed) => "Votre fournisseur d'identité n'a pas pu vous connecter :",
            (Self::En, UnknownState) => {
                "This sign-in has expired or was started in another browser: start again from the application."
            }
            (Self::Fr, UnknownState) => {
                "Cette connexion a expiré ou a été commencée dans un autre navigateur : recommencez depuis l'application."
            }
            (Self::En, NoEmail) => "Your identity provider gave no email address, which this server finds accounts by.",
            (Self::Fr, NoEmail) => {
                "Votre fournisseur d'identité n'a donné aucune adresse électronique, ce qui permet à ce serveur de \
                 trouver les comptes."
            }
            (Self::En, UnverifiedEmail) => "Your identity provider has not confirmed your email address.",
            (Self::Fr, UnverifiedEmail) => "Votre fournisseur d'identité n'a pas confirmé votre adresse électronique.",
            (Self::En, OtherNode) => "Your address belongs to another server of the network; sign in there:",
            (Self::Fr, OtherNode) => "Votre adresse relève d'un autre serveur du réseau ; connectez-vous sur celui-ci :",
            (Self::En, NoAccount) => "No account of this server holds your address, and none is created for it here.",
            (Self::Fr, NoAccount) => {
                "Aucun compte de ce serveur ne porte votre adresse, et ce serveur n'en crée pas pour elle."
            }
            (Self::En, DeactivatedAccount) => "The account of your address is deactivated.",
            (Self::Fr, DeactivatedAccount) => "Le compte de votre adresse est désactivé.",
            (Self::En, ContinueTo) => "You are signed in. Your session will be handed to",
            (Self::Fr, ContinueTo) => "Vous êtes connecté. Votre session va être transmise à",
            (Self::En, Continue) => "Continue",
            (Self::Fr, Continue) => "Continuer",
            (Self::En, Or) => "Or with your password:",
            (Self::Fr, Or) => "Ou avec votre mot de passe :",
            (Self::En, AccountTitle) => "Your account",
            (Self::Fr, AccountTitle) => "Votre compte",
            (Self::En, AccountIntro) => "Sign in to manage your sessions and your profile on",
            (Self::Fr, AccountIntro) => "Connectez-vous pour gérer vos sessions et votre profil sur",
            (Self::En, Sessions) => "Sessions",
            (Self::Fr, Sessions) => "Sessions",
            (Self::En, Profile) => "Profile",
            (Self::Fr, Profile) => "Profil",
            (Self::En, NoSession) => "No such session.",
            (Self::Fr, NoSession) => "Aucune session de ce nom.",
            (Self::En, Through) => "through",
            (Self::Fr, Through) => "via",
            (Self::En, LastSeen) => "last seen",
            (Self::Fr, LastSeen) => "dernière activité",
            (Self::En, EndSession) => "Sign out this session",
            (Self::Fr, EndSession) => "Déconnecter cette session",
            (Self::En, DisplayName) => "Display name",
            (Self::Fr, DisplayName) => "Nom affiché",
            (Self::En, Save) => "Save",
            (Self::Fr, Save) => "Enregistrer",
            (Self::En, LinkTitle) => "Sign in another device",
            (Self::Fr, LinkTitle) => "Connecter un autre appareil",
            (Self::En, UserCode) => "The code the other device shows",
            (Self::Fr, UserCode) => "Le code qu'affiche l'autre appareil",
            (Self::En, UnknownCode) => "This code is unknown, has expired or was already used.",
            (Self::Fr, UnknownCode) => "Ce code est inconnu, a expiré ou a déjà servi.",
            (Self::En, Declined) => "The other device was not signed in.",
            (Self::Fr, Declined) => "L'autre appareil n'a pas été connecté.",
            (Self::En, Linked) => "The other device is signed in: you can go back to it.",
            (Self::Fr, Linked) => "L'autre appareil est connecté : vous pouvez y revenir.",
            (Self::En, SessionEnded) => "The session was signed out.",
            (Self::Fr, SessionEnded) => "La session a été déconnectée.",
            (Self::En, CreateTitle) => "Create an account",
            (Self::Fr, CreateTitle) => "Créer un compte",
            (Self::En, NewUsername) => "User name (letters, digits, . _ = - /)",
            (Self::Fr, NewUsername) => "Identifiant (lettres, chiffres, . _ = - /)",
            (Self::En, RegistrationToken) => "Registration token",
            (Self::Fr, RegistrationToken) => "Jeton d'inscription",
            (Self::En, CreateAndAllow) => "Create the account and allow",
            (Self::Fr, CreateAndAllow) => "Créer le compte et autoriser",
            (Self::En, HaveAccount) => "Already have an account?",
            (Self::Fr, HaveAccount) => "Vous avez déjà un compte ?",
            (Self::En, RegistrationClosed) => "This server does not create accounts here.",
            (Self::Fr, RegistrationClosed) => "Ce serveur ne crée pas de comptes ici.",
            (Self::En, CreateFailed) => "The account could not be created:",
            (Self::Fr, CreateFailed) => "Le compte n'a pas pu être créé :",
            (Self::En, WrongToken) => "This registration token is not valid.",
            (Self::Fr, WrongToken) => "Ce jeton d'inscription n'est pas valide.",
            (Self::En, DeactivateTitle) => "Deactivate your account",
            (Self::Fr, DeactivateTitle) => "Désactiver votre compte",
            (Self::En, DeactivateIntro) => {
                "Deactivating is final: every session of yours is signed out, you leave every room, your \
                 addresses are removed from the account, and nobody can sign in to it or take its Matrix ID \
                 again."
            }
            (Self::Fr, DeactivateIntro) => {
                "La désactivation est définitive : toutes vos sessions sont déconnectées, vous quittez tous les \
                 salons, vos adresses sont retirées du compte, et personne ne peut plus s'y connecter ni reprendre \
                 son identifiant Matrix."
            }
            (Self::En, DeactivateConfirm) => "To confirm, type your Matrix ID:",
            (Self::Fr, DeactivateConfirm) => "Pour confirmer, saisissez votre identifiant Matrix :",
            (Self::En, Deactivate) => "Deactivate the account",
            (Self::Fr, Deactivate) => "Désactiver le compte",
            (Self::En, DeactivateMismatch) => "This is not your Matrix ID: the account was not deactivated.",
            (Self::Fr, DeactivateMismatch) => {
                "Ce n'est pas votre identifiant Matrix : le compte n'a pas été désactivé."
            }
            (Self::En, Deactivated) => "Your account is deactivated.",
            (Self::Fr, Deactivated) => "Votre compte est désactivé.",
            (Self::En, ResetTitle) => "Reset your encryption identity",
            (Self::Fr, ResetTitle) => "Réinitialiser votre identité de chiffrement",
            (Self::En, ResetIntro) => {
                "An application signed in to your account asks to replace your cross-signing keys, the identity \
                 your contacts and your other sessions trust your messages by — usually because the recovery key \
                 was lost. If you allow it, your applications may replace them once in the next ten minutes."
            }
            (Self::Fr, ResetIntro) => {
                "Une application connectée à votre compte demande à remplacer vos clés de signature croisée, \
                 l'identité par laquelle vos contacts et vos autres sessions font confiance à vos messages — en \
                 général parce que la clé de récupération a été perdue. Si vous l'autorisez, vos applications \
                 pourront les remplacer une fois dans les dix prochaines minutes."
            }
            (Self::En, ResetWarning) => {
                "Allow it only if you started this reset yourself: afterwards your contacts and your other \
                 sessions must verify you again, and messages only the old keys could open may stay unreadable."
            }
            (Self::Fr, ResetWarning) => {
                "Ne l'autorisez que si vous avez vous-même lancé cette réinitialisation : vos contacts et vos \
                 autres sessions devront ensuite vous vérifier à nouveau, et les messages que seules les anciennes \
                 clés ouvraient peuvent rester illisibles."
            }
            (Self::En, AllowReset) => "Allow the reset",
            (Self::Fr, AllowReset) => "Autoriser la réinitialisation",
            (Self::En, ResetOpenUntil) => "A reset is allowed until",
            (Self::Fr, ResetOpenUntil) => "Une réinitialisation est autorisée jusqu'à",
            (Self::En, ResetAllowed) => {
                "The reset is allowed for ten minutes: go back to your application, which completes it."
            }
            (Self::Fr, ResetAllowed) => {
                "La réinitialisation est autorisée pour dix minutes : revenez à votre application, qui la termine."
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Text {
    Title,
    Refused,
    Asks,
    Means,
    Session,
    About,
    Terms,
    Policy,
    Username,
    Password,
    Allow,
    Cancel,
    Switch,
    Missing,
    WrongPassword,
    TooMany,
    Failed,
    NotFromHere,
    Back,
    NoClient,
    UnknownClient,
    NoRedirect,
    BadRedirect,
    ServerFault,
    Disabled,
    SignInWith,
    ProviderFailed,
    UnknownState,
    NoEmail,
    UnverifiedEmail,
    OtherNode,
    NoAccount,
    DeactivatedAccount,
    ContinueTo,
    Continue,
    Or,
    AccountTitle,
    AccountIntro,
    Sessions,
    Profile,
    NoSession,
    Through,
    LastSeen,
    EndSession,
    DisplayName,
    Save,
    SessionEnded,
    LinkTitle,
    UserCode,
    UnknownCode,
    Declined,
    Linked,
    CreateTitle,
    NewUsername,
    RegistrationToken,
    CreateAndAllow,
    HaveAccount,
    RegistrationClosed,
    CreateFailed,
    WrongToken,
    DeactivateTitle,
    DeactivateIntro,
    DeactivateConfirm,
    Deactivate,
    DeactivateMismatch,
    Deactivated,
    ResetTitle,
    ResetIntro,
    ResetWarning,
    AllowReset,
    ResetOpenUntil,
    ResetAllowed,
}

pub fn routes() -> Router<Arc<Services>> {
    Router::new().route(&format!("{BASE}/authorize"), get(authorize_page).post(authorize))
}

/// The whole document: the console's stylesheet, the language switch, the content.
pub(super) fn document(lang: Lang, title: &str, switch: Option<String>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                link rel="icon" href="data:,";
                title { (title) " · Hemicycle" }
                link rel="stylesheet" href=(format!("{}/static/console.css", console::BASE));
            }
            body {
                header {
                    p.brand { "Hemicycle" }
                    @if let Some(switch) = switch {
                        a href=(switch) lang=(lang.other().code()) hreflang=(lang.other().code()) { (lang.t(Text::Switch)) }
                    }
                }
                main #main {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
}

/// A page with the policy every answer here carries: nothing but the stylesheet loads, nothing
/// frames it, and its forms post only here — and to where their answers redirect (`form-action`
/// covers redirects in browsers): `destinations`, the client's redirect URI or the upstream
/// providers.
pub(super) fn respond(status: StatusCode, markup: Markup, destinations: &[String]) -> Response {
    let mut response = (status, Html(markup.into_string())).into_response();
    let mut form_action = "'self'".to_owned();
    for source in destinations {
        form_action.push(' ');
        form_action.push_str(source);
    }
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action {form_action}; \
         frame-ancestors 'none'; base-uri 'none'"
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, value);
    }
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Where the provider buttons' answers send the browser: each provider's origin.
pub(super) fn provider_sources(services: &Services) -> Vec<String> {
    services.config.oauth.upstream.iter().filter_map(|p| csp_source(&p.issuer)).collect()
}

/// The CSP source of a redirect URI: its origin, or its scheme for a private-use URI.
pub(super) fn csp_source(redirect_uri: &str) -> Option<String> {
    let (scheme, rest) = redirect_uri.split_once(':')?;
    if !scheme.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.')) {
        return None;
    }
    let Some(authority) = rest.strip_prefix("//") else { return Some(format!("{scheme}:")) };
    let host = authority.split(['/', '?', '#']).next().unwrap_or("");
    let valid = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    valid.then(|| format!("{scheme}://{host}"))
}

/// A page that refuses the request without sending the browser anywhere.
pub(super) fn refusal_page(lang: Lang, reason: Text, status: StatusCode) -> Response {
    let content = html! {
        p.error role="alert" { (lang.t(reason)) }
        p { (lang.t(Text::Back)) }
    };
    respond(status, document(lang, lang.t(Text::Refused), None, content), &[])
}

fn page_reason(reason: PageReason) -> (Text, StatusCode) {
    match reason {
        PageReason::NoClient => (Text::NoClient, StatusCode::BAD_REQUEST),
        PageReason::UnknownClient => (Text::UnknownClient, StatusCode::BAD_REQUEST),
        PageReason::NoRedirectUri => (Text::NoRedirect, StatusCode::BAD_REQUEST),
        PageReason::UnregisteredRedirectUri => (Text::BadRedirect, StatusCode::BAD_REQUEST),
        PageReason::ServerError => (Text::ServerFault, StatusCode::INTERNAL_SERVER_ERROR),
    }
}

/// Sends the browser back to the client with the answer (303: the form's POST becomes a GET).
pub(super) fn back_to_client(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Checks the parameters; a refusal is answered here (a page, or the client's redirect URI).
pub(super) fn check(
    services: &Services,
    params: &HashMap<String, String>,
    lang: Lang,
) -> Result<AuthorizationRequest, Box<Response>> {
    services.oauth.check_authorization(|name| params.get(name).filter(|v| !v.is_empty()).cloned()).map_err(|refusal| {
        Box::new(match refusal {
            Refusal::Page(reason) => {
                let (text, status) = page_reason(reason);
                refusal_page(lang, text, status)
            }
            Refusal::Redirect(target, error) => back_to_client(&target.error_url(&error)),
        })
    })
}

/// How the pages may create an account (`prompt=create`): as `/register` would — open, or with a
/// registration token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Registration {
    Open,
    WithToken,
}

pub(super) fn registration(services: &Services) -> Option<Registration> {
    let config = &services.config.registration;
    match (&config.token, config.open) {
        (Some(_), _) => Some(Registration::WithToken),
        (None, true) => Some(Registration::Open),
        (None, false) if services.registration_tokens.any().unwrap_or(false) => Some(Registration::WithToken),
        (None, false) => None,
    }
}

/// Whether the request asks for the registration form (`prompt=create`) and the node allows it.
fn wants_create(services: &Services, params: &HashMap<String, String>) -> Option<Registration> {
    // A node whose pages take no password (upstream providers only) makes no password accounts.
    let asked =
        services.config.oauth.password && params.get("prompt").is_some_and(|p| p.split(' ').any(|p| p == "create"));
    asked.then(|| registration(services)).flatten()
}

/// The sign-in form for a checked request, with an error when the last attempt failed.
fn sign_in_page(
    services: &Services,
    request: &AuthorizationRequest,
    params: &HashMap<String, String>,
    lang: Lang,
    error: Option<Text>,
    detail: Option<String>,
    status: StatusCode,
) -> Response {
    let client = &request.client;
    let name = client.client_name.clone().unwrap_or_else(|| client.client_uri.clone());
    let carried: Vec<(&str, &str)> = CARRIED
        .iter()
        .filter_map(|k| params.get(*k).map(|v| (*k, v.as_str())))
        .filter(|(_, v)| !v.is_empty())
        .collect();
    let mut switch_query = carried.clone();
    switch_query.push(("lang", lang.other().code()));
    let switch = format!(
        "{BASE}/authorize?{}",
        form_urlencoded::Serializer::new(String::new()).extend_pairs(&switch_query).finish()
    );
    let providers = services.upstreams.list();
    let password = services.config.oauth.password;
    let create = wants_create(services, params);
    let hint = request.login_hint.as_deref().map(|h| h.strip_prefix("mxid:").unwrap_or(h)).unwrap_or("");
    let content = html! {
        @if let Some(error) = error {
            p.error role="alert" { (lang.t(error)) }
        }
        @if let Some(detail) = &detail {
            p.error { (detail) }
        }
        p {
            strong { (name) } " (" a href=(client.client_uri) { (lang.t(Text::About)) } ") "
            (lang.t(Text::Asks)) " " strong { (services.config.server_name.as_str()) } "."
        }
        p { (lang.t(Text::Means)) }
        p { (lang.t(Text::Session)) " " code { (request.device_id.as_str()) } }
        @if client.tos_uri.is_some() || client.policy_uri.is_some() {
            ul {
                @if let Some(tos) = &client.tos_uri { li { a href=(tos) { (lang.t(Text::Terms)) } } }
                @if let Some(policy) = &client.policy_uri { li { a href=(policy) { (lang.t(Text::Policy)) } } }
            }
        }
        @for (id, label) in &providers {
            form.stack method="post" action=(format!("{BASE}/upstream/start")) {
                @for (key, value) in &carried {
                    input type="hidden" name=(key) value=(value);
                }
                input type="hidden" name="lang" value=(lang.code());
                input type="hidden" name="provider" value=(id);
                button type="submit" { (lang.t(Text::SignInWith)) " " (label) }
            }
        }
        @if let Some(mode) = create {
            h2 { (lang.t(Text::CreateTitle)) }
            form.stack method="post" action=(format!("{BASE}/authorize")) {
                @for (key, value) in &carried {
                    input type="hidden" name=(key) value=(value);
                }
                input type="hidden" name="lang" value=(lang.code());
                label for="new_username" { (lang.t(Text::NewUsername)) }
                input #new_username name="username" type="text" autocomplete="username" required autofocus;
                label for="new_password" { (lang.t(Text::Password)) }
                input #new_password name="password" type="password" autocomplete="new-password" required;
                @if mode == Registration::WithToken {
                    label for="token" { (lang.t(Text::RegistrationToken)) }
                    input #token name="token" type="text" autocomplete="off" required;
                }
                button type="submit" name="action" value="create" { (lang.t(Text::CreateAndAllow)) }
            }
            h2 { (lang.t(Text::HaveAccount)) }
        }
        form.stack method="post" action=(format!("{BASE}/authorize")) {
            @for (key, value) in &carried {
                input type="hidden" name=(key) value=(value);
            }
            input type="hidden" name="lang" value=(lang.code());
            @if password {
                @if !providers.is_empty() { p { (lang.t(Text::Or)) } }
                label for="username" { (lang.t(Text::Username)) }
                input #username name="username" type="text" autocomplete="username" required autofocus[create.is_none()] value=(hint);
                label for="password" { (lang.t(Text::Password)) }
                input #password name="password" type="password" autocomplete="current-password" required;
                button type="submit" name="action" value="allow" { (lang.t(Text::Allow)) }
            }
            button type="submit" name="action" value="deny" formnovalidate { (lang.t(Text::Cancel)) }
        }
    };
    let markup = document(lang, lang.t(Text::Title), Some(switch), content);
    let mut destinations = provider_sources(services);
    destinations.extend(csp_source(&request.target.redirect_uri));
    respond(status, markup, &destinations)
}

/// `GET /authorize`: the authorization request (RFC 6749 section 4.1.1) and the sign-in page.
async fn authorize_page(State(services): State<Arc<Services>>, request: Request) -> Response {
    let params: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes()).into_owned().collect();
    let lang = Lang::pick(&params, request.headers());
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    match check(&services, &params, lang) {
        Ok(checked) => sign_in_page(&services, &checked, &params, lang, None, None, StatusCode::OK),
        Err(response) => *response,
    }
}

/// `POST /authorize`: the sign-in form. The request is checked again, then the password (the
/// same check as `/login`: local accounts and directory accounts alike, rate limited); the
/// browser then goes back to the client with a code — or with `access_denied` on Cancel.
async fn authorize(State(services): State<Arc<Services>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let params = match console::read_form(&parts, body, &services).await {
        Ok(fields) => fields,
        Err(failure) => return failure.into_response(),
    };
    let lang = Lang::pick(&params, &parts.headers);
    if !services.oauth.enabled() {
        return refusal_page(lang, Text::Disabled, StatusCode::NOT_FOUND);
    }
    if console::refuse_cross_site(&parts).is_err() {
        return refusal_page(lang, Text::NotFromHere, StatusCode::FORBIDDEN);
    }
    let checked = match check(&services, &params, lang) {
        Ok(checked) => checked,
        Err(response) => return *response,
    };
    if params.get("action").map(String::as_str) == Some("deny") {
        let error = OauthError::new(ErrorCode::AccessDenied, "the person declined the request");
        return back_to_client(&checked.target.error_url(&error));
    }
    let again = |text, status| sign_in_page(&services, &checked, &params, lang, Some(text), None, status);
    if params.get("action").map(String::as_str) == Some("create") {
        return create(&services, &parts, &checked, &params, lang).await;
    }
    if !services.config.oauth.password {
        return again(Text::Missing, StatusCode::FORBIDDEN);
    }
    let name = params.get("username").map(|v| v.trim()).unwrap_or("");
    let password = params.get("password").map(String::as_str).unwrap_or("");
    if name.is_empty() || password.is_empty() {
        return again(Text::Missing, StatusCode::BAD_REQUEST);
    }
    let users = &services.users;
    let key = users.parse_login_user(name).map(|u| u.to_string()).unwrap_or_else(|_| name.to_lowercase());
    if services.rate_limiter.check(Action::Login, &key).is_err() {
        return again(Text::TooMany, StatusCode::TOO_MANY_REQUESTS);
    }
    if let Some(ip) = client_ip(&parts, &services) {
        if services.rate_limiter.check(Action::Login, &ip.to_string()).is_err() {
            return again(Text::TooMany, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    let audit = |action: &str, actor: &str, details: serde_json::Value| {
        if let Err(error) = services.audit.record(actor, action, actor, details) {
            tracing::warn!(%error, "audit log entry not written");
        }
    };
    let user = match crate::users::directory::password_login(&services, name, password).await {
        Ok(user) => user,
        Err(Error::Forbidden(_)) => {
            audit(
                "oauth.sign_in_refused",
                &key,
                serde_json::json!({ "client_id": checked.client_id, "reason": "password" }),
            );
            return again(Text::WrongPassword, StatusCode::FORBIDDEN);
        }
        Err(Error::LimitExceeded { .. }) => return again(Text::TooMany, StatusCode::TOO_MANY_REQUESTS),
        Err(error) => {
            tracing::warn!(%error, "OAuth sign-in failed");
            return again(Text::Failed, StatusCode::INTERNAL_SERVER_ERROR);
        }
    };
    let code = match services.oauth.issue_code(&checked, &user) {
        Ok(code) => code,
        Err(error) => return ApiError::from(error).into_response(),
    };
    audit(
        "oauth.sign_in",
        user.as_str(),
        serde_json::json!({ "client_id": checked.client_id, "device_id": checked.device_id, "method": "password" }),
    );
    back_to_client(&checked.target.url(&[("code", &code)]))
}

/// `POST /authorize` with `action=create` (`prompt=create`): a new account with the node's
/// registration rules (open, or a registration token; rate limited per address like
/// `/register`), then a code for the client as after a sign-in.
async fn create(
    services: &Services,
    parts: &http::request::Parts,
    checked: &AuthorizationRequest,
    params: &HashMap<String, String>,
    lang: Lang,
) -> Response {
    let again = |text, detail: Option<String>, status| {
        sign_in_page(services, checked, params, lang, Some(text), detail, status)
    };
    let Some(mode) = wants_create(services, params) else {
        return again(Text::RegistrationClosed, None, StatusCode::FORBIDDEN);
    };
    if let Some(ip) = client_ip(parts, services) {
        if services.rate_limiter.check(Action::Registration, &ip.to_string()).is_err() {
            return again(Text::TooMany, None, StatusCode::TOO_MANY_REQUESTS);
        }
    }
    let localpart = params.get("username").map(|v| v.trim().to_lowercase()).unwrap_or_default();
    let password = params.get("password").cloned().unwrap_or_default();
    if localpart.is_empty() || password.is_empty() {
        return again(Text::Missing, None, StatusCode::BAD_REQUEST);
    }
    let checks = (|| {
        let user = services.users.user_id_for_localpart(&localpart)?;
        if services.appservices.exclusive_owner_of_user(&user).is_some() {
            return Err(Error::Exclusive("this user id is reserved by an application service".into()));
        }
        if services.users.exists(&user)? {
            return Err(Error::UserInUse);
        }
        services.users.password_policy().check(&password)
    })();
    if let Err(error) = checks {
        return again(Text::CreateFailed, Some(error.to_string()), StatusCode::BAD_REQUEST);
    }
    if mode == Registration::WithToken {
        let token = params.get("token").map(|t| t.trim()).unwrap_or("");
        match services.uia.use_registration_token(token) {
            Ok(true) => {}
            Ok(false) => return again(Text::WrongToken, None, StatusCode::FORBIDDEN),
            Err(_) => return again(Text::Failed, None, StatusCode::INTERNAL_SERVER_ERROR),
        }
    }
    let user = match services.users.create(&localpart, Some(password), false).await {
        Ok(user) => user,
        Err(error) => return again(Text::CreateFailed, Some(error.to_string()), StatusCode::BAD_REQUEST),
    };
    tracing::info!(%user, client_id = checked.client_id, "registered through the OAuth pages");
    let code = match services.oauth.issue_code(checked, &user) {
        Ok(code) => code,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let details =
        serde_json::json!({ "client_id": checked.client_id, "device_id": checked.device_id, "method": "register" });
    if let Err(error) = services.audit.record(user.as_str(), "oauth.register", user.as_str(), details) {
        tracing::warn!(%error, "audit log entry not written");
    }
    back_to_client(&checked.target.url(&[("code", &code)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csp_sources_of_redirect_uris() {
        assert_eq!(csp_source("http://127.0.0.1:4567/cb?x").as_deref(), Some("http://127.0.0.1:4567"));
        assert_eq!(csp_source("com.example.app:/cb").as_deref(), Some("com.example.app:"));
        assert_eq!(csp_source("https://a'b.example/").as_deref(), None);
    }

    #[test]
    fn french_when_asked() {
        let mut headers = http::HeaderMap::new();
        headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_static("fr-FR,fr;q=0.9,en;q=0.5"));
        assert_eq!(Lang::pick(&HashMap::new(), &headers), Lang::Fr);
        let params = HashMap::from([("lang".to_owned(), "en".to_owned())]);
        assert_eq!(Lang::pick(&params, &headers), Lang::En);
        let locales = HashMap::from([("ui_locales".to_owned(), "fr-CA en".to_owned())]);
        assert_eq!(Lang::pick(&locales, &http::HeaderMap::new()), Lang::Fr);
    }
}
