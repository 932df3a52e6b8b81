//! The Python SDK (`tools/sdk/centaur_tools`), built into the server binary and written to
//! the data folder at start, so every worker runs this server's SDK and worker protocol.

use std::path::{Path, PathBuf};

/// The SDK's files: (path under the package, contents).
pub const FILES: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../../tools/sdk/centaur_tools/__init__.py"),
    ),
    (
        "context.py",
        include_str!("../../../tools/sdk/centaur_tools/context.py"),
    ),
    (
        "schema.py",
        include_str!("../../../tools/sdk/centaur_tools/schema.py"),
    ),
    (
        "worker.py",
        include_str!("../../../tools/sdk/centaur_tools/worker.py"),
    ),
    (
        "egress.py",
        include_str!("../../../tools/sdk/centaur_tools/egress.py"),
    ),
    (
        "http.py",
        include_str!("../../../tools/sdk/centaur_tools/http.py"),
    ),
    (
        "testing.py",
        include_str!("../../../tools/sdk/centaur_tools/testing.py"),
    ),
    (
        "cli.py",
        include_str!("../../../tools/sdk/centaur_tools/cli.py"),
    ),
];

/// Writes the SDK under `dir` (as `dir/centaur_tools/…`) and returns `dir`, the folder a
/// worker's `PYTHONPATH` names.
pub fn install(dir: &Path) -> std::io::Result<PathBuf> {
    let package = dir.join("centaur_tools");
    std::fs::create_dir_all(&package)?;
    for (name, contents) in FILES {
        let path = package.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(*contents) {
            std::fs::write(&path, contents)?;
        }
    }
    Ok(dir.to_owned())
}
