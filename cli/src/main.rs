//! `slotcast`: the one binary. The broadcaster's terminal commands, server roles and
//! administration (the benchmarks are the `slotcast-bench` binary of `bench/`).
//!
//! Contract: parses arguments and configuration once, then hands typed config to the library
//! crates. Exit codes: 0 success, 1 failure (or a refusal), 2 usage or configuration error;
//! the terminal commands add 3 (token refused) and 4 (API unreachable).

// clap writes `--help` from the arguments' doc comments as plain text, not Markdown: a URL
// pattern like rtsp://[USER@]HOST there is text for people, not a broken link.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::bare_urls)]

mod audit;
mod config;
mod rebuild_progress;
mod streamer_role;
mod terminal_book;
mod terminal_cmd;
mod terminal_ctx;
mod terminal_import;
mod terminal_live;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use slotcast_domain::Role;
use tokio_util::sync::CancellationToken;

use crate::config::Env;

#[derive(Parser)]
#[command(
    name = "slotcast",
    version,
    about = "Book live-streaming servers by the time slot, and run the slots."
)]
pub struct Cli {
    /// TOML configuration file of the server roles (environment variables override it).
    #[arg(long, global = true, env = "SLOTCAST_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    terminal: terminal_ctx::Globals,
    #[command(subcommand)]
    command: Top,
}

#[derive(Subcommand)]
enum Top {
    #[command(flatten)]
    Terminal(terminal_cmd::Command),
    /// Apply the database migrations (DATABASE_URL) and exit.
    Migrate,
    /// Run server roles until SIGTERM or Ctrl-C.
    Server {
        #[arg(value_enum)]
        role: ServerRole,
        /// Read and check the role's configuration (the --config file and the environment),
        /// say whether it is valid, and exit without starting anything.
        #[arg(long)]
        check: bool,
    },
    /// Administration: tokens, read-model rebuild.
    Admin {
        #[command(subcommand)]
        command: Admin,
    },
    /// Audit the event store: re-decide every recorded command, check the hash chains and
    /// their anchors, export a server's trail for an offline check (docs/audit.md).
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Replay each server's events, decide every recorded command again (the same event must
    /// come out), and check every hash chain against its anchors (audit_anchors, and NATS when
    /// it answers). Prints events checked, events/s, the first divergence and every changed,
    /// deleted or reordered event and truncated stream. Exit 1 when anything differs.
    Verify {
        /// Only this server.
        #[arg(long, value_name = "ID", conflicts_with = "file")]
        server: Option<String>,
        /// Count and re-decide only events recorded at or after this instant (RFC 3339).
        /// Earlier events are still replayed: the state they leave is what is decided on.
        #[arg(long, value_name = "T", value_parser = parse_instant)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// ... and at or before this one (RFC 3339).
        #[arg(long, value_name = "T", value_parser = parse_instant)]
        to: Option<chrono::DateTime<chrono::Utc>>,
        /// Check an export (`slotcast audit export`) instead, with no database.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
    },
    /// Write a server's events as JSON Lines to standard output: one event per line with its
    /// payload and metadata exactly as stored, its prev_hash and hash, then its anchors.
    Export {
        #[arg(long, value_name = "ID")]
        server: String,
        /// Only events recorded at or after this instant (RFC 3339).
        #[arg(long, value_name = "T", value_parser = parse_instant)]
        from: Option<chrono::DateTime<chrono::Utc>>,
        /// Only events recorded at or before this instant (RFC 3339); the anchors are left
        /// out, since they cover later events.
        #[arg(long, value_name = "T", value_parser = parse_instant)]
        to: Option<chrono::DateTime<chrono::Utc>>,
    },
}

fn parse_instant(text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| format!("{e}: expected RFC 3339, e.g. 2026-12-05T14:00:00Z"))
}

