// Winograd F(m x m, r x r) for 3x3 / 5x5, stride 1, dilation 1, groups 1 NHWC convolutions, any
// padding, with output tiles of m = 2 or 4 (Lavin and Gray, 2015): an m x m tile costs A * A
// multiplies per (input, output) channel pair, A = m + r - 1, against m * m * r * r direct:
//   F(2x2, 3x3) 16 per 4 outputs (2.25x fewer)    F(4x4, 3x3) 36 per 16 (4x fewer)
//   F(2x2, 5x5) 36 per 4 outputs (2.8x fewer)     F(4x4, 5x5) 64 per 16 (6.25x fewer)
// for an extra pass over transformed tiles, which 4x4 tiles also shrink (A * A / (m * m) values
// per output and channel: 4 or 9 with 2x2 tiles, 2.25 or 4 with 4x4).
//
// Stages, enqueued on the stream with one workspace (common.cuh) holding U, V and M:
//   winograd_weight_kernel  U[e][c][k] = (G g G^T)[e] of the filter of (c, k); e = A * i + j
//   winograd_input_kernel   V[e][t][c] = (B^T d B)[e] of the A x A input tile d under output tile t
//                           (zeros in the padding)
//   batched_gemm (gemm.cu)  M[e] = V[e] @ U[e], (T x C_in) @ (C_in x C_out), for the A * A e
//   winograd_output_kernel  y = A^T M A per tile, + bias, activation, clipped to the output
// The transforms are one thread per (tile, channel), channel fastest: loads and stores coalesce
// across a warp for any channel count. F(2x2, 3x3)'s constants are 0, +-1 and 1/2, so its
// rounding stays close to the direct sum's; the others' (points +-2, and +-1/2 for F(4x4, 5x5))
// round several times worse, still well inside the tolerance from 8 input channels (see
// winograd_conv2d for fewer).
//
// Kernel versions (`version` 0 picks by C_in, see winograd_conv2d): v1 2x2 output tiles,
// v2 4x4, v3 4x4 with the input transform fused into the products (5x5 only, winograd_fused_kernel).
// Chosen by conv2d() (conv2d.cu) for algorithm="winograd", and for "auto" where it pays
// (winograd_pays below; measured in bench/NOTES.md).
#include <algorithm>
#include <string>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kWinogradThreads = 256;

// The fused F(4x4, 5x5) kernel's block (winograd_fused_kernel): output tiles x output channels,
// input channels per step.
constexpr int kFusedTiles = 16, kFusedChannels = 16, kFusedStep = 8;

struct WinogradGeometry {
  int64_t h, w, c, k, out_h, out_w, pad_top, pad_left;
  int64_t tiles_h, tiles_w, tiles;  // M x M output tiles per column, per row, in the batch
  Activation activation;
};

unsigned transform_blocks(int64_t threads, const char* kernel) {
  return grid_size(std::min<int64_t>(ceil_div(threads, kWinogradThreads), 1 << 20), kernel);
}

// The transforms along one direction, for F(M x M, R x R) over an A = M + R - 1 point tile:
//   F(2x2, 3x3)  A = 4, points 0, +-1 and infinity
//   F(2x2, 5x5)  A = 6, points 0, +-1, +-2 and infinity (the CPU's bt / at / gt in
//   F(4x4, 3x3)  A = 6,   cpp/conv2d_winograd.cpp are the same matrices)
//   F(4x4, 5x5)  A = 8, points 0, +-1, +-2, +-1/2 and infinity: B^T scaled by 4 and G by 1/4 so that
//                B^T's entries are integers; rows of +-p share their even and odd sums.
// g: G (A x R) on R taps; bt: B^T (A x A); at: A^T (M x A).
template <int M, int R>
struct Transform;

