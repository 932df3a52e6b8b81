//! This replica's tools: what was found, each one's state (loading, ready, broken), its worker,
//! and reloading when the folders change.
//!
//! Every `CENTAUR_TOOL_RELOAD_MS` the folders are looked through again ([`discovery`]); a tool
//! whose fingerprint changed is loaded again (its environment built, its methods read) while
//! the version before it, if it was ready, keeps taking calls; once the new version is ready
//! or broken it takes over, and the old worker is retired: it takes no new call and ends when
//! its calls have. A tool whose folder went away disappears at once.
//!
//! [`discovery`]: super::discovery

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use centaur_protocol::tools::{
    CallContext, Manifest, MethodInfo, ToolInfo, ToolList, ToolStatus, WorkerErrorKind,
};
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use super::attachments::NewAttachment;
use super::discovery::{self, Discovery, Found, ManifestError};
use super::environment::{EnvironmentError, Environments};
use super::jail::Launch;
use super::settings::ToolSettings;
use super::worker::{self, CallFailure, DescribeError, Worker};
use super::{ToolError, egress, sdk};
use crate::app::AppState;
use crate::config::Config;

/// A call's limit when the manifest names none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// Calls of a tool at once when the manifest names no limit.
pub const DEFAULT_CONCURRENCY: u32 = 8;

/// Why the tools could not be set up at start.
#[derive(Debug, thiserror::Error)]
pub enum ToolSetupError {
    #[error("CENTAUR_DATA_DIR: {0}")]
    DataDir(#[source] std::io::Error),
}

/// Why a tool could not be loaded: it is broken with this reason (one line).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
    #[error(transparent)]
    Describe(#[from] DescribeError),
    #[error(transparent)]
    Worker(#[from] ToolError),
    #[error(
        "{}: [tool.centaur] approval names {method:?}, which is not a method of the tool",
        pyproject.display()
    )]
    UnknownApproval { pyproject: PathBuf, method: String },
    #[error(
        "no Python for CENTAUR_TOOL_PYTHON={python:?} was found: tools need Python 3.11 or later; install one or set CENTAUR_TOOL_PYTHON to its version or path ({reason})"
    )]
    NoPython { python: String, reason: String },
    #[error(
        "the tool's environment has Python {version} (CENTAUR_TOOL_PYTHON={python:?}): tools need Python 3.11 or later; install one or set CENTAUR_TOOL_PYTHON to its version or path (the default, >=3.11, lets uv find one)"
    )]
    OldPython { python: String, version: String },
}

/// Why an environment could not be built: uv finding no Python for `CENTAUR_TOOL_PYTHON` says
/// which Python tools need.
fn environment_error(error: EnvironmentError, python: &str) -> LoadError {
    match &error {
        EnvironmentError::Uv { step, stderr } if stderr.contains("No interpreter found") => {
            return LoadError::NoPython {
                python: python.to_owned(),
                reason: format!("{step}: {stderr}"),
            };
        }
        EnvironmentError::Uv { .. }
        | EnvironmentError::NoUv
        | EnvironmentError::Timeout { .. }
        | EnvironmentError::Io { .. } => {}
    }
    LoadError::Environment(error)
}

/// The oldest Python the SDK runs on (it imports `typing.NotRequired`).
const MIN_PYTHON: (u32, u32) = (3, 11);

/// The Python version (major, minor) of a virtual environment, from its `pyvenv.cfg`
/// (`version_info = 3.11.7` as uv writes it, `version = …` as `venv` does).
fn python_version(env_dir: &std::path::Path) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(env_dir.join("pyvenv.cfg")).ok()?;
    text.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        if !matches!(key.trim(), "version_info" | "version") {
            return None;
        }
        let mut parts = value.trim().split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some((major, minor))
    })
}

/// What a method returned, and the files it saved.
#[derive(Debug)]
pub struct Invoked {
    pub value: Value,
    pub attachments: Vec<NewAttachment>,
}

