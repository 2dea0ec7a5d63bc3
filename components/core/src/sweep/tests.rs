use super::*;
use crate::config::SweepConfig;
use crate::foundation::clock::Clock;
use crate::foundation::cx::Cx;
use crate::foundation::keys;
use crate::foundation::log::NoLog;
use crate::foundation::seal::SealingKey;
use crate::foundation::store::MemoryStore;
use crate::foundation::store::get_json;
use crate::foundation::transport::TransportError;
use crate::model::operation::{Observation, Source};
use crate::model::status::{OperationStatus, TaskStatus};
use crate::records::journal::{self, EntryKind};
use crate::records::seller::Seller;
use crate::records::tick_report::TickReport;
use crate::schedule::poll::{PollState, schedule_at};
use crate::seller::port::SellerError;
use crate::seller::port::{CallFailure, ListedTool, SellerCalls};
use crate::testing::{ScriptedTransport, SeededEntropy, sample};
use futures::executor::block_on;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};

const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

struct Clock2(Cell<u64>);
impl Clock for Clock2 {
    fn now_ms(&self) -> u64 {
        self.0.get()
    }
}

type Script = Box<dyn FnMut(&str, &Value) -> Result<Value, CallFailure>>;

/// A seller whose answers are computed per call; counts calls per tool.
struct ScriptSeller {
    script: RefCell<Script>,
    calls: RefCell<Vec<(String, Value)>>,
    /// What `tools/list` answers; `None` means the default (the 3.1 polling tool).
    tools: Option<Vec<ListedTool>>,
    lists: Cell<u32>,
}

impl ScriptSeller {
    fn new(f: impl FnMut(&str, &Value) -> Result<Value, CallFailure> + 'static) -> Self {
        ScriptSeller {
            script: RefCell::new(Box::new(f)),
            calls: RefCell::default(),
            tools: None,
            lists: Cell::new(0),
        }
    }

    fn with_tools(mut self, tools: &[&str]) -> Self {
        self.tools = Some(tools.iter().map(|t| ListedTool::named(t)).collect());
        self
    }
    fn with_listed(mut self, tools: Vec<ListedTool>) -> Self {
        self.tools = Some(tools);
        self
    }
    fn count(&self, tool: &str) -> usize {
        self.calls
            .borrow()
            .iter()
            .filter(|(t, _)| t == tool)
            .count()
    }
}

impl SellerCalls for ScriptSeller {
    async fn call(&self, _: &Seller, tool: &str, args: Value) -> Result<Value, CallFailure> {
        self.calls
            .borrow_mut()
            .push((tool.to_string(), args.clone()));
        (self.script.borrow_mut())(tool, &args)
    }

    async fn list_tools(&self, _: &Seller) -> Result<Vec<ListedTool>, CallFailure> {
        self.lists.set(self.lists.get() + 1);
        Ok(self
            .tools
            .clone()
            .unwrap_or_else(|| vec![ListedTool::named("get_task_status")]))
    }
}

/// A transient seller error: the dispatch is retried, then given up.
fn seller_busy() -> Result<Value, CallFailure> {
    Err(CallFailure::Seller(SellerError {
        code: "SERVICE_UNAVAILABLE".into(),
        message: "busy".into(),
        recovery: crate::seller::port::Recovery::Transient,
        retry_after_s: None,
        adcp: true,
    }))
}

struct World {
    store: MemoryStore,
    clock: Clock2,
    entropy: SeededEntropy,
    sealing: SealingKey,
    transport: ScriptedTransport,
    config: SweepConfig,
}

impl World {
    fn new() -> World {
        World {
            store: MemoryStore::new(),
            clock: Clock2(Cell::new(1_000_000)),
            entropy: SeededEntropy::new(3),
            sealing: SealingKey::from_hex(KEY).unwrap(),
            transport: ScriptedTransport::default(),
            config: SweepConfig::default(),
        }
    }

    /// Stores an operation in `status` (with a task id when the seller holds it) and files it due now.
    fn op(&self, id: &str, status: OperationStatus) {
        self.op_due_at(id, status, self.clock.now_ms());
    }

    fn op_due_at(&self, id: &str, status: OperationStatus, due_at_ms: u64) {
        let mut op = sample(id);
        op.created_at_ms = self.clock.now_ms();
        op.deadline_at_ms = op.created_at_ms + 86_400_000;
        block_on(async {
            crate::records::seller::put(&self.store, &crate::testing::sample_seller())
                .await
                .unwrap();
            journal::create(&self.store, &self.clock, &op)
                .await
                .unwrap();
            if let OperationStatus::Seller(s) = status {
                let obs = Observation {
                    source: Source::Dispatch,
                    status: s,
                    at_ms: None,
                    task_id: Some(format!("task_{id}")),
                    context_id: None,
                    message: None,
                    result: None,
                    error: None,
                    delivery: None,
                    seller_status: None,
                };
                crate::testing::record(
                    &self.store,
                    &self.clock,
                    id,
                    EntryKind::Observed {
                        observation: Box::new(obs),
                    },
                )
                .await
                .unwrap();
            }
            let state = PollState {
                next_at_ms: due_at_ms,
                ..Default::default()
            };
            schedule_at(&self.store, &self.clock, &self.config.due, id, state)
                .await
                .unwrap();
        });
    }

    /// The buyer asks to cancel the operation (what `POST .../cancel` records).
    fn request_cancel(&self, id: &str) {
        block_on(crate::testing::record(
            &self.store,
            &self.clock,
            id,
            EntryKind::Local {
                change: crate::model::operation::LocalChange::CancelRequested {
                    reason: None,
                    superseded_by: None,
                },
                by: None,
            },
        ))
        .unwrap();
    }

    fn advance(&self, ms: u64) {
        self.clock.0.set(self.clock.0.get() + ms);
    }

