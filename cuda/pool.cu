// Max, average and global pooling, NHWC. Semantics copied from cpp/pool.cpp: each window is
// clipped to the real input, so padding is never read; max pooling then treats the padding as
// -inf and propagates NaN (as numpy.max does); average pooling divides by the clipped count or,
// with count_include_pad, by the window clipped to the padded input (PyTorch under ceil_mode).
//
// Kernel versions (`version` 0 takes the best that applies):
//   v1  pool2d_nhwc_kernel<kMax>     a thread per output element, channel fastest so that a warp
//                                    reads 32 adjacent channels of each window pixel; 64-bit
//                                    index arithmetic.
//   v2  pool2d_nhwc_vec4_kernel<kMax, Index>  a thread per 4 channels of an output pixel: 16-byte
//                                    loads and stores (C % 4 == 0, x and y 16-byte aligned), and
//                                    the index decode in 32 bits when the tensor allows (64-bit
//                                    division is a long software sequence on the GPU and would
//                                    cost as much as the loads).
//   v3  pool2d_nhwc_vec4_cols_kernel<kMax, Index, 1>  v2 with the window walked as KW columns
//                                    of the full window, each tested against the clipped range.
//   v4  pool2d_nhwc_vec4_cols_kernel<kMax, Index, 2>  v3 with two neighbouring output pixels
//                                    per thread, whose loads are issued together (twice the bytes
//                                    in flight per thread) and whose index decode is shared.
//   Auto: v2 for max pooling, v3 for average pooling (measured side by side on an H100,
//   bench/NOTES.md).
//   global_pool_nhwc_kernel<kMax>    a block per (image, 32-channel chunk): 8 warps split the
//                                    H*W pixels, then reduce through shared memory. The average
//                                    accumulates in double, like the CPU kernel (a 224x224 map
//                                    sums 50k values).
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kPoolThreads = 256;
constexpr int kGlobalLanes = 32, kGlobalGroups = kPoolThreads / kGlobalLanes;

// NaN wins: once acc is NaN no comparison replaces it, and a NaN v always does.
__device__ __forceinline__ float max_nan(float acc, float v) { return (v > acc || v != v) ? v : acc; }

template <bool kMax>
__global__ void __launch_bounds__(kPoolThreads)
    pool2d_nhwc_kernel(Pool2dParams p, const float* __restrict__ x, float* __restrict__ y, int64_t total) {
  for (int64_t i = blockIdx.x * int64_t{kPoolThreads} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * kPoolThreads) {
    const int64_t c = i % p.c, pix = i / p.c;
    const int64_t ox = pix % p.out_w, oy = (pix / p.out_w) % p.out_h, img = pix / (p.out_w * p.out_h);
    const int64_t ys = oy * p.stride_h - p.pad_top, xs = ox * p.stride_w - p.pad_left;
    const int64_t ye = min(ys + p.kh, p.h + p.pad_bottom), xe = min(xs + p.kw, p.w + p.pad_right);
    const int64_t y0 = max(ys, int64_t{0}), y1 = min(ye, p.h), x0 = max(xs, int64_t{0}), x1 = min(xe, p.w);
    const float* x_img = x + img * p.h * p.w * p.c + c;
    float acc = kMax ? -INFINITY : 0.0f;
    for (int64_t iy = y0; iy < y1; ++iy) {
      for (int64_t ix = x0; ix < x1; ++ix) {
        const float v = __ldg(x_img + (iy * p.w + ix) * p.c);
        acc = kMax ? max_nan(acc, v) : acc + v;
      }
    }
    if constexpr (!kMax) {
      const int64_t count = p.count_include_pad ? (ye - ys) * (xe - xs) : (y1 - y0) * (x1 - x0);
      acc *= 1.0f / static_cast<float>(count);
    }
    y[i] = acc;
  }
}

__device__ __forceinline__ float4 max_nan(const float4& a, const float4& v) {
  return make_float4(max_nan(a.x, v.x), max_nan(a.y, v.y), max_nan(a.z, v.z), max_nan(a.w, v.w));
}

