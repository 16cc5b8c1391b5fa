//! Signing in through an upstream OpenID Connect provider, ProConnect-style: a real provider
//! (node-oidc-provider, started on loopback by the test), the sign-in page and the provider's
//! pages driven in Debian's Chromium, matrix-sdk's OAuth API as the client. Accounts are found
//! by verified email (with a changed agency domain's fallback), created when the network's
//! domain map says the address lives here, refused with a page saying why otherwise; legacy
//! clients get the same providers through `m.login.sso`.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
};

use matrix_sdk::{
    authentication::oauth::registration::{ApplicationType, ClientMetadata, Localized, OAuthGrantType},
    ruma::serde::Raw,
};
use reqwest::{Method, Url};
use serde_json::{json, Value};

use crate::common::{api, TestServer};

/// node-oidc-provider, killed with the test.
struct Provider {
    child: Child,
    issuer: String,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_provider(redirect_uri: &str, accounts: Value) -> Provider {
    let installed = std::env::var("OIDC_PROVIDER").unwrap_or_else(|_| {
        panic!("OIDC_PROVIDER is not set: run the tests with ./scripts/test, which installs node-oidc-provider")
    });
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/provider.mjs");
    let client =
        json!({ "client_id": "hemicycle", "client_secret": "provider-secret", "redirect_uris": [redirect_uri] });
    let mut child = Command::new("node")
        .arg(script)
        .env("OIDC_PROVIDER", installed)
        .env("OIDC_CLIENT", client.to_string())
        .env("OIDC_ACCOUNTS", accounts.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run node");
    let mut line = String::new();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    stdout.read_line(&mut line).unwrap();
    // The provider logs notices on stdout later: keep reading, or its writes fail and it dies.
    std::thread::spawn(move || for _ in stdout.lines() {});
    let started: Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("the provider did not start ({e}): {line}"));
    Provider { child, issuer: started["issuer"].as_str().unwrap().to_owned() }
}

/// A port nothing listens on now: the server's public URL (and so the provider's redirect URI)
/// must be known before it starts.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs the browser script; answers what it printed.
async fn browser(env: &[(&str, &str)]) -> Value {
    let playwright = std::env::var("PLAYWRIGHT_CORE")
        .unwrap_or_else(|_| panic!("PLAYWRIGHT_CORE is not set: run the tests with ./scripts/test"));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oauth/browser.mjs");
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node").arg(script).envs(env).env("PLAYWRIGHT_CORE", playwright).output().expect("run node")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "browser run failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("the browser script printed no JSON ({e}): {stdout}"))
}

struct Setup {
    server: TestServer,
    _provider: Provider,
    _dir: tempfile::TempDir,
}

fn setup() -> Setup {
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let provider = start_provider(
        &format!("{base}/_hemicycle/oauth2/upstream/callback"),
        json!({
            "marie": { "email": "Marie.Curie@numerique.gouv.fr", "email_verified": true, "given_name": "Marie",
                       "usual_name": "Curie", "organizational_unit": "DINUM" },
            "jean": { "email": "jean.moulin@nouveau.gouv.fr", "email_verified": true, "given_name": "Jean", "usual_name": "Moulin" },
            "paul": { "email": "paul@interieur.gouv.fr", "email_verified": true, "given_name": "Paul", "usual_name": "Autre" },
            "nina": { "email": "nina@numerique.gouv.fr", "email_verified": false },
        }),
    );
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "provider-secret\n").unwrap();
    let domains = dir.path().join("domains.toml");
    std::fs::write(
        &domains,
        "[domains]\n\"numerique.gouv.fr\" = \"localhost\"\n\"nouveau.gouv.fr\" = \"localhost\"\n\"ancien.gouv.fr\" = \"localhost\"\n\"interieur.gouv.fr\" = \"agents.interieur.example\"\n",
    )
    .unwrap();
    let upstream: toml::Value = toml::from_str::<toml::Table>(&format!(
        r#"
        id = "proconnect"
        name = "ProConnect"
        issuer = "{issuer}"
        client_id = "hemicycle"
        client_secret_file = "{secret}"
        scopes = ["openid", "email", "given_name", "usual_name", "organizational_unit"]
        claims = {{ family_name = "usual_name", organisation = "organizational_unit" }}
        domain_fallbacks = [{{ match = "nouveau.gouv.fr", search = "ancien.gouv.fr" }}]
        "#,
        issuer = provider.issuer,
        secret = secret.display(),
    ))
    .unwrap()
    .into();
    let server = TestServer::start_with(&[
        ("listen.client", format!("127.0.0.1:{port}").into()),
        ("public_baseurl", base.clone().into()),
        ("oauth.enabled", true.into()),
        ("oauth.upstream", toml::Value::Array(vec![upstream])),
        ("network.domains_file", domains.to_string_lossy().into_owned().into()),
    ]);
    Setup { server, _provider: provider, _dir: dir }
}

