# tests/harness/faultproxy.sh - tests/tools/faultproxy between imgsyncd and
# radosgw, for end-to-end tests that source it after daemon.sh's d_init.
#
#   fp_start [FAULTPROXY-ARGS...]
#       starts the proxy (forwarding to radosgw); sets PROXY (its URL),
#       PROXY_PID, PROXY_STATS (its counters) and PROXY_LOG.  The caller's
#       EXIT trap stops it (kill $PROXY_PID).
#   fp_stores SETTINGS
#       the store "cloud" through the proxy, and two stores more: "archive",
#       a second bucket of radosgw through the proxy, and "back", a
#       directory.  SETTINGS, lines joined by "\n", go into both S3 stores.
fp_start() {
	PROXY_LOG="$D_DIR/proxy.log"
	PROXY_STATS="$D_DIR/proxy.stats"
	"$BUILD/tests/faultproxy" --upstream "$IMGSYNC_TEST_RGW_ENDPOINT" \
		--port-file "$D_DIR/proxy.port" --stats "$PROXY_STATS" "$@" \
		>"$D_DIR/proxy.out" 2>"$PROXY_LOG" &
	PROXY_PID=$!
	for _ in $(seq 50); do [ -s "$D_DIR/proxy.port" ] && break; sleep 0.1; done
	PROXY="http://127.0.0.1:$(cat "$D_DIR/proxy.port")"
}

fp_stores() {
	local settings=$1
	sed -i "s|endpoint = \"$IMGSYNC_TEST_RGW_ENDPOINT\"|endpoint = \"$PROXY\"\n$settings|" "$D_CONF"
	mkdir -p "$D_DIR/back"
	d_add_archive "$PROXY" "$settings" || fail "second bucket"
	cat >>"$D_CONF" <<CONF
store "back" {
  type = "fs"
  root = "$D_DIR/back"
}
CONF
}
