//! Stage 4, lower: validated, resolved units into a [`Project`] — the engine's [`Plan`] and the
//! runtime's [`UnitDef`]s — and the same again when services are defined at run time, from what
//! was validated before plus the new definitions, without reading any file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use corral_engine::{Kind, Plan};

use crate::diag::{ConfigError, Diagnostic};
use crate::model::{LogSettings, Project, Template};
use crate::node::{Key, Node, Span, Value};
use crate::read::{self, NAME_HELP, RawUnit};
use crate::validate::{self, Context, Draft, Walker};

/// What a project keeps so it can be lowered again with definitions added at run time.
#[derive(Debug)]
pub struct Base {
    file: PathBuf,
    /// The file's text, to show the lines an error is about.
    source_text: String,
    ctx: Context,
    /// What the file's units keep for being resolved again (dependencies by name); their specs
    /// and definitions are the first units of every project lowered from this base.
    drafts: Vec<Kept>,
    /// What the file says that corral could not carry out (another format's keys).
    warnings: Vec<crate::diag::Diagnostic>,
    format: crate::formats::Format,
    /// Files read over `file`, with where each starts in `source_text`.
    parts: Vec<(PathBuf, usize)>,
    /// How the files were read (so `reload` reads them the same way).
    options: crate::formats::ReadOptions,
}

/// Of a unit's [`Draft`], what its spec and definition in a project do not hold: one copy of
/// every spec was kept here besides the plan's (a third of a KiB a unit).
#[derive(Clone, Debug)]
struct Kept {
    deps: Vec<(String, crate::node::Span, Option<corral_engine::Condition>)>,
    port_spans: Vec<(u16, crate::node::Span)>,
    log_span: Option<crate::node::Span>,
}

impl Kept {
    fn of(d: &Draft) -> Kept {
        Kept {
            deps: d.deps.clone(),
            port_spans: d.port_spans.clone(),
            log_span: d.log_span.clone(),
        }
    }
}

/// A service defined at run time (over the API, or rendered from a template): the keys of a
/// `[services.NAME]` table as a node tree whose spans name its fields.
#[derive(Clone, Debug)]
pub struct Definition {
    pub name: String,
    /// Shared: every change to the services added at run time lowers all of them again, and
    /// copying, comparing and dropping each tree at each change was much of what made the
    /// 1,000th instance dearer than the first.
    pub body: Arc<Node>,
}

