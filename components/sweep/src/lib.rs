//! The cron component: runs one sweep tick per `spin:cron@3.0.0` event. All behaviour is
//! in `orchestrator_core::sweep`; the same tick is reachable at `POST /internal/sweep`.

use orchestrator_core::config::SweepConfig;
use orchestrator_core::foundation::clock::Clock;
use orchestrator_core::sweep::{self, SweepEnv};
use spin_adapter::{
    HostClock, HostEntropy, SpinStore, SpinTransport, StderrLog, sealing_key, seller_calls,
    variable,
};

spin_sdk::wit_bindgen::generate!({
    world: "spin-cron",
    path: "../../wit",
    runtime_path: "::spin_sdk::wit_bindgen::rt",
});

/// The host clock, moved forward to the trigger's fire time when that is later: the cron
/// plugin's timestamp is the tick's time (and lets a test host fire a tick "in the future").
struct TickClock {
    offset_ms: u64,
}

impl Clock for TickClock {
    fn now_ms(&self) -> u64 {
        HostClock.now_ms() + self.offset_ms
    }
}

struct Sweep;

impl Guest for Sweep {
    async fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let fail = |e: String| Error::Other(e);
        let sealing = sealing_key().await.map_err(fail)?;
        let store = SpinStore::open()
            .await
            .map_err(|e| fail(format!("{e:#}")))?;
        let scheduled_at_ms = metadata.timestamp.saturating_mul(1000);
        let clock = TickClock {
            offset_ms: scheduled_at_ms.saturating_sub(HostClock.now_ms()),
        };
        let config = SweepConfig::parse(&variable("sweep_config").await.unwrap_or_default())
            .map_err(fail)?;
        let calls = seller_calls(&store, &sealing, &clock);
        let env = SweepEnv {
            store: &store,
            clock: &clock,
            entropy: &HostEntropy,
            log: &StderrLog,
            sealing: &sealing,
            calls: &calls,
            transport: &SpinTransport,
            config: &config,
        };
        sweep::tick(&env, "cron", scheduled_at_ms)
            .await
            .map(drop)
            .map_err(|e| fail(e.to_string()))
    }
}

export!(Sweep);
