//! A real ClamAV daemon for the antivirus tests: Debian's `clamd` (package `clamav-daemon`, which
//! `scripts/test` installs), started by the test with a config of its own, a Unix socket in a
//! temporary folder and the small signature database shipped in `federation-tests/clamav/`
//! (the official databases cannot be downloaded here). It matches the EICAR test file and the
//! test patterns named in that folder's README. Tests fail, never skip, when clamd is missing.
//!
//! The homeserver's single-node tests include this file with `#[path]`, so both suites start
//! clamd the same way.

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The EICAR anti-virus test file: harmless, detected by every engine (by ours through the
/// shipped `.ndb`).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
/// A byte pattern the shipped `.ndb` detects anywhere in a file, as `Hemicycle.Test.Pattern`.
pub const TEST_PATTERN: &[u8] = b"HEMICYCLE-TEST-MALWARE-PATTERN-7f3a9c";
/// A whole file the shipped `.hdb` knows by its MD5 and size, as `Hemicycle.Test.Hash`.
pub const TEST_HASH_FILE: &[u8] = b"hemicycle hash-signature test file, harmless by design\n";

/// Where Debian puts the daemon.
const CLAMD: &str = "/usr/sbin/clamd";

/// The shipped signature database (found the same way from either crate that includes this file).
pub fn signatures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../federation-tests/clamav")
}

/// A running clamd; killed when dropped.
pub struct Clamd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Clamd {
    /// Starts clamd and waits until it answers `PING` (its socket exists only once the database
    /// is loaded, about a second with the shipped signatures).
    pub fn start() -> Clamd {
        assert!(
            Path::new(CLAMD).exists(),
            "{CLAMD} is missing: install Debian's clamav-daemon (./scripts/test does) to run the antivirus tests"
        );
        let dir = tempfile::Builder::new().prefix("hemicycle-clamd-").tempdir().expect("temp dir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).unwrap();
        for entry in std::fs::read_dir(signatures_dir()).unwrap() {
            let path = entry.unwrap().path();
            if matches!(path.extension().and_then(|e| e.to_str()), Some("ndb" | "hdb")) {
                std::fs::copy(&path, db.join(path.file_name().unwrap())).unwrap();
            }
        }
        let config = format!(
            "Foreground yes\nDatabaseDirectory {}\nLocalSocket {}\nLogFile {}\nStreamMaxLength 200M\n\
             MaxFileSize 200M\nMaxScanSize 400M\nSelfCheck 0\nMaxThreads 4\nLogClean yes\n",
            db.display(),
            dir.path().join("clamd.sock").display(),
            dir.path().join("clamd.log").display(),
        );
        std::fs::write(dir.path().join("clamd.conf"), config).unwrap();
        let mut clamd = Clamd { dir, child: None };
        clamd.spawn();
        clamd
    }

    fn spawn(&mut self) {
        let _ = std::fs::remove_file(self.socket());
        let child = Command::new(CLAMD)
            .arg("-c")
            .arg(self.dir.path().join("clamd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start clamd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.answers_ping() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default();
                panic!("clamd exited with {status} before answering:\n{log}");
            }
            assert!(Instant::now() < deadline, "clamd did not answer PING within 60 s");
            // clamd offers no readiness notification; its socket appears once it serves.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = UnixStream::connect(self.socket()) else { return false };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        if stream.write_all(b"zPING\0").is_err() {
            return false;
        }
        let mut answer = [0u8; 5];
        stream.read_exact(&mut answer).is_ok() && &answer == b"PONG\0"
    }

    /// How many streams clamd has scanned (its log has a line for each verdict, `LogClean yes`),
    /// across restarts.
    pub fn scans(&self) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default();
        log.lines().filter(|line| line.contains("instream(")).count()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    /// The `[antivirus] clamd` setting that reaches this daemon.
    pub fn address(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Kills the daemon (the socket file stays, as after a crash: connecting to it fails).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the daemon again on the same socket and database.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}
