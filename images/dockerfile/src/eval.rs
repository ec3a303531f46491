//! The evaluator of one stage: it holds the environment (the base image's Env, then ENV and
//! ARG as they come) and the image config, and turns each instruction into a [`Step`] with
//! its words expanded, the config already changed, and the history text Docker would write.

use skiff_images::manifest::RuntimeConfig;
use skiff_images::{expose, Change};

use crate::error::{Error, Result};
use crate::history;
use crate::instructions::{CommandLine, Copy, Instruction, Op};
use crate::parser;
use crate::shell::{Lexer, Vars};
use crate::stages::{build_arg, Plan, PROXY_ARGS};

/// What the executor does for one instruction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Only the config changed (already applied): record history with `empty_layer`.
    Config,
    /// WORKDIR: the config changed; create this directory in the image if it is missing.
    Workdir(String),
    Run(RunStep),
    /// COPY or ADD, words expanded; `dest` absolute.
    Copy(CopyStep),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStep {
    /// The argv to run: the exec form as written, or the shell form after the SHELL.
    pub argv: Vec<String>,
    /// `K=V` for the process: the config's Env, the stage's ARGs, given proxy ARGs.
    pub env: Vec<String>,
    /// Files to provide read-only at these paths for the run (a `RUN <<EOF` script that
    /// starts with `#!`, mode 0755).
    pub files: Vec<InlineFile>,
    pub network: Option<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
}

/// (path, content).
pub type InlineFile = (String, String);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyStep {
    pub add: bool,
    /// Stage index, or an image reference, or `None` for the build context.
    pub from: Option<CopyFrom>,
    pub sources: Vec<String>,
    /// Files made from heredocs: (name, content, already expanded when unquoted).
    pub inline: Vec<(String, String)>,
    pub dest: String,
    /// `dest` ended with `/`: it names a directory.
    pub dest_is_dir: bool,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub checksum: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CopyFrom {
    Stage(usize),
    Image(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub line: usize,
    pub action: Action,
    /// `created_by` of the history entry (the classic builder's text), also a cache key part.
    pub created_by: String,
}

/// Evaluates one stage of a [`Plan`], once its base image's config is known.
pub struct Evaluator<'p> {
    plan: &'p Plan,
    stage: usize,
    lex: Lexer,
    config: RuntimeConfig,
    /// ARGs declared in this stage with a value.
    args: Vec<(String, String)>,
    cmd_set: bool,
    author: Option<String>,
}

/// Lookup for expansion: the config's Env first (ENV beats ARG), then ARGs.
struct Scope<'a>(&'a [String], &'a [(String, String)]);

impl Vars for Scope<'_> {
    fn var(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find_map(|e| e.strip_prefix(name)?.strip_prefix('='))
            .or_else(|| self.1.var(name))
    }
}