    fn tick(&self, seller: &ScriptSeller) -> TickReport {
        let env = SweepEnv {
            store: &self.store,
            clock: &self.clock,
            entropy: &self.entropy,
            log: &NoLog,
            sealing: &self.sealing,
            calls: seller,
            transport: &self.transport,
            config: &self.config,
        };
        block_on(tick(&env, "test", self.clock.now_ms())).unwrap()
    }

    fn status(&self, id: &str) -> OperationStatus {
        block_on(journal::load(&self.store, &self.clock, id))
            .unwrap()
            .unwrap()
            .operation
            .status
    }

    /// Ticks every 30 s for `ms`.
    fn run_for(&self, ms: u64, seller: &ScriptSeller) {
        let end = self.clock.now_ms() + ms;
        while self.clock.now_ms() < end {
            self.advance(30_000);
            self.tick(seller);
        }
    }
}

#[test]
fn the_sweep_config_variable_overrides_defaults_and_refuses_mistakes() {
    assert_eq!(SweepConfig::parse("").unwrap(), SweepConfig::default());
    assert_eq!(SweepConfig::parse(" {} ").unwrap(), SweepConfig::default());
    assert_eq!(SweepConfig::default().call_deadline_ms(), 15_000);
    let quick = SweepConfig::parse(r#"{"call_deadline_ms": 5000}"#).unwrap();
    assert_eq!(quick.call_deadline_ms(), 5_000);
    let c = SweepConfig::parse(
        r#"{"deadlines": {"tasks": {"create_media_buy": 7200000}},
            "breaker": {"failure_threshold": 3},
            "retention": {"terminal_operation_ms": 864000000}}"#,
    )
    .unwrap();
    assert_eq!(c.deadlines.for_task_ms("create_media_buy"), 7_200_000);
    assert_eq!(c.breaker.failure_threshold, 3);
    assert_eq!(
        c.breaker.reset_timeout_ms, 60_000,
        "the rest keeps its default"
    );
    assert_eq!(c.retention.terminal_operation_ms, 864_000_000);
    for bad in [
        r#"{"breaker": {"failure_treshold": 3}}"#,
        r#"{"deadline": {}}"#,
        r#"{"breaker": {"failure_threshold": 0}}"#,
        r#"{"due": {"bucket_ms": 5000}}"#,
        r#"{"deadlines": {"tasks": {"sync_creatives": 0}}}"#,
        r#"{"retention": {"terminal_operation_ms": 3600000}}"#,
        r#"{"lease": {"min_hold_ms": 120000}}"#,
        r#"{"retention": {"nonce_ms": 1000}}"#,
        "not json",
    ] {
        let e = SweepConfig::parse(bad).unwrap_err();
        assert!(e.starts_with("sweep_config: "), "{bad}: {e}");
    }
}

#[test]
fn operations_made_by_the_sweep_take_their_deadline_from_the_config() {
    let mut w = World::new();
    w.config
        .deadlines
        .tasks
        .insert("update_media_buy".into(), 600_000);
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    w.request_cancel("op1");
    let seller = ScriptSeller::new(|tool, _| match tool {
        "get_task_status" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                       "result": {"media_buy_id": "mb_1"}})),
        "update_media_buy" => Ok(json!({"status": "submitted", "task_id": "task_cancel"})),
        other => panic!("unexpected {other}"),
    });
    w.run_for(60_000, &seller);
    let op = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    let child = op
        .cancel
        .unwrap()
        .follow_up
        .expect("the buy is canceled at the seller");
    let child = block_on(journal::load(&w.store, &w.clock, &child))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(child.deadline_at_ms - child.created_at_ms, 600_000);
}

/// Store calls of a tick that polls `due` due operations (the seller reports no change),
/// with `pending` operations in all, the rest filed for tomorrow.
fn tick_calls(pending: usize, due: usize, late_in_lease_slot: bool) -> u64 {
    let w = World::new();
    let seller =
        ScriptSeller::new(|_, args| Ok(json!({"task_id": args["task_id"], "status": "submitted"})));
    w.tick(&seller); // places the sweep cursor
    let later = w.clock.now_ms() + 86_400_000;
    for i in 0..pending - due {
        w.op_due_at(
            &format!("quiet{i}"),
            OperationStatus::Seller(TaskStatus::Submitted),
            later,
        );
    }
    for i in 0..due {
        w.op(
            &format!("due{i}"),
            OperationStatus::Seller(TaskStatus::Submitted),
        );
    }
    // The tick 30-90 s later, at 15 s (one lease slot per claim) or 45 s (two) into a
    // lease slot.
    let phase = if late_in_lease_slot { 45_000 } else { 15_000 };
    let slot = w.config.lease.slot_ms;
    let at = (w.clock.now_ms() + 30_000).div_ceil(slot) * slot + phase;
    w.advance(at - w.clock.now_ms());
    w.store.reset_counts();
    let report = w.tick(&seller);
    assert_eq!((report.due, report.touched), (due, due), "{report:?}");
    assert_eq!(seller.count("get_task_status"), due);
    w.store.total_ops()
}

/// What one more due poll adds to a tick: the tick's own calls (cursor, bucket counts, the
/// seller's record and tools, the report) are the same for 100 or 200 due operations.
fn store_calls_per_due_poll(pending: usize, late_in_lease_slot: bool) -> f64 {
    let (hundred, two_hundred) = (
        tick_calls(pending, 100, late_in_lease_slot),
        tick_calls(pending, 200, late_in_lease_slot),
    );
    (two_hundred - hundred) as f64 / 100.0
}

