//! The media repository: uploads, reserved media ids (create-then-upload), downloads and cached
//! thumbnails.
//!
//! Contents live in the content-addressed [`storage::FileStore`]; what a media id means lives in
//! RocksDB (`mediaid_meta`), keyed by (origin server, media id) so that remote media cached later
//! (federation) sits beside local media. A stored file is referenced by every media id and
//! thumbnail with its contents; `sha256_refcount` counts them for the day files are deleted.

pub mod admin;
pub mod antivirus;
pub mod antivirus_clamd;
pub mod antivirus_crypto;
pub mod antivirus_mime;
pub mod preview;
pub mod storage;
pub mod tables;
pub mod thumbnail;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use rand::RngExt;
use ruma::{OwnedMxcUri, OwnedServerName, ServerName, UserId};
use tokio::{fs::File, sync::watch};

pub use self::tables::{FileRef, MediaRecord, ThumbnailRecord};
use self::{
    storage::{FileStore, StoredFile, Upload},
    thumbnail::Method,
};
use crate::{
    db::{
        codec::{Be64, Json},
        Batch, Database,
    },
    error::{Error, Result},
    time::now_ms,
};

/// How long an id reserved with `/media/v1/create` waits for its upload.
const PENDING_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);
/// The longest a download waits for pending content, whatever the client's `timeout_ms`.
const MAX_WAIT: Duration = Duration::from_secs(120);
/// Length of generated media ids (62 symbols: ~143 bits).
const MEDIA_ID_LEN: usize = 24;

impl From<StoredFile> for FileRef {
    fn from(f: StoredFile) -> Self {
        Self { sha256: f.sha256, size: f.size }
    }
}

/// Content ready to be served.
pub struct Content {
    pub file: File,
    pub size: u64,
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

pub struct Media {
    db: Arc<Database>,
    store: FileStore,
    server_name: OwnedServerName,
    max_upload_size: u64,
    /// Serializes read-modify-writes of reference counts and of reserved ids, so a reserved id
    /// gets exactly one upload and counts stay exact.
    write_lock: Mutex<()>,
    max_pending: usize,
    /// Bumped after every upload, so downloads waiting for a reserved id wake up and look again.
    uploads: watch::Sender<u64>,
    /// Bounds thumbnail decodes in flight: each may take up to 512 MiB.
    decodes: tokio::sync::Semaphore,
    /// Recent URL previews.
    pub(crate) previews: preview::PreviewCache,
    /// ClamAV, when `[antivirus] clamd` is set: no file is served before it scanned clean.
    antivirus: Option<Arc<antivirus::Antivirus>>,
}

impl Media {
    pub fn open(db: Arc<Database>, server_name: OwnedServerName, config: &crate::config::Config) -> Result<Self> {
        let media = Self {
            db: db.clone(),
            store: FileStore::open(config.media_path())?,
            server_name,
            max_upload_size: config.media.max_upload_size,
            max_pending: config.media.max_pending_uploads as usize,
            write_lock: Mutex::new(()),
            uploads: watch::Sender::new(0),
            decodes: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            previews: Default::default(),
            antivirus: antivirus::Antivirus::new(db.clone(), &config.antivirus)?,
        };
        // Reservations that expired while the server was down go now.
        {
            let _guard = media.lock();
            let mut batch = Batch::new();
            media.purge_expired(&mut batch, None, now_ms())?;
            media.db.commit(batch)?;
        }
        Ok(media)
    }

    /// The largest file taken, from a local user or another server: a file the antivirus could
    /// not scan is not taken at all.
    pub fn max_upload_size(&self) -> u64 {
        match &self.antivirus {
            Some(antivirus) => self.max_upload_size.min(antivirus.max_scan_size()),
            None => self.max_upload_size,
        }
    }

    pub fn antivirus(&self) -> Option<&Arc<antivirus::Antivirus>> {
        self.antivirus.as_ref()
    }

    /// Starts scanning a file just stored, so that its first download finds the verdict made or
    /// under way.
    fn scan_soon(&self, file: &FileRef) {
        if let Some(antivirus) = &self.antivirus {
            antivirus.start(&file.sha256, antivirus::ScanSource::File(self.store.path_of(&file.sha256)));
        }
    }

    /// Refuses an upload of a type the antivirus's MIME type policy forbids, before it is stored.
    fn check_upload_type(&self, upload: &Upload) -> Result<()> {
        match &self.antivirus {
            Some(antivirus) => antivirus.judge_upload(upload.head()),
            None => Ok(()),
        }
    }

    /// Waits for the antivirus's verdict on a stored file and decides whether it may be served.
    async fn screen_file(&self, file: &FileRef) -> Result<()> {
        match &self.antivirus {
            Some(antivirus) => {
                antivirus.screen(&file.sha256, antivirus::ScanSource::File(self.store.path_of(&file.sha256))).await
            }
            None => Ok(()),
        }
    }

