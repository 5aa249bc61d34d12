//! What the terminal keeps on disk: profiles (API address, token, carrier preset, clock
//! offset) in the config dir, and each booked reservation's setting info in the data dir.
//!
//! Contract: every file holding a token or a stream key is written whole to a temporary file
//! created with mode 0600 in the same directory, then renamed over the old one, so a reader
//! never sees half a file and nobody else can read it; directories are created 0700. Paths
//! come in resolved ([`Dirs`]); nothing here reads the environment.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slotcast_wire::Accepted;

use crate::clock::Offset;
use crate::TerminalError;

/// Where the terminal's files live: `$XDG_CONFIG_HOME/slotcast` (else `~/.config/slotcast`)
/// and `$XDG_DATA_HOME/slotcast` (else `~/.local/share/slotcast`).
#[derive(Clone, Debug)]
pub struct Dirs {
    pub config: PathBuf,
    pub data: PathBuf,
}

impl Dirs {
    pub fn profiles_file(&self) -> PathBuf {
        self.config.join("profiles.toml")
    }

    pub fn reservations_dir(&self) -> PathBuf {
        self.data.join("reservations")
    }

    pub fn reservation_file(&self, id: &str) -> PathBuf {
        self.reservations_dir().join(format!("{id}.json"))
    }
}

/// One API account the terminal talks to. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub api: String,
    pub token: String,
    /// The carrier `live` connects over (`carrier use`); the first one when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    /// The last `slotcast time` measurement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clock: Option<Offset>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Profiles {
    #[serde(default)]
    pub profiles: BTreeMap<String, Profile>,
}

/// A carrier's connection info as booked: stored as the API answered it.
pub use slotcast_wire::CarrierUrl;

/// A reservation's setting info, as the booking (or a key rotation) answered it. Its `Debug`
/// never shows the stream key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Setting {
    pub id: String,
    pub server_id: String,
    #[serde(default)]
    pub title: Option<String>,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub stream_key: String,
    pub carriers: Vec<CarrierUrl>,
    /// The API it was booked through.
    pub api: String,
}

impl std::fmt::Debug for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Profile")
            .field("api", &self.api)
            .field("token", &"(hidden)")
            .field("carrier", &self.carrier)
            .field("clock", &self.clock)
            .finish()
    }
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("id", &self.id)
            .field("server_id", &self.server_id)
            .field("title", &self.title)
            .field("start", &self.start)
            .field("end", &self.end)
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("stream_key", &"(hidden)")
            .field("carriers", &self.carriers)
            .field("api", &self.api)
            .finish()
    }
}

fn io(what: &str, path: &Path, err: std::io::Error) -> TerminalError {
    TerminalError::Local(format!("{what} {}: {err}", path.display()))
}

fn ensure_dir(dir: &Path) -> Result<(), TerminalError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io("cannot create", dir, e))
}

/// Writes `bytes` to `path` (mode 0600) through a temporary file and a rename.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), TerminalError> {
    let dir = path
        .parent()
        .ok_or_else(|| TerminalError::Local(format!("{} has no directory", path.display())))?;
    ensure_dir(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io("cannot write", path, err));
    }
    Ok(())
}

fn read_optional(path: &Path) -> Result<Option<String>, TerminalError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(io("cannot read", path, err)),
    }
}

impl Profiles {
    pub fn load(dirs: &Dirs) -> Result<Self, TerminalError> {
        let path = dirs.profiles_file();
        match read_optional(&path)? {
            None => Ok(Self::default()),
            Some(text) => toml::from_str(&text)
                .map_err(|e| TerminalError::Local(format!("{}: {e}", path.display()))),
        }
    }

    pub fn save(&self, dirs: &Dirs) -> Result<(), TerminalError> {
        let text = toml::to_string(self)
            .map_err(|e| TerminalError::Local(format!("cannot encode profiles: {e}")))?;
        write_private(&dirs.profiles_file(), text.as_bytes())
    }
}

