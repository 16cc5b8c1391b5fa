//! The media repository over raw HTTP (and one matrix-sdk round trip): uploads, create-then-upload,
//! downloads with their safety headers, thumbnails, limits, deduplication, legacy endpoints.

use std::{
    io::Cursor,
    path::{Path, PathBuf},
};

use futures::StreamExt;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use matrix_sdk::{
    media::{MediaFormat, MediaRequestParameters},
    ruma::events::room::MediaSource,
};
use reqwest::{header::HeaderMap, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::TestServer;

async fn register(server: &TestServer, name: &str) -> String {
    let body = json!({ "username": name, "password": "pw-for-media", "auth": { "type": "m.login.dummy" } });
    let response =
        server.http().post(format!("{}/_matrix/client/v3/register", server.url)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

async fn json_of(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    (status, response.json::<Value>().await.unwrap_or(Value::Null))
}

async fn upload(
    server: &TestServer,
    token: &str,
    body: impl Into<reqwest::Body>,
    content_type: Option<&str>,
    filename: Option<&str>,
) -> (StatusCode, Value) {
    let mut url = format!("{}/_matrix/media/v3/upload", server.url);
    if let Some(name) = filename {
        url.push_str(&format!("?filename={}", crate::common::urlencode(name)));
    }
    let mut request = server.http().post(url).bearer_auth(token).body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    json_of(request.send().await.unwrap()).await
}

/// `mxc://server/id` → `server/id`.
fn mxc_path(value: &Value) -> String {
    value["content_uri"].as_str().expect("content_uri").strip_prefix("mxc://").unwrap().to_owned()
}

async fn get(server: &TestServer, token: Option<&str>, path: &str) -> reqwest::Response {
    let mut request = server.http().get(format!("{}{}", server.url, path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers.get(name).map(|v| v.to_str().unwrap()).unwrap_or("<missing>")
}

fn errcode(value: &Value) -> &str {
    value["errcode"].as_str().unwrap_or("<none>")
}

fn media_dir(server: &TestServer) -> PathBuf {
    server.config_path.parent().unwrap().join("db").join("media")
}

/// Every stored file (not temporary ones) under the media directory.
fn stored_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "tmp" {
                    stack.push(path);
                }
            } else {
                out.push(path);
            }
        }
    }
    out
}

fn temp_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("tmp")).unwrap().count()
}

#[tokio::test]
async fn media_upload_and_download_keep_type_and_name_with_safe_headers() {
    let server = TestServer::start_with(&[("media.max_upload_size", 123_456.into())]);
    let token = register(&server, "alice").await;
    let png = image_bytes(ImageFormat::Png, 40, 20);

    let (status, value) = upload(&server, &token, png.clone(), Some("image/png"), Some("cat.png")).await;
    assert_eq!(status, 200, "{value}");
    let id = mxc_path(&value);
    let (server_part, media_id) = id.split_once('/').unwrap();
    assert_eq!(server_part, "localhost");
    assert!(media_id.len() >= 24 && media_id.chars().all(|c| c.is_ascii_alphanumeric()), "{media_id}");

    let response = get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "content-length"), png.len().to_string());
    assert_eq!(header(&headers, "content-disposition"), "inline; filename=\"cat.png\"");
    assert_eq!(
        header(&headers, "content-security-policy"),
        "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';"
    );
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert_eq!(header(&headers, "cross-origin-resource-policy"), "cross-origin");
    assert_eq!(response.bytes().await.unwrap().as_ref(), png.as_slice());

    let response =
        get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{id}/d%C3%A9j%C3%A0.png")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(response.headers(), "content-disposition"),
        "inline; filename*=utf-8''d%C3%A9j%C3%A0.png",
        "the name in the URL wins, RFC 6266-encoded"
    );

    // HTML would run in the server's origin if shown inline: it is always an attachment.
    let (_, value) =
        upload(&server, &token, "<script>alert(1)</script>", Some("text/html"), Some("x\"\r\n/evil.html")).await;
    let response = get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{}", mxc_path(&value))).await;
    assert_eq!(header(response.headers(), "content-type"), "text/html");
    assert_eq!(header(response.headers(), "content-disposition"), "attachment; filename=\"xevil.html\"");

    let (_, value) = upload(&server, &token, "no type", None, None).await;
    let response = get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{}", mxc_path(&value))).await;
    assert_eq!(header(response.headers(), "content-type"), "application/octet-stream");
    assert_eq!(header(response.headers(), "content-disposition"), "attachment");

    let (status, value) = json_of(get(&server, None, &format!("/_matrix/client/v1/media/download/{id}")).await).await;
    assert_eq!((status.as_u16(), errcode(&value)), (401, "M_MISSING_TOKEN"));
    let (status, value) =
        json_of(get(&server, Some(&token), "/_matrix/client/v1/media/download/localhost/nope").await).await;
    assert_eq!((status.as_u16(), errcode(&value)), (404, "M_NOT_FOUND"));
    let (status, value) = json_of(
        get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/other.example/{media_id}")).await,
    )
    .await;
    assert_eq!(
        (status.as_u16(), errcode(&value)),
        (502, "M_UNKNOWN"),
        "media of a server that cannot be reached: {value}"
    );
    let (status, value) =
        json_of(server.http().post(format!("{}/_matrix/media/v3/upload", server.url)).body("x").send().await.unwrap())
            .await;
    assert_eq!((status.as_u16(), errcode(&value)), (401, "M_MISSING_TOKEN"));

    let (status, value) = json_of(get(&server, Some(&token), "/_matrix/client/v1/media/config").await).await;
    assert_eq!((status.as_u16(), &value["m.upload.size"]), (200, &json!(123_456)));
}

