"""The seed article's Flask app, its files verbatim (seed_app/), served on 127.0.0.1:5000 as its
code fixes (`requests.post('http://localhost:5000/hello_world')`). On gunicorn with one sync
worker POST /call_hello_world hangs until WORKER TIMEOUT; here it is answered at once."""

import concurrent.futures
import time

import requests

from conftest import SEED

FIX = "do not wait in a view for a request to this same server"


def call_hello(url):
    started = time.monotonic()
    r = requests.post(f"{url}/call_hello_world", timeout=10)
    return r, time.monotonic() - started


def test_thread_mode_one_thread(start_server):
    s = start_server(["-b", "127.0.0.1:5000", "--threads", "1", "app:site"], cwd=SEED)
    assert s.port == 5000
    r, took = call_hello(s.url)
    assert r.status_code == 201, r.text
    assert took < 1.0, f"POST /call_hello_world took {took:.2f}s"
    sid = r.json()["session_id"]
    got = requests.get(f"{s.url}/get_hello_world", params={"session_id": sid}, timeout=5)
    assert got.status_code == 200
    assert got.json() == {"message": "Hello, World!", "session_id": sid}
    # Four at once, on one handler thread: each answered in under a second.
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: call_hello(s.url), range(4)))
    for r, took in results:
        assert r.status_code == 201, r.text
        assert took < 1.0, f"an overlapping call took {took:.2f}s"
    sids = {r.json()["session_id"] for r, _ in results}
    assert len(sids) == 4
    for sid in sids:
        assert requests.get(f"{s.url}/get_hello_world", params={"session_id": sid},
                            timeout=5).status_code == 200
    log = s.log()
    # One warning (once per route), naming the route and the fix.
    warnings = [l for l in log.splitlines() if "[WARNING]" in l and "self-call" in l]
    assert len(warnings) == 1, log
    assert "POST /hello_world" in warnings[0] and FIX in warnings[0]
    assert s.stop() == 0


def test_process_mode_two_workers(start_server):
    s = start_server(["-b", "127.0.0.1:5000", "-w", "2", "--threads", "1", "app:site"], cwd=SEED)
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: call_hello(s.url), range(8)))
    for r, took in results:
        assert r.status_code == 201, r.text
        assert "session_id" in r.json()
        assert took < 1.0, f"a call took {took:.2f}s"
    # The app was imported in each worker after its fork: two pids served.
    assert s.log().count("ready in") == 2
    assert s.stop() == 0
    assert "exiting with status 0" in s.log()