impl Definition {
    /// From JSON (what the API takes and the daemon stores). `owner` says whose it is, for
    /// errors: ``service `x` (added at run time)``.
    pub fn from_json(name: &str, json: &serde_json::Value, owner: &str) -> Definition {
        Definition {
            name: name.to_string(),
            body: Arc::new(Node::from_json(json, &Arc::from(owner))),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        self.body.to_json()
    }

    /// A definition stored by a corral before definitions were JSON (the inside of a
    /// `[services.NAME]` table as TOML text). None if it does not parse.
    pub fn from_legacy_toml(name: &str, text: &str, owner: &str) -> Option<Definition> {
        let node = read::toml(text).ok()?;
        Some(Definition::from_json(name, &node.to_json(), owner))
    }
}

impl Template {
    /// An instance's service: the template's keys with every placeholder filled and `port` as
    /// its one port, as JSON (stored like any service defined at run time).
    pub fn instantiate(&self, vars: &[(String, String)], port: u16) -> serde_json::Value {
        let mut body: Vec<(Key, Node)> = self.body.clone();
        body.retain(|(k, _)| k.name != "ports");
        let port_node = Node {
            value: Value::Integer(Some(i64::from(port))),
            span: Span::TOP,
        };
        body.push((
            Key {
                name: "ports".into(),
                span: Span::TOP,
            },
            Node {
                value: Value::Array(vec![port_node]),
                span: Span::TOP,
            },
        ));
        // A string command (and a string `exec` probe) runs with `sh -c`: its values are
        // quoted for the shell. Everything else is filled as written.
        let filled: Vec<(Key, Node)> = body
            .iter()
            .map(|(k, v)| {
                let v = match (k.name.as_str(), &v.value) {
                    ("command", Value::String(_)) => v.fill_shell(vars),
                    ("readiness" | "liveness", Value::Table(t)) => Node {
                        value: Value::Table(
                            t.iter()
                                .map(|(pk, pv)| match (pk.name.as_str(), &pv.value) {
                                    ("exec", Value::String(_)) => (pk.clone(), pv.fill_shell(vars)),
                                    _ => (pk.clone(), pv.fill(vars)),
                                })
                                .collect(),
                        ),
                        span: v.span.clone(),
                    },
                    _ => v.fill(vars),
                };
                (k.clone(), v)
            })
            .collect();
        Node {
            value: Value::Table(filled),
            span: Span::TOP,
        }
        .to_json()
    }
}

/// Read, validate, resolve and lower the config `text` of `file`. `inherited` is the
/// environment the processes inherit (normally corral's own).
pub fn parse_project(
    file: &Path,
    text: &str,
    inherited: &BTreeMap<String, String>,
) -> Result<Project, ConfigError> {
    parse_project_with(
        file,
        text,
        inherited,
        &crate::formats::ReadOptions::default(),
    )
}

/// [`parse_project`], for a file in any format, with how to read it.
pub fn parse_project_with(
    file: &Path,
    text: &str,
    inherited: &BTreeMap<String, String>,
    options: &crate::formats::ReadOptions,
) -> Result<Project, ConfigError> {
    let root = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    let format = crate::formats::Format::of(file, text);
    // Files read over this one: one combined text, each file's spans moved to its place in it,
    // so an error names the right file and line.
    let mut combined = text.to_string();
    let mut parts: Vec<(PathBuf, usize)> = Vec::new();
    let mut read_errors = Vec::new();
    let mut over_docs = Vec::new();
    for o in &options.overrides {
        let o = std::path::absolute(o).unwrap_or_else(|_| o.clone());
        match std::fs::read_to_string(&o) {
            Ok(t) => {
                combined.push('\n');
                let start = combined.len();
                combined.push_str(&t);
                let f = crate::formats::Format::of(&o, &t);
                if f != format || f == crate::formats::Format::Procfile {
                    read_errors.push(Diagnostic::new(
                        Span::File(start..start),
                        format!(
                            "`{}` is {}; only files of the same kind can be read over {} (and not Procfiles)",
                            o.display(),
                            f.describe(),
                            format.describe()
                        ),
                    ));
                } else {
                    match crate::formats::read(f, &t) {
                        Ok(mut d) => {
                            crate::formats::shift(&mut d, start);
                            over_docs.push(d);
                        }
                        Err(mut ds) => {
                            for d in &mut ds {
                                if let Span::File(r) = &mut d.span {
                                    *r = r.start + start..r.end + start;
                                }
                            }
                            read_errors.extend(ds);
                        }
                    }
                }
                parts.push((o, start));
            }
            Err(e) => read_errors.push(Diagnostic::new(
                Span::TOP,
                format!("cannot read `{}`: {e}", o.display()),
            )),
        }
    }
    let error = |diagnostics| {
        let mut e = ConfigError {
            file: file.to_path_buf(),
            source_text: combined.clone(),
            diagnostics,
            parts: parts.clone(),
        };
        e.sort();
        e
    };
    let mut doc = crate::formats::read(format, text).map_err(error)?;
    if !read_errors.is_empty() {
        return Err(error(read_errors));
    }
    for d in over_docs {
        doc = crate::formats::merge(doc, d);
    }
    let (doc, warnings) =
        crate::formats::shape(format, doc, &root, inherited, options).map_err(error)?;
    let mut w = Walker {
        diags: Vec::new(),
        root: &root,
        in_template: false,
    };
    let mut raw = read::project(&doc, &mut w.diags);
    // A Procfile's formation names process types, and its reader has used it already.
    let formation = match format {
        crate::formats::Format::Procfile => Default::default(),
        _ => options.formation.clone(),
    };
    crate::replicas::expand(&mut raw, &formation, &mut w.diags);

    // Project-wide environment: inherited, then `.env` if present, then `env_file`, then `env`.
    let mut env = inherited.clone();
    w.load_env_file(&root.join(".env"), Span::TOP, &mut env, false);
    if let Some(v) = &raw.env_file {
        for (path, span) in w.env_files(v) {
            w.load_env_file(&path, span, &mut env, true);
        }
    }
    if let Some(v) = &raw.env {
        w.env_table(v, &mut env);
    }
    let mut log = LogSettings::default();
    if let Some(v) = &raw.log {
        log = w.log_settings(v, log);
    }
    let shell = raw.shell.as_ref().and_then(|v| w.shell(v));
    let ctx = Context {
        root: root.clone(),
        inherited: env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        env,
        log,
        shell,
    };
    let mut drafts: Vec<Draft> = raw
        .units
        .iter()
        .map(|u| validate::unit(&mut w, u, &ctx))
        .collect();
    let templates: Vec<Template> = raw
        .templates
        .iter()
        .map(|t| validate::template(&mut w, t, &ctx))
        .collect();
    let mut diags = w.diags;
    crate::resolve::dependencies(&mut diags, &mut drafts);
    crate::resolve::ports(&mut diags, &drafts);
    crate::resolve::log_files(&mut diags, &drafts, &root.join(".corral"));
    if !diags.is_empty() {
        return Err(error(diags));
    }
    share_envs(&mut drafts);
    let base = Arc::new(Base {
        file: file.to_path_buf(),
        source_text: combined.clone(),
        ctx,
        drafts: drafts.iter().map(Kept::of).collect(),
        warnings,
        format,
        parts: parts.clone(),
        options: options.clone(),
    });
    Ok(lower(base, drafts, templates, Arc::default()))
}

/// Units whose environments are equal share one copy of it. Each unit's environment is the
/// whole inherited one plus its own few: 2,000 copies of a 35-variable environment were a third
/// of the memory of a 2,000-service stack.
fn share_envs(drafts: &mut [Draft]) {
    type Env = Arc<[(String, String)]>;
    let mut seen: std::collections::HashSet<Env> = std::collections::HashSet::new();
    // Copies met before are known by address, without hashing what they hold (adding a
    // definition at run time hashes only the new one's).
    let mut by_address: std::collections::HashMap<*const (String, String), Env> =
        std::collections::HashMap::new();
    for d in drafts {
        let at = d.def.env.as_ptr();
        let canonical = match by_address.get(&at) {
            Some(canonical) => canonical.clone(),
            None => {
                let canonical = match seen.get(&d.def.env) {
                    Some(same) => same.clone(),
                    None => {
                        seen.insert(d.def.env.clone());
                        d.def.env.clone()
                    }
                };
                by_address.insert(at, canonical.clone());
                canonical
            }
        };
        // Written only where it changes: a definition shared with the project's file stays so.
        if !Arc::ptr_eq(&canonical, &d.def.env) {
            Arc::make_mut(&mut d.def).env = canonical;
        }
    }
}

fn lower(
    base: Arc<Base>,
    drafts: Vec<Draft>,
    templates: Vec<Template>,
    added: Arc<Vec<(Definition, Arc<Draft>)>>,
) -> Project {
    let root = base.ctx.root.clone();
    let (units, defs) = drafts.into_iter().map(|d| (d.spec, d.def)).unzip();
    Project {
        file: base.file.clone(),
        state_dir: root.join(".corral"),
        root,
        units: defs,
        plan: Arc::new(Plan::new(units)),
        templates,
        base,
        added,
    }
}

impl Project {
    /// What the file says that corral does not carry out, rendered with file, line and column
    /// (empty when nothing).
    pub fn warnings(&self) -> String {
        let base = &self.base;
        let sources = crate::diag::Sources {
            file: &base.file,
            text: &base.source_text,
            parts: &base.parts,
        };
        crate::diag::render(sources, &base.warnings, "warning")
    }

