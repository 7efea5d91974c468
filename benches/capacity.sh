#!/usr/bin/env bash
# Capacity benchmark (issue 5): how fast is the switch on this machine, and how does that
# compare with what the machine's loopback and our own client can do at all?
#
#   benches/capacity.sh            # about 3 minutes after the release build
#
# 1. Builds the release `switch`, `loadgen` and `vcpu_probe`, writes a demo data set (10,000
#    cards, 10,000 orders) with `switch demo-data`, and measures how steadily the vCPUs run
#    with nothing else busy (`vcpu_probe`: benches/src/vcpu_probe.rs; again after the runs).
# 2. Raw limit: `loadgen echo-server` (length-prefixed echo: framing and TCP only, no ISO 8583
#    decoding) driven by `loadgen --mode echo`, the same client code as against the switch,
#    closed loop 16 connections x 64 in flight.
# 3. For each durability (`none`, then the default `fsync`): a fresh switch on a fresh copy of
#    the data, closed loop to saturation (16 x 64, 0200 purchases), then open loop at 50% of
#    that rate on the same switch (latency from each request's due time), while it builds the
#    snapshots the saturation run made due; then another fresh switch, open loop at 25, 50
#    and 75% of the saturation rate. During each switch run the switch's snapshot builders
#    are sampled every half second from its /metrics (`switch_snapshot_builders`).
# 3b. Latency floor: the echo server again, open loop at each durability's 50% rate: what
#    the machine, its scheduler and loadgen's own pacing add to any open-loop latency.
# 4. Prints a table (also in $OUT/summary.md) with, beside the rates and latencies, the CPU
#    time per answered request of the server (switch or echo server), of loadgen and of the
#    whole machine during the measured part (/proc); every loadgen report (JSON, .hgrm, .svg)
#    and switch log stays in $OUT.
#
# Environment: OUT (default target/capacity/<UTC time>), SAT_DURATION (10s), OPEN_DURATION (5s),
# WARMUP (2s), OPEN_WARMUP (1s, the open-loop runs' warm-up), DURABILITIES ("none fsync"),
# CONNECTIONS (16), PIPELINE (64), THREADS (loadgen runtime threads, 1), SHARDS (switch shards;
# default: the switch's own, one per core),
# EXPECTED_TRANSACTIONS (the switch's --expected-transactions, 4000000: about what one switch
# here takes in a saturation run and the row after it; 0 lets its maps grow as they fill),
# KEEP_STATE (1: keep the switches' data directories, removed at the end otherwise),
# PROBE_SECONDS (5: how long `vcpu_probe` measures the vCPUs' steadiness before and after the
# runs; 0 skips it).
# Durations and warm-ups are whole seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh

OUT=${OUT:-target/capacity/$(date -u +%Y%m%dT%H%M%SZ)}
SAT_DURATION=${SAT_DURATION:-10s}
OPEN_DURATION=${OPEN_DURATION:-5s}
WARMUP=${WARMUP:-2s}
OPEN_WARMUP=${OPEN_WARMUP:-1s}
DURABILITIES=${DURABILITIES:-none fsync}
CONNECTIONS=${CONNECTIONS:-16}
PIPELINE=${PIPELINE:-64}
THREADS=${THREADS:-1}
SHARDS=${SHARDS:-}
EXPECTED_TRANSACTIONS=${EXPECTED_TRANSACTIONS:-4000000}
PROBE_SECONDS=${PROBE_SECONDS:-5}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
echo "== building release binaries" >&2
cargo build --release -p switch -p loadgen -p benches --bin switch --bin loadgen --bin vcpu_probe >&2
BIN=target/release
mkdir -p "$OUT"
demo_data "$BIN/switch" "$OUT/data"

trap stop_started EXIT

# CPU microseconds per answered request of run NAME: CPU time in the sampled window over the
# requests the measured rate answers in it; column $2 of NAME.cpu: 2 server, 3 loadgen, 4
# machine (column 1 is the time).
cpu_per_answer() {
  awk -v c="$2" -v tps="$(field "$1" tps)" -v t="$(getconf CLK_TCK)" \
    'NR == 1 { split($0, a) } NR == 2 { split($0, b) }
     END { n = tps * (b[1] - a[1]); if (n > 0) printf "%.1f", (b[c] - a[c]) * 1e6 / t / n; else print "-" }' "$OUT/$1.cpu"
}

