//! The catalog in Redis, shared by every node of a cluster.
//!
//! Keys, under the prefix `skein:<cluster>:`:
//! - `catalog`: a hash with the catalog's `version`, `next_table_id` and `epoch`;
//! - `tables`: a hash from a table's key (lower-cased name) to its [`TableMeta`] as JSON: columns,
//!   files with their statistics, and each node's flushed WAL position;
//! - `commits`: a hash from version to the random id of the commit that made it, for the last
//!   [`HISTORY`] versions: a node that holds version v sees whether the store's history still
//!   passes through its commit (a store restored from an older copy and committed to again
//!   reaches v with another id);
//! - `node:<id>` (with a TTL) and `holder:<id>` (without): the claim of the process that runs
//!   node `id`, and the token of the last process that took it. Every commit names the
//!   writer's holder key and token: a process whose claim another one took in the meantime (it
//!   was paused past its TTL) can no longer commit, so two processes never both advance one
//!   node's flushed WAL position.
//!
//! A commit is one Lua script: it checks the fence, then that the stored version, epoch and
//! commit id are still those the writer read, then writes the new head and only the tables that
//! changed. Redis runs scripts
//! atomically, so concurrent writers on any number of nodes never lose each other's updates; the
//! loser gets [`Error::Conflict`] and retries on a fresh copy. A load is a script too, so it sees
//! one version whole. Every request has a deadline, so an unreachable server is an error, not a
//! hang.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis::{self, Value};
use skein_redis::redact;

use crate::catalog::{CatalogBackend, CatalogState, Head, TableMeta};
use crate::error::{Error, Result};

/// Checks the writer's fence, then version, epoch and commit id, then writes the head and the
/// changed tables, and remembers the new commit id in the history.
/// KEYS: head, tables, history, the committing node's holder key (or the head when unfenced).
/// ARGV: expected version, expected epoch, expected commit id, new version, next table id,
/// new epoch, new commit id, fence token ('' when unfenced), history length, number of tables
/// to set, then key/JSON pairs, then keys to delete.
/// Returns {1, version} when committed, {0, stored version} on a conflict, {2, stored version}
/// when another process holds the writer's node id now. A missing holder key is no fence: the
/// store lost its data (the head check then fails, and the writer finds the catalog lost), and
/// any process that took the id since has written its own holder.
const COMMIT: &str = r"
local head = redis.call('HMGET', KEYS[1], 'version', 'epoch', 'commit')
local version = tonumber(head[1] or '0')
if ARGV[8] ~= '' then
  local holder = redis.call('GET', KEYS[4])
  if holder and holder ~= ARGV[8] then
    return {2, version}
  end
end
local epoch = head[2] or '0'
local commit = head[3] or ''
if version ~= tonumber(ARGV[1]) or epoch ~= ARGV[2] or commit ~= ARGV[3] then
  return {0, version}
end
redis.call('HSET', KEYS[1], 'version', ARGV[4], 'next_table_id', ARGV[5], 'epoch', ARGV[6],
  'commit', ARGV[7])
redis.call('HSET', KEYS[3], ARGV[4], ARGV[7])
redis.call('HDEL', KEYS[3], tostring(tonumber(ARGV[4]) - tonumber(ARGV[9])))
local n = tonumber(ARGV[10])
local i = 11
for _ = 1, n do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i <= #ARGV do
  redis.call('HDEL', KEYS[2], ARGV[i])
  i = i + 1
end
return {1, tonumber(ARGV[4])}
";

/// Replaces the whole catalog and starts its history afresh. KEYS: head, tables, history.
/// ARGV: version, next table id, epoch, commit id, then key/JSON pairs.
const REPLACE: &str = r"
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
redis.call('HSET', KEYS[1], 'version', ARGV[1], 'next_table_id', ARGV[2], 'epoch', ARGV[3],
  'commit', ARGV[4])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[4])
local i = 5
while i < #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
  i = i + 2
end
return 1
";

/// Reads head and tables in one step. KEYS: head, tables.
const LOAD: &str = r"
local head = redis.call('HMGET', KEYS[1], 'version', 'next_table_id', 'epoch', 'commit')
return {head[1] or '0', head[2] or '0', head[3] or '0', head[4] or '',
  redis.call('HGETALL', KEYS[2])}
";

/// Takes a node id's claim for a new process: the claim (with a TTL) and the holder (without:
/// it outlives a lapsed claim, so a process that paused past its TTL sees that another took
/// the id meanwhile). KEYS: claim, holder. ARGV: token, TTL in ms. Returns 1 if taken.
const TAKE: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 1
";

/// Renews a claim; a lapsed one only if no other process took the id since. KEYS: claim,
/// holder. ARGV: token, TTL in ms. Returns 1 if still held.
const RENEW: &str = r"
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  return 0
end
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1])
return 1
";

/// Gives a claim up if this process holds it (the holder stays: the next process takes the id
/// with a new token). KEYS: the claim. ARGV: token.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
";

/// Commit ids remembered per version: a node that has not caught up for this many commits
/// cannot tell a store rolled back to an older copy from one that moved on.
const HISTORY: u64 = 10_000;

