// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation: 1x1 convolutions over NHWC
// pixels (rows = N*H*W) and dense layers. Compiled once per instruction set; see kernels.h.
//
// Paths and when each runs:
//  - row_stream_gemm (rows <= 2, or rows <= 4 and weights past the last-level cache: a network's
//    dense layers at batch 1-2, the big ones at batch 1-4, VGG's 25088 x 4096): each thread reads a
//    contiguous run of weight rows front to back, 2-4 rows at once, into partial sums of all
//    columns (in L2-sized column blocks; up to 4 vectors of columns, the sums in registers); then
//    the threads add up the partial sums with the bias and the activation. DRAM sees one
//    sequential stream per thread.
//  - stream_gemm (rows <= kStreamMaxRows: dense layers at batch 3-16, pointwise convs of tiny
//    images): no packing. The weights are read in place, each element once per call: threads split
//    the columns (in whole cache lines), and each thread walks its columns in strips of kStripVecs
//    vectors, kChunkK reduction steps at a time. For one strip and chunk, every group of up to
//    kGroupRows rows broadcasts x[r, k] and FMAs into rows x kStripVecs accumulators; the strip's
//    weights (kChunkK x 24 floats on AVX2) stay in L1 between the row groups. The partial sums
//    live in y between chunks; the last chunk adds nothing new but the activation. A column tail
//    narrower than one vector reads a zero-padded copy of its k x (m % kVecLen) weights. With
//    weights packed ahead (pack_weights), stream_gemm_packed walks the packed blocks instead.
//  - sweep_gemm (17-100 rows and >= 2 column blocks per thread, unless prepacked weights end in a
//    block of at most one vector; or 101-200 rows and >= 256 columns when the weights are not
//    prepacked: dense layers at batch 17-200, pointwise convolutions of 5 x 5 to 14 x 14 maps with
//    wide outputs): threads split the column blocks (the blocks left over from an even split by
//    row tiles); a thread packs a group of its blocks one reduction chunk at a time into an L2
//    buffer and runs every row tile over each block of it (on AVX-512 over two blocks at once, as
//    panel_gemm's paired tiles); with weights past the last-level cache,
//    the rows of the next pack are prefetched while the tiles run.
//  - kgroup_gemm (AVX-512, more rows and m <= one vector: pointwise convolutions to 16 channels or
//    fewer): panel_gemm's one-vector tile with each broadcast carrying 2 or 4 reduction steps
//    against weights interleaved to match, so that a broadcast feeds two FMAs (below).
//  - panel_gemm (more rows: pointwise convolutions, rows = N*H*W): the weights are packed once per
//    call into column blocks [block][k][2 vectors] (a last block of 1 vector when at most one
//    vector of columns is left, or of dot products, dot_tail, when at most a quarter vector is
//    left; all blocks 1 vector wide when m fits one vector), zero padded, or
//    read from pack_weights' blocks of the same layout (a narrow last block padded to 2). The
//    input is read in place. Threads take contiguous runs of row tiles (kTileRows = 6 rows on
//    SSE2 / AVX2, 8 on AVX-512; kNarrowRows = 8 for the 1-vector case; on AVX-512 with more than 3
//    vectors of columns, tiles of kPairedTileRows = 6 rows span two blocks, 4 vectors, wherever two
//    blocks are left that are not a narrow tail). A thread walks its tiles in
//    groups of kGroupBytes of input; for each column block every tile of the group runs the whole
//    k loop in TR x V register accumulators (bias as the start value, activation in the store, one
//    write of each output vector), so the group's rows are read from DRAM once and the output rows
//    are written in full lines. During the first block each tile prefetches the matching tile of
//    the next group's input; in every block, when K >= kPrefetchOutputsMinK, it prefetches that
//    tile's output lines of the block (so the stores do not wait on reads for ownership). When a
//    block's weights outgrow L2 (K > 3072 on AVX2: dense layers at batch 33+), the reduction runs
//    in equal chunks of <= 256 steps over groups of 128 KiB of input, partial sums kept in y
//    between chunks.
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <immintrin.h>

#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"  // vfloat, the store / load helpers

namespace fastconv::cpu::FC_ISA {

namespace {

// The calling thread's buffers (kernel_util.h, Workspace): row_stream_gemm's partial sums,
// panel_gemm's packed weights, sweep_gemm's per-thread chunks.
static thread_local Workspace tls_partial_sums;
static thread_local Workspace tls_panel_weights;
static thread_local Workspace tls_sweep_buffers;

// Past 16 rows sweep_gemm's packed blocks beat reading the weights in place (measured 0.68-0.88 of
// the time for 17-32 rows at 2 threads; 16 rows tie).
constexpr int64_t kStreamMaxRows = 16;
constexpr int kStripVecs = 3;
// Rows broadcast per reduction step: kGroupRows x kStripVecs accumulators + kStripVecs weight
// vectors + 1 broadcast fit the vector registers (16 on SSE2 / AVX2, 32 on AVX-512).
#if defined(__AVX512F__)
constexpr int kGroupRows = 8;
#else
constexpr int kGroupRows = 4;
#endif
constexpr int64_t kChunkK = 16;
constexpr int64_t kL2WeightBytes = 512 * 1024;  // weights this small stay in L2 between calls
constexpr int64_t kPackedChunkK = 128;  // 8 KiB of a packed block (16 KiB with AVX-512)
constexpr int64_t kPrefetchSteps = 32;
// Two threads from 256 K multiply-adds, half of kParallelMinWork: back to back, two threads took
// 0.68-0.84 of one's time from 256 K to 512 K (1x512 -> 512, 4x512 -> 128, 14x14x96 -> 24,
// 2x7x7x64 -> 80); below that mixed (188-197 K: 0.83-1.04) or slower (150 K: 1.08x).
constexpr int64_t kParallelMinMacs = kParallelMinWork / 2;

static inline bool weights_in_l2(const GemmParams& p) {
  return p.k * p.m * static_cast<int64_t>(sizeof(float)) <= kL2WeightBytes;
}

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

// stream_gemm over pack_gemm_weights' blocks (kTileVecs vectors wide, each block's k rows
// contiguous): the threads split the blocks, and each block is walked front to back, chunk by chunk
// (its partial sums in y meanwhile), so that every block is one sequential stream; no tail copy.
void stream_gemm_packed(const GemmParams& p, const float* x, const float* w_packed, const float* b, float* y,
                        int threads) {
  constexpr int64_t kCols = kTileVecs * kVecLen;
  const int64_t blocks = (p.m + kCols - 1) / kCols;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs), blocks));
  // One row group runs each block in one go; more share each chunk's weights from L1.
  const int64_t chunk_k = p.rows <= kGroupRows ? p.k : kPackedChunkK;
  const bool from_l3 = !weights_in_l2(p);
  const EvenParts groups = even_parts(p.rows, kGroupRows);
  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    for (int64_t blk = blocks * tid / nt; blk < blocks * (tid + 1) / nt; ++blk) {
      const int64_t c0 = blk * kCols;
      StripJob j{};
      j.ldx = p.k;
      j.ldw = kCols;
      j.ldy = p.m;
      j.cols = min_i64(kCols, p.m - c0);
      j.bias = b ? b + c0 : nullptr;
      j.act = p.activation;
      const int64_t vecs = (j.cols + kVecLen - 1) / kVecLen;
      for (int64_t k0 = 0; k0 < p.k; k0 += chunk_k) {
        j.steps = min_i64(chunk_k, p.k - k0);
        j.first = k0 == 0;
        j.last = k0 + j.steps == p.k;
        j.w = w_packed + (blk * p.k + k0) * kCols;
        // From L3 a lone sequential stream arrives too slowly for 4 rows of FMAs: past L2 the first
        // row group prefetches kPrefetchSteps ahead, into the next block, never past the buffer.
        const bool ahead = from_l3 && (blk + 1 < blocks || k0 + j.steps + kPrefetchSteps <= p.k);
        for (int64_t g = 0, r0 = 0; g < groups.count; r0 += groups.size(g), ++g) {
          j.prefetch = ahead && r0 == 0 ? j.w + kPrefetchSteps * kCols : nullptr;
          j.x = x + r0 * p.k + k0;
          j.y = y + r0 * p.m + c0;
          run_strip_vecs(vecs, groups.size(g), j);
        }
      }
    }
  });
}

