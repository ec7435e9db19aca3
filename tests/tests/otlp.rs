//! End-to-end: findings of real failures on a real containerd, exported as OTLP log records to a
//! real collector (a tonic gRPC server, or an OTLP/HTTP server) on 127.0.0.1: their attributes,
//! configuration through the environment, a collector that goes away and comes back, and a queue
//! that overflows while it is away.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use podmortem_e2e::agent::{field, Agent, Received};
use podmortem_e2e::cri::{ContainerSpec, Pod, PodSpec, HOG_LIMIT as LIMIT};
use podmortem_e2e::otlp_receiver::{find, list_items, map_entries, OtlpReceiver, OtlpValue, Record};
use podmortem_e2e::TestBed;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Listings every second; batches leave soon; a collector that is back is tried again soon.
fn config(endpoint: &str, extra: &str) -> String {
    format!(
        "cri:\n  resync_interval: 1s\notlp:\n  endpoint: {endpoint}\n  batch_delay: 50ms\n  retry_initial: 200ms\n  retry_max: 1s\n{extra}"
    )
}

async fn agent_on(bed: &TestBed, yaml: &str, env: &[(&str, &str)]) -> Agent {
    let agent = bed.agent_with_config_and_env(yaml, env).unwrap();
    agent
        .wait_for_log("subscribed to containerd events", Duration::from_secs(20))
        .await
        .unwrap();
    agent
}

/// The host's name as the agent (host root `/`) must tell it: the host's `/etc/hostname`,
/// which in a pod differs from the kernel's (the pod's own) hostname.
fn the_hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
        .unwrap()
        .trim()
        .to_owned()
}

/// Runs a container that the memory limit kills, and returns its id and its finding.
async fn oom_kill(bed: &TestBed, agent: &mut Agent, pod: &Pod) -> (String, Received) {
    let id = bed
        .cri
        .run_container(pod, &ContainerSpec::memory_hog("app"))
        .await
        .unwrap();
    let got = agent
        .wait_for("OOMKilled", WAIT, |f| {
            field(f, "/subject/container_id") == id && field(f, "/kind") == "OOMKilled"
        })
        .await
        .unwrap();
    (id, got)
}

