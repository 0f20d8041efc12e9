#!/usr/bin/env bash
# The WSGI front side by side with granian and gunicorn, in one run: the same WSGI app, the same
# processes x threads, wrk -t1 in its own process, alternated rounds; req/s, p50/p99 and the server
# tree's CPU µs per request (load.py).
#
#   benches/peers/wsgi.sh                  # 2 processes x 1 thread each, -c32, 3 rounds x 4 s
#   PROCS=1 THREADS=2 CONNS=8,32 benches/peers/wsgi.sh
#
# Needs prefork-wsgi (`pip install ./wsgi`; or PREFORK_WSGI=/path/to/prefork-wsgi), and granian
# and gunicorn on PATH (pip install granian gunicorn); a missing peer's row is skipped. The app
# answers `Hello, World!` with its length (no access log anywhere). Loopback only; every process
# started here is ended on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-3}"; SECS="${SECS:-4}"; CONNS="${CONNS:-32}"
PROCS="${PROCS:-2}"; THREADS="${THREADS:-1}"; BASE_PORT="${BASE_PORT:-18800}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/app.py" <<'PY'
def app(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
PY
ours="${PREFORK_WSGI:-$(command -v prefork-wsgi || true)}"
specs=()
port="$BASE_PORT"
if [[ -n "$ours" ]]; then
    specs+=("prefork-wsgi=$port=cd $tmp && exec $ours -w $PROCS --threads $THREADS -b 127.0.0.1:$port --log-level warning app:app")
else
    echo "(prefork-wsgi not installed: pip install ./wsgi, or set PREFORK_WSGI)"
fi
port=$((port + 1))
if command -v granian >/dev/null; then
    specs+=("granian=$port=cd $tmp && exec granian --interface wsgi --workers $PROCS --blocking-threads $THREADS --host 127.0.0.1 --port $port --no-access-log --log-level warning app:app")
else
    echo "(granian not installed: pip install granian)"
fi
port=$((port + 1))
if command -v gunicorn >/dev/null; then
    specs+=("gunicorn-sync=$port=cd $tmp && exec gunicorn -w $PROCS -b 127.0.0.1:$port --log-level warning app:app")
    port=$((port + 1))
    specs+=("gunicorn-gthread=$port=cd $tmp && exec gunicorn -w $PROCS -k gthread --threads $THREADS -b 127.0.0.1:$port --log-level warning app:app")
else
    echo "(gunicorn not installed: pip install gunicorn)"
fi
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ${PROCS} process(es) x ${THREADS} thread(s)"
exec python3 "$here/load.py" --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS" --path / \
    --baseline granian "${specs[@]}"
