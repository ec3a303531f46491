//! The calls: system (ping, version), containers, exec sessions, commit and pull. Container arguments
//! are what the user typed (a full ID, a unique prefix, or a name): the daemon resolves them.

use hyper::Method;

use super::model::{CreateResponse, IdResponse, SystemVersion};
use super::stream::{Hijacked, JsonLines, OutputReader, PendingWait};
use super::{filters_pair, flag, query, segment, Call, Client, ClientError, Result};
use crate::daemon::create::body::CreateBody;
use crate::daemon::handlers::exec::{ExecCreateBody, ExecStartBody};
use crate::daemon::model::{
    ContainerInspect, ContainerStats, ContainerSummary, ExecInspect, ProgressMessage, TopResponse,
};
use crate::daemon::options::{
    AttachOptions, CommitOptions, ListOptions, LogsOptions, RemoveOptions, WaitCondition,
};

fn container(id: &str, rest: &str) -> String {
    format!("/containers/{}{rest}", segment(id))
}

fn exec(id: &str, rest: &str) -> String {
    format!("/exec/{}{rest}", segment(id))
}

impl Client {
    /// `GET /_ping`: Ok when a daemon answers "OK".
    pub async fn ping(&self) -> Result<()> {
        use http_body_util::BodyExt;
        let resp = self.send(Call::new(Method::GET, "/_ping".into())).await?;
        let body = resp.into_body().collect().await?.to_bytes();
        if body.as_ref() != b"OK" {
            return Err(ClientError::Protocol(format!(
                "unexpected answer to /_ping: {:?}",
                String::from_utf8_lossy(&body)
            )));
        }
        Ok(())
    }

    pub async fn version(&self) -> Result<SystemVersion> {
        self.json(Call::new(Method::GET, "/version".into())).await
    }

    /// `GET /containers/json` (`ps`).
    pub async fn list(&self, opts: &ListOptions) -> Result<Vec<ContainerSummary>> {
        let mut pairs = vec![("all", flag(opts.all)), ("size", flag(opts.size))];
        if let Some(limit) = opts.limit {
            pairs.push(("limit", limit.to_string()));
        }
        pairs.extend(filters_pair(&opts.filters)?);
        let path = format!("/containers/json{}", query(pairs));
        self.json(Call::new(Method::GET, path)).await
    }

    /// `POST /containers/create`; `name` None lets the daemon choose one.
    pub async fn create(&self, name: Option<&str>, body: &CreateBody) -> Result<CreateResponse> {
        let q = query(name.map(|n| ("name", n.to_string())));
        let call = Call::new(Method::POST, format!("/containers/create{q}")).json(body)?;
        self.json(call).await
    }

    pub async fn inspect(&self, id: &str) -> Result<ContainerInspect> {
        self.json(Call::new(Method::GET, container(id, "/json")))
            .await
    }

    /// Starting a running container is a success (304), as in Docker's client.
    pub async fn start(&self, id: &str) -> Result<()> {
        self.unit(Call::new(Method::POST, container(id, "/start")))
            .await
    }

    /// `timeout`: seconds before the VM is stopped (None: the container's own, else 10).
    pub async fn stop(&self, id: &str, timeout: Option<i64>, signal: Option<&str>) -> Result<()> {
        self.stopping(id, "/stop", timeout, signal).await
    }

    /// A stop as `stop` does it, then a start.
    pub async fn restart(
        &self,
        id: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        self.stopping(id, "/restart", timeout, signal).await
    }

    async fn stopping(
        &self,
        id: &str,
        call: &str,
        timeout: Option<i64>,
        signal: Option<&str>,
    ) -> Result<()> {
        let q = query(
            timeout
                .map(|t| ("t", t.to_string()))
                .into_iter()
                .chain(signal.map(|s| ("signal", s.to_string()))),
        );
        self.unit(Call::new(
            Method::POST,
            container(id, &format!("{call}{q}")),
        ))
        .await
    }

    pub async fn rename(&self, id: &str, new_name: &str) -> Result<()> {
        let q = query([("name", new_name.to_string())]);
        self.unit(Call::new(
            Method::POST,
            container(id, &format!("/rename{q}")),
        ))
        .await
    }

    /// `GET /containers/{id}/top` with the default (`ps -ef`) columns.
    pub async fn top(&self, id: &str) -> Result<TopResponse> {
        self.json(Call::new(Method::GET, container(id, "/top")))
            .await
    }

    /// One stats report (the daemon samples twice, a second apart, for the CPU figure).
    pub async fn stats(&self, id: &str) -> Result<ContainerStats> {
        let path = container(id, &format!("/stats{}", query([("stream", flag(false))])));
        self.json(Call::new(Method::GET, path)).await
    }

    /// `signal`: a name (`SIGTERM`, `TERM`) or a number; None: SIGKILL.
    pub async fn kill(&self, id: &str, signal: Option<&str>) -> Result<()> {
        let q = query(signal.map(|s| ("signal", s.to_string())));
        self.unit(Call::new(Method::POST, container(id, &format!("/kill{q}"))))
            .await
    }

    pub async fn remove(&self, id: &str, opts: RemoveOptions) -> Result<()> {
        let q = query([
            ("force", flag(opts.force)),
            ("v", flag(opts.volumes)),
            ("link", flag(opts.link)),
        ]);
        self.unit(Call::new(Method::DELETE, container(id, &q)))
            .await
    }

