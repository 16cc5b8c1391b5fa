//! Antivirus: every file the media repository stores — a local upload, another server's media
//! fetched over federation — is scanned by ClamAV before anyone may download it.
//!
//! A scan starts as soon as a file is stored; a download that comes first waits for it (one scan
//! per file whoever asks, the waiters woken by its end: no polling). Verdicts are kept in
//! `sha256_verdict` by the SHA-256 of the contents, so identical files are scanned once and a
//! restart scans nothing again. An end-to-end encrypted attachment, scanned through the content
//! scanner API with its key, has its verdict under the SHA-256 of its *decrypted* contents.
//!
//! The verdict (clean, or the signature that matched) is a fact about the bytes *under the
//! signatures clamd ran then*: each verdict records clamd's `VERSION` (engine and daily database),
//! and a verdict made under other signatures than clamd's current ones is made again at the
//! file's next download, so a file that scanned clean is refused once an update knows it (and a
//! false positive an update withdrew is served again). Whether a clean file may be served also
//! depends on the MIME type policy, judged at every download from the type sniffed during the
//! scan, so a policy change applies to files scanned before it; an upload of a type the policy
//! forbids is refused at once. When clamd cannot give a verdict nothing is recorded, and
//! `when_unavailable` decides whether the file is refused (the default) or served unscanned; the
//! next download tries again.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::{watch, Semaphore};

pub use super::antivirus_clamd::{Clamd, ClamdAddress, ClamdError, ScanOutcome};
pub use super::tables::Verdict;
use super::{
    antivirus_crypto::{AttachmentKey, BodyDecryption},
    antivirus_mime,
};
use crate::{
    config::{AntivirusConfig, WhenUnavailable},
    db::{codec::Json, Batch, Database},
    error::{Error, Result},
    time::now_ms,
};

/// The content scanner API's Curve25519 secret in `keyid_secret`: generated once, so the public
/// key clients cached stays valid across restarts.
const BODY_KEY_ID: &str = "curve25519:content_scanner";

impl Verdict {
    /// Whether this verdict was made under `current` signatures (unknown ones: take it as it is).
    fn is_current(&self, current: Option<&str>) -> bool {
        current.is_none_or(|current| self.signatures.as_deref() == Some(current))
    }
}

/// The bytes to scan.
#[derive(Clone)]
pub enum ScanSource {
    /// A stored file, as it is.
    File(PathBuf),
    /// A stored encrypted attachment, decrypted on the way to clamd.
    Encrypted(PathBuf, AttachmentKey),
}

/// How one scan in flight ends, for everyone waiting on it.
type Outcome = Option<Result<Verdict, String>>;

/// What the console shows of clamd.
#[derive(Debug, Clone, Default)]
pub struct ClamdStatus {
    /// When clamd last gave a verdict or answered a probe.
    pub last_ok_ts: Option<u64>,
    /// The last failure to reach it, and when; cleared by the next success.
    pub last_error: Option<(u64, String)>,
    /// Files served unscanned under `when_unavailable = "serve"` since start.
    pub served_unscanned: u64,
    /// The signatures clamd last said it runs (its `VERSION` answer).
    pub signatures: Option<String>,
}

/// What is known of clamd's signatures, and when it was last asked.
#[derive(Default)]
struct SignatureCheck {
    asked: Option<Instant>,
    version: Option<String>,
}

pub struct Antivirus {
    db: Arc<Database>,
    clamd: Clamd,
    when_unavailable: WhenUnavailable,
    max_scan_size: u64,
    allowed_mimetypes: Option<Vec<String>>,
    blocked_mimetypes: Vec<String>,
    /// Scans running now, by the content hash they will record.
    in_flight: Mutex<HashMap<String, watch::Receiver<Outcome>>>,
    /// Bounds the scans running at once (each holds a clamd connection and a read buffer).
    scans: Semaphore,
    status: Mutex<ClamdStatus>,
    body_decryption: BodyDecryption,
    /// Held while clamd is asked for its version, so concurrent downloads ask once.
    signatures: tokio::sync::Mutex<SignatureCheck>,
    signature_check_interval: Duration,
}

