//! The `hemicycle` binary: `serve` and the operator's `user` commands.

use std::{io::Read, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use hemicycle::{
    admin::{self, Command},
    config::Config,
    services::{OpenError, Services},
};

/// mimalloc returns freed pages to the system within milliseconds, so the memory of a burst
/// (argon2id takes 19 MiB per hash) does not stay with the process as glibc's arenas keep it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "hemicycle", version, about = "Matrix homeserver for public administrations")]
struct Cli {
    /// TOML configuration file; without one the embedded defaults apply (plus HEMICYCLE_* variables).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Run the homeserver.
    Serve,
    /// Manage accounts (works whether the server is running or not).
    #[command(subcommand)]
    User(UserCommand),
    /// Inspect the server itself.
    #[command(subcommand)]
    Server(ServerCommand),
    /// Inspect rooms.
    #[command(subcommand)]
    Room(RoomCommand),
    /// The LDAP directory (`[ldap]`).
    #[command(subcommand)]
    Ldap(LdapCommand),
}

#[derive(Subcommand)]
enum LdapCommand {
    /// Create, update and deactivate accounts and group memberships from the directory; prints a
    /// summary. With --dry-run it prints what it would do and changes nothing.
    Sync {
        #[arg(long)]
        dry_run: bool,
        /// For this run only, instead of `ldap.max_deactivate_ratio`: the largest share (0 to 1)
        /// of the directory's active accounts it may deactivate. Recorded in the audit log.
        #[arg(long, value_name = "R", value_parser = parse_ratio)]
        max_deactivate_ratio: Option<f64>,
    },
    /// Hand a local account (one the directory did not create, e.g. made with `hemicycle user
    /// create`) to the directory: its entry then holds its password (the local one is wiped),
    /// name, address and admin flag. Refused for the bridge's user and users an appservice holds
    /// exclusively. Recorded in the audit log.
    Link { user: String },
}

/// A share between 0 and 1.
fn parse_ratio(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(ratio) if (0.0..=1.0).contains(&ratio) => Ok(ratio),
        _ => Err(format!("{text} is not a share between 0 and 1 (e.g. 0.5)")),
    }
}

#[derive(Subcommand)]
enum ServerCommand {
    /// Print the id of the server's ed25519 signing key.
    KeyId,
    /// Print how many sync long-polls and media downloads are waiting right now.
    Waiting,
    /// Write a consistent backup (database checkpoint and media files) into a new folder, with
    /// the server running or not. Restore: stop the server, put `db/` at `database.path` and
    /// `media/` at the media path, start it.
    Backup { folder: PathBuf },
    /// Compact the database (every column family down to its last level, deleted records gone)
    /// and print the bytes of each column family's table files before and after, with the
    /// server running or not.
    Compact,
    /// Replace the signing key (server stopped); the old key stays published as an old key so
    /// events it signed still verify. Prints the new key id.
    RotateKey,
}

#[derive(Subcommand)]
enum RoomCommand {
    /// Print a room's version, forward extremities, joined members and depth.
    Info { room: String },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create an account; without --password-file a random password is generated and printed.
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// List every account.
    List,
    /// Deactivate an account (its id stays reserved).
    Deactivate { name: String },
    /// Give a deactivated account its access back (directory accounts sign in through it again).
    Reactivate { name: String },
    /// Set a new password (from --password-file, or a printed random one) and log out every session.
    ResetPassword {
        name: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

/// Exit code for configuration errors, distinct from runtime failures (1).
const CONFIG_ERROR: u8 = 2;

fn read_password_file(path: &PathBuf) -> Result<String, String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let password = text.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        return Err(format!("{} holds an empty password", path.display()));
    }
    Ok(password)
}

