//! The agent's HTTP endpoint: `/metrics` (Prometheus text), `/healthz` (the process is alive)
//! and `/readyz` (its sources are connected).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Settings of the HTTP endpoint (`http:` in the config file).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where to listen (`--http-address`); None turns the endpoint off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            address: Some(SocketAddr::from(([0, 0, 0, 0], 9464))),
        }
    }
}