#[test]
fn a_due_poll_that_finds_nothing_new_costs_at_most_six_store_calls_whatever_is_pending() {
    let few = store_calls_per_due_poll(1_000, false);
    let many = store_calls_per_due_poll(10_000, false);
    let late = store_calls_per_due_poll(1_000, true);
    println!(
        "store calls per due poll: {few} (1,000 pending), {many} (10,000 pending), {late} (late in a lease slot)"
    );
    // The due hint, the snapshot (read once, for its lane and its work), the poll state,
    // then filing the next poll: the due slot, the hint, the poll state = 6. The sweep lease
    // covers the tick (no operation lease for a poll); the seller record, its tools and its
    // breaker are read once per tick (the breaker at most every few seconds), an unchanged
    // answer is neither journaled nor checked against the journal's head, and the bucket
    // counts are shared by all the bucket's hints.
    assert!(few <= 6.0, "{few}");
    assert!(late <= 6.0, "{late}");
    assert!(many <= few * 1.2, "{many} vs {few}");
}

#[test]
fn the_polling_tool_is_discovered_once_and_a_3_0_completion_gets_its_buy_by_context() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let polls = Cell::new(0);
    // An AdCP 3.0 seller: `tasks/get` only, and its answers carry no result.
    let seller = ScriptSeller::new(move |tool, args| match tool {
        "tasks/get" => {
            assert_eq!(args["task_id"], "task_op1");
            polls.set(polls.get() + 1);
            let status = if polls.get() < 2 {
                "working"
            } else {
                "completed"
            };
            Ok(json!({"task_id": "task_op1", "status": status}))
        }
        "get_media_buys" => {
            assert_eq!(args["context"]["operation_id"], "op1");
            Ok(
                json!({"media_buys": [{"media_buy_id": "mb_9", "status": "active",
                                      "context": {"operation_id": "op1"}}]}),
            )
        }
        other => panic!("unexpected tool {other}"),
    })
    .with_tools(&["create_media_buy", "tasks/get", "get_media_buys"]);
    w.run_for(30 * 60_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    let op = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.result.unwrap()["media_buy_id"], "mb_9");
    assert_eq!(seller.lists.get(), 1, "tools/list asked once, then cached");
    assert_eq!(seller.count("get_task_status"), 0);
}

#[test]
fn a_get_task_seller_with_its_own_statuses_converges_on_its_buy() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let polls = Cell::new(0);
    // A seller on an older SDK: `get_task` taking only `task_id` (it refuses any other
    // argument), and statuses outside AdCP's enum.
    let seller = ScriptSeller::new(move |tool, args| match tool {
        "get_task" => {
            let sent: Vec<&String> = args.as_object().unwrap().keys().collect();
            if sent != ["task_id"] {
                return Err(CallFailure::Seller(SellerError {
                    code: "VALIDATION_ERROR".into(),
                    message: "Unexpected keyword argument".into(),
                    recovery: crate::seller::port::Recovery::Correctable,
                    retry_after_s: None,
                    adcp: true,
                }));
            }
            polls.set(polls.get() + 1);
            Ok(match polls.get() {
                1 => json!({"task_id": "task_op1", "status": "requires_approval"}),
                _ => json!({"task_id": "task_op1", "status": "approved",
                            "result": {"media_buy_id": "mb_7", "status": "active"}}),
            })
        }
        other => panic!("unexpected tool {other}"),
    })
    .with_listed(vec![
        ListedTool {
            name: "list_tasks".into(),
            takes: Some(vec!["filters".into()]),
            returns: None,
        },
        ListedTool {
            name: "get_task".into(),
            takes: Some(vec!["task_id".into()]),
            returns: Some(vec!["task_id".into(), "status".into(), "result".into()]),
        },
    ]);
    w.run_for(30 * 60_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    let loaded = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap();
    assert_eq!(loaded.operation.result.unwrap()["media_buy_id"], "mb_7");
    // The seller's own words are kept on the entries they made.
    let history = block_on(journal::history(&w.store, &w.clock, "op1")).unwrap();
    let said: Vec<String> = history
        .iter()
        .filter_map(|(e, _)| match &e.kind {
            EntryKind::Observed { observation } => observation.seller_status.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["requires_approval", "approved"]);
}

#[test]
fn tasks_get_is_used_when_get_task_status_is_absent_and_none_falls_back_to_context() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let seller = ScriptSeller::new(|tool, _| match tool {
        "tasks_get" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                 "result": {"media_buy_id": "mb_1"}})),
        other => panic!("unexpected tool {other}"),
    })
    .with_tools(&["tasks_get", "tasks/get"]);
    w.run_for(5 * 60_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );

    let w = World::new();
    w.op("op2", OperationStatus::Seller(TaskStatus::Submitted));
    let seller = ScriptSeller::new(|tool, _| match tool {
        "get_media_buys" => Ok(json!({"media_buys": [{"media_buy_id": "mb_2",
                                      "context": {"operation_id": "op2"}}]})),
        other => panic!("unexpected tool {other}"),
    })
    .with_tools(&["create_media_buy", "get_media_buys"]);
    w.run_for(5 * 60_000, &seller);
    assert_eq!(
        w.status("op2"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
}

#[test]
fn a_polls_retry_after_delays_the_next_poll() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let seller = ScriptSeller::new(|_, _| {
        Err(CallFailure::Seller(SellerError {
            code: "RATE_LIMITED".into(),
            message: "slow down".into(),
            recovery: crate::seller::port::Recovery::Transient,
            retry_after_s: Some(600),
            adcp: true,
        }))
    });
    w.advance(30_000);
    w.tick(&seller);
    assert_eq!(seller.count("get_task_status"), 1);
    let state: PollState = block_on(get_json(&w.store, &keys::poll_state("op1")))
        .unwrap()
        .unwrap();
    assert!(state.next_at_ms >= w.clock.now_ms() + 600_000, "{state:?}");
    // Ticks inside the window do not poll.
    w.run_for(9 * 60_000, &seller);
    assert_eq!(seller.count("get_task_status"), 1);
    w.run_for(2 * 60_000, &seller);
    assert_eq!(seller.count("get_task_status"), 2);
}

