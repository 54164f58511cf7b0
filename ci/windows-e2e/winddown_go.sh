# End-to-end: a Go HTTP service (crates/wrapper/tests/goservice/main.go, built for Windows) run by
# `winddown run` as a service under Wine's Service Control Manager, under load from Linux, stopped
# with `sc stop` while the load runs. The Go service stops on os.Interrupt (the CTRL_C the wrapper
# sends on its console through AttachConsole) with http.Server.Shutdown, then writes and fsyncs
# the id of every request it answered. Checked: RUNNING only once /healthz answers; STOP_PENDING
# with growing checkpoints while two slow (5 s) requests finish; STOPPED with code 0; every request a
# client got an answer to is in the file; the stop report in the wrapper's log, its JSON file and
# the Event Log.
#
# Needs `go` (Debian's golang-go): skipped without it, unless REQUIRE_GO_TESTS=1 (.ci/run sets it).

E2E_TESTS+=(e2e_winddown_go)

# One load client: `GET /req?id=ID[&ms=MS]` with a new connection each, until LIMIT seconds have
# passed or, once STOPFILE exists, 20 connections in a row got no answer. Appends each id whose
# whole answer ("ok ID") came back to OUT.before or OUT.after (after: STOPFILE existed by then).
go_load_client() {
  local port=$1 prefix=$2 ms=$3 out=$4 stopfile=$5 limit=$6
  local n=0 fails=0 start=$SECONDS id line status last query
  while ((SECONDS - start < limit)); do
    n=$((n + 1))
    id=$prefix-$n
    query="id=$id"
    [[ -n $ms ]] && query+="&ms=$ms"
    if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
      printf 'GET /req?%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' "$query" >&3
      status="" last=""
      while IFS= read -r -t 20 line <&3; do
        [[ -z $status ]] && status=$line
        last=$line
      done
      exec 3<&-
      if [[ $status == "HTTP/1.1 200"* && $last == "ok $id" ]]; then
        if [[ -e $stopfile ]]; then echo "$id" >>"$out.after"; else echo "$id" >>"$out.before"; fi
        fails=0
        continue
      fi
    fi 2>/dev/null
    if [[ -e $stopfile ]]; then
      fails=$((fails + 1))
      ((fails >= 20)) && break
      sleep 0.05
    fi
  done
}

# Builds goservice.exe for Windows into $WIN_TARGET/debug; fails (or skips) without go.
go_build_windows() {
  local out=$1
  GOOS=windows GOARCH=amd64 CGO_ENABLED=0 GO111MODULE=off GOPROXY=off GOTOOLCHAIN=local \
    GOCACHE="$ROOT/target/wine/gocache" go build -o "$out" crates/wrapper/tests/goservice/main.go
}

