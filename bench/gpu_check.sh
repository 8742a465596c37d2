#!/usr/bin/env bash
# GPU acceptance check, for a machine with an NVIDIA GPU and no network (CuPy, PyTorch, pybind11,
# scikit-build-core, CMake, ninja and nvcc preinstalled). Usage: bench/gpu_check.sh OUTPUT_DIR
#
# Steps (each logs to OUTPUT_DIR/<step>.log, each bounded by a timeout so the whole run stays
# within about 8 minutes on an H100; about 5 when all goes well):
#   install    pip install of this checkout with FASTCONV_CUDA=ON (no isolation, no network), code
#              for this card's architecture only (FASTCONV_CHECK_ARCH, default: the card's
#              compute capability as nvidia-smi reports it) to keep the build short
#   info       fastconv info: the CUDA module, device, driver
#   pytest     the GPU tests: every op test's cuda parametrisation and tests/test_gpu.py
#   cputests   the rest of the test suite, on every instruction set this machine's CPU has
#              (FASTCONV_CHECK_CPU=0 skips it, for a rerun after GPU-only changes)
#   memcheck   compute-sanitizer memcheck over bench/gpu_memcheck.py (every kernel version once)
#   racecheck  compute-sanitizer racecheck over the same script (the shared-memory kernels)
#   versions   bench/gpu_versions.py: each kernel version checked and timed on the gpu suite
#   probe      the same on bench/gpu_probe.json: 3x3 / 5x5 layers narrower than the suite's, the
#              shapes that decide where "auto" takes Winograd and which tile
#   stages     bench/gpu_stages.py under Nsight Compute (ncu, when on PATH): the suite's Winograd
#              layers kernel by kernel (transforms, products), caches and clocks left as they are
#   bench      fastconv bench --device gpu --suite gpu: fastconv vs cuDNN (TF32 off) and CuPy
# A failing step does not stop the others; the exit status is 1 when any step failed.
set -u

if [ $# -ne 1 ]; then
  echo "usage: $0 OUTPUT_DIR" >&2
  exit 2
fi
mkdir -p "$1"
out=$(cd "$1" && pwd)
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

steps=()
statuses=()
times=()
notes=()
any_failed=0

# run_step NAME TIMEOUT_S COMMAND...
run_step() {
  local name=$1 limit=$2
  shift 2
  local log="$out/$name.log" start=$SECONDS status
  echo "== $name: $*" | tee "$log"
  timeout -k 10 "$limit" "$@" >>"$log" 2>&1
  local rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="timeout(${limit}s)"; any_failed=1 ;;
    *) status="FAIL($rc)"; any_failed=1 ;;
  esac
  steps+=("$name")
  statuses+=("$status")
  times+=($((SECONDS - start)))
  notes+=("$(tail -n 1 "$log" | cut -c1-70)")
  echo "   -> $status"
}

skip_step() {
  steps+=("$1")
  statuses+=(skip)
  times+=(0)
  notes+=("$2")
  echo "== $1: skip ($2)"
}

export FASTCONV_CUDA=ON
export CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}
export PYTHONUNBUFFERED=1
arch=${FASTCONV_CHECK_ARCH:-$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d '. ')}
arch=${arch:-90}

run_step install 240 "$python" -m pip install --no-build-isolation --no-deps --no-index -v \
  -C "cmake.define.FASTCONV_CUDA_ARCHITECTURES=${arch}-real" .
run_step info 30 "$python" -m fastconv info
xdist=()
"$python" -c "import xdist" 2>/dev/null && xdist=(-n 4)
run_step pytest 180 "$python" -m pytest -q -p no:cacheprovider "${xdist[@]}" -k "cuda or test_gpu" tests
# The CPU suite too: this machine's CPU may run instruction sets (AVX-512) the CI machine lacks.
[ ${#xdist[@]} -gt 0 ] && xdist=(-n 8)
if [ "${FASTCONV_CHECK_CPU:-1}" = 1 ]; then
  run_step cputests 180 "$python" -m pytest -q -p no:cacheprovider "${xdist[@]}" -k "not cuda and not test_gpu" tests
else
  skip_step cputests "FASTCONV_CHECK_CPU=0"
fi
if command -v compute-sanitizer >/dev/null 2>&1; then
  run_step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check no \
    "$python" bench/gpu_memcheck.py
  run_step racecheck 60 compute-sanitizer --tool racecheck --error-exitcode 1 "$python" bench/gpu_memcheck.py
else
  skip_step memcheck "compute-sanitizer not on PATH"
  skip_step racecheck "compute-sanitizer not on PATH"
fi
run_step versions 120 "$python" bench/gpu_versions.py --json "$out/versions.json"
run_step probe 90 "$python" bench/gpu_versions.py --suite bench/gpu_probe.json --json "$out/probe.json"
if command -v ncu >/dev/null 2>&1; then
  run_step stages 120 bash -c "ncu --csv --metrics gpu__time_duration.sum --profile-from-start off \
    --cache-control none --clock-control none '$python' bench/gpu_stages.py > '$out/stages.csv' &&
    '$python' bench/gpu_stages.py --table '$out/stages.csv'"
else
  skip_step stages "ncu not on PATH"
fi
run_step bench 180 "$python" -m fastconv bench --device gpu --suite gpu --remeasure --json "$out/bench_gpu.json"

echo
for log in versions probe; do
  [ -s "$out/$log.log" ] && grep -E "^[a-z0-9_]+ +(w[24]|[0-9]) |^case|TFLOP/s, copy|^host time" "$out/$log.log" |
    grep -v " n/a: " | cut -c1-200
done
[ -s "$out/stages.log" ] && grep -E "^[a-z0-9_ ]+ +[0-9.]+ us: " "$out/stages.log" | cut -c1-160
[ -s "$out/bench.log" ] && sed -n '/^GPU/,$p' "$out/bench.log" | cut -c1-150
echo
printf '%-10s %-14s %6s  %s\n' step status time last-line-of-log
for i in "${!steps[@]}"; do
  printf '%-10s %-14s %5ss  %s\n' "${steps[$i]}" "${statuses[$i]}" "${times[$i]}" "${notes[$i]}"
done
echo "logs: $out"
exit "$any_failed"
