//! A camera's address as a broadcaster types it: `rtsp://user:password@host[:port]/path`.
//!
//! Contract: pure. [`CameraUrl::parse`] splits the login from the URL (percent-decoded, so a
//! password may hold `@` or `:` written as `%40`, `%3A`), and gives the URL to use (without
//! the login) and the URL to show (without the login or the query, where some cameras take
//! tokens). Nothing here prints a password.

/// A camera URL with its login taken out.
#[derive(Clone, PartialEq, Eq)]
pub struct CameraUrl {
    /// The URL to connect to, without user info.
    pub url: url::Url,
    /// User name and password (empty when the URL has none).
    pub login: Option<(String, String)>,
    /// What may be shown: no user info, no query.
    pub shown: String,
}

impl std::fmt::Debug for CameraUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CameraUrl")
            .field("shown", &self.shown)
            .field("login", &self.login.as_ref().map(|(user, _)| (user, "…")))
            .finish()
    }
}

impl CameraUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut url =
            url::Url::parse(text).map_err(|e| format!("the camera URL does not parse: {e}"))?;
        if url.scheme() != "rtsp" {
            return Err(format!(
                "the camera URL must start with rtsp://, not {}://",
                url.scheme()
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the camera URL names no host".into());
        }
        let login = (!url.username().is_empty()).then(|| {
            (
                percent_decode(url.username()),
                percent_decode(url.password().unwrap_or_default()),
            )
        });
        // Both only fail for URLs that cannot have user info, which rtsp:// with a host can.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut shown = url.clone();
        shown.set_query(None);
        Ok(Self {
            url,
            login,
            shown: shown.to_string(),
        })
    }
}

/// `%40` → `@` in user info (what `url` leaves encoded).
fn percent_decode(text: &str) -> String {
    percent_encoding::percent_decode_str(text)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_login_leaves_the_url_decoded() {
        let c = CameraUrl::parse("rtsp://ad%40min:p%40ss%3Aw@10.0.0.9:8554/live?token=t").unwrap();
        assert_eq!(c.url.as_str(), "rtsp://10.0.0.9:8554/live?token=t");
        assert_eq!(c.login, Some(("ad@min".into(), "p@ss:w".into())));
        assert_eq!(c.shown, "rtsp://10.0.0.9:8554/live");
        assert!(!format!("{c:?}").contains("p@ss"));
        let plain = CameraUrl::parse("rtsp://cam/live").unwrap();
        assert_eq!(plain.login, None);
        let user_only = CameraUrl::parse("rtsp://viewer@cam/live").unwrap();
        assert_eq!(user_only.login, Some(("viewer".into(), String::new())));
    }

    #[test]
    fn only_rtsp_urls_with_a_host() {
        assert!(CameraUrl::parse("http://cam/live")
            .unwrap_err()
            .contains("rtsp://"));
        assert!(CameraUrl::parse("not a url").is_err());
        assert!(CameraUrl::parse("rtsp:///live").is_err());
    }
}
