"""Each test starts ``prefork-wsgi`` as a subprocess (``python -m prefork_wsgi``), waits until it
listens, and ends it (SIGTERM, then SIGKILL of its whole process group) whatever happens."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SEED = HERE / "seed_app"
APPS = HERE / "apps"


class Server:
    def __init__(self, args, cwd, tmp_path, env=None):
        self.log_path = tmp_path / f"server-{len(list(tmp_path.iterdir()))}.log"
        self.log_file = open(self.log_path, "wb")
        full_env = dict(os.environ)
        full_env.pop("PORT", None)
        full_env.pop("WEB_CONCURRENCY", None)
        # As in production: stdout to a file is block-buffered.
        full_env.pop("PYTHONUNBUFFERED", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefork_wsgi", *args],
            cwd=cwd, stdout=self.log_file, stderr=subprocess.STDOUT, env=full_env,
            start_new_session=True,
        )
        self.port = None

    def log(self):
        return self.log_path.read_text(errors="replace")

    def wait_listening(self, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.log())
            if m:
                self.port = int(m.group(1))
                if self._accepts() and self._ready():
                    return self
            if self.proc.poll() is not None:
                raise AssertionError(f"the server exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"the server did not listen within {timeout}s:\n{self.log()}")

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def _ready(self):
        # Process mode: every worker has loaded the app.
        log = self.log()
        return "process mode" not in log or "worker(s) ready" in log

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def stop(self, sig=signal.SIGTERM, timeout=15):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.returncode

    def kill(self):
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        else:
            # Workers of a master that exited first.
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.log_file.close()


@pytest.fixture
def start_server(tmp_path):
    started = []

    def start(args, cwd=APPS, env=None, wait=True):
        s = Server(args, cwd, tmp_path, env)
        started.append(s)
        return s.wait_listening() if wait else s

    yield start
    for s in started:
        s.kill()


def run_cli(args, cwd=APPS, env=None, timeout=30):
    """``prefork-wsgi ARGS`` to its end: (exit status, stdout + stderr)."""
    full_env = dict(os.environ)
    full_env.pop("PORT", None)
    full_env.pop("WEB_CONCURRENCY", None)
    full_env.update(env or {})
    p = subprocess.run([sys.executable, "-m", "prefork_wsgi", *args], cwd=cwd, env=full_env,
                       capture_output=True, text=True, timeout=timeout, start_new_session=True)
    return p.returncode, p.stdout + p.stderr