// Index: uint32_t when every element offset of x and y fits, else int64_t.
template <bool kMax, class Index>
__global__ void __launch_bounds__(kPoolThreads)
    pool2d_nhwc_vec4_kernel(Pool2dParams p64, const float* __restrict__ x, float* __restrict__ y, Index total) {
  // Narrowed copies: the decode below runs in Index arithmetic.
  const Index c4 = static_cast<Index>(p64.c / 4), out_w = static_cast<Index>(p64.out_w),
              out_h = static_cast<Index>(p64.out_h), h = static_cast<Index>(p64.h), w = static_cast<Index>(p64.w),
              c = static_cast<Index>(p64.c);
  const int kh = static_cast<int>(p64.kh), kw = static_cast<int>(p64.kw);
  for (Index i = blockIdx.x * Index{kPoolThreads} + threadIdx.x; i < total; i += Index{gridDim.x} * kPoolThreads) {
    const Index cv = i % c4, pix = i / c4;
    const Index ox = pix % out_w, rest = pix / out_w;
    const Index oy = rest % out_h, img = rest / out_h;
    // Window bounds as signed ints: they can start in the padding.
    const int64_t ys = int64_t{oy} * p64.stride_h - p64.pad_top, xs = int64_t{ox} * p64.stride_w - p64.pad_left;
    const int64_t ye = min(ys + kh, int64_t{h} + p64.pad_bottom), xe = min(xs + kw, int64_t{w} + p64.pad_right);
    const Index y0 = static_cast<Index>(max(ys, int64_t{0})), y1 = static_cast<Index>(min(ye, int64_t{h}));
    const Index x0 = static_cast<Index>(max(xs, int64_t{0})), x1 = static_cast<Index>(min(xe, int64_t{w}));
    const float* x_img = x + img * h * w * c + cv * 4;
    float4 acc = kMax ? make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY) : float4{};
    for (Index iy = y0; iy < y1; ++iy) {
      for (Index ix = x0; ix < x1; ++ix) {
        const float4 v = load4(x_img + (iy * w + ix) * c);
        if constexpr (kMax) {
          acc = max_nan(acc, v);
        } else {
          acc.x += v.x, acc.y += v.y, acc.z += v.z, acc.w += v.w;
        }
      }
    }
    if constexpr (!kMax) {
      const int64_t count = p64.count_include_pad ? (ye - ys) * (xe - xs) : int64_t{y1 - y0} * int64_t{x1 - x0};
      const float scale = 1.0f / static_cast<float>(count);
      acc.x *= scale, acc.y *= scale, acc.z *= scale, acc.w *= scale;
    }
    *reinterpret_cast<float4*>(y + i * 4) = acc;
  }
}

