//! A fake host: a directory laid out like a merged-usr Debian root (busybox for a shell), that
//! podmortem is pointed at with `--host-root`, and a process whose mount namespace has that
//! directory as its root, so a pod can `nsenter -t <pid> -m` into it as Longhorn's manager
//! enters the real host's. The machine's own `/proc`, `/sys`, `/dev` and `/tmp` show through
//! symlinks, so the agent's other sources (and the test bed's log files) keep working.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{err, image, Context, Result};

/// A fake host root, and the processes started in it (killed on drop).
#[derive(Debug)]
pub struct FakeHost {
    dir: tempfile::TempDir,
    children: Vec<Child>,
}

const OS_RELEASE: &str = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nID=debian\n";

impl FakeHost {
    /// A merged-usr root with busybox's `sh` and `sleep`, and no storage tools.
    pub fn new() -> Result<FakeHost> {
        let dir = tempfile::Builder::new()
            .prefix("podmortem-fakehost-")
            .tempdir()
            .context("cannot create the fake host root")?;
        let root = dir.path();
        for d in ["usr/bin", "usr/sbin", "usr/lib", "etc", "oldroot"] {
            std::fs::create_dir_all(root.join(d)).context(format!("cannot create {d}"))?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("proc", "/proc"),
            ("sys", "/sys"),
            ("dev", "/dev"),
            ("tmp", "/tmp"),
        ] {
            symlink(target, root.join(link)).context(format!("cannot link {link}"))?;
        }
        std::fs::copy(image::BUSYBOX, root.join("usr/bin/busybox")).context("cannot copy busybox")?;
        for applet in ["sh", "sleep", "echo", "umount"] {
            symlink("busybox", root.join("usr/bin").join(applet)).context("cannot link an applet")?;
        }
        std::fs::write(root.join("etc/os-release"), OS_RELEASE).context("cannot write os-release")?;
        Ok(FakeHost {
            dir,
            children: Vec::new(),
        })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The root as a string, for `--host-root`.
    pub fn root_arg(&self) -> Result<&str> {
        self.root()
            .to_str()
            .ok_or_else(|| err("the fake host root is not UTF-8"))
    }

    /// Installs an executable shell script at `path` (absolute in the fake root).
    pub fn install(&self, path: &str, script: &str) -> Result<PathBuf> {
        let file = self.root().join(path.trim_start_matches('/'));
        std::fs::write(&file, format!("#!/bin/sh\n{script}\n")).context(format!("cannot write {path}"))?;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
            .context(format!("cannot chmod {path}"))?;
        Ok(file)
    }

    /// Runs the script at `path` in the fake root as a long-running process (a daemon: its
    /// process name is the script's file name).
    pub fn start_daemon(&mut self, path: &str) -> Result<u32> {
        let file = self.root().join(path.trim_start_matches('/'));
        let child = Command::new(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(format!("cannot start {}", file.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Starts a process in a new mount namespace whose root is this directory; returns its pid
    /// once it runs there. `nsenter -t <pid> -m` then enters this fake host.
    pub async fn start_namespace(&mut self) -> Result<u32> {
        let root = self.root_arg()?.to_owned();
        let script = format!(
            "mount --bind {root} {root} && cd {root} && pivot_root . oldroot && \
             exec /bin/busybox sh -c 'umount -l /oldroot; exec sleep 3600'"
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run unshare (util-linux)")?;
        let pid = child.id();
        self.children.push(child);
        // The pid stays (each step execs); wait until its root is the fake one.
        for _ in 0..100 {
            let inside = std::fs::read_link(format!("/proc/{pid}/root/usr/bin/sh")).ok();
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if inside.as_deref() == Some(Path::new("busybox")) && comm.trim() == "sleep" {
                return Ok(pid);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(err("the fake host's mount namespace did not come up within 2s"))
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
