//! The file side of the media store: contents on disk, named by their SHA-256, so identical files
//! are stored once whoever uploads them and whatever they are called.
//!
//! A file is written to `<root>/tmp/`, fsynced, then renamed to `<root>/ab/cd/<sha256>` and the
//! directory fsynced: a crash leaves either no file or a whole one under its final name. What is
//! left in `tmp/` after a crash is removed at start-up.

use std::{
    io,
    path::{Path, PathBuf},
};

use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::{
    fs::File,
    io::{AsyncWriteExt, BufWriter},
};

use crate::error::{Error, Result};

/// Writes go through a buffer this large, so a body arriving in small frames becomes few large
/// writes; it is also all the memory one upload holds.
const WRITE_BUFFER: usize = 1024 * 1024;

/// Where the bytes are.
pub struct FileStore {
    root: PathBuf,
}

/// A file that was hashed while written and now lies, complete, under its content address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// Lower-case hex SHA-256 of the contents.
    pub sha256: String,
    pub size: u64,
}

fn io_error(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Internal(format!("media store: {what} {}: {e}", path.display()))
}

impl FileStore {
    /// Opens (creating) the store and removes temporary files a crash may have left.
    pub fn open(root: PathBuf) -> Result<Self> {
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| io_error("cannot create", &tmp, e))?;
        let entries = std::fs::read_dir(&tmp).map_err(|e| io_error("cannot list", &tmp, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %e, "cannot remove a stale temporary media file");
            }
        }
        Ok(Self { root })
    }

    /// The final path of the file with this SHA-256.
    pub fn path_of(&self, sha256: &str) -> PathBuf {
        self.root.join(&sha256[0..2]).join(&sha256[2..4]).join(sha256)
    }

    /// Starts writing a new file of at most `limit` bytes.
    pub async fn begin(&self, limit: u64) -> Result<Upload> {
        let mut name = [0u8; 16];
        rand::rng().fill_bytes(&mut name);
        let path = self.root.join("tmp").join(format!("{}.part", hex(&name)));
        let file = File::options()
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| io_error("cannot create", &path, e))?;
        Ok(Upload {
            temp: TempPath(Some(path)),
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            hasher: Sha256::new(),
            size: 0,
            limit,
            head: Vec::new(),
        })
    }

    /// Stores a small file already in memory (a generated thumbnail) the same way as an upload.
    pub async fn put(&self, bytes: &[u8]) -> Result<StoredFile> {
        let mut upload = self.begin(u64::MAX).await?;
        upload.write(bytes).await?;
        self.persist(upload).await
    }

    /// Makes the upload durable under its content address. When a file with the same contents is
    /// already there, the new copy is dropped: that is the deduplication.
    pub async fn persist(&self, mut upload: Upload) -> Result<StoredFile> {
        let temp = upload.temp.0.clone().expect("an upload owns its temporary file until persisted");
        upload.file.flush().await.map_err(|e| io_error("cannot write", &temp, e))?;
        upload.file.get_ref().sync_all().await.map_err(|e| io_error("cannot sync", &temp, e))?;
        let sha256 = hex(&upload.hasher.finalize_reset());
        let stored = StoredFile { sha256: sha256.clone(), size: upload.size };
        let target = self.path_of(&sha256);
        let root = self.root.clone();
        let renamed = tokio::task::spawn_blocking(move || -> Result<bool> {
            if target.exists() {
                return Ok(false);
            }
            let parent = target.parent().expect("content paths have a parent");
            std::fs::create_dir_all(parent).map_err(|e| io_error("cannot create", parent, e))?;
            std::fs::rename(&temp, &target).map_err(|e| io_error("cannot rename", &temp, e))?;
            // The rename and any directory it needed are durable once their directories are synced.
            let grandparent = parent.parent().expect("content paths have a grandparent");
            for dir in [parent, grandparent, root.as_path()] {
                sync_dir(dir)?;
            }
            Ok(true)
        })
        .await
        .map_err(|e| Error::Internal(format!("media store task failed: {e}")))??;
        if renamed {
            upload.temp.0 = None;
        }
        // Otherwise dropping `upload` removes the duplicate temporary file.
        Ok(stored)
    }

    /// Opens a stored file for reading.
    pub async fn open_file(&self, sha256: &str) -> Result<File> {
        let path = self.path_of(sha256);
        File::open(&path).await.map_err(|e| io_error("cannot open", &path, e))
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io_error("cannot sync", dir, e))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary file that is removed unless it was renamed into place, so an aborted, refused or
/// failed upload leaves nothing behind.
struct TempPath(Option<PathBuf>);

impl Drop for TempPath {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), %e, "cannot remove a temporary media file");
            }
        }
    }
}

/// A file being written: contents are hashed as they arrive, never held in memory whole.
pub struct Upload {
    // Declared first so the file is closed before its temporary path is removed on drop.
    file: BufWriter<File>,
    temp: TempPath,
    hasher: Sha256,
    size: u64,
    limit: u64,
    /// The first bytes, for the antivirus's MIME type policy.
    head: Vec<u8>,
}

impl Upload {
    /// Appends a chunk; refuses with `M_TOO_LARGE` once the total would pass the limit.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<()> {
        if self.size + chunk.len() as u64 > self.limit {
            return Err(Error::TooLarge(format!("the upload exceeds {} bytes", self.limit)));
        }
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        let keep = (super::antivirus_mime::SNIFF_LEN - self.head.len()).min(chunk.len());
        self.head.extend_from_slice(&chunk[..keep]);
        let path = self.temp.0.as_deref().unwrap_or(Path::new("?"));
        self.file.write_all(chunk).await.map_err(|e| io_error("cannot write", path, e))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The first bytes written (up to a few KiB).
    pub fn head(&self) -> &[u8] {
        &self.head
    }
}
