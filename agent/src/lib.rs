//! podmortem: a Kubernetes node agent that explains why pods crash, from the node's own
//! evidence. Data flows one way: [`sources`] → [`engine`] (with the [`inventory`] and the
//! [`detect`]ors) → [`export`].

pub mod backoff;
pub mod catalogue;
pub mod check;
pub mod cli;
pub mod config;
pub mod detect;
pub mod engine;
pub mod export;
pub mod http;
pub mod inventory;
pub mod kubernetes;
pub mod model;
pub mod pipeline;
pub mod sources;
pub mod state;
pub mod telemetry;
pub mod text;
