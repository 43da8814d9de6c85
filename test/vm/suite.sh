#!/usr/bin/env bash
# test/vm/suite.sh [test ...] — the VM test suite, run inside ONE VM boot:
#
#   test/vm/run-in-vm.sh bash test/vm/suite.sh            # whole suite
#   test/vm/run-in-vm.sh bash test/vm/suite.sh test/vm/wg-smoke.sh
#
# Default tests: test/vm/wg-smoke.sh, then every test/vm/tests/*.sh in name
# order. A test is a bash script run from the repository root; exit 0 means
# passed. Network namespaces left behind by a test are deleted before the
# next one. The run closes with the line "vm-suite: N passed, N failed" and
# exits non-zero if any test failed.
set -uo pipefail

if [ "${PRESERVE_DSCP_VM:-}" != 1 ]; then
    echo "vm-suite: run me inside the test VM: test/vm/run-in-vm.sh bash test/vm/suite.sh" >&2
    exit 2
fi
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$HERE/../.." || exit 2

if [ $# -gt 0 ]; then
    TESTS=("$@")
else
    TESTS=(test/vm/wg-smoke.sh)
    for t in test/vm/tests/*.sh; do [ -f "$t" ] && TESTS+=("$t"); done
fi

pass=0 failed=()
for t in "${TESTS[@]}"; do
    echo "vm-suite: === $t"
    start=$(date +%s.%N)
    bash "$t"
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    # leftovers of one test must not break the next one
    for ns in $(ip netns list 2>/dev/null | cut -d' ' -f1); do ip netns del "$ns" 2>/dev/null; done
    if [ "$rc" = 0 ]; then
        pass=$((pass + 1))
        echo "vm-suite: ok   $t (${secs}s)"
    else
        failed+=("$t")
        echo "vm-suite: FAIL $t (exit $rc, ${secs}s)"
    fi
done
for t in "${failed[@]}"; do echo "vm-suite: failed: $t"; done
echo "vm-suite: $pass passed, ${#failed[@]} failed"
[ "${#failed[@]}" = 0 ]
