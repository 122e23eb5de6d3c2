# Shared by bench/depth, bench/heat and bench/cost (sourced, not run): installs DynamoDB Local if missing,
# builds the bench binary in release mode, starts a private, in-memory DynamoDB Local on 127.0.0.1 and
# stops exactly that one on exit, then runs `zaqar-bench <name> "$@"`.
# Environment: <NAME>_DYNAMODB_PORT (each benchmark has its own default), BENCH_NO_BUILD=1 (run the binary
# as built), CARGO_TARGET_DIR (as cargo); BENCH_COMMAND is the command line the records show.
run_rust_bench() {
  local name=$1 port=$2
  shift 2
  local repo
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  cd "$repo"
  local target=${CARGO_TARGET_DIR:-$repo/target}
  SKIP_PYTHON=1 localstack/install >&2
  if [ "${BENCH_NO_BUILD:-0}" != 1 ]; then
    echo "$name: building zaqar-bench (release)" >&2
    cargo build --quiet --release -p zaqar-bench >&2
  fi
  export RUN_DIR="$repo/bench/.run-$name" DYNAMODB_PORT=$port
  localstack/dynamodb start >&2
  trap 'localstack/dynamodb stop >&2' EXIT
  BENCH_COMMAND=${BENCH_COMMAND:-bench/$name${*:+ $*}} ZAQAR_BENCH_ENDPOINT="http://127.0.0.1:$port" \
    "$target/release/zaqar-bench" "$name" "$@"
}
