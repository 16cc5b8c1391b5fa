//! Multi-node harness for the federation tests: real `hemicycle serve` processes on loopback, each
//! with its own data directory, self-signed certificate and federation port, plus raw-HTTP helpers
//! for the client API and waits that long-poll `/sync` (never fixed sleeps).
//!
//! A node's server name is `127.0.0.1:<federation port>`: an IP literal with an explicit port, so
//! server discovery connects straight to the node's HTTPS federation listener.

pub mod clamd;
pub mod dns;
pub mod relay;
pub mod scenarios;

mod config;
mod events;
mod node;
mod png;

pub use events::*;
pub use node::Node;
pub use png::{png, png_size};

use std::{
    fmt::Write as _,
    net::TcpListener,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// How long a test waits for something to show up in a sync (or a decryption to succeed).
pub const SYNC_WAIT: Duration = Duration::from_secs(30);

/// The password of every account the harness registers.
pub const PASSWORD: &str = "pw";

/// Start-up readiness: the client line on stdout, then the federation listener answering.
const PRINT_WAIT: Duration = Duration::from_secs(60);
const FEDERATION_READY_WAIT: Duration = Duration::from_secs(30);
/// How long a Synapse may take to start (it migrates its SQLite schema first).
const SYNAPSE_READY_WAIT: Duration = Duration::from_secs(120);

/// Upper bound of one plain (not long-poll) HTTP request; remote joins and media go over
/// federation, so this is generous.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest single `/sync` long-poll inside a wait.
const LONG_POLL: Duration = Duration::from_secs(10);

/// The sync filter of the harness: a timeline large enough that no wait in the scenarios sees a
/// gap (a limited timeline) where it expects every event.
const TIMELINE_FILTER: &str = r#"{"room":{"timeline":{"limit":100}}}"#;

/// The `hemicycle` binary: `$HEMICYCLE_BIN`, or `<target>/<profile>/hemicycle` next to the
/// `deps/` folder the test executable runs from.
pub fn hemicycle_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("HEMICYCLE_BIN") {
        let path = PathBuf::from(path);
        assert!(path.is_file(), "HEMICYCLE_BIN={} is not a file", path.display());
        return path;
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().expect("the test executable's folder");
    let in_deps = dir.file_name().is_some_and(|name| name == "deps");
    let profile_dir = if in_deps { dir.parent().unwrap_or(dir) } else { dir };
    let bin = profile_dir.join(format!("hemicycle{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "no hemicycle binary at {} (derived from the test executable {}): build it first \
         (`cargo build -p hemicycle`, which `cargo nextest run --workspace` does) or set HEMICYCLE_BIN",
        bin.display(),
        exe.display()
    );
    bin
}

/// Percent-encodes everything but the unreserved characters: for path segments (room ids,
/// aliases, user ids, server names with their port) and query values.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// A port that was free a moment ago on 127.0.0.1 (the probe listener is dropped before returning).
///
/// Taken below the kernel's ephemeral range (32768 and up on Linux), never from it: a port the
/// kernel handed out for a probe on port 0 is handed out again for the next outgoing connection
/// of any test running in parallel, and a node then fails to bind its federation listener
/// ("address already in use", seen in a full run). Where a search starts is spread by the
/// process id and a counter so that parallel test processes do not probe the same ports.
pub fn free_port() -> u16 {
    const FIRST: u32 = 20_000;
    const COUNT: u32 = 12_000;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let spread = std::process::id().wrapping_mul(7_919) as u64 + NEXT.fetch_add(97, Ordering::Relaxed);
    for step in 0..COUNT as u64 {
        let port = (FIRST as u64 + (spread + step) % COUNT as u64) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {FIRST} and {}", FIRST + COUNT);
}

/// A fresh transaction id for `PUT /send` (unique within the test process).
fn next_txn() -> String {
    static TXN: AtomicU64 = AtomicU64::new(0);
    format!("fedtest{}", TXN.fetch_add(1, Ordering::Relaxed))
}

/// A small seeded generator (xorshift64*) for randomized tests: a failure prints its seed and
/// the same seed replays the same choices.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::png::{adler32, crc32};

    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(enc("!room:127.0.0.1:8448"), "%21room%3A127.0.0.1%3A8448");
        assert_eq!(enc("#pub:127.0.0.1:1"), "%23pub%3A127.0.0.1%3A1");
        assert_eq!(enc("$ev/+="), "%24ev%2F%2B%3D");
        assert_eq!(enc("a-b_c.d~e"), "a-b_c.d~e");
    }

    #[test]
    fn join_path_lists_every_server() {
        let via = ["127.0.0.1:1".to_owned(), "127.0.0.1:2".to_owned()];
        assert_eq!(
            join_path("!r:127.0.0.1:1", &via),
            "/_matrix/client/v3/join/%21r%3A127.0.0.1%3A1?server_name=127.0.0.1%3A1&server_name=127.0.0.1%3A2"
        );
        assert_eq!(join_path("#a:b", &[]), "/_matrix/client/v3/join/%23a%3Ab");
    }

    #[test]
    fn checksums_match_known_values() {
        // Reference values: crc32("123456789") and adler32("Wikipedia").
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
        // The IEND chunk's CRC every PNG ends with.
        assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    }

    #[test]
    fn png_header_reads_back() {
        let image = png(64, 32);
        assert_eq!(png_size(&image), Some((64, 32)));
        assert!(image.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xAE, 0x42, 0x60, 0x82]));
        assert_eq!(png_size(b"not a png at all, not at all"), None);
    }
}
