//! Setting info obtained elsewhere (the console's "Copy for slotcast import", or the API's
//! answer to a booking or to a key rotation), read, checked, and made into the [`Setting`]
//! `slotcast book` would have stored.
//!
//! Contract: pure: text and the reservation as the API answers it now go in, a `Setting` (or
//! an error naming what is missing or wrong) comes out; nothing here touches a file or the
//! network. The document gives the reservation id and the stream key (the API never repeats
//! the key); the slot, window and carriers are always the API's current ones, the document's
//! only compared with them, so a stale copy is said to be stale and never stored as it was.
//! No error and no `Debug` shows the key.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use slotcast_wire::{CarrierUrl, HistoryEntry, ReservationDto, ReservationStatus};

use crate::client::read_as;
use crate::store::{id_form, Setting};
use crate::TerminalError;

/// The largest document read: an acceptance with many carriers is a few KiB.
pub const DOCUMENT_MAX: usize = 64 * 1024;

/// The longest stream key taken (slotcast's are 32 hex digits; this only stops garbage).
const KEY_MAX: usize = 256;

/// What every refusal of a document ends with: where a good one comes from.
const WHERE_FROM: &str = "expected the JSON of the console's \"Copy for slotcast import\", \
                          or the API's answer to POST /v1/reservations or to a key rotation";

/// A document as read: the id and key to keep, and what it said of the slot (to compare).
#[derive(Clone, PartialEq)]
pub struct Document {
    pub id: String,
    pub stream_key: String,
    pub start: Option<DateTime<Utc>>,
    pub end: Option<DateTime<Utc>>,
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
    pub carriers: Vec<CarrierUrl>,
    /// The API the console that gave it was served by (the console's copy says; the API's
    /// answers do not).
    pub api: Option<String>,
    /// When the answer that gave the key was sent, on the server's clock (its
    /// `server_time`): a key rotation recorded after it replaced this key.
    pub issued_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for Document {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Document")
            .field("id", &self.id)
            .field("stream_key", &"(hidden)")
            .field("start", &self.start)
            .field("end", &self.end)
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("carriers", &self.carriers)
            .field("api", &self.api)
            .finish()
    }
}

/// The fields read from a document: the API's answer shape, with what a key rotation's
/// answer leaves out optional. Other fields (status, server_time, owner, …) are let be.
#[derive(Deserialize)]
struct Form {
    id: String,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    end: Option<DateTime<Utc>>,
    setting: slotcast_wire::Setting,
    #[serde(default)]
    api: Option<String>,
    /// Read loosely: a document without it (or with another shape) is not refused, only not
    /// checked against later rotations.
    #[serde(default)]
    server_time: Option<serde_json::Value>,
}

/// The answer's send time from its `server_time` (`t_transmit`, else `now`).
fn issued_at(server_time: Option<&serde_json::Value>) -> Option<DateTime<Utc>> {
    let t = server_time?;
    ["t_transmit", "now"].iter().find_map(|k| {
        t.get(k)?
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc))
    })
}

fn refused(what: String) -> TerminalError {
    TerminalError::Usage(format!(
        "the setting info does not read: {what}; {WHERE_FROM}"
    ))
}

/// Reads and checks a document: JSON, an object, a reservation id that can name a file, a
/// stream key, and at least one carrier.
pub fn read_document(text: &str) -> Result<Document, TerminalError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(refused("the input is empty".into()));
    }
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| refused(format!("it is not JSON ({e})")))?;
    if !value.is_object() {
        return Err(refused("it is not a JSON object".into()));
    }
    let form: Form = read_as(&value).map_err(|(field, message)| {
        refused(match message.as_str() {
            "is missing" => format!("{field} is missing"),
            // serde's own words may quote the value: for the key, that would show it.
            _ if field.ends_with("stream_key") => format!("{field} is not a string"),
            _ => format!("{field}: {message}"),
        })
    })?;
    if !id_form(&form.id) {
        return Err(refused(format!(
            "id {:?} is not a reservation id",
            form.id.chars().take(80).collect::<String>()
        )));
    }
    let key = form.setting.stream_key.ok_or_else(|| {
        refused(
            "setting.stream_key is missing (a reservation's page and GET /v1/reservations/ID \
             never show it: only the booking's answer or a key rotation's does)"
                .into(),
        )
    })?;
    if key.is_empty() {
        return Err(refused("setting.stream_key is empty".into()));
    }
    if key.len() > KEY_MAX || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(refused(
            "setting.stream_key is not a stream key (too long, or with spaces or control \
             characters: was it copied whole, and nothing else?)"
                .into(),
        ));
    }
    if form.setting.carriers.is_empty() {
        return Err(refused("setting.carriers is empty".into()));
    }
    Ok(Document {
        id: form.id,
        stream_key: key,
        start: form.start,
        end: form.end,
        opens_at: form.setting.opens_at,
        closes_at: form.setting.closes_at,
        carriers: form.setting.carriers,
        api: form.api,
        issued_at: issued_at(form.server_time.as_ref()),
    })
}

