//! Unit tests of the OTLP mapping, environment, resource and failure classification.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::logs::{AnyValue, Logger as _, LoggerProvider as _, Severity as OtelSeverity};
use opentelemetry::Key;
use opentelemetry_sdk::error::OTelSdkError;
use opentelemetry_sdk::logs::{SdkLogRecord, SdkLoggerProvider};

use super::attributes::{self, fill};
use super::env::{parse_list, percent_decode};
use super::failure::{classify, Verdict};
use super::resource;
use super::{check_endpoint, http_url, OtlpConfig, OtlpError, OtlpProtocol};
use crate::detect::finding::{Evidence, EvidenceSource, Finding, FindingKind, Severity, Subject};
use crate::model::Owner;

fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

fn oom_finding() -> Finding {
    let subject = Subject::Container {
        node: "node-1".into(),
        namespace: "shop".into(),
        pod: "web-7d9f-abcde".into(),
        pod_uid: "0b5c-uid".into(),
        container: "app".into(),
        container_id: "c0ffee".into(),
        attempt: 4,
    };
    let mut f = Finding::new(
        FindingKind::OomKilled,
        Severity::Critical,
        subject,
        at(1_700_000_100),
        &["shop", "web", "app"],
    );
    f.summary = "the kernel killed pid 42 (sh) at the container's memory limit".into();
    f.hint = "raise the limit".into();
    f.first_seen = at(1_700_000_000);
    f.count = 5;
    f.owner = Some(Owner {
        kind: "ReplicaSet".into(),
        name: "web-7d9f".into(),
    });
    f.evidence = vec![
        Evidence::new(EvidenceSource::Kmsg, Some(at(1_700_000_099)), "oom-kill line")
            .with("pid", 42)
            .with("comm", "sh")
            .with(
                "nested",
                serde_json::json!({"a": [1, "two", null, 2.5], "b": null}),
            ),
        Evidence::new(EvidenceSource::Cri, None, "exited 137")
            .with("exit_code", 137)
            .with("reason", "OOMKilled"),
    ];
    f
}

fn record() -> SdkLogRecord {
    SdkLoggerProvider::builder()
        .build()
        .logger("test")
        .create_log_record()
}

