// Depthwise 2-D convolution, NHWC: groups == C_in, one input channel per group and a channel
// multiplier M = C_out / C_in (output channel c * M + m). Weights (KH, KW, 1, C * M), i.e. the
// user's (KH, KW, C, M) as laid out in memory. Compiled once per instruction set; see kernels.h.
//
// Channels sit in the vector lanes: for each output pixel and tap, one contiguous run of input
// channels meets one contiguous run of weights.
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu::FC_ISA {

void depthwise(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int64_t mult = p.c_out / p.c_in;
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * p.c_out * p.kh * p.kw, threads);

#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      alignas(64) float acc[kChannelChunk];
      const int64_t iy0 = oy * p.stride_h - p.pad_top;
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const int64_t ix0 = ox * p.stride_w - p.pad_left;
        float* out = y + ((n * p.out_h + oy) * p.out_w + ox) * p.c_out;
        for (int64_t c0 = 0; c0 < p.c_out; c0 += kChannelChunk) {
          const int64_t len = min_i64(kChannelChunk, p.c_out - c0);
          init_accumulator(b ? b + c0 : nullptr, acc, len);
          for (int64_t ky = 0; ky < p.kh; ++ky) {
            const int64_t iy = iy0 + ky * p.dilation_h;
            if (iy < 0 || iy >= p.h) continue;
            for (int64_t kx = 0; kx < p.kw; ++kx) {
              const int64_t ix = ix0 + kx * p.dilation_w;
              if (ix < 0 || ix >= p.w) continue;
              const float* xp = x + ((n * p.h + iy) * p.w + ix) * p.c_in;
              const float* wp = w + (ky * p.kw + kx) * p.c_out + c0;
              if (mult == 1) {
#pragma omp simd
                for (int64_t j = 0; j < len; ++j) acc[j] += xp[c0 + j] * wp[j];
              } else {
                for (int64_t j = 0; j < len; ++j) acc[j] += xp[(c0 + j) / mult] * wp[j];
              }
            }
          }
          store_activated(p.activation, acc, out + c0, len);
        }
      }
    }
  }
}

}  // namespace fastconv::cpu::FC_ISA
