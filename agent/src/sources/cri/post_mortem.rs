//! What the CRI source reads on the node right after a container exits abnormally, while the
//! evidence is still there: the tail of the attempt's log file, the program it could not
//! execute (from the log or the runtime's message), and whether that program is on the host
//! and in the container's image (through the snapshot's layers, since the container's own
//! root filesystem is gone once it exited).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::types::Mount;
use tonic::transport::Channel;

use crate::model::{ContainerInfo, ContainerState, Lookup, PostMortem, SnapshotRef};
use crate::sources::host::{find_program, HostView, Layers, ProgramLookup, DEFAULT_PATH};
use crate::sources::logs::erofs;
use crate::sources::logs::exec_failure::{self, ExecFailure};
use crate::sources::logs::{read_tail, TailConfig};

/// The containerd namespace of CRI's containers.
const CRI_NAMESPACE: &str = "k8s.io";
/// How many of the last log lines a finding carries.
pub const EVIDENCE_LINES: usize = 8;
/// At most this many PATH directories are searched (a pod sets its own PATH).
const MAX_PATH_DIRS: usize = 64;
/// One examination may take this long; then what it has not read is left out.
const EXAMINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Examinations remembered, so a listing after a single read does not repeat one.
const REMEMBERED: usize = 1024;

/// What examining exits needs.
#[derive(Debug, Clone)]
pub struct PostMortemContext {
    /// The host, for log files, programs and snapshot layers.
    pub host: HostView,
    /// The host's PATH.
    pub host_path: Vec<String>,
    /// How much of the log to read.
    pub tail: TailConfig,
    /// Exits that finished before this are not examined (old exits found in a first listing).
    pub since: SystemTime,
    /// Examinations done, by container id and exit time.
    pub done: Examined,
}

/// Examinations done, by container id and exit time (shared by the listing and single reads).
pub type Examined = Arc<Mutex<HashMap<(String, Option<SystemTime>), Arc<PostMortem>>>>;

impl PostMortemContext {
    /// Whether `c` exited abnormally recently enough to be examined.
    pub fn wants(&self, c: &ContainerInfo) -> bool {
        c.state == ContainerState::Exited
            && c.exit_code.is_some_and(|code| code != 0)
            && c.finished_at.is_none_or(|t| t >= self.since)
    }
}

/// `path` (absolute on the host) below the host root.
fn on_host(host: &HostView, path: &Path) -> PathBuf {
    host.root().join(path.strip_prefix("/").unwrap_or(path))
}

/// The directories of a snapshot's mount, upper first, below the host root.
pub fn layers_of(mounts: &[Mount], host: &HostView) -> Result<Vec<PathBuf>, String> {
    let [mount] = mounts else {
        return Err(format!(
            "the snapshot has {} mounts; one was expected",
            mounts.len()
        ));
    };
    let dirs: Vec<&str> = match mount.r#type.as_str() {
        "overlay" => {
            let option = |key: &str| mount.options.iter().find_map(|o| o.strip_prefix(key));
            let mut dirs: Vec<&str> = option("upperdir=").into_iter().collect();
            dirs.extend(option("lowerdir=").into_iter().flat_map(|l| l.split(':')));
            dirs
        }
        "bind" | "rbind" | "" => vec![mount.source.as_str()],
        other => return Err(format!("cannot look inside a {other} snapshot mount")),
    };
    if dirs.is_empty() || dirs.iter().any(|d| !d.starts_with('/')) {
        return Err(format!("unexpected snapshot mount options {:?}", mount.options));
    }
    Ok(dirs.iter().map(|d| on_host(host, Path::new(d))).collect())
}

/// Asks containerd for the mounts of a snapshot.
async fn snapshot_mounts(channel: Channel, snapshot: &SnapshotRef) -> Result<Vec<Mount>, String> {
    let mut client = SnapshotsClient::new(channel);
    let mut request = tonic::Request::new(MountsRequest {
        snapshotter: snapshot.snapshotter.clone(),
        key: snapshot.key.clone(),
    });
    request.set_timeout(std::time::Duration::from_secs(2));
    let namespace = tonic::metadata::MetadataValue::from_static(CRI_NAMESPACE);
    request.metadata_mut().insert("containerd-namespace", namespace);
    match client.mounts(request).await {
        Ok(response) => Ok(response.into_inner().mounts),
        Err(status) => Err(format!(
            "snapshot {} of {}: {}",
            snapshot.key,
            snapshot.snapshotter,
            status.message()
        )),
    }
}

