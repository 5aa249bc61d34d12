//! Where a reservation stands: the one list of reservation statuses and their words, as the
//! read model stores them, the REST API answers them and the terminal shows them.
//!
//! Contract: every word is written once, below; SQL binds [`ReservationStatus::as_str`]
//! instead of writing a word in its text, and JSON goes through serde from the same word.

use crate::spelled::spelled;

spelled! {
    /// `accepted` → `live` (a publisher connected) → `ended` (the window closed after
    /// ingest) or `missed` (it closed without any); or `rejected`, `cancelled`.
    pub enum ReservationStatus {
        /// Booked: the slot is held.
        Accepted = "accepted",
        /// A publisher (or the pulled camera) connected during the window.
        Live = "live",
        /// The window closed after ingest.
        Ended = "ended",
        /// The window closed without any ingest.
        Missed = "missed",
        /// Refused at booking; the request is kept for audit.
        Rejected = "rejected",
        /// Cancelled before its slot ended.
        Cancelled = "cancelled",
    }
}

impl ReservationStatus {
    /// Whether the reservation was accepted, whatever became of its window since: it has a
    /// window and carriers to show.
    pub const fn was_accepted(self) -> bool {
        matches!(
            self,
            Self::Accepted | Self::Live | Self::Ended | Self::Missed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_one_word_in_json_text_and_parsing() {
        for &status in ReservationStatus::ALL {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, serde_json::Value::from(status.as_str()));
            assert_eq!(status.to_string(), status.as_str());
            assert_eq!(status.as_str().parse::<ReservationStatus>(), Ok(status));
            let back: ReservationStatus = serde_json::from_value(json).unwrap();
            assert_eq!(back, status);
        }
        let mut words = ReservationStatus::WORDS.to_vec();
        words.sort_unstable();
        words.dedup();
        assert_eq!(
            words.len(),
            ReservationStatus::ALL.len(),
            "words are distinct"
        );
    }

    #[test]
    fn an_unknown_word_is_refused_with_the_words_that_are_known() {
        let err = "Accepted".parse::<ReservationStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"Accepted\" is not one of accepted, live, ended, missed, rejected, cancelled"
        );
        assert!(serde_json::from_str::<ReservationStatus>("\"gone\"").is_err());
    }
}
