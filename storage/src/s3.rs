//! An S3-compatible object store (AWS S3, MinIO, SeaweedFS, …) through `rust-s3`.
//!
//! Path-style addressing, credentials from the caller (the node reads `AWS_ACCESS_KEY_ID` and
//! `AWS_SECRET_ACCESS_KEY`). Every request has a deadline; transient failures (connection
//! errors, timeouts, HTTP 5xx and 429) are retried with exponential backoff, anything else
//! fails at once with the status and the service's message (a missing object is
//! [`Error::NotFound`]). Files are uploaded as a stream
//! (multipart above 8 MiB, as `rust-s3` does) and downloaded as a stream into a file.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use s3::Bucket;
use s3::creds::Credentials;
use s3::error::S3Error;
use s3::region::Region;
use tokio::io::AsyncWriteExt;
use tracing::warn;

use crate::error::{Error, Result};
use crate::object_store::ObjectStore;

/// Where and how to reach the store.
#[derive(Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:8333`.
    pub endpoint: String,
    /// Bucket name.
    pub bucket: String,
    /// Region name (`us-east-1` for most S3-compatible servers).
    pub region: String,
    /// Access key id.
    pub access_key: String,
    /// Secret access key.
    pub secret_key: String,
    /// Deadline of one request.
    pub request_timeout: Duration,
    /// Attempts of one operation before its error is returned (at least 1).
    pub attempts: u32,
    /// Wait before the first retry; doubles with each retry, up to 5 s.
    pub backoff: Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

impl S3Config {
    /// A configuration with the default deadline (30 s), attempts (6) and backoff (200 ms).
    pub fn new(endpoint: &str, bucket: &str, region: &str, access: &str, secret: &str) -> Self {
        Self {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            region: region.to_string(),
            access_key: access.to_string(),
            secret_key: secret.to_string(),
            request_timeout: Duration::from_secs(30),
            attempts: 6,
            backoff: Duration::from_millis(200),
        }
    }
}

/// The deadline of a whole file transfer (rust-s3's deadline covers the body too).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Objects in one bucket of an S3-compatible service.
pub struct S3Store {
    /// For requests with small bodies: the configured deadline.
    bucket: Box<Bucket>,
    /// For file uploads and downloads, whose bodies may take long.
    transfers: Box<Bucket>,
    config: S3Config,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("config", &self.config)
            .finish()
    }
}

/// Whether an error is worth another attempt.
fn transient(e: &S3Error) -> bool {
    match e {
        S3Error::HttpFailWithBody(status, _) => *status >= 500 || *status == 429,
        S3Error::HttpFail | S3Error::Io(_) | S3Error::Reqwest(_) => true,
        _ => false,
    }
}

/// The service's message without the XML around it.
fn describe(e: &S3Error) -> String {
    match e {
        S3Error::HttpFailWithBody(status, body) => {
            let field = |name: &str| {
                let open = format!("<{name}>");
                let close = format!("</{name}>");
                body.find(&open).and_then(|start| {
                    let rest = &body[start + open.len()..];
                    rest.find(&close).map(|end| rest[..end].to_string())
                })
            };
            match (field("Code"), field("Message")) {
                (Some(code), Some(message)) => format!("HTTP {status} {code}: {message}"),
                (Some(code), None) => format!("HTTP {status} {code}"),
                _ if body.trim().is_empty() => format!("HTTP {status}"),
                _ => format!(
                    "HTTP {status}: {}",
                    body.chars().take(200).collect::<String>()
                ),
            }
        }
        S3Error::Reqwest(e) => {
            // reqwest's own message is terse; its sources say what failed (refused, timed out).
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                text.push_str(": ");
                text.push_str(&s.to_string());
                source = s.source();
            }
            text
        }
        other => other.to_string(),
    }
}

