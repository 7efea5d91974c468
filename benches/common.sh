# Shared by the bench scripts (capacity.sh, scale_out.sh, profile.sh): CPU time counters from
# /proc, a switch's /metrics without curl, a listener's address from its log.

# ticks_of PID...: clock ticks (user + system) the processes used so far; 0 for one gone.
ticks_of() {
  local total=0 pid ticks
  for pid in "$@"; do
    # Fields 14 and 15 of /proc/PID/stat, counted after the ")" that ends the name.
    ticks=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{print $12 + $13}')
    total=$((total + ${ticks:-0}))
  done
  echo "$total"
}

# machine_ticks: the whole machine's busy clock ticks so far (user, nice, system, irq, softirq).
machine_ticks() {
  awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat
}

# steal_ticks: clock ticks the hypervisor ran something else while this machine's vCPUs
# wanted to run (0 on bare metal). A vCPU stolen for a few milliseconds delays every request
# in flight on it: on a shared VM this, not the switch, can set an open-loop p99.
steal_ticks() {
  awk '/^cpu /{print $9}' /proc/stat
}

# scrape ADDR: the switch's /metrics, over bash's /dev/tcp (no curl needed).
scrape() {
  local fd
  exec {fd}<>"/dev/tcp/${1%:*}/${1##*:}" || return 1
  printf 'GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n' >&"$fd"
  cat <&"$fd"
  exec {fd}<&-
}

# wait_for LOG PATTERN: the first match of sed PATTERN (with one group) in LOG, within 30 s.
# Every listener binds port 0 (no clash with anything else on the machine) and says where.
wait_for() {
  local found
  for _ in $(seq 1 300); do
    found=$(sed -n "s/$2/\1/p" "$1" | head -n 1)
    if [ -n "$found" ]; then
      echo "$found"
      return 0
    fi
    sleep 0.1
  done
  echo "no address in $1 after 30 s:" >&2
  cat "$1" >&2
  return 1
}

# The processes a bench script started (it appends to PIDS); stop_started sends each SIGTERM
# and reaps them (call it from the script's EXIT trap).
PIDS=()
stop_started() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# demo_data SWITCH DIR: the demo data set the bench scripts drive (10,000 cards, 10,000
# orders), written by the switch binary SWITCH into DIR.
demo_data() {
  "$1" demo-data --out "$2" --accounts 10000 --orders 10000 >&2
}

# field NAME KEY: one value of loadgen's summary line (`key=value ...`) in $OUT/NAME.out.
field() {
  sed -n "s/.*[[:space:]]$2=\([^[:space:]]*\).*/\1/p" "$OUT/$1.out" | tail -n 1
}
