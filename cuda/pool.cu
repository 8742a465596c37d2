// Max, average and global pooling, NHWC. Semantics copied from cpp/pool.cpp: each window is
// clipped to the real input, so padding is never read; max pooling then treats the padding as
// -inf and propagates NaN (as numpy.max does); average pooling divides by the clipped count or,
// with count_include_pad, by the window clipped to the padded input (PyTorch under ceil_mode).
//
// Kernel versions:
//   pool2d_nhwc_kernel<kMax>         a thread per output element, channel fastest so that a warp
//                                    reads 32 adjacent channels of each window pixel.
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

template <bool kMax>
void launch_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream) {
  const int64_t total = p.n * p.out_h * p.out_w * p.c;
  // Grid-stride: past 2^20 blocks every SM is busy anyway.
  const unsigned blocks = grid_size(std::min<int64_t>(ceil_div(total, kPoolThreads), 1 << 20), "pool2d");
  pool2d_nhwc_kernel<kMax><<<blocks, kPoolThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(p, x, y, total);
  FC_CHECK_LAUNCH(kMax ? "pool2d_nhwc_kernel<max>" : "pool2d_nhwc_kernel<avg>");
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

void max_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream) {
  launch_pool2d<true>(p, x, y, stream);
}
void avg_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream) {
  launch_pool2d<false>(p, x, y, stream);
}
void global_max_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream) {
  launch_global_pool<true>(p, x, y, stream);
}
void global_avg_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream) {
  launch_global_pool<false>(p, x, y, stream);
}

}  // namespace fastconv::cuda
