#!/usr/bin/env bash
# VM suite: test/vm/tests/many.test.ts on real WireGuard (run by test/vm/suite.sh inside the VM).
[ "${PRESERVE_DSCP_VM:-}" = 1 ] || { echo "many: run me inside the test VM (npm run test:vm)" >&2; exit 2; }
exec node --import tsx --test-reporter=spec test/vm/tests/many.test.ts
