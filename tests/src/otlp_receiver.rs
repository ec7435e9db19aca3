//! A real OTLP collector for the tests, on 127.0.0.1: a tonic gRPC server implementing the
//! logs and metrics services, or an OTLP/HTTP server (`POST /v1/logs`, `POST /v1/metrics`,
//! protobuf bodies). It records every export request with the time it arrived and the headers
//! it came with, and can be stopped and started again on the same port, as a collector that
//! goes away and comes back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{LogsService, LogsServiceServer};
use opentelemetry_proto::tonic::collector::logs::v1::{ExportLogsServiceRequest, ExportLogsServiceResponse};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use prost::Message as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{err, Context, Result};

/// An OTLP attribute value, as received.
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as OtlpValue;

/// The transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    Http,
}

/// One export request as it arrived.
#[derive(Debug, Clone)]
pub struct Export<T> {
    /// The request.
    pub request: T,
    /// When it arrived.
    pub at: SystemTime,
    /// Its headers (gRPC metadata), names lower-case.
    pub headers: BTreeMap<String, String>,
}

/// One log record as received, with the resource it came under.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record.
    pub record: LogRecord,
    /// Its resource's attributes.
    pub resource: Vec<KeyValue>,
    /// When its request arrived.
    pub at: SystemTime,
    /// Its request's headers.
    pub headers: BTreeMap<String, String>,
}

impl Record {
    /// The value of attribute `key`.
    pub fn attr(&self, key: &str) -> Option<&Value> {
        find(&self.record.attributes, key)
    }

