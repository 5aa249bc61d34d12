//! The broadcaster's terminal (the `slotcast` commands a distributor runs): profiles, the
//! clock against the server, booking and the stored setting info, and the views.
//!
//! Contract: the library holds the logic (pure where it can be: `clock`, `when`, `view`,
//! `import`) and the edges (`client` for the REST API, `store` for the files, `live`'s
//! socket); the `slotcast` binary parses arguments and prints. Nothing here reads the
//! environment or exits the process.

pub mod camera_url;
pub mod client;
pub mod clock;
mod error;
pub mod import;
pub mod live;
pub mod store;
pub mod view;
pub mod when;

pub use error::TerminalError;
