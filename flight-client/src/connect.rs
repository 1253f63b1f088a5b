//! Where a node is and how to authenticate to it: the URI (`grpc://host:port`,
//! `grpc+tls://host:port`), credentials, and the TLS trust settings, turned into a tonic channel.

use std::path::PathBuf;
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// Largest gRPC message accepted from a node (the server splits batches well below it).
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// How the client proves who it is.
#[derive(Clone, Default)]
pub enum Auth {
    /// No credentials (the embedded default node accepts everyone).
    #[default]
    None,
    /// User and password, sent in the Flight handshake as HTTP basic auth; a token the server
    /// returns is then sent with every call.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// A bearer token sent with every call.
    Bearer(String),
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print secrets.
        match self {
            Self::None => write!(f, "None"),
            Self::Basic { user, .. } => write!(f, "Basic {{ user: {user:?}, password: *** }}"),
            Self::Bearer(_) => write!(f, "Bearer(***)"),
        }
    }
}

/// Everything needed to reach a node.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// `grpc://host:port` (plain) or `grpc+tls://host:port`; `grpc+tcp://`, `http://` and
    /// `https://` are accepted too.
    pub uri: String,
    /// Credentials.
    pub auth: Auth,
    /// A PEM file with the certificate authority to trust for TLS, besides the system's.
    pub tls_ca: Option<PathBuf>,
    /// A PEM certificate chain and key to present to a server that asks for one (mutual TLS).
    pub tls_identity: Option<(PathBuf, PathBuf)>,
    /// How long to wait for the connection to be made.
    pub connect_timeout: Duration,
}

impl ConnectOptions {
    /// Options for `uri` without credentials.
    pub fn new(uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            auth: Auth::None,
            tls_ca: None,
            tls_identity: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Options for a plain-text node at `host:port`.
    pub fn host_port(host: &str, port: u16) -> Self {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]") // an IPv6 literal
        } else {
            host.to_string()
        };
        Self::new(format!("grpc://{host}:{port}"))
    }

    /// The same options for another node's URI (the location of a result endpoint).
    pub fn with_uri(&self, uri: impl Into<String>) -> Self {
        Self {
            uri: uri.into(),
            ..self.clone()
        }
    }
}

/// The transport parts of a URI.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    tls: bool,
    /// `host:port`.
    authority: String,
    host: String,
}

fn parse_uri(uri: &str) -> Result<Target> {
    let invalid = |reason: &str| Error::InvalidUri {
        uri: uri.to_string(),
        reason: reason.to_string(),
    };
    let (scheme, rest) = uri
        .split_once("://")
        .ok_or_else(|| invalid("expected grpc://host:port or grpc+tls://host:port"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "grpc" | "grpc+tcp" | "http" => false,
        "grpc+tls" | "https" => true,
        _ => return Err(invalid("the scheme must be grpc, grpc+tcp or grpc+tls")),
    };
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(invalid(
            "expected host:port after the scheme, and nothing else",
        ));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, Some(p)),
        _ => (authority, None),
    };
    let port = port.ok_or_else(|| invalid("the port is missing"))?;
    port.parse::<u16>()
        .map_err(|_| invalid("the port must be a number from 0 to 65535"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(Target {
        tls,
        authority: authority.to_string(),
        host: host.to_string(),
    })
}

/// Opens a channel to the node named by `options`.
pub(crate) async fn channel(options: &ConnectOptions) -> Result<Channel> {
    let target = parse_uri(&options.uri)?;
    let scheme = if target.tls { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.authority))
        .map_err(|e| Error::InvalidUri {
            uri: options.uri.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(options.connect_timeout)
        .tcp_nodelay(true);
    if target.tls {
        let mut tls = ClientTlsConfig::new()
            .domain_name(target.host.clone())
            .with_native_roots();
        if let Some(path) = &options.tls_ca {
            let pem = std::fs::read(path)
                .map_err(|e| Error::Tls(format!("cannot read CA file {}: {e}", path.display())))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if let Some((cert, key)) = &options.tls_identity {
            let read = |path: &PathBuf, what: &str| {
                std::fs::read(path)
                    .map_err(|e| Error::Tls(format!("cannot read {what} {}: {e}", path.display())))
            };
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        endpoint = endpoint
            .tls_config(tls)
            .map_err(|e| Error::Tls(error_chain(&e)))?;
    }
    endpoint.connect().await.map_err(|e| Error::Connect {
        uri: options.uri.clone(),
        message: error_chain(&e),
    })
}

/// An error and its causes, joined with `: ` (tonic's transport errors say little on top).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![error.to_string()];
    let mut current = error.source();
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uris() {
        let t = parse_uri("grpc://127.0.0.1:32010").unwrap();
        assert!(!t.tls);
        assert_eq!(t.authority, "127.0.0.1:32010");
        let t = parse_uri("grpc+tls://db.example.com:443/").unwrap();
        assert!(t.tls);
        assert_eq!(t.host, "db.example.com");
        let t = parse_uri("grpc://[::1]:32010").unwrap();
        assert_eq!(t.host, "::1");
        assert!(parse_uri("127.0.0.1:32010").is_err());
        assert!(parse_uri("ftp://h:1").is_err());
        assert!(parse_uri("grpc://h").is_err());
        assert!(parse_uri("grpc://h:99999").is_err());
        assert!(parse_uri("grpc://h:1/path").is_err());
    }

    #[test]
    fn host_port_brackets_ipv6() {
        assert_eq!(ConnectOptions::host_port("::1", 5).uri, "grpc://[::1]:5");
        assert_eq!(
            ConnectOptions::host_port("localhost", 5).uri,
            "grpc://localhost:5"
        );
    }

    #[test]
    fn secrets_are_not_printed() {
        let auth = Auth::Basic {
            user: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{auth:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Bearer("tok".into())).contains("tok"));
    }
}
