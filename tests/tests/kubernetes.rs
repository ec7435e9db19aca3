//! End-to-end: podmortem and the Kubernetes API, on a real containerd with a fake API server
//! (`podmortem_e2e::fake_apiserver`). Container failures become Events on their Pods, repeats
//! patch the Event's series; node-level findings become Node conditions that survive a restart
//! without a false transition; the pod watch gives findings their owner and asks only for this
//! node's pods; an API server that is away changes nothing but the logs; the Event rate limit
//! holds.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, SystemTime};

use podmortem_e2e::agent::{field, Agent};
use podmortem_e2e::cri::{ContainerSpec, Pod, PodSpec};
use podmortem_e2e::fake_apiserver::{condition, pod_json, str_at, FakeApiServer, Recorded};
use podmortem_e2e::host::FakeHost;
use podmortem_e2e::loopfs::LoopFs;
use podmortem_e2e::TestBed;
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(30);
/// The node name the test bed gives the agent.
const NODE: &str = "e2e-node";
const PODMORTEM_TYPES: [&str; 4] = [
    "MissingHostDependency",
    "HostFilesystemReadOnly",
    "NodeOOM",
    "OOMRisk",
];
const KUBELET_TIME: &str = "2025-01-01T00:00:00Z";

/// Kubelet's own conditions on a healthy node.
fn kubelet_conditions() -> Vec<Value> {
    vec![
        condition(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            KUBELET_TIME,
        ),
        condition(
            "DiskPressure",
            "False",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            KUBELET_TIME,
        ),
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            KUBELET_TIME,
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            KUBELET_TIME,
        ),
    ]
}

/// The agent's config: `kubernetes` on with `kubeconfig`, then `extra` (YAML, top level) and
/// `kube_extra` (YAML, below `kubernetes:`, indented two spaces).
fn config(kubeconfig: &Path, kube_extra: &str, extra: &str) -> String {
    format!(
        "cri:\n  resync_interval: 1s\nkubernetes:\n  mode: on\n  kubeconfig: {}\n  condition_settle: 3s\n{kube_extra}{extra}",
        kubeconfig.display()
    )
}

fn write_config(bed: &TestBed, yaml: &str) -> String {
    let path = bed.containerd.dir().join("agent-config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn started(agent: Agent) -> Agent {
    agent
        .wait_for_log("subscribed to containerd events", WAIT)
        .await
        .unwrap();
    agent
}

fn pod_requests(api: &FakeApiServer) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.path == "/api/v1/pods")
        .collect()
}

fn node_patches(api: &FakeApiServer) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == format!("/api/v1/nodes/{NODE}/status"))
        .collect()
}

fn event_posts(api: &FakeApiServer) -> Vec<Recorded> {
    api.requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path.ends_with("/events"))
        .collect()
}

/// A condition of `type_` in a list of conditions.
fn cond<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

fn patched(r: &Recorded, type_: &str) -> Value {
    r.body
        .as_ref()
        .and_then(|b| cond(&b["status"]["conditions"], type_))
        .cloned()
        .unwrap_or(Value::Null)
}

fn node_condition(api: &FakeApiServer, type_: &str) -> Value {
    api.node(NODE)
        .and_then(|n| cond(&n["status"]["conditions"], type_).cloned())
        .unwrap_or(Value::Null)
}

