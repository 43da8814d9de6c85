#!/usr/bin/env bash
# VM suite: the datapath tests (BPF_PROG_TEST_RUN) under the VM's 6.1 kernel and its older verifier.
[ "${PRESERVE_DSCP_VM:-}" = 1 ] || { echo "datapath: run me inside the test VM (npm run test:vm)" >&2; exit 2; }
echo "datapath: kernel $(uname -r)"
# The fuzz tests default to 100,000 packets per program: ~85 s under TCG; 10,000 here.
export PDSCP_FUZZ_N="${PDSCP_FUZZ_N:-10000}"
exec node --import tsx --test --test-reporter=spec --test-concurrency=1 test/datapath/*.test.ts
