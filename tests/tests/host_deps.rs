//! End-to-end: programs missing on the host or in the image, on a real containerd. A pod that
//! runs a program its image lacks gets `CommandNotFound`; a privileged host-PID pod that enters
//! a (fake) host's mount namespace for `iscsiadm` gets `MissingHostDependency` naming the
//! package when that host lacks it, and none when it has it; the node-level finding comes as
//! soon as the Longhorn pod appears.

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use podmortem_e2e::agent::{evidence, field, Agent};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::host::FakeHost;
use podmortem_e2e::TestBed;

const WAIT: Duration = Duration::from_secs(30);

async fn agent_on(bed: &TestBed, host_root: &str) -> Agent {
    let agent = bed
        .agent(&["--host-root", host_root, "--config", &write_config(bed)])
        .unwrap();
    agent
        .wait_for_log("subscribed to containerd events", WAIT)
        .await
        .unwrap();
    agent
}

fn write_config(bed: &TestBed) -> String {
    let path = bed.containerd.dir().join("agent-config.yaml");
    std::fs::write(&path, "cri:\n  resync_interval: 1s\nhost_deps:\n  interval: 1s\n").unwrap();
    path.to_str().unwrap().to_owned()
}

/// What `podmortem check` says about one dependency on `host_root`: its report line.
fn check_line(host_root: &str, dependency: &str) -> String {
    let out = Command::new(Agent::binary().unwrap())
        .args(["check", "--rule", "longhorn", "--host-root", host_root])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(dependency))
        .unwrap_or_else(|| panic!("no line for {dependency} in:\n{text}"))
        .trim_start()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_missing_in_the_image_is_command_not_found_and_agrees_with_the_host_check() {
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, "/").await;
    let pod = bed.cri.run_pod(&PodSpec::new("e2e", "cmd")).await.unwrap();

    // A shell in the container runs it.
    let shell = bed
        .cri
        .run_container(
            &pod,
            &ContainerSpec::shell("shell", "echo starting; iscsiadm --version"),
        )
        .await
        .unwrap();
    let got = agent
        .wait_for("CommandNotFound (shell)", WAIT, |f| {
            field(f, "/subject/container_id") == shell
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "CommandNotFound", "{f}");
    let summary = field(f, "/summary");
    assert!(
        summary.starts_with("container shell of pod e2e/cmd exited with code 127"),
        "{summary}"
    );
    assert!(
        summary.ends_with("it ran iscsiadm, which is not in its image: `sh: iscsiadm: not found`"),
        "{summary}"
    );
    let log = evidence(f, "log").expect("log evidence");
    // stdout and stderr reach the log through separate pipes: their order there is not fixed.
    let lines = log["attributes"]["last_lines"].as_array().expect("last lines");
    assert!(lines.iter().any(|l| l == "starting"), "{log}");
    assert!(lines.iter().any(|l| l == "sh: iscsiadm: not found"), "{log}");
    let image = evidence(f, "image").expect("image evidence");
    assert_eq!(
        image["attributes"]["found"], false,
        "the image was looked into: {image}"
    );
    // The host evidence says what `podmortem check` says.
    let host = evidence(f, "host").expect("host evidence");
    let on_host = host["attributes"]["found"].as_bool().expect("host looked up");
    let line = check_line("/", "iscsiadm");
    assert_eq!(line.starts_with("ok"), on_host, "{line} vs {host}");
    assert!(field(f, "/hint").contains("iscsiadm is a host tool"), "{f}");
    // Not also reported as a plain exit.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let about: Vec<&str> = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/container_id") == shell)
        .map(|r| field(&r.finding, "/kind"))
        .collect();
    assert_eq!(about, ["CommandNotFound"]);

    // The runtime cannot find the container's command at all.
    let spec = ContainerSpec {
        name: "direct".into(),
        command: vec!["iscsiadm".into(), "--version".into()],
        ..ContainerSpec::default()
    };
    let direct = bed.cri.create_container(&pod, &spec).await.unwrap();
    assert!(bed.cri.start(&direct).await.is_err(), "the start must fail");
    let got = agent
        .wait_for("CommandNotFound (direct)", WAIT, |f| {
            field(f, "/subject/container_id") == direct
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "CommandNotFound", "{f}");
    let cri = evidence(f, "cri").expect("cri evidence");
    assert_eq!(cri["attributes"]["reason"], "StartError", "{cri}");
    assert!(
        field(f, "/summary").contains("executable file not found in $PATH"),
        "{f}"
    );
}

/// A Longhorn-like manager pod: host PID namespace, privileged, entering `host_pid`'s mount
/// namespace to run iscsiadm, then exiting with the code `iscsiadm` left.
fn manager(host_pid: u32) -> (PodSpec, ContainerSpec) {
    let mut pod = PodSpec::new("longhorn-system", "longhorn-manager-x7k2p");
    pod.host_pid = true;
    pod.privileged = true;
    // The image's PATH is busybox's `/bin`; a real manager image has the usual one.
    let script = format!(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; \
         nsenter -t {host_pid} -m -- iscsiadm --version; code=$?; sleep 1; exit $code"
    );
    let container = ContainerSpec {
        privileged: true,
        ..ContainerSpec::shell("longhorn-manager", &script)
    };
    (pod, container)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entering_a_host_without_iscsiadm_is_a_missing_host_dependency_naming_the_package() {
    let mut host = FakeHost::new().unwrap();
    let host_pid = host.start_namespace().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, host.root_arg().unwrap()).await;

    let (pod_spec, spec) = manager(host_pid);
    let pod = bed.cri.run_pod(&pod_spec).await.unwrap();
    // Proactive: the Longhorn pod appears on a node without open-iscsi.
    let node = agent
        .wait_for("node-level MissingHostDependency", WAIT, |f| {
            field(f, "/kind") == "MissingHostDependency"
                && field(f, "/subject/scope") == "node"
                && field(f, "/summary").contains("lacks iscsiadm")
        })
        .await
        .unwrap();
    let summary = field(&node.finding, "/summary");
    assert!(summary.contains("(binary; package open-iscsi)"), "{summary}");
    assert!(
        summary.contains(
            "needed by pod longhorn-system/longhorn-manager-x7k2p (rule longhorn: namespace longhorn-system)"
        ),
        "{summary}"
    );
    assert!(field(&node.finding, "/hint").contains("apt-get install -y open-iscsi"));

    // Reactive: the pod's container fails for it.
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let got = agent
        .wait_for("pod-level MissingHostDependency", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "MissingHostDependency", "{f}");
    let summary = field(f, "/summary");
    assert!(
        summary.contains(
            "the host lacks iscsiadm (package open-iscsi), which it ran in the host's namespaces: \
             `nsenter: can't execute 'iscsiadm': No such file or directory`"
        ),
        "{summary}"
    );
    assert!(summary.contains("exited with code 127"), "{summary}");
    let host_evidence = evidence(f, "host").expect("host evidence");
    assert_eq!(host_evidence["attributes"]["found"], false);
    assert!(field(f, "/hint").contains("apt-get install -y open-iscsi"), "{f}");
    // `podmortem check` agrees, and fails.
    assert!(check_line(host.root_arg().unwrap(), "iscsiadm").starts_with("MISSING"));

    // open-iscsi gets installed: the node-level finding clears by itself.
    host.install("/usr/sbin/iscsiadm", "echo 'iscsiadm version 2.1.8'")
        .unwrap();
    host.install("/usr/sbin/iscsid", "while :; do sleep 1; done")
        .unwrap();
    host.start_daemon("/usr/sbin/iscsid").unwrap();
    let cleared = agent
        .wait_for("MissingHostDependency resolved", WAIT, |f| {
            field(f, "/kind") == "MissingHostDependency"
                && f["resolved"] == true
                && field(f, "/summary").contains("no longer lacks iscsiadm")
        })
        .await
        .unwrap();
    assert_eq!(cleared.finding["fingerprint"], node.finding["fingerprint"]);
    assert!(
        field(&cleared.finding, "/summary").contains("it is present now (/usr/sbin/iscsiadm)"),
        "{}",
        cleared.finding
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entering_a_host_that_has_iscsiadm_is_no_host_finding() {
    let mut host = FakeHost::new().unwrap();
    // The tool runs, but the manager fails for its own reasons afterwards.
    host.install("/usr/sbin/iscsiadm", "echo 'iscsiadm version 2.1.8'; exit 3")
        .unwrap();
    host.install("/usr/sbin/iscsid", "while :; do sleep 1; done")
        .unwrap();
    host.start_daemon("/usr/sbin/iscsid").unwrap();
    let host_pid = host.start_namespace().await.unwrap();
    let bed = TestBed::start().await.unwrap();
    let mut agent = agent_on(&bed, host.root_arg().unwrap()).await;

    let (pod_spec, spec) = manager(host_pid);
    let pod = bed.cri.run_pod(&pod_spec).await.unwrap();
    let id = bed.cri.run_container(&pod, &spec).await.unwrap();
    let got = agent
        .wait_for("the manager's exit", WAIT, |f| {
            field(f, "/subject/container_id") == id
        })
        .await
        .unwrap();
    let f = &got.finding;
    assert_eq!(field(f, "/kind"), "ContainerExited", "{f}");
    assert_eq!(f["evidence"].as_array().map(Vec::len).map(|n| n > 0), Some(true));
    let log = evidence(f, "log").expect("the log's last lines");
    assert_eq!(
        log["attributes"]["last_lines"][0], "iscsiadm version 2.1.8",
        "{log}"
    );
    // Two more host checks ran since the pod appeared: nothing is missing.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = agent
        .wait_for("nothing", Duration::from_millis(100), |_| false)
        .await;
    let host_findings: Vec<String> = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/kind") == "MissingHostDependency")
        .map(|r| r.finding.to_string())
        .collect();
    assert!(host_findings.is_empty(), "{host_findings:?}");
    assert!(check_line(host.root_arg().unwrap(), "iscsiadm").starts_with("ok"));
    assert!(check_line(host.root_arg().unwrap(), "iscsid").starts_with("ok"));
}

#[test]
fn podmortem_check_reports_and_exits_one_when_something_is_missing() {
    let host = FakeHost::new().unwrap();
    let root = host.root_arg().unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(Agent::binary().unwrap())
            .arg("check")
            .args(args)
            .args(["--host-root", root])
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, text, _) = run(&["--rule", "longhorn", "--rule", "nfs-volumes"]);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.starts_with("podmortem check on ") && text.contains("Debian GNU/Linux 12 (bookworm)"),
        "{text}"
    );
    assert!(text.contains("\nrule longhorn (--rule)\n"), "{text}");
    assert!(text.contains("  MISSING  iscsiadm     binary iscsiadm: not found in /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"), "{text}");
    assert!(
        text.contains("install open-iscsi (apt-get install -y open-iscsi)"),
        "{text}"
    );
    assert!(
        text.contains("  MISSING  mount.nfs    binary mount.nfs: not found"),
        "{text}"
    );
    // iscsid is a process: another test's fake host may be running one on this machine.
    if text.contains("  MISSING  iscsid ") {
        assert!(text.contains("then systemctl enable --now iscsid"), "{text}");
        assert!(
            text.contains("3 of 3 dependencies missing: iscsiadm, iscsid, mount.nfs"),
            "{text}"
        );
    } else {
        assert!(
            text.contains("2 of 3 dependencies missing: iscsiadm, mount.nfs"),
            "{text}"
        );
    }

    host.install("/usr/sbin/mount.nfs", "exit 0").unwrap();
    let (code, text, _) = run(&["--rule", "nfs-volumes"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains("  ok       mount.nfs    binary mount.nfs: /usr/sbin/mount.nfs\n"),
        "{text}"
    );
    assert!(text.contains("all 1 dependencies present"), "{text}");

    let (code, _, err) = run(&["--rule", "longhorm"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("no rule named `longhorm`"), "{err}");

    // Without --rule the pods on the node decide; with no runtime to ask, it says so.
    let (code, text, _) = run(&["--containerd-address", "/nonexistent.sock"]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("note: the pods on this node are unknown"), "{text}");
    assert!(text.contains("no rule applies to this node"), "{text}");
}
