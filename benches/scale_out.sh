#!/usr/bin/env bash
# Scale-out benchmark (issue 6): three switch replicas sharing one PostgreSQL database behind
# HAProxy (deploy/haproxy/haproxy.cfg), against one embedded switch, in the same run and with
# the same load.
#
#   benches/scale_out.sh            # about a minute after the release build
#
# Needs a running PostgreSQL where STORE_URL's role may CREATE DATABASE (.ci/run sets one up:
# role switch/switch on 127.0.0.1:5432) and haproxy on PATH.
# 1. Builds release `switch` and `loadgen`; writes demo data (10,000 cards, 10,000 orders).
# 2. Embedded: one `switch` (default durability fsync), loadgen closed loop.
# 3. Scale-out: a fresh database, `switch import`, three `switch serve --store` replicas
#    (--proxy-protocol), HAProxy in front; the same loadgen through HAProxy.
# 4. Prints a table (also $OUT/summary.md) with the CPU time each part used per answered
#    request (/proc, during the measured part: steadier than the rate on a shared machine);
#    reports and logs stay in $OUT.
#
# Environment: OUT (target/scale-out/<UTC time>), STORE_URL
# (postgres://switch:switch@127.0.0.1:5432/postgres), DURATION (10s), WARMUP (2s),
# CONNECTIONS (16), PIPELINE (64), MIX (purchase=100), SHARDS (store workers per replica, 1: the
# switch's default with --store), SKIP_EMBEDDED (0), BIN (a directory with `switch` and
# `loadgen` to use instead of building, e.g. another commit's for an A/B run).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh

