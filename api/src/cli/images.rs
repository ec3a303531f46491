//! Image subcommands: pull, push, tag, images, rmi, image {ls,rm,prune,unpack}, load, save,
//! login.
//! The work is done by `skiff_images`; this module parses arguments and prints.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;

use crate::client::Host;
use crate::config::Config;
use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use skiff_images::auth::Credentials;
use skiff_images::text::escape_untrusted;
use skiff_images::{ImageRecord, Platform, PullOptions, Reference};

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull(PullArgs),
    /// Push a local image to a registry (through skiffd when -H or SKIFF_HOST names one).
    Push(super::push::PushArgs),
    /// Multi-platform indexes on a registry.
    Manifest {
        #[command(subcommand)]
        command: super::manifest::ManifestCommand,
    },
    /// Give a local image another name (through skiffd when -H or SKIFF_HOST names one).
    Tag(super::push::TagArgs),
    /// List images.
    Images(ListArgs),
    /// Remove images (and the content nothing else uses).
    Rmi {
        /// Image references or IDs.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Manage images.
    Image {
        #[command(subcommand)]
        command: ImageSubcommand,
    },
    /// Import images from a `docker save` tarball, an OCI archive or an OCI layout directory.
    Load {
        /// The archive or directory.
        #[arg(short = 'i', long = "input")]
        input: Option<PathBuf>,
        #[arg(conflicts_with = "input", required_unless_present = "input")]
        file: Option<PathBuf>,
    },
    /// Write an image to an OCI archive (readable with `skopeo inspect oci-archive:FILE`).
    /// A FIFO or device is written to, never replaced; `-` is standard output.
    Save {
        reference: String,
        /// Output file.
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[arg(conflicts_with = "output", required_unless_present = "output")]
        file: Option<PathBuf>,
    },
    /// Store credentials for a registry in ~/.docker/config.json (after checking them).
    Login {
        /// Registry host[:port]; default docker.io.
        #[arg(default_value = "docker.io")]
        registry: String,
        #[arg(short, long)]
        username: String,
        /// Password (visible in the process list: prefer --password-stdin).
        #[arg(short, long, conflicts_with = "password_stdin")]
        password: Option<String>,
        /// Read the password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// For a registry not on loopback: skip TLS certificate checks, fall back to plain HTTP.
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImageSubcommand {
    /// List images.
    Ls(ListArgs),
    /// Remove images.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Remove every blob and layer that no image references.
    Prune,
    /// Write the image's merged root filesystem into DIR (must not exist or be empty).
    Unpack {
        reference: String,
        dir: PathBuf,
        /// Pull the image first if it is not in the store.
        #[arg(long)]
        pull: bool,
    },
    /// Show how an image runs and where its layers are (JSON).
    Inspect { reference: String },
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// Image reference, e.g. busybox:1.36 or host:port/ns/name@sha256:...
    reference: String,
    /// Platform to pick from a multi-platform image (os/arch[/variant]); default: this host's.
    #[arg(long)]
    platform: Option<String>,
    /// For a registry not on loopback: skip TLS certificate checks, fall back to plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Print only the image digest.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(long, value_enum, default_value = "table")]
    format: ListFormat,
    /// Only image IDs.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ListFormat {
    Table,
    Json,
}

impl ImageCommand {
    /// `host`: the daemon named with -H or SKIFF_HOST, for the commands that can go through
    /// one (push, tag); None: the local store.
    pub async fn run(self, config: &Config, host: Option<&Host>) -> anyhow::Result<i32> {
        match self {
            ImageCommand::Pull(args) => pull(config, args).await,
            ImageCommand::Push(args) => super::push::push(config, host, args).await,
            ImageCommand::Tag(args) => super::push::tag(config, host, args).await,
            ImageCommand::Manifest { command } => command.run(config).await,
            ImageCommand::Images(args) => list(config, args),
            ImageCommand::Rmi { images } => remove(config, &images),
            ImageCommand::Image { command } => match command {
                ImageSubcommand::Ls(args) => list(config, args),
                ImageSubcommand::Rm { images } => remove(config, &images),
                ImageSubcommand::Prune => {
                    let r = config.images()?.prune()?;
                    println!(
                        "Removed {} manifests, {} blobs, {} layer directories; freed {}",
                        r.manifests_removed,
                        r.blobs_removed,
                        r.layers_removed,
                        human_size(r.bytes_freed)
                    );
                    Ok(0)
                }
                ImageSubcommand::Unpack {
                    reference,
                    dir,
                    pull,
                } => {
                    let svc = config.images()?;
                    if pull {
                        svc.ensure(&reference, &pull_options(None, false)?).await?;
                    }
                    svc.unpack_rootfs(&reference, &dir)
                        .await
                        .with_context(|| format!("cannot unpack {reference}"))?;
                    Ok(0)
                }
                ImageSubcommand::Inspect { reference } => {
                    let svc = config.images()?;
                    let img = svc.ensure(&reference, &pull_options(None, false)?).await?;
                    println!("{}", serde_json::to_string_pretty(&img)?);
                    Ok(0)
                }
            },
            ImageCommand::Load { input, file } => {
                let path = input.or(file).context("no input given")?;
                let loaded = config
                    .images()?
                    .load(&path)
                    .await
                    .with_context(|| format!("cannot load {}", path.display()))?;
                for rec in loaded {
                    println!("Loaded image: {}", display_name(&rec));
                }
                Ok(0)
            }
            ImageCommand::Save {
                reference,
                output,
                file,
            } => {
                let path = output.or(file).context("no output file given")?;
                let svc = config.images()?;
                let saved = if path.as_os_str() == "-" {
                    if std::io::stdout().is_terminal() {
                        anyhow::bail!("refusing to write an archive to a terminal");
                    }
                    svc.save_to_writer(&reference, Box::new(std::io::stdout()))
                        .await
                } else {
                    svc.save(&reference, &path).await
                };
                saved.with_context(|| format!("cannot save {reference}"))?;
                Ok(0)
            }
            ImageCommand::Login {
                registry,
                username,
                password,
                password_stdin,
                insecure,
            } => {
                let password = match password {
                    Some(p) if !password_stdin => p,
                    _ => {
                        if std::io::stdin().is_terminal() {
                            eprint!("Password (echoed; prefer --password-stdin): ");
                        }
                        let mut line = String::new();
                        std::io::stdin().lock().read_line(&mut line)?;
                        line.trim_end_matches(['\r', '\n']).to_string()
                    }
                };
                let creds = Credentials { username, password };
                let timeouts = config.images.timeouts;
                let path = skiff_images::login(&registry, creds, insecure, timeouts).await?;
                println!("Login Succeeded (credentials saved in {})", path.display());
                Ok(0)
            }
        }
    }
}

fn pull_options(platform: Option<&str>, insecure: bool) -> anyhow::Result<PullOptions> {
    Ok(PullOptions {
        platform: platform.map(str::parse::<Platform>).transpose()?,
        insecure,
        progress: std::io::stderr().is_terminal(),
        ..PullOptions::default()
    })
}

async fn pull(config: &Config, args: PullArgs) -> anyhow::Result<i32> {
    let mut opts = pull_options(args.platform.as_deref(), args.insecure)?;
    opts.progress &= !args.quiet;
    let report = config.images()?.pull(&args.reference, &opts).await?;
    let img = &report.image;
    if args.quiet {
        println!("{}", img.manifest_digest);
        return Ok(0);
    }
    println!(
        "Pulled {} ({}): {} layers downloaded ({}), {} already present",
        img.name,
        escape_untrusted(&img.platform),
        report.layers_downloaded,
        human_size(report.bytes_downloaded),
        report.layers_reused
    );
    println!(
        "Digest: {}",
        img.index_digest.as_ref().unwrap_or(&img.manifest_digest)
    );
    Ok(0)
}

fn remove(config: &Config, images: &[String]) -> anyhow::Result<i32> {
    let svc = config.images()?;
    let mut code = 0;
    for reference in images {
        match svc.remove(reference) {
            Ok((names, _)) => names.iter().for_each(|n| println!("Untagged: {n}")),
            Err(e) => {
                eprintln!("skiff: cannot remove {reference}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

/// (repository, tag) for the table: `busybox`, `latest`; digest-only names show `<none>`.
fn repo_and_tag(rec: &ImageRecord) -> (String, String) {
    match Reference::parse(&rec.name) {
        Ok(r) if rec.name.contains('/') => (
            r.familiar_name(),
            match (&r.digest, &r.tag) {
                (None, Some(t)) => t.clone(),
                _ => "<none>".to_string(),
            },
        ),
        _ => ("<none>".to_string(), "<none>".to_string()),
    }
}

fn display_name(rec: &ImageRecord) -> String {
    match repo_and_tag(rec) {
        (r, t) if r != "<none>" && t != "<none>" => format!("{r}:{t}"),
        _ => rec.manifest_digest.to_string(),
    }
}

fn list(config: &Config, args: ListArgs) -> anyhow::Result<i32> {
    let images = config.images()?.list()?;
    if args.quiet {
        for rec in &images {
            println!("{}", rec.config_digest.short());
        }
        return Ok(0);
    }
    match args.format {
        ListFormat::Json => {
            let rows: Vec<_> = images
                .iter()
                .map(|rec| {
                    let (repository, tag) = repo_and_tag(rec);
                    serde_json::json!({
                        "name": rec.name,
                        "repository": repository,
                        "tag": tag,
                        "id": rec.config_digest,
                        "digest": rec.index_digest.as_ref().unwrap_or(&rec.manifest_digest),
                        "manifest_digest": rec.manifest_digest,
                        "platform": escape_untrusted(&rec.platform),
                        "created": rec.created.as_deref().map(escape_untrusted),
                        "size": rec.size(),
                        "layers": rec.layers.len(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        ListFormat::Table => {
            println!(
                "{:<40} {:<16} {:<14} {:<12} {:<14} {:>10}",
                "REPOSITORY", "TAG", "IMAGE ID", "CREATED", "PLATFORM", "SIZE"
            );
            for rec in &images {
                let (repository, tag) = repo_and_tag(rec);
                // RFC 3339 from the image config: the date part is enough for a table.
                let created = rec
                    .created
                    .as_deref()
                    .and_then(|c| c.get(..10))
                    .map_or_else(|| "-".to_string(), escape_untrusted);
                println!(
                    "{:<40} {:<16} {:<14} {:<12} {:<14} {:>10}",
                    repository,
                    tag,
                    rec.config_digest.short(),
                    created,
                    escape_untrusted(&rec.platform),
                    human_size(rec.size())
                );
            }
        }
    }
    Ok(0)
}

fn human_size(bytes: u64) -> String {
    skiff_images::text::human_size(bytes, 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(subcommand)]
        command: ImageCommand,
    }

    fn parse(args: &[&str]) -> Result<ImageCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("skiff").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn save_and_load_take_positional_or_flag_paths() {
        let ImageCommand::Save {
            reference,
            output,
            file,
        } = parse(&["save", "busybox", "out.tar"]).unwrap()
        else {
            panic!("not save")
        };
        assert_eq!(
            (reference.as_str(), output, file),
            ("busybox", None, Some(PathBuf::from("out.tar")))
        );
        assert!(matches!(
            parse(&["save", "busybox", "-o", "x.tar"]),
            Ok(ImageCommand::Save {
                output: Some(_),
                ..
            })
        ));
        assert!(parse(&["save", "busybox"]).is_err());
        assert!(parse(&["save", "busybox", "a", "-o", "b"]).is_err());
        assert!(matches!(
            parse(&["load", "-i", "x.tar"]),
            Ok(ImageCommand::Load { input: Some(_), .. })
        ));
        assert!(parse(&["load"]).is_err());
    }

    #[test]
    fn pull_flags() {
        let ImageCommand::Pull(args) =
            parse(&["pull", "--platform", "linux/arm64", "--insecure", "-q", "x"]).unwrap()
        else {
            panic!("not pull")
        };
        assert!(args.insecure && args.quiet);
        let opts = pull_options(args.platform.as_deref(), args.insecure).unwrap();
        assert_eq!(opts.platform.unwrap().to_string(), "linux/arm64");
        assert!(pull_options(Some("linux"), false).is_err());
        assert!(matches!(
            parse(&["image", "unpack", "busybox", "/tmp/x"]),
            Ok(ImageCommand::Image {
                command: ImageSubcommand::Unpack { pull: false, .. }
            })
        ));
    }

    #[test]
    fn sizes_for_humans() {
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1_084_658), "1.1MB");
        assert_eq!(human_size(2_500_000_000), "2.5GB");
    }
}