impl S3Store {
    /// A store for `config`'s bucket. Does not contact the service; see [`S3Store::check`].
    pub fn new(config: S3Config) -> Result<Self> {
        let invalid = |message: String| Error::ObjectStore {
            op: "configure",
            key: String::new(),
            message,
            transient: false,
        };
        if !(config.endpoint.starts_with("http://") || config.endpoint.starts_with("https://")) {
            return Err(invalid(format!(
                "S3 endpoint {:?} must be an http:// or https:// URL",
                config.endpoint
            )));
        }
        if config.bucket.len() < 3 {
            return Err(invalid(format!(
                "S3 bucket name {:?} is too short (at least 3 characters)",
                config.bucket
            )));
        }
        let region = Region::Custom {
            region: config.region.clone(),
            endpoint: config.endpoint.clone(),
        };
        let credentials = Credentials::new(
            Some(&config.access_key),
            Some(&config.secret_key),
            None,
            None,
            None,
        )
        .map_err(|e| invalid(format!("S3 credentials: {e}")))?;
        let mut bucket = Bucket::new(&config.bucket, region, credentials)
            .map_err(|e| invalid(describe(&e)))?
            .with_path_style();
        let mut transfers = bucket.clone();
        bucket.set_request_timeout(Some(config.request_timeout));
        transfers.set_request_timeout(Some(TRANSFER_TIMEOUT.max(config.request_timeout)));
        // Retries happen here, with backoff, not inside the library.
        s3::set_retries(0);
        Ok(Self {
            bucket,
            transfers,
            config,
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    /// Checks that the service answers and the bucket exists, creating it if it does not.
    /// Fails with a message naming the endpoint and bucket after one deadline, without retries,
    /// so a node with a wrong endpoint stops at once.
    pub async fn check(&self) -> Result<()> {
        let context = |message: String| Error::ObjectStore {
            op: "connect to",
            key: format!("{} bucket {}", self.config.endpoint, self.config.bucket),
            message,
            transient: false,
        };
        match self
            .bucket
            .list_page(String::new(), None, None, None, Some(1))
            .await
        {
            Ok(_) => Ok(()),
            Err(S3Error::HttpFailWithBody(404, body)) if body.contains("NoSuchBucket") => {
                let region = self.bucket.region.clone();
                let credentials = self
                    .bucket
                    .credentials()
                    .await
                    .map_err(|e| context(describe(&e)))?;
                Bucket::create_with_path_style(
                    &self.config.bucket,
                    region,
                    credentials,
                    s3::BucketConfiguration::default(),
                )
                .await
                .map_err(|e| context(format!("creating the bucket: {}", describe(&e))))?;
                tracing::info!(bucket = %self.config.bucket, "created the S3 bucket");
                Ok(())
            }
            Err(e) => Err(context(describe(&e))),
        }
    }

    /// Runs `op` until it succeeds, fails permanently, or runs out of attempts.
    async fn retry<T, F, Fut>(&self, op: &'static str, key: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, S3Error>>,
    {
        let mut wait = self.config.backoff;
        let attempts = self.config.attempts.max(1);
        for attempt in 1.. {
            match f().await {
                Ok(v) => return Ok(v),
                Err(S3Error::HttpFailWithBody(404, _)) => {
                    return Err(Error::NotFound {
                        key: key.to_string(),
                    });
                }
                Err(e) => {
                    let retry = transient(&e) && attempt < attempts;
                    if !retry {
                        return Err(Error::ObjectStore {
                            op,
                            key: key.to_string(),
                            message: format!("{} (after {attempt} attempts)", describe(&e)),
                            transient: transient(&e),
                        });
                    }
                    warn!(op, object_key = key, attempt, error = %describe(&e), "S3 request failed; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        unreachable!("the loop returns")
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put_file(&self, key: &str, src: &Path) -> Result<u64> {
        let len = tokio::fs::metadata(src)
            .await
            .map_err(Error::io(src))?
            .len();
        self.retry("upload", key, || async {
            let mut file = tokio::fs::File::open(src).await?;
            self.transfers.put_object_stream(&mut file, key).await
        })
        .await?;
        let _ = tokio::fs::remove_file(src).await;
        Ok(len)
    }

    async fn put_bytes(&self, key: &str, bytes: &[u8]) -> Result<()> {
        self.retry("upload", key, || self.bucket.put_object(key, bytes))
            .await
            .map(|_| ())
    }

    async fn get_bytes(&self, key: &str) -> Result<Vec<u8>> {
        let data = self
            .retry("download", key, || self.bucket.get_object(key))
            .await?;
        Ok(data.to_vec())
    }

    async fn get_to_file(&self, key: &str, dest: &Path) -> Result<u64> {
        self.retry("download", key, || async {
            let mut file = tokio::fs::File::create(dest).await?;
            self.transfers.get_object_to_writer(key, &mut file).await?;
            file.flush().await?;
            Ok(())
        })
        .await?;
        Ok(tokio::fs::metadata(dest)
            .await
            .map_err(Error::io(dest))?
            .len())
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match self
            .retry("delete", key, || self.bucket.delete_object(key))
            .await
        {
            Ok(_) | Err(Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let pages = self
            .retry("list", prefix, || {
                self.bucket.list(prefix.to_string(), None)
            })
            .await?;
        let mut keys: Vec<String> = pages
            .into_iter()
            .flat_map(|p| p.contents.into_iter().map(|o| o.key))
            .collect();
        keys.sort();
        Ok(keys)
    }

    fn local_path(&self, _key: &str) -> Option<std::path::PathBuf> {
        None
    }

    fn describe(&self) -> String {
        format!("{} bucket {}", self.config.endpoint, self.config.bucket)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Paused time: the schedule is checked exactly, and the test takes no real time.
    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_with_doubling_waits_up_to_the_attempts() {
        let mut config = S3Config::new("http://127.0.0.1:1", "bucket", "us-east-1", "k", "s");
        config.attempts = 7;
        config.backoff = Duration::from_secs(1);
        let store = S3Store::new(config).expect("store");
        let start = tokio::time::Instant::now();
        let calls = parking_lot::Mutex::new(Vec::new());
        let err = store
            .retry("upload", "k1", || {
                calls.lock().push(start.elapsed());
                async {
                    Err::<(), _>(S3Error::HttpFailWithBody(
                        503,
                        "<Message>busy</Message>".into(),
                    ))
                }
            })
            .await
            .expect_err("every attempt failed");
        let secs: Vec<u64> = calls.lock().iter().map(|d| d.as_secs()).collect();
        // Waits of 1, 2, 4, then 5 (the cap), 5, 5 seconds between the seven attempts.
        assert_eq!(secs, [0, 1, 3, 7, 12, 17, 22]);
        let text = err.to_string();
        assert!(
            text.contains("busy") && text.contains("after 7 attempts"),
            "{text}"
        );

        // A permanent failure is not retried; a missing object is NotFound at once.
        calls.lock().clear();
        let err = store
            .retry("upload", "k2", || {
                calls.lock().push(start.elapsed());
                async { Err::<(), _>(S3Error::HttpFailWithBody(403, "denied".into())) }
            })
            .await
            .expect_err("refused");
        assert_eq!(calls.lock().len(), 1);
        assert!(
            matches!(
                err,
                Error::ObjectStore {
                    transient: false,
                    ..
                }
            ),
            "{err}"
        );
        let err = store
            .retry("download", "k3", || async {
                Err::<(), _>(S3Error::HttpFailWithBody(404, String::new()))
            })
            .await
            .expect_err("missing");
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
    }
}
