//! `/v1/servers`: distribution servers, their carriers and their schedules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use slotcast_domain::time::serde_ms;
use slotcast_domain::{Carrier, ReservationStatus};

use crate::whole;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CarrierDto {
    pub name: String,
    pub ingest_url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmp_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub srt_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub whip_url: Option<String>,
}

impl From<Carrier> for CarrierDto {
    fn from(c: Carrier) -> Self {
        Self {
            name: c.name,
            ingest_url: c.ingest_url,
            rtmp_url: c.rtmp_url,
            srt_url: c.srt_url,
            whip_url: c.whip_url,
        }
    }
}

impl From<CarrierInput> for Carrier {
    fn from(c: CarrierInput) -> Self {
        Self {
            name: c.name,
            ingest_url: c.ingest_url,
            rtmp_url: c.rtmp_url,
            srt_url: c.srt_url,
            whip_url: c.whip_url,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CarrierInput {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
    pub name: String,
    /// `rtsp://host[:port][/path]` on the dedicated ingest network.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^rtsps?://[^/?# \\x00-\\x1f\\x7f-\\x9f]+(/[^?# \\x00-\\x1f\\x7f-\\x9f]*[^/?# \\x00-\\x1f\\x7f-\\x9f])?$",
            max_length = 200
        )
    )]
    pub ingest_url: String,
    /// `rtmp://host[:port]` (or `rtmps://`) where the carrier takes RTMP; no path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^rtmps?://([^/?#@:\\[\\] \\x00-\\x1f\\x7f-\\x9f]+|\\[[0-9A-Fa-f:.]+\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$",
            max_length = 200
        )
    )]
    pub rtmp_url: Option<String>,
    /// `srt://host:port` where the carrier takes SRT (caller mode); no path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^srt://([^/?#@:\\[\\] \\x00-\\x1f\\x7f-\\x9f]+|\\[[0-9A-Fa-f:.]+\\]):(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})$",
            max_length = 200
        )
    )]
    pub srt_url: Option<String>,
    /// `http://host[:port]` (or `https://`) where the carrier takes WHIP; no path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^https?://([^/?#@:\\[\\] \\x00-\\x1f\\x7f-\\x9f]+|\\[[0-9A-Fa-f:.]+\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$",
            max_length = 200
        )
    )]
    pub whip_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateServer {
    #[cfg_attr(feature = "openapi", schema(pattern = "^[A-Za-z0-9_-]{1,64}$"))]
    pub id: String,
    /// 1 to 200 characters, no control characters.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
            max_length = 200
        )
    )]
    pub name: String,
    /// Slots that may overlap at any instant (default 1).
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub capacity: Option<u32>,
    /// Earliest a slot may start, in seconds after the server's now (default 30).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    pub min_lead_s: Option<u64>,
    /// Longest slot (default 43200 = 12 h).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub max_duration_s: Option<u64>,
    /// Latest a slot may start, in seconds after now (default 7776000 = 90 days).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 158112000))]
    pub horizon_s: Option<u64>,
    /// Ingest opens this long before the slot (default 30).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub preroll_s: Option<u64>,
    /// Ingest stays open this long after the slot (default 10).
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub grace_s: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 16))]
    pub carriers: Vec<CarrierInput>,
    /// `http://host[:port]` (or `https://`), no path: where the server's streamer serves
    /// viewers (`/watch/<reservation id>`, `/hls/<reservation id>/…`).
    // The pattern is `whip_url`'s again: utoipa takes a pattern as a literal only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^https?://([^/?#@:\\[\\] \\x00-\\x1f\\x7f-\\x9f]+|\\[[0-9A-Fa-f:.]+\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$",
            max_length = 200
        )
    )]
    pub viewer_url: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PatchServer {
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[^\\x00-\\x1f\\x7f-\\x9f]*[^\\s\\x00-\\x1f\\x7f-\\x9f][^\\x00-\\x1f\\x7f-\\x9f]*$",
            max_length = 200
        )
    )]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "whole::opt_u32")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10000))]
    pub capacity: Option<u32>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 604800))]
    pub min_lead_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 604800))]
    pub max_duration_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 60, maximum = 158112000))]
    pub horizon_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub preroll_s: Option<u64>,
    #[serde(default, deserialize_with = "whole::opt_u64")]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 3600))]
    pub grace_s: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(min_items = 1, max_items = 16))]
    pub carriers: Option<Vec<CarrierInput>>,
    /// A new viewer address (as in registering), or `null` to remove it; left out, it stays.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "slotcast_domain::schedule::present"
    )]
    #[cfg_attr(
        feature = "openapi",
        schema(
            value_type = Option<String>,
            pattern = "^https?://([^/?#@:\\[\\] \\x00-\\x1f\\x7f-\\x9f]+|\\[[0-9A-Fa-f:.]+\\])(:(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}))?$",
            max_length = 200
        )
    )]
    pub viewer_url: Option<Option<String>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerDto {
    pub id: String,
    pub name: String,
    pub capacity: u32,
    pub min_lead_s: u64,
    pub max_duration_s: u64,
    pub horizon_s: u64,
    pub preroll_s: u64,
    pub grace_s: u64,
    pub carriers: Vec<CarrierDto>,
    /// Where the server's streamer serves viewers, when the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub viewer_url: Option<String>,
    #[serde(
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub registered_at: Option<DateTime<Utc>>,
    #[serde(
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub updated_at: Option<DateTime<Utc>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServerList {
    pub servers: Vec<ServerDto>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleSlot {
    pub reservation_id: String,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "serde_ms::serialize")]
    pub end: DateTime<Utc>,
    pub status: ReservationStatus,
    /// The slot's ingest window as it was booked (or last moved): the slot widened by the
    /// server's pre-roll and grace of that moment, which later rule changes leave alone.
    #[serde(
        default,
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub opens_at: Option<DateTime<Utc>>,
    #[serde(
        default,
        serialize_with = "serde_ms::option::serialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub closes_at: Option<DateTime<Utc>>,
    /// Only for the reservation's owner or an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Only for the reservation's owner or an operator.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    pub server_id: String,
    pub slots: Vec<ScheduleSlot>,
}
