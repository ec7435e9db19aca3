//! End-to-end: the DaemonSet in a box. The runtime image `make image` built runs as a pod on the
//! test bed's containerd with exactly the pod template of `deploy/` (its mounts, capabilities,
//! read-only root, seccomp, resources and environment, translated into CRI calls as kubelet
//! makes them), and from inside its container explains an OOM kill in another pod. This is what
//! proves the manifest's mounts and capabilities are enough.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use podmortem_e2e::agent::{evidence, field, mount_evidence};
use podmortem_e2e::cri::{ContainerSpec, PodSpec, HOG_LIMIT as LIMIT};
use podmortem_e2e::daemonset::{self, NodeLayout};
use podmortem_e2e::otlp_receiver::OtlpReceiver;
use podmortem_e2e::TestBed;

const WAIT: Duration = Duration::from_secs(60);
const NODE: &str = "box-node";

// Capability numbers (linux/capability.h).
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Mounts tracefs where systemd mounts it at boot, as on a real node.
fn mount_tracefs_like_systemd() {
    let tracing = Path::new("/sys/kernel/tracing");
    if !tracing.join("events").is_dir() {
        nix::mount::mount(
            Some("nodev"),
            tracing,
            Some("tracefs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount tracefs");
    }
}

/// The line `/proc/<pid>/status` has for `key`.
fn status_field(pid: i32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemonset_runs_without_privilege_and_explains_an_oom_kill_from_its_container() {
    let rendered = daemonset::render().unwrap();
    mount_tracefs_like_systemd();
    let bed = TestBed::start().await.unwrap();
    let receiver = OtlpReceiver::grpc().await.unwrap();
    // The collector is reached by name, through the container's /etc/hosts.
    let layout = NodeLayout::for_bed(
        &bed,
        NODE,
        BTreeMap::from([(
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            format!("http://localhost:{}", receiver.port()),
        )]),
    );
    let state = layout.host_path("/var/lib/podmortem");
    let agent = daemonset::start_in_box(&bed, &rendered, &layout).await.unwrap();
    for note in &agent.translated.notes {
        println!("test bed differs from a node: {note}");
    }
    let agent_id = agent.container_id.clone();

    // kubelet's probes.
    agent.wait_ready(WAIT).await.unwrap();
    let liveness = agent.translated.liveness.clone().expect("a liveness probe");
    assert_eq!(
        daemonset::get(&liveness).await.ok().map(|(code, _)| code),
        Some(200)
    );

    // The agent holds exactly the manifest's capabilities, cannot gain more, is filtered by
    // the runtime's seccomp profile, and its root filesystem is read-only.
    let pid = bed.cri.pid(&agent_id).await.unwrap();
    let expected = (1u64 << CAP_SYSLOG) | (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let held = u64::from_str_radix(&status_field(pid, set), 16).unwrap();
        assert_eq!(held, expected, "{set} {held:#x}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    assert_eq!(status_field(pid, "Seccomp"), "2", "seccomp filter mode");
    assert!(status_field(pid, "Uid").starts_with("0\t"));
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("the container's root in its mountinfo");
    assert!(
        root.split(' ').nth(5).unwrap().split(',').any(|o| o == "ro"),
        "{root}"
    );

    // From inside, every source works: the runtime, the kernel log (through syslog(2)), the
    // eBPF tracer (through the node's tracefs).
    let startup = agent
        .wait_for_stderr("startup", WAIT, |text| {
            text.contains("subscribed to containerd events")
                && text.contains("read-only write tracer attached")
        })
        .await
        .unwrap();
    // /dev/kmsg is refused by the device cgroup of a pod that is not privileged.
    assert!(
        startup.contains("reading the kernel log through syslog(2)"),
        "{startup}"
    );

    // Another pod is OOM-killed.
    let victim_pod = bed.cri.run_pod(&PodSpec::new("e2e", "hungry")).await.unwrap();
    let victim = bed
        .cri
        .run_container(&victim_pod, &ContainerSpec::memory_hog("app"))
        .await
        .unwrap();
    let finding = agent
        .wait_for_finding("OOMKilled finding", WAIT, |f| {
            field(f, "/kind") == "OOMKilled" && field(f, "/subject/container_id") == victim
        })
        .await
        .unwrap();
    assert_eq!(field(&finding, "/subject/namespace"), "e2e");
    assert_eq!(field(&finding, "/subject/pod"), "hungry");
    assert_eq!(field(&finding, "/subject/container"), "app");
    assert_eq!(field(&finding, "/subject/node"), NODE, "{finding}");
    let kmsg = evidence(&finding, "kmsg").expect("kernel log evidence, read from inside the container");
    assert_eq!(kmsg["attributes"]["comm"], "sh");
    assert_eq!(kmsg["attributes"]["memcg_limit_kib"], LIMIT / 1024);
    let cri = evidence(&finding, "cri").unwrap_or_else(|| panic!("CRI evidence: {finding}"));
    assert_eq!(cri["attributes"]["reason"], "OOMKilled");
    assert!(
        evidence(&finding, "cgroup").is_some(),
        "memory cgroup evidence: {finding}"
    );

    // The same finding reaches the collector, by name.
    let record = receiver
        .wait_for("the OOM kill", WAIT, |r| {
            r.str("container.id") == Some(victim.as_str())
        })
        .await
        .unwrap();
    assert_eq!(record.str("podmortem.finding.kind"), Some("OOMKilled"));
    assert_eq!(record.resource_str("k8s.node.name"), Some(NODE));

    // A write to a read-only volume, by a relative path: the tracer sees the failing syscall
    // from inside the container, and reads the writer's working directory to name the volume.
    let volume = bed.containerd.dir().join("config-volume");
    std::fs::create_dir_all(&volume).unwrap();
    let writer_pod = bed.cri.run_pod(&PodSpec::new("e2e", "writer")).await.unwrap();
    let writer = bed
        .cri
        .run_container(
            &writer_pod,
            &ContainerSpec {
                mounts: vec![(volume.clone(), "/config".into(), true)],
                ..ContainerSpec::shell("app", "cd /config && echo x > rel.txt; sleep 1; exit 1")
            },
        )
        .await
        .unwrap();
    let write = agent
        .wait_for_finding("ReadOnlyFilesystemWrite finding", WAIT, |f| {
            field(f, "/kind") == "ReadOnlyFilesystemWrite" && field(f, "/subject/container_id") == writer
        })
        .await
        .unwrap();
    let tracer = evidence(&write, "tracer").expect("tracer evidence, from inside the container");
    assert_eq!(tracer["attributes"]["path"], "rel.txt", "{write}");
    let mount = mount_evidence(&write).unwrap_or_else(|| panic!("mount evidence: {write}"));
    assert_eq!(mount["attributes"]["cause"], "read_only_volume", "{write}");
    assert_eq!(
        mount["attributes"]["host_path"],
        volume.to_string_lossy().as_ref(),
        "{write}"
    );

    // The kernel log position lives in the hostPath state directory.
    let deadline = Instant::now() + WAIT;
    while !state.join("state.json").is_file() {
        assert!(Instant::now() < deadline, "no state.json in the state directory");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Nothing went wrong inside: no warning or error but the expected ones.
    let text = agent.stderr();
    let unexpected: Vec<&str> = text
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected warnings:\n{}",
        unexpected.join("\n")
    );

    // The pod stops cleanly within its grace period.
    bed.cri
        .stop(&agent_id, agent.translated.stop_timeout)
        .await
        .unwrap();
    let status = bed.cri.status(&agent_id).await.unwrap();
    assert_eq!(status.exit_code, 0, "{status:?}\n{text}");
}
