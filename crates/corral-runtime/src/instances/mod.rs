//! Instances of templates: a service made at run time from a `[templates.NAME]` shape, with an
//! id, a port, and a workspace of its own (empty, an uploaded ZIP, or a `git clone`), prepared by
//! setup steps that run once before it first starts.
//!
//! ## Theory of operation
//!
//! One owner task keeps every instance's record ([`Instances`] is its handle, like the ad-hoc
//! processes'); nobody else touches them. It is a *client* of the supervisor, not part of it:
//! once an instance's workspace is prepared it asks the supervisor to define the rendered
//! service (the same request as `POST /v1/services`), and to delete one it asks the supervisor
//! to remove that service, then deletes the files. So an instance's service is supervised,
//! logged, measured, kept across daemon restarts and adopted after a crash like any service,
//! while preparing (unpacking, cloning, setup steps) never blocks the supervisor.
//!
//! Preparation runs on a task of its own per instance and reports each step back; deleting a
//! preparing instance aborts that task and kills what its steps started (found by their marker,
//! `setup:NAME`). The records are stored (JSON) in the state database; an instance that was
//! being prepared when corral died is failed at the next start, and what its steps left running
//! is killed.

mod workspace;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use corral_config::Template;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

pub use workspace::{MAX_ENTRIES, MAX_UNPACKED, SetupCommand, extract_zip, run_step};

use crate::reaper::Reaper;
use crate::supervisor::{Asker, Command, CommandError, Notice, NoticeKind};
use crate::{ports, proctable};

/// Where an instance is in its life. Stored (as JSON) with its record.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Made with `upload`: waits for its ZIP.
    AwaitingUpload,
    /// Workspace and setup steps under way.
    Preparing,
    /// Prepared: its service exists.
    Ready,
    /// Preparing failed (`error` says why).
    Failed,
}

impl InstanceState {
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::AwaitingUpload => "awaiting_upload",
            InstanceState::Preparing => "preparing",
            InstanceState::Ready => "ready",
            InstanceState::Failed => "failed",
        }
    }
}

/// Where one setup step is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Pending,
    Running,
    Done,
    Failed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::Running => "running",
            StepState::Done => "done",
            StepState::Failed => "failed",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub name: String,
    pub state: StepState,
    pub detail: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Instance {
    /// The service's name: `TEMPLATE-ID`.
    pub name: String,
    pub template: String,
    pub id: String,
    pub port: u16,
    pub params: Vec<(String, String)>,
    pub workspace: PathBuf,
    /// `empty`, `upload` or `git URL`.
    pub source: String,
    pub state: InstanceState,
    pub error: Option<String>,
    pub steps: Vec<Step>,
    pub created_ms: u64,
}

impl Instance {
    /// The placeholders its template's strings may use.
    pub fn vars(&self) -> Vec<(String, String)> {
        let mut v = vec![
            ("id".to_string(), self.id.clone()),
            ("name".to_string(), self.name.clone()),
            ("port".to_string(), self.port.to_string()),
            (
                "workspace".to_string(),
                self.workspace.display().to_string(),
            ),
        ];
        v.extend(self.params.iter().cloned());
        v
    }

    pub fn set_step(&mut self, i: usize, state: StepState, detail: impl Into<String>) {
        if let Some(s) = self.steps.get_mut(i) {
            s.state = state;
            s.detail = detail.into();
        }
    }
}

/// Where the workspace comes from.
#[derive(Clone, Debug)]
pub enum Source {
    Empty,
    Zip(Vec<u8>),
    Git(String),
}

/// What the supervisor tells the owner: the templates and unit names of the project now (at
/// start and after every reload).
#[derive(Clone, Debug, Default)]
pub struct ProjectView {
    pub templates: Vec<Template>,
    /// The units, whose names a new instance must not take: the plan itself, shared (a set of
    /// names made at each change grew with every instance created).
    pub plan: std::sync::Arc<corral_engine::Plan>,
}

