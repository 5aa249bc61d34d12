//! The broadcaster's commands: their arguments, which command runs, and the account and
//! clock commands (`login`, `time`, `carrier`, `completions`). Booking and the reservation
//! commands are in `terminal_book`, `import` in `terminal_import`, `live` in `terminal_live`,
//! the profile in use in `terminal_ctx`.
//!
//! Contract: every command runs with its profile resolved once ([`Ctx`]). Output for people
//! goes to stdout; `--json` prints the API's answer (or the command's own object) instead;
//! errors are one line on stderr, and the exit code says what kind
//! ([`TerminalError::exit_code`]).

use clap::Subcommand;
use serde_json::{json, Value};
use slotcast_terminal::client::{Client, Reply};
use slotcast_terminal::clock;
use slotcast_terminal::store::{Profile, Setting};
use slotcast_terminal::{view, TerminalError};
use slotcast_wire::{ReservationDto, ReservationStatus, ServerList};

use crate::config::Env;
use crate::terminal_book;
use crate::terminal_ctx::{with_sync, Ctx, Globals};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Check --api URL and --token TOKEN and store them in the profile (~/.config/slotcast,
    /// mode 0600); --profile NAME keeps several side by side.
    Login,
    /// Measure this terminal's clock against the server's, and remember the difference.
    Time {
        /// Requests to sample; the one with the shortest round trip is kept.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=100))]
        samples: u32,
    },
    /// Book a slot; on acceptance, store its setting info (carriers, stream key).
    Book(terminal_book::BookArgs),
    /// Store the setting info of a booking made elsewhere (the web console, the API), so
    /// that `slotcast live` can publish with it.
    ///
    /// Reads the JSON the console's "Copy for slotcast import" gives, or the API's answer to
    /// POST /v1/reservations (or to a key rotation), from FILE or from standard input (paste,
    /// then Ctrl-D): never from an argument, so the stream key stays out of the process list
    /// and the shell's history. It checks the document (a reservation id, a stream key,
    /// carriers) and asks the API, with this profile's token, for the reservation: one that
    /// is not yours, cancelled or over is refused and nothing is stored. The slot, the ingest
    /// window and the carriers are stored as the API answers them now (a copy made before a
    /// reschedule is brought up to date, and the output says so); the key is the document's.
    /// The file is the one `slotcast book` writes (~/.local/share/slotcast/reservations/ID.json,
    /// mode 0600); setting info already stored for that reservation is replaced, and the
    /// output says so.
    Import(crate::terminal_import::ImportArgs),
    /// The carrier `live` connects over.
    Carrier {
        #[command(subcommand)]
        command: CarrierCmd,
    },
    /// Your reservations, with status, local and server time.
    Reservations {
        /// Only this status (accepted, live, ended, missed, cancelled, rejected).
        #[arg(long)]
        status: Option<ReservationStatus>,
        /// Only this server.
        #[arg(long)]
        server: Option<String>,
    },
    /// One reservation, and what this terminal stored for it (--as-of: as slotcast knew it
    /// at an instant).
    Show {
        id: String,
        /// Show it as slotcast knew it at TIME instead, from the events recorded by then:
        /// RFC 3339 (2030-01-01T12:00:00Z), local wall time (2030-01-01 21:00, or 21:00 for
        /// its last occurrence), or before the server's now (-2h, now-30m). Not after now.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        as_of: Option<String>,
    },
    /// Cancel a reservation.
    Cancel { id: String },
    /// Move a reservation: all or nothing, the old slot stays if the new one is refused.
    Reschedule(terminal_book::RescheduleArgs),
    /// Issue a new stream key (the old one stops working) and update the stored info.
    RotateKey { id: String },
    /// A reservation's audit trail: every decision and report, oldest first. The API answers
    /// it a page (1,000 events) at a time; this follows the pages to the end. Refused publish
    /// attempts show as one `refused` report a minute with counts per reason.
    History { id: String },
    /// The distribution servers and their rules.
    Servers,
    /// Go live on a reservation: wait for its window (with a countdown on the corrected
    /// clock), then publish a clip or a camera over the preset carrier until the window closes.
    Live(crate::terminal_live::LiveArgs),
    /// A server's day, as a timeline in your time zone (--as-of: as slotcast knew it at an
    /// instant).
    Schedule {
        server: String,
        /// The day (YYYY-MM-DD, local); today by default (with --as-of, that instant's day).
        #[arg(long)]
        date: Option<String>,
        /// The schedule as slotcast knew it at TIME, from the events recorded by then: RFC
        /// 3339, local wall time (21:00 alone is its last occurrence), or before the server's
        /// now (-2h, now-30m). Not after now.
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        as_of: Option<String>,
    },
    /// Print a shell completion script (e.g. `slotcast completions bash > ~/.slotcast.bash`).
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand, Debug)]
pub enum CarrierCmd {
    /// Connect over this carrier from now on (for this profile).
    Use { name: String },
    /// A reservation's carriers, the preset one marked.
    List { id: String },
}