#[tokio::test]
async fn media_create_then_upload() {
    let server = TestServer::start();
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let (status, value) = json_of(
        server.http().post(format!("{}/_matrix/media/v1/create", server.url)).bearer_auth(&alice).send().await.unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{value}");
    assert!(value["unused_expires_at"].as_u64().is_some(), "{value}");
    let id = mxc_path(&value);

    let (status, value) =
        json_of(get(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}?timeout_ms=0")).await)
            .await;
    assert_eq!((status.as_u16(), errcode(&value)), (504, "M_NOT_YET_UPLOADED"));

    let put = |token: &str, path: String, body: &'static str| {
        server
            .http()
            .put(format!("{}/_matrix/media/v3/upload/{path}?filename=notes.txt", server.url))
            .bearer_auth(token)
            .header("content-type", "text/plain")
            .body(body)
            .send()
    };
    let (status, value) = json_of(put(&bob, id.clone(), "bob's").await.unwrap()).await;
    assert_eq!((status.as_u16(), errcode(&value)), (403, "M_FORBIDDEN"));
    let (status, value) = json_of(put(&alice, "localhost/unknownid".into(), "x").await.unwrap()).await;
    assert_eq!((status.as_u16(), errcode(&value)), (404, "M_NOT_FOUND"));

    // A download waiting for the upload gets it as soon as it lands.
    let waiting_path = format!("/_matrix/client/v1/media/download/{id}?timeout_ms=60000");
    let waiting = get(&server, Some(&alice), &waiting_path);
    // The upload starts only once the server reports the download waiting: the wake-up is
    // what this exercises, not a download that happened to come after the upload.
    let (waited, uploaded) = tokio::join!(waiting, async {
        server.wait_for_waiting("media downloads", 1).await;
        json_of(put(&alice, id.clone(), "hello").await.unwrap()).await
    });
    assert_eq!(uploaded.0, 200, "{}", uploaded.1);
    assert_eq!(waited.status(), 200);
    assert_eq!(waited.text().await.unwrap(), "hello");

    let response = get(&server, Some(&bob), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!(header(response.headers(), "content-type"), "text/plain");
    assert_eq!(header(response.headers(), "content-disposition"), "inline; filename=\"notes.txt\"");
    assert_eq!(response.text().await.unwrap(), "hello");

    let (status, value) = json_of(put(&alice, id.clone(), "again").await.unwrap()).await;
    assert_eq!((status.as_u16(), errcode(&value)), (409, "M_CANNOT_OVERWRITE_MEDIA"));
    let response = get(&server, Some(&bob), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!(response.text().await.unwrap(), "hello", "a refused overwrite changes nothing");
}

#[tokio::test]
async fn media_identical_uploads_share_one_file() {
    let server = TestServer::start();
    let token = register(&server, "alice").await;
    let body = b"the same bytes twice".to_vec();
    let (_, first) = upload(&server, &token, body.clone(), Some("text/plain"), Some("a.txt")).await;
    let (_, second) = upload(&server, &token, body.clone(), Some("application/octet-stream"), Some("b.bin")).await;
    assert_ne!(first["content_uri"], second["content_uri"]);
    let files = stored_files(&media_dir(&server));
    assert_eq!(files.len(), 1, "{files:?}");
    let sha = format!("{:x}", Sha256::digest(&body));
    assert!(files[0].ends_with(format!("{}/{}/{sha}", &sha[0..2], &sha[2..4])), "{files:?}");
    let response =
        get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{}", mxc_path(&second))).await;
    assert_eq!(header(response.headers(), "content-disposition"), "attachment; filename=\"b.bin\"");
    assert_eq!(response.bytes().await.unwrap().as_ref(), body.as_slice());
}

#[tokio::test]
async fn media_over_the_limit_is_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(&[("media.max_upload_size", 1000.into())]);
    let token = register(&server, "alice").await;
    let dir = media_dir(&server);

    let (status, value) = upload(&server, &token, vec![7u8; 1001], Some("text/plain"), None).await;
    assert_eq!((status.as_u16(), errcode(&value)), (413, "M_TOO_LARGE"), "announced length");
    // Without Content-Length the limit is found while streaming.
    let chunks = futures::stream::iter((0..4).map(|_| Ok::<_, std::io::Error>(vec![7u8; 400])));
    let (status, value) = upload(&server, &token, reqwest::Body::wrap_stream(chunks), Some("text/plain"), None).await;
    assert_eq!((status.as_u16(), errcode(&value)), (413, "M_TOO_LARGE"), "chunked body");
    assert!(stored_files(&dir).is_empty(), "{:?}", stored_files(&dir));
    assert_eq!(temp_files(&dir), 0, "no temporary file left behind");

    let (status, _) = upload(&server, &token, vec![7u8; 1000], Some("text/plain"), None).await;
    assert_eq!(status, 200, "exactly the limit is fine");
}

/// Deterministic pseudo-random bytes (xorshift), generated chunk by chunk.
fn chunk(seed: &mut u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Peak resident memory of a process in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test]
async fn media_100_mb_streams_with_bounded_memory() {
    const SIZE: usize = 100 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let server = TestServer::start_with(&[("media.max_upload_size", (200 * 1024 * 1024).into())]);
    let token = register(&server, "alice").await;
    // Warm the server up (first requests allocate their pools) before taking the baseline.
    upload(&server, &token, vec![1u8; CHUNK], Some("application/octet-stream"), None).await;
    let before = peak_rss_kib(server.pid());

    let stream = futures::stream::unfold((0usize, 42u64), |(sent, mut seed)| async move {
        if sent >= SIZE {
            return None;
        }
        let bytes = chunk(&mut seed, CHUNK);
        Some((Ok::<_, std::io::Error>(bytes), (sent + CHUNK, seed)))
    });
    let mut expected_hasher = Sha256::new();
    let mut seed = 42u64;
    for _ in 0..SIZE / CHUNK {
        expected_hasher.update(chunk(&mut seed, CHUNK));
    }
    let expected = format!("{:x}", expected_hasher.finalize());
    let response = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload?filename=big.bin", server.url))
        .bearer_auth(&token)
        .header("content-type", "application/octet-stream")
        .header("content-length", SIZE.to_string())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    let (status, value) = json_of(response).await;
    assert_eq!(status, 200, "{value}");

    let response = get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{}", mxc_path(&value))).await;
    assert_eq!(response.status(), 200);
    assert_eq!(header(response.headers(), "content-length"), SIZE.to_string());
    let mut body = response.bytes_stream();
    let mut hasher = Sha256::new();
    let mut received = 0usize;
    while let Some(piece) = body.next().await {
        let piece = piece.unwrap();
        received += piece.len();
        hasher.update(&piece);
    }
    assert_eq!(received, SIZE);
    assert_eq!(format!("{:x}", hasher.finalize()), expected);

    let growth_mib = peak_rss_kib(server.pid()).saturating_sub(before) / 1024;
    println!("server peak RSS: {before} KiB before, grew by {growth_mib} MiB");
    assert!(growth_mib < 60, "server peak RSS grew by {growth_mib} MiB for a 100 MiB upload and download");
}

/// A `width`×`height` image with a gradient, encoded in `format`.
fn image_bytes(format: ImageFormat, width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| Rgba([(x * 3) as u8, (y * 5) as u8, 128, 255]));
    let image = match format {
        ImageFormat::Jpeg => DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(image).to_rgb8()),
        _ => DynamicImage::ImageRgba8(image),
    };
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn media_thumbnails_scale_and_crop_every_format() {
    let server = TestServer::start();
    let token = register(&server, "alice").await;
    let cases = [
        (ImageFormat::Png, "image/png", "image/png"),
        (ImageFormat::Jpeg, "image/jpeg", "image/jpeg"),
        (ImageFormat::Gif, "image/gif", "image/png"),
        (ImageFormat::WebP, "image/webp", "image/png"),
    ];
    for (format, upload_type, thumb_type) in cases {
        let (status, value) = upload(&server, &token, image_bytes(format, 400, 200), Some(upload_type), None).await;
        assert_eq!(status, 200, "{value}");
        let id = mxc_path(&value);
        for (query, expected) in [
            // Requests snap to the served sizes (32², 96², 320×240, 640×480, 800×600, 1600×1200).
            ("width=100&height=100&method=scale", (320, 160)),
            ("width=100&height=100&method=crop", (266, 200)),
            ("width=64&height=48&method=crop", (96, 96)),
            ("width=1000&height=1000&method=scale", (400, 200)),
            ("width=100&height=100", (320, 160)),
        ] {
            let response =
                get(&server, Some(&token), &format!("/_matrix/client/v1/media/thumbnail/{id}?{query}")).await;
            assert_eq!(response.status(), 200, "{upload_type} {query}");
            assert_eq!(header(response.headers(), "content-type"), thumb_type, "{upload_type} {query}");
            assert!(header(response.headers(), "content-disposition").starts_with("inline"));
            let bytes = response.bytes().await.unwrap();
            let thumb = image::load_from_memory(&bytes).unwrap();
            assert_eq!((thumb.width(), thumb.height()), expected, "{upload_type} {query}");
        }
    }

    // Thumbnails are generated once: with the source file gone from disk, the cached one is
    // still served, and a size never asked before cannot be made.
    let source = image_bytes(ImageFormat::Png, 300, 300);
    let (_, value) = upload(&server, &token, source.clone(), Some("image/png"), None).await;
    let path = format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32&method=crop", mxc_path(&value));
    let first = get(&server, Some(&token), &path).await.bytes().await.unwrap();
    let sha = format!("{:x}", Sha256::digest(&source));
    std::fs::remove_file(media_dir(&server).join(&sha[0..2]).join(&sha[2..4]).join(&sha)).unwrap();
    let second = get(&server, Some(&token), &path).await;
    assert_eq!(second.status(), 200);
    assert_eq!(second.bytes().await.unwrap(), first);
    // Another request size that snaps to the same served size is the same cached thumbnail.
    let snapped = get(&server, Some(&token), &path.replace("width=32", "width=31")).await;
    assert_eq!(snapped.status(), 200);
    assert_eq!(snapped.bytes().await.unwrap(), first);
    let uncached = get(&server, Some(&token), &path.replace("width=32", "width=33")).await;
    assert_eq!(uncached.status(), 500, "only the cache could answer");

    let (_, value) = upload(&server, &token, "not an image", Some("text/plain"), None).await;
    let (status, value) = json_of(
        get(
            &server,
            Some(&token),
            &format!("/_matrix/client/v1/media/thumbnail/{}?width=32&height=32", mxc_path(&value)),
        )
        .await,
    )
    .await;
    assert_eq!((status.as_u16(), errcode(&value)), (400, "M_UNKNOWN"));
    let (status, value) = json_of(
        server
            .http()
            .get(format!("{}/_matrix/client/v1/media/thumbnail/localhost/x?width=32&height=32", server.url))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status.as_u16(), errcode(&value)), (401, "M_MISSING_TOKEN"));
}

