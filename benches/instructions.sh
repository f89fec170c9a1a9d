#!/usr/bin/env bash
# Instructions the server executes per fs.read_file invocation, counted by callgrind: unlike
# rates, CPU time or even cycles, the count does not move with the load of the shared VM, so it
# shows changes of a few percent. The server runs under valgrind (about 50x slower), so the
# group commit batches more than it would natively; compare builds with each other, not with
# the native rate.
#
# Needs: a release build (cargo build --release; `--profile profiling` adds line tables for
# callgrind_annotate), bubblewrap, curl, python3, wrk and valgrind
# (apt-get install wrk valgrind).
#
# Run: bash benches/instructions.sh          (BIN, CONNS=16, SECS=10, PORT=50097)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-./target/release/workspace}
conns=${CONNS:-16}
secs=${SECS:-10}
port=${PORT:-50097}
data=$(mktemp -d)
out=$(mktemp -d)
lua=$(mktemp --suffix .lua)
trap 'kill "$server" 2>/dev/null || true; sleep 0.5; rm -rf "$data" "$out" "$lua"' EXIT
for tool in wrk valgrind callgrind_control curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk valgrind curl python3" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 1; }

wrapper="valgrind --tool=callgrind --callgrind-out-file=$out/cg.out"
wait_steps=300
# shellcheck source=benches/read_load.sh
. benches/read_load.sh
wrk -t1 -c"$conns" -d2s -s "$lua" "$url" >/dev/null   # warm-up, not counted
callgrind_control -z "$server" >/dev/null 2>&1
n=$(wrk -t1 -c"$conns" -d"${secs}s" -s "$lua" "$url" | awk '/requests in/{print $1}')
callgrind_control -d "$server" >/dev/null 2>&1
sleep 1
python3 - "$n" "$out" <<'PY'
import glob, sys
n, out = int(sys.argv[1]), sys.argv[2]
total = 0
# The dump taken after the counters were zeroed: everything the server executed under load.
for path in glob.glob(f"{out}/cg.out.*"):
    for line in open(path):
        if line.startswith("summary:"):
            total += int(line.split()[1])
print("| invocations | server instructions per invocation |")
print("|---|---|")
print(f"| {n} | {total / n:,.0f} |")
PY
