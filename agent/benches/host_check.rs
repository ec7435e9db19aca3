//! One full host dependency check — every dependency of the shipped catalogue (programs on the
//! PATH, kernel modules, a scan of every process's `comm`, files) — on this machine's real root:
//! how long it takes and how much heap it uses. `--host-root DIR` checks another root.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use podmortem::catalogue::{Catalogue, CatalogueEntries, CatalogueMode};
use podmortem::sources::host::{HostView, DEFAULT_PATH};
use podmortem::sources::host_deps::check;

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

const RUNS: usize = 50;

fn main() {
    let root = std::env::args()
        .skip_while(|a| a != "--host-root")
        .nth(1)
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    let catalogue = Catalogue::build(CatalogueMode::Extend, &CatalogueEntries::default()).unwrap();
    let host = HostView::new(&root);
    let path: Vec<String> = DEFAULT_PATH.iter().map(|d| (*d).to_owned()).collect();
    let processes = std::fs::read_dir(root.join("proc"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count()
        })
        .unwrap_or(0);

    let _profiler = dhat::Profiler::builder().testing().build();
    // One cold check first (caches of the kernel's dentries and of modules.dep are cold).
    let started = Instant::now();
    let report = check(&host, &path, catalogue.dependencies());
    let cold = started.elapsed();
    drop(report);

    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut peak = 0;
    let mut allocated = 0;
    let mut retained = 0;
    for _ in 0..RUNS {
        let before = dhat::HeapStats::get();
        let started = Instant::now();
        let report = check(&host, &path, catalogue.dependencies());
        times.push(started.elapsed());
        let after = dhat::HeapStats::get();
        retained = after.curr_bytes - before.curr_bytes;
        allocated = after.total_bytes - before.total_bytes;
        peak = peak.max(after.max_bytes.saturating_sub(before.curr_bytes));
        drop(report);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "host check: {} dependencies, {processes} processes on the host, root {}",
        catalogue.dependencies().count(),
        root.display()
    );
    println!(
        "host check time: cold {:.2} ms; warm median {:.2} ms, p90 {:.2} ms, max {:.2} ms over {RUNS} runs",
        ms(cold),
        ms(times[RUNS / 2]),
        ms(times[RUNS * 9 / 10]),
        ms(times[RUNS - 1])
    );
    println!(
        "host check memory: peak heap {:.1} KiB while checking, {:.1} KiB allocated in all, report kept {:.1} KiB",
        peak as f64 / 1024.0,
        allocated as f64 / 1024.0,
        retained as f64 / 1024.0
    );
}