enum Msg {
    Create {
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
        reply: oneshot::Sender<Result<Instance, CommandError>>,
    },
    Upload {
        name: String,
        zip: Vec<u8>,
        reply: oneshot::Sender<Result<Instance, CommandError>>,
    },
    List(oneshot::Sender<Vec<Instance>>),
    Get(String, oneshot::Sender<Result<Instance, CommandError>>),
    Delete(String, oneshot::Sender<Result<String, CommandError>>),
    Project(ProjectView),
    /// From a preparing task: a step started or ended (or it failed).
    Progress(Box<Instance>),
    /// From a preparing task: the workspace is ready.
    Prepared(Box<Instance>),
    /// The supervisor answered the definition of a prepared instance's service.
    Defined(String, Result<(), String>),
    /// The supervisor removed a deleted instance's service (or had none).
    Removed(
        String,
        Result<(), CommandError>,
        oneshot::Sender<Result<String, CommandError>>,
    ),
}

/// The handle clients (the API) and the supervisor hold.
#[derive(Clone)]
pub struct Instances {
    tx: UnboundedSender<Msg>,
}

struct Owner {
    records: BTreeMap<String, Instance>,
    /// Preparation tasks still running, to cancel on delete.
    preparing: HashMap<String, JoinHandle<()>>,
    /// Being deleted (waiting for the supervisor to remove the service).
    deleting: HashSet<String>,
    project: ProjectView,
    state_dir: PathBuf,
    reaper: Reaper,
    store: Option<corral_store::Store>,
    supervisor: Asker,
    notices: broadcast::Sender<Arc<Notice>>,
    tx: UnboundedSender<Msg>,
}

fn gone() -> CommandError {
    CommandError::ShuttingDown
}

impl Instances {
    /// Start the owner; its records are read from the store of `state_dir`.
    pub fn start(
        state_dir: PathBuf,
        reaper: Reaper,
        supervisor: Asker,
        notices: broadcast::Sender<Arc<Notice>>,
    ) -> Instances {
        let (tx, rx) = unbounded_channel();
        let store = corral_store::Store::open(&state_dir)
            .map_err(|e| crate::say!("corral: instances: {e}"))
            .ok();
        let mut records = BTreeMap::new();
        for (name, record) in store
            .as_ref()
            .and_then(|s| s.template_instances().ok())
            .unwrap_or_default()
        {
            let Ok(mut inst) = serde_json::from_str::<Instance>(&record) else {
                crate::say!("corral: the record of instance `{name}` is unreadable; ignoring it");
                continue;
            };
            if inst.state == InstanceState::Preparing {
                inst.state = InstanceState::Failed;
                inst.error = Some("corral stopped while it was being prepared".into());
                // Its setup steps carried the marker of the corral that died.
                kill_setup_leftovers(&name);
            }
            records.insert(name, inst);
        }
        let owner = Owner {
            records,
            preparing: HashMap::new(),
            deleting: HashSet::new(),
            project: ProjectView::default(),
            state_dir,
            reaper,
            store,
            supervisor,
            notices,
            tx: tx.clone(),
        };
        tokio::spawn(owner.run(rx));
        Instances { tx }
    }

