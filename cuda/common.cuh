// Shared by the CUDA translation units: error checks, index helpers, the block-tiled SGEMM core
// (shared-memory tiles + an 8x4 or 8x8 register tile per thread) used by the implicit-GEMM conv,
// the pointwise conv, the dense kernels and Winograd's products, split-K, and the scratch-memory
// pool. Device code only sees the POD params of fastconv/params.h.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "fastconv/activation.h"
#include "fastconv/params.h"

namespace fastconv::cuda {

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  throw std::runtime_error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                           "): " + cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

#define FC_CUDA_CHECK(expr)                                                             \
  do {                                                                                  \
    const cudaError_t fc_err_ = (expr);                                                 \
    if (fc_err_ != cudaSuccess) ::fastconv::cuda::throw_cuda_error(fc_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// After every launch: configuration errors (grid too large, too much shared memory) surface here,
// synchronously, instead of poisoning a later unrelated call.
#define FC_CHECK_LAUNCH(kernel_name) \
  ::fastconv::cuda::check_launch(cudaGetLastError(), kernel_name, __FILE__, __LINE__)

inline void check_launch(cudaError_t err, const char* kernel_name, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, kernel_name, file, line);
}

__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// Every kernel flattens its block index into grid.x (limit 2^31 - 1) so that no dimension of a
// large tensor meets the 65535 limit of grid.y / grid.z.
inline unsigned grid_size(int64_t blocks, const char* kernel_name) {
  if (blocks > INT_MAX) {
    throw std::invalid_argument(std::string(kernel_name) + ": problem too large (" + std::to_string(blocks) +
                                " thread blocks)");
  }
  return static_cast<unsigned>(blocks);
}

// Loads a float4 of read-only data through the non-coherent cache.
__device__ __forceinline__ float4 load4(const float* p) { return __ldg(reinterpret_cast<const float4*>(p)); }

// ---- Block-tiled SGEMM core ---------------------------------------------------------------------
// A block of 256 threads computes a 128 x kN tile of C = A (rows x K) @ B (K x cols), kN = 32, 64
// or 128. Each k-step stages a 128 x 8 slice of A (stored transposed, so a thread reads its 8 rows as
// two float4) and an 8 x kN slice of B in shared memory (kSlices such slices per step, each loaded
// the same way), double-buffered: the next step is loaded into registers while the current one is
// multiplied, with one __syncthreads per step.
// Thread t (tx = t % 16, ty = t / 16) owns rows {ty*4 + i, 64 + ty*4 + i : i < 4} and columns
// {tx*4 + j (+ 64 for the second group when kN = 128) : j < 4}: per k, two float4 reads of A and
// kN / 64 of B feed 8 x kN / 16 FMAs (32 for the 128 x 64 tile, 64 for 128 x 128). The 128 x 32
// tile (for 32 or fewer columns, where the 64-wide one would compute half padding) gives a thread
// the columns {tx*2, tx*2 + 1}: one float2 read of B per k for 16 FMAs.
// Loading: thread t fetches 4 consecutive k of A row t / 2 (k offset (t % 2) * 4), and threads
// t < 2 * kN fetch 4 consecutive columns of B row t / (kN / 4).
constexpr int kTileM = 128, kTileK = 8, kGemmThreads = 256, kThreadM = 8;
// Row stride of transposed A: +4 floats put the two k-halves of a warp's stores 16 banks apart,
// and keep every row 16-byte aligned for the float4 reads.
constexpr int kAStride = kTileM + 4;

template <int kN, int kSlices = 1>
struct GemmTile {
  static_assert(kN == 32 || kN == 64 || kN == 128, "column tile of 32, 64 or 128");
  static constexpr int kThreadN = kN / 16;  // columns per thread: 2, or groups of 4
  static constexpr int kGroups = kThreadN < 4 ? 1 : kThreadN / 4;
  struct Smem {
    float a[2][kSlices * kTileK][kAStride];
    float b[2][kSlices * kTileK][kN];
  };
  using Acc = float[kThreadM][kThreadN];
};

// Two resident blocks per SM for the 128 x 128 tile (registers capped at 128 per thread): one
// block of 8 warps leaves too little to switch between while a warp waits on shared memory.
// gemm.cu's 128 x 32 tile: four blocks (64 registers, no spills; 102 and two blocks uncapped)
// and 16-deep k steps (kGemmSlices: two 8-deep slices per barrier): with two blocks of 8 warps, a
// step's FMAs did not cover the next step's global loads (bench/NOTES.md, "GPU runs 11 and 12");
// four rather than three: Winograd's 32-column products 0.80-0.94x the time on an H100 ("GPU runs
// 13 and 14").
template <int kN>
constexpr int kGemmMinBlocks = kN == 128 ? 2 : kN == 32 ? 4 : 1;
template <int kN>
constexpr int kGemmSlices = kN == 32 ? 2 : 1;
// The implicit-GEMM conv's tiles (conv2d.cu): three blocks of its 128 x 32 tile spill and measured
// 0.66-1.06x the time of two, by shape.
template <int kN>
constexpr int kConvMinBlocks = kN == 128 ? 2 : 1;

struct GemmThread {
  int tid, tx, ty;
  int a_row, a_k;  // the A element group this thread loads
  int b_k, b_col;  // the B element group this thread loads (threads < 2 * kN)
  template <int kN>
  __device__ static GemmThread make(int t) {
    return GemmThread{t, t % 16, t / 16, t / 2, (t % 2) * 4, t / (kN / 4), (t % (kN / 4)) * 4};
  }
  // Row (0..127) of the tile held in accumulator row i; column of accumulator group g, lane 0.
  __device__ int row(int i) const { return (i < 4 ? 0 : 64 - 4) + ty * 4 + i; }
  template <int kN>
  __device__ int col(int group) const { return kN == 32 ? tx * 2 : group * 64 + tx * 4; }
};

// load_a(k0) / load_b(k0) return the thread's float4 of the k-slice starting at k0 (zeros outside
// the matrix); the loops below never index global memory themselves.
template <int kN, int kSlices = 1, class LoadA, class LoadB>
__device__ __forceinline__ void gemm_block_tile(typename GemmTile<kN, kSlices>::Smem& s, const GemmThread& t,
                                                int64_t k_total, LoadA load_a, LoadB load_b,
                                                typename GemmTile<kN>::Acc& acc) {
  constexpr int kThreadN = GemmTile<kN>::kThreadN, kStepK = kSlices * kTileK;
  const bool loads_b = t.tid < 2 * kN;
#pragma unroll
  for (int i = 0; i < kThreadM; ++i) {
#pragma unroll
    for (int j = 0; j < kThreadN; ++j) acc[i][j] = 0.0f;
  }
  const int64_t k_steps = ceil_div(k_total, kStepK);
  float4 a_next[kSlices], b_next[kSlices];
  const auto fetch = [&](int64_t k0) {
#pragma unroll
    for (int j = 0; j < kSlices; ++j) {
      a_next[j] = load_a(k0 + j * kTileK);
      b_next[j] = loads_b ? load_b(k0 + j * kTileK) : float4{};
    }
  };
  const auto stage = [&](int buf) {
#pragma unroll
    for (int j = 0; j < kSlices; ++j) {
      const int k = j * kTileK + t.a_k;
      s.a[buf][k + 0][t.a_row] = a_next[j].x;
      s.a[buf][k + 1][t.a_row] = a_next[j].y;
      s.a[buf][k + 2][t.a_row] = a_next[j].z;
      s.a[buf][k + 3][t.a_row] = a_next[j].w;
      if (loads_b) *reinterpret_cast<float4*>(&s.b[buf][j * kTileK + t.b_k][t.b_col]) = b_next[j];
    }
  };
  fetch(0);
  stage(0);
  __syncthreads();

  for (int64_t step = 0; step < k_steps; ++step) {
    const int buf = static_cast<int>(step & 1);
    const bool more = step + 1 < k_steps;
    if (more) fetch((step + 1) * kStepK);  // in flight while this step's FMAs run
#pragma unroll
    for (int k = 0; k < kStepK; ++k) {
      const float4 a0 = *reinterpret_cast<const float4*>(&s.a[buf][k][t.ty * 4]);
      const float4 a1 = *reinterpret_cast<const float4*>(&s.a[buf][k][64 + t.ty * 4]);
      const float av[kThreadM] = {a0.x, a0.y, a0.z, a0.w, a1.x, a1.y, a1.z, a1.w};
      float bw[kThreadN];
      if constexpr (kN == 32) {
        const float2 bv = *reinterpret_cast<const float2*>(&s.b[buf][k][t.col<kN>(0)]);
        bw[0] = bv.x, bw[1] = bv.y;
      } else {
#pragma unroll
        for (int g = 0; g < kThreadN / 4; ++g) {
          const float4 bv = *reinterpret_cast<const float4*>(&s.b[buf][k][t.col<kN>(g)]);
          bw[g * 4 + 0] = bv.x, bw[g * 4 + 1] = bv.y, bw[g * 4 + 2] = bv.z, bw[g * 4 + 3] = bv.w;
        }
      }
#pragma unroll
      for (int i = 0; i < kThreadM; ++i) {
#pragma unroll
        for (int j = 0; j < kThreadN; ++j) acc[i][j] = fmaf(av[i], bw[j], acc[i][j]);
      }
    }
    // The other buffer was last read in the previous step, before the barrier that ended it.
    if (more) stage(buf ^ 1);
    __syncthreads();
  }
}

// Epilogue: bias + activation, written to y[row * ldy + col] for row < rows, col < cols.
// y and bias are already offset to the tile's group; vec means cols % 4 == 0, ldy % 4 == 0 and y
// 16-byte aligned, so each group of 4 columns (2 for the 32-wide tile) is one aligned vector store.
template <int kN>
__device__ __forceinline__ void gemm_store_tile(const GemmThread& t, const typename GemmTile<kN>::Acc& acc,
                                                int64_t row0, int64_t rows, int64_t col0, int64_t cols,
                                                float* y, int64_t ldy, const float* bias, Activation act,
                                                bool vec) {
  constexpr int kWidth = kN == 32 ? 2 : 4;  // columns of a thread's group
#pragma unroll
  for (int g = 0; g < GemmTile<kN>::kGroups; ++g) {
    const int64_t col = col0 + t.col<kN>(g);
    if (col >= cols) continue;
    float bv[kWidth];
#pragma unroll
    for (int j = 0; j < kWidth; ++j) bv[j] = (bias != nullptr && col + j < cols) ? __ldg(bias + col + j) : 0.0f;
#pragma unroll
    for (int i = 0; i < kThreadM; ++i) {
      const int64_t row = row0 + t.row(i);
      if (row >= rows) continue;
      float v[kWidth];
#pragma unroll
      for (int j = 0; j < kWidth; ++j) v[j] = apply_activation(act, acc[i][g * kWidth + j] + bv[j]);
      float* out = y + row * ldy + col;
      if constexpr (kWidth == 2) {
        if (vec) {
          *reinterpret_cast<float2*>(out) = make_float2(v[0], v[1]);
          continue;
        }
      } else {
        if (vec) {
          *reinterpret_cast<float4*>(out) = make_float4(v[0], v[1], v[2], v[3]);
          continue;
        }
      }
#pragma unroll
      for (int j = 0; j < kWidth; ++j) {
        if (col + j < cols) out[j] = v[j];
      }
    }
  }
}

// The multiprocessor count of the current device (a cached attribute lookup in the runtime).
inline int multiprocessors() {
  int device = 0, sms = 0;
  FC_CUDA_CHECK(cudaGetDevice(&device));
  FC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// Column tile width (kN) of the GEMM kernels for a requested version: 1 is 128 x 64, 2 is 128 x 128,
// 4 is 128 x 32 (conv2d's 3 is its first-layer kernel; gemm keeps conv2d's numbers because pointwise
// convolutions pass theirs on). Auto (0) takes the 32-wide tile for 32 or fewer columns (the
// 64-wide one would compute half padding: 1.3-1.4x slower, bench/NOTES.md), else the wide tile when
// it pads no more columns than the narrow one and, for a kernel that cannot split K (can_split
// false), still gives every SM a block. Measured on an H100: without split-K the narrow tile wins
// whenever the wide one idles SMs; with it, the wide one wins.
inline int gemm_tile_width(int requested, int64_t row_tiles, int64_t cols, int sms, bool can_split, const char* op) {
  if (requested == 0) {
    if (cols <= 32) return 32;
    const int64_t narrow = ceil_div(cols, 64), wide = ceil_div(cols, 128);
    return (2 * wide == narrow && (can_split || row_tiles * wide >= sms)) ? 128 : 64;
  }
  if (requested == 1) return 64;
  if (requested == 2) return 128;
  if (requested == 4) return 32;
  throw std::invalid_argument(std::string(op) + ": no kernel version " + std::to_string(requested));
}

// Split-K: when the output tiles alone leave SMs idle (a few rows, or few output channels), the K
// range is cut into `splits` chunks of k_chunk (a multiple of kTileK); each block sums one chunk
// into a float32 workspace of splits x rows x ldy, and split_k_reduce_kernel adds the chunks in a
// fixed order (deterministic), then the bias and the activation.
constexpr int64_t kMinStepsPerSplit = 16;  // keeps the workspace traffic small beside the FMAs

struct SplitK {
  int64_t splits, k_chunk;
};

inline SplitK choose_split_k(int64_t blocks, int64_t k_total, int sms) {
  const int64_t k_steps = ceil_div(k_total, kTileK);
  int64_t splits = 1;
  if (blocks < sms) splits = std::min(ceil_div(2 * int64_t{sms}, blocks), std::max<int64_t>(1, k_steps / kMinStepsPerSplit));
  const int64_t k_chunk = ceil_div(k_steps, splits) * kTileK;
  return {ceil_div(k_total, k_chunk), k_chunk};
}

// y[e] = act(sum over s of partial[s * total + e] + bias[e % ldy]), e < total (gemm.cu).
void launch_split_k_reduce(const float* partial, int64_t splits, int64_t total, int64_t ldy, const float* bias,
                           Activation act, float* y, cudaStream_t stream);

// y[b] = x[b] (rows x k) @ w[b] (k x m) for b < batches, x[b] = x + b * stride_x (likewise w, y):
// the 16 products of Winograd F(2x2, 3x3). No bias, no activation, no split (gemm.cu).
void batched_gemm(int64_t rows, int64_t k, int64_t m, int64_t batches, const float* x, int64_t stride_x,
                  const float* w, int64_t stride_w, float* y, int64_t stride_y, cudaStream_t stream);

// Scratch memory (split-K partial sums, Winograd's transformed tiles) comes from a stream-ordered
// pool owned by this module, one per device, created on first use and kept for the process: its
// release threshold keeps up to kWorkspaceKeepBytes mapped between calls, so a layer called again
// does not pay for mapping fresh memory (the device's default pool would release it at every
// synchronisation). Defined in gemm.cu.
constexpr uint64_t kWorkspaceKeepBytes = uint64_t{1} << 30;
cudaMemPool_t workspace_pool();

// Runs launch(float* workspace) with `floats` floats of stream-ordered scratch, freed on the
// stream once the work enqueued by launch is done.
template <class Launch>
void with_workspace(int64_t floats, cudaStream_t stream, Launch launch) {
  void* workspace = nullptr;
  FC_CUDA_CHECK(cudaMallocFromPoolAsync(&workspace, static_cast<size_t>(floats) * sizeof(float), workspace_pool(),
                                        stream));
  try {
    launch(static_cast<float*>(workspace));
  } catch (...) {
    cudaFreeAsync(workspace, stream);
    throw;
  }
  FC_CUDA_CHECK(cudaFreeAsync(workspace, stream));
}

// Runs launch(partial) with a workspace for `splits` partial outputs of rows x ldy, then the
// reduction into y.
template <class Launch>
void with_split_k(int64_t splits, int64_t rows, int64_t ldy, const float* bias, Activation act, float* y,
                  cudaStream_t stream, Launch launch) {
  const int64_t total = rows * ldy;
  with_workspace(splits * total, stream, [&](float* partial) {
    launch(partial);
    launch_split_k_reduce(partial, splits, total, ldy, bias, act, y, stream);
  });
}

}  // namespace fastconv::cuda
