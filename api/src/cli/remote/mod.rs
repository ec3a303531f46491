//! Container commands through skiffd's API, printing and exiting as the docker CLI does: each
//! container named prints its name (or exit code) on success; a failure prints the daemon's
//! message on stderr and makes the exit code 1. `run` and `create` fail with 125 instead (their
//! errors go up to the binary), and `run`/`exec` exit with the container's or process's code.

mod info;
pub(crate) mod ps;
mod session;

use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::io::{stderr, stdout};

use super::containers::{ContainerCommand, StopArgs, Targets};
use super::images::ListFormat;
use crate::client::{Client, ClientError};
use crate::daemon::options::{
    CommitOptions, ListOptions, LogsOptions, RemoveOptions, WaitCondition,
};

pub use session::{create, exec, run_attached, run_detached};

/// How long `skiff run` waits for a daemon's `/_ping` before running in-process instead (a
/// local socket answers or refuses at once; this bounds a `tcp://` host that does neither).
const PING_TIMEOUT: Duration = Duration::from_secs(3);

/// Ok when a daemon answers `/_ping` at the client's host.
pub async fn answers(client: &Client) -> anyhow::Result<()> {
    match tokio::time::timeout(PING_TIMEOUT, client.ping()).await {
        Ok(answer) => Ok(answer?),
        Err(_) => anyhow::bail!(
            "no answer to /_ping at {} within {PING_TIMEOUT:?}",
            client.host()
        ),
    }
}

/// Docker's exit code for a command that failed for at least one container.
fn code(failed: bool) -> i32 {
    i32::from(failed)
}

