//! The boundary between the HTTP front end and the container engine: everything an endpoint asks
//! of the engine. Every method has a default answering 501 "… is not implemented yet in skiffd",
//! so an engine grows one call at a time and `skiffd` runs before any exists (`Unimplemented`).

use async_trait::async_trait;

use super::create::CreateRequest;
use super::error::BackendError;
use super::model::{
    ContainerInspect, ContainerStats, ContainerSummary, DiskUsage, Event, ExecInspect, HistoryItem,
    ImageDeleteItem, ImageInspect, ImageSummary, Network, NetworkCreateBody, NetworkCreated,
    NetworkPruneReport, ProgressMessage, TopResponse, Volume, VolumeCreateBody, VolumeList,
    VolumePruneReport,
};
use super::options::{
    AttachOptions, AttachStreams, BuildOptions, ByteStream, CommitOptions, EventsOptions,
    ExecConfig, ExecStartOptions, Filters, ImageListOptions, ListOptions, LogsOptions,
    OutputStream, PullOptions, PushOptions, RemoveOptions, StatsOptions, SystemCounts,
    WaitCondition, WaitFuture,
};
use futures_util::stream::BoxStream;

type Result<T> = std::result::Result<T, BackendError>;

/// A container created: its 64-hex ID and the warnings Docker shows after `create`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

