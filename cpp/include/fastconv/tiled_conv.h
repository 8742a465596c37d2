// The register-tiled engine shared by the dense convolution (conv2d.cpp) and the GEMM (gemm.cpp).
// Included inside each instruction set's translation units; written once with GCC vector
// extensions, so the portable (SSE2, 4 lanes), AVX2 (8 lanes) and AVX-512 (16 lanes) builds run
// the same code with different vector widths and tile heights.
//
// The unit of work is an output tile: kTileRows consecutive output pixels (GEMM rows) x kTileCols
// output channels, held in 2 x kTileRows vector registers. Each pixel's input is described as
// `taps` segments of `seg` contiguous floats (for a convolution: one kernel row ky, laid out
// [kx][ci] exactly like the matching HWIO weight rows), so the inner loop is: load the kTileCols
// weights of one reduction step, broadcast one input value per pixel, FMA. Bias is the initial
// accumulator value; the activation is applied in the store.
#pragma once

#include <cstdint>

#include "fastconv/kernel_util.h"
#include "fastconv/params.h"

#if defined(__AVX512F__)
#define FC_VEC_BYTES 64
#elif defined(__AVX2__)
#define FC_VEC_BYTES 32
#else
#define FC_VEC_BYTES 16
#endif

namespace fastconv::cpu::FC_ISA {

// Defined in conv2d.cpp: groups == 1 convolution with the tiled engine. gemm.cpp runs through it
// as a 1x1 convolution of rows images of 1x1 pixels.
void tiled_conv(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads);

namespace {

typedef float vfloat __attribute__((vector_size(FC_VEC_BYTES)));
typedef float vfloat_unaligned __attribute__((vector_size(FC_VEC_BYTES), aligned(4), may_alias));

constexpr int kVecLen = FC_VEC_BYTES / 4;
constexpr int64_t kLineFloats = 16;  // one 64-byte cache line
constexpr int kTileVecs = 2;                     // vectors of output channels per tile
constexpr int kTileCols = kTileVecs * kVecLen;   // 8 portable, 16 AVX2, 32 AVX-512
// Pixels per tile: 2 x kTileRows accumulators + 2 weight vectors + 1 broadcast fit the register
// file (16 vector registers for SSE2/AVX2, 32 for AVX-512), and kTileRows input pointers fit the
// general-purpose registers.
#if defined(__AVX512F__)
constexpr int kTileRows = 8;
#else
constexpr int kTileRows = 6;
#endif

static inline vfloat load_vec(const float* p) { return *reinterpret_cast<const vfloat_unaligned*>(p); }
static inline void store_vec(float* p, vfloat v) { *reinterpret_cast<vfloat_unaligned*>(p) = v; }
// s * 1 folds to a plain broadcast; `vfloat{} + s` would cost an add (it must keep -0.0 as is).
static inline vfloat splat(float s) { return s * (vfloat{} + 1.0f); }

// What one tile multiplies: segs[t * kTileRows + r] is where segment t of pixel r starts; the
// weights of segment t are the seg rows w + t * seg * ldw, each kTileCols wide.
struct TileJob {
  const float* const* segs;
  const float* const* next_segs;  // the next tile's segs, prefetched while this one runs; or nullptr
  int64_t taps, seg;
  const float* w;
  int64_t ldw;
  const float* bias;  // kTileCols values, or nullptr
  float* out;         // pixel r's channels start at out + r * ldo
  int64_t ldo, cols;  // cols <= kTileCols channels are stored
  Activation act;
};

template <int R>
static inline void store_tile(const TileJob& job, vfloat (&acc)[R][kTileVecs]) {
  const Activation act = job.act;
  if (job.cols == kTileCols && (act == Activation::kNone || act == Activation::kRelu || act == Activation::kRelu6)) {
    const vfloat zero = splat(0.0f), six = splat(6.0f);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 4
      for (int v = 0; v < kTileVecs; ++v) {
        vfloat a = acc[r][v];
        // Comparisons with NaN are false, so NaN passes through relu and relu6 like in PyTorch.
        if (act != Activation::kNone) a = a < zero ? zero : a;
        if (act == Activation::kRelu6) a = a > six ? six : a;
        store_vec(job.out + r * job.ldo + v * kVecLen, a);
      }
    }
    return;
  }
  alignas(64) float tile[R][kTileCols];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < kTileVecs; ++v) store_vec(tile[r] + v * kVecLen, acc[r][v]);
    store_activated(act, tile[r], job.out + r * job.ldo, job.cols);
  }
}

template <int R>
static inline void run_tile(const TileJob& job) {
  vfloat acc[R][kTileVecs];
#pragma GCC unroll 4
  for (int v = 0; v < kTileVecs; ++v) {
    const vfloat init = job.bias ? load_vec(job.bias + v * kVecLen) : splat(0.0f);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r][v] = init;
  }
  for (int64_t t = 0; t < job.taps; ++t) {
    const float* a[R];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) a[r] = job.segs[t * kTileRows + r];
    const float* wt = job.w + t * job.seg * job.ldw;
    // In steps of one cache line of input per pixel, each step prefetching the next tile's matching
    // line: streamed inputs (a GEMM's rows) arrive from DRAM before they are needed.
    for (int64_t i0 = 0; i0 < job.seg; i0 += kLineFloats) {
      if (job.next_segs) {
#pragma GCC unroll 16
        for (int r = 0; r < kTileRows; ++r) __builtin_prefetch(job.next_segs[t * kTileRows + r] + i0);
      }
      const int64_t i1 = min_i64(i0 + kLineFloats, job.seg);
      for (int64_t i = i0; i < i1; ++i, wt += job.ldw) {
        vfloat wv[kTileVecs];
#pragma GCC unroll 4
        for (int v = 0; v < kTileVecs; ++v) wv[v] = load_vec(wt + v * kVecLen);
#pragma GCC unroll 16
        for (int r = 0; r < R; ++r) {
          const vfloat s = splat(a[r][i]);
#pragma GCC unroll 4
          for (int v = 0; v < kTileVecs; ++v) acc[r][v] += s * wv[v];
        }
      }
    }
  }
  store_tile<R>(job, acc);
}

// A tile of `rows` <= kTileRows pixels (fewer only for the last tile of a problem).
template <int R = kTileRows>
static inline void run_tile_rows(int64_t rows, const TileJob& job) {
  if constexpr (R > 1) {
    if (rows < R) return run_tile_rows<R - 1>(rows, job);
  }
  run_tile<R>(job);
}

}  // namespace
}  // namespace fastconv::cpu::FC_ISA