// v3 / v4: kPixels neighbouring output pixels of one row per thread, the window walked column by
// column for all of them; total counts threads (channel groups x pixel groups).
template <bool kMax, class Index, int kPixels>
__global__ void __launch_bounds__(kPoolThreads)
    pool2d_nhwc_vec4_cols_kernel(Pool2dParams p64, const float* __restrict__ x, float* __restrict__ y, Index total) {
  // Narrowed copies: the decode below runs in Index arithmetic.
  const Index c4 = static_cast<Index>(p64.c / 4), out_w = static_cast<Index>(p64.out_w),
              out_h = static_cast<Index>(p64.out_h), h = static_cast<Index>(p64.h), w = static_cast<Index>(p64.w),
              c = static_cast<Index>(p64.c);
  const Index groups_w = (out_w + kPixels - 1) / kPixels;
  const int kh = static_cast<int>(p64.kh), kw = static_cast<int>(p64.kw);
  for (Index i = blockIdx.x * Index{kPoolThreads} + threadIdx.x; i < total; i += Index{gridDim.x} * kPoolThreads) {
    const Index cv = i % c4, pix = i / c4;
    const Index ox0 = pix % groups_w * kPixels, rest = pix / groups_w;
    const Index oy = rest % out_h, img = rest / out_h;
    // Window bounds as signed ints: they can start in the padding.
    const int64_t ys = int64_t{oy} * p64.stride_h - p64.pad_top;
    const int64_t ye = min(ys + kh, int64_t{h} + p64.pad_bottom);
    const Index y0 = static_cast<Index>(max(ys, int64_t{0})), y1 = static_cast<Index>(min(ye, int64_t{h}));
    int64_t xs[kPixels], xe[kPixels];
    Index x0[kPixels], x1[kPixels];
    float4 acc[kPixels];
#pragma unroll
    for (int o = 0; o < kPixels; ++o) {
      xs[o] = int64_t{ox0 + o} * p64.stride_w - p64.pad_left;
      xe[o] = min(xs[o] + kw, int64_t{w} + p64.pad_right);
      x0[o] = static_cast<Index>(max(xs[o], int64_t{0}));
      // A pixel past the row's end (odd out_w) gets an empty window and is not stored.
      x1[o] = ox0 + o < out_w ? static_cast<Index>(min(xe[o], int64_t{w})) : x0[o];
      acc[o] = kMax ? make_float4(-INFINITY, -INFINITY, -INFINITY, -INFINITY) : float4{};
    }
    const float* x_img = x + img * h * w * c + cv * 4;
    for (Index iy = y0; iy < y1; ++iy) {
      const float* x_row = x_img + iy * w * c;
      // Window column j of every pixel at once: their loads are independent.
      for (int j = 0; j < kw; ++j) {
#pragma unroll
        for (int o = 0; o < kPixels; ++o) {
          const int64_t ix = xs[o] + j;
          if (ix < int64_t{x0[o]} || ix >= int64_t{x1[o]}) continue;
          const float4 v = load4(x_row + static_cast<Index>(ix) * c);
          if constexpr (kMax) {
            acc[o] = max_nan(acc[o], v);
          } else {
            acc[o].x += v.x, acc[o].y += v.y, acc[o].z += v.z, acc[o].w += v.w;
          }
        }
      }
    }
#pragma unroll
    for (int o = 0; o < kPixels; ++o) {
      if (ox0 + o >= out_w) break;
      if constexpr (!kMax) {
        const int64_t count = p64.count_include_pad ? (ye - ys) * (xe[o] - xs[o]) : int64_t{y1 - y0} * int64_t{x1[o] - x0[o]};
        const float scale = 1.0f / static_cast<float>(count);
        acc[o].x *= scale, acc[o].y *= scale, acc[o].z *= scale, acc[o].w *= scale;
      }
      *reinterpret_cast<float4*>(y + ((rest * out_w + ox0 + o) * c4 + cv) * 4) = acc[o];
    }
  }
}

template <bool kMax>
__global__ void __launch_bounds__(kPoolThreads)
    global_pool_nhwc_kernel(GlobalPoolParams p, const float* __restrict__ x, float* __restrict__ y, int c_chunks) {
  using Acc = std::conditional_t<kMax, float, double>;
  __shared__ Acc partial[kGlobalGroups][kGlobalLanes];
  const int chunk = blockIdx.x % c_chunks;
  const int64_t img = blockIdx.x / c_chunks;
  const int lane = threadIdx.x % kGlobalLanes, group = threadIdx.x / kGlobalLanes;
  const int64_t c = int64_t{chunk} * kGlobalLanes + lane, pixels = p.h * p.w;

  Acc acc = kMax ? -INFINITY : 0.0;
  if (c < p.c) {
    const float* xp = x + img * pixels * p.c + c;
    for (int64_t i = group; i < pixels; i += kGlobalGroups) {
      const float v = __ldg(xp + i * p.c);
      if constexpr (kMax) {
        acc = max_nan(acc, v);
      } else {
        acc += v;
      }
    }
  }
  partial[group][lane] = acc;
  __syncthreads();
  if (group != 0 || c >= p.c) return;
  for (int g = 1; g < kGlobalGroups; ++g) {
    if constexpr (kMax) {
      acc = max_nan(acc, partial[g][lane]);
    } else {
      acc += partial[g][lane];
    }
  }
  if constexpr (kMax) {
    y[img * p.c + c] = acc;
  } else {
    y[img * p.c + c] = static_cast<float>(acc / static_cast<double>(pixels));
  }
}

// Grid-stride loops: past 2^20 blocks every SM is busy anyway.
unsigned pool_blocks(int64_t threads) {
  return grid_size(std::min<int64_t>(ceil_div(threads, kPoolThreads), 1 << 20), "pool2d");
}

