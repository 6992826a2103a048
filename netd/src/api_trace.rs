//! Handler of `POST /v1/trace` (body and answer in
//! furrow_api::wire_trace), run by the VLAN driver on the eBPF switch.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::Json;
use furrow_api::error::code;
use furrow_api::wire_trace::{TraceRequest, TraceResponse};
use furrow_api::ApiError;

use crate::api::Failure;
use crate::daemon::Daemon;

pub async fn trace(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Result<Json<TraceResponse>, Failure> {
    let req: TraceRequest = serde_json::from_slice(&body)
        .map_err(|e| Failure(ApiError::new(code::DECODE, format!("request body: {e}"))))?;
    Ok(Json(d.vlan.trace(req).await?))
}
