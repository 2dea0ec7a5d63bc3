//! Every key the orchestrator writes: the schema of the one Spin key-value store (`default`)
//! all components share. Keys are ASCII, ≤ ~200 bytes (hosted Spin caps them at 255); values
//! stay far below 1 MB. No hot path lists keys (`get_keys`): all is found from an id, a counter
//! or an index bucket.
//!
//! | key | value | written by |
//! |---|---|---|
//! | `op:{op}` | operation snapshot (JSON): a cache of the journal fold | anyone who folds |
//! | `op:{op}:seq` | counter: last allocated journal sequence number | `increment` only |
//! | `op:{op}:ev:{seq}` | one journal entry (JSON), written once | the entry's allocator |
//! | `due:{bucket}:n` | counter: entries in a due-time bucket | `increment` only |
//! | `due:{bucket}:{n}` | operation id due in that bucket (a hint; the snapshot decides) | scheduler |
//! | `tenant:{tenant}` | tenant record (JSON) | operations API |
//! | `apikey:{sha256}` | tenant id owning the API key with that digest | operations API |
//! | `seller:{tenant}:{seller}` | seller registration (JSON, credentials sealed) | operations API |
//! | `tenant:{tenant}:ops:n` | counter: operations created by the tenant | `increment` only |
//! | `tenant:{tenant}:ops:{n}` | id of the tenant's n-th operation (listing index) | operation's creator |
//! | `op:{op}:listed` | the operation's position `n` in its tenant's listing (decimal) | operation's creator |
//! | `callback:{tenant}` | the tenant's notification callback (JSON, secret sealed) | operations API |
//! | `callback:{tenant}:gone` | identity of the registration whose receiver answered 410 | notifier |
//! | `ntf:{id}` | one buyer notification in the outbox (JSON) | applying writer, sweep |
//! | `ntf:{id}:final` | `delivered` or `failed` once the notification is; never cleared | notifier |
//! | `poll:{op or ntf}` | when the operation (or notification) is next due, and poll counters (JSON) | sweep, creator |
//! | `mcp:{tenant}:{seller}` | the seller's current `Mcp-Session-Id` (a cache) | whoever initializes |
//! | `op:{op}:dlv:{sha256(idempotency_key)}` | payload digest of a delivery mark moved out of the operation's record (past its window) | whoever saves the record |
//! | `jwks:{tenant}:{seller}` | the seller's webhook-signing keys as last fetched, and when a fetch was last tried (JSON) | intake |
//! | `jwks:{tenant}:{seller}:claim:{slot}` | counter: claims of the seller's one key fetch in a cooldown slot; the first wins | `increment` only |
//! | `sellers:n` | counter: sellers ever registered | `increment` only |
//! | `sellers:{n}` | `{tenant}\n{seller}` of the n-th registration (per-seller metrics) | operations API |
//! | `sweep:cursor` | first bucket not yet fully swept | sweep |
//! | `sweep:last` | summary of the last sweep tick (JSON) | sweep |
//! | `sweep:holder` | when the sweep lease's holder started its tick (Unix ms, decimal); 0 once it finished | sweep |
//! | `lease:op:{op}:{slot}` | counter: claims of the operation in a lease slot; the first wins | `increment` only |
//! | `lease:sweep:{slot}` | counter: claims of the sweep tick in a lease slot | `increment` only |
//! | `breaker:{tenant}:{seller}:failures` | counter: failures ever recorded for the seller | `increment` only |
//! | `breaker:{tenant}:{seller}:mark` | failure count at the last closing success (decimal) | breaker |
//! | `breaker:{tenant}:{seller}:opened` | when the breaker last tripped (Unix ms, decimal) | breaker |
//! | `breaker:{tenant}:{seller}:probe:{base}:{w}` | counter: half-open probe claims in a window | `increment` only |
//! | `polltool:{tenant}:{seller}` | the seller's polling tool from `tools/list` (JSON, a cache) | sweep |
//! | `op:{op}:fx:{seq}` | counter: claim on running the effects of journal entry `seq` | `increment` only |
//! | `taskof:{tenant}:{seller}:{sha256(task_id)}` | the operation tracking that seller task | whoever first learns the task id |
//! | `sellertasks:{tenant}:{seller}:n` | counter: seller tasks ever tracked | `increment` only |
//! | `sellertasks:{tenant}:{seller}:{n}` | operation id of the n-th tracked task; deleted once the operation is closed or gone | whoever first learns the task id; reconciliation |
//! | `sellertasks:{tenant}:{seller}:low` | JSON `{low, counted}`: entries below `low` are gone; the count the last walk saw | reconciliation |
//! | `reconcile:{epoch}` | counter: claim on the reconciliation run of an epoch | `increment` only |
//! | `reconcile:{epoch}:runs` | counter: runs of the epoch (reruns after store failures) | `increment` only |
//! | `reconcile:cursor:{tenant}:{seller}` | next tracked-task entry to check (decimal) | reconciliation |
//! | `purge:cursor:{tenant}` | first listing entry not yet removed by retention (decimal) | retention |
//! | `purge:next:{tenant}` | listing entry the next retention run starts at (decimal) | retention |
//! | `meta:format` | the stored format's version (decimal; absent: 1) | sweep |
//! | `audit:cursor` | where the invariant auditor's walk resumes (JSON) | sweep |
//! | `tenant:{tenant}:sellers:n` | counter: sellers the tenant ever registered | `increment` only |
//! | `tenant:{tenant}:sellers:{n}` | id of the tenant's n-th registered seller (listing index) | operations API |
//! | `tenant:{tenant}:seller:{seller}:listed` | counter: claim on the seller's one listing entry | `increment` only |
//! | `interop:{tenant}:{seller}:{defect}:n` | counter: the seller's deliveries refused for that spec violation | `increment` only |
//! | `interop:{tenant}:{seller}:{defect}:last` | the last such refusal: when, and what exactly (JSON) | intake |
//! | `sellerok:{tenant}:{seller}` | when a call to the seller last succeeded (Unix ms, decimal) | whoever calls the seller |
//! | `sum:{tenant}:created:{status}` | counter: the tenant's operations stored in that status | `increment` only |
//! | `sum:{tenant}:moved:{from}:{to}` | counter: the tenant's operations that went from one status to another | `increment` only |
//! | `sum:{tenant}:adjust:{status}` | counter: the auditor's correction of the tenant's count in that status | `increment` only |
//! | `sum:{tenant}:rejected:{reason}` | counter: the tenant's webhooks refused, by reason | `increment` only |
//! | `sum:{tenant}:sellererr:{seller}` | counter: failed calls to one of the tenant's sellers | `increment` only |
//!
//! Sequence numbers come from `increment`, so concurrent writers never rewrite one key; a stale
//! writer may overwrite a snapshot, which only costs a longer fold on the next read.

