#!/usr/bin/env python3
"""Locked instructions per request, per function: what a server's threads pay for sharing.

A lock-prefixed read-modify-write, an `xchg` with memory or a fence costs some 10-20 ns on these
VMs even when no other core holds the line, and callgrind's instruction count weighs it as one.
This reads two callgrind profiles made with `--dump-instr=yes` (of `locks.sh`: 200 and N+200
sequential kept-alive GETs), finds every locked instruction of each object in its disassembly
(`objdump -d`), and prints the difference per request, per function, largest first.

    python3 locks.py CG_200 CG_N+200 N [--top K]
"""
import collections
import re
import subprocess
import sys


def costs(path):
    """Instruction address -> times executed, per object, from a callgrind profile."""
    cnt = collections.Counter()
    obj = None
    skip = False
    with open(path) as f:
        for line in f:
            if skip:  # the line after `calls=` is the call's inclusive cost
                skip = False
                continue
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("calls="):
                skip = True
            elif line.startswith("0x"):
                parts = line.split()
                if len(parts) >= 3:
                    cnt[(obj, int(parts[0], 16))] += int(parts[2])
    return cnt


LOCKED = re.compile(r"^(lock |xchg\s+%\w+,(-?0x[0-9a-f]+)?\(|mfence)")


def locked_sites(objects):
    """(object, address) -> function, for every locked instruction of `objects`."""
    sites = {}
    for obj in objects:
        dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", obj],
                             capture_output=True, text=True).stdout
        func = None
        for line in dis.splitlines():
            m = re.match(r"^([0-9a-f]+) <(.*)>:", line)
            if m:
                func = m.group(2)
                continue
            m = re.match(r"^\s+([0-9a-f]+):\s+(.*)$", line)
            if m and LOCKED.match(m.group(2)):
                sites[(obj, int(m.group(1), 16))] = func
    return sites


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    a, b, n = costs(sys.argv[1]), costs(sys.argv[2]), int(sys.argv[3])
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    objects = {o for o, _ in b if o and o.startswith("/")}
    per = collections.Counter()
    for key, func in locked_sites(objects).items():
        d = (b.get(key, 0) - a.get(key, 0)) / n
        if d > 0.01:
            per[func[:110]] += d
    print(f"locked instructions per request: {sum(per.values()):.1f}")
    for func, d in per.most_common(top):
        print(f"{d:7.2f}  {func}")


if __name__ == "__main__":
    main()