void stream_gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int64_t lines = (p.m + kLineFloats - 1) / kLineFloats;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs), lines));
  const int64_t full_vecs = p.m / kVecLen, tail = p.m - full_vecs * kVecLen;
  // The last columns, narrower than a vector: their weights zero padded to one vector per step.
  alignas(64) float tail_bias[kVecLen] = {};
  float* tail_w = nullptr;
  if (tail) {
    tail_w = alloc_floats(p.k * kVecLen);
    for (int64_t i = 0; i < p.k; ++i) {
      for (int64_t c = 0; c < kVecLen; ++c) tail_w[i * kVecLen + c] = c < tail ? w[i * p.m + full_vecs * kVecLen + c] : 0.0f;
    }
    for (int64_t c = 0; b && c < tail; ++c) tail_bias[c] = b[full_vecs * kVecLen + c];
  }

  // One group of rows over weights that stay in L2 between calls: each strip walks all k steps,
  // instead of a partial-sum round trip through y every kChunkK steps (4 x 512 -> 10: 0.79 of the
  // time). Weights from L3 / DRAM keep the chunks, whose prefetch the long strided walk needs
  // (4 x 2048 -> 1000 without it: 1.55x slower).
  const bool one_chunk = p.rows <= kGroupRows && weights_in_l2(p);
  const int64_t chunk_k = one_chunk ? p.k : kChunkK;
  const EvenParts groups = even_parts(p.rows, kGroupRows);
  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t c0 = lines * tid / nt * kLineFloats;
    const int64_t c1 = min_i64(lines * (tid + 1) / nt * kLineFloats, p.m);
    // Whole vectors of this thread's columns; the tail (if any) belongs to the last thread.
    const int64_t vec_end = min_i64(c1, full_vecs * kVecLen);
    const bool has_tail = tail && c1 == p.m;
    for (int64_t k0 = 0; k0 < p.k; k0 += chunk_k) {
      StripJob j{};
      j.ldx = p.k;
      j.steps = min_i64(chunk_k, p.k - k0);
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
        for (int64_t g = 0, r0 = 0; g < groups.count; r0 += groups.size(g), ++g) {
          j.prefetch = ahead && r0 == 0 ? j.w + kPrefetchSteps * p.m : nullptr;
          j.x = x + r0 * p.k + k0;
          j.y = y + r0 * p.m + c;
          run_strip_vecs(vecs, groups.size(g), j);
        }
        if (is_tail) break;
      }
    }
  });
  std::free(tail_w);
}

// ---- row_stream_gemm (rows <= kRowStreamMaxRows, weights beyond the last-level cache) ----------

constexpr int64_t kRowStreamMaxRows = 4;
// Weights past the last-level cache (32 MiB on the Zen 4 measured): read from DRAM, where one
// sequential pass per thread ran 2-2.5x faster than the strips of stream_gemm (25088 x 4096 at
// 1 row: 50 -> 21 ms, 1 thread).
constexpr int64_t kRowStreamMinBytes = int64_t{32} << 20;
static inline bool weights_past_cache(const GemmParams& p) {
  return p.k * p.m * static_cast<int64_t>(sizeof(float)) >= kRowStreamMinBytes;
}
// Cache-resident weights at 1-2 rows too (ResNet's 2048 -> 1000 classifier at batch 1: 0.5-0.6 of
// stream_gemm's time, whose 16-step strips cost more in setup than in FMAs there); at 3-4 rows
// stream_gemm's reuse of each strip across the rows wins (row_stream: 0.9-1.3x its time).
constexpr int64_t kRowStreamCachedMaxRows = 2;
// A thread's partial sums of one column block, in L2 while its weight rows stream past (16 KiB
// blocks in L1 cut 4 rows x 4096 columns into 4 strided passes, 1.6x slower).
constexpr int64_t kPartialBytes = 65536;

// part[r * ldp + j] += sum over k in [k0, k1) of x[r * ldx + k] * w[k * ldw + j], j < width: U
// consecutive weight rows at a time (U sequential streams; one load / store of the partial sums
// per U FMAs), partial sums in memory.
template <int R>
static void accumulate_rows(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k0, int64_t k1,
                            float* part, int64_t ldp, int64_t width) {
  constexpr int U = R <= 2 ? 4 : 2;  // R x U broadcasts + U weight vectors + R sums in 16 registers
  const int64_t vec_width = width / kVecLen * kVecLen, tail = width - vec_width;
  // The columns past the last whole vector, in one partial vector per row held in a register over
  // all k (a scalar tail bound 2 x 1280 -> 10 at 16 us; a partial sum stored and loaded back each
  // step waits on the masked store, which does not forward).
  vfloat tail_sums[R] = {};
  if (tail) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) tail_sums[r] = vec::load_partial(part + r * ldp + vec_width, tail);
  }
  int64_t k = k0;
  for (; k + U <= k1; k += U) {
    vfloat s[R][U];
    const float* wk[U];
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      wk[u] = w + (k + u) * ldw;
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) s[r][u] = splat(x[r * ldx + k + u]);
    }
    for (int64_t j = 0; j < vec_width; j += kVecLen) {
      vfloat wv[U];
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) wv[u] = load_vec(wk[u] + j);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        vfloat acc = load_vec(part + r * ldp + j);
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc += s[r][u] * wv[u];
        store_vec(part + r * ldp + j, acc);
      }
    }
    if (tail) {
      vfloat wv[U];
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) wv[u] = vec::load_partial(wk[u] + vec_width, tail);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) tail_sums[r] += s[r][u] * wv[u];
      }
    }
  }
  if (tail) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) vec::store_partial(part + r * ldp + vec_width, tail_sums[r], tail);
  }
  for (; k < k1; ++k) {
    const float* wr = w + k * ldw;
    for (int r = 0; r < R; ++r) {
      const float xv = x[r * ldx + k];
      for (int64_t j = 0; j < width; ++j) part[r * ldp + j] += xv * wr[j];
    }
  }
}

