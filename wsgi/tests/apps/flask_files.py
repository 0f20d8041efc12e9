"""A Flask app's own streaming and file responses: a generator `Response` with
`stream_with_context`, `send_file` of a real file (Flask passes `wsgi.file_wrapper` through) and
of a `BytesIO` (no descriptor: the wrapper is iterated).

The file served is `$FRAMEWORK_FILE`; `/stream` waits after its first chunk until
`$FRAMEWORK_GATE` exists, which the test creates only once it has received that chunk: a server
that held the body back until the generator ended would never let it go on."""

import io
import os
import time

from flask import Flask, Response, request, send_file, stream_with_context

from framework_data import FIRST, chunk

app = Flask(__name__)


def _wait_for_gate():
    gate = os.environ["FRAMEWORK_GATE"]
    deadline = time.monotonic() + 15
    while not os.path.exists(gate):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@app.route("/stream")
def stream():
    n = int(request.args.get("n", "20"))

    @stream_with_context
    def generate():
        yield FIRST
        if not _wait_for_gate():
            yield b"GATE NEVER OPENED: the first chunk was not sent on its own"
            return
        # The request context is still there (stream_with_context).
        for i in range(int(request.args.get("n", "20"))):
            yield chunk(i)

    return Response(generate(), mimetype="application/octet-stream",
                    headers={"X-Chunks": str(n)})


@app.route("/generator")
def generator():
    # A plain generator (no request context needed).
    return Response((chunk(i) for i in range(50)), mimetype="application/octet-stream")


@app.route("/file")
def file():
    return send_file(os.environ["FRAMEWORK_FILE"], mimetype="application/octet-stream")


@app.route("/download")
def download():
    return send_file(os.environ["FRAMEWORK_FILE"], as_attachment=True,
                     download_name="data.bin")


@app.route("/memory")
def memory():
    data = b"".join(chunk(i) for i in range(30))
    return send_file(io.BytesIO(data), mimetype="application/octet-stream")


@app.route("/hello")
def hello():
    return {"hello": "flask"}