pub async fn run(command: Command, globals: Globals, env: &Env) -> Result<(), TerminalError> {
    if let Command::Completions { shell } = command {
        let mut cli = <crate::Cli as clap::CommandFactory>::command();
        clap_complete::generate(shell, &mut cli, "slotcast", &mut std::io::stdout());
        return Ok(());
    }
    let mut ctx = Ctx::new(globals, env)?;
    match command {
        Command::Login => {
            let (Some(api), Some(token)) = (ctx.globals.api.clone(), ctx.globals.token.clone())
            else {
                return Err(TerminalError::Usage(
                    "login needs --api URL and --token TOKEN".into(),
                ));
            };
            login(&mut ctx, &api, &token).await
        }
        Command::Time { samples } => time(&mut ctx, samples).await,
        Command::Carrier {
            command: CarrierCmd::Use { name },
        } => carrier_use(&mut ctx, &name),
        Command::Carrier {
            command: CarrierCmd::List { id },
        } => carrier_list(&ctx, &id).await,
        Command::Live(args) => crate::terminal_live::live(&mut ctx, args).await,
        Command::Completions { .. } => Ok(()),
        book => reservation_command(book, &mut ctx).await,
    }
}

/// The booking and reservation commands ([`terminal_book`]).
async fn reservation_command(command: Command, ctx: &mut Ctx) -> Result<(), TerminalError> {
    let client = ctx.client()?;
    match command {
        Command::Book(args) => terminal_book::book(ctx, &client, args).await,
        Command::Import(args) => crate::terminal_import::import(ctx, &client, args).await,
        Command::Reservations { status, server } => {
            terminal_book::reservations(ctx, &client, status, server).await
        }
        Command::Show { id, as_of } => terminal_book::show(ctx, &client, &id, as_of).await,
        Command::Cancel { id } => terminal_book::cancel(ctx, &client, &id).await,
        Command::Reschedule(args) => terminal_book::reschedule(ctx, &client, args).await,
        Command::RotateKey { id } => terminal_book::rotate_key(ctx, &client, &id).await,
        Command::History { id } => terminal_book::history(ctx, &client, &id).await,
        Command::Servers => terminal_book::servers(ctx, &client).await,
        Command::Schedule {
            server,
            date,
            as_of,
        } => terminal_book::schedule(ctx, &client, &server, date, as_of).await,
        Command::Login
        | Command::Time { .. }
        | Command::Carrier { .. }
        | Command::Live(_)
        | Command::Completions { .. } => Ok(()),
    }
}

