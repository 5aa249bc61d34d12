//! The profile a broadcaster command runs with, and the words it shares with the others.
//!
//! Contract: every command resolves its profile once ([`Ctx`]): `--profile` /
//! `SLOTCAST_PROFILE` (default `default`), with `--api` / `SLOTCAST_API` and `--token` /
//! `SLOTCAST_TOKEN` over what the profile stores. The terminal's files live under the XDG
//! directories (`$XDG_CONFIG_HOME`, `$XDG_DATA_HOME`, else under `$HOME`).

use chrono::{DateTime, Utc};
use clap::Args;
use serde_json::Value;
use slotcast_terminal::client::Client;
use slotcast_terminal::clock::Offset;
use slotcast_terminal::store::{Dirs, Profile, Profiles};
use slotcast_terminal::TerminalError;
use slotcast_wire::{ServerTime, SyncState};

use crate::config::Env;

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