e2e_winddown_go() {
  local name=wrap-go
  local exe="$WIN_TARGET/debug/winddown.exe" goexe="$WIN_TARGET/debug/goservice.exe"
  local work="$WIN_TARGET/debug/wrap-go"
  local cli=(wine_q "$exe")
  local port=18433 t0 took i
  if ! command -v go >/dev/null; then
    if [[ -n ${REQUIRE_GO_TESTS:-} ]]; then
      check "go is installed (REQUIRE_GO_TESTS is set: apt-get install golang-go)" false
    else
      echo "  skipped: no go toolchain (apt-get install golang-go to run it)"
    fi
    return
  fi
  "${cli[@]}" uninstall --name "$name" >/dev/null 2>&1 # leftovers of an interrupted run
  rm -rf "$work"
  mkdir -p "$work/load"

  check "go build, GOOS=windows" go_build_windows "$goexe"
  echo "-- install: ready once GET /healthz answers; 15 s to drain"
  check "install" grep_output "installed" "${cli[@]}" install --name "$name" --start manual \
    --stop-timeout 15 --ready-http "http://127.0.0.1:$port/healthz" \
    --log-dir "$(win_path "$work/logs")" \
    -- "$(win_path "$goexe")" -addr "127.0.0.1:$port" -out "$(win_path "$work/answered.txt")" \
    -delay 5ms

  t0=${EPOCHREALTIME/./}
  check "sc start" wine_q sc start "$name"
  check "RUNNING" scm_wait_state "$name" RUNNING 30
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  echo "       RUNNING ${took} ms after sc start"
  check "/healthz answers" grep_output "200 OK" bash -c \
    "exec 3<>/dev/tcp/127.0.0.1/$port; printf 'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n' >&3; cat <&3"

  echo "-- load: 6 clients of 5 ms requests, 2 of 5 s requests; sc stop 1.5 s in"
  local stopfile="$work/load/stop" pids=()
  for i in 1 2 3 4 5 6; do
    go_load_client "$port" "f$i" "" "$work/load/f$i" "$stopfile" 40 &
    pids+=($!)
  done
  for i in 1 2; do
    go_load_client "$port" "s$i" 5000 "$work/load/s$i" "$stopfile" 40 &
    pids+=($!)
  done
  sleep 1.5
  local before
  before=$(cat "$work"/load/*.before 2>/dev/null | wc -l)
  touch "$stopfile"
  t0=${EPOCHREALTIME/./}
  scm_stop_and_watch "$name" "$LOGS/$name-stop.txt"
  took=$(((${EPOCHREALTIME/./} - t0) / 1000))
  wait "${pids[@]}"

  echo "       STOPPED ${took} ms after sc stop; checkpoint/wait hint (ms):" \
    "$(awk '$1 == "STOP_PENDING" { print $2 "/" $3 }' "$LOGS/$name-stop.txt" | uniq | paste -sd' ')"
  check "STOP_PENDING with at least 4 growing checkpoints, then STOPPED" \
    scm_checkpoints_grew "$LOGS/$name-stop.txt" 4
  check "STOPPED with the Go service's exit code 0" \
    last_line_matches "$LOGS/$name-stop.txt" '^STOPPED 0 0 0 0$'
  check "the slow requests kept the stop pending: STOPPED 2-14 s after sc stop" \
    test "$took" -ge 2000 -a "$took" -le 14000

  local answered="$work/load/answered" written="$work/load/written"
  cat "$work"/load/*.before "$work"/load/*.after 2>/dev/null | sort -u >"$answered"
  tr -d '\r' <"$work/answered.txt" 2>/dev/null | sort -u >"$written"
  local n_answered n_after n_slow n_written n_missing drained
  drained=$(grep -o '"drained_in_ms":[0-9]*' "$work/logs/$name.last-stop.json" | cut -d: -f2)
  n_answered=$(wc -l <"$answered")
  n_after=$(cat "$work"/load/*.after 2>/dev/null | wc -l)
  n_slow=$(grep -c '^s' "$answered")
  n_written=$(wc -l <"$written")
  n_missing=$(comm -23 "$answered" "$written" | wc -l)
  echo "       the Go service exited ${drained} ms after its CTRL_C"
  echo "       answered $n_answered ($before by sc stop, $n_after after it, $n_slow slow)," \
    "in the fsynced file $n_written, answered but missing $n_missing"
  check "the load ran: more than 20 answers before sc stop" test "$before" -gt 20
  check "the slow requests in flight at sc stop were answered" test "$n_slow" -ge 2
  check "the Go service wrote its file" test -s "$work/answered.txt"
  check "every request that got an answer is in the file" \
    bash -c "comm -23 '$answered' '$written' | head; test $n_missing = 0"
  check "the Go service got os.Interrupt (CTRL_C on its console)" \
    grep_output "goservice got interrupt: shutting down" cat "$work/logs/$name.log"
  check "the stop report: scm_stop, ctrl-c sent, exit code 0, nothing left to kill" \
    grep_output '"signal":"ctrl-c".*"tree_killed":false,"program_killed":false,"killed_processes":0,"exit_code":0.*"reason":"scm_stop"' \
    cat "$work/logs/$name.last-stop.json"
  check "the stop report was written without an error" \
    not grep "cannot write the stop report" "$work/logs/$name.winddown.log"
  check "the wrapper's log has the stop report's summary" \
    grep_output "PROGRAM stopped: service stop \(SCM\) \(scm_stop\): sent ctrl-c; it exited" \
    cat "$work/logs/$name.winddown.log"
  check "Event Log: the stop report, one event (clean, exit code 0, ctrl-c sent)" event_logged \
    "$name stopped\. shutdown \(service stop \(SCM\)\): Clean in [0-9.]+ s of a 17\.0 s budget, exit code 0.*signal PROGRAM .* ctrl-c sent to PROGRAM \(pid [0-9]+\)"

  echo "-- uninstall"
  check "uninstall" grep_output "removed" "${cli[@]}" uninstall --name "$name"
}
