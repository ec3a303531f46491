//! Stages and build arguments: global ARGs, `FROM` resolution, `--target`, and which stages
//! a build needs, in the order to build them.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::instructions::{Instruction, Op};
use crate::shell::Lexer;

/// Proxy ARGs every build knows without declaring them; given ones reach RUN's environment
/// but never the image's history or config.
pub const PROXY_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the caller of a build decides.
#[derive(Clone, Debug, Default)]
pub struct BuildOptions {
    /// `--build-arg K=V`, in order (a later one wins).
    pub build_args: Vec<(String, String)>,
    /// `--target`: the stage to build (the last one when `None`).
    pub target: Option<String>,
    /// `TARGETPLATFORM`, … and `BUILDPLATFORM`, …: `(os, arch, variant)`.
    pub target_platform: PlatformArgs,
    pub build_platform: PlatformArgs,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlatformArgs {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl PlatformArgs {
    fn args(&self, prefix: &str) -> [(String, String); 4] {
        let variant = self.variant.clone().unwrap_or_default();
        let platform = match &self.variant {
            Some(v) => format!("{}/{}/{v}", self.os, self.arch),
            None => format!("{}/{}", self.os, self.arch),
        };
        [
            (format!("{prefix}PLATFORM"), platform),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (format!("{prefix}VARIANT"), variant),
        ]
    }
}

/// Where a stage starts from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An image to pull or find in the store.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    /// The FROM line.
    pub line: usize,
    pub base: Base,
    /// `--platform`, expanded.
    pub platform: Option<String>,
    /// The instructions after FROM.
    pub instructions: Vec<Instruction>,
}

/// A Dockerfile resolved against build options.
#[derive(Clone, Debug)]
pub struct Plan {
    pub stages: Vec<Stage>,
    /// Indexes of the stages the target needs, target last, each after those it uses.
    pub needed: Vec<usize>,
    /// Global ARGs (before the first FROM) with their values.
    pub(crate) globals: Vec<(String, String)>,
    pub(crate) options: BuildOptions,
    pub(crate) escape: char,
    /// Build args some ARG declared (in the global scope or a needed stage).
    pub(crate) consumed: BTreeSet<String>,
}

impl Plan {
    pub fn new(instructions: &[Instruction], escape: char, options: &BuildOptions) -> Result<Plan> {
        let lex = Lexer::new(escape);
        let mut globals: Vec<(String, String)> = Vec::new();
        let mut auto = options.target_platform.args("TARGET").to_vec();
        auto.extend(options.build_platform.args("BUILD"));
        let mut consumed = BTreeSet::new();
        let first_from = instructions
            .iter()
            .position(|i| matches!(i.op, Op::From { .. }))
            .ok_or_else(|| Error::Parse {
                line: instructions.last().map_or(1, |i| i.line),
                message: "no build stage in current context".into(),
            })?;
        for inst in &instructions[..first_from] {
            let Op::Arg(args) = &inst.op else {
                return Err(Error::at(inst.line, "no build stage in current context"));
            };
            for (name, default) in args {
                let scope: Vec<(String, String)> =
                    auto.iter().chain(globals.iter()).cloned().collect();
                let value = match build_arg(options, name) {
                    Some(v) => Some(v),
                    None => match default {
                        Some(d) => Some(
                            lex.word(d, &scope)
                                .map_err(|e| Error::at(inst.line, e.to_string()))?,
                        ),
                        None => None,
                    },
                };
                consumed.insert(name.clone());
                if let Some(v) = value {
                    globals.push((name.clone(), v));
                }
            }
        }
        let from_scope: Vec<(String, String)> =
            auto.iter().chain(globals.iter()).cloned().collect();
        let mut stages: Vec<Stage> = Vec::new();
        for inst in &instructions[first_from..] {
            if let Op::From {
                image,
                name,
                platform,
            } = &inst.op
            {
                let expand = |w: &str| {
                    lex.word(w, &from_scope)
                        .map_err(|e| Error::at(inst.line, e.to_string()))
                };
                let image = expand(image)?;
                if image.is_empty() {
                    return Err(Error::at(inst.line, "base name (\"\") should not be blank"));
                }
                if let Some(n) = name {
                    if stages.iter().any(|s| s.name.as_deref() == Some(n)) {
                        return Err(Error::at(inst.line, format!("duplicate stage name {n:?}")));
                    }
                }
                let base = if image.eq_ignore_ascii_case("scratch") {
                    Base::Scratch
                } else {
                    match find_stage(&stages, &image.to_lowercase()) {
                        Some(i) => Base::Stage(i),
                        None => Base::Image(image),
                    }
                };
                stages.push(Stage {
                    index: stages.len(),
                    name: name.clone(),
                    line: inst.line,
                    base,
                    platform: platform.as_deref().map(expand).transpose()?,
                    instructions: Vec::new(),
                });
            } else if let Some(s) = stages.last_mut() {
                s.instructions.push(inst.clone());
            }
        }
        let target = match &options.target {
            Some(t) => stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&*t.to_lowercase()))
                .ok_or_else(|| Error::UnknownTarget(t.clone()))?,
            None => stages.len() - 1,
        };
        let mut plan = Plan {
            stages,
            needed: Vec::new(),
            globals,
            options: options.clone(),
            escape,
            consumed,
        };
        plan.needed = plan.needed_for(target)?;
        for &i in &plan.needed {
            for inst in &plan.stages[i].instructions {
                if let Op::Arg(args) = &inst.op {
                    plan.consumed.extend(args.iter().map(|(k, _)| k.clone()));
                }
            }
        }
        Ok(plan)
    }

    /// The stage a `COPY --from=` (already expanded) names: a stage name or index defined
    /// before `stage`, or `None` for an image.
    pub fn copy_source(&self, stage: usize, line: usize, from: &str) -> Result<Option<usize>> {
        let lower = from.to_lowercase();
        if let Ok(n) = lower.parse::<usize>() {
            if n >= stage {
                return Err(Error::at(
                    line,
                    format!(
                        "invalid stage index {n}: a stage can only use stages defined before it"
                    ),
                ));
            }
            return Ok(Some(n));
        }
        match self
            .stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&*lower))
        {
            Some(i) if i < stage => Ok(Some(i)),
            Some(_) => Err(Error::at(
                line,
                format!("stage {from:?} is referenced before it is defined"),
            )),
            None => Ok(None),
        }
    }

    /// `--from` of COPY is expanded with the global ARGs, as BuildKit does.
    pub(crate) fn expand_global(&self, line: usize, word: &str) -> Result<String> {
        let mut scope = self.options.target_platform.args("TARGET").to_vec();
        scope.extend(self.options.build_platform.args("BUILD"));
        scope.extend(self.globals.iter().cloned());
        Lexer::new(self.escape)
            .word(word, &scope)
            .map_err(|e| Error::at(line, e.to_string()))
    }

    fn needed_for(&self, target: usize) -> Result<Vec<usize>> {
        let mut needed = BTreeSet::new();
        let mut todo = vec![target];
        while let Some(i) = todo.pop() {
            if !needed.insert(i) {
                continue;
            }
            let stage = &self.stages[i];
            if let Base::Stage(b) = stage.base {
                todo.push(b);
            }
            for inst in &stage.instructions {
                if let Op::Copy(c) = &inst.op {
                    if let Some(from) = &c.from {
                        let from = self.expand_global(inst.line, from)?;
                        todo.extend(self.copy_source(i, inst.line, &from)?);
                    }
                }
            }
        }
        // Every reference points to an earlier stage: index order is a build order.
        Ok(needed.into_iter().collect())
    }

    /// Docker's warning for build args no ARG declared; `None` when all were used.
    pub fn unused_build_args_warning(&self) -> Option<String> {
        let unused: BTreeSet<&str> = self
            .options
            .build_args
            .iter()
            .map(|(k, _)| k.as_str())
            .filter(|k| !self.consumed.contains(*k) && !PROXY_ARGS.contains(k))
            .collect();
        if unused.is_empty() {
            return None;
        }
        let list: Vec<&str> = unused.into_iter().collect();
        Some(format!(
            "[Warning] One or more build-args [{}] were not consumed",
            list.join(" ")
        ))
    }
}

fn find_stage(stages: &[Stage], name: &str) -> Option<usize> {
    if let Some(i) = stages.iter().position(|s| s.name.as_deref() == Some(name)) {
        return Some(i);
    }
    name.parse::<usize>().ok().filter(|i| *i < stages.len())
}

pub(crate) fn build_arg(options: &BuildOptions, name: &str) -> Option<String> {
    options
        .build_args
        .iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
#[path = "tests/stages.rs"]
mod tests;