#[tokio::test]
async fn media_legacy_endpoints_follow_the_switch() {
    for allowed in [false, true] {
        let server = TestServer::start_with(&[("media.legacy_unauthenticated", allowed.into())]);
        let token = register(&server, "alice").await;
        let png = image_bytes(ImageFormat::Png, 64, 64);
        let (_, value) = upload(&server, &token, png.clone(), Some("image/png"), Some("p.png")).await;
        let id = mxc_path(&value);
        for path in [
            format!("/_matrix/media/v3/download/{id}"),
            format!("/_matrix/media/v3/download/{id}/other.png"),
            format!("/_matrix/media/v3/thumbnail/{id}?width=16&height=16&method=crop"),
        ] {
            let response = server.http().request(Method::GET, format!("{}{path}", server.url)).send().await.unwrap();
            if allowed {
                assert_eq!(response.status(), 200, "{path}");
                assert_eq!(header(response.headers(), "x-content-type-options"), "nosniff");
                assert!(!response.bytes().await.unwrap().is_empty());
            } else {
                let (status, value) = json_of(response).await;
                assert_eq!((status.as_u16(), errcode(&value)), (404, "M_NOT_FOUND"), "{path}");
            }
        }
        let (status, value) = json_of(get(&server, Some(&token), "/_matrix/media/v3/config").await).await;
        if allowed {
            assert_eq!((status.as_u16(), value["m.upload.size"].as_u64()), (200, Some(50 * 1024 * 1024)));
        } else {
            assert_eq!((status.as_u16(), errcode(&value)), (404, "M_NOT_FOUND"));
        }
        let response = get(&server, None, &format!("/_matrix/media/v3/download/{id}")).await;
        if allowed {
            assert_eq!(response.status(), 200);
            assert_eq!(response.bytes().await.unwrap().as_ref(), png.as_slice());
        } else {
            let (status, value) = json_of(response).await;
            assert_eq!((status.as_u16(), errcode(&value)), (404, "M_NOT_FOUND"), "legacy download when not allowed");
        }
    }
}

