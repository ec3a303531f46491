//! The `/volumes` calls.

use hyper::Method;

use super::{filters_pair, query, segment, Call, Client, Result};
use crate::daemon::model::{Volume, VolumeCreateBody, VolumeList, VolumePruneReport};
use crate::daemon::options::Filters;

fn filters_query(filters: &Filters) -> Result<String> {
    Ok(query(filters_pair(filters)?))
}

impl Client {
    pub async fn volume_list(&self, filters: &Filters) -> Result<VolumeList> {
        let path = format!("/volumes{}", filters_query(filters)?);
        self.json(Call::new(Method::GET, path)).await
    }

    pub async fn volume_create(&self, body: &VolumeCreateBody) -> Result<Volume> {
        let call = Call::new(Method::POST, "/volumes/create".into()).json(body)?;
        self.json(call).await
    }

    pub async fn volume_inspect(&self, name: &str) -> Result<Volume> {
        self.json(Call::new(
            Method::GET,
            format!("/volumes/{}", segment(name)),
        ))
        .await
    }

    pub async fn volume_remove(&self, name: &str, force: bool) -> Result<()> {
        let q = query([("force", super::flag(force))]);
        self.unit(Call::new(
            Method::DELETE,
            format!("/volumes/{}{q}", segment(name)),
        ))
        .await
    }

    pub async fn volume_prune(&self, filters: &Filters) -> Result<VolumePruneReport> {
        let path = format!("/volumes/prune{}", filters_query(filters)?);
        self.json(Call::new(Method::POST, path)).await
    }
}