    /// Whether a media may be served (`GET …/scan` of the content scanner API): scanned clean and
    /// of an allowed type.
    pub async fn screen(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<()> {
        let record = self.uploaded_record(server, media_id, timeout).await?;
        self.screen_file(record.file.as_ref().expect("uploaded records have contents")).await
    }

    /// An encrypted attachment, served still encrypted once its *decrypted* contents scanned clean
    /// and are of an allowed type (`POST …/scan_encrypted` and `…/download_encrypted`).
    pub async fn screen_encrypted(
        &self,
        server: &ServerName,
        media_id: &str,
        attachment: &antivirus_crypto::EncryptedFile,
        timeout: Duration,
    ) -> Result<Content> {
        let record = self.uploaded_record(server, media_id, timeout).await?;
        let file_ref = record.file.expect("uploaded records have contents");
        if !attachment.matches(&file_ref.sha256) {
            return Err(Error::FailedToDecrypt("the file's SHA-256 is not the one its key was given for".into()));
        }
        if let Some(antivirus) = &self.antivirus {
            let path = self.store.path_of(&file_ref.sha256);
            let key = attachment.key.clone();
            let plaintext = key
                .plaintext_sha256(path.clone())
                .await
                .map_err(|e| Error::Internal(format!("cannot read {}: {e}", path.display())))?;
            antivirus.screen(&plaintext, antivirus::ScanSource::Encrypted(path, key)).await?;
        }
        Ok(Content {
            file: self.store.open_file(&file_ref.sha256).await?,
            size: file_ref.size,
            content_type: record.content_type,
            filename: record.filename,
        })
    }

    /// Starts receiving an upload; feed it with [`Upload::write`], then hand it to
    /// [`Media::create_with_content`] or [`Media::upload_reserved`].
    pub async fn begin_upload(&self) -> Result<Upload> {
        self.store.begin(self.max_upload_size).await
    }

    fn new_media_id() -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        (0..MEDIA_ID_LEN).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
    }

    fn mxc(&self, media_id: &str) -> OwnedMxcUri {
        format!("mxc://{}/{media_id}", self.server_name).into()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.write_lock.lock().expect("media write lock")
    }

    /// Counts one more reference to `file` in `batch`; call with the write lock held.
    fn add_reference(&self, batch: &mut Batch, file: &FileRef) -> Result<()> {
        let table = &self.db.tables.media.sha256_refcount;
        let count = table.get(&file.sha256)?.map_or(0, |c| c.0);
        table.insert(batch, &file.sha256, &Be64(count + 1));
        Ok(())
    }

