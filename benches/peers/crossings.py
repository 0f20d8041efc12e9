"""Which crate files one request crosses, from two callgrind call graphs (see crossings.sh).

usage: crossings.py SRC_ROOT N SMALL_FILES... -- BIG_FILES...
Counts every call from a function defined in one file under SRC_ROOT to a function defined in
another file under SRC_ROOT (a "cross-file call"), in each run, and prints the per-request
difference (BIG - SMALL) / N, so start-up and shutdown cancel:
  files       crate files entered by a request (a file counts when a call enters it)
  cross-file  calls from one crate file into another, per request
  entered-from>1  files entered from more than one other file (the path comes back to them)
  entered>1   files entered more than once per request, with who enters them
Closures called back from std (a crate closure called by Option::map, say) are not counted: the
caller is not a crate file. Debug builds only: in release the inliner merges functions.
"""
import collections
import re
import sys


def parse(paths, root):
    """{(caller_file, callee_file, caller_fn, callee_fn): calls} for crate files."""
    edges = collections.Counter()
    for path in paths:
        names = {"fl": {}, "fn": {}}
        cur_fl = cur_fn = cur_fi = None
        cfl = cfn = None
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"^(fl|fi|fe|fn|cfl|cfi|cfn)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
                if m:
                    kind, idx, name = m.groups()
                    table = "fn" if kind in ("fn", "cfn") else "fl"
                    if name is not None:
                        names[table][idx] = name
                    name = names[table].get(idx)
                    if kind == "fl":
                        cur_fl = cur_fi = name
                        cfl = None
                    elif kind in ("fi", "fe"):
                        cur_fi = name
                    elif kind == "fn":
                        cur_fn = name
                        cur_fi = cur_fl
                        cfl = None
                    elif kind in ("cfl", "cfi"):
                        cfl = name
                    elif kind == "cfn":
                        cfn = name
                    continue
                if line.startswith("calls="):
                    count = int(line.split("=")[1].split()[0])
                    callee_file = cfl if cfl is not None else cur_fi
                    if inside(cur_fl, root) and inside(callee_file, root):
                        edges[(short(cur_fl, root), short(callee_file, root), cur_fn, cfn)] += count
                    cfl = None
    return edges


def inside(path, root):
    return path is not None and path.startswith(root)


def short(path, root):
    return path[len(root):].lstrip("/")


def main():
    root, n = sys.argv[1], int(sys.argv[2])
    rest = sys.argv[3:]
    cut = rest.index("--")
    small, big = parse(rest[:cut], root), parse(rest[cut + 1:], root)
    per = collections.Counter()
    for key in set(small) | set(big):
        d = (big[key] - small[key]) / n
        if d >= 0.5:
            per[key] = d
    cross = {k: v for k, v in per.items() if k[0] != k[1]}
    entered = collections.Counter()
    enterers = collections.defaultdict(list)
    for (src, dst, fn_src, fn_dst), v in cross.items():
        entered[dst] += v
        enterers[dst].append((v, src, fn_src, fn_dst))
    files = set(entered) | {k[0] for k in cross}
    twice = {f: v for f, v in entered.items() if v >= 1.5}
    callers = {f: sorted({src for _, src, _, _ in enterers[f]}) for f in entered}
    shared = {f: c for f, c in callers.items() if len(c) > 1}
    print(f"files {len(files)}")
    print(f"cross-file {sum(cross.values()):.0f}")
    print(f"entered-from>1 {len(shared)}")
    for f, c in sorted(shared.items()):
        print(f"  {f} <- {', '.join(c)}")
    print(f"entered>1 {len(twice)}")
    for f, v in sorted(twice.items(), key=lambda x: -x[1]):
        print(f"  {f}: {v:.1f}")
        for c, src, a, b in sorted(enterers[f], reverse=True):
            print(f"      {c:5.1f}  {src}  {short_fn(a)} -> {short_fn(b)}")


def short_fn(name):
    name = re.sub(r"<[^<>]*>", "", name or "?")
    name = re.sub(r"<[^<>]*>", "", name)
    return name.replace("prefork_pool::", "")[:80]


if __name__ == "__main__":
    main()
