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

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use serde::{Deserialize, Serialize};
use tonic::codegen::http;

use crate::error::{Error, Result};

mod users;
pub use users::{Authenticator, hash_password};
use users::{Credential, NODE_PREFIX};

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

/// Who holds the query slots a request takes (see [`crate::read::slots`]): the user, or with
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
