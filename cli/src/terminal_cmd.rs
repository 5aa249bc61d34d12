//! The broadcaster's commands: arguments, the profile in use, and the account and clock
//! commands (`login`, `time`, `carrier`, `completions`). Booking and the reservation
//! commands are in `terminal_book`.
//!
//! Contract: every command resolves its profile once ([`Ctx`]): `--profile` / `SLOTCAST_PROFILE`
//! (default `default`), with `--api` / `SLOTCAST_API` and `--token` / `SLOTCAST_TOKEN` over
//! what the profile stores. Output for people goes to stdout; `--json` prints the API's
//! answer (or the command's own object) instead; errors are one line on stderr, and the exit
//! code says what kind ([`TerminalError::exit_code`]).

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde_json::{json, Value};
use slotcast_terminal::client::{Client, Reply};
use slotcast_terminal::clock::{self, Offset};
use slotcast_terminal::store::{Dirs, Profile, Profiles, Setting};
use slotcast_terminal::{view, TerminalError};
use slotcast_wire::{ReservationDto, ReservationStatus, ServerList, ServerTime, SyncState};

use crate::config::Env;
use crate::terminal_book;

/// Options every broadcaster command takes.
#[derive(Args, Clone, Default)]
pub struct Globals {
    /// Profile to use (several API accounts side by side).
    #[arg(long, global = true, env = "SLOTCAST_PROFILE")]
    pub profile: Option<String>,
    /// API address, over the profile's (e.g. https://slotcast.example).
    #[arg(long, global = true, env = "SLOTCAST_API")]
    pub api: Option<String>,
    /// API token, over the profile's.
    #[arg(long, global = true, env = "SLOTCAST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

/// Written by hand: `--token` is a secret.
impl std::fmt::Debug for Globals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Globals")
            .field("profile", &self.profile)
            .field("api", &self.api)
            .field("token", &self.token.as_ref().map(|_| "(hidden)"))
            .field("json", &self.json)
            .finish()
    }
}

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
    /// One reservation, and what this terminal stored for it.
    Show { id: String },
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
    /// A server's day, as a timeline in your time zone.
    Schedule {
        server: String,
        /// The day (YYYY-MM-DD, local); today by default.
        #[arg(long)]
        date: Option<String>,
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

/// The profile in use and where the files are.
pub struct Ctx {
    pub globals: Globals,
    pub dirs: Dirs,
    pub profile_name: String,
    pub profiles: Profiles,
}

impl Ctx {
    pub fn new(globals: Globals, env: &Env) -> Result<Self, TerminalError> {
        let dirs = dirs(env)?;
        let profiles = Profiles::load(&dirs)?;
        let profile_name = globals.profile.clone().unwrap_or_else(|| "default".into());
        Ok(Self {
            globals,
            dirs,
            profile_name,
            profiles,
        })
    }

    pub fn profile(&self) -> Option<&Profile> {
        self.profiles.profiles.get(&self.profile_name)
    }

    /// The API client for this command: flags and environment over the profile.
    pub fn client(&self) -> Result<Client, TerminalError> {
        let profile = self.profile();
        let api = self
            .globals
            .api
            .clone()
            .or_else(|| profile.map(|p| p.api.clone()))
            .ok_or_else(|| {
                TerminalError::Usage(format!(
                    "no API for profile {}: run `slotcast login --api URL --token TOKEN` first \
                     (or pass --api and --token)",
                    self.profile_name
                ))
            })?;
        let token = self
            .globals
            .token
            .clone()
            .or_else(|| profile.map(|p| p.token.clone()));
        Client::new(&api, token.as_deref())
    }

    /// The server's time now, by this terminal's clock corrected with the stored offset.
    pub fn server_now(&self) -> DateTime<Utc> {
        let now = Utc::now();
        self.offset().map_or(now, |o| o.server_time(now))
    }

    pub fn offset(&self) -> Option<Offset> {
        self.profile().and_then(|p| p.clock)
    }

    /// Stores a new clock measurement in the profile (if the profile exists).
    pub fn remember_offset(&mut self, offset: Offset) -> Result<(), TerminalError> {
        if let Some(profile) = self.profiles.profiles.get_mut(&self.profile_name) {
            profile.clock = Some(offset);
            self.profiles.save(&self.dirs)?;
        }
        Ok(())
    }

    pub fn print_json(&self, value: &Value) {
        println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
        );
    }
}

/// The API's answer as it was sent, with the terminal's own fields added (for `--json`). An
/// answer that is not an object (it has been read as one, so it is) is left as it is.
pub fn with_fields<const N: usize>(mut answer: Value, fields: [(&str, Value); N]) -> Value {
    if let Value::Object(map) = &mut answer {
        for (name, value) in fields {
            map.insert(name.to_string(), value);
        }
    }
    answer
}

fn dirs(env: &Env) -> Result<Dirs, TerminalError> {
    let home = env.get("HOME");
    let pick = |xdg: &str, fallback: &str| {
        env.get(xdg)
            .map(std::path::PathBuf::from)
            .or_else(|| home.map(|h| std::path::Path::new(h).join(fallback)))
            .map(|d| d.join("slotcast"))
            .ok_or_else(|| TerminalError::Usage(format!("set HOME or {xdg}")))
    };
    Ok(Dirs {
        config: pick("XDG_CONFIG_HOME", ".config")?,
        data: pick("XDG_DATA_HOME", ".local/share")?,
    })
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
        other => terminal_book::run(other, &mut ctx).await,
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

/// "Your clock is 1.832 s behind the server (±4 ms; server synced to NTP ntp1:123, stratum 2)."
pub fn with_sync(offset: &Offset, server_time: &ServerTime) -> String {
    offset.describe_with(&server_sync(server_time))
}

/// "server synced to NTP 127.0.0.1:11123, stratum 8" from a `server_time`.
pub fn server_sync(server_time: &ServerTime) -> String {
    let ntp = server_time.ntp.as_ref();
    let at = ntp.map_or("?", |n| n.server.as_str());
    let stratum = ntp.map_or(String::new(), |n| format!(", stratum {}", n.stratum));
    match server_time.state {
        SyncState::Synced => format!("server synced to NTP {at}{stratum}"),
        SyncState::Stale => {
            format!("server NOT freshly synced: its last NTP sync ({at}{stratum}) is stale")
        }
        SyncState::Unsynced => {
            "server NOT synced to NTP: it runs on its own system clock".to_string()
        }
    }
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
