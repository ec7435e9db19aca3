//! A private containerd: socket, root and state under a temporary directory.

// Controlling containerd is synchronous on purpose: teardown runs in `Drop`, where nothing can
// be awaited. Async tests call the blocking parts through `spawn_blocking`.
#![allow(clippy::disallowed_methods)]

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{err, image, Context, Result};

/// A running (or stopped, between [`Containerd::stop`] and [`Containerd::start_again`])
/// private containerd.
#[derive(Debug)]
pub struct Containerd {
    dir: tempfile::TempDir,
    config: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts a private containerd with the test image imported and set as the sandbox image.
    pub fn start() -> Result<Containerd> {
        crate::preflight()?;
        let dir = tempfile::Builder::new()
            .prefix("podmortem-testbed-")
            .tempdir_in("/tmp")
            .context("cannot create the test bed directory")?;
        let config = dir.path().join("config.toml");
        std::fs::write(&config, config_text(dir.path())?).context("cannot write containerd's config")?;
        let mut containerd = Containerd {
            dir,
            config,
            child: None,
        };
        containerd.start_again()?;
        image::import(&containerd.socket(), &containerd.dir.path().join("image.tar"))?;
        Ok(containerd)
    }

    /// The gRPC socket (CRI and the containerd API).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// The test bed's directory, for other files a test needs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts containerd (again), and waits until its socket accepts connections.
    pub fn start_again(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .context("cannot open containerd's log")?;
        let log2 = log.try_clone().context("cannot open containerd's log")?;
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .context("cannot start containerd")?;
        self.child = Some(child);
        let socket = self.socket();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(err(format!(
                        "containerd exited with {status} at start; its log:\n{}",
                        self.log_tail()
                    )));
                }
            }
            if Instant::now() > deadline {
                return Err(err(format!(
                    "containerd did not open {} in 30s",
                    socket.display()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops containerd (SIGTERM, then SIGKILL). Shims and containers keep running, as they do
    /// when containerd restarts on a real node.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
            let _ = kill(pid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // The socket file stays behind after SIGKILL; remove it so a client sees "absent".
        let socket = self.socket();
        if std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
            let _ = std::fs::remove_file(&socket);
        }
        Ok(())
    }

    /// The last lines of containerd's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs `ctr` against this containerd in the `k8s.io` namespace.
    pub fn ctr(&self, args: &[&str]) -> Result<String> {
        ctr(&self.socket(), args)
    }

    /// Removes every task and container (best effort), stops containerd, kills leftover shims
    /// and unmounts what is left under the test bed's directory.
    fn teardown(&mut self) {
        if self.child.is_some() {
            if let Ok(tasks) = self.ctr(&["tasks", "ls", "-q"]) {
                for id in tasks.lines().filter(|l| !l.is_empty()) {
                    let _ = self.ctr(&["tasks", "kill", "-a", "-s", "SIGKILL", id]);
                }
                for id in tasks.lines().filter(|l| !l.is_empty()) {
                    let _ = self.ctr(&["tasks", "delete", "-f", id]);
                }
            }
        }
        let _ = self.stop();
        kill_processes_mentioning(&self.socket().to_string_lossy());
        unmount_below(self.dir.path());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Runs `ctr --address SOCKET -n k8s.io ARGS…`.
pub fn ctr(socket: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(socket)
        .args(["-n", "k8s.io"])
        .args(args)
        .output()
        .context("cannot run ctr")?;
    if !out.status.success() {
        return Err(err(format!(
            "ctr {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// containerd's default config with root, state and socket under `dir`, and the two CRI
/// settings this machine needs (see shared/testbed.md).
fn config_text(dir: &Path) -> Result<String> {
    let out = Command::new("containerd")
        .args(["config", "default"])
        .output()
        .context("cannot run `containerd config default`")?;
    let default = String::from_utf8(out.stdout).context("containerd's default config is not UTF-8")?;
    let d = dir.display();
    let mut replaced = 0;
    let text: String = default
        .lines()
        .map(|line| {
            let key = line.trim_start();
            let indent = &line[..line.len() - key.len()];
            let new = if key.starts_with("root = ") {
                Some(format!("root = \"{d}/root\""))
            } else if key.starts_with("state = ") {
                Some(format!("state = \"{d}/state\""))
            } else if key == "address = \"/run/containerd/containerd.sock\"" {
                Some(format!("address = \"{d}/containerd.sock\""))
            } else if key.starts_with("sandbox_image = ") {
                Some(format!("sandbox_image = \"{}\"", image::NAME))
            } else if key.starts_with("restrict_oom_score_adj = ") {
                // No CAP_SYS_RESOURCE here: without this every RunPodSandbox fails.
                Some("restrict_oom_score_adj = true".to_owned())
            } else {
                None
            };
            match new {
                Some(new) => {
                    replaced += 1;
                    format!("{indent}{new}\n")
                }
                None => format!("{line}\n"),
            }
        })
        .collect();
    if replaced != 5 {
        return Err(err(format!(
            "containerd's default config changed shape: replaced {replaced} of 5 settings"
        )));
    }
    Ok(text)
}

/// SIGKILLs every process whose command line mentions `needle` (the shims of a test bed).
pub fn kill_processes_mentioning(needle: &str) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
        }
    }
}

/// Lazily unmounts every mount point below `dir`, deepest first.
pub fn unmount_below(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}
