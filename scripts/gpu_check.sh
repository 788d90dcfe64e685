#!/usr/bin/env bash
# On a CUDA machine: the three training stages and generation in bf16, with their throughput.
#
#   bash scripts/gpu_check.sh OUT [STEPS]
#
# Makes the 32 px shapes data, trains each stage for STEPS steps (default 600) with
# train.precision=bf16-mixed, generates a grid in bfloat16 and runs the two speed benchmarks in
# bfloat16; then times the 256 px config (configs/diffusion/ldm_kl_f8_256.yaml: kl-f8 autoencoder,
# SD-shaped UNet, a ViT-L/14-sized text encoder, random stage-1 weights) in bf16 on 256 px shapes,
# images/s and MFU beside the plain loop of diffusers' example script. Every log goes to OUT/*.log;
# the last lines of each say the figures, and each benchmark's figures are also in OUT/*.json.
# Run from the repository root (the benchmarks are a package of the checkout, `python -m
# benchmarks`), with `python -m ldm` so that it works with the package on PYTHONPATH as well as
# installed.
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
python -m benchmarks generate --pipeline "$RUN/pipeline" --dtype bfloat16 --batch 64 --repeats 5 \
  --json "$OUT/benchmark_generate.json" > "$OUT/benchmark_generate.log" 2>&1
python -m benchmarks diffusion-speed vae="$RUN/vae" text_encoder="$RUN" data.source="$OUT/shapes" \
  train.precision=bf16-mixed --json "$OUT/benchmark_diffusion_speed.json" > "$OUT/benchmark_diffusion_speed.log" 2>&1

python -m ldm data shapes "$OUT/shapes256" --n 2048 --size 256 --seed 0 > "$OUT/data256.log" 2>&1
python -m benchmarks diffusion-speed --config configs/diffusion/ldm_kl_f8_256.yaml --random-stage1 kl_f8_256.yaml \
  --steps 30 --warmup 5 --rounds 2 --json "$OUT/benchmark_diffusion_speed_256.json" \
  data.source="$OUT/shapes256" train.precision=bf16-mixed > "$OUT/benchmark_diffusion_speed_256.log" 2>&1
tail -n 3 "$OUT"/benchmark_*.log | tee -a "$OUT/summary.txt"
