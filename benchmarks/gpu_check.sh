#!/usr/bin/env bash
# The project's GPU check, run on a GPU machine from the project's root, with .device/ filled by
# shared/gpu/pack.sh (Ray, Optuna, Hydra and pydantic for a machine that has torch but no index):
#     bash benchmarks/gpu_check.sh [PHASE ...]
# phases: tests trainer profile demo packing folder paper hand   (default: all, about 9 minutes)
# Everything it prints is also in $OUT/log.txt; GPU utilisation and memory every 0.5 s in
# $OUT/gpu.csv. Each phase has its own time limit, so one that hangs cannot eat the others.
set -u
D=$(pwd)/.device; OUT=${OUT:-/tmp/gpu_out}; mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
t0=$(date +%s); phase() { echo "=== $1 at +$(( $(date +%s) - t0 )) s"; }
PHASES="$*"; want() { [ -z "$PHASES" ] || [[ " $PHASES " == *" $1 "* ]]; }
W=/tmp/gw; rm -rf $W; mkdir -p $W/site
phase setup
tar xJf "$D/site.tar.xz" -C $W/site || exit 3
chmod -R +x $W/site/ray/core 2>/dev/null  # the wheels were unpacked without their modes: Ray's servers
export PYTHONPATH=$W/site:$(pwd) PYTHONUNBUFFERED=1 RAY_DISABLE_USAGE_STATS=1
(nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv,noheader -lms 500 > "$OUT/gpu.csv" 2>/dev/null &)
python3 -c "import torch, ray, optuna, hydra, scaling_search; print('torch', torch.__version__, torch.cuda.get_device_name(0), 'ray', ray.__version__)" || exit 4
quiet() { grep -v "^\[20\|^ *@\|logging.cc\|^\s*$" "$1" | tail -${2:-14}; }
if want tests; then phase tests
  timeout ${T_TESTS:-40} python3 -m pytest -q -p no:cacheprovider -n 0 tests/test_trainer.py tests/test_device_feed.py -k cuda 2>&1 | tail -6; fi
if want trainer; then phase "trainer against the hand loop (bench_trainer.py --device cuda)"
  timeout ${T_TRAINER:-90} python3 benchmarks/bench_trainer.py --device cuda --epochs 3 --threads 4 --repeats 1 ${TRAINER_ARGS:---trainer-only} 2>&1 | tail -14; fi
if want profile; then phase "one demo trial: set-up, training, profile"
  timeout ${T_PROFILE:-50} python3 benchmarks/bench_gpu.py profile --out "$OUT" 2>&1 | tail -22; fi
if want demo; then phase "the default demo on the GPU (Ray, fractional GPUs): python -m scaling_search.grid ${DEMO_ARGS:-}"
  s=$(date +%s)
  timeout ${T_DEMO:-75} python3 -m scaling_search.grid out_dir=$W/demo hydra.run.dir=$W/h1 report=false ${DEMO_ARGS:-} > $W/demo.log 2>&1
  echo "exit $? after $(( $(date +%s) - s )) s"; quiet $W/demo.log 16; cp $W/demo.log "$OUT/demo.log"
  cp $W/demo/results.csv "$OUT/demo_results.csv" 2>/dev/null; fi
if want folder || want paper || want hand || want packing; then
  python3 "$D/gen_folder.py" $W/imf 20 300; fi
if want folder; then phase "one trial on the image folder: first pass, held, streamed"
  timeout ${T_FOLDER:-60} python3 benchmarks/bench_gpu.py folder $W/imf --cpus 4 --tmp $W/bench 2>&1 | tail -14; fi
if want paper; then phase "experiment=paper_step1, 3 candidates + baseline, 3 epochs, 224 px"
  s=$(date +%s)
  timeout ${T_PAPER:-90} python3 -m scaling_search.grid experiment=paper_step1 data.root=$W/imf data.cache_dir=$W/cache \
    space.step=0.25 seeds_per_candidate=1 trainer.epochs=3 runner.asha=false report=false \
    out_dir=$W/paper hydra.run.dir=$W/h2 ${PAPER_ARGS:-} > $W/paper.log 2>&1
  echo "exit $? after $(( $(date +%s) - s )) s"; quiet $W/paper.log 16; cp $W/paper.log "$OUT/paper.log"
  cp $W/paper/results.csv "$OUT/paper_results.csv" 2>/dev/null; fi
if want hand; then phase "the torchvision hand loop on the same folder (4 workers, batch 256, 2 epochs)"
  timeout ${T_HAND:-75} python3 "$D/hand_loop.py" $W/imf 2 4 256; fi
if want packing; then phase "packing: 1, 2, 4, 8 trials per GPU"
  timeout ${T_PACKING:-80} python3 benchmarks/bench_gpu.py packing --folder $W/imf --cpus 4 --tmp $W/bench 2>&1 | tail -12; fi
phase done