/// A matrix-sdk client and the authorization URL it would open.
async fn sdk_login(server: &TestServer) -> (matrix_sdk::Client, Url) {
    let client = server.client().await;
    let metadata = ClientMetadata::new(
        ApplicationType::Native,
        vec![OAuthGrantType::AuthorizationCode {
            redirect_uris: vec![Url::parse("http://127.0.0.1/callback").unwrap()],
        }],
        Localized::new(Url::parse("https://sdk.example/").unwrap(), []),
    );
    let redirect = Url::parse("http://127.0.0.1:4242/callback").unwrap();
    let auth =
        client.oauth().login(redirect, None, Some(Raw::new(&metadata).unwrap().into()), None).build().await.unwrap();
    (client, auth.url)
}

async fn sign_in_upstream(server: &TestServer, login: &str) -> (matrix_sdk::Client, Value) {
    let (client, url) = sdk_login(server).await;
    let seen = browser(&[
        ("AUTHORIZE_URL", url.as_str()),
        ("REDIRECT_PREFIX", "http://127.0.0.1:4242/callback"),
        ("PROVIDER_LOGIN", login),
    ])
    .await;
    (client, seen)
}

#[tokio::test]
async fn proconnect_style_sign_in_through_a_real_provider() {
    let Setup { server, .. } = &setup();

    // A first sign-in with an address the domain map puts here: a new account, named as the
    // state's messenger names agents.
    let (client, seen) = sign_in_upstream(server, "marie").await;
    assert_eq!(seen["lang"], "fr", "the browser asks for French: {seen}");
    assert!(seen["buttons"].as_array().unwrap().iter().any(|b| b.as_str().unwrap().contains("ProConnect")), "{seen}");
    let redirect = seen["redirect"].as_str().unwrap_or_else(|| panic!("no redirect back to the client: {seen}"));
    client.oauth().finish_login(Url::parse(redirect).unwrap().into()).await.expect("code exchanged");
    let me = client.whoami().await.unwrap();
    assert_eq!(me.user_id.as_str(), "@marie.curie-numerique.gouv.fr:localhost");
    let token = client.access_token().unwrap();
    let path = format!("/_matrix/client/v3/profile/{}", me.user_id);
    let (_, profile) = api(server, Method::GET, Some(&token), &path, None).await;
    assert_eq!(profile["displayname"], "Marie Curie [DINUM]");
    let (_, threepids) = api(server, Method::GET, Some(&token), "/_matrix/client/v3/account/3pid", None).await;
    assert_eq!(threepids["threepids"][0]["address"], "marie.curie@numerique.gouv.fr");

    // Signing in again finds the same account (by the provider's subject).
    let (again, seen) = sign_in_upstream(server, "marie").await;
    again.oauth().finish_login(Url::parse(seen["redirect"].as_str().unwrap()).unwrap().into()).await.unwrap();
    assert_eq!(again.whoami().await.unwrap().user_id, me.user_id);

    // An agency whose domain changed: the new address finds the account of the old one.
    server.register("jean", "jean-pw").await;
    let admin = admin_token(server).await;
    let body = json!({ "threepids": [{ "medium": "email", "address": "jean.moulin@ancien.gouv.fr" }] });
    let (status, answer) =
        api(server, Method::PUT, Some(&admin), "/_synapse/admin/v2/users/@jean:localhost", Some(body)).await;
    assert_eq!(status, 200, "an existing account is modified: {answer}");
    let (client, seen) = sign_in_upstream(server, "jean").await;
    client.oauth().finish_login(Url::parse(seen["redirect"].as_str().unwrap()).unwrap().into()).await.unwrap();
    assert_eq!(client.whoami().await.unwrap().user_id.as_str(), "@jean:localhost");

    // An address the domain map sends to another node: refused, with a page that says where.
    let (_, seen) = sign_in_upstream(server, "paul").await;
    assert!(seen["redirect"].is_null(), "{seen}");
    let alert = seen["alert"].as_str().unwrap_or_else(|| panic!("no refusal shown: {seen}"));
    assert!(alert.contains("agents.interieur.example"), "{alert}");
    // An unverified address: refused too.
    let (_, seen) = sign_in_upstream(server, "nina").await;
    assert!(seen["redirect"].is_null() && seen["alert"].is_string(), "{seen}");

    let (_, audit) = api(server, Method::GET, Some(&admin), "/_synapse/admin/v1/audit", None).await;
    let entries = audit["entries"].as_array().unwrap();
    let refused: Vec<&Value> = entries.iter().filter(|e| e["action"] == "oauth.sign_in_refused").collect();
    assert_eq!(refused.len(), 2, "{audit}");
    assert!(refused.iter().any(|e| e["details"]["reason"].as_str().unwrap().contains("agents.interieur.example")));
    let signed_in = entries.iter().filter(|e| e["action"] == "oauth.sign_in").count();
    assert_eq!(signed_in, 3, "{audit}");
}