/// Both allocators of the process read these options from the environment when they start,
/// before `main` runs, so the process sets the ones the operator has not set and runs itself
/// again, once, with the same id. Each keeps memory the server no longer uses out of its RSS
/// (docs/performance.md):
/// - mimalloc commits its arena (1 GiB reserved at the first allocation) up front on Linux, and
///   what start-up touched in it then stays resident: 12 MB of an idle node's 31 MB.
/// - mimalloc gives pages freed by Rust code back after 10 ms, long enough for the buffers of
///   every request of a burst to be resident at once; after 1 ms they mostly are not (peak RSS
///   132 – 149 → 124 – 129 MiB in the send run, for 3 page faults more per event; with no
///   delay at all, 7 – 8 more, and 74 in a room of 300).
/// - glibc, which RocksDB allocates with, raises its threshold for using `mmap` to the size of
///   every mapped block freed, after which RocksDB's memtable blocks (1 MiB) come from its
///   heaps, where freed ones stay resident; a fixed threshold keeps them mapped and unmapped
///   (peak RSS 186 – 193 → 135 – 148 MiB, both options, in a room of 300 members).
const ALLOCATOR_OPTIONS: [(&str, &str); 3] =
    [("MIMALLOC_ARENA_EAGER_COMMIT", "0"), ("MIMALLOC_PURGE_DELAY", "1"), ("MALLOC_MMAP_THRESHOLD_", "131072")];

fn set_the_allocators_options() {
    use std::os::unix::process::CommandExt;
    let unset: Vec<_> = ALLOCATOR_OPTIONS.iter().filter(|(name, _)| std::env::var_os(name).is_none()).collect();
    if unset.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let error =
        std::process::Command::new(exe).args(std::env::args_os().skip(1)).envs(unset.iter().copied().copied()).exec();
    eprintln!("hemicycle: cannot run again with the allocators' options ({error}); going on with their defaults");
}

fn main() -> ExitCode {
    set_the_allocators_options();
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("hemicycle: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hemicycle: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Top::Serve => match hemicycle::telemetry::init(&config) {
            // The guard lives until the server has stopped, then sends the spans still buffered.
            Ok(_telemetry) => runtime.block_on(serve(config)),
            Err(e) => {
                eprintln!("hemicycle: {e}");
                return ExitCode::from(CONFIG_ERROR);
            }
        },
        Top::User(command) => match user_command(command) {
            Ok(command) => runtime.block_on(run_admin(config, command)),
            Err(e) => Err(e),
        },
        Top::Server(ServerCommand::KeyId) => runtime.block_on(run_admin(config, Command::ServerKeyId)),
        Top::Server(ServerCommand::Waiting) => runtime.block_on(run_admin(config, Command::ServerWaiting)),
        Top::Server(ServerCommand::RotateKey) => rotate_key(&config),
        Top::Server(ServerCommand::Compact) => runtime.block_on(run_admin(config, Command::ServerCompact)),
        Top::Server(ServerCommand::Backup { folder }) => match std::path::absolute(&folder) {
            Ok(path) => {
                runtime.block_on(run_admin(config, Command::ServerBackup { path: path.to_string_lossy().into_owned() }))
            }
            Err(e) => Err(format!("{}: {e}", folder.display())),
        },
        Top::Room(RoomCommand::Info { room }) => runtime.block_on(run_admin(config, Command::RoomInfo { room })),
        Top::Ldap(LdapCommand::Sync { dry_run, max_deactivate_ratio }) => match hemicycle::telemetry::init(&config) {
            Ok(_telemetry) => runtime.block_on(run_admin(config, Command::LdapSync { dry_run, max_deactivate_ratio })),
            Err(e) => Err(e),
        },
        Top::Ldap(LdapCommand::Link { user }) => runtime.block_on(run_admin(config, Command::LdapLink { name: user })),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hemicycle: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Rotates the signing key on the database directly: a running server holds the database (and
/// its key in memory), so this is refused while one runs.
fn rotate_key(config: &Config) -> Result<(), String> {
    let db = hemicycle::db::Database::open_with_budget(&config.database.path, config.database.cache_mb).map_err(
        |e| match e {
            hemicycle::db::DbError::Locked(path) => format!("the database at {path} is in use: stop the server first"),
            other => other.to_string(),
        },
    )?;
    let key_id = hemicycle::server_keys::ServerKeys::rotate(&db).map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())?;
    println!("{key_id}");
    Ok(())
}

async fn serve(config: Config) -> Result<(), String> {
    hemicycle::server::run_with(config, || {
        tokio::spawn(async {
            tokio::time::sleep(START_UP_SETTLES).await;
            release_start_up_code();
            let mut every = tokio::time::interval(FREED_HEAP_RETURNED_EVERY);
            loop {
                every.tick().await;
                return_freed_heap();
            }
        });
    })
    .await
}

/// How long after the server first answers its start-up work (consumers of the stream catching
/// up, the search index opening) is taken as over on an idle node; code a busy one runs later
/// is read back on its first use.
const START_UP_SETTLES: std::time::Duration = std::time::Duration::from_secs(10);

/// Start-up runs much code that a running server does not run again (opening 97 column
/// families, loading registrations, starting every consumer of the stream), and the kernel maps
/// the binary's code 64 KiB around each page run: 27 of an idle node's 55 MB resident were its
/// own code (docs/performance.md). Once start-up is over the server hands those pages back
/// (`MADV_PAGEOUT`); the code that runs again is read back on its first use (about 1 MB at
/// idle). Only the executable mapping of the binary itself, which is never written, so nothing
/// is lost.
fn release_start_up_code() {
    let (Ok(maps), Ok(exe)) = (std::fs::read_to_string("/proc/self/maps"), std::fs::read_link("/proc/self/exe")) else {
        return;
    };
    for line in maps.lines() {
        // `start-end perms offset device inode path`
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [range, "r-xp", _, _, _, path] = fields[..] else { continue };
        if std::path::Path::new(path) != exe {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else { continue };
        let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) else {
            continue;
        };
        // SAFETY: [start, end) is a whole mapping of this binary's code, private, read-only and
        // executable: never written, so reclaiming its pages loses nothing, and each page is read
        // back from the file when next used.
        let released = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_PAGEOUT) };
        if released != 0 {
            tracing::debug!(error = %std::io::Error::last_os_error(), "start-up code pages kept");
        }
    }
}

