//! A client of ClamAV's daemon, `clamd`, speaking its `zINSTREAM` command: the file is sent in
//! length-prefixed chunks over a Unix socket or TCP, so nothing is written to disk for clamd and
//! no file path has to be readable by its user; the answer is one NUL-terminated line.
//!
//! Every call opens its own connection (clamd serves one command per connection) and runs under a
//! deadline, so a stuck daemon costs a scan its time, never a thread.

use std::{path::PathBuf, time::Duration};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpStream, UnixStream},
};

/// Size of the chunks sent to clamd: large enough that a 50 MB file is 200 writes, small enough
/// that a scan holds little memory.
const CHUNK: usize = 256 * 1024;
/// The longest answer line read from clamd: a signature name is far shorter.
const MAX_REPLY: usize = 4096;

/// Where clamd listens (`[antivirus] clamd`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddress {
    /// `unix:///run/clamav/clamd.ctl`
    Unix(PathBuf),
    /// `tcp://127.0.0.1:3310`
    Tcp(String),
}

impl ClamdAddress {
    pub fn parse(value: &str) -> Result<Self, String> {
        if let Some(path) = value.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(format!("{value:?}: a unix socket path must be absolute (unix:///run/clamav/clamd.ctl)"));
            }
            Ok(Self::Unix(PathBuf::from(path)))
        } else if let Some(address) = value.strip_prefix("tcp://") {
            let (host, port) = address
                .rsplit_once(':')
                .ok_or_else(|| format!("{value:?}: a TCP address needs a port (tcp://127.0.0.1:3310)"))?;
            if host.is_empty() || port.parse::<u16>().is_err() {
                return Err(format!("{value:?}: expected tcp://HOST:PORT"));
            }
            Ok(Self::Tcp(address.to_owned()))
        } else {
            Err(format!("{value:?}: expected unix:///PATH or tcp://HOST:PORT"))
        }
    }
}

impl std::fmt::Display for ClamdAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(path) => write!(f, "unix://{}", path.display()),
            Self::Tcp(address) => write!(f, "tcp://{address}"),
        }
    }
}

/// What clamd said of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanOutcome {
    Clean,
    /// The name of the signature that matched, as clamd reports it (`Eicar-Test-Signature`).
    Infected(String),
}

/// Why a scan gave no verdict. None of these says anything about the file, so none is cached.
#[derive(Debug, thiserror::Error)]
pub enum ClamdError {
    #[error("clamd at {0} cannot be reached: {1}")]
    Unreachable(String, String),
    #[error("clamd did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the file is over clamd's StreamMaxLength")]
    TooLarge,
    #[error("clamd answered {0:?}")]
    Protocol(String),
    #[error("reading the file to scan failed: {0}")]
    Source(std::io::Error),
}

trait Connection: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Connection for T {}

/// A clamd to ask.
#[derive(Debug, Clone)]
pub struct Clamd {
    address: ClamdAddress,
    timeout: Duration,
}

impl Clamd {
    pub fn new(address: ClamdAddress, timeout: Duration) -> Self {
        Self { address, timeout }
    }

    pub fn address(&self) -> &ClamdAddress {
        &self.address
    }

    async fn connect(&self) -> Result<Box<dyn Connection>, ClamdError> {
        let unreachable = |e: std::io::Error| ClamdError::Unreachable(self.address.to_string(), e.to_string());
        Ok(match &self.address {
            ClamdAddress::Unix(path) => Box::new(UnixStream::connect(path).await.map_err(unreachable)?),
            ClamdAddress::Tcp(address) => Box::new(TcpStream::connect(address.as_str()).await.map_err(unreachable)?),
        })
    }

    /// clamd's version line (`ClamAV 1.4.6/…`): answers only when the daemon is up and has
    /// loaded its database.
    pub async fn version(&self) -> Result<String, ClamdError> {
        tokio::time::timeout(self.timeout.min(Duration::from_secs(5)), async {
            let mut connection = self.connect().await?;
            connection.write_all(b"zVERSION\0").await.map_err(|e| self.broken(e))?;
            read_reply(&mut connection).await.map_err(|e| self.broken(e))
        })
        .await
        .map_err(|_| ClamdError::Timeout(self.timeout))?
    }

