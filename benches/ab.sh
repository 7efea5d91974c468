#!/usr/bin/env bash
# Two builds of the switch (or of loadgen) compared side by side, at the same time, on this machine:
#
#   benches/ab.sh DIR_A DIR_B          # each DIR holds a release `switch` (A's `loadgen` drives both)
#   SUBJECT=loadgen benches/ab.sh DIR_A DIR_B   # compares two `loadgen`s instead (A's switch for both)
#
# On a shared VM the machine's speed moves by a third between runs minutes apart, more than
# most changes are worth, so runs one after the other compare the moments more than the
# builds. Here both switches run at once, each on a fresh copy of the same demo data, each
# driven by its own loadgen (closed loop CONNECTIONS x PIPELINE 0200 purchases): whatever
# else the machine does hits both alike. Each round is run twice, A started first and then B
# first. Printed per run: answers/s and the switch's (or with SUBJECT=loadgen, loadgen's) CPU
# time per answer (/proc, over the middle of the run); at the end the means and B's change
# against A.
#
# With SUBJECT=loadgen the two sides are A's and B's `loadgen`, each driving its own copy of A's
# switch, and the CPU per answer printed is the loadgen's.
#
# Environment: SUBJECT (switch; or loadgen), DURABILITY (none; or fsync), ROUNDS (2: four runs), DURATION (8, seconds),
# CONNECTIONS (16), PIPELINE (64), OUT (default target/ab/<UTC time>; the data and logs).
# Both switches and both loadgens share the two cores: each gets about half the machine, so
# the figures are lower than one switch alone would reach; the comparison is the point.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=common.sh
. benches/common.sh

if [ $# -ne 2 ]; then
  echo "usage: [SUBJECT=switch|loadgen] benches/ab.sh DIR_A DIR_B (each DIR with a release build of the subject; the other binary is DIR_A's)" >&2
  exit 2
fi
A=$1
B=$2
SUBJECT=${SUBJECT:-switch}
case "$SUBJECT" in
  switch) needed=("$A/switch" "$A/loadgen" "$B/switch") ;;
  loadgen) needed=("$A/switch" "$A/loadgen" "$B/loadgen") ;;
  *)
    echo "SUBJECT must be switch or loadgen, not $SUBJECT" >&2
    exit 2
    ;;
esac
for f in "${needed[@]}"; do
  if [ ! -x "$f" ]; then
    echo "no executable $f" >&2
    exit 2
  fi
