// Dense 2-D convolution, NHWC activations, HWIO weights (KH, KW, C_in / groups, C_out).
// Compiled once per instruction set (FC_ISA = portable | avx2 | avx512); see kernels.h.
//
// Kernel versions and when each runs:
//  - tiled_conv (groups == 1, every stride / padding / dilation; pointwise convolutions go to
//    gemm.cpp instead): the register-tiled engine of tiled_conv.h. Output pixels are flattened over
//    (n, oy, ox) and cut into tiles of TR consecutive pixels (a tile may span output rows); output
//    channels into blocks of TV vectors. Tile shape: the narrow kNarrowRows x 1-vector tile when
//    C_out fits one vector (LeNet C1: 6 channels), else the wide kTileRows x 2-vector tile.
//    For kernel row ky, a pixel's input window x[n, iy, ix0 .. ix0+KW-1, :] is KW*C_in contiguous
//    floats laid out like the weight rows w[ky, :, :, :], so one reduction of length KW*C_in per
//    kernel row covers every tap and input channel, even for C_in = 1 or 3. Windows that leave
//    the image horizontally (padding) or are dilated are gathered, zero padded, into a per-thread
//    scratch; rows above / below the image point at a zero segment. Weights are packed per call
//    into contiguous, zero-padded channel blocks.
//  - grouped_conv2d (groups > 1): the simple per-pixel reference loop, a documented fallback.
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"

