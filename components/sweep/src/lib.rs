//! The cron component: runs one sweep tick per `spin:cron@3.0.0` event. All behaviour is
//! in `orchestrator_core::sweep`; the same tick is reachable at `POST /internal/sweep`.

use spin_adapter::{HostClock, SpinStore};

spin_sdk::wit_bindgen::generate!({
    world: "spin-cron",
    path: "../../wit",
    runtime_path: "::spin_sdk::wit_bindgen::rt",
});

struct Sweep;

impl Guest for Sweep {
    async fn handle_cron_event(metadata: Metadata) -> Result<(), Error> {
        let store = SpinStore::open()
            .await
            .map_err(|e| Error::Other(format!("{e:#}")))?;
        let scheduled_at_ms = metadata.timestamp.saturating_mul(1000);
        orchestrator_core::sweep::tick(&store, &HostClock, "cron", scheduled_at_ms)
            .await
            .map(|_| ())
            .map_err(|e| Error::Other(e.to_string()))
    }
}

export!(Sweep);
