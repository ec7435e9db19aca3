//! End-to-end: writes to read-only filesystems on a real containerd, caught by the kernel
//! tracer (the failing syscall) and, with the tracer off, by the exited attempt's log; and a
//! host filesystem made read-only for real (a loop device), reported and then cleared.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use podmortem_e2e::agent::{evidence, field, latency_ms, mount_evidence, Agent};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::loopfs::LoopFs;
use podmortem_e2e::TestBed;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

const WITH_TRACER: &str = "cri:\n  resync_interval: 1s\n";
const WITHOUT_TRACER: &str = "cri:\n  resync_interval: 1s\nerofs:\n  tracer: false\n";

fn config(tracer: bool) -> &'static str {
    if tracer {
        WITH_TRACER
    } else {
        WITHOUT_TRACER
    }
}

/// Starts a test bed and an agent; with the tracer, waits until it is attached.
async fn start(tracer: bool) -> (TestBed, Agent) {
    let (bed, agent) = TestBed::start_with_agent(config(tracer)).await.unwrap();
    let ready = if tracer {
        "read-only write tracer attached"
    } else {
        "read-only write tracer disabled"
    };
    agent.wait_for_log(ready, WAIT).await.unwrap();
    (bed, agent)
}

fn is_write_of(f: &Value, container_id: &str, path: &str) -> bool {
    field(f, "/kind") == "ReadOnlyFilesystemWrite"
        && field(f, "/subject/container_id") == container_id
        && f["evidence"]
            .as_array()
            .is_some_and(|ev| ev.iter().any(|e| e["attributes"]["path"] == path))
}

/// Checks what the finding says about how it was detected.
fn assert_detected_by(f: &Value, tracer: bool, syscalls: &[&str]) {
    if tracer {
        let t = evidence(f, "tracer").unwrap_or_else(|| panic!("tracer evidence: {f}"));
        assert_eq!(t["attributes"]["detected_by"], "tracer", "{f}");
        let syscall = t["attributes"]["syscall"].as_str().unwrap_or_default();
        assert!(
            syscalls.contains(&syscall),
            "syscall {syscall} not in {syscalls:?}: {f}"
        );
        assert!(t["attributes"]["pid"].as_u64().unwrap_or(0) > 0, "{f}");
    } else {
        assert!(
            evidence(f, "tracer").is_none(),
            "no tracer evidence without the tracer: {f}"
        );
        let log = evidence(f, "log").unwrap_or_else(|| panic!("log evidence: {f}"));
        assert_eq!(log["attributes"]["detected_by"], "log", "{f}");
        assert!(field(log, "/message").contains("Read-only file system"), "{f}");
    }
}

/// The cause named in the mount evidence.
fn cause(f: &Value) -> String {
    mount_evidence(f)
        .and_then(|e| e["attributes"]["cause"].as_str())
        .unwrap_or_default()
        .to_owned()
}

fn print_latency(what: &str, got: &podmortem_e2e::agent::Received) {
    // For the tracer, the finding's time is the syscall's return.
    println!(
        "{what}: syscall-to-finding latency {:.1} ms",
        latency_ms(got).unwrap_or(f64::NAN)
    );
}

