#!/usr/bin/env bash
# Where a saturated switch's time goes (issue 5): a flame graph, the top functions per thread,
# and per answered request its CPU, context switches, page faults and system calls.
#
#   benches/profile.sh             # about a minute after the release build; needs `perf`
#
# 1. Builds the release `switch`, `loadgen` and `flamegraph` (benches/src/bin) and a demo data
#    set (10,000 cards, 10,000 orders). With BIN=DIR the three binaries in DIR are used as they
#    are (the suite's test passes its own).
# 2. A switch on a fresh copy of the data, driven by loadgen closed loop (CONNECTIONS x
#    PIPELINE 0200 purchases) for the whole run.
# 3. After WARMUP: `perf record --call-graph dwarf` of the switch for RECORD seconds. Written:
#    switch.svg (the flame graph; each stack's root frame is its thread: shard-N, switch-io,
#    snapshot builders), switch.folded (the folded stacks, for diffing two runs) and top.txt
#    (`perf report`: the functions with the most samples, by thread).
# 4. Then COUNT seconds of `perf stat` (task clock, context switches, CPU migrations, page
#    faults), then COUNT seconds of `perf trace -s` (system calls; it slows the switch, hence
#    apart) on the switch, each divided by the requests the switch answered meanwhile (its
#    /metrics, `switch_messages_total`): summary.txt.
#
# Environment: OUT (default target/profile/<UTC time>), DURABILITY (none; or fsync), SHARDS
# (the switch's default), CONNECTIONS (16), PIPELINE (64), WARMUP (2), RECORD (4), COUNT (3),
# FREQ (perf samples per second per thread, 999), INLINE (1: inlined functions get frames of
# their own, as `perf script` resolves them with addr2line: about 10 s for a release build,
# over a minute for a debug one; 0: `--no-inline`), BIN. Durations are whole seconds.
# A note on `perf`: hardware counters are not available on this VM, so the event is
# `cpu-clock` (a timer): the graph's weights are nanoseconds of CPU. `--call-graph dwarf`
# because the release build keeps no frame pointers (it has debug info: Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh

OUT=${OUT:-target/profile/$(date -u +%Y%m%dT%H%M%SZ)}
DURABILITY=${DURABILITY:-none}
SHARDS=${SHARDS:-}
CONNECTIONS=${CONNECTIONS:-16}
PIPELINE=${PIPELINE:-64}
WARMUP=${WARMUP:-2}
RECORD=${RECORD:-4}
COUNT=${COUNT:-3}
FREQ=${FREQ:-999}
INLINE=${INLINE:-1}

if ! command -v perf >/dev/null 2>&1; then
  echo "profile.sh needs perf (Debian: apt-get install linux-perf)" >&2
  exit 2
fi
if ! perf record -q -o /dev/null -e cpu-clock -- true >/dev/null 2>&1; then
  echo "perf cannot record here (kernel.perf_event_paranoid is $(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo unknown); run as root or lower it)" >&2
  exit 2
fi

if [ -z "${BIN:-}" ]; then
  echo "== building release binaries" >&2
  cargo build --release -p switch -p loadgen -p benches --bin switch --bin loadgen --bin flamegraph >&2
  BIN=target/release
fi
for b in switch loadgen flamegraph; do
  if [ ! -x "$BIN/$b" ]; then
    echo "no $b binary in $BIN" >&2
    exit 2
  fi
done
mkdir -p "$OUT"
demo_data "$BIN/switch" "$OUT/data"

SWITCH_PID=
LOADGEN_PID=
cleanup() {
  for pid in $LOADGEN_PID $SWITCH_PID; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
  rm -rf "$OUT/state"
}
trap cleanup EXIT

cp -r "$OUT/data" "$OUT/state"
shard_args=()
if [ -n "$SHARDS" ]; then shard_args=(--shards "$SHARDS"); fi
"$BIN/switch" --data-dir "$OUT/state" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --durability "$DURABILITY" --log info "${shard_args[@]}" 2>"$OUT/switch.log" &
SWITCH_PID=$!
ISO_ADDR=$(wait_for "$OUT/switch.log" '.*switch ready.* iso_addr=\([0-9.:]*\).*')
ADMIN_ADDR=$(wait_for "$OUT/switch.log" '.*switch ready.* admin_addr=\([0-9.:]*\).*')

total=$((WARMUP + RECORD + 2 * COUNT + 2))
echo "== loadgen closed loop ${CONNECTIONS}x${PIPELINE} for ${total}s against a $DURABILITY switch" >&2
"$BIN/loadgen" --data-dir "$OUT/data" --target "$ISO_ADDR" --connections "$CONNECTIONS" \
  --pipeline "$PIPELINE" --mix purchase=100 --warmup 0s --duration "${total}s" \
  --report "$OUT/loadgen.json" >"$OUT/loadgen.out" 2>"$OUT/loadgen.err" &