async fn login(ctx: &mut Ctx, api: &str, token: &str) -> Result<(), TerminalError> {
    let client = Client::new(api, Some(token))?;
    // Any valid token may list servers: this checks the address and the token at once.
    client.get::<ServerList>("/v1/servers").await?;
    let previous = ctx.profile().cloned();
    let profile = Profile {
        api: client.api().to_string(),
        token: token.to_string(),
        // A new API forgets the old carrier preset and clock.
        carrier: previous
            .as_ref()
            .filter(|p| p.api == client.api())
            .and_then(|p| p.carrier.clone()),
        clock: previous
            .as_ref()
            .filter(|p| p.api == client.api())
            .and_then(|p| p.clock),
    };
    ctx.profiles
        .profiles
        .insert(ctx.profile_name.clone(), profile);
    ctx.profiles.save(&ctx.dirs)?;
    let file = ctx.dirs.profiles_file();
    if ctx.globals.json {
        ctx.print_json(&json!({"profile": ctx.profile_name, "api": client.api(), "file": file}));
    } else {
        println!(
            "Logged in to {} as profile {} (token checked; saved in {}, mode 0600).",
            client.api(),
            ctx.profile_name,
            file.display()
        );
        println!("Next: `slotcast time` to check your clock against the server.");
    }
    Ok(())
}

async fn time(ctx: &mut Ctx, samples: u32) -> Result<(), TerminalError> {
    let client = ctx.client()?;
    let (offset, last, taken) = client.measure(samples).await?;
    ctx.remember_offset(offset)?;
    if ctx.globals.json {
        ctx.print_json(&json!({
            "offset_ms": offset.offset_ms,
            "delay_ms": offset.delay_ms,
            "measured_at": view::utc(offset.measured_at),
            "samples": taken,
            "server_time": last.json,
        }));
    } else {
        println!("{}", with_sync(&offset, &last.value));
        println!(
            "Best of {taken} samples (round trip {}). Later commands use the corrected clock.",
            clock::human_ms(offset.delay_ms)
        );
    }
    Ok(())
}

fn carrier_use(ctx: &mut Ctx, name: &str) -> Result<(), TerminalError> {
    let profile_name = ctx.profile_name.clone();
    let Some(profile) = ctx.profiles.profiles.get_mut(&profile_name) else {
        return Err(TerminalError::Usage(format!(
            "no profile {profile_name}: run `slotcast login` first"
        )));
    };
    profile.carrier = Some(name.to_string());
    ctx.profiles.save(&ctx.dirs)?;
    if ctx.globals.json {
        ctx.print_json(&json!({"profile": profile_name, "carrier": name}));
    } else {
        println!("`slotcast live` connects over {name} from now on (profile {profile_name}).");
    }
    Ok(())
}

async fn carrier_list(ctx: &Ctx, id: &str) -> Result<(), TerminalError> {
    let preset = ctx.profile().and_then(|p| p.carrier.clone());
    let carriers: Vec<(String, String)> = match Setting::load(&ctx.dirs, id)? {
        Some(setting) => setting
            .carriers
            .into_iter()
            .map(|c| (c.carrier, c.url))
            .collect(),
        None => {
            let shown: Reply<ReservationDto> =
                ctx.client()?.get(&format!("/v1/reservations/{id}")).await?;
            shown
                .value
                .setting
                .map(|s| s.carriers)
                .unwrap_or_default()
                .into_iter()
                .map(|c| (c.carrier, c.url))
                .collect()
        }
    };
    let chosen = preset
        .clone()
        .filter(|p| carriers.iter().any(|(c, _)| c == p))
        .or_else(|| carriers.first().map(|(c, _)| c.clone()));
    if ctx.globals.json {
        let list: Vec<Value> = carriers
            .iter()
            .map(|(c, url)| json!({"carrier": c, "url": url, "preset": Some(c) == chosen.as_ref()}))
            .collect();
        ctx.print_json(&json!({"id": id, "carriers": list}));
        return Ok(());
    }
    let mut rows = vec![vec!["".to_string(), "CARRIER".into(), "URL".into()]];
    for (carrier, url) in &carriers {
        let mark = if Some(carrier) == chosen.as_ref() {
            "*"
        } else {
            ""
        };
        rows.push(vec![mark.into(), carrier.clone(), url.clone()]);
    }
    print!("{}", view::table(&rows));
    match &preset {
        Some(p) if Some(p) != chosen.as_ref() => println!(
            "Your preset carrier {p} is not one of this reservation's; `live` would refuse."
        ),
        Some(_) => println!("* your preset (`slotcast carrier use NAME` changes it)"),
        None => println!("* used by default (no preset: `slotcast carrier use NAME` sets one)"),
    }
    Ok(())
}
