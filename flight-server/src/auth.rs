//! Authentication and roles.
//!
//! With `--auth-users FILE`, every RPC but the handshake needs credentials: Flight's handshake
//! takes HTTP Basic credentials (`authorization: Basic …`) and answers with a bearer token
//! (`authorization: Bearer …`) that the client sends on every later call; a Basic header is
//! accepted on any call too. Tokens are signed (HMAC-SHA256) with `--auth-secret`, carry the user,
//! role, cluster and expiry, and are therefore valid on every node of a cluster that shares the
//! secret and nowhere else.
//!
//! Roles: `reader` runs queries and catalog calls; `writer` also ingests and runs DDL and DML;
//! `admin` also takes and restores catalog snapshots.
//!
//! A tower layer ([`AuthLayer`]) checks credentials before any service code runs and makes the
//! caller's [`Identity`] available to the request's task ([`current`]).

use std::collections::HashMap;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use tonic::codegen::http;

use crate::error::{Error, Result};

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Queries and catalog calls.
    Reader,
    /// Also ingest, DDL and DML.
    Writer,
    /// Also catalog snapshots and restores.
    Admin,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User name.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// The only tables they may use (lower-cased), if limited.
    pub tables: Option<Vec<String>>,
}

impl Identity {
    /// Whether they may use table `name`.
    pub fn may_use(&self, name: &str) -> bool {
        self.tables
            .as_ref()
            .is_none_or(|t| t.iter().any(|x| x.eq_ignore_ascii_case(name)))
    }
}

/// Whether the caller (if authentication is on) may use table `name`.
pub fn may_use(name: &str) -> bool {
    current().is_none_or(|id| id.may_use(name))
}

/// Fails with PERMISSION_DENIED unless the caller may use table `name`.
pub fn require_table(name: &str) -> Result<()> {
    match current() {
        Some(id) if !id.may_use(name) => Err(Error::Forbidden(format!(
            "user {:?} may not use table {name:?}",
            id.user
        ))),
        _ => Ok(()),
    }
}

/// For a caller limited to some tables, the first wall on `sqlparser`'s parse: every relation
/// the statement reads must be one of them (or a CTE it defines); catalog views such as
/// `information_schema.tables` are out too. The authority is the check on DuckDB's own parse
/// ([`crate::sandbox::check_tree`]), which also keeps each CTE name to its scope.
pub fn check_relations(caller: &Identity, statement: &sqlparser::ast::Statement) -> Result<()> {
    use sqlparser::ast::{TableFactor, Visit, Visitor};
    let Some(id) = Some(caller).filter(|id| id.tables.is_some()) else {
        return Ok(());
    };
    struct Relations {
        ctes: Vec<String>,
        tables: Vec<String>,
    }
    impl Visitor for Relations {
        type Break = ();
        fn pre_visit_query(&mut self, q: &sqlparser::ast::Query) -> std::ops::ControlFlow<()> {
            if let Some(with) = &q.with {
                self.ctes.extend(
                    with.cte_tables
                        .iter()
                        .map(|c| c.alias.name.value.to_lowercase()),
                );
            }
            std::ops::ControlFlow::Continue(())
        }
        fn pre_visit_table_factor(&mut self, f: &TableFactor) -> std::ops::ControlFlow<()> {
            match f {
                TableFactor::Table {
                    name, args: None, ..
                } => self.tables.push(name.to_string().to_lowercase()),
                // Functions that list the catalog would show the other tables.
                TableFactor::Table { name, .. } | TableFactor::Function { name, .. } => {
                    let n = name.to_string().to_lowercase();
                    let bare = n.rsplit('.').next().unwrap_or(&n);
                    if ["duckdb_", "pragma_", "pg_", "information_schema"]
                        .iter()
                        .any(|p| bare.starts_with(p))
                    {
                        self.tables.push(format!("system.{bare}"));
                    }
                }
                _ => {}
            }
            std::ops::ControlFlow::Continue(())
        }
    }
    let mut r = Relations {
        ctes: Vec::new(),
        tables: Vec::new(),
    };
    let _ = statement.visit(&mut r);
    for t in &r.tables {
        let bare = t.rsplit('.').next().unwrap_or(t).trim_matches('"');
        let qualified_elsewhere =
            t.contains('.') && !t.starts_with("main.") && !t.contains(".main.");
        if r.ctes.iter().any(|c| c == bare) && !t.contains('.') {
            continue;
        }
        if qualified_elsewhere || !id.may_use(bare) {
            return Err(Error::Forbidden(format!(
                "user {:?} may not read {t:?}: they are limited to tables {}",
                id.user,
                id.tables.as_deref().unwrap_or_default().join(", ")
            )));
        }
    }
    Ok(())
}

