//! Media of other servers: fetched once through `/_matrix/federation/v1/media/download` (X-Matrix
//! signed, multipart answer; a `Location` part is followed), then cached by the media service
//! under the origin's name, so every later download and every thumbnail is served locally.
//! Our own media is served to other servers by `api::federation::media_download|thumbnail`.

use std::{sync::Arc, time::Duration};

use ruma::{
    api::federation::authenticated_media::{get_content, FileOrLocation},
    OwnedServerName, ServerName,
};

use crate::{
    error::{Error, Result},
    services::Services,
};

/// The longest a remote server gets to start sending a file we wait for.
const REMOTE_WAIT: Duration = Duration::from_secs(20);
/// Time for the transfer itself, on top of the wait.
const TRANSFER_TIME: Duration = Duration::from_secs(60);

/// One fetch at a time per remote media: concurrent downloads of a file not cached yet wait for
/// the first fetch instead of each asking the origin.
#[derive(Default)]
pub struct Fetches {
    running: std::sync::Mutex<std::collections::HashMap<MediaName, Arc<tokio::sync::Mutex<()>>>>,
}

/// A media's origin server and media id.
type MediaName = (OwnedServerName, String);

impl Fetches {
    fn slot(&self, server: &ServerName, media_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut running = self.running.lock().expect("media fetches");
        // Entries nobody holds any more are dropped as new ones come.
        running.retain(|_, slot| Arc::strong_count(slot) > 1);
        running.entry((server.to_owned(), media_id.to_owned())).or_default().clone()
    }
}

/// Makes sure media named `mxc://{server}/{media_id}` is stored here: ours already is; another
/// server's is fetched from it when not cached yet. Unknown remote media is `M_NOT_FOUND`, an
/// unreachable origin 502, media over `media.max_upload_size` `M_TOO_LARGE`.
pub async fn ensure_cached(services: &Services, server: &ServerName, media_id: &str, wait: Duration) -> Result<()> {
    let fed = &services.federation;
    if server == fed.server_name() || services.media.is_cached(server, media_id)? {
        return Ok(());
    }
    fed.require_allowed(server)?;
    let slot = fed.media_fetches.slot(server, media_id);
    let _running = slot.lock().await;
    if services.media.is_cached(server, media_id)? {
        return Ok(());
    }
    let wait = wait.min(REMOTE_WAIT);
    let mut request = get_content::v1::Request::new(media_id.to_owned());
    request.timeout_ms = wait;
    let response = fed.send_with_timeout(server, request, wait + TRANSFER_TIME).await?;
    let (bytes, content_type, filename) = match response.content {
        FileOrLocation::File(content) => {
            (content.file, content.content_type, content.content_disposition.and_then(|d| d.filename))
        }
        FileOrLocation::Location(url) => {
            let (bytes, content_type) = fed.client.get_location(&url, TRANSFER_TIME).await?;
            (bytes, content_type, None)
        }
        _ => {
            return Err(Error::RemoteUnreachable(format!("{server} answered media in a form this server cannot read")))
        }
    };
    let limit = services.media.max_upload_size();
    if bytes.len() as u64 > limit {
        return Err(Error::TooLarge(format!("{server}'s media is over this server's {limit}-byte limit")));
    }
    services.media.store_remote(server, media_id, &bytes, content_type, filename).await
}
