//! `invalidator-load`: our load generator. Keep-alive hyper clients, HDR histograms, a
//! progress bar on stderr, a summary on stdout (and JSON with `--json`).
//!
//! Scenarios:
//! * `keys`: C connections driving `POST /invalidate/key` as fast as the server answers.
//! * `fanout`: N WebSocket subscribers on one interest, a publisher, latency to the last one.
//! * `chaos`: kill -9, PostgreSQL and NATS restarts, a node killed for good, against the real
//!   binary; counts acknowledged invalidations against audit rows (`chaos.rs`).
//! * `bench-fanout`, `bench-patterns`: the comparison with Redis pub/sub and nats-server
//!   (`bench.rs`, clients in `peers/`), driven by `scripts/bench-peers.sh`.

mod bench;
mod chaos;
mod common;
mod fanout;
mod keys;
mod peers;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "invalidator-load", about = "Load generator for invalidator")]
struct Cli {
    /// Tokio worker threads of the generator (it shares the machine with the server).
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Drive POST /invalidate/key with C keep-alive connections.
    Keys(keys::KeysArgs),
    /// N WebSocket subscribers, one publisher: publish-to-last-delivery latency.
    Fanout(fanout::FanoutArgs),
    /// Fan-out against any system (ours, redis, nats, nats-ws): latency phase, then max rate.
    BenchFanout(bench::FanoutArgs),
    /// S subscribers holding M prefix patterns, each publish reaching one: any system.
    BenchPatterns(bench::PatternsArgs),
    /// Faults against the real binary; exits non-zero on any lost or duplicated record.
    Chaos(chaos::ChaosArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("invalidator-load: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.scenario {
            Scenario::Keys(a) => keys::run(a).await,
            Scenario::Fanout(a) => fanout::run(a).await,
            Scenario::BenchFanout(a) => bench::run_fanout(a).await,
            Scenario::BenchPatterns(a) => bench::run_patterns(a).await,
            Scenario::Chaos(a) => chaos::run(a).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("invalidator-load: {e}");
            std::process::ExitCode::from(1)
        }
    }
}
