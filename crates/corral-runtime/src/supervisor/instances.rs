//! Instances of templates, as the supervisor keeps them: records, the preparation task's
//! progress, adding the rendered service once the workspace is ready, deleting with cleanup.

use super::*;

/// A short random id for an instance.
pub(super) fn fastrand_id() -> u32 {
    fastrand::u32(..0x100_0000)
}

impl Supervisor {
    pub(super) fn instance(&self, name: &str) -> Result<&crate::instances::Instance, CommandError> {
        self.instances
            .get(name)
            .ok_or_else(|| CommandError::NotFound(format!("no instance named `{name}`")))
    }

    /// Keep an instance's record (memory and store).
    pub(super) fn save_instance(&mut self, inst: crate::instances::Instance) {
        match serde_json::to_string(&inst) {
            Ok(json) => {
                if let Err(e) = self.store.put_template_instance(&inst.name, &json) {
                    eprintln!("corral: {e}");
                }
            }
            Err(e) => eprintln!("corral: cannot record instance `{}`: {e}", inst.name),
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
        let _ = self.notices.send(Arc::new(Notice {
            time: SystemTime::now(),
            unit: inst.name.clone(),
            kind: NoticeKind::Instance,
            state: inst.state.as_str(),
            message: note,
        }));
        self.instances.insert(inst.name.clone(), inst);
    }

    pub(super) fn create_instance(
        &mut self,
        template: String,
        params: Vec<(String, String)>,
        git: Option<String>,
        upload: bool,
    ) -> Result<Reply, CommandError> {
        use crate::instances::{Instance, Source, Step};
        let tpl = self.project.template(&template).cloned().ok_or_else(|| {
            let names: Vec<&str> = self
                .project
                .templates
                .iter()
                .map(|t| t.name.as_str())
                .collect();
            CommandError::NotFound(
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
            )
        })?;
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
            let id = format!("{:06x}", fastrand_id());
            let name = format!("{template}-{id}");
            if self.project.plan.find(&name).is_none() && !self.instances.contains_key(&name) {
                break id;
            }
        };
        let name = format!("{template}-{id}");
        let used: HashSet<u16> = self.instances.values().map(|i| i.port).collect();
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
        let workspace = self
            .project
            .state_dir
            .join("instances")
            .join(&name)
            .join("workspace");
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
        self.save_instance(inst.clone());
        if !upload {
            let source = match git {
                Some(url) => Source::Git(url),
                None => Source::Empty,
            };
            self.prepare_instance(inst.clone(), source);
        }
        Ok(Reply::Instance(Box::new(inst)))
    }

    /// Prepare the workspace on a task of its own; progress and the end come back as messages.
    pub(super) fn prepare_instance(
        &self,
        mut inst: crate::instances::Instance,
        source: crate::instances::Source,
    ) {
        use crate::instances::{SetupCommand, Source, extract_zip, run_step};
        let Some(tpl) = self.project.template(&inst.template).cloned() else {
            return;
        };
        let (tx, reaper) = (self.tx.clone(), self.reaper.clone());
        tokio::spawn(async move {
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
            let report = |inst: &crate::instances::Instance| {
                let _ = tx.send(Msg::InstanceProgress(Box::new(inst.clone())));
            };
            let fail = |mut inst: crate::instances::Instance, i: usize, why: String| {
                inst.set_step(i, StepState::Failed, why.clone());
                inst.state = InstanceState::Failed;
                inst.error = Some(why);
                // No half-made workspace is left behind.
                let _ = std::fs::remove_dir_all(&inst.workspace);
                let _ = tx.send(Msg::InstanceProgress(Box::new(inst)));
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
                    run_step(
                        &reaper,
                        SetupCommand {
                            argv: &argv,
                            cwd: &home,
                            env: &env,
                            log: &log,
                            marker: &proctable::marker(&format!("setup:{}", inst.name), 0),
                            timeout: tpl.setup_timeout,
                        },
                    )
                    .await
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
            for argv in tpl.setup_argv(&vars, inst.port) {
                inst.set_step(i, StepState::Running, "");
                report(&inst);
                let step = SetupCommand {
                    argv: &argv,
                    cwd: &dir,
                    env: &env,
                    log: &log,
                    marker: &proctable::marker(&format!("setup:{}", inst.name), i as u64),
                    timeout: tpl.setup_timeout,
                };
                if let Err(e) = run_step(&reaper, step).await {
                    return fail(inst, i, e);
                }
                inst.set_step(i, StepState::Done, "");
                i += 1;
            }
            let _ = tx.send(Msg::InstanceReady(Box::new(inst)));
        });
    }

    /// The workspace is ready: add the instance's service (which starts it).
    pub(super) async fn instance_ready(&mut self, mut inst: crate::instances::Instance) {
        let Some(tpl) = self.project.template(&inst.template).cloned() else {
            inst.state = InstanceState::Failed;
            inst.error = Some(format!(
                "template `{}` is gone from the config",
                inst.template
            ));
            return self.save_instance(inst);
        };
        let body = tpl.instantiate(&inst.vars(), inst.port);
        let def = corral_config::Definition::from_json(
            &inst.name,
            &body,
            &format!("instance `{}` of template `{}`", inst.name, inst.template),
        );
        let added = self.added().unwrap_or_default();
        match self.reload_with(added, Change::Define(def)).await {
            Ok(_) => inst.state = InstanceState::Ready,
            Err(e) => {
                inst.state = InstanceState::Failed;
                inst.error = Some(format!("its service is not valid: {e}"));
                let _ = std::fs::remove_dir_all(&inst.workspace);
            }
        }
        self.save_instance(inst);
    }

    /// Delete what the instances the last reload removed left on disk: workspace, logs, record.
    pub(super) fn run_cleanups(&mut self) {
        if self.reload.is_some() {
            return;
        }
        for name in std::mem::take(&mut self.cleanup_after_reload) {
            self.delete_instance_files(&name);
        }
    }

    pub(super) fn delete_instance_files(&mut self, name: &str) {
        let _ = std::fs::remove_dir_all(self.project.state_dir.join("instances").join(name));
        let logs = self.project.state_dir.join("logs");
        if let Ok(dir) = std::fs::read_dir(&logs) {
            let prefix = format!("{name}.log");
            for e in dir.flatten() {
                let f = e.file_name();
                let f = f.to_string_lossy();
                if f == prefix
                    || f.strip_prefix(&prefix)
                        .is_some_and(|rest| rest.starts_with('.'))
                {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if let Err(e) = self.store.remove_template_instance(name) {
            eprintln!("corral: {e}");
        }
        self.instances.remove(name);
        let _ = self.notices.send(Arc::new(Notice {
            time: SystemTime::now(),
            unit: name.to_string(),
            kind: NoticeKind::Instance,
            state: "deleted",
            message: format!("instance {name}: deleted"),
        }));
    }
}