/// `id` arguments are what the client sent: a full ID, a unique prefix of one, or a name.
#[async_trait]
pub trait ContainerBackend: Send + Sync + 'static {
    /// Counts for `/info`; an engine that cannot count answers zeros.
    async fn counts(&self) -> SystemCounts {
        SystemCounts::default()
    }

    async fn create(&self, _req: CreateRequest) -> Result<Created> {
        Err(BackendError::NotImplemented("container create"))
    }
    /// `NotModified` when already running.
    async fn start(&self, _id: &str) -> Result<()> {
        Err(BackendError::NotImplemented("container start"))
    }
    /// Errors (no such container, …) come at once; the future resolves when the condition holds.
    /// The endpoint flushes its headers before awaiting it: `docker run` waits for them before
    /// it sends `start`.
    async fn wait(&self, _id: &str, _condition: WaitCondition) -> Result<WaitFuture> {
        Err(BackendError::NotImplemented("container wait"))
    }
    async fn attach(&self, _id: &str, _opts: AttachOptions) -> Result<AttachStreams> {
        Err(BackendError::NotImplemented("container attach"))
    }
    /// `signal`: a name (`SIGKILL`, `KILL`) or number as sent; None: SIGKILL.
    async fn kill(&self, _id: &str, _signal: Option<String>) -> Result<()> {
        Err(BackendError::NotImplemented("container kill"))
    }
    /// `NotModified` when already stopped. `timeout`: seconds before SIGKILL; None: the
    /// container's StopTimeout.
    async fn stop(&self, _id: &str, _signal: Option<String>, _timeout: Option<i64>) -> Result<()> {
        Err(BackendError::NotImplemented("container stop"))
    }
    async fn restart(
        &self,
        _id: &str,
        _signal: Option<String>,
        _timeout: Option<i64>,
    ) -> Result<()> {
        Err(BackendError::NotImplemented("container restart"))
    }
    /// `Conflict` for a running container without `force`.
    async fn remove(&self, _id: &str, _opts: RemoveOptions) -> Result<()> {
        Err(BackendError::NotImplemented("container remove"))
    }
    async fn list(&self, _opts: ListOptions) -> Result<Vec<ContainerSummary>> {
        Err(BackendError::NotImplemented("container list"))
    }
    async fn inspect(&self, _id: &str) -> Result<ContainerInspect> {
        Err(BackendError::NotImplemented("container inspect"))
    }
    /// Returns whether the container has a TTY (raw output) and its log.
    async fn logs(&self, _id: &str, _opts: LogsOptions) -> Result<(bool, OutputStream)> {
        Err(BackendError::NotImplemented("container logs"))
    }
    async fn rename(&self, _id: &str, _new_name: &str) -> Result<()> {
        Err(BackendError::NotImplemented("container rename"))
    }
    async fn top(&self, _id: &str, _ps_args: Option<String>) -> Result<TopResponse> {
        Err(BackendError::NotImplemented("container top"))
    }
    async fn stats(
        &self,
        _id: &str,
        _opts: StatsOptions,
    ) -> Result<BoxStream<'static, ContainerStats>> {
        Err(BackendError::NotImplemented("container stats"))
    }
    async fn resize(&self, _id: &str, _height: u32, _width: u32) -> Result<()> {
        Err(BackendError::NotImplemented("container resize"))
    }

    /// Returns the new exec session's ID (64 hex).
    async fn exec_create(&self, _container: &str, _config: ExecConfig) -> Result<String> {
        Err(BackendError::NotImplemented("exec create"))
    }
    async fn exec_start(&self, _exec: &str, _opts: ExecStartOptions) -> Result<AttachStreams> {
        Err(BackendError::NotImplemented("exec start"))
    }
    async fn exec_inspect(&self, _exec: &str) -> Result<ExecInspect> {
        Err(BackendError::NotImplemented("exec inspect"))
    }
    async fn exec_resize(&self, _exec: &str, _height: u32, _width: u32) -> Result<()> {
        Err(BackendError::NotImplemented("exec resize"))
    }

    /// Past events matching `since`/`until`, then live ones until `until` or the client leaves.
    async fn events(&self, _opts: EventsOptions) -> Result<BoxStream<'static, Event>> {
        Err(BackendError::NotImplemented("events"))
    }

    async fn image_list(&self, _opts: ImageListOptions) -> Result<Vec<ImageSummary>> {
        Err(BackendError::NotImplemented("image list"))
    }
    async fn image_inspect(&self, _name: &str) -> Result<ImageInspect> {
        Err(BackendError::NotImplemented("image inspect"))
    }
    async fn image_remove(
        &self,
        _name: &str,
        _force: bool,
        _no_prune: bool,
    ) -> Result<Vec<ImageDeleteItem>> {
        Err(BackendError::NotImplemented("image remove"))
    }
    async fn image_tag(&self, _name: &str, _repo: &str, _tag: Option<&str>) -> Result<()> {
        Err(BackendError::NotImplemented("image tag"))
    }
    /// The new image's ID (`sha256:` of its config).
    async fn commit(&self, _opts: CommitOptions) -> Result<String> {
        Err(BackendError::NotImplemented("commit"))
    }
    async fn volume_list(&self, _filters: Filters) -> Result<VolumeList> {
        Err(BackendError::NotImplemented("volume list"))
    }
    async fn volume_create(&self, _body: VolumeCreateBody) -> Result<Volume> {
        Err(BackendError::NotImplemented("volume create"))
    }
    /// An engine without volumes has none: `docker inspect NAME` asks for a volume of the name
    /// after a container and an image, and must get a 404 to go on.
    async fn volume_inspect(&self, name: &str) -> Result<Volume> {
        Err(BackendError::NoSuchVolume(name.to_string()))
    }
    /// `Conflict` while a container uses it; `force` ignores a missing volume.
    async fn volume_remove(&self, _name: &str, _force: bool) -> Result<()> {
        Err(BackendError::NotImplemented("volume remove"))
    }
    async fn volume_prune(&self, _filters: Filters) -> Result<VolumePruneReport> {
        Err(BackendError::NotImplemented("volume prune"))
    }

    async fn network_list(&self, _filters: Filters) -> Result<Vec<Network>> {
        Err(BackendError::NotImplemented("network list"))
    }
    async fn network_create(&self, _body: NetworkCreateBody) -> Result<NetworkCreated> {
        Err(BackendError::NotImplemented("network create"))
    }
    /// An engine without networks has none: `docker inspect NAME` may ask for one.
    async fn network_inspect(&self, name: &str) -> Result<Network> {
        Err(BackendError::NoSuchNetwork(name.to_string()))
    }
    async fn network_remove(&self, _name: &str) -> Result<()> {
        Err(BackendError::NotImplemented("network remove"))
    }
    async fn network_prune(&self, _filters: Filters) -> Result<NetworkPruneReport> {
        Err(BackendError::NotImplemented("network prune"))
    }
    /// `container` joins `network` with `aliases` there (from its next start).
    async fn network_connect(
        &self,
        _network: &str,
        _container: &str,
        _aliases: Vec<String>,
    ) -> Result<()> {
        Err(BackendError::NotImplemented("network connect"))
    }
    async fn network_disconnect(&self, _network: &str, _container: &str) -> Result<()> {
        Err(BackendError::NotImplemented("network disconnect"))
    }

    /// Progress lines; a failure after the stream began is a line with `error` set.
    async fn image_pull(&self, _opts: PullOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        Err(BackendError::NotImplemented("image pull"))
    }
    /// Progress lines, as Docker's push writes them; a failure is a line with `error` set.
    async fn image_push(&self, _opts: PushOptions) -> Result<BoxStream<'static, ProgressMessage>> {
        Err(BackendError::NotImplemented("image push"))
    }
    /// `docker history`: newest first.
    async fn image_history(&self, _name: &str) -> Result<Vec<HistoryItem>> {
        Err(BackendError::NotImplemented("image history"))
    }
    /// `archive`: the request body (a `docker save` tar), as it arrives.
    async fn image_load(
        &self,
        _archive: ByteStream,
        _quiet: bool,
    ) -> Result<BoxStream<'static, ProgressMessage>> {
        Err(BackendError::NotImplemented("image load"))
    }
    /// A `docker save` tar of the named images.
    async fn image_save(&self, _names: Vec<String>) -> Result<ByteStream> {
        Err(BackendError::NotImplemented("image save"))
    }
    /// `docker build`: the context (a tar, plain or gzip) as it arrives; the classic builder's
    /// JSON progress lines, a failure being a line with `error` set.
    async fn build(
        &self,
        _opts: BuildOptions,
        _context: ByteStream,
    ) -> Result<BoxStream<'static, ProgressMessage>> {
        Err(BackendError::NotImplemented("build"))
    }
    async fn system_df(&self) -> Result<DiskUsage> {
        Err(BackendError::NotImplemented("system df"))
    }
}

/// The engine `skiffd` runs with until the real one lands: every call answers 501, `/info`
/// counts zeros.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unimplemented;

impl ContainerBackend for Unimplemented {}
