//! What the oauth domain keeps for the server's lifetime: for the upstream sign-in, the providers
//! with their secrets, one HTTP client, and each provider's metadata as last read (`upstream.rs`
//! uses them); for the sweep, where each table's walk goes on (`sweep.rs`).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde_json::{Map, Value};

use crate::{
    config::UpstreamConfig,
    error::{Error, Result},
};

/// Where the sweep's walk through each table stopped (the key to start after; empty: the start).
#[derive(Debug, Default)]
pub struct SweepCursors {
    pub codes: Vec<u8>,
    pub device_requests: Vec<u8>,
    pub upstream: Vec<u8>,
    pub pages: Vec<u8>,
    pub clients: Vec<u8>,
}

/// How long a provider's metadata is trusted before it is read again.
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
/// The largest answer read from a provider.
const MAX_ANSWER: usize = 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Discovery {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub userinfo_endpoint: Option<String>,
    /// The `prompt` values the provider takes beyond OpenID Connect Core's (`create`).
    pub prompt_values: Vec<String>,
}

/// The upstream providers, their secrets and their metadata as last read.
pub struct Upstreams {
    providers: Vec<(UpstreamConfig, String)>,
    pub(crate) http: reqwest::Client,
    discovered: Mutex<HashMap<String, (Discovery, Instant)>>,
}

/// The claims of a JWT, read without checking its signature (see `upstream.rs`).
pub fn jwt_claims(jwt: &str) -> std::result::Result<Map<String, Value>, String> {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).ok_or("not a JWT")?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| format!("the JWT's payload is not base64url: {e}"))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("the JWT's payload is not a JSON object: {e}"))
}

impl Upstreams {
    pub fn new(configs: &[UpstreamConfig]) -> Result<Self> {
        let mut providers = Vec::new();
        for config in configs {
            let secret = std::fs::read_to_string(&config.client_secret_file)
                .map_err(|e| Error::Internal(format!("{}: {e}", config.client_secret_file.display())))?;
            providers.push((config.clone(), secret.trim().to_owned()));
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Self { providers, http, discovered: Mutex::new(HashMap::new()) })
    }

    /// The providers, as (id, button label).
    pub fn list(&self) -> Vec<(&str, &str)> {
        self.providers.iter().map(|(c, _)| (c.id.as_str(), c.name.as_str())).collect()
    }

    pub fn provider(&self, id: &str) -> Option<&(UpstreamConfig, String)> {
        self.providers.iter().find(|(c, _)| c.id == id)
    }

    pub async fn read_json(&self, request: reqwest::RequestBuilder) -> std::result::Result<(Value, bool), String> {
        let response = request.send().await.map_err(|e| format!("the provider cannot be reached: {e}"))?;
        let status = response.status();
        let jwt = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/jwt"));
        if response.content_length().is_some_and(|len| len as usize > MAX_ANSWER) {
            return Err("the provider's answer is too large".into());
        }
        let bytes = response.bytes().await.map_err(|e| format!("the provider's answer was cut: {e}"))?;
        if bytes.len() > MAX_ANSWER {
            return Err("the provider's answer is too large".into());
        }
        if jwt {
            let text = String::from_utf8_lossy(&bytes);
            return jwt_claims(text.trim()).map(|claims| (Value::Object(claims), status.is_success()));
        }
        let value: Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("the provider answered {status} with no JSON: {e}"))?;
        Ok((value, status.is_success()))
    }

    pub async fn discover(&self, config: &UpstreamConfig) -> std::result::Result<Discovery, String> {
        let cached = self.discovered.lock().expect("discovery cache").get(&config.id).cloned();
        if let Some((discovery, at)) = cached {
            if at.elapsed() < DISCOVERY_TTL {
                return Ok(discovery);
            }
        }
        let url = format!("{}/.well-known/openid-configuration", config.issuer.trim_end_matches('/'));
        let (metadata, ok) = self.read_json(self.http.get(&url)).await?;
        if !ok {
            return Err(format!("{url} did not answer the provider's metadata"));
        }
        let field = |name: &str| metadata.get(name).and_then(Value::as_str).map(str::to_owned);
        // OpenID Connect Discovery section 4.3: the metadata must be the issuer's own.
        if field("issuer").as_deref().map(|i| i.trim_end_matches('/')) != Some(config.issuer.trim_end_matches('/')) {
            return Err(format!("the metadata at {url} names another issuer"));
        }
        let discovery = Discovery {
            authorization_endpoint: field("authorization_endpoint")
                .ok_or("the metadata has no authorization_endpoint")?,
            token_endpoint: field("token_endpoint").ok_or("the metadata has no token_endpoint")?,
            userinfo_endpoint: field("userinfo_endpoint"),
            prompt_values: metadata
                .get("prompt_values_supported")
                .and_then(Value::as_array)
                .map(|values| values.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default(),
        };
        self.discovered.lock().expect("discovery cache").insert(config.id.clone(), (discovery.clone(), Instant::now()));
        Ok(discovery)
    }
}