/// What a reservation's history, read newest first, says of a document's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// No rotation was recorded after the key was issued: it is the reservation's key.
    Current,
    /// A rotation recorded at this instant (server clock) replaced it: it no longer works.
    Replaced(DateTime<Utc>),
    /// The page ended with events still newer than the key: read the next (older) page.
    ReadOn,
}

/// Reads one page of the history, newest first, for a rotation after `issued_at`. An event
/// whose time does not read is passed over.
pub fn check_key(issued_at: DateTime<Utc>, newest_first: &[HistoryEntry]) -> KeyCheck {
    for event in newest_first {
        let at = event
            .data
            .get("at")
            .and_then(serde_json::Value::as_str)
            .or(event.recorded_at.as_deref())
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|d| d.with_timezone(&Utc));
        let Some(at) = at else { continue };
        if at <= issued_at {
            return KeyCheck::Current;
        }
        if event.kind == "StreamKeyRotated" {
            return KeyCheck::Replaced(at);
        }
    }
    KeyCheck::ReadOn
}

/// A part of the setting info the document gave otherwise than the API answers it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stale {
    /// The slot was moved (rescheduled) since the document was made.
    Slot,
    /// The ingest window (the slot with the server's pre-roll and grace).
    Window,
    /// The carriers or their addresses (the operator changed the server).
    Carriers,
}

impl Stale {
    pub fn name(self) -> &'static str {
        match self {
            Self::Slot => "the slot",
            Self::Window => "the ingest window",
            Self::Carriers => "the carriers",
        }
    }
}

/// The setting to store, and what of the document was stale.
#[derive(Debug)]
pub struct Imported {
    pub setting: Setting,
    pub stale: Vec<Stale>,
}

