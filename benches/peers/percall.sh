#!/bin/bash
# Machine-independent cost per request of one server binary (PORT, WORKERS=2): callgrind
# instructions, strace -c syscalls and perf context switches per request, each the difference
# between N+200 and 200 sequential kept-alive GETs (benches/peers/seq_drive.py), so start-up cancels.
#   benches/peers/percall.sh target/release/ours 18500 2000
# usage: percall.sh BIN PORT N  -> callgrind Ir/req, strace syscalls/req, ctx switches/req
# REQ_PATH=/ drives another target (the axum bins: `REQ_PATH=/ percall.sh target/release/axum_plain
# 18500 2000`). A supervisor's worker processes are forked children: callgrind writes one file per
# process (%p) and the totals of a run add up every process of it.
BIN=$1; PORT=$2; N=${3:-2000}; W=${WORKERS:-2}
out=${TMPDIR:-/tmp}/percall.$(basename $BIN).$$
mkdir -p $out
# callgrind: warm run of 200, then N; diff of totals
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=$W valgrind --tool=callgrind --callgrind-out-file=$out/cg.$n.%p $BIN >/dev/null 2>&1 &
  vp=$!; sleep 1.5; python3 $(dirname "$0")/seq_drive.py $PORT $n 2>/dev/null; kill -TERM $vp; wait $vp
done
total() { for f in $out/cg.$1.*; do grep -h '^summary\|^totals' $f | head -1; done | awk '{s+=$2} END {print s}'; }
a=$(total 200); b=$(total $((N+200)))
echo "instr/req $(( (b-a)/N ))"
# strace
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=$W strace -f -c -o $out/st.$n $BIN >/dev/null 2>&1 &
  sp=$!; sleep 0.5; python3 $(dirname "$0")/seq_drive.py $PORT $n 2>/dev/null; kill -TERM $(pgrep -P $sp); wait $sp
done
a=$(grep total $out/st.200 | awk '{print $(NF-2)}'); b=$(grep total $out/st.$((N+200)) | awk '{print $(NF-2)}')
echo "syscalls/req $(python3 -c "print(round(($b-$a)/$N,2))")"
echo "-- strace top (N+200 run):"; head -14 $out/st.$((N+200))
# perf ctx switches
for n in 200 $((N+200)); do
  PORT=$PORT WORKERS=$W perf stat -e context-switches,cpu-migrations -x, -o $out/pf.$n $BIN >/dev/null 2>&1 &
  pp=$!; sleep 0.5; python3 $(dirname "$0")/seq_drive.py $PORT $n 2>/dev/null; kill -TERM $(pgrep -P $pp); wait $pp
done
a=$(grep context-switches $out/pf.200 | cut -d, -f1); b=$(grep context-switches $out/pf.$((N+200)) | cut -d, -f1)
echo "ctxsw/req $(python3 -c "print(round(($b-$a)/$N,2))")"
echo "outdir $out"
