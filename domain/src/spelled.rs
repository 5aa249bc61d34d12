//! Enums whose values travel as words: each word is written once, where the value is
//! declared, and serde, `as_str`, `Display`, `FromStr` and the list of words all read it
//! there. So a value cannot be spelled one way in JSON and another in SQL.
//!
//! Contract: [`spelled!`] declares a fieldless enum from `Variant = "word"` pairs; the words
//! must be distinct (a test per enum says so). A word that names no value parses to
//! [`NotSpelled`], which lists the words that do.

/// A word that names none of an enum's values.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{given:?} is not one of {}", expected.join(", "))]
pub struct NotSpelled {
    pub given: String,
    /// Every word the enum takes, in declaration order.
    pub expected: &'static [&'static str],
}

/// Declares `enum Name { Variant = "word", … }` with serde naming each variant by its word,
/// `Name::ALL` and `Name::WORDS` in declaration order, `as_str`, `Display`, `FromStr` and
/// `TryFrom<String>` (for a database column read as text). With the `openapi` feature the
/// enum is also a `utoipa::ToSchema` (a string enum of its words).
macro_rules! spelled {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            // `tt`, not `literal`: a `literal` fragment reaches derive macros wrapped in an
            // invisible group, which utoipa does not read as the serde name.
            $( $(#[$variant_meta:meta])* $variant:ident = $word:tt, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        $vis enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $word)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];
            /// Every value's word, in declaration order.
            pub const WORDS: &'static [&'static str] = &[$($word),+];

            /// The value's word, as serde writes it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $word,)+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::spelled::NotSpelled;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| $crate::spelled::NotSpelled {
                        given: s.to_string(),
                        expected: Self::WORDS,
                    })
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::spelled::NotSpelled;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }
    };
}

pub(crate) use spelled;
