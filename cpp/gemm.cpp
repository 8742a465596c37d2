// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation: 1x1 convolutions over NHWC
// pixels (rows = N*H*W) and dense layers. Compiled once per instruction set; see kernels.h.
//
// Paths and when each runs:
//  - stream_gemm (rows <= kStreamMaxRows: dense layers at batch 1-32, pointwise convs of tiny
//    images): no packing. The weights are read in place, each element once per call: threads split
//    the columns (in whole cache lines), and each thread walks its columns in strips of kStripVecs
//    vectors, kChunkK reduction steps at a time. For one strip and chunk, every group of up to
//    kGroupRows rows broadcasts x[r, k] and FMAs into rows x kStripVecs accumulators; the strip's
//    weights (kChunkK x 24 floats on AVX2) stay in L1 between the row groups. The partial sums
//    live in y between chunks; the last chunk adds nothing new but the activation. A column tail
//    narrower than one vector reads a zero-padded copy of its k x (m % kVecLen) weights.
//  - tiled_conv (more rows): a GEMM is the 1x1 convolution of `rows` images of one pixel each, so
//    it runs on the register-tiled engine of the dense convolution (tiled_conv.h, conv2d.cpp):
//    weights packed per call into contiguous column blocks, threads split the rows. The pack is
//    amortised over many rows there.
#include <omp.h>

#include <cstdlib>

#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"

namespace fastconv::cpu::FC_ISA {

namespace {

constexpr int64_t kStreamMaxRows = 32;
constexpr int kStripVecs = 3;
// Rows broadcast per reduction step: kGroupRows x kStripVecs accumulators + kStripVecs weight
// vectors + 1 broadcast fit the vector registers (16 on SSE2 / AVX2, 32 on AVX-512).
#if defined(__AVX512F__)
constexpr int kGroupRows = 8;
#else
constexpr int kGroupRows = 4;
#endif
constexpr int64_t kChunkK = 16;
constexpr int64_t kPrefetchSteps = 32;

struct StripJob {
  const float* x;  // row r, step i: x[r * ldx + i]
  int64_t ldx;
  const float* w;  // step i, vector v: w + i * ldw + v * kVecLen
  int64_t ldw, steps;
  const float* bias;  // the strip's first column of b, or nullptr; read only when `first`
  float* y;           // row r at y + r * ldy
  int64_t ldy, cols;  // cols <= V * kVecLen columns
  const float* prefetch;  // where the weights of the steps kPrefetchSteps ahead start, or nullptr
  bool first, last;
  Activation act;
};

template <int G, int V>
static inline void run_strip(const StripJob& j) {
  vfloat acc[G][V];
  if (j.first) {
    vfloat init[V];
    if (j.bias) {
      load_row<V>(j.bias, j.cols, init);
    } else {
      for (int v = 0; v < V; ++v) init[v] = splat(0.0f);
    }
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = init[v];
    }
  } else {
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) load_row<V>(j.y + r * j.ldy, j.cols, acc[r]);
  }
  const float* wi = j.w;
  for (int64_t i = 0; i < j.steps; ++i, wi += j.ldw) {
    if (j.prefetch) {
      const float* ahead = j.prefetch + i * j.ldw;
#pragma GCC unroll 4
      for (int v = 0; v < V * kVecLen; v += kLineFloats) __builtin_prefetch(ahead + v);
      __builtin_prefetch(ahead + V * kVecLen - 1);
    }
    vfloat wv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) wv[v] = load_vec(wi + v * kVecLen);
#pragma GCC unroll 8
    for (int r = 0; r < G; ++r) {
      const vfloat s = splat(j.x[r * j.ldx + i]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
    }
  }
  store_rows<G, V>(acc, j.y, j.ldy, j.cols, j.last ? j.act : Activation::kNone);
}

template <int V, int G = kGroupRows>
static inline void run_strip_rows(int64_t rows, const StripJob& j) {
  if constexpr (G > 1) {
    if (rows < G) return run_strip_rows<V, G - 1>(rows, j);
  }
  run_strip<G, V>(j);
}

