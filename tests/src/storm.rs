//! OOM storms: containers whose child processes are OOM-killed in a loop, the kernel's own count
//! of the kills in each container's memory cgroup, and the kills an agent reported per
//! container. The storm tests and `make bench` use them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::agent::{evidence, field, Agent};
use crate::cri::{ContainerSpec, Pod, HOG};

/// A container whose shell forks [`HOG`] `kills` times; each child is OOM-killed, the shell
/// carries on, then sleeps.
pub fn storm(name: &str, kills: u32) -> ContainerSpec {
    ContainerSpec::limited(
        name,
        &format!("i=0; while [ $i -lt {kills} ]; do sh -c '{HOG}'; i=$((i+1)); done; sleep 3600"),
    )
}

/// A container whose shell forks [`HOG`] again and again for `seconds`, then sleeps.
pub fn timed_storm(name: &str, seconds: u64) -> ContainerSpec {
    ContainerSpec::limited(
        name,
        &format!(
            "end=$(( $(date +%s) + {seconds} )); while [ $(date +%s) -lt $end ]; do sh -c '{HOG}'; done; sleep 3600"
        ),
    )
}

/// The kernel's count of OOM kills in container `id` of `pod` (cgroup v1 `memory.oom_control`,
/// v2 `memory.events`); `None` once its cgroup is gone, or if it holds no counter.
pub fn kernel_kills(pod: &Pod, id: &str) -> Option<u64> {
    let parent = pod.spec.cgroup_parent.clone().unwrap_or_default();
    let v1 = PathBuf::from(format!("/sys/fs/cgroup/memory{parent}/{id}/memory.oom_control"));
    let v2 = PathBuf::from(format!("/sys/fs/cgroup{parent}/{id}/memory.events"));
    let text = std::fs::read_to_string(&v1)
        .or_else(|_| std::fs::read_to_string(&v2))
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

/// Kills the agent reported in each container: the latest count of each `OOMKilledChild`
/// fingerprint, plus the `OOMKilled` exits whose main process the kernel killed (an exit right
/// after another process's kill cites that kill, counted already).
pub fn reported_kills(agent: &Agent) -> HashMap<String, u64> {
    let mut latest: HashMap<(String, String), u64> = HashMap::new();
    for r in agent.seen() {
        let f = &r.finding;
        let counted = match field(f, "/kind") {
            "OOMKilledChild" => true,
            "OOMKilled" => evidence(f, "kmsg").is_some_and(|k| k["attributes"]["pid"].is_u64()),
            _ => false,
        };
        if !counted {
            continue;
        }
        let key = (
            field(f, "/subject/container_id").to_owned(),
            field(f, "/fingerprint").to_owned(),
        );
        let count = f["count"].as_u64().unwrap_or(0);
        let e = latest.entry(key).or_default();
        *e = (*e).max(count);
    }
    let mut per_container = HashMap::new();
    for ((id, _), count) in latest {
        *per_container.entry(id).or_default() += count;
    }
    per_container
}

/// Node-scope OOM findings: kills the agent could not place in a container.
pub fn node_scope_kills(agent: &Agent) -> Vec<String> {
    agent
        .seen()
        .iter()
        .filter(|r| field(&r.finding, "/subject/scope") == "node")
        .filter(|r| field(&r.finding, "/kind").starts_with("OOM"))
        .map(|r| field(&r.finding, "/summary").to_owned())
        .collect()
}

/// How the kills of the findings seen were placed in their containers (the latest kill of each
/// finding: a finding may count several).
pub fn placed_by(agent: &Agent) -> HashMap<String, usize> {
    let mut tally = HashMap::new();
    for r in agent.seen() {
        if let Some(how) = evidence(&r.finding, "kmsg").and_then(|e| e["attributes"]["placed_by"].as_str()) {
            *tally.entry(how.to_owned()).or_default() += 1;
        }
    }
    tally
}

/// Waits until the agent's counts reach `expected`, or a while after the kernel's counts
/// settled, then past the time kills would be reported from the counters alone (a kill
/// counted twice would show by then); returns what it reported per container.
pub async fn settle(agent: &mut Agent, expected: &HashMap<String, u64>) -> HashMap<String, u64> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = reported_kills(agent);
        if &got == expected || tokio::time::Instant::now() > deadline {
            break;
        }
        let _ = agent
            .wait_for("more kills", Duration::from_millis(500), |_| false)
            .await;
    }
    // Past the grace and the wait for reports the counters alone would be reported after: a
    // kill counted twice would show by then.
    let _ = agent
        .wait_for("a kill counted twice", Duration::from_secs(4), |_| false)
        .await;
    reported_kills(agent)
}
