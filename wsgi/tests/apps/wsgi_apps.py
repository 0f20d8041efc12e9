"""Plain WSGI apps for the tests (no framework): each route exercises one part of PEP 3333."""

import hashlib
import json
import os
import tempfile
import threading
import time
from wsgiref.validate import validator

# close() calls seen, per route (thread mode: one process).
CLOSED = {}
_lock = threading.Lock()


def _closed(route):
    with _lock:
        CLOSED[route] = CLOSED.get(route, 0) + 1


class Closing:
    """An iterable whose close() is counted."""

    def __init__(self, route, chunks, delay=0.0):
        self.route, self.chunks, self.delay = route, chunks, delay

    def __iter__(self):
        for i, c in enumerate(self.chunks):
            if i and self.delay:
                time.sleep(self.delay)
            yield c

    def close(self):
        _closed(self.route)


def _json(start_response, obj, status="200 OK"):
    body = json.dumps(obj).encode()
    start_response(status, [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
    return [body]


def plain(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/environ" or path.startswith("/environ/"):
        body = b"".join(iter(lambda: environ["wsgi.input"].read(65536), b""))
        shown = {k: v for k, v in environ.items() if isinstance(v, (str, bool, int, tuple))}
        shown["body"] = body.decode("latin-1")
        return _json(start_response, shown)
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Closing("/stream", [f"chunk {i}\n".encode() for i in range(3)], delay=0.4)
    if path == "/upload":
        inp = environ["wsgi.input"]
        h, size, reads = hashlib.sha256(), 0, 0
        while True:
            chunk = inp.read(65536)
            if not chunk:
                break
            reads += 1
            size += len(chunk)
            h.update(chunk)
        return _json(start_response, {"size": size, "sha256": h.hexdigest(), "reads": reads,
                                      "content_length": environ.get("CONTENT_LENGTH")})
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return _json(start_response, {"lines": [l.decode() for l in lines]})
    if path == "/slow":
        secs = float(environ["QUERY_STRING"].partition("=")[2] or "1")
        time.sleep(secs)
        return _json(start_response, {"slept": secs})
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written ")
        return Closing("/write", [b"then ", b"iterated\n"])
    if path == "/error":
        raise RuntimeError("the view failed on purpose")
    if path == "/late-error":
        def gen():
            try:
                raise ValueError("before the headers")
            except ValueError:
                import sys
                start_response("500 Internal Server Error", [("Content-Type", "text/plain")],
                               sys.exc_info())
            yield b"handled: " + b"exc_info"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/file":
        fd, name = tempfile.mkstemp()
        os.write(fd, b"0123456789" * 1000)
        os.close(fd)
        f = open(name, "rb")
        os.unlink(name)
        f.seek(10)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/closed":
        with _lock:
            return _json(start_response, dict(CLOSED))
    if path == "/pid":
        return _json(start_response, {"pid": os.getpid()})
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"no such page\n"]


# The same app checked by wsgiref's validator on every call (environ, start_response, the
# iterable, close()).
validated = validator(plain)


def cookies_and_errors(environ, start_response):
    environ["wsgi.errors"].write(f"wsgi.errors line for {environ['PATH_INFO']}\n")
    environ["wsgi.errors"].flush()
    return _json(start_response, {"cookie": environ.get("HTTP_COOKIE"),
                                  "accept": environ.get("HTTP_ACCEPT")})