tokio::task_local! {
    static CALLER: Option<Identity>;
    static REQUEST_ID: String;
}

/// The metadata key of a request's id: a client may send one (up to 128 letters, digits and
/// `-_.:`), else the node makes one up; either way the answer carries it back, the node's
/// logs name it, and the node passes it on to peers that serve part of the request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn valid_request_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The id of the request being served (empty outside one).
pub fn request_id() -> String {
    REQUEST_ID.try_with(|r| r.clone()).unwrap_or_default()
}

/// The caller of the request being served, if authentication is on.
pub fn current() -> Option<Identity> {
    CALLER.try_with(|c| c.clone()).ok().flatten()
}

/// Fails with PERMISSION_DENIED unless the caller (if authentication is on) has `role` or more.
pub fn require(role: Role, what: &str) -> Result<()> {
    match current() {
        Some(id) if id.role < role => Err(Error::Forbidden(format!(
            "user {:?} ({:?}) may not {what}: that needs the {role:?} role",
            id.user, id.role
        ))),
        _ => Ok(()),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password: String,
    role: Role,
    /// Limits the user to these tables.
    #[serde(default)]
    tables: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    /// User.
    u: String,
    /// Role.
    r: Role,
    /// Cluster.
    c: String,
    /// Expiry, seconds since the Unix epoch.
    e: u64,
    /// Tables the user is limited to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    t: Option<Vec<String>>,
}

/// Users, and the key their tokens are signed with.
pub struct Authenticator {
    users: HashMap<String, (String, Identity)>,
    key: ring::hmac::Key,
    ttl: Duration,
    cluster: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.len())
            .field("ttl", &self.ttl)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn unauthenticated(message: impl Into<String>) -> tonic::Status {
    tonic::Status::unauthenticated(message.into())
}

impl Authenticator {
    /// Reads users from a TOML file (`[[users]] name, password, role`); tokens are signed with
    /// `secret` and last `ttl`.
    pub fn load(path: &Path, secret: &str, ttl: Duration, cluster: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read users file {}: {e}", path.display()))
        })?;
        let file: UsersFile = toml::from_str(&text)
            .map_err(|e| Error::InvalidArgument(format!("users file {}: {e}", path.display())))?;
        if file.users.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "users file {} lists no users",
                path.display()
            )));
        }
        if secret.len() < 16 {
            return Err(Error::InvalidArgument(
                "--auth-secret must be at least 16 characters (every node of a cluster uses the \
                 same one)"
                    .into(),
            ));
        }
        let mut users = HashMap::new();
        for u in file.users {
            let id = Identity {
                user: u.name.clone(),
                role: u.role,
                tables: u
                    .tables
                    .map(|t| t.iter().map(|x| x.to_lowercase()).collect()),
            };
            if users.insert(u.name.clone(), (u.password, id)).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "users file {} lists user {:?} twice",
                    path.display(),
                    u.name
                )));
            }
        }
        Ok(Self {
            users,
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            ttl,
            cluster: cluster.to_string(),
        })
    }

    /// Checks a user name and password.
    fn password(&self, user: &str, password: &str) -> Option<Identity> {
        let (stored, id) = self.users.get(user)?;
        // Compared in constant time, through their MACs.
        let expected = ring::hmac::sign(&self.key, stored.as_bytes());
        let same = ring::hmac::verify(&self.key, password.as_bytes(), expected.as_ref()).is_ok();
        same.then(|| id.clone())
    }

    /// An HMAC-SHA256 tag of `data` under the cluster secret (fragment tickets).
    pub fn sign(&self, data: &[u8]) -> Vec<u8> {
        ring::hmac::sign(&self.key, data).as_ref().to_vec()
    }

    /// Whether `tag` is [`Authenticator::sign`]'s tag of `data`.
    pub fn verify_tag(&self, data: &[u8], tag: &[u8]) -> bool {
        ring::hmac::verify(&self.key, data, tag).is_ok()
    }

    /// A signed token for `id`.
    pub fn issue(&self, id: &Identity) -> String {
        let claims = Claims {
            u: id.user.clone(),
            r: id.role,
            c: self.cluster.clone(),
            e: now_s() + self.ttl.as_secs().max(1),
            t: id.tables.clone(),
        };
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let tag = ring::hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    fn verify(&self, token: &str) -> std::result::Result<Identity, tonic::Status> {
        let bad = || unauthenticated("invalid bearer token: log in again with the handshake");
        let (body, tag) = token.split_once('.').ok_or_else(bad)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        ring::hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| bad())?;
        let claims: Claims =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).map_err(|_| bad())?)
                .map_err(|_| bad())?;
        if claims.c != self.cluster {
            return Err(bad());
        }
        if claims.e <= now_s() {
            return Err(unauthenticated("the bearer token expired: log in again"));
        }
        Ok(Identity {
            user: claims.u,
            role: claims.r,
            tables: claims.t,
        })
    }

    /// Who an `authorization` header names.
    fn check(&self, header: Option<&str>) -> std::result::Result<Identity, tonic::Status> {
        let header = header.ok_or_else(|| {
            unauthenticated("authentication required: log in with the Flight handshake (Basic)")
        })?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            return self.verify(token.trim());
        }
        if let Some(basic) = header.strip_prefix("Basic ") {
            // Padded or not (the Go Flight client leaves the padding out).
            let basic = basic.trim();
            let decoded = STANDARD
                .decode(basic)
                .or_else(|_| STANDARD_NO_PAD.decode(basic))
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
            let (user, password) = decoded
                .split_once(':')
                .ok_or_else(|| unauthenticated("malformed Basic credentials"))?;
            return self
                .password(user, password)
                .ok_or_else(|| unauthenticated("wrong user name or password"));
        }
        Err(unauthenticated(
            "unsupported authorization scheme: use Basic or Bearer",
        ))
    }
}

