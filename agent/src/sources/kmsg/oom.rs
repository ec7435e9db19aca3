//! The kernel's OOM-killer reports, from kernel 4.x to 6.x, parsed line by line and assembled
//! into one [`OomKill`] per killed process.
//!
//! A report spans many records: `<comm> invoked oom-killer: gfp_mask=…, order=…,
//! oom_score_adj=…`, a stack dump, for a memory cgroup `memory: usage …kB, limit …kB, failcnt …`
//! (4.x adds `Task in X killed as a result of limit of Y`), the task table, then the kill:
//! `oom-kill:constraint=…,oom_memcg=…,task_memcg=…,task=…,pid=…,uid=…` (4.19 and later) and
//! `[Memory cgroup out of memory|Out of memory]: Killed process N (comm) total-vm:…kB, …`
//! (4.x: `Kill process N (comm) score S or sacrifice child`, then `Killed process N (comm) …`).

/// Largest memory users kept from a report's task table.
pub const TOP_TASKS: usize = 5;
/// A report that has not reached its kill after this many lines is abandoned.
const MAX_REPORT_LINES: u32 = 20_000;

/// What the OOM killer was asked to respect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OomScope {
    /// A memory cgroup hit its limit.
    Memcg,
    /// The whole node ran out of memory.
    Global,
    /// A cpuset or mempolicy constraint.
    Other,
}

/// The process whose allocation invoked the OOM killer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoker {
    /// Its command name.
    pub comm: String,
    /// The allocation's GFP flags, as printed (`0xcc0(GFP_KERNEL)`).
    pub gfp_mask: Option<String>,
    /// The allocation's order.
    pub order: Option<u32>,
    /// Its `oom_score_adj`.
    pub oom_score_adj: Option<i32>,
}

/// One row of the report's task table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TaskMemory {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Resident memory, in pages.
    pub rss_pages: u64,
}

/// One process killed by the OOM killer, with what the report around it said.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OomKill {
    /// Sequence number of the record that reported the kill.
    pub seq: u64,
    /// Sequence number of the report's first record.
    pub first_seq: u64,
    /// When the kill was logged, in microseconds since boot.
    pub usec: u64,
    /// Memory cgroup limit, node-wide, or another constraint.
    pub scope: Option<OomScope>,
    /// The constraint as printed (`CONSTRAINT_MEMCG`).
    pub constraint: Option<String>,
    /// The victim's pid (in the host's pid namespace).
    pub pid: u32,
    /// The victim's command name.
    pub comm: String,
    /// The victim's uid.
    pub uid: Option<u32>,
    /// Its virtual size, in KiB.
    pub total_vm_kib: Option<u64>,
    /// Anonymous resident memory, in KiB.
    pub anon_rss_kib: Option<u64>,
    /// File-backed resident memory, in KiB.
    pub file_rss_kib: Option<u64>,
    /// Shared-memory resident memory, in KiB.
    pub shmem_rss_kib: Option<u64>,
    /// Its page tables, in KiB.
    pub pgtables_kib: Option<u64>,
    /// Its `oom_score_adj`.
    pub oom_score_adj: Option<i32>,
    /// The memory cgroup whose limit was hit.
    pub oom_memcg: Option<String>,
    /// The victim's memory cgroup.
    pub task_memcg: Option<String>,
    /// `task_memcg` was read from `/proc/<pid>/cgroup` while the victim was still there: the
    /// report did not name it (the kernel rate-limits that part of its reports).
    pub memcg_from_procfs: bool,
    /// Who invoked the OOM killer.
    pub invoker: Option<Invoker>,
    /// The limited cgroup's usage, in KiB, as the report printed it.
    pub memcg_usage_kib: Option<u64>,
    /// The limit, in KiB.
    pub memcg_limit_kib: Option<u64>,
    /// How often the limit was hit.
    pub memcg_failcnt: Option<u64>,
    /// The largest memory users in the report's task table, largest first.
    pub top_tasks: Vec<TaskMemory>,
    /// Where reading resumes to read this report again: the position just before its first
    /// record (set by the source, not the parser).
    pub before: Option<super::syslog::UsecCursor>,
}

