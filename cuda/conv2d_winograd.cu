// Winograd F(2x2, 3x3) and F(2x2, 5x5) for 3x3 / 5x5, stride 1, dilation 1, groups 1 NHWC
// convolutions, any padding: each 2x2 output tile costs A * A multiplies per (input, output)
// channel pair, A = 4 for 3x3 (16 instead of 36: 2.25x fewer) and A = 6 for 5x5 (36 instead of
// 100: 2.8x fewer), for an extra pass over transformed tiles (Lavin and Gray, 2015).
//
// Stages, enqueued on the stream with one workspace (common.cuh) holding U, V and M:
//   winograd_weight_kernel  U[e][c][k] = (G g G^T)[e] of the filter of (c, k); e = A * i + j
//   winograd_input_kernel   V[e][t][c] = (B^T d B)[e] of the A x A input tile d under output tile t
//                           (zeros in the padding)
//   batched_gemm (gemm.cu)  M[e] = V[e] @ U[e], (T x C_in) @ (C_in x C_out), for the A * A e
//   winograd_output_kernel  y = A^T M A per tile, + bias, activation, clipped to the output
// The transforms are one thread per (tile, channel), channel fastest: loads and stores coalesce
// across a warp for any channel count. F(2x2, 3x3)'s constants are 0, +-1 and 1/2, so its
// rounding stays close to the direct sum's; F(2x2, 5x5)'s (points +-2 too) round like the CPU's
// F(4x4, 3x3), about 5x the direct sum's error on long reductions, well inside the tolerance.
//
// Chosen by conv2d() (conv2d.cu) for algorithm="winograd", and for "auto" where it pays
// (winograd_pays below; measured in bench/NOTES.md).
#include <algorithm>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kWinogradThreads = 256;

struct WinogradGeometry {
  int64_t h, w, c, k, out_h, out_w, pad_top, pad_left;
  int64_t tiles_h, tiles_w, tiles;  // 2x2 output tiles per column, per row, in the batch
  Activation activation;
};

unsigned transform_blocks(int64_t threads, const char* kernel) {
  return grid_size(std::min<int64_t>(ceil_div(threads, kWinogradThreads), 1 << 20), kernel);
}

// The transforms along one direction, for an A-point tile: A = 4 is F(2x2, 3x3) (points 0, +-1,
// infinity), A = 6 is F(2x2, 5x5) (points 0, +-1, +-2, infinity; the CPU's bt / at / gt in
// cpp/conv2d_winograd.cpp are the same matrices).
template <int A>
struct Transform;

template <>
struct Transform<4> {
  static constexpr int kTaps = 3;
  __device__ static void g(const float* t, float* u) {  // G (4 x 3)
    u[0] = t[0];
    u[1] = 0.5f * (t[0] + t[1] + t[2]);
    u[2] = 0.5f * (t[0] - t[1] + t[2]);
    u[3] = t[2];
  }
  __device__ static void bt(const float* d, float* r) {  // B^T (4 x 4)
    r[0] = d[0] - d[2];
    r[1] = d[1] + d[2];
    r[2] = d[2] - d[1];
    r[3] = d[1] - d[3];
  }
  __device__ static void at(const float* m, float* o) {  // A^T (2 x 4)
    o[0] = m[0] + m[1] + m[2];
    o[1] = m[1] - m[2] - m[3];
  }
};

template <>
struct Transform<6> {
  static constexpr int kTaps = 5;
  __device__ static void g(const float* t, float* u) {  // G (6 x 5): the taps' polynomial at each point, scaled
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
  __device__ static void bt(const float* d, float* r) {  // B^T (6 x 6)
    r[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    const float a = d[4] - 4.0f * d[2], b = d[3] - 4.0f * d[1];
    r[1] = a + b;
    r[2] = a - b;
    const float c = d[4] - d[2], e = 2.0f * (d[3] - d[1]);
    r[3] = c + e;
    r[4] = c - e;
    r[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
  }
  __device__ static void at(const float* m, float* o) {  // A^T (2 x 6)
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];
    o[1] = m[1] - m[2] + 2.0f * (m[3] - m[4]) + m[5];
  }
};

// w: HWIO (R, R, C, K) -> U: (A * A, C, K).
template <int A>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_weight_kernel(const float* __restrict__ w, int64_t ck, float* __restrict__ u) {
  constexpr int R = Transform<A>::kTaps;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < ck;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    float gg[A][R];  // G g: each column of taps through G
#pragma unroll
    for (int s = 0; s < R; ++s) {
      float col[R], out[A];
#pragma unroll
      for (int r = 0; r < R; ++r) col[r] = __ldg(w + (r * R + s) * ck + i);
      Transform<A>::g(col, out);
#pragma unroll
      for (int r = 0; r < A; ++r) gg[r][s] = out[r];
    }
#pragma unroll
    for (int r = 0; r < A; ++r) {  // (G g) G^T
      float out[A];
      Transform<A>::g(gg[r], out);
#pragma unroll
      for (int s = 0; s < A; ++s) u[(r * A + s) * ck + i] = out[s];
    }
  }
}

// x: NHWC -> V: (A * A, tiles, C).
template <int A>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_input_kernel(WinogradGeometry g, const float* __restrict__ x, float* __restrict__ v) {
  const int64_t tc = g.tiles * g.c;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tc;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t c = i % g.c, tile = i / g.c;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    const int64_t iy0 = 2 * ty - g.pad_top, ix0 = 2 * tx - g.pad_left;
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
      Transform<A>::bt(col, out);
#pragma unroll
      for (int r = 0; r < A; ++r) bd[r][s] = out[r];
    }
#pragma unroll
    for (int r = 0; r < A; ++r) {  // (B^T d) B
      float out[A];
      Transform<A>::bt(bd[r], out);
#pragma unroll
      for (int s = 0; s < A; ++s) v[(r * A + s) * tc + i] = out[s];
    }
  }
}

