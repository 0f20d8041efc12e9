#!/usr/bin/env bash
# Process mode: how requests spread over the worker processes, ours against gunicorn sync, side by
# side in one run.
#
#   benches/peers/balance.sh            # 2 and 4 processes x 1 thread, -c16 and -c64, 5 s each
#
# Ours: examples/prefork_server.rs (release), THREADS=1, `GET /` answers {"worker_pid": N}.
# gunicorn: the sync worker with a WSGI app that answers the same. wrk -t2 counts each answer by
# the pid in its body (a Lua script); printed: req/s and busiest / least share. Needs wrk and
# gunicorn on PATH. Loopback only; every process started here is ended on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
SECS="${SECS:-5}"
tmp="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
cat > "$tmp/shares.lua" <<'LUA'
counts = {}
local threads = {}
function setup(thread) table.insert(threads, thread) end
function response(status, headers, body)
  local pid = string.match(body, "(%d+)")
  if pid then counts[pid] = (counts[pid] or 0) + 1 end
end
function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local max, min, n = 0, math.huge, 0
  for _, v in pairs(total) do n = n + 1; if v > max then max = v end; if v < min then min = v end end
  io.write(string.format("SHARES processes=%d busiest/least=%.2f\n", n, max / math.max(min, 1)))
end
LUA
cat > "$tmp/app.py" <<'PY'
import os
def app(environ, start_response):
    body = ('{"worker_pid": %d}' % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
PY
cargo build --release --example prefork_server >/dev/null 2>&1
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $(wrk -v 2>&1 | head -1 | cut -c1-30); $(gunicorn --version 2>&1)"
printf '%-22s %-6s %10s %16s\n' server conns "req/s" "busiest/least"
for procs in 2 4; do
  for conns in 16 64; do
    port=18600
    RUST_LOG=warn PORT=$port WEB_CONCURRENCY=$procs THREADS=1 target/release/examples/prefork_server </dev/null >/dev/null 2>&1 &
    p=$!; pids+=("$p"); wait_port $port; sleep 1
    wrk -t2 -c"$conns" -d1s http://127.0.0.1:$port/ >/dev/null 2>&1
    out=$(wrk -t2 -c"$conns" -d"${SECS}s" -s "$tmp/shares.lua" http://127.0.0.1:$port/)
    printf '%-22s %-6s %10s %16s\n' "prefork-pool ${procs}x1" "-c$conns" "$(grep Requests/sec <<<"$out" | awk '{print int($2)}')" "$(grep SHARES <<<"$out" | sed 's/.*=//')"
    kill -TERM "$p"; wait "$p" 2>/dev/null || true
    port=18601
    (cd "$tmp" && exec gunicorn -w "$procs" -b 127.0.0.1:$port --log-level warning app:app) >/dev/null 2>&1 &
    g=$!; pids+=("$g"); wait_port $port; sleep 1
    wrk -t2 -c"$conns" -d1s http://127.0.0.1:$port/ >/dev/null 2>&1
    out=$(wrk -t2 -c"$conns" -d"${SECS}s" -s "$tmp/shares.lua" http://127.0.0.1:$port/)
    printf '%-22s %-6s %10s %16s\n' "gunicorn sync ${procs}" "-c$conns" "$(grep Requests/sec <<<"$out" | awk '{print int($2)}')" "$(grep SHARES <<<"$out" | sed 's/.*=//')"
    kill -TERM "$g"; wait "$g" 2>/dev/null || true
  done
done
