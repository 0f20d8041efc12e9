"""The command line as gunicorn's users know it: a bad flag names itself, an import error names
the module and shows the traceback and stops the server, the app spec forms, the defaults from the
environment."""

import socket
import time

import pytest
import requests

from conftest import APPS, run_cli


@pytest.mark.parametrize(
    "args, named",
    [
        (["--workers", "x", "wsgi_apps:plain"], "-w/--workers"),
        (["--threads", "0", "wsgi_apps:plain"], "--threads"),
        (["--timeout", "soon", "wsgi_apps:plain"], "-t/--timeout"),
        (["--bind", "127.0.0.1:99999", "wsgi_apps:plain"], "-b/--bind"),
        (["--log-level", "loud", "wsgi_apps:plain"], "--log-level"),
        (["--limit-request-line", "-1", "wsgi_apps:plain"], "--limit-request-line"),
        (["--bogus", "wsgi_apps:plain"], "--bogus"),
        (["-k", "gevent", "wsgi_apps:plain"], "-k/--worker-class"),
        (["-c", "gunicorn.conf.py", "wsgi_apps:plain"], "-c"),
        ([], "MODULE:APP"),
    ],
)
def test_bad_flag_exits_nonzero_naming_it(args, named):
    code, out = run_cli(args)
    assert code == 2, out
    assert named in out, out


def test_bad_environment_value_is_named():
    code, out = run_cli(["wsgi_apps:plain"], env={"WEB_CONCURRENCY": "many"})
    assert code == 2
    assert "WEB_CONCURRENCY" in out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_import_error_names_the_module_and_stops(workers):
    started = time.monotonic()
    code, out = run_cli(["-b", "127.0.0.1:0", "-w", workers, "broken:app"], timeout=30)
    assert code != 0
    assert "broken" in out
    assert "Traceback (most recent call last)" in out
    assert "this_module_does_not_exist" in out
    # No restart loop: one attempt per worker at most, then the process is gone.
    assert out.count("Traceback (most recent call last)") <= int(workers), out
    assert time.monotonic() - started < 20


def test_missing_module_fails_before_forking():
    code, out = run_cli(["-b", "127.0.0.1:0", "-w", "2", "no_such_module:app"])
    assert code != 0
    assert "no_such_module" in out
    assert "booting worker" not in out


def test_missing_attribute_is_named():
    code, out = run_cli(["-b", "127.0.0.1:0", "wsgi_apps:nothing_here"])
    assert code != 0
    assert "nothing_here" in out and "wsgi_apps" in out


def test_check_config():
    code, out = run_cli(["--check-config", "wsgi_apps:plain"])
    assert code == 0, out
    code, out = run_cli(["--check-config", "broken:app"])
    assert code == 1
    assert "this_module_does_not_exist" in out


def test_print_config_shows_effective_settings():
    code, out = run_cli(["--print-config", "-w", "3", "--threads", "4", "-t", "9", "wsgi_apps:plain"],
                        env={"PORT": "6123"})
    assert code == 0, out
    settings = dict(line.split(" = ", 1) for line in out.splitlines() if " = " in line)
    settings = {k.strip(): v for k, v in settings.items()}
    assert settings["bind"] == "['0.0.0.0:6123']"  # PORT: every interface, as gunicorn
    assert settings["workers"] == "3"
    assert settings["threads"] == "4"
    assert settings["timeout"] == "9.0"
    assert settings["limit_request_line"] == "4094"


def test_web_concurrency_sets_the_processes():
    code, out = run_cli(["--print-config", "wsgi_apps:plain"], env={"WEB_CONCURRENCY": "3"})
    assert code == 0
    assert "workers" in out and "process mode (3 processes)" in out


def test_factory_call_and_default_attribute(start_server):
    s = start_server(["-b", "127.0.0.1:0", "factory:create_app('hi')"])
    assert requests.get(s.url, timeout=5).text == "hi from a factory\n"
    s2 = start_server(["-b", "127.0.0.1:0", "factory"])
    assert requests.get(s2.url, timeout=5).text == "default from a factory\n"


def test_chdir_puts_the_app_directory_on_sys_path(start_server, tmp_path):
    s = start_server(["--chdir", str(APPS), "-b", "127.0.0.1:0", "factory:application"],
                     cwd=tmp_path)
    assert requests.get(s.url, timeout=5).status_code == 200


def test_unix_socket_bind(start_server, tmp_path):
    path = tmp_path / "app.sock"
    s = start_server(["-b", "127.0.0.1:0", "-b", f"unix:{path}", "factory:application"])
    sock = socket.socket(socket.AF_UNIX)
    sock.connect(str(path))
    sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    answer = b""
    while chunk := sock.recv(4096):
        answer += chunk
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"default from a factory\n")
    assert s.stop() == 0