namespace fastconv::cpu::FC_ISA {

namespace {

// Tiles whose input windows are set up together and then swept once per channel block: the
// weights of one block are read from L3 once per group and reused from L2 by its tiles.
constexpr int64_t kTilesPerGroup = 8;

static inline float* alloc_floats(int64_t count) {
  const size_t bytes = ((static_cast<size_t>(count) * sizeof(float) + 63) / 64) * 64;
  return static_cast<float*>(std::aligned_alloc(64, bytes ? bytes : 64));
}

void grouped_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
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

// Copies one kernel row of one pixel's window, [kx][ci], with zeros where it leaves the image.
static inline void gather_window_row(const Conv2dParams& p, const float* x_row, int64_t ix0, float* dst) {
  for (int64_t kx = 0; kx < p.kw; ++kx, dst += p.c_in) {
    const int64_t ix = ix0 + kx * p.dilation_w;
    if (ix < 0 || ix >= p.w) {
      std::memset(dst, 0, sizeof(float) * p.c_in);
    } else {
      std::memcpy(dst, x_row + ix * p.c_in, sizeof(float) * p.c_in);
    }
  }
}

// The engine with TR x TV tiles (see tiled_conv.h).
template <int TR, int TV>
void tiled_conv_impl(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  constexpr int64_t kCols = TV * kVecLen;
  const int64_t seg = p.kw * p.c_in;  // one kernel row of one pixel's window
  const int64_t taps = p.kh;
  const int64_t weight_rows = taps * seg;
  const int64_t pixels = p.n * p.out_h * p.out_w;
  const int64_t tiles = (pixels + TR - 1) / TR;
  const int64_t blocks = (p.c_out + kCols - 1) / kCols;
  const int nthreads = threads_for(pixels * weight_rows * p.c_out, threads);

  // Weights packed per call into [block][weight_rows][kCols], zero padded past C_out: one
  // block's weights are then contiguous (read in place with row stride C_out, a large C_out maps a
  // block onto a few cache sets and it thrashes L2). Bias padded the same way.
  float* w_packed = alloc_floats(blocks * weight_rows * kCols);
  float* b_packed = b ? alloc_floats(blocks * kCols) : nullptr;
  for (int64_t j = 0; b && j < blocks * kCols; ++j) b_packed[j] = j < p.c_out ? b[j] : 0.0f;
  const bool needs_gather = p.dilation_w != 1 || p.pad_left > 0 || (p.out_w - 1) * p.stride_w - p.pad_left + p.kw > p.w;
  const int64_t scratch_per_thread = needs_gather ? kTilesPerGroup * TR * taps * seg : 0;
  float* scratch = needs_gather ? alloc_floats(nthreads * scratch_per_thread) : nullptr;
  float* zeros = alloc_floats(seg);
  std::memset(zeros, 0, sizeof(float) * seg);

#pragma omp parallel num_threads(nthreads)
  {
    // Row by row: each weight row is read once, sequentially (block by block it would be read with
    // stride C_out once per block, several times slower for large C_out).
#pragma omp for schedule(static)
    for (int64_t row = 0; row < weight_rows; ++row) {
      const float* src = w + row * p.c_out;
      for (int64_t block = 0; block < blocks; ++block, src += kCols) {
        const int64_t cols = min_i64(kCols, p.c_out - block * kCols);
        float* dst = w_packed + (block * weight_rows + row) * kCols;
        for (int64_t j = 0; j < kCols; ++j) dst[j] = j < cols ? src[j] : 0.0f;
      }
    }

    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t tile_begin = tiles * tid / nt, tile_end = tiles * (tid + 1) / nt;
    const float** segs = new const float*[kTilesPerGroup * taps * TR];
    float* my_scratch = scratch ? scratch + tid * scratch_per_thread : nullptr;

    for (int64_t group = tile_begin; group < tile_end; group += kTilesPerGroup) {
      const int64_t group_tiles = min_i64(kTilesPerGroup, tile_end - group);
      // Where each pixel's window rows start; pixels past the end read zeros and are never stored.
      int64_t pixel = group * TR;
      int64_t n = pixel / (p.out_h * p.out_w), oy = pixel / p.out_w % p.out_h, ox = pixel % p.out_w;
      int64_t gathered = 0;
      for (int64_t slot = 0; slot < group_tiles * TR; ++slot, ++pixel) {
        const float** pixel_segs = segs + slot / TR * taps * TR + slot % TR;
        if (pixel >= pixels) {
          for (int64_t ky = 0; ky < taps; ++ky) pixel_segs[ky * TR] = zeros;
          continue;
        }
        const int64_t iy0 = oy * p.stride_h - p.pad_top, ix0 = ox * p.stride_w - p.pad_left;
        const bool window_inside = p.dilation_w == 1 && ix0 >= 0 && ix0 + p.kw <= p.w;
        for (int64_t ky = 0; ky < taps; ++ky) {
          const int64_t iy = iy0 + ky * p.dilation_h;
          const float* x_row = x + (n * p.h + iy) * p.w * p.c_in;
          if (iy < 0 || iy >= p.h) {
            pixel_segs[ky * TR] = zeros;
          } else if (window_inside) {
            pixel_segs[ky * TR] = x_row + ix0 * p.c_in;
          } else {
            float* dst = my_scratch + gathered++ * seg;
            gather_window_row(p, x_row, ix0, dst);
            pixel_segs[ky * TR] = dst;
          }
        }
        if (++ox == p.out_w) {
          ox = 0;
          if (++oy == p.out_h) oy = 0, ++n;
        }
      }
      for (int64_t block = 0; block < blocks; ++block) {
        TileJob job{};
        job.taps = taps;
        job.seg = seg;
        job.w = w_packed + block * weight_rows * kCols;
        job.ldw = kCols;
        job.bias = b_packed ? b_packed + block * kCols : nullptr;
        job.ldo = p.c_out;
        job.cols = min_i64(kCols, p.c_out - block * kCols);
        job.act = p.activation;
        for (int64_t t = 0; t < group_tiles; ++t) {
          const int64_t first_pixel = (group + t) * TR;
          job.segs = segs + t * taps * TR;
          // The group's inputs come into cache while the first block runs; later blocks reuse them.
          job.next_segs = block == 0 && t + 1 < group_tiles ? job.segs + taps * TR : nullptr;
          job.out = y + first_pixel * p.c_out + block * kCols;
          run_tile_rows<TR, TV>(min_i64(TR, pixels - first_pixel), job);
        }
      }
    }
    delete[] segs;
  }
  std::free(zeros);
  std::free(scratch);
  std::free(b_packed);
  std::free(w_packed);
}

}  // namespace

void tiled_conv(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  if (p.c_out <= kVecLen) {
    tiled_conv_impl<kNarrowRows, 1>(p, x, w, b, y, threads);
  } else {
    tiled_conv_impl<kTileRows, kTileVecs>(p, x, w, b, y, threads);
  }
}

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  if (p.groups == 1) {
    tiled_conv(p, x, w, b, y, threads);
  } else {
    grouped_conv2d(p, x, w, b, y, threads);
  }
}

}  // namespace fastconv::cpu::FC_ISA