# sample_builders ADDR FILE: every half second, how many periodic snapshot builders the switch
# runs (`switch_snapshot_builders`), one line each, until killed.
sample_builders() {
  local metrics
  while true; do
    metrics=$(scrape "$1" 2>/dev/null) || metrics=
    printf '%s\n' "$metrics" | awk '/^switch_snapshot_builders /{ print $2; found = 1 } END { if (!found) print "?" }' >>"$2"
    sleep 0.5
  done
}

# builders NAME: "k/n": in k of the n samples of run NAME's measured part a snapshot builder
# was running ("-" for the echo server).
builders() {
  if [ -s "$OUT/$1.builders" ]; then
    # "?": /metrics did not answer; such samples are not counted.
    awk '$1 == "?" { next } { n++ } $1 + 0 > 0 { k++ } END { printf "%d/%d", k, n }' "$OUT/$1.builders"
  else
    echo "-"
  fi
}

# run_loadgen NAME WARMUP DURATION SERVER_PID ARGS...: writes $OUT/NAME.json (+ .hgrm, .svg),
# .out (summary), .err, and .cpu (time, and CPU ticks of the server, loadgen and the machine,
# half a second into the measured part and half a second before its end: loadgen exits at it).
run_loadgen() {
  local name=$1 warmup=${2%s} duration=${3%s} server=$4
  shift 4
  local rc=0 lg
  "$BIN/loadgen" --data-dir "$OUT/data" --connections "$CONNECTIONS" --threads "$THREADS" \
    --mix purchase=100 --report "$OUT/$name.json" --warmup "${warmup}s" \
    --duration "${duration}s" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
  lg=$!
  sleep "$warmup.5"
  echo "$(date +%s.%N) $(ticks_of "$server") $(ticks_of "$lg") $(machine_ticks) $(steal_ticks)" >"$OUT/$name.cpu"
  local sampler=
  if [ -n "${ADMIN_ADDR:-}" ]; then
    sample_builders "$ADMIN_ADDR" "$OUT/$name.builders" &
    sampler=$!
  fi
  sleep "$((duration - 1))"
  echo "$(date +%s.%N) $(ticks_of "$server") $(ticks_of "$lg") $(machine_ticks) $(steal_ticks)" >>"$OUT/$name.cpu"
  if [ -n "$sampler" ]; then
    kill "$sampler" 2>/dev/null || true
    wait "$sampler" 2>/dev/null || true
  fi
  wait "$lg" || rc=$?
  if [ "$rc" -ge 2 ]; then
    echo "loadgen $name failed (exit $rc):" >&2
    cat "$OUT/$name.err" >&2
    exit 1
  fi
  echo "   $name: $(sed 's/^loadgen: //' "$OUT/$name.out")" >&2
}

# Percent of the machine's CPU time (all cores) stolen by the hypervisor in run NAME's window.
steal_pct() {
  awk -v n="$(nproc)" -v t="$(getconf CLK_TCK)" \
    'NR == 1 { split($0, a) } NR == 2 { split($0, b) }
     END { w = (b[1] - a[1]) * n * t; if (w > 0) printf "%.1f", 100 * (b[5] - a[5]) / w; else print "-" }' "$OUT/$1.cpu"
}

ROWS=()
cpus() { echo "$(cpu_per_answer "$1" 2) / $(cpu_per_answer "$1" 3) / $(cpu_per_answer "$1" 4)"; }
FMT='| %-26s | %-10s | %-6s | %10s | %6s | %8s | %9s | %9s | %9s | %12s | %17s | %7s | %8s |'
row() { ROWS+=("$(printf "$FMT" "$@")"); }

# --- how steadily the vCPUs run, with nothing else busy -----------------------------------
# probe NAME: `vcpu_probe` for PROBE_SECONDS into $OUT/NAME.out (nothing when PROBE_SECONDS is 0).
probe() {
  if [ "$PROBE_SECONDS" != 0 ]; then
    echo "== vCPU steadiness ($1): vcpu_probe, ${PROBE_SECONDS}s" >&2
    "$BIN/vcpu_probe" --seconds "$PROBE_SECONDS" >"$OUT/$1.out"
  fi
}
# steadiness NAME: the probe's figures in words.
steadiness() {
  if [ -s "$OUT/$1.out" ]; then
    echo "$(field "$1" below_half_pct)% of 100-us windows below half speed ($(field "$1" below_fifth_pct)% below a fifth), the slowest 1% at $(field "$1" p1_speed_pct)% of full speed, longest stretch below half speed $(field "$1" longest_slow_ms) ms, $(field "$1" disturbed_periods_pct)% of 100-ms periods disturbed"
  else
    echo "not measured"
  fi
}
probe probe-before