    /// The format of the project's file.
    pub fn format(&self) -> crate::formats::Format {
        self.base.format
    }

    /// How the project's files were read (for reading them again).
    pub fn read_options(&self) -> &crate::formats::ReadOptions {
        &self.base.options
    }

    /// This project (as read from its file) with `defs` added: the services defined at run
    /// time. Only the definitions are validated; no file is read, so a file being edited does
    /// not change what runs until `reload`. Errors name the definitions' fields.
    pub fn with_definitions(&self, defs: &[Definition]) -> Result<Project, ConfigError> {
        // One definition more or one fewer than this project was made with, the others the
        // same trees (an instance created or deleted): the change is made to this project, in
        // time that hardly grows with its units. Lowering all of them again made creating the
        // 2,000th instance 4× dearer than the first. Whatever the short way would have to
        // report, it leaves to the whole way, which reports it.
        if let Some(p) = self.changed_by_one(defs) {
            return Ok(p);
        }
        self.lowered_with(defs)
    }

    /// [`Project::with_definitions`] the whole way: every unit lowered and resolved again.
    pub(crate) fn lowered_with(&self, defs: &[Definition]) -> Result<Project, ConfigError> {
        let base = &self.base;
        let mut w = Walker {
            diags: Vec::new(),
            root: &base.ctx.root,
            in_template: false,
        };
        // The file's units first, as every project lowered from this base has them.
        let mut drafts: Vec<Draft> = base
            .drafts
            .iter()
            .zip(self.plan.units.iter().zip(&self.units))
            .map(|(kept, (spec, def))| Draft {
                spec: corral_engine::UnitSpec::clone(spec),
                def: def.clone(),
                deps: kept.deps.clone(),
                port_spans: kept.port_spans.clone(),
                log_span: kept.log_span.clone(),
            })
            .collect();
        // Names taken so far, by kind (a search of the list for each definition made adding
        // the 1,000th instance O(N²)).
        let mut taken: std::collections::HashMap<String, Kind> = drafts
            .iter()
            .map(|x| (x.spec.name.clone(), x.spec.kind))
            .collect();
        let before: std::collections::HashMap<&str, &(Definition, Arc<Draft>)> = self
            .added
            .iter()
            .map(|entry| (entry.0.name.as_str(), entry))
            .collect();
        let mut validated = Vec::with_capacity(defs.len());
        for d in defs {
            let span = d.body.span.clone();
            if !read::valid_name(&d.name) {
                w.diags.push(
                    Diagnostic::new(span, format!("`{}` is not a valid name", d.name))
                        .with_help(NAME_HELP),
                );
                continue;
            }
            if let Some(kind) = taken.get(&d.name) {
                w.diags.push(Diagnostic::new(
                    span,
                    format!(
                        "`{}` is defined twice (already a {})",
                        d.name,
                        kind.as_str()
                    ),
                ));
                continue;
            }
            let Value::Table(body) = &d.body.value else {
                w.diags.push(Diagnostic::new(
                    span,
                    format!(
                        "a definition must be an object of the keys of a service, found {}",
                        d.body.value.type_str()
                    ),
                ));
                continue;
            };
            taken.insert(d.name.clone(), Kind::Service);
            // A definition lowered before is not lowered again. It is the same tree, as a rule
            // (the caller's list is the one it was given last time, plus or minus one).
            let (draft, kept) = match before.get(d.name.as_str()) {
                Some((old, kept)) if Arc::ptr_eq(&old.body, &d.body) || old.body == d.body => {
                    (Draft::clone(kept), kept.clone())
                }
                _ => {
                    let raw = RawUnit {
                        kind: Kind::Service,
                        name: d.name.clone(),
                        name_span: span.clone(),
                        body: body.clone(),
                        span,
                    };
                    let draft = validate::unit(&mut w, &raw, &base.ctx);
                    (draft.clone(), Arc::new(draft))
                }
            };
            validated.push((d.clone(), kept));
            drafts.push(draft);
        }
        share_envs(&mut drafts);
        let mut diags = w.diags;
        crate::resolve::dependencies(&mut diags, &mut drafts);
        crate::resolve::ports(&mut diags, &drafts);
        crate::resolve::log_files(&mut diags, &drafts, &base.ctx.root.join(".corral"));
        if !diags.is_empty() {
            let mut e = ConfigError {
                file: base.file.clone(),
                source_text: base.source_text.clone(),
                diagnostics: diags,
                parts: base.parts.clone(),
            };
            e.sort();
            return Err(e);
        }
        Ok(lower(
            self.base.clone(),
            drafts,
            self.templates.clone(),
            Arc::new(validated),
        ))
    }

