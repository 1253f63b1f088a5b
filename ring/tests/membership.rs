//! Membership against a real `redis-server` (from PATH, installed by `scripts/setup.sh`),
//! started on a free loopback port in a temporary directory and stopped at the end of each
//! test. Without the binary the tests fail and say so.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_redis::Pool;
use deadpool_redis::redis;
use skein_redis::testing::RedisServer;
use skein_ring::{Error, Member, Membership, connect_pool};
use tokio::time::Instant;

/// The TTL of most tests: the heartbeat runs every 200 ms, the watch polls every 200 ms.
const TTL: Duration = Duration::from_millis(600);
const POLL: Duration = Duration::from_millis(200);
/// Deadline of every Redis operation.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Slack for a loaded machine on top of what the protocol promises.
const SLACK: Duration = Duration::from_secs(2);
const CLUSTER: &str = "t";

fn pool(server: &RedisServer) -> Pool {
    connect_pool(&server.url(), TIMEOUT).expect("pool")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn member(node_id: &str, started_ms: i64) -> Member {
    Member {
        node_id: node_id.into(),
        address: format!("{node_id}.test:{started_ms}"),
        started_ms,
        version: "test".into(),
    }
}

/// A provider over a set the test changes.
type Marks = Arc<Mutex<BTreeSet<u64>>>;

fn provider(marks: &Marks) -> Arc<dyn Fn() -> BTreeSet<u64> + Send + Sync> {
    let marks = Arc::clone(marks);
    Arc::new(move || marks.lock().expect("marks").clone())
}

fn marks(tables: &[u64]) -> Marks {
    Arc::new(Mutex::new(tables.iter().copied().collect()))
}

async fn join_with(
    server: &RedisServer,
    me: Member,
    ttl: Duration,
    marks: &Marks,
) -> Result<Arc<Membership>, Error> {
    Membership::join(pool(server), CLUSTER, me, ttl, TIMEOUT, provider(marks)).await
}

async fn join(server: &RedisServer, node_id: &str) -> Arc<Membership> {
    join_with(server, member(node_id, 1_000), TTL, &marks(&[]))
        .await
        .expect("join")
}

fn ids(m: &Membership) -> Vec<String> {
    m.ring()
        .members()
        .iter()
        .map(|m| m.node_id.clone())
        .collect()
}

/// Waits, through the watch receiver, until `m`'s ring has exactly the members `want`.
async fn wait_for_members(m: &Membership, want: &[&str], within: Duration) {
    let mut rx = m.subscribe();
    let deadline = Instant::now() + within;
    loop {
        let seen: Vec<String> = rx
            .borrow_and_update()
            .members()
            .iter()
            .map(|m| m.node_id.clone())
            .collect();
        if seen == want {
            return;
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(changed) => changed.expect("the ring's sender lives as long as the membership"),
            Err(_) => panic!(
                "{} sees {seen:?}, not {want:?}, after {within:?}",
                m.me().node_id
            ),
        }
    }
}

/// Polls `check` every 20 ms until it holds; panics with `what` after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn raw<T: redis::FromRedisValue>(pool: &Pool, cmd: &mut redis::Cmd) -> T {
    let mut conn = pool.get().await.expect("connection");
    cmd.query_async(&mut conn).await.expect("raw command")
}

