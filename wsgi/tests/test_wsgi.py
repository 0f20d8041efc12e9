"""PEP 3333 as an app sees it, through wsgiref's validator where it applies; streaming, uploads,
the request deadline, and the stop on SIGTERM."""

import hashlib
import json
import os
import re
import signal
import socket
import threading
import time

import pytest
import requests


@pytest.fixture
def validated(start_server):
    return start_server(["-b", "127.0.0.1:0", "--threads", "2", "wsgi_apps:validated"])


def test_environ(validated):
    r = requests.post(
        f"{validated.url}/environ/caf%C3%A9%20x?a=1&b=%20",
        data=b"hello",
        headers={"Content-Type": "text/plain", "X-Custom": "v1", "X_Sneaky": "no"},
        timeout=5,
    )
    assert r.status_code == 200, validated.log()
    env = r.json()
    assert env["REQUEST_METHOD"] == "POST"
    assert env["SCRIPT_NAME"] == ""
    # Percent-decoded, then bytes as latin-1 (PEP 3333): UTF-8 é is 'Ã©'.
    assert env["PATH_INFO"] == "/environ/caf\u00c3\u00a9 x"
    assert env["QUERY_STRING"] == "a=1&b=%20"
    assert env["CONTENT_TYPE"] == "text/plain"
    assert env["CONTENT_LENGTH"] == "5"
    assert env["body"] == "hello"
    assert env["HTTP_X_CUSTOM"] == "v1"
    assert "HTTP_X_SNEAKY" not in env, "a header name with '_' must not pass for one with '-'"
    assert "HTTP_CONTENT_TYPE" not in env
    assert env["SERVER_NAME"] == "127.0.0.1"
    assert env["SERVER_PORT"] == str(validated.port)
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"].isdigit() and 0 < int(env["REMOTE_PORT"]) < 65536
    assert env["wsgi.url_scheme"] == "http"
    assert env["wsgi.multithread"] is True
    assert env["wsgi.multiprocess"] is False
    assert env["wsgi.input_terminated"] is True
    assert env["wsgi.version"] == [1, 0]
    # No complaint from the validator (it raises in the app, which would be a 500, or warns).
    assert "AssertionError" not in validated.log()
    assert "WSGIWarning" not in validated.log()


