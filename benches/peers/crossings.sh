#!/bin/bash
# The crate files one kept-alive GET crosses (issue 18's count): callgrind call graphs of a debug
# build of the `ours` bench server (thread mode, WORKERS=2) for 200 and N+200 sequential kept-alive
# GETs (seq_drive.py); crossings.py prints the per-request difference: files entered, calls from
# one crate file into another, and the files entered more than once with their callers.
#   bash benches/peers/crossings.sh 18600 1000
PORT=${1:-18600}; N=${2:-1000}
here=$(cd "$(dirname "$0")" && pwd); root=$(cd "$here/../.." && pwd)
cargo build -q -p prefork-pool-benches --bin ours || exit 1
bin=$root/target/debug/ours
out=${TMPDIR:-/tmp}/crossings.$$; mkdir -p $out
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=2 valgrind --tool=callgrind --dump-instr=no --callgrind-out-file=$out/cg.$n.%p $bin >/dev/null 2>&1 &
  vp=$!; sleep 3; python3 $here/seq_drive.py $PORT $n 2>/dev/null; kill -TERM $vp; wait $vp
done
python3 $here/crossings.py "$root/src" $N $out/cg.200.* -- $out/cg.$((N+200)).*
echo "outdir $out"
