"""A Flask and a Django app's own streaming and file responses, served as their users serve them
(thread mode, and -w 2): bodies byte for byte, files sent with their Content-Length, streams
chunked and sent as they are produced, one keep-alive connection staying in step across them."""

import os
import sys

import pytest
import requests

from conftest import APPS

sys.path.insert(0, str(APPS))
from framework_data import FIRST, chunk  # noqa: E402

MODES = {"thread mode": [], "-w 2": ["-w", "2"]}
# An odd size, over the 1 MiB a server might buffer whole, with every byte value.
FILE_SIZE = 3 * 1024 * 1024 + 4099


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("framework") / "data.bin"
    path.write_bytes(os.urandom(FILE_SIZE))
    return path


@pytest.fixture(params=list(MODES), ids=list(MODES))
def serve(request, start_server, data_file, tmp_path):
    """Starts `spec` in the mode of the parameter; returns (server, gate path)."""

    def start(spec):
        gate = tmp_path / "gate"
        env = {"FRAMEWORK_FILE": str(data_file), "FRAMEWORK_GATE": str(gate)}
        s = start_server(["-b", "127.0.0.1:0", *MODES[request.param], spec], env=env)
        return s, gate

    return start


def check_gated_stream(url, gate, n):
    """The first chunk arrives while the generator waits for the gate (which only this client
    opens): the server sent it on its own, chunked; then the rest, byte for byte."""
    with requests.get(f"{url}/stream", params={"n": n}, stream=True, timeout=30) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked", r.headers
        assert "Content-Length" not in r.headers
        got = b""
        pieces = r.iter_content(chunk_size=None)
        while len(got) < len(FIRST):
            got += next(pieces)
        assert got == FIRST, got[:200]
        gate.touch()
        for piece in pieces:
            got += piece
    assert got == FIRST + b"".join(chunk(i) for i in range(n)), got[-200:]


def check_file(url, route, data):
    r = requests.get(f"{url}/{route}", timeout=30)
    assert r.status_code == 200
    assert r.headers.get("Content-Length") == str(len(data)), r.headers
    assert "Transfer-Encoding" not in r.headers
    assert r.content == data
    return r


def test_flask_stream_with_context(serve):
    s, gate = serve("flask_files:app")
    check_gated_stream(s.url, gate, 40)
    assert "Traceback" not in s.log(), s.log()


def test_flask_generator_response_is_chunked(serve):
    s, _ = serve("flask_files:app")
    r = requests.get(f"{s.url}/generator", timeout=30)
    assert r.status_code == 200
    assert r.headers.get("Transfer-Encoding") == "chunked"
    assert r.content == b"".join(chunk(i) for i in range(50))


def test_flask_send_file(serve, data_file):
    s, _ = serve("flask_files:app")
    data = data_file.read_bytes()
    check_file(s.url, "file", data)
    r = check_file(s.url, "download", data)
    assert r.headers["Content-Disposition"] == "attachment; filename=data.bin"
    # A Range request: werkzeug cuts the wrapped file itself.
    r = requests.get(f"{s.url}/file", headers={"Range": "bytes=1000-1999"}, timeout=30)
    assert r.status_code == 206
    assert r.headers["Content-Range"] == f"bytes 1000-1999/{len(data)}"
    assert r.headers["Content-Length"] == "1000"
    assert r.content == data[1000:2000]
    r = requests.get(f"{s.url}/file", headers={"Range": f"bytes=-{7}"}, timeout=30)
    assert (r.status_code, r.content) == (206, data[-7:])
    # HEAD: the length, no body.
    r = requests.head(f"{s.url}/file", timeout=30)
    assert (r.status_code, r.content) == (200, b"")
    assert r.headers["Content-Length"] == str(len(data))
    # A conditional GET with the file's ETag: 304, nothing sent.
    r = requests.get(f"{s.url}/file", headers={"If-None-Match": r.headers["ETag"]}, timeout=30)
    assert (r.status_code, r.content) == (304, b"")


def test_flask_send_file_from_memory(serve):
    s, _ = serve("flask_files:app")
    check_file(s.url, "memory", b"".join(chunk(i) for i in range(30)))


def test_flask_one_connection_through_files_and_streams(serve, data_file):
    # A wrong length or a chunk too many would put the next answer out of step.
    s, _ = serve("flask_files:app")
    data = data_file.read_bytes()
    with requests.Session() as session:
        for _ in range(2):
            assert session.get(f"{s.url}/file", timeout=30).content == data
            assert session.get(f"{s.url}/hello", timeout=30).json() == {"hello": "flask"}
            assert session.get(f"{s.url}/generator", timeout=30).content == b"".join(
                chunk(i) for i in range(50))
            r = session.get(f"{s.url}/file", headers={"Range": "bytes=5-9"}, timeout=30)
            assert r.content == data[5:10]


def test_django_views(serve, data_file):
    s, gate = serve("django_site:application")
    r = requests.get(f"{s.url}/hello", params={"q": "x y"}, timeout=30)
    assert r.status_code == 200, s.log()
    assert r.json() == {"hello": "django", "method": "GET", "q": "x y",
                        "host": f"127.0.0.1:{s.port}"}
    body = os.urandom(200_000)
    r = requests.post(f"{s.url}/echo", data=body, timeout=30)
    assert r.json() == {"size": len(body), "tail": body[-8:].hex()}
    assert requests.get(f"{s.url}/nowhere", timeout=30).status_code == 404
    check_gated_stream(s.url, gate, 30)
    data = data_file.read_bytes()
    with requests.Session() as session:
        for _ in range(2):
            r = check_file(s.url, "file", data)
            r = session.get(f"{s.url}/download", timeout=30)
            assert r.content == data
            assert r.headers["Content-Length"] == str(len(data))
            assert r.headers["Content-Disposition"] == 'attachment; filename="data.bin"'
            assert session.get(f"{s.url}/hello", timeout=30).json()["hello"] == "django"
    assert "Traceback" not in s.log(), s.log()