/// Operation ids are ours; still, every id from a URL passes [`valid_id`] before use in a key.
pub fn operation(op: &str) -> String {
    format!("op:{op}")
}

pub fn operation_seq(op: &str) -> String {
    format!("op:{op}:seq")
}

/// Zero-padded so an operation's keys sort in journal order in a KV browser.
pub fn operation_entry(op: &str, seq: u64) -> String {
    format!("op:{op}:ev:{seq:010}")
}

pub fn due_count(bucket: u64) -> String {
    format!("due:{bucket}:n")
}

pub fn due_entry(bucket: u64, n: u64) -> String {
    format!("due:{bucket}:{n}")
}

pub fn tenant(tenant: &str) -> String {
    format!("tenant:{tenant}")
}

pub fn api_key(digest_hex: &str) -> String {
    format!("apikey:{digest_hex}")
}

pub fn seller(tenant: &str, seller: &str) -> String {
    format!("seller:{tenant}:{seller}")
}

pub fn tenant_ops_count(tenant: &str) -> String {
    format!("tenant:{tenant}:ops:n")
}

pub fn tenant_ops_entry(tenant: &str, n: u64) -> String {
    format!("tenant:{tenant}:ops:{n}")
}

pub fn callback(tenant: &str) -> String {
    format!("callback:{tenant}")
}

