//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;

use super::leader::Leadership;
use super::metrics::Metrics;

/// Serves until the process ends. Readiness does not depend on leadership: standby replicas
/// are ready too (they take over when the lease expires).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    ready: Arc<AtomicBool>,
) {
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                let leadership = leadership.clone();
                async move {
                    metrics.leader.set(i64::from(leadership.is_leader()));
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.load(Ordering::SeqCst) {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, %addr, "cannot bind the metrics address"),
    }
}
