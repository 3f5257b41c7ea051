#!/bin/bash
# Device call (session 17): the GPU-resident feature cache. cuda tests; the JPEG workload with the
# resident case; the real twin's runner path three ways (images / host cache / resident cache).
export PYTHONUNBUFFERED=1
R=/tmp/dp; mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD DELTAPATCH_CACHE=$R/cache DELTAPATCH_PACKS=$PWD/.packs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== cuda tests"; date
( time timeout 150 python3 -m pytest -q -p no:cacheprovider -m cuda tests/training/test_feature_cache.py tests/methods/test_methods.py ) > $R/cuda_tests.log 2>&1; echo "rc=$?"
tail -6 $R/cuda_tests.log
echo "== workload"; date
W=$(python3 -c 'from deltapatch.resolvers import loader_workers; print(loader_workers())')
( time timeout 200 python3 scripts/bench.py --workload jpeg --plain --device cuda --bf16 --backbones resnet50 --workers $W --images 2000 --image-size 224 --batch-size 64 --repeats 3 --warmup 1 --threads 4 --cache-dir $R/bench --json $OUT/workload.json ) > $R/workload.log 2>&1; echo "rc=$?"
grep -v -i warn $R/workload.log | tail -45
echo "== base"; date
( time timeout 150 python3 scripts/build_base.py --backbones resnet18 --no-progress trainer=gpu num_workers=8 ) > $R/base.log 2>&1; echo "rc=$?"
grep -v -i warn $R/base.log | tail -4
for mode in images host resident; do
  case $mode in images) A="cache_features=false";; host) A="cache_features=true cache_features_on_device=false";; resident) A="cache_features=true cache_features_on_device=auto";; esac
  echo "== table2 usps delta1 seed0: $mode"; date
  ( time timeout 80 python3 -m deltapatch.train experiment=real/table2 hydra.mode=RUN experiment/real/backbone=resnet18 dataset=usps_pack experiment/real/row=delta1 seed=0 trainer=gpu num_workers=8 $A hydra.run.dir=$R/t2_$mode ) > $R/t2_$mode.log 2>&1; echo "rc=$?"
  grep -E "cache_features|train time|hmean|error" $R/t2_$mode.log | tail -5; grep real $R/t2_$mode.log
  cp $R/t2_$mode/results.json $OUT/t2_${mode}_results.json 2>/dev/null
done
cp $R/*.log $OUT/ 2>/dev/null; true
