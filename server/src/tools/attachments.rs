//! Files a tool call saves to its thread (`context().attach(...)` in a plugin), kept in
//! PostgreSQL and served at `GET /agent/threads/{thread_key}/attachments/{id}`.
//!
//! A file is stored in the transaction that appends its call's `tool.call.finished`, which
//! names it ([`AttachmentRef`]). Its name is cut down to a plain file name (no folders, no
//! control characters) and its type checked as a media type (else
//! `application/octet-stream`), so both are safe in the download's headers.

use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use centaur_protocol::{AttachmentRef, ErrorCode, ThreadKey};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult};
use crate::threads;

/// The largest file a call may save.
pub const MAX_ATTACHMENT_BYTES: usize = 10 * 1024 * 1024;
/// A stored name is at most this long (bytes, cut on a character boundary).
const MAX_NAME_BYTES: usize = 200;
const FALLBACK_NAME: &str = "attachment";
const FALLBACK_MIME: &str = "application/octet-stream";

/// A file a call produced, before it is stored.
#[derive(Debug)]
pub struct NewAttachment {
    pub name: String,
    pub mime: String,
    pub bytes: Vec<u8>,
}

/// The first file larger than [`MAX_ATTACHMENT_BYTES`], as `(name, size)`.
pub fn too_large(attachments: &[NewAttachment]) -> Option<(&str, usize)> {
    attachments
        .iter()
        .find(|a| a.bytes.len() > MAX_ATTACHMENT_BYTES)
        .map(|a| (a.name.as_str(), a.bytes.len()))
}

/// Stores a call's files in the caller's transaction; the references for its
/// `tool.call.finished`.
pub async fn store(
    conn: &mut PgConnection,
    thread_id: i64,
    call_id: Uuid,
    tool: &str,
    attachments: Vec<NewAttachment>,
) -> sqlx::Result<Vec<AttachmentRef>> {
    let mut refs = Vec::with_capacity(attachments.len());
    for attachment in attachments {
        let id = Uuid::now_v7();
        let name = file_name(&attachment.name);
        let mime = media_type(&attachment.mime);
        let size = attachment.bytes.len();
        sqlx::query(
            "INSERT INTO thread_attachments (id, thread_id, call_id, tool, name, mime, size, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(thread_id)
        .bind(call_id)
        .bind(tool)
        .bind(&name)
        .bind(&mime)
        .bind(size as i64)
        .bind(attachment.bytes)
        .execute(&mut *conn)
        .await?;
        refs.push(AttachmentRef {
            attachment_id: id,
            name,
            mime,
            size: size as u64,
        });
    }
    Ok(refs)
}

/// `GET /agent/threads/{thread_key}/attachments/{attachment_id}`: the file's bytes, for people
/// and for that thread's sandbox.
pub async fn serve(
    state: &AppState,
    principal: &Principal,
    thread_key: &ThreadKey,
    attachment_id: Uuid,
) -> ApiResult<Response> {
    principal.require_read(thread_key)?;
    let thread = threads::find(state, thread_key).await?;
    let row: Option<(String, String, Vec<u8>)> = sqlx::query_as(
        "SELECT name, mime, data FROM thread_attachments WHERE id = $1 AND thread_id = $2",
    )
    .bind(attachment_id)
    .bind(thread.id)
    .fetch_optional(&state.pool)
    .await?;
    let Some((name, mime, data)) = row else {
        return Err(ApiError::not_found(
            ErrorCode::NotFound,
            format!("no attachment {attachment_id} on thread `{thread_key}`"),
        ));
    };
    let content_type = HeaderValue::from_str(&media_type(&mime))
        .unwrap_or_else(|_| HeaderValue::from_static(FALLBACK_MIME));
    let disposition = HeaderValue::from_str(&content_disposition(&file_name(&name)))
        .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    Ok((
        StatusCode::OK,
        [
            (CONTENT_TYPE, content_type),
            (CONTENT_DISPOSITION, disposition),
            (X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        ],
        data,
    )
        .into_response())
}

/// A plain file name from what a plugin gave: its last path component, without control
/// characters, surrounding spaces or leading dots, at most [`MAX_NAME_BYTES`]; `attachment`
/// when nothing is left.
pub fn file_name(given: &str) -> String {
    let last = given.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last.chars().filter(|c| !c.is_control()).collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let name = trimmed[..end].trim_end();
    if name.is_empty() {
        FALLBACK_NAME.to_owned()
    } else {
        name.to_owned()
    }
}

/// `type/subtype` (lowercase, with any parameters dropped) when the plugin's type is one, else
/// `application/octet-stream`.
pub fn media_type(given: &str) -> String {
    let essence = given
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let token = |s: &str| {
        !s.is_empty()
            && s.len() <= 127
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&^_.+-".contains(&b))
    };
    match essence.split_once('/') {
        Some((kind, sub)) if token(kind) && token(sub) => essence,
        Some(_) | None => FALLBACK_MIME.to_owned(),
    }
}

/// `attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded>` (RFC 6266).
fn content_disposition(name: &str) -> String {
    let fallback: String = name
        .chars()
        .map(|c| {
            if (c.is_ascii_graphic() && c != '"' && c != '\\') || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::with_capacity(name.len() * 3);
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_plain_file_names() {
        assert_eq!(file_name("report.csv"), "report.csv");
        assert_eq!(file_name("../../etc/passwd"), "passwd");
        assert_eq!(file_name("C:\\temp\\a b.txt"), "a b.txt");
        assert_eq!(file_name("..."), "attachment");
        assert_eq!(file_name(".env"), "env");
        assert_eq!(file_name("a\nb\u{7}.txt"), "ab.txt");
        assert_eq!(file_name("dir/"), "attachment");
        let long = "é".repeat(300);
        let cut = file_name(&long);
        assert!(cut.len() <= MAX_NAME_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn media_types_are_checked() {
        assert_eq!(media_type("text/csv"), "text/csv");
        assert_eq!(media_type("Text/HTML; charset=utf-8"), "text/html");
        assert_eq!(
            media_type("application/vnd.api+json"),
            "application/vnd.api+json"
        );
        assert_eq!(media_type("text"), FALLBACK_MIME);
        assert_eq!(media_type("text/plain\r\nX-Evil: 1"), FALLBACK_MIME);
        assert_eq!(media_type(""), FALLBACK_MIME);
    }

    #[test]
    fn content_disposition_quotes_safely() {
        assert_eq!(
            content_disposition("a \"b\".txt"),
            "attachment; filename=\"a _b_.txt\"; filename*=UTF-8''a%20%22b%22.txt"
        );
        assert_eq!(
            content_disposition("résumé.pdf"),
            "attachment; filename=\"r_sum_.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf"
        );
    }
}