pub fn callback_gone(tenant: &str) -> String {
    format!("callback:{tenant}:gone")
}

pub fn notification(id: &str) -> String {
    format!("ntf:{id}")
}

/// Set once notification `id` is delivered or given up, and never cleared: a settler that
/// queued the notification concurrently may write it back as pending (`records::notify`).
pub fn notification_final(id: &str) -> String {
    format!("ntf:{id}:final")
}

pub fn poll_state(id: &str) -> String {
    format!("poll:{id}")
}

pub fn mcp_session(tenant: &str, seller: &str) -> String {
    format!("mcp:{tenant}:{seller}")
}

/// The seller's polling tool from `tools/list`, with when it was learned.
pub fn poll_tool(tenant: &str, seller: &str) -> String {
    format!("polltool:{tenant}:{seller}")
}

/// Deliveries from the seller refused for the spec violation `defect` (`records::interop`).
pub fn interop_count(tenant: &str, seller: &str, defect: &str) -> String {
    format!("interop:{tenant}:{seller}:{defect}:n")
}

pub fn interop_last(tenant: &str, seller: &str, defect: &str) -> String {
    format!("interop:{tenant}:{seller}:{defect}:last")
}

/// Claim on running the side effects of the status change made by journal entry `seq`
/// (`increment == 1` wins), so the writer or a later reader runs them exactly once.
pub fn effects_claim(op: &str, seq: u64) -> String {
    format!("op:{op}:fx:{seq}")
}

pub fn operation_listed(op: &str) -> String {
    format!("op:{op}:listed")
}

pub fn delivery_mark(op: &str, idempotency_key: &str) -> String {
    let h = crate::foundation::seal::digest_hex(idempotency_key.as_bytes());
    format!("op:{op}:dlv:{}", &h[..32])
}

pub fn seller_jwks(tenant: &str, seller: &str) -> String {
    format!("jwks:{tenant}:{seller}")
}

pub fn seller_jwks_claim(tenant: &str, seller: &str, slot: u64) -> String {
    format!("jwks:{tenant}:{seller}:claim:{slot}")
}

pub const SELLERS_COUNT: &str = "sellers:n";

pub fn sellers_entry(n: u64) -> String {
    format!("sellers:{n}")
}

pub const SWEEP_CURSOR: &str = "sweep:cursor";
pub const SWEEP_LAST: &str = "sweep:last";
pub const SWEEP_HOLDER: &str = "sweep:holder";

/// A lease slot's claim counter; `scope` is [`lease_scope_operation`] or [`LEASE_SCOPE_SWEEP`].
pub fn lease(scope: &str, slot: u64) -> String {
    format!("lease:{scope}:{slot}")
}

pub fn lease_scope_operation(op: &str) -> String {
    format!("op:{op}")
}

pub const LEASE_SCOPE_SWEEP: &str = "sweep";

pub fn breaker_failures(tenant: &str, seller: &str) -> String {
    format!("breaker:{tenant}:{seller}:failures")
}

pub fn breaker_mark(tenant: &str, seller: &str) -> String {
    format!("breaker:{tenant}:{seller}:mark")
}

pub fn breaker_opened(tenant: &str, seller: &str) -> String {
    format!("breaker:{tenant}:{seller}:opened")
}

pub fn breaker_probe(tenant: &str, seller: &str, base_ms: u64, window: u64) -> String {
    format!("breaker:{tenant}:{seller}:probe:{base_ms}:{window}")
}