LOADGEN_PID=$!
sleep "$WARMUP"

echo "== perf record of the switch for ${RECORD}s" >&2
perf record -q -F "$FREQ" -e cpu-clock --call-graph dwarf,16384 -p "$SWITCH_PID" \
  -o "$OUT/switch.perf" -- sleep "$RECORD" >/dev/null 2>"$OUT/perf-record.err"

# answered: the switch's answers so far (every request MTI and response code).
answered() {
  scrape "$ADMIN_ADDR" | awk '/^switch_messages_total\{/ { n += $2 } END { printf "%d", n }'
}

echo "== perf stat of the switch for ${COUNT}s" >&2
stat_before=$(answered)
stat_t0=$(date +%s.%N)
perf stat -x, -e task-clock,context-switches,cpu-migrations,page-faults -p "$SWITCH_PID" \
  -o "$OUT/perf-stat.csv" -- sleep "$COUNT" 2>/dev/null
stat_t1=$(date +%s.%N)
stat_after=$(answered)

# Apart from the count above: tracing every system call slows the switch down a lot.
echo "== perf trace -s of the switch for ${COUNT}s" >&2
trace_before=$(answered)
trace_ok=1
perf trace -s -p "$SWITCH_PID" -o "$OUT/perf-trace.txt" -- sleep "$COUNT" >/dev/null 2>"$OUT/perf-trace.err" || trace_ok=0
trace_after=$(answered)

rc=0
wait "$LOADGEN_PID" || rc=$?
LOADGEN_PID=
if [ "$rc" -ge 2 ]; then
  echo "loadgen failed (exit $rc):" >&2
  cat "$OUT/loadgen.err" >&2
  exit 1
fi

echo "== drawing" >&2
inline_args=()
if [ "$INLINE" = 0 ]; then inline_args=(--no-inline); fi
perf script -i "$OUT/switch.perf" "${inline_args[@]}" 2>/dev/null >"$OUT/switch.script"
"$BIN/flamegraph" "$OUT/switch.script" --out "$OUT/switch.svg" --folded "$OUT/switch.folded" \
  --title "switch, $DURABILITY, closed loop ${CONNECTIONS}x${PIPELINE} purchases (cpu-clock)" >&2
rm -f "$OUT/switch.script"
perf report -i "$OUT/switch.perf" --no-children --sort comm,symbol -g none --percent-limit 0.5 \
  --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | cut -c1-160 | head -n 60 >"$OUT/top.txt"

n=$((stat_after - stat_before))
traced=$((trace_after - trace_before))
{
  echo "switch ($DURABILITY), closed loop ${CONNECTIONS}x${PIPELINE} 0200 purchases: $(sed 's/^loadgen: //' "$OUT/loadgen.out")"
  awk -v n="$n" -v t0="$stat_t0" -v t1="$stat_t1" -F, '
    BEGIN { secs = t1 - t0; printf "answered in the %.1f s counted: %d (%.0f/s)\n", secs, n, n / secs }
    $3 == "task-clock" { printf "CPU per answer: %.2f us\n", $1 * 1000 / n }
    $3 == "context-switches" || $3 == "cpu-migrations" || $3 == "page-faults" {
      printf "%s per answer: %.4f\n", $3, $1 / n
    }' "$OUT/perf-stat.csv"
  if [ "$trace_ok" = 1 ]; then
    echo "system calls per answer (perf trace -s, all threads; $traced answered while traced):"
    awk -v n="$traced" '$1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ { c[$1] += $2 }
      END { for (k in c) printf "  %-16s %.4f\n", k, c[k] / n }' "$OUT/perf-trace.txt" | sort -k2 -gr | head -n 12
  else
    echo "system calls: perf trace failed ($(head -n 1 "$OUT/perf-trace.err"))"
  fi
  # The folded stacks' root frame is the thread's name; their last field the CPU nanoseconds.
  echo "switch CPU by thread (perf record):"
  awk '{ t = $0; sub(/;.*/, "", t); w[t] += $NF; all += $NF }
    END { for (t in w) printf "  %-16s %5.1f%%\n", t, 100 * w[t] / all }' "$OUT/switch.folded" | sort -k2 -gr
  echo "top functions (perf report --no-children, by thread): $OUT/top.txt"
  head -n 15 "$OUT/top.txt"
  echo "flame graph: $OUT/switch.svg (folded stacks: $OUT/switch.folded)"
} | tee "$OUT/summary.txt"