    fn broken(&self, e: std::io::Error) -> ClamdError {
        ClamdError::Unreachable(self.address.to_string(), e.to_string())
    }

    /// Streams `source` to clamd and returns its verdict. `observe` sees every chunk as it is
    /// sent (the caller hashes it or keeps its first bytes), so the file is read once.
    pub async fn scan<R: AsyncRead + Unpin + Send>(
        &self,
        mut source: R,
        mut observe: impl FnMut(&[u8]) + Send,
    ) -> Result<ScanOutcome, ClamdError> {
        let work = async {
            let mut connection = self.connect().await?;
            connection.write_all(b"zINSTREAM\0").await.map_err(|e| self.broken(e))?;
            let mut buffer = vec![0u8; CHUNK];
            loop {
                let read = source.read(&mut buffer).await.map_err(ClamdError::Source)?;
                if read == 0 {
                    break;
                }
                observe(&buffer[..read]);
                let sent = async {
                    connection.write_all(&(read as u32).to_be_bytes()).await?;
                    connection.write_all(&buffer[..read]).await
                };
                if let Err(e) = sent.await {
                    // clamd answers and closes as soon as the stream passes its StreamMaxLength:
                    // its answer says why the write failed.
                    return match read_reply(&mut connection).await {
                        Ok(reply) => parse(&reply),
                        Err(_) => Err(self.broken(e)),
                    };
                }
            }
            connection.write_all(&0u32.to_be_bytes()).await.map_err(|e| self.broken(e))?;
            connection.flush().await.map_err(|e| self.broken(e))?;
            let reply = read_reply(&mut connection).await.map_err(|e| self.broken(e))?;
            parse(&reply)
        };
        tokio::time::timeout(self.timeout, work).await.map_err(|_| ClamdError::Timeout(self.timeout))?
    }
}

/// Reads clamd's answer: up to its NUL (z-commands) or the end of the connection.
async fn read_reply(connection: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 256];
    loop {
        let n = connection.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&byte[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            return Err(std::io::Error::other("clamd's answer is too long"));
        }
    }
    if reply.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "clamd closed without answering"));
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// `stream: OK`, `stream: <signature> FOUND`, or an error line.
fn parse(reply: &str) -> Result<ScanOutcome, ClamdError> {
    let body = reply.strip_prefix("stream:").map(str::trim);
    match body {
        Some("OK") => Ok(ScanOutcome::Clean),
        Some(found) if found.ends_with(" FOUND") => {
            let name = found.trim_end_matches(" FOUND").trim();
            Ok(ScanOutcome::Infected(if name.is_empty() { "unknown".to_owned() } else { name.to_owned() }))
        }
        _ if reply.contains("size limit exceeded") => Err(ClamdError::TooLarge),
        _ => Err(ClamdError::Protocol(reply.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_answers_are_read_as_clamd_writes_them() {
        assert_eq!(
            ClamdAddress::parse("unix:///run/clamav/clamd.ctl"),
            Ok(ClamdAddress::Unix("/run/clamav/clamd.ctl".into()))
        );
        assert_eq!(ClamdAddress::parse("tcp://127.0.0.1:3310"), Ok(ClamdAddress::Tcp("127.0.0.1:3310".into())));
        assert!(ClamdAddress::parse("unix://relative").is_err());
        assert!(ClamdAddress::parse("tcp://127.0.0.1").is_err());
        assert!(ClamdAddress::parse("127.0.0.1:3310").is_err());
        assert_eq!(parse("stream: OK").unwrap(), ScanOutcome::Clean);
        assert_eq!(
            parse("stream: Eicar-Test-Signature.UNOFFICIAL FOUND").unwrap(),
            ScanOutcome::Infected("Eicar-Test-Signature.UNOFFICIAL".into())
        );
        assert!(matches!(parse("INSTREAM size limit exceeded. ERROR"), Err(ClamdError::TooLarge)));
        assert!(matches!(parse("UNKNOWN COMMAND"), Err(ClamdError::Protocol(_))));
    }
}