    async fn ask<T>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Result<T, CommandError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(msg(reply)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    /// Make an instance of `template` (its workspace empty, cloned, or uploaded next).
    pub async fn create(
        &self,
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
    ) -> Result<Instance, CommandError> {
        self.ask(|reply| Msg::Create {
            template,
            params,
            git,
            upload,
            reply,
        })
        .await?
    }

    /// The ZIP for an instance created with `upload`.
    pub async fn upload(&self, name: String, zip: Vec<u8>) -> Result<Instance, CommandError> {
        self.ask(|reply| Msg::Upload { name, zip, reply }).await?
    }

    pub async fn list(&self) -> Result<Vec<Instance>, CommandError> {
        self.ask(Msg::List).await
    }

    pub async fn get(&self, name: String) -> Result<Instance, CommandError> {
        self.ask(|reply| Msg::Get(name, reply)).await?
    }

    /// Stop an instance and delete it with its workspace and logs; a preparing one is
    /// cancelled.
    pub async fn delete(&self, name: String) -> Result<String, CommandError> {
        self.ask(|reply| Msg::Delete(name, reply)).await?
    }

    /// The project's templates and unit names now.
    pub fn project(&self, view: ProjectView) {
        let _ = self.tx.send(Msg::Project(view));
    }
}

/// Kill whatever the setup steps of instance `name` left running, whichever corral ran them.
fn kill_setup_leftovers(name: &str) {
    let unit = format!("setup:{name}");
    let left = proctable::with_marker_matching(|m| proctable::marker_unit(m) == Some(&unit));
    proctable::signal_all(&left, nix::sys::signal::Signal::SIGKILL);
}

impl Owner {
    async fn run(mut self, mut rx: UnboundedReceiver<Msg>) {
        while let Some(msg) = rx.recv().await {
            match msg {
                Msg::Create {
                    template,
                    params,
                    git,
                    upload,
                    reply,
                } => {
                    let _ = reply.send(self.create(template, params, git, upload));
                }
                Msg::Upload { name, zip, reply } => {
                    let _ = reply.send(self.upload(&name, zip));
                }
                Msg::List(reply) => {
                    let _ = reply.send(self.records.values().cloned().collect());
                }
                Msg::Get(name, reply) => {
                    let _ = reply.send(self.get(&name).cloned());
                }
                Msg::Delete(name, reply) => self.delete(name, reply),
                Msg::Project(view) => self.project = view,
                Msg::Progress(inst) => {
                    if inst.state == InstanceState::Failed {
                        self.preparing.remove(&inst.name);
                    }
                    self.save(*inst);
                }
                Msg::Prepared(inst) => self.prepared(*inst),
                Msg::Defined(name, result) => self.defined(&name, result),
                Msg::Removed(name, result, reply) => {
                    self.deleting.remove(&name);
                    let _ = reply.send(match result {
                        Ok(()) => {
                            self.delete_files(&name);
                            Ok(format!("deleted {name}"))
                        }
                        Err(e) => Err(e),
                    });
                }
            }
        }
    }

    fn get(&self, name: &str) -> Result<&Instance, CommandError> {
        self.records.get(name).ok_or_else(|| {
            let hint = corral_config::did_you_mean(name, self.records.keys().map(String::as_str))
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            CommandError::NotFound(format!("no instance named `{name}`{hint}"))
        })
    }

    /// Keep a record (memory and store) and tell the event stream.
    fn save(&mut self, inst: Instance) {
        match (&self.store, serde_json::to_string(&inst)) {
            (Some(store), Ok(json)) => {
                if let Err(e) = store.put_template_instance(&inst.name, &json) {
                    crate::say!("corral: {e}");
                }
            }
            (_, Err(e)) => crate::say!("corral: cannot record instance `{}`: {e}", inst.name),
            (None, _) => {}
        }
        let note = format!(
            "instance {}: {}{}",
            inst.name,
            inst.state.as_str(),
            inst.steps
                .iter()
                .rev()
                .find(|s| s.state != StepState::Pending)
                .map_or(String::new(), |s| format!(
                    " ({} {})",
                    s.name,
                    s.state.as_str()
                ))
        );
        self.notify(&inst.name, inst.state.as_str(), note);
        self.records.insert(inst.name.clone(), inst);
    }

    fn notify(&self, name: &str, state: &'static str, message: String) {
        let _ = self.notices.send(Arc::new(Notice {
            time: SystemTime::now(),
            unit: name.to_string(),
            kind: NoticeKind::Instance,
            state,
            message,
        }));
    }