/// Examines an exited container once (a second call returns the first result), within
/// [`EXAMINE_TIMEOUT`].
pub async fn examine_once(c: &ContainerInfo, cx: &PostMortemContext, channel: Channel) -> Arc<PostMortem> {
    let key = (c.id.clone(), c.finished_at);
    let known = cx.done.lock().ok().and_then(|done| done.get(&key).cloned());
    if let Some(pm) = known {
        return pm;
    }
    let pm = match tokio::time::timeout(EXAMINE_TIMEOUT, examine(c, cx, channel)).await {
        Ok(pm) => pm,
        Err(_) => PostMortem {
            log_error: Some(format!("reading the node took longer than {EXAMINE_TIMEOUT:?}")),
            ..PostMortem::default()
        },
    };
    let pm = Arc::new(pm);
    if let Ok(mut done) = cx.done.lock() {
        if done.len() >= REMEMBERED {
            done.clear();
        }
        done.insert(key, Arc::clone(&pm));
    }
    pm
}

/// Examines an exited container: reads its log tail and looks up the program it could not
/// execute. `channel` reaches containerd, for the snapshot's layers.
pub async fn examine(c: &ContainerInfo, cx: &PostMortemContext, channel: Channel) -> PostMortem {
    let mut pm = PostMortem::default();
    let tail = match &c.log_path {
        Some(path) => {
            let (path, config) = (on_host(&cx.host, path), cx.tail.clone());
            match tokio::task::spawn_blocking(move || read_tail(&path, &config)).await {
                Ok(Ok(tail)) => Some(tail),
                Ok(Err(e)) => {
                    pm.log_error = Some(e.to_string());
                    None
                }
                Err(e) => {
                    pm.log_error = Some(format!("the log reader failed: {e}"));
                    None
                }
            }
        }
        None => {
            pm.log_error = Some("the runtime gives no log path".into());
            None
        }
    };
    let lines: Vec<&str> = tail
        .as_ref()
        .map(|t| t.lines.iter().map(|l| l.text.as_str()).collect())
        .unwrap_or_default();
    pm.exec_failure = exec_failure::parse_line(&c.message)
        .or_else(|| exec_failure::find_exec_failure(lines.iter().copied()));
    pm.erofs = erofs::find_erofs(lines.iter().copied());
    let start = lines.len().saturating_sub(EVIDENCE_LINES);
    pm.log_tail = lines[start..].iter().map(|l| (*l).to_owned()).collect();
    if let Some(ExecFailure {
        program: Some(program),
        ..
    }) = &pm.exec_failure
    {
        // nsenter searches the container's PATH in the host's mount namespace; a mount helper
        // is found on the host's own.
        let path = dedup_path(container_path(c).into_iter().chain(cx.host_path.iter().cloned()));
        let (host, name) = (cx.host.clone(), program.clone());
        pm.on_host = Some(
            match tokio::task::spawn_blocking(move || match host.unmounted() {
                // Nothing found below an unmounted root proves nothing is missing.
                Some(why) => Err(why),
                None => host.find_program(&name, &path).map_err(|e| e.to_string()),
            })
            .await
            {
                Ok(Ok(found)) => Lookup::Done(found),
                Ok(Err(e)) => Lookup::Unknown(e),
                Err(e) => Lookup::Unknown(format!("the lookup failed: {e}")),
            },
        );
        pm.in_image = Some(in_image(c, program, cx, channel).await);
    }
    pm
}