constexpr int kNarrowMaxVecs = 4;
// accumulate_rows for width <= NV vectors (a 10-class head): the sums in registers over all k, in
// U independent chains per vector (with the sums in memory, every step's FMAs waited on the step
// before through a store and a load: 1 x 4096 -> 16 took 13 us).
template <int R, int NV>
static void accumulate_narrow(const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k0, int64_t k1,
                              float* part, int64_t ldp, int64_t width) {
  constexpr int U = R * NV >= 8 ? 1 : R * NV >= 4 ? 2 : 4;  // R * NV * U <= 8 sums (16 registers on AVX2)
  const int64_t last = width - (NV - 1) * kVecLen;  // columns of the last vector, 1..kVecLen
  const auto load_w = [&](const float* wr, int v) {
    return v + 1 < NV || last == kVecLen ? load_vec(wr + v * kVecLen) : vec::load_partial(wr + v * kVecLen, last);
  };
  vfloat acc[U][R][NV] = {};
  int64_t k = k0;
  for (; k + U <= k1; k += U) {
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) {
      const float* wr = w + (k + u) * ldw;
      vfloat wv[NV];
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) wv[v] = load_w(wr, v);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) {
        const vfloat s = splat(x[r * ldx + k + u]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) acc[u][r][v] += s * wv[v];
      }
    }
  }
  for (; k < k1; ++k) {
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) {
      const vfloat s = splat(x[r * ldx + k]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) acc[0][r][v] += s * load_w(w + k * ldw, v);
    }
  }
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      vfloat sum = acc[0][r][v];
#pragma GCC unroll 4
      for (int u = 1; u < U; ++u) sum += acc[u][r][v];
      float* out = part + r * ldp + v * kVecLen;
      if (v + 1 < NV || last == kVecLen) {
        store_vec(out, load_vec(out) + sum);
      } else {
        vec::store_partial(out, vec::load_partial(out, last) + sum, last);
      }
    }
  }
}

static void accumulate_rows_any(int64_t rows, const float* x, int64_t ldx, const float* w, int64_t ldw, int64_t k0,
                                int64_t k1, float* part, int64_t ldp, int64_t width) {
  if (width <= kNarrowMaxVecs * kVecLen) {
    using Fn = void (*)(const float*, int64_t, const float*, int64_t, int64_t, int64_t, float*, int64_t, int64_t);
    static constexpr Fn kNarrow[4][kNarrowMaxVecs] = {
        {accumulate_narrow<1, 1>, accumulate_narrow<1, 2>, accumulate_narrow<1, 3>, accumulate_narrow<1, 4>},
        {accumulate_narrow<2, 1>, accumulate_narrow<2, 2>, accumulate_narrow<2, 3>, accumulate_narrow<2, 4>},
        {accumulate_narrow<3, 1>, accumulate_narrow<3, 2>, accumulate_narrow<3, 3>, accumulate_narrow<3, 4>},
        {accumulate_narrow<4, 1>, accumulate_narrow<4, 2>, accumulate_narrow<4, 3>, accumulate_narrow<4, 4>}};
    return kNarrow[min_i64(rows, 4) - 1][(width + kVecLen - 1) / kVecLen - 1](x, ldx, w, ldw, k0, k1, part, ldp, width);
  }
  switch (rows) {
    case 1: return accumulate_rows<1>(x, ldx, w, ldw, k0, k1, part, ldp, width);
    case 2: return accumulate_rows<2>(x, ldx, w, ldw, k0, k1, part, ldp, width);
    case 3: return accumulate_rows<3>(x, ldx, w, ldw, k0, k1, part, ldp, width);
    default: return accumulate_rows<4>(x, ldx, w, ldw, k0, k1, part, ldp, width);
  }
}

// Each thread streams a contiguous run of the weight rows, front to back (a DRAM-sized matrix read
// in one sequential pass per thread), into its own partial sums; then the threads add the partial
// sums, the bias and the activation, each over a share of the columns.
void row_stream_gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs), p.k));
  const int64_t plane = p.rows * p.m;  // one thread's partial sums
  const WorkspaceLease partial_sums(tls_partial_sums, nthreads * plane);
  float* part = partial_sums.get();
  const int64_t block = max_i64(kVecLen, kPartialBytes / static_cast<int64_t>(sizeof(float)) / p.rows / kVecLen * kVecLen);

  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    float* mine = part + tid * plane;
    for (int64_t i = 0; i < plane; ++i) mine[i] = 0.0f;
    const int64_t k0 = p.k * tid / nt, k1 = p.k * (tid + 1) / nt;
    for (int64_t c0 = 0; c0 < p.m; c0 += block) {
      accumulate_rows_any(p.rows, x, p.k, w + c0, p.m, k0, k1, mine + c0, p.m, min_i64(block, p.m - c0));
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t r = 0; r < p.rows; ++r) {
      for (int64_t j = 0; j < p.m; ++j) {
        float sum = b ? b[j] : 0.0f;
        for (int t = 0; t < nt; ++t) sum += part[t * plane + r * p.m + j];
        y[r * p.m + j] = apply_activation(p.activation, sum);
      }
    }
  });
}

// ---- panel_gemm (rows > kStreamMaxRows) ----------------------------------------------------------

// Input bytes of the tiles of one thread visited together: for each column block, every tile of the
// group runs before the next block, so the group's rows come from DRAM once and from L1 for the
// other blocks. 8 KiB: one 6-row tile for K >= 171 (the weights of all blocks then stream from L2
// per tile, ~10 B / cycle), up to 14 tiles for K = 24 (whose weights all stay in L1).
constexpr int64_t kGroupBytes = 8192;
// AVX-512 tiles of 6 rows x 4 vectors (two packed blocks) where at least one pair of blocks exists:
// each input row then feeds 64 columns per read, and a step issues 4 loads + 6 broadcasts for 24
// FMAs instead of 2 + 8 for 16. On a Xeon with two 512-bit FMA ports, 2 threads, against 8 x 2
// tiles: 0.91-0.96 of the time (25088 x 256 -> 64, 784 x 512 -> 512, 3136 x 24 -> 144, 196 x 576 ->
// 96), 5 rows 1.00-1.03x the time of 6.
constexpr int kPairedTileRows = 6;
constexpr int64_t kPanelChunk = 256;
constexpr int64_t kChunkedGroupBytes = 131072;
constexpr int64_t kChunkMinBlockBytes = 196608;
// The output prefetch (prefetch_outputs) from this reduction length: on Zen 4 it took resnet_1x1's K
// = 256 to 0.89-0.93 of the time and left K = 24 as it was; on a Xeon (Emerald Rapids) it cost 2-11 %
// where K < 128 (the stores are most of a tile's time there and the prefetches wait for the same
// line fill buffers) and nothing from 128 up. What counts is a tile's FMA cycles per output line,
// K per line with AVX2's 6 x 2 tiles, K / 2 with AVX-512's 16-lane ones: so 128 steps for AVX-512,
// 64 for AVX2 (Zen 3, 2 threads: 3136 x 96 -> 384 in 0.66-0.94 of the time, K = 64-80 unchanged).
constexpr int64_t kPrefetchOutputsMinK = 8 * kVecLen;

