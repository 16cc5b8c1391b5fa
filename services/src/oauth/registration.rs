//! Dynamic client registration (RFC 7591) with the rules of the Matrix spec's "Client
//! registration": public clients only, a `client_uri` that everything else hangs off, and strict
//! redirect URIs — the redirect URI is what proves a client is who it says, so a lax rule here
//! would let any web page collect codes meant for another client.

use url::{Host, Url};

use super::{ErrorCode, OauthError};
use crate::oauth::tables::Client;

/// The grants a client may register for; others it asks for are left out of its registration
/// (as the spec's example shows for token exchange).
pub const SUPPORTED_GRANTS: [&str; 3] =
    ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"];

fn invalid_metadata(description: impl Into<String>) -> OauthError {
    OauthError::new(ErrorCode::InvalidClientMetadata, description)
}

fn invalid_redirect(description: impl Into<String>) -> OauthError {
    OauthError::new(ErrorCode::InvalidRedirectUri, description)
}

/// An `https` URL without user or password, as the spec wants for every URI of the metadata.
fn https_url(field: &str, value: &str) -> Result<Url, OauthError> {
    let url = Url::parse(value).map_err(|e| invalid_metadata(format!("{field} is not a valid URL: {e}")))?;
    if url.scheme() != "https" {
        return Err(invalid_metadata(format!("{field} must use the https scheme")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid_metadata(format!("{field} must not carry a user or password")));
    }
    if url.host().is_none() {
        return Err(invalid_metadata(format!("{field} has no host")));
    }
    Ok(url)
}

/// Whether `host` is `base` or one of its subdomains (`app.example.com` under `example.com`).
fn same_or_subdomain(host: &Host<&str>, base: &Host<&str>) -> bool {
    match (host, base) {
        (Host::Domain(host), Host::Domain(base)) => {
            let (host, base) = (host.to_ascii_lowercase(), base.to_ascii_lowercase());
            host == base || host.strip_suffix(&base).is_some_and(|rest| rest.ends_with('.'))
        }
        (host, base) => host == base,
    }
}

/// A string field of the metadata, if present; anything but a string is refused.
fn string_field<'a>(
    metadata: &'a serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<&'a str>, OauthError> {
    match metadata.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(value)) => Ok(Some(value.as_str())),
        Some(_) => Err(invalid_metadata(format!("{field} must be a string"))),
    }
}

/// A list of strings, if present.
fn string_list(
    metadata: &serde_json::Map<String, serde_json::Value>,
    field: &str,
) -> Result<Option<Vec<String>>, OauthError> {
    match metadata.get(field) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str().map(str::to_owned).ok_or_else(|| invalid_metadata(format!("{field} must list strings")))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid_metadata(format!("{field} must be a list"))),
    }
}

