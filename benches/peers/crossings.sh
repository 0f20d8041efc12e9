#!/bin/bash
# The crate files one kept-alive GET crosses (issue 18's count): callgrind call graphs of the
# `ours` bench server (thread mode, WORKERS=2) for 200 and N+200 sequential kept-alive GETs
# (seq_drive.py); crossings.py prints the per-request difference: files entered, calls from one
# crate file into another, the files entered from more than one file, and the files entered more
# than once with their callers.
#   bash benches/peers/crossings.sh 18600 1000                  # debug build: every call
#   PROFILE=release bash benches/peers/crossings.sh 18600 1000  # what runs: after inlining
# PROFILE=release builds with line tables into target/crossings (so the release build the other
# benches use is left as it is). CHECKOUT=DIR counts another checkout (an older commit's
# worktree) with its own target.
PORT=${1:-18600}; N=${2:-1000}
here=$(cd "$(dirname "$0")" && pwd)
root=${CHECKOUT:-$(cd "$here/../.." && pwd)}
if [ "${PROFILE:-debug}" = release ]; then
  (cd "$root" && CARGO_PROFILE_RELEASE_DEBUG=line-tables-only CARGO_TARGET_DIR=$root/target/crossings \
    cargo build -q --release -p prefork-pool-benches --bin ours) || exit 1
  bin=$root/target/crossings/release/ours
else
  (cd "$root" && cargo build -q -p prefork-pool-benches --bin ours) || exit 1
  bin=$root/target/debug/ours
fi
out=${TMPDIR:-/tmp}/crossings.$$; mkdir -p $out
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=2 valgrind --tool=callgrind --dump-instr=no --callgrind-out-file=$out/cg.$n.%p $bin >/dev/null 2>&1 &
  vp=$!; sleep 3; python3 $here/seq_drive.py $PORT $n 2>/dev/null; kill -TERM $vp; wait $vp
done
python3 $here/crossings.py "$root/src" $N $out/cg.200.* -- $out/cg.$((N+200)).*
echo "outdir $out"