fn attrs(record: &SdkLogRecord) -> HashMap<String, AnyValue> {
    record
        .attributes_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

fn text(value: &str) -> AnyValue {
    AnyValue::from(value.to_owned())
}

fn map_of(value: &AnyValue) -> &HashMap<Key, AnyValue> {
    match value {
        AnyValue::Map(m) => m,
        other => panic!("not a map: {other:?}"),
    }
}

#[test]
fn a_finding_is_one_record_with_severity_body_times_and_event_name() {
    let mut r = record();
    let observed = at(1_700_000_200);
    fill(&mut r, &oom_finding(), observed);
    assert_eq!(r.event_name(), Some("podmortem.finding"));
    assert_eq!(r.severity_number(), Some(OtelSeverity::Error));
    assert_eq!(r.severity_text(), Some("ERROR"));
    assert_eq!(
        r.body(),
        Some(&text(
            "the kernel killed pid 42 (sh) at the container's memory limit"
        ))
    );
    assert_eq!(r.timestamp(), Some(at(1_700_000_100)), "last_seen");
    assert_eq!(r.observed_timestamp(), Some(observed));
}

#[test]
fn severities_map_to_info_warn_and_error() {
    assert_eq!(attributes::severity(Severity::Info), (OtelSeverity::Info, "INFO"));
    assert_eq!(
        attributes::severity(Severity::Warning),
        (OtelSeverity::Warn, "WARN")
    );
    assert_eq!(
        attributes::severity(Severity::Critical),
        (OtelSeverity::Error, "ERROR")
    );
}

#[test]
fn container_findings_carry_semantic_convention_attributes() {
    let mut r = record();
    fill(&mut r, &oom_finding(), at(1));
    let a = attrs(&r);
    assert_eq!(a["k8s.namespace.name"], text("shop"));
    assert_eq!(a["k8s.pod.name"], text("web-7d9f-abcde"));
    assert_eq!(a["k8s.pod.uid"], text("0b5c-uid"));
    assert_eq!(a["k8s.container.name"], text("app"));
    assert_eq!(a["k8s.container.restart_count"], AnyValue::Int(4));
    assert_eq!(a["container.id"], text("c0ffee"));
    assert_eq!(a["k8s.node.name"], text("node-1"));
    assert_eq!(a["process.exit.code"], AnyValue::Int(137));
    assert_eq!(
        a["k8s.container.status.last_terminated_reason"],
        text("OOMKilled")
    );
    assert_eq!(a["k8s.replicaset.name"], text("web-7d9f"));
    assert!(!a.contains_key("k8s.owner.kind"));
    assert_eq!(a["podmortem.finding.kind"], text("OOMKilled"));
    assert_eq!(
        a["podmortem.finding.fingerprint"],
        text(&oom_finding().fingerprint)
    );
    assert_eq!(a["podmortem.finding.severity"], text("critical"));
    assert_eq!(a["podmortem.finding.count"], AnyValue::Int(5));
    assert_eq!(
        a["podmortem.finding.first_seen"],
        text("2023-11-14T22:13:20.000000Z")
    );
    assert_eq!(a["podmortem.finding.resolved"], AnyValue::Boolean(false));
    assert_eq!(a["podmortem.finding.hint"], text("raise the limit"));
    // Every key once.
    assert_eq!(a.len(), r.attributes_iter().count());
}

#[test]
fn evidence_is_a_list_of_maps_with_json_values_converted() {
    let mut r = record();
    fill(&mut r, &oom_finding(), at(1));
    let a = attrs(&r);
    let AnyValue::ListAny(list) = &a["podmortem.evidence"] else {
        panic!("evidence is not a list: {:?}", a["podmortem.evidence"]);
    };
    assert_eq!(list.len(), 2);
    let kmsg = map_of(&list[0]);
    assert_eq!(kmsg[&Key::from("source")], text("kmsg"));
    assert_eq!(kmsg[&Key::from("at")], text("2023-11-14T22:14:59.000000Z"));
    assert_eq!(kmsg[&Key::from("message")], text("oom-kill line"));
    let attributes = map_of(&kmsg[&Key::from("attributes")]);
    assert_eq!(attributes[&Key::from("pid")], AnyValue::Int(42));
    assert_eq!(attributes[&Key::from("comm")], text("sh"));
    let nested = map_of(&attributes[&Key::from("nested")]);
    assert!(!nested.contains_key(&Key::from("b")), "null is left out");
    assert_eq!(
        nested[&Key::from("a")],
        AnyValue::ListAny(Box::new(vec![
            AnyValue::Int(1),
            text("two"),
            text(""),
            AnyValue::Double(2.5)
        ]))
    );
    let cri = map_of(&list[1]);
    assert_eq!(cri[&Key::from("source")], text("cri"));
    assert!(!cri.contains_key(&Key::from("at")), "no time, no key");
}

#[test]
fn evidence_source_names_match_the_json_output() {
    for source in [
        EvidenceSource::Cri,
        EvidenceSource::ContainerdEvent,
        EvidenceSource::Kmsg,
        EvidenceSource::Cgroup,
        EvidenceSource::Procfs,
        EvidenceSource::Log,
        EvidenceSource::Host,
        EvidenceSource::Image,
        EvidenceSource::Tracer,
    ] {
        let f = Finding {
            evidence: vec![Evidence::new(source, None, "x")],
            ..oom_finding()
        };
        let a: HashMap<String, AnyValue> = attributes::attributes(&f)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        let AnyValue::ListAny(list) = &a["podmortem.evidence"] else {
            panic!("no evidence list");
        };
        let json = serde_json::to_value(source).unwrap();
        assert_eq!(
            map_of(&list[0])[&Key::from("source")],
            text(json.as_str().unwrap())
        );
    }
}

#[test]
fn empty_strings_and_unknowns_are_left_out() {
    let mut f = oom_finding();
    f.hint.clear();
    f.owner = None;
    f.evidence = vec![Evidence::new(EvidenceSource::Cri, None, "").with("reason", "")];
    if let Subject::Container {
        container, pod_uid, ..
    } = &mut f.subject
    {
        container.clear();
        pod_uid.clear();
    }
    let a: HashMap<String, AnyValue> = attributes::attributes(&f)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    for absent in [
        "podmortem.finding.hint",
        "k8s.container.name",
        "k8s.pod.uid",
        "process.exit.code",
        "k8s.container.status.last_terminated_reason",
        "k8s.replicaset.name",
        "k8s.owner.kind",
    ] {
        assert!(!a.contains_key(absent), "{absent} in {a:?}");
    }
    assert_eq!(a["k8s.pod.name"], text("web-7d9f-abcde"));
}

#[test]
fn exit_code_from_other_evidence_when_the_runtime_has_none() {
    let mut f = oom_finding();
    f.evidence = vec![Evidence::new(EvidenceSource::ContainerdEvent, None, "TaskExit").with("exit_code", 3)];
    let a = attributes::attributes(&f);
    assert!(a.contains(&(Key::from("process.exit.code"), AnyValue::Int(3))));
    // Not an integer: not an exit code.
    f.evidence = vec![Evidence::new(EvidenceSource::Cri, None, "x").with("exit_code", "3")];
    let a = attributes::attributes(&f);
    assert!(!a.iter().any(|(k, _)| k.as_str() == "process.exit.code"));
}

#[test]
fn owners_map_to_their_own_attribute_or_kind_and_name() {
    for (kind, key) in [
        ("ReplicaSet", "k8s.replicaset.name"),
        ("StatefulSet", "k8s.statefulset.name"),
        ("DaemonSet", "k8s.daemonset.name"),
        ("Job", "k8s.job.name"),
    ] {
        let mut f = oom_finding();
        f.owner = Some(Owner {
            kind: kind.into(),
            name: "owner-x".into(),
        });
        let a = attributes::attributes(&f);
        assert!(a.contains(&(Key::from(key), text("owner-x"))), "{kind}");
    }
    let mut f = oom_finding();
    f.owner = Some(Owner {
        kind: "Node".into(),
        name: "node-1".into(),
    });
    let a = attributes::attributes(&f);
    assert!(a.contains(&(Key::from("k8s.owner.kind"), text("Node"))));
    assert!(a.contains(&(Key::from("k8s.owner.name"), text("node-1"))));
}

#[test]
fn node_findings_name_the_node_only() {
    let mut f = Finding::new(
        FindingKind::NodeOom,
        Severity::Warning,
        Subject::Node {
            node: "node-1".into(),
        },
        at(5),
        &[],
    );
    f.resolved = true;
    let a: HashMap<String, AnyValue> = attributes::attributes(&f)
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    assert_eq!(a["k8s.node.name"], text("node-1"));
    assert!(!a.contains_key("k8s.pod.name"));
    assert!(!a.contains_key("k8s.container.restart_count"));
    assert!(!a.contains_key("podmortem.evidence"), "no evidence, no list");
    assert_eq!(a["podmortem.finding.resolved"], AnyValue::Boolean(true));
    assert_eq!(a["podmortem.finding.severity"], text("warning"));
}

#[test]
fn big_numbers_stay_exact() {
    assert_eq!(
        attributes::json(&serde_json::json!(u64::MAX)),
        Some(text("18446744073709551615"))
    );
    assert_eq!(attributes::json(&serde_json::json!(-3)), Some(AnyValue::Int(-3)));
    assert_eq!(attributes::json(&serde_json::Value::Null), None);
}

fn env_of(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| (*v).to_owned())
}

