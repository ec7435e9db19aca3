//! End-to-end: real OOM kills on a real containerd, reported from the kernel log, containerd
//! and CRI as one finding each, attributed to their pod and container.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use podmortem_e2e::agent::{evidence, field, Agent, Received};
use podmortem_e2e::cri::{ContainerSpec, Pod, PodSpec, HOG, HOG_LIMIT as LIMIT};
use podmortem_e2e::TestBed;

const WAIT: Duration = Duration::from_secs(30);
fn limited(name: &str, script: &str, attempt: u32) -> ContainerSpec {
    ContainerSpec {
        attempt,
        ..ContainerSpec::limited(name, script)
    }
}

/// Prints how long after the kernel's kill the finding arrived (a figure, not an assertion).
fn print_kill_latency(got: &Received) {
    let killed = evidence(&got.finding, "kmsg")
        .and_then(|e| e.get("at"))
        .and_then(|t| t.as_str())
        .and_then(|t| humantime::parse_rfc3339(t).ok());
    let ms = killed
        .and_then(|k| got.at.duration_since(k).ok())
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "kill-to-finding latency: {ms:.1} ms ({} {})",
        field(&got.finding, "/kind"),
        field(&got.finding, "/subject/container")
    );
}

/// The kernel's report of the kill of container `id`'s shell, in finding `f`: the victim,
/// its RSS at the limit, its memory cgroup; and the summary naming it.
fn assert_kernel_kill(f: &serde_json::Value, id: &str) {
    let kmsg = evidence(f, "kmsg").unwrap_or_else(|| panic!("kernel log evidence: {f}"));
    assert_eq!(kmsg["attributes"]["comm"], "sh");
    assert!(
        kmsg["attributes"]["pid"].as_u64().is_some_and(|p| p > 1),
        "{kmsg}"
    );
    assert_eq!(kmsg["attributes"]["memcg_limit_kib"], LIMIT / 1024);
    let rss = kmsg["attributes"]["rss_bytes"].as_u64().expect("rss");
    assert!(
        rss > (LIMIT as u64) / 2 && rss <= LIMIT as u64 + (4 << 20),
        "rss {rss}"
    );
    assert!(field(kmsg, "/attributes/task_memcg").ends_with(id), "{kmsg}");
    let summary = field(f, "/summary");
    assert!(
        summary.contains("the kernel killed pid") && summary.contains("(sh)"),
        "{summary}"
    );
}

/// Runs attempt `attempt` of the memory hog in `pod`; its id and the finding about it.
async fn oom_kill(bed: &TestBed, agent: &mut Agent, pod: &Pod, attempt: u32) -> (String, Received) {
    let id = bed
        .cri
        .run_container(pod, &limited("app", HOG, attempt))
        .await
        .unwrap();
    let got = agent
        .wait_for("OOMKilled", WAIT, |f| field(f, "/subject/container_id") == id)
        .await
        .unwrap();
    print_kill_latency(&got);
    (id, got)
}

fn findings_about<'a>(seen: &'a [Received], pod: &Pod) -> Vec<&'a Received> {
    seen.iter()
        .filter(|r| field(&r.finding, "/subject/pod_uid") == pod.spec.uid)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_kills_are_one_finding_each_with_the_victim_and_a_crash_loop_counts_up() {
    let (bed, mut agent) = TestBed::start_with_agent("cri:\n  resync_interval: 1s\n")
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "hungry")).await.unwrap();
    // Prints what a kernel OOM report looks like; only the kernel log may count.
    let liar = bed
        .cri
        .run_container(
            &pod,
            &ContainerSpec::shell(
                "liar",
                "echo 'Memory cgroup out of memory: Killed process 1 (sh) total-vm:1kB, anon-rss:1kB, file-rss:0kB, shmem-rss:0kB'; sleep 3600",
            ),
        )
        .await
        .unwrap();

    let mut fingerprint = None;
    for attempt in 0..3u32 {
        let (id, got) = oom_kill(&bed, &mut agent, &pod, attempt).await;
        let f = &got.finding;
        assert_eq!(field(f, "/kind"), "OOMKilled", "{f}");
        assert_eq!(field(f, "/subject/namespace"), "e2e");
        assert_eq!(field(f, "/subject/pod"), "hungry");
        assert_eq!(field(f, "/subject/container"), "app");
        assert_eq!(f["subject"]["attempt"], attempt);
        assert_eq!(f["count"], u64::from(attempt) + 1, "{f}");
        if let Some(fp) = &fingerprint {
            assert_eq!(&f["fingerprint"], fp);
        }
        fingerprint = Some(f["fingerprint"].clone());
        // One finding merging every source.
        assert_kernel_kill(f, &id);
        let exit = evidence(f, "containerd_event").expect("containerd evidence");
        assert!(
            exit["message"].as_str().unwrap().starts_with("TaskOOM")
                || exit["message"].as_str().unwrap().starts_with("TaskExit")
        );
        let cri = evidence(f, "cri").expect("cri evidence");
        assert_eq!(cri["attributes"]["reason"], "OOMKilled");
        assert_eq!(cri["attributes"]["exit_code"], 137);
        // The container lived about 100 ms: its cgroup was read when it started.
        let cgroup = evidence(f, "cgroup").unwrap_or_else(|| panic!("memory cgroup evidence: {f}"));
        assert!(field(cgroup, "/attributes/cgroup").ends_with(&id), "{cgroup}");
        let summary = field(f, "/summary");
        assert!(summary.contains("the container's memory limit"), "{summary}");
        // The exit itself is not reported a second time.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let about: Vec<_> = agent
            .seen()
            .iter()
            .filter(|r| field(&r.finding, "/subject/container_id") == id)
            .map(|r| field(&r.finding, "/kind").to_owned())
            .collect();
        assert_eq!(about, ["OOMKilled"], "{:?}", agent.seen());
    }
    let lies = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/container_id") == liar)
        .count();
    assert_eq!(lies, 0, "a container's own output is not the kernel log");
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

