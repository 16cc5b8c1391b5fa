//! URL previews (`/media/preview_url`): off by default, never reaching a denied address (nor
//! through a redirect), and Open Graph data with the image stored as local media when the
//! page's range is opened — against pages this test serves on loopback.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use axum::{
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use reqwest::Method;
use serde_json::Value;

use crate::common::{api, urlencode, TestServer};

/// A tiny site: an Open Graph page, a page with only a `<title>`, an image, redirects (one to a
/// denied address) and a page too large to preview. Counts the requests it gets.
async fn site() -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let mut png = Vec::new();
    image::RgbImage::from_pixel(40, 30, image::Rgb([200, 10, 10]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let counter = hits.clone();
    let app = Router::new()
        .route(
            "/page",
            get(|| async {
                let html = r#"<!doctype html><html><head>
                    <meta charset="utf-8"><title>Ignored title</title>
                    <meta property="og:title" content="Conseil des ministres &amp; compte rendu">
                    <meta property='og:description' content="L'ordre du jour de mercredi">
                    <meta property="og:image" content="/image.png">
                    <script>alert(1)</script></head><body>Texte</body></html>"#;
                ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html)
            }),
        )
        .route(
            "/plain",
            get(|| async {
                let html = "<html><head><TITLE>Annuaire des services</TITLE>\
                            <meta name=\"description\" content=\"Qui fait quoi\"></head></html>";
                ([(header::CONTENT_TYPE, "text/html")], html)
            }),
        )
        .route("/image.png", get(move || async move { ([(header::CONTENT_TYPE, "image/png")], png) }))
        .route("/moved", get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/plain")]).into_response() }))
        .route(
            "/inside",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "http://10.1.2.3/admin")]).into_response() }),
        )
        .route("/huge", get(|| async { ([(header::CONTENT_TYPE, "text/html")], vec![b'a'; 200_000]) }))
        .layer(axum::middleware::from_fn(move |request, next: axum::middleware::Next| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                next.run(request).await
            }
        }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

async fn preview(server: &TestServer, token: &str, url: &str) -> (u16, Value) {
    let path = format!("/_matrix/client/v1/media/preview_url?url={}", urlencode(url));
    api(server, Method::GET, Some(token), &path, None).await
}

#[tokio::test]
async fn previews_are_off_by_default_and_denied_ranges_are_never_reached() {
    let (base, hits) = site().await;
    let off = TestServer::start();
    let (_, token) = crate::common::register_raw(&off, "alice").await;
    let (status, body) = preview(&off, &token, &format!("{base}/page")).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    // On, with the default deny list: loopback is refused before any connection.
    let on = TestServer::start_with(&[("media.url_preview.enabled", true.into())]);
    let (_, token) = crate::common::register_raw(&on, "alice").await;
    let (status, body) = preview(&on, &token, &format!("{base}/page")).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "the denied site was never contacted");
    let (status, _) = preview(&on, &token, "http://[::1]:9/").await;
    assert_eq!(status, 403);
    let (status, _) = preview(&on, &token, "http://169.254.169.254/latest/meta-data/").await;
    assert_eq!(status, 403, "cloud metadata addresses are denied");
    let (status, _) = api(&on, Method::GET, None, "/_matrix/client/v1/media/preview_url?url=http://x", None).await;
    assert_eq!(status, 401, "previews need an account");
}

#[tokio::test]
async fn previews_read_open_graph_and_store_the_image() {
    let (base, hits) = site().await;
    let server = TestServer::start_with(&[
        ("media.url_preview.enabled", true.into()),
        ("media.url_preview.allow_ranges", toml::Value::Array(vec!["127.0.0.1/32".into()])),
        ("media.url_preview.max_size", 100_000.into()),
    ]);
    let (_, token) = crate::common::register_raw(&server, "alice").await;

    let (status, og) = preview(&server, &token, &format!("{base}/page")).await;
    assert_eq!(status, 200, "{og}");
    assert_eq!(og["og:title"], "Conseil des ministres & compte rendu");
    assert_eq!(og["og:description"], "L'ordre du jour de mercredi");
    assert_eq!((og["og:image:width"].as_u64(), og["og:image:height"].as_u64()), (Some(40), Some(30)), "{og}");
    assert_eq!(og["og:image:type"], "image/png");
    let mxc = og["og:image"].as_str().expect("image stored as media");
    let media = mxc.strip_prefix("mxc://").unwrap();
    let download = server
        .http()
        .get(format!("{}/_matrix/client/v1/media/download/{media}", server.url))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(download.status(), 200);
    let bytes = download.bytes().await.unwrap();
    assert_eq!(og["matrix:image:size"].as_u64(), Some(bytes.len() as u64));
    assert!(image::load_from_memory(&bytes).is_ok(), "the stored image is the page's image");

    // Served again from the cache, without fetching.
    let before = hits.load(Ordering::SeqCst);
    let (_, again) = preview(&server, &token, &format!("{base}/page")).await;
    assert_eq!(again, og);
    assert_eq!(hits.load(Ordering::SeqCst), before);

    // The title and description of a page without Open Graph, and through a redirect; the
    // deprecated path answers the same.
    let (status, plain) = preview(&server, &token, &format!("{base}/moved")).await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["og:title"], "Annuaire des services");
    assert_eq!(plain["og:description"], "Qui fait quoi");
    let legacy = format!("/_matrix/media/v3/preview_url?url={}", urlencode(&format!("{base}/plain")));
    let (status, legacy) = api(&server, Method::GET, Some(&token), &legacy, None).await;
    assert_eq!((status, &legacy["og:title"]), (200, &plain["og:title"]), "{legacy}");

    // A redirect into a denied range is refused; so are other schemes, bad URLs, huge pages.
    let (status, body) = preview(&server, &token, &format!("{base}/inside")).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    let (status, body) = preview(&server, &token, "ftp://127.0.0.1/file").await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_INVALID_PARAM")), "{body}");
    let (status, _) = preview(&server, &token, "not a url").await;
    assert_eq!(status, 400);
    let (status, body) = preview(&server, &token, &format!("{base}/huge")).await;
    assert_eq!((status, body["errcode"].as_str()), (413, Some("M_TOO_LARGE")), "{body}");
}
