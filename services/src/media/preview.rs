//! URL previews: the Open Graph data of a page a user pasted, its image stored as local media.
//!
//! The server fetches on its users' behalf, so every hop is checked before a byte is sent: the
//! host is resolved here, each address must be outside the configured deny ranges (or inside an
//! allowed one), and the connection is pinned to the checked address so a second DNS answer
//! cannot swap it for an internal one. Redirects are followed by hand, each checked the same way.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use ruma::UserId;
use serde_json::{json, Map, Value};

use crate::{
    config::UrlPreviewConfig,
    error::{Error, Result},
    services::Services,
};

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// How long a preview is served from memory before the page is fetched again.
const CACHE_FOR: Duration = Duration::from_secs(3600);
/// Previews kept in memory.
const CACHE_ENTRIES: usize = 1_000;
/// The longest text kept for a title or description.
const MAX_TEXT: usize = 500;

/// Recent previews by URL.
#[derive(Default)]
pub struct PreviewCache(Mutex<HashMap<String, (Instant, Value)>>);

struct Fetched {
    content_type: String,
    body: Vec<u8>,
    url: reqwest::Url,
}

fn refused(reason: impl Into<String>) -> Error {
    Error::Forbidden(reason.into())
}

fn allowed(config: &UrlPreviewConfig, ip: IpAddr) -> bool {
    crate::config::address_allowed(&config.deny_ranges, &config.allow_ranges, ip)
}

/// The checked address to connect to for `url`: every address the host resolves to must be
/// allowed (a name that resolves to one internal address among public ones is refused).
async fn checked_address(config: &UrlPreviewConfig, url: &reqwest::Url) -> Result<SocketAddr> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::invalid_param("only http and https URLs can be previewed"));
    }
    let host = url.host_str().ok_or_else(|| Error::invalid_param("the URL has no host"))?;
    let port = url.port_or_known_default().unwrap_or(80);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addresses: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::RemoteUnreachable(format!("cannot resolve {host}: {e}")))?
            .collect(),
    };
    if addresses.is_empty() {
        return Err(Error::RemoteUnreachable(format!("{host} has no address")));
    }
    if let Some(bad) = addresses.iter().find(|a| !allowed(config, a.ip())) {
        return Err(refused(format!("{host} resolves to {}, which URL previews may not reach", bad.ip())));
    }
    Ok(addresses[0])
}

/// Fetches `url` (following checked redirects), reading at most `max_size` bytes.
async fn fetch(config: &UrlPreviewConfig, url: &str) -> Result<Fetched> {
    let mut url = reqwest::Url::parse(url).map_err(|e| Error::invalid_param(format!("invalid URL: {e}")))?;
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    for _ in 0..=MAX_REDIRECTS {
        let address = checked_address(config, &url).await?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .resolve(&host, address)
            .user_agent("Hemicycle URL preview")
            .build()
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "text/html, image/*;q=0.9, */*;q=0.1")
            .send()
            .await
            .map_err(|e| Error::RemoteUnreachable(format!("cannot fetch {url}: {e}")))?;
        if response.status().is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .ok_or_else(|| Error::RemoteUnreachable(format!("{url} redirects nowhere")))?;
            url = url.join(location).map_err(|e| Error::RemoteUnreachable(format!("bad redirect: {e}")))?;
            continue;
        }
        if !response.status().is_success() {
            return Err(Error::RemoteUnreachable(format!("{url} answered {}", response.status())));
        }
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|t| t.to_str().ok())
            .unwrap_or("application/octet-stream")
            .to_owned();
        let mut body = Vec::new();
        while let Some(chunk) =
            response.chunk().await.map_err(|e| Error::RemoteUnreachable(format!("reading {url}: {e}")))?
        {
            if body.len() + chunk.len() > config.max_size as usize {
                return Err(Error::TooLarge(format!("{url} is larger than {} bytes", config.max_size)));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(Fetched { content_type, body, url });
    }
    Err(Error::RemoteUnreachable(format!("more than {MAX_REDIRECTS} redirects")))
}

