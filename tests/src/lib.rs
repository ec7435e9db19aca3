//! podmortem's test bed: a private containerd with real pods, on the machine the tests run on.
//!
//! - [`containerd::Containerd`] starts a containerd whose socket, root and state all live under
//!   a temporary directory, configured from `containerd config default` with the two settings
//!   this kind of machine needs, and tears everything down when dropped (even when a test fails).
//! - [`image`] builds a busybox image locally (no registry is reachable) and imports it.
//! - [`cri::Cri`] creates pods and containers through CRI with the options tests need.
//! - [`agent::Agent`] runs the real `podmortem` binary against it and collects its findings.
//! - [`fake_apiserver::FakeApiServer`] stands in for the Kubernetes API server.
//! - [`otlp_receiver::OtlpReceiver`] is a real OTLP collector (gRPC or HTTP) on 127.0.0.1 that
//!   records what the agent exports to it.
//!
//! Everything needs root and Debian's `containerd`, `runc` and `busybox-static`; without them
//! the test bed fails with a message saying what is missing.

pub mod agent;
pub mod containerd;
pub mod cri;
pub mod daemonset;
pub mod fake_apiserver;
pub mod host;
pub mod http;
pub mod image;
pub mod loopfs;
pub mod otlp_receiver;
pub mod storm;

/// Errors of the test bed: a message saying what failed and why.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Error(pub String);

/// The test bed's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error`] from anything printable.
pub fn err(message: impl std::fmt::Display) -> Error {
    Error(message.to_string())
}

/// Shortens an error chain into one [`Error`] with context.
pub trait Context<T> {
    /// Adds what was being done.
    fn context(self, what: impl std::fmt::Display) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl std::fmt::Display) -> Result<T> {
        self.map_err(|e| Error(format!("{what}: {e}")))
    }
}

/// Checks that the test bed can run here: root, and the runtime binaries installed.
pub fn preflight() -> Result<()> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err(err("the test bed needs root (it runs containerd and runc)"));
    }
    for bin in ["containerd", "containerd-shim-runc-v2", "runc", "ctr"] {
        which(bin).ok_or_else(|| {
            err(format!(
                "`{bin}` is not installed: apt-get install -y containerd runc (or run `make deps`)"
            ))
        })?;
    }
    if !std::path::Path::new(image::BUSYBOX).exists() {
        return Err(err(format!(
            "{} is missing: apt-get install -y busybox-static (or run `make deps`)",
            image::BUSYBOX
        )));
    }
    Ok(())
}

/// The workspace's `target/` directory (`$CARGO_TARGET_DIR` if set).
pub fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Finds a program on `PATH`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// A private containerd with a CRI client on it: what most tests start with.
#[derive(Debug)]
pub struct TestBed {
    /// The runtime.
    pub containerd: containerd::Containerd,
    /// A CRI client on it.
    pub cri: cri::Cri,
}

impl TestBed {
    /// Starts a private containerd and connects to it.
    pub async fn start() -> Result<TestBed> {
        let containerd = tokio::task::spawn_blocking(containerd::Containerd::start)
            .await
            .context("test bed start panicked")??;
        let cri = cri::Cri::connect(&containerd.socket(), &containerd.dir().join("pods")).await?;
        Ok(TestBed { containerd, cri })
    }

    /// Starts a test bed and an agent on it with `config` (YAML), once the agent has
    /// subscribed to events.
    pub async fn start_with_agent(config: &str) -> Result<(TestBed, agent::Agent)> {
        let bed = TestBed::start().await?;
        let agent = bed.agent_with_config(config)?;
        agent
            .wait_for_log(
                "subscribed to containerd events",
                std::time::Duration::from_secs(20),
            )
            .await?;
        Ok((bed, agent))
    }

    /// Starts the agent on this test bed, with its state in the test bed's directory (the same
    /// for every agent started on it: a second agent resumes where the first stopped).
    pub fn agent(&self, extra: &[&str]) -> Result<agent::Agent> {
        agent::Agent::start(
            &self.containerd.socket(),
            &self.containerd.dir().join("agent-state"),
            extra,
        )
    }

    /// Starts the agent with a config file holding `yaml`.
    pub fn agent_with_config(&self, yaml: &str) -> Result<agent::Agent> {
        let path = self.config_file(yaml)?;
        self.agent(&["--config", &path])
    }

    /// Starts the agent with a config file holding `yaml` and exactly the `OTEL_*` environment
    /// variables in `env` (see [`agent::Agent::start_with_env`]).
    pub fn agent_with_config_and_env(&self, yaml: &str, env: &[(&str, &str)]) -> Result<agent::Agent> {
        let path = self.config_file(yaml)?;
        agent::Agent::start_with_env(
            &self.containerd.socket(),
            &self.containerd.dir().join("agent-state"),
            &["--config", &path],
            env,
        )
    }

    fn config_file(&self, yaml: &str) -> Result<String> {
        let path = self.containerd.dir().join("agent-config.yaml");
        std::fs::write(&path, yaml).context("cannot write the agent's config")?;
        path.to_str()
            .map(str::to_owned)
            .ok_or_else(|| err("test bed path is not UTF-8"))
    }
}