/// How often the C heap's free pages are handed back to the system.
const FREED_HEAP_RETURNED_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// RocksDB allocates with the C library's `malloc`, not with ours: its start-up structures for
/// 97 column families and the memtables of a busy minute leave freed chunks in the middle of
/// glibc's heap, which glibc only returns to the system from the heap's top. `malloc_trim`
/// returns every free page (2.7 MB of an idle node's 31 MB, docs/performance.md); done once
/// start-up is over and then once a minute, it costs a walk of the heap's free lists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn return_freed_heap() {
    // SAFETY: `malloc_trim` only gives free pages of glibc's own heaps back to the kernel
    // (`MADV_DONTNEED`); no allocation in use is touched, and it takes glibc's arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other C libraries have no `malloc_trim`.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn return_freed_heap() {}

fn user_command(command: UserCommand) -> Result<Command, String> {
    Ok(match command {
        UserCommand::Create { name, admin, password_file } => {
            Command::CreateUser { name, admin, password: password_file.as_ref().map(read_password_file).transpose()? }
        }
        UserCommand::List => Command::ListUsers,
        UserCommand::Deactivate { name } => Command::DeactivateUser { name },
        UserCommand::Reactivate { name } => Command::ReactivateUser { name },
        UserCommand::ResetPassword { name, password_file } => {
            Command::ResetPassword { name, password: password_file.as_ref().map(read_password_file).transpose()? }
        }
    })
}

/// Sends the command to the running server, or opens the database when no server runs.
async fn run_admin(config: Config, command: Command) -> Result<(), String> {
    let socket = config.admin_socket_path();
    let reply = admin::send(&socket, &command)
        .await
        .map_err(|e| format!("cannot talk to the running server at {}: {e}", socket.display()))?;
    let output = match reply {
        Some(reply) if reply.ok => reply.output,
        Some(reply) => return Err(reply.output),
        None => {
            let services = Services::open(config).map_err(|e| match e {
                OpenError::Database(hemicycle::db::DbError::Locked(path)) => format!(
                    "the database at {path} is held by a server whose admin socket {} does not answer",
                    socket.display()
                ),
                other => other.to_string(),
            })?;
            let result = admin::execute(&services, command).await.map_err(|e| e.to_string());
            services.db.flush().map_err(|e| e.to_string())?;
            // Close the database (and join its writer thread) before the process exits.
            drop(services);
            result?
        }
    };
    if !output.is_empty() {
        println!("{output}");
    }
    Ok(())
}
