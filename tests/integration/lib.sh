# lib.sh -- sourced by the integration scripts (not a test itself: the ctest
# glob takes only NNNN-*.sh). Set NAME first; it provides:
#   T         a temporary directory, removed on exit
#   OUT, ERR  where the last `expect` command's stdout and stderr went
#   checks    the number of checks passed so far
#   fail MSG                  print MSG and the last output, exit 1
#   expect STATUS DESC CMD..  run CMD, require exit STATUS
#   has FILE TEXT DESC        require the fixed string TEXT in FILE

T=$(mktemp -d "${TMPDIR:-/tmp}/kwal-$NAME.XXXXXX") || exit 1
trap 'rm -rf "$T"' EXIT
trap 'exit 130' INT TERM
case "$T" in
*[[:space:]]*) echo "FAIL: temporary directory '$T' has whitespace"; exit 1 ;;
esac

OUT="$T/out"
ERR="$T/err"
checks=0

fail() {
    echo "FAIL: $*"
    echo "--- stdout:"; cat "$OUT" 2>/dev/null
    echo "--- stderr:"; cat "$ERR" 2>/dev/null
    exit 1
}

# expect STATUS DESCRIPTION COMMAND...: run COMMAND, require its exit status.
expect() {
    want=$1 desc=$2
    shift 2
    "$@" >"$OUT" 2>"$ERR"
    got=$?
    [ "$got" -eq "$want" ] || fail "$desc: expected exit $want, got $got from: $*"
    checks=$((checks + 1))
    echo "ok: $desc (exit $got)"
}

# has FILE TEXT DESCRIPTION: require the fixed string TEXT in FILE.
has() {
    grep -F -q -- "$2" "$1" || fail "$3: '$2' not in $(basename "$1")"
    checks=$((checks + 1))
    echo "ok: $3"
}
