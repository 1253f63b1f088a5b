//! Redis as the catalog (`skein-storage`) and the membership (`skein-ring`) both reach it: one
//! way to build a connection pool, with a deadline on connecting and on every answer, and one
//! way to show a URL in a message without its password. [`testing`] starts a real
//! `redis-server` for the tests of those crates.

use std::time::Duration;

use deadpool_redis::{Pool, Runtime};

pub mod testing;

/// A pool for `url` whose connections and answers give up after `timeout` (the client's own
/// deadlines, 500 ms answers by default, would not). Connects lazily: an
/// unreachable server shows at the first command. The error says what is wrong with the URL.
pub fn pool(url: &str, timeout: Duration) -> Result<Pool, String> {
    let connection = deadpool_redis::redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let manager = deadpool_redis::Manager::new_with_config(url, connection)
        .map_err(|e| format!("invalid Redis URL: {e}"))?;
    Pool::builder(manager)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| format!("cannot create a connection pool: {e}"))
}

/// `redis://user:secret@host/0` → `redis://user:***@host/0`, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &creds[..colon],
                    &url[at..]
                ),
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
    fn a_password_never_shows_in_a_message() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(redact("redis://:secret@host/0"), "redis://:***@host/0");
        assert_eq!(redact("redis://host:6379/0"), "redis://host:6379/0");
        assert_eq!(redact("redis://user@host/0"), "redis://user@host/0");
    }

    #[test]
    fn a_bad_url_is_named_as_such() {
        let err = pool("http://host", Duration::from_secs(1)).expect_err("not redis");
        assert!(err.starts_with("invalid Redis URL"), "{err}");
    }
}
