# Sourced by the counting scripts (syscalls.sh, instructions.sh): starts the server, creates a
# session holding a 512-byte file and writes the wrk script that reads it.
#
# Expects: $bin, $port, $data (a scratch directory), $lua (a file for the wrk script), and
# optionally $wrapper (a command the server runs under, e.g. valgrind) and $wait_steps (tenths
# of a second to wait for the server, 50 by default).
# Sets: $server (its pid), $session, $url (the fs.read_file invoke URL).

# shellcheck disable=SC2086
LOG_LEVEL=warn ${wrapper:-} "$bin" serve --port "$port" --data-dir "$data" >"$data/serve.log" 2>&1 &
server=$!
for _ in $(seq "${wait_steps:-50}"); do curl -sf "localhost:$port/healthz" >/dev/null && break; sleep 0.1; done
session=$(curl -sf -X POST "localhost:$port/v1/sessions" -H 'content-type: application/json' \
  -d '{"principal":{"tenant_id":"bench","actor_id":"bench","roles":["developer"]}}' |
  python3 -c 'import sys,json;print(json.load(sys.stdin)["session"]["id"])')
content=$(python3 -c 'print("x"*512)')
curl -sf -o /dev/null -X POST "localhost:$port/v1/sessions/$session/tools/fs.write_file/invoke" \
  -H 'content-type: application/json' \
  -d "{\"approved\":true,\"args\":{\"path\":\"bench/read.txt\",\"content\":\"$content\"}}"
cat >"$lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"args":{"path":"bench/read.txt"}}'
wrk.headers["Content-Type"] = "application/json"
LUA
url="http://127.0.0.1:$port/v1/sessions/$session/tools/fs.read_file/invoke"
