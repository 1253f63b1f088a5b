//! The catalog in Redis, shared by every node of a cluster.
//!
//! Keys, under the prefix `skein:<cluster>:`:
//! - `catalog`: a hash with the catalog's `version`, `next_table_id` and `epoch`;
//! - `tables`: a hash from a table's key (lower-cased name) to its [`TableMeta`] as JSON: columns,
//!   files with their statistics, and each node's flushed WAL position.
//!
//! A commit is one Lua script: it checks that the stored version and epoch are still those the
//! writer read, then writes the new head and only the tables that changed. Redis runs scripts
//! atomically, so concurrent writers on any number of nodes never lose each other's updates; the
//! loser gets [`Error::Conflict`] and retries on a fresh copy. A load is a script too, so it sees
//! one version whole. Every request has a deadline, so an unreachable server is an error, not a
//! hang.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::redis::{self, Value};
use deadpool_redis::{Pool, Runtime};

use crate::catalog::{CatalogBackend, CatalogState, TableMeta};
use crate::error::{Error, Result};

/// Checks version and epoch, then writes the head and the changed tables.
/// KEYS: head, tables. ARGV: expected version, expected epoch, new version, next table id,
/// new epoch, number of tables to set, then key/JSON pairs, then keys to delete.
const COMMIT: &str = r"
local head = redis.call('HMGET', KEYS[1], 'version', 'epoch')
local version = tonumber(head[1] or '0')
local epoch = head[2] or '0'
if version ~= tonumber(ARGV[1]) or epoch ~= ARGV[2] then
  return {0, version}
end
redis.call('HSET', KEYS[1], 'version', ARGV[3], 'next_table_id', ARGV[4], 'epoch', ARGV[5])
local n = tonumber(ARGV[6])
local i = 7
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
return {1, tonumber(ARGV[3])}
";

/// Replaces the whole catalog. KEYS: head, tables. ARGV: version, next table id, epoch, then
/// key/JSON pairs.
const REPLACE: &str = r"
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'next_table_id', ARGV[2], 'epoch', ARGV[3])
local i = 4
while i < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
";

/// Reads head and tables in one step. KEYS: head, tables.
const LOAD: &str = r"
local head = redis.call('HMGET', KEYS[1], 'version', 'next_table_id', 'epoch')
return {head[1] or '0', head[2] or '0', head[3] or '0', redis.call('HGETALL', KEYS[2])}
";

/// Takes or renews a claim. KEYS: the claim. ARGV: token, TTL in ms. Returns 1 if held.
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Gives a claim up if this process holds it. KEYS: the claim. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
";

/// The catalog of one cluster in Redis.
pub struct RedisCatalog {
    pool: Pool,
    /// The URL without password, for messages.
    url: String,
    head_key: String,
    tables_key: String,
    timeout: Duration,
}

impl std::fmt::Debug for RedisCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCatalog")
            .field("url", &self.url)
            .field("head_key", &self.head_key)
            .finish_non_exhaustive()
    }
}