impl Antivirus {
    pub fn new(db: Arc<Database>, config: &AntivirusConfig) -> Result<Option<Arc<Self>>> {
        let Some(address) = &config.clamd else { return Ok(None) };
        let address = ClamdAddress::parse(address).map_err(Error::Internal)?;
        let keys = &db.tables.media.keyid_secret;
        let secret = match keys.get(&BODY_KEY_ID.to_owned())?.and_then(|s| <[u8; 32]>::try_from(s).ok()) {
            Some(secret) => secret,
            None => {
                let secret = BodyDecryption::new_secret();
                let mut batch = Batch::new();
                keys.insert(&mut batch, &BODY_KEY_ID.to_owned(), &secret.to_vec());
                db.commit(batch)?;
                secret
            }
        };
        Ok(Some(Arc::new(Self {
            body_decryption: BodyDecryption::from_secret(secret),
            db,
            clamd: Clamd::new(address, Duration::from_millis(config.scan_timeout_ms)),
            when_unavailable: config.when_unavailable,
            max_scan_size: config.max_scan_size,
            allowed_mimetypes: config.allowed_mimetypes.clone(),
            blocked_mimetypes: config.blocked_mimetypes.clone(),
            in_flight: Mutex::default(),
            scans: Semaphore::new(config.max_concurrent_scans.max(1) as usize),
            status: Mutex::default(),
            signatures: tokio::sync::Mutex::default(),
            signature_check_interval: Duration::from_millis(config.signature_check_interval_ms),
        })))
    }

    /// The largest file that can be scanned: larger ones are refused at upload and fetch, so no
    /// file is ever stored that could not be scanned.
    pub fn max_scan_size(&self) -> u64 {
        self.max_scan_size
    }

    /// The key pair `encrypted_body` is encrypted to.
    pub fn body_decryption(&self) -> &BodyDecryption {
        &self.body_decryption
    }

    pub fn clamd_address(&self) -> String {
        self.clamd.address().to_string()
    }

    pub fn when_unavailable(&self) -> WhenUnavailable {
        self.when_unavailable
    }

    pub fn status(&self) -> ClamdStatus {
        self.status.lock().expect("antivirus status").clone()
    }

    /// Asks clamd for its version now (the console's probe); records the outcome like a scan.
    pub async fn probe(&self) -> Result<String, String> {
        let mut known = self.signatures.lock().await;
        self.ask_version(&mut known).await
    }

    /// Asks clamd which signatures it runs, and remembers the answer.
    async fn ask_version(&self, known: &mut SignatureCheck) -> Result<String, String> {
        known.asked = Some(Instant::now());
        let answer = self.clamd.version().await.map_err(|e| e.to_string());
        self.note(answer.as_ref().map(|_| ()).map_err(Clone::clone));
        if let Ok(version) = &answer {
            if known.version.as_ref().is_some_and(|old| old != version) {
                tracing::info!(
                    from = known.version.as_deref().unwrap_or_default(),
                    to = %version,
                    "clamd's signatures changed: files are scanned again at their next download"
                );
            }
            known.version = Some(version.clone());
            self.status.lock().expect("antivirus status").signatures = Some(version.clone());
        }
        answer
    }

    /// The signatures clamd runs, as it last said, asked again when the last answer is older
    /// than `signature_check_interval_ms` (clamd tells nobody when it reloads its database).
    /// None while clamd has never answered.
    async fn current_signatures(&self) -> Option<String> {
        let mut known = self.signatures.lock().await;
        if known.asked.is_none_or(|at| at.elapsed() >= self.signature_check_interval) {
            // A failure keeps the last answer: clamd being down says nothing of its signatures.
            let _ = self.ask_version(&mut known).await;
        }
        known.version.clone()
    }

    fn note(&self, outcome: Result<(), String>) {
        let mut status = self.status.lock().expect("antivirus status");
        match outcome {
            Ok(()) => {
                status.last_ok_ts = Some(now_ms());
                status.last_error = None;
            }
            Err(e) => status.last_error = Some((now_ms(), e)),
        }
    }

    /// The recorded verdict on these contents, if they were scanned.
    pub fn recorded(&self, sha256: &str) -> Result<Option<Verdict>> {
        Ok(self.db.tables.media.sha256_verdict.get(&sha256.to_owned())?.map(|Json(v)| v))
    }

    /// Every infected content hash with its verdict.
    pub fn infected(&self) -> Result<Vec<(String, Verdict)>> {
        let mut out = Vec::new();
        for entry in self.db.tables.media.sha256_verdict.scan_prefix(Vec::new()) {
            let (sha256, Json(verdict)) = entry?;
            if verdict.infected.is_some() {
                out.push((sha256, verdict));
            }
        }
        Ok(out)
    }

    /// Starts scanning stored contents in the background, unless they were scanned already.
    pub fn start(self: &Arc<Self>, sha256: &str, source: ScanSource) {
        let this = self.clone();
        let sha256 = sha256.to_owned();
        tokio::spawn(async move {
            if let Err(e) = this.verdict(&sha256, source).await {
                tracing::debug!(%sha256, error = %e, "background scan gave no verdict");
            }
        });
    }

