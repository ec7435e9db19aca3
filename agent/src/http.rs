//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process is alive)
//! and `/readyz` (its sources are connected).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::Metrics;
use crate::telemetry::Telemetry;

/// Settings of the HTTP endpoint (`http:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where to listen (`--http-address`); None turns the endpoint off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            address: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
        }
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {address} for /metrics, /healthz and /readyz: {source}")]
pub struct HttpError {
    /// The address asked for.
    pub address: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds the endpoint's address, so that a taken port stops the agent at start with a clear
/// message rather than later.
pub async fn bind(address: SocketAddr) -> Result<tokio::net::TcpListener, HttpError> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| HttpError { address, source })
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    telemetry: Arc<Telemetry>,
}

/// The endpoint's routes.
fn router(metrics: Metrics, telemetry: Arc<Telemetry>) -> Router {
    Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(AppState { metrics, telemetry })
}

/// Serves the endpoint on `listener` until `stop`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    telemetry: Arc<Telemetry>,
    stop: CancellationToken,
) {
    let app = router(metrics, telemetry);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(%error, "the HTTP endpoint failed");
    }
}

async fn metrics_page(State(state): State<AppState>) -> Response {
    match state.metrics.prometheus_text() {
        Ok(text) => ([(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    let (ready, sources) = state.telemetry.readiness();
    let mut body: String = sources
        .iter()
        .map(|(name, up)| format!("{name}: {}\n", if *up { "connected" } else { "not connected" }))
        .collect();
    if sources.is_empty() {
        body.push_str("no source has connected yet\n");
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn get_page(address: SocketAddr, path: &str) -> (u16, String) {
        let mut stream = tokio::net::TcpStream::connect(address).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("read");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status");
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    #[tokio::test]
    async fn health_readiness_and_metrics() {
        let telemetry = Telemetry::new();
        telemetry.set_ready("cri", false);
        telemetry.finding("NodeOOM", "");
        let root = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::start(
            Arc::clone(&telemetry),
            root.path(),
            opentelemetry_sdk::Resource::builder_empty().build(),
            None,
        )
        .expect("metrics");
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
        let address = listener.local_addr().expect("address");
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, metrics, Arc::clone(&telemetry), stop.clone()));

        assert_eq!(get_page(address, "/healthz").await, (200, "ok\n".to_owned()));
        let (status, body) = get_page(address, "/readyz").await;
        assert_eq!((status, body.as_str()), (503, "cri: not connected\n"));
        telemetry.set_ready("cri", true);
        assert_eq!(get_page(address, "/readyz").await.0, 200);
        let (status, body) = get_page(address, "/metrics").await;
        assert_eq!(status, 200);
        assert!(
            body.contains(r#"podmortem_findings_total{k8s_namespace_name="",kind="NodeOOM"} 1"#),
            "{body}"
        );
        assert_eq!(get_page(address, "/nothing").await.0, 404);

        stop.cancel();
        server.await.expect("server stops");
    }

    #[tokio::test]
    async fn a_taken_port_is_a_clear_error() {
        let first = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await.expect("bind");
        let address = first.local_addr().expect("address");
        let error = bind(address).await.expect_err("taken");
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot listen on {address}")),
            "{error}"
        );
    }
}
