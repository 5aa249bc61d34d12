//! `slotcast import [FILE]`: stores a booking's setting info obtained elsewhere (the console,
//! or the API's answer), so that `slotcast live` publishes with it as if this terminal had
//! booked.
//!
//! Contract: the document comes from a file or standard input, never from an argument, so the
//! stream key stays off the command line and out of the shell's history; at most
//! [`DOCUMENT_MAX`] bytes are read. It is checked ([`import::read_document`]), then the
//! reservation is asked of the API with the profile's token (another tenant's id answers 404,
//! and nothing is stored), its history is read back to the answer that gave the key (a key
//! rotated since then would replace a working key with a dead one: refused, nothing stored),
//! and the setting the two make is written where `slotcast book` writes it (mode 0600),
//! replacing any stored before, which the output says.

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;
use slotcast_terminal::client::{Client, Reply};
use slotcast_terminal::import::{self, Document, KeyCheck, DOCUMENT_MAX};
use slotcast_terminal::store::{Dirs, Setting};
use slotcast_terminal::TerminalError;
use slotcast_wire::{History, ReservationDto};

use crate::terminal_book::print_setting;
use crate::terminal_ctx::{with_fields, Ctx};

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// A file holding the setting info's JSON; without it (or with -), standard input: paste,
    /// then Ctrl-D on a line of its own.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
}

/// The document's text, from `file` or standard input, bounded.
fn read_input(file: Option<&Path>) -> Result<String, TerminalError> {
    let limit = DOCUMENT_MAX as u64 + 1;
    let mut bytes = Vec::new();
    // Read before any request is sent: a blocking read holds up nothing else.
    let read = match file.filter(|f| *f != Path::new("-")) {
        Some(path) => std::fs::File::open(path)
            .and_then(|f| f.take(limit).read_to_end(&mut bytes))
            .map_err(|e| TerminalError::Usage(format!("cannot read {}: {e}", path.display()))),
        None => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!(
                    "Paste the setting info (the console's \"Copy for slotcast import\", or the \
                     API's answer to the booking), then press Ctrl-D on a line of its own:"
                );
            }
            stdin
                .lock()
                .take(limit)
                .read_to_end(&mut bytes)
                .map_err(|e| TerminalError::Usage(format!("cannot read standard input: {e}")))
        }
    };
    read?;
    if bytes.len() > DOCUMENT_MAX {
        return Err(TerminalError::Usage(format!(
            "the input is longer than {} KiB: that is no setting info",
            DOCUMENT_MAX / 1024
        )));
    }
    String::from_utf8(bytes)
        .map_err(|_| TerminalError::Usage("the input is not UTF-8 text: no setting info".into()))
}

/// The reservation as the API answers it now; a 404 says what it means here.
async fn current(client: &Client, doc: &Document) -> Result<Reply<ReservationDto>, TerminalError> {
    let id = &doc.id;
    client
        .get(&format!("/v1/reservations/{id}"))
        .await
        .map_err(|err| match err {
            TerminalError::Api {
                status: 404,
                code,
                message,
            } => {
                let elsewhere = doc
                    .api
                    .as_deref()
                    .filter(|from| from.trim_end_matches('/') != client.api())
                    .map_or(String::new(), |from| {
                        format!(
                            "; the setting info came from the console at {from}: `slotcast \
                             login --api {from} --token TOKEN` (or --profile) to use that one"
                        )
                    });
                TerminalError::Api {
                    status: 404,
                    code,
                    message: format!(
                        "{message}: {id} is not a reservation of yours at {}, nothing stored{elsewhere}",
                        client.api()
                    ),
                }
            }
            other => other,
        })
}

/// Pages of a history (100 events each) read back for a later key rotation, at most.
const HISTORY_PAGES: usize = 100;

/// Refuses a document whose key a rotation recorded after its answer replaced: storing it
/// would swap whatever key this terminal holds for one that no longer works. A document
/// without the answer's `server_time` is not checked.
async fn key_still_current(client: &Client, doc: &Document) -> Result<(), TerminalError> {
    let Some(issued) = doc.issued_at else {
        return Ok(());
    };
    let id = &doc.id;
    let mut before = 9_007_199_254_740_991_i64;
    for _ in 0..HISTORY_PAGES {
        let page: Reply<History> = client
            .get(&format!(
                "/v1/reservations/{id}/history?before={before}&limit=100"
            ))
            .await?;
        match import::check_key(issued, &page.value.events) {
            KeyCheck::Current => return Ok(()),
            KeyCheck::Replaced(at) => {
                return Err(TerminalError::Usage(format!(
                    "the stream key in this setting info was replaced by a key rotation at {} \
                     (server clock), after it was issued at {}: it no longer works; nothing \
                     stored. Import the rotation's setting info instead, or rotate again \
                     (`slotcast rotate-key {id}`)",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                    issued.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                )))
            }
            KeyCheck::ReadOn => match page.value.next.and_then(|n| n.before) {
                Some(next) => before = next,
                None => return Ok(()),
            },
        }
    }
    Ok(())
}

/// What was stored for the reservation before the import.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Before {
    Nothing,
    SameKey,
    OtherKey,
    /// A file that no longer reads: it is replaced all the same.
    Unreadable,
}

impl Before {
    fn of(dirs: &Dirs, new: &Setting) -> Self {
        match Setting::load(dirs, &new.id) {
            Ok(None) => Self::Nothing,
            Ok(Some(old)) if old.stream_key == new.stream_key => Self::SameKey,
            Ok(Some(_)) => Self::OtherKey,
            Err(_) => Self::Unreadable,
        }
    }
}

pub async fn import(ctx: &Ctx, client: &Client, args: ImportArgs) -> Result<(), TerminalError> {
    let text = read_input(args.file.as_deref())?;
    let doc = import::read_document(&text)?;
    let answer = current(client, &doc).await?;
    let imported = import::imported(&doc, &answer.value, client.api())?;
    key_still_current(client, &doc).await?;
    let before = Before::of(&ctx.dirs, &imported.setting);
    let path = imported.setting.save(&ctx.dirs)?;
    if ctx.globals.json {
        let out = with_fields(
            answer.json,
            [
                ("stored_at", json!(path)),
                ("replaced", json!(before != Before::Nothing)),
                ("updated_from_api", json!(imported.stale)),
            ],
        );
        ctx.print_json(&out);
        return Ok(());
    }
    let r = &answer.value;
    println!(
        "Imported {} on {} ({}): stored as `slotcast book` stores it.",
        r.id, r.server_id, r.status
    );
    print_setting(&imported.setting, ctx, ctx.server_now());
    println!("  stored    {} (mode 0600)", path.display());
    let replaced = match before {
        Before::Nothing => None,
        Before::SameKey => Some("(it had the same key)"),
        Before::OtherKey => {
            Some("(it had another key: this terminal now publishes with the imported one)")
        }
        Before::Unreadable => Some("(it no longer read)"),
    };
    if let Some(why) = replaced {
        println!("  replaced  the setting info stored here before {why}");
    }
    if !imported.stale.is_empty() {
        let parts: Vec<&str> = imported.stale.iter().map(|s| s.name()).collect();
        let parts = match parts.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
            None => String::new(),
        };
        println!(
            "  updated   {parts} changed since the setting info was copied: stored as the \
             API answers now"
        );
    }
    println!(
        "Next: `slotcast live {} --input FILE` waits for the window and publishes.",
        r.id
    );
    Ok(())
}
