//! The `podmortem` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::export::stdout::OutputFormat;

/// podmortem watches a Kubernetes node's containers and explains why pods crash, from the
/// node's own evidence: what the container runtime says over CRI and publishes as events.
#[derive(Debug, Parser)]
#[command(name = "podmortem", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch the node and print findings until stopped (SIGINT/SIGTERM).
    Run(RunArgs),
    /// Check a config file and print the configuration that would be used.
    CheckConfig(ConfigArgs),
    /// Check the host for the programs, kernel modules, daemons and files that pods on it
    /// need (storage add-ons: Longhorn, OpenEBS, NFS, iSCSI, Ceph, ...) and print a report.
    /// Exit code 0 when nothing is missing, 1 when something is.
    Check(CheckArgs),
}

/// Arguments of `check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The configuration (its `host_deps` section, `host_root` and `containerd_address`).
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Check this rule of the catalogue (repeatable), e.g. `--rule longhorn`. Default: the
    /// rules that apply to the pods on this node, and `always` rules.
    #[arg(long = "rule", value_name = "NAME")]
    pub rules: Vec<String>,
    /// Check every dependency in the catalogue.
    #[arg(long, conflicts_with = "rules")]
    pub all: bool,
}

/// Arguments of `run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The configuration.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Log filter for podmortem's own logs on standard error (e.g. `info`, `podmortem=debug`)
    #[arg(long, value_name = "FILTER", env = "PODMORTEM_LOG", default_value = "info")]
    pub log_level: String,
}

/// The config file and the flags that override its keys of the same name.
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// YAML config file; unknown keys are rejected. See the README for every key.
    #[arg(long, value_name = "FILE", env = "PODMORTEM_CONFIG")]
    pub config: Option<PathBuf>,
    /// containerd's socket, for both CRI and events [default: /run/containerd/containerd.sock]
    #[arg(long, value_name = "SOCKET")]
    pub containerd_address: Option<PathBuf>,
    /// This node's name in Kubernetes [default: $NODE_NAME, else the hostname]
    #[arg(long, value_name = "NAME", env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Where the host's filesystem is mounted; /proc, /sys and /dev/kmsg are read below it
    /// [default: /]
    #[arg(long, value_name = "DIR")]
    pub host_root: Option<PathBuf>,
    /// Directory for state that must survive a restart [default: /var/lib/podmortem]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Finding format on standard output [default: auto: text on a terminal, JSON lines otherwise]
    #[arg(long, value_enum)]
    pub output: Option<OutputFormat>,
    /// Where /metrics, /healthz and /readyz are served, or `off` [default: 0.0.0.0:9464]
    #[arg(long, value_name = "ADDRESS:PORT", value_parser = parse_http_address)]
    pub http_address: Option<HttpAddress>,
}

/// An `--http-address` value: an address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpAddress {
    /// Serve here.
    At(std::net::SocketAddr),
    /// Do not serve.
    Off,
}

fn parse_http_address(s: &str) -> Result<HttpAddress, String> {
    if s == "off" {
        return Ok(HttpAddress::Off);
    }
    s.parse()
        .map(HttpAddress::At)
        .map_err(|e| format!("{e}: expected ADDRESS:PORT (e.g. 0.0.0.0:9464) or off"))
}

impl ConfigArgs {
    /// The config file (or defaults) with the flags applied.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(v) = &self.containerd_address {
            config.containerd_address.clone_from(v);
        }
        if let Some(v) = &self.node_name {
            config.node_name = Some(v.clone());
        }
        if let Some(v) = &self.host_root {
            config.host_root.clone_from(v);
        }
        if let Some(v) = &self.state_dir {
            config.state_dir.clone_from(v);
        }
        if let Some(v) = self.output {
            config.output = v;
        }
        match self.http_address {
            Some(HttpAddress::At(address)) => config.http.address = Some(address),
            Some(HttpAddress::Off) => config.http.address = None,
            None => {}
        }
        config.validate(Path::new("<command line>"))?;
        Ok(config)
    }
}

/// The node name: configured (flag, `$NODE_NAME` or file), else the host's hostname, read from
/// `<host_root>/etc/hostname` (a pod has a hostname of its own, the host's file does not lie),
/// else the kernel's. `None` when none of these says.
fn node_name(config: &Config) -> Option<String> {
    if let Some(name) = &config.node_name {
        return Some(name.clone());
    }
    crate::sources::host::hostname(&config.host_root)
}

/// Entry point of the binary. Exit codes: 0 success, 1 runtime failure, 2 bad usage or config.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig(args) => match args.config() {
            Ok(config) => match serde_yaml_ng::to_string(&config) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(error) => fail(1, &format!("cannot print the configuration: {error}")),
            },
            Err(error) => fail(2, &error.to_string()),
        },
        Command::Check(args) => {
            let config = match args.config.config() {
                Ok(config) => config,
                Err(error) => return fail(2, &error.to_string()),
            };
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(error) => return fail(1, &format!("cannot start the async runtime: {error}")),
            };
            let node = node_name(&config).unwrap_or_else(|| "this node".to_owned());
            let selection = crate::check::Selection {
                rules: args.rules,
                all: args.all,
            };
            match runtime.block_on(crate::check::run(&config, &node, &selection)) {
                Ok(outcome) => {
                    print!("{}", outcome.text);
                    if outcome.missing == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(error) => fail(2, &error.to_string()),
            }
        }
        Command::Run(args) => {
            let config = match args.config.config() {
                Ok(config) => config,
                Err(error) => return fail(2, &error.to_string()),
            };
            if let Err(error) = init_logging(&args.log_level) {
                return fail(2, &format!("invalid --log-level {:?}: {error}", args.log_level));
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(error) => return fail(1, &format!("cannot start the async runtime: {error}")),
            };
            let Some(node) = node_name(&config) else {
                return fail(2, "cannot tell this node's name: set --node-name or NODE_NAME");
            };
            runtime.block_on(async move {
                let shutdown = CancellationToken::new();
                tokio::spawn(stop_on_signal(shutdown.clone()));
                match crate::pipeline::run(config, node, shutdown).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(error) => fail(1, &error.to_string()),
                }
            })
        }
    }
}

#[allow(clippy::print_stderr)] // The one place that reports a fatal error to the user.
fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("podmortem: {message}");
    ExitCode::from(code)
}

fn init_logging(text: &str) -> Result<(), tracing_subscriber::filter::ParseError> {
    let mut filter = tracing_subscriber::EnvFilter::try_new(text)?;
    // kube's client logs every failed request as an error; podmortem logs a failing API once.
    if !text.contains("kube_client") {
        filter = filter.add_directive("kube_client::client::builder=off".parse()?);
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    Ok(())
}

async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot install signal handlers; stop podmortem with SIGKILL");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    shutdown.cancel();
}