impl OomKill {
    /// The victim's resident memory at the kill (anon + file + shmem), in bytes.
    pub fn rss_bytes(&self) -> Option<u64> {
        let kib = self.anon_rss_kib? + self.file_rss_kib.unwrap_or(0) + self.shmem_rss_kib.unwrap_or(0);
        Some(kib.saturating_mul(1024))
    }
}

/// One line of an OOM report, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum OomLine {
    /// `<comm> invoked oom-killer: …`
    Invoked(Invoker),
    /// 4.x: `Task in X killed as a result of limit of Y`.
    TaskIn {
        /// The victim's memory cgroup.
        task_memcg: String,
        /// The cgroup whose limit was hit.
        limit_memcg: String,
    },
    /// `memory: usage NkB, limit NkB, failcnt N`.
    MemcgUsage {
        /// Usage in KiB.
        usage_kib: u64,
        /// Limit in KiB.
        limit_kib: u64,
        /// Times the limit was hit.
        failcnt: Option<u64>,
    },
    /// The task table's header.
    TaskTableHeader,
    /// A task table row.
    Task(TaskMemory),
    /// `oom-kill:constraint=…` (4.19 and later).
    Summary {
        /// The constraint.
        constraint: String,
        /// Whether the kernel marked it `global_oom`.
        global: bool,
        /// The cgroup whose limit was hit.
        oom_memcg: Option<String>,
        /// The victim's cgroup.
        task_memcg: Option<String>,
        /// Victim's comm.
        task: String,
        /// Victim's pid.
        pid: u32,
        /// Victim's uid.
        uid: Option<u32>,
    },
    /// 4.x: `<which OOM killer>: Kill process N (comm) score S or sacrifice child`.
    Selected(OomScope),
    /// `Killed process N (comm) total-vm:…`, with the prefix that says which OOM killer.
    Killed(Box<OomKill>),
}

/// Parses a line that belongs to an OOM report; `None` for every other line.
pub fn parse_line(text: &str) -> Option<OomLine> {
    if let Some((comm, rest)) = text.split_once(" invoked oom-killer: ") {
        return Some(OomLine::Invoked(Invoker {
            comm: comm.to_owned(),
            gfp_mask: field(rest, "gfp_mask=", ", ").map(str::to_owned),
            order: field(rest, "order=", ",").and_then(|v| v.parse().ok()),
            oom_score_adj: field(rest, "oom_score_adj=", ",").and_then(|v| v.trim().parse().ok()),
        }));
    }
    if let Some(rest) = text.strip_prefix("oom-kill:") {
        return parse_summary(rest);
    }
    if let Some(rest) = text.strip_prefix("memory: usage ") {
        let (usage, rest) = rest.split_once("kB, limit ")?;
        let (limit, rest) = rest.split_once("kB")?;
        let failcnt = rest
            .strip_prefix(", failcnt ")
            .and_then(|v| v.trim().parse().ok());
        return Some(OomLine::MemcgUsage {
            usage_kib: usage.parse().ok()?,
            limit_kib: limit.parse().ok()?,
            failcnt,
        });
    }
    if let Some(rest) = text.strip_prefix("Task in ") {
        let (task, limit) = rest.split_once(" killed as a result of limit of ")?;
        return Some(OomLine::TaskIn {
            task_memcg: task.to_owned(),
            limit_memcg: limit.trim_end().to_owned(),
        });
    }
    if text.starts_with("[ pid ]") || text.starts_with("[  pid  ]") {
        return Some(OomLine::TaskTableHeader);
    }
    if text.starts_with('[') {
        return parse_task(text).map(OomLine::Task);
    }
    if let Some(i) = text.find(": Kill process ") {
        // 4.x names the process it selected before killing it (or a child of it).
        return Some(OomLine::Selected(scope_of(&text[..i])?));
    }
    if let Some(i) = text.find("Killed process ") {
        let prefix = text[..i].trim_end_matches([':', ' ']);
        return parse_killed(prefix, &text[i + "Killed process ".len()..])
            .map(|k| OomLine::Killed(Box::new(k)));
    }
    None
}

