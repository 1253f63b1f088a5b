//! The Redis catalog against a real `redis-server` (installed by `scripts/setup.sh`), started
//! on a free loopback port in a temporary directory and stopped at the end of each test.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use skein_redis::testing::RedisServer;
use skein_storage::{
    Catalog, CatalogBackend, CatalogState, ColumnMeta, Error, FileMeta, RedisCatalog, TableMeta,
};

async fn catalog(server: &RedisServer, cluster: &str) -> Catalog {
    let backend = RedisCatalog::connect(&server.url(), cluster, Duration::from_secs(5))
        .await
        .expect("connect");
    Catalog::open(Arc::new(backend)).await.expect("open")
}

fn table(name: &str) -> TableMeta {
    TableMeta {
        retired: Vec::new(),
        id: 1,
        name: name.into(),
        columns: vec![ColumnMeta {
            name: "a".into(),
            sql_type: "BIGINT".into(),
            nullable: true,
        }],
        files: vec![],
        next_file_seq: 1,
        flushed_wal: Default::default(),
        created_at_ms: 0,
        options: Default::default(),
    }
}

fn file(key: String) -> FileMeta {
    FileMeta {
        partition: None,
        key,
        rows: 1,
        bytes: 1,
        columns: vec!["a".into()],
        stats: vec![],
        created_at_ms: 0,
        node: None,
        max_seq: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_separate_connections_lose_no_update() {
    let server = RedisServer::start();
    let first = catalog(&server, "c").await;
    first
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.insert("t".into(), table("t"));
            Ok(())
        })
        .await
        .expect("create");
    const WRITERS: usize = 6;
    const COMMITS: usize = 30;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        // Each writer is a node of its own: its own pool and its own snapshot.
        let c = catalog(&server, "c").await;
        tasks.push(tokio::spawn(async move {
            for i in 0..COMMITS {
                c.update(|s: &mut CatalogState| -> skein_storage::Result<()> {
                    let t = s.table_mut("t").expect("table");
                    t.files.push(file(format!("tables/1/w{w}-{i}.parquet")));
                    *t.flushed_wal.entry(format!("w{w}")).or_default() = i as u64 + 1;
                    Ok(())
                })
                .await
                .expect("update");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let stored = catalog(&server, "c").await.snapshot();
    let t = stored.table("t").expect("table");
    assert_eq!(
        t.files.len(),
        WRITERS * COMMITS,
        "every file committed once"
    );
    let mut keys: Vec<_> = t.files.iter().map(|f| f.key.clone()).collect();
    keys.dedup();
    assert_eq!(keys.len(), WRITERS * COMMITS);
    for w in 0..WRITERS {
        assert_eq!(t.flushed_wal.get(&format!("w{w}")), Some(&(COMMITS as u64)));
    }
    assert_eq!(stored.version, 1 + (WRITERS * COMMITS) as u64);
    // Another cluster name is another catalog.
    assert!(catalog(&server, "other").await.snapshot().tables.is_empty());
}

#[tokio::test]
async fn a_lost_catalog_is_refused_until_restored() {
    let server = RedisServer::start();
    let a = catalog(&server, "c").await;
    for name in ["t", "u"] {
        a.update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.insert(name.into(), table(name));
            Ok(())
        })
        .await
        .expect("create");
    }
    let before = a.snapshot();
    // Redis loses everything.
    let backend = RedisCatalog::connect(&server.url(), "c", Duration::from_secs(5))
        .await
        .expect("connect");
    backend
        .replace(&CatalogState::default())
        .await
        .expect("wipe");
    assert!(matches!(
        a.refresh().await,
        Err(Error::CatalogLost { seen: 2, found: 0 })
    ));
    let err = a
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.remove("t");
            Ok(())
        })
        .await
        .expect_err("a change on top of a lost catalog");
    assert!(matches!(err, Error::CatalogLost { .. }), "{err}");
    assert_eq!(*a.snapshot(), *before, "the node keeps what it knew");

    // A restore gives a new epoch; a second node takes it in.
    let restored = a.restore(&before).await.expect("restore");
    assert!(restored.epoch > before.epoch && restored.version > before.version);
    let b = catalog(&server, "c").await;
    assert_eq!(b.snapshot().tables, before.tables);
    b.update(|s: &mut CatalogState| -> skein_storage::Result<()> {
        s.tables.remove("u");
        Ok(())
    })
    .await
    .expect("change after restore");
    assert!(a.refresh().await.expect("refresh"));
    assert!(a.snapshot().table("u").is_none() && a.snapshot().table("t").is_some());
}

