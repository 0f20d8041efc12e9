"""``prefork-wsgi``: gunicorn's command line over prefork-pool's server.

Modes: ``-w 1`` (the default, as gunicorn's) runs **thread mode**: one process, no master; the
app is imported once and served by ``--threads`` pool threads. ``-w N`` (N > 1) runs **process
mode**: a master forks N worker processes, each imports the app after its fork (or the master
imports it once before forking, with ``--preload``) and serves it on ``--threads`` threads.

Extra arguments come from the environment as well, as gunicorn's ``GUNICORN_CMD_ARGS``: see
:data:`ENV_ARGS` for the variables and their precedence.
"""

import argparse
import os
import shlex
import signal
import sys

from . import __version__
from .loader import AppLoadError, import_app
from .wrappers import FileWrapper

#: gunicorn's default access log format.
ACCESS_LOG_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"'

#: gunicorn's flags that prefork-wsgi does not implement: a clear error rather than a silent no.
UNSUPPORTED = {
    "-c": "a gunicorn config file (pass the settings as flags)",
    "--config": "a gunicorn config file (pass the settings as flags)",
    "--reload": "reloading on code changes",
    "-D": "daemon mode (run it under a service manager)",
    "--daemon": "daemon mode (run it under a service manager)",
    "-u": "switching user", "--user": "switching user",
    "-g": "switching group", "--group": "switching group",
    "-m": "a umask for the socket", "--umask": "a umask for the socket",
    "--certfile": "TLS (put a TLS proxy in front)", "--keyfile": "TLS (put a TLS proxy in front)",
    "--statsd-host": "statsd metrics",
    "--paste": "PasteDeploy apps", "--paste-global": "PasteDeploy apps",
    "--capture-output": "capturing the app's stdout",
    "--reuse-port": "SO_REUSEPORT listeners",
}


#: The environment variables read for extra arguments (a shell-quoted command line, flags only),
#: lowest precedence first. Each flag is taken from the last source that gives it:
#: ``GUNICORN_CMD_ARGS`` (so a migrating deployment's setting keeps working), then
#: ``PREFORK_WSGI_CMD_ARGS`` (this server's own, which wins over gunicorn's), then the command
#: line, which wins over both (as in gunicorn). A flag given by a source replaces the same flag
#: from a lower one, repeatable ones (``-b``, ``-e``) included. The defaults read from other
#: variables (``PORT``, ``WEB_CONCURRENCY``, ``FORWARDED_ALLOW_IPS``) are below all three.
ENV_ARGS = ("GUNICORN_CMD_ARGS", "PREFORK_WSGI_CMD_ARGS")


class _Refused(Exception):
    """A bad argument in an environment variable's extra arguments."""


class _EnvParser(argparse.ArgumentParser):
    """The parser for an environment variable's arguments: an error raises (for a message that
    names the variable) instead of exiting."""

    def error(self, message):
        raise _Refused(message)


def _int_range(flag, lo, hi=None):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}")
        if value < lo or (hi is not None and value > hi):
            allowed = f"{lo}..{hi}" if hi is not None else f"at least {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range ({allowed})")
        return value

    parse.__name__ = flag
    return parse


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}")
    if not 0 <= value <= 86400:
        raise argparse.ArgumentTypeError(f"{value} is out of range (0..86400 seconds)")
    return value


def _bind(text):
    if text.startswith("unix:"):
        if len(text) == 5:
            raise argparse.ArgumentTypeError("unix: needs a path (unix:/run/app.sock)")
        return text
    if text.startswith("fd://"):
        raise argparse.ArgumentTypeError("fd:// binds are not supported (use systemd's LISTEN_FDS)")
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = text, "8000"
    if not host:
        host = "0.0.0.0"
    if host.startswith("[") and host.endswith("]"):
        host_ok = ":" in host
    else:
        host_ok = bool(host) and " " not in host
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host_ok:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT or unix:PATH")
    return f"{host}:{port}"


def _env_int(name, default):
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        sys.stderr.write(f"prefork-wsgi: error: environment variable {name}={raw!r} is not an integer\n")
        sys.exit(2)
    if value < 1:
        sys.stderr.write(f"prefork-wsgi: error: environment variable {name}={raw!r} must be at least 1\n")
        sys.exit(2)
    return value


