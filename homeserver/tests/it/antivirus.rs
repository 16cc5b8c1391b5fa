//! Antivirus (issue 39) against a real ClamAV daemon started by each test on the signatures
//! shipped in `federation-tests/clamav/`: infected files are never served on any media endpoint,
//! downloads wait for the verdict, verdicts survive restarts, clamd being down is the configured
//! choice, and the content scanner API answers as matrix-content-scanner.

#[path = "../../../federation-tests/src/clamd.rs"]
mod clamd;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use self::clamd::{Clamd, EICAR, LATER_PATTERN, TEST_HASH_FILE, TEST_PATTERN};
use crate::common::{register_raw, write_config, TestServer};

fn server_with(clamd: &Clamd, extra: &[(&str, toml::Value)]) -> TestServer {
    let mut overrides = vec![("antivirus.clamd", toml::Value::from(clamd.address()))];
    overrides.extend(extra.iter().cloned());
    TestServer::start_with(&overrides)
}

/// `POST /media/v3/upload`: (status, JSON body).
async fn try_upload(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str) -> (StatusCode, Value) {
    let response = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload", server.url))
        .bearer_auth(token)
        .header("content-type", content_type)
        .body(bytes)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or_default())
}

/// Uploads; the `server/media_id` of the new media.
async fn upload(server: &TestServer, token: &str, bytes: Vec<u8>, content_type: &str) -> String {
    let (status, body) = try_upload(server, token, bytes, content_type).await;
    assert_eq!(status, 200, "upload accepted before any scan: {body}");
    body["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned()
}

/// Reserves a media id (`POST /media/v1/create`), then uploads to it: (`server/media_id`,
/// status, JSON body of the upload).
async fn upload_reserved(server: &TestServer, token: &str, bytes: Vec<u8>) -> (String, StatusCode, Value) {
    let created = server.http().post(format!("{}/_matrix/media/v1/create", server.url)).bearer_auth(token);
    let created: Value = created.send().await.unwrap().json().await.unwrap();
    let id = created["content_uri"].as_str().unwrap().strip_prefix("mxc://").unwrap().to_owned();
    let (status, body) = put_reserved(server, token, &id, bytes).await;
    (id, status, body)
}

async fn put_reserved(server: &TestServer, token: &str, id: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let response = server
        .http()
        .put(format!("{}/_matrix/media/v3/upload/{id}", server.url))
        .bearer_auth(token)
        .header("content-type", "application/octet-stream")
        .body(bytes)
        .send()
        .await
        .unwrap();
    (response.status(), response.json().await.unwrap_or_default())
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

/// The spec's encryption of an attachment, as a client does it: (ciphertext, `file` object
/// without its `url`).
fn encrypt_attachment(plain: &[u8]) -> (Vec<u8>, Value) {
    use std::io::Read;
    let mut reader = std::io::Cursor::new(plain.to_vec());
    let mut encryptor = matrix_sdk_crypto::AttachmentEncryptor::new(&mut reader);
    let mut ciphertext = Vec::new();
    encryptor.read_to_end(&mut ciphertext).unwrap();
    (ciphertext, serde_json::to_value(encryptor.finish()).unwrap())
}

/// `{"encrypted_body": …}` carrying `body` encrypted to the scanner's `public_key`, as clients
/// make it with vodozemac's (olm's) PK encryption.
fn encrypted_body(public_key: &str, body: &Value) -> Value {
    use matrix_sdk_crypto::vodozemac::{base64_encode, pk_encryption::PkEncryption, Curve25519PublicKey};
    let encryptor = PkEncryption::from_key(Curve25519PublicKey::from_base64(public_key).unwrap());
    let message = encryptor.encrypt(body.to_string().as_bytes()).unwrap();
    serde_json::json!({ "encrypted_body": {
        "ciphertext": base64_encode(&message.ciphertext),
        "mac": base64_encode(&message.mac),
        "ephemeral": message.ephemeral_key.to_base64(),
    }})
}

const MCS: &str = "/_matrix/media_proxy/unstable";

/// A call to the content scanner API: (status, JSON body or `null`, raw bytes).
async fn mcs(
    server: &TestServer,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value, Vec<u8>) {
    let mut request = server.http().request(method, format!("{}{MCS}{path}", server.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap().to_vec();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), bytes)
}

fn reason(body: &Value) -> &str {
    body["reason"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn the_content_scanner_api_answers_as_matrix_content_scanner() {
    let clamd = Clamd::start();
    let mut server = server_with(&clamd, &[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let (_, bob) = register_raw(&server, "bob").await;
    let clean = b"the budget, in clear".to_vec();
    let clean_id = upload(&server, &alice, clean.clone(), "text/plain").await;
    let bad_id = upload(&server, &alice, EICAR.to_vec(), "text/plain").await;
    let bad_png = upload(&server, &alice, png_with(TEST_PATTERN), "image/png").await;
    let good_png = upload(&server, &alice, png_with(b""), "image/png").await;

    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, &format!("/scan/{clean_id}"), None).await;
    assert_eq!((status, body), (200, serde_json::json!({ "clean": true, "info": "File is clean" })));
    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, &format!("/scan/{bad_id}"), None).await;
    assert_eq!((status, body), (200, serde_json::json!({ "clean": false, "info": "***VIRUS DETECTED***" })));
    let (status, _, bytes) = mcs(&server, Some(&bob), Method::GET, &format!("/download/{clean_id}"), None).await;
    assert_eq!((status, bytes), (200, clean.clone()));
    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, &format!("/download/{bad_id}"), None).await;
    assert_eq!((status, reason(&body)), (403, "MCS_MEDIA_NOT_CLEAN"), "{body}");
    assert_eq!(body["info"], "***VIRUS DETECTED***", "the reference scanner's words: {body}");
    assert!(body["error"].as_str().unwrap().contains("Eicar-Test-Signature"), "and the signature: {body}");
    let thumb = "?width=32&height=32&method=scale";
    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, &format!("/thumbnail/{bad_png}{thumb}"), None).await;
    assert_eq!((status, reason(&body)), (403, "MCS_MEDIA_NOT_CLEAN"), "{body}");
    let (status, _, bytes) =
        mcs(&server, Some(&bob), Method::GET, &format!("/thumbnail/{good_png}{thumb}"), None).await;
    assert_eq!(status, 200);
    assert!(bytes.starts_with(b"\x89PNG") || bytes.starts_with(b"\xff\xd8"), "an image");
    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, "/scan/localhost/nosuchmedia", None).await;
    assert_eq!((status, reason(&body)), (404, "M_NOT_FOUND"), "{body}");
    // A server that cannot be reached (nothing listens on the port): the scanner's "request failed".
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (status, body, _) = mcs(&server, Some(&bob), Method::GET, &format!("/scan/127.0.0.1:{port}/abc"), None).await;
    assert_eq!((status, reason(&body)), (502, "MCS_MEDIA_REQUEST_FAILED"), "{body}");

    // The verdicts are known now; still nobody without a valid token learns them or gets a byte.
    for path in [format!("/scan/{clean_id}"), format!("/download/{clean_id}"), format!("/thumbnail/{good_png}{thumb}")]
    {
        let (status, body, _) = mcs(&server, None, Method::GET, &path, None).await;
        assert_eq!((status, reason(&body)), (401, "M_MISSING_TOKEN"), "{path}: {body}");
        let (status, body, _) = mcs(&server, Some("not-a-token"), Method::GET, &path, None).await;
        assert_eq!((status, reason(&body)), (401, "M_UNKNOWN_TOKEN"), "{path}: {body}");
    }

    // Encrypted attachments: judged on their decrypted bytes, served still encrypted.
    let (bad_cipher, bad_file) = encrypt_attachment(EICAR);
    let (good_cipher, good_file) = encrypt_attachment(b"an encrypted note, harmless");
    let mut files = Vec::new();
    for (cipher, mut file) in [(bad_cipher.clone(), bad_file), (good_cipher.clone(), good_file)] {
        let id = upload(&server, &alice, cipher, "application/octet-stream").await;
        file["url"] = format!("mxc://{id}").into();
        files.push(serde_json::json!({ "file": file }));
    }
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&files[0])).await;
    assert_eq!((status, body), (200, serde_json::json!({ "clean": false, "info": "***VIRUS DETECTED***" })));
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/download_encrypted", Some(&files[0])).await;
    assert_eq!((status, reason(&body)), (403, "MCS_MEDIA_NOT_CLEAN"), "{body}");
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&files[1])).await;
    assert_eq!((status, body), (200, serde_json::json!({ "clean": true, "info": "File is clean" })));
    let (status, _, bytes) = mcs(&server, Some(&bob), Method::POST, "/download_encrypted", Some(&files[1])).await;
    assert_eq!((status, bytes), (200, good_cipher.clone()), "the attachment as stored, encrypted");

    // The same requests with the body encrypted to the scanner's key.
    let (status, key, _) = mcs(&server, None, Method::GET, "/public_key", None).await;
    assert_eq!(status, 200, "the public key needs no token");
    let public_key = key["public_key"].as_str().unwrap().to_owned();
    let hidden = encrypted_body(&public_key, &files[0]);
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&hidden)).await;
    assert_eq!((status, body["clean"].clone()), (200, Value::Bool(false)), "{body}");
    let hidden = encrypted_body(&public_key, &files[1]);
    let (status, _, bytes) = mcs(&server, Some(&bob), Method::POST, "/download_encrypted", Some(&hidden)).await;
    assert_eq!((status, bytes), (200, good_cipher));

    // What the reference refuses, refused with its codes.
    let (status, body, _) = mcs(&server, None, Method::POST, "/scan_encrypted", Some(&files[1])).await;
    assert_eq!((status, reason(&body)), (401, "M_MISSING_TOKEN"));
    let mut tampered = encrypted_body(&public_key, &files[1]);
    tampered["encrypted_body"]["mac"] = "AAAAAAAAAAA".into();
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&tampered)).await;
    assert_eq!((status, reason(&body)), (403, "MCS_BAD_DECRYPTION"), "{body}");
    let mut old_version = files[1].clone();
    old_version["file"]["v"] = "v1".into();
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&old_version)).await;
    assert_eq!((status, reason(&body)), (400, "MCS_MALFORMED_JSON"), "{body}");
    let mut wrong_hash = files[1].clone();
    wrong_hash["file"]["hashes"]["sha256"] = "ANdt819a8bZl4jKy3Z+jcqtiNICa2y0AW4BBJ/iQRAU".into();
    let (status, body, _) = mcs(&server, Some(&bob), Method::POST, "/scan_encrypted", Some(&wrong_hash)).await;
    assert_eq!((status, reason(&body)), (400, "MCS_MEDIA_FAILED_TO_DECRYPT"), "{body}");

    // The key survives a restart: clients' cached key stays good.
    server.restart();
    let (_, key, _) = mcs(&server, None, Method::GET, "/public_key", None).await;
    assert_eq!(key["public_key"].as_str(), Some(public_key.as_str()));
}