/// The tools of this replica.
pub struct Tools {
    settings: ToolSettings,
    /// `None` without `TOOL_DIRS`: nothing is written, found or run.
    folders: Option<Folders>,
    slots: Mutex<BTreeMap<String, Slot>>,
    /// Every worker started, to end them at shutdown whoever holds them, with the environment
    /// it runs from (kept while it runs).
    workers: Mutex<Vec<(Weak<Worker>, PathBuf)>>,
    /// `TOOL_DIRS` entries already warned about as missing.
    warned_missing: Mutex<BTreeSet<PathBuf>>,
    closed: AtomicBool,
    /// Whether the egress rows of tools not found were forgotten (at the first complete look
    /// through the folders after the migrations).
    egress_swept: AtomicBool,
    /// Whether that sweep is running now.
    egress_sweeping: AtomicBool,
}

/// Where the tools' files are under the data folder.
struct Folders {
    /// `<data>/tools/sdk`: the SDK, the workers' `PYTHONPATH`.
    sdk: PathBuf,
    /// `<data>/tools/homes/<tool>`: each tool's writable home.
    homes: PathBuf,
    /// `<data>/tools/run/<tool>`: files the server writes for a tool (its CA bundle).
    run: PathBuf,
    environments: Environments,
}

/// A tool's name in the list: the version that answers, and the one being loaded to replace it.
struct Slot {
    current: Arc<Tool>,
    next: Option<Arc<Tool>>,
}

/// One version of a tool (one fingerprint of its folder).
struct Tool {
    found: Found,
    manifest: Option<Manifest>,
    info: Mutex<ToolInfo>,
    env_dir: Mutex<Option<PathBuf>>,
    /// Its calls at once: `concurrency` permits.
    calls: Arc<Semaphore>,
    worker: tokio::sync::Mutex<Option<Arc<Worker>>>,
    /// After the proxy could not be reached: when to ask it again.
    egress_backoff: egress::Backoff,
    /// Of the manifest's `env`, the names the operator granted the tool
    /// (`CENTAUR_TOOL_SETTINGS`): the only server variables its worker is given.
    settings: Vec<String>,
    /// The secrets the running worker was given (placeholders and revealed values), by name:
    /// when the operator's grants no longer cover them, the worker is retired.
    worker_secrets: Mutex<BTreeSet<String>>,
}

impl Tool {
    fn name(&self) -> &str {
        &self.found.name
    }

    fn status(&self) -> ToolStatus {
        self.info.lock().expect("tool info lock").status
    }

    fn concurrency(&self) -> u32 {
        concurrency(self.manifest.as_ref())
    }

    fn timeout_secs(&self) -> u64 {
        self.manifest
            .as_ref()
            .and_then(|m| m.timeout_secs)
            .unwrap_or(DEFAULT_TIMEOUT_SECS)
    }

    /// Why it cannot be called, unless it can.
    fn unavailable(&self) -> Option<ToolError> {
        let info = self.info.lock().expect("tool info lock");
        let reason = match info.status {
            ToolStatus::Ready => return None,
            ToolStatus::Loading => {
                "it is loading (its environment is being built and its methods read): try again shortly".to_owned()
            }
            ToolStatus::Broken => info
                .error
                .clone()
                .unwrap_or_else(|| "it is broken".to_owned()),
        };
        Some(ToolError::Unavailable {
            tool: info.name.clone(),
            reason,
        })
    }

    /// Stops giving `worker` new calls (it ends once its calls have).
    async fn retire(&self, worker: &Arc<Worker>) {
        let mut current = self.worker.lock().await;
        if current.as_ref().is_some_and(|w| Arc::ptr_eq(w, worker)) {
            *current = None;
        }
    }
}

