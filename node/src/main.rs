//! `tandem`: the Tandem node daemon.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use clap::Subcommand;
use tandem_client::Client;
use tandem_node::config::ValidConfig;
use tandem_raft_store::MemberRole;

#[derive(Parser)]
#[command(name = "tandem", version, about = "Tandem hot-standby node")]
struct Cli {
    /// Log lines as text, or as one JSON object per line (for log collectors).
    #[arg(long, env = "TANDEM_LOG_FORMAT", value_parser = ["text", "json"], default_value = "text", global = true)]
    log_format: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the node until SIGTERM or SIGINT.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Bootstrap the cluster through this (running) data node; refused on the witness.
    Init {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Offline config tools.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// Validate a config file and exit (the same as `config check`).
    #[command(hide = true)]
    CheckConfig {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Remove this node's VIPs from its interfaces. For the service manager's stop step, after
    /// the node stopped (or died): a node that is not running is never the active.
    ReleaseVips {
        #[arg(short, long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Validate a config file without starting anything: every key, the secret and token
    /// files, the TLS certificates against their CA. Exit code 2 names the first problem.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn load(path: &std::path::Path) -> Result<ValidConfig, ExitCode> {
    ValidConfig::load(path).map_err(|e| {
        eprintln!("error: invalid config {}: {e}", path.display());
        ExitCode::from(2)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TANDEM_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    // Colours only on a terminal: not in files or the journal.
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    if cli.log_format == "json" {
        logs.json().with_current_span(true).with_span_list(false).init();
    } else {
        logs.init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Cmd::CheckConfig { config }
        | Cmd::Config {
            action: ConfigCmd::Check { config },
        } => match load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok (node {} \"{}\", {}; admin API on {}{}{}; {} admin token(s))",
                    config.display(),
                    c.node_id,
                    c.me().name,
                    c.role(),
                    c.admin_listen,
                    match &c.tls {
                        Some(t) if t.admin => " over TLS; peer port with mutual TLS",
                        Some(_) => "; peer port with mutual TLS",
                        None => ", no TLS",
                    },
                    c.health_listen
                        .map(|h| format!("; health routes on {h}"))
                        .unwrap_or_default(),
                    c.admin_tokens.len(),
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Cmd::ReleaseVips { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let _guard = runtime.enter();
            tandem_node::resources::vip::Identity::new(cfg.vips.clone()).clear_stale();
            println!(
                "{} VIP(s) of node \"{}\" removed where present",
                cfg.vips.len(),
                cfg.me().name
            );
            ExitCode::SUCCESS
        }
        Cmd::Run { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            match runtime.block_on(tandem_node::run(cfg, shutdown_signal())) {
                Ok(tandem_node::Exit::Stopped) => ExitCode::SUCCESS,
                Ok(tandem_node::Exit::Restart) => {
                    drop(runtime);
                    // Same pid, same arguments; every file (the store's lock included) is
                    // opened close-on-exec, so the new image starts clean.
                    let exe = std::env::current_exe().unwrap_or_else(|_| "tandem".into());
                    let err = std::process::Command::new(exe).args(std::env::args_os().skip(1)).exec();
                    eprintln!("error: cannot restart tandem in place: {err}; start it again by hand");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Init { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if cfg.role() == MemberRole::Witness {
                eprintln!("error: this config is the witness's; the witness never bootstraps the cluster. Run `tandem init` on a data node.");
                return ExitCode::from(2);
            }
            // This node's own admin API, with an admin token and its CA when it has them.
            let access = tandem_client::Access {
                token: cfg
                    .admin_tokens
                    .iter()
                    .find(|t| t.scope == tandem_node::auth::Scope::Admin)
                    .map(|t| t.secret().to_string()),
                ca_file: cfg.tls.as_ref().filter(|t| t.admin).map(|t| t.ca_file.clone()),
            };
            // An admin API on every address is reached on loopback (its certificate names
            // 127.0.0.1).
            let mut addr = cfg.admin_listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            let client = Client::with_access(addr.to_string(), &access);
            match runtime.block_on(client.init()) {
                Ok(r) => {
                    let names: Vec<String> = r
                        .members
                        .iter()
                        .map(|m| format!("{} ({}, id {})", m.name, m.kind, m.id))
                        .collect();
                    println!("cluster initialized with voters: {}", names.join(", "));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::signal;
    use tokio::signal::unix::SignalKind;
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
}
