//! The HTTP/JSON API on netd's unix socket (routes listed in
//! furrow_api::wire). Bodies are decoded here, not by axum's extractors,
//! so every malformed request gets the one error shape (code 6 with
//! serde's message, which names the field).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use furrow_api::error::code;
use furrow_api::resource::{canonical_kind, redact_secrets, KINDS};
use furrow_api::wire::{AddResponse, AttachmentRequest, GcRequest, ResourceList};
use furrow_api::{ApiError, API_VERSION, API_VERSION_HEADER};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::daemon::Daemon;

pub struct Failure(pub ApiError);

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0)).into_response()
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

type Reply<T> = Result<Json<T>, Failure>;

fn decode<T: DeserializeOwned>(body: &Bytes) -> Result<T, Failure> {
    serde_json::from_slice(body)
        .map_err(|e| Failure(ApiError::new(code::DECODE, format!("request body: {e}"))))
}

/// Every route behind the access check (see api_access): serve it with
/// `into_make_service_with_connect_info::<Peer>()` so each request
/// carries its connection's credentials.
pub fn router(d: Arc<Daemon>, access: crate::api_access::Access) -> Router {
    Router::new()
        .route("/v1/cni/add", post(cni_add))
        .route("/v1/cni/del", post(cni_del))
        .route("/v1/cni/check", post(cni_check))
        .route("/v1/cni/gc", post(cni_gc))
        .route("/v1/cni/status", get(cni_status))
        .route("/v1/status", get(status))
        .route("/v1/ports", get(ports))
        .route("/v1/networks", get(networks))
        .route("/v1/clusternetworks", get(cluster_networks))
        .route("/v1/dhcp/leases", get(dhcp_leases))
        .route("/v1/dhcp/pools", get(dhcp_pools))
        .route("/v1/dhcp/clients", get(dhcp_clients))
        .route("/v1/dhcp/discover", post(dhcp_discover))
        .route("/v1/dhcp/discovered", get(dhcp_discovered))
        .route("/v1/vips", get(vips))
        .route("/v1/nodes", get(nodes))
        .route("/v1/nodes/{name}", axum::routing::delete(forget_node))
        .route("/v1/bgp", get(bgp))
        .route("/v1/fdb", get(crate::api_views::fdb))
        .route("/v1/vlans", get(crate::api_views::vlans))
        .route("/v1/counters", get(crate::api_views::counters))
        .route("/v1/trace", post(crate::api_trace::trace))
        .route("/v1/resources", get(kinds))
        .route(
            "/v1/resources/{kind}",
            get(list_resources).put(apply_resource).post(apply_resource),
        )
        .route(
            "/v1/resources/{kind}/{name}",
            get(get_resource).put(apply_named).delete(delete_resource),
        )
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            access,
            crate::api_access::authorize,
        ))
        .layer(axum::middleware::map_response(add_version_header))
        .with_state(d)
}

async fn add_version_header(mut r: Response) -> Response {
    r.headers_mut().insert(
        API_VERSION_HEADER,
        HeaderValue::from_str(&API_VERSION.to_string()).expect("digits"),
    );
    r
}

async fn not_found() -> Failure {
    Failure(ApiError::new(code::NOT_FOUND, "no such API route"))
}

async fn cni_add(State(d): State<Arc<Daemon>>, body: Bytes) -> Reply<AddResponse> {
    let req: AttachmentRequest = decode(&body)?;
    Ok(Json(AddResponse {
        result: d.cni_add(req).await?,
    }))
}

async fn cni_del(State(d): State<Arc<Daemon>>, body: Bytes) -> Reply<Value> {
    let req: AttachmentRequest = decode(&body)?;
    d.cni_del(req).await?;
    Ok(Json(serde_json::json!({})))
}

async fn cni_check(State(d): State<Arc<Daemon>>, body: Bytes) -> Reply<Value> {
    let req: AttachmentRequest = decode(&body)?;
    d.cni_check(req).await?;
    Ok(Json(serde_json::json!({})))
}

