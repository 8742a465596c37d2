// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation: 1x1 convolutions over NHWC
// pixels (rows = N*H*W) and dense layers. Compiled once per instruction set; see kernels.h.
//
// Each row accumulates a chunk of output columns in L1 while streaming the rows of w, so the
// innermost loop is a contiguous axpy the compiler vectorises. Threads split the rows.
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu::FC_ISA {

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int nthreads = threads_for(p.rows * p.k * p.m, threads);

#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t r = 0; r < p.rows; ++r) {
    alignas(64) float acc[kChannelChunk];
    const float* xr = x + r * p.k;
    for (int64_t m0 = 0; m0 < p.m; m0 += kChannelChunk) {
      const int64_t len = min_i64(kChannelChunk, p.m - m0);
      init_accumulator(b ? b + m0 : nullptr, acc, len);
      for (int64_t kk = 0; kk < p.k; ++kk) {
        const float xv = xr[kk];
        const float* wr = w + kk * p.m + m0;
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) acc[j] += xv * wr[j];
      }
      store_activated(p.activation, acc, y + r * p.m + m0, len);
    }
  }
}

}  // namespace fastconv::cpu::FC_ISA
