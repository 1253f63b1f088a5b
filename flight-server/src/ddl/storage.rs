//! Opening the object store and the catalog a node is configured with (a local directory and
//! file, or S3 and Redis), failing fast with a message that names what is wrong.

use std::path::Path;
use std::sync::Arc;

use skein_storage::{
    CatalogBackend, FileCache, LocalCatalog, LocalStore, ObjectStore, RedisCatalog, S3Config,
    S3Store,
};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::write::claim::NodeClaim;

/// What storage a node runs on.
pub(crate) struct Storage {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) backend: Arc<dyn CatalogBackend>,
    pub(crate) cache: Option<Arc<FileCache>>,
    pub(crate) claim: Option<NodeClaim>,
}

/// Opens the configured object store and catalog, failing fast with a message that names what
/// is wrong when either cannot be reached.
pub(crate) async fn open_storage(config: &Config, data_dir: &Path) -> Result<Storage> {
    let s = &config.storage;
    let (store, cache): (Arc<dyn ObjectStore>, _) = match (&s.s3_endpoint, &s.s3_bucket) {
        (None, None) => (Arc::new(LocalStore::open(data_dir.join("objects"))?), None),
        (Some(_), None) | (None, Some(_)) => {
            return Err(Error::InvalidArgument(
                "--s3-endpoint and --s3-bucket go together: give both or neither".into(),
            ));
        }
        (Some(endpoint), Some(bucket)) => {
            let key = |name: &str| {
                std::env::var(name).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "--s3-endpoint needs credentials: set {name} (and AWS_ACCESS_KEY_ID / \
                         AWS_SECRET_ACCESS_KEY)"
                    ))
                })
            };
            let mut cfg = S3Config::new(
                endpoint,
                bucket,
                &s.s3_region,
                &key("AWS_ACCESS_KEY_ID")?,
                &key("AWS_SECRET_ACCESS_KEY")?,
            );
            cfg.request_timeout = s.storage_timeout;
            let store = S3Store::new(cfg)?;
            store.check().await?;
            let cache = FileCache::open(data_dir.join("cache"), s.cache_bytes)?;
            (Arc::new(store), Some(cache))
        }
    };
    let mut claim = None;
    let backend: Arc<dyn CatalogBackend> = match &s.redis_url {
        None => Arc::new(LocalCatalog::new(data_dir.join("catalog.json"))),
        Some(url) => {
            if cache.is_none() {
                return Err(Error::InvalidArgument(
                    "--redis-url shares the catalog with other nodes, which cannot read this \
                     node's local files: give --s3-endpoint and --s3-bucket too"
                        .into(),
                ));
            }
            let redis =
                Arc::new(RedisCatalog::connect(url, &s.cluster_name, s.storage_timeout).await?);
            claim =
                Some(NodeClaim::take(Arc::clone(&redis), &config.node_id, &s.cluster_name).await?);
            redis
        }
    };
    Ok(Storage {
        store,
        backend,
        cache,
        claim,
    })
}
