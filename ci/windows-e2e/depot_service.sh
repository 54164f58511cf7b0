# End-to-end: depot itself as a Windows service through Wine's Service Control Manager, managed
# with its own commands as an administrator would (`depot install`, `start`, `status`, `stop`,
# `uninstall`), loaded by depot-torture (a Linux process, over loopback) while `sc stop` stops it:
# STOP_PENDING with growing checkpoints, STOPPED with exit code 0, the report's reason scm_stop,
# and after a restart every acknowledged record present, intact and exactly once.

E2E_TESTS+=(e2e_depot_service)

# A Wine program with its standard error, without Wine's CRs; keeps its exit code.
wine_with_stderr() {
  wine "$@" 2>&1 | tr -d '\r'
  return "${PIPESTATUS[0]}"
}

e2e_depot_service() {
  local exe="$WIN_TARGET/debug/depot.exe"
  local work="$WIN_TARGET/debug/depot-e2e"
  local data="$WINEPREFIX/drive_c/ProgramData/depot" # the service's default data directory
  local port=$((20000 + RANDOM % 10000))
  local target="http://127.0.0.1:$port"
  local depot=(wine_q "$exe")
  local torture=("$ROOT/target/debug/depot-torture" --target "$target")
  "${depot[@]}" uninstall >/dev/null 2>&1 # leftovers of an interrupted run
  rm -rf "$work" "$data"
  mkdir -p "$work"

  echo "-- the Linux load client (depot-torture)"
  if ! host_cargo build -q -p torture --bin depot-torture >>"$LOGS/checks.log" 2>&1; then
    check "depot-torture builds for Linux" false
    return
  fi
  # A 5 s unready delay: long enough for several progress ticks while the SCM watches.
  cat >"$work/depot.toml" <<EOF
listen = "127.0.0.1:$port"
unready_delay_ms = 5000
EOF

  echo "-- depot install (automatic start is the default; manual here, so that Wine's next"
  echo "   session does not start a leftover)"
  # DEPOT_MAX_READ_LIMIT: a setting given outside the config file, which the service must get too.
  export DEPOT_MAX_READ_LIMIT=500
  check "install --print shows the settings and installs nothing" \
    grep_output 'start: +manual.*account: +NT SERVICE\\depot.*preshutdown timeout: 35 s.*environment: +DEPOT_MAX_READ_LIMIT=500' \
    "${depot[@]}" install --print --config "$(win_path "$work/depot.toml")" --start manual
  check "nothing installed by --print" not wine_q sc query depot
  # Issue #14 item A: a data directory someone else created first is refused, and nothing is
  # installed. Wine shows a directory of another Unix user as owned by S-1-5-7 (ANONYMOUS LOGON).
  # (depot's error goes to stderr, which wine_q drops.)
  mkdir -p "$data" && chown 1001:1001 "$data"
  check "a data directory another user owns is refused; nothing installed" \
    grep_output 'cannot give service depot its data directory .*owned by S-1-5-7.*takeown' \
    not wine_with_stderr "$exe" install --config "$(win_path "$work/depot.toml")" --start manual
  check "  ... and the service does not exist" not wine_q sc query depot
  rm -rf "$data"
  check "install creates the service and shows what the SCM holds" \
    grep_output 'service depot installed.*account: NT SERVICE\\depot.*preshutdown timeout: 35\.0 s' \
    "${depot[@]}" install --config "$(win_path "$work/depot.toml")" --start manual
  unset DEPOT_MAX_READ_LIMIT
  check "the setting from the environment is in the service's environment" \
    grep_output 'DEPOT_MAX_READ_LIMIT=500' \
    wine_q reg query 'HKLM\SYSTEM\CurrentControlSet\Services\depot' /v Environment
  sed -n '/service depot installed/,/start it with/p' "$LOGS/checks.log" | sed 's/^/       /'
  # Issue #14 item A: the data directory is the service's own. Wine's icacls is a stub that prints
  # nothing, so the owner and DACL are read through the API (examples/data_dir_access.rs).
  local access=(wine_q "$WIN_TARGET/debug/examples/data_dir_access.exe")
  echo "       icacls C:\ProgramData\depot (Wine's stub): '$(wine_q icacls 'C:\ProgramData\depot' | head -3)'"
  echo "       inherited before (C:\ProgramData): $("${access[@]}" 'C:\ProgramData')"
  echo "       after install (C:\ProgramData\depot): $("${access[@]}" 'C:\ProgramData\depot')"
  # Wine keeps no DACLs: it maps one to Unix mode bits and reads back one made from them. What
  # it shows is that Everyone (WD), which may read C:\ProgramData, may not read the data
  # directory. On Windows the whole DACL is the one checked in the unit test (manager.rs).
  check "the data directory: nobody but its owner and SYSTEM may use it (no Everyone entry)" \
    grep_output "^O:[^ ]+D:\(A;OICI;FA;;;SY\)\(A;OICI;FA;;;[^)]+\) *$" \
    "${access[@]}" 'C:\ProgramData\depot'
  check "  ... its Unix mode, which Wine derived from the DACL, gives others nothing" \
    grep_output '^7[0-7]0 *$' stat -c %a "$data"
  check "the Event Log source is registered" \
    wine_q reg query 'HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\depot'
  check "a second install says so and changes nothing" \
    grep_output "already installed; nothing changed" "${depot[@]}" install --start manual
  # Issue #14 item 2: an update carries exactly what it is given, so one without the variable
  # leaves no stale copy of it in the service's environment.
  check "install --update without the variable updates the service" \
    "${depot[@]}" install --update --config "$(win_path "$work/depot.toml")" --start manual
  check "  ... and the service's environment no longer holds it" \
    not wine_q reg query 'HKLM\SYSTEM\CurrentControlSet\Services\depot' /v Environment
  check "the command line runs depot with its config and %ProgramData%\\depot" \
    grep_output 'command line: .*depot\.exe.* run .*--config .*depot\.toml.*--data-dir C:\\ProgramData\\depot' \
    "${depot[@]}" status

  echo "-- depot start"
  check "start waits for RUNNING and shows the PID" grep_output "RUNNING.*depot: RUNNING, pid [0-9]+" \
    "${depot[@]}" start
  check "it serves (/readyz 200)" curl -fsS --retry 50 --retry-delay 0 --retry-all-errors \
    --max-time 2 "$target/readyz"

  echo "-- sc stop under load (2 depot-torture clients)"
  "${torture[@]}" --clients 2 --streams 2 --duration 10s --ledger "$work/ledger.json" \
    >"$work/load.txt" 2>&1 &
  local load=$!
  local i
  for i in $(seq 100); do # until records are being acknowledged
    [[ $(curl -fsS "$target/v1/status" 2>/dev/null) == *'"records":'[1-9]* ]] && break
    sleep 0.1
  done
  sleep 1
  scm_stop_and_watch depot "$LOGS/depot-stop.txt"
  wait "$load" # its own check fails: depot is gone by then; `verify` below is the check
  sed 's/^/       /' "$work/load.txt" | grep -v PROBLEM | head -3
  echo "       $(grep -c STOP_PENDING "$LOGS/depot-stop.txt") STOP_PENDING polls, checkpoints" \
    "$(awk '$1 == "STOP_PENDING" { print $2 }' "$LOGS/depot-stop.txt" | uniq | paste -sd' ')"
  check "STOP_PENDING with at least 4 growing checkpoints, then STOPPED" \
    scm_checkpoints_grew "$LOGS/depot-stop.txt" 4
  check "STOPPED with exit code 0" last_line_matches "$LOGS/depot-stop.txt" '^STOPPED 0 0 0 0$'
  check "the report says scm_stop, clean" last_line_matches "$data/last-shutdown.json" \
    '"reason":"scm_stop"' '"outcome":"clean"'
  check "Event Log: start, stop request, report" event_logged "depot is starting" \
    "stop requested: service stop \(SCM\)" "depot stopped\. shutdown \(service stop \(SCM\)\): Clean"
  check "the service's log file has the drain" grep -q "drain phase done" "$data/depot.log"

  echo "-- restart; every acknowledged record is there"
  check "start again" grep_output "RUNNING" "${depot[@]}" start
  check "verify: 0 lost, 0 duplicated, 0 corrupt" \
    grep_output '^OK acked=[1-9][0-9]* verified=[0-9]+ lost=0 duplicated=0 corrupt=0' \
    "${torture[@]}" --ledger "$work/ledger.json" verify
  grep -h '^OK acked=' "$LOGS/checks.log" | tail -1 | sed 's/^/       /'
  check "status: RUNNING, pid, manual start, virtual account, last exit code" \
    grep_output 'depot: RUNNING, pid [0-9]+.*last exit code: 0.*start: manual.*account: NT SERVICE\\depot' \
    "${depot[@]}" status

  echo "-- depot stop, depot uninstall"
  check "stop shows STOP_PENDING progress, then STOPPED" \
    grep_output 'STOP_PENDING \(checkpoint [0-9]+.*STOPPED' "${depot[@]}" stop
  sed -n '/STOP_PENDING (checkpoint/,/last exit code/p' "$LOGS/checks.log" | tail -8 | sed 's/^/       /'
  check "uninstall removes it" grep_output "service depot removed" "${depot[@]}" uninstall
  check "sc no longer knows it" not wine_q sc query depot
  check "the Event Log source is gone" \
    not wine_q reg query 'HKLM\SYSTEM\CurrentControlSet\Services\EventLog\Application\depot'
  check "the data stays for a reinstall" test -s "$data/depot.sqlite3"
}
