//! Sending one batch to a tenant's sink: a signed POST to its webhook, or
//! one object in its bucket. What to send and when is the caller's.

use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, PutPayload};

use crate::sink::{signature, Batch, SinkConfig};
use crate::{LogError, Result};

/// The delivery timeout: a slow sink is a failed delivery, tried again.
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Deliverer {
    http: reqwest::Client,
    /// `logs.allow_insecure_sinks`: plain http to an S3 endpoint too.
    insecure: bool,
}

impl Deliverer {
    pub fn new(insecure: bool) -> Result<Deliverer> {
        let http = fief_http::client(None, TIMEOUT).map_err(LogError::Delivery)?;
        Ok(Deliverer { http, insecure })
    }

    /// Delivers one batch; `Ok` only when the sink acknowledged it.
    pub async fn deliver(&self, sink: &SinkConfig, batch: &Batch<'_>) -> Result<()> {
        match sink {
            SinkConfig::Webhook { url, secret } => {
                let body = batch.json();
                let response = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-fief-signature", signature(secret, &body))
                    .header("x-fief-first-seq", batch.first_seq.to_string())
                    .header("x-fief-last-seq", batch.last_seq.to_string())
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| LogError::Delivery(fief_http::describe(&e)))?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(LogError::Delivery(format!(
                        "the webhook answered {}",
                        response.status()
                    )))
                }
            }
            SinkConfig::S3 {
                bucket,
                prefix,
                endpoint,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let mut builder = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key)
                    .with_client_options(
                        ClientOptions::new()
                            .with_timeout(TIMEOUT)
                            .with_allow_http(self.insecure),
                    );
                if let Some(e) = endpoint {
                    // Path-style: S3-compatible servers rarely have
                    // per-bucket host names.
                    builder = builder
                        .with_endpoint(e)
                        .with_virtual_hosted_style_request(false);
                }
                let store = builder.build().map_err(|e| {
                    LogError::Delivery(format!("the bucket cannot be reached: {e}"))
                })?;
                let key = ObjectPath::from(batch.object_key(prefix));
                store
                    .put(&key, PutPayload::from(batch.jsonl()))
                    .await
                    .map_err(|e| LogError::Delivery(format!("the object was not written: {e}")))?;
                Ok(())
            }
        }
    }
}