#[tokio::test]
async fn media_uploads_are_rate_limited_per_user() {
    let server = TestServer::start_with(&[
        ("rate_limits.enabled", true.into()),
        ("rate_limits.media_upload", toml::Value::Table(toml::from_str("per_second = 0.01\nburst = 2").unwrap())),
    ]);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    for _ in 0..2 {
        assert_eq!(upload(&server, &alice, "x", None, None).await.0, 200);
    }
    let (status, value) = upload(&server, &alice, "x", None, None).await;
    assert_eq!((status.as_u16(), errcode(&value)), (429, "M_LIMIT_EXCEEDED"));
    assert!(value["retry_after_ms"].as_u64().unwrap() > 0, "{value}");
    assert_eq!(upload(&server, &bob, "x", None, None).await.0, 200, "other users have their own bucket");
}

#[tokio::test]
async fn media_round_trip_with_matrix_sdk() {
    let server = TestServer::start();
    let client = server.register("carol", "pw-for-media").await;
    let png = image_bytes(ImageFormat::Png, 30, 30);
    let response = client.media().upload(&mime::IMAGE_PNG, png.clone(), None).await.unwrap();
    let request =
        MediaRequestParameters { source: MediaSource::Plain(response.content_uri), format: MediaFormat::File };
    let content = client.media().get_media_content(&request, false).await.unwrap();
    assert_eq!(content, png);
}

