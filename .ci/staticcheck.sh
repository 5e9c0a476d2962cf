#!/usr/bin/env bash
# Runs staticcheck over the module and fails on any finding that
# .ci/staticcheck.allow does not list with a reason.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(go env GOPATH)/bin/staticcheck
if ! [ -x "$bin" ]; then
  GOFLAGS= go install honnef.co/go/tools/cmd/staticcheck@v0.8.2  # release 2026.2.2; the proxy serves it by its module version
fi
out=$("$bin" ./... 2>&1) || true
fail=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  file=${line%%:*}
  check=$(sed -n 's/.*(\([A-Z]*[0-9]*\))$/\1/p' <<<"$line")
  allowed=0
  while read -r prefix c _; do
    case "$prefix" in ''|\#*) continue ;; esac
    if [[ "$file" == "$prefix"* && "$check" == "$c" ]]; then allowed=1; break; fi
  done < .ci/staticcheck.allow
  if [ $allowed = 0 ]; then echo "$line"; fail=1; fi
done <<<"$out"
if [ $fail = 1 ]; then echo "staticcheck: findings above are not in .ci/staticcheck.allow"; exit 1; fi
echo "staticcheck: clean ($(grep -c . <<<"$out" || true) allowed findings, see .ci/staticcheck.allow)"
