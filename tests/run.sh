#!/usr/bin/env bash
# The test suite in two steps, both required: the quick tests first, so that a mistake shows in
# minutes, then the tests marked `slow` (kill -9 and resume, the soak, long runs). Stops at the
# first step that fails, with its exit status. Arguments go to both pytest runs.
set -uo pipefail
cd "$(dirname "$0")/.."

step() {
    python -m pytest -q -p no:cacheprovider "$@"
    local rc=$?
    [ "$rc" -eq 5 ] && return 0   # pytest's "no tests collected": arguments that select none of a step
    return "$rc"
}

step -m "not slow" "$@" || exit $?
step -m slow "$@"