/// Checks credentials on every call (see the module docs).
#[derive(Debug, Clone)]
pub struct AuthLayer {
    auth: Option<Arc<Authenticator>>,
}

impl AuthLayer {
    /// A layer for `auth`; `None` lets every call through.
    pub fn new(auth: Option<Arc<Authenticator>>) -> Self {
        Self { auth }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            auth: self.auth.clone(),
        }
    }
}

/// The service [`AuthLayer`] wraps around the Flight service.
#[derive(Debug, Clone)]
pub struct AuthService<S> {
    inner: S,
    auth: Option<Arc<Authenticator>>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B, R> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<std::result::Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        // The service that was polled ready serves this call; a clone takes its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let request_id = request
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| valid_request_id(v))
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let span =
            tracing::info_span!("rpc", request_id = %request_id, path = %request.uri().path());
        let echo = http::HeaderValue::from_str(&request_id).ok();
        let caller = match &self.auth {
            None => Ok(None),
            Some(auth) => auth
                .check(
                    request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                )
                .map(Some),
        };
        let answer = async move {
            let mut response = match caller {
                Ok(id) => CALLER.scope(id, inner.call(request)).await?,
                Err(status) => status.into_http(),
            };
            if let Some(v) = echo {
                response.headers_mut().insert(REQUEST_ID_HEADER, v);
            }
            Ok(response)
        };
        Box::pin(REQUEST_ID.scope(request_id, answer).instrument(span))
    }
}

/// The token to hand out in the handshake, if authentication is on.
pub fn handshake_token(auth: Option<&Authenticator>) -> Option<String> {
    let auth = auth?;
    current().map(|id| auth.issue(&id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(secret: &str, cluster: &str, ttl: Duration) -> Authenticator {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        std::fs::write(
            &path,
            "[[users]]\nname = \"ann\"\npassword = \"pw\"\nrole = \"reader\"\n",
        )
        .expect("write");
        Authenticator::load(&path, secret, ttl, cluster).expect("load")
    }

    #[test]
    fn tokens_are_checked_for_signature_cluster_and_expiry() {
        let a = auth("0123456789abcdef", "c", Duration::from_secs(60));
        let basic = format!("Basic {}", STANDARD.encode("ann:pw"));
        let id = a.check(Some(&basic)).expect("basic");
        assert_eq!(id.role, Role::Reader);
        let token = a.issue(&id);
        assert_eq!(
            a.check(Some(&format!("Bearer {token}"))).expect("bearer"),
            id
        );
        for bad in [
            None,
            Some(format!("Basic {}", STANDARD.encode("ann:nope"))),
            Some(format!("Bearer {token}x")),
            Some("Token abc".to_string()),
        ] {
            assert!(a.check(bad.as_deref()).is_err(), "{bad:?}");
        }
        let other_secret = auth("fedcba9876543210", "c", Duration::from_secs(60));
        assert!(other_secret.verify(&token).is_err(), "foreign token");
        let other_cluster = auth("0123456789abcdef", "d", Duration::from_secs(60));
        assert!(other_cluster.verify(&token).is_err(), "other cluster");
    }
}
