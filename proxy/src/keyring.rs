//! The OS keyring of the current user, for local development.
//!
//! - Linux: the kernel keyring (keyutils), in the user's keyring, which every process of the
//!   user shares while any of them runs. It needs no desktop session or D-Bus, so it works on
//!   headless machines too; it does not survive a reboot. (Where the kernel offers a
//!   persistent keyring, entries are linked there too, which keeps them for a few days.)
//! - macOS: the login keychain.

/// The key's name in the keyring.
#[cfg(target_os = "linux")]
fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

#[cfg(target_os = "linux")]
mod platform {
    use linux_keyutils::{KeyError, KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};

    fn user_keyring() -> Result<KeyRing, String> {
        KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|e| format!("the kernel keyring is unavailable: {e}"))
    }

    pub fn read(description: &str) -> Result<Option<String>, String> {
        let key = match user_keyring()?.search(description) {
            Ok(key) => key,
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => {
                return Ok(None);
            }
            Err(e) => return Err(format!("searching the kernel keyring: {e}")),
        };
        let value = key
            .read_to_vec()
            .map_err(|e| format!("reading the kernel keyring: {e}"))?;
        String::from_utf8(value)
            .map(Some)
            .map_err(|_| "the stored value is not UTF-8".into())
    }

    pub fn write(description: &str, value: &str) -> Result<(), String> {
        let keyring = user_keyring()?;
        let key = keyring
            .add_key(description, value)
            .map_err(|e| format!("writing the kernel keyring: {e}"))?;
        // Readable by the user's other processes, not only those that possess the key.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(Permission::VIEW | Permission::READ | Permission::SEARCH)
            .build();
        key.set_perms(perms)
            .map_err(|e| format!("setting the key's permissions: {e}"))?;
        if let Ok(persistent) = KeyRing::get_persistent(KeyRingIdentifier::User) {
            // Best effort: not every kernel or container allows it.
            let _ = persistent.link_key(key);
        }
        Ok(())
    }

    pub fn delete(description: &str) -> Result<(), String> {
        match user_keyring()?.search(description) {
            Ok(key) => key
                .invalidate()
                .map_err(|e| format!("deleting from the kernel keyring: {e}")),
            Err(KeyError::KeyDoesNotExist | KeyError::KeyExpired | KeyError::KeyRevoked) => Ok(()),
            Err(e) => Err(format!("searching the kernel keyring: {e}")),
        }
    }
}

#[cfg(target_os = "macos")]
mod platform {
    use std::sync::{Arc, OnceLock};

    use keyring_core::api::CredentialStore;

    fn entry(description: &str) -> Result<keyring_core::Entry, String> {
        static STORE: OnceLock<Result<Arc<CredentialStore>, String>> = OnceLock::new();
        let store = STORE
            .get_or_init(|| {
                apple_native_keyring_store::keychain::Store::new()
                    .map(|store| store as Arc<CredentialStore>)
                    .map_err(|e| format!("the keychain is unavailable: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)?;
        let (service, account) = description.split_once('\n').expect("built by this module");
        store
            .build(service, account, None)
            .map_err(|e| format!("keychain entry: {e}"))
    }

    pub fn read(description: &str) -> Result<Option<String>, String> {
        match entry(description)?.get_password() {
            Ok(value) => Ok(Some(value)),
            Err(keyring_core::Error::NoEntry) => Ok(None),
            Err(e) => Err(format!("reading the keychain: {e}")),
        }
    }

    pub fn write(description: &str, value: &str) -> Result<(), String> {
        entry(description)?
            .set_password(value)
            .map_err(|e| format!("writing the keychain: {e}"))
    }

    pub fn delete(description: &str) -> Result<(), String> {
        match entry(description)?.delete_credential() {
            Ok(()) | Err(keyring_core::Error::NoEntry) => Ok(()),
            Err(e) => Err(format!("deleting from the keychain: {e}")),
        }
    }
}

#[cfg(target_os = "macos")]
fn description(service: &str, account: &str) -> String {
    format!("{service}\n{account}")
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
mod platform {
    const NONE: &str = "no OS keyring is supported on this platform; use a file or env source";
    pub fn read(_: &str) -> Result<Option<String>, String> {
        Err(NONE.into())
    }
    pub fn write(_: &str, _: &str) -> Result<(), String> {
        Err(NONE.into())
    }
    pub fn delete(_: &str) -> Result<(), String> {
        Err(NONE.into())
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn description(service: &str, account: &str) -> String {
    format!("{service}:{account}")
}

/// The value stored for `service`/`account`.
pub fn read(service: &str, account: &str) -> Result<String, String> {
    platform::read(&description(service, account))?.ok_or_else(|| {
        format!(
            "the OS keyring has no entry {service}/{account} (store one with `centaur dev`, or use another source)"
        )
    })
}

/// Stores `value` for `service`/`account`, replacing what was there.
pub fn write(service: &str, account: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("an empty value cannot be stored".into());
    }
    platform::write(&description(service, account), value)
}

/// Removes the entry; removing a missing entry is not an error.
pub fn delete(service: &str, account: &str) -> Result<(), String> {
    platform::delete(&description(service, account))
}