static inline void run_strip_vecs(int64_t vecs, int64_t rows, const StripJob& j) {
  static_assert(kStripVecs == 3, "one case per strip width");
  if (vecs == 3) {
    run_strip_rows<3>(rows, j);
  } else if (vecs == 2) {
    run_strip_rows<2>(rows, j);
  } else {
    run_strip_rows<1>(rows, j);
  }
}

void stream_gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int64_t lines = (p.m + kLineFloats - 1) / kLineFloats;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads), lines));
  const int64_t full_vecs = p.m / kVecLen, tail = p.m - full_vecs * kVecLen;
  // The last columns, narrower than a vector: their weights zero padded to one vector per step.
  alignas(64) float tail_bias[kVecLen] = {};
  float* tail_w = nullptr;
  if (tail) {
    tail_w = static_cast<float*>(std::aligned_alloc(64, ((p.k * kVecLen * sizeof(float) + 63) / 64) * 64));
    for (int64_t i = 0; i < p.k; ++i) {
      for (int64_t c = 0; c < kVecLen; ++c) tail_w[i * kVecLen + c] = c < tail ? w[i * p.m + full_vecs * kVecLen + c] : 0.0f;
    }
    for (int64_t c = 0; b && c < tail; ++c) tail_bias[c] = b[full_vecs * kVecLen + c];
  }

#pragma omp parallel num_threads(nthreads)
  {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t c0 = lines * tid / nt * kLineFloats;
    const int64_t c1 = min_i64(lines * (tid + 1) / nt * kLineFloats, p.m);
    // Whole vectors of this thread's columns; the tail (if any) belongs to the last thread.
    const int64_t vec_end = min_i64(c1, full_vecs * kVecLen);
    const bool has_tail = tail && c1 == p.m;
    for (int64_t k0 = 0; k0 < p.k; k0 += kChunkK) {
      StripJob j{};
      j.ldx = p.k;
      j.steps = min_i64(kChunkK, p.k - k0);
      j.ldy = p.m;
      j.first = k0 == 0;
      j.last = k0 + j.steps == p.k;
      j.act = p.activation;
      for (int64_t c = c0, vecs = 0; c < vec_end || (has_tail && c == vec_end); c += vecs * kVecLen) {
        const bool is_tail = c >= vec_end;
        vecs = is_tail ? 1 : min_i64(kStripVecs, (vec_end - c) / kVecLen);
        j.w = is_tail ? tail_w + k0 * kVecLen : w + k0 * p.m + c;
        j.ldw = is_tail ? kVecLen : p.m;
        j.bias = is_tail ? (b ? tail_bias : nullptr) : (b ? b + c : nullptr);
        j.cols = is_tail ? tail : vecs * kVecLen;
        // The first row group prefetches the strip's weights kPrefetchSteps ahead (the strips of a
        // chunk visit kChunkK rows, a short strided run the hardware prefetcher does not follow).
        const bool ahead = !is_tail && k0 + j.steps + kPrefetchSteps <= p.k;
        for (int64_t r0 = 0; r0 < p.rows; r0 += kGroupRows) {
          j.prefetch = ahead && r0 == 0 ? j.w + kPrefetchSteps * p.m : nullptr;
          j.x = x + r0 * p.k + k0;
          j.y = y + r0 * p.m + c;
          run_strip_vecs(vecs, p.rows - r0, j);
        }
        if (is_tail) break;
      }
    }
  }
  std::free(tail_w);
}

}  // namespace

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  if (p.rows <= kStreamMaxRows) return stream_gemm(p, x, w, b, y, threads);
  Conv2dParams as_conv{};
  as_conv.n = p.rows;
  as_conv.h = as_conv.w = as_conv.out_h = as_conv.out_w = 1;
  as_conv.kh = as_conv.kw = 1;
  as_conv.c_in = p.k;
  as_conv.c_out = p.m;
  as_conv.groups = 1;
  as_conv.stride_h = as_conv.stride_w = as_conv.dilation_h = as_conv.dilation_w = 1;
  as_conv.activation = p.activation;
  tiled_conv(as_conv, x, w, b, y, threads);
}

}  // namespace fastconv::cpu::FC_ISA