OUT=${OUT:-target/scale-out/$(date -u +%Y%m%dT%H%M%SZ)}
STORE_URL=${STORE_URL:-postgres://switch:switch@127.0.0.1:5432/postgres}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
CONNECTIONS=${CONNECTIONS:-16}
PIPELINE=${PIPELINE:-64}
MIX=${MIX:-purchase=100}
SHARDS=${SHARDS:-1}

command -v haproxy >/dev/null || { echo "haproxy is not installed" >&2; exit 1; }
command -v psql >/dev/null || { echo "psql is not installed" >&2; exit 1; }
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
if [ -z "${BIN:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release -p switch -p loadgen >&2
  BIN=target/release
fi
mkdir -p "$OUT"
demo_data "$BIN/switch" "$OUT/data"

cleanup() {
  stop_started
  if [ -n "${DB:-}" ]; then
    psql "$STORE_URL" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  fi
}
trap cleanup EXIT

wait_ready() {
  for _ in $(seq 1 100); do
    if "$BIN/switch" healthcheck --admin "$1" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "switch at $1 never became ready" >&2
  exit 1
}

# CPU ticks of the processes named $1 so far.
ticks_named() {
  # shellcheck disable=SC2046 # one PID per word
  ticks_of $(pgrep -x "$1")
}

# Runs loadgen; also writes $OUT/$name.cpu: CPU ticks of switch, postgres, haproxy and the whole
# machine (loadgen and anything else running included) during the measured part.
load() {
  local name=$1 target=$2
  "$BIN/loadgen" --target "$target" --data-dir "$OUT/data" --connections "$CONNECTIONS" \
    --pipeline "$PIPELINE" --duration "$DURATION" --warmup "$WARMUP" --mix "$MIX" \
    --report "$OUT/$name.json" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  local lg=$! before after
  sleep "${WARMUP%s}"
  before="$(ticks_named switch) $(ticks_named postgres) $(ticks_named haproxy) $(machine_ticks)"
  sleep "${DURATION%s}"
  after="$(ticks_named switch) $(ticks_named postgres) $(ticks_named haproxy) $(machine_ticks)"
  wait "$lg" || true
  echo "$before $after" >"$OUT/$name.cpu"
  tail -n 1 "$OUT/$name.err"
}

# 2. Embedded (SKIP_EMBEDDED=1 leaves it out, e.g. to profile the scale-out run alone).
if [ "${SKIP_EMBEDDED:-0}" != 1 ]; then
  mkdir -p "$OUT/embedded" && cp "$OUT/data/"*.csv "$OUT/embedded/"
  "$BIN/switch" serve --data-dir "$OUT/embedded" --listen 127.0.0.1:38583 \
    --admin-listen 127.0.0.1:39583 >"$OUT/embedded.log" 2>&1 &
  EMBEDDED=$!
  PIDS+=("$EMBEDDED")
  wait_ready 127.0.0.1:39583
  echo "== embedded" >&2
  load embedded 127.0.0.1:38583 >&2
  kill -TERM "$EMBEDDED"
  wait "$EMBEDDED" || true
fi

# 3. Three replicas + PostgreSQL behind HAProxy.
DB=switch_bench_$$
psql "$STORE_URL" -qc "CREATE DATABASE $DB" >&2
DB_URL=${STORE_URL%/*}/$DB
"$BIN/switch" import --store "$DB_URL" --data-dir "$OUT/data" >&2
set -a
# shellcheck source=../deploy/haproxy/loopback.env
. deploy/haproxy/loopback.env
set +a
for n in 1 2 3; do
  iso_var=SWITCH_${n}_ISO
  admin_var=SWITCH_${n}_ADMIN_PORT
  "$BIN/switch" serve --store "$DB_URL" --proxy-protocol --shards "$SHARDS" \
    --listen "${!iso_var}" --admin-listen "127.0.0.1:${!admin_var}" \
    --data-dir "$OUT/replica-$n" >"$OUT/replica-$n.log" 2>&1 &
  PIDS+=("$!")
done
for n in 1 2 3; do
  admin_var=SWITCH_${n}_ADMIN_PORT
  wait_ready "127.0.0.1:${!admin_var}"
done
haproxy -db -f deploy/haproxy/haproxy.cfg >"$OUT/haproxy.log" 2>&1 &
PIDS+=("$!")
sleep 3 # HAProxy's health checks mark the replicas up (rise 2, inter 1s)
echo "== three replicas + PostgreSQL via HAProxy" >&2
load scale-out "$HAPROXY_BIND" >&2

row() {
  local name=$1 what=$2
  python3 - "$OUT/$name.json" "$what" "$(getconf CLK_TCK)" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
l = r["latency_us"]
# CPU microseconds per answered request, from the .cpu file next to the report.
c = [int(x) for x in open(sys.argv[1][:-len("json")] + "cpu").read().split()]
tick_us = 1e6 / int(sys.argv[3])
us = [(c[i + 4] - c[i]) * tick_us / max(r["received"], 1) for i in range(4)]
print(f"| {sys.argv[2]} | {r['tps']:,.0f} | {r['sent']} | {r['received']} | {r['errors']} | {r['timeouts']} | {l['p50']/1000:.2f} | {l['p99']/1000:.2f} | {us[0]:.1f} | {us[1]:.1f} | {us[2]:.1f} | {us[3]:.1f} |")
EOF
}
{
  echo "Scale-out benchmark, $(date -u +%FT%TZ), $(nproc) cores, load before: $LOAD_BEFORE"
  echo "loadgen closed loop ${CONNECTIONS}x${PIPELINE}, mix $MIX, $DURATION after $WARMUP warm-up"
  echo
  echo "CPU columns: microseconds of CPU per answered request during the measured part"
  echo
  echo "| setup | answered/s | sent | received | errors | timeouts | p50 ms | p99 ms | CPU switch | CPU postgres | CPU haproxy | CPU machine |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
  if [ -f "$OUT/embedded.json" ]; then row embedded "one switch, embedded store (fsync)"; fi
  row scale-out "3 replicas + PostgreSQL via HAProxy"
} | tee "$OUT/summary.md"