#[test]
fn the_environment_wins_over_the_file() {
    let mut file = OtlpConfig {
        endpoint: Some("http://from-file:4317".into()),
        protocol: Some(OtlpProtocol::Grpc),
        service_name: Some("file-name".into()),
        ..OtlpConfig::default()
    };
    file.headers.insert("x-kept".into(), "file".into());
    file.headers.insert("x-both".into(), "file".into());
    file.resource_attributes.insert("team".into(), "file".into());
    let env = env_of(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", " http://collector:4318 "),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "x-both=env, authorization=Bearer%20abc%3D%3D",
        ),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=env,deployment.environment=prod%2Feu",
        ),
        ("OTEL_SERVICE_NAME", "podmortem-eu"),
    ]);
    let c = file.with_env(&env).unwrap();
    assert_eq!(c.endpoint.as_deref(), Some("http://collector:4318"));
    assert_eq!(c.protocol, Some(OtlpProtocol::HttpProtobuf));
    assert_eq!(c.timeout, Duration::from_millis(2500));
    assert_eq!(c.service_name.as_deref(), Some("podmortem-eu"));
    let headers: Vec<_> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(
        headers,
        [
            ("authorization", "Bearer abc=="),
            ("x-both", "env"),
            ("x-kept", "file")
        ]
    );
    assert_eq!(c.resource_attributes["team"], "env");
    assert_eq!(c.resource_attributes["deployment.environment"], "prod/eu");
}

