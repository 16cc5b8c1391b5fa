//! Antivirus (issue 39) against a real ClamAV daemon started by each test on the signatures
//! shipped in `federation-tests/clamav/`: infected files are never served on any media endpoint,
//! downloads wait for the verdict, verdicts survive restarts, clamd being down is the configured
//! choice, and the content scanner API answers as matrix-content-scanner.

#[path = "../../../federation-tests/src/clamd.rs"]
mod clamd;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use self::clamd::{Clamd, EICAR, TEST_HASH_FILE, TEST_PATTERN};
use crate::common::{register_raw, TestServer};

fn server_with(clamd: &Clamd, extra: &[(&str, toml::Value)]) -> TestServer {
    let mut overrides = vec![("antivirus.clamd", toml::Value::from(clamd.address()))];
    overrides.extend(extra.iter().cloned());
    TestServer::start_with(&overrides)
}

async fn upload(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let response = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload", server.url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "upload accepted before any scan");
    let body: Value = response.json().await.unwrap();
    body["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned()
}

/// (status, errcode or "", body bytes)
async fn fetch(server: &TestServer, token: Option<&str>, path: &str) -> (StatusCode, String, Vec<u8>) {
    let mut request = server.http().request(Method::GET, format!("{}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap().to_vec();
    let code = serde_json::from_slice::<Value>(&bytes)
        .ok()
        .and_then(|v| v["errcode"].as_str().map(str::to_owned))
        .unwrap_or_default();
    (status, code, bytes)
}

/// A PNG that decodes (thumbnails can be made of it) with `tail` after its end.
fn png_with(tail: &[u8]) -> Vec<u8> {
    let image = image::RgbaImage::from_pixel(64, 32, image::Rgba([10, 200, 30, 255]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgba8(image)
        .write_to(&mut std::io::Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes.extend_from_slice(tail);
    bytes
}

/// 1 MB of text with `needle` in the middle.
fn megabyte_with(needle: &[u8]) -> Vec<u8> {
    let mut bytes = b"lorem ipsum dolor sit amet\n".repeat(40_000);
    bytes.splice(500_000..500_000, needle.iter().copied());
    bytes
}

/// Every media path a client or the legacy API reads a file by.
fn download_paths(id: &str) -> Vec<String> {
    vec![
        format!("/_matrix/client/v1/media/download/{id}"),
        format!("/_matrix/client/v1/media/download/{id}/name.bin"),
        format!("/_matrix/media/v3/download/{id}"),
        format!("/_matrix/media/v3/download/{id}/name.bin"),
    ]
}

#[tokio::test]
async fn infected_files_are_never_served_and_clean_ones_are() {
    let clamd = Clamd::start();
    let server = server_with(&clamd, &[("media.legacy_unauthenticated", true.into())]);
    let (_, alice) = register_raw(&server, "alice").await;
    let (_, bob) = register_raw(&server, "bob").await;

    let clean = megabyte_with(b"nothing to see");
    let clean_id = upload(&server, &alice, clean.clone(), "text/plain").await;
    let infected = [
        (upload(&server, &alice, EICAR.to_vec(), "text/plain").await, "Eicar-Test-Signature"),
        (upload(&server, &alice, megabyte_with(TEST_PATTERN), "text/plain").await, "Hemicycle.Test.Pattern"),
        (upload(&server, &alice, TEST_HASH_FILE.to_vec(), "text/plain").await, "Hemicycle.Test.Hash"),
    ];
    // Downloaded at once, before any scan could be assumed done: the downloads wait for it.
    for (id, signature) in &infected {
        for path in download_paths(id) {
            let (status, code, body) = fetch(&server, Some(&bob), &path).await;
            assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"), "{path}");
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert!(body["error"].as_str().unwrap().contains(signature), "{path}: {body}");
            assert_eq!(body["reason"], "MCS_MEDIA_NOT_CLEAN", "the content scanner's key too: {body}");
        }
    }
    for path in download_paths(&clean_id) {
        let (status, _, body) = fetch(&server, Some(&bob), &path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert!(body == clean, "{path}: the clean file, whole");
    }

    // Thumbnails of an infected image are refused too; a clean image's are made.
    let bad_png = upload(&server, &alice, png_with(EICAR), "image/png").await;
    let good_png = upload(&server, &alice, png_with(b""), "image/png").await;
    for (id, expected) in [(&bad_png, StatusCode::FORBIDDEN), (&good_png, StatusCode::OK)] {
        for path in [
            format!("/_matrix/client/v1/media/thumbnail/{id}?width=32&height=32&method=scale"),
            format!("/_matrix/media/v3/thumbnail/{id}?width=32&height=32&method=crop"),
        ] {
            let (status, code, _) = fetch(&server, Some(&alice), &path).await;
            assert_eq!(status, expected, "{path} {code}");
        }
    }
}

#[tokio::test]
async fn clamd_down_refuses_by_default_and_the_verdict_comes_once_it_is_back() {
    let mut clamd = Clamd::start();
    let server = server_with(&clamd, &[]);
    let (_, alice) = register_raw(&server, "alice").await;
    clamd.stop();
    let clean = b"a report, harmless".to_vec();
    let clean_id = upload(&server, &alice, clean.clone(), "text/plain").await;
    let bad_id = upload(&server, &alice, EICAR.to_vec(), "text/plain").await;
    for id in [&clean_id, &bad_id] {
        let (status, code, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
        assert_eq!((status, code.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "MCS_SCANNER_UNAVAILABLE"), "{id}");
    }
    // Nothing was recorded while clamd was away: the next download scans.
    clamd.restart();
    let (status, _, body) =
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{clean_id}")).await;
    assert_eq!((status, body), (StatusCode::OK, clean));
    let (status, code, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{bad_id}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"));
}

#[tokio::test]
async fn clamd_down_serves_unscanned_files_when_configured_so() {
    let mut clamd = Clamd::start();
    let server = server_with(&clamd, &[("antivirus.when_unavailable", "serve".into())]);
    let (_, alice) = register_raw(&server, "alice").await;
    clamd.stop();
    let id = upload(&server, &alice, EICAR.to_vec(), "text/plain").await;
    let (status, _, body) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, EICAR), "served unscanned, as configured");
    clamd.restart();
    let (status, code, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"), "scanned once clamd is back");
}

#[tokio::test]
async fn verdicts_are_kept_across_restarts_and_each_file_is_scanned_once() {
    let mut clamd = Clamd::start();
    let mut server = server_with(&clamd, &[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let clean = b"minutes of the meeting".to_vec();
    let clean_id = upload(&server, &alice, clean.clone(), "text/plain").await;
    let bad_id = upload(&server, &alice, EICAR.to_vec(), "text/plain").await;
    // The same contents again, under other ids: no new scan.
    let clean_again = upload(&server, &alice, clean.clone(), "text/plain").await;
    for _ in 0..3 {
        for id in [&clean_id, &clean_again] {
            let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
            assert_eq!(status, StatusCode::OK);
        }
        let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{bad_id}")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    assert_eq!(clamd.scans(), 2, "one scan per distinct file");
    // clamd gone for good and the server restarted: the recorded verdicts still decide.
    clamd.stop();
    server.restart();
    let (status, _, body) =
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{clean_id}")).await;
    assert_eq!((status, body), (StatusCode::OK, clean));
    let (status, code, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{bad_id}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"));
}