def test_access_log_to_a_file(start_server, tmp_path):
    log = tmp_path / "access.log"
    s = start_server(["-b", "127.0.0.1:0", "--access-logfile", str(log), "factory:application"])
    requests.get(f"{s.url}/some/path?q=1", timeout=5)
    deadline = time.monotonic() + 3
    while "GET /some/path?q=1 HTTP/1.1\" 200" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_limit_request_line(start_server):
    s = start_server(["-b", "127.0.0.1:0", "--limit-request-line", "64", "factory:application"])
    assert requests.get(f"{s.url}/{'x' * 100}", timeout=5).status_code == 414
    assert requests.get(f"{s.url}/short", timeout=5).status_code == 200


def effective(out):
    """--print-config's lines as a dict."""
    return {k.strip(): v for k, v in (line.split(" = ", 1) for line in out.splitlines()
                                      if " = " in line)}


def test_extra_arguments_from_gunicorn_cmd_args():
    # A migrating deployment's GUNICORN_CMD_ARGS keeps working.
    code, out = run_cli(["--print-config", "wsgi_apps:plain"], env={
        "GUNICORN_CMD_ARGS": "--threads 4 -b 127.0.0.1:7001 -b 'unix:/tmp/a b.sock' "
                             "--timeout=9 --access-logformat '%(h)s \"%(r)s\"' --preload"})
    assert code == 0, out
    settings = effective(out)
    assert settings["threads"] == "4"
    assert settings["bind"] == "['127.0.0.1:7001', 'unix:/tmp/a b.sock']"
    assert settings["timeout"] == "9.0"
    assert settings["access_log_format"] == "'%(h)s \"%(r)s\"'"
    assert settings["preload_app"] == "True"


def test_command_line_wins_over_prefork_wsgi_cmd_args_over_gunicorn_cmd_args():
    env = {"GUNICORN_CMD_ARGS": "-w 3 --threads 5 -t 7 -b 127.0.0.1:7001 --keep-alive 4",
           "PREFORK_WSGI_CMD_ARGS": "-w 4 --threads 6 -b 127.0.0.1:7002",
           "WEB_CONCURRENCY": "9", "PORT": "7009"}
    code, out = run_cli(["--print-config", "--threads", "2", "-b", "127.0.0.1:7003",
                         "wsgi_apps:plain"], env=env)
    assert code == 0, out
    settings = effective(out)
    assert settings["threads"] == "2"  # the command line
    assert settings["bind"] == "['127.0.0.1:7003']"  # replaced, not added to
    assert settings["workers"] == "4"  # PREFORK_WSGI_CMD_ARGS over GUNICORN_CMD_ARGS
    assert settings["timeout"] == "7.0"  # GUNICORN_CMD_ARGS over the default
    assert settings["keepalive"] == "4.0"


@pytest.mark.parametrize("variable", ["GUNICORN_CMD_ARGS", "PREFORK_WSGI_CMD_ARGS"])
@pytest.mark.parametrize(
    "value, named",
    [
        ("--threads 0", "--threads: 0 is out of range"),
        ("--bogus 1", "unrecognized arguments: --bogus"),
        ("-w many", "-w/--workers: invalid"),
        ("--config gunicorn.conf.py", "--config: not supported"),
        ("--timeout 'unclosed", "not a shell-quoted command line"),
        ("other:app", "MODULE:APP goes on the command line"),
    ],
)
def test_bad_extra_argument_exits_nonzero_naming_the_variable_and_flag(variable, value, named):
    code, out = run_cli(["--print-config", "wsgi_apps:plain"], env={variable: value})
    assert code == 2, out
    assert f"environment variable {variable}: " in out, out
    assert named in out, out


def test_server_started_with_flags_from_the_environment(start_server, tmp_path):
    log = tmp_path / "access.log"
    s = start_server(["factory:application"], env={
        "GUNICORN_CMD_ARGS": f"-b 127.0.0.1:0 --access-logfile {log} --worker-tmp-dir /dev/shm",
        "PREFORK_WSGI_CMD_ARGS": "--access-logformat 'from-env %(m)s %(U)s %(s)s'"})
    assert requests.get(f"{s.url}/via-env", timeout=5).status_code == 200
    deadline = time.monotonic() + 3
    while "from-env GET /via-env 200" not in log.read_text():
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    assert s.stop() == 0


def test_workers_0_is_thread_mode(start_server):
    code, out = run_cli(["--print-config", "-w", "0", "wsgi_apps:plain"])
    assert code == 0, out
    assert effective(out)["mode"] == "'thread mode (1 process)'"
    s = start_server(["-b", "127.0.0.1:0", "-w", "0", "printing:app"])
    pids = {requests.get(s.url, headers={"Connection": "close"}, timeout=5).text
            for _ in range(3)}
    assert pids == {str(s.proc.pid)}
    assert "process mode" not in s.log()
    assert s.stop() == 0
