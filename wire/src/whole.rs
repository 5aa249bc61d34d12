//! Whole numbers as JSON Schema counts them: `67687` and `67687.0` alike (a client that
//! writes every number as a float is within the document); `1.5` is refused.

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seen;
        impl Visitor<'_> for Seen {
            type Value = Whole;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number of at least 0")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
                Ok(Whole(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
                u64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::custom("must be at least 0"))
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
                // Exact in f64 up to 2^53; the limits on every such field are far below.
                if v.fract() == 0.0 && (0.0..=9_007_199_254_740_992.0).contains(&v) {
                    Ok(Whole(v as u64))
                } else {
                    Err(E::custom("must be a whole number of at least 0"))
                }
            }
        }
        d.deserialize_any(Seen)
    }
}

pub fn opt_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(Option::<Whole>::deserialize(d)?.map(|w| w.0))
}

pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    opt_u64(d)?
        .map(|v| u32::try_from(v).map_err(|_| de::Error::custom("is too large")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "opt_u32")]
        n: Option<u32>,
    }

    fn n(json: &str) -> Result<Option<u32>, String> {
        serde_json::from_str::<T>(json)
            .map(|t| t.n)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn whole_numbers_are_taken_written_either_way_and_fractions_are_not() {
        assert_eq!(n(r#"{"n": 67687}"#), Ok(Some(67687)));
        assert_eq!(n(r#"{"n": 67687.0}"#), Ok(Some(67687)));
        assert_eq!(n(r#"{"n": null}"#), Ok(None));
        assert_eq!(n(r#"{}"#), Ok(None));
        assert!(n(r#"{"n": 1.5}"#).unwrap_err().contains("whole number"));
        assert!(n(r#"{"n": -1}"#).unwrap_err().contains("at least 0"));
        assert!(n(r#"{"n": 5000000000}"#).unwrap_err().contains("too large"));
        assert!(n(r#"{"n": "7"}"#).is_err());
    }
}