def parser(cls=argparse.ArgumentParser):
    p = cls(
        prog="prefork-wsgi",
        description="Serve a WSGI app (Flask, Django, ...) with gunicorn's flags; a view that "
        "calls its own server does not hang.",
        epilog="-w 1 (default) is thread mode: one process; -w N>1 forks N worker processes. "
        "Extra flags are read from the environment variables GUNICORN_CMD_ARGS, then "
        "PREFORK_WSGI_CMD_ARGS (shell-quoted, flags only); a flag given again later replaces the "
        "earlier one, and the command line wins over both.",
    )
    p.add_argument("app", metavar="MODULE:APP", nargs="?",
                   help="the WSGI app: module[:attribute] or module:factory(args)")
    p.add_argument("-b", "--bind", action="append", type=_bind, metavar="ADDRESS",
                   help="HOST:PORT or unix:PATH, repeatable (default 127.0.0.1:8000, or "
                   "0.0.0.0:$PORT when PORT is set)")
    p.add_argument("-w", "--workers", type=_int_range("--workers", 0, 1024),
                   help="worker processes (default $WEB_CONCURRENCY, else 1); 0 or 1: thread "
                   "mode (one process, no master)")
    p.add_argument("--threads", type=_int_range("--threads", 1, 1024), default=1,
                   help="threads per process serving requests (default 1)")
    p.add_argument("-k", "--worker-class", default="sync",
                   help="sync or gthread (both are this server's threads); others are refused")
    p.add_argument("-t", "--timeout", type=_seconds, default=30.0,
                   help="request deadline in seconds: past it the client gets 504 (0: none)")
    p.add_argument("--graceful-timeout", type=_seconds, default=30.0,
                   help="seconds a stop (SIGTERM) waits for requests in flight (default 30)")
    p.add_argument("--keep-alive", type=_seconds, default=2.0,
                   help="seconds an idle keep-alive connection is kept (default 2)")
    p.add_argument("--max-requests", type=_int_range("--max-requests", 0), default=0,
                   help="recycle a worker after this many requests (0: never)")
    p.add_argument("--max-requests-jitter", type=_int_range("--max-requests-jitter", 0), default=0,
                   help="add a random 0..N to --max-requests per worker")
    p.add_argument("--backlog", type=_int_range("--backlog", 1, 65535), default=2048,
                   help="listen backlog (default 2048)")
    p.add_argument("--access-logfile", default=None, metavar="FILE",
                   help="access log file ('-': stdout; default: none)")
    p.add_argument("--access-logformat", default=ACCESS_LOG_FORMAT, metavar="FORMAT",
                   help="access log format, gunicorn's atoms")
    p.add_argument("--error-logfile", "--log-file", default="-", metavar="FILE",
                   help="error log file ('-': stderr, the default)")
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error", "critical"],
                   help="error log level (default info)")
    p.add_argument("--limit-request-line", type=_int_range("--limit-request-line", 0, 1 << 20),
                   default=4094, help="longest request line (0: the server's maximum, 1 MiB)")
    p.add_argument("--limit-request-fields", type=_int_range("--limit-request-fields", 0, 10000),
                   default=100, help="most header fields (0: the server's maximum, 10000)")
    p.add_argument("--limit-request-field_size", "--limit-request-field-size",
                   dest="limit_request_field_size",
                   type=_int_range("--limit-request-field_size", 0, 1 << 20), default=8190,
                   help="longest header field (0: the server's maximum, 1 MiB)")
    p.add_argument("--limit-request-body", type=_int_range("--limit-request-body", 0), default=1 << 30,
                   metavar="BYTES",
                   help="largest request body, larger is 413 (not a gunicorn flag: the server reads "
                   "the whole body, spooling past 1 MiB to a temporary file, before the app runs; "
                   "default 1 GiB; 0: no limit)")
    p.add_argument("--forwarded-allow-ips", default=None, metavar="IPS",
                   help="proxies whose X-Forwarded-* headers are believed, comma-separated "
                   "(default $FORWARDED_ALLOW_IPS, else 127.0.0.1,::1; '*': all)")
    p.add_argument("--chdir", default=None, metavar="DIR",
                   help="change to DIR before loading the app")
    p.add_argument("--pythonpath", default=None, metavar="DIRS",
                   help="comma-separated directories added to sys.path")
    p.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                   help="set an environment variable (repeatable)")
    p.add_argument("--preload", dest="preload_app", action="store_true",
                   help="process mode: import the app in the master before forking")
    p.add_argument("-p", "--pid", dest="pidfile", default=None, metavar="FILE",
                   help="process mode: write the master's pid here")
    p.add_argument("--check-config", action="store_true",
                   help="check the settings and load the app, then exit (0: fine)")
    p.add_argument("--print-config", action="store_true",
                   help="print the effective settings, then exit")
    p.add_argument("--worker-tmp-dir", default=None, metavar="DIR",
                   help="accepted for gunicorn's command lines and unused: the supervisor watches "
                   "its workers without a heartbeat file")
    p.add_argument("-v", "--version", action="version", version=f"prefork-wsgi {__version__}")
    return p


