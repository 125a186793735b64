//! `/metrics`, `/healthz` and `/readyz`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio::net::TcpListener;

use super::leader::Leadership;
use super::metrics::Metrics;

/// Binds the address of `/metrics`, `/healthz` and `/readyz`. A failure stops the start-up: a
/// replica without them would only be restarted by its liveness probe, with no explanation.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} (--metrics-addr): {e}"))
}

/// Serves on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    leadership: Leadership,
    ready: Arc<AtomicBool>,
) {
    if let Err(e) = axum::serve(listener, router(metrics, leadership, ready)).await {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

/// The routes. `/readyz` answers 503 until `ready` is set, once the watch caches have synced.
/// Readiness does not depend on leadership: standby replicas are ready too (they take over when
/// the lease expires).
pub fn router(metrics: Arc<Metrics>, leadership: Leadership, ready: Arc<AtomicBool>) -> Router {
    Router::new()
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
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let metrics = Arc::new(Metrics::default());
        metrics
            .reconciles
            .get_or_create(&Metrics::kind("Topic"))
            .inc();
        let ready = Arc::new(AtomicBool::new(false));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = router(metrics, Leadership::follower(), ready.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        ready.store(true, Ordering::SeqCst);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let text = get(addr, "/metrics").await;
        assert!(
            text.contains("rebalancer_reconciles_total{kind=\"Topic\"} 1"),
            "{text}"
        );
        assert!(text.contains("rebalancer_leader 0"), "{text}");
    }

    #[tokio::test]
    async fn a_taken_address_is_a_start_up_error() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = taken.local_addr().unwrap();
        let error = bind(addr).await.unwrap_err();
        assert!(
            error.starts_with(&format!("cannot listen on {addr} (--metrics-addr): ")),
            "{error}"
        );
    }
}