// M: (A * A, tiles, K) -> y: NHWC, bias and activation applied.
template <int A>
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_output_kernel(WinogradGeometry g, const float* __restrict__ m, const float* __restrict__ bias,
                           float* __restrict__ y) {
  const int64_t tk = g.tiles * g.k;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tk;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t k = i % g.k, tile = i / g.k;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    float am[2][A];  // A^T M, column by column
#pragma unroll
    for (int s = 0; s < A; ++s) {
      float col[A], out[2];
#pragma unroll
      for (int r = 0; r < A; ++r) col[r] = m[(r * A + s) * tk + i];
      Transform<A>::at(col, out);
      am[0][s] = out[0], am[1][s] = out[1];
    }
    const float b = bias ? __ldg(bias + k) : 0.0f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // (A^T M) A
      const int64_t oy = 2 * ty + r;
      if (oy >= g.out_h) continue;
      float out[2];
      Transform<A>::at(am[r], out);
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t ox = 2 * tx + s;
        if (ox < g.out_w) y[((img * g.out_h + oy) * g.out_w + ox) * g.k + k] = apply_activation(g.activation, out[s] + b);
      }
    }
  }
}

template <int A>
void run_winograd(const WinogradGeometry& g, const float* x, const float* w, const float* b, float* y,
                  cudaStream_t s) {
  constexpr int64_t kElems = A * A;
  const int64_t u_size = kElems * g.c * g.k, v_size = kElems * g.tiles * g.c, m_size = kElems * g.tiles * g.k;
  with_workspace(u_size + v_size + m_size, s, [&](float* workspace) {
    float* u = workspace;
    float* v = u + u_size;
    float* m = v + v_size;
    winograd_weight_kernel<A><<<transform_blocks(g.c * g.k, "winograd_weight_kernel"), kWinogradThreads, 0, s>>>(
        w, g.c * g.k, u);
    FC_CHECK_LAUNCH("winograd_weight_kernel");
    winograd_input_kernel<A><<<transform_blocks(g.tiles * g.c, "winograd_input_kernel"), kWinogradThreads, 0, s>>>(
        g, x, v);
    FC_CHECK_LAUNCH("winograd_input_kernel");
    batched_gemm(g.tiles, g.c, g.k, kElems, v, g.tiles * g.c, u, g.c * g.k, m, g.tiles * g.k, s);
    winograd_output_kernel<A><<<transform_blocks(g.tiles * g.k, "winograd_output_kernel"), kWinogradThreads, 0, s>>>(
        g, m, b, y);
    FC_CHECK_LAUNCH("winograd_output_kernel");
  });
}

}  // namespace

// Auto picks Winograd where the saved multiplies outweigh the transforms' extra traffic (each
// tile's 16 transformed values per channel are written and read twice): both channel counts >= 64.
// Measured on an H100 at batch 32 (bench/NOTES.md): 64 -> 64 channels on 56x56 run 10% faster than
// the direct kernel, 256 -> 256 on 14x14 2.3x, 512 -> 512 on 28x28 2.6x.
// 5x5: from 32 channels on both sides (the direct kernel runs 5x5 layers at 16-43 % of the FP32
// peak), except with sigmoid or tanh, which can turn F(2x2, 5x5)'s rounding near 0 into a
// tolerance failure (as on the CPU, cpp/dispatch.cpp).
bool winograd_pays(const Conv2dParams& p) {
  if (!p.winograd_eligible() || p.stride_h != 1 || p.stride_w != 1) return false;
  if (p.kh == 3) return p.c_in >= 64 && p.c_out >= 64;
  return p.c_in >= 32 && p.c_out >= 32 && p.activation != Activation::kSigmoid && p.activation != Activation::kTanh;
}

void winograd_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                     StreamHandle stream) {
  if (!p.winograd_eligible() || p.stride_h != 1 || p.stride_w != 1) {
    throw std::invalid_argument("conv2d: Winograd needs a 3x3 or 5x5 filter, stride 1, dilation 1 and groups 1");
  }
  WinogradGeometry g{};
  g.h = p.h, g.w = p.w, g.c = p.c_in, g.k = p.c_out, g.out_h = p.out_h, g.out_w = p.out_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left, g.activation = p.activation;
  g.tiles_h = ceil_div(p.out_h, 2), g.tiles_w = ceil_div(p.out_w, 2);
  g.tiles = p.n * g.tiles_h * g.tiles_w;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (p.kh == 5) {
    run_winograd<6>(g, x, w, b, y, s);
  } else {
    run_winograd<4>(g, x, w, b, y, s);
  }
}

}  // namespace fastconv::cuda
