// Tiled SGEMM for dense layers and pointwise (1x1, stride 1, unpadded) convolutions:
// y (rows, m) = act(x (rows, k) @ w (k, m) + b), all row-major.
//
// Kernel versions (pick new ones in gemm()):
//   gemm_kernel_v1   FP32 SIMT, 128x64 block tile, 8x4 per thread (common.cuh). A and B are read
//                    as float4 when k % 4 == 0 / m % 4 == 0 and the pointers are 16-byte aligned,
//                    else element by element. Chosen for every shape.
//   (candidates: a split-K or GEMV variant for rows < 16, where a 128-row tile idles most lanes;
//    a TF32 tensor-core v2.)
#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

struct GemmGeometry {
  int64_t rows, k, m;
  int64_t m_tiles, n_tiles;  // row tiles, column tiles
  bool vec_a, vec_b;
  Activation activation;
};

__global__ void __launch_bounds__(kGemmThreads)
    gemm_kernel_v1(GemmGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ bias, float* __restrict__ y) {
  __shared__ __align__(16) GemmSmem smem;
  const GemmThread t(threadIdx.x);

  // Column tiles fastest: the blocks that share one row tile of x run together.
  const int64_t block = blockIdx.x;
  const int64_t row0 = (block / g.n_tiles) * kTileM, col0 = (block % g.n_tiles) * kTileN;

  const int64_t a_row = row0 + t.a_row;
  const float* x_row = x + (a_row < g.rows ? a_row : 0) * g.k;
  const auto load_a = [&](int64_t k0) {
    const int64_t k = k0 + t.a_k;
    if (a_row >= g.rows || k >= g.k) return float4{};
    if (g.vec_a) return load4(x_row + k);
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = k + i < g.k ? __ldg(x_row + k + i) : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
  };
  const auto load_b = [&](int64_t k0) {
    const int64_t k = k0 + t.b_k, col = col0 + t.b_col;
    if (k >= g.k || col >= g.m) return float4{};
    const float* p = w + k * g.m + col;
    if (g.vec_b) return load4(p);
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = col + j < g.m ? __ldg(p + j) : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
  };

  float acc[kThreadM][kThreadN];
  gemm_block_tile(smem, t, g.k, load_a, load_b, acc);
  gemm_store_tile(t, acc, row0, g.rows, col0, g.m, y, g.m, bias, g.activation, g.vec_b);
}

}  // namespace

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream) {
  GemmGeometry g{};
  g.rows = p.rows, g.k = p.k, g.m = p.m;
  g.m_tiles = ceil_div(p.rows, kTileM), g.n_tiles = ceil_div(p.m, kTileN);
  g.vec_a = p.k % 4 == 0 && aligned16(x);
  g.vec_b = p.m % 4 == 0 && aligned16(w) && aligned16(y);  // also gates the float4 stores of y
  g.activation = p.activation;
  const unsigned blocks = grid_size(g.m_tiles * g.n_tiles, "gemm_kernel_v1");
  gemm_kernel_v1<<<blocks, kGemmThreads, 0, reinterpret_cast<cudaStream_t>(stream)>>>(g, x, w, b, y);
  FC_CHECK_LAUNCH("gemm_kernel_v1");
}

}  // namespace fastconv::cuda