#[test]
fn unset_or_empty_variables_leave_the_file_alone() {
    let file = OtlpConfig {
        endpoint: Some("http://from-file:4317".into()),
        ..OtlpConfig::default()
    };
    let c = file
        .clone()
        .with_env(&env_of(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "  "),
        ]))
        .unwrap();
    assert_eq!(c, file);
    assert_eq!(
        OtlpConfig::default().with_env(&|_| None).unwrap(),
        OtlpConfig::default()
    );
}

fn env_error(pairs: &'static [(&'static str, &'static str)]) -> String {
    match OtlpConfig::default().with_env(&env_of(pairs)) {
        Err(e @ OtlpError::Env { .. }) => e.to_string(),
        other => panic!("expected an environment error, got {other:?}"),
    }
}

#[test]
fn bad_variables_are_errors_that_name_them() {
    let e = env_error(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]);
    assert!(
        e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: http/json is not supported"),
        "{e}"
    );
    let e = env_error(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "thrift")]);
    assert!(
        e.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: unknown protocol \"thrift\""),
        "{e}"
    );
    let e = env_error(&[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")]);
    assert!(e.starts_with("OTEL_EXPORTER_OTLP_TIMEOUT: \"10s\""), "{e}");
    let e = env_error(&[("OTEL_RESOURCE_ATTRIBUTES", "a=1,broken")]);
    assert_eq!(
        e,
        "OTEL_RESOURCE_ATTRIBUTES: entry 2 (\"broken\"): expected key=value"
    );
    let e = env_error(&[("OTEL_RESOURCE_ATTRIBUTES", "=x")]);
    assert!(e.contains("the key is empty"), "{e}");
}

#[test]
fn header_errors_never_show_the_value() {
    let e = env_error(&[("OTEL_EXPORTER_OTLP_HEADERS", "authorization=secret%zz")]);
    assert_eq!(e, "OTEL_EXPORTER_OTLP_HEADERS: entry 1: invalid percent-encoding");
    assert!(!e.contains("secret"));
    let e = env_error(&[("OTEL_EXPORTER_OTLP_HEADERS", "api-key-only-secret")]);
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn lists_skip_empty_members_and_decode_values() {
    let list = parse_list("X", " a = 1 ,, b=%E2%9C%93 ,c=", true).unwrap();
    let expected: BTreeMap<String, String> = [("a", "1"), ("b", "✓"), ("c", "")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert_eq!(list, expected);
    assert_eq!(percent_decode("100%25"), Some("100%".into()));
    assert_eq!(percent_decode("%2"), None);
    assert_eq!(percent_decode("%+1"), None);
    assert_eq!(percent_decode("%ff"), None, "not UTF-8");
}

fn resource_map(r: &opentelemetry_sdk::Resource) -> HashMap<String, String> {
    r.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn the_resource_names_the_service_node_and_host() {
    let r = resource_map(&resource::build(
        &OtlpConfig::default(),
        "node-1",
        Some("host-1".into()),
    ));
    assert_eq!(r["service.name"], "podmortem");
    assert_eq!(r["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r["k8s.node.name"], "node-1");
    assert_eq!(r["host.name"], "host-1");
    assert_eq!(r["telemetry.sdk.language"], "rust");
    let r = resource_map(&resource::build(&OtlpConfig::default(), "node-1", None));
    assert_eq!(r["host.name"], "node-1", "the node's name stands for the host's");
}

#[test]
fn configured_attributes_override_and_the_service_name_overrides_them() {
    let mut c = OtlpConfig::default();
    c.resource_attributes
        .insert("service.name".into(), "from-attributes".into());
    c.resource_attributes
        .insert("k8s.cluster.name".into(), "prod".into());
    c.resource_attributes
        .insert("host.name".into(), "custom-host".into());
    let r = resource_map(&resource::build(&c, "node-1", Some("host-1".into())));
    assert_eq!(r["service.name"], "from-attributes");
    assert_eq!(r["k8s.cluster.name"], "prod");
    assert_eq!(r["host.name"], "custom-host");
    c.service_name = Some("named".into());
    let r = resource_map(&resource::build(&c, "node-1", None));
    assert_eq!(r["service.name"], "named");
}

#[test]
fn endpoints_must_be_plain_http_urls() {
    assert!(check_endpoint("http://collector:4317").is_ok());
    for (endpoint, reason) in [
        ("collector:4317", "expected a URL"),
        ("https://collector:4317", "https is not supported"),
        ("grpc://collector:4317", "the scheme must be http://"),
        ("http://", "no host"),
    ] {
        let e = check_endpoint(endpoint).unwrap_err().to_string();
        assert!(e.contains(reason) && e.contains(endpoint), "{endpoint}: {e}");
    }
    assert_eq!(http_url("http://c:4318/", "/v1/logs"), "http://c:4318/v1/logs");
    assert_eq!(
        http_url("http://c:4318/otlp", "/v1/metrics"),
        "http://c:4318/otlp/v1/metrics"
    );
}

#[test]
fn header_names_and_values_are_checked() {
    let mut headers = BTreeMap::new();
    headers.insert("X-Api-Key".to_owned(), "secret".to_owned());
    let map = super::metadata(&headers).unwrap();
    assert_eq!(map.get("x-api-key").map(|v| v.to_str().unwrap()), Some("secret"));
    headers.insert("bad header".to_owned(), "v".to_owned());
    let e = super::metadata(&headers).unwrap_err().to_string();
    assert!(e.contains("\"bad header\"") && !e.contains("secret"), "{e}");
    let mut headers = BTreeMap::new();
    headers.insert("x-token".to_owned(), "line\nbreak".to_owned());
    let e = super::metadata(&headers).unwrap_err().to_string();
    assert!(e.contains("x-token") && !e.contains("line"), "{e}");
}

fn failure(message: &str) -> Verdict {
    classify(&OTelSdkError::InternalFailure(message.to_owned()))
}

#[test]
fn failures_are_classified_per_the_otlp_specification() {
    // As opentelemetry-otlp 0.33 words them.
    for retry in [
        "TonicLogsClient export failed with gRPC code: Unavailable",
        "TonicLogsClient export failed with gRPC code: DeadlineExceeded",
        "TonicLogsClient export failed with gRPC code: Cancelled",
        "TonicLogsClient export failed with gRPC code: Aborted",
        "TonicLogsClient export failed with gRPC code: DataLoss",
        "TonicLogsClient export failed with gRPC code: OutOfRange",
        // Made on this side: the collector never answered.
        "TonicLogsClient export failed with gRPC code: Unavailable: transport error: tcp connect error: Connection refused (os error 111)",
        "TonicLogsClient export failed with gRPC code: Unknown: transport error",
        "HTTP export failed: network error",
        "HTTP export failed with status code: 429",
        "HTTP export failed with status code: 502",
        "HTTP export failed with status code: 503",
        "HTTP export failed with status code: 504",
        // The collector sheds load: the exporter's own retries may have given up on a long
        // RetryInfo delay within its timeout; the batch is kept.
        "TonicLogsClient export failed with gRPC code: ResourceExhausted",
        // Unreadable: kept rather than lost.
        "something new",
    ] {
        assert_eq!(failure(retry), Verdict::Retry, "{retry}");
    }
    for reject in [
        "TonicLogsClient export failed with gRPC code: InvalidArgument",
        "TonicLogsClient export failed with gRPC code: Unauthenticated",
        "TonicLogsClient export failed with gRPC code: PermissionDenied",
        "TonicLogsClient export failed with gRPC code: Unimplemented",
        "TonicLogsClient export failed with gRPC code: Internal",
        "HTTP export failed with status code: 400",
        "HTTP export failed with status code: 401",
        "HTTP export failed with status code: 404",
        "HTTP export failed with status code: 500",
    ] {
        assert_eq!(failure(reject), Verdict::Reject, "{reject}");
    }
    assert_eq!(
        classify(&OTelSdkError::Timeout(Duration::from_secs(1))),
        Verdict::Retry
    );
}