def _check_supported(p, argv, where=""):
    for arg in argv:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag in UNSUPPORTED:
            p.error(f"{where}{flag}: not supported by prefork-wsgi ({UNSUPPORTED[flag]})")


def _given(argv):
    """The settings `argv` gives explicitly (its flags' values, no defaults)."""
    p = parser(_EnvParser)
    for action in p._actions:
        action.default = argparse.SUPPRESS
    return vars(p.parse_args(argv))


def _env_settings(p):
    """The settings of the ENV_ARGS variables, the later variable's flag replacing the earlier's;
    a bad one exits 2 naming the variable and the flag."""
    merged = {}
    for name in ENV_ARGS:
        raw = os.environ.get(name, "")
        if not raw.strip():
            continue
        where = f"environment variable {name}: "
        try:
            argv = shlex.split(raw)
        except ValueError as e:
            p.error(f"{where}{raw!r} is not a shell-quoted command line ({e})")
        _check_supported(p, argv, where)
        try:
            given = _given(argv)
            # The checked values (types, ranges), as the command line's.
            parser(_EnvParser).parse_args(argv)
        except _Refused as e:
            p.error(f"{where}{e}")
        if "app" in given:
            p.error(f"{where}{given['app']!r}: MODULE:APP goes on the command line, flags only "
                    "here")
        merged.update(given)
    return merged


def settings(argv=None):
    """The parsed and checked settings; exits 2 naming the flag on a bad one."""
    argv = list(sys.argv[1:] if argv is None else argv)
    p = parser()
    from_env = _env_settings(p)
    _check_supported(p, argv)
    args = p.parse_args(argv)
    # The command line wins: an environment setting is taken where it gave nothing.
    explicit = _given(argv) if from_env else {}
    for key, value in from_env.items():
        if key not in explicit:
            setattr(args, key, value)
    if args.worker_class not in ("sync", "gthread"):
        p.error(f"argument -k/--worker-class: {args.worker_class!r} is not supported "
                "(sync or gthread: this server's threads)")
    if args.workers is None:
        args.workers = _env_int("WEB_CONCURRENCY", 1)
    # -w 0 is thread mode, as -w 1.
    args.workers = max(args.workers, 1)
    if not args.bind:
        port = os.environ.get("PORT")
        if port:
            try:
                args.bind = [_bind(f"0.0.0.0:{port}")]
            except argparse.ArgumentTypeError:
                p.error(f"environment variable PORT={port!r} is not a port number")
        else:
            args.bind = ["127.0.0.1:8000"]
    for kv in args.env:
        if "=" not in kv:
            p.error(f"argument -e/--env: {kv!r} is not KEY=VALUE")
    if args.forwarded_allow_ips is None:
        args.forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
    if args.access_logfile is not None and args.access_logfile != "-":
        _check_writable(p, "--access-logfile", args.access_logfile)
    if args.error_logfile != "-":
        _check_writable(p, "--error-logfile", args.error_logfile)
    if args.chdir is not None and not os.path.isdir(args.chdir):
        p.error(f"argument --chdir: {args.chdir!r} is not a directory")
    if args.app is None and not args.print_config:
        p.error("the following arguments are required: MODULE:APP")
    return args


def _check_writable(p, flag, path):
    try:
        with open(path, "a"):
            pass
    except OSError as e:
        p.error(f"argument {flag}: cannot open {path!r}: {e.strerror}")


def native_options(args):
    """The dict `_native.serve` takes."""
    return {
        "bind": list(args.bind),
        "workers": args.workers,
        "threads": args.threads,
        "timeout": args.timeout,
        "graceful_timeout": args.graceful_timeout,
        "keepalive": args.keep_alive,
        "max_requests": args.max_requests,
        "max_requests_jitter": args.max_requests_jitter,
        "backlog": args.backlog,
        "accesslog": args.access_logfile,
        "access_log_format": args.access_logformat,
        "errorlog": args.error_logfile,
        "loglevel": args.log_level,
        "limit_request_line": args.limit_request_line or (1 << 20),
        "limit_request_fields": args.limit_request_fields or 10000,
        "limit_request_field_size": args.limit_request_field_size or (1 << 20),
        "limit_request_body": args.limit_request_body or (1 << 63),
        "forwarded_allow_ips": [ip.strip() for ip in args.forwarded_allow_ips.split(",") if ip.strip()],
        "preload_app": args.preload_app,
        "pidfile": args.pidfile,
        "script_name": os.environ.get("SCRIPT_NAME", ""),
    }


