//! `zaqar-bench`: the benchmarks that drive the real handlers against DynamoDB Local and print numbers.
//! Run them through the scripts (`bench/depth`, `bench/heat`, `bench/cost`), which build this binary in
//! release mode, start a private DynamoDB Local and stop it afterwards. Benchmarks print; they never assert
//! on timing (the test suite does not run them).

mod cost;
mod depth;
mod heat;
mod meter;
mod report;
mod setup;

const USAGE: &str = "usage: zaqar-bench depth [--depths 0,10000,100000] [--samples N] [--fill-budget N] [--shards N] \
[--no-expired] [--quick] [--record FILE]
       zaqar-bench heat [--rate R] [--shards N] [--producers P] [--rounds N] [--backlog N] [--concurrency C] \
[--containers N] [--record FILE]
       zaqar-bench cost [--samples N] [--quick] [--record FILE]
DynamoDB Local endpoint: ZAQAR_BENCH_ENDPOINT (default http://127.0.0.1:8000).";

// One thread, as every function runs (`zaqar::app::lambda_runtime`): the CPU measured is what a Lambda pays.
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let fail = |e: String| -> ! {
        eprintln!("{e}\n{USAGE}");
        std::process::exit(2)
    };
    match cmd.as_str() {
        "depth" => depth::run(depth::Options::parse(rest).unwrap_or_else(|e| fail(e))).await,
        "heat" => heat::run(heat::Options::parse(rest).unwrap_or_else(|e| fail(e))).await,
        "cost" => cost::run(cost::Options::parse(rest).unwrap_or_else(|e| fail(e))).await,
        _ => fail(format!("unknown benchmark {cmd}")),
    }
}
