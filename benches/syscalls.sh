#!/usr/bin/env bash
# Counted costs (not rates) of one fs.read_file invocation: system calls, context switches and
# CPU time of the server and of the session's runner, per invocation, sequential and with 64
# connections. Counts do not depend on how busy the shared VM is, unlike throughput.
#
# Needs: a release build (cargo build --release), bubblewrap, curl, python3, wrk and perf
# (apt-get install wrk linux-perf), and permission to read tracepoints (run as root or lower
# kernel.perf_event_paranoid).
#
# Run: bash benches/syscalls.sh            (CONNS="1 64" by default, PORT=50099)
set -euo pipefail
cd "$(dirname "$0")/.."
port=${PORT:-50099}
bin=${BIN:-./target/release/workspace}
data=$(mktemp -d)
lua=$(mktemp --suffix .lua)
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data" "$lua"' EXIT
for tool in wrk perf curl python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool: apt-get install wrk linux-perf curl python3" >&2; exit 1; }
done
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 1; }

# shellcheck source=benches/read_load.sh
. benches/read_load.sh
# The runner inside the session's sandbox (bwrap's own command lines start with `bwrap`).
runner=$(pgrep -n -f "^/opt/workspace/bin/workspace runner")

echo "| connections | invocations/s | server syscalls | server context switches | server CPU µs | runner syscalls | runner context switches | runner CPU µs |"
echo "|---|---|---|---|---|---|---|---|"
for conns in ${CONNS:-1 64}; do
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p "$server" -o "$data/s.csv" -- sleep 5 &
  ps=$!
  perf stat -x, -e raw_syscalls:sys_enter,context-switches,task-clock -p "$runner" -o "$data/r.csv" -- sleep 5 &
  pr=$!
  sleep 0.2
  done_requests=$(wrk -t1 -c"$conns" -d4s -s "$lua" "$url" | awk '/requests in/{print $1}')
  wait "$ps" "$pr"
  python3 - "$conns" "$done_requests" "$data/s.csv" "$data/r.csv" <<'PY'
import sys
conns, n = sys.argv[1], int(sys.argv[2])
def counts(path):
    values = {}
    for line in open(path):
        parts = line.strip().split(",")
        if len(parts) > 2 and parts[0].replace(".", "", 1).isdigit():
            values[parts[2]] = float(parts[0])
    if "raw_syscalls:sys_enter" not in values:
        sys.exit(f"could not read {path}: {open(path).read()}")
    # task-clock is in milliseconds of CPU time; reported as microseconds per invocation.
    return (values["raw_syscalls:sys_enter"] / n, values["context-switches"] / n,
            values["task-clock"] * 1000 / n)
s, r = counts(sys.argv[3]), counts(sys.argv[4])
print(f"| {conns} | {n / 4:.0f} | {s[0]:.1f} | {s[1]:.2f} | {s[2]:.1f} | {r[0]:.1f} | {r[1]:.2f} | {r[2]:.1f} |")
PY
done
