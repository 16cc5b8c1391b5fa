//! Antivirus across servers (issue 39): media fetched over federation is scanned by the fetching
//! node's ClamAV before its users get it, end-to-end encrypted attachments of other servers too
//! (through the content scanner API), and a scanning node serves no infected file to other
//! servers either. Each test starts a real clamd on the signatures in `federation-tests/clamav/`.

use hemicycle_federation_tests::{
    clamd::{Clamd, EICAR, TEST_PATTERN},
    enc, Node,
};
use serde_json::{json, Value};

fn download_path(mxc: &str) -> String {
    let (server, media_id) = mxc.strip_prefix("mxc://").and_then(|p| p.split_once('/')).expect("an mxc URI");
    format!("/_matrix/client/v1/media/download/{}/{}", enc(server), enc(media_id))
}

fn errcode(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["errcode"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn remote_media_is_scanned_before_local_users_get_it() {
    let clamd = Clamd::start();
    let scanning = [
        ("antivirus.clamd", toml::Value::from(clamd.address())),
        ("antivirus.blocked_mimetypes", toml::Value::Array(vec!["application/pdf".into()])),
    ];
    // A scans nothing (a peer without antivirus); B scans what it fetches and takes no PDF.
    let (a, b) = tokio::join!(Node::start("a", &[]), Node::start_with("b", None, &[], &scanning));
    let (_, at) = a.register("alice").await;
    let (_, bt) = b.register("bob").await;
    let clean = b"an agenda, harmless\n".to_vec();
    let clean_mxc = a.upload(&at, clean.clone(), "text/plain", "agenda.txt").await;
    let mut pattern = b"header\n".repeat(1000);
    pattern.extend_from_slice(TEST_PATTERN);
    for (bytes, name) in [(EICAR.to_vec(), "eicar.com"), (pattern, "doc.txt")] {
        let mxc = a.upload(&at, bytes.clone(), "text/plain", name).await;
        let (status, _, got) = a.get_bytes(&at, &download_path(&mxc)).await;
        assert_eq!((status, got), (200, bytes), "A, which scans nothing, serves {name}");
        let (status, _, body) = b.get_bytes(&bt, &download_path(&mxc)).await;
        assert_eq!((status, errcode(&body).as_str()), (403, "MCS_MEDIA_NOT_CLEAN"), "B refuses {name} from A");
        let thumb = download_path(&mxc).replace("/download/", "/thumbnail/") + "?width=32&height=32";
        let (status, _, body) = b.get_bytes(&bt, &thumb).await;
        assert_eq!((status, errcode(&body).as_str()), (403, "MCS_MEDIA_NOT_CLEAN"), "no thumbnail of {name} either");
    }
    let (status, _, got) = b.get_bytes(&bt, &download_path(&clean_mxc)).await;
    assert_eq!((status, got), (200, clean), "B serves A's clean file");
    // A took a PDF, which B's policy refuses: judged on the bytes B fetched, whatever A declared.
    let pdf_mxc = a.upload(&at, b"%PDF-1.4\n%harmless\n".to_vec(), "text/plain", "notes.txt").await;
    let (status, _, body) = b.get_bytes(&bt, &download_path(&pdf_mxc)).await;
    assert_eq!((status, errcode(&body).as_str()), (403, "MCS_MIME_TYPE_FORBIDDEN"), "B refuses A's PDF");
    let info = serde_json::from_slice::<Value>(&body).unwrap()["info"].clone();
    assert_eq!(info, "File type: application/pdf not allowed");
    assert_eq!(clamd.scans(), 4, "B scanned each fetched file once");
}

#[tokio::test]
async fn a_scanning_node_serves_no_infected_file_to_other_servers() {
    let clamd = Clamd::start();
    let scanning = [("antivirus.clamd", toml::Value::from(clamd.address()))];
    let (a, b) = tokio::join!(Node::start_with("a", None, &[], &scanning), Node::start("b", &[]));
    let (_, at) = a.register("alice").await;
    let (_, bt) = b.register("bob").await;
    let mxc = a.upload(&at, EICAR.to_vec(), "text/plain", "eicar.com").await;
    let (status, _, body) = b.get_bytes(&bt, &download_path(&mxc)).await;
    assert_ne!(status, 200, "B got nothing from A's federation media endpoint");
    assert!(!body.windows(EICAR.len()).any(|w| w == EICAR), "not a byte of the file reached B's user");
}

/// A content scanner API request to `node`: (status, JSON body or `null`, raw bytes).
async fn scanner(node: &Node, token: &str, endpoint: &str, body: &Value) -> (u16, Value, Vec<u8>) {
    let url = format!("{}/_matrix/media_proxy/unstable/{endpoint}", node.client_url());
    let response = reqwest::Client::new().post(url).bearer_auth(token).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap().to_vec();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null), bytes)
}

