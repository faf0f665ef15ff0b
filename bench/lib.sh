# Shared by the bench scripts (sourced, not run).

# CPU time (user + system, all threads) of the processes PIDs so far, in clock
# ticks (getconf CLK_TCK per second).
ticks() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat"))); done; echo $t; }
