//! The `/networks` calls.

use hyper::Method;

use super::{filters_pair, query, segment, Call, Client, Result};
use crate::daemon::model::{
    Network, NetworkConnectBody, NetworkCreateBody, NetworkCreated, NetworkPruneReport,
};
use crate::daemon::options::Filters;

impl Client {
    pub async fn network_list(&self, filters: &Filters) -> Result<Vec<Network>> {
        let path = format!("/networks{}", query(filters_pair(filters)?));
        self.json(Call::new(Method::GET, path)).await
    }

    pub async fn network_create(&self, body: &NetworkCreateBody) -> Result<NetworkCreated> {
        let call = Call::new(Method::POST, "/networks/create".into()).json(body)?;
        self.json(call).await
    }

    pub async fn network_inspect(&self, name: &str) -> Result<Network> {
        let path = format!("/networks/{}", segment(name));
        self.json(Call::new(Method::GET, path)).await
    }

    pub async fn network_remove(&self, name: &str) -> Result<()> {
        let path = format!("/networks/{}", segment(name));
        self.unit(Call::new(Method::DELETE, path)).await
    }

    pub async fn network_prune(&self) -> Result<NetworkPruneReport> {
        self.json(Call::new(Method::POST, "/networks/prune".into()))
            .await
    }

    /// `connect` or `disconnect` (`action`) of `body.container` and network `name`.
    pub async fn network_connection(
        &self,
        name: &str,
        action: &str,
        body: &NetworkConnectBody,
    ) -> Result<()> {
        let path = format!("/networks/{}/{action}", segment(name));
        self.unit(Call::new(Method::POST, path).json(body)?).await
    }
}
