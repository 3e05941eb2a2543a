#!/usr/bin/env bash
# The revision CI's "Report vs base" step compares the workspace with (`make ci-report BASE=...`):
#   bash scripts/ci_base.sh EVENT_NAME BASE_REF BEFORE
# pull_request: origin/BASE_REF (the branch the pull request merges into); any other event: BEFORE (the
# push's previous tip, github.event.before). HEAD when that commit is not in the clone: a branch's first
# push or a workflow_dispatch (no or an all-zeros BEFORE), a force-push (BEFORE no longer in the history).
# Prints the revision. Run in the repository; tested in tests/deploy/test_workflows.py.
set -euo pipefail
[ $# -eq 3 ] || { echo "usage: $0 EVENT_NAME BASE_REF BEFORE" >&2; exit 2; }
event=$1 base_ref=$2 before=$3

if [ "$event" = pull_request ]; then
  base="origin/$base_ref"
else
  base=$before
fi
if [ -z "$base" ] || ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
  echo "base '$base' not found: comparing with HEAD" >&2
  base=HEAD
fi
echo "$base"
