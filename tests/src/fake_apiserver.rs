//! An in-process fake of the Kubernetes API server, for the parts podmortem uses, with the
//! request and response shapes of the real one:
//!
//! - `GET /api/v1/nodes/{name}`: the Node.
//! - `PATCH /api/v1/nodes/{name}/status`: a strategic merge patch (`conditions` merged by
//!   `type`, as the Node's schema says); a JSON merge patch replaces lists, as the real server
//!   does; other patch types are refused with 415.
//! - `GET /api/v1/pods`: a `PodList` (`fieldSelector` on `spec.nodeName`, `metadata.name` and
//!   `metadata.namespace`; equality `labelSelector`; `limit`/`continue` pages of one
//!   snapshot; `resourceVersion`/`resourceVersionMatch`), or with `watch=true` a stream of
//!   newline-delimited watch events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`, `ERROR` 410
//!   for a compacted `resourceVersion`), objects moving out of the selector sent as `DELETED`,
//!   closed after `timeoutSeconds`.
//! - `POST /apis/events.k8s.io/v1/namespaces/{ns}/events` and `GET`/`PATCH` of
//!   `.../events/{name}` (merge patch), validated as the real server validates
//!   `events.k8s.io/v1` Events (required fields, lengths, immutable fields on update), plus
//!   what podmortem promises (the full `regarding` reference).
//!
//! Errors are `Status` objects with the real codes and reasons. Every request is recorded,
//! with its parsed query, content type, body and response code. Requests need the bearer
//! token of the kubeconfig [`FakeApiServer::write_kubeconfig`] writes.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State as AxumState};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::{err, Context, Result};

/// The bearer token the fake accepts.
pub const TOKEN: &str = "podmortem-e2e-token";
/// The real server's request body limit.
const MAX_BODY: usize = 3 * 1024 * 1024;
const EVENTS_GROUP: &str = "events.k8s.io";

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query's parameters, decoded, in order.
    pub query: Vec<(String, String)>,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body, when it was JSON.
    pub body: Option<Value>,
    /// The response's status code.
    pub status: u16,
    /// When it arrived.
    pub at: SystemTime,
}

impl Recorded {
    /// A query parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether this is a watch request.
    pub fn is_watch(&self) -> bool {
        matches!(self.param("watch"), Some("true" | "1"))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChangeType {
    Added,
    Modified,
    Deleted,
}

/// One change of a pod, for watches and snapshots.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    what: ChangeType,
    key: (String, String),
    old: Option<Value>,
    new: Value,
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    pods: BTreeMap<(String, String), Value>,
    /// Every change of every pod, oldest first.
    history: Vec<Change>,
    /// Watches from before this resource version get 410 Gone.
    compacted: u64,
    events: BTreeMap<(String, String), Value>,
    requests: Vec<Recorded>,
}

impl State {
    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// The pods as they were at `rv`.
    fn pods_at(&self, rv: u64) -> BTreeMap<(String, String), Value> {
        let mut pods = BTreeMap::new();
        for c in self.history.iter().take_while(|c| c.rv <= rv) {
            match c.what {
                ChangeType::Deleted => pods.remove(&c.key),
                _ => pods.insert(c.key.clone(), c.new.clone()),
            };
        }
        pods
    }
}

struct Shared {
    state: Mutex<State>,
    /// The latest resource version, for watches waiting for changes.
    changed: watch::Sender<u64>,
    /// Set when the server stops: open watches end.
    stopped: watch::Sender<bool>,
    bookmark_every: Duration,
}

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The fake API server; it stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FakeApiServer {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> Result<FakeApiServer> {
        Self::start_on(0).await
    }

    /// Starts on `port` of 127.0.0.1 (0: a free one).
    pub async fn start_on(port: u16) -> Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .context(format!("cannot listen on 127.0.0.1:{port}"))?;
        let addr = listener.local_addr().context("no local address")?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            stopped: watch::channel(false).0,
            bookmark_every: Duration::from_secs(5),
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let mut stopped = shared.stopped.subscribe();
        let server = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        Ok(FakeApiServer { addr, shared, server })
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Writes a kubeconfig pointing at `server` with the fake's token, at `path`.
    pub fn kubeconfig_for(server: &str, path: &Path) -> Result<PathBuf> {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\n\
             users:\n- name: podmortem\n  user:\n    token: {TOKEN}\ncontexts:\n- name: fake\n  context:\n\
             \x20   cluster: fake\n    user: podmortem\ncurrent-context: fake\n"
        );
        std::fs::write(path, text).context(format!("cannot write {}", path.display()))?;
        Ok(path.to_owned())
    }

    /// Writes a kubeconfig pointing at this server, at `path`.
    pub fn write_kubeconfig(&self, path: &Path) -> Result<PathBuf> {
        Self::kubeconfig_for(&self.url(), path)
    }

    /// Stops serving: new connections are refused and open watches end.
    pub async fn stop(mut self) {
        self.shared.stopped.send_replace(true);
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
    }

