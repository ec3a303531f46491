//! `skiff network …`: networks through skiffd, printed as the docker CLI prints them.

use clap::Subcommand;

use super::images::ListFormat;
use super::remote::ps::columns;
use crate::client::{Client, Host};
use crate::daemon::model::{Ipam, IpamConfig, NetworkConnectBody, NetworkCreateBody};
use crate::daemon::options::Filters;

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network; prints its ID. Its containers find each other by name.
    Create {
        /// The subnet (A.B.C.D/N); the next free /24 of 10.89.0.0/16 when absent.
        #[arg(long)]
        subnet: Option<String>,
        /// Nothing leaves the network (no outbound access).
        #[arg(long)]
        internal: bool,
        /// KEY=VALUE (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        /// Only IDs.
        #[arg(short, long)]
        quiet: bool,
        /// `table`, or `json`: one JSON object per line.
        #[arg(long, value_enum, default_value = "table")]
        format: ListFormat,
    },
    /// Show networks' details as JSON.
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks (refused while a container uses one).
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove the user-defined networks no container uses.
    Prune,
    /// Connect a container that is not running to a network (from its next start).
    Connect {
        /// A name the container is found by on the network (repeatable).
        #[arg(long = "alias", value_name = "NAME")]
        aliases: Vec<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container that is not running from a network.
    Disconnect { network: String, container: String },
}

impl NetworkCommand {
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
            NetworkCommand::Create {
                subnet,
                internal,
                labels,
                name,
            } => {
                let body = NetworkCreateBody {
                    name,
                    driver: "bridge".into(),
                    internal,
                    labels: super::labels_map(&labels),
                    ipam: subnet.map(|subnet| Ipam {
                        config: vec![IpamConfig {
                            subnet,
                            ..IpamConfig::default()
                        }],
                        ..Ipam::default()
                    }),
                    ..NetworkCreateBody::default()
                };
                println!("{}", client.network_create(&body).await?.id);
                Ok(0)
            }
            NetworkCommand::Ls { quiet, format } => {
                let list = client.network_list(&Filters::default()).await?;
                if quiet {
                    list.iter()
                        .for_each(|n| println!("{}", &n.id[..12.min(n.id.len())]));
                    return Ok(0);
                }
                match format {
                    ListFormat::Table => {
                        let header = ["NETWORK ID", "NAME", "DRIVER", "SCOPE"].map(String::from);
                        let lines: Vec<Vec<String>> = std::iter::once(header.to_vec())
                            .chain(list.iter().map(|n| {
                                vec![
                                    n.id[..12.min(n.id.len())].to_string(),
                                    n.name.clone(),
                                    n.driver.clone(),
                                    n.scope.clone(),
                                ]
                            }))
                            .collect();
                        print!("{}", columns(&lines));
                    }
                    ListFormat::Json => {
                        for n in &list {
                            println!("{}", serde_json::to_string(n)?);
                        }
                    }
                }
                Ok(0)
            }
            NetworkCommand::Inspect { names } => {
                let (found, code) =
                    super::each(&names, |n| async move { client.network_inspect(&n).await }).await;
                println!("{}", serde_json::to_string_pretty(&found)?);
                Ok(code)
            }
            NetworkCommand::Rm { names } => {
                let (gone, code) = super::each(&names, |n| async move {
                    client.network_remove(&n).await.map(|()| n)
                })
                .await;
                gone.iter().for_each(|n| println!("{n}"));
                Ok(code)
            }
            NetworkCommand::Connect {
                aliases,
                network,
                container,
            } => {
                let body = NetworkConnectBody {
                    container,
                    endpoint_config: serde_json::json!({ "Aliases": aliases }),
                    force: false,
                };
                client
                    .network_connection(&network, "connect", &body)
                    .await?;
                Ok(0)
            }
            NetworkCommand::Disconnect { network, container } => {
                let body = NetworkConnectBody {
                    container,
                    ..NetworkConnectBody::default()
                };
                client
                    .network_connection(&network, "disconnect", &body)
                    .await?;
                Ok(0)
            }
            NetworkCommand::Prune => {
                let report = client.network_prune().await?;
                println!("Deleted Networks:");
                report.networks_deleted.iter().for_each(|n| println!("{n}"));
                Ok(0)
            }
        }
    }
}
