//! `skiff push` and `skiff tag`: on the local image store (daemonless, as `skiff pull`), or
//! through skiffd when a daemon is named with `-H` / `$SKIFF_HOST`.

use std::io::IsTerminal;

use anyhow::Context;
use clap::Args;
use skiff_images::push::{terminal_bars, PushBars};
use skiff_images::text::escape_untrusted;
use skiff_images::{PushEvent, PushEventKind, PushOptions, Reference};

use crate::client::{Client, Host};
use crate::config::Config;
use crate::daemon::registry_auth::RegistryAuth;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// A local image as REGISTRY/NAME[:TAG] (tag it first with `skiff tag`); TAG defaults to
    /// latest.
    reference: String,
    /// For a registry not on loopback: skip TLS certificate checks, fall back to plain HTTP
    /// (without skiffd only).
    #[arg(long)]
    insecure: bool,
    /// Print only the pushed digest.
    #[arg(short, long)]
    quiet: bool,
    /// Push every local tag of the repository (REFERENCE names no tag then).
    #[arg(short = 'a', long)]
    all_tags: bool,
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// The local image: reference or image ID.
    source: String,
    /// Its new name, REPO[:TAG].
    target: String,
}

/// How layer progress is shown: bars on a terminal, one line per finished layer otherwise.
enum Shown {
    Quiet,
    Bars(PushBars),
    Lines,
}

impl Shown {
    fn new(quiet: bool) -> Shown {
        if quiet {
            Shown::Quiet
        } else if std::io::stderr().is_terminal() {
            Shown::Bars(PushBars::default())
        } else {
            Shown::Lines
        }
    }

    fn show(&self, id: &str, kind: &PushEventKind) {
        match self {
            Shown::Quiet => {}
            Shown::Bars(bars) => bars.show(id, kind),
            Shown::Lines if kind.is_final() => println!("{id}: {}", kind.status()),
            Shown::Lines => {}
        }
    }
}

pub async fn push(config: &Config, host: Option<&Host>, args: PushArgs) -> anyhow::Result<i32> {
    let r = Reference::parse(&args.reference)?;
    // The parsed reference has `latest` filled in: whether a tag was given is in the text.
    let last = args.reference.rsplit('/').next().unwrap_or_default();
    if args.all_tags && (last.contains(':') || last.contains('@')) {
        anyhow::bail!("tag can't be used with --all-tags/-a");
    }
    if !args.quiet {
        println!("The push refers to repository [{}]", r.name());
    }
    let pushed = match host {
        Some(host) => {
            if args.insecure {
                anyhow::bail!("--insecure is for pushes without skiffd: the daemon decides");
            }
            let tag = match (&r.tag, args.all_tags) {
                (_, true) => String::new(),
                (tag, false) => tag.clone().unwrap_or_else(|| "latest".into()),
            };
            push_through(&Client::new(host.clone()), &r, &tag, Shown::new(args.quiet)).await?
        }
        None => {
            let images = config.images()?;
            let names = if args.all_tags {
                images.tags_of(&r)?
            } else {
                vec![args.reference.clone()]
            };
            if names.is_empty() {
                anyhow::bail!("An image does not exist locally with the tag: {}", r.name());
            }
            let mut pushed = Vec::new();
            for name in names {
                let opts = PushOptions {
                    insecure: args.insecure,
                    progress: progress(args.quiet),
                    ..PushOptions::default()
                };
                let report = images
                    .push(&name, &name, &opts)
                    .await
                    .with_context(|| format!("cannot push {name}"))?;
                pushed.push((report.tag, report.digest.to_string(), report.size));
            }
            pushed
        }
    };
    for (tag, digest, size) in pushed {
        if args.quiet {
            println!("{digest}");
        } else {
            println!("{tag}: digest: {digest} size: {size}");
        }
    }
    Ok(0)
}

/// The local push's progress callback for `Shown`.
fn progress(quiet: bool) -> Option<skiff_images::PushProgress> {
    match Shown::new(quiet) {
        Shown::Quiet => None,
        Shown::Bars(_) => Some(terminal_bars()),
        Shown::Lines => Some(
            std::sync::Arc::new(|e: PushEvent| Shown::Lines.show(&e.id, &e.kind))
                as skiff_images::PushProgress,
        ),
    }
}

/// Pushes through skiffd with the credentials `skiff login` stored here (as the docker CLI
/// sends its own); `tag` empty: every tag. Returns each pushed tag, digest and size.
async fn push_through(
    client: &Client,
    r: &Reference,
    tag: &str,
    shown: Shown,
) -> anyhow::Result<Vec<(String, String, u64)>> {
    let auth = skiff_images::auth::lookup(&r.registry)?.map(|c| RegistryAuth {
        username: c.username,
        password: c.password,
        serveraddress: r.registry.clone(),
        ..RegistryAuth::default()
    });
    let mut lines = client.push(&r.name(), tag, auth.as_ref()).await?;
    let mut pushed = Vec::new();
    while let Some(line) = lines.next().await? {
        if let Some(error) = line.error {
            anyhow::bail!("{}", escape_untrusted(&error));
        }
        if let Some(aux) = line.aux {
            let field = |k: &str| aux.get(k).cloned().unwrap_or_default();
            pushed.push((
                field("Tag").as_str().unwrap_or_default().to_string(),
                field("Digest").as_str().unwrap_or_default().to_string(),
                field("Size").as_u64().unwrap_or_default(),
            ));
        }
        let (Some(status), Some(id)) = (line.status, line.id) else {
            continue;
        };
        let detail = line.progress_detail.unwrap_or_default();
        if let Some(kind) = PushEventKind::from_status(&status, detail.current, detail.total) {
            shown.show(&escape_untrusted(&id), &kind);
        }
    }
    if pushed.is_empty() {
        anyhow::bail!("the daemon's push ended without a digest");
    }
    Ok(pushed)
}

pub async fn tag(config: &Config, host: Option<&Host>, args: TagArgs) -> anyhow::Result<i32> {
    match host {
        None => {
            config
                .images()?
                .tag(&args.source, &args.target)
                .with_context(|| format!("cannot tag {} as {}", args.source, args.target))?;
        }
        Some(host) => {
            let r = Reference::parse(&args.target)?;
            if r.digest.is_some() {
                anyhow::bail!("refusing to create a tag with a digest reference");
            }
            Client::new(host.clone())
                .tag(&args.source, &r.name(), r.tag.as_deref())
                .await?;
        }
    }
    Ok(0)
}
