//! The operations component: the buyer-facing API, `/healthz`, `/metrics` and the
//! authenticated `/internal/sweep`. All behaviour is in `orchestrator_core::api`.

use orchestrator_core::api::{self, ApiConfig, Env, MAX_BODY_BYTES};
use orchestrator_core::config::SweepConfig;
use spin_adapter::{
    HostClock, HostEntropy, SpinTransport, StderrLog, accept, allow_private_networks,
    into_spin_response, public_base_url, sealing_key, seller_calls, variable,
};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let ((config, sweep), req, store) = match accept(req, MAX_BODY_BYTES, config().await).await {
        Ok(accepted) => accepted,
        Err(response) => return Ok(response),
    };
    let env = Env {
        store: &store,
        clock: &HostClock,
        entropy: &HostEntropy,
        config: &config,
        log: &StderrLog,
        calls: &seller_calls(&store, &config.sealing, &HostClock),
        transport: &SpinTransport,
        sweep: &sweep,
    };
    Ok(into_spin_response(api::handle(&env, req).await))
}

async fn config() -> Result<(ApiConfig, SweepConfig), String> {
    let sealing = sealing_key().await?;
    let sweep = SweepConfig::parse(&variable("sweep_config").await.unwrap_or_default())?;
    let api = ApiConfig {
        admin_api_key: variable("admin_api_key").await.unwrap_or_default(),
        public_base_url: public_base_url().await?,
        sweep_token: variable("sweep_token").await.unwrap_or_default(),
        metrics_token: variable("metrics_token").await.unwrap_or_default(),
        sealing,
        allow_private_networks: allow_private_networks().await,
    };
    Ok((api, sweep))
}
