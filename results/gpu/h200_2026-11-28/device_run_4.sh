#!/bin/bash
# Device calls 2 and 3 (session 19), on the machine still warm after device_run_3.sh: USPS seeds 1 and 2
# on the ConvNeXt-Tiny base that call 1 built in /tmp/dp/cache. Call 2 ran this without carrying .packs
# (the data did not travel: "no data at .../.packs/usps.bz2", exit 2 after 12 s a seed); call 3
# carried .packs and .whl and finished both seeds.
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD DELTAPATCH_CACHE=/tmp/dp/cache DELTAPATCH_PACKS=$PWD/.packs; R=/tmp/dp
ls $R/cache/base | head -2
for s in 1 2; do
  ( time timeout --signal=INT 110 python3 -m deltapatch.train -m experiment=real/table10_11 experiment/real/backbone=convnext_tiny \
      dataset=usps_pack experiment/real/row=delta1,paint_test_sweep seed=$s trainer=gpu num_workers=8 \
      trainer.enable_progress_bar=false hydra.sweep.dir=$R/runs/usps_pack/s$s ) > $R/usps_pack.s$s.log 2>&1
  echo "rc=$?"; grep -E "results:" $R/usps_pack.s$s.log | tail -4; grep real $R/usps_pack.s$s.log
done
cd $R && tar czf $OUT/runs2.tar.gz --exclude=checkpoints --exclude=state --exclude='*.safetensors' runs/usps_pack usps_pack.s1.log usps_pack.s2.log