#[tokio::test]
async fn an_unreachable_server_is_an_error_within_the_deadline() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let started = Instant::now();
    let err = RedisCatalog::connect(
        &format!("redis://127.0.0.1:{port}/0"),
        "c",
        Duration::from_secs(2),
    )
    .await
    .expect_err("nothing listens");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let err = RedisCatalog::connect("http://x", "c", Duration::from_secs(2))
        .await
        .expect_err("not a Redis URL");
    assert!(err.to_string().contains("invalid Redis URL"), "{err}");
}

/// Runs one raw Redis command (for copying keys as an older dump would hold them).
async fn raw(server: &RedisServer, args: &[&str]) {
    let pool = skein_redis::pool(&server.url(), Duration::from_secs(5)).expect("pool");
    let mut conn = pool.get().await.expect("connection");
    let mut cmd = deadpool_redis::redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    let _: deadpool_redis::redis::Value = cmd.query_async(&mut conn).await.expect("command");
}

async fn create(catalog: &Catalog, name: &str) {
    catalog
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            let mut t = table(name);
            t.id = s.next_table_id + 1;
            s.next_table_id += 1;
            s.tables.insert(name.into(), t);
            Ok(())
        })
        .await
        .expect("create");
}

#[tokio::test]
async fn a_catalog_rolled_back_then_committed_back_to_its_version_is_seen_as_lost() {
    let server = RedisServer::start();
    let keys = ["catalog", "tables", "commits"];
    let a = catalog(&server, "c").await;
    create(&a, "t1").await;
    // An older copy of Redis, as a dump taken now would hold.
    for k in keys {
        raw(
            &server,
            &["COPY", &format!("skein:c:{k}"), &format!("old:{k}")],
        )
        .await;
    }
    create(&a, "t2").await;
    create(&a, "t3").await;
    let seen = a.snapshot();
    assert_eq!(seen.version, 3);
    // Redis comes back from that copy, and another node (which knows nothing newer) commits
    // until the version is where `a` saw it.
    for k in keys {
        let key = format!("skein:c:{k}");
        raw(&server, &["DEL", &key]).await;
        raw(&server, &["COPY", &format!("old:{k}"), &key]).await;
    }
    let b = catalog(&server, "c").await;
    assert_eq!(b.snapshot().version, 1);
    create(&b, "x2").await;
    create(&b, "x3").await;
    assert_eq!(b.snapshot().version, seen.version, "the counter came back");

    let err = a.refresh().await.expect_err("same version, other history");
    assert!(matches!(err, Error::CatalogLost { seen: 3, .. }), "{err}");
    let err = a
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.remove("t1");
            Ok(())
        })
        .await
        .expect_err("a commit on top of the other history");
    assert!(matches!(err, Error::CatalogLost { .. }), "{err}");
    // One commit further the history still does not pass through what `a` saw.
    create(&b, "x4").await;
    assert!(matches!(a.refresh().await, Err(Error::CatalogLost { .. })));
    assert_eq!(
        *a.snapshot(),
        *seen,
        "the node keeps what it knew, to be restored"
    );
    // A node that moved along the same history is not disturbed.
    let c = catalog(&server, "c").await;
    create(&b, "x5").await;
    assert!(c.refresh().await.expect("refresh along the history"));
}

