# Sourced by scripts/setup.sh and scripts/test.sh: named steps that, on failure, say which step
# broke and what to do about it (a fresh machine should never leave a user guessing).
step() {
    local name=$1 hint=$2
    shift 2
    local t0=$SECONDS
    echo "==> $name" >&2
    if ! "$@"; then
        echo "FAILED: $name. $hint" >&2
        exit 1
    fi
    echo "==> $name: done in $(( SECONDS - t0 )) s" >&2
}