# --- the raw limit: echo server, same client -------------------------------------------
echo "== raw limit: loadgen echo-server, closed loop ${CONNECTIONS}x${PIPELINE}" >&2
"$BIN/loadgen" echo-server --listen 127.0.0.1:0 >"$OUT/echo-server.out" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
ECHO_ADDR=$(wait_for "$OUT/echo-server.out" '^listening on \(.*\)$')
run_loadgen echo-closed "$WARMUP" "$SAT_DURATION" "$ECHO_PID" --target "$ECHO_ADDR" --mode echo \
  --pipeline "$PIPELINE"
kill -TERM "$ECHO_PID" 2>/dev/null || true
wait "$ECHO_PID" 2>/dev/null || true
ECHO_TPS=$(field echo-closed tps)
row "echo (raw limit)" "-" "closed" "$ECHO_TPS" "$(field echo-closed errors)" \
  "$(field echo-closed timeouts)" "$(field echo-closed p50_us)" "$(field echo-closed p99_us)" \
  "$(field echo-closed p999_us)" "-" "$(cpus echo-closed)" "$(steal_pct echo-closed)" "-"

# start_switch DURABILITY TAG: a switch on a fresh copy of the demo data; sets SWITCH_PID,
# ISO_ADDR, ADMIN_ADDR and SWITCH_LOG.
start_switch() {
  local state="$OUT/state-$1-$2"
  rm -rf "$state"
  cp -r "$OUT/data" "$state"
  local shard_args=()
  if [ -n "$SHARDS" ]; then shard_args=(--shards "$SHARDS"); fi
  SWITCH_LOG="$OUT/switch-$1-$2.log"
  "$BIN/switch" --data-dir "$state" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 --durability "$1" --log info \
    --expected-transactions "$EXPECTED_TRANSACTIONS" "${shard_args[@]}" 2>"$SWITCH_LOG" &
  SWITCH_PID=$!
  PIDS+=("$SWITCH_PID")
  ISO_ADDR=$(wait_for "$SWITCH_LOG" '.*switch ready.* iso_addr=\([0-9.:]*\).*')
  ADMIN_ADDR=$(wait_for "$SWITCH_LOG" '.*switch ready.* admin_addr=\([0-9.:]*\).*')
  "$BIN/switch" healthcheck --admin "$ADMIN_ADDR"
}

