#!/usr/bin/env bash
# GPU acceptance check, for a machine with an NVIDIA GPU and no network (CuPy, PyTorch, pybind11,
# scikit-build-core, CMake, ninja and nvcc preinstalled). Usage: bench/gpu_check.sh OUTPUT_DIR
#
# Steps (each logs to OUTPUT_DIR/<step>.log, each bounded by a timeout so the whole run stays
# within about 8 minutes on an H100):
#   install    pip install of this checkout with FASTCONV_CUDA=ON (no isolation, no network)
#   info       fastconv info: the CUDA module, device, driver
#   pytest     pytest -q tests, GPU cases included
#   memcheck   compute-sanitizer memcheck over bench/gpu_memcheck.py (every kernel once)
#   racecheck  compute-sanitizer racecheck over the same script (the shared-memory kernels)
#   bench      fastconv bench --device gpu --suite quick, when that subcommand exists
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

run_step install 240 "$python" -m pip install --no-build-isolation --no-deps --no-index -v .
run_step info 30 "$python" -m fastconv info
run_step pytest 180 "$python" -m pytest -q -p no:cacheprovider tests
if command -v compute-sanitizer >/dev/null 2>&1; then
  run_step memcheck 90 compute-sanitizer --tool memcheck --error-exitcode 1 --leak-check no \
    "$python" bench/gpu_memcheck.py
  run_step racecheck 90 compute-sanitizer --tool racecheck --error-exitcode 1 "$python" bench/gpu_memcheck.py
else
  skip_step memcheck "compute-sanitizer not on PATH"
  skip_step racecheck "compute-sanitizer not on PATH"
fi
if "$python" -m fastconv bench --help >/dev/null 2>&1; then
  run_step bench 90 "$python" -m fastconv bench --device gpu --suite quick --json "$out/bench_gpu.json"
else
  skip_step bench "no 'fastconv bench' subcommand"
fi

echo
printf '%-10s %-14s %6s  %s\n' step status time last-line-of-log
for i in "${!steps[@]}"; do
  printf '%-10s %-14s %5ss  %s\n' "${steps[$i]}" "${statuses[$i]}" "${times[$i]}" "${notes[$i]}"
done
echo "logs: $out"
exit "$any_failed"
