//! `hemicycle-workspace --config workspace.toml`: the workspace appservice.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Hemicycle's workspace appservice: tasks and calendars as Matrix room state")]
struct Args {
    /// The appservice's TOML configuration (see config/workspace.toml).
    #[arg(long, default_value = "/etc/hemicycle/workspace.toml")]
    config: std::path::PathBuf,
}

#[tokio::main]
async fn main() {
    // Logs on stderr: stdout carries the one line saying where it listens.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let result = match hemicycle_appservices::config::Config::load(&args.config) {
        Ok(config) => hemicycle_appservices::run(config).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        eprintln!("hemicycle-workspace: {e}");
        std::process::exit(1);
    }
}