done
DURABILITY=${DURABILITY:-none}
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-16}
PIPELINE=${PIPELINE:-64}
OUT=${OUT:-target/ab/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
demo_data "$A/switch" "$OUT/data" 2>/dev/null

cleanup() {
  stop_started
  rm -rf "$OUT/state-a" "$OUT/state-b"
}
trap cleanup EXIT

# The directory whose BINARY side $1 runs: the subject from its own side, the rest from A.
dir_of() {
  if [ "$1" = b ] && [ "$2" = "$SUBJECT" ]; then echo "$B"; else echo "$A"; fi
}

# run FIRST SECOND: one side-by-side run; prints "a TPS US" and "b TPS US" lines (US: the
# subject's CPU per answer).
run() {
  local side dir
  declare -A sw lg addr subject
  for side in "$@"; do
    dir=$(dir_of "$side" switch)
    rm -rf "$OUT/state-$side"
    cp -r "$OUT/data" "$OUT/state-$side"
    "$dir/switch" --data-dir "$OUT/state-$side" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
      --durability "$DURABILITY" --log info 2>"$OUT/switch-$side.log" &
    sw[$side]=$!
    PIDS+=("$!")
  done
  for side in "$@"; do
    addr[$side]=$(wait_for "$OUT/switch-$side.log" '.*switch ready.* iso_addr=\([0-9.:]*\).*')
  done
  for side in "$@"; do
    dir=$(dir_of "$side" loadgen)
    "$dir/loadgen" --data-dir "$OUT/data" --target "${addr[$side]}" --connections "$CONNECTIONS" \
      --pipeline "$PIPELINE" --mix purchase=100 --warmup 1s --duration "${DURATION}s" \
      --report "$OUT/loadgen-$side.json" >"$OUT/loadgen-$side.out" 2>"$OUT/loadgen-$side.err" &
    lg[$side]=$!
  done
  for side in "$@"; do
    if [ "$SUBJECT" = loadgen ]; then subject[$side]=${lg[$side]}; else subject[$side]=${sw[$side]}; fi
  done
  # CPU over the middle of the measured part (loadgen ends at its end).
  sleep 2
  local t0 t1 a0 b0 a1 b1
  t0=$(date +%s.%N)
  a0=$(ticks_of "${subject[a]}")
  b0=$(ticks_of "${subject[b]}")
  sleep "$((DURATION - 3))"
  t1=$(date +%s.%N)
  a1=$(ticks_of "${subject[a]}")
  b1=$(ticks_of "${subject[b]}")
  # `run` is called in $(...): what it adds to PIDS never reaches the EXIT trap, so a failing
  # run stops both sides' processes itself.
  fail() {
    kill -TERM "${lg[@]}" "${sw[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    exit 1
  }
  for side in "$@"; do
    if ! wait "${lg[$side]}"; then
      echo "loadgen against $side failed:" >&2
      cat "$OUT/loadgen-$side.err" >&2
      fail
    fi
  done
  for side in a b; do
    local tps ticks
    tps=$(field "loadgen-$side" tps)
    if [ "$side" = a ]; then ticks=$((a1 - a0)); else ticks=$((b1 - b0)); fi
    awk -v s="$side" -v tps="$tps" -v ticks="$ticks" -v t0="$t0" -v t1="$t1" -v hz="$(getconf CLK_TCK)" \
      'BEGIN { printf "%s %d %.2f\n", s, tps, ticks * 1e6 / hz / (tps * (t1 - t0)) }'
    grep -q 'timeouts=0 errors=0' "$OUT/loadgen-$side.out" || {
      echo "loadgen against $side had timeouts or errors: $(cat "$OUT/loadgen-$side.out")" >&2
      fail
    }
  done
  for side in "$@"; do
    kill -TERM "${sw[$side]}" 2>/dev/null || true
    wait "${sw[$side]}" 2>/dev/null || true
  done
}

echo "A = $A, B = $B; comparing their $SUBJECT; --durability $DURABILITY, closed loop ${CONNECTIONS}x${PIPELINE} each, ${DURATION}s runs"
printf '%-5s %-9s %12s %14s %12s %14s\n' run first "A answers/s" "A CPU us/ans" "B answers/s" "B CPU us/ans"
results=()
n=0
for _ in $(seq 1 "$ROUNDS"); do
  for order in "a b" "b a"; do
    n=$((n + 1))
    # shellcheck disable=SC2086 # the order is two words on purpose
    out=$(run $order)
    line=$(echo "$out" | awk '$1 == "a" { at = $2; au = $3 } $1 == "b" { bt = $2; bu = $3 }
      END { print at, au, bt, bu }')
    results+=("$line")
    read -r at au bt bu <<<"$line"
    printf '%-5s %-9s %12s %14s %12s %14s\n' "$n" "${order%% *}" "$at" "$au" "$bt" "$bu"
  done
done
printf '%s\n' "${results[@]}" | awk '{ at += $1; au += $2; bt += $3; bu += $4; n++ }
  END {
    printf "mean  A %d answers/s, %.2f us CPU per answer; B %d answers/s, %.2f us CPU per answer\n", at / n, au / n, bt / n, bu / n
    printf "B against A: answers/s %+.1f%%, CPU per answer %+.1f%%\n", 100 * (bt / at - 1), 100 * (bu / au - 1)
  }'
