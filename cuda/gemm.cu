// Tiled SGEMM for dense layers and pointwise (1x1, stride 1, unpadded) convolutions:
// y (rows, m) = act(x (rows, k) @ w (k, m) + b), all row-major.
//
// Kernel versions (picked in gemm(); `version` 0 takes the best that applies):
//   v1  gemm_kernel<64>   FP32 SIMT, 128 x 64 block tile, 8 x 4 per thread (common.cuh). A and B
//                         are read as float4 when k % 4 == 0 / m % 4 == 0 and the pointers are
//                         16-byte aligned, else element by element.
//   v2  gemm_kernel<128>  128 x 128 tile, 8 x 8 per thread.
//   v4  gemm_kernel<32>   128 x 32 tile, 8 x 2 per thread, for 32 or fewer columns (Winograd's
//                         products of a 32-channel layer); 16-deep k steps, four blocks per SM.
//                         Auto: gemm_tile_width (common.cuh).
// All split K (common.cuh) when their tiles alone would leave SMs idle: a dense layer at batch 64
// has one row tile. (Candidates: a GEMV variant for rows < 16, where a 128-row tile idles most
// lanes; a TF32 tensor-core version.)
#include <algorithm>
#include <mutex>
#include <vector>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

struct GemmGeometry {
  int64_t rows, k, m;
  int64_t m_tiles, n_tiles;  // row tiles, column tiles
  int64_t k_chunk;           // K per split (split-K, common.cuh); k when not split
  int64_t stride_x, stride_w, stride_y;  // between the products of a batch (blockIdx.y); 0 for one
  bool vec_a, vec_b;
  Activation activation;
};

template <int kN>
__global__ void __launch_bounds__(kGemmThreads, kGemmMinBlocks<kN>)
    gemm_kernel(GemmGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                const float* __restrict__ bias, float* __restrict__ y, float* __restrict__ partial) {
  __shared__ __align__(16) typename GemmTile<kN, kGemmSlices<kN>>::Smem smem;
  const GemmThread t = GemmThread::make<kN>(threadIdx.x);
  x += blockIdx.y * g.stride_x, w += blockIdx.y * g.stride_w, y += blockIdx.y * g.stride_y;

  // Column tiles fastest: the blocks that share one row tile of x run together; K splits slowest.
  const int64_t block = blockIdx.x;
  const int64_t col0 = (block % g.n_tiles) * kN;
  const int64_t row0 = (block / g.n_tiles % g.m_tiles) * kTileM, split = block / (g.n_tiles * g.m_tiles);
  const int64_t k_begin = split * g.k_chunk, k_end = k_begin + g.k_chunk < g.k ? k_begin + g.k_chunk : g.k;

  const int64_t a_row = row0 + t.a_row;
  const float* x_row = x + (a_row < g.rows ? a_row : 0) * g.k;
  const auto load_a = [&](int64_t k0) {
    const int64_t k = k_begin + k0 + t.a_k;
    if (a_row >= g.rows || k >= k_end) return float4{};
    if (g.vec_a) return load4(x_row + k);
    float v[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) v[i] = k + i < k_end ? __ldg(x_row + k + i) : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
  };
  const auto load_b = [&](int64_t k0) {
    const int64_t k = k_begin + k0 + t.b_k, col = col0 + t.b_col;
    if (k >= k_end || col >= g.m) return float4{};
    const float* p = w + k * g.m + col;
    if (g.vec_b) return load4(p);
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = col + j < g.m ? __ldg(p + j) : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
  };

  typename GemmTile<kN>::Acc acc;
  gemm_block_tile<kN, kGemmSlices<kN>>(smem, t, k_end - k_begin, load_a, load_b, acc);
  // Split-K: the raw sum of this K chunk into its slice of the workspace; the reduction adds the
  // bias and the activation.
  const bool split_k = partial != nullptr;
  gemm_store_tile<kN>(t, acc, row0, g.rows, col0, g.m, split_k ? partial + split * g.rows * g.m : y, g.m,
                      split_k ? nullptr : bias, split_k ? Activation::kNone : g.activation, g.vec_b);
}

__global__ void __launch_bounds__(256)
    split_k_reduce_kernel(const float* __restrict__ partial, int64_t splits, int64_t total, int64_t ldy,
                          const float* __restrict__ bias, Activation act, float* __restrict__ y) {
  for (int64_t e = blockIdx.x * int64_t{256} + threadIdx.x; e < total; e += int64_t{gridDim.x} * 256) {
    float sum = 0.0f;
    for (int64_t s = 0; s < splits; ++s) sum += partial[s * total + e];
    y[e] = apply_activation(act, sum + (bias ? __ldg(bias + e % ldy) : 0.0f));
  }
}

