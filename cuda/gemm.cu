// Tiled SGEMM for dense layers and pointwise (1x1, stride 1, unpadded) convolutions:
// y (rows, m) = act(x (rows, k) @ w (k, m) + b), all row-major.
//
// Kernel versions (picked in gemm(); `version` 0 takes the best that applies):
//   v1  gemm_kernel<64>   FP32 SIMT, 128 x 64 block tile, 8 x 4 per thread (common.cuh). A and B
//                         are read as float4 when k % 4 == 0 / m % 4 == 0 and the pointers are
//                         16-byte aligned, else element by element.
//   v2  gemm_kernel<128>  128 x 128 tile, 8 x 8 per thread. Auto when m > 64.
//   (candidates: a split-K or GEMV variant for rows < 16, where a 128-row tile idles most lanes;
//    a TF32 tensor-core version.)
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

template <int kN>
__global__ void __launch_bounds__(kGemmThreads, kGemmMinBlocks<kN>)
    gemm_kernel(GemmGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                   const float* __restrict__ bias, float* __restrict__ y) {
  __shared__ __align__(16) typename GemmTile<kN>::Smem smem;
  const GemmThread t = GemmThread::make<kN>(threadIdx.x);

  // Column tiles fastest: the blocks that share one row tile of x run together.
  const int64_t block = blockIdx.x;
  const int64_t row0 = (block / g.n_tiles) * kTileM, col0 = (block % g.n_tiles) * kN;

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

  typename GemmTile<kN>::Acc acc;
  gemm_block_tile<kN>(smem, t, g.k, load_a, load_b, acc);
  gemm_store_tile<kN>(t, acc, row0, g.rows, col0, g.m, y, g.m, bias, g.activation, g.vec_b);
}

template <int kN>
void launch_gemm(GemmGeometry g, const float* x, const float* w, const float* b, float* y, cudaStream_t s) {
  g.n_tiles = ceil_div(g.m, kN);
  const unsigned blocks = grid_size(g.m_tiles * g.n_tiles, "gemm_kernel");
  gemm_kernel<kN><<<blocks, kGemmThreads, 0, s>>>(g, x, w, b, y);
  FC_CHECK_LAUNCH("gemm_kernel");
}

}  // namespace

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream,
          int version) {
  GemmGeometry g{};
  g.rows = p.rows, g.k = p.k, g.m = p.m;
  g.m_tiles = ceil_div(p.rows, kTileM);
  g.vec_a = p.k % 4 == 0 && aligned16(x);
  g.vec_b = p.m % 4 == 0 && aligned16(w) && aligned16(y);  // also gates the float4 stores of y
  g.activation = p.activation;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if (gemm_version(version, p.m, "gemm") == 2) {
    launch_gemm<128>(g, x, w, b, y, s);
  } else {
    launch_gemm<64>(g, x, w, b, y, s);
  }
}

}  // namespace fastconv::cuda
