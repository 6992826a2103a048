//! Network drivers: one per kind of network an attachment can join
//! (today the management network), each turning CNI requests into kernel
//! state and back.

pub(crate) mod common;
pub mod management;
pub mod overlay;
pub mod vlan;

use async_trait::async_trait;
use furrow_api::cni::CniResult;
use furrow_api::wire::AttachmentRequest;
use furrow_api::ApiError;

use crate::ports::AnyPort;

#[async_trait]
pub trait NetworkDriver: Send + Sync {
    /// The attachment kind this driver serves (`management`).
    fn kind(&self) -> &'static str;
    async fn add(&self, req: &AttachmentRequest) -> Result<CniResult, ApiError>;
    async fn del(&self, req: &AttachmentRequest) -> Result<(), ApiError>;
    async fn check(&self, req: &AttachmentRequest) -> Result<(), ApiError>;
    /// Releases a port known only from its record (CNI GC).
    async fn release(&self, port: &AnyPort) -> Result<(), ApiError>;
}
