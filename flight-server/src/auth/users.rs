//! The users file and tokens: who may log in with which password (argon2 PHC hashes or, with a
//! warning, plain text), re-read when it changes so that a removed user or a changed role or
//! password takes effect on tokens already issued; signed tokens that carry user, role,
//! cluster, table limits and expiry; and the bound on failed logins per user and per address.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};

use super::{Identity, Role};
use crate::error::{Error, Result};

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
pub(super) const NODE_PREFIX: &str = "node:";

/// How the caller of a request proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Credential {
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
    pub(super) fn issue_until(&self, id: &Identity, expiry: Option<u64>) -> Option<String> {
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
    pub(super) fn check(
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