async fn cni_gc(State(d): State<Arc<Daemon>>, body: Bytes) -> Reply<furrow_api::wire::GcResponse> {
    let req: GcRequest = decode(&body)?;
    Ok(Json(d.cni_gc(req).await?))
}

async fn cni_status(State(d): State<Arc<Daemon>>) -> Reply<furrow_api::wire::ReadyResponse> {
    Ok(Json(d.cni_status().await))
}

async fn status(State(d): State<Arc<Daemon>>) -> Reply<furrow_api::wire::NodeStatus> {
    Ok(Json(d.status().await?))
}

async fn ports(State(d): State<Arc<Daemon>>) -> Reply<Vec<furrow_api::wire::PortInfo>> {
    Ok(Json(d.ports().await?))
}

async fn networks(State(d): State<Arc<Daemon>>) -> Reply<Vec<furrow_api::wire::NetworkInfo>> {
    Ok(Json(d.networks().await?))
}

async fn cluster_networks(
    State(d): State<Arc<Daemon>>,
) -> Reply<Vec<furrow_api::wire::ClusterNetworkInfo>> {
    Ok(Json(d.vlan.infos().await?))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaseQuery {
    /// A pool name or its CNI network name.
    network: Option<String>,
    /// Only leases held by VMs on this node.
    node: Option<String>,
}

async fn dhcp_leases(
    State(d): State<Arc<Daemon>>,
    q: Result<axum::extract::Query<LeaseQuery>, axum::extract::rejection::QueryRejection>,
) -> Reply<Vec<furrow_api::wire::LeaseInfo>> {
    let q = q
        .map_err(|e| {
            Failure(ApiError::new(
                code::INVALID_CONFIG,
                format!("query: {e} (expected network=<pool or network>, node=<node>)"),
            ))
        })?
        .0;
    let mut leases = d.dhcp.leases(q.network.as_deref()).await;
    if let Some(n) = &q.node {
        leases.retain(|l| &l.node == n);
    }
    Ok(Json(leases))
}

async fn dhcp_pools(State(d): State<Arc<Daemon>>) -> Reply<Vec<furrow_api::wire::PoolInfo>> {
    Ok(Json(d.dhcp.pools().await))
}

async fn bgp(State(d): State<Arc<Daemon>>) -> Reply<furrow_api::wire::BgpInfo> {
    Ok(Json(d.vip.bgp_info().await))
}

async fn nodes(State(d): State<Arc<Daemon>>) -> Reply<Vec<furrow_api::wire::NodeMemberInfo>> {
    Ok(Json(
        d.members
            .info()
            .await
            .map_err(crate::resources::store_error)?,
    ))
}

async fn forget_node(
    State(d): State<Arc<Daemon>>,
    UrlPath(name): UrlPath<String>,
) -> Reply<serde_json::Value> {
    use crate::membership::ForgetOutcome;
    match d
        .members
        .forget(&name)
        .await
        .map_err(crate::resources::store_error)?
    {
        ForgetOutcome::Forgotten => Ok(Json(serde_json::json!({"forgotten": name}))),
        ForgetOutcome::Unknown => Err(ApiError::new(
            code::NOT_FOUND,
            format!("node {name:?}: no membership record"),
        )
        .into()),
        ForgetOutcome::NotGone { seen_ms_ago } => Err(ApiError::new(
            code::CONFLICT,
            format!(
                "node {name:?} is not gone (seen {:.1} s ago, grace {} s): only a gone node can be forgotten",
                seen_ms_ago as f64 / 1000.0,
                d.members.grace().as_secs()
            ),
        )
        .into()),
    }
}

async fn vips(State(d): State<Arc<Daemon>>) -> Reply<Vec<furrow_api::wire::VipInfo>> {
    Ok(Json(d.vip.info().await))
}

async fn dhcp_clients(
    State(d): State<Arc<Daemon>>,
) -> Reply<Vec<furrow_api::wire::DhcpClientInfo>> {
    Ok(Json(d.dhcp_clients.infos().await))
}

async fn dhcp_discover(
    State(d): State<Arc<Daemon>>,
    body: Bytes,
) -> Reply<furrow_api::wire::DiscoveredNetwork> {
    let req: furrow_api::wire::DiscoverRequest = decode(&body)?;
    Ok(Json(d.dhcp_clients.discover(req).await?))
}

async fn dhcp_discovered(
    State(d): State<Arc<Daemon>>,
) -> Reply<Vec<furrow_api::wire::DiscoveredNetwork>> {
    Ok(Json(d.dhcp_clients.discovered().await?))
}

async fn kinds() -> Json<Value> {
    Json(serde_json::json!({
        "kinds": KINDS.iter().map(|(k, p)| serde_json::json!({"kind": k, "plural": p})).collect::<Vec<_>>()
    }))
}

fn kind_of(input: &str) -> Result<&'static str, Failure> {
    canonical_kind(input).ok_or_else(|| {
        Failure(ApiError::new(
            code::NOT_FOUND,
            format!(
                "unknown resource kind {input:?}: expected one of {}",
                KINDS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
            ),
        ))
    })
}

