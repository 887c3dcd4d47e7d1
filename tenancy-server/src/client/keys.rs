//! The key routes for both callers: a tenant's own (`/v1/keys`) through
//! [`super::TenantClient`], any tenant's (`/v1/tenants/{id}/keys`) through
//! [`super::HttpRegistry`]; one implementation below a path prefix.

use std::time::Duration;

use reqwest::Method;
use tenancy_core::{ApiKey, CreatedApiKey, Error, KeyId, NewApiKey, Result, RotatedApiKey, Secret};

use super::{Auth, Client};
use crate::views::{CreatedKeyView, KeyList, KeyView, NewKeyBody, RotateKeyBody, RotatedKeyView};

/// The key routes below `base` (`["v1", "keys"]` or `["v1", "tenants", id, "keys"]`).
pub(crate) struct KeyRoutes<'a> {
    pub(crate) client: &'a Client,
    pub(crate) base: Vec<&'a str>,
    pub(crate) auth: Auth<'a>,
}

impl KeyRoutes<'_> {
    fn path<'b>(&'b self, tail: &[&'b str]) -> Vec<&'b str> {
        let mut p = self.base.clone();
        p.extend_from_slice(tail);
        p
    }

    pub(crate) async fn list(&self) -> Result<Vec<ApiKey>> {
        let list: KeyList = self
            .client
            .call(Method::GET, &self.path(&[]), self.auth)
            .send_json()
            .await?;
        Ok(list.keys.iter().map(KeyView::to_key).collect())
    }

    pub(crate) async fn create(&self, new: NewApiKey) -> Result<CreatedApiKey> {
        // The wire takes a lifetime; the server measures it from its clock.
        let expires_in_seconds = match new.expires_at {
            None => None,
            Some(at) => {
                let left = (at - chrono::Utc::now()).num_seconds();
                if left < 1 {
                    return Err(Error::invalid("a key's expiry must lie in the future"));
                }
                Some(left as u64)
            }
        };
        let body = NewKeyBody {
            name: new.name,
            role: new.role,
            expires_in_seconds,
        };
        let created: CreatedKeyView = self
            .client
            .call(Method::POST, &self.path(&[]), self.auth)
            .json(&body)
            .send_json()
            .await?;
        Ok(CreatedApiKey {
            key: created.key.to_key(),
            secret: Secret::new(created.secret),
        })
    }

    pub(crate) async fn revoke(&self, id: &KeyId) -> Result<ApiKey> {
        let key: KeyView = self
            .client
            .call(Method::DELETE, &self.path(&[id.as_str()]), self.auth)
            .send_json()
            .await?;
        Ok(key.to_key())
    }

    pub(crate) async fn rotate(&self, id: &KeyId, grace: Duration) -> Result<RotatedApiKey> {
        let body = RotateKeyBody {
            grace_seconds: Some(grace.as_secs()),
        };
        let rotated: RotatedKeyView = self
            .client
            .call(
                Method::POST,
                &self.path(&[id.as_str(), "rotate"]),
                self.auth,
            )
            .json(&body)
            .send_json()
            .await?;
        Ok(RotatedApiKey {
            created: CreatedApiKey {
                key: rotated.key.to_key(),
                secret: Secret::new(rotated.secret),
            },
            previous: rotated.previous.to_key(),
        })
    }
}