#[derive(Clone, Copy, ValueEnum)]
enum ServerRole {
    /// Every role in one process: the api, the scheduler, and the streamer when
    /// SLOTCAST_SERVER_ID is set.
    All,
    /// The REST API with the NTP server clock, the catch-up projector, and the consumers
    /// that record ingest reports and slot boundaries in the history (SLOTCAST_API_ADDR,
    /// default 127.0.0.1:8080; NATS_URL, default nats://127.0.0.1:4222).
    Api,
    /// The slot clock: publishes each slot's opened / closed boundary to JetStream on the
    /// NTP server clock. Any number of replicas may run (SLOTCAST_SCHEDULER_OPS_ADDR serves
    /// /healthz and /readyz when set).
    Scheduler,
    /// The distribution server for one registered server (SLOTCAST_SERVER_ID): RTSP ingest
    /// listeners, one per carrier (SLOTCAST_INGEST_LISTENERS, default
    /// carrier-a=127.0.0.1:8554), and RTMP ones when SLOTCAST_RTMP_LISTENERS lists them
    /// (carrier=ip:port,…; none by default), opened only inside reserved windows as told by
    /// NATS; LL-HLS,
    /// the watch page and /metrics for viewers (SLOTCAST_HLS_ADDR, default 127.0.0.1:8888);
    /// recordings under SLOTCAST_RECORDINGS_DIR (default: recordings in the state directory,
    /// SLOTCAST_STATE_DIR, else $XDG_STATE_HOME/slotcast, else ~/.local/state/slotcast).
    Streamer,
}

