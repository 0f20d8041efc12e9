"""What differs between thread mode (-w 1) and process mode (-w N): recycling, --preload, print()
in workers, the fork's at-fork callbacks, HUP reloading the code, and a stop while a Python thread
is stuck past its deadline."""

import signal
import time

import requests


def pids(url, n):
    out = set()
    for _ in range(n):
        # A new connection each time: a kept-alive one stays with its process.
        r = requests.get(f"{url}/x", headers={"Connection": "close"}, timeout=5)
        assert r.status_code == 200
        out.add(int(r.text))
    return out


def test_process_mode_imports_in_each_worker_and_print_reaches_the_log(start_server):
    s = start_server(["-b", "127.0.0.1:0", "-w", "2", "printing:app"])
    served = pids(s.url, 6)
    deadline = time.monotonic() + 3
    while not all(f"served /x in pid {p}" in s.log() for p in served):
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.05)
    # Imported after the fork, once in each worker (not in the master).
    assert s.log().count("imported in pid") == 2, s.log()
    assert s.stop() == 0


def test_preload_imports_once_in_the_master(start_server):
    s = start_server(["-b", "127.0.0.1:0", "-w", "2", "--preload", "printing:app"])
    pids(s.url, 4)
    assert s.log().count("imported in pid") == 1, s.log()
    assert f"imported in pid {s.proc.pid}" in s.log()
    assert s.stop() == 0


def test_process_mode_max_requests_replaces_workers(start_server):
    s = start_server(["-b", "127.0.0.1:0", "-w", "2", "--max-requests", "3", "printing:app"])
    # A worker past its requests serves on until its replacement is ready (replacement first).
    seen = set()
    deadline = time.monotonic() + 15
    while len(seen) <= 2:
        assert time.monotonic() < deadline, f"only {seen} served with --max-requests 3"
        seen |= pids(s.url, 5)
        time.sleep(0.05)
    assert "Traceback" not in s.log()
    assert s.stop() == 0


def test_thread_mode_max_requests_recycles_threads(start_server):
    # Each replacement thread attaches to the interpreter; each retiring one detaches.
    s = start_server(["-b", "127.0.0.1:0", "--threads", "2", "--max-requests", "2",
                      "printing:app"])
    for _ in range(20):
        assert requests.get(f"{s.url}/x", timeout=5).status_code == 200
    assert s.stop() == 0
    assert "Traceback" not in s.log()


def test_stop_with_a_thread_stuck_past_its_deadline(start_server):
    s = start_server(["-b", "127.0.0.1:0", "--threads", "2", "-t", "1", "--graceful-timeout", "1",
                      "wsgi_apps:plain"])
    assert requests.get(f"{s.url}/slow?s=60", timeout=10).status_code == 504
    started = time.monotonic()
    code = s.stop(timeout=10)
    assert code == 0, s.log()
    assert time.monotonic() - started < 5
    assert "a Python thread cannot be killed" in s.log()


def test_each_fork_runs_pythons_at_fork_callbacks(start_server):
    # --preload: the module (and its os.register_at_fork callbacks) is imported before the forks.
    s = start_server(["-b", "127.0.0.1:0", "-w", "2", "--preload", "forkhooks:app"])
    master = s.proc.pid
    workers = set()
    for _ in range(6):
        r = requests.get(f"{s.url}/", headers={"Connection": "close"}, timeout=5)
        assert r.status_code == 200
        workers.add(int(r.text.split()[0]))
    log = s.log()
    assert log.count(f"AT_FORK before in {master}") >= 2, log
    assert log.count(f"AT_FORK parent in {master}") >= 2, log
    for pid in workers:
        assert f"AT_FORK child in {pid}" in log, log
    assert s.stop() == 0


def test_hup_reloads_the_changed_app_in_process_mode(start_server, tmp_path):
    # The master never imported the app: new workers import the code as it is now.
    (tmp_path / "versioned.py").write_text(
        "def app(environ, start_response):\n"
        "    start_response('200 OK', [('Content-Type', 'text/plain')])\n"
        "    return [b'v1']\n")
    s = start_server(["-b", "127.0.0.1:0", "-w", "2", "versioned:app"], cwd=tmp_path)
    assert requests.get(s.url, timeout=5).text == "v1"
    (tmp_path / "versioned.py").write_text(
        (tmp_path / "versioned.py").read_text().replace("b'v1'", "b'v2'"))
    s.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while True:
        answers = {requests.get(s.url, headers={"Connection": "close"}, timeout=5).text
                   for _ in range(4)}
        if answers == {"v2"}:
            break
        assert time.monotonic() < deadline, (answers, s.log())
        time.sleep(0.2)
    assert s.stop() == 0
