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
    static CREDENTIAL: Option<Credential>;
    static PEER: Option<std::net::SocketAddr>;
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

/// The client address of the request being served (its connection), if known.
pub fn peer() -> Option<std::net::SocketAddr> {
    PEER.try_with(|p| *p).ok().flatten()
}

/// Who holds the query slots a request takes (see [`crate::slots`]): the user, or with
/// authentication off the client's connection; `None` for a node of the cluster.
pub fn slot_holder() -> Option<String> {
    match current() {
        Some(id) if id.user.starts_with(NODE_PREFIX) => None,
        Some(id) => Some(format!("user {:?}", id.user)),
        None => peer().map(|p| format!("client connection {p}")),
    }
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
    /// An argon2 PHC string (`$argon2id$…`, from `skein-server hash-password`), or the
    /// password itself (accepted with a warning).
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
    /// A fingerprint of the user's password entry when the token was issued: a changed
    /// password ends the tokens issued before.
    #[serde(default)]
    p: String,
    /// A token one node of the cluster gave itself for calls to its peers (no user entry).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    n: bool,
}

/// The users file as last read.
#[derive(Debug, Default)]
struct Users {
    text: String,
    /// By name: the stored password (or its hash) and who they are.
    by_name: HashMap<String, (String, Identity)>,
}

/// How often the users file is looked at again: an edit (a user removed, a role or password
/// changed) takes effect within this long, on tokens already issued too.
const RELOAD_EVERY: Duration = Duration::from_secs(1);
/// Failed logins one user name, or one client address, may make per [`FAILURE_WINDOW`]; past
/// them, logins are refused until the window ends.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Failure counts kept at most (oldest windows are dropped first).
const MAX_FAILURE_KEYS: usize = 10_000;
/// Prefix of the names nodes give themselves in peer tokens; no user may be called so.
const NODE_PREFIX: &str = "node:";

/// How the caller of a request proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credential {
    /// A user name and password.
    Password,
    /// A bearer token that expires at this time (seconds since the Unix epoch).
    Token(u64),
}

/// Users, and the key their tokens are signed with.
pub struct Authenticator {
    path: std::path::PathBuf,
    users: parking_lot::RwLock<Arc<Users>>,
    last_look: parking_lot::Mutex<std::time::Instant>,
    /// Per user, the MAC of the password last verified against their stored hash (hashes are
    /// slow on purpose; a client sending Basic credentials on every call pays once).
    verified: parking_lot::Mutex<HashMap<String, Vec<u8>>>,
    /// Failed logins per `user:NAME` and `addr:IP`: count and start of the window.
    failures: parking_lot::Mutex<HashMap<String, (u32, std::time::Instant)>>,
    key: ring::hmac::Key,
    ttl: Duration,
    cluster: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users.read().by_name.len())
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

/// Whether a stored password is an argon2 PHC string rather than the password itself.
fn is_hash(stored: &str) -> bool {
    stored.starts_with("$argon2")
}

/// An argon2id PHC string of `password` with a fresh salt (for the users file).
pub fn hash_password(password: &str) -> Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    use ring::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Internal("no randomness for a password salt".into()))?;
    let salt = SaltString::encode_b64(&bytes)
        .map_err(|e| Error::Internal(format!("encoding a password salt: {e}")))?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hashing the password: {e}")))
}