impl Tools {
    /// Prepares the tools (nothing runs until [`Tools::spawn`]): with `TOOL_DIRS`, writes the
    /// SDK under the data folder.
    pub fn new(config: &Config) -> Result<Arc<Tools>, ToolSetupError> {
        let settings = config.tools.clone();
        let folders = if settings.dirs.is_empty() {
            None
        } else {
            let tools = config.data_dir.join("tools");
            std::fs::create_dir_all(&tools).map_err(ToolSetupError::DataDir)?;
            let data = std::fs::canonicalize(&config.data_dir).map_err(ToolSetupError::DataDir)?;
            let tools = data.join("tools");
            let sdk = sdk::install(&tools.join("sdk")).map_err(ToolSetupError::DataDir)?;
            let environments =
                Environments::new(tools.join("envs"), &settings.uv, settings.python.clone());
            if environments.uv().is_none() {
                tracing::error!(
                    uv = %settings.uv.display(),
                    "uv is not installed: pip install --user uv, or set CENTAUR_UV; every tool is broken"
                );
            }
            Some(Folders {
                sdk,
                homes: tools.join("homes"),
                run: tools.join("run"),
                environments,
            })
        };
        Ok(Arc::new(Tools {
            settings,
            folders,
            slots: Mutex::new(BTreeMap::new()),
            workers: Mutex::new(Vec::new()),
            warned_missing: Mutex::new(BTreeSet::new()),
            closed: AtomicBool::new(false),
            egress_swept: AtomicBool::new(false),
            egress_sweeping: AtomicBool::new(false),
        }))
    }