#[test]
fn a_locally_canceled_task_is_reconciled_and_a_buy_it_produced_is_canceled() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    block_on(crate::testing::record(
        &w.store,
        &w.clock,
        "op1",
        EntryKind::Local {
            change: crate::model::operation::LocalChange::CancelRequested {
                reason: Some("pulled".into()),
                superseded_by: None,
            },
            by: None,
        },
    ))
    .unwrap();
    assert_eq!(w.status("op1"), OperationStatus::CanceledLocally);
    // The seller completes the task anyway; then accepts the cancel of its buy.
    let seller = ScriptSeller::new(|tool, args| match tool {
        "get_task_status" => Ok(json!({"task_id": "task_op1", "status": "completed",
                                       "result": {"media_buy_id": "mb_7"}})),
        "update_media_buy" => {
            assert_eq!(args["media_buy_id"], "mb_7");
            assert_eq!(args["canceled"], true);
            assert_eq!(args["cancellation_reason"], "pulled");
            Ok(json!({"media_buy_id": "mb_7", "status": "canceled"}))
        }
        other => panic!("unexpected tool {other}"),
    });
    w.run_for(10 * 60_000, &seller);
    // The seller's outcome replaced the local cancel, and the buy was canceled once.
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    assert_eq!(seller.count("update_media_buy"), 1);
    let op = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    let child = op.cancel.unwrap().follow_up.unwrap();
    assert_eq!(
        w.status(&child),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    w.run_for(10 * 60_000, &seller);
    assert_eq!(seller.count("update_media_buy"), 1);
}

#[test]
fn a_local_cancel_of_a_never_sent_operation_needs_no_reconciling() {
    let w = World::new();
    w.op("op1", OperationStatus::PendingDispatch);
    w.request_cancel("op1");
    let seller = ScriptSeller::new(|tool, _| panic!("nothing may be sent: {tool}"));
    w.run_for(30 * 60_000, &seller);
    assert_eq!(w.status("op1"), OperationStatus::CanceledLocally);
}

#[test]
fn a_store_failure_in_reconciliation_costs_one_task_and_the_epoch_runs_again() {
    let listing = |_: &str, _: &Value| {
        Ok(
            json!({"query_summary": {}, "pagination": {"has_more": false},
        "tasks": [{"task_id": "task_a", "task_type": "create_media_buy", "domain": "media-buy",
                   "status": "working", "created_at": "1970-01-01T00:00:00Z",
                   "updated_at": "1970-01-01T00:00:00Z"},
                  {"task_id": "task_b", "task_type": "create_media_buy", "domain": "media-buy",
                   "status": "working", "created_at": "1970-01-01T00:00:00Z",
                   "updated_at": "1970-01-01T00:00:00Z"}]}),
        )
    };
    let world = || {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        block_on(crate::records::seller::index(&w.store, "t1", "s1")).unwrap();
        w.store.reset_counts();
        w
    };
    let run = |w: &World, seller: &ScriptSeller| {
        block_on(crate::sweep::reconcile::run_if_due(
            Cx::new(&w.store, &w.clock, &NoLog),
            &w.entropy,
            &w.config,
            seller,
        ))
    };
    let adopted = |w: &World| {
        ["task_a", "task_b"]
            .iter()
            .filter(|t| {
                block_on(crate::foundation::store::Store::get(
                    &w.store,
                    &keys::task_of("t1", "s1", t),
                ))
                .unwrap()
                .is_some()
            })
            .count()
    };
    let calls = {
        let w = world();
        let seller = ScriptSeller::new(listing).with_tools(&["get_task_status", "list_tasks"]);
        assert!(!run(&w, &seller).unwrap().unwrap().failed);
        assert_eq!(adopted(&w), 2);
        w.store.total_ops()
    };
    let mut partial = 0;
    for n in 1..=calls {
        let w = world();
        let seller = ScriptSeller::new(listing).with_tools(&["get_task_status", "list_tasks"]);
        w.store.fail_nth_call(n);
        let first = run(&w, &seller);
        if let Ok(Some(r)) = &first {
            // Whatever else failed, the other task is still adopted in this run.
            partial += usize::from(r.failed);
            assert!(!r.failed || adopted(&w) >= 1 || r.listed == 0, "call {n}");
        }
        // Later ticks of the same epoch finish the job (the claim was given back).
        for _ in 0..2 {
            let _ = run(&w, &seller);
        }
        assert_eq!(adopted(&w), 2, "failing call {n} of {calls}");
        assert!(run(&w, &seller).unwrap().is_none(), "done for the epoch");
    }
    assert!(partial > 5, "{partial} runs cost part of their work");
}

