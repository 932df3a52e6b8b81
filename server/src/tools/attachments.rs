//! Files a tool call saves to its thread (`context().attach(...)` in a plugin), kept in
//! PostgreSQL and served at `GET /agent/threads/{thread_key}/attachments/{id}`.

/// A file a call produced, before it is stored.
#[derive(Debug)]
pub struct NewAttachment {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}
