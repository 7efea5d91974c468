# CPU time counters from /proc, sourced by capacity.sh and scale_out.sh.

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