#[tokio::test]
async fn legacy_clients_sign_in_with_m_login_sso_through_the_provider() {
    let Setup { server, .. } = &setup();
    let (_, flows) = api(server, Method::GET, None, "/_matrix/client/v3/login", None).await;
    let sso = flows["flows"].as_array().unwrap().iter().find(|f| f["type"] == "m.login.sso").expect("m.login.sso");
    assert_eq!(sso["identity_providers"][0]["id"], "proconnect");
    assert_eq!(sso["oauth_aware_preferred"], true);

    let start = format!(
        "{}/_matrix/client/v3/login/sso/redirect/proconnect?redirectUrl={}",
        server.url,
        form_urlencoded::byte_serialize(b"http://127.0.0.1:4243/sso").collect::<String>()
    );
    let seen = browser(&[
        ("AUTHORIZE_URL", &start),
        ("REDIRECT_PREFIX", "http://127.0.0.1:4243/sso"),
        ("PROVIDER_LOGIN", "marie"),
    ])
    .await;
    assert!(
        seen["confirm"].as_str().unwrap_or("").contains("127.0.0.1:4243"),
        "the page says where the session goes: {seen}"
    );
    let redirect = Url::parse(seen["redirect"].as_str().unwrap_or_else(|| panic!("{seen}"))).unwrap();
    let token = redirect.query_pairs().find(|(k, _)| k == "loginToken").map(|(_, v)| v.into_owned()).unwrap();
    let body = json!({ "type": "m.login.token", "token": token });
    let (status, login) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["user_id"], "@marie.curie-numerique.gouv.fr:localhost");

    // The provider made the account without a password: replacing its cross-signing identity,
    // even from this legacy session, asks for the approval on the account page (`m.oauth`).
    let token = login["access_token"].as_str().unwrap();
    let upload = |seed: &str| {
        let public = format!("{seed:A<43}");
        let key = json!({ "user_id": login["user_id"], "usage": ["master"], "keys": { format!("ed25519:{public}"): public } });
        json!({ "master_key": key })
    };
    let path = "/_matrix/client/v3/keys/device_signing/upload";
    let (status, body) = api(server, Method::POST, Some(token), path, Some(upload("first"))).await;
    assert_eq!(status, 200, "a first identity needs no approval: {body}");
    let (status, uia) = api(server, Method::POST, Some(token), path, Some(upload("second"))).await;
    assert_eq!(status, 401, "{uia}");
    assert_eq!(uia["flows"][0]["stages"], json!(["m.oauth"]), "{uia}");
    assert!(uia["params"]["m.oauth"]["url"].as_str().unwrap().ends_with("action=org.matrix.cross_signing_reset"));
}

