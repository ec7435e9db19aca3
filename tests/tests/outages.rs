//! End-to-end: the agent survives containerd going away and still reports what happened while
//! it was gone.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::Duration;

use podmortem_e2e::agent::{evidence, field};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::TestBed;

const WAIT: Duration = Duration::from_secs(30);

async fn wait_gone(pid: i32) {
    let proc_dir = format!("/proc/{pid}");
    for _ in 0..200 {
        if !Path::new(&proc_dir).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("process {pid} still running after 10s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_while_containerd_is_down_is_reported_after_reconnect() {
    // No periodic listing during the test: only reconnecting can bring the exit to light.
    let (mut bed, mut agent) = TestBed::start_with_agent("cri:\n  resync_interval: 1h\n")
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "gap")).await.unwrap();
    let id = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("app", "sleep 2; exit 7"))
        .await
        .unwrap();
    let pid = bed.cri.pid(&id).await.unwrap();

    tokio::task::block_in_place(|| bed.containerd.stop()).unwrap();
    wait_gone(pid).await;
    // The agent cannot know yet: containerd, which holds the exit, is down.
    assert!(
        agent
            .wait_for("nothing yet", Duration::from_millis(500), |f| field(
                f,
                "/subject/container_id"
            ) == id)
            .await
            .is_err(),
        "reported while containerd was down?"
    );
    tokio::task::block_in_place(|| bed.containerd.start_again()).unwrap();

    let got = agent
        .wait_for("the exit during the gap", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    assert_eq!(field(&got.finding, "/subject/pod"), "gap");
    assert!(
        field(&got.finding, "/summary").contains("exited with code 7"),
        "{}",
        got.finding
    );
    assert_eq!(
        evidence(&got.finding, "cri").expect("cri evidence")["attributes"]["exit_code"],
        7
    );
    let log = agent.stderr();
    assert!(
        log.contains("containerd event stream unavailable") || log.contains("closed the event stream"),
        "{log}"
    );
    assert!(
        log.matches("subscribed to containerd events").count() >= 2,
        "{log}"
    );
    bed.cri.remove_pod(&pod).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_waits_for_an_absent_containerd() {
    let mut bed = TestBed::start().await.unwrap();
    tokio::task::block_in_place(|| bed.containerd.stop()).unwrap();
    let socket = bed.containerd.socket();
    let mut agent = bed.agent(&[]).unwrap();
    // A clear message naming the socket, and no crash.
    agent.wait_for_log("retrying", WAIT).await.unwrap();
    let log = agent.stderr();
    assert!(log.contains(&socket.display().to_string()), "{log}");
    assert!(log.contains("cannot connect"), "{log}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(agent.pid().is_some());

    tokio::task::block_in_place(|| bed.containerd.start_again()).unwrap();
    agent
        .wait_for_log("connected to the CRI runtime", WAIT)
        .await
        .unwrap();
    agent
        .wait_for_log("subscribed to containerd events", WAIT)
        .await
        .unwrap();
    // Reconnected, it works as usual.
    let cri = podmortem_e2e::cri::Cri::connect(&socket, &bed.containerd.dir().join("pods"))
        .await
        .unwrap();
    bed.cri = cri;
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "late")).await.unwrap();
    let id = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("app", "exit 5"))
        .await
        .unwrap();
    let got = agent
        .wait_for("exit 5", WAIT, |f| field(f, "/subject/container_id") == id)
        .await
        .unwrap();
    assert!(
        field(&got.finding, "/summary").contains("exited with code 5"),
        "{}",
        got.finding
    );
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_reports_exits_it_missed_and_no_older_ones() {
    let config = "cri:\n  resync_interval: 1s\n";
    let (bed, mut agent) = TestBed::start_with_agent(config).await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "restarts")).await.unwrap();
    let before = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("before", "exit 4"))
        .await
        .unwrap();
    agent
        .wait_for("exit 4", WAIT, |f| field(f, "/subject/container_id") == before)
        .await
        .unwrap();
    // Let listings taken well after that exit record the agent's progress.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");

    let during = bed
        .cri
        .run_container(&pod, &ContainerSpec::shell("during", "exit 6"))
        .await
        .unwrap();
    bed.cri.wait_exited(&during, WAIT).await.unwrap();

    let mut agent = bed.agent_with_config(config).unwrap();
    let got = agent
        .wait_for("the exit while the agent was down", WAIT, |f| {
            field(f, "/subject/container_id") == during
        })
        .await
        .unwrap();
    assert!(
        field(&got.finding, "/summary").contains("exited with code 6"),
        "{}",
        got.finding
    );
    assert!(agent.stderr().contains("resumed=true"), "{}", agent.stderr());
    // Several listings later, the exit reported by the first agent has not come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = agent
        .wait_for("nothing more", Duration::from_millis(100), |_| false)
        .await;
    let old = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/container_id") == before)
        .count();
    assert_eq!(old, 0, "{:?}", agent.seen());
    bed.cri.remove_pod(&pod).await.unwrap();
}
