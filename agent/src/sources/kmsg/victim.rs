//! The memory cgroup of an OOM victim whose report did not name it.
//!
//! The kernel prints the header of an OOM report (the cgroup's usage, the task table and the
//! `oom-kill:…task_memcg=` line) at most 10 times per 5 s node-wide, and `Killed process N` for
//! every kill. A victim read at once, while it is dying or a zombie, still has its
//! `/proc/<pid>/cgroup`: reading it then places the kill in its container. The command name
//! must match the report's, so a pid already reused by another process is not taken for the
//! victim. Kills read later (a replayed log, a slow poll) are not looked up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sources::cgroup::CgroupFs;

use super::oom::OomKill;

/// A kill logged longer ago than this is not looked up: its pid may be another process's.
/// The kernel log's clock and the monotonic clock it is compared with drift apart slowly, so
/// this is generous; the command name guards against a reused pid.
const FRESH: Duration = Duration::from_secs(10);

/// Looks up victims' memory cgroups below a host root.
#[derive(Debug)]
pub struct VictimLookup {
    host_root: PathBuf,
    cgroups: Option<CgroupFs>,
}

impl VictimLookup {
    /// A lookup below `host_root`; without a memory cgroup hierarchy there it finds nothing.
    pub fn new(host_root: &Path) -> Self {
        VictimLookup {
            host_root: host_root.to_owned(),
            cgroups: CgroupFs::detect(host_root).ok(),
        }
    }

    /// Fills in `kill`'s `task_memcg` from the victim's `/proc/<pid>/cgroup` when the report
    /// did not name it, the kill was logged `age` ago at most [`FRESH`], and the process there
    /// still has the victim's command name. Whether it did.
    pub fn fill(&self, kill: &mut OomKill, age: Option<Duration>) -> bool {
        if kill.task_memcg.is_some() || kill.pid == 0 || age.is_none_or(|a| a > FRESH) {
            return false;
        }
        let Some(fs) = &self.cgroups else { return false };
        let proc = self.host_root.join("proc").join(kill.pid.to_string());
        let same_comm = std::fs::read_to_string(proc.join("comm"))
            .is_ok_and(|comm| comm.trim_end_matches('\n') == kill.comm);
        if !same_comm {
            return false;
        }
        match fs.cgroup_of_pid(kill.pid) {
            // The root is where a process that left its cgroup (or never had one) shows.
            Ok(cgroup) if cgroup != "/" => {
                // A zombie whose cgroup was removed (cgroup v2) shows it with this suffix.
                let cgroup = cgroup.strip_suffix(" (deleted)").unwrap_or(&cgroup).to_owned();
                kill.task_memcg = Some(cgroup);
                kill.memcg_from_procfs = true;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(comm: &str, cgroup: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let memory = dir.path().join("sys/fs/cgroup/memory");
        std::fs::create_dir_all(&memory).unwrap();
        std::fs::write(memory.join("memory.usage_in_bytes"), "1\n").unwrap();
        let proc = dir.path().join("proc/4242");
        std::fs::create_dir_all(&proc).unwrap();
        std::fs::write(proc.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(
            proc.join("cgroup"),
            format!("12:memory:{cgroup}\n1:name=systemd:/\n"),
        )
        .unwrap();
        dir
    }

    fn kill() -> OomKill {
        OomKill {
            pid: 4242,
            comm: "sh".into(),
            ..OomKill::default()
        }
    }

    #[test]
    fn a_fresh_kill_gets_its_victims_cgroup() {
        let dir = tree("sh", "/kubepods/burstable/podx/abc");
        let lookup = VictimLookup::new(dir.path());
        let mut k = kill();
        assert!(lookup.fill(&mut k, Some(Duration::from_millis(3))));
        assert_eq!(k.task_memcg.as_deref(), Some("/kubepods/burstable/podx/abc"));
        assert!(k.memcg_from_procfs);
    }

    #[test]
    fn another_process_an_old_kill_or_a_named_cgroup_is_not_looked_up() {
        let dir = tree("nginx", "/kubepods/other");
        let lookup = VictimLookup::new(dir.path());
        let mut k = kill();
        assert!(!lookup.fill(&mut k, Some(Duration::ZERO)), "pid reused by nginx");
        assert_eq!(k.task_memcg, None);

        let dir = tree("sh", "/kubepods/x");
        let lookup = VictimLookup::new(dir.path());
        let mut k = kill();
        assert!(!lookup.fill(&mut k, Some(Duration::from_secs(11))), "too old");
        assert!(!lookup.fill(&mut k, None), "age unknown");
        k.task_memcg = Some("/k8s.io/named".into());
        assert!(!lookup.fill(&mut k, Some(Duration::ZERO)));
        assert_eq!(k.task_memcg.as_deref(), Some("/k8s.io/named"));
        assert!(!k.memcg_from_procfs);

        let dir = tree("sh", "/");
        let lookup = VictimLookup::new(dir.path());
        assert!(!lookup.fill(&mut kill(), Some(Duration::ZERO)), "the root cgroup");
        let dir = tree("sh", "/kubepods/podx/abc (deleted)");
        let lookup = VictimLookup::new(dir.path());
        let mut k = kill();
        assert!(lookup.fill(&mut k, Some(Duration::ZERO)));
        assert_eq!(
            k.task_memcg.as_deref(),
            Some("/kubepods/podx/abc"),
            "a removed cgroup"
        );
        let gone = VictimLookup::new(Path::new("/nonexistent"));
        assert!(!gone.fill(&mut kill(), Some(Duration::ZERO)));
    }
}
