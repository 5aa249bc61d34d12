//! The throwaway database a benchmark runs slotcast on: `slotcast_bench_<uuid>`, created
//! through the admin connection and dropped `WITH (FORCE)` at the end.
//!
//! Contract: the caller drops it on every path (success, error, Ctrl-C); dropping is bounded
//! (30 s) and forces out whatever is still connected (a slotcast child included). Nothing
//! here knows slotcast's schema: the slotcast processes migrate the database themselves.

use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use sqlx::{Connection, Executor, PgConnection};

/// `DATABASE_URL`'s default, as slotcast's.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The throwaway database and the admin connection's URL it came from.
pub struct Scratch {
    admin_url: String,
    name: String,
    pub url: String,
}

impl Scratch {
    pub async fn create(admin_url: &str) -> Result<Self> {
        let name = format!("slotcast_bench_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(admin_url, &name)?;
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("cannot connect to Postgres at {}", redact(admin_url)))?;
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .with_context(|| format!("cannot create the database {name}"))?;
        let _ = admin.close().await;
        Ok(Self {
            admin_url: admin_url.to_string(),
            name,
            url,
        })
    }

    pub async fn drop_database(self) -> Result<()> {
        let drop = async {
            let mut admin = PgConnection::connect(&self.admin_url).await?;
            admin
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await?;
            let _ = admin.close().await;
            Ok::<_, sqlx::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(30), drop).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(err).with_context(|| format!("cannot drop {}", self.name)),
            Err(_) => bail!("cannot drop {}: no answer within 30 s", self.name),
        }
    }
}

/// `url` naming database `name` instead of its own (query parameters kept).
fn with_database(url: &str, name: &str) -> Result<String> {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow!("--database-url must be a postgres:// URL"))?;
    let (base, query) = match url.find('?') {
        Some(q) => url.split_at(q),
        None => (url, ""),
    };
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    Ok(format!("{}/{name}{query}", &base[..authority_end]))
}

/// The URL without its password, for error messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..scheme + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throwaway_url_names_only_the_database_differently() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/x",
            ),
            (
                "postgres://u:p@h/db?sslmode=disable",
                "postgres://u:p@h/x?sslmode=disable",
            ),
            ("postgres://h:5432", "postgres://h:5432/x"),
            (
                "postgres:///db?host=/run/postgresql",
                "postgres:///x?host=/run/postgresql",
            ),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "x").unwrap(), want, "{url}");
        }
        assert!(with_database("nonsense", "x").is_err());
    }

    #[test]
    fn a_password_never_shows_in_messages() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
