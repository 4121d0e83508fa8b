#!/usr/bin/env bash
# usage: benchmarks/stamped_demo.sh CLONE LOG -- `make demo` in CLONE, every output line stamped with epoch seconds
# (demo_sitting.py reads two such logs: run two clones at once, LOG an absolute path: `stamped_demo.sh /tmp/a /tmp/a.log & stamped_demo.sh /tmp/b /tmp/b.log`)
cd "$1"
start=$(date +%s.%N)
make demo 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done > "$2"
rc=${PIPESTATUS[0]}
end=$(date +%s.%N)
echo "TOTAL_SECONDS $(echo "$end - $start" | bc) rc $rc start $start end $end" >> "$2"
