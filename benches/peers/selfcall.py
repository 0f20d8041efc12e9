#!/usr/bin/env python3
"""Self-call detection under load (issue 13, part 4): the selfcall_load server (WORKERS=2,
HANDLER_MS=2) with the detection on (default max_spare) and off (MAX_SPARE=0), against wrk with
`Connection: close` (a new connection per request: what a reverse proxy's default upstream does),
all from other processes; with and without IDLE idle connections held open by another process.

usage: selfcall.py [--rounds 3] [--secs 5] [--conns 16] [--idle 4000] [--port 18500] BIN

Every round runs each configuration once, in an order that rotates from round to round, so a burst
of outside noise hits all of them alike. Each run starts a fresh server, then (for the idle
configurations) a holder process that opens the idle connections, sends nothing, and reopens any
the server closes; then wrk. Prints req/s, p99 and max latency per run, and the medians and ratios.
Loopback only; every process started here is ended (and reaped) on the way out.
"""
import argparse, os, resource, selectors, signal, socket, statistics, subprocess, sys, time

HOLD = "--hold"


def hold(port, n):
    """The idle-connection holder: n connections to port, nothing sent, reopened when closed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    sel = selectors.DefaultSelector()

    def opened():
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)

    for _ in range(n):
        opened()
    print("ready", flush=True)
    while True:
        for key, _ in sel.select(timeout=1):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                s.close()
                opened()


def wait_listening(port, proc, secs=20):
    end = time.time() + secs
    while time.time() < end:
        if proc.poll() is not None:
            sys.exit(f"the server exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("the server does not listen")


def stop(proc, secs=10):
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=secs)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def ms(v):
    """wrk's latency text (`812.00us`, `2.31ms`, `1.20s`) in ms."""
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if v.endswith(unit):
            return float(v[: -len(unit)]) * f
    return float(v)


def run(a, bin_, spare, idle, port):
    env = dict(os.environ, PORT=str(port), WORKERS=str(a.workers), HANDLER_MS=str(a.handler_ms))
    if spare is not None:
        env["MAX_SPARE"] = str(spare)
    server = subprocess.Popen([bin_], env=env, start_new_session=True,
                              stderr=subprocess.PIPE, text=True)
    holder = None
    try:
        wait_listening(port, server)
        if idle:
            holder = subprocess.Popen([sys.executable, __file__, HOLD, str(port), str(idle)],
                                      stdout=subprocess.PIPE, text=True, start_new_session=True)
            if holder.stdout.readline().strip() != "ready":
                sys.exit("the holder did not get ready")
        out = subprocess.run(
            ["wrk", "-t2", f"-c{a.conns}", f"-d{a.secs}s", "--latency", "-H", "Connection: close",
             f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=a.secs + 60).stdout
    finally:
        stop(holder)
        stop(server)
    rps = next(float(l.split()[1]) for l in out.splitlines() if l.startswith("Requests/sec"))
    lat = next(l.split() for l in out.splitlines() if l.strip().startswith("Latency"))
    p99 = next(ms(l.split()[1]) for l in out.splitlines() if l.strip().startswith("99%"))
    errors = next((l.strip() for l in out.splitlines() if "Socket errors" in l), "")
    lookups = next((l.strip() for l in server.stderr.read().splitlines() if "lookups" in l), "")
    return rps, p99, ms(lat[3]), errors, lookups


def main():
    if len(sys.argv) > 1 and sys.argv[1] == HOLD:
        return hold(int(sys.argv[2]), int(sys.argv[3]))
    # A SIGTERM ends the run through the `finally` blocks, which end the server and the holder.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--secs", type=int, default=5)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--idle", type=int, default=4000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--handler-ms", type=int, default=2)
    ap.add_argument("--port", type=int, default=18500)
    ap.add_argument("bins", nargs="+", help="NAME=PATH of selfcall_load builds to compare")
    a = ap.parse_args()
    bins = [b.split("=", 1) for b in a.bins]
    configs = []
    for name, path in bins:
        configs += [(name, "on", None, 0), (name, "off", 0, 0),
                    (name, "on", None, a.idle), (name, "off", 0, a.idle)]
    results = {c[:2] + (c[3],): [] for c in configs}
    for r in range(a.rounds):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for i, (name, mode, spare, idle) in enumerate(order):
            port = a.port + configs.index((name, mode, spare, idle))
            rps, p99, mx, errors, lookups = run(a, dict(bins)[name], spare, idle, port)
            results[(name, mode, idle)].append((rps, p99, mx))
            print(f"round {r + 1} {name:>6} detection {mode:>3} idle {idle:>5}: {rps:8.1f} req/s"
                  f"  p99 {p99:7.1f} ms  max {mx:7.1f} ms  {errors} {lookups}", flush=True)
    print(f"\nmedians over {a.rounds} rounds (load average now {os.getloadavg()[0]:.1f}):")
    med = {k: tuple(statistics.median(x[i] for x in v) for i in range(3)) for k, v in results.items()}
    for (name, mode, idle), (rps, p99, mx) in med.items():
        print(f"{name:>6} detection {mode:>3} idle {idle:>5}: {rps:8.1f} req/s  p99 {p99:7.1f} ms"
              f"  max {mx:7.1f} ms")
    for name, _ in bins:
        on, off = med[(name, "on", 0)][0], med[(name, "off", 0)][0]
        on_idle = med[(name, "on", a.idle)][0]
        print(f"{name}: on/off {on / off:.2f} (target >= 0.9); on with {a.idle} idle / on without"
              f" {on_idle / on:.2f} (target >= 0.8)")


if __name__ == "__main__":
    main()
