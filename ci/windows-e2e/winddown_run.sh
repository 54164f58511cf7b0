# End-to-end: `winddown run -- stopprobe` as a service under Wine's Service Control Manager —
# installed by `winddown install`, RUNNING only once the program's port answers, `sc stop` →
# STOP_PENDING with growing checkpoints while the program drains → the program's marker shows the
# console event it got (CTRL_C through AttachConsole) → STOPPED with its exit code, and the stop
# report in the Event Log; then a stubborn program whose tree (grandchild included) the job
# object ends at the stop timeout; then a program that exits by itself (the service stops with its
# code, and the grandchild it left is ended); then a service around a program that does not
# exist: STOPPED with an error before RUNNING, and the cause in the Event Log; and the wrapper
# killed with SIGKILL from Linux: the job object (kill on close) ends PROGRAM and its grandchild.
#
# What Wine cannot show: CTRL_BREAK (refused, error 6, so the wrapper moves on to the next signal),
# WM_CLOSE to a program's windows (stopprobe has none), PRESHUTDOWN (cannot be sent).

E2E_TESTS+=(e2e_winddown_run)

# Whether a Wine process whose command line matches REGEX is alive (seen from Linux).
wine_proc_alive() {
  pgrep -af -- "$1"
}

e2e_winddown_run() {
  local name=wrap-e2e stubborn=wrap-e2e-stubborn missing=wrap-e2e-missing crashing=wrap-e2e-crash
  local orphan=wrap-e2e-orphan
  local exe="$WIN_TARGET/debug/winddown.exe" probe="$WIN_TARGET/debug/stopprobe.exe"
  local work="$WIN_TARGET/debug/wrap-e2e"
  local cli=(wine_q "$exe")
  local port=18431 t0 took
  "${cli[@]}" uninstall --name "$name" >/dev/null 2>&1 # leftovers of an interrupted run
  "${cli[@]}" uninstall --name "$stubborn" >/dev/null 2>&1
  "${cli[@]}" uninstall --name "$missing" >/dev/null 2>&1
  "${cli[@]}" uninstall --name "$crashing" >/dev/null 2>&1
  "${cli[@]}" uninstall --name "$orphan" >/dev/null 2>&1
  rm -rf "$work"
  mkdir -p "$work"

  echo "-- install: ready once port $port answers (opened after 2 s), drains 3 s on its stop signal"
  check "install" grep_output "installed" "${cli[@]}" install --name "$name" --start manual \
    --stop-timeout 8 --ready-tcp "127.0.0.1:$port" --log-dir "$(win_path "$work/logs")" \
    -- "$(win_path "$probe")" --listen "$port" --listen-after-ms 2000 --drain-ms 3000 \
    --marker "$(win_path "$work/marker")" --lines-on-stop 10
  check "preshutdown timeout from the stop timeout, virtual account" \
    grep_output "account: NT SERVICE\\\\$name" "${cli[@]}" status --name "$name"

  echo "-- sc start: START_PENDING until the port answers"
  t0=${EPOCHREALTIME/./}
  check "sc start" wine_q sc start "$name"
  sleep 1
  check "still START_PENDING 1 s in (the port opens at 2 s)" \
    grep_output "^START_PENDING" scm_status "$name"
  check "RUNNING" scm_wait_state "$name" RUNNING 20
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       RUNNING ${took} ms after sc start"
  check "RUNNING only after the port opened" test "$took" -ge 2000
  check "the port answers" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port"

  echo "-- sc stop: CTRL_C to the program's console, checkpoints while it drains"
  t0=${EPOCHREALTIME/./}
  scm_stop_and_watch "$name" "$LOGS/$name-stop.txt"
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       STOPPED ${took} ms after sc stop; checkpoints" \
    "$(awk '$1 == "STOP_PENDING" { print $2 }' "$LOGS/$name-stop.txt" | uniq | paste -sd' ')"
  check "STOP_PENDING with at least 4 growing checkpoints, then STOPPED" \
    scm_checkpoints_grew "$LOGS/$name-stop.txt" 4
  check "STOPPED with the program's exit code 0" \
    last_line_matches "$LOGS/$name-stop.txt" '^STOPPED 0 0 0 0$'
  check "the program's marker names the console event: ctrl-c" \
    grep_output "signal=ctrl-c" cat "$work/marker"
  check "the lines it wrote while draining are in its log" \
    grep_output "draining 00000009" cat "$work/logs/$name.log"
  check "the stop report: scm_stop, ctrl-c sent, exit code 0, nothing left to kill" \
    grep_output '"signal":"ctrl-c".*"tree_killed":false,"program_killed":false,"killed_processes":0,"exit_code":0.*"reason":"scm_stop"' \
    cat "$work/logs/$name.last-stop.json"
  check "the stop report was written without an error" \
    not grep "cannot write the stop report" "$work/logs/$name.winddown.log"
  # Wine's trace keeps the first ~300 characters of an event: the headline and the first phase.
  check "Event Log: the stop report, one event (clean, exit code 0, ctrl-c sent)" event_logged \
    "$name stopped\. shutdown \(service stop \(SCM\)\): Clean in [0-9.]+ s of a 10\.0 s budget, exit code 0.*signal PROGRAM .* ctrl-c sent to PROGRAM \(pid [0-9]+\)"

  echo "-- a stubborn program and its grandchild: the job object ends them at the stop timeout"
  check "install the stubborn one" grep_output "installed" "${cli[@]}" install --name "$stubborn" \
    --start manual --stop-timeout 3 --log-dir "$(win_path "$work/stubborn-logs")" \
    -- "$(win_path "$probe")" --ignore --grandchild "$(win_path "$work/gc")"
  check "sc start" wine_q sc start "$stubborn"
  check "RUNNING" scm_wait_state "$stubborn" RUNNING 20
  local i
  for i in $(seq 50); do [[ -s $work/gc ]] && break; sleep 0.1; done
  check "its grandchild runs" wine_proc_alive "as-grandchild Z:.*wrap-e2e.gc"
  t0=${EPOCHREALTIME/./}
  scm_stop_and_watch "$stubborn" "$LOGS/$stubborn-stop.txt"
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       STOPPED ${took} ms after sc stop (stop timeout 3 s)"
  check "STOP_PENDING with growing checkpoints, then STOPPED" \
    scm_checkpoints_grew "$LOGS/$stubborn-stop.txt" 3
  check "stopped at the stop timeout (3-6 s)" test "$took" -ge 2500 -a "$took" -le 6000
  check "STOPPED with the killed program's code as service-specific 1" \
    last_line_matches "$LOGS/$stubborn-stop.txt" '^STOPPED 0 0 1066 1$'
  sleep 0.5
  check "the grandchild is gone" not wine_proc_alive "as-grandchild Z:.*wrap-e2e.gc"
  check "the report says the program and its grandchild (2 processes) were killed" \
    grep_output '"tree_killed":true,"program_killed":true,"killed_processes":2' cat "$work/stubborn-logs/$stubborn.last-stop.json"
  check "Event Log: the stop report (failed, the killed program's code 1, ctrl-c sent)" \
    event_logged "$stubborn stopped\. shutdown \(service stop \(SCM\)\): Failed in [0-9.]+ s .*, exit code 1.*ctrl-c sent to PROGRAM"

  echo "-- a program that exits by itself with 3, leaving a grandchild: the service ends with it"
  check "install the crashing one" grep_output "installed" "${cli[@]}" install --name "$crashing" \
    --start manual --stop-timeout 3 --log-dir "$(win_path "$work/crash-logs")" \
    -- "$(win_path "$probe")" --crash 3 --crash-after-ms 2500 --grandchild "$(win_path "$work/crash-gc")"
  check "sc start" wine_q sc start "$crashing"
  check "RUNNING" scm_wait_state "$crashing" RUNNING 20
  for i in $(seq 50); do [[ -s $work/crash-gc ]] && break; sleep 0.1; done
  check "its grandchild runs" wine_proc_alive "as-grandchild Z:.*wrap-e2e.crash-gc"
  check "STOPPED by itself with the program's code as service-specific 3" \
    scm_wait_status "$crashing" "STOPPED 0 0 1066 3" 20
  sleep 0.5
  check "the grandchild it left is gone" not wine_proc_alive "as-grandchild Z:.*wrap-e2e.crash-gc"
  check "the report: exited by itself, the grandchild (1 process) killed, exit code 3" \
    grep_output '"exited_by_itself":true,"signals":\[\].*"tree_killed":true,"program_killed":false,"killed_processes":1,"exit_code":3' \
    cat "$work/crash-logs/$crashing.last-stop.json"
  check "Event Log: the stop report (exit code 3, nothing to signal)" event_logged \
    "$crashing stopped\. shutdown .*, exit code 3.*PROGRAM had exited \(code 3\): nothing to signal"

  echo "-- the wrapper itself killed (no drain can run): the job object ends PROGRAM's tree"
  check "install it" grep_output "installed" "${cli[@]}" install --name "$orphan" \
    --start manual --stop-timeout 3 \
    -- "$(win_path "$probe")" --ignore --grandchild "$(win_path "$work/orphan-gc")"
  check "sc start" wine_q sc start "$orphan"
  check "RUNNING" scm_wait_state "$orphan" RUNNING 20
  for i in $(seq 50); do [[ -s $work/orphan-gc ]] && break; sleep 0.1; done
  check "its grandchild runs" wine_proc_alive "as-grandchild Z:.*wrap-e2e.orphan-gc"
  local wrapper_pid
  wrapper_pid=$(pgrep -f "winddown.exe run --name $orphan ")
  check "kill -9 the wrapper's process" kill -9 $wrapper_pid
  for i in $(seq 50); do wine_proc_alive "Z:.*wrap-e2e.orphan-gc" >/dev/null || break; sleep 0.1; done
  check "PROGRAM is gone" not wine_proc_alive "stopprobe.exe --ignore --grandchild Z:.*wrap-e2e.orphan-gc"
  check "its grandchild is gone" not wine_proc_alive "as-grandchild Z:.*wrap-e2e.orphan-gc"

  echo "-- a service around a program that does not exist"
  check "install it (the program is looked for at start)" grep_output "installed" \
    "${cli[@]}" install --name "$missing" --start manual \
    --log-dir "$(win_path "$work/missing-logs")" -- "$(win_path "$work/no-such-program.exe")"
  wine_q sc start "$missing" >>"$LOGS/checks.log" 2>&1 # accepted or refused: the state tells
  check "it ends STOPPED with a service-specific error (1066 / 4)" \
    scm_wait_status "$missing" "STOPPED 0 0 1066 4" 20
  check "Event Log: the failure names the missing program" event_logged \
    "$missing failed: cannot start \`Z:.*no-such-program\.exe\`: no such program \(no file at that path\)"
  check "it never reported RUNNING" not event_logged "$missing is running"
  check "the wrapper's log says so" \
    grep_output "no such program" cat "$work/missing-logs/$missing.winddown.log"

  echo "-- uninstall"
  check "uninstall" grep_output "removed" "${cli[@]}" uninstall --name "$name"
  check "uninstall the stubborn one" grep_output "removed" "${cli[@]}" uninstall --name "$stubborn"
  check "uninstall the missing one" grep_output "removed" "${cli[@]}" uninstall --name "$missing"
  check "uninstall the crashing one" grep_output "removed" "${cli[@]}" uninstall --name "$crashing"
  # Wine's SCM still shows the killed service RUNNING (Windows marks it stopped when its process
  # dies), and a stop through it fails ("pipe closed"): delete it directly.
  check "sc delete the orphaned one" wine_q sc delete "$orphan"
  check "sc no longer knows it" not wine_q sc query "$name"
}
