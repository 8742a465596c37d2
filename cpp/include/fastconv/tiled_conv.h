// The register-tiled engine of the dense convolution (conv2d.cpp); its vector type, activations and
// store / load helpers also serve the GEMM (gemm.cpp).
// Included inside each instruction set's translation units; written once with GCC vector
// extensions, so the portable (SSE2, 4 lanes), AVX2 (8 lanes) and AVX-512 (16 lanes) builds run
// the same code with different vector widths and tile heights.
//
// The unit of work is an output tile: TR consecutive output pixels (GEMM rows) x V vectors of
// output channels, held in TR x V vector registers. Two shapes: the wide tile (kTileRows x 2
// vectors: 6x16 AVX2, 8x32 AVX-512, 6x8 SSE2) and the narrow tile (kNarrowRows x 1 vector) for
// C_out <= one vector. Each pixel's input is described as `taps` segments of `seg` contiguous
// floats (for a convolution: one kernel row ky, laid out [kx][ci] exactly like the matching HWIO
// weight rows), so the inner loop is: load the V weight vectors of one reduction step, broadcast
// one input value per pixel, FMA. Bias is the initial accumulator value; the activation (all of
// them vectorised, simd_dw.h's exp_signed for sigmoid / tanh / SiLU) is applied in the store.
#pragma once

#include <cstdint>

#include "fastconv/kernel_util.h"
#include "fastconv/params.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

typedef float vfloat __attribute__((vector_size(FC_VEC_BYTES)));
typedef float vfloat_unaligned __attribute__((vector_size(FC_VEC_BYTES), aligned(4), may_alias));

constexpr int kVecLen = FC_VEC_BYTES / 4;
constexpr int64_t kLineFloats = 16;  // one 64-byte cache line
// The wide tile: kTileVecs vectors of output channels x kTileRows pixels. 2 x kTileRows
// accumulators + 2 weight vectors + 1 broadcast fit the register file (16 vector registers for
// SSE2/AVX2, 32 for AVX-512), and kTileRows input pointers fit the general-purpose registers.
constexpr int kTileVecs = 2;
#if defined(__AVX512F__)
constexpr int kTileRows = 8;
#else
constexpr int kTileRows = 6;
#endif
// The narrow tile, for C_out <= one vector (LeNet's 6 channels): one vector of channels x
// kNarrowRows pixels, so no second vector of idle lanes is multiplied.
constexpr int kNarrowRows = 8;
constexpr int64_t kWeightPrefetchSteps = 32;

static inline vfloat load_vec(const float* p) { return *reinterpret_cast<const vfloat_unaligned*>(p); }
static inline void store_vec(float* p, vfloat v) { *reinterpret_cast<vfloat_unaligned*>(p) = v; }
// s * 1 folds to a plain broadcast; `vfloat{} + s` would cost an add (it must keep -0.0 as is).
static inline vfloat splat(float s) { return s * (vfloat{} + 1.0f); }

// The fused activations on a vector: simd_dw.h's, shared with the depthwise and pooling kernels.
using vec::activate;

// Stores R rows x V vectors of accumulators (row r at out + r * ldo); only the first `cols` <= V *
// kVecLen columns of each row are written.
template <int R, int V>
__attribute__((always_inline)) static inline void store_plain_rows(const vfloat (&acc)[R][V], float* out, int64_t ldo,
                                                                   int64_t cols) {
  if (cols == V * kVecLen) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) store_vec(out + r * ldo + v * kVecLen, acc[r][v]);
    }
    return;
  }
  // Unrolled like the loops above: a run-time index into acc would keep the caller's accumulators
  // on the stack for every tile, not only for the narrow ones.
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) {
      const int64_t n = cols - v * kVecLen;
      if (n >= kVecLen) {
        store_vec(out + r * ldo + v * kVecLen, acc[r][v]);
      } else if (n > 0) {
        vec::store_partial(out + r * ldo + v * kVecLen, acc[r][v], n);
      }
    }
  }
}

// The activations with an exponential, out of line: their ~20 operations per vector, unrolled over
// R x V accumulators, made the store too large for GCC to inline into the tiles (an out-of-line
// store_rows took the accumulators through the stack: 13 % of a K = 24 GEMM's time).
template <int R, int V>
__attribute__((noinline)) void store_rows_exp(vfloat (&acc)[R][V], float* out, int64_t ldo, int64_t cols,
                                              Activation act) {
  activate(act, *reinterpret_cast<vfloat(*)[R * V]>(&acc[0][0]));  // several vectors side by side
  store_plain_rows<R, V>(acc, out, ldo, cols);
}

