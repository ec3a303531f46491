//! `skiff volume …`: volumes through skiffd, printed as the docker CLI prints them.

use clap::Subcommand;

use super::images::ListFormat;
use super::remote::ps::columns;
use crate::client::{Client, Host};
use crate::daemon::model::VolumeCreateBody;
use crate::daemon::options::Filters;

#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a fresh name when none is given); prints its name.
    Create {
        /// KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        name: Option<String>,
    },
    /// List volumes.
    Ls {
        /// Only names.
        #[arg(short, long)]
        quiet: bool,
        /// `table`, or `json`: one JSON object per line.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Show volumes' details as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one).
    Rm {
        /// No error for a missing volume.
        #[arg(short, long)]
        force: bool,
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the anonymous volumes no container uses (with -a: every unused volume).
    Prune {
        #[arg(short, long)]
        all: bool,
    },
}

impl VolumeCommand {
    /// Runs the command against the daemon at `host`; returns the exit code (1 with the
    /// daemon's message on stderr when it fails, as docker's).
    pub async fn run(self, host: &Host) -> anyhow::Result<i32> {
        let client = Client::new(host.clone());
        Ok(self.call(&client).await.unwrap_or_else(|e| {
            eprintln!("{e:#}");
            1
        }))
    }

    async fn call(self, client: &Client) -> anyhow::Result<i32> {
        match self {
            VolumeCommand::Create { labels, name } => {
                let labels = super::labels_map(&labels);
                let body = VolumeCreateBody {
                    name: name.unwrap_or_default(),
                    labels,
                    ..VolumeCreateBody::default()
                };
                println!("{}", client.volume_create(&body).await?.name);
                Ok(0)
            }
            VolumeCommand::Ls { quiet, format } => {
                let list = client.volume_list(&Filters::default()).await?;
                if quiet {
                    list.volumes.iter().for_each(|v| println!("{}", v.name));
                    return Ok(0);
                }
                match format {
                    ListFormat::Table => {
                        let lines: Vec<Vec<String>> =
                            std::iter::once(vec!["DRIVER".to_string(), "VOLUME NAME".to_string()])
                                .chain(
                                    list.volumes
                                        .iter()
                                        .map(|v| vec![v.driver.clone(), v.name.clone()]),
                                )
                                .collect();
                        print!("{}", columns(&lines));
                    }
                    ListFormat::Json => {
                        for v in &list.volumes {
                            println!("{}", serde_json::to_string(v)?);
                        }
                    }
                }
                Ok(0)
            }
            VolumeCommand::Inspect { names } => {
                let (found, code) =
                    super::each(&names, |n| async move { client.volume_inspect(&n).await }).await;
                println!("{}", serde_json::to_string_pretty(&found)?);
                Ok(code)
            }
            VolumeCommand::Rm { force, names } => {
                let (gone, code) = super::each(&names, |n| async move {
                    client.volume_remove(&n, force).await.map(|()| n)
                })
                .await;
                gone.iter().for_each(|n| println!("{n}"));
                Ok(code)
            }
            VolumeCommand::Prune { all } => {
                let mut filters = Filters::default();
                if all {
                    filters.insert("all".into(), vec!["true".into()]);
                }
                let report = client.volume_prune(&filters).await?;
                println!("Deleted Volumes:");
                report.volumes_deleted.iter().for_each(|v| println!("{v}"));
                println!("\nTotal reclaimed space: {} B", report.space_reclaimed);
                Ok(0)
            }
        }
    }
}