/// A connection pool for Redis at `url` whose connections and answers follow `timeout` (the
/// client's own deadlines, 500 ms answers by default, would not). Connects lazily: an
/// unreachable server shows at the first command. The error says what is wrong with `url`.
pub fn redis_pool(url: &str, timeout: Duration) -> std::result::Result<Pool, String> {
    let connection = redis::AsyncConnectionConfig::new()
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

impl RedisCatalog {
    /// Connects to `url` for the cluster `cluster`; fails within `timeout` if the server cannot
    /// be reached or refuses the connection.
    pub async fn connect(url: &str, cluster: &str, timeout: Duration) -> Result<Self> {
        let shown = redact(url);
        let error = |message: String| Error::Redis {
            url: shown.clone(),
            message,
        };
        if cluster.is_empty() || cluster.contains(char::is_whitespace) {
            return Err(error(format!(
                "cluster name {cluster:?} must be non-empty and without spaces"
            )));
        }
        let pool = redis_pool(url, timeout).map_err(error)?;
        let catalog = Self {
            pool,
            url: shown.clone(),
            head_key: format!("skein:{cluster}:catalog"),
            tables_key: format!("skein:{cluster}:tables"),
            timeout,
        };
        let pong: String = catalog.run(redis::cmd("PING")).await?;
        if pong != "PONG" {
            return Err(error(format!("unexpected answer to PING: {pong:?}")));
        }
        Ok(catalog)
    }

    fn error(&self, message: String) -> Error {
        Error::Redis {
            url: self.url.clone(),
            message,
        }
    }

    /// Runs one command with the deadline.
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T> {
        let work = async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| self.error(format!("cannot connect: {e}")))?;
            cmd.query_async::<T>(&mut conn)
                .await
                .map_err(|e| self.error(e.to_string()))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| {
                self.error(format!(
                    "no answer within {} ms (is the server up and the address right?)",
                    self.timeout.as_millis()
                ))
            })?
    }

    /// Claims `node_id` for the process holding `token` for `ttl` (renew well within it).
    /// Returns false while another live process holds it: two processes with one node id
    /// would overwrite each other's objects and WAL positions.
    pub async fn claim_node(&self, node_id: &str, token: &str, ttl: Duration) -> Result<bool> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(1)
            .arg(format!("{}:node:{node_id}", self.prefix()))
            .arg(token)
            .arg(ttl.as_millis() as u64);
        let held: i64 = self.run(cmd).await?;
        Ok(held == 1)
    }

    /// Gives up the claim on `node_id` if `token` holds it (a clean stop: a restart need not
    /// wait for it to expire).
    pub async fn release_node(&self, node_id: &str, token: &str) -> Result<()> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(RELEASE)
            .arg(1)
            .arg(format!("{}:node:{node_id}", self.prefix()))
            .arg(token);
        let _: i64 = self.run(cmd).await?;
        Ok(())
    }

    fn prefix(&self) -> &str {
        self.head_key.trim_end_matches(":catalog")
    }

    fn script(&self, body: &str) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(body)
            .arg(2)
            .arg(&self.head_key)
            .arg(&self.tables_key);
        cmd
    }

    fn encode(&self, table: &TableMeta) -> Result<String> {
        serde_json::to_string(table)
            .map_err(|e| self.error(format!("encoding table {}: {e}", table.name)))
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

#[async_trait]
impl CatalogBackend for RedisCatalog {
    async fn load(&self) -> Result<CatalogState> {
        let reply: Vec<Value> = self.run(self.script(LOAD)).await?;
        let [version, next_table_id, epoch, tables] = reply.as_slice() else {
            return Err(self.error("unexpected reply to the catalog load".into()));
        };
        let number =
            |v: &Value| as_u64(v).ok_or_else(|| self.error(format!("bad catalog head {v:?}")));
        let mut state = CatalogState {
            version: number(version)?,
            next_table_id: number(next_table_id)?,
            epoch: number(epoch)?,
            ..Default::default()
        };
        let Value::Array(fields) = tables else {
            return Err(self.error("unexpected reply for the tables".into()));
        };
        for pair in fields.chunks(2) {
            let [Value::BulkString(key), Value::BulkString(json)] = pair else {
                return Err(self.error("unexpected table entry".into()));
            };
            let key = String::from_utf8_lossy(key).into_owned();
            let table: TableMeta =
                serde_json::from_slice(json).map_err(|e| Error::CorruptCatalog {
                    path: format!("{} field {key}", self.tables_key),
                    message: e.to_string(),
                })?;
            state.tables.insert(key, table);
        }
        Ok(state)
    }

    async fn version(&self) -> Result<(u64, u64)> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.head_key).arg("version").arg("epoch");
        let reply: Vec<Option<u64>> = self.run(cmd).await?;
        Ok((
            reply.first().copied().flatten().unwrap_or(0),
            reply.get(1).copied().flatten().unwrap_or(0),
        ))
    }

    async fn commit(&self, base: &CatalogState, next: &CatalogState) -> Result<()> {
        let mut cmd = self.script(COMMIT);
        cmd.arg(base.version)
            .arg(base.epoch)
            .arg(next.version)
            .arg(next.next_table_id)
            .arg(next.epoch);
        let changed: Vec<(&String, &TableMeta)> = next
            .tables
            .iter()
            .filter(|(k, t)| base.tables.get(*k) != Some(*t))
            .collect();
        cmd.arg(changed.len());
        for (key, table) in changed {
            cmd.arg(key).arg(self.encode(table)?);
        }
        for key in base.tables.keys() {
            if !next.tables.contains_key(key) {
                cmd.arg(key);
            }
        }
        let reply: Vec<u64> = self.run(cmd).await?;
        match reply.as_slice() {
            [1, _] => Ok(()),
            [0, found] => Err(Error::Conflict {
                expected: base.version,
                found: *found,
            }),
            other => Err(self.error(format!("unexpected reply to a commit: {other:?}"))),
        }
    }

    async fn replace(&self, state: &CatalogState) -> Result<()> {
        let mut cmd = self.script(REPLACE);
        cmd.arg(state.version)
            .arg(state.next_table_id)
            .arg(state.epoch);
        for (key, table) in &state.tables {
            cmd.arg(key).arg(self.encode(table)?);
        }
        let _: i64 = self.run(cmd).await?;
        Ok(())
    }

    fn is_shared(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(
            redact("redis://u:secret@127.0.0.1:6379/0"),
            "redis://u:***@127.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    }
}
