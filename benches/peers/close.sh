#!/usr/bin/env bash
# Connect per request, side by side in one run: each request opens its own connection
# (`Connection: close`, as nginx's default `proxy_pass` does upstream, health checks, and any
# HTTP/1.0 client). Process mode must serve these as fast as one process does.
#
#   benches/peers/close.sh              # ours 1x2, ours 2x1, thread mode, hyper, tiny_http, gunicorn
#   NGINX=1 benches/peers/close.sh      # the same behind a real nginx with its default proxy_pass
#   ROUNDS=5 SECS=5 CONNS=16 benches/peers/close.sh
#
# Every server runs the seed app (src/lib.rs) with 2 threads in all (gunicorn: 2 sync workers
# with a WSGI app that answers the same JSON); wrk -t1 in its own process; the access log off.
# CPU µs per request is the process tree's (with NGINX=1, nginx's own CPU is in it, for every
# server alike). Needs wrk (and nginx for NGINX=1, gunicorn for its row: skipped when absent).
# Loopback only; every process started here is ended on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"
ROUNDS="${ROUNDS:-3}"
SECS="${SECS:-4}"
CONNS="${CONNS:-16}"
NGINX="${NGINX:-0}"
BASE_PORT="${BASE_PORT:-18700}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

cargo build --release -p prefork-pool-benches --bins >/dev/null
bin="$root/target/release"
cat > "$tmp/app.py" <<'PY'
import json
def app(environ, start_response):
    body = json.dumps({"message": "Hello World!"}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
PY

# NAME=PORT=CMD for load.py; with NGINX=1 the server listens on PORT+100 and nginx on PORT.
spec() {
    local name="$1" port="$2" cmd="$3"
    if [[ "$NGINX" != 1 ]]; then
        echo "$name=$port=$cmd"
        return
    fi
    local up=$((port + 100)) d="$tmp/nginx-$name"
    mkdir -p "$d"
    cat > "$d/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $d/cb; proxy_temp_path $d/px; fastcgi_temp_path $d/fc;
    uwsgi_temp_path $d/uw; scgi_temp_path $d/sc;
    server { listen 127.0.0.1:$port; location / { proxy_pass http://127.0.0.1:$up; } }
}
CONF
    local nginx_bin
    nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
    # nginx starts once the server listens (load.py waits for nginx's port only).
    local wait_up="for i in \$(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$up) 2>/dev/null && break; sleep 0.1; done"
    echo "$name+nginx=$port=PORT=$up bash -c '${cmd//\'/} & $wait_up; exec $nginx_bin -p $d -c $d/nginx.conf -e $d/error.log'"
}

specs=()
port="$BASE_PORT"
specs+=("$(spec ours-1x2 $port "PROCESSES=1 THREADS=2 exec $bin/prefork")"); port=$((port + 1))
specs+=("$(spec ours-2x1 $port "PROCESSES=2 THREADS=1 exec $bin/prefork")"); port=$((port + 1))
specs+=("$(spec ours-thread $port "WORKERS=2 exec $bin/ours")"); port=$((port + 1))
specs+=("$(spec hyper $port "WORKERS=2 exec $bin/hyper")"); port=$((port + 1))
specs+=("$(spec tiny $port "WORKERS=2 exec $bin/tiny")"); port=$((port + 1))
if command -v gunicorn >/dev/null; then
    specs+=("$(spec gunicorn-2 $port "cd $tmp && exec gunicorn -w 2 -b 127.0.0.1:\$PORT --log-level warning app:app")")
else
    echo "(gunicorn not installed: its row is skipped; pip install gunicorn)"
fi
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); $(wrk -v 2>&1 | head -1 | cut -c1-30)"
exec python3 "$here/load.py" --close --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS" \
    --baseline hyper$([[ "$NGINX" == 1 ]] && echo +nginx) "${specs[@]}"