    /// The verdict on `sha256` under clamd's current signatures, scanning `source` when there is
    /// none yet or the recorded one was made under older signatures: one scan per content hash at
    /// a time, whoever asks, run in its own task so a caller that goes away does not cancel it for
    /// the others. `Err` when clamd gave no verdict and none was ever recorded (a verdict under
    /// older signatures stands while clamd cannot make a new one).
    pub async fn verdict(self: &Arc<Self>, sha256: &str, source: ScanSource) -> Result<Verdict, String> {
        let current = self.current_signatures().await;
        let recorded = self.recorded(sha256).map_err(|e| e.to_string())?;
        if let Some(verdict) = &recorded {
            if verdict.is_current(current.as_deref()) {
                return Ok(verdict.clone());
            }
        }
        let mut waiting = {
            let mut in_flight = self.in_flight.lock().expect("antivirus scans");
            match in_flight.get(sha256) {
                Some(running) => running.clone(),
                None => {
                    // Recorded between the look-up above and this lock: a scan just finished.
                    let just_made = self.recorded(sha256).map_err(|e| e.to_string())?;
                    if let Some(verdict) = just_made.filter(|v| v.is_current(current.as_deref())) {
                        return Ok(verdict);
                    }
                    let (done, waiting) = watch::channel(None);
                    in_flight.insert(sha256.to_owned(), waiting.clone());
                    let this = self.clone();
                    let sha256 = sha256.to_owned();
                    tokio::spawn(async move {
                        let outcome = this.scan(&sha256, source).await;
                        this.in_flight.lock().expect("antivirus scans").remove(&sha256);
                        done.send_replace(Some(outcome));
                    });
                    waiting
                }
            }
        };
        let outcome = waiting.wait_for(Option::is_some).await.map_err(|_| "the scan task ended".to_owned())?;
        match (outcome.clone().expect("waited for an outcome"), recorded) {
            (Ok(verdict), _) => Ok(verdict),
            (Err(reason), Some(older)) => {
                tracing::warn!(%sha256, %reason, "no new verdict under clamd's new signatures: the older one stands");
                Ok(older)
            }
            (Err(reason), None) => Err(reason),
        }
    }