impl<'p> Evaluator<'p> {
    /// `base` is the config the stage starts from (the base image's or the base stage's;
    /// empty for scratch).
    pub fn new(plan: &'p Plan, stage: usize, base: RuntimeConfig) -> Evaluator<'p> {
        Evaluator {
            plan,
            stage,
            lex: Lexer::new(plan.escape),
            config: RuntimeConfig {
                on_build: None,
                ..base
            },
            args: Vec::new(),
            cmd_set: false,
            author: None,
        }
    }

    /// The config as the steps so far left it.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// MAINTAINER, if the stage had one: the image's `author`.
    pub fn author(&self) -> Option<&str> {
        self.author.as_deref()
    }

    /// The base image's ONBUILD triggers as instructions, to run right after FROM.
    pub fn triggers(&self, base_on_build: &[String]) -> Result<Vec<Instruction>> {
        let mut out = Vec::new();
        for t in base_on_build {
            let line = self.plan.stages[self.stage].line;
            let wrapped = format!("ONBUILD {t}");
            let parsed = parser::parse(wrapped.as_bytes())
                .map_err(|e| Error::at(line, format!("ONBUILD trigger {t:?}: {e}")))?;
            for node in &parsed.nodes {
                let mut inst = crate::instructions::instruction(node)
                    .map_err(|e| Error::at(line, format!("ONBUILD trigger {t:?}: {e}")))?;
                if let Op::Onbuild { parsed, .. } = inst.op {
                    inst = Instruction {
                        line,
                        end_line: line,
                        ..*parsed
                    };
                    out.push(inst);
                }
            }
        }
        Ok(out)
    }

    fn expand(&self, line: usize, word: &str) -> Result<String> {
        let env = self.config.env.clone().unwrap_or_default();
        self.lex
            .word(word, &Scope(&env, &self.args))
            .map_err(|e| Error::at(line, e.to_string()))
    }

    fn expand_all(&self, line: usize, words: &[String]) -> Result<Vec<String>> {
        words.iter().map(|w| self.expand(line, w)).collect()
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .shell
            .clone()
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn change(&mut self, change: Change) -> Result<()> {
        let mut map = match serde_json::to_value(&self.config) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        change.apply(&mut map);
        self.config = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|e| Error::at(0, format!("config: {e}")))?;
        Ok(())
    }

    fn with_shell(&self, c: &CommandLine) -> Vec<String> {
        match c {
            CommandLine::Exec(a) => a.clone(),
            CommandLine::Shell(s) => {
                let mut argv = self.shell();
                argv.push(s.clone());
                argv
            }
        }
    }

    /// Evaluates one instruction of the stage (or a trigger) in order.
    pub fn step(&mut self, inst: &Instruction) -> Result<Step> {
        let line = inst.line;
        let nop = |s: &Self, text: String| history::nop(&s.shell(), &text);
        let (action, created_by) = match &inst.op {
            Op::From { .. } => return Err(Error::at(line, "FROM starts a new stage")),
            Op::Arg(args) => {
                for (name, default) in args {
                    let value = match build_arg(&self.plan.options, name) {
                        Some(v) => Some(v),
                        None => match default {
                            Some(d) => Some(self.expand(line, d)?),
                            None => self.plan.globals.var(name).map(str::to_string),
                        },
                    };
                    self.args.retain(|(k, _)| k != name);
                    if let Some(v) = value {
                        self.args.push((name.clone(), v));
                    }
                }
                let text = args
                    .iter()
                    .map(|(k, v)| v.as_ref().map_or(k.clone(), |v| format!("{k}={v}")))
                    .collect::<Vec<_>>()
                    .join(" ");
                (Action::Config, nop(self, format!("ARG {text}")))
            }
            Op::Env(pairs) | Op::Label(pairs) => {
                let mut expanded = Vec::new();
                for (k, v) in pairs {
                    // Each pair sees the ones before it (ENV A=1 B=$A).
                    let pair = (self.expand(line, k)?, self.expand(line, v)?);
                    if matches!(inst.op, Op::Env(_)) {
                        self.change(Change::Env(vec![pair.clone()]))?;
                    }
                    expanded.push(pair);
                }
                let word = if matches!(inst.op, Op::Env(_)) {
                    "ENV"
                } else {
                    "LABEL"
                };
                if word == "LABEL" {
                    self.change(Change::Label(expanded.clone()))?;
                }
                let text: Vec<String> = expanded.iter().map(|(k, v)| format!("{k}={v}")).collect();
                (
                    Action::Config,
                    nop(self, format!("{word} {}", text.join(" "))),
                )
            }
            Op::Run(run) => return self.run(line, run),
            Op::Cmd(c) | Op::Entrypoint(c) => {
                let argv = self.with_shell(c);
                let is_cmd = matches!(inst.op, Op::Cmd(_));
                if is_cmd {
                    self.change(Change::Cmd(argv.clone()))?;
                    self.cmd_set = true;
                } else {
                    self.change(Change::Entrypoint(argv.clone()))?;
                    if !self.cmd_set {
                        self.config.cmd = None;
                    }
                }
                let word = if is_cmd { "CMD" } else { "ENTRYPOINT" };
                (
                    Action::Config,
                    nop(self, format!("{word} {}", history::go_quoted(&argv))),
                )
            }
            Op::Shell(args) => {
                self.change(Change::Shell(args.clone()))?;
                (
                    Action::Config,
                    nop(self, format!("SHELL [{}]", args.join(" "))),
                )
            }
            Op::Healthcheck(h) => {
                let text = history::healthcheck(h);
                self.change(Change::Healthcheck(h.clone()))?;
                (Action::Config, nop(self, text))
            }
            Op::Copy(c) | Op::Add(c) => {
                let step = self.copy(line, c, matches!(inst.op, Op::Add(_)))?;
                // The executor replaces the source part with content digests.
                let word = if step.add { "ADD" } else { "COPY" };
                let text = format!("{word} {} in {} ", step.sources.join(" "), step.dest);
                (Action::Copy(step), nop(self, text))
            }
            Op::Expose(ports) => {
                let env = self.config.env.clone().unwrap_or_default();
                let mut specs = Vec::new();
                for p in ports {
                    let words = self
                        .lex
                        .words(p, &Scope(&env, &self.args))
                        .map_err(|e| Error::at(line, e.to_string()))?;
                    for w in words {
                        specs.extend(expose(&w).map_err(|e| Error::at(line, e))?);
                    }
                }
                self.change(Change::Expose(specs.clone()))?;
                (
                    Action::Config,
                    nop(self, format!("EXPOSE {}", specs.join(" "))),
                )
            }
            Op::Volume(vols) => {
                let vols = self.expand_all(line, vols)?;
                if vols.iter().any(|v| v.trim().is_empty()) {
                    return Err(Error::at(
                        line,
                        "VOLUME specified can not be an empty string",
                    ));
                }
                self.change(Change::Volume(vols.clone()))?;
                (
                    Action::Config,
                    nop(self, format!("VOLUME [{}]", vols.join(" "))),
                )
            }
            Op::User(u) => {
                let u = self.expand(line, u)?;
                self.change(Change::User(u.clone()))?;
                (Action::Config, nop(self, format!("USER {u}")))
            }
            Op::Workdir(w) => {
                let w = self.expand(line, w)?;
                self.change(Change::Workdir(w))?;
                let dir = self
                    .config
                    .working_dir
                    .clone()
                    .unwrap_or_else(|| "/".into());
                let text = nop(self, format!("WORKDIR {dir}"));
                (Action::Workdir(dir), text)
            }
            Op::StopSignal(s) => {
                let s = self.expand(line, s)?;
                self.change(Change::StopSignal(s.clone()))?;
                (Action::Config, nop(self, format!("STOPSIGNAL {s}")))
            }
            Op::Maintainer(m) => {
                self.author = Some(m.clone());
                (Action::Config, nop(self, format!("MAINTAINER {m}")))
            }
            Op::Onbuild { trigger, .. } => {
                self.change(Change::OnBuild(trigger.clone()))?;
                (Action::Config, nop(self, format!("ONBUILD {trigger}")))
            }
        };
        Ok(Step {
            line,
            action,
            created_by,
        })
    }

    /// BuildKit's handling of heredocs in RUN: `RUN <<EOF` alone runs the document (as a
    /// file when it starts with `#!`, else as the shell's command); otherwise the documents
    /// are put back after the command line for the shell to read. The shell, not the
    /// frontend, expands their variables.
    fn heredoc_argv(
        &self,
        argv: Vec<String>,
        run: &crate::instructions::Run,
    ) -> Result<(Vec<String>, Vec<InlineFile>)> {
        let (CommandLine::Shell(cmd), Some(first)) = (&run.command, run.heredocs.first()) else {
            return Ok((argv, Vec::new()));
        };
        if parser::heredoc_marker(cmd).is_some() {
            if first.content.starts_with("#!") {
                let path = format!("/dev/pipes/{}", first.name);
                return Ok((vec![path.clone()], vec![(path, first.content.clone())]));
            }
            return Ok((
                self.with_shell(&CommandLine::Shell(first.content.clone())),
                Vec::new(),
            ));
        }
        let mut script = cmd.clone();
        for doc in &run.heredocs {
            script.push('\n');
            script.push_str(&doc.content);
            script.push_str(&doc.name);
        }
        Ok((self.with_shell(&CommandLine::Shell(script)), Vec::new()))
    }

    fn run(&mut self, line: usize, run: &crate::instructions::Run) -> Result<Step> {
        let argv = self.with_shell(&run.command);
        let env = self.config.env.clone().unwrap_or_default();
        let is_set = |k: &str| {
            env.iter()
                .any(|e| e.split_once('=').map_or(e == k, |(n, _)| n == k))
        };
        let mut recorded: Vec<String> = self
            .args
            .iter()
            .filter(|(k, _)| !is_set(k))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        recorded.sort();
        let mut run_env = env.clone();
        run_env.extend(recorded.iter().cloned());
        for p in PROXY_ARGS {
            if let (Some(v), false) = (build_arg(&self.plan.options, p), is_set(p)) {
                if !self.args.iter().any(|(k, _)| k == p) {
                    run_env.push(format!("{p}={v}"));
                }
            }
        }
        let (argv, files) = self.heredoc_argv(argv, run)?;
        let created_by = history::run(&argv, &recorded);
        Ok(Step {
            line,
            action: Action::Run(RunStep {
                argv,
                env: run_env,
                files,
                network: run.network.clone(),
                user: self.config.user.clone(),
                workdir: self.config.working_dir.clone(),
            }),
            created_by,
        })
    }

    /// COPY's unquoted heredocs are expanded as BuildKit does: quotes are plain characters,
    /// the escape character is always `\`.
    fn expand_heredoc(&self, line: usize, content: &str) -> Result<String> {
        let env = self.config.env.clone().unwrap_or_default();
        let lex = Lexer {
            skip_quotes: true,
            ..Lexer::new('\\')
        };
        lex.word(content, &Scope(&env, &self.args))
            .map_err(|e| Error::at(line, e.to_string()))
    }

    fn copy(&self, line: usize, c: &Copy, add: bool) -> Result<CopyStep> {
        let from = match &c.from {
            None => None,
            Some(f) => {
                let f = self.plan.expand_global(line, f)?;
                Some(match self.plan.copy_source(self.stage, line, &f)? {
                    Some(i) => CopyFrom::Stage(i),
                    None => CopyFrom::Image(f),
                })
            }
        };
        let opt = |o: &Option<String>| o.as_deref().map(|w| self.expand(line, w)).transpose();
        let dest = self.expand(line, &c.dest)?;
        let mut inline = Vec::new();
        for doc in &c.inline {
            let content = if doc.expand {
                self.expand_heredoc(line, &doc.content)?
            } else {
                doc.content.clone()
            };
            inline.push((doc.name.clone(), content));
        }
        let sources = self.expand_all(line, &c.sources)?;
        let dest_is_dir = dest.ends_with('/') || dest.ends_with("/.") || dest == ".";
        let workdir = self.config.working_dir.as_deref().unwrap_or("/");
        let dest_abs = crate::context::join_dest(workdir, &dest);
        if sources.len() + inline.len() > 1 && !dest_is_dir {
            return Err(Error::at(
                line,
                format!(
                    "When using {} with more than one source file, the destination must be a directory and end with a /",
                    if add { "ADD" } else { "COPY" }
                ),
            ));
        }
        Ok(CopyStep {
            add,
            from,
            sources,
            inline,
            dest: dest_abs,
            dest_is_dir,
            chown: opt(&c.chown)?,
            chmod: opt(&c.chmod)?,
            link: c.link,
            checksum: opt(&c.checksum)?,
        })
    }
}

#[cfg(test)]
#[path = "tests/eval.rs"]
mod tests;