#[test]
fn reconciliation_adopts_unknown_seller_tasks_and_repolls_unlisted_ones() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let op1 = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    block_on(crate::records::indexes::track(&w.store, &op1)).unwrap();
    block_on(crate::records::seller::index(&w.store, "t1", "s1")).unwrap();
    let seller = ScriptSeller::new(|tool, args| match tool {
        "list_tasks" => {
            assert_eq!(args["filters"]["statuses"][0], "submitted");
            Ok(
                json!({"query_summary": {}, "pagination": {"has_more": false},
                "tasks": [{"task_id": "task_new", "task_type": "create_media_buy",
                           "domain": "media-buy", "status": "working",
                           "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z"},
                          {"task_id": "task_sig", "task_type": "activate_signal",
                           "domain": "signals", "status": "working",
                           "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z"},
                          // Finished at the seller: nothing to track.
                          {"task_id": "task_done", "task_type": "create_media_buy",
                           "domain": "media-buy", "status": "completed",
                           "created_at": "1970-01-01T00:00:00Z", "updated_at": "1970-01-01T00:00:00Z"},
                          // Created a minute ago (the clock is at 00:16:40): maybe our own
                          // dispatch, still waiting for its answer.
                          {"task_id": "task_young", "task_type": "create_media_buy",
                           "domain": "media-buy", "status": "submitted",
                           "created_at": "1970-01-01T00:15:40Z", "updated_at": "1970-01-01T00:15:40Z"}]}),
            )
        }
        "get_task_status" => Ok(json!({"task_id": args["task_id"], "status": "completed",
                                       "result": {"media_buy_id": "mb"}})),
        other => panic!("unexpected tool {other}"),
    })
    .with_tools(&["get_task_status", "list_tasks"]);
    let run = || {
        block_on(crate::sweep::reconcile::run_if_due(
            Cx::new(&w.store, &w.clock, &NoLog),
            &w.entropy,
            &w.config,
            &seller,
        ))
        .unwrap()
    };
    let r = run().expect("first run of the epoch");
    assert_eq!(r.listed, 4);
    assert_eq!(
        r.adopted.len(),
        1,
        "only open tasks of types we run, old enough not to be a dispatch in flight"
    );
    assert_eq!(r.repolled, ["op1"], "tracked but no longer listed");
    assert!(
        run().is_none(),
        "one run per epoch, whichever replica claims it"
    );
    let adopted = r.adopted[0].clone();
    assert_eq!(
        w.status(&adopted),
        OperationStatus::Seller(TaskStatus::Working)
    );
    w.run_for(2 * 60_000, &seller);
    assert_eq!(
        w.status(&adopted),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    // Adopted once: a later epoch sees the task as tracked, and adopts the young task that
    // no dispatch claimed meanwhile.
    w.advance(crate::sweep::reconcile::EPOCH_MS);
    let r = run().unwrap();
    assert_eq!(r.adopted.len(), 1, "{:?}", r.adopted);
    assert_ne!(r.adopted[0], adopted);
}

#[test]
fn a_submitted_operation_without_webhook_completes_by_polling_alone() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let polls = Cell::new(0);
    let seller = ScriptSeller::new(move |tool, args| {
        assert_eq!(tool, "get_task_status");
        assert_eq!(args["include_result"], json!(true));
        polls.set(polls.get() + 1);
        Ok(if polls.get() < 3 {
            json!({"task_id": "task_op1", "status": "submitted"})
        } else {
            json!({"task_id": "task_op1", "status": "completed", "result": {"media_buy_id": "mb_1"}})
        })
    });
    w.run_for(3_600_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    assert_eq!(
        seller.count("get_task_status"),
        3,
        "polling stops at the terminal status"
    );
    let op = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.result.unwrap()["media_buy_id"], "mb_1");
}

#[test]
fn a_seller_outage_opens_the_breaker_and_the_operation_completes_after_it() {
    let w = World::new();
    for i in 0..3 {
        w.op(
            &format!("op{i}"),
            OperationStatus::Seller(TaskStatus::Submitted),
        );
    }
    let down = std::rc::Rc::new(Cell::new(true));
    let d = down.clone();
    let seller = ScriptSeller::new(move |_, args| {
        if d.get() {
            Err(CallFailure::Transport(TransportError::Connect(
                "refused".into(),
            )))
        } else {
            Ok(json!({"task_id": args["task_id"], "status": "completed", "result": {}}))
        }
    });
    w.run_for(30 * 60_000, &seller);
    let during = seller.calls.borrow().len();
    let view = block_on(
        crate::schedule::breaker::Breaker::new(&w.config.breaker, "t1", "s1")
            .state(&w.store, w.clock.now_ms()),
    )
    .unwrap();
    assert_ne!(format!("{:?}", view.state), "Closed", "breaker opened");
    // With the breaker open, calls are deferred, not hammered: far fewer than ticks x ops.
    assert!(during < 30, "{during} calls during the outage");
    for i in 0..3 {
        assert_eq!(
            w.status(&format!("op{i}")),
            OperationStatus::Seller(TaskStatus::Submitted)
        );
    }
    down.set(false);
    w.run_for(60 * 60_000, &seller);
    for i in 0..3 {
        assert_eq!(
            w.status(&format!("op{i}")),
            OperationStatus::Seller(TaskStatus::Completed),
            "op{i}"
        );
    }
}

#[test]
fn a_stored_but_undispatched_operation_is_redispatched_with_the_same_key() {
    let w = World::new();
    w.op("op1", OperationStatus::PendingDispatch);
    let seller = ScriptSeller::new(|tool, _| match tool {
        "create_media_buy" => {
            Ok(json!({"status": "completed", "media_buy_id": "mb_1", "packages": []}))
        }
        other => panic!("unexpected {other}"),
    });
    w.run_for(120_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    let calls = seller.calls.borrow();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].1["idempotency_key"], "k-0123456789abcdef");
}

#[test]
fn exhausted_redispatch_looks_the_buy_up_before_failing() {
    // found: completed with the buy; absent: failed; a partial answer (errors[]) proves
    // nothing: still pending, looked up again later, never failed.
    for case in ["found", "absent", "partial"] {
        let w = World::new();
        w.op("op1", OperationStatus::PendingDispatch);
        let seller = ScriptSeller::new(move |tool, args| match tool {
            "create_media_buy" => seller_busy(),
            "get_media_buys" => Ok(match case {
                "found" => json!({"media_buys": [{"media_buy_id": "mb_9",
                    "context": {"operation_id": args["context"]["operation_id"]}}]}),
                "absent" => json!({"media_buys": []}),
                _ => json!({"media_buys": [], "errors": [{"code": "ACCOUNT_NOT_FOUND",
                    "message": "account unavailable"}]}),
            }),
            other => panic!("unexpected {other}"),
        });
        w.run_for(6 * 3_600_000, &seller);
        let expect = match case {
            "found" => OperationStatus::Seller(TaskStatus::Completed),
            "absent" => OperationStatus::Seller(TaskStatus::Failed),
            _ => OperationStatus::PendingDispatch,
        };
        assert_eq!(w.status("op1"), expect, "{case}");
        if case == "partial" {
            assert!(seller.count("get_media_buys") > 1, "asked again");
        } else {
            assert_eq!(seller.count("get_media_buys"), 1, "{case}");
        }
        assert!(
            seller.count("create_media_buy") as u32
                <= crate::lifecycle::dispatch::MAX_DISPATCH_ATTEMPTS
        );
    }
}