// R <= TR rows x V vectors of y = x w + b for one column block: w packed [k][WS] (WS: V * kVecLen,
// or the full block width when a narrow tail reads a block prepacked at full width), bias padded to
// V * kVecLen. `pf`: the next tile's input rows, prefetched one line per row every 16
// steps (GEMM rows arrive from DRAM in runs too short for the hardware prefetcher), or nullptr.
template <int R, int V, int WS = V * kVecLen>
static inline void panel_tile(const float* x, int64_t ldx, int64_t k, const float* w, int64_t pair_offset,
                              const float* bias, const float* pf, float* y, int64_t ldy, int64_t cols,
                              bool accumulate, Activation act) {
  // V = 2 * kTileVecs: the tile spans two packed blocks, the second pair_offset floats after the first.
  constexpr int kBlockVecs = V > kTileVecs ? kTileVecs : V;
  vfloat acc[R][V];
  if (accumulate) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) load_row<V>(y + r * ldy, cols, acc[r]);
  } else {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const vfloat init = bias ? load_vec(bias + v * kVecLen) : splat(0.0f);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) acc[r][v] = init;
    }
  }
  const float* wi = w;
  for (int64_t i0 = 0; i0 < k; i0 += kLineFloats) {
    if (pf) {
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) __builtin_prefetch(pf + r * ldx + i0);
    }
    const int64_t i1 = min_i64(i0 + kLineFloats, k);
#pragma GCC unroll 4
    for (int64_t i = i0; i < i1; ++i, wi += WS) {
      vfloat wv[V];
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) wv[v] = load_vec(wi + (v / kBlockVecs) * pair_offset + v % kBlockVecs * kVecLen);
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const vfloat s = splat(x[r * ldx + i]);
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
      }
    }
  }
  store_rows<R, V>(acc, y, ldy, cols, act);
}

template <int TR, int V, int WS = V * kVecLen, int R = TR>
static inline void panel_tile_rows(int64_t rows, const float* x, int64_t ldx, int64_t k, const float* w,
                                   int64_t pair_offset, const float* bias, const float* pf, float* y, int64_t ldy,
                                   int64_t cols, bool accumulate, Activation act) {
  if constexpr (R > 1) {
    if (rows < R) {
      return panel_tile_rows<TR, V, WS, R - 1>(rows, x, ldx, k, w, pair_offset, bias, pf, y, ldy, cols, accumulate, act);
    }
  }
  panel_tile<R, V, WS>(x, ldx, k, w, pair_offset, bias, pf, y, ldy, cols, accumulate, act);
}

// Prefetches `rows` x `cols` floats of the output (row stride ldy) ahead of their stores: a store to
// a line that is not in cache waits for the line to be read, and a tile's stores of one block (6
// lines on AVX2) would all miss at once.
static inline void prefetch_outputs(const float* y, int64_t ldy, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = y + r * ldy;
    for (int64_t c = 0; c < cols; c += kLineFloats) __builtin_prefetch(row + c, 1);
    __builtin_prefetch(row + cols - 1, 1);
  }
}

// The sum of a vector's lanes.
static inline float lane_sum(vfloat v) {
#if defined(__AVX512F__)
  return _mm512_reduce_add_ps(v);
#elif defined(__AVX2__)
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)));
#else
  float sum = 0.0f;
  for (int l = 0; l < kVecLen; ++l) sum += v[l];
  return sum;
#endif
}

// A tail of T <= kVecLen / 4 columns as dot products, the lanes along the reduction: y[r][j] = bias[j]
// + x[r] . wt[j] (wt: T rows of k floats) for `rows` rows, kDotRows at a time. As a one-vector tile
// the tail costs as many FMAs per row as a block of kVecLen columns (N = 33: 3 x 3 vs. 2 x 3 vectors,
// so 1.5x the time of N = 32); here ceil(k / kVecLen) per column and a sum of lanes.
constexpr int kDotRows = 4;
template <int T>
static void dot_tail(int64_t rows, const float* x, int64_t ldx, int64_t k, const float* wt, const float* bias,
                     float* y, int64_t ldy, Activation act) {
  for (int64_t r0 = 0; r0 < rows; r0 += kDotRows) {
    const int64_t nr = min_i64(kDotRows, rows - r0);
    const float* xr[kDotRows];
#pragma GCC unroll 4
    for (int r = 0; r < kDotRows; ++r) xr[r] = x + (r0 + min_i64(r, nr - 1)) * ldx;  // past the rows: the last again
    vfloat acc[kDotRows][T] = {};
    int64_t i = 0;
    for (; i + kVecLen <= k; i += kVecLen) {
      vfloat wv[T];
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) wv[j] = load_vec(wt + j * k + i);
#pragma GCC unroll 4
      for (int r = 0; r < kDotRows; ++r) {
        const vfloat xv = load_vec(xr[r] + i);
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) acc[r][j] += xv * wv[j];
      }
    }
    if (i < k) {  // zeros past k on both sides
#pragma GCC unroll 4
      for (int r = 0; r < kDotRows; ++r) {
        const vfloat xv = vec::load_partial(xr[r] + i, k - i);
#pragma GCC unroll 4
        for (int j = 0; j < T; ++j) acc[r][j] += xv * vec::load_partial(wt + j * k + i, k - i);
      }
    }
    for (int64_t r = 0; r < nr; ++r) {
      float sums[kVecLen] = {};
#pragma GCC unroll 4
      for (int j = 0; j < T; ++j) sums[j] = lane_sum(acc[r][j]) + (bias ? bias[j] : 0.0f);
      vec::store_partial(y + (r0 + r) * ldy, vec::activate(act, load_vec(sums)), T);
    }
  }
}

static void dot_tail_any(int64_t cols, int64_t rows, const float* x, int64_t ldx, int64_t k, const float* wt,
                         const float* bias, float* y, int64_t ldy, Activation act) {
  switch (cols) {
    case 1: return dot_tail<1>(rows, x, ldx, k, wt, bias, y, ldy, act);
    case 2: return dot_tail<2>(rows, x, ldx, k, wt, bias, y, ldy, act);
    case 3: return dot_tail<3>(rows, x, ldx, k, wt, bias, y, ldy, act);
    default: return dot_tail<4>(rows, x, ldx, k, wt, bias, y, ldy, act);
  }
}
constexpr int64_t kDotTailMaxCols = kVecLen / 4 < 4 ? kVecLen / 4 : 4;
constexpr int64_t kDotLaneSumCost = 10;
// Only above the rows sweep_gemm takes (200): there a layer's weights packed per call and by
// pack_weights can run on different GEMMs (sweep_gemm and panel_gemm), which give the same sums bit
// for bit only while both tails add in the same order.
constexpr int64_t kDotTailMinRows = 201;

