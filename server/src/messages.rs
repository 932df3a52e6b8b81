//! `POST /agent/message`: stores a message on a thread, once per `client_message_id`.

use centaur_protocol::ErrorCode;
use centaur_protocol::api::{MessageRequest, MessageResponse};
use centaur_protocol::{Author, EventBody, Role};
use uuid::Uuid;

use crate::app::AppState;
use crate::error::{ApiError, ApiResult, unique_violation};
use crate::events::{NewEvent, append};
use crate::threads;

const MAX_CLIENT_MESSAGE_ID_BYTES: usize = 200;

pub async fn post(state: &AppState, request: MessageRequest) -> ApiResult<MessageResponse> {
    post_as(state, request, None).await
}

/// [`post`], for a message a chat platform's user wrote (recorded on `message.created`).
pub async fn post_as(
    state: &AppState,
    request: MessageRequest,
    author: Option<Author>,
) -> ApiResult<MessageResponse> {
    if request.text.trim().is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            "text must not be empty",
        ));
    }
    if let Some(id) = &request.client_message_id
        && (id.is_empty() || id.len() > MAX_CLIENT_MESSAGE_ID_BYTES)
    {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("client_message_id must be 1 to {MAX_CLIENT_MESSAGE_ID_BYTES} bytes"),
        ));
    }
    let thread = threads::find(state, &request.thread_key).await?;
    let client_id = request.client_message_id.as_deref();
    if let Some(client_id) = client_id
        && let Some(existing) = by_client_id(state, thread.id, client_id).await?
    {
        return Ok(existing);
    }
    let role = request.role.unwrap_or(Role::User);
    let message_id = Uuid::now_v7();
    let mut tx = crate::db::begin(&state.pool).await?;
    let events = append(
        &mut tx,
        &thread.as_ref(),
        &[NewEvent::thread(EventBody::MessageCreated {
            message_id,
            role,
            text: request.text.clone(),
            author,
        })],
    )
    .await?;
    let event_id = events[0].event_id;
    let inserted = sqlx::query(
        "INSERT INTO messages (id, thread_id, role, text, client_message_id, event_id) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(message_id)
    .bind(thread.id)
    .bind(role.as_str())
    .bind(&request.text)
    .bind(client_id)
    .bind(event_id)
    .execute(&mut *tx)
    .await;
    match inserted {
        // The same client_message_id arrived concurrently: the other one is the message.
        Err(e) if unique_violation(&e).as_deref() == Some("messages_client_id") => {
            drop(tx);
            return by_client_id(state, thread.id, client_id.unwrap_or_default())
                .await?
                .ok_or_else(|| {
                    ApiError::conflict(ErrorCode::IdempotencyConflict, "retry the request")
                });
        }
        other => {
            other?;
        }
    }
    if role == Role::User {
        threads::set_title_if_none(&mut tx, thread.id, &request.text).await?;
    }
    tx.commit().await?;
    state.hub.publish(thread.id, events);
    Ok(MessageResponse {
        message_id,
        event_id,
    })
}

async fn by_client_id(
    state: &AppState,
    thread_id: i64,
    client_id: &str,
) -> ApiResult<Option<MessageResponse>> {
    let row: Option<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, event_id FROM messages WHERE thread_id = $1 AND client_message_id = $2",
    )
    .bind(thread_id)
    .bind(client_id)
    .fetch_optional(&state.pool)
    .await?;
    Ok(row.map(|(message_id, event_id)| MessageResponse {
        message_id,
        event_id,
    }))
}