async fn read_only_rootfs(tracer: bool) {
    let (bed, mut agent) = start(tracer).await;
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "rofs")).await.unwrap();
    let spec = ContainerSpec {
        readonly_rootfs: true,
        ..ContainerSpec::shell("app", "echo hello > /data.txt; exit 1")
    };
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let got = agent
        .wait_for("the write to /data.txt", WAIT, |f| {
            is_write_of(f, &id, "/data.txt")
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_detected_by(f, tracer, &["open", "openat", "creat"]);
    assert_eq!(cause(f), "read_only_rootfs", "{f}");
    assert_eq!(field(f, "/subject/pod"), "rofs");
    assert_eq!(field(f, "/subject/container"), "app");
    assert!(
        field(f, "/summary").contains("root filesystem is read-only"),
        "{f}"
    );
    assert!(field(f, "/hint").contains("readOnlyRootFilesystem"), "{f}");
    if tracer {
        print_latency("read-only rootfs", &got);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_rootfs_write_is_caught_by_the_tracer() {
    read_only_rootfs(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_rootfs_write_is_caught_from_the_log_without_the_tracer() {
    read_only_rootfs(false).await;
}

/// A directory on the host bind-mounted read-only into the container at /config, and a
/// writable one at /work.
fn volume_dirs(bed: &TestBed) -> (PathBuf, PathBuf) {
    let ro = bed.containerd.dir().join("config-volume");
    let rw = bed.containerd.dir().join("work-volume");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("app.conf"), "x=1\n").unwrap();
    (ro, rw)
}

async fn read_only_volume(tracer: bool, script: &str, path: &str, syscalls: &[&str]) {
    let (bed, mut agent) = start(tracer).await;
    let (ro, rw) = volume_dirs(&bed);
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "rovol")).await.unwrap();
    let spec = ContainerSpec {
        mounts: vec![(ro.clone(), "/config".into(), true), (rw, "/work".into(), false)],
        ..ContainerSpec::shell("app", script)
    };
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let got = agent
        .wait_for(&format!("the write to {path}"), WAIT, |f| {
            is_write_of(f, &id, path)
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_detected_by(f, tracer, syscalls);
    assert_eq!(cause(f), "read_only_volume", "{f}");
    assert!(field(f, "/summary").contains("/config"), "{f}");
    let mount = mount_evidence(f).unwrap();
    assert_eq!(
        mount["attributes"]["host_path"],
        ro.to_string_lossy().as_ref(),
        "{f}"
    );
    assert!(field(f, "/hint").contains("readOnly: false"), "{f}");
    // The write that succeeded, to /work, is not a finding.
    bed.cri.wait_exited(&id, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = agent
        .wait_for("nothing more", Duration::from_millis(500), |_| false)
        .await;
    for r in agent.seen() {
        assert!(
            !r.finding.to_string().contains("/work/ok.txt"),
            "a successful write was reported: {}",
            r.finding
        );
    }
    if tracer {
        print_latency("read-only volume", &got);
    }
}

const WRITE_SCRIPT: &str = "echo ok > /work/ok.txt && echo x > /config/app.conf; exit 1";
const MKDIR_SCRIPT: &str = "echo ok > /work/ok.txt && mkdir /config/cache; exit 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_volume_write_is_caught_by_the_tracer_and_a_successful_write_is_not() {
    read_only_volume(
        true,
        WRITE_SCRIPT,
        "/config/app.conf",
        &["open", "openat", "creat"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_volume_write_is_caught_from_the_log_without_the_tracer() {
    read_only_volume(false, WRITE_SCRIPT, "/config/app.conf", &[]).await;
}

/// A relative path is resolved against the process's working directory (read while it lives):
/// the cause is the volume, not a guess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_path_is_resolved_from_the_working_directory_by_the_tracer() {
    let script = "echo ok > /work/ok.txt && cd /config && echo x > rel.txt; sleep 1; exit 1";
    read_only_volume(true, script, "rel.txt", &["open", "openat", "creat"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_on_a_read_only_volume_is_caught_by_the_tracer() {
    read_only_volume(true, MKDIR_SCRIPT, "/config/cache", &["mkdir", "mkdirat"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mkdir_on_a_read_only_volume_is_caught_from_the_log_without_the_tracer() {
    read_only_volume(false, MKDIR_SCRIPT, "/config/cache", &[]).await;
}

/// A container failing the same write in a loop is one finding whose count grows; the agent
/// keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_in_a_loop_is_one_counted_finding() {
    let yaml = "cri:\n  resync_interval: 1s\nerofs:\n  repeat_interval: 2s\n";
    let (bed, mut agent) = TestBed::start_with_agent(yaml).await.unwrap();
    agent
        .wait_for_log("read-only write tracer attached", WAIT)
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "flood")).await.unwrap();
    let spec = ContainerSpec {
        readonly_rootfs: true,
        // About 2000 failed creates, then a pause so the counts arrive before the exit.
        ..ContainerSpec::shell(
            "looper",
            "i=0; while [ $i -lt 2000 ]; do echo x 2>/dev/null > /spin.txt; i=$((i+1)); done; sleep 4",
        )
    };
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let first = agent
        .wait_for("the first failed write", WAIT, |f| {
            is_write_of(f, &id, "/spin.txt")
        })
        .await
        .unwrap();
    let fingerprint = field(&first.finding, "/fingerprint").to_owned();
    let later = agent
        .wait_for("the counted repeats", WAIT, |f| {
            field(f, "/fingerprint") == fingerprint && f["count"].as_u64().unwrap_or(0) >= 2000
        })
        .await
        .unwrap();
    let reports = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/fingerprint") == fingerprint)
        .count();
    assert!(
        reports <= 6,
        "2000 failures in a few seconds are a handful of reports, not {reports}"
    );
    assert_eq!(later.finding["count"].as_u64(), Some(2000), "{}", later.finding);
}

fn host_fs_config(dir: &Path) -> String {
    format!(
        "host_fs:\n  interval: 300ms\n  paths: [{}]\n",
        dir.to_string_lossy()
    )
}

fn is_host_ro(f: &Value, dir: &Path) -> bool {
    field(f, "/kind") == "HostFilesystemReadOnly"
        && field(f, "/summary").contains(dir.to_string_lossy().as_ref())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_filesystem_remounted_read_only_is_reported_then_cleared() {
    let bed = TestBed::start().await.unwrap();
    let fs = LoopFs::new(bed.containerd.dir(), "node-fs").unwrap();
    let mut agent = bed.agent_with_config(&host_fs_config(&fs.dir)).unwrap();
    agent
        .wait_for_log("subscribed to containerd events", WAIT)
        .await
        .unwrap();
    // Writable: nothing to say.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !agent.seen().iter().any(|r| is_host_ro(&r.finding, &fs.dir)),
        "a writable filesystem was reported"
    );
    fs.remount("ro").unwrap();
    let raised = agent
        .wait_for("the read-only filesystem", WAIT, |f| {
            is_host_ro(f, &fs.dir) && f["resolved"].as_bool() != Some(true)
        })
        .await
        .unwrap();
    let f = &raised.finding;
    assert_eq!(field(f, "/severity"), "critical");
    assert_eq!(field(f, "/subject/scope"), "node");
    assert!(field(f, "/summary").contains(&fs.device().unwrap()), "{f}");
    let host = evidence(f, "host").unwrap();
    assert!(host["attributes"]["mount_options"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .any(|o| o == "ro"));
    fs.remount("rw").unwrap();
    let cleared = agent
        .wait_for("the filesystem writable again", WAIT, |f| {
            is_host_ro(f, &fs.dir) && f["resolved"].as_bool() == Some(true)
        })
        .await
        .unwrap();
    assert_eq!(field(&cleared.finding, "/fingerprint"), field(f, "/fingerprint"));
    assert!(field(&cleared.finding, "/summary").contains("writable again"));
}

/// A real ext4 error: the kernel logs it and marks the filesystem read-only (`emergency_ro`,
/// while the per-mount options still say `rw`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_filesystem_failing_with_a_kernel_error_is_reported_with_the_kernel_lines() {
    let bed = TestBed::start().await.unwrap();
    let mut fs = LoopFs::new(bed.containerd.dir(), "node-fs").unwrap();
    let name = fs.device().unwrap().trim_start_matches("/dev/").to_owned();
    // Only the kernel's error makes this filesystem interesting: it is not a watched path.
    let mut agent = bed.agent_with_config("host_fs:\n  interval: 1s\n").unwrap();
    agent.wait_for_log("reading the kernel log", WAIT).await.unwrap();
    fs.trigger_error("podmortem e2e").unwrap();
    let got = agent
        .wait_for("the filesystem the kernel made read-only", WAIT, |f| {
            is_host_ro(f, &fs.dir) && f["resolved"].as_bool() != Some(true)
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert!(
        field(f, "/summary").contains("emergency_ro") || field(f, "/summary").contains("after an error"),
        "{f}"
    );
    let kmsg: Vec<&Value> = f["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "kmsg")
        .collect();
    assert!(
        kmsg.iter()
            .any(|e| field(e, "/message").contains(&format!("EXT4-fs error (device {name})"))),
        "{f}"
    );
    let host = evidence(f, "host").unwrap();
    assert!(
        host["attributes"]["super_options"]
            .as_str()
            .unwrap_or_default()
            .contains("emergency_ro"),
        "{f}"
    );
    fs.unmount().unwrap();
    let cleared = agent
        .wait_for("the filesystem unmounted", Duration::from_secs(60), |f| {
            is_host_ro(f, &fs.dir) && f["resolved"].as_bool() == Some(true)
        })
        .await
        .unwrap();
    assert!(field(&cleared.finding, "/summary").contains("no longer mounted"));
}

/// Without the privileges BPF needs, the agent says so once, clearly, and still reports the
/// read-only write from the container's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_bpf_privileges_the_agent_says_why_once_and_falls_back_to_logs() {
    let bed = TestBed::start().await.unwrap();
    let config = bed.containerd.dir().join("agent-config.yaml");
    std::fs::write(&config, WITH_TRACER).unwrap();
    // Root without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN: the kernel refuses to load programs.
    let mut agent = Agent::start_wrapped(
        &[
            "setpriv",
            "--bounding-set",
            "-bpf,-perfmon,-sys_admin",
            "--inh-caps",
            "-bpf,-perfmon,-sys_admin",
        ],
        &bed.containerd.socket(),
        &bed.containerd.dir().join("agent-state"),
        &["--config", config.to_str().unwrap()],
    )
    .unwrap();
    agent
        .wait_for_log("the read-only write tracer cannot run on this node", WAIT)
        .await
        .unwrap();
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "nobpf")).await.unwrap();
    let spec = ContainerSpec {
        readonly_rootfs: true,
        ..ContainerSpec::shell("app", "echo hello > /data.txt; exit 1")
    };
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let got = agent
        .wait_for("the write to /data.txt, from the log", WAIT, |f| {
            is_write_of(f, &id, "/data.txt")
        })
        .await
        .unwrap();
    assert_detected_by(&got.finding, false, &[]);
    let stderr = agent.stderr();
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("the read-only write tracer cannot run"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert!(said[0].contains("CAP_BPF"), "says what is missing: {}", said[0]);
    assert!(!stderr.contains("read-only write tracer attached"), "{stderr}");
}
