//! Operator commands (`hemicycle user …`), run the same way whether the server is up or not.
//!
//! RocksDB admits one process. When the server runs, the CLI sends the command over a Unix socket
//! in the database directory (its file permissions are the access control); when it does not, the
//! CLI opens the database itself. Both paths end in [`execute`].

use std::{io, path::Path, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use crate::{
    error::{Error, Result},
    services::Services,
};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    CreateUser {
        name: String,
        admin: bool,
        password: Option<String>,
    },
    ListUsers,
    DeactivateUser {
        name: String,
    },
    /// Gives a deactivated account its access back (the directory never does it by itself).
    ReactivateUser {
        name: String,
    },
    /// Runs the LDAP directory sync (`dry_run`: print the plan, change nothing;
    /// `max_deactivate_ratio`: instead of `ldap.max_deactivate_ratio` for this run, audited).
    LdapSync {
        dry_run: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_deactivate_ratio: Option<f64>,
    },
    /// Hands a local account to the LDAP directory (audited).
    LdapLink {
        name: String,
    },
    ResetPassword {
        name: String,
        password: Option<String>,
    },
    /// Prints the id of the server's signing key.
    ServerKeyId,
    /// Writes a consistent backup of the database and the media files into a new folder.
    ServerBackup {
        path: String,
    },
    /// Compacts the database (every column family down to its last level) and prints the bytes
    /// of table files before and after, per column family.
    ServerCompact,
    /// Prints how many requests are waiting right now: long-polling syncs, downloads of media not
    /// uploaded yet (what operators, tests and the load generator watch instead of sleeping).
    ServerWaiting,
    /// Prints a room's version, forward extremities and member counts.
    RoomInfo {
        room: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub output: String,
}

fn user_id(services: &Services, name: &str) -> Result<ruma::OwnedUserId> {
    if name.starts_with('@') {
        let id = ruma::UserId::parse(name).map_err(|e| Error::InvalidUsername(e.to_string()))?;
        if !services.users.is_local(&id) {
            return Err(Error::InvalidUsername(format!("{id} is not a user of this server")));
        }
        Ok(id)
    } else {
        services.users.user_id_for_localpart(name)
    }
}

/// Runs one command against the services.
pub async fn execute(services: &Services, command: Command) -> Result<String> {
    match command {
        Command::CreateUser { name, admin, password } => {
            let localpart = user_id(services, &name)?.localpart().to_owned();
            let (password, shown) = match password {
                Some(p) => (p, None),
                None => {
                    let p = services.users.password_policy().generate();
                    (p.clone(), Some(p))
                }
            };
            let user = services.users.create(&localpart, Some(password), admin).await?;
            Ok(match shown {
                Some(p) => format!("created {user}\npassword: {p}"),
                None => format!("created {user}"),
            })
        }
        Command::ListUsers => {
            let mut out = String::new();
            for (user, account) in services.users.list()? {
                let mut flags = Vec::new();
                if account.admin {
                    flags.push("admin");
                }
                if account.deactivated {
                    flags.push("deactivated");
                }
                out.push_str(&format!("{user}\t{}\n", flags.join(",")));
            }
            Ok(out.trim_end().to_owned())
        }
        Command::DeactivateUser { name } => {
            let user = user_id(services, &name)?;
            crate::users::deactivation::deactivate(services, &user, false).await?;
            Ok(format!("deactivated {user}"))
        }
        Command::ReactivateUser { name } => {
            let user = user_id(services, &name)?;
            services.users.reactivate(&user).await?;
            let directory = services.users.account(&user)?.is_some_and(|a| a.directory.is_some());
            Ok(match directory {
                true => format!("reactivated {user}; it signs in through the directory again"),
                false => {
                    format!("reactivated {user}; it has no password: set one with `hemicycle user reset-password`")
                }
            })
        }
        Command::LdapSync { dry_run, max_deactivate_ratio } => {
            let summary = crate::users::directory::sync_with(services, dry_run, max_deactivate_ratio).await?;
            Ok(summary.to_string().trim_end().to_owned())
        }
        Command::LdapLink { name } => {
            let user = user_id(services, &name)?;
            crate::users::directory::link(services, &user).await
        }
        Command::ServerKeyId => Ok(services.server_keys.key_id()),
        Command::ServerBackup { path } => backup(services, Path::new(&path)).await,
        Command::ServerCompact => compact(services).await,
        Command::ServerWaiting => Ok(format!(
            "syncs: {}\nmedia downloads: {}",
            services.rooms.notifier().waiting(),
            services.media.waiting_downloads()
        )),
        Command::RoomInfo { room } => {
            let room = ruma::RoomId::parse(&room).map_err(|e| Error::invalid_param(format!("invalid room id: {e}")))?;
            let record = services.rooms.room(&room)?.ok_or_else(|| Error::not_found("unknown room"))?;
            let members = services.rooms.members(&room)?;
            let joined = members.iter().filter(|(_, m)| m.membership == "join").count();
            Ok(format!(
                "version: {}\nforward_extremities: {}\njoined_members: {joined}\ndepth: {}",
                record.version,
                record.extremities.len(),
                record.depth
            ))
        }
        Command::ResetPassword { name, password } => {
            let user = user_id(services, &name)?;
            let (password, shown) = match password {
                Some(p) => (p, None),
                None => {
                    let p = services.users.password_policy().generate();
                    (p.clone(), Some(p))
                }
            };
            services.users.set_password(&user, password, true, None).await?;
            Ok(match shown {
                Some(p) => {
                    format!("password of {user} reset; every session logged out\npassword: {p}")
                }
                None => format!("password of {user} reset; every session logged out"),
            })
        }
    }
}

/// Compacts the store on a blocking thread; the answer lists every column family holding table
/// files, largest first, with its bytes before and after, then the totals and the bytes of the
/// whole database folder (write-ahead log and manifest included).
async fn compact(services: &Services) -> Result<String, Error> {
    let db = services.db.clone();
    tokio::task::spawn_blocking(move || -> Result<String, Error> {
        let before: std::collections::HashMap<&str, u64> = db.table_sizes().into_iter().collect();
        let folder_before = db.size_on_disk();
        db.compact()?;
        let after = db.table_sizes();
        let mut out = String::from("column family\tbytes before\tbytes after\n");
        for (name, bytes) in after.iter().filter(|(name, bytes)| *bytes > 0 || before.get(name).is_some_and(|b| *b > 0))
        {
            out.push_str(&format!("{name}\t{}\t{bytes}\n", before.get(name).copied().unwrap_or(0)));
        }
        let total_after: u64 = after.iter().map(|(_, b)| b).sum();
        out.push_str(&format!("table files\t{}\t{total_after}\n", before.values().sum::<u64>()));
        out.push_str(&format!("database folder\t{folder_before}\t{}", db.size_on_disk()));
        Ok(out)
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))?
}

/// A backup folder: `db/` (a RocksDB checkpoint, consistent at one instant) and `media/` (the
/// media files, which are never changed once written, so copying them while the server runs is
/// safe; files uploaded after the checkpoint may be in the copy too, which is harmless). The
/// search index is not copied: a server rebuilds it from the database.
async fn backup(services: &Services, target: &Path) -> Result<String, Error> {
    if target.exists() {
        return Err(Error::invalid_param(format!("{} exists already: give a new folder", target.display())));
    }
    std::fs::create_dir_all(target).map_err(|e| Error::Internal(format!("cannot create {}: {e}", target.display())))?;
    let db_dir = target.join("db");
    let media_from = services.config.media_path();
    let media_to = target.join("media");
    let db = services.db.clone();
    let copied = tokio::task::spawn_blocking(move || -> Result<u64, Error> {
        db.checkpoint(&db_dir)?;
        copy_tree(&media_from, &media_to).map_err(|e| Error::Internal(format!("copying the media files failed: {e}")))
    })
    .await
    .map_err(|e| Error::Internal(e.to_string()))??;
    Ok(format!("backup written to {}: database checkpoint and {copied} media files", target.display()))
}

/// Copies the files of a folder tree (skipping uploads still in progress in `tmp/`).
fn copy_tree(from: &Path, to: &Path) -> io::Result<u64> {
    std::fs::create_dir_all(to)?;
    let mut copied = 0;
    let Ok(entries) = std::fs::read_dir(from) else { return Ok(0) };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_dir() {
            if name != "tmp" {
                copied += copy_tree(&entry.path(), &to.join(&name))?;
            }
        } else {
            std::fs::copy(entry.path(), to.join(&name))?;
            copied += 1;
        }
    }
    Ok(copied)
}

