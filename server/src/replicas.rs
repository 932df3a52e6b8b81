//! Server replicas: who this one is, and which are alive.
//!
//! Every sandbox row names the replica that runs it (`sandboxes.owner`). A replica asks its own
//! backend only about its own sandboxes: another replica's are not missing just because this
//! one does not run them. Each replica writes a heartbeat (`replicas.seen_at`); the sandboxes of
//! a replica not seen for `CENTAUR_REPLICA_DEAD_AFTER_SECS` are released by the reaper of any
//! live replica, and a replica that restarts under the same id within that time takes its
//! sandboxes back (the local backend adopts them).

use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::app::AppState;
use crate::config::Config;

/// This replica's id: `CENTAUR_REPLICA_ID`, or one that stays the same across restarts of the
/// same server on the same machine: the backend, the host's name and a digest of the data
/// folder (`local@build-7:3f2a9c1d`).
pub fn id_for(config: &Config, backend: &str) -> String {
    if let Some(id) = &config.replica_id {
        return id.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let data = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
    let digest = Sha256::digest(data.as_os_str().as_encoded_bytes());
    let short: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{backend}@{host}:{short}")
}

/// Until its first heartbeat is written, a replica tries this often.
const FIRST_BEAT_RETRY: Duration = Duration::from_millis(50);

/// How often a replica says it is alive, for a given time after which it counts as dead.
pub fn heartbeat_every(dead_after: Duration) -> Duration {
    (dead_after / 4).clamp(Duration::from_millis(100), Duration::from_secs(5))
}

/// Writes this replica's heartbeat until shutdown.
pub fn spawn_heartbeat(state: AppState) {
    tokio::spawn(async move {
        let dead_after = Duration::from_secs(state.config.replica_dead_after_secs);
        let every = heartbeat_every(dead_after);
        let mut beaten = false;
        loop {
            if state.readiness.is_migrated() {
                match beat(&state).await {
                    Ok(()) => beaten = true,
                    Err(error) => tracing::debug!(%error, "replica heartbeat failed; will retry"),
                }
            }
            // Quickly until the first beat, so a new replica is known before its first sandbox.
            let pause = if beaten { every } else { FIRST_BEAT_RETRY };
            tokio::select! {
                _ = state.shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    });
}

/// Replicas not heard from for this long are forgotten.
const FORGET_AFTER_DAYS: i32 = 7;

async fn beat(state: &AppState) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM replicas WHERE seen_at < now() - make_interval(days => $1)")
        .bind(FORGET_AFTER_DAYS)
        .execute(&state.pool)
        .await?;
    sqlx::query(
        "INSERT INTO replicas (id) VALUES ($1) \
         ON CONFLICT (id) DO UPDATE SET seen_at = now()",
    )
    .bind(state.replica.as_ref())
    .execute(&state.pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_by_data_folder() {
        let mut config = Config::new("postgres://unused");
        config.data_dir = "/var/lib/centaur-a".into();
        let a = id_for(&config, "local");
        assert_eq!(a, id_for(&config, "local"));
        assert!(a.starts_with("local@"), "{a}");
        config.data_dir = "/var/lib/centaur-b".into();
        assert_ne!(a, id_for(&config, "local"));
        config.replica_id = Some("replica-1".into());
        assert_eq!(id_for(&config, "local"), "replica-1");
    }

    #[test]
    fn heartbeats_come_several_times_within_the_dead_time() {
        assert_eq!(
            heartbeat_every(Duration::from_secs(30)),
            Duration::from_secs(5)
        );
        assert_eq!(
            heartbeat_every(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
    }
}