    /// Stores a finished upload under a new media id (`POST /media/v3/upload`).
    pub async fn create_with_content(
        &self,
        uploader: &UserId,
        upload: Upload,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<OwnedMxcUri> {
        self.check_upload_type(&upload)?;
        let file = FileRef::from(self.store.persist(upload).await?);
        let media_id = Self::new_media_id();
        let record = MediaRecord {
            uploader: Some(uploader.to_owned()),
            created_ts: now_ms(),
            content_type,
            filename,
            file: Some(file.clone()),
            expires_ts: None,
            quarantined_by: None,
            safe_from_quarantine: false,
        };
        {
            let _guard = self.lock();
            let mut batch = Batch::new();
            self.add_reference(&mut batch, &file)?;
            self.db.tables.media.mediaid_meta.insert(
                &mut batch,
                &(self.server_name.clone(), media_id.clone()),
                &Json(record),
            );
            self.db.commit(batch)?;
        }
        self.scan_soon(&file);
        self.uploads.send_modify(|n| *n += 1);
        Ok(self.mxc(&media_id))
    }

    /// Reserves a media id for a later upload (`POST /media/v1/create`); returns its URI and when
    /// the reservation expires.
    pub fn reserve(&self, uploader: &UserId) -> Result<(OwnedMxcUri, u64)> {
        let media_id = Self::new_media_id();
        let now = now_ms();
        let _guard = self.lock();
        let mut batch = Batch::new();
        let pending = self.purge_expired(&mut batch, Some(uploader), now)?;
        if pending.len() >= self.max_pending {
            let first_expiry = pending.iter().min().copied().unwrap_or(now);
            return Err(Error::LimitExceeded { retry_after: Duration::from_millis(first_expiry.saturating_sub(now)) });
        }
        let expires = now + PENDING_LIFETIME.as_millis() as u64;
        let record = MediaRecord {
            uploader: Some(uploader.to_owned()),
            created_ts: now,
            content_type: None,
            filename: None,
            file: None,
            expires_ts: Some(expires),
            quarantined_by: None,
            safe_from_quarantine: false,
        };
        self.db.tables.media.mediaid_meta.insert(
            &mut batch,
            &(self.server_name.clone(), media_id.clone()),
            &Json(record),
        );
        self.db.tables.media.useridmediaid_pending.insert(
            &mut batch,
            &(uploader.to_owned(), media_id.clone()),
            &Be64(expires),
        );
        self.db.commit(batch)?;
        Ok((self.mxc(&media_id), expires))
    }

    /// Removes (into `batch`) the expired reservations of `user` (of everyone when `None`) and
    /// their media records; returns the expiry times of the live ones. Call with the write lock.
    fn purge_expired(&self, batch: &mut Batch, user: Option<&UserId>, now: u64) -> Result<Vec<u64>> {
        let tables = &self.db.tables;
        let scan = match user {
            Some(u) => tables.media.useridmediaid_pending.scan_prefix(crate::db::codec::prefix(&u.to_owned())),
            None => tables.media.useridmediaid_pending.scan_prefix(Vec::new()),
        };
        let mut live = Vec::new();
        for entry in scan {
            let ((owner, media_id), Be64(expires)) = entry?;
            if expires < now {
                tables.media.useridmediaid_pending.remove(batch, &(owner, media_id.clone()));
                tables.media.mediaid_meta.remove(batch, &(self.server_name.clone(), media_id));
            } else {
                live.push(expires);
            }
        }
        Ok(live)
    }

    /// Why `uploader` may not upload to the reserved id, if they may not; checked before the body
    /// is read and again when it is stored.
    pub fn check_reserved(&self, uploader: &UserId, server: &ServerName, media_id: &str) -> Result<MediaRecord> {
        let unknown = || Error::not_found("no media id was reserved under this name");
        if server != self.server_name {
            return Err(unknown());
        }
        let Some(Json(record)) = self.db.tables.media.mediaid_meta.get(&(server.to_owned(), media_id.to_owned()))?
        else {
            return Err(unknown());
        };
        if record.uploader.as_deref() != Some(uploader) {
            return Err(Error::forbidden("this media id was reserved by another user"));
        }
        if record.file.is_some() {
            return Err(Error::CannotOverwriteMedia("content was already uploaded to this media id".into()));
        }
        if record.expires_ts.is_some_and(|t| t < now_ms()) {
            return Err(unknown());
        }
        Ok(record)
    }

    /// Stores a finished upload under a reserved id (`PUT /media/v3/upload/{server}/{id}`).
    pub async fn upload_reserved(
        &self,
        uploader: &UserId,
        server: &ServerName,
        media_id: &str,
        upload: Upload,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        self.check_reserved(uploader, server, media_id)?;
        self.check_upload_type(&upload)?;
        let file = FileRef::from(self.store.persist(upload).await?);
        {
            let _guard = self.lock();
            let mut record = self.check_reserved(uploader, server, media_id)?;
            record.content_type = content_type;
            record.filename = filename;
            record.file = Some(file.clone());
            record.expires_ts = None;
            let mut batch = Batch::new();
            self.add_reference(&mut batch, &file)?;
            self.db.tables.media.mediaid_meta.insert(
                &mut batch,
                &(server.to_owned(), media_id.to_owned()),
                &Json(record),
            );
            self.db.tables.media.useridmediaid_pending.remove(&mut batch, &(uploader.to_owned(), media_id.to_owned()));
            self.db.commit(batch)?;
        }
        self.scan_soon(&file);
        self.uploads.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Whether media of another server is in our cache already.
    pub fn is_cached(&self, server: &ServerName, media_id: &str) -> Result<bool> {
        let key = (server.to_owned(), media_id.to_owned());
        Ok(self.db.tables.media.mediaid_meta.get(&key)?.is_some_and(|Json(r)| r.file.is_some()))
    }

    /// Caches media fetched from its origin server under the origin's name (the caller fetched
    /// it: this service knows nothing of federation). A second copy stored at once is ignored.
    pub async fn store_remote(
        &self,
        server: &ServerName,
        media_id: &str,
        bytes: &[u8],
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<()> {
        if server == self.server_name {
            return Err(Error::Internal("our own media is not cached from elsewhere".into()));
        }
        let file = FileRef::from(self.store.put(bytes).await?);
        let key = (server.to_owned(), media_id.to_owned());
        let _guard = self.lock();
        if self.db.tables.media.mediaid_meta.get(&key)?.is_some() {
            return Ok(());
        }
        let record = MediaRecord {
            uploader: None,
            created_ts: now_ms(),
            content_type,
            filename,
            file: Some(file.clone()),
            expires_ts: None,
            quarantined_by: None,
            safe_from_quarantine: false,
        };
        let mut batch = Batch::new();
        self.add_reference(&mut batch, &file)?;
        self.db.tables.media.mediaid_meta.insert(&mut batch, &key, &Json(record));
        self.db.commit(batch)?;
        self.scan_soon(&file);
        Ok(())
    }

    /// The record of a media id with contents, waiting up to `timeout` for a reserved id's upload.
    /// Media of other servers is found once cached ([`Media::store_remote`]).
    async fn uploaded_record(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<MediaRecord> {
        let not_found = || Error::not_found("media not found");
        let key = (server.to_owned(), media_id.to_owned());
        if server != self.server_name {
            return match self.db.tables.media.mediaid_meta.get(&key)? {
                Some(Json(record)) if record.file.is_some() && record.quarantined_by.is_none() => Ok(record),
                _ => Err(not_found()),
            };
        }
        let deadline = tokio::time::Instant::now() + timeout.min(MAX_WAIT);
        let mut uploads = self.uploads.subscribe();
        loop {
            uploads.borrow_and_update();
            let Some(Json(record)) = self.db.tables.media.mediaid_meta.get(&key)? else {
                return Err(not_found());
            };
            if record.quarantined_by.is_some() {
                return Err(not_found());
            }
            if record.file.is_some() {
                return Ok(record);
            }
            if record.expires_ts.is_some_and(|t| t < now_ms()) {
                return Err(not_found());
            }
            match tokio::time::timeout_at(deadline, uploads.changed()).await {
                Ok(Ok(())) => continue,
                _ => return Err(Error::NotYetUploaded("the media has not been uploaded yet".into())),
            }
        }
    }

    /// Opens a media's contents for download.
    pub async fn content(&self, server: &ServerName, media_id: &str, timeout: Duration) -> Result<Content> {
        let record = self.uploaded_record(server, media_id, timeout).await?;
        let file_ref = record.file.expect("uploaded records have contents");
        self.screen_file(&file_ref).await?;
        Ok(Content {
            file: self.store.open_file(&file_ref.sha256).await?,
            size: file_ref.size,
            content_type: record.content_type,
            filename: record.filename,
        })
    }

    /// Downloads waiting right now for a reserved id's upload.
    pub fn waiting_downloads(&self) -> usize {
        self.uploads.receiver_count()
    }

    /// A thumbnail of a media, generated on first request and cached (per contents, size and
    /// method, so identical uploads share their thumbnails).
    pub async fn thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        requested: (u32, u32),
        method: Method,
        timeout: Duration,
    ) -> Result<Content> {
        let record = self.uploaded_record(server, media_id, timeout).await?;
        let source = record.file.expect("uploaded records have contents");
        // A thumbnail shows the file: none of a file that may not be served.
        self.screen_file(&source).await?;
        // A few fixed sizes, as Synapse serves: any request maps to one of them, so the cache
        // holds at most a dozen thumbnails per file whatever sizes clients ask for.
        let requested = thumbnail::snap(requested);
        let key = (source.sha256.clone(), format!("{}x{}-{}", requested.0, requested.1, method.as_str()));
        let cached = match self.db.tables.media.sha256size_thumbnail.get(&key)? {
            Some(Json(cached)) => cached,
            None => {
                let path = self.store.path_of(&source.sha256);
                let _permit = self.decodes.acquire().await.map_err(|e| Error::Internal(e.to_string()))?;
                let generated = tokio::task::spawn_blocking(move || {
                    let file = std::fs::File::open(&path)
                        .map_err(|e| Error::Internal(format!("cannot open {}: {e}", path.display())))?;
                    thumbnail::generate(file, requested, method)
                })
                .await
                .map_err(|e| Error::Internal(format!("thumbnail task failed: {e}")))??;
                let file = FileRef::from(self.store.put(&generated.bytes).await?);
                let record = ThumbnailRecord {
                    file,
                    content_type: generated.content_type.to_owned(),
                    width: generated.width,
                    height: generated.height,
                };
                let _guard = self.lock();
                // Two requests may have generated the same thumbnail at once; count it once.
                if let Some(Json(existing)) = self.db.tables.media.sha256size_thumbnail.get(&key)? {
                    existing
                } else {
                    let mut batch = Batch::new();
                    self.add_reference(&mut batch, &record.file)?;
                    self.db.tables.media.sha256size_thumbnail.insert(&mut batch, &key, &Json(record.clone()));
                    self.db.commit(batch)?;
                    record
                }
            }
        };
        let extension = if cached.content_type == "image/jpeg" { "jpg" } else { "png" };
        Ok(Content {
            file: self.store.open_file(&cached.file.sha256).await?,
            size: cached.file.size,
            content_type: Some(cached.content_type),
            filename: Some(format!("thumbnail.{extension}")),
        })
    }
}