template <int kN>
void launch_gemm(GemmGeometry g, int sms, const float* x, const float* w, const float* b, float* y, cudaStream_t s) {
  g.n_tiles = ceil_div(g.m, kN);
  const int64_t tiles = g.m_tiles * g.n_tiles;
  const SplitK split = choose_split_k(tiles, g.k, sms);
  g.k_chunk = split.k_chunk;
  const unsigned blocks = grid_size(tiles * split.splits, "gemm_kernel");
  if (split.splits == 1) {
    gemm_kernel<kN><<<blocks, kGemmThreads, 0, s>>>(g, x, w, b, y, nullptr);
    FC_CHECK_LAUNCH("gemm_kernel");
    return;
  }
  with_split_k(split.splits, g.rows, g.m, b, g.activation, y, s, [&](float* partial) {
    gemm_kernel<kN><<<blocks, kGemmThreads, 0, s>>>(g, x, w, b, y, partial);
    FC_CHECK_LAUNCH("gemm_kernel");
  });
}

}  // namespace

cudaMemPool_t workspace_pool() {
  static std::mutex mutex;
  static std::vector<cudaMemPool_t> pools;  // by device ordinal; null until first use
  int device = 0;
  FC_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  if (pools.size() <= static_cast<size_t>(device)) pools.resize(device + 1, nullptr);
  if (pools[device] == nullptr) {
    cudaMemPoolProps props{};
    props.allocType = cudaMemAllocationTypePinned;
    props.location.type = cudaMemLocationTypeDevice;
    props.location.id = device;
    cudaMemPool_t pool = nullptr;
    FC_CUDA_CHECK(cudaMemPoolCreate(&pool, &props));
    uint64_t keep = kWorkspaceKeepBytes;
    FC_CUDA_CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &keep));
    pools[device] = pool;
  }
  return pools[device];
}

void batched_gemm(int64_t rows, int64_t k, int64_t m, int64_t batches, const float* x, int64_t stride_x,
                  const float* w, int64_t stride_w, float* y, int64_t stride_y, cudaStream_t stream) {
  if (batches > 65535) throw std::invalid_argument("batched_gemm: at most 65535 products");
  GemmGeometry g{};
  g.rows = rows, g.k = k, g.m = m;
  g.m_tiles = ceil_div(rows, kTileM);
  g.k_chunk = k;
  g.stride_x = stride_x, g.stride_w = stride_w, g.stride_y = stride_y;
  // Every product's base must keep the float4 alignment of the first.
  g.vec_a = k % 4 == 0 && stride_x % 4 == 0 && aligned16(x);
  g.vec_b = m % 4 == 0 && stride_w % 4 == 0 && stride_y % 4 == 0 && aligned16(w) && aligned16(y);
  g.activation = Activation::kNone;
  const int sms = multiprocessors();
  const int width = gemm_tile_width(0, g.m_tiles * batches, m, sms, /*can_split=*/false, "batched_gemm");
  g.n_tiles = ceil_div(m, width);
  const dim3 grid(grid_size(g.m_tiles * g.n_tiles, "gemm_kernel"), static_cast<unsigned>(batches));
  if (width == 128) {
    gemm_kernel<128><<<grid, kGemmThreads, 0, stream>>>(g, x, w, nullptr, y, nullptr);
  } else if (width == 64) {
    gemm_kernel<64><<<grid, kGemmThreads, 0, stream>>>(g, x, w, nullptr, y, nullptr);
  } else {
    gemm_kernel<32><<<grid, kGemmThreads, 0, stream>>>(g, x, w, nullptr, y, nullptr);
  }
  FC_CHECK_LAUNCH("gemm_kernel (batched)");
}

void launch_split_k_reduce(const float* partial, int64_t splits, int64_t total, int64_t ldy, const float* bias,
                           Activation act, float* y, cudaStream_t stream) {
  const unsigned blocks = grid_size(std::min<int64_t>(ceil_div(total, 256), 1 << 16), "split_k_reduce_kernel");
  split_k_reduce_kernel<<<blocks, 256, 0, stream>>>(partial, splits, total, ldy, bias, act, y);
  FC_CHECK_LAUNCH("split_k_reduce_kernel");
}

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream,
          int version) {
  GemmGeometry g{};
  g.rows = p.rows, g.k = p.k, g.m = p.m;
  g.m_tiles = ceil_div(p.rows, kTileM);
  g.vec_a = p.k % 4 == 0 && aligned16(x);
  g.vec_b = p.m % 4 == 0 && aligned16(w) && aligned16(y);  // also gates the float4 stores of y
  g.activation = p.activation;
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const int sms = multiprocessors();
  const int width = gemm_tile_width(version, g.m_tiles, p.m, sms, /*can_split=*/true, "gemm");
  if (width == 128) {
    launch_gemm<128>(g, sms, x, w, b, y, s);
  } else if (width == 64) {
    launch_gemm<64>(g, sms, x, w, b, y, s);
  } else {
    launch_gemm<32>(g, sms, x, w, b, y, s);
  }
}

}  // namespace fastconv::cuda