def print_config(args):
    shown = dict(native_options(args))
    shown.update({
        "wsgi_app": args.app,
        "chdir": args.chdir or os.getcwd(),
        "mode": "thread mode (1 process)" if args.workers <= 1 else f"process mode ({args.workers} processes)",
        "limit_request_line": args.limit_request_line,
        "limit_request_fields": args.limit_request_fields,
        "limit_request_field_size": args.limit_request_field_size,
        "worker_class": args.worker_class,
        "pythonpath": args.pythonpath,
        "raw_env": args.env,
    })
    width = max(len(k) for k in shown)
    for key in sorted(shown):
        print(f"{key:<{width}} = {shown[key]!r}" if isinstance(shown[key], str) else f"{key:<{width}} = {shown[key]}")


def base_environ(args):
    """What every request's environ starts from."""
    errors = sys.stderr
    if args.error_logfile != "-":
        # The app's wsgi.errors goes where the server's error log goes.
        errors = open(args.error_logfile, "a", buffering=1, encoding="utf-8", errors="replace")
    return {
        "wsgi.version": (1, 0),
        "wsgi.errors": errors,
        # A view waiting on a call to its own server runs beside the spare thread serving it,
        # even with --threads 1.
        "wsgi.multithread": True,
        "wsgi.multiprocess": args.workers > 1,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "wsgi.file_wrapper": FileWrapper,
        "SERVER_SOFTWARE": f"prefork-wsgi/{__version__}",
    }


def prepare(args):
    """--chdir, sys.path, --env, as gunicorn before it loads the app."""
    if args.chdir:
        os.chdir(args.chdir)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    if args.pythonpath:
        for d in reversed([d.strip() for d in args.pythonpath.split(",") if d.strip()]):
            sys.path.insert(0, os.path.abspath(d))
    for kv in args.env:
        key, _, value = kv.partition("=")
        os.environ[key] = value


def _module_exists(spec):
    """Whether the app's top-level module can be found, without importing (executing) it."""
    import importlib.util

    top = spec.partition(":")[0].split(".")[0]
    try:
        return importlib.util.find_spec(top) is not None
    except (ImportError, ValueError):
        return False


def _line_buffered():
    """Process mode: a worker ends with _exit (no interpreter shutdown, so nothing flushes
    stdout then): make print() reach the log line by line."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(line_buffering=True)
        except (AttributeError, ValueError):
            pass


def _load_in_worker(spec):
    """Process mode, in a worker right after its fork."""
    _line_buffered()
    return import_app(spec)


def main(argv=None):
    args = settings(argv)
    if args.print_config:
        print_config(args)
        sys.exit(0)
    prepare(args)
    if args.check_config:
        try:
            import_app(args.app)
        except AppLoadError as e:
            sys.stderr.write(f"Error: {e}\n")
            sys.exit(1)
        print(f"prefork-wsgi: the settings and the app {args.app!r} are fine")
        sys.exit(0)
    from . import _native

    # The server's own handlers stop it (SIGTERM, SIGINT): Python's would raise
    # KeyboardInterrupt in the main thread once it runs Python again.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    options = native_options(args)
    if args.workers <= 1 or args.preload_app:
        # Thread mode (or --preload): the app is imported here, once.
        if args.workers > 1:
            _line_buffered()  # --preload: the workers inherit these streams
        try:
            app = import_app(args.app)
        except AppLoadError as e:
            sys.stderr.write(f"Error: {e}\n")
            sys.exit(4)
        loader = lambda: app  # noqa: E731
    else:
        # Process mode: each worker imports the app after its fork. Fail now, before forking, if
        # the module cannot even be found.
        if not _module_exists(args.app):
            try:
                import_app(args.app)
            except AppLoadError as e:
                sys.stderr.write(f"Error: {e}\n")
                sys.exit(4)
        loader = lambda: _load_in_worker(args.app)  # noqa: E731
    code = _native.serve(options, loader, base_environ(args))
    sys.stdout.flush()
    sys.stderr.flush()
    sys.exit(code)


if __name__ == "__main__":
    main()
