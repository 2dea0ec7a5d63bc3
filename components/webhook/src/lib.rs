//! The webhook intake component: seller webhooks at `/webhooks/adcp/{operation_id}` and the
//! agent-level ones at `/webhooks/adcp/agent/{tenant}/{seller}`, all handled by
//! `orchestrator_core::intake`. After answering it settles the change (its effects: buyer
//! notification, counters) and makes the notification's first attempt; if this instance dies
//! first, the next reader of the operation or the sweep settles it (nothing is lost).

use orchestrator_core::intake::{self, IntakeConfig, IntakeEnv, MAX_WEBHOOK_BYTES};
use orchestrator_core::records::notify;
use spin_adapter::{
    HostClock, SpinStore, SpinTransport, StderrLog, accept, allow_private_networks,
    into_spin_response, public_base_url, sealing_key, seller_calls,
};
use spin_sdk::http::{IntoResponse, Request};
use spin_sdk::http_service;

#[http_service]
async fn handle(req: Request) -> anyhow::Result<impl IntoResponse> {
    let (config, req, store) = match accept(req, MAX_WEBHOOK_BYTES, config().await).await {
        Ok(accepted) => accepted,
        Err(response) => return Ok(response),
    };
    if intake::agent::is_agent_webhook(&req) {
        let calls = seller_calls(&store, &config.sealing, &HostClock);
        let response = intake::agent::handle(&env(&store, &config), &calls, req).await;
        return Ok(into_spin_response(response));
    }
    let answer = intake::handle(&env(&store, &config), req).await;
    if let Some(op) = answer.settle {
        spin_sdk::wasip3::spawn(async move {
            // Yield until the answer is out: this work starts after it, never before.
            spin_sdk::wasip3::clocks::monotonic_clock::wait_for(1_000_000).await;
            for id in intake::settle(&env(&store, &config), &op).await {
                let lease = Default::default();
                let attempted = notify::attempt_alone(
                    &store,
                    &HostClock,
                    &lease,
                    &SpinTransport,
                    &config.sealing,
                    &id,
                )
                .await;
                // In order: one not delivered now leaves the later ones to the sweep.
                if !matches!(attempted, Ok(Some(n)) if n.state == notify::DeliveryState::Delivered)
                {
                    break;
                }
            }
        });
    }
    Ok(into_spin_response(answer.response))
}

fn env<'a>(
    store: &'a SpinStore,
    config: &'a IntakeConfig,
) -> IntakeEnv<'a, SpinStore, SpinTransport> {
    IntakeEnv {
        store,
        clock: &HostClock,
        log: &StderrLog,
        config,
        transport: &SpinTransport,
    }
}

async fn config() -> Result<IntakeConfig, String> {
    Ok(IntakeConfig {
        public_base_url: public_base_url().await?,
        sealing: sealing_key().await?,
        due: Default::default(),
        allow_private_networks: allow_private_networks().await,
    })
}
