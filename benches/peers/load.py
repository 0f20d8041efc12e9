#!/usr/bin/env python3
"""Side-by-side HTTP load with wrk in its own process: req/s, p50/p99 latency and server CPU
microseconds per request, in alternated rounds.

usage: load.py [--rounds 3] [--secs 4] [--conns 4,32] [--threads 1]
               [--path /get_hello_world?session_id=x] [--post] [--baseline hyper] NAME=PORT=CMD ...

Each CMD is started (shell, own session, stdin a pipe that stays open) with PORT in its environment
and must listen on 127.0.0.1:PORT. For each connection count, each round runs wrk once against every
server in turn, so a burst of outside noise hits all of them alike. Server CPU is the utime+stime of
the server's process tree (the server and its children, e.g. pre-forked workers) over each wrk run,
from /proc, divided by the requests wrk counted. Figures are medians over the rounds; p99 also shows
its range. Ratios are against --baseline. Loopback only; every run is bounded; every server is ended
(SIGTERM to its process group, then SIGKILL) on the way out.

The same as /work/shared/tools/cpu_per_req.py, plus p50, several connection counts per start, the
range of the rounds, socket errors, and a check that each server answers the path before it is timed.
"""
import argparse, os, signal, socket, statistics, subprocess, sys, tempfile, time, urllib.request

ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--secs", type=int, default=4)
ap.add_argument("--conns", default="4,32", help="comma-separated wrk connection counts")
ap.add_argument("--threads", type=int, default=1, help="wrk threads")
ap.add_argument("--path", default="/get_hello_world?session_id=x")
ap.add_argument("--post", action="store_true", help="POST a small JSON body instead of GET")
ap.add_argument("--close", action="store_true",
                help="Connection: close on every request (a connection per request, as nginx's "
                     "default upstream)")
ap.add_argument("--baseline", default="hyper", help="server the ratios are taken against")
ap.add_argument("servers", nargs="+", help="NAME=PORT=CMD")
a = ap.parse_args()
TICK = os.sysconf("SC_CLK_TCK")
CLOSE_LUA = 'wrk.headers["Connection"] = "close"\n'
POST_LUA = 'wrk.method = "POST"\nwrk.body = "{}"\nwrk.headers["Content-Type"] = "application/json"\n'


def tree(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu(pid):
    s = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            s += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return s / TICK


def wait_port(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def ms(text):
    """wrk's latency ('812.00us', '2.31ms', '1.02s', '1.00m') in milliseconds."""
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3), ("m", 6e4)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * f
    return float("nan")


def parse(out):
    lines = out.splitlines()
    def first(pred, pick):
        return next((pick(l) for l in lines if pred(l)), None)
    rps = first(lambda l: l.startswith("Requests/sec"), lambda l: float(l.split()[1]))
    total = first(lambda l: "requests in" in l, lambda l: int(l.split()[0]))
    if rps is None or total is None:
        raise RuntimeError("wrk printed no result:\n" + out)
    pct = {l.split()[0]: ms(l.split()[1]) for l in lines
           if l.strip().split()[:1] and l.strip().split()[0] in ("50%", "75%", "90%", "99%")}
    lat_max = first(lambda l: l.strip().startswith("Latency") and len(l.split()) >= 4,
                    lambda l: ms(l.split()[3]))
    non2 = first(lambda l: "Non-2xx" in l, lambda l: int(l.split()[-1])) or 0
    errs = first(lambda l: "Socket errors" in l,
                 lambda l: sum(int(x.strip(",")) for x in l.split()[3::2])) or 0
    return dict(rps=rps, total=total, p50=pct.get("50%"), p99=pct.get("99%"), max=lat_max,
                bad=non2 + errs)


# A SIGTERM (run.sh's trap) ends the run through the `finally` below, which ends the servers; so
# does the death of the parent (run.sh killed), through PR_SET_PDEATHSIG where Linux has it.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
try:
    import ctypes
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
procs, servers = [], []
lua = None
try:
    if a.post or a.close:
        lua = tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False)
        lua.write((POST_LUA if a.post else "") + (CLOSE_LUA if a.close else ""))
        lua.close()
    for spec in a.servers:
        name, port, cmd = spec.split("=", 2)
        p = subprocess.Popen(cmd, shell=True, env=dict(os.environ, PORT=port), stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        procs.append(p)
        if not wait_port(int(port)):
            sys.exit(f"{name} did not listen on 127.0.0.1:{port} (command: {cmd})")
        url = f"http://127.0.0.1:{port}{a.path}"
        req = urllib.request.Request(url, data=b"{}" if a.post else None,
                                     method="POST" if a.post else "GET")
        with urllib.request.urlopen(req, timeout=5) as r:
            if not 200 <= r.status < 300:
                sys.exit(f"{name} answers {r.status} to {url}")
        servers.append((name, int(port), p))
    time.sleep(0.5)
    conns = [int(c) for c in a.conns.split(",")]
    res = {(c, n): [] for c in conns for n, _, _ in servers}
    for c in conns:
        for _ in range(a.rounds):
            for name, port, p in servers:
                cmd = ["wrk", f"-t{a.threads}", f"-c{c}", f"-d{a.secs}s", "--latency"]
                if lua:
                    cmd += ["-s", lua.name]
                c0 = cpu(p.pid)
                out = subprocess.run(cmd + [f"http://127.0.0.1:{port}{a.path}"], capture_output=True,
                                     text=True, timeout=a.secs + 30).stdout
                c1 = cpu(p.pid)
                if p.poll() is not None:
                    sys.exit(f"{name} exited (status {p.returncode}) during the run")
                r = parse(out)
                r["us"] = (c1 - c0) * 1e6 / max(r["total"], 1)
                res[(c, name)].append(r)
    med = lambda xs: statistics.median(xs)
    print(f"wrk -t{a.threads} --latency, {a.rounds} rounds x {a.secs} s, alternated; "
          f"{'POST' if a.post else 'GET'} {a.path}; medians over the rounds (p99 also min-max)")
    for c in conns:
        print(f"\n-c{c}")
        print(f"{'server':<10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 min-max':>15}"
              f"{'max ms':>9}{'cpu us/req':>12}{'bad':>6}")
        for name, _, _ in servers:
            rs = res[(c, name)]
            p99s = [r["p99"] for r in rs]
            print(f"{name:<10}{med([r['rps'] for r in rs]):>9.0f}{med([r['p50'] for r in rs]):>9.2f}"
                  f"{med(p99s):>9.2f}{f'{min(p99s):.2f}-{max(p99s):.2f}':>15}"
                  f"{max(r['max'] for r in rs):>9.1f}{med([r['us'] for r in rs]):>12.1f}"
                  f"{sum(r['bad'] for r in rs):>6}")
        if (c, a.baseline) in res:
            b = res[(c, a.baseline)]
            for name, _, _ in servers:
                if name == a.baseline:
                    continue
                rs = res[(c, name)]
                print(f"  {name}/{a.baseline}: req/s {med([r['rps'] for r in rs]) / med([r['rps'] for r in b]):.2f}x, "
                      f"p99 {med([r['p99'] for r in rs]) / med([r['p99'] for r in b]):.2f}x, "
                      f"cpu/req {med([r['us'] for r in rs]) / med([r['us'] for r in b]):.2f}x")
    print("\n(bad = non-2xx answers + socket errors, summed over the rounds)")
finally:
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except OSError:
            pass
    deadline = time.time() + 5
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except OSError:
            pass
    if lua:
        os.unlink(lua.name)