/// The id alphabet of AdCP's `operation_id` (`^[A-Za-z0-9_.:-]{1,255}$`), minus `:` which
/// separates key segments here, and capped at 128 bytes so composed keys stay short.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The operation tracking seller task `task_id` (hashed: task ids are the seller's text).
pub fn task_of(tenant: &str, seller: &str, task_id: &str) -> String {
    let h = crate::foundation::seal::digest_hex(task_id.as_bytes());
    format!("taskof:{tenant}:{seller}:{}", &h[..32])
}

pub fn seller_tasks_count(tenant: &str, seller: &str) -> String {
    format!("sellertasks:{tenant}:{seller}:n")
}

pub fn seller_tasks_entry(tenant: &str, seller: &str, n: u64) -> String {
    format!("sellertasks:{tenant}:{seller}:{n}")
}

pub fn seller_tasks_low(tenant: &str, seller: &str) -> String {
    format!("sellertasks:{tenant}:{seller}:low")
}

pub fn reconcile_claim(epoch: u64) -> String {
    format!("reconcile:{epoch}")
}

pub fn reconcile_runs(epoch: u64) -> String {
    format!("reconcile:{epoch}:runs")
}

pub fn purge_cursor(tenant: &str) -> String {
    format!("purge:cursor:{tenant}")
}

pub const FORMAT: &str = "meta:format";

pub const AUDIT_CURSOR: &str = "audit:cursor";

pub fn purge_next(tenant: &str) -> String {
    format!("purge:next:{tenant}")
}

pub fn tenant_sellers_count(tenant: &str) -> String {
    format!("tenant:{tenant}:sellers:n")
}

pub fn tenant_sellers_entry(tenant: &str, n: u64) -> String {
    format!("tenant:{tenant}:sellers:{n}")
}

/// Claim (`increment == 1` wins) on the one listing entry of a seller, so registering it
/// again after a delete does not list it twice.
pub fn tenant_seller_listed(tenant: &str, seller: &str) -> String {
    format!("tenant:{tenant}:seller:{seller}:listed")
}

pub fn seller_last_ok(tenant: &str, seller: &str) -> String {
    format!("sellerok:{tenant}:{seller}")
}

pub fn summary_created(tenant: &str, status: &str) -> String {
    format!("sum:{tenant}:created:{status}")
}

/// One counter per (from, to) pair, so a status change costs a single increment.
pub fn summary_moved(tenant: &str, from: &str, to: &str) -> String {
    format!("sum:{tenant}:moved:{from}:{to}")
}

/// A metrics counter: `m:{name}:{label}:…` (`records::metrics`).
pub fn metric(name: &str, labels: &[&str]) -> String {
    let mut k = format!("m:{name}");
    for l in labels {
        k.push(':');
        k.push_str(l);
    }
    k
}

/// The auditor's correction of the tenant's count in `status` (`records::gauges`).
pub fn summary_adjust(tenant: &str, status: &str) -> String {
    format!("sum:{tenant}:adjust:{status}")
}

pub fn summary_rejected(tenant: &str, reason: &str) -> String {
    format!("sum:{tenant}:rejected:{reason}")
}

pub fn summary_seller_errors(tenant: &str, seller: &str) -> String {
    format!("sum:{tenant}:sellererr:{seller}")
}

pub fn reconcile_cursor(tenant: &str, seller: &str) -> String {
    format!("reconcile:cursor:{tenant}:{seller}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_keys_sort_in_sequence_order() {
        let a = operation_entry("op_1", 9);
        let b = operation_entry("op_1", 10);
        assert!(a < b);
    }

    #[test]
    fn ids_that_could_forge_keys_are_refused() {
        assert!(valid_id("op_7c1e-9.x"));
        for bad in ["", "a:b", "a/b", "a b", "é", &"x".repeat(129)] {
            assert!(!valid_id(bad), "{bad}");
        }
    }
}
