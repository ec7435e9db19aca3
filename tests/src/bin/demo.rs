//! `make demo`: a private containerd, pods that fail for real, and podmortem explaining them.
//!
//! The agent runs as it would on a node (`podmortem run --output text`), its findings printed
//! straight to this terminal; its own logs go to a file in the demo's directory.

use std::process::Stdio;
use std::time::Duration;

use podmortem_e2e::agent::Agent;
use podmortem_e2e::cri::{ContainerSpec, Pod, PodSpec, HOG};
use podmortem_e2e::fake_apiserver::{str_at, FakeApiServer};
use podmortem_e2e::loopfs::LoopFs;
use podmortem_e2e::otlp_receiver::OtlpReceiver;
use podmortem_e2e::{Context, Result, TestBed};

#[allow(clippy::print_stderr)]
fn say(text: &str) {
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        eprintln!("\n\x1b[1m==> {text}\x1b[0m");
    } else {
        eprintln!("\n==> {text}");
    }
}

#[allow(clippy::print_stderr)]
fn show(text: &str) {
    eprintln!("    {text}");
}

async fn run_and_wait(bed: &TestBed, pod: &Pod, spec: ContainerSpec) -> Result<()> {
    let id = bed.cri.run_container(pod, &spec).await?;
    bed.cri.wait_exited(&id, Duration::from_secs(30)).await?;
    // Leave the agent a moment to print before the next story starts.
    tokio::time::sleep(Duration::from_millis(700)).await;
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match demo().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            say(&format!("demo failed: {error}"));
            std::process::ExitCode::FAILURE
        }
    }
}

