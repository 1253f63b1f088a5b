//! The Redis side of membership: one method per operation, each with a deadline.
//!
//! Keys, under the prefix `skein:<cluster>:`:
//! - `member:<node_id>`: the [`Member`] as JSON, with a TTL renewed by its heartbeat;
//! - `unflushed`: a hash from node id to a JSON array of table ids, without TTL.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use deadpool_redis::Pool;
use deadpool_redis::redis::{self, Value};
use skein_redis::redact;

use crate::error::{Error, Result};
use crate::ring::Member;

/// Registers a member unless another process holds its key.
/// KEYS: member key. ARGV: our JSON, TTL ms. Returns nil when registered, else the stored value.
const CLAIM: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces a member key if it still holds what was read.
/// KEYS: member key. ARGV: expected value, our JSON, TTL ms. Returns 1 when replaced.
const REPLACE: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
";

/// Renews our registration: 1 renewed, 2 registered again (it had expired), 0 another process
/// holds the key. KEYS: member key. ARGV: our JSON, TTL ms.
const REFRESH: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if cur then
  return 1
end
return 2
";

/// Deletes our registration if it is ours. KEYS: member key. ARGV: our JSON.
const DEREGISTER: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refresh {
    /// Our key was there and is renewed.
    Renewed,
    /// Our key had expired (or Redis lost it) and is written again.
    Registered,
    /// Another process holds our node id.
    TakenOver,
}

/// Builds a pool for `url` whose connections and answers follow `timeout`, as the catalog's do.
/// Connects lazily: an unreachable server shows at the first command, e.g. in
/// [`crate::Membership::join`].
pub fn connect_pool(url: &str, timeout: Duration) -> Result<Pool> {
    skein_redis::pool(url, timeout).map_err(|message| Error::InvalidArgument {
        message: format!("Redis URL {}: {message}", redact(url)),
    })
}

/// The server a pool connects to, without credentials. The pool does not expose its URL; its
/// manager's `Debug` shows the address (and redacts the password), so it is read from there.
pub(crate) fn describe(pool: &Pool) -> String {
    parse_addr(&format!("{:?}", pool.manager()))
        .unwrap_or_else(|| "the pool's server (address unknown)".into())
}

fn parse_addr(debug: &str) -> Option<String> {
    let rest = &debug[debug.find("addr: ")? + "addr: ".len()..];
    if let Some(r) = rest.strip_prefix("Tcp(\"") {
        let (host, r) = r.split_once("\", ")?;
        let port = r.split(')').next()?;
        return Some(format!("redis://{}:{port}", bracket(host)));
    }
    if let Some(r) = rest.strip_prefix("TcpTls { host: \"") {
        let (host, r) = r.split_once("\", port: ")?;
        let port = r.split(|c: char| !c.is_ascii_digit()).next()?;
        return Some(format!("rediss://{}:{port}", bracket(host)));
    }
    if let Some(r) = rest.strip_prefix("Unix(\"") {
        let (path, _) = r.split_once("\")")?;
        return Some(format!("redis+unix://{path}"));
    }
    None
}

