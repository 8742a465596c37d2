// Max, average and global pooling, NHWC. Compiled once per instruction set; see kernels.h.
//
// Each window is clipped to the real input, so padding is never read: max pooling then behaves as
// if the padding were -inf, and average pooling divides by the clipped count (or, with
// count_include_pad, by the window clipped to the padded input, as PyTorch does under ceil_mode).
// Channels are the vector lanes.
#include <limits>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu::FC_ISA {

namespace {

struct Window {
  int64_t y0, y1, x0, x1;  // clipped to the input, half-open
  int64_t padded_count;    // window positions inside the padded input
};

inline Window window_at(const Pool2dParams& p, int64_t oy, int64_t ox) {
  const int64_t ys = oy * p.stride_h - p.pad_top, xs = ox * p.stride_w - p.pad_left;
  const int64_t ye = min_i64(ys + p.kh, p.h + p.pad_bottom), xe = min_i64(xs + p.kw, p.w + p.pad_right);
  return {max_i64(ys, 0), min_i64(ye, p.h), max_i64(xs, 0), min_i64(xe, p.w), (ye - ys) * (xe - xs)};
}

}  // namespace

void max_pool(const Pool2dParams& p, const float* x, float* y, int threads) {
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * p.c * p.kh * p.kw, threads);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const Window win = window_at(p, oy, ox);
        float* out = y + ((n * p.out_h + oy) * p.out_w + ox) * p.c;
        for (int64_t c = 0; c < p.c; ++c) out[c] = -std::numeric_limits<float>::infinity();
        for (int64_t iy = win.y0; iy < win.y1; ++iy) {
          for (int64_t ix = win.x0; ix < win.x1; ++ix) {
            const float* xp = x + ((n * p.h + iy) * p.w + ix) * p.c;
            // NaN wins, as in numpy.max: once out[c] is NaN, no comparison replaces it.
#pragma omp simd
            for (int64_t c = 0; c < p.c; ++c) out[c] = (xp[c] > out[c] || xp[c] != xp[c]) ? xp[c] : out[c];
          }
        }
      }
    }
  }
}

void avg_pool(const Pool2dParams& p, const float* x, float* y, int threads) {
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * p.c * p.kh * p.kw, threads);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const Window win = window_at(p, oy, ox);
        const int64_t count = p.count_include_pad ? win.padded_count : (win.y1 - win.y0) * (win.x1 - win.x0);
        const float scale = 1.0f / static_cast<float>(count);
        float* out = y + ((n * p.out_h + oy) * p.out_w + ox) * p.c;
        for (int64_t c = 0; c < p.c; ++c) out[c] = 0.0f;
        for (int64_t iy = win.y0; iy < win.y1; ++iy) {
          for (int64_t ix = win.x0; ix < win.x1; ++ix) {
            const float* xp = x + ((n * p.h + iy) * p.w + ix) * p.c;
#pragma omp simd
            for (int64_t c = 0; c < p.c; ++c) out[c] += xp[c];
          }
        }
#pragma omp simd
        for (int64_t c = 0; c < p.c; ++c) out[c] *= scale;
      }
    }
  }
}

// Global pools split (batch, channel chunk) over threads so that batch 1 still uses every core.
void global_avg_pool(const GlobalPoolParams& p, const float* x, float* y, int threads) {
  const int64_t pixels = p.h * p.w, chunks = (p.c + kChannelChunk - 1) / kChannelChunk;
  const int nthreads = threads_for(p.n * pixels * p.c, threads);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t c0 = chunk * kChannelChunk, len = min_i64(kChannelChunk, p.c - c0);
      // double accumulators: a 224x224 map sums 50k values.
      double acc[kChannelChunk];
      for (int64_t j = 0; j < len; ++j) acc[j] = 0.0;
      const float* xp = x + n * pixels * p.c + c0;
      for (int64_t i = 0; i < pixels; ++i) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) acc[j] += xp[i * p.c + j];
      }
      for (int64_t j = 0; j < len; ++j) y[n * p.c + c0 + j] = static_cast<float>(acc[j] / static_cast<double>(pixels));
    }
  }
}

void global_max_pool(const GlobalPoolParams& p, const float* x, float* y, int threads) {
  const int64_t pixels = p.h * p.w, chunks = (p.c + kChannelChunk - 1) / kChannelChunk;
  const int nthreads = threads_for(p.n * pixels * p.c, threads);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t chunk = 0; chunk < chunks; ++chunk) {
      const int64_t c0 = chunk * kChannelChunk, len = min_i64(kChannelChunk, p.c - c0);
      float* out = y + n * p.c + c0;
      const float* xp = x + n * pixels * p.c + c0;
      for (int64_t j = 0; j < len; ++j) out[j] = xp[j];
      for (int64_t i = 1; i < pixels; ++i) {
#pragma omp simd
        for (int64_t j = 0; j < len; ++j) {
          const float v = xp[i * p.c + j];
          out[j] = (v > out[j] || v != v) ? v : out[j];
        }
      }
    }
  }
}

}  // namespace fastconv::cpu::FC_ISA
