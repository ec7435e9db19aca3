//! End-to-end: OOM storms on a real containerd. The kernel prints the part of an OOM report
//! that names the memory cgroup at most 10 times per 5 s node-wide, and `Killed process N` for
//! every kill: every kill must still be attributed to its container and counted exactly, as
//! the cgroups' own `oom_kill` counters count them.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use podmortem_e2e::agent::{field, Agent};
use podmortem_e2e::cri::{Pod, PodSpec};
use podmortem_e2e::storm::{self, node_scope_kills, placed_by, storm};
use podmortem_e2e::TestBed;

/// The kernel log is the node's: a storm of one test would be another's unknown kills, so the
/// tests of this file take turns.
static ONE_STORM_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Child kills per container: with three containers, well past the kernel's 10 headers per 5 s.
const KILLS: u32 = 40;
const WAIT: Duration = Duration::from_secs(60);

/// The kernel's count of OOM kills in container `id` of `pod`, which must still have its cgroup.
fn kernel_kills(pod: &Pod, id: &str) -> u64 {
    storm::kernel_kills(pod, id).unwrap_or_else(|| panic!("no oom_kill counter for container {id}"))
}

/// Waits until the kernel has counted `kills` OOM kills in each container.
async fn wait_for_kernel_kills(pod: &Pod, ids: &[String], kills: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let counts: Vec<u64> = ids.iter().map(|id| kernel_kills(pod, id)).collect();
        if counts.iter().all(|&c| c >= kills) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kernel counted {counts:?} kills, expected {kills} each"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What the agent said about the containers whose counts differ from the kernel's.
fn mismatches(agent: &Agent, got: &HashMap<String, u64>, expected: &HashMap<String, u64>) -> Vec<String> {
    agent
        .seen()
        .iter()
        .filter(|r| {
            let id = field(&r.finding, "/subject/container_id");
            got.get(id) != expected.get(id)
        })
        .map(|r| {
            format!(
                "{} count {}: {}",
                field(&r.finding, "/kind"),
                r.finding["count"],
                field(&r.finding, "/summary")
            )
        })
        .collect()
}

/// Waits for the agent to settle, prints what it reported against the kernel's counts of
/// `ids` (in that order) as `what`, and asserts they are equal with no kill about the node.
async fn assert_counted_exactly(
    what: &str,
    agent: &mut Agent,
    ids: &[String],
    expected: &HashMap<String, u64>,
) {
    let got = storm::settle(agent, expected).await;
    let unattributed = node_scope_kills(agent);
    let in_order = |counts: &HashMap<String, u64>| -> Vec<u64> {
        ids.iter()
            .map(|id| counts.get(id).copied().unwrap_or(0))
            .collect()
    };
    println!(
        "{what}: kernel {:?}, podmortem {:?}, node-scope {}, findings {}, placed by {:?}",
        in_order(expected),
        in_order(&got),
        unattributed.len(),
        agent.seen().len(),
        placed_by(agent)
    );
    assert!(unattributed.is_empty(), "{unattributed:#?}");
    assert_eq!(
        &got,
        expected,
        "kills per container: podmortem vs the kernel; {:#?}",
        mismatches(agent, &got, expected)
    );
}

/// Three containers storm under `config`; every kill is counted in its container.
async fn storm_is_counted_exactly(config: &str) {
    let _turn = ONE_STORM_AT_A_TIME.lock().await;
    let (bed, mut agent) = TestBed::start_with_agent(config).await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "storm")).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(bed.cri.run_container(&pod, &storm(name, KILLS)).await.unwrap());
    }
    wait_for_kernel_kills(&pod, &ids, u64::from(KILLS)).await;
    let expected: HashMap<String, u64> = ids
        .iter()
        .map(|id| (id.clone(), kernel_kills(&pod, id)))
        .collect();
    assert_counted_exactly("storm", &mut agent, &ids, &expected).await;
    let unread: Vec<&str> = agent
        .seen()
        .iter()
        .map(|r| field(&r.finding, "/summary"))
        .filter(|s| s.contains("the kernel log was not read") || s.contains("did not report"))
        .collect();
    assert!(unread.is_empty(), "the kernel log was read: {unread:#?}");
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kill_of_a_storm_is_attributed_and_counted_as_the_kernel_counts() {
    storm_is_counted_exactly("").await;
}

