//! `/v1/reservations`: booking, the setting info, refusals, listings and the audit history.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slotcast_domain::time::serde_ms;
use slotcast_domain::{ReservationStatus, Window};

use crate::clock::ServerTime;
use crate::time::WireTime;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    pub server_id: String,
    pub start: WireTime,
    pub end: WireTime,
    pub title: Option<String>,
    /// A camera for the streamer to pull over the dedicated network, instead of a publisher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceRequest>,
}

/// The camera a booking names. The login is sealed at once and never shown again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SourceRequest {
    /// `rtsp://host[:port]/path`, without user info.
    pub pull_url: String,
    pub username: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>))]
    pub password: Option<Concealed>,
    /// `tcp` (the default) or `udp`.
    pub transport: Option<String>,
}

/// A secret in a request: readable by the code that sends or seals it, never by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Concealed(pub String);

impl std::fmt::Debug for Concealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Concealed(…)")
    }
}

/// The camera a reservation pulls, as shown: never its login.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SourceDto {
    pub pull_url: String,
    /// `tcp` or `udp`.
    pub transport: String,
    /// Whether a login is stored for the camera (it is never shown).
    pub login: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    pub start: WireTime,
    pub end: WireTime,
}

/// Where to connect on one carrier. `url` is the RTSP one: `ingest_url` +
/// `/live/<reservation_id>`; `urls` holds it again beside those of the other protocols the
/// carrier takes. None carries the stream key: the publisher adds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CarrierUrl {
    pub carrier: String,
    pub url: String,
    /// Absent in what a terminal stored before the other protocols: RTSP (`url`) only.
    #[serde(default)]
    pub urls: CarrierUrls,
}

/// One carrier's address per protocol, each without the key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CarrierUrls {
    /// `rtsp://host:port/live/<reservation_id>`: ANNOUNCE with `Authorization: Bearer <key>`.
    #[serde(default)]
    pub rtsp: String,
    /// `rtmp://host:port/live/<reservation_id>`: publish with `?key=<key>` after the name
    /// (OBS: server `rtmp://host:port/live`, stream key `<reservation_id>?key=<key>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp: Option<String>,
    /// `srt://host:port`: call with `streamid=#!::r=<reservation_id>,k=<key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt: Option<String>,
    /// `http://host:port/whip/<reservation_id>`: POST the offer with
    /// `Authorization: Bearer <key>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip: Option<String>,
}

impl CarrierUrls {
    /// A carrier's addresses for reservation `id`.
    pub fn of(carrier: &slotcast_domain::Carrier, id: &str) -> Self {
        Self {
            rtsp: format!("{}/live/{id}", carrier.ingest_url),
            rtmp: carrier.rtmp_url.as_ref().map(|u| format!("{u}/live/{id}")),
            srt: carrier.srt_url.clone(),
            whip: carrier.whip_url.as_ref().map(|u| format!("{u}/whip/{id}")),
        }
    }
}

impl CarrierUrl {
    /// Where to connect on `carrier` for reservation `id`.
    pub fn of(carrier: &slotcast_domain::Carrier, id: &str) -> Self {
        let urls = CarrierUrls::of(carrier, id);
        Self {
            carrier: carrier.name.clone(),
            url: urls.rtsp.clone(),
            urls,
        }
    }
}

