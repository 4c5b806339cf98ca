#!/usr/bin/env bash
# Run here before a device call: records the commit and dirty flag for the copied tree.
cd "$(dirname "$0")/../.." || exit 1
dirty=0; [ -n "$(git status --porcelain --untracked-files=no)" ] && dirty=1
echo "WANBENCH_GIT_COMMIT=$(git rev-parse HEAD) WANBENCH_GIT_DIRTY=$dirty" > .wanbench-revision