    /// Runs one scan and records its verdict before anyone is told of it.
    async fn scan(&self, sha256: &str, source: ScanSource) -> Result<Verdict, String> {
        let _permit = self.scans.acquire().await.map_err(|e| e.to_string())?;
        // Asked before the scan: should clamd reload meanwhile, the verdict is only made again.
        let before = self.current_signatures().await;
        let (path, key) = match source {
            ScanSource::File(path) => (path, None),
            ScanSource::Encrypted(path, key) => (path, Some(key)),
        };
        let file = tokio::fs::File::open(&path).await.map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        let mut head = Vec::with_capacity(antivirus_mime::SNIFF_LEN);
        let observe = |chunk: &[u8]| {
            let take = (antivirus_mime::SNIFF_LEN - head.len()).min(chunk.len());
            head.extend_from_slice(&chunk[..take]);
        };
        let started = std::time::Instant::now();
        let outcome = match key {
            None => self.clamd.scan(file, observe).await,
            Some(key) => self.clamd.scan(key.decrypting(file), observe).await,
        };
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(ClamdError::TooLarge) => {
                // Over clamd's own StreamMaxLength: a fact about this file and this clamd, but
                // not a verdict; it is refused like any file without one.
                let message = format!("the file is over clamd's StreamMaxLength ({})", self.clamd.address());
                tracing::warn!(%sha256, "{message}");
                return Err(message);
            }
            Err(e) => {
                tracing::warn!(%sha256, error = %e, "clamd gave no verdict");
                self.note(Err(e.to_string()));
                return Err(e.to_string());
            }
        };
        self.note(Ok(()));
        let signatures = match before {
            Some(version) => Some(version),
            // Unknown until now (clamd was down when last asked): it answers again, so ask, or
            // the verdict would be made once more as soon as the version is known.
            None => self.ask_version(&mut *self.signatures.lock().await).await.ok(),
        };
        let verdict = Verdict {
            infected: match outcome {
                ScanOutcome::Clean => None,
                ScanOutcome::Infected(name) => Some(name),
            },
            mimetype: antivirus_mime::sniff(&head).to_owned(),
            scanned_ts: now_ms(),
            signatures,
        };
        match &verdict.infected {
            Some(signature) => tracing::warn!(%sha256, %signature, "infected file quarantined"),
            None => tracing::debug!(%sha256, elapsed = ?started.elapsed(), "file scanned clean"),
        }
        let mut batch = Batch::new();
        self.db.tables.media.sha256_verdict.insert(&mut batch, &sha256.to_owned(), &Json(verdict.clone()));
        self.db.commit(batch).map_err(|e| e.to_string())?;
        Ok(verdict)
    }

    /// Whether a file with this verdict may be served: not infected, and of a MIME type the
    /// policy allows.
    pub fn judge(&self, verdict: &Verdict) -> Result<()> {
        if let Some(signature) = &verdict.infected {
            return Err(Error::NotClean(format!("the file is infected ({signature}) and is served to nobody")));
        }
        self.judge_type(&verdict.mimetype)
    }

    /// The MIME type policy, with the reference scanner's words.
    fn judge_type(&self, mimetype: &str) -> Result<()> {
        let forbidden = match &self.allowed_mimetypes {
            Some(allowed) => !allowed.iter().any(|t| t == mimetype),
            None => self.blocked_mimetypes.iter().any(|t| t == mimetype),
        };
        if forbidden {
            return Err(Error::MimeTypeForbidden(format!("File type: {mimetype} not allowed")));
        }
        Ok(())
    }

    /// Whether an upload starting with `head` may be stored: its uploader learns at once that
    /// its type is forbidden, rather than every recipient at download. Bytes of no known type
    /// are taken: every end-to-end encrypted attachment looks so, and its real type, known only
    /// once decrypted, is judged when a client scans it through the content scanner API (and a
    /// plain download judges the bytes as they are).
    pub fn judge_upload(&self, head: &[u8]) -> Result<()> {
        match antivirus_mime::sniff(head) {
            "application/octet-stream" => Ok(()),
            mimetype => self.judge_type(mimetype),
        }
    }

    /// Whether a file may be served although clamd gave no verdict on it (`when_unavailable`).
    pub fn without_verdict(&self, sha256: &str, reason: &str) -> Result<()> {
        match self.when_unavailable {
            WhenUnavailable::Refuse => {
                Err(Error::ScannerUnavailable(format!("the file could not be scanned, try again later: {reason}")))
            }
            WhenUnavailable::Serve => {
                self.status.lock().expect("antivirus status").served_unscanned += 1;
                tracing::warn!(%sha256, %reason, "serving a file unscanned (antivirus.when_unavailable = \"serve\")");
                Ok(())
            }
        }
    }

    /// Scans if needed and decides: `Ok` when the file may be served.
    pub async fn screen(self: &Arc<Self>, sha256: &str, source: ScanSource) -> Result<()> {
        match self.verdict(sha256, source).await {
            Ok(verdict) => self.judge(&verdict),
            Err(reason) => self.without_verdict(sha256, &reason),
        }
    }
}

/// A media id whose contents the antivirus found infected: quarantined, served to nobody.
#[derive(Debug, Clone)]
pub struct InfectedMedia {
    pub server_name: ruma::OwnedServerName,
    pub media_id: String,
    /// The local uploader; none for another server's media.
    pub uploader: Option<ruma::OwnedUserId>,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub sha256: String,
    pub signature: String,
    /// When the scan found it.
    pub found_ts: u64,
    pub created_ts: u64,
}

impl super::Media {
    /// Every media id with infected contents, newest find first (admin API and console). Reads
    /// the infected verdicts, then the media records once: an admin's listing, not a hot path.
    pub fn infected_media(&self) -> Result<Vec<InfectedMedia>> {
        let Some(antivirus) = &self.antivirus else { return Ok(Vec::new()) };
        let infected: HashMap<String, Verdict> = antivirus.infected()?.into_iter().collect();
        let mut out = Vec::new();
        if infected.is_empty() {
            return Ok(out);
        }
        for entry in self.db.tables.media.mediaid_meta.iter() {
            let ((server_name, media_id), Json(record)) = entry?;
            let Some(file) = &record.file else { continue };
            let Some(verdict) = infected.get(&file.sha256) else { continue };
            out.push(InfectedMedia {
                server_name,
                media_id,
                uploader: record.uploader.clone(),
                content_type: record.content_type.clone(),
                filename: record.filename.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
                signature: verdict.infected.clone().unwrap_or_default(),
                found_ts: verdict.scanned_ts,
                created_ts: record.created_ts,
            });
        }
        out.sort_by(|a, b| b.found_ts.cmp(&a.found_ts).then_with(|| a.media_id.cmp(&b.media_id)));
        Ok(out)
    }
}
