// Winograd F(2x2, 3x3) for 3x3, stride 1, dilation 1, groups 1 NHWC convolutions, any padding:
// each 2x2 output tile costs 16 multiplies per (input, output) channel pair instead of 36, so the
// FLOPs drop 2.25x for an extra pass over transformed tiles (Lavin and Gray, 2015).
//
// Stages, enqueued on the stream with one workspace (common.cuh) holding U, V and M:
//   winograd_weight_kernel  U[e][c][k] = (G g G^T)[e] of the 3x3 filter of (c, k); e = 4 * i + j
//   winograd_input_kernel   V[e][t][c] = (B^T d B)[e] of the 4x4 input tile d under output tile t
//                           (zeros in the padding)
//   batched_gemm (gemm.cu)  M[e] = V[e] @ U[e], (T x C_in) @ (C_in x C_out), for the 16 e
//   winograd_output_kernel  y = A^T M A per tile, + bias, activation, clipped to the output
// The transforms are one thread per (tile, channel), channel fastest: loads and stores coalesce
// across a warp for any channel count. F(2x2, 3x3)'s constants are 0, +-1 and 1/2, so its
// rounding stays close to the direct sum's (F(4x4, 3x3), used on the CPU, amplifies it more).
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

// w: HWIO (3, 3, C, K) -> U: (16, C, K).
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_weight_kernel(const float* __restrict__ w, int64_t ck, float* __restrict__ u) {
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < ck;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    float g[3][3];
#pragma unroll
    for (int r = 0; r < 3; ++r) {
#pragma unroll
      for (int s = 0; s < 3; ++s) g[r][s] = __ldg(w + (r * 3 + s) * ck + i);
    }
    float gg[4][3];  // G g
#pragma unroll
    for (int s = 0; s < 3; ++s) {
      gg[0][s] = g[0][s];
      gg[1][s] = 0.5f * (g[0][s] + g[1][s] + g[2][s]);
      gg[2][s] = 0.5f * (g[0][s] - g[1][s] + g[2][s]);
      gg[3][s] = g[2][s];
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // (G g) G^T
      u[(r * 4 + 0) * ck + i] = gg[r][0];
      u[(r * 4 + 1) * ck + i] = 0.5f * (gg[r][0] + gg[r][1] + gg[r][2]);
      u[(r * 4 + 2) * ck + i] = 0.5f * (gg[r][0] - gg[r][1] + gg[r][2]);
      u[(r * 4 + 3) * ck + i] = gg[r][2];
    }
  }
}

// x: NHWC -> V: (16, tiles, C).
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_input_kernel(WinogradGeometry g, const float* __restrict__ x, float* __restrict__ v) {
  const int64_t tc = g.tiles * g.c;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tc;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t c = i % g.c, tile = i / g.c;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    const int64_t iy0 = 2 * ty - g.pad_top, ix0 = 2 * tx - g.pad_left;
    const float* x_img = x + img * g.h * g.w * g.c + c;
    float d[4][4];
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const int64_t iy = iy0 + r;
#pragma unroll
      for (int s = 0; s < 4; ++s) {
        const int64_t ix = ix0 + s;
        d[r][s] = (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w) ? __ldg(x_img + (iy * g.w + ix) * g.c) : 0.0f;
      }
    }
    float bd[4][4];  // B^T d
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      bd[0][s] = d[0][s] - d[2][s];
      bd[1][s] = d[1][s] + d[2][s];
      bd[2][s] = d[2][s] - d[1][s];
      bd[3][s] = d[1][s] - d[3][s];
    }
#pragma unroll
    for (int r = 0; r < 4; ++r) {  // (B^T d) B
      v[(r * 4 + 0) * tc + i] = bd[r][0] - bd[r][2];
      v[(r * 4 + 1) * tc + i] = bd[r][1] + bd[r][2];
      v[(r * 4 + 2) * tc + i] = bd[r][2] - bd[r][1];
      v[(r * 4 + 3) * tc + i] = bd[r][1] - bd[r][3];
    }
  }
}

