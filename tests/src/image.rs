//! A container image built here, from Debian's static busybox: no registry is reachable.
//!
//! The image is an OCI image layout in a tar (one uncompressed layer holding `/bin/busybox` and
//! its applet links, a config, a manifest and an `index.json` naming the image), imported with
//! `ctr images import`. It serves as the pause image too: its default command never exits.

use std::path::Path;
use std::process::Command;

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::{err, Context, Result};

/// The image's name, also the sandbox (pause) image of the test bed's containerd.
pub const NAME: &str = "podmortem.local/busybox:testbed";
/// Where Debian's `busybox-static` puts busybox.
pub const BUSYBOX: &str = "/bin/busybox";

fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    format!(
        "sha256:{}",
        hash.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn append(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32, data: &[u8]) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut header, path, data)
        .context(format!("cannot add {path} to the image"))
}

fn append_dir(tar: &mut tar::Builder<Vec<u8>>, path: &str, mode: u32) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(mode);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Directory);
    tar.append_data(&mut header, path, std::io::empty())
        .context(format!("cannot add {path}/ to the image"))
}

fn append_link(tar: &mut tar::Builder<Vec<u8>>, path: &str, target: &str) -> Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_size(0);
    header.set_mode(0o777);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Symlink);
    tar.append_link(&mut header, path, target)
        .context(format!("cannot add link {path} to the image"))
}

/// The root filesystem layer: `/bin/busybox`, a link per applet, `/tmp`, `/etc/passwd`.
fn layer() -> Result<Vec<u8>> {
    let busybox = std::fs::read(BUSYBOX).context(format!("cannot read {BUSYBOX}"))?;
    let list = Command::new(BUSYBOX)
        .arg("--list")
        .output()
        .context("cannot run busybox --list")?;
    let applets = String::from_utf8_lossy(&list.stdout).into_owned();
    let mut tar = tar::Builder::new(Vec::new());
    for dir in ["bin", "etc", "tmp", "proc", "sys", "dev"] {
        append_dir(&mut tar, dir, if dir == "tmp" { 0o1777 } else { 0o755 })?;
    }
    append(&mut tar, "bin/busybox", 0o755, &busybox)?;
    for applet in applets
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        if applet.contains('/') || applet.starts_with('.') {
            continue;
        }
        append_link(&mut tar, &format!("bin/{applet}"), "busybox")?;
    }
    append(&mut tar, "etc/passwd", 0o644, b"root:x:0:0:root:/:/bin/sh\n")?;
    tar.into_inner().context("cannot finish the layer")
}

fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Writes the image (OCI layout, as a tar) to `out`.
pub fn build(out: &Path) -> Result<()> {
    let layer = layer()?;
    let layer_digest = digest(&layer);
    let config = serde_json::to_vec(&json!({
        "architecture": architecture(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["sleep", "2147483647"],
        },
        "rootfs": { "type": "layers", "diff_ids": [layer_digest] },
    }))
    .context("config JSON")?;
    let config_digest = digest(&config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config.len(),
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": layer_digest,
            "size": layer.len(),
        }],
    }))
    .context("manifest JSON")?;
    let manifest_digest = digest(&manifest);
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": {
                "io.containerd.image.name": NAME,
                "org.opencontainers.image.ref.name": "testbed",
            },
        }],
    }))
    .context("index JSON")?;

    let mut tar = tar::Builder::new(Vec::new());
    append(
        &mut tar,
        "oci-layout",
        0o644,
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    append(&mut tar, "index.json", 0o644, &index)?;
    for (d, blob) in [
        (&layer_digest, &layer),
        (&config_digest, &config),
        (&manifest_digest, &manifest),
    ] {
        let hex = d.trim_start_matches("sha256:");
        append(&mut tar, &format!("blobs/sha256/{hex}"), 0o644, blob)?;
    }
    let bytes = tar.into_inner().context("cannot finish the image tar")?;
    std::fs::write(out, bytes).context(format!("cannot write {}", out.display()))
}

/// Builds the image at `tar` and imports it into the containerd on `socket`.
pub fn import(socket: &Path, tar: &Path) -> Result<()> {
    build(tar)?;
    let path = tar.to_str().ok_or_else(|| err("image path is not UTF-8"))?;
    crate::containerd::ctr(socket, &["images", "import", path])?;
    let listed = crate::containerd::ctr(socket, &["images", "ls", "-q"])?;
    if !listed.lines().any(|l| l == NAME) {
        return Err(err(format!("{NAME} is not listed after import: {listed}")));
    }
    Ok(())
}
