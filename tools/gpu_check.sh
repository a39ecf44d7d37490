#!/usr/bin/env bash
# The CUDA path and the gpu-full benchmark rows, on a GPU machine, in two steps:
#
#   tools/gpu_check.sh check            # geot doctor, the test suite on the GPU, training step speed,
#                                       # a 2-epoch geot pilot (epoch time, predict + evaluate on the GPU),
#                                       # geot predict speed with the pilot's model on the GPU
#   tools/gpu_check.sh train EPOCHS [LIMIT_S [METHOD:FRACTION:SEED ...]]
#                                       # gpu-full accuracy rows (default: supervised 20% and 100%, geot
#                                       # 20%, seed 0), trained side by side on the one GPU, scored on the
#                                       # test patients, then diagnose and the decoder stage by stage
#
# DATA (default ../shared/data/iosseg-train) holds the real jaws; results land in docs/results/*.json
# as for every benchmark, and a copy of them and of the logs in OUT (default runs/gpu).
# Without torch-cluster (no CUDA build installed) neighbours come from geot's pure-torch fallback and
# the point sampling is random: the fallback's farthest point sampling is a Python loop (see DEVELOPERS.md).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
DATA=${DATA:-../shared/data/iosseg-train}
mkdir -p "$OUT" runs/logs
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY=${PYTHON:-python3}
SAMPLING=$($PY -c "import torch_cluster" 2>/dev/null && echo fps || echo random)

save() {  # results and logs back to OUT (one archive for the logs)
    cp docs/results/accuracy.json docs/results/training.json docs/results/inference.json \
        docs/results/decoding.json "$OUT"/ 2>/dev/null
    tar -czf "$OUT/logs.tar.gz" runs/logs $(ls -d runs/bench/*gpu*/log.csv 2>/dev/null) 2>/dev/null
}

case "${1:-}" in
check)
    $PY -m geot doctor 2>&1 | tee runs/logs/doctor.log
    $PY -c "import torch; print(torch.__version__, torch.cuda.get_device_name(0))"
    timeout 60 $PY -m pytest -q -p no:cacheprovider tests/engine/test_cuda.py 2>&1 | tee runs/logs/pytest-cuda.log | tail -5
    timeout 200 $PY -m pytest -v -rf -p no:cacheprovider -n 12 --timeout 120 --junitxml=runs/logs/pytest.xml tests \
        2>&1 | tee runs/logs/pytest.log | tail -15
    timeout 120 $PY tools/benchmark.py training --data "$DATA" --device cuda --steps 10 \
        --configs configs/cpu-small.yaml configs/gpu-full.yaml --set model.args.sampling=$SAMPLING \
        2>&1 | tee runs/logs/training-speed.log | cut -c1-300
    timeout 120 $PY tools/benchmark.py accuracy --data "$DATA" --config configs/gpu-full.yaml --methods geot \
        --fractions 0.2 --tag pilot --force --set optim.epochs=2 optim.steps_per_epoch=10 semi.warmup_epochs=1 \
        semi.rampup_epochs=1 val_every=1 model.args.sampling=$SAMPLING 2>&1 | tee runs/logs/pilot.log | tail -3
    cat runs/bench/geot+pilot-f0.2-s0-gpu-full/log.csv
    timeout 120 $PY tools/benchmark.py inference runs/bench/geot+pilot-f0.2-s0-gpu-full --data "$DATA" --scans 10 \
        --device cuda 2>&1 | tee runs/logs/inference.log | cut -c1-200
    save
    ;;
train)
    epochs=${2:?epochs}
    limit=${3:-480}  # seconds before unfinished runs are stopped
    shift $(( $# < 3 ? $# : 3 ))
    jobs=("$@")
    [ ${#jobs[@]} -gt 0 ] || jobs=(supervised:0.2:0 geot:0.2:0 supervised:1.0:0)  # method:fraction:seed
    common=(--data "$DATA" --config configs/gpu-full.yaml --tag gpu
            --set optim.epochs=$epochs semi.warmup_epochs=$((epochs / 5)) semi.rampup_epochs=$((epochs / 10))
            model.args.sampling=$SAMPLING)
    for job in "${jobs[@]}"; do
        IFS=: read -r method fraction seed <<< "$job"
        OMP_NUM_THREADS=4 timeout "$limit" $PY tools/benchmark.py accuracy --methods "$method" \
            --fractions "$fraction" --seeds "$seed" "${common[@]}" > "runs/logs/$method-$fraction-s$seed-gpu.log" 2>&1 &
    done
    wait
    tail -n 1 runs/logs/*-gpu.log
    for run in runs/bench/geot*+gpu-*-gpu-full; do  # the teacher's pseudo labels against the truth
        [ -f "$run/checkpoints/last.pt" ] && timeout 120 $PY tools/benchmark.py diagnose "$run" --data "$DATA" \
            > "runs/logs/diagnose-$(basename "$run").log" 2>&1
    done
    for run in runs/bench/*+gpu-f1-*-gpu-full runs/bench/geot+gpu-*-gpu-full; do  # the decoder, stage by stage
        [ -f "$run/checkpoints/best.pt" ] && timeout 120 $PY tools/benchmark.py decoding "$run" --data "$DATA" \
            --sizes > "runs/logs/decoding-$(basename "$run").log" 2>&1
    done
    cp docs/results/diagnosis.json "$OUT"/ 2>/dev/null
    save
    ;;
*)
    sed -n 2,14p "$0"; exit 2 ;;
esac
