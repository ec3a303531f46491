//! `skiff manifest create|inspect`: multi-platform indexes on a registry. The store holds one
//! platform of an image, so an index is made of images already pushed (one per platform), as
//! `docker buildx imagetools create` makes it; this talks to registries only, never to skiffd.

use anyhow::Context;
use clap::{Args, Subcommand};
use skiff_images::text::escape_untrusted;
use skiff_images::IndexOptions;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum ManifestCommand {
    /// Push an index named LIST over images already in LIST's registry (one per platform; the
    /// platform is read from each image's config).
    Create(CreateArgs),
    /// Print the manifest or index a reference names in its registry, as the registry holds it.
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The index's name: REGISTRY/NAME[:TAG].
    list: String,
    /// The images: REGISTRY/NAME:TAG or REGISTRY/NAME@DIGEST, in LIST's registry.
    #[arg(required = true)]
    images: Vec<String>,
    /// For a registry not on loopback: skip TLS certificate checks, fall back to plain HTTP.
    #[arg(long)]
    insecure: bool,
    /// Print only the index's digest.
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    reference: String,
    /// For a registry not on loopback: skip TLS certificate checks, fall back to plain HTTP.
    #[arg(long)]
    insecure: bool,
}

impl ManifestCommand {
    pub async fn run(self, config: &Config) -> anyhow::Result<i32> {
        let images = config.images()?;
        match self {
            ManifestCommand::Create(args) => {
                let opts = IndexOptions {
                    insecure: args.insecure,
                    ..IndexOptions::default()
                };
                let report = images
                    .push_index(&args.list, &args.images, &opts)
                    .await
                    .with_context(|| format!("cannot create {}", args.list))?;
                if args.quiet {
                    println!("{}", report.digest);
                    return Ok(0);
                }
                for m in &report.manifests {
                    let platform = escape_untrusted(m.platform.to_string());
                    println!("{platform}: {} {}", m.digest, m.source);
                }
                println!(
                    "{}: digest: {} size: {}",
                    report.tag, report.digest, report.size
                );
                Ok(0)
            }
            ManifestCommand::Inspect(args) => {
                let opts = IndexOptions {
                    insecure: args.insecure,
                    ..IndexOptions::default()
                };
                let (_, _, bytes) = images
                    .fetch_manifest(&args.reference, &opts)
                    .await
                    .with_context(|| format!("cannot inspect {}", args.reference))?;
                // Re-encoded, indented: JSON escapes the control characters a registry may send.
                let doc: serde_json::Value = serde_json::from_slice(&bytes)?;
                println!("{}", serde_json::to_string_pretty(&doc)?);
                Ok(0)
            }
        }
    }
}
