#!/usr/bin/env bash
# Where process mode's CPU per request comes from (issue 22): the same seed app, measured as
# run.sh measures it (benches/peers/load.py, wrk in its own process, server CPU from /proc), in
# configurations that change one thing at a time:
#
#   ours      thread mode, 2 handler threads (run.sh's `ours`)
#   ours4     thread mode, 4 handler threads: the handler threads of process mode, in one process
#   p1x4      process mode, 1 worker process x 4 threads: the prefork code (gate, heartbeat
#             counts, shared metrics, keep-alive cap, sibling table), 4 threads, one process
#   p2x1      process mode, 2 processes x 1 thread: two processes, 2 handler threads in all
#   prefork   process mode, 2 processes x 2 threads (run.sh's `prefork`)
#   hyper     the baseline
#
#   benches/peers/split.sh                  # -c4 and -c32, 3 rounds x 3 s
#   ROUNDS=5 CONNS=4 benches/peers/split.sh
#
# ours4 / ours is what 4 handler threads cost over 2; prefork / p1x4 what two processes cost over
# one with the same threads; p1x4 / ours4 what the prefork code costs per request.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
cargo build --release -p prefork-pool-benches --bins
bin="$root/target/release"
port="${BASE_PORT:-18460}"
exec python3 benches/peers/load.py --rounds "${ROUNDS:-3}" --secs "${SECS:-3}" \
    --conns "${CONNS:-4,32}" --baseline hyper \
    "hyper=$port=WORKERS=2 exec $bin/hyper" \
    "ours=$((port + 1))=WORKERS=2 exec $bin/ours" \
    "ours4=$((port + 2))=WORKERS=4 exec $bin/ours" \
    "p1x4=$((port + 3))=PROCESSES=1 THREADS=4 exec $bin/prefork" \
    "p2x1=$((port + 4))=PROCESSES=2 THREADS=1 exec $bin/prefork" \
    "prefork=$((port + 5))=PROCESSES=2 THREADS=2 exec $bin/prefork"