#[test]
fn a_rescheduling_cut_short_by_a_failed_write_never_orphans_the_operation() {
    for failing_call in 1..=3 {
        let w = World::new();
        w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
        let later = PollState {
            next_at_ms: w.clock.now_ms() + 120_000,
            ..Default::default()
        };
        w.store.fail_nth_call(failing_call);
        let filed = block_on(schedule_at(&w.store, &w.clock, &w.config.due, "op1", later));
        assert!(filed.is_err(), "call {failing_call} failed");
        let seller = ScriptSeller::new(|_, _| {
            Ok(json!({"task_id": "task_op1", "status": "completed", "result": {}}))
        });
        w.run_for(10 * 60_000, &seller);
        assert_eq!(
            w.status("op1"),
            OperationStatus::Seller(TaskStatus::Completed),
            "failing call {failing_call}"
        );
    }
}

#[test]
fn the_look_up_by_context_reads_every_status_and_every_page() {
    let w = World::new();
    w.op("op1", OperationStatus::PendingDispatch);
    let seller = ScriptSeller::new(|tool, args| match tool {
        "create_media_buy" => seller_busy(),
        "get_media_buys" => {
            let statuses = args["status_filter"].as_array().unwrap();
            assert!(statuses.contains(&json!("pending_start")), "{args}");
            assert_eq!(statuses.len(), 7);
            Ok(match args["pagination"]["cursor"].as_str() {
                None => json!({"media_buys": [{"media_buy_id": "mb_other",
                               "context": {"operation_id": "op_other"}}],
                               "pagination": {"has_more": true, "cursor": "p2"}}),
                Some(c) => {
                    assert_eq!(c, "p2");
                    json!({"media_buys": [{"media_buy_id": "mb_7", "status": "pending_start",
                           "context": {"operation_id": "op1"}}],
                           "pagination": {"has_more": false}})
                }
            })
        }
        other => panic!("unexpected {other}"),
    });
    w.run_for(6 * 3_600_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed),
        "a pending buy on the second page is found, not reported failed"
    );
    assert_eq!(seller.count("get_media_buys"), 2);
    let op = block_on(journal::load(&w.store, &w.clock, "op1"))
        .unwrap()
        .unwrap()
        .operation;
    assert_eq!(op.result.unwrap()["media_buy_id"], "mb_7");
}

#[test]
fn an_operation_never_sent_by_its_deadline_times_out_unsent_and_is_looked_up() {
    let w = World::new();
    let seller = ScriptSeller::new(|tool, _| match tool {
        "get_media_buys" => Ok(json!({"media_buys": []})),
        other => panic!("nothing is sent past the deadline: {other}"),
    });
    w.tick(&seller); // places the sweep cursor
    // Next due after its 24 h deadline (a redispatch backed off that far, say).
    let late = w.clock.now_ms() + 25 * 3_600_000;
    w.op_due_at("op1", OperationStatus::PendingDispatch, late);
    w.advance(25 * 3_600_000);
    w.run_for(2 * 3_600_000, &seller);
    assert_eq!(w.status("op1"), OperationStatus::TimedOut);
    assert!(
        seller.count("get_media_buys") >= 1,
        "looked up while timed out"
    );
}

#[test]
fn a_deadline_times_out_and_a_later_seller_outcome_replaces_it() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Submitted));
    let done = std::rc::Rc::new(Cell::new(false));
    let d = done.clone();
    let seller = ScriptSeller::new(move |_, _| {
        Ok(if d.get() {
            json!({"task_id": "task_op1", "status": "completed", "result": {"media_buy_id": "mb_late"}})
        } else {
            json!({"task_id": "task_op1", "status": "submitted"})
        })
    });
    w.run_for(25 * 3_600_000, &seller);
    assert_eq!(w.status("op1"), OperationStatus::TimedOut);
    done.set(true);
    w.run_for(2 * 3_600_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
    let history = block_on(journal::history(&w.store, &w.clock, "op1")).unwrap();
    assert!(
        history
            .iter()
            .any(|(_, e)| matches!(e, journal::Effect::Overrode(_)))
    );
}

#[test]
fn two_overlapping_ticks_never_poll_the_same_operation_twice() {
    let w = World::new();
    for i in 0..20 {
        w.op(
            &format!("op{i}"),
            OperationStatus::Seller(TaskStatus::Working),
        );
    }
    w.advance(30_000);
    let seller =
        ScriptSeller::new(|_, args| Ok(json!({"task_id": args["task_id"], "status": "working"})));
    let env = SweepEnv {
        store: &w.store,
        clock: &w.clock,
        entropy: &w.entropy,
        log: &NoLog,
        sealing: &w.sealing,
        calls: &seller,
        transport: &w.transport,
        config: &w.config,
    };
    let (a, b) = block_on(async { futures::join!(tick(&env, "a", 0), tick(&env, "b", 0)) });
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.touched + b.touched, 20, "{a:?} {b:?}");
    let mut polled: Vec<String> = seller
        .calls
        .borrow()
        .iter()
        .map(|(_, args)| args["task_id"].as_str().unwrap().to_string())
        .collect();
    polled.sort();
    polled.dedup();
    assert_eq!(
        polled.len(),
        seller.calls.borrow().len(),
        "an operation was polled twice"
    );
}

