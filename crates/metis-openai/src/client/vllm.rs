//! Server administration: the served models (`GET {base}/models`), and vLLM's runtime LoRA
//! adapters (`POST {base}/load_lora_adapter`, `/unload_lora_adapter`, enabled by
//! `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), which must reach every replica.

use std::future::Future;

use reqwest::Url;

use super::error::{AttemptError, ClientError};
use super::pool::EndpointState;
use super::retry::Route;
use super::Client;
use crate::wire::{LoadLoraAdapterRequest, ModelList, UnloadLoraAdapterRequest};

impl Client {
    /// GET `{base}/models` (on the least-loaded endpoint, with retries); returns the model ids.
    pub async fn list_models(&self) -> Result<Vec<String>, ClientError> {
        let answered = self
            .with_retries(Route::Any, |ep| async move {
                let bytes = self.get(ep, &ep.models_url).await?;
                let list: ModelList = serde_json::from_slice(&bytes)
                    .map_err(|e| AttemptError::from(ClientError::malformed(&e, &bytes)))?;
                Ok(list.data.into_iter().map(|m| m.id).collect())
            })
            .await
            .map_err(|failed| failed.error)?;
        Ok(answered.value)
    }

    /// Loads the LoRA adapter at `path` (a PEFT directory as the servers see it) under `name`
    /// on **every** replica, concurrently: POST `{base}/load_lora_adapter` (vLLM with
    /// `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`), so that a completion request naming the
    /// adapter finds it whichever replica it is routed to.
    ///
    /// vLLM refuses a name it already holds with 400. When a load gets a 400, the replica is
    /// asked to unload `name`; if it had it (a name left by an interrupted run, whose step is
    /// now replayed), the load is sent again so the fresh adapter replaces the stale one.
    /// Otherwise the 400 is the error. Errors name the URL of the replica that failed.
    pub async fn load_lora_adapter(&self, name: &str, path: &str) -> Result<(), ClientError> {
        let load = serde_json::to_vec(&LoadLoraAdapterRequest {
            lora_name: name.to_owned(),
            lora_path: path.to_owned(),
        })
        .map_err(ClientError::serialising)?;
        let unload = serde_json::to_vec(&UnloadLoraAdapterRequest {
            lora_name: name.to_owned(),
        })
        .map_err(ClientError::serialising)?;
        let (load, unload) = (load.as_slice(), unload.as_slice());
        self.on_every_replica(|idx| async move {
            match self.post_admin(idx, |ep| &ep.load_lora_url, load).await {
                Err(e) if e.http_status() == Some(400) => {
                    if self
                        .post_admin(idx, |ep| &ep.unload_lora_url, unload)
                        .await
                        .is_ok()
                    {
                        self.post_admin(idx, |ep| &ep.load_lora_url, load).await
                    } else {
                        Err(e)
                    }
                }
                other => other,
            }
        })
        .await
    }

    /// Unloads the LoRA adapter `name` from every replica, concurrently: POST
    /// `{base}/unload_lora_adapter`. A 404 (the replica does not hold it) counts as done.
    pub async fn unload_lora_adapter(&self, name: &str) -> Result<(), ClientError> {
        let body = serde_json::to_vec(&UnloadLoraAdapterRequest {
            lora_name: name.to_owned(),
        })
        .map_err(ClientError::serialising)?;
        let body = body.as_slice();
        self.on_every_replica(|idx| async move {
            match self.post_admin(idx, |ep| &ep.unload_lora_url, body).await {
                Err(e) if e.http_status() == Some(404) => Ok(()),
                other => other,
            }
        })
        .await
    }

    /// Runs `op` for every replica index concurrently; the first error (in replica order)
    /// wins.
    async fn on_every_replica<F, Fut>(&self, op: F) -> Result<(), ClientError>
    where
        F: Fn(usize) -> Fut,
        Fut: Future<Output = Result<(), ClientError>>,
    {
        let replicas = 0..self.inner.pool.endpoints().len();
        let results = futures::future::join_all(replicas.map(op)).await;
        results.into_iter().collect()
    }

    /// POSTs `body` to the admin URL `url_of` of replica `idx` (retrying on that replica
    /// only: each one must get the call); the response body is not needed.
    async fn post_admin(
        &self,
        idx: usize,
        url_of: fn(&EndpointState) -> &Url,
        body: &[u8],
    ) -> Result<(), ClientError> {
        self.with_retries(Route::Pinned(idx), |ep| async move {
            self.post(ep, url_of(ep), body).await.map(|_| ())
        })
        .await
        .map(|_| ())
        .map_err(|failed| failed.error.at(url_of(failed.endpoint)))
    }
}