// Column blocks of TV vectors; the last block, when at most one vector of columns is left, is a
// 1-vector block (N = 33: 16 + 16 + 8 columns computed, not 48). kPaired: each tile covers two
// blocks at once (2 * TV vectors) where two are left that are not a narrow tail.
template <int TR, int TV, bool kPaired = false>
void panel_gemm(const GemmParams& p, const float* x, const float* w, const float* w_prepacked, const float* b,
                float* y, int threads) {
  static_assert(!kPaired || TV == kTileVecs, "a pair spans two packed blocks");
  constexpr int64_t kCols = TV * kVecLen;
  // Prepacked weights (pack_gemm_weights) come in blocks of kTileVecs vectors, a narrow tail block
  // padded to full width; the one-vector panel (TV = 1, m <= kVecLen: one block) reads the first
  // vector of each step.
  constexpr int64_t kPackedCols = kTileVecs * kVecLen;
  const int64_t full_blocks = p.m / kCols, rest = p.m - full_blocks * kCols;
  const bool narrow_tail = rest > 0 && rest <= kVecLen && TV > 1;
  const int64_t blocks = full_blocks + (rest > 0);
  const int64_t padded = full_blocks * kCols + (rest == 0 ? 0 : narrow_tail && !w_prepacked ? kVecLen : kCols);
  const int64_t tiles = (p.rows + TR - 1) / TR;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs), tiles));
  // Reductions whose block of weights outgrows L2 (dense layers of 4096 inputs) in equal chunks of
  // at most kPanelChunk steps: a block's chunk of weights (16 KiB on AVX2) stays in L1 across a
  // group of tiles whose inputs (kChunkedGroupBytes) stay in L2; partial sums wait in y. Unchunked,
  // each 6-row tile streamed a block's whole weights (256 KiB at K = 4096) from L3: 64 x 4096 x 1000
  // ran at 17-24 GFLOP/s. Shorter reductions measured 2-15 % slower chunked, so they are not.
  const bool chunked = p.k * kCols * (kPaired ? 2 : 1) * static_cast<int64_t>(sizeof(float)) > kChunkMinBlockBytes;
  const int64_t chunks = chunked ? (p.k + kPanelChunk - 1) / kPanelChunk : 1;
  const int64_t chunk = (p.k + chunks - 1) / chunks;
  // A tail of at most kDotTailMaxCols columns runs as dot products (dot_tail) from its columns of
  // w, each made contiguous here: (k x tail) floats after the bias. Where its vectors along k and
  // sums of lanes (~kDotLaneSumCost operations each) cost more than the one-vector tile's k FMAs a
  // row, the tile stays (1 x 56 x 56 x 24 -> 36 ran 1.38x slower as dot products).
  const bool dot_tail_block = narrow_tail && !chunked && rest <= kDotTailMaxCols && p.rows >= kDotTailMinRows &&
                              rest * ((p.k + kVecLen - 1) / kVecLen + kDotLaneSumCost) <= p.k;
  const int64_t tail_cols = dot_tail_block ? rest : 0;

  // Packed: block j's weights [k][its width] contiguous at w_packed + j * k * kCols, zero padded;
  // per call unless they come prepacked.
  // Small weights: a copy per thread; large ones one copy packed by the team (kOwnPackMaxFloats).
  const int64_t packed_stride = w_prepacked ? 0 : own_copy_stride(p.k * padded);
  const bool own_copies = !w_prepacked && nthreads > 1 && packed_stride <= kOwnPackMaxFloats;
  const int64_t packed_total = (own_copies ? nthreads : 1) * packed_stride;
  const WorkspaceLease panel_weights(tls_panel_weights, packed_total + padded + tail_cols * p.k);
  float* buf = panel_weights.get();
  float* b_packed = buf + packed_total;
  for (int64_t j = 0; j < padded; ++j) b_packed[j] = b && j < p.m ? b[j] : 0.0f;
  float* w_tail = b_packed + padded;
  for (int64_t j = 0; j < tail_cols; ++j) {
    const int64_t col = full_blocks * kCols + j;
    for (int64_t i = 0; i < p.k; ++i) {
      w_tail[j * p.k + i] = w_prepacked ? w_prepacked[full_blocks * kCols * p.k + i * kPackedCols + j] : w[i * p.m + col];
    }
  }

  parallel_run(nthreads, [&] {
    float* my_packed = buf + (own_copies ? omp_get_thread_num() * packed_stride : 0);
    const float* w_packed = w_prepacked ? w_prepacked : my_packed;
    const auto pack_row = [&](int64_t i) {
      const float* src = w + i * p.m;
      for (int64_t blk = 0; blk < blocks - (dot_tail_block ? 1 : 0); ++blk) {  // a dot tail reads w_tail
        const int64_t c0 = blk * kCols, width = blk < full_blocks ? kCols : padded - c0;
        float* dst = my_packed + c0 * p.k + i * width;
        for (int64_t j = 0; j < width; j += kVecLen) {  // zeros past m: masked loads
          const int64_t n = p.m - c0 - j;
          const vfloat v = n >= kVecLen ? load_vec(src + c0 + j) : n > 0 ? vec::load_partial(src + c0 + j, n) : splat(0.0f);
          store_vec(dst + j, v);
        }
      }
    };
    if (own_copies) {
      for (int64_t i = 0; i < p.k; ++i) pack_row(i);
    } else if (!w_prepacked) {  // every thread of the team takes this branch, as `omp for` requires
#pragma omp for schedule(static)
      for (int64_t i = 0; i < p.k; ++i) pack_row(i);
    }

    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t t_begin = tiles * tid / nt, t_end = tiles * (tid + 1) / nt;
    const int64_t group = max_i64(1, (chunked ? kChunkedGroupBytes : kGroupBytes) /
                                         (TR * chunk * static_cast<int64_t>(sizeof(float))));
    for (int64_t g0 = t_begin; g0 < t_end; g0 += group) {
      const int64_t g1 = min_i64(g0 + group, t_end);
      for (int64_t k0 = 0; k0 < p.k; k0 += chunk) {
        const int64_t steps = min_i64(chunk, p.k - k0);
        const bool first = k0 == 0, last = k0 + steps == p.k;
        for (int64_t blk = 0; blk < blocks;) {
          const bool pair = kPaired && blk + 1 < blocks && (blk + 1 < full_blocks || !narrow_tail);
          const int64_t c0 = blk * kCols, cols = min_i64(pair ? 2 * kCols : kCols, p.m - c0);
          const int64_t width = w_prepacked ? kPackedCols : blk < full_blocks ? kCols : padded - c0;
          const int64_t pair_offset = kCols * p.k;  // from block blk to blk + 1 (both kCols wide)
          const float* wb = w_packed + c0 * p.k + k0 * width;
          const float* bb = b ? b_packed + c0 : nullptr;
          for (int64_t t = g0; t < g1; ++t) {
            const int64_t r0 = t * TR, nr = min_i64(TR, p.rows - r0);
            const float* xt = x + r0 * p.k + k0;
            // While the first block runs, the next inputs are prefetched: the matching tile of the
            // next group (it arrives a whole group's work ahead of its use), or when the reduction is
            // chunked, this tile's next chunk.
            const float* pf = nullptr;
            if (blk == 0) {
              if (!chunked && t + group < t_end) pf = xt + group * TR * p.k;
              if (chunked && !last) pf = xt + steps;
            }
            float* yt = y + r0 * p.m + c0;
            if (first && p.k >= kPrefetchOutputsMinK && t + group < t_end) {
              prefetch_outputs(yt + group * TR * p.m, p.m, min_i64(TR, p.rows - r0 - group * TR), cols);
            }
            const Activation act = last ? p.activation : Activation::kNone;
            if (kPaired && pair) {
              panel_tile_rows<TR, 2 * TV, kCols>(nr, xt, p.k, steps, wb, pair_offset, bb, pf, yt, p.m, cols, !first, act);
            } else if (dot_tail_block && blk == full_blocks) {
              dot_tail_any(cols, nr, xt, p.k, p.k, w_tail, bb, yt, p.m, act);
            } else if (narrow_tail && blk == full_blocks && w_prepacked) {
              panel_tile_rows<TR, 1, kPackedCols>(nr, xt, p.k, steps, wb, 0, bb, pf, yt, p.m, cols, !first, act);
            } else if (narrow_tail && blk == full_blocks) {
              panel_tile_rows<TR, 1>(nr, xt, p.k, steps, wb, 0, bb, pf, yt, p.m, cols, !first, act);
            } else if (w_prepacked) {
              panel_tile_rows<TR, TV, kPackedCols>(nr, xt, p.k, steps, wb, 0, bb, pf, yt, p.m, cols, !first, act);
            } else {
              panel_tile_rows<TR, TV>(nr, xt, p.k, steps, wb, 0, bb, pf, yt, p.m, cols, !first, act);
            }
          }
          blk += pair ? 2 : 1;
        }
      }
    }
  });
}

