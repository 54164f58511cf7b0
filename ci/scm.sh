# Helpers for end-to-end tests through Wine's Service Control Manager. Sourced by ci/windows.sh,
# which sets WINEPREFIX and the counters; each test lives in ci/windows-e2e/<name>.sh.
#
# A test is a function that registers itself and uses `check` for each assertion:
#
#   E2E_TESTS+=(e2e_mine)
#   e2e_mine() {
#     local exe; exe=$(win_path "$WIN_TARGET/debug/mine.exe")
#     check "install" wine_q sc create mine binPath= "$exe run" start= demand
#     check "start" wine_q sc start mine
#     check "RUNNING" scm_wait_state mine RUNNING 10
#     scm_stop_and_watch mine "$LOGS/mine-stop.txt"
#     check "STOP_PENDING with growing checkpoints" scm_checkpoints_grew "$LOGS/mine-stop.txt" 3
#     check "deleted" wine_q sc delete mine
#   }

# Runs a Wine program quietly (Wine's own chatter and CRs dropped); keeps its exit code.
wine_q() {
  wine "$@" 2>/dev/null | tr -d '\r'
  return "${PIPESTATUS[0]}"
}

# The Windows path (Z:\...) of a Linux path.
win_path() {
  echo "Z:$(echo "$1" | tr / '\\')"
}

# One assertion: `check "what it shows" command args...` runs the command and counts the result.
check() {
  local what=$1
  shift
  if "$@" >>"$LOGS/checks.log" 2>&1; then
    PASSED=$((PASSED + 1))
    echo "  ok   $what"
  else
    FAILED=$((FAILED + 1))
    echo "  FAIL $what   (command: $*; see $LOGS/checks.log)"
  fi
}

# `STATE CHECKPOINT WAIT_HINT_MS WIN32_EXIT_CODE SERVICE_EXIT_CODE` of a service, from `sc query`.
scm_status() {
  local out key a b state="" checkpoint="" hint="" win32="" specific=""
  out=$(wine_q sc query "$1") || return 1
  while read -r key _ a b _; do
    case $key in
      STATE) state=$b ;;
      WIN32_EXIT_CODE) win32=$a ;;
      SERVICE_EXIT_CODE) specific=$a ;;
      CHECKPOINT) checkpoint=$((a)) ;; # 0x… to decimal
      WAIT_HINT) hint=$((a)) ;;
    esac
  done <<<"$out"
  [[ -n $state ]] || return 1
  echo "$state $checkpoint $hint $win32 $specific"
}

# Waits until the service is in STATE (RUNNING, STOPPED, ...), at most SECONDS.
scm_wait_state() {
  local name=$1 state=$2 seconds=$3 start=$SECONDS
  while ((SECONDS - start < seconds)); do
    [[ "$(scm_status "$name" | cut -d' ' -f1)" == "$state" ]] && return 0
    sleep 0.1
  done
  echo "$name did not reach $state within $seconds s; last: $(scm_status "$name")"
  return 1
}

# Waits until the whole status line (`scm_status`) is STATUS, e.g. "STOPPED 0 0 1066 4", at most
# SECONDS.
scm_wait_status() {
  local name=$1 want=$2 seconds=$3 start=$SECONDS
  while ((SECONDS - start < seconds)); do
    [[ "$(scm_status "$name")" == "$want" ]] && return 0
    sleep 0.1
  done
  echo "$name did not reach \"$want\" within $seconds s; last: $(scm_status "$name")"
  return 1
}

# Sends STOP and records every status until STOPPED (at most 60 s) into FILE, one
# `STATE CHECKPOINT WAIT_HINT_MS WIN32 SPECIFIC` line per poll.
scm_stop_and_watch() {
  local name=$1 file=$2 start=$SECONDS
  : >"$file"
  wine_q sc stop "$name" >>"$LOGS/checks.log"
  while ((SECONDS - start < 60)); do
    # Wine's `sc query` has been seen to fail once right after `sc stop` (one CI run): ask again.
    scm_status "$name" >>"$file" || { sleep 0.2; continue; }
    [[ "$(tail -n1 "$file" | cut -d' ' -f1)" == STOPPED ]] && return 0
  done
  return 1
}

# FILE (from scm_stop_and_watch) shows at least N distinct STOP_PENDING checkpoints, strictly
# growing, and ends in STOPPED.
scm_checkpoints_grew() {
  local file=$1 n=$2
  cat "$file"
  awk -v n="$n" '
    $1 == "STOP_PENDING" {
      if ($2 < last) { print "checkpoint went back: " last " -> " $2; bad = 1 }
      if ($2 > last) distinct++
      last = $2
    }
    END { last_line = $1; if (bad || distinct < n) { print distinct " distinct checkpoints, want " n; exit 1 } }
  ' "$file" && [[ "$(tail -n1 "$file" | cut -d' ' -f1)" == STOPPED ]]
}

# The last line of FILE matches every extended regex given.
last_line_matches() {
  local file=$1 line
  shift
  line=$(tail -n1 "$file" 2>/dev/null) || return 1
  echo "$line"
  for re in "$@"; do
    [[ "$line" =~ $re ]] || { echo "no match for: $re"; return 1; }
  done
}

# Every REGEX matches an Event Log entry seen so far (Wine traces ReportEventW into $EVENTS).
event_logged() {
  local re
  for re in "$@"; do
    grep -E "ReportEventW L\"$re" "$EVENTS" || { echo "not in the Event Log: $re"; return 1; }
  done
}

# `grep_output REGEX command args...`: the command succeeds and its output (as one line) matches.
grep_output() {
  local re=$1 out
  shift
  out=$("$@" 2>&1)
  local rc=$?
  echo "$out"
  [[ $rc == 0 ]] && tr '\n' ' ' <<<"$out" | grep -Eq -- "$re"
}

# `not command args...`: the command fails.
not() {
  ! "$@"
}