#[derive(Subcommand)]
enum Admin {
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// Replay every event into fresh read-model tables, swap them in, and print events/s
    /// (with progress and an ETA on stderr while it runs, when stderr is a terminal).
    Rebuild,
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Create a bearer token and print it (once) on stdout; only its hash is stored.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Who holds it; a distributor's name is its tenant: it sees only its own bookings.
        #[arg(long)]
        name: String,
        /// The token stops working this long after now (e.g. 30d, 12h, 1d12h); without it,
        /// it works until revoked.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
    /// Every token: id, role, holder, when created, when it expires, when it was revoked
    /// (never the token or its hash).
    List {
        /// Print JSON for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Revoke token ID (from `list`): every api refuses it within a second.
    Revoke { id: i64 },
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Operator,
    Distributor,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = Env::capture();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SLOTCAST_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new(
                    "info,sqlx::postgres::notice=warn,async_nats=warn",
                )
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("slotcast: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    if let Top::Terminal(command) = cli.command {
        return match runtime.block_on(terminal_cmd::run(command, cli.terminal, &env)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("slotcast: {err}");
                ExitCode::from(err.exit_code())
            }
        };
    }
    match runtime.block_on(run(cli, env)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("slotcast: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, env: Env) -> Result<()> {
    let file = config::read_file(cli.config.as_deref())?;
    match cli.command {
        Top::Terminal(_) => {}
        Top::Migrate => {
            let url = config::database_url(&file, &env);
            slotcast_readmodel::db::migrate(&url)
                .await
                .with_context(|| format!("cannot migrate {}", redact(&url)))?;
            println!("migrations applied");
        }
        Top::Server { role, check: true } => {
            let name = match role {
                ServerRole::All => {
                    config::all_config(&file, &env)?;
                    config::streamer_config(&file, &env)?;
                    "all"
                }
                ServerRole::Api => {
                    config::api_config(&file, &env)?;
                    "api"
                }
                ServerRole::Scheduler => {
                    config::scheduler_role_config(&file, &env)?;
                    "scheduler"
                }
                ServerRole::Streamer => {
                    config::streamer_config(&file, &env)?
                        .context("set SLOTCAST_SERVER_ID (or streamer.server_id)")?;
                    "streamer"
                }
            };
            println!("slotcast server {name}: the configuration is valid");
        }
        Top::Server {
            role: ServerRole::Scheduler,
            ..
        } => {
            let config = config::scheduler_role_config(&file, &env)?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            slotcast_api::run_scheduler(config, shutdown, |addr| match addr {
                Some(addr) => println!("slotcast scheduler running; ops on http://{addr}"),
                None => println!("slotcast scheduler running"),
            })
            .await?;
        }
        Top::Server {
            role: ServerRole::Streamer,
            ..
        } => {
            let config = config::streamer_config(&file, &env)?.context(
                "set SLOTCAST_SERVER_ID (or streamer.server_id): the registered server this \
                 streamer is",
            )?;
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            streamer_role::run(config, shutdown, streamer_role::announce).await?;
        }
        Top::Server {
            role: role @ (ServerRole::All | ServerRole::Api),
            ..
        } => {
            let (config, streamer) = match role {
                ServerRole::All => (
                    config::all_config(&file, &env)?,
                    config::streamer_config(&file, &env)?,
                ),
                _ => (config::api_config(&file, &env)?, None),
            };
            let shutdown = CancellationToken::new();
            tokio::spawn(stop_on_signal(shutdown.clone()));
            let api = slotcast_api::serve(config, shutdown.clone(), |addr| {
                println!("slotcast api listening on http://{addr}");
            });
            match streamer {
                Some(streamer) => {
                    let streamer = async {
                        let result =
                            streamer_role::run(streamer, shutdown.clone(), streamer_role::announce)
                                .await;
                        // A streamer that cannot start takes the process down with it.
                        shutdown.cancel();
                        result
                    };
                    let (api, streamer) = tokio::join!(api, streamer);
                    api?;
                    streamer?;
                }
                None => api.await?,
            }
        }
        Top::Admin {
            command:
                Admin::Token {
                    command:
                        TokenCmd::Create {
                            role,
                            name,
                            expires_in,
                        },
                },
        } => {
            let name = name.trim();
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 64,
                "--name must be 1 to 64 characters"
            );
            let pool = connect(&file, &env).await?;
            let role = match role {
                RoleArg::Operator => Role::Operator,
                RoleArg::Distributor => Role::Distributor,
            };
            let expires_at = match expires_in {
                Some(text) => {
                    let ttl = slotcast_terminal::when::parse_duration(&text)
                        .map_err(|e| anyhow::anyhow!("--expires-in: {e}"))?;
                    anyhow::ensure!(ttl > chrono::Duration::zero(), "--expires-in must be > 0");
                    Some(chrono::Utc::now() + ttl)
                }
                None => None,
            };
            let token = slotcast_api::auth::create_token_until(&pool, role, name, expires_at)
                .await
                .context("cannot store the token")?;
            println!("{token}");
        }
        Top::Admin {
            command: Admin::Token {
                command: TokenCmd::List { json },
            },
        } => {
            let pool = connect(&file, &env).await?;
            let tokens = slotcast_api::auth::list_tokens(&pool)
                .await
                .context("cannot read the tokens")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                print!("{}", token_table(&tokens, chrono::Utc::now()));
            }
        }
        Top::Admin {
            command: Admin::Token {
                command: TokenCmd::Revoke { id },
            },
        } => {
            let pool = connect(&file, &env).await?;
            let revoked = slotcast_api::auth::revoke_token(&pool, id)
                .await
                .context("cannot revoke the token")?;
            anyhow::ensure!(
                revoked,
                "no token {id} in use (see `slotcast admin token list`)"
            );
            println!("token {id} revoked");
        }
        Top::Audit { command } => return run_audit(command, &file, &env).await,
        Top::Admin {
            command: Admin::Rebuild,
        } => {
            let pool = connect(&file, &env).await?;
            let report = rebuild_progress::rebuild(&pool).await?;
            println!(
                "rebuilt the read model from {} events in {:.3} s ({:.0} events/s)",
                report.events,
                report.elapsed.as_secs_f64(),
                report.events_per_second()
            );
        }
    }
    Ok(())
}

