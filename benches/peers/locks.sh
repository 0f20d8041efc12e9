#!/bin/bash
# Locked instructions per request (lock-prefixed read-modify-writes, xchg, fences: some 10-20 ns
# each on a VM even uncontended, one instruction each in callgrind's count), per function, for one
# server binary (PORT, WORKERS=2): callgrind with --dump-instr over 200 and N+200 sequential
# kept-alive GETs (seq_drive.py), the difference per request (locks.py).
#   bash benches/peers/locks.sh target/release/ours 18500 2000
#   bash benches/peers/locks.sh target/release/hyper 18501 2000     # the peer, for comparison
BIN=$(realpath "$1"); PORT=$2; N=${3:-2000}; W=${WORKERS:-2}
here=$(cd "$(dirname "$0")" && pwd)
out=${TMPDIR:-/tmp}/locks.$(basename "$BIN").$$
mkdir -p "$out"
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=$W valgrind --tool=callgrind --dump-instr=yes --compress-pos=no \
    --compress-strings=no --callgrind-out-file="$out/cg.$n" "$BIN" >/dev/null 2>&1 &
  vp=$!; sleep 1.5; python3 "$here/seq_drive.py" "$PORT" "$n" 2>/dev/null; kill -TERM $vp; wait $vp
done
python3 "$here/locks.py" "$out/cg.200" "$out/cg.$((N+200))" "$N" --top "${TOP:-25}"
rm -rf "$out"
