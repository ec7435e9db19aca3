//! `make bench`: podmortem's figures on a real containerd.
//!
//! - exit → finding latency: containers exit one after another; for each, the time from the
//!   exit (CRI's `finished_at`, which the finding carries as `last_seen`) to the finding line
//!   arriving on the agent's stdout. Median, p90 and max.
//! - footprint: the agent's resident memory and CPU time while it watches N running
//!   containers (one per pod, so N shims and N pause sandboxes besides), across resyncs.
//!
//! - OOM kill → finding latency, from the kernel log's time of the kill.
//! - read-only writes: the time from the failing syscall (the tracer's timestamp) to the
//!   finding, in a running container and in a container's first instant; and the cost of
//!   about 10,000 failing writes per second: the agent's CPU time and the kernel programs' own
//!   run time (`kernel.bpf_stats_enabled`).
//!
//! - OTLP: the time from a finding's line on the agent's stdout to its log record's arrival at
//!   a real OTLP gRPC collector on loopback, with the default `batch_delay` (200 ms) and with
//!   none.
//!
//! - OOM storm: three containers whose children are OOM-killed in a loop, as fast as the kernel
//!   goes, for `BENCH_STORM_SECONDS`; the kills the kernel's counters counted in each container
//!   against those the agent reported, the kills it could not place, how many findings carried
//!   them, and the agent's CPU, with each kernel log reader.
//!
//! Environment: `PODMORTEM_BIN` (the agent to measure, release build by `make bench`),
//! `BENCH_EXITS` (default 40), `BENCH_CONTAINERS` (default 50), `BENCH_EROFS_SECONDS`
//! (default 10), `BENCH_OTLP_FINDINGS` (default 20), `BENCH_STORM_SECONDS` (default 30);
//! `BENCH_ONLY=box` or `BENCH_ONLY=storm` for one part alone.

use std::time::Duration;

use podmortem_e2e::agent::{field, latency_ms};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
use podmortem_e2e::daemonset::{InBox, NodeLayout};
use podmortem_e2e::otlp_receiver::OtlpReceiver;
use podmortem_e2e::{err, Context, Result, TestBed};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// VmRSS in KiB and utime+stime in clock ticks of a process.
fn footprint(pid: u32) -> Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("agent status")?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| err("no VmRSS"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("agent stat")?;
    let after_comm = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .ok_or_else(|| err("bad stat"))?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the comm: state is field 0, utime field 11, stime field 12.
    Ok((rss, ticks(11) + ticks(12)))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match bench().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            println!("bench failed: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn bench() -> Result<()> {
    let exits = env_usize("BENCH_EXITS", 40);
    let containers = env_usize("BENCH_CONTAINERS", 50);
    // BENCH_ONLY=box: only the image in its container.
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("box") => return in_a_box(containers).await,
        Ok("storm") => return oom_storms().await,
        _ => {}
    }
    let bed = TestBed::start().await?;
    let config = bed.containerd.dir().join("bench.yaml");
    // Resync every 5s so the footprint includes several full listings.
    // Repeats of a read-only write are reported every second, so the count is current.
    std::fs::write(
        &config,
        "cri:\n  resync_interval: 5s\nerofs:\n  repeat_interval: 1s\n",
    )
    .context("bench config")?;
    let mut agent = bed.agent(&["--config", config.to_str().ok_or_else(|| err("path"))?])?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("agent: {}", podmortem_e2e::agent::Agent::binary()?.display());

    // Latency.
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "exits")).await?;
    let mut latencies = Vec::with_capacity(exits);
    for attempt in 0..exits {
        let spec = ContainerSpec {
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            ..ContainerSpec::shell("app", "sleep 0.2; exit 3")
        };
        let id = bed.cri.run_container(&pod, &spec).await?;
        let got = agent
            .wait_for("bench exit", Duration::from_secs(20), |f| {
                field(f, "/subject/container_id") == id
            })
            .await?;
        latencies.push(latency_ms(&got).ok_or_else(|| err("finding without a time"))?);
    }
    bed.cri.remove_pod(&pod).await?;
    summary("exit -> finding latency", " exits", latencies);

    // OOM kills: from the kernel's kill (its kernel log timestamp) to the finding.
    let oom_kills = env_usize("BENCH_OOM_KILLS", 10);
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "ooms")).await?;
    let mut kill_latencies = Vec::with_capacity(oom_kills);
    for attempt in 0..oom_kills {
        let spec = ContainerSpec {
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            ..ContainerSpec::memory_hog("app")
        };
        let id = bed.cri.run_container(&pod, &spec).await?;
        let got = agent
            .wait_for("bench OOM kill", Duration::from_secs(30), |f| {
                field(f, "/subject/container_id") == id && field(f, "/kind") == "OOMKilled"
            })
            .await?;
        let killed = podmortem_e2e::agent::evidence(&got.finding, "kmsg")
            .and_then(|e| e.get("at"))
            .and_then(|t| t.as_str())
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .ok_or_else(|| err("OOMKilled without kernel log evidence"))?;
        let ms = got
            .at
            .duration_since(killed)
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        kill_latencies.push(ms);
    }
    bed.cri.remove_pod(&pod).await?;
    summary("OOM kill (kernel log time) -> finding", " kills", kill_latencies);

    read_only_writes(&bed, &mut agent).await?;

    // Footprint while watching running containers.
    let pid = agent.pid().ok_or_else(|| err("agent exited"))?;
    let pods = idle_pods(&bed, containers).await?;
    sample(
        &format!("watching {containers} running containers (a full listing every 5 s)"),
        pid,
        Duration::from_secs(20),
        None,
    )
    .await?;
    for p in &pods {
        bed.cri.remove_pod(p).await?;
    }
    agent.stop().await?;

    otlp_latency(&bed).await?;
    drop(bed);
    oom_storms().await?;
    in_a_box(containers).await
}

