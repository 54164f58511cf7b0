# End-to-end: winddown's example service (crates/winddown/examples/scm_service.rs) through Wine's
# Service Control Manager — installed by winddown's own `install`, started and stopped with `sc`
# (checkpoints watched) and with winddown's `start`/`stop` (a failing drain), run as a console
# program (Ctrl+C), and removed by `uninstall`.

E2E_TESTS+=(e2e_scm_example)

e2e_scm_example() {
  local name=winddown-e2e
  local exe="$WIN_TARGET/debug/examples/scm_service.exe"
  local data="$WIN_TARGET/debug/examples/$name-data"
  local cli=(wine_q "$exe")
  rm -rf "$data"
  "${cli[@]}" uninstall --name "$name" >/dev/null 2>&1 # leftovers of an interrupted run

  echo "-- install (winddown::service::windows::install)"
  check "install creates the service" \
    grep_output "installed" "${cli[@]}" install --name "$name" --manual
  check "an update reapplies the settings; what Wine refuses comes back as warnings" \
    grep_output "updated" "${cli[@]}" install --name "$name" --manual --update
  grep -h "^warning:" "$LOGS/checks.log" | sort -u | sed 's/^/       Wine: /'
  check "a second install says so and changes nothing" \
    grep_output "already installed; nothing changed" "${cli[@]}" install --name "$name" --manual
  check "status shows the preshutdown timeout (budget 20 s + 5 s) and the virtual account" \
    grep_output 'preshutdown timeout: 25\.0 s.*account: NT SERVICE\\winddown-e2e|account: NT SERVICE\\winddown-e2e.*preshutdown timeout: 25\.0 s' \
    "${cli[@]}" status --name "$name"

  echo "-- sc start / sc stop, watching the checkpoints"
  local t0=${EPOCHREALTIME/./} took
  check "sc start" wine_q sc start "$name"
  check "RUNNING (the host saw services.exe as its parent)" scm_wait_state "$name" RUNNING 20
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       RUNNING ${took} ms after sc start"
  check "running well before the dispatcher's 10 s stall under Wine" test "$took" -lt 5000
  scm_stop_and_watch "$name" "$LOGS/$name-stop.txt"
  echo "       $(grep -c STOP_PENDING "$LOGS/$name-stop.txt") STOP_PENDING polls, checkpoints" \
    "$(awk '$1 == "STOP_PENDING" { print $2 }' "$LOGS/$name-stop.txt" | uniq | paste -sd' ')"
  check "STOP_PENDING with at least 4 growing checkpoints, then STOPPED" \
    scm_checkpoints_grew "$LOGS/$name-stop.txt" 4
  check "STOPPED with exit code 0" last_line_matches "$LOGS/$name-stop.txt" '^STOPPED 0 0 0 0$'
  check "the report says scm_stop, clean" last_line_matches "$data/reports.jsonl" \
    '"reason":"scm_stop"' '"outcome":"clean"' '"name":"in-flight requests".*"outcome":"done"'
  check "Event Log: start, stop request, report" event_logged "$name is starting" \
    "stop requested: service stop \(SCM\)" "$name stopped\. shutdown \(service stop \(SCM\)\): Clean"

  echo "-- winddown start / stop with a failing flush"
  check "start waits for RUNNING" grep_output "RUNNING" "${cli[@]}" start --name "$name"
  touch "$data/fail-flush"
  check "stop shows the progress and the service-specific exit code 4" \
    grep_output "STOP_PENDING \(checkpoint .*STOPPED.*last exit code: service-specific 4" \
    "${cli[@]}" stop --name "$name"
  rm -f "$data/fail-flush"
  check "the SCM holds ERROR_SERVICE_SPECIFIC_ERROR 1066 / 4" \
    test "$(scm_status "$name")" = "STOPPED 0 0 1066 4"
  check "the report says failed" last_line_matches "$data/reports.jsonl" \
    '"reason":"scm_stop"' '"outcome":"failed"' 'flush failed'
  check "Event Log: the failed report" event_logged "$name stopped\. shutdown .*Failed"

  echo "-- the same program in a console: no SCM, Ctrl+C"
  local console="$WIN_TARGET/debug/examples/console-data"
  rm -rf "$console"
  t0=${EPOCHREALTIME/./}
  wine "$exe" run --name console --data "$(win_path "$console")" >/dev/null 2>&1 &
  local pid=$!
  local i
  for i in $(seq 100); do
    grep -q "serving host=Console" "$console/service.log" 2>/dev/null && break
    sleep 0.1
  done
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       console host serving ${took} ms after launch"
  check "console host chosen at once (no 10 s dispatcher stall)" test "$took" -lt 5000
  kill -INT "$pid"
  local rc=0
  wait "$pid" || rc=$?
  check "Ctrl+C drained it and it exited 0" test "$rc" = 0
  check "the report says ctrl_c, clean" last_line_matches "$console/reports.jsonl" \
    '"reason":"ctrl_c"' '"outcome":"clean"'

  echo "-- uninstall (winddown::service::windows::uninstall)"
  check "uninstall removes it" grep_output "removed" "${cli[@]}" uninstall --name "$name"
  check "sc no longer knows it" not wine_q sc query "$name"
  check "uninstall again says it is not installed" \
    grep_output "is not installed" "${cli[@]}" uninstall --name "$name"
}