/// Waits until the Node's condition of `type_` satisfies `pred`.
async fn wait_condition(
    api: &FakeApiServer,
    type_: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = node_condition(api, type_);
        if pred(&c) {
            return c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: condition {type_} is {c}; node: {}",
            api.node(NODE).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every node patch is a strategic merge of podmortem's four types, and nothing else.
/// The (API group, resource, verb) a request to the API server needs.
fn permission(r: &Recorded) -> (String, String, String) {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("unexpected path {}", r.path),
    };
    let rest = match rest {
        ["namespaces", _, rest @ ..] => rest,
        rest => rest,
    };
    let (resource, named) = match rest {
        [resource] => ((*resource).to_owned(), false),
        [resource, _name] => ((*resource).to_owned(), true),
        [resource, _name, sub] => (format!("{resource}/{sub}"), true),
        _ => panic!("unexpected path {}", r.path),
    };
    let verb = match (r.method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if r.is_watch() => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", _) => "delete",
        (m, _) => panic!("unexpected method {m}"),
    };
    (group.to_owned(), resource, verb.to_owned())
}

/// Every request the agent made is allowed by the ClusterRole shipped in `deploy/rbac.yaml`,
/// and every rule there was needed.
fn assert_allowed_by_shipped_rbac(api: &FakeApiServer) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let role = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| <Value as serde::Deserialize>::deserialize(doc).unwrap())
        .find(|doc| doc["kind"] == "ClusterRole")
        .expect("a ClusterRole in deploy/rbac.yaml");
    let mut granted = std::collections::BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in rule["apiGroups"].as_array().unwrap() {
            for resource in rule["resources"].as_array().unwrap() {
                for verb in rule["verbs"].as_array().unwrap() {
                    let s = |v: &Value| v.as_str().unwrap().to_owned();
                    granted.insert((s(group), s(resource), s(verb)));
                }
            }
        }
    }
    let used: std::collections::BTreeSet<_> = api.requests().iter().map(permission).collect();
    for need in &used {
        assert!(
            granted.contains(need),
            "{need:?} is used but not granted by deploy/rbac.yaml"
        );
    }
    for grant in &granted {
        assert!(
            used.contains(grant),
            "{grant:?} is granted by deploy/rbac.yaml but never used"
        );
    }
}

