//! `make bench`: podmortem's figures on a real containerd.
//!
//! - exit → finding latency: containers exit one after another; for each, the time from the
//!   exit (CRI's `finished_at`, which the finding carries as `last_seen`) to the finding line
//!   arriving on the agent's stdout. Median, p90 and max.
//! - footprint: the agent's resident memory and CPU time while it watches N running
//!   containers (one per pod, so N shims and N pause sandboxes besides), across resyncs.
//!
//! Environment: `PODMORTEM_BIN` (the agent to measure, release build by `make bench`),
//! `BENCH_EXITS` (default 40), `BENCH_CONTAINERS` (default 50).

use std::time::Duration;

use podmortem_e2e::agent::{field, latency_ms};
use podmortem_e2e::cri::{ContainerSpec, PodSpec};
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
    let bed = TestBed::start().await?;
    let config = bed.containerd.dir().join("bench.yaml");
    // Resync every 5s so the footprint includes several full listings.
    std::fs::write(&config, "cri:\n  resync_interval: 5s\n").context("bench config")?;
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
    latencies.sort_by(f64::total_cmp);
    println!(
        "exit -> finding latency over {} exits: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.9),
        latencies.last().copied().unwrap_or(f64::NAN)
    );

    // OOM kills: from the kernel's kill (its kernel log timestamp) to the finding.
    let oom_kills = env_usize("BENCH_OOM_KILLS", 10);
    let pod = bed.cri.run_pod(&PodSpec::new("bench", "ooms")).await?;
    let mut kill_latencies = Vec::with_capacity(oom_kills);
    for attempt in 0..oom_kills {
        let spec = ContainerSpec {
            attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
            memory_limit: Some(32 << 20),
            ..ContainerSpec::shell("app", "x=a; while :; do x=$x$x; done")
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
    kill_latencies.sort_by(f64::total_cmp);
    println!(
        "OOM kill (kernel log time) -> finding over {} kills: median {:.1} ms, p90 {:.1} ms, max {:.1} ms",
        kill_latencies.len(),
        percentile(&kill_latencies, 0.5),
        percentile(&kill_latencies, 0.9),
        kill_latencies.last().copied().unwrap_or(f64::NAN)
    );

    // Footprint while watching running containers.
    let pid = agent.pid().ok_or_else(|| err("agent exited"))?;
    let mut pods = Vec::with_capacity(containers);
    for n in 0..containers {
        let p = bed
            .cri
            .run_pod(&PodSpec::new("bench", &format!("idle-{n}")))
            .await?;
        bed.cri
            .run_container(&p, &ContainerSpec::shell("app", "sleep 3600"))
            .await?;
        pods.push(p);
    }
    let (_, cpu_before) = footprint(pid)?;
    let window = Duration::from_secs(20);
    let mut peak = 0;
    let mut last = 0;
    let start = tokio::time::Instant::now();
    while start.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (rss, _) = footprint(pid)?;
        peak = peak.max(rss);
        last = rss;
    }
    let (_, cpu_after) = footprint(pid)?;
    let tick = 100.0; // USER_HZ on Linux
    println!(
        "watching {containers} running containers ({} resyncs of the full list): RSS {:.1} MiB (peak {:.1} MiB), CPU {:.2}% of one core",
        window.as_secs() / 5,
        last as f64 / 1024.0,
        peak as f64 / 1024.0,
        (cpu_after - cpu_before) as f64 / tick / window.as_secs_f64() * 100.0
    );
    for p in &pods {
        bed.cri.remove_pod(p).await?;
    }
    agent.stop().await?;
    Ok(())
}
