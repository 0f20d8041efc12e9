#!/usr/bin/env bash
# Side-by-side load test, measured as users will: each server in its own process, wrk in another.
#
#   benches/peers/run.sh                    # ours, prefork, tiny, hyper; -c4 and -c32; 3 rounds x 4 s
#   BURN=1 benches/peers/run.sh             # the same beside one busy loop per core
#   ROUNDS=5 SECS=10 CONNS=4,16,32 SERVERS="ours hyper" WORKERS=2 benches/peers/run.sh
#   POST=1 benches/peers/run.sh             # POST /hello_world instead of the GET
#
# Prints the machine, then per connection count: req/s, p50/p99 latency and server CPU µs per request
# (utime+stime of the server's process tree from /proc, over wrk's count), medians of alternated
# rounds, and the ratios against hyper + tokio. Every server runs the same handler (src/lib.rs, the
# seed app) with WORKERS threads (default 2; prefork: PROCESSES x THREADS, default 2 x 2), no access log.
# Everything listens on 127.0.0.1; every process started here is ended on exit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-4}"
CONNS="${CONNS:-4,32}"
WORKERS="${WORKERS:-2}"
PROCESSES="${PROCESSES:-2}"
THREADS="${THREADS:-2}"
SERVERS="${SERVERS:-ours prefork tiny hyper}"
BASE_PORT="${BASE_PORT:-18400}"
BURN="${BURN:-0}"
POST="${POST:-0}"

# The driver: wrk plus CPU from /proc, as ../shared/tools/cpu_per_req.py (beside the repository,
# when there is one) does, with p50/p99 added; it lives here so a clone of the repository has it.
driver="$here/load.py"
[[ -f "$driver" ]] || { echo "run.sh: the driver $driver is missing" >&2; exit 1; }
shared="$root/../shared/tools/cpu_per_req.py"
if [[ "${CROSSCHECK:-0}" == 1 ]]; then
    [[ -f "$shared" ]] || {
        echo "run.sh: CROSSCHECK=1 needs $shared (the shared cpu_per_req.py beside the repository); it is absent" >&2
        exit 1
    }
fi

burners=()
driver_pid=
cleanup() {
    local pid
    # The driver ends the servers it started (SIGTERM to each one's process group, then SIGKILL).
    if [[ -n "$driver_pid" ]]; then
        kill -TERM "$driver_pid" 2>/dev/null || true
        wait "$driver_pid" 2>/dev/null || true
    fi
    for pid in "${burners[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${burners[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== build"
cargo build --release -p prefork-pool-benches --bins
bin="$root/target/release"

if ! command -v wrk >/dev/null; then
    echo "== installing wrk (Debian package)"
    if [[ $(id -u) -eq 0 ]]; then sudo=(); else sudo=(sudo); fi
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq wrk
fi

echo "== machine"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) online"
echo "kernel: $(uname -sr); mem: $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk: $(wrk --version 2>&1 | head -1); rustc: $(rustc --version)"

specs=()
port="$BASE_PORT"
for s in $SERVERS; do
    case "$s" in
        ours | tiny | hyper) specs+=("$s=$port=WORKERS=$WORKERS exec $bin/$s") ;;
        prefork) specs+=("prefork=$port=PROCESSES=$PROCESSES THREADS=$THREADS exec $bin/prefork") ;;
        *) echo "run.sh: unknown server $s (ours, prefork, tiny, hyper)" >&2; exit 2 ;;
    esac
    port=$((port + 1))
done

nservers=$(wc -w <<<"$SERVERS")
nconns=$(tr ',' ' ' <<<"$CONNS" | wc -w)
# Each wrk run is bounded by the driver; the burners by the whole run plus a margin.
budget=$((ROUNDS * SECS * nservers * nconns + 10 * ROUNDS * nservers * nconns + 60))

if [[ "$BURN" == 1 ]]; then
    for _ in $(seq "$(nproc)"); do
        # Busy, and gone within a fraction of a second once this script is (or after the budget).
        timeout "$budget" bash -c 'while kill -0 "$1" 2>/dev/null; do for _ in {1..20000}; do :; done; done' _ "$$" &
        burners+=("$!")
    done
    echo "== burning: ${#burners[@]} busy loop(s), one per core, for at most ${budget} s"
fi

extra=()
if [[ "$POST" == 1 ]]; then extra+=(--post --path /hello_world); fi
baseline=hyper
[[ " $SERVERS " == *" hyper "* ]] || baseline="${SERVERS%% *}"

echo "== load"
# In the background, so that a signal to this script runs the trap at once (bash defers traps
# while a foreground child runs).
python3 "$driver" --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS" --baseline "$baseline" \
    "${extra[@]}" "${specs[@]}" &
driver_pid=$!
status=0
wait "$driver_pid" || status=$?
driver_pid=
[[ "$status" == 0 ]] || { echo "run.sh: the driver failed (status $status)" >&2; exit "$status"; }

if [[ "${CROSSCHECK:-0}" == 1 ]]; then
    echo "== cross-check with $shared (-c32)"
    python3 "$shared" --rounds "$ROUNDS" --secs "$SECS" --conns 32 --path /get_hello_world?session_id=x \
        "${specs[@]}"
fi
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