async fn demo() -> Result<()> {
    say("Starting a private containerd (socket, root and state in a temp dir)");
    let bed = TestBed::start().await?;
    say(&format!(
        "containerd is up at {}",
        bed.containerd.socket().display()
    ));

    // A node disk of its own (a loop device), watched like containerd's and kubelet's.
    let mut disk = LoopFs::new(bed.containerd.dir(), "node-disk")?;
    // Where the findings go besides this terminal: an OpenTelemetry collector (a real OTLP gRPC
    // server) and a stand-in for the Kubernetes API server (none can run here).
    let collector = OtlpReceiver::grpc().await?;
    let apiserver = FakeApiServer::start().await?;
    apiserver.add_node("demo-node", serde_json::json!([]));
    let kubeconfig = apiserver.write_kubeconfig(&bed.containerd.dir().join("kubeconfig"))?;
    say(&format!(
        "An OTLP collector listens at {}, a Kubernetes API stand-in at {}",
        collector.endpoint(),
        apiserver.url()
    ));
    let config = bed.containerd.dir().join("podmortem.yaml");
    std::fs::write(
        &config,
        format!(
            "host_fs:\n  interval: 1s\n  paths: [/var/lib/containerd, /var/lib/kubelet, /var/log, {}]\n\
             otlp:\n  endpoint: {}\n  batch_delay: 50ms\n  metrics_interval: 2s\n\
             kubernetes:\n  mode: on\n  kubeconfig: {}\n  condition_settle: 5s\n",
            disk.dir.display(),
            collector.endpoint(),
            kubeconfig.display()
        ),
    )
    .context("cannot write the agent's config")?;

    let log_path = bed.containerd.dir().join("podmortem.log");
    let log = std::fs::File::create(&log_path).context("cannot create the agent log")?;
    let mut agent = tokio::process::Command::new(Agent::binary()?)
        .arg("run")
        .arg("--containerd-address")
        .arg(bed.containerd.socket())
        .arg("--state-dir")
        .arg(bed.containerd.dir().join("agent-state"))
        .args(["--node-name", "demo-node", "--output", "text", "--config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start podmortem")?;
    say(&format!(
        "podmortem is watching the node (its own log: {})",
        log_path.display()
    ));
    tokio::time::sleep(Duration::from_secs(1)).await;

    say("A healthy pod: podmortem stays quiet about it");
    let healthy = bed.cri.run_pod(&PodSpec::new("web", "frontend")).await?;
    bed.cri
        .run_container(&healthy, &ContainerSpec::shell("nginx", "sleep 3600"))
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;

    say("checkout/api crash-loops: it exits 1 on start, kubelet restarts it twice");
    let api = bed.cri.run_pod(&PodSpec::new("checkout", "api-7d9f")).await?;
    for attempt in 0..3 {
        let spec = ContainerSpec {
            attempt,
            ..ContainerSpec::shell("api", "echo 'fatal: DATABASE_URL is not set' >&2; exit 1")
        };
        run_and_wait(&bed, &api, spec).await?;
    }

    say("longhorn-system/longhorn-manager starts on this node, which has no open-iscsi");
    // The host's mount namespace, as a process of our own (pid 1's is not ours to enter here):
    // a new mount namespace on the host's real root filesystem.
    let mut host_ns = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sleep", "3600"])
        .kill_on_drop(true)
        .spawn()
        .context("cannot run unshare")?;
    let host_pid = host_ns
        .id()
        .ok_or_else(|| podmortem_e2e::err("unshare exited at once"))?;
    let mut manager_pod = PodSpec::new("longhorn-system", "longhorn-manager-x2x4k");
    manager_pod.host_pid = true;
    manager_pod.privileged = true;
    let manager = bed.cri.run_pod(&manager_pod).await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    say("... and runs iscsiadm in the host's mount namespace, as Longhorn does: it crash-loops");
    let script = format!(
        "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; \
         nsenter -t {host_pid} -m -- iscsiadm --version"
    );
    let spec = ContainerSpec {
        privileged: true,
        ..ContainerSpec::shell("longhorn-manager", &script)
    };
    run_and_wait(&bed, &manager, spec).await?;

    say("longhorn-system/csi-plugin runs iscsiadm inside its own container, whose image lacks it");
    let csi = bed
        .cri
        .run_pod(&PodSpec::new("longhorn-system", "longhorn-csi-plugin-x2x4k"))
        .await?;
    run_and_wait(
        &bed,
        &csi,
        ContainerSpec::shell("longhorn-csi-plugin", "iscsiadm --version"),
    )
    .await?;

    say("batch/report grows past its 32 MiB memory limit");
    let report = bed.cri.run_pod(&PodSpec::new("batch", "report-28861440")).await?;
    run_and_wait(&bed, &report, ContainerSpec::memory_hog("report")).await?;

    say("payments/gunicorn: a worker process grows past the 32 MiB limit and is OOM-killed; the master keeps running");
    let gunicorn = bed.cri.run_pod(&PodSpec::new("payments", "gunicorn-0")).await?;
    let spec = ContainerSpec::limited("gunicorn", &format!("sh -c '{HOG}'; sleep 3600"));
    bed.cri.run_container(&gunicorn, &spec).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    say("payments/celery: its workers are OOM-killed 40 times in a few seconds; the kernel names the cgroup of few of them");
    let celery = bed.cri.run_pod(&PodSpec::new("payments", "celery-0")).await?;
    let celery_id = bed
        .cri
        .run_container(&celery, &podmortem_e2e::storm::storm("celery", 40))
        .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut kernel = 0;
    while kernel < 40 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        kernel = podmortem_e2e::storm::kernel_kills(&celery, &celery_id).unwrap_or(0);
    }
    // The last kills wait oom.child_grace; the OTLP batch follows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut counts = std::collections::BTreeMap::<String, i64>::new();
    for r in collector.records() {
        if r.str("container.id") == Some(celery_id.as_str())
            && r.str("podmortem.finding.kind") == Some("OOMKilledChild")
        {
            let fingerprint = r.str("podmortem.finding.fingerprint").unwrap_or("?").to_owned();
            let count = r.int("podmortem.finding.count").unwrap_or(0);
            let seen = counts.entry(fingerprint).or_default();
            *seen = (*seen).max(count);
        }
    }
    say(&format!(
        "... the cgroup's oom_kill counter says {kernel} kills; podmortem counted {} of them, all in payments/celery-0",
        counts.values().sum::<i64>()
    ));

    say("payments/worker crashes on a bad memory access");
    let worker = bed.cri.run_pod(&PodSpec::new("payments", "worker-0")).await?;
    run_and_wait(&bed, &worker, ContainerSpec::shell("worker", "kill -SEGV $$")).await?;

    say("web/cms writes to its read-only root filesystem");
    let cms = bed.cri.run_pod(&PodSpec::new("web", "cms-5c4b")).await?;
    let spec = ContainerSpec {
        readonly_rootfs: true,
        ..ContainerSpec::shell("cms", "echo cache > /data.txt")
    };
    run_and_wait(&bed, &cms, spec).await?;

    say("web/nginx edits its config at start; the config is a ConfigMap volume, always read-only");
    let nginx_pod = PodSpec::new("web", "nginx-6f7d");
    let volume = bed.containerd.dir().join(format!(
        "kubelet/pods/{}/volumes/kubernetes.io~configmap/nginx-conf",
        nginx_pod.uid
    ));
    std::fs::create_dir_all(&volume).context("cannot create the ConfigMap volume")?;
    std::fs::write(volume.join("default.conf"), "server { listen 80; }\n")
        .context("cannot write the ConfigMap")?;
    let nginx = bed.cri.run_pod(&nginx_pod).await?;
    let spec = ContainerSpec {
        mounts: vec![(volume, "/etc/nginx/conf.d".into(), true)],
        ..ContainerSpec::shell(
            "nginx",
            "sed -i 's/listen 80/listen 8080/' /etc/nginx/conf.d/default.conf",
        )
    };
    run_and_wait(&bed, &nginx, spec).await?;

    say(&format!(
        "The node's disk mounted at {} fails: the kernel logs an ext4 error and makes it read-only",
        disk.dir.display()
    ));
    disk.trigger_error("demo: simulated disk failure")?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    say("... it is repaired and unmounted: podmortem clears the finding by itself");
    disk.unmount()?;
    tokio::time::sleep(Duration::from_millis(2500)).await;

    say("`podmortem check --rule longhorn`: the same host check, one-shot, for node image pipelines");
    let status = tokio::process::Command::new(Agent::binary()?)
        .args(["check", "--rule", "longhorn"])
        .status()
        .await
        .context("cannot run podmortem check")?;
    say(&format!(
        "podmortem check exited with {}",
        status.code().unwrap_or(-1)
    ));
    let _ = host_ns.kill().await;

    say("What `kubectl describe pod` shows: podmortem's Events on the pods");
    show("NAMESPACE/POD                               TYPE     REASON                    COUNT  MESSAGE");
    for e in apiserver.events() {
        let count = e["series"]["count"].as_u64().unwrap_or(1);
        let pod = format!(
            "{}/{}",
            str_at(&e, "/regarding/namespace"),
            str_at(&e, "/regarding/name")
        );
        let note: String = str_at(&e, "/note").chars().take(90).collect();
        show(&format!(
            "{pod:<43} {:<8} {:<25} {count:<6} {note}…",
            str_at(&e, "/type"),
            str_at(&e, "/reason")
        ));
    }
    say("What `kubectl describe node` shows: podmortem's conditions on the Node");
    if let Some(node) = apiserver.node("demo-node") {
        for c in node["status"]["conditions"].as_array().into_iter().flatten() {
            let message: String = str_at(c, "/message").chars().take(90).collect();
            show(&format!(
                "{:<24} {:<6} {:<18} {message}",
                str_at(c, "/type"),
                str_at(c, "/status"),
                str_at(c, "/reason")
            ));
        }
    }
    say("What the OpenTelemetry collector received: one log record per finding, and metrics");
    let records = collector.records();
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for r in &records {
        *kinds
            .entry(r.str("podmortem.finding.kind").unwrap_or("?").to_owned())
            .or_default() += 1;
    }
    show(&format!("{} log records: {kinds:?}", records.len()));
    if let Some(r) = records
        .iter()
        .find(|r| r.str("podmortem.finding.kind") == Some("OOMKilled"))
    {
        show(&format!("the OOMKilled record: {}", r.body().unwrap_or_default()));
        for key in [
            "k8s.namespace.name",
            "k8s.pod.name",
            "k8s.container.name",
            "k8s.container.restart_count",
            "process.exit.code",
            "k8s.container.status.last_terminated_reason",
            "podmortem.finding.fingerprint",
        ] {
            let value = r
                .str(key)
                .map(str::to_owned)
                .or_else(|| r.int(key).map(|i| i.to_string()))
                .unwrap_or_default();
            show(&format!("    {key} = {value}"));
        }
    }
    let metrics: std::collections::BTreeSet<String> = collector
        .metric_exports()
        .iter()
        .flat_map(|e| e.request.resource_metrics.iter())
        .flat_map(|rm| rm.scope_metrics.iter())
        .flat_map(|sm| sm.metrics.iter().map(|m| m.name.clone()))
        .collect();
    show(&format!("metrics received: {metrics:?}"));

    say("Done: stopping podmortem and removing the pods and containerd");
    tokio::time::sleep(Duration::from_secs(1)).await;
    if let Some(pid) = agent.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), agent.wait()).await;
    for pod in [
        &healthy, &api, &manager, &csi, &report, &celery, &worker, &cms, &nginx,
    ] {
        bed.cri.remove_pod(pod).await?;
    }
    Ok(())
}