async fn run_audit(command: AuditCmd, file: &config::FileConfig, env: &Env) -> Result<()> {
    match command {
        AuditCmd::Verify {
            file: Some(path),
            from,
            to,
            ..
        } => {
            let started = std::time::Instant::now();
            let report = audit::verify_file(&path, slotcast_domain::audit::Range { from, to })?;
            let from_file = format!("from {}", path.display());
            finish_audit(&report, started, &[from_file])
        }
        AuditCmd::Verify {
            server,
            from,
            to,
            file: None,
        } => {
            let pool = connect(file, env).await?;
            let started = std::time::Instant::now();
            let mut anchors = audit::Anchors::new();
            let mut sources = vec!["audit_anchors".to_string()];
            let stored = audit::store_anchors(&pool, server.as_deref()).await?;
            audit::add_anchors(&mut anchors, stored, "audit_anchors");
            let nats =
                slotcast_nats::connect(config::nats_config(file, env)?, "slotcast-audit").await?;
            let servers = audit::servers(&pool, server.as_deref()).await?;
            match audit::nats_anchors(&nats, &servers).await {
                Ok(published) => {
                    audit::add_anchors(&mut anchors, published, "nats");
                    sources.push("nats".to_string());
                }
                Err(why) => sources.push(format!("not on NATS: {why}")),
            }
            let scope = audit::Scope {
                server,
                range: slotcast_domain::audit::Range { from, to },
            };
            let mut progress = audit::progress(&pool).await;
            let report = audit::verify_store(&pool, &scope, anchors, &mut progress).await;
            audit::clear_progress();
            let report = report?;
            finish_audit(&report, started, &sources)
        }
        AuditCmd::Export { server, from, to } => {
            let pool = connect(file, env).await?;
            let scope = audit::Scope {
                server: Some(server),
                range: slotcast_domain::audit::Range { from, to },
            };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            let written = audit::export(&pool, &scope, &mut out).await?;
            eprintln!("exported {written} events");
            Ok(())
        }
    }
}

fn finish_audit(
    report: &slotcast_domain::audit::Report,
    started: std::time::Instant,
    sources: &[String],
) -> Result<()> {
    if audit::print(report, started.elapsed(), sources) {
        Ok(())
    } else {
        anyhow::bail!(
            "the audit found {} differing decisions and {} chain problems",
            report.divergences,
            report.findings.len()
        )
    }
}

/// A small pool on a migrated database.
async fn connect(file: &config::FileConfig, env: &Env) -> Result<sqlx::PgPool> {
    let url = config::database_url(file, env);
    slotcast_readmodel::db::migrate(&url)
        .await
        .with_context(|| format!("cannot migrate {}", redact(&url)))?;
    slotcast_readmodel::db::connect(&url, 4)
        .await
        .with_context(|| format!("cannot connect to Postgres at {}", redact(&url)))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
    shutdown.cancel();
}

/// `slotcast admin token list` for people: one line a token, with its state at `now`.
fn token_table(
    tokens: &[slotcast_api::auth::TokenRow],
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let day = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let mut out = format!(
        "{:>5}  {:<11}  {:<24}  {:<20}  {}\n",
        "id", "role", "name", "created", "state"
    );
    for t in tokens {
        let state = match (t.revoked_at, t.expires_at) {
            (Some(at), _) => format!("revoked {}", day(at)),
            (None, Some(at)) if at <= now => format!("expired {}", day(at)),
            (None, Some(at)) => format!("valid until {}", day(at)),
            (None, None) => "valid".to_string(),
        };
        out.push_str(&format!(
            "{:>5}  {:<11}  {:<24}  {:<20}  {state}\n",
            t.id,
            t.role,
            t.name,
            day(t.created_at)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn the_token_table_says_each_tokens_state_and_never_a_token() {
        use chrono::TimeZone;
        let at = |h| chrono::Utc.with_ymd_and_hms(2030, 1, 1, h, 0, 0).unwrap();
        let row = |id, expires_at, revoked_at| slotcast_api::auth::TokenRow {
            id,
            name: format!("holder-{id}"),
            role: "distributor".into(),
            created_at: at(1),
            expires_at,
            revoked_at,
        };
        let table = super::token_table(
            &[
                row(1, None, None),
                row(2, Some(at(3)), None),
                row(3, Some(at(9)), None),
                row(4, None, Some(at(2))),
            ],
            at(5),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[1].ends_with("  valid"), "{table}");
        assert!(
            lines[2].ends_with("expired 2030-01-01 03:00 UTC"),
            "{table}"
        );
        assert!(
            lines[3].ends_with("valid until 2030-01-01 09:00 UTC"),
            "{table}"
        );
        assert!(
            lines[4].ends_with("revoked 2030-01-01 02:00 UTC"),
            "{table}"
        );
    }
}