__device__ __forceinline__ void bt6(const float* d, float* r) {  // B^T for the points 0, +-1, +-2
  r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  const float a = d[4] - 4.0f * d[2], b = d[3] - 4.0f * d[1];
  r[1] = a + b;
  r[2] = a - b;
  const float c = d[4] - d[2], e = 2.0f * (d[3] - d[1]);
  r[3] = c + e;
  r[4] = c - e;
  r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

template <>
struct Transform<2, 3> {
  __device__ static void g(const float* t, float* u) {
    u[0] = t[0];
    u[1] = 0.5f * (t[0] + t[1] + t[2]);
    u[2] = 0.5f * (t[0] - t[1] + t[2]);
    u[3] = t[2];
  }
  __device__ static void bt(const float* d, float* r) {
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  __device__ static void at(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
};

template <>
struct Transform<2, 5> {
  __device__ static void g(const float* t, float* u) {  // the taps' polynomial at each point, scaled
    const float even = t[0] + t[2] + t[4], odd = t[1] + t[3];
    u[0] = 0.25f * t[0];
    u[1] = (-1.0f / 6.0f) * (even + odd);
    u[2] = (-1.0f / 6.0f) * (even - odd);
    const float even2 = (1.0f / 24.0f) * t[0] + (1.0f / 6.0f) * t[2] + (2.0f / 3.0f) * t[4];
    const float odd2 = (1.0f / 12.0f) * t[1] + (1.0f / 3.0f) * t[3];
    u[3] = even2 + odd2;
    u[4] = even2 - odd2;
    u[5] = t[4];
  }
  __device__ static void bt(const float* d, float* r) { bt6(d, r); }
  __device__ static void at(const float* m, float* o) {
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];
    o[1] = m[1] - m[2] + 2.0f * (m[3] - m[4]) + m[5];
  }
};

template <>
struct Transform<4, 3> {
  __device__ static void g(const float* t, float* u) {
    u[0] = 0.25f * t[0];
    const float s02 = t[0] + t[2];
    u[1] = (-1.0f / 6.0f) * (s02 + t[1]);
    u[2] = (-1.0f / 6.0f) * (s02 - t[1]);
    const float even = (1.0f / 24.0f) * t[0] + (1.0f / 6.0f) * t[2];
    u[3] = even + (1.0f / 12.0f) * t[1];
    u[4] = even - (1.0f / 12.0f) * t[1];
    u[5] = t[2];
  }
  __device__ static void bt(const float* d, float* r) { bt6(d, r); }
  __device__ static void at(const float* m, float* o) {
    const float s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = d12 + 2.0f * d34;
    o[2] = s12 + 4.0f * s34;
    o[3] = d12 + 8.0f * d34 + m[5];
  }
};

template <>
struct Transform<4, 5> {
  __device__ static void g(const float* t, float* u) {
    u[0] = -0.25f * t[0];
    u[7] = 0.25f * t[4];
    const float e1 = (-1.0f / 18.0f) * (t[0] + t[2] + t[4]), o1 = (-1.0f / 18.0f) * (t[1] + t[3]);
    u[1] = e1 + o1;
    u[2] = e1 - o1;
    const float e3 = (1.0f / 360.0f) * t[0] + (1.0f / 90.0f) * t[2] + (2.0f / 45.0f) * t[4];
    const float o3 = (1.0f / 180.0f) * t[1] + (1.0f / 45.0f) * t[3];
    u[3] = e3 + o3;
    u[4] = e3 - o3;
    const float e5 = (8.0f / 45.0f) * t[0] + (2.0f / 45.0f) * t[2] + (1.0f / 90.0f) * t[4];
    const float o5 = (4.0f / 45.0f) * t[1] + (1.0f / 45.0f) * t[3];
    u[5] = e5 + o5;
    u[6] = e5 - o5;
  }
  __device__ static void bt(const float* d, float* r) {
    r[0] = -4.0f * d[0] + 21.0f * d[2] - 21.0f * d[4] + 4.0f * d[6];
    r[7] = -4.0f * d[1] + 21.0f * d[3] - 21.0f * d[5] + 4.0f * d[7];
    const float e1 = 4.0f * d[2] - 17.0f * d[4] + 4.0f * d[6], o1 = 4.0f * d[1] - 17.0f * d[3] + 4.0f * d[5];
    r[1] = e1 + o1;
    r[2] = e1 - o1;
    const float e3 = d[2] - 5.0f * d[4] + 4.0f * d[6], o3 = 2.0f * d[1] - 10.0f * d[3] + 8.0f * d[5];
    r[3] = e3 + o3;
    r[4] = e3 - o3;
    const float e5 = 16.0f * d[2] - 20.0f * d[4] + 4.0f * d[6], o5 = 8.0f * d[1] - 10.0f * d[3] + 2.0f * d[5];
    r[5] = e5 + o5;
    r[6] = e5 - o5;
  }
  __device__ static void at(const float* m, float* o) {
    const float s1 = m[1] + m[2], d1 = m[1] - m[2];
    const float s3 = m[3] + m[4], d3 = m[3] - m[4];
    const float s5 = m[5] + m[6], d5 = m[5] - m[6];
    o[0] = m[0] + s1 + s3 + s5;
    o[1] = d1 + 2.0f * d3 + 0.5f * d5;
    o[2] = s1 + 4.0f * s3 + 0.25f * s5;
    o[3] = d1 + 8.0f * d3 + 0.125f * d5 + m[7];
  }
};

// w: HWIO (R, R, C, K) -> U: (A * A, C, K), or with kBlocked the fused kernel's layout:
// (K / 16, C padded to 8, A * A, 16), zeros in the padding (see winograd_fused_kernel).
template <int M, int R, bool kBlocked = false>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_weight_kernel(const float* __restrict__ w, int64_t c, int64_t k, float* __restrict__ u) {
  constexpr int A = M + R - 1;
  const int64_t ck = c * k;
  const int64_t c_pad = kBlocked ? ceil_div(c, kFusedStep) * kFusedStep : c;
  const int64_t k_pad = kBlocked ? ceil_div(k, kFusedChannels) * kFusedChannels : k;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < c_pad * k_pad;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t ci = i / k_pad, ki = i % k_pad;
    const bool real = ci < c && ki < k;
    const int64_t src = ci * k + ki;
    float gg[A][R];  // G g: each column of taps through G
#pragma unroll
    for (int s = 0; s < R; ++s) {
      float col[R], out[A];
#pragma unroll
      for (int r = 0; r < R; ++r) col[r] = real ? __ldg(w + (r * R + s) * ck + src) : 0.0f;
      Transform<M, R>::g(col, out);
#pragma unroll
      for (int r = 0; r < A; ++r) gg[r][s] = out[r];
    }
    float* u_e = kBlocked ? u + ((ki / kFusedChannels * c_pad + ci) * A * A) * kFusedChannels + ki % kFusedChannels
                          : u + i;
    const int64_t e_stride = kBlocked ? kFusedChannels : ck;
#pragma unroll
    for (int r = 0; r < A; ++r) {  // (G g) G^T
      float out[A];
      Transform<M, R>::g(gg[r], out);
#pragma unroll
      for (int s = 0; s < A; ++s) u_e[(r * A + s) * e_stride] = out[s];
    }
  }
}

// x: NHWC -> V: (A * A, tiles, C).
template <int M, int R>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_input_kernel(WinogradGeometry g, const float* __restrict__ x, float* __restrict__ v) {
  constexpr int A = M + R - 1;
  const int64_t tc = g.tiles * g.c;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tc;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t c = i % g.c, tile = i / g.c;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    const int64_t iy0 = M * ty - g.pad_top, ix0 = M * tx - g.pad_left;
    const float* x_img = x + img * g.h * g.w * g.c + c;
    float bd[A][A];  // B^T d, column by column
#pragma unroll
    for (int s = 0; s < A; ++s) {
      const int64_t ix = ix0 + s;
      float col[A];
#pragma unroll
      for (int r = 0; r < A; ++r) {
        const int64_t iy = iy0 + r;
        col[r] = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) ? __ldg(x_img + (iy * g.w + ix) * g.c) : 0.0f;
      }
      float out[A];
      Transform<M, R>::bt(col, out);
#pragma unroll
      for (int r = 0; r < A; ++r) bd[r][s] = out[r];
    }
#pragma unroll
    for (int r = 0; r < A; ++r) {  // (B^T d) B
      float out[A];
      Transform<M, R>::bt(bd[r], out);
#pragma unroll
      for (int s = 0; s < A; ++s) v[(r * A + s) * tc + i] = out[s];
    }
  }
}

