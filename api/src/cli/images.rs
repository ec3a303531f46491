//! Image subcommands: pull, images, rmi, image prune/unpack, load, save, login.

use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry.
    Pull {
        /// Image reference, e.g. busybox:1.36 or host:port/ns/name@sha256:...
        reference: String,
    },
}

impl ImageCommand {
    pub async fn run(self) -> anyhow::Result<i32> {
        anyhow::bail!("not implemented yet: {self:?}")
    }
}
