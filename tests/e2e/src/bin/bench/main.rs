//! Benchmarks on the test host with the real components (not part of the test run):
//! webhook ingest against the platform floor, operation creation, and sweep tick cost.
//!
//! `scripts/bench.sh` runs it in release; `cargo run --release -p e2e --bin bench -- --help`
//! lists the knobs.

mod app;
mod create;
mod ingest;
mod seed;
mod stats;
mod sweep;

use ingest::{Floor, Ingest, Mode};

struct Args {
    webhooks: usize,
    /// Ingest concurrency levels.
    concurrency: Vec<usize>,
    creates: usize,
    /// Pending operations per sweep run.
    pending: Vec<usize>,
    due: usize,
    sections: Vec<String>,
}

fn args() -> Args {
    let mut a = Args {
        webhooks: 500,
        concurrency: vec![1, 16, 64],
        creates: 300,
        pending: vec![1_000, 10_000],
        due: 100,
        sections: vec!["ingest".into(), "create".into(), "sweep".into()],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_default();
        match flag.as_str() {
            "--webhooks" => a.webhooks = value().parse().expect("--webhooks N"),
            "--concurrency" => {
                a.concurrency = value()
                    .split(',')
                    .map(|c| c.parse().expect("--concurrency 1,16,64"))
                    .collect()
            }
            "--pending" => {
                a.pending = value()
                    .split(',')
                    .map(|c| c.parse().expect("--pending 1000,10000"))
                    .collect()
            }
            "--due" => a.due = value().parse().expect("--due N"),
            "--creates" => a.creates = value().parse().expect("--creates N"),
            "--only" => a.sections = value().split(',').map(str::to_string).collect(),
            _ => {
                println!(
                    "bench [--webhooks N per row (500)] [--concurrency 1,16,64] [--creates N per row (300)] \
                     [--pending 1000,10000] [--due 100] [--only ingest,create,sweep]"
                );
                std::process::exit(2);
            }
        }
    }
    a
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let a = args();
    println!(
        "{} cores, {}; load average at start: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        meminfo(),
        loadavg()
    );
    if a.sections.iter().any(|s| s == "ingest") {
        ingest(a.webhooks, &a.concurrency).await;
    }
    if a.sections.iter().any(|s| s == "create") {
        create(a.creates).await;
    }
    if a.sections.iter().any(|s| s == "sweep") {
        sweep(&a.pending, a.due).await;
    }
    println!("\nload average at the end: {}", loadavg());
}

/// The 1, 5 and 15 minute load averages: the machine may be shared.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn meminfo() -> String {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let kb: u64 = m.lines().next()?.split_whitespace().nth(1)?.parse().ok()?;
            Some(format!("{} GiB", kb / (1024 * 1024)))
        })
        .unwrap_or_else(|| "memory unknown".into())
}

/// Each concurrency level runs the floor and then every mode, back to back, so each ratio
/// compares runs made under the same load on the machine.
async fn ingest(n: usize, levels: &[usize]) {
    let mut floor = Floor::start().await;
    let mut modes = Vec::new();
    for mode in Mode::ALL {
        let mut bench = Ingest::start(mode, n * levels.len() + 1).await;
        let kv = bench.kv_of_one().await;
        modes.push((bench, kv));
    }
    println!("\n## Webhook ingest ({n} webhooks per row, each completing a different operation)\n");
    println!(
        "| component | concurrency | req/s | p50 ms | p99 ms | KV calls/request (alone; in the run) | req/s vs floor |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &c in levels {
        let f = floor.run(n, c).await;
        println!(
            "| floor (1 KV set) | {c} | {:.0} | {:.1} | {:.1} | 1; {:.2} | 1 |",
            f.run.per_s,
            f.run.p50_ms(),
            f.run.p99_ms(),
            f.kv_per_request
        );
        for (bench, kv) in &mut modes {
            let r = bench.run(n, c).await;
            println!(
                "| {} | {c} | {:.0} | {:.1} | {:.1} | {kv}; {:.2} | {:.2} |",
                bench.mode.name(),
                r.run.per_s,
                r.run.p50_ms(),
                r.run.p99_ms(),
                r.kv_per_request,
                r.run.per_s / f.run.per_s
            );
        }
    }
}

async fn create(n: usize) {
    let app = app::App::start("hmac").await;
    println!("\n## Operation creation ({n} per row, local seller completing synchronously)\n");
    println!(
        "| concurrency | req/s | p50 ms | p99 ms | KV calls/operation | seller calls/operation |"
    );
    println!("|---|---|---|---|---|---|");
    for c in [1, 16] {
        let r = create::run(&app, n, c).await;
        println!(
            "| {c} | {:.0} | {:.1} | {:.1} | {:.1} | {:.2} |",
            r.run.per_s,
            r.run.p50_ms(),
            r.run.p99_ms(),
            r.kv_per_op,
            r.seller_calls_per_op
        );
    }
}

async fn sweep(sizes: &[usize], due: usize) {
    println!("\n## Sweep tick ({due} due; the rest pending, not yet due)\n");
    println!(
        "| pending | seeding s (ops/s) | idle tick ms (KV) | tick ms | KV calls in tick | KV per due op (tick - idle) | KV by kind |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &pending in sizes {
        let r = sweep::run(pending, due).await;
        let (idle, busy) = (r.idle.kv.total(), r.busy.kv.total());
        println!(
            "| {} | {:.0} ({:.0}) | {:.1} ({idle}) | {:.0} | {busy} | {:.1} | {} |",
            r.pending,
            r.seeding.as_secs_f64(),
            r.pending as f64 / r.seeding.as_secs_f64(),
            r.idle.wall.as_secs_f64() * 1e3,
            r.busy.wall.as_secs_f64() * 1e3,
            (busy - idle) as f64 / r.due as f64,
            sweep::breakdown(&r.busy.kv),
        );
    }
}
