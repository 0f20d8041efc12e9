#!/usr/bin/env bash
# The WSGI front side by side with granian and gunicorn, in one run: the same WSGI app, the same
# processes x threads, wrk -t1 in its own process, alternated rounds; req/s, p50/p99 and the server
# tree's CPU µs per request (load.py).
#
#   benches/peers/wsgi.sh                  # 2 processes x 1 thread each, -c32, 3 rounds x 4 s
#   PROCS=1 THREADS=2 CONNS=8,32 benches/peers/wsgi.sh
#   APP=seed CONNS=8 benches/peers/wsgi.sh  # the seed's Flask app: GET /get_hello_world
#
# Needs prefork-wsgi (`pip install ./wsgi`; or PREFORK_WSGI=/path/to/prefork-wsgi), and granian
# and gunicorn on PATH (pip install granian gunicorn); a missing peer's row is skipped. The app
# (APP=minimal, the default) answers `Hello, World!` with its length; APP=seed is the seed's Flask
# app (wsgi/tests/seed_app, its files unchanged; Flask importable by every server's Python) with
# one session stored at import in each process, so that `GET /get_hello_world?session_id=x`
# answers 200 from every worker. No access log anywhere. Loopback only; every process started here
# is ended on exit.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROUNDS="${ROUNDS:-3}"; SECS="${SECS:-4}"; CONNS="${CONNS:-32}"
PROCS="${PROCS:-2}"; THREADS="${THREADS:-1}"; BASE_PORT="${BASE_PORT:-18800}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
case "${APP:-minimal}" in
minimal)
    path=/
    spec=app:app
    cat > "$tmp/app.py" <<'PY'
def app(environ, start_response):
    body = b"Hello, World!"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
PY
    ;;
seed)
    path='/get_hello_world?session_id=x'
    spec=bench_seed:app
    # Its files, not the tests' package marker (granian would import the directory as a package).
    cp -r "$here/../../wsgi/tests/seed_app/app.py" "$here/../../wsgi/tests/seed_app/routes" "$tmp/"
    cat > "$tmp/bench_seed.py" <<'PY'
# The seed's app (app.py, unchanged) with one session stored at import, in each process, so that
# GET /get_hello_world?session_id=x answers 200 from every worker.
from app import site as app
from routes.shared import state_cache

state_cache["x"] = {"message": "Hello, World!", "session_id": "x"}
PY
    ;;
*)
    echo "APP=${APP}: minimal or seed" >&2
    exit 2
    ;;
esac
ours="${PREFORK_WSGI:-$(command -v prefork-wsgi || true)}"
specs=()
port="$BASE_PORT"
if [[ -n "$ours" ]]; then
    specs+=("prefork-wsgi=$port=cd $tmp && exec $ours -w $PROCS --threads $THREADS -b 127.0.0.1:$port --log-level warning $spec")
else
    echo "(prefork-wsgi not installed: pip install ./wsgi, or set PREFORK_WSGI)"
fi
port=$((port + 1))
if command -v granian >/dev/null; then
    specs+=("granian=$port=cd $tmp && exec granian --interface wsgi --workers $PROCS --blocking-threads $THREADS --host 127.0.0.1 --port $port --no-access-log --log-level warning $spec")
else
    echo "(granian not installed: pip install granian)"
fi
port=$((port + 1))
if command -v gunicorn >/dev/null; then
    specs+=("gunicorn-sync=$port=cd $tmp && exec gunicorn -w $PROCS -b 127.0.0.1:$port --log-level warning $spec")
    port=$((port + 1))
    specs+=("gunicorn-gthread=$port=cd $tmp && exec gunicorn -w $PROCS -k gthread --threads $THREADS -b 127.0.0.1:$port --log-level warning $spec")
else
    echo "(gunicorn not installed: pip install gunicorn)"
fi
echo "machine: $(nproc) cores, $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg); ${PROCS} process(es) x ${THREADS} thread(s); app ${APP:-minimal} ($path)"
exec python3 "$here/load.py" --rounds "$ROUNDS" --secs "$SECS" --conns "$CONNS" --path "$path" \
    --baseline "${BASELINE:-granian}" "${specs[@]}"
