#!/usr/bin/env bash
# Self-call detection under load (issue 13, part 4): builds the selfcall_load server and runs
# selfcall.py (wrk with `Connection: close`, 16 connections, 2 workers, 2 ms handler; detection on
# vs off, with and without 4,000 idle connections held by another process; alternated rounds).
#
#   benches/peers/selfcall.sh
#   ROUNDS=5 SECS=5 IDLE=4000 benches/peers/selfcall.sh
#   OLD=/path/to/old/selfcall_load benches/peers/selfcall.sh   # and an older build, side by side
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
cargo build --release -p prefork-pool-benches --bin selfcall_load
command -v wrk >/dev/null || { echo "selfcall.sh: wrk is needed (Debian package wrk)" >&2; exit 1; }
ulimit -n "$(ulimit -Hn)"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), $(nproc) online;" \
    "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
bins=("new=$root/target/release/selfcall_load")
[[ -n "${OLD:-}" ]] && bins+=("old=$OLD")
exec python3 "$here/selfcall.py" --rounds "${ROUNDS:-3}" --secs "${SECS:-5}" \
    --idle "${IDLE:-4000}" "${bins[@]}"
