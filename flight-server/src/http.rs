//! HTTP endpoint: `GET /health` (200 while the process serves), `GET /ready` (200 while it should
//! get traffic: in its cluster, writes accepted, catalog intact) and `GET /metrics` (Prometheus
//! text).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::node::Node;

async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    if node.base.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting down\n".to_string(),
        )
    } else if let Some(reason) = node.writes_stopped() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("writes stopped: {reason}\n"),
        )
    } else {
        (StatusCode::OK, "ok\n".to_string())
    }
}

async fn ready(State(node): State<Arc<Node>>) -> impl IntoResponse {
    match node.cluster.not_ready() {
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}\n"),
        ),
        None => (StatusCode::OK, "ready\n".to_string()),
    }
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], {
        node.refresh_gauges();
        node.base.metrics.render()
    })
}

/// Serves HTTP on `listener` until the node shuts down.
pub(crate) async fn serve(listener: TcpListener, node: Arc<Node>) -> std::io::Result<()> {
    let shutdown = node.base.shutdown.clone();
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .with_state(node);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