/// Checks one redirect URI against the client's type and `client_uri` (the spec's "Redirect URI
/// validation", which is RFC 8252 section 7 for native clients).
pub fn check_redirect_uri(application_type: &str, client_uri: &Url, value: &str) -> Result<(), OauthError> {
    let url = Url::parse(value).map_err(|e| invalid_redirect(format!("{value} is not a valid URI: {e}")))?;
    if url.fragment().is_some() {
        return Err(invalid_redirect(format!("{value}: a redirect URI must not have a fragment")));
    }
    let base = client_uri.host().expect("client_uri was checked to have a host");
    let web_rule = |url: &Url| {
        if url.scheme() != "https" {
            return Err(invalid_redirect(format!("{value}: must use the https scheme")));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(invalid_redirect(format!("{value}: must not carry a user or password")));
        }
        match url.host() {
            Some(host) if same_or_subdomain(&host, &base) => Ok(()),
            _ => {
                Err(invalid_redirect(format!("{value}: its host must be {base} or a subdomain of it, like client_uri")))
            }
        }
    };
    match (application_type, url.scheme()) {
        ("web", _) | ("native", "https") => web_rule(&url),
        ("native", "http") => {
            let loopback = matches!(url.host(), Some(Host::Domain("localhost")))
                || matches!(url.host(), Some(Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST)
                || matches!(url.host(), Some(Host::Ipv6(ip)) if ip == std::net::Ipv6Addr::LOCALHOST);
            if !loopback {
                return Err(invalid_redirect(format!(
                    "{value}: a native client's http redirect URI must be on localhost, 127.0.0.1 or [::1]"
                )));
            }
            if url.port().is_some() {
                return Err(invalid_redirect(format!(
                    "{value}: a loopback redirect URI is registered without a port (any port is accepted when used)"
                )));
            }
            Ok(())
        }
        ("native", scheme) => {
            let Host::Domain(domain) = &base else {
                return Err(invalid_redirect(format!(
                    "{value}: private-use schemes need a client_uri with a domain name"
                )));
            };
            let reversed: Vec<&str> = domain.split('.').rev().collect();
            let reversed = reversed.join(".").to_ascii_lowercase();
            if scheme != reversed && !scheme.starts_with(&format!("{reversed}.")) {
                return Err(invalid_redirect(format!(
                    "{value}: a private-use scheme must start with {reversed}, the client_uri's host in reverse order"
                )));
            }
            if url.host().is_some() || !url.username().is_empty() || url.port().is_some() {
                return Err(invalid_redirect(format!(
                    "{value}: a private-use URI must not have an authority (write {scheme}:/path)"
                )));
            }
            Ok(())
        }
        _ => Err(invalid_metadata("application_type must be web or native")),
    }
}

/// Validates a registration request's metadata and returns the client to store.
pub fn validate(body: &serde_json::Value, now_ms: u64) -> Result<Client, OauthError> {
    let metadata = body.as_object().ok_or_else(|| invalid_metadata("the client metadata must be a JSON object"))?;
    let application_type = string_field(metadata, "application_type")?.unwrap_or("web").to_owned();
    if application_type != "web" && application_type != "native" {
        return Err(invalid_metadata("application_type must be web or native"));
    }
    let client_uri_text = string_field(metadata, "client_uri")?
        .ok_or_else(|| invalid_metadata("client_uri is required: the other URIs are checked against its host"))?;
    let client_uri = https_url("client_uri", client_uri_text)?;
    let base = client_uri.host().expect("checked");
    let same_host = |field: &str| -> Result<Option<String>, OauthError> {
        let Some(value) = string_field(metadata, field)? else { return Ok(None) };
        let url = https_url(field, value)?;
        match url.host() {
            Some(host) if same_or_subdomain(&host, &base) => Ok(Some(value.to_owned())),
            _ => {
                Err(invalid_metadata(format!("{field} must be on {base} (the client_uri's host) or a subdomain of it")))
            }
        }
    };
    let logo_uri = same_host("logo_uri")?;
    let policy_uri = same_host("policy_uri")?;
    let tos_uri = same_host("tos_uri")?;
    // Localized variants (`tos_uri#fr`) follow the same rule, even though only the plain value is kept.
    for key in metadata.keys() {
        if let Some((field, _)) = key.split_once('#') {
            if matches!(field, "logo_uri" | "policy_uri" | "tos_uri" | "client_uri") {
                same_host(key)?;
            }
        }
    }
    match string_field(metadata, "token_endpoint_auth_method")? {
        None | Some("none") => {}
        Some(other) => {
            return Err(invalid_metadata(format!(
                "token_endpoint_auth_method {other} is not supported: only public clients (none) may register"
            )))
        }
    }
    let asked = string_list(metadata, "grant_types")?.unwrap_or_else(|| vec!["authorization_code".to_owned()]);
    let grant_types: Vec<String> = asked.into_iter().filter(|g| SUPPORTED_GRANTS.contains(&g.as_str())).collect();
    if grant_types.is_empty() {
        return Err(invalid_metadata("grant_types names no grant this server supports"));
    }
    let redirect_uris = string_list(metadata, "redirect_uris")?.unwrap_or_default();
    if grant_types.iter().any(|g| g == "authorization_code") {
        if redirect_uris.is_empty() {
            return Err(invalid_redirect("the authorization_code grant needs at least one redirect URI"));
        }
        let response_types = string_list(metadata, "response_types")?.unwrap_or_else(|| vec!["code".to_owned()]);
        if !response_types.iter().any(|r| r == "code") {
            return Err(invalid_metadata("response_types must include code"));
        }
    }
    for uri in &redirect_uris {
        check_redirect_uri(&application_type, &client_uri, uri)?;
    }
    let client_name = string_field(metadata, "client_name")?.map(|n| n.chars().take(200).collect());
    Ok(Client {
        application_type,
        redirect_uris,
        grant_types,
        client_uri: client_uri_text.to_owned(),
        client_name,
        logo_uri,
        policy_uri,
        tos_uri,
        created_ts: now_ms,
        used: false,
    })
}

/// Whether a redirect URI of an authorization request is one the client registered: the same
/// text, or — for a native client's loopback URI, registered without a port — the same URI on
/// any port (RFC 8252 section 7.3).
pub fn redirect_matches(client: &Client, requested: &str) -> bool {
    if client.redirect_uris.iter().any(|r| r == requested) {
        return true;
    }
    if client.application_type != "native" {
        return false;
    }
    let Ok(mut url) = Url::parse(requested) else { return false };
    if url.scheme() != "http" || url.port().is_none() {
        return false;
    }
    let _ = url.set_port(None);
    client.redirect_uris.iter().filter_map(|r| Url::parse(r).ok()).any(|r| r.scheme() == "http" && r == url)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn native(redirect: &str) -> Result<Client, OauthError> {
        validate(
            &json!({"application_type": "native", "client_uri": "https://example.com/", "redirect_uris": [redirect]}),
            0,
        )
    }

    fn web(redirect: &str) -> Result<Client, OauthError> {
        validate(&json!({"client_uri": "https://example.com/", "redirect_uris": [redirect]}), 0)
    }

    #[test]
    fn the_spec_examples_of_redirect_uris() {
        for ok in [
            "https://example.com/callback",
            "https://app.example.com/callback",
            "https://example.com:5173/?query=value",
        ] {
            assert!(web(ok).is_ok(), "{ok}");
        }
        for bad in [
            "https://example.com/callback#fragment",
            "http://example.com/callback",
            "http://localhost/",
            "https://example.org/cb",
            "https://notexample.com/cb",
        ] {
            assert_eq!(web(bad).unwrap_err().code, ErrorCode::InvalidRedirectUri, "{bad}");
        }
        for ok in [
            "com.example.app:/callback",
            "com.example:/",
            "com.example:callback",
            "http://localhost/callback",
            "http://127.0.0.1/callback",
            "http://[::1]/callback",
        ] {
            assert!(native(ok).is_ok(), "{ok}: {:?}", native(ok).err());
        }
        for bad in [
            "example:/callback",
            "com.example.app://callback",
            "https://localhost/callback",
            "http://localhost:1234/callback",
        ] {
            assert_eq!(native(bad).unwrap_err().code, ErrorCode::InvalidRedirectUri, "{bad}");
        }
    }

    #[test]
    fn uris_of_the_metadata_hang_off_client_uri() {
        let ok = json!({"client_uri": "https://example.com/", "redirect_uris": ["https://example.com/cb"],
            "logo_uri": "https://cdn.example.com/logo.png", "tos_uri": "https://example.com/tos", "tos_uri#fr": "https://example.com/fr/tos"});
        assert!(validate(&ok, 0).is_ok());
        for (field, value) in [
            ("logo_uri", "https://evil.example/logo.png"),
            ("policy_uri", "http://example.com/p"),
            ("tos_uri#fr", "https://evil.example/tos"),
        ] {
            let mut body = ok.clone();
            body[field] = json!(value);
            assert_eq!(validate(&body, 0).unwrap_err().code, ErrorCode::InvalidClientMetadata, "{field}");
        }
        let no_client_uri = json!({"redirect_uris": ["https://example.com/cb"]});
        assert_eq!(validate(&no_client_uri, 0).unwrap_err().code, ErrorCode::InvalidClientMetadata);
        let confidential = json!({"client_uri": "https://example.com/", "redirect_uris": ["https://example.com/cb"], "token_endpoint_auth_method": "client_secret_basic"});
        assert_eq!(validate(&confidential, 0).unwrap_err().code, ErrorCode::InvalidClientMetadata);
        let with_user = json!({"client_uri": "https://bob@example.com/", "redirect_uris": ["https://example.com/cb"]});
        assert_eq!(validate(&with_user, 0).unwrap_err().code, ErrorCode::InvalidClientMetadata);
    }

    #[test]
    fn loopback_redirects_match_on_any_port() {
        let client = native("http://127.0.0.1/callback").unwrap();
        assert!(redirect_matches(&client, "http://127.0.0.1/callback"));
        assert!(redirect_matches(&client, "http://127.0.0.1:49152/callback"));
        assert!(!redirect_matches(&client, "http://127.0.0.1:49152/other"));
        assert!(!redirect_matches(&client, "http://localhost:49152/callback"));
        let web = web("https://example.com/cb").unwrap();
        assert!(!redirect_matches(&web, "https://example.com:8443/cb"));
    }
}