// ---- kgroup_gemm (AVX-512, m <= one vector: pointwise convolutions to 16 channels or fewer) -------
//
// The one-vector panel multiplies one broadcast x[r, i] per FMA, and an FMA with a broadcast memory
// operand issues about once a cycle on the Xeon measured (bench/NOTES.md, "Narrow outputs"): half
// the peak at best. Instead each broadcast carries Q consecutive reduction steps (x[r, i .. i + Q -
// 1], repeated across the vector) and the weights are interleaved to match, lane l of vector v
// holding w[i + l % Q, v * 16 / Q + l / Q]: a broadcast feeds V = ceil(m / (16 / Q)) FMAs of Q steps
// each, and a channel's Q partial sums meet in pairwise adds once per tile. Q = 2 for 9-16 columns
// (two vectors of 8 channels), Q = 4 up to 8 (4 channels a vector). The weights are interleaved per
// call (k x 16 floats) from w, also when they come prepacked.
#if defined(__AVX512F__)
constexpr int kGroupTileRows = 8;

template <int Q>
static inline vfloat broadcast_steps(const float* p) {
  if constexpr (Q == 2) {
    double pair;
    std::memcpy(&pair, p, sizeof(pair));
    return reinterpret_cast<vfloat>(_mm512_set1_pd(pair));
  } else {
    return reinterpret_cast<vfloat>(_mm512_broadcast_f32x4(_mm_loadu_ps(p)));
  }
}

// Adds lanes 2j and 2j + 1 of the 32 lanes (a, b) into lane j.
static inline vfloat pair_sums(vfloat a, vfloat b) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __m512 pa = reinterpret_cast<__m512>(a), pb = reinterpret_cast<__m512>(b);
  return reinterpret_cast<vfloat>(_mm512_add_ps(_mm512_permutex2var_ps(pa, even, pb),
                                                _mm512_permutex2var_ps(pa, odd, pb)));
}

// R rows of y = x w + b; wq: the interleaved weights, groups of V vectors; tail: x's last k % Q
// steps of each row zero padded to Q (rows r at tail + r * Q), as full groups would read past the row.
template <int Q, int V, int R>
__attribute__((noinline)) static void kgroup_tile(const float* x, int64_t ldx, int64_t groups, const float* tail,
                                                  const float* wq, const float* bias, float* y, int64_t ldy,
                                                  int64_t cols, Activation act) {
  vfloat acc[R][V] = {};
  const float* wg = wq;
  for (int64_t g = 0; g < groups; ++g, wg += V * kVecLen) {
    vfloat wv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) wv[v] = load_vec(wg + v * kVecLen);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vfloat s = broadcast_steps<Q>(x + r * ldx + g * Q);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
    }
  }
  if (tail) {
    vfloat wv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) wv[v] = load_vec(wg + v * kVecLen);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vfloat s = broadcast_steps<Q>(tail + r * Q);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
    }
  }
  const vfloat bv = load_vec(bias);
  vfloat out[R][1];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    vfloat sums = pair_sums(acc[r][0], V > 1 ? acc[r][V - 1] : vfloat{});
    if constexpr (Q == 4) sums = pair_sums(sums, vfloat{});
    out[r][0] = sums + bv;
  }
  store_rows<R, 1>(out, y, ldy, cols, act);
}

template <int Q, int V, int R = kGroupTileRows>
static void kgroup_tile_rows(int64_t rows, const float* x, int64_t ldx, int64_t groups, const float* tail,
                             const float* wq, const float* bias, float* y, int64_t ldy, int64_t cols, Activation act) {
  if constexpr (R > 1) {
    if (rows < R) return kgroup_tile_rows<Q, V, R - 1>(rows, x, ldx, groups, tail, wq, bias, y, ldy, cols, act);
  }
  kgroup_tile<Q, V, R>(x, ldx, groups, tail, wq, bias, y, ldy, cols, act);
}

template <int Q, int V>
void kgroup_gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  constexpr int64_t kChannels = kVecLen / Q;  // per vector
  const int64_t groups = p.k / Q, rest = p.k % Q, steps = groups + (rest > 0);
  const int64_t tiles = (p.rows + kGroupTileRows - 1) / kGroupTileRows;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs), tiles));
  const WorkspaceLease panel_weights(tls_panel_weights, steps * V * kVecLen + kVecLen);
  float* wq = panel_weights.get();
  float* bias = wq + steps * V * kVecLen;
  for (int64_t g = 0; g < steps; ++g) {
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t l = 0; l < kVecLen; ++l) {
        const int64_t i = g * Q + l % Q, col = v * kChannels + l / Q;
        wq[(g * V + v) * kVecLen + l] = i < p.k && col < p.m ? w[i * p.m + col] : 0.0f;
      }
    }
  }
  for (int64_t j = 0; j < kVecLen; ++j) bias[j] = b && j < p.m ? b[j] : 0.0f;
  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    float tail[kGroupTileRows * Q] = {};
    for (int64_t t = tiles * tid / nt; t < tiles * (tid + 1) / nt; ++t) {
      const int64_t r0 = t * kGroupTileRows, nr = min_i64(kGroupTileRows, p.rows - r0);
      const float* xt = x + r0 * p.k;
      for (int64_t r = 0; rest > 0 && r < nr; ++r) {
        for (int64_t j = 0; j < rest; ++j) tail[r * Q + j] = xt[r * p.k + groups * Q + j];
      }
      kgroup_tile_rows<Q, V>(nr, xt, p.k, groups, rest > 0 ? tail : nullptr, wq, bias, y + r0 * p.m, p.m, p.m,
                             p.activation);
    }
  });
}
#endif  // __AVX512F__

// ---- sweep_gemm (few rows under many weights) ------------------------------------------------------

