# one forward+backward of the 32-px ConvNeXt-Tiny under each instruction-set cap (isa_probe.py beside
# this file); run from anywhere: bash results/base_rebuild/convnext_tiny_2026-12-07/isa_probe.sh
D=$(cd "$(dirname "$0")" && pwd); cd "$D/../../.."; P=$D/isa_probe.py; PY=.venv/bin/python
echo "default:                 $($PY $P)"
echo "default again:           $($PY $P)"
echo "ATEN avx2:               $(ATEN_CPU_CAPABILITY=avx2 $PY $P)"
echo "ONEDNN AVX2:             $(ONEDNN_MAX_CPU_ISA=AVX2 $PY $P)"
echo "MKL AVX2:                $(MKL_ENABLE_INSTRUCTIONS=AVX2 $PY $P)"
echo "all three AVX2:          $(ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 $PY $P)"
