//! [`Proxies`] on Amazon RDS: which secrets an RDS Proxy authenticates with.

use async_trait::async_trait;
use aws_sdk_rds::Client;

use super::aws::classify_or;
use crate::errors::RotationError;
use crate::ports::Proxies;

pub struct RdsProxies {
    client: Client,
}

impl RdsProxies {
    pub fn new(client: Client) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Proxies for RdsProxies {
    async fn auth_secrets(&self, proxy: &str) -> Result<Vec<String>, RotationError> {
        let out = self
            .client
            .describe_db_proxies()
            .db_proxy_name(proxy)
            .send()
            .await
            .map_err(|e| {
                classify_or("rds:DescribeDBProxies", e, |code| {
                    (code == "DBProxyNotFoundFault").then(|| {
                        RotationError::Configuration(format!(
                            "the RDS Proxy {proxy} (DB_PROXY_NAME / dbProxyName) does not exist"
                        ))
                    })
                })
            })?;
        let found = out
            .db_proxies
            .unwrap_or_default()
            .into_iter()
            .find(|p| p.db_proxy_name.as_deref() == Some(proxy))
            .ok_or_else(|| {
                RotationError::Configuration(format!(
                    "the RDS Proxy {proxy} (DB_PROXY_NAME / dbProxyName) does not exist"
                ))
            })?;
        Ok(found
            .auth
            .unwrap_or_default()
            .into_iter()
            .filter_map(|a| a.secret_arn)
            .collect())
    }
}