/// The text after `key` up to `end` (or the end of `s`).
fn field<'a>(s: &'a str, key: &str, end: &str) -> Option<&'a str> {
    let start = s.find(key)? + key.len();
    let rest = &s[start..];
    Some(rest.split_once(end).map_or(rest, |(v, _)| v))
}

fn parse_summary(rest: &str) -> Option<OomLine> {
    let constraint = rest.strip_prefix("constraint=")?.split(',').next()?.to_owned();
    // The victim's comm may hold commas: take pid and uid from the right.
    let (head, uid) = match rest.rsplit_once(",uid=") {
        Some((head, uid)) => (head, uid.trim().parse().ok()),
        None => (rest, None),
    };
    let (head, pid) = head.rsplit_once(",pid=")?;
    let (head, task) = head.rsplit_once(",task=")?;
    let memcg = |key: &str| -> Option<String> {
        let start = head.find(key)? + key.len();
        let value = &head[start..];
        // A cgroup path ends where the next known key starts.
        let end = [",task_memcg=", ",oom_memcg="]
            .iter()
            .filter_map(|k| value.find(k))
            .min()
            .unwrap_or(value.len());
        Some(value[..end].to_owned())
    };
    Some(OomLine::Summary {
        constraint,
        global: head.contains(",global_oom"),
        oom_memcg: memcg(",oom_memcg="),
        task_memcg: memcg(",task_memcg="),
        task: task.to_owned(),
        pid: pid.trim().parse().ok()?,
        uid,
    })
}

/// `[  15888]     0 15888    12857     8453 … name`: pid, uid, tgid, total_vm, rss, …, name.
fn parse_task(text: &str) -> Option<TaskMemory> {
    let (pid, rest) = text.strip_prefix('[')?.split_once(']')?;
    let mut words = rest.split_whitespace();
    let numbers: Vec<&str> = words.by_ref().take(4).collect();
    let rss_pages = numbers.get(3)?.parse().ok()?;
    let comm = rest.split_whitespace().last()?;
    if numbers.len() < 4 || comm.parse::<i64>().is_ok() {
        return None;
    }
    Some(TaskMemory {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_owned(),
        rss_pages,
    })
}

/// The scope an OOM killer message prefix names.
fn scope_of(prefix: &str) -> Option<OomScope> {
    match prefix {
        "Memory cgroup out of memory" => Some(OomScope::Memcg),
        "Out of memory" | "Out of memory (oom_kill_allocating_task)" => Some(OomScope::Global),
        _ => None,
    }
}

/// `N (comm) total-vm:NkB, anon-rss:NkB, file-rss:NkB, shmem-rss:NkB[, UID:N pgtables:NkB oom_score_adj:N]`
fn parse_killed(prefix: &str, rest: &str) -> Option<OomKill> {
    let (pid, rest) = rest.split_once(" (")?;
    let (comm, stats) = rest.rsplit_once(") ")?;
    let kib = |key: &str| field(stats, key, "kB").and_then(|v| v.parse().ok());
    let scope = scope_of(prefix);
    if !stats.starts_with("total-vm:") {
        return None;
    }
    Some(OomKill {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_owned(),
        scope,
        uid: field(stats, "UID:", " ").and_then(|v| v.parse().ok()),
        total_vm_kib: kib("total-vm:"),
        anon_rss_kib: kib("anon-rss:"),
        file_rss_kib: kib("file-rss:"),
        shmem_rss_kib: kib("shmem-rss:"),
        pgtables_kib: kib("pgtables:"),
        oom_score_adj: field(stats, "oom_score_adj:", " ").and_then(|v| v.trim().parse().ok()),
        ..OomKill::default()
    })
}

/// Assembles parsed lines into kills. Holds at most one report in progress, with a bounded
/// task table.
#[derive(Debug, Default)]
pub struct Assembler {
    report: Option<OomKill>,
    lines: u32,
    /// Reports abandoned before their kill (no killable process, or too long).
    pub abandoned: u64,
}

