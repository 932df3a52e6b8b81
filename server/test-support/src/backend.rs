//! A sandbox backend that starts nothing and records what it was asked, so a test can play
//! the runner of each sandbox with the token the server gave it.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use centaur_protocol::api::SandboxBackendKind;
use centaur_server::sandbox::{SandboxBackend, SandboxError, SandboxSpec, SandboxState};
use uuid::Uuid;

/// A sandbox backend that records what it was asked, so a test can act as the runner.
#[derive(Default)]
pub struct RecordingBackend {
    specs: Mutex<HashMap<Uuid, SandboxSpec>>,
    pub stopped: Mutex<Vec<Uuid>>,
}

impl RecordingBackend {
    /// The runner token sandbox `sandbox_id` was created with.
    pub fn token(&self, sandbox_id: Uuid) -> String {
        self.specs.lock().unwrap()[&sandbox_id]
            .attachment
            .as_ref()
            .expect("cold sandboxes are attached")
            .token
            .clone()
    }

    pub fn spec(&self, sandbox_id: Uuid) -> SandboxSpec {
        self.specs.lock().unwrap()[&sandbox_id].clone()
    }
}

#[async_trait]
impl SandboxBackend for RecordingBackend {
    fn kind(&self) -> SandboxBackendKind {
        // It starts nothing: the test attaches as each sandbox's runner.
        SandboxBackendKind::External
    }
    async fn create(&self, spec: &SandboxSpec) -> Result<(), SandboxError> {
        self.specs
            .lock()
            .unwrap()
            .insert(spec.sandbox_id, spec.clone());
        Ok(())
    }
    async fn status(&self, _: Uuid) -> Result<SandboxState, SandboxError> {
        Ok(SandboxState::Ready)
    }
    async fn stop(&self, sandbox_id: Uuid, _: &str) -> Result<(), SandboxError> {
        self.stopped.lock().unwrap().push(sandbox_id);
        Ok(())
    }
    async fn list(&self) -> Result<Vec<Uuid>, SandboxError> {
        Ok(self.specs.lock().unwrap().keys().copied().collect())
    }
}