/// `root`, a server admin made with the CLI; its access token.
async fn admin_token(server: &TestServer) -> String {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "root-pw").unwrap();
    let out =
        server.cli(&["user", "create", "root", "--admin", "--password-file", dir.path().join("pw").to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let body = serde_json::json!({ "type": "m.login.password", "identifier": { "type": "m.id.user", "user": "root" }, "password": "root-pw" });
    let response =
        server.http().post(format!("{}/_matrix/client/v3/login", server.url)).json(&body).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn admins_see_quarantined_files_and_the_type_and_size_policy_holds() {
    let clamd = Clamd::start();
    let blocked = toml::Value::Array(vec!["application/pdf".into(), "application/x-dosexec".into()]);
    let server =
        server_with(&clamd, &[("antivirus.blocked_mimetypes", blocked), ("antivirus.max_scan_size", 1_000_000.into())]);
    let root = admin_token(&server).await;
    let (alice_id, alice) = register_raw(&server, "alice").await;

    // Types come from the bytes, not from what the uploader declared; a forbidden type is refused
    // to its uploader at once, with the content scanner's words, and nothing is stored.
    let pdf = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n".to_vec();
    for (bytes, declared, sniffed) in [
        (pdf.clone(), "text/plain", "application/pdf"),
        (b"MZ\x90\0\x03\0\0\0".to_vec(), "image/png", "application/x-dosexec"),
    ] {
        let (status, body) = try_upload(&server, &alice, bytes.clone(), declared).await;
        assert_eq!((status, reason(&body)), (StatusCode::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"), "{sniffed}: {body}");
        assert_eq!(body["info"], format!("File type: {sniffed} not allowed"));
        assert_eq!(body["errcode"], "MCS_MIME_TYPE_FORBIDDEN", "Matrix clients read it too");
        let (id, status, body) = upload_reserved(&server, &alice, bytes).await;
        assert_eq!((status, reason(&body)), (StatusCode::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"), "{sniffed}: {body}");
        // The reserved id still waits for its upload.
        let (status, body) = put_reserved(&server, &alice, &id, b"the agenda instead".to_vec()).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // An encrypted PDF: its ciphertext is no PDF, its decrypted bytes are.
    let (cipher, mut file) = encrypt_attachment(&pdf);
    let id = upload(&server, &alice, cipher, "application/octet-stream").await;
    file["url"] = format!("mxc://{id}").into();
    let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
    assert_eq!(status, StatusCode::OK, "the ciphertext itself is of no forbidden type");
    let body = serde_json::json!({ "file": file });
    let (status, answer, _) = mcs(&server, Some(&alice), Method::POST, "/scan_encrypted", Some(&body)).await;
    assert_eq!((status, reason(&answer)), (403, "MCS_MIME_TYPE_FORBIDDEN"), "{answer}");

    // Over max_scan_size: refused at upload, announced by /media/config.
    let response = server
        .http()
        .post(format!("{}/_matrix/media/v3/upload", server.url))
        .bearer_auth(&alice)
        .body(vec![b'a'; 1_000_001])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let (_, _, config) = fetch(&server, Some(&alice), "/_matrix/client/v1/media/config").await;
    let config: Value = serde_json::from_slice(&config).unwrap_or_default();
    assert_eq!(config["m.upload.size"], 1_000_000, "{config}");

    // Quarantined files, listed for admins only, with the signature that matched.
    let bad = upload(&server, &alice, megabyte_with(TEST_PATTERN)[..900_000].to_vec(), "text/plain").await;
    let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{bad}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, code, _) = fetch(&server, Some(&alice), "/_synapse/admin/v1/antivirus").await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "M_FORBIDDEN"));
    let (status, _, report) = fetch(&server, Some(&root), "/_synapse/admin/v1/antivirus").await;
    assert_eq!(status, StatusCode::OK);
    let report: Value = serde_json::from_slice(&report).unwrap();
    assert_eq!(report["clamd"], clamd.address());
    assert_eq!(report["when_unavailable"], "refuse");
    assert_eq!(report["signatures"], clamd.version(), "the signatures clamd runs");
    assert_eq!(report["total"], 1, "{report}");
    let entry = &report["quarantined"][0];
    assert_eq!(entry["mxc"], format!("mxc://{bad}"));
    assert_eq!(entry["signature"], "Hemicycle.Test.Pattern.UNOFFICIAL");
    assert_eq!(entry["uploader"], alice_id.as_str());
    assert_eq!(entry["media_length"], 900_000);
}

#[tokio::test]
async fn a_policy_change_applies_to_files_stored_before_it() {
    let clamd = Clamd::start();
    let mut server = server_with(&clamd, &[]);
    let (_, alice) = register_raw(&server, "alice").await;
    let png = upload(&server, &alice, png_with(b""), "image/png").await;
    let text = upload(&server, &alice, b"minutes, in plain text".to_vec(), "text/plain").await;
    let (cipher, mut file) = encrypt_attachment(b"an encrypted memo, in plain text");
    let encrypted = upload(&server, &alice, cipher.clone(), "application/octet-stream").await;
    file["url"] = format!("mxc://{encrypted}").into();
    for id in [&png, &text, &encrypted] {
        let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
        assert_eq!(status, StatusCode::OK, "no policy yet: {id}");
    }

    // Only text from now on.
    let allowed = toml::Value::Array(vec!["text/plain".into()]);
    write_config(
        server.config_path.parent().unwrap(),
        &[("antivirus.clamd", clamd.address().into()), ("antivirus.allowed_mimetypes", allowed)],
    );
    server.restart();
    let (status, code, body) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{png}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["info"], "File type: image/png not allowed");
    let (status, body, _) = mcs(&server, Some(&alice), Method::GET, &format!("/download/{png}"), None).await;
    assert_eq!((status, reason(&body)), (403, "MCS_MIME_TYPE_FORBIDDEN"), "{body}");
    let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{text}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = try_upload(&server, &alice, png_with(b""), "image/png").await;
    assert_eq!((status, reason(&body)), (StatusCode::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"), "{body}");

    // An encrypted attachment is bytes of no known type: taken at upload, refused as such to a
    // plain download, judged on its decrypted bytes through the content scanner API.
    let (another_cipher, _) = encrypt_attachment(b"another memo");
    let (status, body) = try_upload(&server, &alice, another_cipher, "application/octet-stream").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, code, _) =
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{encrypted}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MIME_TYPE_FORBIDDEN"));
    let body = serde_json::json!({ "file": file });
    let (status, answer, _) = mcs(&server, Some(&alice), Method::POST, "/scan_encrypted", Some(&body)).await;
    assert_eq!((status, answer), (200, serde_json::json!({ "clean": true, "info": "File is clean" })));
    let (status, _, bytes) = mcs(&server, Some(&alice), Method::POST, "/download_encrypted", Some(&body)).await;
    assert_eq!((status, bytes), (200, cipher));
}

#[tokio::test]
async fn a_signature_update_has_files_scanned_again() {
    let mut clamd = Clamd::start();
    let server = server_with(&clamd, &[("antivirus.signature_check_interval_ms", 0.into())]);
    let (_, alice) = register_raw(&server, "alice").await;
    let later = upload(&server, &alice, megabyte_with(LATER_PATTERN), "text/plain").await;
    let clean = b"a memo no signature will ever match".to_vec();
    let clean_id = upload(&server, &alice, clean.clone(), "text/plain").await;
    for id in [&later, &clean_id] {
        let (status, _, _) = fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
        assert_eq!(status, StatusCode::OK, "clean under today's signatures: {id}");
    }
    let (_, body, _) = mcs(&server, Some(&alice), Method::GET, &format!("/scan/{later}"), None).await;
    assert_eq!(body["clean"], true, "{body}");
    assert_eq!(clamd.scans(), 2);

    // An update that knows the pattern: the verdicts made before it are made again.
    clamd.update_signatures(&[("Hemicycle.Test.Update", LATER_PATTERN)]);
    let (status, code, body) =
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{later}")).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"));
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert!(body["error"].as_str().unwrap().contains("Hemicycle.Test.Update"), "{body}");
    let (_, body, _) = mcs(&server, Some(&alice), Method::GET, &format!("/scan/{later}"), None).await;
    assert_eq!(body, serde_json::json!({ "clean": false, "info": "***VIRUS DETECTED***" }));
    let thumb = format!("/_matrix/client/v1/media/thumbnail/{later}?width=32&height=32");
    let (status, code, _) = fetch(&server, Some(&alice), &thumb).await;
    assert_eq!((status, code.as_str()), (StatusCode::FORBIDDEN, "MCS_MEDIA_NOT_CLEAN"));
    let (status, _, bytes) =
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{clean_id}")).await;
    assert_eq!((status, bytes), (StatusCode::OK, clean));
    // Once per file and update: the new verdicts stand.
    assert_eq!(clamd.scans(), 4, "each file scanned once more");
    for id in [&later, &clean_id] {
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
    }
    assert_eq!(clamd.scans(), 4, "and not again under the same signatures");
}

#[tokio::test]
async fn the_console_shows_clamd_and_the_quarantine() {
    use crate::console::{csrf, get, post, sign_in};
    let mut clamd = Clamd::start();
    let server = server_with(&clamd, &[]);
    admin_token(&server).await;
    let (alice_id, alice) = register_raw(&server, "alice").await;
    let bad = upload(&server, &alice, EICAR.to_vec(), "text/plain").await;
    let good = upload(&server, &alice, b"nothing wrong here".to_vec(), "text/plain").await;
    for id in [&bad, &good] {
        fetch(&server, Some(&alice), &format!("/_matrix/client/v1/media/download/{id}")).await;
    }

    let (_, cookie) = sign_in(&server, "root", "root-pw").await;
    let page = get(&server, Some(&cookie), "/antivirus").await;
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for shown in [
        clamd.address().as_str(),
        "answering",
        "downloads are refused",
        clamd.version().as_str(),
        &format!("mxc://{bad}"),
        "Eicar-Test-Signature.UNOFFICIAL",
        &alice_id,
    ] {
        assert!(html.contains(shown), "{shown} on the page: {html}");
    }
    assert!(!html.contains(&good), "only infected files are listed");
    // Without an admin's session, nothing is shown.
    let anonymous = get(&server, None, "/antivirus").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);

    // The probe asks clamd now, and says what it answered.
    let token = csrf(&server, &cookie, "/antivirus").await;
    for (running, expected) in [(true, "clamd answers: ClamAV"), (false, "clamd does not answer")] {
        if !running {
            clamd.stop();
        }
        let probed = post(&server, Some(&cookie), "/antivirus/probe", &[("csrf", &token)]).await;
        assert_eq!(probed.status(), StatusCode::SEE_OTHER);
        let location = probed.headers()["location"].to_str().unwrap().replacen("/_hemicycle/console", "", 1);
        let html = get(&server, Some(&cookie), &location).await.text().await.unwrap();
        assert!(html.contains(expected), "{expected}: {html}");
    }
    let html = get(&server, Some(&cookie), "/antivirus").await.text().await.unwrap();
    assert!(html.contains("unreachable since"), "{html}");
    let refused = post(&server, Some(&cookie), "/antivirus/probe", &[("csrf", "forged")]).await;
    assert_ne!(refused.status(), StatusCode::SEE_OTHER, "no probe without the session's CSRF token");
}
