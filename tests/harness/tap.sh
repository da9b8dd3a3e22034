# tests/harness/tap.sh - TAP output for the shell tests (sourced): checks
# numbered in order, a plan at the end.
_n=0
pass() { _n=$((_n + 1)); echo "ok $_n - $*"; }
fail() { _n=$((_n + 1)); echo "not ok $_n - $*"; }
check() { # DESCRIPTION COMMAND...: ok when the command succeeds
	local d=$1
	shift
	if "$@"; then pass "$d"; else fail "$d"; fi
}
skip() { _n=$((_n + 1)); echo "ok $_n # SKIP $*"; }
diag() { echo "# $*"; }
done_testing() { echo "1..$_n"; }