fn parse_users(path: &Path, text: &str) -> Result<Users> {
    let file: UsersFile = toml::from_str(text)
        .map_err(|e| Error::InvalidArgument(format!("users file {}: {e}", path.display())))?;
    if file.users.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "users file {} lists no users",
            path.display()
        )));
    }
    let mut by_name = HashMap::new();
    for u in file.users {
        if u.name.starts_with(NODE_PREFIX) || u.name.contains(':') {
            return Err(Error::InvalidArgument(format!(
                "users file {}: user name {:?} may not contain ':'",
                path.display(),
                u.name
            )));
        }
        if is_hash(&u.password) {
            let complete = argon2::PasswordHash::new(&u.password)
                .map_err(|e| e.to_string())
                .and_then(|h| {
                    argon2::Params::try_from(&h).map_err(|e| e.to_string())?;
                    match (h.salt, h.hash) {
                        (Some(_), Some(_)) => Ok(()),
                        _ => Err("it has no salt or no hash".to_string()),
                    }
                });
            complete.map_err(|e| {
                Error::InvalidArgument(format!(
                    "users file {}: the password hash of user {:?} is not a valid argon2 PHC \
                     string: {e}",
                    path.display(),
                    u.name
                ))
            })?;
        } else {
            tracing::warn!(
                user = %u.name,
                file = %path.display(),
                "the users file holds this user's password in plain text; store a hash from \
                 `skein-server hash-password` instead"
            );
        }
        let id = Identity {
            user: u.name.clone(),
            role: u.role,
            tables: u
                .tables
                .map(|t| t.iter().map(|x| x.to_lowercase()).collect()),
        };
        if by_name.insert(u.name.clone(), (u.password, id)).is_some() {
            return Err(Error::InvalidArgument(format!(
                "users file {} lists user {:?} twice",
                path.display(),
                u.name
            )));
        }
    }
    Ok(Users {
        text: text.to_string(),
        by_name,
    })
}

