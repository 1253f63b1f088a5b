//! Starting and stopping a node: bind, serve Flight SQL and HTTP, flush in the background, and
//! on shutdown stop taking requests and flush every buffer.

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::node::Node;
use crate::service::SkeinService;

/// A node whose listeners are bound.
#[derive(Debug)]
pub struct Server {
    node: Arc<Node>,
    flight: TcpListener,
    http: TcpListener,
}

impl Server {
    /// Opens the node's storage and binds both listeners.
    pub async fn bind(config: Config) -> Result<Self> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Internal(format!("cannot listen on {addr}: {e}")))
        };
        let flight = bind(config.listen).await?;
        let http = bind(config.http_listen).await?;
        let node = Node::open(config).await?;
        let listen = flight
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))?;
        node.cluster.join_cluster(listen).await?;
        Ok(Self { node, flight, http })
    }

    /// Address of the Flight SQL endpoint.
    pub fn flight_addr(&self) -> Result<SocketAddr> {
        self.flight
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// Address of the HTTP endpoint.
    pub fn http_addr(&self) -> Result<SocketAddr> {
        self.http
            .local_addr()
            .map_err(|e| Error::Internal(e.to_string()))
    }

    /// The node behind the server.
    pub fn node(&self) -> Arc<Node> {
        Arc::clone(&self.node)
    }

    /// Serves until `node().base.shutdown` is cancelled, then flushes every buffer.
    pub async fn serve(self) -> Result<()> {
        let node = self.node;
        let flusher = tokio::spawn(Arc::clone(&node.writes).run_flusher());
        let compactor = tokio::spawn(Arc::clone(&node.maintenance).run_compactor());
        let watchdog = tokio::spawn(Arc::clone(&node.reads).run_query_watchdog());
        let catalog_watch = tokio::spawn(Arc::clone(&node.ddl).run_catalog_watch());
        let http = tokio::spawn(crate::http::serve(self.http, Arc::clone(&node)));
        let service = FlightServiceServer::new(SkeinService::new(Arc::clone(&node)))
            .max_decoding_message_size(node.base.config.max_message_bytes)
            .max_encoding_message_size(node.base.config.max_message_bytes);
        // Small responses must not wait for the peer's delayed ACK (Nagle): ~40 ms per call.
        let incoming = TcpListenerStream::new(self.flight).map(|conn| {
            conn.and_then(|c| {
                c.set_nodelay(true)?;
                Ok(c)
            })
        });
        // On shutdown the node goes on serving until its buffers are flushed and it has left
        // the cluster, so that no query needs it any more when it stops answering.
        let leaving = Arc::clone(&node);
        let shutdown = async move {
            leaving.base.shutdown.cancelled().await;
            leaving.cluster.leave_cluster().await;
        };
        // HTTP/2 pings find peers that vanished without closing their connection, so their
        // streams (and the query slots behind them) end; a live reader that stops reading
        // meets --stall-timeout instead.
        let mut builder = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(30)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)));
        if let Some(tls) = tls_config(&node.base.config)? {
            builder = builder
                .tls_config(tls)
                .map_err(|e| Error::InvalidArgument(format!("TLS configuration: {e}")))?;
        }
        let served = builder
            .layer(crate::auth::AuthLayer::new(node.auth.clone()))
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
            .await;
        node.base.shutdown.cancel();
        let _ = flusher.await;
        let _ = compactor.await;
        let _ = watchdog.await;
        let _ = catalog_watch.await;
        let _ = http.await;
        info!("flushing buffers before exit");
        if let Err(e) = node.flush_all().await {
            warn!(error = %e, "flush at shutdown failed");
        }
        if let Some(m) = node.base.membership() {
            // The final flush emptied the buffers: the marks go too.
            if let Err(e) = m.leave().await {
                warn!(error = %e, "leaving the cluster failed");
            }
            if let Err(e) = m.publish_unflushed().await {
                warn!(error = %e, "clearing this node's unflushed marks failed");
            }
        }
        node.writes.release_claim().await;
        served.map_err(|e| Error::Internal(format!("Flight server failed: {e}")))
    }
}

/// The TLS settings of the Flight endpoint, if it has a certificate.
fn tls_config(config: &crate::Config) -> Result<Option<tonic::transport::ServerTlsConfig>> {
    let (Some(cert), Some(key)) = (&config.tls_cert, &config.tls_key) else {
        return Ok(None);
    };
    let read = |path: &std::path::Path, what: &str| {
        std::fs::read(path).map_err(|e| {
            Error::InvalidArgument(format!(
                "cannot read the TLS {what} {}: {e}",
                path.display()
            ))
        })
    };
    let identity =
        tonic::transport::Identity::from_pem(read(cert, "certificate")?, read(key, "private key")?);
    let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &config.tls_client_ca {
        tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(read(
            ca,
            "client CA",
        )?));
    }
    Ok(Some(tls))
}