/// The preview of `url` for `user`: Open Graph keys (`og:title`, `og:description`, `og:image` as an
/// mxc URI with its type, size and dimensions), as Synapse answers.
pub async fn preview(services: &Services, user: &UserId, url: &str) -> Result<Value> {
    let config = &services.config.media.url_preview;
    if !config.enabled {
        return Err(refused("URL previews are disabled on this server"));
    }
    if let Some((at, value)) = services.media.previews.0.lock().expect("preview cache").get(url) {
        if at.elapsed() < CACHE_FOR {
            return Ok(value.clone());
        }
    }
    let page = fetch(config, url).await?;
    let mut og = Map::new();
    let mime = page.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    if mime.starts_with("image/") {
        store_image(services, user, &mime, page.body, &mut og).await?;
    } else if mime == "text/html" || mime == "application/xhtml+xml" {
        let html = String::from_utf8_lossy(&page.body);
        let tags = parse_html(&html);
        for (key, value) in &tags.meta {
            if key.starts_with("og:") && key != "og:image" {
                og.insert(key.clone(), Value::String(value.clone()));
            }
        }
        if !og.contains_key("og:title") {
            if let Some(title) = tags.title.filter(|t| !t.is_empty()) {
                og.insert("og:title".into(), Value::String(title));
            }
        }
        if !og.contains_key("og:description") {
            if let Some(description) = tags.meta.get("description") {
                og.insert("og:description".into(), Value::String(description.clone()));
            }
        }
        if let Some(image) = tags.meta.get("og:image") {
            // An image the page names is fetched under the same rules; a failure leaves it out.
            if let Ok(image_url) = page.url.join(image) {
                match fetch(config, image_url.as_str()).await {
                    Ok(image) => {
                        let image_mime =
                            image.content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
                        if image_mime.starts_with("image/") {
                            store_image(services, user, &image_mime, image.body, &mut og).await?;
                        }
                    }
                    Err(error) => tracing::debug!(%error, %image_url, "preview image not fetched"),
                }
            }
        }
        og.entry("og:url").or_insert_with(|| Value::String(page.url.to_string()));
    }
    let value = Value::Object(og);
    let mut cache = services.media.previews.0.lock().expect("preview cache");
    if cache.len() >= CACHE_ENTRIES {
        cache.retain(|_, (at, _)| at.elapsed() < CACHE_FOR);
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
    }
    cache.insert(url.to_owned(), (Instant::now(), value.clone()));
    Ok(value)
}

async fn store_image(
    services: &Services,
    user: &UserId,
    mime: &str,
    body: Vec<u8>,
    og: &mut Map<String, Value>,
) -> Result<()> {
    let size = body.len();
    let dimensions = image::ImageReader::new(std::io::Cursor::new(&body))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok());
    let mut upload = services.media.begin_upload().await?;
    upload.write(&body).await?;
    let mxc = services.media.create_with_content(user, upload, Some(mime.to_owned()), None).await?;
    og.insert("og:image".into(), json!(mxc.to_string()));
    og.insert("og:image:type".into(), json!(mime));
    og.insert("matrix:image:size".into(), json!(size));
    if let Some((width, height)) = dimensions {
        og.insert("og:image:width".into(), json!(width));
        og.insert("og:image:height".into(), json!(height));
    }
    Ok(())
}

/// What a preview reads of a page: `<meta>` values by `property` or `name`, and the `<title>`.
#[derive(Default)]
struct Tags {
    meta: HashMap<String, String>,
    title: Option<String>,
}

/// A tolerant scan of the tags a preview needs; not a full HTML parser, and nothing of the page
/// is ever executed or served back as HTML.
fn parse_html(html: &str) -> Tags {
    let mut tags = Tags::default();
    let lower = html.to_ascii_lowercase();
    let mut at = 0;
    while let Some(start) = lower[at..].find('<').map(|i| at + i) {
        let Some(end) = lower[start..].find('>').map(|i| start + i) else { break };
        let tag = &html[start + 1..end];
        let name: String =
            tag.chars().take_while(|c| c.is_ascii_alphanumeric()).collect::<String>().to_ascii_lowercase();
        if name == "meta" {
            let attributes = attributes(&tag[4..]);
            let key = attributes.get("property").or_else(|| attributes.get("name"));
            if let (Some(key), Some(content)) = (key, attributes.get("content")) {
                tags.meta.entry(key.to_ascii_lowercase()).or_insert_with(|| clip(content));
            }
        } else if name == "title" && tags.title.is_none() {
            if let Some(close) = lower[end..].find("</title").map(|i| end + i) {
                tags.title = Some(clip(decode_entities(html[end + 1..close].trim()).trim()));
            }
        } else if name == "body" {
            break;
        }
        at = end + 1;
    }
    tags
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_TEXT).collect()
}

/// The attributes of a tag (`key="value"`, `key='value'` or `key=value`), entities decoded.
fn attributes(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && (chars[i].is_whitespace() || chars[i] == '/') {
            i += 1;
        }
        let key_start = i;
        while i < chars.len() && !chars[i].is_whitespace() && chars[i] != '=' {
            i += 1;
        }
        let key: String = chars[key_start..i].iter().collect::<String>().to_ascii_lowercase();
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i] != '=' {
            if !key.is_empty() {
                out.entry(key).or_default();
            }
            continue;
        }
        i += 1;
        while i < chars.len() && chars[i].is_whitespace() {
            i += 1;
        }
        let value: String = match chars.get(i) {
            Some(&quote) if quote == '"' || quote == '\'' => {
                i += 1;
                let start = i;
                while i < chars.len() && chars[i] != quote {
                    i += 1;
                }
                let v = chars[start..i].iter().collect();
                i += 1;
                v
            }
            _ => {
                let start = i;
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
                chars[start..i].iter().collect()
            }
        };
        if !key.is_empty() {
            out.entry(key).or_insert_with(|| decode_entities(&value));
        }
    }
    out
}

/// Decodes the character references pages commonly use in titles and descriptions.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let Some(semi) = rest.char_indices().take(12).find(|(_, c)| *c == ';').map(|(i, _)| i) else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..semi];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            "nbsp" => Some('\u{a0}'),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .or_else(|| entity.strip_prefix('#').and_then(|d| d.parse().ok()))
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}