#[tokio::test]
async fn encrypted_attachments_of_other_servers_are_decrypted_and_scanned() {
    use matrix_sdk::encryption::vodozemac::{base64_encode, pk_encryption::PkEncryption, Curve25519PublicKey};
    let clamd = Clamd::start();
    let scanning = [("antivirus.clamd", toml::Value::from(clamd.address()))];
    let (a, b) = tokio::join!(Node::start("a", &[]), Node::start_with("b", None, &[], &scanning));
    // Alice's client on A encrypts and uploads the attachments, as it does before sending them.
    let alice = a.client("alice").await;
    let (_, at) = a.register("anna").await;
    let (_, bt) = b.register("bob").await;
    let mut attachments = Vec::new();
    for plain in [EICAR, b"an encrypted agenda, harmless\n".as_slice()] {
        let file = alice.upload_encrypted_file(&mut std::io::Cursor::new(plain)).await.unwrap();
        let file = serde_json::to_value(file).unwrap();
        let (status, _, cipher) = a.get_bytes(&at, &download_path(file["url"].as_str().unwrap())).await;
        assert_eq!(status, 200, "A, which scans nothing, serves the ciphertext");
        attachments.push((json!({ "file": file }), cipher));
    }
    let [(infected, infected_cipher), (clean, clean_cipher)] = <[_; 2]>::try_from(attachments).unwrap();
    assert!(!infected_cipher.windows(EICAR.len()).any(|w| w == EICAR), "encrypted, the file hides its contents");

    // B has neither: it fetches each from A over federation, decrypts it and scans it.
    let (status, body, _) = scanner(&b, &bt, "scan_encrypted", &infected).await;
    assert_eq!((status, body), (200, json!({ "clean": false, "info": "***VIRUS DETECTED***" })));
    let (status, body, _) = scanner(&b, &bt, "download_encrypted", &infected).await;
    assert_eq!((status, body["reason"].as_str()), (403, Some("MCS_MEDIA_NOT_CLEAN")), "{body}");
    let (status, _, bytes) = scanner(&b, &bt, "download_encrypted", &clean).await;
    assert_eq!((status, bytes), (200, clean_cipher.clone()), "the clean attachment, still encrypted");

    // The same with the request encrypted to B's scanner key, as the state's clients send it.
    let (_, key) = b.call(reqwest::Method::GET, None, "/_matrix/media_proxy/unstable/public_key", None).await;
    let encryption =
        PkEncryption::from_key(Curve25519PublicKey::from_base64(key["public_key"].as_str().unwrap()).unwrap());
    let hidden = |body: &Value| {
        let message = encryption.encrypt(body.to_string().as_bytes()).unwrap();
        json!({ "encrypted_body": {
            "ciphertext": base64_encode(&message.ciphertext),
            "mac": base64_encode(&message.mac),
            "ephemeral": message.ephemeral_key.to_base64(),
        }})
    };
    let (status, body, _) = scanner(&b, &bt, "scan_encrypted", &hidden(&clean)).await;
    assert_eq!((status, body), (200, json!({ "clean": true, "info": "File is clean" })));
    let (status, body, _) = scanner(&b, &bt, "scan_encrypted", &hidden(&infected)).await;
    assert_eq!((status, body["clean"].clone()), (200, Value::Bool(false)), "{body}");

    // A key that does not open the file A holds: refused, nothing served.
    let mut wrong = clean.clone();
    wrong["file"]["hashes"]["sha256"] = infected["file"]["hashes"]["sha256"].clone();
    let (status, body, _) = scanner(&b, &bt, "download_encrypted", &wrong).await;
    assert_eq!((status, body["reason"].as_str()), (400, Some("MCS_MEDIA_FAILED_TO_DECRYPT")), "{body}");
    // Media A does not have: A's answer, passed on.
    let mut missing = clean.clone();
    missing["file"]["url"] = format!("mxc://{}/NoSuchMediaHere", a.server_name()).into();
    let (status, body, _) = scanner(&b, &bt, "scan_encrypted", &missing).await;
    assert_eq!((status, body["reason"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
}