fn set(tables: &[u64]) -> BTreeSet<u64> {
    tables.iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn members_see_each_other_and_drop_one_that_leaves() {
    let server = RedisServer::start();
    let a = join(&server, "a").await;
    assert_eq!(ids(&a), ["a"]);
    assert_eq!(a.ring().version(), 0);
    let b = join(&server, "b").await;
    let c = join(&server, "c").await;
    assert_eq!(ids(&c), ["a", "b", "c"], "a join reads the members there");
    for m in [&a, &b, &c] {
        assert!(!m.is_static());
        wait_for_members(m, &["a", "b", "c"], POLL + SLACK).await;
    }
    assert!(a.ring().version() > 0);

    // Heartbeats rewrite the keys, but the same members make no new ring.
    let mut rx = a.subscribe();
    rx.mark_unchanged();
    let version = a.ring().version();
    tokio::time::sleep(POLL * 4).await; // a negative check: several polls and heartbeats pass
    assert!(
        !rx.has_changed().expect("sender alive"),
        "ring rebuilt without a change"
    );
    assert_eq!(a.ring().version(), version);

    c.leave().await.expect("leave");
    let pool = pool(&server);
    let exists: i64 = raw(&pool, redis::cmd("EXISTS").arg("skein:t:member:c")).await;
    assert_eq!(
        exists, 0,
        "leave deletes the key rather than letting it expire"
    );
    c.leave().await.expect("leave is idempotent");
    for m in [&a, &b] {
        wait_for_members(m, &["a", "b"], POLL + SLACK).await;
    }
    assert_eq!(a.ring().version(), version + 1);
    assert_eq!(
        ids(&c),
        ["a", "b", "c"],
        "a node that left keeps its last ring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_node_is_dropped_after_its_ttl_and_its_marks_stay() {
    let server = RedisServer::start();
    let a = join(&server, "a").await;
    let b = join(&server, "b").await;
    let c = join_with(&server, member("c", 1_000), TTL, &marks(&[7]))
        .await
        .expect("join");
    c.mark_unflushed(7).await.expect("mark");
    for m in [&a, &b, &c] {
        wait_for_members(m, &["a", "b", "c"], POLL + SLACK).await;
    }
    assert_eq!(a.unflushed_of("c").await.expect("read"), set(&[7]));
    eventually("a's watch reads c's mark", POLL + SLACK, || async {
        a.unflushed().get("c") == Some(&set(&[7]))
    })
    .await;

    c.abort();
    let pool = pool(&server);
    let exists: i64 = raw(&pool, redis::cmd("EXISTS").arg("skein:t:member:c")).await;
    assert_eq!(exists, 1, "a killed node does not deregister");
    for m in [&a, &b] {
        wait_for_members(m, &["a", "b"], TTL + POLL + SLACK).await;
    }
    let exists: i64 = raw(&pool, redis::cmd("EXISTS").arg("skein:t:member:c")).await;
    assert_eq!(exists, 0, "the key expired");
    assert_eq!(a.unflushed_of("c").await.expect("read"), set(&[7]));
    assert_eq!(b.unflushed().get("c"), Some(&set(&[7])));
    let pttl: i64 = raw(&pool, redis::cmd("PTTL").arg("skein:t:unflushed")).await;
    assert_eq!(pttl, -1, "the unflushed marks never expire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mark_is_visible_at_once_and_the_heartbeat_clears_it() {
    let server = RedisServer::start();
    let held = marks(&[]);
    let a = join_with(&server, member("a", 1_000), TTL, &held)
        .await
        .expect("join");
    let b = join(&server, "b").await;
    assert!(b.unflushed_of("a").await.expect("read").is_empty());

    held.lock().expect("marks").insert(42);
    a.mark_unflushed(42).await.expect("mark");
    assert_eq!(b.unflushed_of("a").await.expect("read"), set(&[42]));
    a.mark_unflushed(42)
        .await
        .expect("marking again is a no-op");
    eventually("b's watch reads a's mark", POLL + SLACK, || async {
        b.unflushed().get("a") == Some(&set(&[42]))
    })
    .await;

    held.lock().expect("marks").remove(&42);
    let pool = pool(&server);
    eventually("a's heartbeat deletes its field", POLL + SLACK, || async {
        let field: i64 = raw(
            &pool,
            redis::cmd("HEXISTS").arg("skein:t:unflushed").arg("a"),
        )
        .await;
        field == 0
    })
    .await;
    assert!(b.unflushed_of("a").await.expect("read").is_empty());
    eventually("b's watch sees the mark gone", POLL + SLACK, || async {
        !b.unflushed().contains_key("a")
    })
    .await;

    // Marked again after the heartbeat wrote the set without it: written again.
    held.lock().expect("marks").insert(42);
    a.mark_unflushed(42).await.expect("mark");
    assert_eq!(b.unflushed_of("a").await.expect("read"), set(&[42]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_heartbeat_never_undoes_a_mark() {
    let server = RedisServer::start();
    // A heartbeat every 10 ms whose provider is slow to return its snapshot (the test's own
    // calls, outside any spawned task, are fast): a heartbeat that read the set before a mark
    // would, without the lock, write it after the mark.
    let held = marks(&[]);
    let slow: Arc<dyn Fn() -> BTreeSet<u64> + Send + Sync> = {
        let held = Arc::clone(&held);
        Arc::new(move || {
            let snapshot = held.lock().expect("marks").clone();
            if tokio::task::try_id().is_some() {
                std::thread::sleep(Duration::from_millis(8));
            }
            snapshot
        })
    };
    let ttl = Duration::from_millis(30);
    let a = Membership::join(pool(&server), CLUSTER, member("a", 1), ttl, TIMEOUT, slow)
        .await
        .expect("join");
    for table in 0..40u64 {
        held.lock().expect("marks").insert(table);
        a.mark_unflushed(table).await.expect("mark");
        // Let a heartbeat that started meanwhile finish its write.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let stored = a.unflushed_of("a").await.expect("read");
        assert_eq!(stored, (0..=table).collect(), "after marking {table}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_process_with_a_live_node_id_is_refused() {
    let server = RedisServer::start();
    let first = join_with(&server, member("dup", 1_000), TTL, &marks(&[]))
        .await
        .expect("join");
    let e = join_with(&server, member("dup", 2_000), TTL, &marks(&[]))
        .await
        .expect_err("the node id is taken");
    assert!(matches!(e, Error::DuplicateNode { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains("\"dup\""), "names the node id: {text}");
    assert!(
        text.contains("dup.test:1000"),
        "names the live process: {text}"
    );
    let stored: String = raw(&pool(&server), redis::cmd("GET").arg("skein:t:member:dup")).await;
    let stored: Member = serde_json::from_str(&stored).expect("member JSON");
    assert_eq!(
        &stored,
        first.me(),
        "the refused join left the registration alone"
    );

    first.leave().await.expect("leave");
    let second = join_with(&server, member("dup", 2_000), TTL, &marks(&[]))
        .await
        .expect("free after a clean leave");
    assert_eq!(ids(&second), ["dup"]);
    assert_eq!(second.ring().member("dup"), Some(&member("dup", 2_000)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_registers_again_after_redis_loses_everything() {
    let server = RedisServer::start();
    let a = join_with(&server, member("a", 1_000), TTL, &marks(&[5]))
        .await
        .expect("join");
    let b = join(&server, "b").await;
    wait_for_members(&a, &["a", "b"], POLL + SLACK).await;

    let pool = pool(&server);
    let _: String = raw(&pool, &mut redis::cmd("FLUSHALL")).await;
    eventually("both keys and a's mark are back", TTL + SLACK, || async {
        let keys: i64 = raw(
            &pool,
            redis::cmd("EXISTS")
                .arg("skein:t:member:a")
                .arg("skein:t:member:b"),
        )
        .await;
        let mark: Option<String> =
            raw(&pool, redis::cmd("HGET").arg("skein:t:unflushed").arg("a")).await;
        keys == 2 && mark.as_deref() == Some("[5]")
    })
    .await;
    for m in [&a, &b] {
        wait_for_members(m, &["a", "b"], POLL + SLACK).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_redis_the_last_ring_stays_and_new_marks_fail() {
    let server = RedisServer::start();
    // A long TTL: no heartbeat runs during the test; the watch polls every second.
    let ttl = Duration::from_secs(60);
    let held = marks(&[]);
    let a = join_with(&server, member("a", 1_000), ttl, &held)
        .await
        .expect("join");
    let b = join_with(&server, member("b", 1_000), ttl, &marks(&[]))
        .await
        .expect("join");
    wait_for_members(&a, &["a", "b"], Duration::from_secs(1) + SLACK).await;
    held.lock().expect("marks").insert(1);
    a.mark_unflushed(1).await.expect("mark");
    eventually(
        "a's watch reads its own mark",
        Duration::from_secs(1) + SLACK,
        || async { a.unflushed().get("a") == Some(&set(&[1])) },
    )
    .await;
    let addr = format!("127.0.0.1:{}", server.port());
    drop(server);

    let started = Instant::now();
    a.mark_unflushed(1).await.expect("already marked: no I/O");
    assert!(started.elapsed() < Duration::from_millis(100));
    held.lock().expect("marks").insert(2);
    let e = a.mark_unflushed(2).await.expect_err("Redis is gone");
    assert!(e.to_string().contains(&addr), "names the server: {e}");
    let e = a.unflushed_of("b").await.expect_err("Redis is gone");
    assert!(e.to_string().contains(&addr), "names the server: {e}");

    let version = a.ring().version();
    tokio::time::sleep(Duration::from_millis(2_500)).await; // a negative check: two polls fail
    assert_eq!(ids(&a), ["a", "b"]);
    assert_eq!(ids(&b), ["a", "b"]);
    assert_eq!(a.ring().version(), version);
    assert_eq!(
        a.unflushed().get("a"),
        Some(&set(&[1])),
        "the last read marks stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn join_fails_within_the_timeout_when_redis_is_unreachable() {
    let timeout = Duration::from_millis(700);
    let none = marks(&[]);

    // Nothing listens: the connection is refused.
    let port = free_port();
    let pool = connect_pool(&format!("redis://127.0.0.1:{port}/0"), TIMEOUT).expect("pool");
    let started = Instant::now();
    let e = Membership::join(pool, CLUSTER, member("a", 1), TTL, timeout, provider(&none))
        .await
        .expect_err("refused");
    assert!(started.elapsed() < timeout + SLACK);
    assert!(matches!(e, Error::Redis { .. }), "{e:?}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");

    // A listener that never answers: only our deadline ends the wait (the pool's is longer).
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let pool = connect_pool(&format!("redis://127.0.0.1:{port}/0"), TIMEOUT).expect("pool");
    let started = Instant::now();
    let e = Membership::join(pool, CLUSTER, member("a", 1), TTL, timeout, provider(&none))
        .await
        .expect_err("no answer");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= timeout - Duration::from_millis(50),
        "{elapsed:?}"
    );
    assert!(elapsed < timeout + SLACK, "{elapsed:?}");
    let text = e.to_string();
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("700 ms"), "{text}");
    drop(silent);
}