/// Checks that `record` is `finding` (as printed on stdout) with every attribute it should carry.
fn assert_oom_record(record: &Record, finding: &Value, pod: &Pod, id: &str, service: &str) {
    assert_eq!(record.str("podmortem.finding.kind"), Some("OOMKilled"));
    assert_eq!(record.record.event_name, "podmortem.finding");
    let (text, number) = match field(finding, "/severity") {
        "info" => ("INFO", 9),
        "warning" => ("WARN", 13),
        "critical" => ("ERROR", 17),
        other => panic!("severity {other}"),
    };
    assert_eq!(record.record.severity_text, text);
    assert_eq!(record.record.severity_number, number);
    assert_eq!(record.body(), Some(field(finding, "/summary")));
    let last_seen = humantime::parse_rfc3339(field(finding, "/last_seen")).unwrap();
    let nanos = last_seen
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    // stdout prints microseconds.
    assert_eq!(
        u128::from(record.record.time_unix_nano) / 1000,
        nanos / 1000,
        "timestamp = last_seen"
    );
    assert!(record.record.observed_time_unix_nano >= record.record.time_unix_nano);
    assert_eq!(record.str("k8s.namespace.name"), Some("e2e"));
    assert_eq!(record.str("k8s.pod.name"), Some(pod.spec.name.as_str()));
    assert_eq!(record.str("k8s.pod.uid"), Some(pod.spec.uid.as_str()));
    assert_eq!(record.str("k8s.container.name"), Some("app"));
    assert_eq!(record.int("k8s.container.restart_count"), Some(0));
    assert_eq!(record.str("container.id"), Some(id));
    assert_eq!(record.str("k8s.node.name"), Some("e2e-node"));
    assert_eq!(record.int("process.exit.code"), Some(137));
    assert_eq!(
        record.str("k8s.container.status.last_terminated_reason"),
        Some("OOMKilled")
    );
    assert_eq!(
        record.str("podmortem.finding.fingerprint"),
        Some(field(finding, "/fingerprint"))
    );
    assert_eq!(
        record.str("podmortem.finding.severity"),
        Some(field(finding, "/severity"))
    );
    assert_eq!(record.int("podmortem.finding.count"), Some(1));
    assert_eq!(
        record.str("podmortem.finding.first_seen"),
        Some(field(finding, "/first_seen"))
    );
    let evidence = list_items(record.attr("podmortem.evidence").expect("evidence")).expect("a list");
    let sources: Vec<String> = evidence
        .iter()
        .filter_map(|e| map_entries(e.value.as_ref()?))
        .filter_map(|m| match find(m, "source")? {
            OtlpValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let expected: Vec<&str> = finding["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["source"].as_str().unwrap())
        .collect();
    assert_eq!(sources, expected, "every evidence, in order");
    assert!(sources.iter().any(|s| s == "kmsg"), "{sources:?}");
    // The kernel's evidence keeps its raw values.
    let kmsg = evidence
        .iter()
        .filter_map(|e| map_entries(e.value.as_ref()?))
        .find(|m| {
            matches!(find(m, "source"),
                Some(OtlpValue::StringValue(s)) if s == "kmsg")
        })
        .unwrap();
    let attributes = map_entries(find(kmsg, "attributes").expect("kmsg attributes")).unwrap();
    assert!(
        matches!(find(attributes, "memcg_limit_kib"),
            Some(OtlpValue::IntValue(kib)) if *kib == LIMIT / 1024),
        "{attributes:?}"
    );

    assert_eq!(record.resource_str("service.name"), Some(service));
    assert_eq!(
        record.resource_str("service.version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(record.resource_str("k8s.node.name"), Some("e2e-node"));
    assert_eq!(record.resource_str("host.name"), Some(the_hostname().as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_arrives_at_a_grpc_collector_as_a_log_record_with_its_attributes() {
    let receiver = OtlpReceiver::grpc().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let yaml = config(&receiver.endpoint(), "").replace("otlp:\n", "otlp:\n  metrics_interval: 1s\n");
    let mut agent = agent_on(&bed, &yaml, &[]).await;
    let pod = bed
        .cri
        .run_pod(&PodSpec::new("e2e", "hungry-grpc"))
        .await
        .unwrap();
    let (id, got) = oom_kill(&bed, &mut agent, &pod).await;
    let record = receiver
        .wait_for("the OOM kill", WAIT, |r| {
            r.str("container.id") == Some(id.as_str()) && r.str("podmortem.finding.kind") == Some("OOMKilled")
        })
        .await
        .unwrap();
    assert_oom_record(&record, &got.finding, &pod, &id, "podmortem");
    println!(
        "finding on stdout -> record at the gRPC collector: {:.1} ms",
        record
            .at
            .duration_since(got.at)
            .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    );
    // One record for one finding.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.records_with("container.id", &id).len(), 1);

    // The metrics reach the same collector: findings by kind and namespace (no pod label), the
    // node's pressure and the agent's own health.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exports = receiver.metric_exports();
        let points = |name: &str| -> Vec<Vec<(String, String)>> {
            let mut out = Vec::new();
            for export in &exports {
                for rm in &export.request.resource_metrics {
                    for sm in &rm.scope_metrics {
                        for m in sm.metrics.iter().filter(|m| m.name == name) {
                            let attrs = |kv: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                                kv.iter()
                                    .map(|kv| {
                                        let v = kv.value.as_ref().and_then(|v| v.value.as_ref());
                                        let v = match v {
                                            Some(OtlpValue::StringValue(s)) => s.clone(),
                                            other => format!("{other:?}"),
                                        };
                                        (kv.key.clone(), v)
                                    })
                                    .collect::<Vec<_>>()
                            };
                            use opentelemetry_proto::tonic::metrics::v1::metric::Data;
                            match &m.data {
                                Some(Data::Sum(sum)) => {
                                    out.extend(sum.data_points.iter().map(|p| attrs(&p.attributes)))
                                }
                                Some(Data::Gauge(g)) => {
                                    out.extend(g.data_points.iter().map(|p| attrs(&p.attributes)))
                                }
                                _ => {}
                            }
                        }
                    }
                }
            }
            out
        };
        let findings = points("podmortem.findings");
        let oom = findings.iter().any(|p| {
            p.contains(&("kind".to_owned(), "OOMKilled".to_owned()))
                && p.contains(&("k8s.namespace.name".to_owned(), "e2e".to_owned()))
        });
        if oom
            && !points("podmortem.source.events").is_empty()
            && !points("podmortem.node.pressure").is_empty()
        {
            assert!(
                findings
                    .iter()
                    .all(|p| p.iter().all(|(k, _)| k == "kind" || k == "k8s.namespace.name")),
                "findings metric labels: {findings:?}"
            );
            let resource = &exports[0].request.resource_metrics[0].resource;
            let node = resource
                .as_ref()
                .and_then(|r| find(&r.attributes, "k8s.node.name"));
            assert!(node.is_some(), "metrics carry the resource: {resource:?}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no findings metric at the collector"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_protobuf_configured_only_through_the_environment() {
    let receiver = OtlpReceiver::http().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let endpoint = receiver.endpoint();
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-podmortem-token=let%20me%20in"),
        ("OTEL_SERVICE_NAME", "podmortem-e2e"),
        ("OTEL_RESOURCE_ATTRIBUTES", "k8s.cluster.name=e2e-cluster"),
    ];
    let yaml = "cri:\n  resync_interval: 1s\notlp:\n  metrics_interval: 1s\n";
    let mut agent = agent_on(&bed, yaml, &env).await;
    assert!(
        agent.stderr().contains("protocol=http/protobuf"),
        "{}",
        agent.stderr()
    );
    let pod = bed
        .cri
        .run_pod(&PodSpec::new("e2e", "hungry-http"))
        .await
        .unwrap();
    let (id, got) = oom_kill(&bed, &mut agent, &pod).await;
    let record = receiver
        .wait_for("the OOM kill over HTTP", WAIT, |r| {
            r.str("container.id") == Some(id.as_str())
        })
        .await
        .unwrap();
    assert_oom_record(&record, &got.finding, &pod, &id, "podmortem-e2e");
    assert_eq!(record.resource_str("k8s.cluster.name"), Some("e2e-cluster"));
    assert_eq!(
        record.headers.get("x-podmortem-token").map(String::as_str),
        Some("let me in"),
        "{:?}",
        record.headers
    );
    assert_eq!(
        record.headers.get("content-type").map(String::as_str),
        Some("application/x-protobuf")
    );
    // Metrics go over HTTP too (their periodic export runs on the agent's runtime).
    let deadline = tokio::time::Instant::now() + WAIT;
    while !receiver.metric_exports().iter().any(|e| {
        e.request
            .resource_metrics
            .iter()
            .flat_map(|rm| rm.scope_metrics.iter())
            .flat_map(|sm| sm.metrics.iter())
            .any(|m| m.name == "podmortem.findings")
    }) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no metrics over HTTP: {}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!agent.stderr().contains("panicked"), "{}", agent.stderr());
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

/// Runs containers named `<prefix>-<n>` that exit 3 in `pod`, one after another, and returns
/// their findings as printed on stdout.
async fn failures(bed: &TestBed, agent: &mut Agent, pod: &Pod, prefix: &str, n: usize) -> Vec<Received> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let id = bed
            .cri
            .run_container(pod, &ContainerSpec::shell(&format!("{prefix}-{i}"), "exit 3"))
            .await
            .unwrap();
        let got = agent
            .wait_for("exit 3", WAIT, |f| field(f, "/subject/container_id") == id)
            .await
            .unwrap();
        out.push(got);
    }
    out
}

/// The findings printed on stdout after the first `skip`.
fn printed_after(agent: &Agent, skip: usize) -> Vec<Value> {
    agent.seen()[skip..].iter().map(|r| r.finding.clone()).collect()
}

/// Whether `record` is `finding`: the same problem on the same container, seen at the same time
/// (to the microsecond stdout prints).
fn is(record: &Record, finding: &Value) -> bool {
    let last_seen = humantime::parse_rfc3339(field(finding, "/last_seen"))
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_micros());
    record.str("podmortem.finding.fingerprint") == Some(field(finding, "/fingerprint"))
        && record.str("container.id").unwrap_or("") == field(finding, "/subject/container_id")
        && last_seen == Some(u128::from(record.record.time_unix_nano) / 1000)
}

/// Waits until the receiver holds every finding printed so far.
async fn all_delivered(receiver: &OtlpReceiver, agent: &Agent) {
    let printed = printed_after(agent, 0);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let records = receiver.records();
        let missing: Vec<&Value> = printed
            .iter()
            .filter(|f| !records.iter().any(|r| is(r, f)))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not delivered: {missing:?}\nstderr:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn findings_made_while_the_collector_is_down_all_arrive_once_it_is_back() {
    let mut receiver = OtlpReceiver::grpc().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, &config(&receiver.endpoint(), ""), &[]).await;
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "outage")).await.unwrap();
    failures(&bed, &mut agent, &pod, "before", 1).await;
    all_delivered(&receiver, &agent).await;
    let delivered_before = receiver.records().len();

    receiver.stop().await;
    let before = agent.seen().len();
    failures(&bed, &mut agent, &pod, "during", 5).await;
    agent
        .wait_for_log("OTLP export failed: findings kept", WAIT)
        .await
        .unwrap();
    assert_eq!(
        receiver.records().len(),
        delivered_before,
        "the collector is down"
    );

    receiver.restart().await.unwrap();
    all_delivered(&receiver, &agent).await;
    agent.wait_for_log("OTLP export recovered", WAIT).await.unwrap();
    // None lost, none twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = receiver.records();
    let during = printed_after(&agent, before);
    assert!(during.len() >= 5, "{during:?}");
    for finding in &during {
        let copies = records.iter().filter(|r| is(r, finding)).count();
        assert_eq!(copies, 1, "{finding}");
    }
    assert!(!agent.stderr().contains("OTLP queue full"), "{}", agent.stderr());
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

/// The highest count of dropped findings the agent reported: "... (N in all) ...".
fn dropped_in_all(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|l| l.contains("OTLP queue full"))
        .filter_map(|l| l.split_once(" in all)")?.0.rsplit_once('(')?.1.parse().ok())
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_the_newest_findings_says_how_many_and_delivers_the_rest() {
    let mut receiver = OtlpReceiver::grpc().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, &config(&receiver.endpoint(), "  queue_size: 3\n"), &[]).await;
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "overflow")).await.unwrap();
    failures(&bed, &mut agent, &pod, "before", 1).await;
    all_delivered(&receiver, &agent).await;

    receiver.stop().await;
    let delivered = receiver.records();
    failures(&bed, &mut agent, &pod, "during", 6).await;
    // Everything printed so far, in the order the sinks got it: the kernel log may add
    // findings about other test beds' OOM kills, which take their place in the queue too.
    let _ = agent
        .wait_for("nothing more", Duration::from_millis(300), |_| false)
        .await;
    // Delivery keeps the order: what the collector did not have when it went away is a suffix.
    let during: Vec<Value> = printed_after(&agent, 0)
        .into_iter()
        .filter(|f| !delivered.iter().any(|r| is(r, f)))
        .collect();
    assert!(during.len() >= 6, "{during:?}");
    let (kept, dropped) = during.split_at(3);
    // The first drop is said at once; the rest, with the count, in a later report.
    agent
        .wait_for_log("OTLP queue full: dropped 1 new finding(s) (1 in all)", WAIT)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while dropped_in_all(&agent.stderr()) < dropped.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} dropped, but the agent did not say so:\n{}",
            dropped.len(),
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    receiver.restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !kept.iter().all(|f| receiver.records().iter().any(|r| is(r, f))) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept findings did not arrive; stderr:\n{}",
            agent.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = receiver.records();
    for finding in kept {
        assert_eq!(records.iter().filter(|r| is(r, finding)).count(), 1, "{finding}");
    }
    for finding in dropped {
        assert!(
            !records.iter().any(|r| is(r, finding)),
            "dropped but arrived: {finding}"
        );
    }
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_findings_go_to_stdout_only_and_it_says_so_once() {
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, "cri:\n  resync_interval: 1s\n", &[]).await;
    let pod = bed
        .cri
        .run_pod(&PodSpec::new("e2e", "no-collector"))
        .await
        .unwrap();
    let got = failures(&bed, &mut agent, &pod, "app", 1).await;
    assert_eq!(field(&got[0].finding, "/kind"), "ContainerExited");
    let stderr = agent.stderr();
    assert_eq!(
        stderr
            .matches("no OTLP endpoint configured: findings go to standard output only")
            .count(),
        1,
        "{stderr}"
    );
    assert!(
        !stderr.contains("exporting findings to the OTLP collector"),
        "{stderr}"
    );
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}