// panel_gemm's tiles each stream every block's weights: at 49 rows (a 7 x 7 map) and 512 x 2048
// weights that is 4 MiB from L3 per tile. Here the threads split the column blocks and walk the
// reduction in chunks of <= kSweepChunk weight rows: a thread packs one chunk of a group of its
// blocks (<= 128 KiB, in L2; each weight is read once per call) and copies the chunk's input rows
// contiguous (rows 2048 floats apart would all fall into one L1 set), then runs every row tile over
// each block of the group, the partial sums waiting in y between chunks.
constexpr int64_t kSweepMaxRows = 100;
// 101-200 rows (13 x 13 and 14 x 14 maps) sweep only outputs of >= 256 columns: their packed weights
// (>= 100 KB per 100 reduction steps) leave L2 under panel_gemm, which then streams them from L3 once
// per group of tiles (0.82-0.95 of the time swept); narrower ones stay in L2 there (swept 1.05-1.20x
// slower with 64-112 columns). From prepacked weights, which panel_gemm reads in place, these rows
// stay with panel_gemm (0.93-1.02 of the time swept, 196 x 512 x 1024, 128 x 1024 x 1024, ...).
constexpr int64_t kSweepWideMaxRows = 200;
constexpr int64_t kSweepWideMinCols = 256;
// A chunk: 16 KiB of a block's weights, 128 steps of AVX-512's 32 columns, 256 of AVX2's 16. (AVX-512
// on Zen 4 with 256: no consistent gain; AVX2 on Zen 3, 2 threads, packed weights: 256 steps ran
// 49 x 512 x 2048, 32 x 2048 x 1000, 49 x 1024 x 1024, 17 x 4096 x 1000 in 0.93-0.98 of the time of
// 128 (fewer round trips of the partial sums through y), 64 steps 1.06-1.13x, 512 no better.)
constexpr int64_t kSweepChunk = 4096 / (kTileVecs * kVecLen);
constexpr int64_t kSweepBufBytes = 128 * 1024;  // one chunk of a group of blocks' weights
constexpr int64_t kSweepMinBlocksPerThread = 2;
constexpr int64_t kSweepNarrowTailMaxBlocks = 8;
constexpr int64_t kSweepPrefetchRows = 4;

// w_packed: the weights already in pack_gemm_weights' layout (each block's k rows contiguous), read in
// place of the per-chunk pack; or nullptr.
template <int TR, int TV, bool kPaired = false>
void sweep_gemm(const GemmParams& p, const float* x, const float* w, const float* w_packed, const float* b, float* y,
                int nthreads) {
  static_assert(!kPaired || TV == kTileVecs, "a pair spans two packed blocks");
  constexpr int64_t kCols = TV * kVecLen;
  const int64_t blocks = (p.m + kCols - 1) / kCols;
  const int64_t chunks = (p.k + kSweepChunk - 1) / kSweepChunk, chunk = (p.k + chunks - 1) / chunks;
  const int64_t group = max_i64(1, kSweepBufBytes / (chunk * kCols * static_cast<int64_t>(sizeof(float))));
  const bool from_dram = weights_past_cache(p);
  const EvenParts row_tiles = even_parts(p.rows, TR);  // MLP-Mixer's 49 patches by 8: 7 x 7, not 6 x 8 + 1
  // Per thread: a chunk of its group's packed weights, their bias, the chunk's input rows.
  const int64_t buf_floats = ((chunk + 1) * group * kCols + p.rows * chunk + kLineFloats - 1) / kLineFloats * kLineFloats;
  const WorkspaceLease sweep_buffers(tls_sweep_buffers, nthreads * buf_floats);
  float* bufs = sweep_buffers.get();
  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num(), nt = omp_get_num_threads();
    // Each thread sweeps its share of the blocks over every row tile; the blocks % nt left over go
    // last, each thread taking its share of their row tiles (5 blocks on 2 threads: 2 + 2 and
    // half of the fifth each, not 2 + 3).
    const int64_t own = blocks - blocks % nt;
    const int64_t my_b0 = own * tid / nt, my_b1 = own * (tid + 1) / nt;
    const int64_t shared_t0 = row_tiles.count * tid / nt, shared_t1 = row_tiles.count * (tid + 1) / nt;
    float* wbuf = bufs + tid * buf_floats;
    float* bias = wbuf + chunk * group * kCols;  // the group's bias, zero padded past the last column
    float* xbuf = bias + group * kCols;          // the chunk's input rows, contiguous
    // Blocks [b0, b0 + nb) (nb <= group) over row tiles [t0, t1); next_b0, next_b1: the blocks this
    // thread sweeps next (prefetched from DRAM during the last chunk), none when equal.
    const auto sweep = [&](int64_t b0, int64_t nb, int64_t t0, int64_t t1, int64_t next_b0, int64_t next_b1) {
      const int64_t c0 = b0 * kCols, c1 = min_i64((b0 + nb) * kCols, p.m);
      for (int64_t j = 0; j < nb * kCols; ++j) bias[j] = b && c0 + j < c1 ? b[c0 + j] : 0.0f;
      for (int64_t k0 = 0; k0 < p.k; k0 += chunk) {
        const int64_t steps = min_i64(chunk, p.k - k0);
        const bool first = k0 == 0, last = k0 + steps == p.k;
        // The chunk's pack into wbuf; none with w_packed, whose blocks the tiles read in place.
        for (int64_t i = 0; i < steps && !w_packed; ++i) {
          const float* src = w + (k0 + i) * p.m + c0;
          // Each row is a short run in a page of its own: the hardware prefetchers do not follow it.
          if (k0 + i + kSweepPrefetchRows < p.k) {
            const float* ahead = src + kSweepPrefetchRows * p.m;
            for (int64_t j = 0; j < c1 - c0; j += kLineFloats) __builtin_prefetch(ahead + j);
            __builtin_prefetch(ahead + (c1 - c0) - 1);
          }
          for (int64_t blk = 0; blk < nb; ++blk) {
            float* dst = wbuf + (blk * steps + i) * kCols;
            const int64_t cols = min_i64(kCols, c1 - c0 - blk * kCols);
            if (cols == kCols) {
              for (int v = 0; v < TV; ++v) store_vec(dst + v * kVecLen, load_vec(src + blk * kCols + v * kVecLen));
            } else {
              for (int64_t j = 0; j < kCols; ++j) dst[j] = j < cols ? src[blk * kCols + j] : 0.0f;
            }
          }
        }
        for (int64_t r = row_tiles.start(t0); r < row_tiles.start(t1); ++r) {
          for (int64_t i = 0; i < steps; ++i) xbuf[r * steps + i] = x[r * p.k + k0 + i];
        }
        const Activation act = last ? p.activation : Activation::kNone;
        // Weights past the last-level cache: the weights of the thread's next chunk (this group's
        // next one, or the next group's first) are prefetched into L2 a few lines after each tile,
        // so that their DRAM reads overlap the tiles' FMAs instead of stalling the next pack (or,
        // with w_packed, the next chunk's first tiles). A unit is a weight row's run of the group's
        // columns, or with w_packed one block's chunk. (From L3 the pack does not stall enough to
        // repay the prefetches: 1.03-1.15x slower.)
        int64_t next_k0 = k0 + steps, next_c0 = c0, next_c1 = c1;
        if (last) next_k0 = 0, next_c0 = next_b0 * kCols, next_c1 = min_i64(next_b1 * kCols, p.m);
        const int64_t next_steps = min_i64(chunk, p.k - next_k0);
        const int64_t unit_lines = w_packed ? (next_steps * kCols + kLineFloats - 1) / kLineFloats
                                            : (next_c1 - next_c0 + kLineFloats - 1) / kLineFloats;
        const int64_t units = w_packed ? (next_c1 - next_c0 + kCols - 1) / kCols : next_steps;
        const int64_t next_lines = from_dram && next_c1 > next_c0 ? units * unit_lines : 0;
        const int64_t tiles = (kPaired ? (nb + 1) / 2 : nb) * (t1 - t0);
        const int64_t lines_per_tile = (next_lines + tiles - 1) / tiles;
        const int64_t pair_offset = w_packed ? p.k * kCols : steps * kCols;  // block blk to blk + 1
        int64_t line = 0;
        for (int64_t blk = 0; blk < nb;) {
          const bool pair = kPaired && blk + 1 < nb;
          const int64_t cols = min_i64(pair ? 2 * kCols : kCols, c1 - c0 - blk * kCols);
          const float* wb = w_packed ? w_packed + ((b0 + blk) * p.k + k0) * kCols : wbuf + blk * steps * kCols;
          for (int64_t t = t0, r0 = row_tiles.start(t0); t < t1; r0 += row_tiles.size(t), ++t) {
            const float* bb = b ? bias + blk * kCols : nullptr;
            float* yt = y + r0 * p.m + c0 + blk * kCols;
            if (kPaired && pair) {
              panel_tile_rows<TR, 2 * TV, kCols>(row_tiles.size(t), xbuf + r0 * steps, steps, steps, wb, pair_offset, bb,
                                                 nullptr, yt, p.m, cols, !first, act);
            } else {
              panel_tile_rows<TR, TV>(row_tiles.size(t), xbuf + r0 * steps, steps, steps, wb, 0, bb, nullptr, yt, p.m,
                                      cols, !first, act);
            }
            for (const int64_t end = min_i64(line + lines_per_tile, next_lines); line < end; ++line) {
              const int64_t unit = line / unit_lines, part = line % unit_lines * kLineFloats;
              __builtin_prefetch(w_packed ? w_packed + ((next_c0 / kCols + unit) * p.k + next_k0) * kCols + part
                                          : w + (next_k0 + unit) * p.m + next_c0 + part,
                                 0, 2);
            }
          }
          blk += pair ? 2 : 1;
        }
      }
    };
    for (int64_t b0 = my_b0; b0 < my_b1; b0 += group) {
      const int64_t nb = min_i64(group, my_b1 - b0);
      const int64_t next_b0 = b0 + nb < my_b1 ? b0 + nb : own;
      const int64_t next_b1 = b0 + nb < my_b1 ? min_i64(b0 + nb + group, my_b1) : min_i64(own + group, blocks);
      sweep(b0, nb, 0, row_tiles.count, next_b0, next_b1);
    }
    for (int64_t b0 = own; b0 < blocks; b0 += group) {
      const int64_t nb = min_i64(group, blocks - b0);
      if (shared_t1 > shared_t0) sweep(b0, nb, shared_t0, shared_t1, b0 + nb, min_i64(b0 + nb + group, blocks));
    }
  });
}