impl Assembler {
    /// Feeds one record's text; returns a kill when the record reports one.
    pub fn feed(&mut self, seq: u64, usec: u64, text: &str) -> Option<OomKill> {
        if let Some(report) = &self.report {
            self.lines += 1;
            if self.lines > MAX_REPORT_LINES || seq < report.first_seq {
                self.report = None;
                self.abandoned += 1;
            }
        }
        let line = parse_line(text)?;
        match line {
            OomLine::Invoked(invoker) => {
                if self.report.is_some() {
                    self.abandoned += 1;
                }
                self.lines = 0;
                self.report = Some(OomKill {
                    first_seq: seq,
                    invoker: Some(invoker),
                    ..OomKill::default()
                });
            }
            OomLine::Killed(kill) => return Some(self.finish(seq, usec, *kill)),
            other => self.fold(seq, other),
        }
        None
    }

    /// The first sequence number of the report in progress, if one is.
    pub fn open_since(&self) -> Option<u64> {
        self.report.as_ref().map(|r| r.first_seq)
    }

    fn fold(&mut self, seq: u64, line: OomLine) {
        let report = self.report.get_or_insert_with(|| OomKill {
            first_seq: seq,
            ..OomKill::default()
        });
        match line {
            OomLine::TaskIn {
                task_memcg,
                limit_memcg,
            } => {
                report.task_memcg = Some(task_memcg);
                report.oom_memcg = Some(limit_memcg);
                report.scope = Some(OomScope::Memcg);
            }
            OomLine::MemcgUsage {
                usage_kib,
                limit_kib,
                failcnt,
            } => {
                report.memcg_usage_kib = Some(usage_kib);
                report.memcg_limit_kib = Some(limit_kib);
                report.memcg_failcnt = failcnt;
            }
            OomLine::Task(task) => {
                let at = report
                    .top_tasks
                    .partition_point(|t| t.rss_pages >= task.rss_pages);
                if at < TOP_TASKS {
                    report.top_tasks.insert(at, task);
                    report.top_tasks.truncate(TOP_TASKS);
                }
            }
            OomLine::Summary {
                constraint,
                global,
                oom_memcg,
                task_memcg,
                task,
                pid,
                uid,
            } => {
                report.scope = Some(match constraint.as_str() {
                    "CONSTRAINT_MEMCG" => OomScope::Memcg,
                    "CONSTRAINT_NONE" => OomScope::Global,
                    _ if global => OomScope::Global,
                    _ => OomScope::Other,
                });
                report.constraint = Some(constraint);
                report.oom_memcg = oom_memcg.or(report.oom_memcg.take());
                report.task_memcg = task_memcg.or(report.task_memcg.take());
                report.pid = pid;
                report.comm = task;
                report.uid = uid;
            }
            OomLine::Selected(scope) => {
                report.scope = report.scope.or(Some(scope));
            }
            OomLine::TaskTableHeader | OomLine::Invoked(_) | OomLine::Killed(_) => {}
        }
    }

    fn finish(&mut self, seq: u64, usec: u64, kill: OomKill) -> OomKill {
        let report = self.report.take().unwrap_or_default();
        // The summary line names the victim too; a report about another pid is not this one's.
        let report = if report.pid != 0 && report.pid != kill.pid {
            OomKill::default()
        } else {
            report
        };
        let first_seq = if report.first_seq == 0 {
            seq
        } else {
            report.first_seq
        };
        OomKill {
            seq,
            first_seq,
            usec,
            scope: report.scope.or(kill.scope),
            constraint: report.constraint,
            pid: kill.pid,
            comm: kill.comm,
            uid: kill.uid.or(report.uid),
            total_vm_kib: kill.total_vm_kib,
            anon_rss_kib: kill.anon_rss_kib,
            file_rss_kib: kill.file_rss_kib,
            shmem_rss_kib: kill.shmem_rss_kib,
            pgtables_kib: kill.pgtables_kib,
            oom_score_adj: kill.oom_score_adj,
            oom_memcg: report.oom_memcg,
            task_memcg: report.task_memcg,
            memcg_from_procfs: false,
            invoker: report.invoker,
            memcg_usage_kib: report.memcg_usage_kib,
            memcg_limit_kib: report.memcg_limit_kib,
            memcg_failcnt: report.memcg_failcnt,
            top_tasks: report.top_tasks,
            before: None,
        }
    }
}

#[cfg(test)]
#[path = "oom_tests.rs"]
mod tests;