// One output tile of channel k: y = A^T M A + bias, activated, clipped to the output; load_m(e)
// gives M's point e.
template <int M, int R, class LoadM>
__device__ __forceinline__ void store_output_tile(const WinogradGeometry& g, LoadM load_m, int64_t tile, int64_t k,
                                                  float b, float* __restrict__ y) {
  constexpr int A = M + R - 1;
  const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
  float am[M][A];  // A^T M, column by column
#pragma unroll
  for (int s = 0; s < A; ++s) {
    float col[A], out[M];
#pragma unroll
    for (int r = 0; r < A; ++r) col[r] = load_m(r * A + s);
    Transform<M, R>::at(col, out);
#pragma unroll
    for (int r = 0; r < M; ++r) am[r][s] = out[r];
  }
#pragma unroll
  for (int r = 0; r < M; ++r) {  // (A^T M) A
    const int64_t oy = M * ty + r;
    if (oy >= g.out_h) continue;
    float out[M];
    Transform<M, R>::at(am[r], out);
#pragma unroll
    for (int s = 0; s < M; ++s) {
      const int64_t ox = M * tx + s;
      if (ox < g.out_w) y[((img * g.out_h + oy) * g.out_w + ox) * g.k + k] = apply_activation(g.activation, out[s] + b);
    }
  }
}

