#!/bin/bash
# Device call (session 19): Tables 10/11's twin, ConvNeXt-Tiny half, on a ConvNeXt-Tiny CIFAR-10 base
# built on the GPU in the same call (trainer=gpu: bf16-mixed). Columns in order Omniglot, USPS, MNIST;
# per seed ∆(1) then PAINT with its α sweep scored on test; each step stops at a deadline so that
# what finished comes back.
export PYTHONUNBUFFERED=1
T0=$(date +%s); END=$((T0 + ${BUDGET:-540}))
R=/tmp/dp; mkdir -p $R
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD DELTAPATCH_CACHE=$R/cache DELTAPATCH_PACKS=$PWD/.packs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c 'import torch, timm, pytorch_lightning as pl; print("torch", torch.__version__, "timm", timm.__version__, "pl", pl.__version__)'
echo "== base convnext_tiny $(date)"
( time timeout 240 python3 scripts/build_base.py --backbones convnext_tiny --no-progress trainer=gpu num_workers=8 ) > $R/base.log 2>&1; echo "rc=$?"
grep -v -i warn $R/base.log | tail -6
cp $R/cache/base/*.json $OUT/ 2>/dev/null
for ds in omniglot_pack usps_pack mnist_pack; do
  for s in 0 1 2; do
    left=$((END - $(date +%s)))
    if [ $left -lt 60 ]; then echo "deadline: skip $ds seed $s"; continue; fi
    echo "== $ds seed $s $(date) (left ${left}s)"
    ( time timeout --signal=INT $left python3 -m deltapatch.train -m experiment=real/table10_11 \
        experiment/real/backbone=convnext_tiny dataset=$ds experiment/real/row=delta1,paint_test_sweep seed=$s \
        trainer=gpu num_workers=8 trainer.enable_progress_bar=false hydra.sweep.dir=$R/runs/$ds/s$s ) > $R/$ds.s$s.log 2>&1
    echo "rc=$?"; grep -E "hmean|Error|error:" $R/$ds.s$s.log | tail -4; grep real $R/$ds.s$s.log
  done
done
cd $R && tar czf $OUT/runs.tar.gz --exclude=checkpoints --exclude=state --exclude='*.safetensors' --exclude='*.ckpt' runs *.log 2>/dev/null
echo "total $(( $(date +%s) - T0 )) s"; true
