//! The Dockerfile frontend of skiff's builder: pure functions, no VM and no image store.
//!
//! The executor drives it in this order:
//!
//! 1. [`Dockerfile::parse`] the bytes (directives, continuations, heredocs, flags, 1-based
//!    lines; errors carry the line, worded as BuildKit words them).
//! 2. [`Dockerfile::plan`] with [`BuildOptions`] (`--build-arg`, `--target`, the target and
//!    build platforms): global ARGs are evaluated, every `FROM` is expanded and resolved to
//!    [`Base::Scratch`], [`Base::Image`] or [`Base::Stage`], and [`Plan::needed`] lists the
//!    stages the target needs, each after the stages it uses. Show
//!    [`Plan::unused_build_args_warning`] to the user.
//! 3. For each needed stage: get the base's config (the image's, pulled with
//!    [`Stage::platform`], or the built stage's), make an [`Evaluator`] with it, run the
//!    base image's ONBUILD triggers ([`Evaluator::triggers`]) and then the stage's
//!    instructions through [`Evaluator::step`]. Each [`Step`] says what to do
//!    ([`Action::Run`] with argv and environment, [`Action::Copy`] with expanded sources and
//!    an absolute destination, [`Action::Workdir`], or [`Action::Config`] for metadata only),
//!    and its history `created_by` text. [`Evaluator::config`] is the image config so far.
//! 4. COPY/ADD from the build context: not here yet (`.dockerignore` matching and confined
//!    source resolution are still to be written); [`context::join_dest`] makes destinations
//!    absolute.
//!
//! Choices where Docker's two builders differ: the Dockerfile is read as BuildKit reads it
//! (parser, `shell.Lex` substitution with its `#`, `%` and `/` operators, stage-name rules,
//! ARG scoping, heredocs); history texts are the classic builder's (`/bin/sh -c #(nop)  ENV
//! A=b`, `|1 K=V /bin/sh -c cmd` for RUN with build args, sorted). A malformed JSON array in
//! RUN/CMD/ENTRYPOINT is the shell form, as in both builders; SHELL must be JSON.

pub mod context;
pub mod error;
pub mod eval;
mod healthcheck;
pub mod history;
pub mod instructions;
mod key_values;
pub mod parser;
mod pattern;
pub mod shell;
pub mod stages;

pub use error::{Error, Result};
pub use eval::{Action, CopyFrom, CopyStep, Evaluator, RunStep, Step};
pub use healthcheck::parse_duration;
pub use instructions::{CommandLine, Instruction, Op};
pub use stages::{Base, BuildOptions, Plan, PlatformArgs, Stage};

/// A parsed Dockerfile.
#[derive(Clone, Debug)]
pub struct Dockerfile {
    pub escape: char,
    pub instructions: Vec<Instruction>,
    /// Parser warnings (empty continuation lines, an ignored `# syntax=`).
    pub warnings: Vec<String>,
}

impl Dockerfile {
    pub fn parse(bytes: &[u8]) -> Result<Dockerfile> {
        let parsed = parser::parse(bytes)?;
        Ok(Dockerfile {
            escape: parsed.escape,
            instructions: instructions::instructions(&parsed.nodes)?,
            warnings: parsed.warnings,
        })
    }

    pub fn plan(&self, options: &BuildOptions) -> Result<Plan> {
        Plan::new(&self.instructions, self.escape, options)
    }
}