// M: (A * A, tiles, K) -> y: NHWC, bias and activation applied.
template <int M, int R>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_output_kernel(WinogradGeometry g, const float* __restrict__ m, const float* __restrict__ bias,
                           float* __restrict__ y) {
  const int64_t tk = g.tiles * g.k;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tk;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t k = i % g.k;
    store_output_tile<M, R>(g, [&](int e) { return m[e * tk + i]; }, i / g.k, k, bias ? __ldg(bias + k) : 0.0f, y);
  }
}

// F(4x4, 5x5) with the input transform and the products in one kernel (version 3). The unfused
// stages write V to DRAM and read it back, 64 / 16 = 4 floats per output pixel and input channel
// (inception_5x5: 77 MB each way, its input transform a third of the layer's time); here a block
// takes kFusedTiles output tiles x kFusedChannels output channels and walks C_in kFusedStep
// channels at a time:
//   - every pair of threads copies one (tile, input channel)'s 8 x 8 patch into shared memory
//     (cp.async: the accumulators leave no registers to stage 32 loads in) and transforms it there
//     into V: 4 columns each, then 4 rows each;
//   - beside it the step's slice of U (laid out by winograd_weight_kernel<4, 5, true> as
//     [K / 16][C padded to 8][64][16], so the slice is one contiguous, zero-padded run);
//   - each thread then owns one point e for 8 tiles x 8 output channels: 4 LDS.128 per input
//     channel feed 64 FMAs.
// At the end M goes through shared memory (over V and U) to the output transform, one thread per
// (tile, output channel). Only the input (through L2, each pixel in up to four patches) and y touch
// DRAM. The padded strides keep each quarter warp's 16-byte shared accesses on distinct banks.
constexpr int kFusedThreads = 256, kFusedPoints = 64;
constexpr int kFusedVChannel = 20, kFusedVPoint = kFusedStep * kFusedVChannel + 16;  // V: [e][channel][tile]
constexpr int kFusedUPoint = kFusedStep * kFusedChannels + 16;                       // U: [e][channel][out channel]
constexpr int kFusedSmemFloats = kFusedPoints * (kFusedVPoint + kFusedUPoint);
static_assert(kFusedSmemFloats >= kFusedPoints * kFusedTiles * kFusedChannels, "M must fit over V and U");
static_assert(kFusedPoints * kFusedChannels / 4 == kFusedThreads, "one float4 of U per thread and channel");
static_assert(kFusedTiles * kFusedStep * 2 == kFusedThreads, "two threads per (tile, input channel)");

__device__ __forceinline__ float4 lds4(const float* p) { return *reinterpret_cast<const float4*>(p); }

// 16 bytes global -> shared without passing through registers (sm_80+), bypassing L1.
__device__ __forceinline__ void copy16_async(float* smem, const float4* global) {
  const auto dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global) : "memory");
}
// 4 bytes, or 4 zero bytes where `in` is false (global is then not read).
__device__ __forceinline__ void copy4_async_or_zero(float* smem, const float* global, bool in) {
  const auto dst = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(global), "r"(in ? 4 : 0) : "memory");
}
__device__ __forceinline__ void wait_async_copies() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }

