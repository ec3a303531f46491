//! `skiffd`: the daemon serving skiff's JSON control API on a Unix socket.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("skiffd is not implemented yet")
}