#[tokio::test]
async fn a_process_whose_node_id_another_took_cannot_commit() {
    let server = RedisServer::start();
    let url = server.url();
    let connect = || RedisCatalog::connect(&url, "c", Duration::from_secs(5));
    let first = Arc::new(connect().await.expect("connect"));
    let ttl = Duration::from_millis(300);
    assert!(first.take_node("n1", "first", ttl).await.expect("take"));
    let a = Catalog::open(Arc::clone(&first) as Arc<dyn CatalogBackend>)
        .await
        .expect("open");
    create(&a, "t1").await;

    // While the claim lives nobody else takes the id; once it lapsed (the first process was
    // paused), another process does.
    let second = Arc::new(connect().await.expect("connect"));
    assert!(!second.take_node("n1", "second", ttl).await.expect("take"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !second.take_node("n1", "second", ttl).await.expect("take") {
        assert!(Instant::now() < deadline, "the first claim never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = Catalog::open(Arc::clone(&second) as Arc<dyn CatalogBackend>)
        .await
        .expect("open");
    create(&b, "t2").await;

    // The first process resumes: its commits are refused, and so is its renewal, also after
    // the second process's claim lapsed in turn.
    a.refresh().await.expect("refresh");
    let err = a
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.remove("t1");
            Ok(())
        })
        .await
        .expect_err("fenced");
    assert!(matches!(err, Error::Fenced { .. }), "{err}");
    assert!(b.snapshot().table("t1").is_some());
    assert!(!first.renew_node("n1", "first", ttl).await.expect("renew"));
    second.release_node("n1", "second").await.expect("release");
    assert!(!first.renew_node("n1", "first", ttl).await.expect("renew"));
    assert!(matches!(
        a.update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.remove("t1");
            Ok(())
        })
        .await,
        Err(Error::Fenced { .. })
    ));
    // A claim that lapsed while nobody took the id is renewed.
    assert!(first.take_node("n9", "first", ttl).await.expect("take"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut probe = deadpool_redis::redis::cmd("EXISTS");
        probe.arg("skein:c:node:n9");
        let pool = skein_redis::pool(&server.url(), Duration::from_secs(5)).expect("pool");
        let mut conn = pool.get().await.expect("connection");
        let exists: i64 = probe.query_async(&mut conn).await.expect("exists");
        if exists == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the claim never lapsed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(first.renew_node("n9", "first", ttl).await.expect("renew"));
}

#[tokio::test]
async fn a_fenced_writer_whose_store_lost_its_data_finds_the_catalog_lost_not_taken() {
    let server = RedisServer::start();
    let redis = Arc::new(
        RedisCatalog::connect(&server.url(), "c", Duration::from_secs(5))
            .await
            .expect("connect"),
    );
    assert!(
        redis
            .take_node("n1", "first", Duration::from_secs(30))
            .await
            .expect("take")
    );
    let a = Catalog::open(Arc::clone(&redis) as Arc<dyn CatalogBackend>)
        .await
        .expect("open");
    create(&a, "t1").await;
    // Redis restarts without persistence: the holder key is gone with everything else, before
    // the process renewed its claim.
    let pool = skein_redis::pool(&server.url(), Duration::from_secs(5)).expect("pool");
    let mut conn = pool.get().await.expect("connection");
    let _: () = deadpool_redis::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flushall");
    let err = a
        .update(|s: &mut CatalogState| -> skein_storage::Result<()> {
            s.tables.remove("t1");
            Ok(())
        })
        .await
        .expect_err("a commit on top of a lost catalog");
    assert!(matches!(err, Error::CatalogLost { .. }), "{err}");
    // The renewal takes the id again, and a restore goes through.
    assert!(
        redis
            .renew_node("n1", "first", Duration::from_secs(30))
            .await
            .expect("renew")
    );
    let before = a.snapshot();
    a.restore(&before).await.expect("restore");
}
