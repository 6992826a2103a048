//! Handlers of the switch's diagnostic views (`GET /v1/fdb`, `/v1/vlans`,
//! `/v1/counters`; bodies in furrow_api::wire_diag), read from the eBPF
//! maps by the VLAN driver.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use furrow_api::wire_diag::{CountersView, FdbView, VlansView};

use crate::api::Failure;
use crate::daemon::Daemon;

pub async fn fdb(State(d): State<Arc<Daemon>>) -> Result<Json<FdbView>, Failure> {
    Ok(Json(d.vlan.fdb_view().await?))
}

pub async fn vlans(State(d): State<Arc<Daemon>>) -> Result<Json<VlansView>, Failure> {
    Ok(Json(d.vlan.vlans_view().await?))
}

pub async fn counters(State(d): State<Arc<Daemon>>) -> Result<Json<CountersView>, Failure> {
    Ok(Json(d.vlan.counters_view().await?))
}