    fn create(
        &mut self,
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
    ) -> Result<Instance, CommandError> {
        let Some(tpl) = self
            .project
            .templates
            .iter()
            .find(|t| t.name == template)
            .cloned()
        else {
            let names: Vec<&str> = self
                .project
                .templates
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            return Err(CommandError::NotFound(
                match corral_config::did_you_mean(&template, names.iter().copied()) {
                    Some(s) => format!("no template named `{template}` (did you mean `{s}`?)"),
                    None if names.is_empty() => {
                        format!("no template named `{template}`: corral.toml defines none")
                    }
                    None => format!(
                        "no template named `{template}` (there are: {})",
                        names.join(", ")
                    ),
                },
            ));
        };
        if git.is_some() && upload {
            return Err(CommandError::Invalid(
                "choose one of `git` and `upload`".into(),
            ));
        }
        let mut merged = tpl.params.clone();
        for (k, v) in params {
            match merged.iter_mut().find(|(name, _)| *name == k) {
                Some(slot) => slot.1 = v,
                None => {
                    let known: Vec<&str> = tpl.params.iter().map(|(n, _)| n.as_str()).collect();
                    return Err(CommandError::Invalid(format!(
                        "template `{template}` has no parameter `{k}` (it has: {})",
                        if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        }
                    )));
                }
            }
        }
        if let Some(url) = &git
            && (url.is_empty() || url.starts_with('-'))
        {
            return Err(CommandError::Invalid(format!(
                "`{url}` is not a repository URL"
            )));
        }
        let id = loop {
            let id = format!("{:06x}", fastrand::u32(..0x100_0000));
            let name = format!("{template}-{id}");
            if self.project.plan.find(&name).is_none() && !self.records.contains_key(&name) {
                break id;
            }
        };
        let name = format!("{template}-{id}");
        let used: HashSet<u16> = self.records.values().map(|i| i.port).collect();
        let port = match tpl.port_range {
            Some((lo, hi)) => (lo..=hi)
                .find(|p| !used.contains(p) && ports::is_free(*p))
                .ok_or_else(|| {
                    CommandError::Conflict(format!(
                        "no free port left in {lo}-{hi} for template `{template}`"
                    ))
                })?,
            None => loop {
                let p = ports::allocate()
                    .map_err(|e| CommandError::Invalid(format!("cannot find a free port: {e}")))?;
                if !used.contains(&p) {
                    break p;
                }
            },
        };
        let workspace = self.home(&name).join("workspace");
        let source = match (&git, upload) {
            (Some(url), _) => format!("git {url}"),
            (None, true) => "upload".to_string(),
            (None, false) => "empty".to_string(),
        };
        let mut inst = Instance {
            name: name.clone(),
            template: template.clone(),
            id,
            port,
            params: merged,
            workspace,
            source: source.clone(),
            state: if upload {
                InstanceState::AwaitingUpload
            } else {
                InstanceState::Preparing
            },
            error: None,
            steps: Vec::new(),
            created_ms: SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let vars = inst.vars();
        let step = |name: String| Step {
            name,
            state: StepState::Pending,
            detail: String::new(),
        };
        inst.steps.push(step(format!("workspace ({source})")));
        if !tpl.files.is_empty() {
            inst.steps.push(step("files".into()));
        }
        for argv in tpl.setup_argv(&vars, port) {
            inst.steps.push(step(argv.join(" ")));
        }
        self.save(inst.clone());
        if !upload {
            let source = match git {
                Some(url) => Source::Git(url),
                None => Source::Empty,
            };
            self.prepare(inst.clone(), tpl, source);
        }
        Ok(inst)
    }

    fn upload(&mut self, name: &str, zip: Vec<u8>) -> Result<Instance, CommandError> {
        let inst = self.get(name)?;
        if inst.state != InstanceState::AwaitingUpload {
            return Err(CommandError::Conflict(format!(
                "`{name}` is {}, not waiting for an upload",
                inst.state.as_str()
            )));
        }
        let mut inst = inst.clone();
        let Some(tpl) = self.template(&inst.template) else {
            return Err(CommandError::Conflict(format!(
                "template `{}` is gone from the config",
                inst.template
            )));
        };
        inst.state = InstanceState::Preparing;
        self.save(inst.clone());
        self.prepare(inst.clone(), tpl, Source::Zip(zip));
        Ok(inst)
    }

    fn template(&self, name: &str) -> Option<Template> {
        self.project
            .templates
            .iter()
            .find(|t| t.name == name)
            .cloned()
    }

    /// `.corral/instances/NAME`: the workspace, the setup log.
    fn home(&self, name: &str) -> PathBuf {
        self.state_dir.join("instances").join(name)
    }

    /// Prepare the workspace on a task of its own; progress and the end come back as messages.
    fn prepare(&mut self, inst: Instance, tpl: Template, source: Source) {
        let (tx, reaper) = (self.tx.clone(), self.reaper.clone());
        let name = inst.name.clone();
        let task = tokio::spawn(prepare(inst, tpl, source, reaper, tx));
        self.preparing.insert(name, task);
    }