/// The setting `doc` and the reservation as the API answers it now (`current`, asked through
/// `api`) make: the document's key, everything else the API's. Refused when the reservation
/// is not the document's, or has no window left to publish into.
pub fn imported(
    doc: &Document,
    current: &ReservationDto,
    api: &str,
) -> Result<Imported, TerminalError> {
    if current.id != doc.id {
        return Err(TerminalError::Local(format!(
            "asked for reservation {}, the API answered {}",
            doc.id, current.id
        )));
    }
    let over = |why: &str| {
        TerminalError::Usage(format!(
            "reservation {} is {}: {why}; nothing stored",
            doc.id, current.status
        ))
    };
    let window = match (current.status, &current.setting) {
        (ReservationStatus::Accepted | ReservationStatus::Live, Some(window)) => window,
        (ReservationStatus::Ended | ReservationStatus::Missed, _) => {
            return Err(over("its window has closed"))
        }
        (ReservationStatus::Cancelled, _) => return Err(over("it was cancelled")),
        (ReservationStatus::Rejected, _) => return Err(over("it was never booked")),
        (_, None) => return Err(over("the API shows no window or carriers for it")),
    };
    let mut stale = Vec::new();
    let moved = |was: Option<DateTime<Utc>>, now: DateTime<Utc>| was.is_some_and(|t| t != now);
    if moved(doc.start, current.start) || moved(doc.end, current.end) {
        stale.push(Stale::Slot);
    }
    if doc.opens_at != window.opens_at || doc.closes_at != window.closes_at {
        stale.push(Stale::Window);
    }
    if doc.carriers != window.carriers {
        stale.push(Stale::Carriers);
    }
    Ok(Imported {
        setting: Setting {
            id: current.id.clone(),
            server_id: current.server_id.clone(),
            title: current.title.clone(),
            start: current.start,
            end: current.end,
            opens_at: window.opens_at,
            closes_at: window.closes_at,
            stream_key: doc.stream_key.clone(),
            carriers: window.carriers.clone(),
            api: api.to_string(),
        },
        stale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use slotcast_wire::CarrierUrls;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn carrier(name: &str, host: &str) -> serde_json::Value {
        let url = format!("rtsp://{host}:8554/live/r-1");
        json!({"carrier": name, "url": url, "urls": {"rtsp": url}})
    }

    /// The API's answer to a booking, as the console copies it (with `api`).
    fn acceptance() -> serde_json::Value {
        json!({
            "id": "r-1", "status": "accepted", "server_id": "s1", "title": "Evening",
            "start": "2030-01-01T12:00:00.000Z", "end": "2030-01-01T12:30:00.000Z",
            "setting": {
                "stream_key": KEY,
                "opens_at": "2030-01-01T11:59:00.000Z", "closes_at": "2030-01-01T12:31:00.000Z",
                "carriers": [carrier("carrier-a", "127.0.0.2"), carrier("carrier-b", "127.0.0.3")],
            },
            "server_time": {"now": "2030-01-01T11:00:00Z"},
            "api": "http://127.0.0.1:8080",
        })
    }

    fn current(doc: &serde_json::Value) -> ReservationDto {
        let mut r = doc.clone();
        r["owner"] = json!("alice");
        r["setting"]["stream_key"] = serde_json::Value::Null;
        r["requested_at"] = json!("2030-01-01T11:00:00Z");
        r["updated_at"] = json!("2030-01-01T11:00:00Z");
        serde_json::from_value(r).unwrap()
    }

    fn refusal(doc: &str) -> String {
        let err = read_document(doc).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let shown = err.to_string();
        assert!(!shown.contains(KEY), "the key shown in {shown}");
        shown
    }

    #[test]
    fn a_booking_answer_reads_and_becomes_what_book_would_have_stored() {
        let doc = read_document(&acceptance().to_string()).unwrap();
        assert_eq!(doc.id, "r-1");
        assert_eq!(doc.api.as_deref(), Some("http://127.0.0.1:8080"));
        assert!(!format!("{doc:?}").contains(KEY));
        let got = imported(&doc, &current(&acceptance()), "http://x").unwrap();
        assert_eq!(got.stale, []);
        let s = &got.setting;
        assert_eq!((s.id.as_str(), s.server_id.as_str()), ("r-1", "s1"));
        assert_eq!(s.stream_key, KEY);
        assert_eq!(s.title.as_deref(), Some("Evening"));
        assert_eq!(s.opens_at, t("2030-01-01T11:59:00Z"));
        assert_eq!(s.carriers.len(), 2);
        assert_eq!(
            s.carriers[1].urls,
            CarrierUrls {
                rtsp: "rtsp://127.0.0.3:8554/live/r-1".into(),
                ..CarrierUrls::default()
            }
        );
        assert_eq!(s.api, "http://x");
    }

    #[test]
    fn a_key_rotations_answer_reads_too() {
        let a = acceptance();
        let rotated =
            json!({"id": "r-1", "setting": a["setting"], "server_time": a["server_time"]});
        let doc = read_document(&rotated.to_string()).unwrap();
        assert_eq!((doc.start, doc.end), (None, None));
        let got = imported(&doc, &current(&a), "http://x").unwrap();
        assert_eq!(got.stale, [], "no slot in the document is no stale slot");
    }

    #[test]
    fn a_stale_document_takes_the_apis_slot_window_and_carriers_and_says_so() {
        let doc = read_document(&acceptance().to_string()).unwrap();
        let mut now = acceptance();
        now["start"] = json!("2030-01-01T13:00:00Z");
        now["end"] = json!("2030-01-01T13:30:00Z");
        now["setting"]["opens_at"] = json!("2030-01-01T12:59:00Z");
        now["setting"]["closes_at"] = json!("2030-01-01T13:31:00Z");
        now["setting"]["carriers"] = json!([carrier("carrier-c", "127.0.0.4")]);
        let got = imported(&doc, &current(&now), "http://x").unwrap();
        assert_eq!(got.stale, [Stale::Slot, Stale::Window, Stale::Carriers]);
        assert_eq!(got.setting.start, t("2030-01-01T13:00:00Z"));
        assert_eq!(got.setting.closes_at, t("2030-01-01T13:31:00Z"));
        assert_eq!(got.setting.carriers[0].carrier, "carrier-c");
        assert_eq!(got.setting.stream_key, KEY, "the key is the document's");
    }

    #[test]
    fn a_reservation_with_nothing_left_to_publish_into_is_refused() {
        let doc = read_document(&acceptance().to_string()).unwrap();
        for (status, why) in [
            ("cancelled", "it was cancelled"),
            ("ended", "its window has closed"),
            ("missed", "its window has closed"),
        ] {
            let mut now = acceptance();
            now["status"] = json!(status);
            let err = imported(&doc, &current(&now), "http://x").unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("reservation r-1 is {status}: {why}; nothing stored")
            );
        }
        let mut live = acceptance();
        live["status"] = json!("live");
        assert!(imported(&doc, &current(&live), "http://x").is_ok());
        let mut other = acceptance();
        other["id"] = json!("r-2");
        assert!(imported(&doc, &current(&other), "http://x").is_err());
    }

    /// Each wrong or partial document, and the words that name what is wrong.
    #[test]
    fn a_key_rotated_after_the_document_was_made_is_found() {
        let entry = |kind: &str, at: &str| HistoryEntry {
            sequence: 0,
            kind: kind.into(),
            recorded_at: Some(at.into()),
            actor: None,
            request_id: None,
            data: json!({"at": at}),
        };
        let doc = read_document(&acceptance().to_string()).unwrap();
        let issued = doc.issued_at.expect("the answer's server_time");
        assert_eq!(issued, t("2030-01-01T11:00:00Z"));
        // Newest first: a report, then a rotation after the key was issued.
        let later = [
            entry("IngestReported", "2030-01-01T11:30:00Z"),
            entry("StreamKeyRotated", "2030-01-01T11:20:00Z"),
            entry("ReservationAccepted", "2030-01-01T10:59:59Z"),
        ];
        assert_eq!(
            check_key(issued, &later),
            KeyCheck::Replaced(t("2030-01-01T11:20:00Z"))
        );
        // The rotation that issued this very key comes before its answer: current.
        let own = [
            entry("IngestReported", "2030-01-01T11:30:00Z"),
            entry("StreamKeyRotated", "2030-01-01T10:59:59Z"),
        ];
        assert_eq!(check_key(issued, &own), KeyCheck::Current);
        // Only newer events on this page: the next page decides.
        assert_eq!(check_key(issued, &later[..1]), KeyCheck::ReadOn);
        // A hand-made document without server_time is not checked.
        let mut bare = acceptance();
        bare.as_object_mut().unwrap().remove("server_time");
        assert_eq!(read_document(&bare.to_string()).unwrap().issued_at, None);
    }

    #[test]
    fn a_wrong_or_partial_document_is_refused_naming_what_is_missing() {
        let without = |path: &[&str]| {
            let mut doc = acceptance();
            let (last, parents) = path.split_last().unwrap();
            let mut at = &mut doc;
            for p in parents {
                at = &mut at[*p];
            }
            at.as_object_mut().unwrap().remove(*last);
            doc.to_string()
        };
        let with = |path: &[&str], value: serde_json::Value| {
            let mut doc = acceptance();
            let mut at = &mut doc;
            for p in path {
                at = &mut at[*p];
            }
            *at = value;
            doc.to_string()
        };
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "the input is empty"),
            ("  \n".into(), "the input is empty"),
            (
                "{\"id\": \"r-1\",".into(),
                "it is not JSON (EOF while parsing",
            ),
            ("Booked r-1 on s1".into(), "it is not JSON"),
            ("[1, 2]".into(), "it is not a JSON object"),
            (without(&["id"]), "id is missing"),
            (without(&["setting"]), "setting is missing"),
            (
                without(&["setting", "stream_key"]),
                "setting.stream_key is missing (a reservation's page",
            ),
            (
                with(&["setting", "stream_key"], json!(null)),
                "setting.stream_key is missing",
            ),
            (
                with(&["setting", "stream_key"], json!("")),
                "setting.stream_key is empty",
            ),
            (
                with(&["setting", "stream_key"], json!(format!("{KEY} trailing"))),
                "setting.stream_key is not a stream key",
            ),
            (
                with(&["setting", "stream_key"], json!(7)),
                "setting.stream_key is not a string",
            ),
            (
                without(&["setting", "carriers"]),
                "setting.carriers is missing",
            ),
            (
                with(&["setting", "carriers"], json!([])),
                "setting.carriers is empty",
            ),
            (
                without(&["setting", "opens_at"]),
                "setting.opens_at is missing",
            ),
            (
                with(&["id"], json!("../../.bashrc")),
                "id \"../../.bashrc\" is not a reservation id",
            ),
            (with(&["id"], json!(12)), "id: invalid type: integer `12`"),
        ];
        for (doc, want) in cases {
            let shown = refusal(&doc);
            assert!(
                shown.starts_with(&format!("the setting info does not read: {want}")),
                "{want:?} not in {shown:?}"
            );
            assert!(shown.ends_with(WHERE_FROM), "{shown}");
        }
    }
}
