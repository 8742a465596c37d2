// Machine ceilings for `fastconv bench`: the float32 FMA peak of this instruction set and the
// STREAM-style triad bandwidth. Compiled once per ISA like the kernel families (see kernels.h), so
// the FMA loop uses exactly the vector width and FMA units the kernels of that ISA can use.
//
// Register-only FMA loop: kAcc independent accumulator vectors hide the FMA latency (Zen 4 and
// recent Intel cores: 4-cycle latency x 2 pipes = 8 chains needed; 12 leaves margin) and never
// touch memory. GCC vector extensions rather than intrinsics keep one source for every ISA; the
// target flags (-mavx2 -mfma, -mavx512f, baseline SSE2) decide the instructions. The accumulators
// are summed and returned, so the loop cannot be optimised away; without -ffast-math the compiler
// may not reassociate or shorten the dependency chains either.
#include <omp.h>

#include <cstdint>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu::FC_ISA {

namespace {

constexpr int kLanes = FC_VEC_BYTES / 4;
constexpr int kAcc = 12;

typedef float Vec __attribute__((vector_size(kLanes * sizeof(float))));

// One thread's share: `iters` rounds of kAcc independent a = a * m + c. Returns a lane sum.
__attribute__((noinline)) float fma_chains(int64_t iters, float seed) {
  Vec m, c, a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11;
  for (int l = 0; l < kLanes; ++l) {
    m[l] = 0.999999f;  // |m| < 1 and small c: values converge to c / (1 - m), never overflow
    c[l] = 1e-7f * seed;
  }
  a0 = c * 1.0f; a1 = c * 2.0f; a2 = c * 3.0f; a3 = c * 4.0f; a4 = c * 5.0f; a5 = c * 6.0f;
  a6 = c * 7.0f; a7 = c * 8.0f; a8 = c * 9.0f; a9 = c * 10.0f; a10 = c * 11.0f; a11 = c * 12.0f;
  for (int64_t i = 0; i < iters; ++i) {
    a0 = a0 * m + c; a1 = a1 * m + c; a2 = a2 * m + c; a3 = a3 * m + c;
    a4 = a4 * m + c; a5 = a5 * m + c; a6 = a6 * m + c; a7 = a7 * m + c;
    a8 = a8 * m + c; a9 = a9 * m + c; a10 = a10 * m + c; a11 = a11 * m + c;
  }
  const Vec s = ((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7)) + ((a8 + a9) + (a10 + a11));
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += s[l];
  return total;
}

// Wall time of every thread running `iters` rounds, from a common start barrier to the last finish.
double timed_fma_pass(int threads, int64_t iters, volatile float* sink) {
  double start = 0.0, stop = 0.0;
#pragma omp parallel num_threads(threads)
  {
#pragma omp barrier
#pragma omp master
    start = omp_get_wtime();
    const float r = fma_chains(iters, 1.0f + 0.001f * omp_get_thread_num());
#pragma omp barrier
#pragma omp master
    {
      stop = omp_get_wtime();
      *sink = r;
    }
  }
  return stop - start;
}

}  // namespace

double fma_peak(int threads, double seconds) {
  volatile float sink = 0.0f;
  // Calibrate: double the work until one pass takes a tenth of the budget.
  int64_t iters = 1 << 14;
  double t = timed_fma_pass(threads, iters, &sink);
  while (t < seconds / 10 && iters < (int64_t(1) << 40)) {
    iters *= 2;
    t = timed_fma_pass(threads, iters, &sink);
  }
  // Then the best of a few passes of about a quarter of the budget each.
  if (t > 0.0) iters = int64_t(double(iters) * (seconds / 4) / t) + 1;
  double best = 1e300;
  for (int pass = 0; pass < 4; ++pass) {
    const double tp = timed_fma_pass(threads, iters, &sink);
    best = tp < best ? tp : best;
  }
  const double flops = 2.0 * kLanes * kAcc * double(iters) * threads;
  return flops / best / 1e9;
}

double triad_bandwidth(int64_t n, int threads) {
  float* a = new float[n];
  float* b = new float[n];
  float* c = new float[n];
  // First touch in parallel with the same static schedule as the timed loop: each thread's pages
  // land on its own NUMA node and are mapped before timing starts.
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t i = 0; i < n; ++i) {
    a[i] = 0.0f;
    b[i] = 1.0f;
    c[i] = 2.0f;
  }
  volatile float scalar_source = 3.0f;
  const float s = scalar_source;
  double best = 1e300;
  for (int pass = 0; pass < 5; ++pass) {
    const double start = omp_get_wtime();
#pragma omp parallel for simd schedule(static) num_threads(threads)
    for (int64_t i = 0; i < n; ++i) a[i] = b[i] + s * c[i];
    const double t = omp_get_wtime() - start;
    best = t < best ? t : best;
  }
  volatile float sink = a[n / 2];
  (void)sink;
  delete[] a;
  delete[] b;
  delete[] c;
  return 3.0 * sizeof(float) * double(n) / best / 1e9;
}

}  // namespace fastconv::cpu::FC_ISA