/// The kernel log read through syslog(2), as a non-privileged pod must: the kill still lands
/// in the OOMKilled finding with the victim's details, though it is read up to a poll later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_syslog_reader_gives_the_same_kill_evidence() {
    let (bed, mut agent) =
        TestBed::start_with_agent("cri:\n  resync_interval: 1s\nkmsg:\n  reader: syslog\n")
            .await
            .unwrap();
    agent
        .wait_for_log("reading the kernel log through syslog(2)", WAIT)
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "polled")).await.unwrap();
    for attempt in 0..2u32 {
        let (id, got) = oom_kill(&bed, &mut agent, &pod, attempt).await;
        let f = &got.finding;
        assert_eq!(field(f, "/kind"), "OOMKilled", "{f}");
        assert_kernel_kill(f, &id);
    }
    let log = agent.stderr();
    assert!(!log.contains("cannot read the kernel log"), "{log}");
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_killed_while_the_main_process_lives_is_reported_and_a_restart_does_not_replay_it() {
    let (bed, mut agent) = TestBed::start_with_agent("").await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "workers")).await.unwrap();
    let id = bed
        .cri
        .run_container(&pod, &limited("web", &format!("sh -c '{HOG}'; sleep 3600"), 0))
        .await
        .unwrap();
    let got = agent
        .wait_for("OOMKilledChild", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    print_kill_latency(&got);
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "OOMKilledChild", "{f}");
    assert_eq!(field(f, "/subject/pod"), "workers");
    let kmsg = evidence(f, "kmsg").expect("kernel log evidence");
    let main_pid = bed.cri.pid(&id).await.unwrap();
    assert_ne!(
        kmsg["attributes"]["pid"], main_pid,
        "the victim is not the main process"
    );
    assert!(field(f, "/summary").contains("kept running"), "{f}");
    // The container is still running, as CRI says.
    let status = bed.cri.status(&id).await.unwrap();
    assert_eq!(status.state, 1, "CONTAINER_RUNNING");

    // A restart resumes after the kill in the kernel log: it is not reported again.
    let status = agent.stop().await.unwrap();
    assert!(status.success(), "{status}");
    let mut again = bed.agent(&[]).unwrap();
    again
        .wait_for_log("subscribed to containerd events", Duration::from_secs(20))
        .await
        .unwrap();
    again
        .wait_for_log("reading the kernel log", Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let _ = again
        .wait_for("nothing", Duration::from_millis(100), |_| false)
        .await;
    let replayed = findings_about(again.seen(), &pod);
    assert!(replayed.is_empty(), "replayed: {replayed:?}");
    assert!(again.stderr().contains("from=After("), "{}", again.stderr());
    bed.cri.remove_pod(&pod).await.unwrap();
    let status = again.stop().await.unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_close_to_its_limit_is_warned_about_and_cleared() {
    let config = "memory:\n  interval: 500ms\noom_risk:\n  sustained: 1s\n";
    let (bed, mut agent) = TestBed::start_with_agent(config).await.unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "tight")).await.unwrap();
    // 30 MiB in tmpfs is charged to the container's memory cgroup until it is removed.
    let id = bed
        .cri
        .run_container(
            &pod,
            &limited(
                "cache",
                "dd if=/dev/zero of=/dev/shm/fill bs=1M count=30 2>/dev/null; sleep 5; rm /dev/shm/fill; sleep 3600",
                0,
            ),
        )
        .await
        .unwrap();
    let got = agent
        .wait_for("OOMRisk", WAIT, |f| {
            field(f, "/subject/container_id") == id && f.get("resolved").is_none()
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "OOMRisk", "{f}");
    assert!(field(f, "/summary").contains("of its 32 MiB limit"), "{f}");
    let cgroup = evidence(f, "cgroup").expect("cgroup evidence");
    assert!(field(cgroup, "/attributes/cgroup").ends_with(&id), "{cgroup}");
    let got = agent
        .wait_for("OOMRisk resolved", WAIT, |f| {
            field(f, "/subject/container_id") == id && f["resolved"] == true
        })
        .await
        .unwrap();
    assert_eq!(field(&got.finding, "/severity"), "info");
    assert_eq!(got.finding["count"], 1, "the end is not another occurrence");
    let warnings = findings_about(agent.seen(), &pod)
        .iter()
        .filter(|r| r.finding.get("resolved").is_none())
        .count();
    assert_eq!(warnings, 1, "de-duplicated while it held");
    bed.cri.remove_pod(&pod).await.unwrap();
}
