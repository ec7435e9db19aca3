//! End-to-end: containers that exit abnormally on a real containerd are reported with their pod,
//! container, exit code and attempt.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use podmortem_e2e::agent::{evidence, field, latency_ms};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::TestBed;

const WAIT: Duration = Duration::from_secs(20);

/// Prints how long after the exit the finding arrived (a figure, not an assertion).
fn print_latency(got: &podmortem_e2e::agent::Received) {
    println!(
        "exit-to-finding latency: {:.1} ms ({})",
        latency_ms(got).unwrap_or(f64::NAN),
        field(&got.finding, "/subject/container")
    );
}

/// Listings every second, so that a test sees several while it runs.
const FAST_RESYNC: &str = "cri:\n  resync_interval: 1s\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_code_is_reported_with_pod_container_and_attempt() {
    let (bed, mut agent) = TestBed::start_with_agent(FAST_RESYNC).await.unwrap();

    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "crashy")).await.unwrap();
    let first = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("app", "sleep 0.3; exit 3"))
        .await
        .unwrap();

    let got = agent
        .wait_for("exit 3 of crashy/app", WAIT, |f| {
            field(f, "/subject/container_id") == first
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "ContainerExited");
    assert_eq!(field(f, "/severity"), "warning");
    assert_eq!(field(f, "/subject/node"), "e2e-node");
    assert_eq!(field(f, "/subject/namespace"), "e2e");
    assert_eq!(field(f, "/subject/pod"), "crashy");
    assert_eq!(field(f, "/subject/pod_uid"), pod.spec.uid);
    assert_eq!(field(f, "/subject/container"), "app");
    assert_eq!(f["subject"]["attempt"], 0);
    assert!(field(f, "/summary").contains("exited with code 3"), "{f}");
    let cri = evidence(f, "cri").expect("CRI evidence");
    assert_eq!(cri["attributes"]["exit_code"], 3);
    assert_eq!(cri["attributes"]["reason"], "Error");
    let event = evidence(f, "containerd_event").expect("containerd event evidence");
    assert_eq!(event["attributes"]["exit_status"], 3);
    assert_eq!(f["count"], 1);
    print_latency(&got);

    // kubelet restarts it: attempt 1, same problem, counted as a repeat.
    let second = bed
        .cri
        .run_container(
            &pod,
            &ContainerSpec {
                attempt: 1,
                ..ContainerSpec::shell("app", "exit 3")
            },
        )
        .await
        .unwrap();
    let got = agent
        .wait_for("exit 3 of crashy/app attempt 1", WAIT, |f| {
            field(f, "/subject/container_id") == second
        })
        .await
        .unwrap();
    print_latency(&got);
    assert_eq!(got.finding["subject"]["attempt"], 1);
    assert_eq!(got.finding["count"], 2);
    assert_eq!(got.finding["fingerprint"], f["fingerprint"]);
    assert!(
        field(&got.finding, "/summary").ends_with("restart 1"),
        "{}",
        got.finding
    );

    // Each exit once: the listings taken every second since do not repeat them.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = agent
        .wait_for("nothing more", Duration::from_millis(200), |_| false)
        .await;
    let reports = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/pod") == "crashy")
        .count();
    assert_eq!(reports, 2, "{:?}", agent.seen());
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_are_named() {
    let (bed, mut agent) = TestBed::start_with_agent("").await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "signals")).await.unwrap();

    // Killed from outside, as the OOM killer or an operator would.
    let victim = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("victim", "sleep 3600"))
        .await
        .unwrap();
    let pid = bed.cri.pid(&victim).await.unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL).unwrap();
    let got = agent
        .wait_for("SIGKILL", WAIT, |f| field(f, "/subject/container_id") == victim)
        .await
        .unwrap();
    print_latency(&got);
    let summary = field(&got.finding, "/summary");
    assert!(
        summary.contains("was killed by SIGKILL (exit code 137"),
        "{summary}"
    );
    assert_eq!(
        evidence(&got.finding, "cri").expect("cri")["attributes"]["exit_code"],
        137
    );

    // A process that crashes on a bad memory access.
    let crasher = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("crasher", "kill -SEGV $$"))
        .await
        .unwrap();
    let got = agent
        .wait_for("SIGSEGV", WAIT, |f| field(f, "/subject/container_id") == crasher)
        .await
        .unwrap();
    print_latency(&got);
    let summary = field(&got.finding, "/summary");
    assert!(
        summary.contains("was killed by SIGSEGV (exit code 139, segmentation fault)"),
        "{summary}"
    );
    assert!(
        field(&got.finding, "/hint").contains("bad memory access"),
        "{}",
        got.finding
    );

    // 127: the command is not there (what pods that shell out to host tools see).
    let missing = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("iscsi", "iscsiadm --version"))
        .await
        .unwrap();
    let got = agent
        .wait_for("exit 127", WAIT, |f| field(f, "/subject/container_id") == missing)
        .await
        .unwrap();
    print_latency(&got);
    assert!(
        field(&got.finding, "/summary").contains("exited with code 127 (command not found)"),
        "{}",
        got.finding
    );
    bed.cri.remove_pod(&pod).await.unwrap();
}
