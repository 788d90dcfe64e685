#!/usr/bin/env bash
# On a CUDA machine: the three training stages and generation in bf16, with their throughput.
#
#   bash scripts/gpu_check.sh OUT [STEPS]
#
# Makes the 32 px shapes data, trains each stage for STEPS steps (default 600) with
# train.precision=bf16-mixed, generates a grid in bfloat16 and runs the two speed benchmarks in
# bfloat16. Every log goes to OUT/*.log; the last lines of each say the figures. Run it with
# `python -m ldm` so that it works with the package on PYTHONPATH as well as installed.
set -euo pipefail
OUT=${1:?usage: gpu_check.sh OUT [STEPS]}
STEPS=${2:-600}
RUN=$OUT/run
mkdir -p "$OUT"
(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || echo "no nvidia-smi") | tee "$OUT/gpu.txt"
python -c "import torch, diffusers, transformers, lightning; print('torch', torch.__version__, \
'diffusers', diffusers.__version__, 'transformers', transformers.__version__, 'lightning', lightning.__version__)" \
  | tee -a "$OUT/gpu.txt"

python -m ldm data shapes "$OUT/shapes" --n 10000 --size 32 --seed 0 > "$OUT/data.log" 2>&1
common=(run_dir="$RUN" data.source="$OUT/shapes" train.precision=bf16-mixed train.max_steps="$STEPS")
for config in autoencoder/kl_f4_shapes clip/clip_shapes diffusion/ldm_shapes; do
  name=$(basename "$config")
  extra=()
  [[ $name == ldm_shapes ]] && extra=(vae="$RUN/vae" text_encoder="$RUN")
  start=$(date +%s.%N)
  python -m ldm train "configs/$config.yaml" "${common[@]}" "${extra[@]}" > "$OUT/$name.log" 2>&1
  end=$(date +%s.%N)
  python - "$name" "$STEPS" "$start" "$end" <<'EOF' | tee -a "$OUT/summary.txt"
import sys
name, steps, start, end = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{name}: {steps} bf16 steps in {end - start:.1f} s with loading, validation and export")
EOF
done

python -m ldm generate "$RUN/pipeline" "a red circle in the top left" "a blue square in the center" \
  --n 8 --seed 0 --steps 20 --guidance 4 --dtype bfloat16 --out "$OUT/samples" > "$OUT/generate.log" 2>&1
python scripts/benchmark_generate.py --pipeline "$RUN/pipeline" --dtype bfloat16 --batch 64 --repeats 5 \
  > "$OUT/benchmark_generate.log" 2>&1
python scripts/benchmark_diffusion_speed.py vae="$RUN/vae" text_encoder="$RUN" train.precision=bf16-mixed \
  > "$OUT/benchmark_diffusion_speed.log" 2>&1
tail -n 3 "$OUT"/benchmark_*.log | tee -a "$OUT/summary.txt"