/// A tick that finds the sweep lease held by a running tick ends at once; one held by a
/// claimant that never ran (died, or lost its claim's answer) does not stop the sweep: the
/// tick works each operation under its own lease instead.
#[test]
fn a_sweep_lease_left_by_a_dead_tick_does_not_stop_the_sweep() {
    let w = World::new();
    w.op("op1", OperationStatus::Seller(TaskStatus::Working));
    w.advance(30_000);
    let seller =
        ScriptSeller::new(|_, args| Ok(json!({"task_id": args["task_id"], "status": "working"})));
    let now = w.clock.now_ms();
    let dead = block_on(crate::schedule::lease::claim_sweep(
        &w.store,
        &w.config.lease,
        now,
    ));
    assert!(matches!(dead, Ok(crate::schedule::lease::Claim::Held(_))));
    // A running holder announced itself a second ago: this tick stands aside.
    block_on(crate::foundation::store::set_decimal(
        &w.store,
        keys::SWEEP_HOLDER,
        now - 1_000,
    ))
    .unwrap();
    let report = w.tick(&seller);
    assert!(report.overlapped && report.touched == 0, "{report:?}");
    // The holder finished (or never ran): the work is done, each operation leased.
    block_on(crate::foundation::store::set_decimal(
        &w.store,
        keys::SWEEP_HOLDER,
        0,
    ))
    .unwrap();
    let report = w.tick(&seller);
    assert!(!report.overlapped && report.touched == 1, "{report:?}");
    assert_eq!(seller.count("get_task_status"), 1);
}

/// A store failure while one due operation is worked costs that operation (deferred), never
/// the rest of the tick: on a store that fails now and then, every tick still gets through.
#[test]
fn a_store_failure_in_one_due_operation_does_not_end_the_tick() {
    let seller = || {
        ScriptSeller::new(|_, args| Ok(json!({"task_id": args["task_id"], "status": "working"})))
    };
    let world = |ops: usize| {
        let w = World::new();
        for i in 0..ops {
            let id = format!("op{i}");
            w.op_due_at(
                &id,
                OperationStatus::Seller(TaskStatus::Submitted),
                w.clock.now_ms(),
            );
        }
        w.advance(30_000);
        w.store.reset_counts();
        w
    };
    let calls_of_tick = |ops: usize| {
        let w = world(ops);
        w.tick(&seller());
        w.store.total_ops()
    };
    let (empty, full) = (calls_of_tick(0), calls_of_tick(3));
    assert!(
        full > empty + 20,
        "{full} calls with 3 due operations, {empty} without"
    );
    // How many single faults fail the whole tick, with `ops` due operations.
    let failing = |ops: usize, calls: u64| {
        let mut failed = 0;
        for n in 1..=calls {
            let w = world(ops);
            w.store.fail_nth_call(n);
            let seller = seller();
            let env = SweepEnv {
                store: &w.store,
                clock: &w.clock,
                entropy: &w.entropy,
                log: &NoLog,
                sealing: &w.sealing,
                calls: &seller,
                transport: &w.transport,
                config: &w.config,
            };
            match block_on(tick(&env, "test", w.clock.now_ms())) {
                Err(_) => failed += 1,
                // Every hint handed out but the one that failed is worked; a failure while
                // reading the index hands out fewer (the rest is read again next tick).
                Ok(report) => assert!(
                    report.touched + 1 >= report.due && (report.due == ops || report.backlog),
                    "fault at call {n}: {report:?}"
                ),
            }
        }
        failed
    };
    // Only the tick's own bookkeeping (the due index, the format, reconciliation, the
    // report) may fail it: one index write per worked hint more than an empty tick, never
    // the hints' own calls (lease, poll state, operation, seller call, rescheduling).
    let (without, with) = (failing(0, empty), failing(3, full));
    assert!(
        with <= without + 3,
        "{with} faults fail a tick of 3 operations, {without} an empty one"
    );
}

/// A seller whose creates time out until they come under another key, and whose
/// `get_media_buys` finds the buy or not; records when each create came and its key.
fn forgetful_seller(
    now: std::rc::Rc<Cell<u64>>,
    creates: std::rc::Rc<RefCell<Vec<(u64, String)>>>,
    find: bool,
    first_answer: fn() -> Result<Value, CallFailure>,
) -> ScriptSeller {
    ScriptSeller::new(move |tool, args| match tool {
        "create_media_buy" => {
            let key = args["idempotency_key"].as_str().unwrap().to_string();
            creates.borrow_mut().push((now.get(), key.clone()));
            if key == "k-0123456789abcdef" {
                first_answer()
            } else {
                Ok(json!({"status": "completed", "media_buy_id": "mb_new", "packages": []}))
            }
        }
        "get_media_buys" if find => Ok(json!({"media_buys": [{"media_buy_id": "mb_9",
            "context": {"operation_id": args["context"]["operation_id"]}}]})),
        "get_media_buys" => Ok(json!({"media_buys": []})),
        other => panic!("unexpected {other}"),
    })
}

fn timed_out() -> Result<Value, CallFailure> {
    Err(CallFailure::Transport(TransportError::Timeout(
        "no answer".into(),
    )))
}

/// Ticks every 30 s for `ms`, telling the seller the time.
fn run_telling(w: &World, now: &Cell<u64>, ms: u64, seller: &ScriptSeller) {
    let end = w.clock.now_ms() + ms;
    while w.clock.now_ms() < end {
        w.advance(30_000);
        now.set(w.clock.now_ms());
        w.tick(seller);
    }
}

fn entries(w: &World, id: &str) -> Vec<EntryKind> {
    let loaded = block_on(journal::load(&w.store, &w.clock, id))
        .unwrap()
        .unwrap();
    (1..=loaded.operation.version)
        .filter_map(|seq| {
            let e: Option<journal::Entry> =
                block_on(get_json(&w.store, &keys::operation_entry(id, seq))).unwrap();
            e.map(|e| e.kind)
        })
        .collect()
}