    /// `defs` as this project's own definitions with one added at the end or one taken out,
    /// made from this project; None if it is not that, or if the change has anything to report.
    fn changed_by_one(&self, defs: &[Definition]) -> Option<Project> {
        let had = &self.added;
        let same = |d: &Definition, (h, _): &(Definition, Arc<Draft>)| {
            d.name == h.name && Arc::ptr_eq(&d.body, &h.body)
        };
        let common = defs
            .iter()
            .zip(had.iter())
            .take_while(|(d, h)| same(d, h))
            .count();
        if defs.len() == had.len() + 1 && common == had.len() {
            return self.with_one_more(&defs[common]);
        }
        if defs.len() + 1 == had.len()
            && defs[common..]
                .iter()
                .zip(&had[common + 1..])
                .all(|(d, h)| same(d, h))
        {
            return self.with_one_fewer(common);
        }
        None
    }

    /// This project and the service `def`, if it is valid.
    fn with_one_more(&self, def: &Definition) -> Option<Project> {
        let base = &self.base;
        if !read::valid_name(&def.name) || self.plan.find(&def.name).is_some() {
            return None;
        }
        let Value::Table(body) = &def.body.value else {
            return None;
        };
        let mut w = Walker {
            diags: Vec::new(),
            root: &base.ctx.root,
            in_template: false,
        };
        let raw = RawUnit {
            kind: Kind::Service,
            name: def.name.clone(),
            name_span: def.body.span.clone(),
            body: body.clone(),
            span: def.body.span.clone(),
        };
        let mut draft = validate::unit(&mut w, &raw, &base.ctx);
        if !w.diags.is_empty() {
            return None;
        }
        // Its environment is the last units' if it is the same (instances of one template): one
        // copy, as `share_envs` would have made it, without hashing every unit's.
        if let Some(same) = self
            .units
            .iter()
            .rev()
            .take(4)
            .find(|u| u.env == draft.def.env)
        {
            Arc::make_mut(&mut draft.def).env = same.env.clone();
        }
        let kept = Arc::new(draft.clone());
        // Its dependencies can only be units there already: theirs were resolved without it,
        // so none depends on it and no cycle can pass through it. A name not found (its own
        // too) goes the whole way to be reported.
        draft.spec.deps.clear();
        for (dn, span, condition) in &draft.deps {
            let id = self.plan.find(dn)?;
            let dep_kind = self.plan.get(id).kind;
            let condition = condition.unwrap_or(crate::resolve::default_condition(dep_kind));
            if crate::resolve::never_met(dn, span, condition, dep_kind, &self.units[id.0]).is_some()
            {
                return None;
            }
            draft.spec.deps.push(corral_engine::Dependency {
                unit: id,
                condition,
            });
        }
        // A fixed port or a log file of its own must not be another unit's.
        let ports = base
            .drafts
            .iter()
            .map(|k| &k.port_spans)
            .chain(self.added.iter().map(|(_, d)| &d.port_spans));
        if !draft.port_spans.is_empty() {
            for theirs in ports {
                if theirs
                    .iter()
                    .any(|(p, _)| draft.port_spans.iter().any(|(q, _)| p == q))
                {
                    return None;
                }
            }
        }
        if draft.log_span.is_some() {
            let path = crate::model::log_path(&self.state_dir, &def.name, draft.def.log_file());
            if self
                .units
                .iter()
                .any(|u| crate::model::log_path(&self.state_dir, &u.name, u.log_file()) == path)
            {
                return None;
            }
        }
        let plan = self.plan.with_unit(draft.spec)?;
        let mut units = Vec::with_capacity(self.units.len() + 1);
        units.extend(self.units.iter().cloned());
        units.push(draft.def);
        let mut added = Vec::with_capacity(self.added.len() + 1);
        added.extend(self.added.iter().cloned());
        added.push((def.clone(), kept));
        Some(self.with_units(units, plan, added))
    }

    /// This project without the `at`th of its definitions, if no unit depends on it.
    fn with_one_fewer(&self, at: usize) -> Option<Project> {
        // The file's units come first, then the definitions in their order.
        let id = corral_engine::UnitId(self.base.drafts.len() + at);
        if self.units.get(id.0)?.name != self.added[at].0.name {
            return None;
        }
        let plan = self.plan.without_unit(id)?;
        let mut units = self.units.clone();
        units.remove(id.0);
        let mut added = self.added.to_vec();
        added.remove(at);
        Some(self.with_units(units, plan, added))
    }

    fn with_units(
        &self,
        units: Vec<Arc<crate::model::UnitDef>>,
        plan: Plan,
        added: Vec<(Definition, Arc<Draft>)>,
    ) -> Project {
        Project {
            file: self.file.clone(),
            root: self.root.clone(),
            state_dir: self.state_dir.clone(),
            units,
            plan: Arc::new(plan),
            templates: self.templates.clone(),
            base: self.base.clone(),
            added: Arc::new(added),
        }
    }
}
