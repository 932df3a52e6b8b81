//! Which harnesses can run a turn here: `GET /agent/harnesses`, and the refusal of a turn (or a
//! spawn) for one that cannot, before anything is stored.
//!
//! `shell` and `echo` need nothing. `codex`, `claude-code` and `amp` need their CLI where the
//! sandbox looks for it ([`SandboxBackend::locate_cli`](crate::sandbox::SandboxBackend)):
//! looked at on every call (a stat), so a CLI installed while the server runs (`centaur dev
//! keys`) counts at once. The backend's sandboxes may bring their own CLIs (the external
//! backend's image): then they count as there.

use centaur_protocol::api::{HarnessInfo, HarnessList};
use centaur_protocol::{ErrorCode, Harness};

use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::sandbox::CliLocation;

/// The CLI a harness runs: the setting naming it (in the harness settings, as the runner reads
/// them in `sandbox-image/src/harness/`) and its name on `PATH` otherwise. `None`: no CLI.
fn cli(harness: Harness) -> Option<(&'static str, &'static str)> {
    match harness {
        Harness::Codex => Some(("CENTAUR_CODEX_BIN", "codex")),
        Harness::ClaudeCode => Some(("CENTAUR_CLAUDE_BIN", "claude")),
        Harness::Amp => Some(("CENTAUR_AMP_BIN", "amp")),
        Harness::Shell | Harness::Echo => None,
    }
}

/// The value of a harness setting as the next sandbox gets it: the settings file wins over
/// `CENTAUR_HARNESS_ENV`.
fn harness_setting(state: &AppState, name: &str) -> Option<String> {
    let from_file = state.harness_env_file.as_ref().and_then(|file| {
        file.current()
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    });
    from_file.or_else(|| {
        state
            .config
            .harness_env
            .iter()
            .rev()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.clone())
    })
}

/// Why `harness` cannot run a turn here, as words that follow its name (`needs an OpenAI key
/// (`centaur dev keys`)`); `None` when it can.
pub fn unavailable_reason(state: &AppState, harness: Harness) -> Option<String> {
    let (setting, default) = cli(harness)?;
    let program = harness_setting(state, setting).unwrap_or_else(|| default.to_owned());
    let missing = match state.backend.locate_cli(&program) {
        CliLocation::Unseen | CliLocation::Found(_) => return None,
        CliLocation::Missing(where_) => where_,
    };
    let hint = state
        .config
        .harness_hints
        .iter()
        .find(|(hinted, _)| *hinted == harness)
        .map(|(_, reason)| reason.clone());
    Some(hint.unwrap_or_else(|| {
        format!("needs the {default} CLI, which is not installed on this server ({missing})")
    }))
}

/// `GET /agent/harnesses`.
pub fn list(state: &AppState) -> HarnessList {
    HarnessList {
        harnesses: Harness::ALL
            .into_iter()
            .map(|harness| {
                let unavailable_reason = unavailable_reason(state, harness);
                HarnessInfo {
                    harness,
                    available: unavailable_reason.is_none(),
                    unavailable_reason,
                }
            })
            .collect(),
        default: state.config.default_harness,
    }
}

/// `Ok` when `harness` can run a turn; else 409 `harness_unavailable`, saying why.
pub fn require(state: &AppState, harness: Harness) -> ApiResult<()> {
    match unavailable_reason(state, harness) {
        None => Ok(()),
        Some(reason) => Err(ApiError::conflict(
            ErrorCode::HarnessUnavailable,
            format!("{harness} {reason}"),
        )),
    }
}