async fn list_resources(
    State(d): State<Arc<Daemon>>,
    UrlPath(kind): UrlPath<String>,
) -> Reply<ResourceList> {
    let kind = kind_of(&kind)?;
    let mut items = d.resources.list(kind).await?;
    items.iter_mut().for_each(redact_secrets);
    Ok(Json(ResourceList { items }))
}

async fn get_resource(
    State(d): State<Arc<Daemon>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Reply<Value> {
    let kind = kind_of(&kind)?;
    match d.resources.get(kind, &name).await? {
        Some(mut v) => {
            redact_secrets(&mut v);
            Ok(Json(v))
        }
        None => Err(Failure(ApiError::new(
            code::NOT_FOUND,
            format!("{kind} {name:?} not found"),
        ))),
    }
}

async fn apply_resource(
    State(d): State<Arc<Daemon>>,
    UrlPath(kind): UrlPath<String>,
    body: Bytes,
) -> Reply<Value> {
    let kind = kind_of(&kind)?;
    let doc: Value = decode(&body)?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(Failure(ApiError::invalid_field(
            "kind",
            format!("the document's kind must be {kind:?} on this route"),
        )));
    }
    let mut stored = d.apply(doc).await?;
    redact_secrets(&mut stored);
    Ok(Json(stored))
}

async fn apply_named(
    State(d): State<Arc<Daemon>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
    body: Bytes,
) -> Reply<Value> {
    let kind = kind_of(&kind)?;
    let doc: Value = decode(&body)?;
    if doc.get("kind").and_then(|k| k.as_str()) != Some(kind) {
        return Err(Failure(ApiError::invalid_field(
            "kind",
            format!("the document's kind must be {kind:?} on this route"),
        )));
    }
    if doc.pointer("/metadata/name").and_then(|n| n.as_str()) != Some(name.as_str()) {
        return Err(Failure(ApiError::invalid_field(
            "metadata.name",
            format!("must be {name:?} to match the URL"),
        )));
    }
    let mut stored = d.apply(doc).await?;
    redact_secrets(&mut stored);
    Ok(Json(stored))
}

async fn delete_resource(
    State(d): State<Arc<Daemon>>,
    UrlPath((kind, name)): UrlPath<(String, String)>,
) -> Reply<Value> {
    let kind = kind_of(&kind)?;
    d.delete_resource(kind, &name).await?;
    Ok(Json(serde_json::json!({})))
}

async fn metrics(State(d): State<Arc<Daemon>>) -> Response {
    let body = d.metrics_text().await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

pub use crate::api_access::bind;