/// An IPv6 host in brackets, as in a URL.
fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// `*`, `?`, `[`, `]` and `\` match literally in a SCAN pattern once escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// One node's view of its cluster's keys in Redis.
pub(crate) struct Store {
    pool: Pool,
    /// The server, without credentials, for messages.
    addr: String,
    /// Deadline of every operation.
    timeout: Duration,
    /// `skein:<cluster>:member:`.
    member_prefix: String,
    /// `skein:<cluster>:unflushed`.
    unflushed_key: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("addr", &self.addr)
            .field("member_prefix", &self.member_prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(pool: Pool, cluster: &str, timeout: Duration) -> Self {
        Self {
            addr: describe(&pool),
            pool,
            timeout,
            member_prefix: format!("skein:{cluster}:member:"),
            unflushed_key: format!("skein:{cluster}:unflushed"),
        }
    }

    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    pub(crate) fn member_key(&self, node_id: &str) -> String {
        format!("{}{node_id}", self.member_prefix)
    }

    fn error(&self, message: String) -> Error {
        Error::Redis {
            addr: self.addr.clone(),
            message,
        }
    }

    /// The error for an operation that did not finish within `timeout`.
    pub(crate) fn timed_out(&self, what: &str, timeout: Duration) -> Error {
        self.error(format!(
            "{what}: no answer within {} ms (is the server up and the address right?)",
            timeout.as_millis()
        ))
    }

    /// Runs one command with the deadline.
    async fn run<T: redis::FromRedisValue>(&self, what: &str, cmd: redis::Cmd) -> Result<T> {
        let work = async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| self.error(format!("{what}: cannot connect: {e}")))?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| self.error(format!("{what}: {e}")))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| self.timed_out(what, self.timeout))?
    }

    fn script(body: &str, key: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(body).arg(1).arg(key);
        cmd
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        let pong: String = self
            .run("checking the connection", redis::cmd("PING"))
            .await?;
        if pong != "PONG" {
            return Err(self.error(format!("unexpected answer to PING: {pong:?}")));
        }
        Ok(())
    }

    /// Registers `json` as `node_id` unless another value is stored; returns that value.
    pub(crate) async fn claim(
        &self,
        node_id: &str,
        json: &str,
        ttl: Duration,
    ) -> Result<Option<String>> {
        let mut cmd = Self::script(CLAIM, &self.member_key(node_id));
        cmd.arg(json).arg(ttl_ms(ttl));
        self.run("registering the node", cmd).await
    }

    /// Replaces `expected` by `json` as `node_id`; false if the key changed meanwhile.
    pub(crate) async fn replace(
        &self,
        node_id: &str,
        expected: &str,
        json: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut cmd = Self::script(REPLACE, &self.member_key(node_id));
        cmd.arg(expected).arg(json).arg(ttl_ms(ttl));
        let replaced: i64 = self.run("registering the node", cmd).await?;
        Ok(replaced == 1)
    }

    pub(crate) async fn refresh(
        &self,
        node_id: &str,
        json: &str,
        ttl: Duration,
    ) -> Result<Refresh> {
        let mut cmd = Self::script(REFRESH, &self.member_key(node_id));
        cmd.arg(json).arg(ttl_ms(ttl));
        let code: i64 = self.run("renewing the registration", cmd).await?;
        Ok(match code {
            1 => Refresh::Renewed,
            2 => Refresh::Registered,
            _ => Refresh::TakenOver,
        })
    }

    pub(crate) async fn deregister(&self, node_id: &str, json: &str) -> Result<()> {
        let mut cmd = Self::script(DEREGISTER, &self.member_key(node_id));
        cmd.arg(json);
        let _: i64 = self.run("deregistering the node", cmd).await?;
        Ok(())
    }

    /// Every registered member (SCAN, then MGET; keys that expire in between are skipped, and
    /// so are values that do not decode, with a debug message).
    pub(crate) async fn members(&self) -> Result<Vec<Member>> {
        let pattern = format!("{}*", glob_escape(&self.member_prefix));
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000);
            let (next, batch): (u64, Vec<String>) = self.run("listing members", cmd).await?;
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        keys.sort_unstable();
        keys.dedup(); // SCAN may return a key twice
        let mut cmd = redis::cmd("MGET");
        cmd.arg(&keys);
        let values: Vec<Option<String>> = self.run("reading members", cmd).await?;
        let mut members = Vec::with_capacity(values.len());
        for (key, value) in keys.iter().zip(values) {
            let Some(json) = value else { continue };
            match serde_json::from_str::<Member>(&json) {
                Ok(m) if key.strip_prefix(&self.member_prefix) == Some(m.node_id.as_str()) => {
                    members.push(m);
                }
                Ok(m) => {
                    tracing::debug!(key, node_id = %m.node_id, "member key names another node; skipped")
                }
                Err(e) => tracing::debug!(key, error = %e, "undecodable member; skipped"),
            }
        }
        Ok(members)
    }

    /// Every node's unflushed table ids (fields that do not decode are skipped).
    pub(crate) async fn all_unflushed(&self) -> Result<BTreeMap<String, BTreeSet<u64>>> {
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&self.unflushed_key);
        let fields: BTreeMap<String, String> = self.run("reading unflushed marks", cmd).await?;
        let mut out = BTreeMap::new();
        for (node_id, json) in fields {
            match serde_json::from_str::<BTreeSet<u64>>(&json) {
                Ok(set) => {
                    out.insert(node_id, set);
                }
                Err(e) => {
                    tracing::debug!(%node_id, error = %e, "undecodable unflushed mark; skipped")
                }
            }
        }
        Ok(out)
    }

    /// One node's unflushed table ids; an undecodable value is an error (a query must not
    /// take it for "nothing unflushed").
    pub(crate) async fn unflushed_of(&self, node_id: &str) -> Result<BTreeSet<u64>> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&self.unflushed_key).arg(node_id);
        let value: Option<String> = self.run("reading unflushed marks", cmd).await?;
        match value {
            None => Ok(BTreeSet::new()),
            Some(json) => serde_json::from_str(&json).map_err(|e| Error::Corrupt {
                addr: self.addr.clone(),
                key: format!("{} field {node_id}", self.unflushed_key),
                message: e.to_string(),
            }),
        }
    }

    /// Stores `node_id`'s unflushed set; an empty set deletes its field.
    pub(crate) async fn write_unflushed(&self, node_id: &str, set: &BTreeSet<u64>) -> Result<()> {
        let cmd = if set.is_empty() {
            let mut cmd = redis::cmd("HDEL");
            cmd.arg(&self.unflushed_key).arg(node_id);
            cmd
        } else {
            let json = serde_json::to_string(set)
                .map_err(|e| self.error(format!("encoding unflushed marks: {e}")))?;
            let mut cmd = redis::cmd("HSET");
            cmd.arg(&self.unflushed_key).arg(node_id).arg(json);
            cmd
        };
        let _: Value = self.run("writing unflushed marks", cmd).await?;
        Ok(())
    }
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_address_of_a_pool_is_shown_without_its_password() {
        let pool = connect_pool(
            "redis://user:s3cret@10.1.2.3:6390/2",
            Duration::from_secs(1),
        )
        .expect("pool");
        assert_eq!(describe(&pool), "redis://10.1.2.3:6390");
        let pool = connect_pool("redis://[::1]:7000", Duration::from_secs(1)).expect("pool");
        assert_eq!(describe(&pool), "redis://[::1]:7000");
    }

    #[test]
    fn an_invalid_url_is_named_without_its_password() {
        let e = connect_pool("http://user:s3cret@host/0", Duration::from_secs(1))
            .expect_err("not a Redis URL");
        let text = e.to_string();
        assert!(text.contains("http://user:***@host/0"), "{text}");
        assert!(!text.contains("s3cret"), "{text}");
    }

    #[test]
    fn glob_characters_of_a_cluster_name_match_literally() {
        assert_eq!(
            glob_escape("skein:a*b?[c]\\:"),
            "skein:a\\*b\\?\\[c\\]\\\\:"
        );
    }
}
