//! End-to-end: the agent's HTTP endpoint. Readiness follows the runtime's connections, and a
//! real Prometheus (Debian's) scrapes `/metrics` and can query what the agent counted.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use podmortem_e2e::agent::field;
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::http::{encode, get};
use podmortem_e2e::{which, TestBed};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

async fn wait_status(address: SocketAddr, path: &str, want: u16) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = get(address, path).await.unwrap();
        if status == want {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} stayed {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_runtime_connection() {
    let mut bed = TestBed::start().await.unwrap();
    let agent = bed.agent(&[]).unwrap();
    let address = agent.http_address(WAIT).await.unwrap();
    assert_eq!(get(address, "/healthz").await.unwrap(), (200, "ok\n".to_owned()));
    let body = wait_status(address, "/readyz", 200).await;
    assert_eq!(body, "containerd_events: connected\ncri: connected\n");

    // containerd goes away: the event stream breaks and the agent is no longer ready, though
    // still alive.
    tokio::task::block_in_place(|| bed.containerd.stop()).unwrap();
    let body = wait_status(address, "/readyz", 503).await;
    assert!(body.contains("containerd_events: not connected"), "{body}");
    assert_eq!(get(address, "/healthz").await.unwrap().0, 200);

    tokio::task::block_in_place(|| bed.containerd.start_again()).unwrap();
    wait_status(address, "/readyz", 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_agents_metrics() {
    let Some(prometheus) = which("prometheus") else {
        panic!("Debian's prometheus is needed (apt-get install prometheus; `make deps` does it)");
    };
    let (bed, mut agent) = TestBed::start_with_agent("").await.unwrap();
    let address = agent.http_address(WAIT).await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("shop", "metrics")).await.unwrap();
    let id = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("app", "exit 3"))
        .await
        .unwrap();
    agent
        .wait_for("the exit", WAIT, |f| field(f, "/subject/container_id") == id)
        .await
        .unwrap();

    let (status, text) = get(address, "/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"podmortem_findings_total{k8s_namespace_name="shop",kind="ContainerExited"} 1"#),
        "{text}"
    );

    // A real Prometheus scrapes the endpoint every second.
    let dir = bed.containerd.dir().join("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let web = listener.local_addr().unwrap();
    drop(listener);
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: podmortem\n    static_configs:\n      - targets: ['{address}']\n"
        ),
    )
    .unwrap();
    let mut server = tokio::process::Command::new(prometheus)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
        .arg(format!("--web.listen-address={web}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    let query = |q: &str| format!("/api/v1/query?query={}", encode(q));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let result = loop {
        if let Ok((200, body)) = get(web, &query(r#"podmortem_findings_total{kind="ContainerExited"}"#)).await
        {
            let v: Value = serde_json::from_str(&body).unwrap();
            if let Some(first) = v["data"]["result"].as_array().and_then(|r| r.first()) {
                break first.clone();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never had the findings metric"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(result["metric"]["k8s_namespace_name"], "shop");
    assert_eq!(result["value"][1], "1");

    // The scrape itself is clean: the target is up and Prometheus reports no error for it.
    let (_, targets) = get(web, "/api/v1/targets").await.unwrap();
    let targets: Value = serde_json::from_str(&targets).unwrap();
    let target = &targets["data"]["activeTargets"][0];
    assert_eq!(target["health"], "up", "{target}");
    assert_eq!(target["lastError"], "", "{target}");
    // The agent's own health figures are there too.
    for q in [
        r#"podmortem_source_events_total{source="cri"}"#,
        r#"podmortem_queue_depth{queue="findings"}"#,
    ] {
        let (_, body) = get(web, &query(q)).await.unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v["data"]["result"].as_array().map(Vec::len),
            Some(1),
            "{q}: {body}"
        );
    }
    server.kill().await.unwrap();
}
