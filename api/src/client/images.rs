//! Image calls besides pull: build (a streamed context), push (with `X-Registry-Auth`), tag.

use hyper::Method;

use super::stream::JsonLines;
use super::{query, segment, Call, Client, Result, StreamedBody};
use crate::daemon::handlers::build as build_query;
use crate::daemon::model::ProgressMessage;
use crate::daemon::options::BuildOptions;
use crate::daemon::registry_auth::RegistryAuth;

impl Client {
    /// `POST /build` with `context` (a tar, sent as it is produced): the classic builder's
    /// lines (a failure arrives as a line with `error` set).
    pub async fn build(
        &self,
        opts: &BuildOptions,
        context: StreamedBody,
    ) -> Result<JsonLines<ProgressMessage>> {
        let path = format!("/build{}", query(build_query::encode(opts)));
        let call = Call::new(Method::POST, path.clone()).streamed("application/x-tar", context);
        let resp = self.send(call).await?;
        Ok(JsonLines::new(resp, path))
    }

    /// `POST /images/{name}/push?tag=`: the push's progress, line by line (a failure arrives
    /// as a line with `error` set). No credentials: `{}`, as the docker CLI sends then.
    pub async fn push(
        &self,
        name: &str,
        tag: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<JsonLines<ProgressMessage>> {
        let path = format!(
            "/images/{}/push{}",
            segment(name),
            query([("tag", tag.to_string())])
        );
        let header = auth.map_or_else(|| RegistryAuth::default().encode(), RegistryAuth::encode);
        let call = Call::new(Method::POST, path.clone()).header("X-Registry-Auth", header);
        let resp = self.send(call).await?;
        Ok(JsonLines::new(resp, path))
    }

    /// `POST /images/{name}/tag?repo=&tag=`.
    pub async fn tag(&self, source: &str, repo: &str, tag: Option<&str>) -> Result<()> {
        let mut pairs = vec![("repo", repo.to_string())];
        if let Some(t) = tag {
            pairs.push(("tag", t.to_string()));
        }
        let path = format!("/images/{}/tag{}", segment(source), query(pairs));
        self.unit(Call::new(Method::POST, path)).await
    }
}
