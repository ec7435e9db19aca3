//! A thin CRI client over containerd's unix socket: one method per RPC podmortem uses, each
//! bounded by a timeout, each error naming the socket and the RPC.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podmortem_proto::cri;
use podmortem_proto::cri::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;

use super::convert::{self, VerboseInfo};
use crate::model::{ContainerInfo, PodInfo, PodRef};

/// What can go wrong talking CRI.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket could not be connected to (absent, refused, permission).
    #[error("cannot connect to the CRI socket {socket}: {source}")]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// An RPC returned an error status.
    #[error("CRI {rpc} on {socket} failed: {code:?}: {message}")]
    Rpc {
        /// The socket.
        socket: PathBuf,
        /// The RPC.
        rpc: &'static str,
        /// gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
    /// An RPC (or the connection) did not answer in time.
    #[error("CRI {rpc} on {socket} did not answer within {timeout:?}")]
    Timeout {
        /// The socket.
        socket: PathBuf,
        /// The RPC.
        rpc: &'static str,
        /// The limit that was hit.
        timeout: Duration,
    },
}

impl CriError {
    /// Whether the error says the object does not exist (any more).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            CriError::Rpc {
                code: tonic::Code::NotFound,
                ..
            }
        )
    }
}

/// Runtime name and versions, from `Version`.
#[derive(Debug, Clone)]
pub struct RuntimeVersion {
    /// e.g. `containerd`.
    pub runtime_name: String,
    /// e.g. `1.6.20`.
    pub runtime_version: String,
    /// e.g. `v1`.
    pub api_version: String,
}

/// A connected CRI client. Cheap to clone; clones share the connection, which re-dials by
/// itself when the runtime restarts.
#[derive(Debug, Clone)]
pub struct CriClient {
    inner: RuntimeServiceClient<Channel>,
    channel: Channel,
    socket: PathBuf,
    timeout: Duration,
}

impl CriClient {
    /// Dials `socket` and checks that it speaks CRI `runtime.v1`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<(Self, RuntimeVersion), CriError> {
        let channel = tokio::time::timeout(timeout, containerd_client::connect(socket))
            .await
            .map_err(|_| CriError::Timeout {
                socket: socket.to_owned(),
                rpc: "connect",
                timeout,
            })?
            .map_err(|source| CriError::Connect {
                socket: socket.to_owned(),
                source,
            })?;
        let mut client = CriClient {
            inner: RuntimeServiceClient::new(channel.clone()),
            channel,
            socket: socket.to_owned(),
            timeout,
        };
        let version = client.version().await?;
        Ok((client, version))
    }

    /// The connection, for containerd's own services on the same socket.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    async fn call<T, F>(&self, rpc: &'static str, fut: F) -> Result<T, CriError>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(CriError::Timeout {
                socket: self.socket.clone(),
                rpc,
                timeout: self.timeout,
            }),
            Ok(Err(status)) => Err(CriError::Rpc {
                socket: self.socket.clone(),
                rpc,
                code: status.code(),
                message: status.message().to_owned(),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }

    /// `Version`.
    pub async fn version(&mut self) -> Result<RuntimeVersion, CriError> {
        let mut inner = self.inner.clone();
        let v = self
            .call(
                "Version",
                inner.version(cri::VersionRequest { version: "v1".into() }),
            )
            .await?;
        Ok(RuntimeVersion {
            runtime_name: v.runtime_name,
            runtime_version: v.runtime_version,
            api_version: v.runtime_api_version,
        })
    }

    /// `ListPodSandbox`, every sandbox.
    pub async fn list_pods(&self) -> Result<Vec<PodInfo>, CriError> {
        let mut inner = self.inner.clone();
        let resp = self
            .call(
                "ListPodSandbox",
                inner.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
            )
            .await?;
        Ok(resp.items.into_iter().map(convert::pod_from_list).collect())
    }

    /// `PodSandboxStatus` of one sandbox.
    pub async fn pod_status(&self, pod_sandbox_id: &str) -> Result<Option<PodInfo>, CriError> {
        let mut inner = self.inner.clone();
        let req = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.to_owned(),
            verbose: false,
        };
        let resp = self
            .call("PodSandboxStatus", inner.pod_sandbox_status(req))
            .await?;
        Ok(resp.status.map(convert::pod_from_status))
    }

    /// `ListContainers`: id, sandbox id and state of every container.
    pub async fn list_containers(&self) -> Result<Vec<cri::Container>, CriError> {
        let mut inner = self.inner.clone();
        let filter = None;
        let resp = self
            .call(
                "ListContainers",
                inner.list_containers(cri::ListContainersRequest { filter }),
            )
            .await?;
        Ok(resp.containers)
    }

    /// `ContainerStatus` (verbose, for sandbox id, pid and cgroup path) of one container.
    /// `pod_sandbox_id` is used when the verbose info does not name the sandbox; `pod_fallback`
    /// names the pod when the container's labels do not.
    pub async fn container_status(
        &self,
        container_id: &str,
        pod_sandbox_id: Option<&str>,
        pod_fallback: &PodRef,
    ) -> Result<Option<ContainerInfo>, CriError> {
        let mut inner = self.inner.clone();
        let req = cri::ContainerStatusRequest {
            container_id: container_id.to_owned(),
            verbose: true,
        };
        let resp = self.call("ContainerStatus", inner.container_status(req)).await?;
        let info: VerboseInfo = convert::verbose_info(&resp.info);
        let sandbox = info
            .sandbox_id
            .clone()
            .or_else(|| pod_sandbox_id.map(str::to_owned))
            .unwrap_or_default();
        Ok(resp
            .status
            .map(|status| convert::container_from_status(status, sandbox, info, pod_fallback)))
    }
}