fn assert_patches_are_podmortems_only(api: &FakeApiServer) {
    let patches = node_patches(api);
    assert!(!patches.is_empty());
    for p in &patches {
        assert_eq!(
            p.content_type.as_deref(),
            Some("application/strategic-merge-patch+json"),
            "{p:?}"
        );
        assert_eq!(p.status, 200, "{p:?}");
        let body = p.body.as_ref().expect("a JSON patch");
        assert_eq!(body.as_object().map(|o| o.len()), Some(1), "only status: {body}");
        assert_eq!(
            body["status"].as_object().map(|o| o.len()),
            Some(1),
            "only conditions: {body}"
        );
        let types: Vec<&str> = body["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, PODMORTEM_TYPES, "{body}");
        for c in body["status"]["conditions"].as_array().unwrap() {
            let reason = c["reason"].as_str().unwrap();
            match c["status"].as_str().unwrap() {
                "True" => assert_eq!(reason, "PodmortemDetected"),
                "False" => assert_eq!(reason, "PodmortemCleared"),
                other => panic!("status {other}"),
            }
            assert!(!str_at(c, "/lastHeartbeatTime").is_empty(), "{c}");
            assert!(!str_at(c, "/lastTransitionTime").is_empty(), "{c}");
        }
    }
}

/// Kubelet's conditions are as they were seeded.
fn assert_kubelet_untouched(api: &FakeApiServer) {
    let node = api.node(NODE).unwrap();
    for seeded in kubelet_conditions() {
        let now = cond(&node["status"]["conditions"], seeded["type"].as_str().unwrap());
        assert_eq!(now, Some(&seeded), "kubelet's condition changed: {node}");
    }
}

async fn failing(bed: &TestBed, pod: &Pod, container: &str, attempt: u32) -> String {
    let spec = ContainerSpec {
        attempt,
        ..ContainerSpec::shell(container, "exit 3")
    };
    bed.cri.run_container(pod, &spec).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_become_events_on_their_pods_and_findings_carry_the_owner_from_the_pod_watch() {
    let api = FakeApiServer::start().await.unwrap();
    api.add_node(NODE, json!(kubelet_conditions()));
    let bed = TestBed::start().await.unwrap();
    let web = PodSpec::new("e2e", "web-0");
    api.put_pod(pod_json("e2e", "web-0", &web.uid, NODE, "app"))
        .unwrap();
    // A pod with the same namespace and a CRI twin, scheduled to another node.
    let stray = PodSpec::new("e2e", "stray-0");
    api.put_pod(pod_json("e2e", "stray-0", &stray.uid, "other-node", "app"))
        .unwrap();
    let kubeconfig = api
        .write_kubeconfig(&bed.containerd.dir().join("kubeconfig"))
        .unwrap();
    let mut agent = started(bed.agent_with_config(&config(&kubeconfig, "", "")).unwrap()).await;
    // The list is done once the watch starts.
    api.wait_for_request("the pod watch", WAIT, |r| {
        r.path == "/api/v1/pods" && r.is_watch()
    })
    .await
    .unwrap();

    // (d) Only this node's pods are asked for.
    let asked = pod_requests(&api);
    assert!(asked.iter().any(|r| !r.is_watch()), "a list first: {asked:?}");
    for r in &asked {
        assert_eq!(r.param("fieldSelector"), Some("spec.nodeName=e2e-node"), "{r:?}");
        assert_eq!(r.status, 200, "{r:?}");
    }
    let watch = asked.iter().find(|r| r.is_watch()).unwrap();
    assert!(
        watch.param("resourceVersion").is_some_and(|v| !v.is_empty()),
        "{watch:?}"
    );
    assert_eq!(watch.param("allowWatchBookmarks"), Some("true"));

    // (a) A failure: an Event on the Pod with the full reference.
    let pod = bed.cri.run_pod(&web).await.unwrap();
    let first = failing(&bed, &pod, "app", 0).await;
    let got = agent
        .wait_for("exit 3 of web-0/app", WAIT, |f| {
            field(f, "/subject/container_id") == first
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "ContainerExited", "{f}");
    assert_eq!(
        f["owner"],
        json!({"kind": "ReplicaSet", "name": "web-0-rs"}),
        "{f}"
    );
    api.wait_for_request("the Event's POST", WAIT, |r| {
        r.method == "POST" && r.path == "/apis/events.k8s.io/v1/namespaces/e2e/events"
    })
    .await
    .unwrap();
    let posts = event_posts(&api);
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].status, 201, "{:?}", posts[0]);
    assert_eq!(posts[0].content_type.as_deref(), Some("application/json"));
    let events = api.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(e["apiVersion"], "events.k8s.io/v1");
    assert_eq!(e["kind"], "Event");
    assert_eq!(
        e["regarding"],
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "e2e",
            "name": "web-0",
            "uid": web.uid,
            "fieldPath": "spec.containers{app}",
        })
    );
    assert_eq!(e["reason"], "ContainerExited");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["action"], "Diagnosed");
    assert_eq!(e["reportingController"], "podmortem");
    assert_eq!(e["reportingInstance"], NODE);
    assert!(str_at(e, "/metadata/name").starts_with("web-0."), "{e}");
    assert!(!str_at(e, "/eventTime").is_empty(), "{e}");
    assert!(e.get("series").is_none_or(Value::is_null), "{e}");
    let note = str_at(e, "/note");
    assert!(
        note.starts_with(field(f, "/summary").trim_end_matches('.')),
        "{note}\n{f}"
    );
    assert!(note.contains("Evidence: "), "{note}");
    assert!(note.len() <= 1024);

    // The same container fails again: the same Event, its series counting 2.
    let second = failing(&bed, &pod, "app", 1).await;
    agent
        .wait_for("exit 3 of web-0/app attempt 1", WAIT, |f| {
            field(f, "/subject/container_id") == second
        })
        .await
        .unwrap();
    let name = str_at(e, "/metadata/name").to_owned();
    let patch = api
        .wait_for_request("the Event's PATCH", WAIT, |r| {
            r.method == "PATCH" && r.path.ends_with(&name)
        })
        .await
        .unwrap();
    assert_eq!(
        patch.path,
        format!("/apis/events.k8s.io/v1/namespaces/e2e/events/{name}")
    );
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(patch.status, 200, "{patch:?}");
    let events = api.events();
    assert_eq!(events.len(), 1, "one Event for both: {events:?}");
    assert_eq!(events[0]["series"]["count"], 2, "{}", events[0]);
    assert!(!str_at(&events[0], "/series/lastObservedTime").is_empty());
    assert_eq!(events[0]["note"], e["note"], "the note is immutable");
    assert_eq!(event_posts(&api).len(), 1);

    // (d) A pod scheduled after the watch started: its finding has its owner too.
    let late = PodSpec::new("e2e", "late-0");
    api.put_pod(pod_json("e2e", "late-0", &late.uid, NODE, "worker"))
        .unwrap();
    let late_pod = bed.cri.run_pod(&late).await.unwrap();
    // The watch delivers it within a moment of the API having it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = failing(&bed, &late_pod, "worker", 0).await;
    let got = agent
        .wait_for("exit 3 of late-0/worker", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    assert_eq!(
        got.finding["owner"],
        json!({"kind": "ReplicaSet", "name": "late-0-rs"})
    );

    // The pod on another node was never sent: its CRI twin's finding has no owner.
    let stray_pod = bed.cri.run_pod(&stray).await.unwrap();
    let id = failing(&bed, &stray_pod, "app", 0).await;
    let got = agent
        .wait_for("exit 3 of stray-0/app", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    assert!(got.finding.get("owner").is_none(), "{}", got.finding);
    for r in pod_requests(&api) {
        assert_eq!(r.param("fieldSelector"), Some("spec.nodeName=e2e-node"), "{r:?}");
    }
    assert_allowed_by_shipped_rbac(&api);
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_conditions_follow_findings_and_carry_over_a_restart() {
    let api = FakeApiServer::start().await.unwrap();
    api.add_node(NODE, json!(kubelet_conditions()));
    let host = FakeHost::new().unwrap();
    let bed = TestBed::start().await.unwrap();
    let fs = LoopFs::new(bed.containerd.dir(), "node-fs").unwrap();
    let kubeconfig = api
        .write_kubeconfig(&bed.containerd.dir().join("kubeconfig"))
        .unwrap();
    // Every node needs iscsiadm here, and this (fake) host lacks it.
    let extra = format!(
        "host_fs:\n  interval: 300ms\n  paths: [{}]\nhost_deps:\n  interval: 1s\n  rules:\n    - name: e2e-iscsi\n      needs: [iscsiadm]\n      match: {{always: true}}\n",
        fs.dir.display()
    );
    let yaml = config(&kubeconfig, "", &extra);
    let path = write_config(&bed, &yaml);
    let args = ["--host-root", host.root_arg().unwrap(), "--config", &path];
    let agent = started(bed.agent(&args).unwrap()).await;

    // (b) The check raises MissingHostDependency: True.
    let missing = wait_condition(&api, "MissingHostDependency", "lacks iscsiadm", |c| {
        c["status"] == "True"
    })
    .await;
    assert_eq!(missing["reason"], "PodmortemDetected");
    assert!(
        str_at(&missing, "/message").contains("lacks iscsiadm"),
        "{missing}"
    );
    assert_eq!(node_condition(&api, "HostFilesystemReadOnly")["status"], "False");
    // The filesystem turns read-only: True, naming it.
    fs.remount("ro").unwrap();
    let ro = wait_condition(&api, "HostFilesystemReadOnly", "read-only", |c| {
        c["status"] == "True"
    })
    .await;
    assert!(
        str_at(&ro, "/message").contains(&fs.dir.display().to_string()),
        "{ro}"
    );
    let ro_since = str_at(&ro, "/lastTransitionTime").to_owned();
    let missing_since = str_at(
        &node_condition(&api, "MissingHostDependency"),
        "/lastTransitionTime",
    )
    .to_owned();
    assert_patches_are_podmortems_only(&api);
    assert_kubelet_untouched(&api);
    assert!(agent.stop().await.unwrap().success());

    // (c) While podmortem is away, iscsiadm is installed; the filesystem stays read-only.
    host.install("/usr/sbin/iscsiadm", "echo 'iscsiadm version 2.1.8'")
        .unwrap();
    let before = node_patches(&api).len();
    let restarted = SystemTime::now();
    let agent = started(bed.agent(&args).unwrap()).await;
    let cleared = wait_condition(&api, "MissingHostDependency", "cleared after settling", |c| {
        c["status"] == "False"
    })
    .await;
    let after: Vec<Recorded> = node_patches(&api).into_iter().skip(before).collect();
    assert!(!after.is_empty());
    // Until the settle time, what was read back held, with its transition time.
    let first = &after[0];
    assert_eq!(
        patched(first, "MissingHostDependency")["status"],
        "True",
        "{first:?}"
    );
    assert_eq!(
        patched(first, "MissingHostDependency")["lastTransitionTime"],
        missing_since.as_str()
    );
    let cleared_at = after
        .iter()
        .find(|p| patched(p, "MissingHostDependency")["status"] == "False")
        .unwrap()
        .at;
    let held = cleared_at.duration_since(restarted).unwrap();
    assert!(
        held >= Duration::from_secs(3),
        "cleared after {held:?}, before condition_settle"
    );
    assert_ne!(cleared["lastTransitionTime"], missing_since.as_str());
    assert_eq!(cleared["reason"], "PodmortemCleared");
    // Raised again by the check: never a new transition.
    for p in &after {
        let h = patched(p, "HostFilesystemReadOnly");
        assert_eq!(h["status"], "True", "{p:?}");
        assert_eq!(h["lastTransitionTime"], ro_since.as_str(), "{p:?}");
    }
    assert_eq!(
        node_condition(&api, "HostFilesystemReadOnly")["lastTransitionTime"],
        ro_since.as_str()
    );

    // (b) Writable again: False, with a new transition.
    fs.remount("rw").unwrap();
    let writable = wait_condition(&api, "HostFilesystemReadOnly", "writable again", |c| {
        c["status"] == "False"
    })
    .await;
    assert_ne!(writable["lastTransitionTime"], ro_since.as_str());
    assert_patches_are_podmortems_only(&api);
    assert_kubelet_untouched(&api);
    // The Node was read once per start.
    let gets = api
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v1/nodes/{NODE}"))
        .count();
    assert_eq!(gets, 2);
    assert!(agent.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_api_server_the_agent_keeps_reporting_and_says_so_once() {
    let bed = TestBed::start().await.unwrap();
    // A port nothing listens on (yet).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kubeconfig = FakeApiServer::kubeconfig_for(
        &format!("http://127.0.0.1:{port}"),
        &bed.containerd.dir().join("kubeconfig"),
    )
    .unwrap();
    let mut agent = started(bed.agent_with_config(&config(&kubeconfig, "", "")).unwrap()).await;
    let spec = PodSpec::new("e2e", "offline-0");
    let pod = bed.cri.run_pod(&spec).await.unwrap();
    let id = failing(&bed, &pod, "app", 0).await;
    let got = agent
        .wait_for("exit 3 without the API", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    assert_eq!(field(&got.finding, "/kind"), "ContainerExited");
    assert!(got.finding.get("owner").is_none());
    // Several retries later, each part has said it once.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let log = agent.stderr();
    let count = |needle: &str| log.matches(needle).count();
    assert_eq!(count("the pod watch cannot reach the Kubernetes API"), 1, "{log}");
    assert_eq!(count("cannot set podmortem's node conditions"), 1, "{log}");
    assert_eq!(count("Kubernetes Event not posted"), 1, "{log}");

    // The API server comes up: the watch and the conditions find it.
    let api = FakeApiServer::start_on(port).await.unwrap();
    api.add_node(NODE, json!(kubelet_conditions()));
    api.put_pod(pod_json("e2e", "offline-0", &spec.uid, NODE, "app"))
        .unwrap();
    agent
        .wait_for_log(
            "the pod watch reaches the Kubernetes API again",
            Duration::from_secs(40),
        )
        .await
        .unwrap();
    wait_condition(&api, "HostFilesystemReadOnly", "conditions set", |c| {
        c["status"] == "False"
    })
    .await;
    assert_kubelet_untouched(&api);
    let again = failing(&bed, &pod, "app", 1).await;
    let got = agent
        .wait_for("exit 3 with the API", WAIT, |f| {
            field(f, "/subject/container_id") == again
        })
        .await
        .unwrap();
    assert_eq!(
        got.finding["owner"],
        json!({"kind": "ReplicaSet", "name": "offline-0-rs"})
    );
    assert!(agent.stop().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_beyond_the_burst_wait_for_the_rate() {
    let api = FakeApiServer::start().await.unwrap();
    api.add_node(NODE, json!(kubelet_conditions()));
    let bed = TestBed::start().await.unwrap();
    let spec = PodSpec::new("e2e", "burst-0");
    api.put_pod(pod_json("e2e", "burst-0", &spec.uid, NODE, "c0"))
        .unwrap();
    let kubeconfig = api
        .write_kubeconfig(&bed.containerd.dir().join("kubeconfig"))
        .unwrap();
    let yaml = config(
        &kubeconfig,
        "  events_per_second: 0.5\n  events_burst: 2\n  conditions: false\n",
        "",
    );
    let mut agent = started(bed.agent_with_config(&yaml).unwrap()).await;
    let pod = bed.cri.run_pod(&spec).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(failing(&bed, &pod, &format!("c{i}"), 0).await);
    }
    let mut found = Vec::new();
    for id in &ids {
        let got = agent
            .wait_for("one of five exits", WAIT, |f| {
                field(f, "/subject/container_id") == id
            })
            .await
            .unwrap();
        found.push(got.at);
    }
    found.sort();
    let deadline = tokio::time::Instant::now() + WAIT;
    while event_posts(&api).len() < 5 {
        assert!(tokio::time::Instant::now() < deadline, "{:?}", event_posts(&api));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let posts = event_posts(&api);
    assert_eq!(posts.len(), 5, "all five posted, none dropped: {posts:?}");
    assert!(posts.iter().all(|p| p.status == 201), "{posts:?}");
    let at: Vec<SystemTime> = posts.iter().map(|p| p.at).collect();
    let secs = |a: SystemTime, b: SystemTime| b.duration_since(a).unwrap_or_default().as_secs_f64();
    // The burst goes at once.
    for i in 0..2 {
        assert!(
            secs(found[i], at[i]) < 1.0,
            "post {i} waited {}s",
            secs(found[i], at[i])
        );
    }
    // Beyond it, no more than burst + rate × time: posts i..=j span at least (j-i-1)/rate.
    for i in 0..5 {
        for j in i + 1..5 {
            let least = 2.0 * (j - i - 1) as f64 - 0.3;
            assert!(
                secs(at[i], at[j]) >= least,
                "posts {i}..={j} within {}s, less than {least}s: {at:?}",
                secs(at[i], at[j])
            );
        }
    }
    println!(
        "event posts after the first: {:?}",
        at.iter().map(|t| secs(at[0], *t)).collect::<Vec<_>>()
    );
    let mut paths: Vec<String> = api
        .events()
        .iter()
        .map(|e| str_at(e, "/regarding/fieldPath").to_owned())
        .collect();
    paths.sort();
    assert_eq!(
        paths,
        (0..5)
            .map(|i| format!("spec.containers{{c{i}}}"))
            .collect::<Vec<_>>()
    );
    assert!(agent.stop().await.unwrap().success());
}
