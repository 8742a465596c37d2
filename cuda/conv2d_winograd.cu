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
// Kernel versions (`version` 0 picks by C_in, see winograd_conv2d): v1 2x2 output tiles, v2 4x4.
// Chosen by conv2d() (conv2d.cu) for algorithm="winograd", and for "auto" where it pays
// (winograd_pays below; measured in bench/NOTES.md).
#include <algorithm>
#include <string>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kWinogradThreads = 256;

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

// w: HWIO (R, R, C, K) -> U: (A * A, C, K).
template <int M, int R>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_weight_kernel(const float* __restrict__ w, int64_t ck, float* __restrict__ u) {
  constexpr int A = M + R - 1;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < ck;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    float gg[A][R];  // G g: each column of taps through G
#pragma unroll
    for (int s = 0; s < R; ++s) {
      float col[R], out[A];
#pragma unroll
      for (int r = 0; r < R; ++r) col[r] = __ldg(w + (r * R + s) * ck + i);
      Transform<M, R>::g(col, out);
#pragma unroll
      for (int r = 0; r < A; ++r) gg[r][s] = out[r];
    }
#pragma unroll
    for (int r = 0; r < A; ++r) {  // (G g) G^T
      float out[A];
      Transform<M, R>::g(gg[r], out);
#pragma unroll
      for (int s = 0; s < A; ++s) u[(r * A + s) * ck + i] = out[s];
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

// M: (A * A, tiles, K) -> y: NHWC, bias and activation applied.
template <int M, int R>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_output_kernel(WinogradGeometry g, const float* __restrict__ m, const float* __restrict__ bias,
                           float* __restrict__ y) {
  constexpr int A = M + R - 1;
  const int64_t tk = g.tiles * g.k;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tk;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t k = i % g.k, tile = i / g.k;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    float am[M][A];  // A^T M, column by column
#pragma unroll
    for (int s = 0; s < A; ++s) {
      float col[A], out[M];
#pragma unroll
      for (int r = 0; r < A; ++r) col[r] = m[(r * A + s) * tk + i];
      Transform<M, R>::at(col, out);
#pragma unroll
      for (int r = 0; r < M; ++r) am[r][s] = out[r];
    }
    const float b = bias ? __ldg(bias + k) : 0.0f;
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
}

template <int M, int R>
void run_winograd(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, cudaStream_t s) {
  constexpr int64_t kElems = (M + R - 1) * (M + R - 1);
  WinogradGeometry g{};
  g.h = p.h, g.w = p.w, g.c = p.c_in, g.k = p.c_out, g.out_h = p.out_h, g.out_w = p.out_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left, g.activation = p.activation;
  g.tiles_h = ceil_div(p.out_h, M), g.tiles_w = ceil_div(p.out_w, M);
  g.tiles = p.n * g.tiles_h * g.tiles_w;
  const int64_t u_size = kElems * g.c * g.k, v_size = kElems * g.tiles * g.c, m_size = kElems * g.tiles * g.k;
  with_workspace(u_size + v_size + m_size, s, [&](float* workspace) {
    float* u = workspace;
    float* v = u + u_size;
    float* m = v + v_size;
    winograd_weight_kernel<M, R>
        <<<transform_blocks(g.c * g.k, "winograd_weight_kernel"), kWinogradThreads, 0, s>>>(w, g.c * g.k, u);
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
  if (version < 0 || version > 2) {
    throw std::invalid_argument("conv2d: Winograd kernel version " + std::to_string(version) +
                                " does not exist (1: 2x2 output tiles, 2: 4x4)");
  }
  // 4x4 tiles: 36 (3x3) or 64 (5x5) products per 16 outputs instead of 16 or 36 per 4, and as much
  // less V and M traffic. Their larger constants round worse where a single channel's sum has
  // nothing to average over: F(4x4, 5x5) reached 0.8 of the tolerance at C_in = 1 and 0.12 at 8
  // in a float32 simulation (bench/NOTES.md), so fewer than 8 input channels keep 2x2 tiles, as
  // do sigmoid and tanh (above).
  const bool large_tiles = version == 0 ? p.c_in >= 8 && !squeezes_rounding(p.activation) : version == 2;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (p.kh == 5) {
    large_tiles ? run_winograd<4, 5>(p, x, w, b, y, s) : run_winograd<2, 5>(p, x, w, b, y, s);
  } else {
    large_tiles ? run_winograd<4, 3>(p, x, w, b, y, s) : run_winograd<2, 3>(p, x, w, b, y, s);
  }
}

}  // namespace fastconv::cuda