/// The OOM storm with each kernel log reader.
async fn oom_storms() -> Result<()> {
    let seconds = u64::try_from(env_usize("BENCH_STORM_SECONDS", 30)).unwrap_or(30);
    for (reader, config) in [("/dev/kmsg", ""), ("syslog(2)", "kmsg:\n  reader: syslog\n")] {
        oom_storm(reader, config, seconds).await?;
    }
    Ok(())
}

/// Three containers storm for `seconds` under an agent configured with `config`.
async fn oom_storm(reader: &str, config: &str, seconds: u64) -> Result<()> {
    use podmortem_e2e::storm;
    let (bed, mut agent) = TestBed::start_with_agent(config).await?;
    let pid = agent.pid().ok_or_else(|| err("agent exited"))?;
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "storm")).await?;
    let (_, cpu_before) = footprint(pid)?;
    let started = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for name in ["a", "b", "c"] {
        ids.push(
            bed.cri
                .run_container(&pod, &storm::timed_storm(name, seconds))
                .await?,
        );
    }
    // The storm is over when no counter has moved for 2 s.
    let mut counts: Vec<u64> = Vec::new();
    let mut still = 0;
    while still < 4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now: Vec<u64> = ids
            .iter()
            .map(|id| storm::kernel_kills(&pod, id).unwrap_or(0))
            .collect();
        still = if now == counts && started.elapsed() > Duration::from_secs(seconds) {
            still + 1
        } else {
            0
        };
        counts = now;
    }
    let stormed = started.elapsed();
    let (_, cpu_after) = footprint(pid)?;
    let expected: Vec<u64> = counts.clone();
    let by_id = ids.iter().cloned().zip(counts).collect();
    let got = storm::settle(&mut agent, &by_id).await;
    let reported: Vec<u64> = ids.iter().map(|id| got.get(id).copied().unwrap_or(0)).collect();
    println!(
        "OOM storm, kernel log through {reader}, {:.0} s: kernel counted {:?} = {} kills, podmortem reported {:?} = {}, {} not placed in a container, {} findings, last kill of each placed by {:?}, agent CPU {:.2}% of one core",
        stormed.as_secs_f64(),
        expected,
        expected.iter().sum::<u64>(),
        reported,
        reported.iter().sum::<u64>(),
        storm::node_scope_kills(&agent).len(),
        agent.seen().len(),
        storm::placed_by(&agent),
        (cpu_after - cpu_before) as f64 / 100.0 / stormed.as_secs_f64() * 100.0
    );
    bed.cri.remove_pod(&pod).await?;
    agent.stop().await?;
    Ok(())
}

