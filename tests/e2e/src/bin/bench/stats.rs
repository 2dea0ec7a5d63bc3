//! Driving requests at a fixed concurrency and summarising their latencies.

use futures::StreamExt;
use spin_test_host::{KvCounts, KvOp};
use std::future::Future;
use std::time::{Duration, Instant};

/// Throughput and latency of one run.
pub struct Run {
    pub count: usize,
    pub per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
}

impl Run {
    pub fn p50_ms(&self) -> f64 {
        self.p50.as_secs_f64() * 1e3
    }

    pub fn p99_ms(&self) -> f64 {
        self.p99.as_secs_f64() * 1e3
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Runs `send` on every item with at most `concurrency` in flight (a new one starts as soon
/// as one finishes) and times each from the moment it starts.
pub async fn drive<T, F, Fut>(items: Vec<T>, concurrency: usize, send: F) -> Run
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    let count = items.len();
    let started = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(items)
        .map(|item| {
            let fut = send(item);
            async move {
                let t0 = Instant::now();
                fut.await;
                t0.elapsed()
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    let elapsed = started.elapsed();
    latencies.sort();
    Run {
        count,
        per_s: count as f64 / elapsed.as_secs_f64(),
        p50: percentile(&latencies, 0.5),
        p99: percentile(&latencies, 0.99),
    }
}

/// `get 12, set 5, …` for the kinds of key-value call that occurred.
pub fn breakdown(kv: &KvCounts) -> String {
    kv.0.iter()
        .filter(|(op, _)| **op != KvOp::Open)
        .map(|(op, n)| format!("{op:?} {n}").to_lowercase())
        .collect::<Vec<_>>()
        .join(", ")
}