/// Serves operator commands on the admin socket until the task is dropped.
pub fn listen(services: Arc<Services>, path: &Path) -> io::Result<tokio::task::JoinHandle<()>> {
    // A socket left by a killed server would make bind fail; nobody is listening on it (we hold the
    // database lock), so it is safe to remove.
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let services = services.clone();
            tokio::spawn(async move {
                if let Err(e) = handle(&services, stream).await {
                    tracing::warn!(error = %e, "admin socket connection failed");
                }
            });
        }
    }))
}

async fn handle(services: &Services, stream: UnixStream) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    BufReader::new(read).take_line(&mut line).await?;
    let reply = match serde_json::from_str::<Command>(&line) {
        Ok(command) => match execute(services, command).await {
            Ok(output) => Reply { ok: true, output },
            Err(e) => Reply { ok: false, output: e.to_string() },
        },
        Err(e) => Reply { ok: false, output: format!("bad command: {e}") },
    };
    let mut bytes = serde_json::to_vec(&reply).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}

trait TakeLine {
    async fn take_line(&mut self, line: &mut String) -> io::Result<()>;
}

impl<R: tokio::io::AsyncRead + Unpin> TakeLine for BufReader<R> {
    /// Reads one line of at most 64 KiB.
    async fn take_line(&mut self, line: &mut String) -> io::Result<()> {
        use tokio::io::AsyncReadExt;
        let mut limited = (&mut *self).take(64 * 1024);
        let mut reader = BufReader::new(&mut limited);
        reader.read_line(line).await.map(|_| ())
    }
}

/// Sends a command to a running server. `Ok(None)` means no server listens on the socket.
pub async fn send(path: &Path, command: &Command) -> io::Result<Option<Reply>> {
    let stream = match tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(path)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
            return Ok(None)
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "the admin socket did not answer")),
    };
    let (read, mut write) = stream.into_split();
    let mut bytes = serde_json::to_vec(command).map_err(io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(120), BufReader::new(read).read_line(&mut line))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "the server did not answer the command"))??;
    serde_json::from_str(&line).map(Some).map_err(io::Error::other)
}