/// `n` pods with one sleeping container each.
async fn idle_pods(bed: &TestBed, n: usize) -> Result<Vec<podmortem_e2e::cri::Pod>> {
    let mut pods = Vec::with_capacity(n);
    for i in 0..n {
        let p = bed
            .cri
            .run_pod(&PodSpec::new("bench", &format!("idle-{i}")))
            .await?;
        bed.cri
            .run_container(&p, &ContainerSpec::shell("app", "sleep 3600"))
            .await?;
        pods.push(p);
    }
    Ok(pods)
}

/// Samples an agent's RSS (and its container's memory cgroup, when it has one) for `window`;
/// prints the last and peak RSS and its CPU share.
async fn sample(what: &str, pid: u32, window: Duration, cgroup: Option<&InBox>) -> Result<()> {
    let (_, cpu_before) = footprint(pid)?;
    let (mut peak, mut last) = (0, 0);
    let start = tokio::time::Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, _) = footprint(pid)?;
        peak = peak.max(rss);
        last = rss;
    }
    let (_, cpu_after) = footprint(pid)?;
    let cgroup = match cgroup.map(InBox::cgroup_memory).transpose()? {
        Some((usage, max)) => format!(
            ", container memory cgroup {:.1} MiB (peak since start {:.1} MiB)",
            usage as f64 / f64::from(1 << 20),
            max as f64 / f64::from(1 << 20)
        ),
        None => String::new(),
    };
    println!(
        "{what}: RSS {:.1} MiB (peak {:.1} MiB), CPU {:.2}% of one core over {}s{cgroup}",
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
        (cpu_after - cpu_before) as f64 / 100.0 / window.as_secs_f64() * 100.0,
        window.as_secs()
    );
    Ok(())
}

