//! Antivirus across servers (issue 39): media fetched over federation is scanned by the fetching
//! node's ClamAV before its users get it, and a scanning node serves no infected file to other
//! servers either. Each test starts a real clamd on the signatures in `federation-tests/clamav/`.

use hemicycle_federation_tests::{
    clamd::{Clamd, EICAR, TEST_PATTERN},
    enc, Node,
};
use serde_json::Value;

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
    let scanning = [("antivirus.clamd", toml::Value::from(clamd.address()))];
    // A scans nothing (a peer without antivirus); B scans what it fetches.
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
    assert_eq!(clamd.scans(), 3, "B scanned each fetched file once");
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