    /// The workspace is ready: ask the supervisor for the instance's service (which starts
    /// it). The answer comes back as `Defined`.
    fn prepared(&mut self, inst: Instance) {
        self.preparing.remove(&inst.name);
        let Some(tpl) = self.template(&inst.template) else {
            let mut inst = inst;
            inst.state = InstanceState::Failed;
            inst.error = Some(format!(
                "template `{}` is gone from the config",
                inst.template
            ));
            return self.save(inst);
        };
        let name = inst.name.clone();
        let body = tpl.instantiate(&inst.vars(), inst.port);
        self.records.insert(name.clone(), inst);
        let (supervisor, tx) = (self.supervisor.clone(), self.tx.clone());
        tokio::spawn(async move {
            let mut tries = 0;
            let result = loop {
                let asked = supervisor
                    .ask(Command::Define {
                        name: name.clone(),
                        body: body.clone(),
                        replace: false,
                    })
                    .await;
                match asked {
                    // A reload waiting for stops: this definition goes in after it.
                    Err(CommandError::Conflict(m)) if m.contains("reload") && tries < 600 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    other => break other.map(drop).map_err(|e| e.to_string()),
                }
            };
            let _ = tx.send(Msg::Defined(name, result));
        });
    }

    fn defined(&mut self, name: &str, result: Result<(), String>) {
        let Some(mut inst) = self.records.get(name).cloned() else {
            // Deleted meanwhile: its service must go too.
            if result.is_ok() {
                let supervisor = self.supervisor.clone();
                let name = name.to_string();
                tokio::spawn(async move {
                    let _ = supervisor.ask(Command::Remove { name }).await;
                });
            }
            return;
        };
        match result {
            Ok(()) => inst.state = InstanceState::Ready,
            Err(e) => {
                inst.state = InstanceState::Failed;
                inst.error = Some(format!("its service is not valid: {e}"));
                let _ = std::fs::remove_dir_all(&inst.workspace);
            }
        }
        self.save(inst);
    }

    fn delete(&mut self, name: String, reply: oneshot::Sender<Result<String, CommandError>>) {
        if let Err(e) = self.get(&name) {
            let _ = reply.send(Err(e));
            return;
        }
        if self.deleting.contains(&name) {
            let _ = reply.send(Err(CommandError::Conflict(format!(
                "`{name}` is being deleted already"
            ))));
            return;
        }
        // Preparing: cancel it, and what its steps started.
        if let Some(task) = self.preparing.remove(&name) {
            task.abort();
            kill_setup_leftovers(&name);
        }
        self.deleting.insert(name.clone());
        let (supervisor, tx) = (self.supervisor.clone(), self.tx.clone());
        tokio::spawn(async move {
            let result = match supervisor.ask(Command::Remove { name: name.clone() }).await {
                Ok(_) => Ok(()),
                // It had no service (yet): only files to delete.
                Err(CommandError::UnknownUnit { .. } | CommandError::NotRunning(_)) => Ok(()),
                Err(e) => Err(e),
            };
            let _ = tx.send(Msg::Removed(name, result, reply));
        });
    }

