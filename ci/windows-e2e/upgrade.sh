# End-to-end: `depot upgrade --binary` through Wine's Service Control Manager. depot runs as a
# service from a copy of its binary; records are posted; a good upgrade (the same build with
# bytes appended, so it differs on disk) drains the old process, keeps depot.exe.old, and the new
# one serves every record; then a new binary that answers --version and exits 7 at once
# (examples/upgrade_broken.rs) is rolled back: the old binary is back, serving every record.

E2E_TESTS+=(e2e_depot_upgrade)

# The number of records in stream `up`.
upgrade_count() {
  curl -fsS "$1/v1/streams/up/records?limit=1000" | grep -o '"seq":' | wc -l
}

e2e_depot_upgrade() {
  local work="$WIN_TARGET/debug/depot-upgrade-e2e"
  local exe="$work/bin/depot.exe"
  local data="$WINEPREFIX/drive_c/ProgramData/depot"
  local port=$((20000 + RANDOM % 10000))
  local target="http://127.0.0.1:$port"
  wine_q "$WIN_TARGET/debug/depot.exe" uninstall >/dev/null 2>&1 # leftovers of a run
  rm -rf "$work" "$data"
  mkdir -p "$work/bin" "$work/new"
  cp "$WIN_TARGET/debug/depot.exe" "$exe"
  local depot=(wine_q "$exe")
  echo "listen = \"127.0.0.1:$port\"" >"$work/depot.toml"
  local config
  config=$(win_path "$work/depot.toml")

  check "install depot from $exe" "${depot[@]}" install --config "$config" --start manual
  check "start" grep_output "RUNNING" "${depot[@]}" start
  check "it serves" curl -fsS --retry 50 --retry-delay 0 --retry-all-errors --max-time 2 \
    "$target/readyz"
  local i ok=0
  for i in $(seq 30); do
    curl -fsS -o /dev/null -X POST -d "{\"n\":$i}" "$target/v1/streams/up/records" && ok=$((ok + 1))
  done
  check "30 records acknowledged before the upgrade" test "$ok" = 30

  echo "-- a good upgrade"
  cp "$WIN_TARGET/debug/depot.exe" "$work/new/depot.exe"
  printf '\0depot-upgrade-e2e' >>"$work/new/depot.exe"
  local start=$SECONDS
  check "depot upgrade --binary: drained, swapped, ready" \
    grep_output 'STOP_PENDING.*STOPPED.*is in place.*upgraded: depot .* serves on http://127\.0\.0\.1' \
    "${depot[@]}" --config "$config" upgrade --binary "$(win_path "$work/new/depot.exe")"
  echo "       upgrade took $((SECONDS - start)) s"
  sed -n '/upgrading /,/upgraded:/p' "$LOGS/checks.log" | tail -12 | sed 's/^/       /'
  check "the new binary is in place" cmp "$exe" "$work/new/depot.exe"
  check "the old one is kept as depot.exe.old" cmp "$exe.old" "$WIN_TARGET/debug/depot.exe"
  check "the old one's drain was clean (scm_stop)" grep -q '"outcome":"clean"' \
    "$data/last-shutdown.json"
  check "all 30 records are readable after the upgrade" test "$(upgrade_count "$target")" = 30
  for i in $(seq 31 40); do
    curl -fsS -o /dev/null -X POST -d "{\"n\":$i}" "$target/v1/streams/up/records"
  done

  echo "-- a new binary that exits at once: rolled back"
  local broken="$WIN_TARGET/debug/examples/upgrade_broken.exe"
  start=$SECONDS
  # It exits before it reaches the SCM's dispatcher, so the SCM knows no exit code of it: Wine's
  # StartService fails with 1053 (Windows says the same), and depot.log's end is what it quotes.
  check "depot upgrade of a binary that exits 7 fails, saying it rolled back and why" \
    grep_output 'upgrade rolled back: the new binary did not start: cannot start service depot: .*1053.*the old binary is back in place and serves.*the service manager said: depot: STOPPED.*the log.s last lines:.*depot stopped' \
    not wine_with_stderr "$exe" --config "$config" upgrade --timeout 30 \
    --binary "$(win_path "$broken")"
  echo "       upgrade and rollback took $((SECONDS - start)) s"
  grep -A4 'upgrade rolled back' "$LOGS/checks.log" | tail -6 | sed 's/^/       /'
  check "the serving binary is back" cmp "$exe" "$work/new/depot.exe"
  check "the old one serves all 40 records" test "$(upgrade_count "$target")" = 40

  "${depot[@]}" stop >/dev/null 2>&1
  check "uninstall" grep_output "service depot removed" "${depot[@]}" uninstall
}