    /// Finds the tools, builds their environments and reads their methods in the background,
    /// and watches the folders until shutdown, then ends every worker.
    pub fn spawn(state: &AppState) {
        if state.tools.folders.is_none() {
            // No tools here, and no sweep of the tools' egress rows either: replicas share
            // `TOOL_DIRS`, and one started without it (a migration job, a replica configured
            // apart) must not remove the principals of the others' tools.
            return;
        }
        let state = state.clone();
        tokio::spawn(async move {
            let every = Duration::from_millis(state.tools.settings.reload_ms.max(50));
            loop {
                let dirs = state.tools.settings.dirs.clone();
                if let Ok(found) =
                    tokio::task::spawn_blocking(move || discovery::discover(&dirs)).await
                {
                    // A folder that is missing for a while takes its tools' environments
                    // with it only once it is known to be gone, as with their egress.
                    let complete = found.missing.is_empty();
                    state.tools.apply(&state, found);
                    if complete {
                        let tools = state.tools.clone();
                        let _ = tokio::task::spawn_blocking(move || {
                            tools.remove_unused_environments();
                        })
                        .await;
                    }
                }
                state.tools.recheck_grants(&state);
                tokio::select! {
                    _ = state.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
            state.tools.shut_down();
        });
    }

    /// Removes the environments no version of a tool uses any more: a replaced or removed
    /// tool's once its last worker ended, a build cut short. Blocking.
    fn remove_unused_environments(&self) {
        let Some(folders) = self.folders.as_ref() else {
            return;
        };
        let mut in_use = BTreeSet::new();
        for slot in self.slots.lock().expect("slots lock").values() {
            for tool in std::iter::once(&slot.current).chain(slot.next.as_ref()) {
                in_use.extend(tool.env_dir.lock().expect("env lock").clone());
                if let Ok(pyproject) = &tool.found.pyproject {
                    in_use.insert(folders.environments.path(tool.name(), pyproject));
                }
            }
        }
        in_use.extend(
            self.workers
                .lock()
                .expect("workers lock")
                .iter()
                .filter(|(worker, _)| worker.strong_count() > 0)
                .map(|(_, env_dir)| env_dir.clone()),
        );
        for env in folders.environments.remove_unused(&in_use) {
            tracing::info!(env = %env.display(), "removed a tool environment no version of the tool uses");
        }
    }

    /// Ends every worker now; no worker starts after.
    pub fn shut_down(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let workers: Vec<Arc<Worker>> = self
            .workers
            .lock()
            .expect("workers lock")
            .drain(..)
            .filter_map(|(w, _)| w.upgrade())
            .collect();
        for worker in workers {
            worker.kill();
        }
    }

    /// Every tool found, ordered by name.
    pub fn list(&self) -> ToolList {
        let slots = self.slots.lock().expect("slots lock");
        ToolList {
            tools: slots
                .values()
                .map(|slot| slot.current.info.lock().expect("tool info lock").clone())
                .collect(),
        }
    }

    /// The tool as `GET /tools` lists it, whatever its status (a broken one's `error` says why).
    pub fn info(&self, tool: &str) -> Result<ToolInfo, ToolError> {
        let current = self.current(tool)?;
        let info = current.info.lock().expect("tool info lock").clone();
        Ok(info)
    }

    /// The method as `GET /tools` shows it, if the tool is ready and has it.
    pub fn method(&self, tool: &str, method: &str) -> Result<MethodInfo, ToolError> {
        let current = self.current(tool)?;
        method_of(&current, method)
    }

    /// Runs the method in the tool's worker (starting it if needed), within the tool's
    /// concurrency limit and timeout. The arguments have been checked against the schema.
    ///
    /// A call waits for one of the tool's `concurrency` slots at most its timeout (then it is
    /// refused as busy, and the worker keeps going), and then has its whole timeout to run.
    pub async fn invoke(
        &self,
        state: &AppState,
        tool: &str,
        method: &str,
        arguments: Map<String, Value>,
        context: CallContext,
    ) -> Result<Invoked, ToolError> {
        let current = self.current(tool)?;
        method_of(&current, method)?;
        let secs = current.timeout_secs();
        let slot = current.calls.clone().acquire_owned();
        let Ok(slot) = tokio::time::timeout(Duration::from_secs(secs), slot).await else {
            return Err(ToolError::Busy {
                tool: tool.to_owned(),
                concurrency: current.concurrency(),
                secs,
            });
        };
        let _turn = slot.expect("a tool's call semaphore is never closed");
        let worker = self.worker(state, &current).await?;
        let answer = worker
            .call(method, arguments, context, Duration::from_secs(secs))
            .await;
        match answer {
            Ok(invoked) => Ok(invoked),
            Err(CallFailure::Timeout) => {
                tracing::warn!(
                    target: "centaur_server::tools",
                    tool, method, secs,
                    "a call timed out; the worker is retired (a new one takes the next call)"
                );
                current.retire(&worker).await;
                Err(ToolError::Timeout { secs })
            }
            Err(CallFailure::Exited(reason)) => {
                current.retire(&worker).await;
                Err(ToolError::WorkerExited(reason))
            }
            Err(CallFailure::Attachments(reason)) => Err(ToolError::Attachments(reason)),
            Err(CallFailure::Worker(error)) => Err(match error.kind {
                WorkerErrorKind::ToolError | WorkerErrorKind::Exception => {
                    ToolError::Method(error.message)
                }
                WorkerErrorKind::InvalidArguments => {
                    let argument = error.argument.unwrap_or_default();
                    let prefix = format!("argument \"{argument}\": ");
                    let message = error
                        .message
                        .strip_prefix(&prefix)
                        .map(str::to_owned)
                        .unwrap_or(error.message);
                    ToolError::InvalidArguments { argument, message }
                }
                WorkerErrorKind::UnknownMethod => ToolError::UnknownMethod {
                    tool: tool.to_owned(),
                    method: method.to_owned(),
                },
            }),
        }
    }

    /// Retires the running worker of each tool that holds a secret the operator no longer grants
    /// it (its `CENTAUR_TOOL_EGRESS` entry changed): the worker takes no new call and ends when
    /// its calls have; the next call starts one with what is still granted, or finds the tool
    /// broken if a secret it declares is no longer granted. `CENTAUR_TOOL_SECRETS` and
    /// `CENTAUR_TOOL_SETTINGS` are read once, at start.
    fn recheck_grants(&self, state: &AppState) {
        if state.egress.is_none() {
            return;
        }
        let tools: Vec<Arc<Tool>> = self
            .slots
            .lock()
            .expect("slots lock")
            .values()
            .map(|slot| slot.current.clone())
            .collect();
        for tool in tools {
            let Some(manifest) = &tool.manifest else {
                continue;
            };
            // A worker being started gets the grants in force; it is looked at next time.
            let Ok(mut slot) = tool.worker.try_lock() else {
                continue;
            };
            if slot.as_ref().is_none_or(|w| w.has_ended()) {
                continue;
            }
            let now = egress::secrets_in_force(state, tool.name(), manifest);
            let revoked: Vec<String> = tool
                .worker_secrets
                .lock()
                .expect("worker secrets lock")
                .difference(&now)
                .cloned()
                .collect();
            if revoked.is_empty() {
                continue;
            }
            tracing::warn!(
                target: "centaur_server::tools",
                tool = tool.name(),
                ?revoked,
                "the operator no longer grants the tool secrets its worker holds; the worker is retired (the next call starts one with what is still granted)"
            );
            *slot = None;
        }
    }

    /// Whether the folders have a tool of this name now (whatever its status).
    pub fn knows(&self, tool: &str) -> bool {
        self.current(tool).is_ok()
    }

    fn current(&self, tool: &str) -> Result<Arc<Tool>, ToolError> {
        self.slots
            .lock()
            .expect("slots lock")
            .get(tool)
            .map(|slot| slot.current.clone())
            .ok_or_else(|| ToolError::UnknownTool(tool.to_owned()))
    }

    fn folders(&self) -> Result<&Folders, ToolError> {
        self.folders.as_ref().ok_or(ToolError::NotConfigured)
    }

    /// The tool's running worker, started if there is none (or it ended).
    async fn worker(&self, state: &AppState, tool: &Arc<Tool>) -> Result<Arc<Worker>, ToolError> {
        let mut slot = tool.worker.lock().await;
        if let Some(worker) = slot.as_ref()
            && !worker.has_ended()
        {
            return Ok(worker.clone());
        }
        *slot = None;
        if self.closed.load(Ordering::SeqCst) {
            return Err(ToolError::Unavailable {
                tool: tool.name().to_owned(),
                reason: "the server is shutting down".into(),
            });
        }
        let egress = self.egress(state, tool).await?;
        let command = self.launch(tool, &egress, false)?;
        let worker = Worker::start(tool.name(), command).await?;
        let worker = Arc::new(worker);
        {
            let env_dir = tool.env_dir.lock().expect("env lock").clone();
            let mut workers = self.workers.lock().expect("workers lock");
            workers.retain(|(w, _)| w.strong_count() > 0);
            workers.push((Arc::downgrade(&worker), env_dir.unwrap_or_default()));
        }
        if self.closed.load(Ordering::SeqCst) {
            worker.kill();
        }
        tracing::info!(target: "centaur_server::tools", tool = tool.name(), "a tool worker started");
        *tool.worker_secrets.lock().expect("worker secrets lock") =
            egress.secrets.keys().cloned().collect();
        *slot = Some(worker.clone());
        Ok(worker)
    }

    /// The tool's egress for a new worker. What only a change to the tool or the configuration
    /// can cure (an ungranted secret, a policy the proxy refuses) breaks the tool, with the
    /// reason `GET /tools` shows; a proxy that is away fails the call, and the proxy is not
    /// asked again for this tool before a back-off delay.
    async fn egress(
        &self,
        state: &AppState,
        tool: &Arc<Tool>,
    ) -> Result<egress::WorkerEgress, ToolError> {
        let unavailable = |reason: String| ToolError::Unavailable {
            tool: tool.name().to_owned(),
            reason,
        };
        if let Some(wait) = tool.egress_backoff.wait() {
            return Err(unavailable(wait));
        }
        let manifest = tool.manifest.clone().unwrap_or_default();
        match egress::prepare(state, tool.name(), &manifest).await {
            Ok(prepared) => {
                tool.egress_backoff.succeeded();
                Ok(prepared)
            }
            Err(error) if error.is_transient() => {
                let reason = format!("its egress could not be prepared: {error}");
                tracing::warn!(target: "centaur_server::tools", tool = tool.name(), %reason, "a tool's worker was not started");
                tool.egress_backoff.failed(reason.clone());
                Err(unavailable(reason))
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(tool = tool.name(), %reason, "a tool is broken");
                let mut info = tool.info.lock().expect("tool info lock");
                info.status = ToolStatus::Broken;
                info.error = Some(reason.clone());
                info.methods = Vec::new();
                Err(unavailable(reason))
            }
        }
    }

    /// The command of a worker (or a description) of `tool`.
    fn launch(
        &self,
        tool: &Tool,
        egress: &egress::WorkerEgress,
        describe: bool,
    ) -> Result<tokio::process::Command, ToolError> {
        let folders = self.folders()?;
        let env_dir = tool
            .env_dir
            .lock()
            .expect("env lock")
            .clone()
            .ok_or(ToolError::NoEnvironment)?;
        let home = folders.homes.join(tool.name());
        let run = folders.run.join(tool.name());
        std::fs::create_dir_all(&home).map_err(ToolError::Folders)?;
        std::fs::create_dir_all(&run).map_err(ToolError::Folders)?;
        let launch = Launch {
            isolation: self.settings.isolation,
            tool: tool.name(),
            env_dir: &env_dir,
            sdk_dir: &folders.sdk,
            tool_dir: &tool.found.dir,
            home: &home,
            run_dir: &run,
            concurrency: tool.concurrency(),
            memory_bytes: self.settings.memory_mb.saturating_mul(1024 * 1024),
            settings: &tool.settings,
            egress,
        };
        launch.command(describe).map_err(ToolError::Folders)
    }

    /// Takes in what a look through the folders found: new and changed tools are loaded,
    /// removed ones dropped.
    fn apply(self: &Arc<Self>, state: &AppState, found: Discovery) {
        {
            let mut warned = self.warned_missing.lock().expect("warned lock");
            for missing in &found.missing {
                if warned.insert(missing.clone()) {
                    tracing::warn!(dir = %missing.display(), "a TOOL_DIRS entry is not a folder; its tools are not loaded");
                }
            }
            warned.retain(|dir| found.missing.contains(dir));
        }
        // The first look that saw every folder once the database is migrated: rows of tools
        // removed while the server was down are forgotten (a missing folder may be back later,
        // so not before). Tried again at the next look until it succeeds, one at a time.
        if found.missing.is_empty()
            && state.readiness.is_migrated()
            && !self.egress_swept.load(Ordering::SeqCst)
            && !self.egress_sweeping.swap(true, Ordering::SeqCst)
        {
            let (state, present) = (state.clone(), found.tools.keys().cloned().collect());
            tokio::spawn(async move {
                let swept = egress::forget_absent(&state, present).await;
                state.tools.egress_swept.store(swept, Ordering::SeqCst);
                state.tools.egress_sweeping.store(false, Ordering::SeqCst);
            });
        }
        let mut load = Vec::new();
        let mut gone = Vec::new();
        {
            let mut slots = self.slots.lock().expect("slots lock");
            slots.retain(|name, _| {
                let kept = found.tools.contains_key(name);
                if !kept {
                    tracing::info!(tool = %name, "a tool's folder is gone; the tool is removed");
                    gone.push(name.clone());
                }
                kept
            });
            for (name, found) in found.tools {
                if let Some(slot) = slots.get(&name) {
                    let latest = slot.next.as_ref().unwrap_or(&slot.current);
                    if latest.found.fingerprint == found.fingerprint {
                        continue;
                    }
                }
                let tool = Arc::new(new_tool(state, found));
                if tool.status() == ToolStatus::Loading {
                    load.push(tool.clone());
                }
                let loading = tool.status() == ToolStatus::Loading;
                match slots.get_mut(&name) {
                    // A ready version answers until the new one is loaded.
                    Some(slot) if loading && slot.current.status() == ToolStatus::Ready => {
                        tracing::info!(tool = %name, "a tool changed; loading it again");
                        slot.next = Some(tool);
                    }
                    Some(slot) => {
                        tracing::info!(tool = %name, "a tool changed; loading it again");
                        slot.current = tool;
                        slot.next = None;
                    }
                    None => {
                        slots.insert(
                            name,
                            Slot {
                                current: tool,
                                next: None,
                            },
                        );
                    }
                }
            }
        }
        for tool in load {
            let tools = self.clone();
            tokio::spawn(async move {
                tools.load(&tool).await;
                tools.promote(&tool);
            });
        }
        // Its principal at the egress proxy goes too.
        for name in gone {
            let state = state.clone();
            tokio::spawn(async move {
                egress::forget(&state, &name).await;
            });
        }
    }

    /// Builds the tool's environment and reads its methods: ready, or broken with the reason.
    async fn load(&self, tool: &Arc<Tool>) {
        let outcome = self.prepare(tool).await;
        let mut info = tool.info.lock().expect("tool info lock");
        match outcome {
            Ok(methods) => {
                info.status = ToolStatus::Ready;
                info.error = None;
                info.methods = methods;
                tracing::info!(
                    tool = tool.name(),
                    methods = info.methods.len(),
                    "a tool is ready"
                );
            }
            Err(error) => {
                let reason = error.to_string();
                tracing::warn!(tool = tool.name(), %reason, "a tool is broken");
                info.status = ToolStatus::Broken;
                info.error = Some(reason);
                info.methods = Vec::new();
            }
        }
    }

    async fn prepare(&self, tool: &Arc<Tool>) -> Result<Vec<MethodInfo>, LoadError> {
        let folders = self.folders()?;
        let pyproject = tool.found.pyproject.as_ref().map_err(Clone::clone)?;
        let python = &self.settings.python;
        let env_dir = folders
            .environments
            .ensure(tool.name(), &tool.found.dir, pyproject)
            .await
            .map_err(|error| environment_error(error, python))?;
        if let Some(version) = python_version(&env_dir)
            && version < MIN_PYTHON
        {
            return Err(LoadError::OldPython {
                python: python.clone(),
                version: format!("{}.{}", version.0, version.1),
            });
        }
        *tool.env_dir.lock().expect("env lock") = Some(env_dir);
        let command = self.launch(tool, &egress::WorkerEgress::default(), true)?;
        let mut methods = worker::describe(command).await?;
        let manifest = &pyproject.manifest;
        for name in &manifest.approval {
            if !methods.iter().any(|m| &m.name == name) {
                return Err(LoadError::UnknownApproval {
                    pyproject: tool.found.dir.join("pyproject.toml"),
                    method: name.clone(),
                });
            }
        }
        for method in &mut methods {
            method.approval = manifest.approval.contains(&method.name);
        }
        Ok(methods)
    }

    /// A loaded version replaces the one that answered until now (if it is still the newest).
    fn promote(&self, tool: &Arc<Tool>) {
        let mut slots = self.slots.lock().expect("slots lock");
        if let Some(slot) = slots.get_mut(tool.name())
            && slot.next.as_ref().is_some_and(|n| Arc::ptr_eq(n, tool))
            && let Some(next) = slot.next.take()
        {
            slot.current = next;
        }
    }
}

/// A version of a tool as found: loading, or broken when its `pyproject.toml` is.
fn new_tool(state: &AppState, found: Found) -> Tool {
    let shadows = found
        .shadows
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let mut info = ToolInfo {
        name: found.name.clone(),
        description: String::new(),
        status: ToolStatus::Loading,
        error: None,
        source: found.source.display().to_string(),
        shadows,
        hosts: Vec::new(),
        secrets: Vec::new(),
        methods: Vec::new(),
    };
    let manifest = match &found.pyproject {
        Ok(pyproject) => {
            let manifest = pyproject.manifest.clone();
            info.description = manifest.description.clone();
            info.hosts = egress::hosts(state, &found.name, &manifest);
            info.secrets = manifest.secrets.keys().cloned().collect();
            // Its egress cannot work (an invalid binding, a secret not granted): broken now.
            if let Err(error) = egress::check(state, &found.name, &manifest) {
                tracing::warn!(tool = %found.name, %error, "a tool is broken");
                info.status = ToolStatus::Broken;
                info.error = Some(error.to_string());
            }
            Some(manifest)
        }
        Err(error) => {
            tracing::warn!(tool = %found.name, %error, "a tool is broken");
            info.status = ToolStatus::Broken;
            info.error = Some(error.to_string());
            None
        }
    };
    let concurrency = concurrency(manifest.as_ref());
    let settings = match &manifest {
        Some(manifest) => granted_settings(state, &found, manifest),
        None => Vec::new(),
    };
    Tool {
        found,
        manifest,
        info: Mutex::new(info),
        env_dir: Mutex::new(None),
        calls: Arc::new(Semaphore::new(concurrency as usize)),
        worker: tokio::sync::Mutex::new(None),
        egress_backoff: egress::Backoff::default(),
        settings,
        worker_secrets: Mutex::new(BTreeSet::new()),
    }
}

/// Of the manifest's `env`, the names the operator granted the tool (`CENTAUR_TOOL_SETTINGS`);
/// the others are named once in the log with the grant to add. A tool that shadows another and
/// receives grants is warned about: grants follow the name, not the folder.
fn granted_settings(state: &AppState, found: &Found, manifest: &Manifest) -> Vec<String> {
    let name = found.name.as_str();
    let (granted, ungranted) = state.config.tools.settings.partition(name, &manifest.env);
    if !ungranted.is_empty() {
        tracing::info!(
            tool = name,
            settings = ?ungranted,
            "the tool's env settings not granted to it are not passed (it uses its defaults): grant them with CENTAUR_TOOL_SETTINGS={name}={}",
            ungranted.join(",")
        );
    }
    if !found.shadows.is_empty() {
        let mut received = egress::grants_received(state, name, manifest);
        received.extend(granted.iter().map(|s| format!("setting `{s}`")));
        if !received.is_empty() {
            tracing::warn!(
                tool = name,
                source = %found.source.display(),
                shadows = ?found.shadows,
                received = %received.join(", "),
                "a tool that shadows another receives the operator's grants for its name: check that the grants are meant for this folder's tool (bind its secrets in CENTAUR_TOOL_EGRESS to fix their hosts)"
            );
        }
    }
    granted
}

/// Calls of a tool at once: the manifest's `concurrency`, else [`DEFAULT_CONCURRENCY`].
fn concurrency(manifest: Option<&Manifest>) -> u32 {
    manifest
        .and_then(|m| m.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY)
}

/// The method of a ready tool.
fn method_of(tool: &Tool, method: &str) -> Result<MethodInfo, ToolError> {
    if let Some(unavailable) = tool.unavailable() {
        return Err(unavailable);
    }
    tool.info
        .lock()
        .expect("tool info lock")
        .methods
        .iter()
        .find(|m| m.name == method)
        .cloned()
        .ok_or_else(|| ToolError::UnknownMethod {
            tool: tool.name().to_owned(),
            method: method.to_owned(),
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests stop at the first surprise

    use super::*;

    /// The environment's Python is read from its `pyvenv.cfg` (uv's `version_info`, venv's
    /// `version`), so an environment older than the SDK needs breaks the tool saying so.
    #[test]
    fn the_environments_python_is_read_from_pyvenv_cfg() {
        let dir =
            std::env::temp_dir().join(format!("centaur-pyvenv-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(python_version(&dir), None);
        std::fs::write(
            dir.join("pyvenv.cfg"),
            "home = /usr/bin\nimplementation = CPython\nuv = 0.13.9\nversion_info = 3.10.13\n",
        )
        .unwrap();
        assert_eq!(python_version(&dir), Some((3, 10)));
        assert!(python_version(&dir).unwrap() < MIN_PYTHON);
        std::fs::write(
            dir.join("pyvenv.cfg"),
            "home = /usr/bin\nversion = 3.12.1\n",
        )
        .unwrap();
        assert_eq!(python_version(&dir), Some((3, 12)));
        assert!(python_version(&dir).unwrap() >= MIN_PYTHON);
        let old = LoadError::OldPython {
            python: "3.10".into(),
            version: "3.10".into(),
        };
        assert!(old.to_string().contains("3.11 or later"), "{old}");
        // uv's words when no Python matches (as `uv venv --python '>=3.99'` says them).
        let none = environment_error(
            EnvironmentError::Uv {
                step: "uv venv",
                stderr: "error: No interpreter found for Python >=3.99 in managed installations or search path".into(),
            },
            ">=3.99",
        );
        assert!(matches!(none, LoadError::NoPython { .. }), "{none}");
        assert!(
            none.to_string().contains("tools need Python 3.11 or later"),
            "{none}"
        );
        let other = environment_error(
            EnvironmentError::Uv {
                step: "uv pip install",
                stderr: "no wheel".into(),
            },
            ">=3.11",
        );
        assert!(matches!(other, LoadError::Environment(_)), "{other}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