__global__ void __launch_bounds__(kFusedThreads, 2)
    winograd_fused_kernel(WinogradGeometry g, const float* __restrict__ x, const float* __restrict__ u,
                          const float* __restrict__ bias, float* __restrict__ y) {
  using T = Transform<4, 5>;
  extern __shared__ float4 fused_smem[];
  float* vs = reinterpret_cast<float*>(fused_smem);
  float* us = vs + kFusedPoints * kFusedVPoint;
  const int tid = threadIdx.x;
  const int64_t k_blocks = ceil_div(g.k, kFusedChannels), c_pad = ceil_div(g.c, kFusedStep) * kFusedStep;
  const int64_t kb = blockIdx.x % k_blocks, tile0 = blockIdx.x / k_blocks * kFusedTiles;
  const float4* u_block = reinterpret_cast<const float4*>(u + kb * c_pad * kFusedPoints * kFusedChannels);

  // Transform role: tile t_tile, input channel t_chan of the step, columns 4 half .. 4 half + 3.
  const int t_tile = tid / 16, half = tid / 8 % 2, t_chan = tid % 8;
  const int64_t tile = tile0 + t_tile;
  const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
  const int64_t iy0 = 4 * ty - g.pad_top, ix0 = 4 * tx - g.pad_left + 4 * half;
  const int64_t patch = ((img * g.h + iy0) * g.w + ix0) * g.c + t_chan;  // offset of (row 0, column 0)
  const int64_t row_stride = g.w * g.c;
  unsigned patch_in = 0;  // bit 4 r + j: row r, column j of the patch lies in the image
#pragma unroll
  for (int r = 0; r < 8; ++r) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const bool in = tile < g.tiles && iy0 + r >= 0 && iy0 + r < g.h && ix0 + j >= 0 && ix0 + j < g.w;
      patch_in |= unsigned{in} << (4 * r + j);
    }
  }
  float* v_row = vs + half * 32 * kFusedVPoint + t_chan * kFusedVChannel + t_tile;  // point 32 half (row 4 half)
  float* v_col = vs + half * 4 * kFusedVPoint + t_chan * kFusedVChannel + t_tile;   // point 4 half (column 4 half)

  // Product role: point e, tiles 8 th .. 8 th + 7, output channels 8 kh .. 8 kh + 7.
  const int e = tid / 4, th = tid / 2 % 2, kh = tid % 2;
  const float* v_in = vs + e * kFusedVPoint + th * 8;
  const float* u_in = us + e * kFusedUPoint + kh * 8;
  float acc[8][8] = {};

  for (int64_t c0 = 0; c0 < g.c; c0 += kFusedStep) {
    __syncthreads();  // the previous step's products are done with V and U
    const float4* u_step = u_block + c0 * (kFusedPoints * kFusedChannels / 4);
#pragma unroll
    for (int c = 0; c < kFusedStep; ++c) {  // float4 tid of channel c: point tid / 4, out channels 4 (tid % 4)
      copy16_async(us + (tid / 4) * kFusedUPoint + c * kFusedChannels + tid % 4 * 4, u_step + c * kFusedThreads + tid);
    }
    // The patch, copied raw into V's slots (point 8 r + column; zeros outside the image) without
    // passing through registers, which the accumulators fill; then B^T d down this thread's 4
    // columns in place, and (B^T d) B along rows 4 half .. 4 half + 3, which only this thread reads
    // and rewrites once its partner (lane ^ 8, the other 4 columns) has written them.
    const unsigned load_in = c0 + t_chan < g.c ? patch_in : 0u;
    const float* x_step = x + patch + c0;
#pragma unroll 1  // unrolled, the 32 addresses are computed up front and the accumulators spill
    for (int r = 0; r < 8; ++r) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const bool in = load_in >> (4 * r + j) & 1u;
        copy4_async_or_zero(v_col + (8 * r + j) * kFusedVPoint, in ? x_step + r * row_stride + j * g.c : x, in);
      }
    }
    wait_async_copies();
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float col[8], out[8];
#pragma unroll
      for (int r = 0; r < 8; ++r) col[r] = v_col[(8 * r + j) * kFusedVPoint];
      T::bt(col, out);
#pragma unroll
      for (int r = 0; r < 8; ++r) v_col[(8 * r + j) * kFusedVPoint] = out[r];
    }
    __syncwarp();
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      float row[8], out[8];
#pragma unroll
      for (int s = 0; s < 8; ++s) row[s] = v_row[(8 * i + s) * kFusedVPoint];
      T::bt(row, out);