/// Runs `op` on each container in turn, printing what it returns; failures are printed and
/// counted, the others still run (`docker stop a b` stops b when a is unknown).
async fn for_each(
    targets: &Targets,
    mut op: impl AsyncFnMut(&str) -> Result<String, ClientError>,
) -> i32 {
    let mut failed = false;
    for id in &targets.containers {
        match op(id).await {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    code(failed)
}

/// The commands that manage existing containers; returns the exit code.
pub async fn manage(client: &Client, command: ContainerCommand) -> i32 {
    let result = match command {
        ContainerCommand::Start {
            attach: true,
            interactive,
            targets,
        } => match targets.containers.as_slice() {
            [id] => session::start_attached(client, id, interactive).await,
            _ => Err(anyhow::anyhow!(
                "you cannot start and attach multiple containers at once"
            )),
        },
        ContainerCommand::Start {
            attach: false,
            targets,
            ..
        } => Ok(for_each(&targets, async |id| {
            client.start(id).await.map(|()| id.into())
        })
        .await),
        ContainerCommand::Ps {
            all,
            quiet,
            no_trunc,
            format,
        } => list(client, all, quiet, no_trunc, format).await,
        ContainerCommand::Logs {
            follow,
            tail,
            timestamps,
            container,
        } => logs(client, &container, follow, &tail, timestamps).await,
        ContainerCommand::Stop(StopArgs {
            timeout,
            signal,
            targets,
        }) => Ok(for_each(&targets, async |id| {
            client
                .stop(id, timeout, signal.as_deref())
                .await
                .map(|()| id.into())
        })
        .await),
        ContainerCommand::Restart(StopArgs {
            timeout,
            signal,
            targets,
        }) => Ok(for_each(&targets, async |id| {
            client
                .restart(id, timeout, signal.as_deref())
                .await
                .map(|()| id.into())
        })
        .await),
        ContainerCommand::Commit {
            changes,
            message,
            author,
            container,
            reference,
        } => {
            let (repo, tag) = match reference {
                Some(r) => {
                    let (repo, tag) = split_tag(&r);
                    (Some(repo.to_string()), tag.map(str::to_string))
                }
                None => (None, None),
            };
            let opts = CommitOptions {
                container,
                repo,
                tag,
                comment: message,
                author,
                pause: true,
                changes,
            };
            client
                .commit(&opts)
                .await
                .map(|id| {
                    println!("{id}");
                    0
                })
                .map_err(Into::into)
        }
        ContainerCommand::Rename {
            container,
            new_name,
        } => client
            .rename(&container, &new_name)
            .await
            .map(|()| 0)
            .map_err(Into::into),
        ContainerCommand::Top { container } => info::top(client, &container).await,
        ContainerCommand::Stats {
            no_stream,
            containers,
        } => info::stats(client, containers, no_stream).await,
        ContainerCommand::Attach {
            no_stdin,
            detach_keys,
            container,
        } => session::attach(client, &container, no_stdin, detach_keys).await,
        ContainerCommand::Kill { signal, targets } => Ok(for_each(&targets, async |id| {
            client.kill(id, signal.as_deref()).await.map(|()| id.into())
        })
        .await),
        ContainerCommand::Rm {
            force,
            volumes,
            targets,
        } => {
            let opts = RemoveOptions {
                force,
                volumes,
                link: false,
            };
            Ok(for_each(&targets, async |id| {
                client.remove(id, opts).await.map(|()| id.into())
            })
            .await)
        }
        ContainerCommand::Wait(targets) => Ok(for_each(&targets, async |id| {
            let exit = client.wait(id, WaitCondition::NotRunning).await?;
            Ok(exit.outcome().await?.status_code.to_string())
        })
        .await),
        ContainerCommand::Inspect(targets) => inspect(client, &targets).await,
        ContainerCommand::Run { .. }
        | ContainerCommand::Create(_)
        | ContainerCommand::Exec { .. } => {
            Err(anyhow::anyhow!("not a command on existing containers"))
        }
    };
    result.unwrap_or_else(|e| {
        eprintln!("{e:#}");
        1
    })
}

async fn list(
    client: &Client,
    all: bool,
    quiet: bool,
    no_trunc: bool,
    format: ListFormat,
) -> anyhow::Result<i32> {
    let opts = ListOptions {
        all,
        ..ListOptions::default()
    };
    let now = SystemTime::now();
    let rows: Vec<ps::PsRow> = client
        .list(&opts)
        .await?
        .iter()
        .map(|c| ps::row(c, now, !no_trunc))
        .collect();
    if quiet {
        rows.iter().for_each(|r| println!("{}", r.id));
        return Ok(0);
    }
    match format {
        ListFormat::Table => print!("{}", ps::table(&rows)),
        ListFormat::Json => {
            for r in &rows {
                println!("{}", serde_json::to_string(r)?);
            }
        }
    }
    Ok(0)
}

async fn logs(
    client: &Client,
    container: &str,
    follow: bool,
    tail: &str,
    timestamps: bool,
) -> anyhow::Result<i32> {
    let tail = match tail {
        "all" | "" => None,
        n => match n.parse::<i64>() {
            Ok(n) => usize::try_from(n).ok(),
            Err(_) => anyhow::bail!("invalid value for --tail: {n:?} (a number or \"all\")"),
        },
    };
    let opts = LogsOptions {
        follow,
        stdout: true,
        stderr: true,
        timestamps,
        tail,
        ..LogsOptions::default()
    };
    let mut output = client.logs(container, &opts).await?;
    output.copy_to(&mut stdout(), &mut stderr()).await?;
    Ok(0)
}

/// Prints the containers found as one JSON array (4-space indents, as docker), the failures on
/// stderr.
async fn inspect(client: &Client, targets: &Targets) -> anyhow::Result<i32> {
    let mut found = Vec::new();
    let mut failed = false;
    for id in &targets.containers {
        match client.inspect(id).await {
            Ok(c) => found.push(c),
            Err(e) => {
                eprintln!("{e}");
                failed = true;
            }
        }
    }
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    serde::Serialize::serialize(&found, &mut ser).context("encoding the answer")?;
    println!("{}", String::from_utf8_lossy(&out));
    Ok(code(failed))
}

/// `REPO[:TAG]` → (REPO, TAG): the tag is what follows the last `:` after the last `/` (a
/// registry's port is not a tag).
fn split_tag(reference: &str) -> (&str, Option<&str>) {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => (
            &reference[..name_start + i],
            Some(&reference[name_start + i + 1..]),
        ),
        None => (reference, None),
    }
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_from_repositories_not_from_ports() {
        assert_eq!(split_tag("a/b:1"), ("a/b", Some("1")));
        assert_eq!(split_tag("localhost:5000/b"), ("localhost:5000/b", None));
        assert_eq!(
            split_tag("localhost:5000/b:x"),
            ("localhost:5000/b", Some("x"))
        );
        assert_eq!(split_tag("b"), ("b", None));
    }
}