    /// Returns as soon as the daemon has taken the wait on (`docker run` starts the container
    /// only then, so an exit cannot slip by); the answer comes from `PendingWait::outcome`.
    pub async fn wait(&self, id: &str, condition: WaitCondition) -> Result<PendingWait> {
        let condition = match condition {
            WaitCondition::NotRunning => "not-running",
            WaitCondition::NextExit => "next-exit",
            WaitCondition::Removed => "removed",
        };
        let path = container(
            id,
            &format!("/wait{}", query([("condition", condition.into())])),
        );
        let resp = self.send(Call::new(Method::POST, path.clone())).await?;
        Ok(PendingWait::new(resp, path))
    }

    /// `GET /containers/{id}/logs`; `opts.tail` None means all lines.
    pub async fn logs(&self, id: &str, opts: &LogsOptions) -> Result<OutputReader> {
        let mut pairs = vec![
            ("follow", flag(opts.follow)),
            ("stdout", flag(opts.stdout)),
            ("stderr", flag(opts.stderr)),
            ("timestamps", flag(opts.timestamps)),
            (
                "tail",
                opts.tail.map_or_else(|| "all".into(), |n| n.to_string()),
            ),
        ];
        if opts.since != 0.0 {
            pairs.push(("since", opts.since.to_string()));
        }
        if opts.until != 0.0 {
            pairs.push(("until", opts.until.to_string()));
        }
        let path = container(id, &format!("/logs{}", query(pairs)));
        Ok(OutputReader::from_body(
            self.send(Call::new(Method::GET, path)).await?,
        ))
    }

    /// `POST /containers/{id}/attach`, taking the connection over (`101 UPGRADED`).
    pub async fn attach(&self, id: &str, opts: &AttachOptions) -> Result<Hijacked> {
        let mut pairs = vec![
            ("stream", flag(opts.stream)),
            ("logs", flag(opts.logs)),
            ("stdin", flag(opts.stdin)),
            ("stdout", flag(opts.stdout)),
            ("stderr", flag(opts.stderr)),
        ];
        if let Some(keys) = &opts.detach_keys {
            pairs.push(("detachKeys", keys.clone()));
        }
        let path = container(id, &format!("/attach{}", query(pairs)));
        let resp = self.send(Call::new(Method::POST, path).upgrade()).await?;
        Hijacked::from_response(resp).await
    }

    /// The TTY's size (a container created with `Tty`).
    pub async fn resize(&self, id: &str, height: u32, width: u32) -> Result<()> {
        let q = query([("h", height.to_string()), ("w", width.to_string())]);
        self.unit(Call::new(
            Method::POST,
            container(id, &format!("/resize{q}")),
        ))
        .await
    }

    /// `POST /commit`: the new image's ID.
    pub async fn commit(&self, opts: &CommitOptions) -> Result<String> {
        let optional = [
            ("repo", &opts.repo),
            ("tag", &opts.tag),
            ("comment", &opts.comment),
            ("author", &opts.author),
        ];
        let q = query(
            [
                ("container", opts.container.clone()),
                ("pause", opts.pause.to_string()),
            ]
            .into_iter()
            .chain(
                optional
                    .into_iter()
                    .filter_map(|(k, v)| Some((k, v.clone()?))),
            )
            .chain(opts.changes.iter().map(|c| ("changes", c.clone()))),
        );
        let call = Call::new(Method::POST, format!("/commit{q}"));
        Ok(self.json::<IdResponse>(call).await?.id)
    }

    /// `POST /containers/{id}/exec`: the new exec session's ID.
    pub async fn exec_create(&self, id: &str, body: &ExecCreateBody) -> Result<String> {
        let call = Call::new(Method::POST, container(id, "/exec")).json(body)?;
        Ok(self.json::<IdResponse>(call).await?.id)
    }

    /// `POST /exec/{id}/start`, attached: the connection is taken over (`101 UPGRADED`).
    /// `console_size`: (height, width) for a TTY session.
    pub async fn exec_start(
        &self,
        exec_id: &str,
        tty: bool,
        console_size: Option<(u32, u32)>,
    ) -> Result<Hijacked> {
        let body = ExecStartBody {
            detach: Some(false),
            tty: Some(tty),
            console_size: console_size.map(|(h, w)| vec![h, w]),
        };
        let call = Call::new(Method::POST, exec(exec_id, "/start"))
            .json(&body)?
            .upgrade();
        Hijacked::from_response(self.send(call).await?).await
    }

    /// `POST /exec/{id}/start` detached: the process runs on its own.
    pub async fn exec_start_detached(&self, exec_id: &str) -> Result<()> {
        let body = ExecStartBody {
            detach: Some(true),
            ..ExecStartBody::default()
        };
        self.unit(Call::new(Method::POST, exec(exec_id, "/start")).json(&body)?)
            .await
    }

    /// `GET /exec/{id}/json`: `exit_code` is set once the process has ended.
    pub async fn exec_inspect(&self, exec_id: &str) -> Result<ExecInspect> {
        self.json(Call::new(Method::GET, exec(exec_id, "/json")))
            .await
    }

    /// `POST /images/create?fromImage=REF`: the pull's progress, line by line (a failure
    /// arrives as a line with `error` set).
    pub async fn pull(&self, reference: &str) -> Result<JsonLines<ProgressMessage>> {
        let path = format!(
            "/images/create{}",
            query([("fromImage", reference.to_string())])
        );
        let resp = self.send(Call::new(Method::POST, path.clone())).await?;
        Ok(JsonLines::new(resp, path))
    }
}