    /// Adds (or replaces) a Node named `name` with `conditions` in its status.
    pub fn add_node(&self, name: &str, conditions: Value) {
        let mut s = lock(&self.shared);
        let rv = s.next_rv();
        let node = json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": format!("node-uid-{name}"),
                "resourceVersion": rv.to_string(),
                "creationTimestamp": now_rfc3339(),
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
            },
            "spec": {"podCIDR": "10.244.0.0/24"},
            "status": {
                "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": "10.0.0.10"}, {"type": "Hostname", "address": name}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "containerRuntimeVersion": "containerd://1.7.24"},
            },
        });
        s.nodes.insert(name.to_owned(), node);
    }

    /// The Node named `name`.
    pub fn node(&self, name: &str) -> Option<Value> {
        lock(&self.shared).nodes.get(name).cloned()
    }

    /// Adds `pod` (a Pod's JSON), or changes it if one with its namespace and name exists.
    /// Sets its resource version; watches see `ADDED` or `MODIFIED`.
    pub fn put_pod(&self, pod: Value) -> Result<()> {
        put_pod(&self.shared, pod)
    }

    /// Deletes the pod `namespace/name`; watches see `DELETED`.
    pub fn delete_pod(&self, namespace: &str, name: &str) -> Result<()> {
        let key = (namespace.to_owned(), name.to_owned());
        let mut s = lock(&self.shared);
        let Some(old) = s.pods.remove(&key) else {
            return Err(err(format!("no pod {namespace}/{name}")));
        };
        let rv = s.next_rv();
        let mut gone = old.clone();
        set(&mut gone, &["metadata", "resourceVersion"], json!(rv.to_string()));
        s.history.push(Change {
            rv,
            what: ChangeType::Deleted,
            key,
            old: Some(old),
            new: gone,
        });
        drop(s);
        self.shared.changed.send_replace(rv);
        Ok(())
    }

    /// Forgets history: watches from an older resource version get 410 Gone.
    pub fn compact(&self) {
        let mut s = lock(&self.shared);
        s.compacted = s.rv;
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared).requests.clone()
    }

    /// Every Event stored, oldest first by resource version.
    pub fn events(&self) -> Vec<Value> {
        let mut events: Vec<Value> = lock(&self.shared).events.values().cloned().collect();
        events.sort_by_key(|e| str_at(e, "/metadata/resourceVersion").parse::<u64>().unwrap_or(0));
        events
    }

    /// Waits until a request matching `pred` has been received.
    pub async fn wait_for_request(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Result<Recorded> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.requests().into_iter().find(|r| pred(r)) {
                return Ok(r);
            }
            if tokio::time::Instant::now() > deadline {
                let seen: Vec<String> = self
                    .requests()
                    .iter()
                    .map(|r| format!("{} {} {:?} -> {}", r.method, r.path, r.query, r.status))
                    .collect();
                return Err(err(format!(
                    "the API server never got {what} within {timeout:?}; it got:\n{}",
                    seen.join("\n")
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.stopped.send_replace(true);
        self.server.abort();
    }
}

fn put_pod(shared: &Shared, mut pod: Value) -> Result<()> {
    let key = (
        str_at(&pod, "/metadata/namespace").to_owned(),
        str_at(&pod, "/metadata/name").to_owned(),
    );
    if key.0.is_empty() || key.1.is_empty() {
        return Err(err("a pod needs metadata.namespace and metadata.name"));
    }
    let mut s = lock(shared);
    let rv = s.next_rv();
    set(&mut pod, &["metadata", "resourceVersion"], json!(rv.to_string()));
    set(&mut pod, &["kind"], json!("Pod"));
    set(&mut pod, &["apiVersion"], json!("v1"));
    let old = s.pods.insert(key.clone(), pod.clone());
    let what = if old.is_some() {
        ChangeType::Modified
    } else {
        ChangeType::Added
    };
    s.history.push(Change {
        rv,
        what,
        key,
        old,
        new: pod,
    });
    drop(s);
    shared.changed.send_replace(rv);
    Ok(())
}

/// A pod as the API server shows one scheduled to `node`: owned by a ReplicaSet, one container
/// named `container`, a ConfigMap and the service account token volumes.
pub fn pod_json(namespace: &str, name: &str, uid: &str, node: &str, container: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "generateName": format!("{}-", name.rsplit_once('-').map_or(name, |(p, _)| p)),
            "creationTimestamp": now_rfc3339(),
            "labels": {"app": name},
            "ownerReferences": [{
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": format!("{name}-rs"),
                "uid": format!("rs-{uid}"),
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Always",
            "containers": [{
                "name": container,
                "image": "busybox:1.36",
                "resources": {"limits": {"memory": "64Mi"}, "requests": {"memory": "32Mi"}},
                "livenessProbe": {"exec": {"command": ["true"]}},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/config", "readOnly": true},
                    {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": format!("{name}-config")}},
                {"name": "kube-api-access", "projected": {"sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                ]}},
            ],
        },
        "status": {"phase": "Running", "hostIP": "10.0.0.10"},
    })
}

/// A condition as kubelet writes one.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str, transition: &str) -> Value {
    json!({
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": transition,
        "lastTransitionTime": transition,
    })
}

/// The current time as the API writes it.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// A string at a JSON pointer, or "".
pub fn str_at<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut at = v;
    for (i, key) in path.iter().enumerate() {
        if !at.is_object() {
            *at = Value::Object(Map::new());
        }
        let Value::Object(map) = at else { return };
        if i + 1 == path.len() {
            map.insert((*key).to_owned(), value);
            return;
        }
        at = map.entry(*key).or_insert_with(|| Value::Object(Map::new()));
    }
}

// ---------------------------------------------------------------------------------------------
// Responses

fn json_response(code: StatusCode, body: &Value) -> Response {
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = code;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Status` error as the real server sends one.
fn status(code: StatusCode, reason: &str, message: &str, details: Option<Value>) -> (StatusCode, Value) {
    let mut s = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    });
    if let Some(d) = details {
        s["details"] = d;
    }
    (code, s)
}

fn not_found(group: &str, resource: &str, name: &str) -> (StatusCode, Value) {
    let qualified = if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    };
    let mut details = json!({"name": name, "kind": resource});
    if !group.is_empty() {
        details["group"] = json!(group);
    }
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        &format!("{qualified} \"{name}\" not found"),
        Some(details),
    )
}

fn bad_request(message: &str) -> (StatusCode, Value) {
    status(StatusCode::BAD_REQUEST, "BadRequest", message, None)
}

fn unsupported_media(content_type: &str) -> (StatusCode, Value) {
    status(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "UnsupportedMediaType",
        &format!(
            "the body of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, \
             application/strategic-merge-patch+json (the fake implements the merge and strategic merge \
             ones; got {content_type:?})"
        ),
        None,
    )
}

/// `422 Invalid` with one cause per field error, as validation failures are.
fn invalid(kind: &str, group: &str, name: &str, errors: &[(String, String)]) -> (StatusCode, Value) {
    let causes: Vec<Value> = errors
        .iter()
        .map(|(field, message)| json!({"reason": "FieldValueInvalid", "message": format!("{field}: {message}"), "field": field}))
        .collect();
    let list: Vec<String> = errors.iter().map(|(f, m)| format!("{f}: {m}")).collect();
    status(
        StatusCode::UNPROCESSABLE_ENTITY,
        "Invalid",
        &format!("{kind}.{group} \"{name}\" is invalid: {}", list.join(", ")),
        Some(json!({"name": name, "group": group, "kind": kind, "causes": causes})),
    )
}

// ---------------------------------------------------------------------------------------------
// Routing

async fn handle(AxumState(shared): AxumState<Arc<Shared>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_owned());
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"));
    let bytes = axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .unwrap_or_default();
    let body: Option<Value> = serde_json::from_slice(&bytes).ok();
    let mut recorded = Recorded {
        method: method.to_string(),
        path: path.clone(),
        query,
        content_type,
        body,
        status: 0,
        at: SystemTime::now(),
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let response = if !authorized {
        let (code, s) = status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized", None);
        json_response(code, &s)
    } else if method == Method::GET && parts == ["api", "v1", "pods"] && recorded.is_watch() {
        watch_pods(&shared, &recorded)
    } else {
        let (code, value) = route(&shared, &method, &parts, &recorded, &bytes);
        json_response(code, &value)
    };
    recorded.status = response.status().as_u16();
    lock(&shared).requests.push(recorded);
    response
}

fn route(shared: &Shared, method: &Method, parts: &[&str], r: &Recorded, raw: &[u8]) -> (StatusCode, Value) {
    match (method.as_str(), parts) {
        ("GET", ["api", "v1", "nodes", name]) => match lock(shared).nodes.get(*name) {
            Some(node) => (StatusCode::OK, node.clone()),
            None => not_found("", "nodes", name),
        },
        ("PATCH", ["api", "v1", "nodes", name, "status"]) => patch_node_status(shared, name, r, raw),
        ("GET", ["api", "v1", "pods"]) => list_pods(shared, r),
        ("POST", ["apis", EVENTS_GROUP, "v1", "namespaces", ns, "events"]) => {
            create_event(shared, ns, r, raw)
        }
        ("GET", ["apis", EVENTS_GROUP, "v1", "namespaces", ns, "events", name]) => {
            match lock(shared).events.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(e) => (StatusCode::OK, e.clone()),
                None => not_found(EVENTS_GROUP, "events", name),
            }
        }
        ("PATCH", ["apis", EVENTS_GROUP, "v1", "namespaces", ns, "events", name]) => {
            patch_event(shared, ns, name, r, raw)
        }
        (
            _,
            ["api", "v1", "nodes", _]
            | ["api", "v1", "nodes", _, "status"]
            | ["api", "v1", "pods"]
            | ["apis", EVENTS_GROUP, "v1", "namespaces", _, "events"]
            | ["apis", EVENTS_GROUP, "v1", "namespaces", _, "events", _],
        ) => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            &format!("the server does not allow this method on the requested resource ({method})"),
            None,
        ),
        _ => status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
            None,
        ),
    }
}

/// The JSON body, or why it is not one.
fn parse_body(raw: &[u8]) -> Result<Value, (StatusCode, Value)> {
    serde_json::from_slice(raw).map_err(|e| bad_request(&format!("error decoding patch or body: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Patches

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if v.is_null() {
            t.remove(k);
        } else {
            merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The merge key of a list in a Node, by its path, as the Node's schema declares it.
fn node_merge_key(path: &str) -> Option<&'static str> {
    match path {
        ".status.conditions" | ".status.addresses" => Some("type"),
        ".status.volumesAttached" => Some("name"),
        ".spec.taints" => Some("key"),
        _ => None,
    }
}

/// A strategic merge patch on a Node's JSON below `path`: maps merge, lists with a merge key
/// merge element by element (`$patch: delete` removes one), other lists are replaced, `null`
/// deletes, `$setElementOrder`/`$retainKeys` directives are accepted and ignored.
fn strategic_merge(target: &mut Value, patch: &Value, path: &str) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else { return };
    for (k, v) in patch {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let child = format!("{path}.{k}");
        let slot = t.entry(k.clone()).or_insert(Value::Null);
        match (node_merge_key(&child), v) {
            (Some(key), Value::Array(items)) => merge_list(slot, items, key, &child),
            _ => strategic_merge(slot, v, &child),
        }
    }
}

fn merge_list(target: &mut Value, items: &[Value], key: &str, path: &str) {
    if !target.is_array() {
        *target = Value::Array(Vec::new());
    }
    let Value::Array(list) = target else { return };
    for item in items {
        let id = item.get(key).cloned();
        let position = list
            .iter()
            .position(|e| id.is_some() && e.get(key) == id.as_ref());
        if item.get("$patch").and_then(Value::as_str) == Some("delete") {
            if let Some(i) = position {
                list.remove(i);
            }
            continue;
        }
        match position {
            Some(i) => strategic_merge(&mut list[i], item, path),
            None => {
                let mut fresh = Value::Null;
                strategic_merge(&mut fresh, item, path);
                list.push(fresh);
            }
        }
    }
}

fn patch_node_status(shared: &Shared, name: &str, r: &Recorded, raw: &[u8]) -> (StatusCode, Value) {
    let content_type = r.content_type.clone().unwrap_or_default();
    let strategic = match content_type.as_str() {
        "application/strategic-merge-patch+json" => true,
        "application/merge-patch+json" => false,
        other => return unsupported_media(other),
    };
    let patch = match parse_body(raw) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut s = lock(shared);
    let rv = s.rv + 1;
    let Some(node) = s.nodes.get_mut(name) else {
        return not_found("", "nodes", name);
    };
    // The status subresource takes the status only.
    if let Some(status_patch) = patch.get("status") {
        let slot = node
            .as_object_mut()
            .map(|n| n.entry("status").or_insert(Value::Null));
        if let Some(slot) = slot {
            if strategic {
                strategic_merge(slot, status_patch, ".status");
            } else {
                merge_patch(slot, status_patch);
            }
        }
    }
    set(node, &["metadata", "resourceVersion"], json!(rv.to_string()));
    let node = node.clone();
    s.rv = rv;
    (StatusCode::OK, node)
}

// ---------------------------------------------------------------------------------------------
// Pods: list and watch

/// One requirement of a field or label selector.
#[derive(Debug, Clone)]
struct Requirement {
    key: String,
    equal: bool,
    value: String,
}

fn parse_selector(selector: &str) -> Vec<Requirement> {
    selector
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|term| {
            let term = term.trim();
            let (key, equal, value) = if let Some((k, v)) = term.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = term.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = term.split_once('=') {
                (k, true, v)
            } else {
                // A bare key: existence, which fields do not support.
                (term, true, "\u{0}exists")
            };
            Requirement {
                key: key.trim().to_owned(),
                equal,
                value: value.trim().to_owned(),
            }
        })
        .collect()
}

/// Which pods a request asks for, or why the request is bad.
#[derive(Debug, Clone)]
struct Filter {
    fields: Vec<Requirement>,
    labels: Vec<Requirement>,
}

impl Filter {
    fn from(r: &Recorded) -> Result<Filter, (StatusCode, Value)> {
        let fields = parse_selector(r.param("fieldSelector").unwrap_or(""));
        for f in &fields {
            if !matches!(
                f.key.as_str(),
                "spec.nodeName" | "metadata.name" | "metadata.namespace" | "status.phase"
            ) {
                return Err(bad_request(&format!("field label not supported: {}", f.key)));
            }
            if f.value == "\u{0}exists" {
                return Err(bad_request(&format!(
                    "invalid selector: '{}'; can't understand '{}'",
                    r.param("fieldSelector").unwrap_or(""),
                    f.key
                )));
            }
        }
        let labels = parse_selector(r.param("labelSelector").unwrap_or(""));
        Ok(Filter { fields, labels })
    }

    fn matches(&self, pod: &Value) -> bool {
        let fields_ok = self.fields.iter().all(|f| {
            let actual = match f.key.as_str() {
                "spec.nodeName" => str_at(pod, "/spec/nodeName"),
                "metadata.name" => str_at(pod, "/metadata/name"),
                "metadata.namespace" => str_at(pod, "/metadata/namespace"),
                _ => str_at(pod, "/status/phase"),
            };
            (actual == f.value) == f.equal
        });
        let labels_ok = self.labels.iter().all(|l| {
            let actual = pod
                .pointer("/metadata/labels")
                .and_then(|m| m.get(&l.key))
                .and_then(Value::as_str);
            if l.value == "\u{0}exists" {
                actual.is_some()
            } else {
                (actual == Some(l.value.as_str())) == l.equal
            }
        });
        fields_ok && labels_ok
    }
}

/// A list item: typed list items carry no kind or apiVersion.
fn list_item(pod: &Value) -> Value {
    let mut item = pod.clone();
    if let Value::Object(m) = &mut item {
        m.remove("kind");
        m.remove("apiVersion");
    }
    item
}

fn encode_continue(rv: u64, after: &(String, String)) -> String {
    let raw = format!("{rv}\u{0}{}\u{0}{}", after.0, after.1);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(token: &str) -> Option<(u64, (String, String))> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let mut parts = raw.split('\u{0}');
    let rv = parts.next()?.parse().ok()?;
    Some((rv, (parts.next()?.to_owned(), parts.next()?.to_owned())))
}

fn list_pods(shared: &Shared, r: &Recorded) -> (StatusCode, Value) {
    let filter = match Filter::from(r) {
        Ok(f) => f,
        Err(e) => return e,
    };
    let limit = match r.param("limit").map(str::parse::<usize>) {
        None => None,
        Some(Ok(0)) => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return bad_request("limit: invalid value"),
    };
    let s = lock(shared);
    let (rv, after) = match r.param("continue") {
        Some(token) => match decode_continue(token) {
            Some((rv, _)) if rv < s.compacted => {
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. \
                     You can start a new list without the continue parameter.",
                    None,
                )
            }
            Some((rv, after)) => (rv, Some(after)),
            None => return bad_request("continue key is not valid"),
        },
        None => match (r.param("resourceVersion"), r.param("resourceVersionMatch")) {
            (None | Some("" | "0"), _) => (s.rv, None),
            (Some(v), m) => match v.parse::<u64>() {
                Ok(v) if v > s.rv => {
                    return status(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Timeout",
                        &format!("Too large resource version: {v}, current: {}", s.rv),
                        None,
                    )
                }
                Ok(v) if m == Some("Exact") => (v, None),
                Ok(_) => (s.rv, None),
                Err(_) => return bad_request(&format!("invalid resource version: {v}")),
            },
        },
    };
    let pods = s.pods_at(rv);
    let mut items = pods
        .iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
        .filter(|(_, p)| filter.matches(p));
    let mut page: Vec<Value> = Vec::new();
    let mut last = None;
    for (k, p) in items.by_ref() {
        if limit.is_some_and(|l| page.len() >= l) {
            break;
        }
        page.push(list_item(p));
        last = Some(k.clone());
    }
    let remaining = pods
        .iter()
        .filter(|(k, _)| last.as_ref().is_some_and(|l| *k > l))
        .filter(|(_, p)| filter.matches(p))
        .count();
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if let (true, Some(last)) = (remaining > 0 && limit.is_some(), last) {
        metadata["continue"] = json!(encode_continue(rv, &last));
        metadata["remainingItemCount"] = json!(remaining);
    }
    (
        StatusCode::OK,
        json!({"kind": "PodList", "apiVersion": "v1", "metadata": metadata, "items": page}),
    )
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": type_, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rv: u64, initial_end: bool) -> Bytes {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": "Pod", "apiVersion": "v1", "metadata": metadata, "spec": {"containers": null}, "status": {}}),
    )
}

/// What a watch with `filter` sees of one change.
fn watch_event(c: &Change, filter: &Filter) -> Option<Bytes> {
    let old = c.old.as_ref().is_some_and(|o| filter.matches(o));
    let new = filter.matches(&c.new);
    match c.what {
        ChangeType::Added if new => Some(watch_line("ADDED", &c.new)),
        ChangeType::Deleted if old => Some(watch_line("DELETED", &c.new)),
        ChangeType::Modified => match (old, new) {
            (true, true) => Some(watch_line("MODIFIED", &c.new)),
            (false, true) => Some(watch_line("ADDED", &c.new)),
            (true, false) => {
                // Left the selection: its last state, at this resource version.
                let mut gone = c.new.clone();
                set(
                    &mut gone,
                    &["metadata", "resourceVersion"],
                    json!(c.rv.to_string()),
                );
                Some(watch_line("DELETED", &gone))
            }
            (false, false) => None,
        },
        _ => None,
    }
}

struct Cursor {
    shared: Arc<Shared>,
    filter: Filter,
    /// The next history index to look at.
    next: usize,
    last_rv: u64,
    pending: VecDeque<Bytes>,
    deadline: tokio::time::Instant,
    bookmarks: bool,
    next_bookmark: tokio::time::Instant,
    changed: watch::Receiver<u64>,
    stopped: watch::Receiver<bool>,
    done: bool,
}

impl Cursor {
    fn collect(&mut self) {
        let s = lock(&self.shared);
        while let Some(c) = s.history.get(self.next) {
            self.next += 1;
            self.last_rv = c.rv;
            if let Some(line) = watch_event(c, &self.filter) {
                self.pending.push_back(line);
            }
        }
    }
}

fn watch_pods(shared: &Arc<Shared>, r: &Recorded) -> Response {
    let filter = match Filter::from(r) {
        Ok(f) => f,
        Err((code, s)) => return json_response(code, &s),
    };
    let timeout = r
        .param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .unwrap_or(1800);
    let s = lock(shared);
    let mut pending = VecDeque::new();
    let initial = r.param("sendInitialEvents") == Some("true");
    let next = match r.param("resourceVersion") {
        None | Some("" | "0") => {
            // From the current state: every matching pod as ADDED.
            for p in s.pods.values().filter(|p| filter.matches(p)) {
                pending.push_back(watch_line("ADDED", p));
            }
            if initial {
                pending.push_back(bookmark(s.rv, true));
            }
            s.history.len()
        }
        Some(v) => match v.parse::<u64>() {
            Ok(v) if v < s.compacted => {
                let (_, st) = status(
                    StatusCode::GONE,
                    "Expired",
                    &format!("too old resource version: {v} ({})", s.compacted),
                    None,
                );
                pending.push_back(watch_line("ERROR", &st));
                usize::MAX
            }
            Ok(v) => s.history.partition_point(|c| c.rv <= v),
            Err(_) => {
                let (code, st) = bad_request(&format!("invalid resource version: {v}"));
                return json_response(code, &st);
            }
        },
    };
    let last_rv = s.rv;
    drop(s);
    let now = tokio::time::Instant::now();
    let cursor = Cursor {
        shared: Arc::clone(shared),
        filter,
        next,
        last_rv,
        done: next == usize::MAX,
        pending,
        deadline: now + Duration::from_secs(timeout),
        bookmarks: r.param("allowWatchBookmarks") == Some("true"),
        next_bookmark: now + shared.bookmark_every,
        changed: shared.changed.subscribe(),
        stopped: shared.stopped.subscribe(),
    };
    let stream = futures::stream::unfold(cursor, |mut c| async move {
        loop {
            if let Some(line) = c.pending.pop_front() {
                return Some((Ok::<Bytes, std::io::Error>(line), c));
            }
            if c.done || *c.stopped.borrow() {
                return None;
            }
            c.collect();
            if !c.pending.is_empty() {
                continue;
            }
            let bookmark_at = if c.bookmarks { c.next_bookmark } else { c.deadline };
            tokio::select! {
                _ = c.changed.changed() => {}
                _ = c.stopped.changed() => return None,
                () = tokio::time::sleep_until(c.deadline) => return None,
                () = tokio::time::sleep_until(bookmark_at), if c.bookmarks => {
                    c.next_bookmark = tokio::time::Instant::now() + c.shared.bookmark_every;
                    c.collect();
                    let rv = c.last_rv.max(lock(&c.shared).rv);
                    c.pending.push_back(bookmark(rv, false));
                }
            }
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

// ---------------------------------------------------------------------------------------------
// Events

fn qualified_name_errors(value: &str) -> Option<String> {
    let (prefix, name) = match value.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, value),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.".contains(c))
    });
    (!(name_ok && prefix_ok)).then(|| {
        format!(
            "Invalid value: {value:?}: name part must consist of alphanumeric characters, '-', '_' or '.', \
             and must start and end with an alphanumeric character"
        )
    })
}

/// What the real server's validation of an `events.k8s.io/v1` Event finds wrong, plus the
/// full `regarding` reference podmortem promises.
fn event_errors(e: &Value) -> Vec<(String, String)> {
    let mut errors = Vec::new();
    let mut need = |field: &str, present: bool| {
        if !present {
            errors.push((field.to_owned(), "Required value".to_owned()));
        }
    };
    let s = |p: &str| str_at(e, p);
    need("metadata.name", !s("/metadata/name").is_empty());
    need("eventTime", !s("/eventTime").is_empty());
    need("reportingController", !s("/reportingController").is_empty());
    need("reportingInstance", !s("/reportingInstance").is_empty());
    need("action", !s("/action").is_empty());
    need("reason", !s("/reason").is_empty());
    for field in ["apiVersion", "kind", "namespace", "name", "uid"] {
        need(
            &format!("regarding.{field}"),
            !s(&format!("/regarding/{field}")).is_empty(),
        );
    }
    if let Some(m) = qualified_name_errors(s("/reportingController")) {
        if !s("/reportingController").is_empty() {
            errors.push(("reportingController".into(), m));
        }
    }
    for (field, max) in [
        ("reportingInstance", 128),
        ("action", 128),
        ("reason", 128),
        ("note", 1024),
    ] {
        if s(&format!("/{field}")).len() > max {
            errors.push((
                field.into(),
                format!("Invalid value: \"\": can have at most {max} characters"),
            ));
        }
    }
    if !matches!(s("/type"), "Normal" | "Warning") {
        errors.push((
            "type".into(),
            format!("Invalid value: \"\": has invalid value: {}", s("/type")),
        ));
    }
    for field in [
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedSource",
    ] {
        if e.get(field).is_some_and(|v| !v.is_null() && *v != json!({})) {
            errors.push((field.into(), "Invalid value: \"\": needs to be unset".into()));
        }
    }
    if e.get("deprecatedCount").and_then(Value::as_i64).unwrap_or(0) != 0 {
        errors.push((
            "deprecatedCount".into(),
            "Invalid value: \"\": needs to be unset".into(),
        ));
    }
    if let Some(series) = e.get("series").filter(|v| !v.is_null()) {
        if series.get("count").and_then(Value::as_i64).unwrap_or(0) < 2 {
            errors.push((
                "series.count".into(),
                "Invalid value: \"\": should be at least 2".into(),
            ));
        }
        if str_at(series, "/lastObservedTime").is_empty() {
            errors.push(("series.lastObservedTime".into(), "Required value".into()));
        }
    }
    if s("/regarding/namespace") != s("/metadata/namespace") && !s("/regarding/namespace").is_empty() {
        errors.push((
            "regarding.namespace".into(),
            format!(
                "Invalid value: {:?}: does not match event.namespace",
                s("/regarding/namespace")
            ),
        ));
    }
    errors
}

/// The real server's decoder: the body must say what it is.
fn check_type(e: &Value, raw: &[u8]) -> Result<(), (StatusCode, Value)> {
    let text = String::from_utf8_lossy(raw);
    if str_at(e, "/kind").is_empty() {
        return Err(bad_request(&format!("Object 'Kind' is missing in '{text}'")));
    }
    if str_at(e, "/apiVersion").is_empty() {
        return Err(bad_request(&format!(
            "Object 'apiVersion' is missing in '{text}'"
        )));
    }
    if str_at(e, "/apiVersion") != "events.k8s.io/v1" || str_at(e, "/kind") != "Event" {
        return Err(bad_request(&format!(
            "the API version in the data ({}) does not match the expected API version (events.k8s.io/v1)",
            str_at(e, "/apiVersion")
        )));
    }
    Ok(())
}

fn create_event(shared: &Shared, ns: &str, r: &Recorded, raw: &[u8]) -> (StatusCode, Value) {
    match r.content_type.as_deref() {
        Some("application/json") => {}
        other => return unsupported_media(other.unwrap_or("")),
    }
    let mut e = match parse_body(raw) {
        Ok(e) => e,
        Err(err) => return err,
    };
    if let Err(err) = check_type(&e, raw) {
        return err;
    }
    match str_at(&e, "/metadata/namespace") {
        "" => set(&mut e, &["metadata", "namespace"], json!(ns)),
        n if n != ns => {
            return bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            )
        }
        _ => {}
    }
    let name = str_at(&e, "/metadata/name").to_owned();
    let errors = event_errors(&e);
    if !errors.is_empty() {
        return invalid("events", EVENTS_GROUP, &name, &errors);
    }
    let mut s = lock(shared);
    let key = (ns.to_owned(), name.clone());
    if s.events.contains_key(&key) {
        return status(
            StatusCode::CONFLICT,
            "AlreadyExists",
            &format!("events.{EVENTS_GROUP} \"{name}\" already exists"),
            Some(json!({"name": name, "group": EVENTS_GROUP, "kind": "events"})),
        );
    }
    let rv = s.next_rv();
    set(&mut e, &["metadata", "uid"], json!(format!("event-uid-{rv}")));
    set(&mut e, &["metadata", "resourceVersion"], json!(rv.to_string()));
    set(&mut e, &["metadata", "creationTimestamp"], json!(now_rfc3339()));
    s.events.insert(key, e.clone());
    (StatusCode::CREATED, e)
}

/// Fields of an Event that an update may not change.
const IMMUTABLE: &[&str] = &[
    "regarding",
    "related",
    "reason",
    "note",
    "type",
    "eventTime",
    "action",
    "reportingController",
    "reportingInstance",
    "deprecatedSource",
    "deprecatedFirstTimestamp",
    "deprecatedLastTimestamp",
    "deprecatedCount",
];

fn patch_event(shared: &Shared, ns: &str, name: &str, r: &Recorded, raw: &[u8]) -> (StatusCode, Value) {
    match r.content_type.as_deref() {
        Some("application/merge-patch+json" | "application/strategic-merge-patch+json") => {}
        other => return unsupported_media(other.unwrap_or("")),
    }
    let patch = match parse_body(raw) {
        Ok(p) => p,
        Err(e) => return e,
    };
    let mut s = lock(shared);
    let key = (ns.to_owned(), name.to_owned());
    let Some(old) = s.events.get(&key).cloned() else {
        return not_found(EVENTS_GROUP, "events", name);
    };
    let mut new = old.clone();
    merge_patch(&mut new, &patch);
    if str_at(&new, "/metadata/name") != name {
        return bad_request(&format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            str_at(&new, "/metadata/name")
        ));
    }
    if str_at(&new, "/metadata/namespace") != ns {
        return bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        );
    }
    if let Err(err) = check_type(&new, raw) {
        return err;
    }
    let mut errors = event_errors(&new);
    for field in IMMUTABLE {
        let norm = |v: Option<&Value>| v.filter(|v| !v.is_null()).cloned();
        if norm(old.get(*field)) != norm(new.get(*field)) {
            errors.push(((*field).to_owned(), "field is immutable".to_owned()));
        }
    }
    if !errors.is_empty() {
        return invalid("events", EVENTS_GROUP, name, &errors);
    }
    let rv = s.next_rv();
    set(&mut new, &["metadata", "resourceVersion"], json!(rv.to_string()));
    // Identity is the server's.
    for field in ["uid", "creationTimestamp"] {
        if let Some(v) = old.pointer(&format!("/metadata/{field}")) {
            set(&mut new, &["metadata", field], v.clone());
        }
    }
    s.events.insert(key, new.clone());
    (StatusCode::OK, new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strategic_merge_merges_conditions_by_type_and_keeps_the_others() {
        let mut status = json!({"conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady"},
            {"type": "NodeOOM", "status": "True", "reason": "PodmortemDetected", "message": "old"},
        ], "capacity": {"memory": "8Gi"}});
        strategic_merge(
            &mut status,
            &json!({"conditions": [
                {"type": "NodeOOM", "status": "False", "reason": "PodmortemCleared"},
                {"type": "OOMRisk", "status": "False"},
            ]}),
            ".status",
        );
        assert_eq!(
            status,
            json!({"conditions": [
                {"type": "Ready", "status": "True", "reason": "KubeletReady"},
                {"type": "NodeOOM", "status": "False", "reason": "PodmortemCleared", "message": "old"},
                {"type": "OOMRisk", "status": "False"},
            ], "capacity": {"memory": "8Gi"}})
        );
        strategic_merge(
            &mut status,
            &json!({"conditions": [{"type": "OOMRisk", "$patch": "delete"}]}),
            ".status",
        );
        assert_eq!(status["conditions"].as_array().map(Vec::len), Some(2));
        // A merge patch replaces the list, as on the real server.
        merge_patch(&mut status, &json!({"conditions": [{"type": "X"}]}));
        assert_eq!(status["conditions"], json!([{"type": "X"}]));
    }

    #[test]
    fn continue_tokens_round_trip() {
        let key = ("ns".to_owned(), "a-b".to_owned());
        assert_eq!(decode_continue(&encode_continue(42, &key)), Some((42, key)));
        assert_eq!(decode_continue("zz"), None);
    }

    #[test]
    fn selectors_filter_pods() {
        let r = |q: &str| Recorded {
            method: "GET".into(),
            path: "/api/v1/pods".into(),
            query: form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            content_type: None,
            body: None,
            status: 0,
            at: SystemTime::now(),
        };
        let pod = pod_json("ns", "web-1", "u", "node-a", "app");
        let f = Filter::from(&r("fieldSelector=spec.nodeName%3Dnode-a")).map_err(|e| e.1.to_string());
        assert!(f.as_ref().is_ok_and(|f| f.matches(&pod)));
        let f = Filter::from(&r("fieldSelector=spec.nodeName%3Dnode-b")).map_err(|e| e.1.to_string());
        assert!(f.is_ok_and(|f| !f.matches(&pod)));
        assert!(Filter::from(&r("fieldSelector=spec.hostname%3Dx")).is_err());
        let f = Filter::from(&r("labelSelector=app%3Dweb-1")).map_err(|e| e.1.to_string());
        assert!(f.is_ok_and(|f| f.matches(&pod)));
    }

    #[test]
    fn events_are_validated_as_the_real_server_does() {
        let good = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-0.17a", "namespace": "shop"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "podmortem", "reportingInstance": "node-a",
            "action": "Diagnosed", "reason": "OOMKilled", "type": "Warning", "note": "n",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u"},
        });
        assert!(event_errors(&good).is_empty(), "{:?}", event_errors(&good));
        let mut bad = good.clone();
        bad["type"] = json!("Error");
        bad["note"] = json!("x".repeat(1025));
        bad["regarding"]["uid"] = json!("");
        bad["series"] = json!({"count": 1});
        let fields: Vec<String> = event_errors(&bad).into_iter().map(|(f, _)| f).collect();
        assert_eq!(
            fields,
            [
                "regarding.uid",
                "note",
                "type",
                "series.count",
                "series.lastObservedTime"
            ]
        );
        assert!(qualified_name_errors("podmortem").is_none());
        assert!(qualified_name_errors("podmortem.io/agent").is_none());
        assert!(qualified_name_errors("-bad").is_some());
    }

    fn shared() -> Arc<Shared> {
        Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: watch::channel(0).0,
            stopped: watch::channel(false).0,
            bookmark_every: Duration::from_secs(5),
        })
    }

    fn request(method: &str, path: &str, q: &str, content_type: &str, body: Option<&Value>) -> Recorded {
        Recorded {
            method: method.into(),
            path: path.into(),
            query: form_urlencoded::parse(q.as_bytes()).into_owned().collect(),
            content_type: Some(content_type.into()),
            body: body.cloned(),
            status: 0,
            at: SystemTime::now(),
        }
    }

    fn put(shared: &Shared, pod: Value) {
        assert!(put_pod(shared, pod).is_ok());
    }

    fn names(list: &Value) -> Vec<&str> {
        list["items"]
            .as_array()
            .map(|items| items.iter().map(|p| str_at(p, "/metadata/name")).collect())
            .unwrap_or_default()
    }

    #[test]
    fn lists_page_through_one_snapshot_of_the_selected_node() {
        let s = shared();
        for (name, node) in [("a", "n1"), ("b", "n2"), ("c", "n1"), ("d", "n1")] {
            put(&s, pod_json("ns", name, &format!("u-{name}"), node, "app"));
        }
        let q = "fieldSelector=spec.nodeName%3Dn1&limit=2";
        let (code, page1) = list_pods(&s, &request("GET", "/api/v1/pods", q, "", None));
        assert_eq!(code, StatusCode::OK);
        assert_eq!(page1["kind"], "PodList");
        assert_eq!(names(&page1), ["a", "c"]);
        assert!(
            page1["items"][0].get("kind").is_none(),
            "list items carry no kind"
        );
        assert_eq!(page1["metadata"]["remainingItemCount"], 1);
        assert_eq!(page1["metadata"]["resourceVersion"], "4");
        // A pod added between pages is not in this list.
        put(&s, pod_json("ns", "e", "u-e", "n1", "app"));
        let token = str_at(&page1, "/metadata/continue").to_owned();
        let q2 = format!("fieldSelector=spec.nodeName%3Dn1&limit=2&continue={token}");
        let (_, page2) = list_pods(&s, &request("GET", "/api/v1/pods", &q2, "", None));
        assert_eq!(names(&page2), ["d"]);
        assert!(page2["metadata"].get("continue").is_none());
        assert_eq!(page2["metadata"]["resourceVersion"], "4");
        let (code, _) = list_pods(
            &s,
            &request("GET", "/api/v1/pods", "fieldSelector=spec.host%3Dx", "", None),
        );
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn a_watch_sees_pods_enter_and_leave_its_selection() {
        let filter = Filter {
            fields: parse_selector("spec.nodeName=n1"),
            labels: Vec::new(),
        };
        let pending = pod_json("ns", "p", "u", "", "app");
        let bound = pod_json("ns", "p", "u", "n1", "app");
        let moved = pod_json("ns", "p", "u", "n2", "app");
        let change = |what, old: &Value, new: &Value| Change {
            rv: 9,
            what,
            key: ("ns".into(), "p".into()),
            old: Some(old.clone()),
            new: new.clone(),
        };
        let kind = |b: Option<Bytes>| {
            b.and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .map(|v| v["type"].as_str().unwrap_or_default().to_owned())
        };
        assert_eq!(
            kind(watch_event(
                &change(ChangeType::Modified, &pending, &bound),
                &filter
            ))
            .as_deref(),
            Some("ADDED")
        );
        assert_eq!(
            kind(watch_event(
                &change(ChangeType::Modified, &bound, &bound),
                &filter
            ))
            .as_deref(),
            Some("MODIFIED")
        );
        assert_eq!(
            kind(watch_event(
                &change(ChangeType::Modified, &bound, &moved),
                &filter
            ))
            .as_deref(),
            Some("DELETED")
        );
        assert_eq!(
            kind(watch_event(
                &change(ChangeType::Modified, &moved, &moved),
                &filter
            )),
            None
        );
        assert_eq!(
            kind(watch_event(&change(ChangeType::Deleted, &moved, &moved), &filter)),
            None
        );
    }

    #[test]
    fn events_conflict_and_namespaces_must_agree() {
        let s = shared();
        let e = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web-0.17a", "namespace": "shop"},
            "eventTime": "2024-01-01T00:00:00.000000Z",
            "reportingController": "podmortem", "reportingInstance": "node-a",
            "action": "Diagnosed", "reason": "OOMKilled", "type": "Warning", "note": "n",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "shop", "name": "web-0", "uid": "u"},
        });
        let raw = e.to_string();
        let post = |ns: &str| {
            let path = format!("/apis/events.k8s.io/v1/namespaces/{ns}/events");
            create_event(
                &s,
                ns,
                &request("POST", &path, "", "application/json", Some(&e)),
                raw.as_bytes(),
            )
            .0
        };
        assert_eq!(post("other"), StatusCode::BAD_REQUEST);
        assert_eq!(post("shop"), StatusCode::CREATED);
        assert_eq!(post("shop"), StatusCode::CONFLICT);
        let patch = |body: Value, ct: &str| {
            let raw = body.to_string();
            let path = "/apis/events.k8s.io/v1/namespaces/shop/events/web-0.17a";
            patch_event(
                &s,
                "shop",
                "web-0.17a",
                &request("PATCH", path, "", ct, Some(&body)),
                raw.as_bytes(),
            )
            .0
        };
        let series = json!({"series": {"count": 2, "lastObservedTime": "2024-01-01T00:00:01.000000Z"}});
        assert_eq!(
            patch(series.clone(), "application/json-patch+json"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
        assert_eq!(
            patch(json!({"note": "changed"}), "application/merge-patch+json"),
            StatusCode::UNPROCESSABLE_ENTITY
        );
        assert_eq!(patch(series, "application/merge-patch+json"), StatusCode::OK);
        let missing = patch_event(
            &s,
            "shop",
            "nope",
            &request("PATCH", "/x", "", "application/merge-patch+json", None),
            b"{}",
        );
        assert_eq!(missing.0, StatusCode::NOT_FOUND);
        assert_eq!(missing.1["reason"], "NotFound");
    }
}