#pragma unroll
      for (int s = 0; s < 8; ++s) v_row[(8 * i + s) * kFusedVPoint] = out[s];
    }
    __syncthreads();
#pragma unroll
    for (int c = 0; c < kFusedStep; ++c) {
      const float4 v0 = lds4(v_in + c * kFusedVChannel), v1 = lds4(v_in + c * kFusedVChannel + 4);
      const float4 u0 = lds4(u_in + c * kFusedChannels), u1 = lds4(u_in + c * kFusedChannels + 4);
      const float v[8] = {v0.x, v0.y, v0.z, v0.w, v1.x, v1.y, v1.z, v1.w};
      const float w8[8] = {u0.x, u0.y, u0.z, u0.w, u1.x, u1.y, u1.z, u1.w};
#pragma unroll
      for (int i = 0; i < 8; ++i) {
#pragma unroll
        for (int j = 0; j < 8; ++j) acc[i][j] = fmaf(v[i], w8[j], acc[i][j]);
      }
    }
  }

  __syncthreads();
  float* ms = vs;  // M: [e][tile][out channel]
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    float* dst = ms + e * (kFusedTiles * kFusedChannels) + (th * 8 + i) * kFusedChannels + kh * 8;
    *reinterpret_cast<float4*>(dst) = make_float4(acc[i][0], acc[i][1], acc[i][2], acc[i][3]);
    *reinterpret_cast<float4*>(dst + 4) = make_float4(acc[i][4], acc[i][5], acc[i][6], acc[i][7]);
  }
  __syncthreads();
  const int64_t out_tile = tile0 + tid / kFusedChannels, k = kb * kFusedChannels + tid % kFusedChannels;
  if (out_tile < g.tiles && k < g.k) {
    store_output_tile<4, 5>(g, [&](int point) { return ms[point * (kFusedTiles * kFusedChannels) + tid]; }, out_tile,
                            k, bias ? __ldg(bias + k) : 0.0f, y);
  }
}

template <int M>
WinogradGeometry winograd_geometry(const Conv2dParams& p) {
  WinogradGeometry g{};
  g.h = p.h, g.w = p.w, g.c = p.c_in, g.k = p.c_out, g.out_h = p.out_h, g.out_w = p.out_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left, g.activation = p.activation;
  g.tiles_h = ceil_div(p.out_h, M), g.tiles_w = ceil_div(p.out_w, M);
  g.tiles = p.n * g.tiles_h * g.tiles_w;
  return g;
}

template <int M, int R>
void run_winograd(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, cudaStream_t s) {
  constexpr int64_t kElems = (M + R - 1) * (M + R - 1);
  const WinogradGeometry g = winograd_geometry<M>(p);
  const int64_t u_size = kElems * g.c * g.k, v_size = kElems * g.tiles * g.c, m_size = kElems * g.tiles * g.k;
  with_workspace(u_size + v_size + m_size, s, [&](float* workspace) {
    float* u = workspace;
    float* v = u + u_size;
    float* m = v + v_size;
    winograd_weight_kernel<M, R>
        <<<transform_blocks(g.c * g.k, "winograd_weight_kernel"), kWinogradThreads, 0, s>>>(w, g.c, g.k, u);
    FC_CHECK_LAUNCH("winograd_weight_kernel");
    winograd_input_kernel<M, R>
        <<<transform_blocks(g.tiles * g.c, "winograd_input_kernel"), kWinogradThreads, 0, s>>>(g, x, v);
    FC_CHECK_LAUNCH("winograd_input_kernel");
    batched_gemm(g.tiles, g.c, g.k, kElems, v, g.tiles * g.c, u, g.c * g.k, m, g.tiles * g.k, s);
    winograd_output_kernel<M, R>
        <<<transform_blocks(g.tiles * g.k, "winograd_output_kernel"), kWinogradThreads, 0, s>>>(g, m, b, y);
    FC_CHECK_LAUNCH("winograd_output_kernel");
  });
}

