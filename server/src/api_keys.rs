//! API keys: created and revoked by an admin, stored as hashes.

use centaur_protocol::ErrorCode;
use centaur_protocol::api::{ApiKeyView, CreatedApiKey};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth::mint_api_key;
use crate::error::{ApiError, ApiResult};

const MAX_NAME_BYTES: usize = 200;

pub async fn create(state: &AppState, name: &str) -> ApiResult<CreatedApiKey> {
    let name = name.trim();
    if name.is_empty() || name.len() > MAX_NAME_BYTES {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidRequest,
            format!("name must be 1 to {MAX_NAME_BYTES} bytes"),
        ));
    }
    let id = Uuid::now_v7();
    let minted = mint_api_key(id);
    let created_at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO api_keys (id, name, secret_hash) VALUES ($1, $2, $3) RETURNING created_at",
    )
    .bind(id)
    .bind(name)
    .bind(&minted.secret_hash)
    .fetch_one(&state.pool)
    .await?;
    tracing::info!(api_key_id = %id, name, "API key created");
    Ok(CreatedApiKey {
        id,
        name: name.to_owned(),
        token: minted.token,
        created_at,
    })
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

pub async fn list(state: &AppState) -> ApiResult<Vec<ApiKeyView>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT id, name, created_at, revoked_at FROM api_keys ORDER BY created_at DESC",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| ApiKeyView {
            id: row.id,
            name: row.name,
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
        .collect())
}

/// Revokes a key; it stops working at once. Revoking twice is fine.
pub async fn revoke(state: &AppState, id: Uuid) -> ApiResult<()> {
    let found: Option<Uuid> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()) WHERE id = $1 RETURNING id",
    )
    .bind(id)
    .fetch_optional(&state.pool)
    .await?;
    found
        .map(|_| tracing::info!(api_key_id = %id, "API key revoked"))
        .ok_or_else(|| ApiError::not_found(ErrorCode::ApiKeyNotFound, format!("no API key {id}")))
}
