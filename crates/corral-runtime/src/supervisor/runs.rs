//! Pipelines started through the API: the tasks of a run (and the tasks they need) run again
//! in this supervisor's engine; a run ends when all of them have; waiters get the verdicts.

use super::*;

/// A pipeline run started through the API.
#[derive(Clone, Debug)]
pub struct RunView {
    pub id: u64,
    /// `running`, `passed` or `failed`.
    pub state: &'static str,
    pub sequential: bool,
    pub started: SystemTime,
    pub elapsed: Duration,
    pub tasks: Vec<TaskResult>,
}

#[derive(Clone, Debug)]
pub struct TaskResult {
    pub name: String,
    /// `PASS`, `FAIL`, `SKIP`, `ALLOWED` (failed, allowed to), or `RUNNING` / `PENDING`.
    pub verdict: &'static str,
    pub detail: String,
    pub duration: Option<Duration>,
}

/// How a task ended, for summaries: the verdict and what to say about it.
pub fn verdict(state: &State, allow_failure: bool) -> (&'static str, String) {
    match state {
        State::Exited { status } if status.success() => ("PASS", String::new()),
        State::Exited { status } if allow_failure => {
            ("ALLOWED", format!("{status} (allowed to fail)"))
        }
        State::Exited { status } => ("FAIL", status.to_string()),
        State::Failed { reason } if allow_failure => {
            ("ALLOWED", format!("{reason} (allowed to fail)"))
        }
        State::Failed { reason } => ("FAIL", reason.to_string()),
        State::Skipped { reason } => ("SKIP", reason.to_string()),
        State::Starting | State::Running { .. } | State::Stopping { .. } => {
            ("RUNNING", String::new())
        }
        State::Inactive | State::Blocked { .. } | State::Backoff { .. } => {
            ("PENDING", String::new())
        }
    }
}

/// The pipeline being run, and the ones before it.
pub(super) struct Run {
    pub(super) id: u64,
    pub(super) tasks: Vec<UnitId>,
    pub(super) sequential: bool,
    pub(super) started: SystemTime,
    pub(super) began: Instant,
    /// Set when it has finished.
    pub(super) result: Option<RunView>,
}

impl Supervisor {
    /// The view of run `run` as it stands.
    pub(super) fn run_view(&self, run: &Run) -> RunView {
        if let Some(done) = &run.result {
            return done.clone();
        }
        let tasks = run
            .tasks
            .iter()
            .map(|id| {
                let u = self.engine.unit(*id);
                let spec = self.project.plan.get(*id);
                let (verdict, detail) = verdict(&u.state, spec.allow_failure);
                let duration = match (u.started_at, u.ended_at) {
                    (Some(s), Some(e)) if e >= s && u.state.is_terminal() => Some(e - s),
                    _ => None,
                };
                TaskResult {
                    name: spec.name.clone(),
                    verdict,
                    detail,
                    duration,
                }
            })
            .collect::<Vec<_>>();
        let finished = run
            .tasks
            .iter()
            .all(|id| self.engine.state(*id).is_terminal());
        let failed = tasks.iter().any(|t| matches!(t.verdict, "FAIL" | "SKIP"));
        RunView {
            id: run.id,
            state: match (finished, failed) {
                (false, _) => "running",
                (true, false) => "passed",
                (true, true) => "failed",
            },
            sequential: run.sequential,
            started: run.started,
            elapsed: run.began.elapsed(),
            tasks,
        }
    }

    /// Start a pipeline run: the tasks and the tasks they depend on, all run again.
    pub(super) async fn start_run(
        &mut self,
        names: Vec<String>,
        sequential: bool,
    ) -> Result<Reply, CommandError> {
        if self.runs.last().is_some_and(|r| r.result.is_none()) {
            return Err(CommandError::Conflict(
                "a pipeline is running; wait for it (GET /v1/runs/ID?wait=true)".into(),
            ));
        }
        let mut roots = Vec::new();
        for name in &names {
            let id = self.find_unit(name)?;
            if self.project.plan.get(id).kind != Kind::Task {
                return Err(CommandError::Invalid(format!("`{name}` is not a task")));
            }
            roots.push(id);
        }
        if names.is_empty() {
            roots = self
                .project
                .plan
                .ids()
                .filter(|id| self.project.plan.get(*id).kind == Kind::Task)
                .collect();
        }
        if roots.is_empty() {
            return Err(CommandError::Invalid("the project defines no tasks".into()));
        }
        // The tasks they depend on, transitively, run again too.
        let mut tasks: Vec<UnitId> = Vec::new();
        let mut stack = roots;
        while let Some(id) = stack.pop() {
            if self.project.plan.get(id).kind != Kind::Task || tasks.contains(&id) {
                continue;
            }
            tasks.push(id);
            stack.extend(self.project.plan.get(id).deps.iter().map(|d| d.unit));
        }
        if let Some(live) = tasks.iter().find(|id| self.engine.state(**id).is_live()) {
            return Err(CommandError::Conflict(format!(
                "task `{}` is still running",
                self.project.plan.get(*live).name
            )));
        }
        tasks.sort();
        self.engine.set_task_mode(sequential);
        let id = self.runs.last().map_or(1, |r| r.id + 1);
        self.runs.push(Run {
            id,
            tasks: tasks.clone(),
            sequential,
            started: SystemTime::now(),
            began: Instant::now(),
            result: None,
        });
        if self.runs.len() > 20 {
            self.runs.remove(0);
        }
        for unit in tasks {
            self.handle(Event::Start {
                unit,
                dependents: false,
            })
            .await;
        }
        let run = self.runs.last().expect("just pushed");
        Ok(Reply::Run(self.run_view(run)))
    }

    /// Finish the running pipeline once all its tasks have ended, and answer who waits.
    pub(super) fn check_run(&mut self) {
        let Some(run) = self.runs.last() else { return };
        if run.result.is_some()
            || !run
                .tasks
                .iter()
                .all(|id| self.engine.state(*id).is_terminal())
        {
            return;
        }
        let view = self.run_view(run);
        if let Some(run) = self.runs.last_mut() {
            run.result = Some(view.clone());
        }
        self.engine.set_task_mode(self.options.sequential);
        for w in self.run_waiters.drain(..) {
            let _ = w.send(Ok(Reply::Run(view.clone())));
        }
    }
}
