//! Small state that must survive a restart, kept as one JSON file under `--state-dir`.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::sources::kmsg::KmsgPosition;

/// The file name under the state directory.
pub const STATE_FILE: &str = "state.json";

/// What can go wrong with the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The state directory could not be created.
    #[error("cannot create state directory {path}: {source}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The state file could not be written.
    #[error("cannot write state file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The persisted state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Every container exit that finished before this time has been handled (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exits_seen_until: Option<String>,
    /// Every kernel log record up to this one was handled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kmsg: Option<KmsgPosition>,
}

/// The state file and its current contents.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    state: State,
}

impl StateStore {
    /// Opens (creating the directory if needed) the state under `dir`. An unreadable or corrupt
    /// file is logged and replaced by an empty state: podmortem then behaves as on a first start.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes).unwrap_or_else(|error| {
                tracing::warn!(path = %path.display(), %error, "state file is corrupt; starting fresh");
                State::default()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read state file; starting fresh");
                State::default()
            }
        };
        Ok(StateStore { path, state })
    }

    /// The time up to which every exit was handled, if an earlier run recorded one.
    pub fn exits_seen_until(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(self.state.exits_seen_until.as_deref()?).ok()
    }

    /// Where reading the kernel log got to, if an earlier run recorded it.
    pub fn kmsg(&self) -> Option<&KmsgPosition> {
        self.state.kmsg.as_ref()
    }

    /// Records the progress made (either part may be absent), and saves.
    pub fn record(
        &mut self,
        exits_seen_until: Option<SystemTime>,
        kmsg: Option<KmsgPosition>,
    ) -> Result<(), StateError> {
        if let Some(t) = exits_seen_until {
            self.state.exits_seen_until = Some(humantime::format_rfc3339_nanos(t).to_string());
        }
        if kmsg.is_some() {
            self.state.kmsg = kmsg;
        }
        self.save()
    }

    /// Writes the state atomically and durably: a synced temporary file, renamed over the old
    /// one, then the directory synced.
    pub fn save(&self) -> Result<(), StateError> {
        let tmp = self.path.with_extension("json.tmp");
        let write = |path: &Path| -> std::io::Result<()> {
            let bytes = serde_json::to_vec_pretty(&self.state).map_err(std::io::Error::other)?;
            let mut file = std::fs::File::create(path)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            file.sync_all()?;
            std::fs::rename(path, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write(&tmp).map_err(|source| StateError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn round_trips_and_survives_corruption() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = StateStore::open(dir.path()).expect("open");
        assert_eq!(store.exits_seen_until(), None);
        let t = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        store.record(Some(t), None).expect("save");
        let again = StateStore::open(dir.path()).expect("reopen");
        assert_eq!(again.exits_seen_until(), Some(t));

        let mut store = StateStore::open(dir.path()).expect("reopen");
        let pos = KmsgPosition {
            boot_id: "b".into(),
            seq: 42,
            syslog: false,
            usec: None,
        };
        store.record(None, Some(pos.clone())).expect("save");
        let again = StateStore::open(dir.path()).expect("reopen");
        assert_eq!((again.exits_seen_until(), again.kmsg()), (Some(t), Some(&pos)));

        std::fs::write(dir.path().join(STATE_FILE), b"\x00{garbage").expect("write");
        let fresh = StateStore::open(dir.path()).expect("open corrupt");
        assert_eq!(fresh.exits_seen_until(), None);
    }
}