#[tokio::test]
async fn media_temporary_files_left_by_a_crash_are_removed_at_start() {
    let mut server = TestServer::start();
    let token = register(&server, "alice").await;
    let (_, value) = upload(&server, &token, "kept", Some("text/plain"), None).await;
    server.kill();
    let dir = media_dir(&server);
    std::fs::write(dir.join("tmp").join("interrupted.part"), b"half an upload").unwrap();
    server.restart();
    assert_eq!(temp_files(&dir), 0);
    let response = get(&server, Some(&token), &format!("/_matrix/client/v1/media/download/{}", mxc_path(&value))).await;
    assert_eq!(response.text().await.unwrap(), "kept", "finished uploads survive");
}

#[tokio::test]
async fn media_pending_reservations_are_capped_per_user() {
    let mut server = TestServer::start_with(&[("media.max_pending_uploads", 2.into())]);
    let alice = register(&server, "alice").await;
    let bob = register(&server, "bob").await;
    let create = |server: &TestServer, token: &str| {
        server.http().post(format!("{}/_matrix/media/v1/create", server.url)).bearer_auth(token).send()
    };
    let (status, first) = json_of(create(&server, &alice).await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(json_of(create(&server, &alice).await.unwrap()).await.0, 200);
    let (status, value) = json_of(create(&server, &alice).await.unwrap()).await;
    assert_eq!((status.as_u16(), errcode(&value)), (429, "M_LIMIT_EXCEEDED"));
    assert!(value["retry_after_ms"].as_u64().unwrap() > 0, "{value}");
    assert_eq!(json_of(create(&server, &bob).await.unwrap()).await.0, 200, "the cap is per user");

    // Uploading to a reservation frees its slot.
    let path = mxc_path(&first);
    let response = server
        .http()
        .put(format!("{}/_matrix/media/v3/upload/{path}", server.url))
        .bearer_auth(&alice)
        .body("contents")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(json_of(create(&server, &alice).await.unwrap()).await.0, 200);
    // Reservations are durable: still two pending after a restart.
    server.restart();
    let (status, value) = json_of(create(&server, &alice).await.unwrap()).await;
    assert_eq!((status.as_u16(), errcode(&value)), (429, "M_LIMIT_EXCEEDED"));
}