def test_header_keys_and_latin1_values(validated):
    # Common headers (whose keys the server keeps made) and others (made per request) alike;
    # a value's bytes each one code point (PEP 3333), ASCII or not.
    sock = socket.create_connection(("127.0.0.1", validated.port))
    sock.sendall(b"GET /environ/%41b HTTP/1.1\r\nHost: example.org:8080\r\n"
                 b"User-Agent: ua/1\r\nAccept-Language: fr\r\nX-Latin: caf\xe9 \xff\r\n"
                 b"X-Many-Dashes-Here: d\r\nX-Forwarded-Host: h\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    env = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert env["PATH_INFO"] == "/environ/Ab"
    assert env["HTTP_HOST"] == "example.org:8080"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.org", "8080")
    assert env["HTTP_USER_AGENT"] == "ua/1"
    assert env["HTTP_ACCEPT_LANGUAGE"] == "fr"
    assert env["HTTP_X_LATIN"] == "caf\u00e9 \u00ff"
    assert env["HTTP_X_MANY_DASHES_HERE"] == "d"
    assert env["HTTP_X_FORWARDED_HOST"] == "h"
    assert env["HTTP_CONNECTION"] == "close"
    assert env["QUERY_STRING"] == ""
    assert env["REQUEST_METHOD"] == "GET"
    assert "AssertionError" not in validated.log()


def test_forwarded_proto_from_a_trusted_proxy(validated):
    r = requests.get(f"{validated.url}/environ", headers={"X-Forwarded-Proto": "https",
                                                          "Host": "example.com"}, timeout=5)
    env = r.json()
    assert env["wsgi.url_scheme"] == "https"
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("example.com", "443")


def test_write_callable_and_close(validated):
    r = requests.get(f"{validated.url}/write", timeout=5)
    assert r.status_code == 200
    assert r.content == b"written then iterated\n"
    closed = requests.get(f"{validated.url}/closed", timeout=5).json()
    assert closed.get("/write") == 1


def test_exc_info_replaces_the_status_before_the_headers_are_sent(validated):
    r = requests.get(f"{validated.url}/late-error", timeout=5)
    assert r.status_code == 500
    assert r.content == b"handled: exc_info"


def test_app_exception_is_500_with_its_traceback_logged(validated):
    r = requests.get(f"{validated.url}/error", timeout=5)
    assert r.status_code == 500
    log = validated.log()
    assert "Error handling request GET /error" in log
    assert "Traceback (most recent call last)" in log
    assert "RuntimeError: the view failed on purpose" in log
    # The server goes on serving.
    assert requests.get(f"{validated.url}/environ", timeout=5).status_code == 200


def test_streaming_response_is_sent_as_it_is_produced(validated):
    started = time.monotonic()
    with requests.get(f"{validated.url}/stream", stream=True, timeout=5) as r:
        assert r.status_code == 200
        assert r.headers.get("Transfer-Encoding") == "chunked"
        chunks = []
        first_at = None
        for chunk in r.iter_content(chunk_size=None):
            if first_at is None:
                first_at = time.monotonic() - started
            chunks.append(chunk)
        total = time.monotonic() - started
    assert b"".join(chunks) == b"chunk 0\nchunk 1\nchunk 2\n"
    # The first chunk arrives before the generator has produced the rest (0.4 s apart).
    assert first_at < 0.35, f"first chunk after {first_at:.2f}s"
    assert total >= 0.75
    deadline = time.monotonic() + 2
    while requests.get(f"{validated.url}/closed", timeout=5).json().get("/stream") != 1:
        assert time.monotonic() < deadline, "close() was not called on the streamed iterable"
        time.sleep(0.05)


def test_stream_closed_when_the_client_goes_away(validated):
    s = socket.create_connection(("127.0.0.1", validated.port))
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()
    deadline = time.monotonic() + 3
    while requests.get(f"{validated.url}/closed", timeout=5).json().get("/stream") != 1:
        assert time.monotonic() < deadline, "close() was not called after the client left"
        time.sleep(0.05)


@pytest.mark.parametrize("size", [100_000, 3 * 1024 * 1024 + 7])
def test_upload_read_in_chunks(validated, size):
    data = os.urandom(size)
    r = requests.post(f"{validated.url}/upload", data=data, timeout=10)
    assert r.status_code == 200, validated.log()
    got = r.json()
    assert got["size"] == size
    assert got["sha256"] == hashlib.sha256(data).hexdigest()
    assert got["reads"] == -(-size // 65536)
    assert got["content_length"] == str(size)


def test_chunked_upload_without_content_length(validated):
    def gen():
        for i in range(5):
            yield f"line {i}\n".encode()

    r = requests.post(f"{validated.url}/lines", data=gen(), timeout=10)
    assert r.status_code == 200
    assert r.json()["lines"] == [f"line {i}\n" for i in range(5)]


def test_file_wrapper_sends_the_file(start_server):
    s = start_server(["-b", "127.0.0.1:0", "wsgi_apps:plain"])
    r = requests.get(f"{s.url}/file", timeout=5)
    assert r.status_code == 200
    assert r.content == (b"0123456789" * 1000)[10:]
    assert r.headers["Content-Length"] == str(9990)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_timeout_is_504_and_the_thread_is_left_to_finish(start_server, workers):
    s = start_server(["-b", "127.0.0.1:0", "-w", workers, "--threads", "2", "-t", "1",
                      "wsgi_apps:plain"])
    started = time.monotonic()
    r = requests.get(f"{s.url}/slow?s=3", timeout=10)
    took = time.monotonic() - started
    assert r.status_code == 504
    assert took < 2.5, f"504 after {took:.2f}s"
    # Other requests are served meanwhile.
    assert requests.get(f"{s.url}/pid", timeout=5).status_code == 200
    assert "A Python thread cannot be killed" in s.log()
    deadline = time.monotonic() + 5
    while "left to finish" not in s.log() or "returned" not in s.log():
        assert time.monotonic() < deadline, s.log()
        time.sleep(0.1)
    assert s.stop() == 0


@pytest.mark.parametrize("workers", ["1", "2"])
def test_sigterm_drains_and_exits_0(start_server, workers):
    s = start_server(["-b", "127.0.0.1:0", "-w", workers, "--threads", "2", "wsgi_apps:plain"])
    result = {}

    def slow():
        result["r"] = requests.get(f"{s.url}/slow?s=1", timeout=10)

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    t.join()
    assert result["r"].status_code == 200
    assert result["r"].json() == {"slept": 1.0}
    assert s.proc.wait(10) == 0
    s.kill()


def test_repeated_headers_and_wsgi_errors_to_the_error_log(start_server, tmp_path):
    errors = tmp_path / "error.log"
    s = start_server(["-b", "127.0.0.1:0", "--error-logfile", str(errors),
                      "wsgi_apps:cookies_and_errors"], wait=False)
    deadline = time.monotonic() + 20
    while "Listening at" not in (errors.read_text() if errors.exists() else ""):
        assert time.monotonic() < deadline and s.proc.poll() is None, s.log()
        time.sleep(0.05)
    port = re.search(r"127\.0\.0\.1:(\d+)", errors.read_text()).group(1)
    sock = socket.create_connection(("127.0.0.1", int(port)))
    sock.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\nCookie: b=2\r\n"
                 b"Accept: text/html\r\nAccept: application/json\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    body = answer.split(b"\r\n\r\n", 1)[1]
    assert json.loads(body) == {"cookie": "a=1; b=2", "accept": "text/html,application/json"}
    assert "wsgi.errors line for /c" in errors.read_text()


def test_remote_port_and_server_port_without_host(validated):
    sock = socket.create_connection(("127.0.0.1", validated.port))
    my_port = sock.getsockname()[1]
    # HTTP/1.0 without Host: SERVER_NAME and SERVER_PORT are the address connected to.
    sock.sendall(b"GET /environ HTTP/1.0\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    env = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert env["REMOTE_PORT"] == str(my_port)
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(validated.port))
    assert env["SERVER_PROTOCOL"] == "HTTP/1.0"
    assert "HTTP_HOST" not in env


def test_environ_over_a_unix_socket(start_server, tmp_path):
    path = tmp_path / "app.sock"
    s = start_server(["-b", "127.0.0.1:0", "-b", f"unix:{path}", "wsgi_apps:validated"])
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sock.sendall(b"GET /environ HTTP/1.1\r\nHost: app.local\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    env = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    # No peer address or port on a unix socket (as gunicorn: REMOTE_ADDR empty).
    assert env["REMOTE_ADDR"] == ""
    assert "REMOTE_PORT" not in env
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("app.local", "80")
    assert "AssertionError" not in s.log()


def test_forwarded_headers_only_from_allowed_proxies(start_server):
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}
    trusted = start_server(["-b", "127.0.0.1:0", "wsgi_apps:validated"])
    env = requests.get(f"{trusted.url}/environ", headers=headers, timeout=5).json()
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.7", "https")
    untrusted = start_server(["-b", "127.0.0.1:0", "--forwarded-allow-ips", "10.0.0.1",
                              "wsgi_apps:validated"])
    env = requests.get(f"{untrusted.url}/environ", headers=headers, timeout=5).json()
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("127.0.0.1", "http")


def test_head_gets_the_headers_only(validated):
    r = requests.head(f"{validated.url}/environ", timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    assert int(r.headers["Content-Length"]) > 0


def test_request_body_limit(start_server):
    # Larger than the crate's own 10 MiB default: gunicorn has no limit, prefork-wsgi 1 GiB.
    big = start_server(["-b", "127.0.0.1:0", "wsgi_apps:plain"])
    data = b"x" * (11 * 1024 * 1024)
    r = requests.post(f"{big.url}/upload", data=data, timeout=30)
    assert r.status_code == 200 and r.json()["size"] == len(data)
    small = start_server(["-b", "127.0.0.1:0", "--limit-request-body", "1000", "wsgi_apps:plain"])
    r = requests.post(f"{small.url}/upload", data=b"y" * 1001, timeout=10)
    assert r.status_code == 413


def test_a_list_without_content_length_is_sent_with_its_length(start_server):
    s = start_server(["-b", "127.0.0.1:0", "wsgi_apps:plain"])
    r = requests.get(f"{s.url}/nothing-here", timeout=5)
    assert r.status_code == 404
    assert r.content == b"no such page\n"
    assert r.headers.get("Content-Length") == str(len(b"no such page\n"))
    assert "Transfer-Encoding" not in r.headers