/// The runtime image in its container, as deploy/ runs it (capabilities, mounts, limits): its
/// size and the agent's footprint idle, watching running containers, and through OOM kills.
async fn in_a_box(containers: usize) -> Result<()> {
    let archive = podmortem_e2e::daemonset::image_archive()?;
    let binary = archive.with_file_name("podmortem");
    println!(
        "image: {} ({:.1} MiB compressed; the binary is {:.1} MiB)",
        archive.display(),
        std::fs::metadata(&archive).context("image")?.len() as f64 / f64::from(1 << 20),
        std::fs::metadata(&binary).context("binary")?.len() as f64 / f64::from(1 << 20)
    );
    let rendered = podmortem_e2e::daemonset::render()?;
    let bed = TestBed::start().await?;
    let layout = NodeLayout::for_bed(&bed, "bench-node", std::collections::BTreeMap::new());
    let agent = podmortem_e2e::daemonset::start_in_box(&bed, &rendered, &layout).await?;
    agent.wait_ready(Duration::from_secs(60)).await?;
    let pid = u32::try_from(bed.cri.pid(&agent.container_id).await?).map_err(|_| err("pid"))?;
    let window = Duration::from_secs(u64::try_from(env_usize("BENCH_BOX_WINDOW_S", 60)).unwrap_or(60));
    sample("in its container, idle", pid, window, Some(&agent)).await?;

    let pods = idle_pods(&bed, containers).await?;
    sample(
        &format!("in its container, {containers} running containers"),
        pid,
        window,
        Some(&agent),
    )
    .await?;

    // A crash loop of OOM kills: one every 2 s.
    let kills = env_usize("BENCH_OOM_KILLS", 10);
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "box-ooms")).await?;
    let task = {
        let cri = bed.cri.clone();
        let pod = pod.clone();
        tokio::spawn(async move {
            for attempt in 0..kills {
                let spec = ContainerSpec {
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                    ..ContainerSpec::memory_hog("app")
                };
                if cri.run_container(&pod, &spec).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    sample(
        &format!("in its container, {kills} OOM kills 2 s apart"),
        pid,
        Duration::from_secs(u64::try_from(kills * 2).unwrap_or(20)),
        Some(&agent),
    )
    .await?;
    task.await.map_err(|e| err(format!("OOM kills: {e}")))?;
    let findings = agent
        .findings()
        .iter()
        .filter(|f| field(f, "/kind") == "OOMKilled")
        .count();
    println!("in its container: {findings} OOMKilled findings for {kills} kills");
    bed.cri.remove_pod(&pod).await?;
    for p in &pods {
        bed.cri.remove_pod(p).await?;
    }
    Ok(())
}

/// From a finding's line on stdout to its record's arrival at a gRPC collector on loopback.
async fn otlp_latency(bed: &TestBed) -> Result<()> {
    let findings = env_usize("BENCH_OTLP_FINDINGS", 20);
    let receiver = OtlpReceiver::grpc().await?;
    for (what, batch_delay) in [
        ("default batch_delay 200ms", ""),
        ("batch_delay 0s", "  batch_delay: 0s\n"),
    ] {
        let yaml = format!("otlp:\n  endpoint: {}\n{batch_delay}", receiver.endpoint());
        let mut agent = bed.agent_with_config(&yaml)?;
        agent
            .wait_for_log("subscribed to containerd events", Duration::from_secs(20))
            .await?;
        let pod = bed
            .cri
            .run_pod(&PodSpec::new("bench", &format!("otlp-{}", batch_delay.len())))
            .await?;
        let mut ms = Vec::with_capacity(findings);
        for attempt in 0..findings {
            let spec = ContainerSpec {
                attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                ..ContainerSpec::shell("app", "sleep 0.1; exit 3")
            };
            let id = bed.cri.run_container(&pod, &spec).await?;
            let printed = agent
                .wait_for("bench OTLP finding", Duration::from_secs(20), |f| {
                    field(f, "/subject/container_id") == id
                })
                .await?;
            let record = receiver
                .wait_for("bench OTLP record", Duration::from_secs(20), |r| {
                    r.str("container.id") == Some(id.as_str())
                })
                .await?;
            ms.push(match record.at.duration_since(printed.at) {
                Ok(d) => d.as_secs_f64() * 1000.0,
                // The record came first: the stdout pipe was read later.
                Err(e) => -e.duration().as_secs_f64() * 1000.0,
            });
        }
        bed.cri.remove_pod(&pod).await?;
        agent.stop().await?;
        summary(
            &format!("finding on stdout -> OTLP record at a gRPC collector ({what})"),
            " findings",
            ms,
        );
    }
    Ok(())
}

/// Time from the failing syscall (the tracer evidence's time) to the finding line.
fn syscall_latency_ms(got: &podmortem_e2e::agent::Received) -> Result<f64> {
    let at = podmortem_e2e::agent::evidence(&got.finding, "tracer")
        .and_then(|e| e.get("at"))
        .and_then(|t| t.as_str())
        .and_then(|t| humantime::parse_rfc3339(t).ok())
        .ok_or_else(|| err("a read-only write finding without tracer evidence"))?;
    Ok(got
        .at
        .duration_since(at)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0))
}

/// Prints median, p90 and max of `ms`: "<what> over <n><unit>: …".
fn summary(what: &str, unit: &str, mut ms: Vec<f64>) {
    ms.sort_by(f64::total_cmp);
    println!(
        "{what} over {}{unit}: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        ms.len(),
        percentile(&ms, 0.5),
        percentile(&ms, 0.9),
        ms.last().copied().unwrap_or(f64::NAN)
    );
}

/// The kernel programs' run time and run count, summed over the agent's BPF program
/// descriptors (counted only while `kernel.bpf_stats_enabled` is 1).
fn bpf_run_stats(pid: u32) -> (u64, u64) {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return (0, 0);
    };
    let mut total = (0, 0);
    for fd in fds.flatten() {
        let Ok(info) = std::fs::read_to_string(fd.path()) else {
            continue;
        };
        if !info.contains("prog_type:") {
            continue;
        }
        let value = |key: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        total.0 += value("run_time_ns:");
        total.1 += value("run_cnt:");
    }
    total
}

async fn read_only_writes(bed: &TestBed, agent: &mut podmortem_e2e::agent::Agent) -> Result<()> {
    agent
        .wait_for_log("read-only write tracer attached", Duration::from_secs(20))
        .await?;
    // A running container writing a new path every 300 ms.
    let writes = env_usize("BENCH_EROFS_WRITES", 20);
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "rofs-running")).await?;
    let spec = ContainerSpec {
        readonly_rootfs: true,
        ..ContainerSpec::shell(
            "app",
            &format!("sleep 1; i=0; while [ $i -lt {writes} ]; do echo x 2>/dev/null > /w$i; i=$((i+1)); sleep 0.3; done; sleep 3600"),
        )
    };
    let id = bed.cri.run_container(&pod, &spec).await?;
    let mut running = Vec::with_capacity(writes);
    for i in 0..writes {
        let path = format!("/w{i}");
        let got = agent
            .wait_for("bench read-only write", Duration::from_secs(20), |f| {
                field(f, "/subject/container_id") == id
                    && f.to_string().contains(&format!("\"path\":\"{path}\""))
            })
            .await?;
        running.push(syscall_latency_ms(&got)?);
    }
    summary("failing syscall -> finding, running container,", "", running);

    // Containers whose first instant is the failing write: the runtime lists them after it.
    // Each has a name of its own, so no report is held back as a repeat of the last.
    let starts = env_usize("BENCH_EROFS_STARTS", 10);
    let mut first = Vec::with_capacity(starts);
    for attempt in 0..starts {
        let spec = ContainerSpec {
            readonly_rootfs: true,
            ..ContainerSpec::shell(&format!("fresh-{attempt}"), "echo x > /data.txt; exit 1")
        };
        let id = bed.cri.run_container(&pod, &spec).await?;
        let got = agent
            .wait_for("bench first-instant write", Duration::from_secs(20), |f| {
                field(f, "/subject/container_id") == id && field(f, "/kind") == "ReadOnlyFilesystemWrite"
            })
            .await?;
        first.push(syscall_latency_ms(&got)?);
    }
    summary(
        "failing syscall -> finding, a new container's first write,",
        "",
        first,
    );

    // About 10,000 failing writes a second from one container.
    let seconds = env_usize("BENCH_EROFS_SECONDS", 10);
    let stats = std::path::Path::new("/proc/sys/kernel/bpf_stats_enabled");
    let stats_were = std::fs::read_to_string(stats).unwrap_or_default();
    std::fs::write(stats, "1").context("cannot enable kernel.bpf_stats_enabled")?;
    let pid = agent.pid().ok_or_else(|| err("agent exited"))?;
    let (_, cpu_before) = footprint(pid)?;
    let (bpf_ns_before, bpf_runs_before) = bpf_run_stats(pid);
    let spec = ContainerSpec {
        readonly_rootfs: true,
        ..ContainerSpec::shell(
            "flood",
            &format!(
                "end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do i=0; \
                 while [ $i -lt 750 ]; do echo x 2>/dev/null > /flood; i=$((i+1)); done; usleep 50000; done; sleep 3600"
            ),
        )
    };
    let started = std::time::Instant::now();
    let flood = bed.cri.run_container(&pod, &spec).await?;
    tokio::time::sleep(Duration::from_secs(u64::try_from(seconds).unwrap_or(10) + 1)).await;
    let elapsed = started.elapsed().as_secs_f64();
    let (_, cpu_after) = footprint(pid)?;
    let (bpf_ns_after, bpf_runs_after) = bpf_run_stats(pid);
    std::fs::write(stats, stats_were.trim()).context("cannot restore kernel.bpf_stats_enabled")?;
    // The count arrives with the next report (every second here).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let _ = agent
        .wait_for("nothing", Duration::from_millis(200), |_| false)
        .await;
    let failed = agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/container_id") == flood)
        .filter_map(|r| r.finding["count"].as_u64())
        .max()
        .unwrap_or(0);
    let rate = failed as f64 / seconds as f64;
    let tick = 100.0; // USER_HZ on Linux
    let agent_cpu = (cpu_after - cpu_before) as f64 / tick / elapsed * 100.0;
    let bpf_cpu = (bpf_ns_after - bpf_ns_before) as f64 / 1e9 / elapsed * 100.0;
    let runs = bpf_runs_after - bpf_runs_before;
    println!(
        "{failed} failing writes in {seconds} s ({rate:.0}/s): agent CPU {agent_cpu:.2}% of one core; \
         kernel programs {bpf_cpu:.2}% of one core ({runs} runs, {:.0} ns each, every watched syscall of the node included)",
        (bpf_ns_after - bpf_ns_before) as f64 / runs.max(1) as f64
    );
    bed.cri.remove_pod(&pod).await?;
    Ok(())
}