/// Whether `id` has the form of a reservation id (1 to 64 of `A-Z a-z 0-9 - _`), so that it
/// can name a file: a path separator or `..` never gets that far.
pub(crate) fn id_form(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl Setting {
    /// The setting info of an acceptance, with the stream key it showed (the caller makes
    /// sure there was one).
    pub fn booked(accepted: &Accepted, stream_key: String, api: &str) -> Self {
        Self {
            id: accepted.id.clone(),
            server_id: accepted.server_id.clone(),
            title: accepted.title.clone(),
            start: accepted.start,
            end: accepted.end,
            opens_at: accepted.setting.opens_at,
            closes_at: accepted.setting.closes_at,
            stream_key,
            carriers: accepted.setting.carriers.clone(),
            api: api.to_string(),
        }
    }

    pub fn save(&self, dirs: &Dirs) -> Result<PathBuf, TerminalError> {
        // The id comes from the server's answer: check it before it names a file.
        if !id_form(&self.id) {
            return Err(TerminalError::Local(format!(
                "the server answered a reservation id that cannot name a file: {:?}",
                self.id
            )));
        }
        let path = dirs.reservation_file(&self.id);
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| TerminalError::Local(format!("cannot encode the setting: {e}")))?;
        write_private(&path, &json)?;
        Ok(path)
    }

    /// The stored setting of reservation `id`; `None` if this terminal never booked it.
    pub fn load(dirs: &Dirs, id: &str) -> Result<Option<Self>, TerminalError> {
        if !id_form(id) {
            return Err(TerminalError::Usage(format!(
                "{id:?} is not a reservation id"
            )));
        }
        let path = dirs.reservation_file(id);
        match read_optional(&path)? {
            None => Ok(None),
            Some(text) => serde_json::from_str(&text)
                .map(Some)
                .map_err(|e| TerminalError::Local(format!("{}: {e}", path.display()))),
        }
    }

    /// The carrier to connect over: `preset` if the reservation has it, else the first.
    pub fn carrier(&self, preset: Option<&str>) -> Result<&CarrierUrl, TerminalError> {
        match preset {
            Some(name) => self.carriers.iter().find(|c| c.carrier == name).ok_or_else(|| {
                TerminalError::Usage(format!(
                    "carrier {name} is not one of this reservation's ({}); `slotcast carrier use NAME` picks another",
                    self.carriers.iter().map(|c| c.carrier.as_str()).collect::<Vec<_>>().join(", ")
                ))
            }),
            None => self
                .carriers
                .first()
                .ok_or_else(|| TerminalError::Local("the reservation has no carriers".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use slotcast_wire::CarrierUrls;
    use std::os::unix::fs::PermissionsExt;

    fn dirs(root: &Path) -> Dirs {
        Dirs {
            config: root.join("config/slotcast"),
            data: root.join("data/slotcast"),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn profiles_round_trip_and_are_private() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        assert_eq!(Profiles::load(&dirs).unwrap(), Profiles::default());
        let mut profiles = Profiles::default();
        profiles.profiles.insert(
            "default".into(),
            Profile {
                api: "http://127.0.0.1:8080".into(),
                token: "sct_secret".into(),
                carrier: Some("carrier-b".into()),
                clock: None,
            },
        );
        profiles.save(&dirs).unwrap();
        assert_eq!(Profiles::load(&dirs).unwrap(), profiles);
        assert!(
            !format!("{profiles:?}").contains("sct_secret"),
            "Debug hides the token"
        );
        assert_eq!(mode(&dirs.profiles_file()), 0o600);
        assert_eq!(mode(&dirs.config), 0o700);
        // Overwriting keeps it private and leaves no temporary file behind.
        profiles.save(&dirs).unwrap();
        assert_eq!(fs::read_dir(&dirs.config).unwrap().count(), 1);
    }

    #[test]
    fn settings_are_one_private_file_per_reservation() {
        let root = tempfile::tempdir().unwrap();
        let dirs = dirs(root.path());
        let t = DateTime::parse_from_rfc3339("2030-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let setting = Setting {
            id: "r-1".into(),
            server_id: "s1".into(),
            title: None,
            start: t,
            end: t,
            opens_at: t,
            closes_at: t,
            stream_key: "k".into(),
            carriers: vec![
                CarrierUrl {
                    carrier: "a".into(),
                    url: "rtsp://a/live/r-1".into(),
                    urls: CarrierUrls {
                        rtsp: "rtsp://a/live/r-1".into(),
                        rtmp: Some("rtmp://a/live/r-1".into()),
                        srt: Some("srt://a:9000".into()),
                        whip: None,
                    },
                },
                CarrierUrl {
                    carrier: "b".into(),
                    url: "rtsp://b/live/r-1".into(),
                    urls: CarrierUrls::default(),
                },
            ],
            api: "http://x".into(),
        };
        let path = setting.save(&dirs).unwrap();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(Setting::load(&dirs, "r-1").unwrap(), Some(setting.clone()));
        assert_eq!(Setting::load(&dirs, "r-2").unwrap(), None);
        assert!(Setting::load(&dirs, "../x").is_err());
        assert_eq!(setting.carrier(None).unwrap().carrier, "a");
        assert_eq!(setting.carrier(Some("b")).unwrap().carrier, "b");
        assert!(setting.carrier(Some("z")).is_err());
        // An id from the server that would name a file elsewhere is refused, and nothing is
        // written anywhere.
        for hostile in ["../../.bashrc", "a/b", "", ".."] {
            let mut bad = setting.clone();
            bad.id = hostile.into();
            assert!(bad.save(&dirs).is_err(), "{hostile:?}");
        }
        assert!(!root.path().join(".bashrc.json").exists());
        let shown = format!("{setting:?}");
        assert!(
            shown.contains("r-1") && !shown.contains("stream_key: \"k\""),
            "{shown}"
        );
        let stored: Vec<_> = std::fs::read_dir(dirs.reservations_dir())
            .unwrap()
            .collect();
        assert_eq!(stored.len(), 1, "only r-1's file");
    }
}
