//! The OS keyring of the current user, for local development.
//!
//! - Linux: the kernel keyring (keyutils), in the user's keyring, which every process of the
//!   user shares while any of them runs. It needs no desktop session or D-Bus, so it works on
//!   headless machines too; it does not survive a reboot. (Where the kernel offers a
//!   persistent keyring, entries are linked there too, which keeps them for a few days.)
//! - macOS: the login keychain.
//!
//! `centaur login` keeps API tokens here, `centaur dev keys` keeps model API keys here, and the
//! proxy reads real secret values from here (secret source `keyring`).
//!
//! - `platform`: the one OS keyring this build talks to (one per target, chosen at compile
//!   time); the public functions name entries and check values around it.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::wildcard_enum_match_arm))] // tests stop at the first surprise

/// Why the keyring could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "the OS keyring has no entry {service}/{account} (store one with `centaur dev`, or use another source)"
    )]
    Missing { service: String, account: String },
    #[error("an empty value cannot be stored")]
    EmptyValue,
    #[error("the stored value is not UTF-8")]
    NotUtf8,
    /// The OS refused: what was being done, and its answer.
    #[error("{action}: {detail}")]
    Os {
        action: &'static str,
        detail: String,
    },
    #[error("no OS keyring is supported on this platform; use a file or env source")]
    Unsupported,
}

#[cfg(any(target_os = "linux", target_os = "macos"))]
fn os(action: &'static str) -> impl FnOnce(String) -> KeyringError {
    move |detail| KeyringError::Os { action, detail }
}

/// The key's name in the keyring.
#[cfg(target_os = "linux")]
fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

#[cfg(target_os = "linux")]
mod platform {
    use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};

    use super::{KeyringError, os};

    fn user_keyring() -> Result<KeyRing, KeyringError> {
        KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|e| os("the kernel keyring is unavailable")(e.to_string()))
    }

    pub fn read(description: &str) -> Result<Option<String>, KeyringError> {
        let key = match user_keyring()?.search(description) {
            Ok(key) => key,
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                return Ok(None);
            }
            Err(e) => return Err(os("searching the kernel keyring")(e.to_string())),
        };
        let value = key
            .read_to_vec()
            .map_err(|e| os("reading the kernel keyring")(e.to_string()))?;
        String::from_utf8(value)
            .map(Some)
            .map_err(|_| KeyringError::NotUtf8)
    }

    pub fn write(description: &str, value: &str) -> Result<(), KeyringError> {
        let keyring = user_keyring()?;
        let key = keyring
            .add_key(description, value)
            .map_err(|e| os("writing the kernel keyring")(e.to_string()))?;
        // Readable by the user's other processes, not only those that possess the key.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
            .build();
        key.set_perms(perms)
            .map_err(|e| os("setting the key's permissions")(e.to_string()))?;
        if let Ok(persistent) = KeyRing::get_persistent(KeyRingIdentifier::User) {
            // Best effort: not every kernel or container allows it.
            let _ = persistent.link_key(key);
        }
        Ok(())
    }

    pub fn delete(description: &str) -> Result<(), KeyringError> {
        match user_keyring()?.search(description) {
            Ok(key) => key
                .invalidate()
                .map_err(|e| os("deleting from the kernel keyring")(e.to_string())),
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => Ok(()),
            Err(e) => Err(os("searching the kernel keyring")(e.to_string())),
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use std::sync::{Arc, OnceLock};

    use keyring_core::api::CredentialStore;

    use super::{KeyringError, os};

    fn entry(description: &str) -> Result<keyring_core::Entry, KeyringError> {
        static STORE: OnceLock<Result<Arc<CredentialStore>, String>> = OnceLock::new();
        let store = STORE
            .get_or_init(|| {
                apple_native_keyring_store::keychain::Store::new()
                    .map(|store| store as Arc<CredentialStore>)
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| os("the keychain is unavailable")(e.clone()))?;
        let (service, account) = description.split_once('\n').expect("built by this module");
        store
            .build(service, account, None)
            .map_err(|e| os("keychain entry")(e.to_string()))
    }

    pub fn read(description: &str) -> Result<Option<String>, KeyringError> {
        match entry(description)?.get_password() {
            Ok(value) => Ok(Some(value)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(os("reading the keychain")(e.to_string())),
        }
    }

    pub fn write(description: &str, value: &str) -> Result<(), KeyringError> {
        entry(description)?
            .set_password(value)
            .map_err(|e| os("writing the keychain")(e.to_string()))
    }

    pub fn delete(description: &str) -> Result<(), KeyringError> {
        match entry(description)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(os("deleting from the keychain")(e.to_string())),
        }
    }
}

#[cfg(target_os = "macos")]
fn description(service: &str, account: &str) -> String {
    format!("{service}\n{account}")
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod platform {
    use super::KeyringError;

    pub fn read(_: &str) -> Result<Option<String>, KeyringError> {
        Err(KeyringError::Unsupported)
    }
    pub fn write(_: &str, _: &str) -> Result<(), KeyringError> {
        Err(KeyringError::Unsupported)
    }
    pub fn delete(_: &str) -> Result<(), KeyringError> {
        Err(KeyringError::Unsupported)
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

/// The value stored for `service`/`account`.
pub fn read(service: &str, account: &str) -> Result<String, KeyringError> {
    platform::read(&description(service, account))?.ok_or_else(|| KeyringError::Missing {
        service: service.to_owned(),
        account: account.to_owned(),
    })
}

/// Stores `value` for `service`/`account`, replacing what was there.
pub fn write(service: &str, account: &str, value: &str) -> Result<(), KeyringError> {
    if value.is_empty() {
        return Err(KeyringError::EmptyValue);
    }
    platform::write(&description(service, account), value)
}

/// Removes the entry; removing a missing entry is not an error.
pub fn delete(service: &str, account: &str) -> Result<(), KeyringError> {
    platform::delete(&description(service, account))
}