    /// Attribute `key` as a string.
    pub fn str(&self, key: &str) -> Option<&str> {
        match self.attr(key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// Attribute `key` as an integer.
    pub fn int(&self, key: &str) -> Option<i64> {
        match self.attr(key)? {
            Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// Resource attribute `key` as a string.
    pub fn resource_str(&self, key: &str) -> Option<&str> {
        match find(&self.resource, key)? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    /// The body, when it is a string.
    pub fn body(&self) -> Option<&str> {
        match self.record.body.as_ref()?.value.as_ref()? {
            Value::StringValue(s) => Some(s),
            _ => None,
        }
    }
}

/// The value of `key` among `attributes`.
pub fn find<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The entries of a map value (`kvlist_value`).
pub fn map_entries(value: &Value) -> Option<&[KeyValue]> {
    match value {
        Value::KvlistValue(list) => Some(&list.values),
        _ => None,
    }
}

/// The items of a list value (`array_value`).
pub fn list_items(value: &Value) -> Option<&[AnyValue]> {
    match value {
        Value::ArrayValue(array) => Some(&array.values),
        _ => None,
    }
}

#[derive(Debug, Default)]
struct Received {
    logs: Vec<Export<ExportLogsServiceRequest>>,
    metrics: Vec<Export<ExportMetricsServiceRequest>>,
}

#[derive(Debug, Clone, Default)]
struct Store(Arc<Mutex<Received>>);

impl Store {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn logs(&self, request: ExportLogsServiceRequest, headers: BTreeMap<String, String>) {
        let at = SystemTime::now();
        self.lock().logs.push(Export { request, at, headers });
    }

    fn metrics(&self, request: ExportMetricsServiceRequest, headers: BTreeMap<String, String>) {
        let at = SystemTime::now();
        self.lock().metrics.push(Export { request, at, headers });
    }
}

#[tonic::async_trait]
impl LogsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        let headers = metadata(request.metadata());
        self.logs(request.into_inner(), headers);
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Store {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let headers = metadata(request.metadata());
        self.metrics(request.into_inner(), headers);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn metadata(metadata: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    headers(&metadata.clone().into_headers())
}

fn headers(map: &axum::http::HeaderMap) -> BTreeMap<String, String> {
    map.iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect()
}

/// A running (or stopped) OTLP receiver.
#[derive(Debug)]
pub struct OtlpReceiver {
    transport: Transport,
    addr: SocketAddr,
    store: Store,
    server: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl OtlpReceiver {
    /// Starts a receiver for `transport` on a free port of 127.0.0.1.
    pub async fn start(transport: Transport) -> Result<OtlpReceiver> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the OTLP receiver")?;
        let addr = listener.local_addr().context("the OTLP receiver's address")?;
        let mut receiver = OtlpReceiver {
            transport,
            addr,
            store: Store::default(),
            server: None,
        };
        receiver.serve(listener);
        Ok(receiver)
    }

    /// A gRPC receiver.
    pub async fn grpc() -> Result<OtlpReceiver> {
        Self::start(Transport::Grpc).await
    }

    /// An HTTP/protobuf receiver.
    pub async fn http() -> Result<OtlpReceiver> {
        Self::start(Transport::Http).await
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let store = self.store.clone();
        let task = match self.transport {
            Transport::Grpc => tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .add_service(LogsServiceServer::new(store.clone()))
                    .add_service(MetricsServiceServer::new(store))
                    .serve_with_incoming_shutdown(
                        tonic::transport::server::TcpIncoming::from(listener),
                        async {
                            let _ = stopped.await;
                        },
                    )
                    .await;
            }),
            Transport::Http => tokio::spawn(async move {
                let logs_store = store.clone();
                let app = axum::Router::new()
                    .route(
                        "/v1/logs",
                        axum::routing::post(
                            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                                let store = logs_store.clone();
                                async move {
                                    match ExportLogsServiceRequest::decode(body) {
                                        Ok(request) => {
                                            store.logs(request, self::headers(&headers));
                                            protobuf(ExportLogsServiceResponse::default().encode_to_vec())
                                        }
                                        Err(_) => bad_request(),
                                    }
                                }
                            },
                        ),
                    )
                    .route(
                        "/v1/metrics",
                        axum::routing::post(
                            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                                let store = store.clone();
                                async move {
                                    match ExportMetricsServiceRequest::decode(body) {
                                        Ok(request) => {
                                            store.metrics(request, self::headers(&headers));
                                            protobuf(ExportMetricsServiceResponse::default().encode_to_vec())
                                        }
                                        Err(_) => bad_request(),
                                    }
                                }
                            },
                        ),
                    );
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            }),
        };
        self.server = Some((stop, task));
    }

    /// The base URL to configure as the collector's endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops listening and closes every connection: the collector is gone.
    pub async fn stop(&mut self) {
        if let Some((stop, mut task)) = self.server.take() {
            let _ = stop.send(());
            // Open connections end gracefully; one that lingers is cut.
            if tokio::time::timeout(Duration::from_secs(2), &mut task)
                .await
                .is_err()
            {
                task.abort();
                let _ = task.await;
            }
        }
    }

    /// Listens again on the same port, keeping what was received.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(err(format!("cannot listen on {} again: {e}", self.addr)))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        self.serve(listener);
        Ok(())
    }

    /// Every log export request received so far.
    pub fn log_exports(&self) -> Vec<Export<ExportLogsServiceRequest>> {
        self.store.lock().logs.clone()
    }

    /// Every metrics export request received so far.
    pub fn metric_exports(&self) -> Vec<Export<ExportMetricsServiceRequest>> {
        self.store.lock().metrics.clone()
    }

    /// Every log record received so far, in the order they arrived.
    pub fn records(&self) -> Vec<Record> {
        let store = self.store.lock();
        let mut out = Vec::new();
        for export in &store.logs {
            for resource_logs in &export.request.resource_logs {
                let resource = resource_logs
                    .resource
                    .as_ref()
                    .map(|r| r.attributes.clone())
                    .unwrap_or_default();
                for scope_logs in &resource_logs.scope_logs {
                    for record in &scope_logs.log_records {
                        out.push(Record {
                            record: record.clone(),
                            resource: resource.clone(),
                            at: export.at,
                            headers: export.headers.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// The records whose attribute `key` is the string `value`.
    pub fn records_with(&self, key: &str, value: &str) -> Vec<Record> {
        self.records()
            .into_iter()
            .filter(|r| r.str(key) == Some(value))
            .collect()
    }

    /// Waits for a record matching `pred`.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Record) -> bool,
    ) -> Result<Record> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return Ok(r);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "the OTLP receiver got no record for {what} within {timeout:?}; it has {} record(s) from {} export(s)",
                    self.records().len(),
                    self.log_exports().len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until at least `n` records match `pred`; returns them.
    pub async fn wait_for_count(
        &self,
        what: &str,
        n: usize,
        timeout: Duration,
        pred: impl Fn(&Record) -> bool,
    ) -> Result<Vec<Record>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let found: Vec<Record> = self.records().into_iter().filter(|r| pred(r)).collect();
            if found.len() >= n {
                return Ok(found);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(err(format!(
                    "the OTLP receiver got {} of {n} record(s) for {what} within {timeout:?}",
                    found.len()
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some((_, task)) = self.server.take() {
            task.abort();
        }
    }
}

fn protobuf(body: Vec<u8>) -> axum::response::Response {
    axum::response::IntoResponse::into_response((
        [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
        body,
    ))
}

fn bad_request() -> axum::response::Response {
    axum::response::IntoResponse::into_response((axum::http::StatusCode::BAD_REQUEST, "not an OTLP request"))
}
