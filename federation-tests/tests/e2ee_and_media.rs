//! End-to-end encryption and media across nodes: matrix-sdk clients on two nodes exchange
//! encrypted messages (keys queried and claimed through federation, room keys sent as to-device
//! messages), and a node serves another node's media to its users.

use hemicycle_federation_tests::{
    png_size,
    scenarios::{encrypted_chat, remote_media},
    Node,
};

async fn two_nodes() -> (Node, Node) {
    tokio::join!(Node::start("a", &[]), Node::start("b", &[]))
}

#[tokio::test]
async fn e2ee_across_nodes() {
    let (a, b) = two_nodes().await;
    encrypted_chat(&a, &b, "").await;
}

#[tokio::test]
async fn remote_media_download_and_thumbnail() {
    let (mut a, b) = two_nodes().await;
    let cached = remote_media(&a, &b, "").await;
    // The exact thumbnail B makes of A's 64×32 image: scaled into 32×32.
    let (_, bt) = b.register("carol").await;
    let thumb = cached[1].0.replace("/download/", "/thumbnail/") + "?width=32&height=32&method=scale";
    let (status, thumb_type, bytes) = b.get_bytes(&bt, &thumb).await;
    assert_eq!((status, thumb_type.as_str(), png_size(&bytes)), (200, "image/png", Some((32, 16))));
    // A gone: B still serves what it fetched, from its own cache under A's name.
    a.kill().await;
    for (path, bytes) in cached {
        let (status, _, got) = b.get_bytes(&bt, &path).await;
        assert_eq!((status, got), (200, bytes), "{path} served from B's cache while A is down");
    }
}
