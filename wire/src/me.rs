//! `GET /v1/me`: who the bearer token says the caller is.

use serde::{Deserialize, Serialize};

/// What a token may do, as the api decides it on every route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Registers and changes servers; sees and changes every tenant's reservations.
    Operator,
    /// Books; sees and changes only its own reservations (its name is its tenant).
    Distributor,
}

/// The caller, as its token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Me {
    /// The token's holder (`slotcast admin token create --name`); for a distributor, its
    /// tenant: the owner of the reservations it books.
    pub name: String,
    pub role: TokenRole,
}