/// The catalog of one cluster in Redis.
pub struct RedisCatalog {
    pool: Pool,
    /// The URL without password, for messages.
    url: String,
    head_key: String,
    tables_key: String,
    history_key: String,
    timeout: Duration,
    /// The holder key and token every commit of this process is fenced with, once it claimed
    /// its node id.
    fence: std::sync::OnceLock<(String, String)>,
}

impl std::fmt::Debug for RedisCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCatalog")
            .field("url", &self.url)
            .field("head_key", &self.head_key)
            .finish_non_exhaustive()
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
        let pool = skein_redis::pool(url, timeout).map_err(error)?;
        let catalog = Self {
            pool,
            url: shown.clone(),
            head_key: format!("skein:{cluster}:catalog"),
            tables_key: format!("skein:{cluster}:tables"),
            history_key: format!("skein:{cluster}:commits"),
            timeout,
            fence: std::sync::OnceLock::new(),
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

    /// Takes `node_id` for the process holding `token` for `ttl` (renew well within it), and
    /// fences this catalog's commits with it. Returns false while another live process holds
    /// it: two processes with one node id would overwrite each other's objects and WAL
    /// positions.
    pub async fn take_node(&self, node_id: &str, token: &str, ttl: Duration) -> Result<bool> {
        let held = self.claim_script(TAKE, node_id, token, ttl).await?;
        if held {
            let _ = self
                .fence
                .set((self.holder_key(node_id), token.to_string()));
        }
        Ok(held)
    }

    /// Renews the claim `token` took; false if another process took the node id since (also
    /// while this one's claim had lapsed): this process must stop writing.
    pub async fn renew_node(&self, node_id: &str, token: &str, ttl: Duration) -> Result<bool> {
        self.claim_script(RENEW, node_id, token, ttl).await
    }

    async fn claim_script(
        &self,
        body: &str,
        node_id: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(body)
            .arg(2)
            .arg(self.claim_key(node_id))
            .arg(self.holder_key(node_id))
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
            .arg(self.claim_key(node_id))
            .arg(token);
        let _: i64 = self.run(cmd).await?;
        Ok(())
    }

    fn claim_key(&self, node_id: &str) -> String {
        format!("{}:node:{node_id}", self.prefix())
    }

    fn holder_key(&self, node_id: &str) -> String {
        format!("{}:holder:{node_id}", self.prefix())
    }

    fn prefix(&self) -> &str {
        self.head_key.trim_end_matches(":catalog")
    }

    fn script(&self, body: &str, keys: &[&str]) -> redis::Cmd {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(body).arg(keys.len()).arg(keys);
        cmd
    }

    fn encode(&self, table: &TableMeta) -> Result<String> {
        serde_json::to_string(table)
            .map_err(|e| self.error(format!("encoding table {}: {e}", table.name)))
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
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
        let reply: Vec<Value> = self
            .run(self.script(LOAD, &[&self.head_key, &self.tables_key]))
            .await?;
        let [version, next_table_id, epoch, commit, tables] = reply.as_slice() else {
            return Err(self.error("unexpected reply to the catalog load".into()));
        };
        let number =
            |v: &Value| as_u64(v).ok_or_else(|| self.error(format!("bad catalog head {v:?}")));
        let mut state = CatalogState {
            version: number(version)?,
            next_table_id: number(next_table_id)?,
            epoch: number(epoch)?,
            commit: text(commit),
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

    async fn version(&self) -> Result<Head> {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&self.head_key)
            .arg("version")
            .arg("epoch")
            .arg("commit");
        let reply: Vec<Option<String>> = self.run(cmd).await?;
        let number = |i: usize| -> Result<u64> {
            match reply.get(i).cloned().flatten() {
                None => Ok(0),
                Some(v) => v
                    .parse()
                    .map_err(|_| self.error(format!("bad catalog head {v:?}"))),
            }
        };
        Ok(Head {
            version: number(0)?,
            epoch: number(1)?,
            commit: reply.get(2).cloned().flatten().unwrap_or_default(),
        })
    }

    async fn commit_at(&self, version: u64) -> Result<Option<String>> {
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&self.history_key).arg(version);
        self.run(cmd).await
    }

    async fn commit(&self, base: &CatalogState, next: &CatalogState) -> Result<()> {
        let (fence_key, token) = match self.fence.get() {
            Some((key, token)) => (key.as_str(), token.as_str()),
            None => (self.head_key.as_str(), ""),
        };
        let mut cmd = self.script(
            COMMIT,
            &[
                &self.head_key,
                &self.tables_key,
                &self.history_key,
                fence_key,
            ],
        );
        cmd.arg(base.version)
            .arg(base.epoch)
            .arg(&base.commit)
            .arg(next.version)
            .arg(next.next_table_id)
            .arg(next.epoch)
            .arg(&next.commit)
            .arg(token)
            .arg(HISTORY);
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
            [2, _] => Err(Error::Fenced {
                holder: self
                    .fence
                    .get()
                    .map(|(key, _)| key.clone())
                    .unwrap_or_default(),
            }),
            other => Err(self.error(format!("unexpected reply to a commit: {other:?}"))),
        }
    }

    async fn replace(&self, state: &CatalogState) -> Result<()> {
        let mut cmd = self.script(
            REPLACE,
            &[&self.head_key, &self.tables_key, &self.history_key],
        );
        cmd.arg(state.version)
            .arg(state.next_table_id)
            .arg(state.epoch)
            .arg(&state.commit);
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
