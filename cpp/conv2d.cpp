// Dense 2-D convolution, NHWC activations, HWIO weights (KH, KW, C_in / groups, C_out).
// Compiled once per instruction set (FC_ISA = portable | avx2 | avx512); see kernels.h.
//
// Direct algorithm: for each output pixel, a chunk of output channels is accumulated in L1 over
// every tap (ky, kx) and input channel of its group; the innermost loop runs along contiguous
// output channels of one weight row, which the compiler vectorises for the target ISA.
// Taps that fall in the padding are skipped, so no padded copy of the input is made.
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu::FC_ISA {

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int64_t cig = p.c_in_per_group(), cog = p.c_out_per_group();
  const int64_t pixel_work = p.kh * p.kw * cig * p.c_out;
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * pixel_work, threads);

#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      alignas(64) float acc[kChannelChunk];
      const int64_t iy0 = oy * p.stride_h - p.pad_top;
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const int64_t ix0 = ox * p.stride_w - p.pad_left;
        float* out = y + ((n * p.out_h + oy) * p.out_w + ox) * p.c_out;
        for (int64_t g = 0; g < p.groups; ++g) {
          for (int64_t co0 = 0; co0 < cog; co0 += kChannelChunk) {
            const int64_t len = min_i64(kChannelChunk, cog - co0);
            const int64_t oc = g * cog + co0;  // first output channel of this chunk
            init_accumulator(b ? b + oc : nullptr, acc, len);
            for (int64_t ky = 0; ky < p.kh; ++ky) {
              const int64_t iy = iy0 + ky * p.dilation_h;
              if (iy < 0 || iy >= p.h) continue;
              for (int64_t kx = 0; kx < p.kw; ++kx) {
                const int64_t ix = ix0 + kx * p.dilation_w;
                if (ix < 0 || ix >= p.w) continue;
                const float* xp = x + ((n * p.h + iy) * p.w + ix) * p.c_in + g * cig;
                const float* wp = w + (ky * p.kw + kx) * cig * p.c_out + oc;
                for (int64_t ci = 0; ci < cig; ++ci) {
                  const float xv = xp[ci];
                  const float* wr = wp + ci * p.c_out;
#pragma omp simd
                  for (int64_t j = 0; j < len; ++j) acc[j] += xv * wr[j];
                }
              }
            }
            store_activated(p.activation, acc, out + oc, len);
          }
        }
      }
    }
  }
}

}  // namespace fastconv::cpu::FC_ISA