# stop_switch DURABILITY: stops it and notes its periodic snapshots (built beside the rows,
# they compete with them: benches/RESULTS.md, "Snapshot builders on idle CPU only").
stop_switch() {
  # Its group commits over its life: how many, their mean, and how many took over 10 ms.
  local metrics commits
  metrics=$(scrape "$ADMIN_ADDR" 2>/dev/null) || metrics=
  commits=$(printf '%s\n' "$metrics" | awk '
    /^switch_journal_commit_duration_seconds_bucket\{le="0.01024"\}/ { fast = $2 }
    /^switch_journal_commit_duration_seconds_count / { n = $2 }
    /^switch_journal_commit_duration_seconds_sum / { sum = $2 }
    END {
      if (n == "") print "journal commits unknown (its /metrics did not answer)"
      else if (n > 0) printf "%d journal commits, mean %.2f ms, %d over 10 ms", n, 1000 * sum / n, n - fast
      else print "no journal commits"
    }')
  kill -TERM "$SWITCH_PID" 2>/dev/null || true
  wait "$SWITCH_PID" 2>/dev/null || true
  ADMIN_ADDR=
  # Its journal may still be dirty in the page cache (`none` never flushes it): written back
  # later, it would stall the next switch's fsyncs.
  sync
  NOTES+=("--durability $1, $(basename "$SWITCH_LOG" .log): $commits; periodic snapshots: $(grep -c 'periodic snapshot in force' "$SWITCH_LOG" || true) put in force, $(grep -c 'periodic snapshot overdue' "$SWITCH_LOG" || true) given up as overdue (the next then built at nice 10)")
}

# open_row NAME LABEL DURABILITY: the table row of an open-loop run.
open_row() {
  row "$2" "$3" "open" "$(field "$1" tps)" "$(field "$1" errors)" "$(field "$1" timeouts)" \
    "$(field "$1" p50_us)" "$(field "$1" p99_us)" "$(field "$1" p999_us)" \
    "$(field "$1" send_lag_p99_us)" "$(cpus "$1")" "$(steal_pct "$1")" "$(builders "$1")"
}

# rate_at RATE PCT: PCT percent of RATE, whole requests per second (at least 1).
rate_at() {
  awk -v s="$1" -v p="$2" 'BEGIN { r = int(s * p / 100); if (r < 1) r = 1; print r }'
}

declare -A SAT HALF
NOTES=()
for durability in $DURABILITIES; do
  echo "== switch, --durability $durability: saturation" >&2
  start_switch "$durability" saturation
  name="switch-$durability-closed"
  run_loadgen "$name" "$WARMUP" "$SAT_DURATION" "$SWITCH_PID" --target "$ISO_ADDR" \
    --pipeline "$PIPELINE"
  sat=$(field "$name" tps)
  # What the switch persisted beside the two CSV files it started from: a durable switch
  # journals every decision before answering, so its journal grows with the requests.
  state="$OUT/state-$durability-saturation"
  journal=$(find "$state" -type f -name '*journal*' -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  other=$(find "$state" -type f ! -name '*journal*' ! -name accounts.csv ! -name orders.csv -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
  NOTES+=("--durability $durability: right after its saturation run, journal files held $journal bytes, other state files $other bytes$(
    if [ "$journal" -eq 0 ]; then
      echo " (nothing journaled: decisions were not on disk when answered)"
    fi)")
  SAT[$durability]=$sat
  row "switch saturation" "$durability" "closed" "$sat" "$(field "$name" errors)" \
    "$(field "$name" timeouts)" "$(field "$name" p50_us)" "$(field "$name" p99_us)" \
    "$(field "$name" p999_us)" "-" "$(cpus "$name")" "$(steal_pct "$name")" "$(builders "$name")"
  HALF[$durability]=$(rate_at "$sat" 50)
  # The saturation run journaled millions of records: snapshots of them are usually being
  # built now. The same 50% load on this switch shows what that costs.
  name="switch-$durability-open50-busy"
  run_loadgen "$name" "$OPEN_WARMUP" "$OPEN_DURATION" "$SWITCH_PID" --target "$ISO_ADDR" \
    --rate "${HALF[$durability]}"
  open_row "$name" "50% after saturation" "$durability"
  stop_switch "$durability"

  # The open-loop rows run on a fresh switch (one for the three, in rising order): they
  # measure the load they name, not the snapshot backlog the saturation run left (the row
  # above does that).
  echo "== switch, --durability $durability: open loop" >&2
  start_switch "$durability" open
  for pct in 25 50 75; do
    rate=$(rate_at "$sat" "$pct")
    name="switch-$durability-open$pct"
    run_loadgen "$name" "$OPEN_WARMUP" "$OPEN_DURATION" "$SWITCH_PID" --target "$ISO_ADDR" \
      --rate "$rate"
    open_row "$name" "open loop ${pct}% = $rate/s" "$durability"
  done
  stop_switch "$durability"
done

# --- the latency floor: echo server, open loop at the switch's 50% rates ----------------
# The same client, paced the same way, against a server that does nothing but echo: what the
# machine, its scheduler and loadgen add to every open-loop latency by themselves.
echo "== latency floor: loadgen echo-server, open loop at each 50% rate" >&2
"$BIN/loadgen" echo-server --listen 127.0.0.1:0 >"$OUT/echo-server-open.out" 2>&1 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
ECHO_ADDR=$(wait_for "$OUT/echo-server-open.out" '^listening on \(.*\)$')
for durability in $DURABILITIES; do
  rate=${HALF[$durability]}
  name="echo-open50-$durability"
  run_loadgen "$name" "$OPEN_WARMUP" "$OPEN_DURATION" "$ECHO_PID" --target "$ECHO_ADDR" \
    --mode echo --rate "$rate"
  open_row "$name" "echo open = $durability 50%" "-"
  NOTES+=("open loop at 50% of --durability $durability ($rate/s): p99 $(field "switch-$durability-open50" p99_us) us on a fresh switch, $(field "switch-$durability-open50-busy" p99_us) us right after saturation; the echo server at the same rate $(field "$name" p99_us) us (the floor this machine and client give)")
done
kill -TERM "$ECHO_PID" 2>/dev/null || true
wait "$ECHO_PID" 2>/dev/null || true
probe probe-after

# verdict OK: "met" or "not met".
verdict() { if [ "$1" = 1 ]; then echo "met"; else echo "**not met**"; fi; }

# targets: issue 5's targets against this run's rows, each "met" or "not met" (the load and
# shard count they are stated for are said when this run used others).
targets() {
  local load="" ok p99 limit pct
  if [ "$CONNECTIONS" != 16 ] || [ "$PIPELINE" != 64 ] || [ -n "$SHARDS" ]; then
    load=" (this run's load or shard count differs from the targets' 16 x 64 with default shards)"
  fi
  echo "Targets of issue 5 on this machine$load:"
  if [ -n "${SAT[fsync]:-}" ]; then
    ok=$(awk -v s="${SAT[fsync]}" -v e="$(field switch-fsync-closed errors)" \
      -v t="$(field switch-fsync-closed timeouts)" 'BEGIN { print (s >= 400000 && e == 0 && t == 0) ? 1 : 0 }')
    echo "- fsync, closed loop: >= 400000 answers/s with zero errors and timeouts: $(verdict "$ok") (${SAT[fsync]}/s)"
    pct=$(awk -v s="${SAT[fsync]}" -v e="$ECHO_TPS" 'BEGIN { if (e > 0) printf "%.1f", 100 * s / e }')
    ok=$(awk -v p="$pct" 'BEGIN { print (p != "" && p + 0 >= 20) ? 1 : 0 }')
    echo "- fsync at >= 20% of the echo limit: $(verdict "$ok") (${pct:-no echo limit}%)"
  fi
  for durability in $DURABILITIES; do
    limit=1000
    if [ "$durability" = fsync ]; then limit=2000; fi
    p99=$(field "switch-$durability-open50" p99_us)
    ok=$(awk -v p="$p99" -v l="$limit" 'BEGIN { print (p != "" && p + 0 <= l) ? 1 : 0 }')
    echo "- $durability, open loop at 50% of saturation (fresh switch): p99 <= $limit us: $(verdict "$ok") ($p99 us)"
  done
}

{
  echo "Capacity benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "Machine: $(nproc) CPUs, $(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1), $(uname -sr)"
  echo "Load: $CONNECTIONS connections, loadgen $THREADS thread(s), 0200 purchases; switch and loadgen share the machine"
  echo "Switch: --expected-transactions $EXPECTED_TRANSACTIONS (its maps sized at start; 0: grown as they fill), other settings its defaults$(if [ -n "$SHARDS" ]; then echo " but --shards $SHARDS"; fi)"
  echo "Load average (1, 5, 15 min) before the build: $LOAD_BEFORE; after the runs: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown) (other work on the machine skews the figures)"
  echo "Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (working tree modified)')"
  echo
  printf "$FMT\n" run durability load "answers/s" errors timeouts "p50 us" "p99 us" "p99.9 us" \
    "lag p99 us" "CPU us srv/lg/all" "steal %" "builders"
  echo "|----------------------------|------------|--------|------------|--------|----------|-----------|-----------|-----------|--------------|-------------------|---------|----------|"
  printf '%s\n' "${ROWS[@]}"
  echo
  for durability in $DURABILITIES; do
    awk -v s="${SAT[$durability]}" -v e="$ECHO_TPS" -v d="$durability" \
      'BEGIN { if (e > 0) printf "switch (--durability %s) at saturation: %.0f answers/s = %.1f%% of the echo limit (%.0f/s)\n", d, s, 100 * s / e, e }'
  done
  printf '%s\n' "${NOTES[@]}"
  echo "vCPU steadiness before the runs (vcpu_probe: one spinning thread per CPU, nothing else busy): $(steadiness probe-before)"
  echo "vCPU steadiness after the runs: $(steadiness probe-after)"
  echo
  targets
  echo
  echo "Latency of open-loop rows counts from each request's due time; 'lag p99' is how late"
  echo "loadgen itself was in sending (part of the latency: when it is large, loadgen was starved"
  echo "of CPU and the row says little about the switch). 'CPU us srv/lg/all': CPU time per"
  echo "answered request during the measured part, of the server (echo server or switch), of"
  echo "loadgen and of the whole machine (2 cores give 2,000,000 us per second). 'steal %': share"
  echo "of the machine's CPU time the hypervisor gave to others while its vCPUs wanted to run."
  echo "'builders': in how many of the half-second samples of the measured part the switch was"
  echo "building a periodic snapshot (replaying its journal beside the shards)."
  echo "'vCPU steadiness': how much fixed work each CPU did in every 100-us window against its"
  echo "median; a window below half speed is time the host took from the vCPU (this guest may"
  echo "report no steal for it). A 100-ms period is disturbed when a tenth of its windows are."
  echo "While a vCPU runs slow, a server paced at half its saturation rate is over capacity:"
  echo "open-loop tails then measure the host as much as the server."
  echo "Reports (JSON, .hgrm, .svg) and switch logs: $OUT"
} | tee "$OUT/summary.md"

# Each switch's data directory holds hundreds of megabytes of journal by now.
if [ "${KEEP_STATE:-0}" != 1 ]; then
  rm -rf "$OUT"/state-*
fi