// Stores R rows x V vectors of accumulators (row r at out + r * ldo), activated; only the first
// `cols` <= V * kVecLen columns of each row are written. Small enough to inline into the tiles, so
// the accumulators go from registers to memory once (the whole store with every activation was left
// out of line, acc by reference: GEMMs of K = 24-32 now run in 0.80 of the time).
template <int R, int V>
static inline void store_rows(vfloat (&acc)[R][V], float* out, int64_t ldo, int64_t cols, Activation act) {
  if (has_exponential(act)) {
    // A copy goes out of line, not acc itself: once acc's address leaves the caller, GCC may keep
    // the accumulators in memory around the caller's FMA loop.
    vfloat copy[R][V];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) copy[r][v] = acc[r][v];
    }
    return store_rows_exp<R, V>(copy, out, ldo, cols, act);
  }
  if (act == Activation::kRelu) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = activate(Activation::kRelu, acc[r][v]);
    }
  } else if (act == Activation::kRelu6) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] = activate(Activation::kRelu6, acc[r][v]);
    }
  }
  store_plain_rows<R, V>(acc, out, ldo, cols);
}

// Loads `cols` <= V * kVecLen floats of a row as V vectors, zeros past `cols`.
template <int V>
static inline void load_row(const float* src, int64_t cols, vfloat (&dst)[V]) {
  if (cols == V * kVecLen) {
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) dst[v] = load_vec(src + v * kVecLen);
    return;
  }
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const int64_t n = cols - v * kVecLen;
    dst[v] = n >= kVecLen ? load_vec(src + v * kVecLen) : n > 0 ? vec::load_partial(src + v * kVecLen, n) : vfloat{};
  }
}

// What one tile multiplies: segs[t * TR + r] + seg_offset is where segment t of pixel r starts
// (TR: the tile's row count); the weights of segment t are the seg rows w + t * seg * ldw, each
// V * kVecLen wide.
struct TileJob {
  const float* const* segs;
  const float* const* next_segs;  // the next tile's segs, prefetched while this one runs; or nullptr
  const float* padding_seg;       // the zeros that segments outside the image point at; or nullptr
  int64_t taps, seg;
  int64_t seg_offset;  // a grouped convolution's first input channel of the group
  const float* w;
  int64_t ldw;
  const float* bias;  // V * kVecLen values, or nullptr
  float* out;         // pixel r's channels start at out + r * ldo
  int64_t ldo, cols;  // cols <= V * kVecLen channels are stored
  Activation act;
};

// R <= TR active rows of a TR x V tile. Never inlined: inside its caller's loops GCC kept the R input
// pointers in vector registers, one extra move per broadcast of the FMA loop (the direct 3x3 kernel
// ran 1.3x slower when a smaller store let it inline the tile).
template <int R, int TR, int V>
__attribute__((noinline)) static void run_tile(const TileJob& job) {
  vfloat acc[R][V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const vfloat init = job.bias ? load_vec(job.bias + v * kVecLen) : splat(0.0f);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r][v] = init;
  }
  for (int64_t t = 0; t < job.taps; ++t) {
    // A segment every pixel of the tile takes from outside the image adds nothing.
    bool all_padding = true;
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) all_padding &= job.segs[t * TR + r] == job.padding_seg;
    if (all_padding) continue;
    const float* a[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) a[r] = job.segs[t * TR + r] + job.seg_offset;
    const float* wt = job.w + t * job.seg * job.ldw;
    // In steps of one cache line of input per pixel, each step prefetching the next tile's matching
    // line: streamed inputs (a GEMM's rows) arrive from DRAM before they are needed.
    for (int64_t i0 = 0; i0 < job.seg; i0 += kLineFloats) {
      if (job.next_segs) {
#pragma GCC unroll 16
        for (int r = 0; r < TR; ++r) __builtin_prefetch(job.next_segs[t * TR + r] + job.seg_offset + i0);
      }
      const int64_t i1 = min_i64(i0 + kLineFloats, job.seg);
      for (int64_t i = i0; i < i1; ++i, wt += job.ldw) {
        __builtin_prefetch(wt + kWeightPrefetchSteps * job.ldw);
        vfloat wv[V];
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v) wv[v] = load_vec(wt + v * kVecLen);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const vfloat s = splat(a[r][i]);
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
        }
      }
    }
  }
  store_rows<R, V>(acc, job.out, job.ldo, job.cols, job.act);
}

// A tile of `rows` <= TR pixels (fewer only for the last tile of a problem).
template <int TR, int V, int R = TR>
static inline void run_tile_rows(int64_t rows, const TileJob& job) {
  if constexpr (R > 1) {
    if (rows < R) return run_tile_rows<TR, V, R - 1>(rows, job);
  }
  run_tile<R, TR, V>(job);
}

}  // namespace
}  // namespace fastconv::cpu::FC_ISA
