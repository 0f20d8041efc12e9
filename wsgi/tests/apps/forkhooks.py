"""Records os.register_at_fork's callbacks: the server must run them around each fork of a worker,
as os.fork() does (PyOS_BeforeFork / PyOS_AfterFork_Parent / PyOS_AfterFork_Child)."""

import os
import threading

os.register_at_fork(
    before=lambda: os.write(2, f"AT_FORK before in {os.getpid()}\n".encode()),
    after_in_parent=lambda: os.write(2, f"AT_FORK parent in {os.getpid()}\n".encode()),
    after_in_child=lambda: os.write(2, f"AT_FORK child in {os.getpid()}\n".encode()),
)


def app(environ, start_response):
    # threading works in the worker (its state was reset for the child by the fork hooks).
    names = sorted(t.name for t in threading.enumerate())
    body = f"{os.getpid()} {threading.main_thread().ident is not None} {len(names)}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
