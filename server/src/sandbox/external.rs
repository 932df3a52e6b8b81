//! The `external` backend: the server starts no sandboxes. A runner started by someone else
//! (an operator, a test, a machine of your own) attaches through the runner API, with the admin
//! key or a sandbox token.

use async_trait::async_trait;
use centaur_protocol::api::SandboxBackendKind;
use uuid::Uuid;

use super::{SandboxBackend, SandboxError, SandboxSpec, SandboxState};

#[derive(Debug, Default)]
pub struct ExternalBackend;

#[async_trait]
impl SandboxBackend for ExternalBackend {
    fn kind(&self) -> SandboxBackendKind {
        SandboxBackendKind::External
    }

    async fn create(&self, _spec: &SandboxSpec) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn status(&self, _sandbox_id: Uuid) -> Result<SandboxState, SandboxError> {
        Ok(SandboxState::Ready)
    }

    async fn stop(&self, _sandbox_id: Uuid, _reason: &str) -> Result<(), SandboxError> {
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Uuid>, SandboxError> {
        Ok(Vec::new())
    }
}
