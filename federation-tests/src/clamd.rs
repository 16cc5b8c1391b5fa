//! A real ClamAV daemon for the antivirus tests: Debian's `clamd` (package `clamav-daemon`, which
//! `scripts/test` installs), started by the test with a config of its own, a Unix socket in a
//! temporary folder and the small signature database shipped in `federation-tests/clamav/`
//! (the official databases cannot be downloaded here). It matches the EICAR test file and the
//! test patterns named in that folder's README. Tests fail, never skip, when clamd is missing.
//!
//! The database also holds a `daily.cud`, the unsigned form of ClamAV's daily database, made
//! here: clamd names the signatures it runs by the daily database's version (`VERSION` answers
//! `ClamAV 1.4.6/1/…`), and [`Clamd::update_signatures`] publishes a new version with more
//! signatures and has clamd reload it, as freshclam does with an update.
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

/// A byte pattern no signature matches until a test adds one with [`Clamd::update_signatures`].
pub const LATER_PATTERN: &[u8] = b"HEMICYCLE-TEST-PATTERN-OF-A-LATER-UPDATE-51e2c0";

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
    /// The version of the daily database clamd runs, and the signatures it holds.
    daily_version: u32,
    daily: Vec<String>,
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
        let daily = vec![format!("Hemicycle.Test.Daily:0:*:{}", hex(b"HEMICYCLE-TEST-DAILY-DATABASE-SIGNATURE"))];
        let mut clamd = Clamd { dir, child: None, daily_version: 1, daily };
        clamd.write_daily();
        clamd.spawn();
        clamd
    }

    /// Writes `daily.cud`: a 512-byte header (`ClamAV-VDB:date:version:signatures:level:md5:
    /// dsig:builder:time`; an unsigned `.cud` has neither its MD5 nor its signature checked),
    /// then a tar of `daily.info` (the same header, then each file's size and SHA-256, which
    /// clamd checks) and `daily.ndb`. zlib reads a tar that is not gzipped as it is.
    fn write_daily(&self) {
        use sha2::{Digest, Sha256};
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let header = format!(
            "ClamAV-VDB:06 Dec 2026 12-00 +0000:{}:{}:90:{}:unsigned:hemicycle-tests:{now}",
            self.daily_version,
            self.daily.len(),
            "0".repeat(32),
        );
        let ndb = format!("{}\n", self.daily.join("\n")).into_bytes();
        let info = format!("{header}\ndaily.ndb:{}:{:x}\n", ndb.len(), Sha256::digest(&ndb)).into_bytes();
        let mut file = header.into_bytes();
        file.resize(512, b' ');
        for (name, contents) in [("daily.info", &info), ("daily.ndb", &ndb)] {
            file.extend_from_slice(&tar_header(name, contents.len(), now));
            file.extend_from_slice(contents);
            file.resize(file.len().next_multiple_of(512), 0);
        }
        file.resize(file.len() + 1024, 0);
        // Written beside, then renamed: clamd never reads half a database.
        let db = self.dir.path().join("db");
        std::fs::write(self.dir.path().join("daily.cud"), file).unwrap();
        std::fs::rename(self.dir.path().join("daily.cud"), db.join("daily.cud")).unwrap();
    }

    /// Publishes a new daily database holding the signatures before and `added` (a name, and
    /// bytes matched anywhere in a file), and has clamd load it with `RELOAD`, as after a
    /// freshclam update; returns once clamd's `VERSION` names the new database.
    pub fn update_signatures(&mut self, added: &[(&str, &[u8])]) {
        self.daily_version += 1;
        self.daily.extend(added.iter().map(|(name, bytes)| format!("{name}:0:*:{}", hex(bytes))));
        self.write_daily();
        assert_eq!(self.command("zRELOAD"), "RELOADING");
        let expected = format!("/{}/", self.daily_version);
        let deadline = Instant::now() + Duration::from_secs(60);
        // clamd says nothing when a reload is done; its version changes then.
        while !self.command("zVERSION").contains(&expected) {
            assert!(Instant::now() < deadline, "clamd did not load daily version {}", self.daily_version);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// clamd's `VERSION` answer (`ClamAV 1.4.6/1/…`).
    pub fn version(&self) -> String {
        self.command("zVERSION")
    }

    /// One command and its NUL-terminated answer.
    fn command(&self, command: &str) -> String {
        let mut stream = UnixStream::connect(self.socket()).expect("clamd's socket");
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(command.as_bytes()).unwrap();
        stream.write_all(b"\0").unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).unwrap();
        String::from_utf8_lossy(&answer).trim_end_matches('\0').to_owned()
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A ustar header for a regular file (POSIX.1-1988: octal fields, the checksum summed with its
/// own field as spaces).
fn tar_header(name: &str, size: usize, mtime: u64) -> [u8; 512] {
    let mut block = [0u8; 512];
    let mut put = |at: usize, value: &[u8]| block[at..at + value.len()].copy_from_slice(value);
    put(0, name.as_bytes());
    put(100, b"0000644\0");
    put(108, b"0000000\0");
    put(116, b"0000000\0");
    put(124, format!("{size:011o}\0").as_bytes());
    put(136, format!("{mtime:011o}\0").as_bytes());
    put(148, b"        ");
    put(156, b"0");
    put(257, b"ustar\0");
    put(263, b"00");
    let sum: u32 = block.iter().map(|&b| u32::from(b)).sum();
    block[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    block
}

impl Drop for Clamd {
    fn drop(&mut self) {
        self.stop();
    }
}
