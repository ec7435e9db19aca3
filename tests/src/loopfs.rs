//! A real filesystem on a loop device (ext4 in a file), mounted where a test wants it, to make
//! a node filesystem read-only for real.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{err, Context, Result};

/// A mounted ext4 loop filesystem; unmounted (lazily) on drop.
#[derive(Debug)]
pub struct LoopFs {
    /// Where it is mounted.
    pub dir: PathBuf,
    mounted: bool,
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().context(format!("cannot run {cmd:?}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(format!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

impl LoopFs {
    /// Makes a 32 MiB ext4 image below `base` and mounts it at `base/<name>`, with
    /// `errors=remount-ro` as node filesystems usually are.
    pub fn new(base: &Path, name: &str) -> Result<LoopFs> {
        let image = base.join(format!("{name}.img"));
        let dir = base.join(name);
        std::fs::create_dir_all(&dir).context("cannot create the mount point")?;
        run(Command::new("truncate").arg("-s").arg("32M").arg(&image))?;
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        run(Command::new("mount")
            .args(["-o", "loop,errors=remount-ro"])
            .arg(&image)
            .arg(&dir))?;
        Ok(LoopFs { dir, mounted: true })
    }

    /// `mount -o remount,<mode>`.
    pub fn remount(&self, mode: &str) -> Result<()> {
        run(Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir))
    }

    /// The loop device, as the mount table names it (`/dev/loop3`).
    pub fn device(&self) -> Result<String> {
        let out = Command::new("findmnt")
            .args(["-n", "-o", "SOURCE"])
            .arg(&self.dir)
            .output()
            .context("cannot run findmnt")?;
        let device = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if device.is_empty() {
            return Err(err(format!("{} is not mounted", self.dir.display())));
        }
        Ok(device)
    }

    /// Makes the kernel report an ext4 error on it, for real: ext4 then marks it read-only.
    pub fn trigger_error(&self, message: &str) -> Result<()> {
        let device = self.device()?;
        let name = device.trim_start_matches("/dev/");
        let trigger = PathBuf::from(format!("/sys/fs/ext4/{name}/trigger_fs_error"));
        std::fs::write(&trigger, message).context(format!("cannot write {}", trigger.display()))
    }

    /// Unmounts it.
    pub fn unmount(&mut self) -> Result<()> {
        if self.mounted {
            run(Command::new("umount").arg("-l").arg(&self.dir))?;
            self.mounted = false;
        }
        Ok(())
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let _ = self.unmount();
    }
}
