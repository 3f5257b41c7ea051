#!/bin/bash
# Second call (session 17): scripts/gpu_check.sh as a user runs it, with the resident feature-cache case.
export PYTHONUNBUFFERED=1
R=/tmp/dp; mkdir -p $R
OUT=$R/gc bash scripts/gpu_check.sh > $R/gpu_check.log 2>&1; echo "gpu_check rc=$?"
grep -v -i warn $R/gpu_check.log | tail -75
cp $R/gc/gpu_check.md $R/gc/gpu_check.json $OUT/ 2>/dev/null
tar czf $OUT/logs.tar.gz -C $R/gc --exclude='*.json' . 2>/dev/null; true