#[test]
fn no_resend_under_a_key_past_the_sellers_replay_window_and_a_look_up_decides() {
    for find in [true, false] {
        let w = World::new();
        w.op("op1", OperationStatus::PendingDispatch);
        let start = w.clock.now_ms();
        let now = std::rc::Rc::new(Cell::new(start));
        let creates = std::rc::Rc::new(RefCell::new(Vec::new()));
        let seller = forgetful_seller(now.clone(), creates.clone(), find, timed_out);
        run_telling(&w, &now, 3 * 3_600_000, &seller);
        // The seller declares no window: the spec's shortest, 1 h, less the margin.
        let end = start + 3_600_000 - crate::sweep::resend::margin_ms(3_600_000);
        let creates = creates.borrow();
        let first_key: Vec<u64> = creates
            .iter()
            .filter(|(_, k)| k == "k-0123456789abcdef")
            .map(|(at, _)| *at)
            .collect();
        assert!(
            first_key.len() > 3,
            "resent inside the window: {first_key:?}"
        );
        assert!(
            first_key.iter().all(|at| *at < end),
            "a resend after the window: {first_key:?} (window ends {end})"
        );
        assert_eq!(seller.count("get_media_buys"), 1, "looked up once");
        let renewed = entries(&w, "op1").into_iter().any(|k| {
            matches!(
                k,
                EntryKind::Local {
                    change: crate::model::operation::LocalChange::KeyRenewed { .. },
                    ..
                }
            )
        });
        let result = block_on(journal::load(&w.store, &w.clock, "op1"))
            .unwrap()
            .unwrap()
            .operation;
        assert_eq!(
            result.status,
            OperationStatus::Seller(TaskStatus::Completed)
        );
        if find {
            assert!(
                !renewed && creates.len() == first_key.len(),
                "found: never sent anew"
            );
            assert_eq!(result.result.unwrap()["media_buy_id"], "mb_9");
        } else {
            assert!(renewed, "the renewal is in the history");
            assert_eq!(
                creates.len(),
                first_key.len() + 1,
                "sent anew once, new key"
            );
            assert_eq!(result.result.unwrap()["media_buy_id"], "mb_new");
        }
    }
}

#[test]
fn idempotency_expired_is_not_a_failure_the_buy_is_looked_up_first() {
    let expired = || {
        Err(CallFailure::Seller(SellerError {
            code: "IDEMPOTENCY_EXPIRED".into(),
            message: "key no longer known".into(),
            recovery: crate::seller::port::Recovery::Correctable,
            retry_after_s: None,
            adcp: true,
        }))
    };
    let w = World::new();
    w.op("op1", OperationStatus::PendingDispatch);
    let now = std::rc::Rc::new(Cell::new(w.clock.now_ms()));
    let creates = std::rc::Rc::new(RefCell::new(Vec::new()));
    let seller = forgetful_seller(now.clone(), creates.clone(), false, expired);
    run_telling(&w, &now, 30 * 60_000, &seller);
    assert_eq!(seller.count("get_media_buys"), 1);
    let keys: Vec<String> = creates.borrow().iter().map(|(_, k)| k.clone()).collect();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert_ne!(
        keys[0], keys[1],
        "sent anew under a fresh key once proven absent"
    );
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed)
    );
}

#[test]
fn a_task_without_a_natural_key_is_never_sent_under_a_fresh_key_but_left_unknown() {
    let w = World::new();
    let mut op = sample("op1");
    op.task = crate::model::task::TaskKind::UpdateMediaBuy;
    op.deadline_at_ms = w.clock.now_ms() + 86_400_000;
    block_on(async {
        crate::records::seller::put(&w.store, &crate::testing::sample_seller())
            .await
            .unwrap();
        journal::create(&w.store, &w.clock, &op).await.unwrap();
        let state = PollState {
            next_at_ms: w.clock.now_ms(),
            ..Default::default()
        };
        schedule_at(&w.store, &w.clock, &w.config.due, "op1", state)
            .await
            .unwrap();
    });
    let seller = ScriptSeller::new(|tool, _| match tool {
        "update_media_buy" => timed_out(),
        other => panic!("unexpected {other}"),
    });
    w.run_for(3 * 3_600_000, &seller);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Unknown)
    );
    let sent: Vec<Value> = seller
        .calls
        .borrow()
        .iter()
        .map(|(_, a)| a.clone())
        .collect();
    assert!(
        sent.iter()
            .all(|a| a["idempotency_key"] == "k-0123456789abcdef")
    );
    assert!(
        sent.len() <= 6,
        "{} sends: none after the window",
        sent.len()
    );
}

#[test]
fn a_proxys_refusal_after_an_unknown_outcome_is_no_verdict_the_buy_is_looked_up() {
    let answers = Cell::new(0);
    let seller = ScriptSeller::new(move |tool, args| match tool {
        "create_media_buy" => {
            answers.set(answers.get() + 1);
            if answers.get() == 1 {
                timed_out()
            } else {
                // A WAF in front of the seller: HTTP 403 without an AdCP error.
                Err(CallFailure::Seller(SellerError {
                    code: "AUTH_INVALID".into(),
                    message: "seller answered HTTP 403".into(),
                    recovery: crate::seller::port::Recovery::Terminal,
                    retry_after_s: None,
                    adcp: false,
                }))
            }
        }
        "get_media_buys" => Ok(json!({"media_buys": [{"media_buy_id": "mb_3",
            "context": {"operation_id": args["context"]["operation_id"]}}]})),
        other => panic!("unexpected {other}"),
    });
    let w = World::new();
    w.op("op1", OperationStatus::PendingDispatch);
    w.run_for(10 * 60_000, &seller);
    assert_eq!(seller.count("create_media_buy"), 2);
    assert_eq!(seller.count("get_media_buys"), 1);
    assert_eq!(
        w.status("op1"),
        OperationStatus::Seller(TaskStatus::Completed),
        "the buy the look-up found, not a failure"
    );
}