/// The reservation's setting info: what the terminal stores to go live. Its `Debug` hides
/// the stream key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Setting {
    /// 128-bit random, shown only here (on acceptance and rotation); the server keeps a hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_key: Option<String>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub opens_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub closes_at: DateTime<Utc>,
    pub carriers: Vec<CarrierUrl>,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setting")
            .field("stream_key", &self.stream_key.as_ref().map(|_| "(hidden)"))
            .field("opens_at", &self.opens_at)
            .field("closes_at", &self.closes_at)
            .field("carriers", &self.carriers)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Accepted {
    pub id: String,
    /// Always `accepted`.
    pub status: ReservationStatus,
    pub server_id: String,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    pub title: Option<String>,
    /// The camera the streamer pulls, for a pull reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto>,
    pub setting: Setting,
    pub server_time: ServerTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct WindowDto {
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
}

impl From<&Window> for WindowDto {
    fn from(w: &Window) -> Self {
        Self {
            start: w.start,
            end: w.end,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejected {
    /// The id the refused request was recorded under (its history is auditable).
    pub id: String,
    /// Always `rejected`.
    pub status: ReservationStatus,
    /// Machine-readable: `capacity_exceeded`.
    pub reason: String,
    pub message: String,
    /// Accepted slots overlapping the requested window.
    pub conflicts: Vec<WindowDto>,
    /// Up to 3 nearest free windows of the same length.
    pub suggestions: Vec<WindowDto>,
    pub server_time: ServerTime,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationDto {
    pub id: String,
    /// `accepted` → `live` (a publisher connected) → `ended` (the window closed after ingest)
    /// or `missed` (it closed without any); or `rejected`, `cancelled`.
    pub status: ReservationStatus,
    pub server_id: String,
    pub owner: String,
    pub title: Option<String>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    /// Present for accepted reservations; the stream key is never repeated here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub setting: Option<Setting>,
    /// The camera the streamer pulls, for a pull reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The streamer's last report, once there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingest: Option<IngestDto>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub requested_at: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct IngestDto {
    /// `connected`, `disconnected` or `failed`.
    // The words of `slotcast_domain::contract::IngestKind`, as the read model stores them.
    pub state: String,
    /// The carrier the publisher came in on.
    pub carrier: Option<String>,
    /// When the api recorded the report (server clock).
    #[serde(serialize_with = "serde_ms::serialize")]
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReservationList {
    pub reservations: Vec<ReservationDto>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub sequence: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub recorded_at: Option<String>,
    pub actor: Option<String>,
    pub request_id: Option<String>,
    pub data: serde_json::Value,
}

/// A page of a reservation's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct History {
    pub reservation_id: String,
    /// Oldest first (a page asked `after`, or by default), newest first (`before`).
    pub events: Vec<HistoryEntry>,
    /// The query for the next page in the same direction; `null` on the last page.
    pub next: Option<HistoryCursor>,
}

/// Where the next page starts: pass it back as the query (`?after=12` or `?before=3`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryCursor {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RotatedKey {
    pub id: String,
    pub setting: Setting,
    pub server_time: ServerTime,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ClockSource, NtpInfo, SyncState};

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn server_time() -> ServerTime {
        ServerTime {
            t_receive: t("2030-01-01T11:59:00.000123Z"),
            t_transmit: t("2030-01-01T11:59:00.000456Z"),
            now: t("2030-01-01T11:59:00.000456Z"),
            source: ClockSource::Ntp,
            state: SyncState::Synced,
            ntp: Some(NtpInfo {
                server: "127.0.0.1:123".into(),
                stratum: 2,
                offset_ms: -1.25,
                delay_ms: 0.5,
                synced_at: t("2030-01-01T11:58:00Z"),
                agreeing: 1,
                step_refused: None,
            }),
        }
    }

    /// The wire format, byte for byte, and read back as written.
    #[test]
    fn an_acceptance_is_written_in_the_wire_format_and_read_back() {
        let accepted = Accepted {
            id: "r-1".into(),
            status: ReservationStatus::Accepted,
            server_id: "srv".into(),
            start: t("2030-01-01T12:00:00Z"),
            end: t("2030-01-01T12:30:00Z"),
            title: None,
            source: None,
            setting: Setting {
                stream_key: Some("k".into()),
                opens_at: t("2030-01-01T11:59:30Z"),
                closes_at: t("2030-01-01T12:30:10Z"),
                carriers: vec![CarrierUrl::of(
                    &slotcast_domain::Carrier {
                        rtmp_url: Some("rtmp://h:1935".into()),
                        ..slotcast_domain::Carrier::rtsp("a", "rtsp://h")
                    },
                    "r-1",
                )],
            },
            server_time: server_time(),
        };
        let text = serde_json::to_string(&accepted).unwrap();
        assert_eq!(
            text,
            r#"{"id":"r-1","status":"accepted","server_id":"srv","start":"2030-01-01T12:00:00.000Z","end":"2030-01-01T12:30:00.000Z","title":null,"setting":{"stream_key":"k","opens_at":"2030-01-01T11:59:30.000Z","closes_at":"2030-01-01T12:30:10.000Z","carriers":[{"carrier":"a","url":"rtsp://h/live/r-1","urls":{"rtsp":"rtsp://h/live/r-1","rtmp":"rtmp://h:1935/live/r-1"}}]},"server_time":{"t_receive":"2030-01-01T11:59:00.000123Z","t_transmit":"2030-01-01T11:59:00.000456Z","now":"2030-01-01T11:59:00.000456Z","source":"ntp","state":"synced","ntp":{"server":"127.0.0.1:123","stratum":2,"offset_ms":-1.25,"delay_ms":0.5,"synced_at":"2030-01-01T11:58:00.000Z","agreeing":1,"step_refused":null}}}"#
        );
        assert_eq!(serde_json::from_str::<Accepted>(&text).unwrap(), accepted);
    }

    #[test]
    fn a_reservation_without_its_optional_parts_reads_back() {
        let shown = ReservationDto {
            id: "r-2".into(),
            status: ReservationStatus::Cancelled,
            server_id: "srv".into(),
            owner: "alice".into(),
            title: Some("Morning".into()),
            start: t("2030-01-01T12:00:00Z"),
            end: t("2030-01-01T12:30:00Z"),
            setting: None,
            source: None,
            reason: None,
            ingest: None,
            requested_at: t("2030-01-01T10:00:00Z"),
            updated_at: t("2030-01-01T10:05:00Z"),
        };
        let json = serde_json::to_value(&shown).unwrap();
        assert_eq!(json["status"], "cancelled");
        assert!(json.get("setting").is_none() && json.get("ingest").is_none());
        assert_eq!(
            serde_json::from_value::<ReservationDto>(json).unwrap(),
            shown
        );
    }

    #[test]
    fn the_debug_of_a_setting_hides_its_stream_key() {
        let setting = Setting {
            stream_key: Some("0123456789abcdef0123456789abcdef".into()),
            opens_at: Utc::now(),
            closes_at: Utc::now(),
            carriers: vec![],
        };
        let shown = format!("{setting:?}");
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
        assert!(shown.contains("hidden"), "{shown}");
    }

    #[test]
    fn a_booking_request_is_written_as_the_api_reads_it() {
        let request = BookRequest {
            server_id: "srv".into(),
            start: WireTime(t("2030-01-01T12:00:00Z")),
            end: WireTime(t("2030-01-01T12:30:00Z")),
            title: None,
            source: Some(SourceRequest {
                pull_url: "rtsp://cam/stream".into(),
                username: Some("u".into()),
                password: Some(Concealed("p".into())),
                transport: None,
            }),
        };
        let text = serde_json::to_string(&request).unwrap();
        assert_eq!(
            text,
            r#"{"server_id":"srv","start":"2030-01-01T12:00:00.000Z","end":"2030-01-01T12:30:00.000Z","title":null,"source":{"pull_url":"rtsp://cam/stream","username":"u","password":"p","transport":null}}"#
        );
        assert_eq!(serde_json::from_str::<BookRequest>(&text).unwrap(), request);
        assert!(!format!("{request:?}").contains("\"p\""));
    }
}