/// Looks `program` up in the container's image, on the container's PATH.
async fn in_image(c: &ContainerInfo, program: &str, cx: &PostMortemContext, channel: Channel) -> Lookup {
    let Some(snapshot) = &c.rootfs else {
        return Lookup::Unknown("the runtime does not name the container's snapshot".into());
    };
    let layers = match snapshot_mounts(channel, snapshot).await {
        Ok(mounts) => match layers_of(&mounts, &cx.host) {
            Ok(layers) => layers,
            Err(e) => return Lookup::Unknown(e),
        },
        Err(e) => return Lookup::Unknown(e),
    };
    let path = dedup_path(container_path(c));
    if program.contains('/') && !program.starts_with('/') {
        return Lookup::Unknown(format!(
            "{program} is relative to the container's working directory"
        ));
    }
    // What lies on a volume is not in the image.
    let on_volume = |p: &str| {
        c.mounts.iter().any(|m| {
            let dest = m.container_path.trim_end_matches('/');
            !dest.is_empty() && (p == dest || p.strip_prefix(dest).is_some_and(|rest| rest.starts_with('/')))
        })
    };
    let volume_hides = on_volume(program) || (!program.contains('/') && path.iter().any(|d| on_volume(d)));
    let name = program.to_owned();
    let lookup = tokio::task::spawn_blocking(move || {
        if let Some(missing) = layers.iter().find(|l| !l.is_dir()) {
            return Err(format!("the image layer {} is gone", missing.display()));
        }
        find_program(&Layers::new(layers), &name, &path).map_err(|e| e.to_string())
    })
    .await;
    match lookup {
        Ok(Ok(found @ ProgramLookup::Found { .. })) => Lookup::Done(found),
        Ok(Ok(_)) if volume_hides => {
            Lookup::Unknown(format!("{program} may be on one of the container's volumes"))
        }
        Ok(Ok(found)) => Lookup::Done(found),
        Ok(Err(e)) => Lookup::Unknown(e),
        Err(e) => Lookup::Unknown(format!("the lookup failed: {e}")),
    }
}

/// The container's PATH directories (the default when it has none).
fn container_path(c: &ContainerInfo) -> Vec<String> {
    match &c.path_env {
        Some(p) => p.split(':').map(str::to_owned).collect(),
        None => DEFAULT_PATH.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// `dirs` without repeats or empty entries, at most [`MAX_PATH_DIRS`].
fn dedup_path(dirs: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in dirs {
        if !d.is_empty() && !out.contains(&d) {
            out.push(d);
            if out.len() == MAX_PATH_DIRS {
                break;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mount(kind: &str, source: &str, options: &[&str]) -> Mount {
        Mount {
            r#type: kind.into(),
            source: source.into(),
            target: String::new(),
            options: options.iter().map(|o| (*o).to_owned()).collect(),
        }
    }

    #[test]
    fn snapshot_mounts_give_their_layers_upper_first_below_the_host_root() {
        let host = HostView::new(Path::new("/host"));
        let overlay = mount(
            "overlay",
            "overlay",
            &[
                "index=off",
                "workdir=/var/lib/containerd/s/3/work",
                "upperdir=/var/lib/containerd/s/3/fs",
                "lowerdir=/var/lib/containerd/s/2/fs:/var/lib/containerd/s/1/fs",
            ],
        );
        assert_eq!(
            layers_of(&[overlay], &host).expect("layers"),
            [
                "/host/var/lib/containerd/s/3/fs",
                "/host/var/lib/containerd/s/2/fs",
                "/host/var/lib/containerd/s/1/fs"
            ]
            .map(PathBuf::from)
        );
        let single = mount("bind", "/var/lib/containerd/s/1/fs", &["ro", "rbind"]);
        assert_eq!(
            layers_of(&[single], &host).expect("bind"),
            [PathBuf::from("/host/var/lib/containerd/s/1/fs")]
        );
        assert!(layers_of(&[], &host).is_err());
        assert!(layers_of(&[mount("overlay", "overlay", &["index=off"])], &host).is_err());
        assert!(layers_of(&[mount("overlay", "o", &["lowerdir=relative"])], &host).is_err());
        assert!(layers_of(&[mount("zfs", "pool/x", &[])], &host).is_err());
    }
}