// 32-bit decode when every element offset of x and y (and the grid-stride step) stays below 2^31.
bool narrow_index(const Pool2dParams& p) {
  return p.n * p.h * p.w * p.c < (int64_t{1} << 31) && p.n * p.out_h * p.out_w * p.c < (int64_t{1} << 31);
}

template <bool kMax>
void launch_pool2d_vec4(const Pool2dParams& p, const float* x, float* y, cudaStream_t s) {
  const int64_t total = p.n * p.out_h * p.out_w * (p.c / 4);
  if (narrow_index(p)) {
    pool2d_nhwc_vec4_kernel<kMax, uint32_t><<<pool_blocks(total), kPoolThreads, 0, s>>>(
        p, x, y, static_cast<uint32_t>(total));
  } else {
    pool2d_nhwc_vec4_kernel<kMax, int64_t><<<pool_blocks(total), kPoolThreads, 0, s>>>(p, x, y, total);
  }
  FC_CHECK_LAUNCH(kMax ? "pool2d_nhwc_vec4_kernel<max>" : "pool2d_nhwc_vec4_kernel<avg>");
}

template <bool kMax, int kPixels>
void launch_pool2d_vec4_cols(const Pool2dParams& p, const float* x, float* y, cudaStream_t s) {
  const int64_t total = p.n * p.out_h * ceil_div(p.out_w, kPixels) * (p.c / 4);
  if (narrow_index(p)) {
    pool2d_nhwc_vec4_cols_kernel<kMax, uint32_t, kPixels><<<pool_blocks(total), kPoolThreads, 0, s>>>(
        p, x, y, static_cast<uint32_t>(total));
  } else {
    pool2d_nhwc_vec4_cols_kernel<kMax, int64_t, kPixels><<<pool_blocks(total), kPoolThreads, 0, s>>>(p, x, y, total);
  }
  FC_CHECK_LAUNCH(kMax ? "pool2d_nhwc_vec4_cols_kernel<max>" : "pool2d_nhwc_vec4_cols_kernel<avg>");
}

template <bool kMax>
void launch_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream, int version) {
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const bool vec4 = p.c % 4 == 0 && aligned16(x) && aligned16(y);
  if (version < 0 || version > 4) {
    throw std::invalid_argument("pool2d: no kernel version " + std::to_string(version));
  }
  if (version >= 2 && !vec4) {
    throw std::invalid_argument("pool2d: kernel version " + std::to_string(version) +
                                " needs C % 4 == 0 and 16-byte aligned arrays");
  }
  if (vec4 && (version == 4)) {
    launch_pool2d_vec4_cols<kMax, 2>(p, x, y, s);
  } else if (vec4 && (version == 3 || (version == 0 && !kMax))) {
    launch_pool2d_vec4_cols<kMax, 1>(p, x, y, s);
  } else if (vec4 && version != 1) {
    launch_pool2d_vec4<kMax>(p, x, y, s);
  } else {
    const int64_t total = p.n * p.out_h * p.out_w * p.c;
    pool2d_nhwc_kernel<kMax><<<pool_blocks(total), kPoolThreads, 0, s>>>(p, x, y, total);
    FC_CHECK_LAUNCH(kMax ? "pool2d_nhwc_kernel<max>" : "pool2d_nhwc_kernel<avg>");
  }
}

template <bool kMax>
void launch_global_pool(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream) {
  const int64_t c_chunks = ceil_div(p.c, kGlobalLanes);
  const unsigned blocks = grid_size(p.n * c_chunks, "global_pool");
  global_pool_nhwc_kernel<kMax><<<blocks, kPoolThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(
      p, x, y, static_cast<int>(c_chunks));
  FC_CHECK_LAUNCH(kMax ? "global_pool_nhwc_kernel<max>" : "global_pool_nhwc_kernel<avg>");
}

}  // namespace

void max_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream, int version) {
  launch_pool2d<true>(p, x, y, stream, version);
}
void avg_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream, int version) {
  launch_pool2d<false>(p, x, y, stream, version);
}
void global_max_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream) {
  launch_global_pool<true>(p, x, y, stream);
}
void global_avg_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream) {
  launch_global_pool<false>(p, x, y, stream);
}

}  // namespace fastconv::cuda