/// As a DaemonSet pod reads the kernel log: polled through syslog(2), so the victims are gone
/// when their kills are read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_read_through_syslog_is_counted_as_exactly() {
    storm_is_counted_exactly("kmsg:\n  reader: syslog\n").await;
}

/// Reads the kernel's kill counts of `ids` every millisecond until their cgroups are gone
/// (the pod was removed); the last counts read. A thread of its own: sleeping blocks no runtime.
#[allow(clippy::disallowed_methods)]
fn watch_counters_until_gone(pod: Pod, ids: Vec<String>) -> std::thread::JoinHandle<HashMap<String, u64>> {
    std::thread::spawn(move || {
        let mut last = HashMap::new();
        let deadline = std::time::Instant::now() + WAIT;
        while std::time::Instant::now() < deadline {
            let mut alive = 0;
            for id in &ids {
                if let Some(n) = storm::kernel_kills(&pod, id) {
                    last.insert(id.clone(), n);
                    alive += 1;
                }
            }
            if alive == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        last
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_during_pod_removal_keeps_every_kill_in_its_container() {
    let _turn = ONE_STORM_AT_A_TIME.lock().await;
    let (bed, mut agent) = TestBed::start_with_agent("").await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "leaving")).await.unwrap();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(bed.cri.run_container(&pod, &storm(name, 1000)).await.unwrap());
    }
    // Removed in the middle of the storm: kills are still coming as the containers go.
    wait_for_kernel_kills(&pod, &ids, 10).await;
    let watcher = watch_counters_until_gone(pod.clone(), ids.clone());
    bed.cri.remove_pod(&pod).await.unwrap();
    let expected = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap();
    assert_eq!(expected.len(), ids.len(), "{expected:?}");
    assert_counted_exactly("storm during removal", &mut agent, &ids, &expected).await;
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

/// CRI marks a container `OOMKilled` once any of its processes was OOM-killed; the SIGKILL of
/// a later StopPodSandbox is a stop, not an OOM kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_a_pod_that_had_oom_kills_earlier_is_not_an_oom_kill() {
    let _turn = ONE_STORM_AT_A_TIME.lock().await;
    let (bed, mut agent) = TestBed::start_with_agent("cri:\n  resync_interval: 1s\n")
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "stopped")).await.unwrap();
    let id = bed.cri.run_container(&pod, &storm("web", 2)).await.unwrap();
    wait_for_kernel_kills(&pod, std::slice::from_ref(&id), 2).await;
    let child = agent
        .wait_for("OOMKilledChild", WAIT, |f| {
            field(f, "/subject/container_id") == id && field(f, "/kind") == "OOMKilledChild"
        })
        .await
        .unwrap();
    assert!(
        field(&child.finding, "/summary").contains("kept running"),
        "{}",
        child.finding
    );
    // Well after the kills, the pod is stopped: its main process is SIGKILLed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    bed.cri.stop_pod(&pod).await.unwrap();
    let status = bed.cri.wait_exited(&id, WAIT).await.unwrap();
    assert_eq!(status.exit_code, 137);
    assert_eq!(
        status.reason, "OOMKilled",
        "what CRI says, and why the agent must not repeat it"
    );
    let exit = agent
        .wait_for("the stop's exit", WAIT, |f| {
            field(f, "/subject/container_id") == id
                && matches!(field(f, "/kind"), "ContainerExited" | "OOMKilled")
        })
        .await
        .unwrap();
    let f = &exit.finding;
    assert_eq!(field(f, "/kind"), "ContainerExited", "{f}");
    assert!(field(f, "/summary").contains("killed by SIGKILL"), "{f}");
    let why = f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| field(e, "/message").starts_with("not an OOM kill"))
        .unwrap_or_else(|| panic!("why it is not an OOM kill: {f}"));
    assert_eq!(why["attributes"]["cri_reason"], "OOMKilled");
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}