// M: (16, tiles, K) -> y: NHWC, bias and activation applied.
__global__ void __launch_bounds__(kWinogradThreads)
    winograd_output_kernel(WinogradGeometry g, const float* __restrict__ m, const float* __restrict__ bias,
                           float* __restrict__ y) {
  const int64_t tk = g.tiles * g.k;
  for (int64_t i = blockIdx.x * int64_t{kWinogradThreads} + threadIdx.x; i < tk;
       i += int64_t{gridDim.x} * kWinogradThreads) {
    const int64_t k = i % g.k, tile = i / g.k;
    const int64_t tx = tile % g.tiles_w, ty = tile / g.tiles_w % g.tiles_h, img = tile / (g.tiles_w * g.tiles_h);
    float a[4][4];
#pragma unroll
    for (int e = 0; e < 16; ++e) a[e / 4][e % 4] = m[e * tk + i];
    float am[2][4];  // A^T M
#pragma unroll
    for (int s = 0; s < 4; ++s) {
      am[0][s] = a[0][s] + a[1][s] + a[2][s];
      am[1][s] = a[1][s] - a[2][s] - a[3][s];
    }
    const float b = bias ? __ldg(bias + k) : 0.0f;
#pragma unroll
    for (int r = 0; r < 2; ++r) {  // (A^T M) A
      const int64_t oy = 2 * ty + r;
      if (oy >= g.out_h) continue;
      const float out[2] = {am[r][0] + am[r][1] + am[r][2], am[r][1] - am[r][2] - am[r][3]};
#pragma unroll
      for (int s = 0; s < 2; ++s) {
        const int64_t ox = 2 * tx + s;
        if (ox < g.out_w) y[((img * g.out_h + oy) * g.out_w + ox) * g.k + k] = apply_activation(g.activation, out[s] + b);
      }
    }
  }
}

}  // namespace

// Auto picks Winograd where the saved multiplies outweigh the transforms' extra traffic (each
// tile's 16 transformed values per channel are written and read twice): both channel counts >= 64.
// Measured on an H100 at batch 32 (bench/NOTES.md): 64 -> 64 channels on 56x56 run 10% faster than
// the direct kernel, 256 -> 256 on 14x14 2.3x, 512 -> 512 on 28x28 2.6x.
bool winograd_pays(const Conv2dParams& p) { return p.winograd_eligible() && p.c_in >= 64 && p.c_out >= 64; }

void winograd_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                     StreamHandle stream) {
  if (!p.winograd_eligible()) {
    throw std::invalid_argument("conv2d: Winograd needs a 3x3 filter, stride 1, dilation 1 and groups 1");
  }
  WinogradGeometry g{};
  g.h = p.h, g.w = p.w, g.c = p.c_in, g.k = p.c_out, g.out_h = p.out_h, g.out_w = p.out_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left, g.activation = p.activation;
  g.tiles_h = ceil_div(p.out_h, 2), g.tiles_w = ceil_div(p.out_w, 2);
  g.tiles = p.n * g.tiles_h * g.tiles_w;
  const int64_t u_size = 16 * g.c * g.k, v_size = 16 * g.tiles * g.c, m_size = 16 * g.tiles * g.k;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  with_workspace(u_size + v_size + m_size, s, [&](float* workspace) {
    float* u = workspace;
    float* v = u + u_size;
    float* m = v + v_size;
    winograd_weight_kernel<<<transform_blocks(g.c * g.k, "winograd_weight_kernel"), kWinogradThreads, 0, s>>>(
        w, g.c * g.k, u);
    FC_CHECK_LAUNCH("winograd_weight_kernel");
    winograd_input_kernel<<<transform_blocks(g.tiles * g.c, "winograd_input_kernel"), kWinogradThreads, 0, s>>>(
        g, x, v);
    FC_CHECK_LAUNCH("winograd_input_kernel");
    batched_gemm(g.tiles, g.c, g.k, 16, v, g.tiles * g.c, u, g.c * g.k, m, g.tiles * g.k, s);
    winograd_output_kernel<<<transform_blocks(g.tiles * g.k, "winograd_output_kernel"), kWinogradThreads, 0, s>>>(
        g, m, b, y);
    FC_CHECK_LAUNCH("winograd_output_kernel");
  });
}

}  // namespace fastconv::cuda