impl Authenticator {
    /// Reads users from a TOML file (`[[users]] name, password, role`); tokens are signed with
    /// `secret` and last `ttl`. The file is read again when it changes.
    pub fn load(path: &Path, secret: &str, ttl: Duration, cluster: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::InvalidArgument(format!("cannot read users file {}: {e}", path.display()))
        })?;
        let users = parse_users(path, &text)?;
        if secret.len() < 16 {
            return Err(Error::InvalidArgument(
                "--auth-secret must be at least 16 characters (every node of a cluster uses the \
                 same one)"
                    .into(),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            users: parking_lot::RwLock::new(Arc::new(users)),
            last_look: parking_lot::Mutex::new(std::time::Instant::now()),
            verified: parking_lot::Mutex::default(),
            failures: parking_lot::Mutex::default(),
            key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            ttl,
            cluster: cluster.to_string(),
        })
    }

    /// The users, read again from the file if it changed (looked at every [`RELOAD_EVERY`]).
    /// A file that no longer reads or parses leaves the users as they were, with an error in
    /// the log.
    fn users(&self) -> Arc<Users> {
        {
            let mut last = self.last_look.lock();
            if last.elapsed() < RELOAD_EVERY {
                return Arc::clone(&self.users.read());
            }
            *last = std::time::Instant::now();
        }
        let current = Arc::clone(&self.users.read());
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(file = %self.path.display(), error = %e, "cannot read the users file again; the users stay as they were");
                return current;
            }
        };
        if text == current.text {
            return current;
        }
        match parse_users(&self.path, &text) {
            Ok(users) => {
                tracing::info!(file = %self.path.display(), users = users.by_name.len(), "users file changed: read again");
                let users = Arc::new(users);
                *self.users.write() = Arc::clone(&users);
                self.verified.lock().clear();
                users
            }
            Err(e) => {
                tracing::error!(error = %e, "the users file changed but does not parse; the users stay as they were");
                current
            }
        }
    }

    /// A fingerprint of a stored password: tokens carry it, so a changed password ends them.
    fn fingerprint(&self, stored: &str) -> String {
        let tag = ring::hmac::sign(&self.key, format!("password:{stored}").as_bytes());
        URL_SAFE_NO_PAD.encode(&tag.as_ref()[..12])
    }

    /// Checks a user name and password.
    fn password(&self, user: &str, password: &str) -> Option<Identity> {
        let users = self.users();
        let (stored, id) = users.by_name.get(user)?;
        if is_hash(stored) {
            let mac = ring::hmac::sign(&self.key, password.as_bytes());
            if self.verified.lock().get(user).map(Vec::as_slice) == Some(mac.as_ref()) {
                return Some(id.clone());
            }
            use argon2::password_hash::PasswordVerifier;
            let hash = argon2::PasswordHash::new(stored).ok()?;
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &hash)
                .ok()?;
            self.verified
                .lock()
                .insert(user.to_string(), mac.as_ref().to_vec());
            return Some(id.clone());
        }
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

    fn token(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = ring::hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// A signed token for user `id`, valid for the token lifetime, or until `expiry` if that
    /// comes sooner.
    fn issue_until(&self, id: &Identity, expiry: Option<u64>) -> Option<String> {
        let users = self.users();
        let (stored, _) = users.by_name.get(&id.user)?;
        let lifetime = now_s() + self.ttl.as_secs().max(1);
        Some(self.token(&Claims {
            u: id.user.clone(),
            r: id.role,
            c: self.cluster.clone(),
            e: expiry.map_or(lifetime, |e| e.min(lifetime)),
            t: id.tables.clone(),
            p: self.fingerprint(stored),
            n: false,
        }))
    }

    /// A token this node gives itself for calls to its peers, as admin `node:ID`.
    pub fn issue_node(&self, node_id: &str) -> String {
        self.token(&Claims {
            u: format!("{NODE_PREFIX}{node_id}"),
            r: Role::Admin,
            c: self.cluster.clone(),
            e: now_s() + self.ttl.as_secs().max(1),
            t: None,
            p: String::new(),
            n: true,
        })
    }

    fn verify(&self, token: &str) -> std::result::Result<(Identity, u64), tonic::Status> {
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
        if claims.n {
            if !claims.u.starts_with(NODE_PREFIX) {
                return Err(bad());
            }
            let id = Identity {
                user: claims.u,
                role: claims.r,
                tables: None,
            };
            return Ok((id, claims.e));
        }
        // Who the user is now: removed users and changed passwords end their tokens, and a
        // changed role or table list applies at once.
        let users = self.users();
        let Some((stored, id)) = users.by_name.get(&claims.u) else {
            return Err(unauthenticated(format!(
                "user {:?} no longer exists: the bearer token is void",
                claims.u
            )));
        };
        if claims.p != self.fingerprint(stored) {
            return Err(unauthenticated(format!(
                "the password of user {:?} changed since this bearer token was issued: log in \
                 again",
                claims.u
            )));
        }
        Ok((id.clone(), claims.e))
    }

    /// Refuses a login while the user or the address has failed too often lately.
    fn throttled(&self, keys: &[String]) -> std::result::Result<(), tonic::Status> {
        let failures = self.failures.lock();
        for key in keys {
            if let Some((n, since)) = failures.get(key)
                && *n >= MAX_FAILURES
                && since.elapsed() < FAILURE_WINDOW
            {
                let wait = FAILURE_WINDOW.saturating_sub(since.elapsed()).as_secs() + 1;
                let (what, name) = key.split_once(':').unwrap_or(("", key));
                let who = if what == "user" {
                    format!("user {name:?}")
                } else {
                    format!("address {name}")
                };
                return Err(tonic::Status::resource_exhausted(format!(
                    "too many failed logins for {who} ({n} within {} s): try again in {wait} s",
                    FAILURE_WINDOW.as_secs()
                )));
            }
        }
        Ok(())
    }

    fn failed(&self, keys: &[String]) {
        let mut failures = self.failures.lock();
        if failures.len() >= MAX_FAILURE_KEYS {
            failures.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        for key in keys {
            let entry = failures
                .entry(key.clone())
                .or_insert((0, std::time::Instant::now()));
            if entry.1.elapsed() >= FAILURE_WINDOW {
                *entry = (0, std::time::Instant::now());
            }
            entry.0 += 1;
        }
    }

    /// Who an `authorization` header names, and how they proved it; `peer` is the client's
    /// address, for the failed-login bound.
    fn check(
        &self,
        header: Option<&str>,
        peer: Option<std::net::IpAddr>,
    ) -> std::result::Result<(Identity, Credential), tonic::Status> {
        let header = header.ok_or_else(|| {
            unauthenticated("authentication required: log in with the Flight handshake (Basic)")
        })?;
        if let Some(token) = header.strip_prefix("Bearer ") {
            return self
                .verify(token.trim())
                .map(|(id, expiry)| (id, Credential::Token(expiry)));
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
            let mut keys = vec![format!("user:{user}")];
            keys.extend(peer.map(|ip| format!("addr:{ip}")));
            self.throttled(&keys)?;
            return match self.password(user, password) {
                Some(id) => Ok((id, Credential::Password)),
                None => {
                    self.failed(&keys);
                    tracing::warn!(
                        user = %user,
                        peer = %peer.map(|p| p.to_string()).unwrap_or_default(),
                        "failed login"
                    );
                    Err(unauthenticated("wrong user name or password"))
                }
            };
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
        let peer_addr = request
            .extensions()
            .get::<tonic::transport::server::TcpConnectInfo>()
            .and_then(|c| c.remote_addr());
        let peer = peer_addr.map(|a| a.ip());
        let header = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let auth = self.auth.clone();
        let answer = async move {
            let caller = match auth {
                None => Ok(None),
                // A password may need an argon2 verification (tens of milliseconds of CPU):
                // not on the runtime's workers.
                Some(auth) if header.as_deref().is_some_and(|h| h.starts_with("Basic ")) => {
                    tokio::task::spawn_blocking(move || auth.check(header.as_deref(), peer))
                        .await
                        .unwrap_or_else(|e| {
                            Err(tonic::Status::internal(format!(
                                "checking credentials failed: {e}"
                            )))
                        })
                        .map(Some)
                }
                Some(auth) => auth.check(header.as_deref(), peer).map(Some),
            };
            let mut response = match caller {
                Ok(found) => {
                    let (id, credential) = found.unzip();
                    let call = CREDENTIAL.scope(credential, inner.call(request));
                    PEER.scope(peer_addr, CALLER.scope(id, call)).await?
                }
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

/// The token to hand out in the handshake, if authentication is on. A caller who logs in with
/// a token gets one that expires when theirs does: a token cannot extend itself.
pub fn handshake_token(auth: Option<&Authenticator>) -> Option<String> {
    let auth = auth?;
    let id = current()?;
    let expiry = match CREDENTIAL.try_with(|c| *c).ok().flatten() {
        Some(Credential::Token(expiry)) => Some(expiry),
        _ => None,
    };
    auth.issue_until(&id, expiry)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ANN: &str = "[[users]]\nname = \"ann\"\npassword = \"pw\"\nrole = \"reader\"\n";

    fn auth(
        secret: &str,
        cluster: &str,
        ttl: Duration,
        users: &str,
    ) -> (Authenticator, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("users.toml");
        std::fs::write(&path, users).expect("write");
        let a = Authenticator::load(&path, secret, ttl, cluster).expect("load");
        (a, dir)
    }

    fn basic(user: &str, password: &str) -> String {
        format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
    }

    /// Makes the next call look at the users file again.
    fn look_again(a: &Authenticator) {
        *a.last_look.lock() = std::time::Instant::now() - RELOAD_EVERY;
    }

    #[test]
    fn tokens_are_checked_for_signature_cluster_and_expiry() {
        let (a, _dir) = auth("0123456789abcdef", "c", Duration::from_secs(60), ANN);
        let (id, how) = a.check(Some(&basic("ann", "pw")), None).expect("basic");
        assert_eq!((id.role, how), (Role::Reader, Credential::Password));
        let token = a.issue_until(&id, None).expect("token");
        let (again, how) = a
            .check(Some(&format!("Bearer {token}")), None)
            .expect("bearer");
        assert_eq!(again, id);
        assert!(matches!(how, Credential::Token(_)));
        for bad in [
            None,
            Some(basic("ann", "nope")),
            Some(format!("Bearer {token}x")),
            Some("Token abc".to_string()),
        ] {
            assert!(a.check(bad.as_deref(), None).is_err(), "{bad:?}");
        }
        let (other_secret, _d) = auth("fedcba9876543210", "c", Duration::from_secs(60), ANN);
        assert!(other_secret.verify(&token).is_err(), "foreign token");
        let (other_cluster, _d) = auth("0123456789abcdef", "d", Duration::from_secs(60), ANN);
        assert!(other_cluster.verify(&token).is_err(), "other cluster");
    }

    #[test]
    fn a_token_cannot_extend_itself() {
        let (a, _dir) = auth("0123456789abcdef", "c", Duration::from_secs(3600), ANN);
        let (id, _) = a.check(Some(&basic("ann", "pw")), None).expect("basic");
        let soon = now_s() + 5;
        let renewed = a.issue_until(&id, Some(soon)).expect("token");
        let (_, how) = a.verify(&renewed).expect("valid");
        assert_eq!(how, soon);
    }

    #[test]
    fn edits_to_the_users_file_reach_tokens_already_issued() {
        let users = "[[users]]\nname = \"ann\"\npassword = \"pw\"\nrole = \"writer\"\n\
                     [[users]]\nname = \"bob\"\npassword = \"pw\"\nrole = \"reader\"\n";
        let (a, dir) = auth("0123456789abcdef", "c", Duration::from_secs(3600), users);
        let path = dir.path().join("users.toml");
        let token = |user: &str| {
            let (id, _) = a.check(Some(&basic(user, "pw")), None).expect("login");
            format!("Bearer {}", a.issue_until(&id, None).expect("token"))
        };
        let (ann, bob) = (token("ann"), token("bob"));
        // Ann becomes a reader, Bob is removed.
        std::fs::write(
            &path,
            "[[users]]\nname = \"ann\"\npassword = \"pw\"\nrole = \"reader\"\n",
        )
        .expect("write");
        look_again(&a);
        assert_eq!(a.check(Some(&ann), None).expect("ann").0.role, Role::Reader);
        let e = a.check(Some(&bob), None).expect_err("refused");
        assert!(e.message().contains("no longer exists"), "{e:?}");
        // Ann's password changes: her token ends.
        std::fs::write(
            &path,
            "[[users]]\nname = \"ann\"\npassword = \"new\"\nrole = \"reader\"\n",
        )
        .expect("write");
        look_again(&a);
        let e = a.check(Some(&ann), None).expect_err("refused");
        assert!(e.message().contains("password"), "{e:?}");
        // A file that does not parse leaves the users as they were.
        std::fs::write(&path, "[[users]]\nname = ").expect("write");
        look_again(&a);
        assert!(a.check(Some(&basic("ann", "new")), None).is_ok());
    }

    #[test]
    fn hashed_passwords_verify_and_plain_ones_still_work() {
        let hash = hash_password("s3cret").expect("hash");
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        let users = format!(
            "[[users]]\nname = \"ann\"\npassword = \"{hash}\"\nrole = \"reader\"\n\
             [[users]]\nname = \"bob\"\npassword = \"plain\"\nrole = \"reader\"\n"
        );
        let (a, _dir) = auth("0123456789abcdef", "c", Duration::from_secs(60), &users);
        for _ in 0..2 {
            assert!(a.check(Some(&basic("ann", "s3cret")), None).is_ok());
        }
        assert!(a.check(Some(&basic("ann", &hash)), None).is_err());
        assert!(a.check(Some(&basic("ann", "S3cret")), None).is_err());
        assert!(a.check(Some(&basic("bob", "plain")), None).is_ok());
        let broken = "[[users]]\nname = \"c\"\npassword = \"$argon2id$nope\"\nrole = \"reader\"\n";
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("u.toml");
        std::fs::write(&path, broken).expect("write");
        let e = Authenticator::load(&path, "0123456789abcdef", Duration::from_secs(1), "c")
            .expect_err("refused");
        assert!(e.to_string().contains("argon2"), "{e}");
    }

    #[test]
    fn failed_logins_are_bounded_per_user_and_address() {
        let (a, _dir) = auth("0123456789abcdef", "c", Duration::from_secs(60), ANN);
        let mallory: std::net::IpAddr = "10.0.0.9".parse().expect("ip");
        let other: std::net::IpAddr = "10.0.0.10".parse().expect("ip");
        for _ in 0..MAX_FAILURES {
            let e = a
                .check(Some(&basic("ann", "guess")), Some(mallory))
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
        // The right password too is refused now, for this user from anywhere.
        let e = a
            .check(Some(&basic("ann", "pw")), Some(other))
            .expect_err("refused");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message()
                .contains("too many failed logins for user \"ann\"")
        );
        // And anyone from that address.
        let e = a
            .check(Some(&basic("zed", "x")), Some(mallory))
            .expect_err("refused");
        assert!(e.message().contains("address 10.0.0.9"), "{e:?}");
    }
}