// The paths by row count (see the top of the file); w_packed, when given, stands in for sweep_gemm's
// packing, the one path whose per-call pack is a large share of its time, and for stream_gemm's
// strided reads of w.
void run_gemm(const GemmParams& p, const float* x, const float* w, const float* w_packed, const float* b, float* y,
              int threads) {
  if (p.rows <= kRowStreamCachedMaxRows || (p.rows <= kRowStreamMaxRows && weights_past_cache(p))) {
    return row_stream_gemm(p, x, w, b, y, threads);
  }
  if (p.rows <= kStreamMaxRows) {
    return w_packed ? stream_gemm_packed(p, x, w_packed, b, y, threads) : stream_gemm(p, x, w, b, y, threads);
  }
  if (p.rows <= kSweepMaxRows || (p.rows <= kSweepWideMaxRows && p.m >= kSweepWideMinCols && !w_packed)) {
    constexpr int64_t kCols = kTileVecs * kVecLen;
    const int64_t blocks = (p.m + kCols - 1) / kCols, rest = p.m % kCols;
    const int nthreads = threads_for(p.rows * p.k * p.m, threads, kParallelMinMacs);
    // A last block of at most one vector of columns: panel_gemm runs it as one vector, sweep_gemm
    // as a full block, which at up to 8 blocks is a large share of padding. From prepacked weights
    // panel_gemm then wins (m = 100: 0.73-0.88 of the swept time, 144: 0.70, 200 / 240: 0.91-0.96);
    // packing per call it lost (40 x 512 x 200: 1.43x slower, its 5 row tiles split 2 + 3).
    const bool narrow_tail = w_packed && rest > 0 && rest <= kVecLen && blocks <= kSweepNarrowTailMaxBlocks;
    if (blocks >= kSweepMinBlocksPerThread * nthreads && !narrow_tail) {
#if defined(__AVX512F__)
      // Paired tiles as in panel_gemm: 0.94-0.99 of the time (17-196 rows, 130-4096 x 200-3072).
      return sweep_gemm<kPairedTileRows, kTileVecs, true>(p, x, w, w_packed, b, y, nthreads);
#else
      return sweep_gemm<kTileRows, kTileVecs>(p, x, w, w_packed, b, y, nthreads);
#endif
    }
  }
#if defined(__AVX512F__)
  if (p.m <= kVecLen) {  // two FMAs a broadcast, not one (kgroup_gemm)
    if (p.m > kVecLen / 2) return kgroup_gemm<2, 2>(p, x, w, b, y, threads);
    return p.m > kVecLen / 4 ? kgroup_gemm<4, 2>(p, x, w, b, y, threads) : kgroup_gemm<4, 1>(p, x, w, b, y, threads);
  }
#endif
  if (p.m <= kVecLen) return panel_gemm<kNarrowRows, 1>(p, x, w, w_packed, b, y, threads);
#if defined(__AVX512F__)
  if (p.m > (kTileVecs + 1) * kVecLen) return panel_gemm<kPairedTileRows, kTileVecs, true>(p, x, w, w_packed, b, y, threads);
#endif
  panel_gemm<kTileRows, kTileVecs>(p, x, w, w_packed, b, y, threads);
}

}  // namespace

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  run_gemm(p, x, w, nullptr, b, y, threads);
}

void gemm_prepacked(const GemmParams& p, const float* x, const float* w, const float* w_packed, const float* b,
                    float* y, int threads) {
  run_gemm(p, x, w, w_packed, b, y, threads);
}

// Column blocks of kTileVecs vectors, block j's k rows contiguous at w_packed + j * k * kCols, the
// last block zero padded: sweep_gemm's per-chunk layout, whole.
int64_t gemm_packed_floats(int64_t k, int64_t m) {
  constexpr int64_t kCols = kTileVecs * kVecLen;
  return (m + kCols - 1) / kCols * kCols * k;
}

void pack_gemm_weights(int64_t k, int64_t m, const float* w, float* w_packed, int threads) {
  constexpr int64_t kCols = kTileVecs * kVecLen;
  const int64_t blocks = (m + kCols - 1) / kCols;
  const int nthreads = static_cast<int>(min_i64(threads_for(k * m, threads), k));
  parallel_run(nthreads, [&] {
#pragma omp for schedule(static)
    for (int64_t i = 0; i < k; ++i) {
      for (int64_t blk = 0; blk < blocks; ++blk) {
        float* dst = w_packed + (blk * k + i) * kCols;
        for (int64_t j = 0; j < kCols; ++j) dst[j] = blk * kCols + j < m ? w[i * m + blk * kCols + j] : 0.0f;
      }
    }
  });
}

}  // namespace fastconv::cpu::FC_ISA
