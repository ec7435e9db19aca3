//! gRPC definitions podmortem speaks.
//!
//! [`cri`] is a subset of the Kubernetes CRI `runtime.v1` API: only the RPCs, messages and
//! fields podmortem reads or that its test bed needs to create pods. Field names and numbers
//! match the upstream `api.proto`, so the wire format is the real one.

/// The CRI `runtime.v1` subset, generated from `proto/cri.proto`.
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod cri {
    tonic::include_proto!("runtime.v1");
}