/// A server admin's access token (an account made with the command line).
async fn admin_token(server: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    let (status, body) = api(server, Method::POST, None, "/_matrix/client/v3/login", Some(body)).await;
    assert_eq!(status, 200, "{body}");
    body["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn password_sign_in_in_a_real_browser() {
    let server = TestServer::start_with(&[("oauth.enabled", true.into())]);
    server.register("alice", "alice-pw").await;
    let (client, url) = sdk_login(&server).await;
    let seen = browser(&[
        ("AUTHORIZE_URL", url.as_str()),
        ("REDIRECT_PREFIX", "http://127.0.0.1:4242/callback"),
        ("BROWSER_LOCALE", "en-GB"),
        ("USERNAME", "alice"),
        ("LOGIN_PASSWORD", "alice-pw"),
    ])
    .await;
    assert_eq!(seen["lang"], "en", "{seen}");
    let redirect = seen["redirect"].as_str().unwrap_or_else(|| panic!("no redirect back to the client: {seen}"));
    client.oauth().finish_login(Url::parse(redirect).unwrap().into()).await.expect("code exchanged");
    assert_eq!(client.whoami().await.unwrap().user_id.as_str(), "@alice:localhost");

    // A wrong password: the page again, with the reason read out.
    let (_, url) = sdk_login(&server).await;
    let seen = browser(&[
        ("AUTHORIZE_URL", url.as_str()),
        ("REDIRECT_PREFIX", "http://127.0.0.1:4242/callback"),
        ("USERNAME", "alice"),
        ("LOGIN_PASSWORD", "wrong"),
    ])
    .await;
    assert!(seen["redirect"].is_null(), "{seen}");
    assert!(seen["alert"].as_str().unwrap_or("").contains("Connexion refusée"), "French by default here: {seen}");
}

#[tokio::test]
async fn a_callback_from_another_issuer_or_browser_is_refused() {
    let Setup { server, .. } = &setup();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let start = format!(
        "{}/_matrix/client/v3/login/sso/redirect/proconnect?redirectUrl=http%3A%2F%2F127.0.0.1%3A4243%2Fsso",
        server.url
    );
    let started = || async {
        let response = http.get(&start).send().await.unwrap();
        assert_eq!(response.status(), 303);
        let location = Url::parse(response.headers()["location"].to_str().unwrap()).unwrap();
        let state = location.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
        let cookie = response.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
        (state, cookie)
    };
    let callback = |state: &str, iss: &str| {
        format!("{}/_hemicycle/oauth2/upstream/callback?code=stolen&state={state}&iss={iss}", server.url)
    };

    // RFC 9207: an answer naming another issuer is not taken (its code never goes anywhere).
    let (state, cookie) = started().await;
    let page = http.get(callback(&state, "http%3A%2F%2Fevil.example")).header("cookie", &cookie).send().await.unwrap();
    assert_eq!(page.status(), 502);
    assert!(page.text().await.unwrap().contains("another issuer"));

    // A sign-in started in another browser (no cookie binding it to this one).
    let (state, _) = started().await;
    let page = http.get(callback(&state, "")).send().await.unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("another browser"));

    // MSC3824's hint is `login` or `register`; anything else is refused before the provider.
    for (action, status) in [("login", 303), ("register", 303), ("delete", 400)] {
        let response = http.get(format!("{start}&action={action}")).send().await.unwrap();
        assert_eq!(response.status(), status, "action={action}");
    }
}

/// The device authorization grant's page offers the upstream providers too: a person whose
/// account lives with ProConnect signs a second device in from a phone's browser.
#[tokio::test]
async fn a_device_is_signed_in_from_the_link_page_through_the_provider() {
    let Setup { server, .. } = &setup();
    let registration = json!({
        "application_type": "native", "client_uri": "https://tv.example/", "client_name": "TV",
        "grant_types": ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"],
    });
    let (status, client) = api(server, Method::POST, None, "/_hemicycle/oauth2/register", Some(registration)).await;
    assert_eq!(status, 201, "{client}");
    let client_id = client["client_id"].as_str().unwrap().to_owned();
    let http = reqwest::Client::new();
    let form = |fields: &[(&str, &str)]| form_urlencoded::Serializer::new(String::new()).extend_pairs(fields).finish();
    let post = |fields: String, path: &'static str| {
        let request = http
            .post(format!("{}/_hemicycle/oauth2/{path}", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(fields);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<Value>().await.unwrap())
        }
    };
    let scope = "urn:matrix:client:api:* urn:matrix:client:device:TVDEVICE";
    let (status, asked) = post(form(&[("client_id", &client_id), ("scope", scope)]), "device").await;
    assert_eq!(status, 200, "{asked}");

    let seen = browser(&[
        ("AUTHORIZE_URL", asked["verification_uri_complete"].as_str().unwrap()),
        ("REDIRECT_PREFIX", "http://127.0.0.1:4244/nowhere"),
        ("PROVIDER_LOGIN", "marie"),
    ])
    .await;
    assert!(seen["buttons"].as_array().unwrap().iter().any(|b| b.as_str().unwrap().contains("ProConnect")), "{seen}");
    assert!(seen["status"].as_str().unwrap_or("").contains("connecté"), "the page says the device is in: {seen}");

    let poll = form(&[
        ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
        ("device_code", asked["device_code"].as_str().unwrap()),
        ("client_id", &client_id),
    ]);
    let (status, tokens) = post(poll, "token").await;
    assert_eq!(status, 200, "{tokens}");
    let token = tokens["access_token"].as_str().unwrap();
    let (_, me) = api(server, Method::GET, Some(token), "/_matrix/client/v3/account/whoami", None).await;
    assert_eq!(me["user_id"], "@marie.curie-numerique.gouv.fr:localhost");
    assert_eq!(me["device_id"], "TVDEVICE");
}