    /// Delete what an instance leaves on disk: workspace, setup log, logs, record.
    fn delete_files(&mut self, name: &str) {
        let _ = std::fs::remove_dir_all(self.home(name));
        // Its log and the rotated ones, `NAME.log.1`, `.2`, …: rotation renames each up by one,
        // so they follow without a gap (listing the directory, which holds every unit's logs,
        // made each deletion dearer than the one before).
        let log = self.state_dir.join("logs").join(format!("{name}.log"));
        let _ = std::fs::remove_file(&log);
        for n in 1.. {
            if std::fs::remove_file(format!("{}.{n}", log.display())).is_err() {
                break;
            }
        }
        if let Some(store) = &self.store
            && let Err(e) = store.remove_template_instance(name)
        {
            crate::say!("corral: {e}");
        }
        self.records.remove(name);
        self.notify(name, "deleted", format!("instance {name}: deleted"));
    }
}

/// Prepare one instance's workspace: source, files, setup steps, reporting each step.
async fn prepare(
    mut inst: Instance,
    tpl: Template,
    source: Source,
    reaper: Reaper,
    tx: UnboundedSender<Msg>,
) {
    let vars = inst.vars();
    let dir = inst.workspace.clone();
    let home = dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.clone());
    let log = home.join("setup.log");
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k != proctable::MARKER_VAR)
        .collect();
    env.push(("PORT".into(), inst.port.to_string()));
    let owner = format!("setup:{}", inst.name);
    let marker = |i: usize| proctable::marker(&owner, i as u64);
    let report = |inst: &Instance| {
        let _ = tx.send(Msg::Progress(Box::new(inst.clone())));
    };
    let fail = |mut inst: Instance, i: usize, why: String| {
        inst.set_step(i, StepState::Failed, why.clone());
        inst.state = InstanceState::Failed;
        inst.error = Some(why);
        // No half-made workspace is left behind.
        let _ = std::fs::remove_dir_all(&inst.workspace);
        let _ = tx.send(Msg::Progress(Box::new(inst)));
    };
    // A template with `user` (or `group`): its service runs as that user, so the workspace is
    // theirs and its setup steps run as them too (what they write, the service can change).
    let text = |key: &str| match corral_config::node::get(&tpl.body, key) {
        Some(corral_config::Node {
            value: corral_config::node::Value::String(s),
            ..
        }) => Some(corral_config::fill(s, &vars)),
        _ => None,
    };
    let (user, group) = (text("user"), text("group"));
    let identity = if user.is_some() || group.is_some() {
        match corral_config::Identity::lookup(user.as_deref(), group.as_deref()) {
            Ok(id) => Some(id),
            Err(e) => return fail(inst, 0, e.message),
        }
    } else {
        None
    };
    let handover = |dir: &Path| match &identity {
        Some(id) => chown_tree(dir, id.uid, id.gid)
            .map_err(|e| format!("cannot give the workspace to `{}`: {e}", id.user)),
        None => Ok(()),
    };
    inst.set_step(0, StepState::Running, "");
    report(&inst);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return fail(inst, 0, format!("cannot create `{}`: {e}", dir.display()));
    }
    let made = match source {
        Source::Empty => Ok(()),
        Source::Zip(bytes) => {
            let d = dir.clone();
            match tokio::task::spawn_blocking(move || extract_zip(&bytes, &d)).await {
                Ok(r) => r.map(drop),
                Err(e) => Err(e.to_string()),
            }
        }
        Source::Git(url) => {
            let argv = vec![
                "git".to_string(),
                "clone".into(),
                "--quiet".into(),
                "--".into(),
                url,
                dir.display().to_string(),
            ];
            let step = SetupCommand {
                argv: &argv,
                cwd: &home,
                env: &env,
                log: &log,
                marker: &marker(0),
                timeout: tpl.setup_timeout,
                // Into a directory of corral's; handed over below.
                identity: None,
            };
            run_step(&reaper, step).await
        }
    };
    if let Err(e) = made {
        return fail(inst, 0, e);
    }
    inst.set_step(0, StepState::Done, "");
    let mut i = 1;
    if !tpl.files.is_empty() {
        for (rel, content) in &tpl.files {
            let path = dir.join(rel);
            let written = path
                .parent()
                .map_or(Ok(()), std::fs::create_dir_all)
                .and_then(|_| std::fs::write(&path, corral_config::fill(content, &vars)));
            if let Err(e) = written {
                return fail(inst, i, format!("cannot write `{rel}`: {e}"));
            }
        }
        inst.set_step(i, StepState::Done, format!("{} written", tpl.files.len()));
        i += 1;
    }
    if let Err(e) = handover(&dir) {
        return fail(inst, 0, e);
    }
    for argv in tpl.setup_argv(&vars, inst.port) {
        inst.set_step(i, StepState::Running, "");
        report(&inst);
        let step = SetupCommand {
            argv: &argv,
            cwd: &dir,
            env: &env,
            log: &log,
            marker: &marker(i),
            timeout: tpl.setup_timeout,
            identity: identity.as_ref(),
        };
        if let Err(e) = run_step(&reaper, step).await {
            return fail(inst, i, e);
        }
        inst.set_step(i, StepState::Done, "");
        i += 1;
    }
    let _ = tx.send(Msg::Prepared(Box::new(inst)));
}

/// `chown -R`, without following links.
fn chown_tree(dir: &std::path::Path, uid: u32, gid: u32) -> std::io::Result<()> {
    let own = |p: &std::path::Path| std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    own(dir)?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            chown_tree(&entry.path(), uid, gid)?;
        } else {
            own(&entry.path())?;
        }
    }
    Ok(())
}