void run_winograd_fused(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                        cudaStream_t s) {
  const WinogradGeometry g = winograd_geometry<4>(p);
  const int64_t c_pad = ceil_div(g.c, kFusedStep) * kFusedStep, k_pad = ceil_div(g.k, kFusedChannels) * kFusedChannels;
  with_workspace(kFusedPoints * c_pad * k_pad, s, [&](float* u) {
    winograd_weight_kernel<4, 5, true>
        <<<transform_blocks(c_pad * k_pad, "winograd_weight_kernel"), kWinogradThreads, 0, s>>>(w, g.c, g.k, u);
    FC_CHECK_LAUNCH("winograd_weight_kernel");
    constexpr size_t smem = kFusedSmemFloats * sizeof(float);  // past the 48 KiB default: opt in
    FC_CUDA_CHECK(cudaFuncSetAttribute(winograd_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    const int64_t blocks = ceil_div(g.tiles, kFusedTiles) * (k_pad / kFusedChannels);
    winograd_fused_kernel<<<grid_size(blocks, "winograd_fused_kernel"), kFusedThreads, smem, s>>>(g, x, u, b, y);
    FC_CHECK_LAUNCH("winograd_fused_kernel");
  });
}

}  // namespace

// With sigmoid or tanh (squeezes_rounding, activation.h) 3x3 layers keep 2x2 tiles (F(4x4, 3x3)
// failed the tolerance with tanh at 64 -> 64 channels, 1.2x of it, as the CPU had found) and 5x5
// layers run direct (_params.py sends them there even for algorithm="winograd").

// Auto picks Winograd where the saved multiplies outweigh the transforms' extra traffic. With 4x4
// tiles, from 16 channels on both sides: on an H200 at batch 32 (bench/NOTES.md, run 9) it ran
// 1.2-3.7x faster than the best direct kernel on every probe from 16 -> 16 to 512 -> 512 channels,
// 3x3 and 5x5, narrow outputs (128 -> 24) included, and 1.2x slower at 8 -> 24 (5x5). With the 2x2
// tiles of sigmoid / tanh, 3x3 only and from 64 channels (H100, run 4: 64 -> 64 on 56x56 10 %
// faster than direct, 32 -> 32 slower).
bool winograd_pays(const Conv2dParams& p) {
  if (!p.winograd_eligible() || p.stride_h != 1 || p.stride_w != 1) return false;
  if (squeezes_rounding(p.activation)) return p.kh == 3 && p.c_in >= 64 && p.c_out >= 64;
  return p.c_in >= 16 && p.c_out >= 16;
}

void winograd_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                     StreamHandle stream, int version) {
  if (!p.winograd_eligible() || p.stride_h != 1 || p.stride_w != 1) {
    throw std::invalid_argument("conv2d: Winograd needs a 3x3 or 5x5 filter, stride 1, dilation 1 and groups 1");
  }
  if (version < 0 || version > 3 || (version == 3 && p.kh != 5)) {
    throw std::invalid_argument("conv2d: Winograd kernel version " + std::to_string(version) +
                                " does not exist or does not apply (1: 2x2 output tiles, 2: 4x4, 3: 4x4 fused, 5x5 "
                                "only)");
  }
  // 4x4 tiles: 36 (3x3) or 64 (5x5) products per 16 outputs instead of 16 or 36 per 4, and as much
  // less V and M traffic. Their larger constants round worse where a single channel's sum has
  // nothing to average over: F(4x4, 5x5) reached 0.8 of the tolerance at C_in = 1 and 0.12 at 8
  // in a float32 simulation (bench/NOTES.md), so fewer than 8 input channels keep 2x2 tiles, as
  // do sigmoid and tanh (above).
  const bool large_tiles = version == 0 ? p.c_in >= 8 && !squeezes_rounding(p.activation) : version >= 2;
  // The fused 5x5 kernel (version 3) is not yet timed on a GPU: "auto" keeps the unfused stages
  // until bench/gpu_check.sh has measured it (bench/NOTES.md, "Winograd F(4x4, 5x5) fused").
  const bool fused = version == 3;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (fused) {
    run_winograd_fused(p, x, w, b, y, s);
  } else if (p.kh == 5) {
    large_tiles ? run_winograd<4, 5>(p, x, w, b, y, s) : run_winograd<2, 5>(p, x, w, b, y, s);
  } else {
    large_tiles ? run_winograd<4, 3>(p, x, w, b, y, s) : run_winograd<2, 3>(p, x, w, b, y, s);
  }
}

}  // namespace fastconv::cuda
