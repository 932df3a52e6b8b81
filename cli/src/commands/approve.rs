//! `centaur approve`: deciding an approval a turn waits for.

use std::process::ExitCode;

use centaur_client::Client;
use centaur_protocol::{Decision, ThreadKey};

use crate::error::CliError;

pub async fn approve(
    client: &Client,
    key: &ThreadKey,
    approval_id: &str,
    deny: bool,
    for_session: bool,
) -> Result<ExitCode, CliError> {
    let approval_id: uuid::Uuid = approval_id
        .parse()
        .map_err(|_| CliError::NotAnApprovalId(approval_id.to_owned()))?;
    let (decision, said) = match (deny, for_session) {
        (true, true) => {
            return Err(CliError::DenyForSession);
        }
        (true, false) => (Decision::Deny, "denied"),
        (false, true) => (Decision::ApproveForSession, "approved for the session"),
        (false, false) => (Decision::Approve, "approved"),
    };
    client.approve(key, approval_id, decision).await?;
    println!("{said}: {approval_id}");
    Ok(ExitCode::SUCCESS)
}
