// Winograd F(4x4, 3x3) and F(4x4, 5x5) convolutions (F(2x2, 5x5) below 8 input channels, where
// F(4x4, 5x5) rounds too coarsely: run_unit_stride): 3x3 or 5x5 kernel, dilation 1, groups 1, NHWC
// activations, HWIO weights, any padding; strided filters that fold to 3x3 or 5x5, or to 4x4 with
// F(3x3, 4x4) (winograd_conv2d at the end); under "auto" also dilated stride-1 filters, over the
// input's dilation phases (params.h, dilation_phases), and groups of 16 or more channels, group by
// group (winograd_conv2d). Compiled once per instruction set (FC_ISA = portable |
// avx2 | avx512); see kernels.h. dispatch.cpp decides when it runs (algorithm="winograd", or "auto"
// and the cost model there). Three drivers: run_winograd (the general one below), run_winograd_few
// (1-4 input channels: each tile's products in registers) and run_winograd_folded_rgb (7x7 / 8x8
// stride-2 stems over RGB).
//
// Each 4x4 output tile of a 3x3 convolution is computed from the 6x6 input patch d around it as
//     Y = AT [ sum_ci (G g G^T) (.) (BT d B) ] A
// so per (tile, C_in, C_out) triple the 4 * 4 * 9 = 144 multiply-adds of the direct convolution
// become 36: the elementwise product of 6x6 transformed tiles, which is 36 independent GEMMs
// [tiles x C_in] @ [C_in x C_out], one per transform element e. A 5x5 convolution takes its 4x4
// output tiles from 8x8 patches: 4 * 4 * 25 = 400 multiply-adds become 64 (F(2x2, 5x5), for few
// input channels: 2x2 tiles from the 6x6 patches, 100 become 36).
//
// Steps, per call:
//  1. Weights: U[e][co block][ci][kCols] = (G g G^T)[e] for every (ci, co), zero padded past C_out.
//     36 * C_in * C_out values at ~50 flops each, against 2 * 36 * tiles * C_in * C_out flops of
//     GEMM: under 2% from 48 tiles, but most of a 7 x 7 map's call. Computed on every call, or once
//     ahead of the calls (fastconv.pack_weights: winograd_packed_floats / pack_winograd_weights).
//  2. For each block of `block` tiles (on few tiles the threads share a block, every step split
//     between them; on many each thread runs blocks of its own, run_winograd):
//     a. input transform: V[e][tile][ci] = (BT d B)[e], channels in vector lanes; the patch is read
//        straight from x with zeros outside the image (padding) or past C_in.
//     b. 36 x (C_out / kCols) x (block / kRows) register-tiled GEMM microkernels: kRows tiles x
//        kCols output channels in 2 x kRows vector accumulators, one broadcast of V per tile and
//        two vector loads of U per input channel. M[e][tile][co].
//     c. output transform AT M A, + bias, activation, stored clipped to the output (border tiles).
// V and M of a block stay in L2 / L3; U[e] (C_in x kCols per microkernel) is reused from L1 by
// every tile of the block. Wide layers on small maps (U past a few MB, few tiles) skip step 1:
// all tiles form one block and each thread transforms the weights of one output-channel block
// right before its products (run_winograd, stream_weights).
//
// Accuracy: the transforms of F(4x4, 3x3) and F(2x2, 5x5) (points 0, +-1, +-2) and F(4x4, 5x5) (+-1/2
// too) amplify float32 rounding; measured against the float64 reference in bench/NOTES.md (Winograd
// sections), well inside tolerance for C_in 1-512 (F(4x4, 5x5) from 8 input channels).
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

typedef float wvec __attribute__((vector_size(FC_VEC_BYTES)));
typedef float wvec_u __attribute__((vector_size(FC_VEC_BYTES), aligned(4), may_alias));

constexpr int kLanes = FC_VEC_BYTES / 4;
constexpr int kColVecs = 2;
constexpr int kCols = kColVecs * kLanes;  // output channels per microkernel: 8 / 16 / 32
#if defined(__AVX512F__)
constexpr int kRows = 8;  // 16 accumulators of 32 registers
#else
constexpr int kRows = 6;  // 12 accumulators of 16 registers
#endif
// A: input tile side, R: filter side, A - R + 1: output tile side. F(4x4, 3x3) is A = 6, R = 3;
// F(2x2, 5x5) A = 6, R = 5 (the same input transform as F(4x4, 3x3): both
// use the points 0, +-1, +-2 and infinity); F(4x4, 5x5) A = 8, R = 5 (points 0, +-1, +-2, +-1/2,
// infinity; the GPU's, cuda/conv2d_winograd.cu, are the same matrices).

static inline wvec ld(const float* p) { return *reinterpret_cast<const wvec_u*>(p); }
static inline void st(float* p, wvec v) { *reinterpret_cast<wvec_u*>(p) = v; }
static inline wvec splat(float s) { return s * (wvec{} + 1.0f); }

// run_winograd's switch to transforming weights per output-channel block (see there).
constexpr double kStreamWeightBytes = 4.0 * 1024 * 1024;
constexpr int64_t kStreamMaxTilesPerCol = 6;
constexpr int64_t kOneBlockBytes = int64_t{16} << 20;

// The calling thread's buffers (kernel_util.h, Workspace).
static thread_local Workspace tls_workspace;      // U, V and M
static thread_local Workspace tls_folded_input;  // strided filters: the folded input (fold_input)
static thread_local Workspace tls_folded_weights;  // and their folded weights (fold_weights)
static thread_local Workspace tls_phases;  // dilated filters: the input's phases and their outputs
static thread_local Workspace tls_groups;  // grouped filters: the groups' inputs, outputs and weights

// BT applied to a column d0..d(A-1) (input transform, both directions). BT, AT and the few-channel
// tile products are always inlined, so that their arrays of vectors stay in registers: once GCC's
// inliner budget left at<6, 4> out of run_winograd_few (after a change to the activations' code),
// 3-channel layers ran 1.3-1.4x slower.
template <int A>
__attribute__((always_inline)) static inline void bt(const wvec* d, wvec* r) {
  if constexpr (A == 8) {  // points 0, +-1, +-2, +-1/2 and infinity, scaled by 4 (integer entries)
    const wvec four = splat(4.0f), c21 = splat(21.0f);
    r[0] = c21 * (d[2] - d[4]) + four * (d[6] - d[0]);
    r[7] = c21 * (d[3] - d[5]) + four * (d[7] - d[1]);
    const wvec e1 = four * (d[2] + d[6]) - splat(17.0f) * d[4], o1 = four * (d[1] + d[5]) - splat(17.0f) * d[3];
    r[1] = e1 + o1;
    r[2] = e1 - o1;
    const wvec e3 = d[2] - splat(5.0f) * d[4] + four * d[6];
    const wvec o3 = splat(2.0f) * d[1] - splat(10.0f) * d[3] + splat(8.0f) * d[5];
    r[3] = e3 + o3;
    r[4] = e3 - o3;
    const wvec e5 = splat(16.0f) * d[2] - splat(20.0f) * d[4] + four * d[6];
    const wvec o5 = splat(8.0f) * d[1] - splat(10.0f) * d[3] + splat(2.0f) * d[5];
    r[5] = e5 + o5;
    r[6] = e5 - o5;
    return;
  }
  const wvec four = splat(4.0f), five = splat(5.0f), two = splat(2.0f);
  r[0] = four * d[0] - five * d[2] + d[4];
  const wvec a = d[4] - four * d[2], b = d[3] - four * d[1];  // r1 = a + b, r2 = a - b
  r[1] = a + b;
  r[2] = a - b;
  const wvec c = d[4] - d[2], e = two * (d[3] - d[1]);  // r3 = c + e, r4 = c - e
  r[3] = c + e;
  r[4] = c - e;
  r[5] = four * d[1] - five * d[3] + d[5];
}

// AT applied to m0..m(A-1), giving the M outputs (output transform, both directions).
template <int A, int M>
__attribute__((always_inline)) static inline void at(const wvec* m, wvec* o) {
  if constexpr (M == 3) {  // F(3x3, 4x4): rows p^0..p^2 of the points 0, 1, -1, 2, -2 (and infinity)
    const wvec s12 = m[1] + m[2], s34 = m[3] + m[4];
    o[0] = m[0] + s12 + s34;
    o[1] = m[1] - m[2] + splat(2.0f) * (m[3] - m[4]);
    o[2] = s12 + splat(4.0f) * s34 + m[5];
    return;
  }
  if constexpr (M == 2) {  // F(2x2, 5x5): rows p^0, p^1 of the points 0, 1, -1, 2, -2 (and infinity)
    o[0] = m[0] + m[1] + m[2] + m[3] + m[4];
    o[1] = m[1] - m[2] + splat(2.0f) * (m[3] - m[4]) + m[5];
    return;
  }
  if constexpr (A == 8) {  // F(4x4, 5x5): rows p^0..p^3 of the points 0, +-1, +-2, +-1/2 (and infinity)
    const wvec s1 = m[1] + m[2], d1 = m[1] - m[2], s3 = m[3] + m[4], d3 = m[3] - m[4];
    const wvec s5 = m[5] + m[6], d5 = m[5] - m[6];
    o[0] = m[0] + s1 + s3 + s5;
    o[1] = d1 + splat(2.0f) * d3 + splat(0.5f) * d5;
    o[2] = s1 + splat(4.0f) * s3 + splat(0.25f) * s5;
    o[3] = d1 + splat(8.0f) * d3 + splat(0.125f) * d5 + m[7];
    return;
  }
  const wvec two = splat(2.0f), four = splat(4.0f), eight = splat(8.0f);
  const wvec s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  o[0] = m[0] + s12 + s34;
  o[1] = d12 + two * d34;
  o[2] = s12 + four * s34;
  o[3] = d12 + eight * d34 + m[5];
}

// G applied to the R filter taps g0..g(R-1) (weight transform, both directions).
template <int A, int R>
static inline void gt(const wvec* g, wvec* u) {
  if constexpr (A == 8) {  // F(4x4, 5x5): B^T's scale of 4 divided out here
    u[0] = splat(-0.25f) * g[0];
    u[7] = splat(0.25f) * g[4];
    const wvec e1 = splat(-1.0f / 18.0f) * (g[0] + g[2] + g[4]), o1 = splat(-1.0f / 18.0f) * (g[1] + g[3]);
    u[1] = e1 + o1;
    u[2] = e1 - o1;
    const wvec e3 = splat(1.0f / 360.0f) * g[0] + splat(1.0f / 90.0f) * g[2] + splat(2.0f / 45.0f) * g[4];
    const wvec o3 = splat(1.0f / 180.0f) * g[1] + splat(1.0f / 45.0f) * g[3];
    u[3] = e3 + o3;
    u[4] = e3 - o3;
    const wvec e5 = splat(8.0f / 45.0f) * g[0] + splat(2.0f / 45.0f) * g[2] + splat(1.0f / 90.0f) * g[4];
    const wvec o5 = splat(4.0f / 45.0f) * g[1] + splat(1.0f / 45.0f) * g[3];
    u[5] = e5 + o5;
    u[6] = e5 - o5;
    return;
  }
  const wvec q = splat(0.25f), sixth = splat(1.0f / 6.0f), c24 = splat(1.0f / 24.0f), c12 = splat(1.0f / 12.0f);
  if constexpr (R == 4) {  // the filter polynomial at each point, scaled as for R = 3 and 5
    const wvec even = g[0] + g[2], odd = g[1] + g[3];
    u[0] = q * g[0];
    u[1] = -sixth * (even + odd);
    u[2] = -sixth * (even - odd);
    const wvec even2 = c24 * g[0] + sixth * g[2], odd2 = c12 * g[1] + splat(1.0f / 3.0f) * g[3];
    u[3] = even2 + odd2;
    u[4] = even2 - odd2;
    u[5] = g[3];
    return;
  }
  if constexpr (R == 5) {
    // Row j: the filter polynomial at point p_j, divided by prod_{l != j} (p_j - p_l).
    const wvec even = g[0] + g[2] + g[4], odd = g[1] + g[3];
    u[0] = q * g[0];
    u[1] = -sixth * (even + odd);
    u[2] = -sixth * (even - odd);
    const wvec even2 = c24 * g[0] + sixth * g[2] + splat(2.0f / 3.0f) * g[4];
    const wvec odd2 = c12 * g[1] + splat(1.0f / 3.0f) * g[3];
    u[3] = even2 + odd2;
    u[4] = even2 - odd2;
    u[5] = g[4];
    return;
  }
  u[0] = q * g[0];
  const wvec s02 = g[0] + g[2];
  u[1] = -sixth * (s02 + g[1]);
  u[2] = -sixth * (s02 - g[1]);
  const wvec t = c24 * g[0] + sixth * g[2];
  u[3] = t + c12 * g[1];
  u[4] = t - c12 * g[1];
  u[5] = g[2];
}

struct Geometry {
  int64_t tiles_h, tiles_w, tiles;
  int64_t ci_pad, co_pad, co_blocks;
  int64_t block;     // tiles per block, a multiple of kRows
  int64_t v_stride;  // floats between transform elements of V: block * ci_pad, plus a cache line
  int64_t m_stride;  // the same for M
};

// (G g G^T)[e] of one vector of filters (taps g[ky][kx]), stored at dst + e * e_stride.
template <int A, int R>
static inline void transform_filter(const wvec (&g)[R][R], float* dst, int64_t e_stride) {
  // Columns: t[i][kx] = (G g)[i][kx]; then rows: u[i][j] = (t G^T)[i][j].
  wvec t[A][R];
  for (int kx = 0; kx < R; ++kx) {
    wvec col[R], r[A];
    for (int ky = 0; ky < R; ++ky) col[ky] = g[ky][kx];
    gt<A, R>(col, r);
    for (int i = 0; i < A; ++i) t[i][kx] = r[i];
  }
  for (int i = 0; i < A; ++i) {
    wvec r[A];
    gt<A, R>(t[i], r);
    for (int j = 0; j < A; ++j) st(dst + (i * A + j) * e_stride, r[j]);
  }
}

// 1. U[e][cb][ci][kCols] from w[ky][kx][ci][co]; rows of ci split between the threads.
// The R * R taps of one input channel are first copied, a chunk of output channels at a time, into a
// zero-padded local buffer: read in place they are R * R streams C_in * C_out floats apart, which for
// power-of-two channel counts all map onto the same cache sets.
template <int A, int R>
static inline void transform_weights(const Conv2dParams& p, const Geometry& g, const float* w, float* u,
                                     int64_t e_stride) {
  constexpr int64_t kChunk = 256;  // a multiple of kCols
  alignas(64) float taps[R * R][kChunk];
#pragma omp for schedule(static)
  for (int64_t ci = 0; ci < p.c_in; ++ci) {
    for (int64_t chunk0 = 0; chunk0 < g.co_pad; chunk0 += kChunk) {
      const int64_t chunk_len = min_i64(kChunk, g.co_pad - chunk0);
      for (int k = 0; k < R * R; ++k) {
        const float* src = w + (k * p.c_in + ci) * p.c_out;
        for (int64_t j = 0; j < chunk_len; ++j) taps[k][j] = chunk0 + j < p.c_out ? src[chunk0 + j] : 0.0f;
      }
      for (int64_t co0 = chunk0; co0 < chunk0 + chunk_len; co0 += kLanes) {
        wvec gk[R][R];
        for (int k = 0; k < R * R; ++k) gk[k / R][k % R] = ld(&taps[k][co0 - chunk0]);
        const int64_t cb = co0 / kCols, lane0 = co0 % kCols;
        transform_filter<A, R>(gk, u + (cb * p.c_in + ci) * kCols + lane0, e_stride);
      }
    }
  }
}

// 1'. The weights of one output-channel block alone: u_cb[e][ci][kCols] (e_stride floats between
// the e), for the calling thread, right before the products that read them (see run_winograd).
// Per input channel the block's R * R tap rows are copied first, each line read once: read in
// place, a block of 2 vectors read every line twice, and the R * R lines, C_in * C_out floats
// apart, share one L1 set for power-of-two channel counts (9 lines, 8 ways: every read missed).
template <int A, int R>
static inline void transform_weight_block(const Conv2dParams& p, const float* w, int64_t cb, float* u_cb,
                                          int64_t e_stride) {
  const int64_t c0 = cb * kCols, len = min_i64(kCols, p.c_out - c0);  // columns of the block in w
  alignas(64) float taps[R * R][kCols] = {};  // zero past len, which stays so
  for (int64_t ci = 0; ci < p.c_in; ++ci) {
    for (int k = 0; k < R * R; ++k) {
      const float* src = w + (k * p.c_in + ci) * p.c_out + c0;
      if (len == kCols) {
        for (int v = 0; v < kColVecs; ++v) st(taps[k] + v * kLanes, ld(src + v * kLanes));
      } else {
        for (int64_t j = 0; j < len; ++j) taps[k][j] = src[j];
      }
    }
    for (int64_t lane0 = 0; lane0 < kCols; lane0 += kLanes) {
      wvec gk[R][R];
      for (int k = 0; k < R * R; ++k) gk[k / R][k % R] = ld(taps[k] + lane0);
      transform_filter<A, R>(gk, u_cb + ci * kCols + lane0, e_stride);
    }
  }
}

// 2a. V[e][slot][ci] for one tile of M x M outputs.
template <int A, int M>
static inline void transform_input_tile(const Conv2dParams& p, const Geometry& g, const float* x, int64_t tile,
                                        float* v_slot) {
  const int64_t n = tile / (g.tiles_h * g.tiles_w);
  const int64_t ty = tile / g.tiles_w % g.tiles_h, tx = tile % g.tiles_w;
  const int64_t iy0 = ty * M - p.pad_top, ix0 = tx * M - p.pad_left;
  const bool inside = iy0 >= 0 && ix0 >= 0 && iy0 + A <= p.h && ix0 + A <= p.w;
  const float* base = x + ((n * p.h + iy0) * p.w + ix0) * p.c_in;  // may point outside: only used when inside
  for (int64_t ci0 = 0; ci0 < g.ci_pad; ci0 += kLanes) {
    const int64_t len = min_i64(kLanes, p.c_in - ci0);
    wvec d[A][A];
    if (inside && len == kLanes) {
      for (int i = 0; i < A; ++i)
        for (int j = 0; j < A; ++j) d[i][j] = ld(base + (i * p.w + j) * p.c_in + ci0);
    } else {
      for (int i = 0; i < A; ++i) {
        const int64_t iy = iy0 + i;
        for (int j = 0; j < A; ++j) {
          const int64_t ix = ix0 + j;
          if (iy < 0 || iy >= p.h || ix < 0 || ix >= p.w) {
            d[i][j] = splat(0.0f);
          } else {
            const float* src = x + ((n * p.h + iy) * p.w + ix) * p.c_in + ci0;
            if (len == kLanes) {
              d[i][j] = ld(src);
            } else {
              alignas(64) float tmp[kLanes] = {};
              for (int64_t c = 0; c < len; ++c) tmp[c] = src[c];
              d[i][j] = ld(tmp);
            }
          }
        }
      }
    }
    // Columns then rows: t = BT d, V = t B.
    wvec t[A][A];
    for (int j = 0; j < A; ++j) {
      wvec col[A];
      for (int i = 0; i < A; ++i) col[i] = d[i][j];
      wvec r[A];
      bt<A>(col, r);
      for (int i = 0; i < A; ++i) t[i][j] = r[i];
    }
    for (int i = 0; i < A; ++i) {
      wvec r[A];
      bt<A>(t[i], r);
      for (int j = 0; j < A; ++j) st(v_slot + (i * A + j) * g.v_stride + ci0, r[j]);
    }
  }
}

// 2b. M rows [R tiles] x kCols = V rows [R tiles] x C_in @ U [C_in x kCols].
template <int R>
static inline void gemm_tile(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc) {
  wvec acc[R][kColVecs];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kColVecs; ++v) acc[r][v] = splat(0.0f);
  const float* ar[R];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) ar[r] = a + r * lda;
  for (int64_t i = 0; i < k; ++i, b += kCols) {
    wvec bv[kColVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kColVecs; ++v) bv[v] = ld(b + v * kLanes);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const wvec s = splat(ar[r][i]);
#pragma GCC unroll 4
      for (int v = 0; v < kColVecs; ++v) acc[r][v] += s * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kColVecs; ++v) st(c + r * ldc + v * kLanes, acc[r][v]);
}

template <int R = kRows>
static inline void gemm_rows(int64_t rows, const float* a, int64_t lda, const float* b, int64_t k, float* c,
                             int64_t ldc) {
  if constexpr (R > 1) {
    if (rows < R) return gemm_rows<R - 1>(rows, a, lda, b, k, c, ldc);
  }
  gemm_tile<R>(a, lda, b, k, c, ldc);
}

// One transform element's product for `count` tiles of a block and one column block of output
// channels: [count x C_in] (V[e], rows ci_pad apart) @ [C_in x kCols] (ue) -> M[e] (rows co_pad apart),
// kRows tiles at a time.
static inline void block_product(const Geometry& g, int64_t count, const float* ve, const float* ue, int64_t c_in,
                                 float* me) {
  for (int64_t r0 = 0; r0 < count; r0 += kRows) {
    gemm_rows(min_i64(kRows, count - r0), ve + r0 * g.ci_pad, g.ci_pad, ue, c_in, me + r0 * g.co_pad, g.co_pad);
  }
}

// 2c. Output transform of one tile, + bias, activation, clipped to the output.
template <int A, int M>
static inline void transform_output_tile(const Conv2dParams& p, const Geometry& g, const float* m_slot,
                                         const float* bias_pad, int64_t tile, float* y) {
  const int64_t n = tile / (g.tiles_h * g.tiles_w);
  const int64_t ty = tile / g.tiles_w % g.tiles_h, tx = tile % g.tiles_w;
  const int64_t oy0 = ty * M, ox0 = tx * M;
  const int64_t rows = min_i64(M, p.out_h - oy0), cols = min_i64(M, p.out_w - ox0);
  const Activation act = p.activation;
  for (int64_t co0 = 0; co0 < p.c_out; co0 += kLanes) {  // the vectors of padding past C_out are not stored
    const int64_t len = min_i64(kLanes, p.c_out - co0);
    // Rows then columns: t = AT m (M x A), o = t A (M x M).
    wvec t[M][A];
    for (int j = 0; j < A; ++j) {
      wvec col[A];
      for (int i = 0; i < A; ++i) col[i] = ld(m_slot + (i * A + j) * g.m_stride + co0);
      wvec r[M];
      at<A, M>(col, r);
      for (int i = 0; i < M; ++i) t[i][j] = r[i];
    }
    const wvec bv = bias_pad ? ld(bias_pad + co0) : splat(0.0f);
    for (int64_t i = 0; i < rows; ++i) {
      wvec o[M];
      at<A, M>(t[i], o);
      float* out_row = y + ((n * p.out_h + oy0 + i) * p.out_w + ox0) * p.c_out + co0;
      for (int64_t j = 0; j < cols; ++j) {
        // The vector activations of every kernel (simd_dw.h); NaN passes through relu and relu6.
        const wvec val = vec::activate(act, o[j] + bv);
        float* dst = out_row + j * p.c_out;
        // The next tile's pixel in this row, for write: its line is read for ownership before the
        // store, from L3 once the output is past L2 (2x112x112x128 3x3 0.94-0.95 of the time,
        // 1x224x224x64 and 8x56x56x64 0.97-0.99, outputs within L2 1.00).
        __builtin_prefetch(dst + M * p.c_out, 1);
        if (len == kLanes) {
          st(dst, val);
        } else {
          vec::store_partial(dst, val, len);
        }
      }
    }
  }
}

// Floats between the transform elements e of the whole U (plus a cache line, as for V and M).
int64_t prepacked_e_stride(const Conv2dParams& p) { return (p.c_out + kCols - 1) / kCols * p.c_in * kCols + 16; }

// u_prepacked: U as pack_winograd_weights made it ahead of the call, or null to transform w here.
template <int A, int R>
void run_winograd(const Conv2dParams& p, const float* x, const float* w, const float* u_prepacked, const float* b,
                  float* y, int threads) {
  constexpr int kM = A - R + 1, kElems = A * A;
  Geometry g{};
  g.tiles_h = (p.out_h + kM - 1) / kM;
  g.tiles_w = (p.out_w + kM - 1) / kM;
  g.tiles = p.n * g.tiles_h * g.tiles_w;
  g.ci_pad = (p.c_in + kLanes - 1) / kLanes * kLanes;
  g.co_blocks = (p.c_out + kCols - 1) / kCols;
  g.co_pad = g.co_blocks * kCols;
  const int64_t work = g.tiles * kElems * p.c_in * p.c_out;
  const int nthreads = threads_for(work, threads);
  // A block's V and M (36 * block * (C_in + C_out) floats) sized for about 768 KiB per thread of
  // L2, but at least 8 row panels so that each U[e] column block is reused by >= 48 tiles, and
  // never more than the problem has.
  const int64_t per_tile_bytes = kElems * 4 * (g.ci_pad + g.co_pad);
  const int64_t all_tiles = (g.tiles + kRows - 1) / kRows * kRows;
  int64_t block = (768 * 1024 * nthreads / per_tile_bytes) / kRows * kRows;
  block = max_i64(block, 8 * kRows);
  block = min_i64(block, 64 * kRows);
  block = min_i64(block, all_tiles);
  // Transformed weights past kStreamWeightBytes (a 512 x 512 layer's are 38 MB, more than the L3)
  // are written to L3 or DRAM and read back for every block of tiles. On small maps all tiles form
  // one block instead, and each thread transforms the weights of one output-channel block at a
  // time (36 x C_in x kCols floats, in L2) right before the products that read them: the full U is
  // never written, but V is read once per channel block, tiles / kCols times U's size; past
  // kStreamMaxTilesPerCol that costs more than U's round trip (measured, bench/NOTES.md: 28x28 and
  // smaller maps gain 1.5-2x, 56x56 x 256 channels loses 12 %).
  // Prepacked weights take the same single block (each U[e] block is then read once per call) but
  // read U as it is.
  const bool small_map = kElems * 4.0 * p.c_in * g.co_pad > kStreamWeightBytes &&
                         all_tiles <= kStreamMaxTilesPerCol * kCols && all_tiles * per_tile_bytes <= kOneBlockBytes;
  const bool stream_weights = small_map && !u_prepacked;
  if (small_map) block = all_tiles;
  // With enough tiles, each thread runs whole blocks of its own (V and M sized to its own L2), taken
  // dynamically: no barrier between a block's steps, and a thread that the machine delays (2 shared
  // vCPUs) leaves its blocks to the other instead of stalling it at the next barrier.
  const int64_t own_block = min_i64(64 * kRows, max_i64(8 * kRows, (768 * 1024 / per_tile_bytes) / kRows * kRows));
  const bool own_blocks = !small_map && nthreads > 1 && g.tiles >= 2 * nthreads * own_block;
  if (own_blocks) block = own_block;
  g.block = block;
  g.v_stride = block * g.ci_pad + 16;
  g.m_stride = block * g.co_pad + 16;

  // Plus a cache line: 36 streams a power of two apart would share cache sets.
  const int64_t u_e_stride = stream_weights ? p.c_in * kCols + 16 : prepacked_e_stride(p);
  const int64_t u_floats = u_prepacked ? 0 : stream_weights ? nthreads * kElems * u_e_stride : kElems * u_e_stride;
  const int64_t vm_floats = kElems * (g.v_stride + g.m_stride);  // one block's V and M
  const WorkspaceLease lease(tls_workspace, u_floats + (own_blocks ? nthreads : 1) * vm_floats);
  float* workspace = lease.get();
  float* u_here = workspace;  // U when transformed here
  const float* u = u_prepacked ? u_prepacked : u_here;
  float* v = workspace + u_floats;
  float* m = v + kElems * g.v_stride;
  float* bias_pad = nullptr;
  if (b) {
    bias_pad = alloc_floats(g.co_pad);
    for (int64_t j = 0; j < g.co_pad; ++j) bias_pad[j] = j < p.c_out ? b[j] : 0.0f;
  }

  parallel_run(nthreads, [&] {
    if (stream_weights) {
      const int64_t count = g.tiles;
      float* u_cb = u_here + omp_get_thread_num() * kElems * u_e_stride;
#pragma omp for schedule(static)
      for (int64_t t = 0; t < count; ++t) transform_input_tile<A, kM>(p, g, x, t, v + t * g.ci_pad);
#pragma omp for schedule(dynamic, 1)
      for (int64_t cb = 0; cb < g.co_blocks; ++cb) {
        transform_weight_block<A, R>(p, w, cb, u_cb, u_e_stride);
        for (int64_t e = 0; e < kElems; ++e) {
          block_product(g, count, v + e * g.v_stride, u_cb + e * u_e_stride, p.c_in, m + e * g.m_stride + cb * kCols);
        }
      }
#pragma omp for schedule(static)
      for (int64_t t = 0; t < count; ++t) transform_output_tile<A, kM>(p, g, m + t * g.co_pad, bias_pad, t, y);
    } else if (own_blocks) {
      if (!u_prepacked) transform_weights<A, R>(p, g, w, u_here, u_e_stride);  // ends with its omp for's barrier
      float* v_own = v + omp_get_thread_num() * vm_floats;
      float* m_own = v_own + kElems * g.v_stride;
#pragma omp for schedule(dynamic, 1)
      for (int64_t first = 0; first < g.tiles; first += g.block) {
        const int64_t count = min_i64(g.block, g.tiles - first);
        for (int64_t t = 0; t < count; ++t) transform_input_tile<A, kM>(p, g, x, first + t, v_own + t * g.ci_pad);
        for (int64_t e = 0; e < kElems; ++e) {
          for (int64_t cb = 0; cb < g.co_blocks; ++cb) {
            block_product(g, count, v_own + e * g.v_stride, u + e * u_e_stride + cb * p.c_in * kCols, p.c_in,
                          m_own + e * g.m_stride + cb * kCols);
          }
        }
        for (int64_t t = 0; t < count; ++t) transform_output_tile<A, kM>(p, g, m_own + t * g.co_pad, bias_pad, first + t, y);
      }
    } else {
      if (!u_prepacked) transform_weights<A, R>(p, g, w, u_here, u_e_stride);  // ends with its omp for's barrier
      for (int64_t first = 0; first < g.tiles; first += g.block) {
        const int64_t count = min_i64(g.block, g.tiles - first);
#pragma omp for schedule(static)
        for (int64_t t = 0; t < count; ++t) transform_input_tile<A, kM>(p, g, x, first + t, v + t * g.ci_pad);
#pragma omp for collapse(2) schedule(static)
        for (int64_t e = 0; e < kElems; ++e) {
          for (int64_t cb = 0; cb < g.co_blocks; ++cb) {
            block_product(g, count, v + e * g.v_stride, u + e * u_e_stride + cb * p.c_in * kCols, p.c_in,
                          m + e * g.m_stride + cb * kCols);
          }
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < count; ++t) transform_output_tile<A, kM>(p, g, m + t * g.co_pad, bias_pad, first + t, y);
      }
    }
  });
  std::free(bias_pad);
}

// Few input channels (C_in <= kWinogradFewMaxCin, kernels.h: first layers, and strided filters that
// fold to few channels). A reduction of C_in terms leaves run_winograd's GEMM storing every product
// to M in L2 and the output transform loading it back for a handful of multiply-adds each. Here a
// tile's products never leave the registers: per output vector, each row of transform elements is
// reduced over C_in and at once combined by the output transform's column step; the row step gives
// the tile's M x M outputs, stored straight to y.
// V is computed kLanes tiles at a time, tiles in the vector lanes. A work item is a strip of
// consecutive tile rows; each thread splits their A input rows by channel and column phase modulo M,
//     planes[i][ci][r][s * seg + q] = x[ty_s * M - pad_top + i][q * M + r - pad_left][ci]   (zero outside),
// tile row s of the strip taking seg = tiles_w + (A - 1) / M columns, so that patch column j of the
// tiles at virtual columns t..t + kLanes - 1 is one vector load at planes[i][ci][j % M][t + j / M]
// (lanes that fall on a row's last column are no tile and are skipped). Strips of several rows fill
// the lanes on narrow maps (32 x 32: 8 tiles a row). The products then broadcast one tile's lane of
// V per (element, channel) against U's vector.
struct FewGeometry {
  int64_t tiles_h, tiles_w;
  int64_t seg;                       // plane columns per tile row
  int64_t strip;                     // tile rows per work item
  int64_t lanes;                     // virtual tile columns a full strip computes, whole vectors
  int64_t wq;                        // floats per (row, channel, phase) plane
  int64_t plane_floats, v_floats;    // one thread's planes and V
};

template <int A, int M, int C>
static inline void split_tile_row(const Conv2dParams& p, const FewGeometry& g, const float* x, int64_t n, int64_t ty,
                                  float* planes) {  // planes: column 0 of this tile row's segment
  for (int i = 0; i < A; ++i) {
    const int64_t iy = ty * M - p.pad_top + i;
    float* row = planes + i * C * M * g.wq;
    if (iy < 0 || iy >= p.h) {
      for (int k = 0; k < C * M; ++k) std::memset(row + k * g.wq, 0, sizeof(float) * g.seg);
      continue;
    }
    const float* src = x + (n * p.h + iy) * p.w * C;
    // Columns q0 <= q < q1 read M whole pixels inside the row: a de-interleave of M * C floats per
    // column, vectorised (C and M are constants); the few columns at the edges check each pixel.
    const int64_t q0 = min_i64(g.seg, (p.pad_left + M - 1) / M);
    const int64_t q1 = max_i64(q0, min_i64(g.seg, (p.w + p.pad_left) / M));
    const float* inner = src + (q0 * M - p.pad_left) * C;
    for (int k = 0; k < M * C; ++k) {
      float* plane = row + (k % C * M + k / C) * g.wq;
      for (int64_t q = q0; q < q1; ++q) plane[q] = inner[(q - q0) * (M * C) + k];
    }
    for (int64_t q = 0; q < g.seg; ++q) {
      if (q == q0) q = q1;
      if (q >= g.seg) break;
      for (int r = 0; r < M; ++r) {
        const int64_t ix = q * M + r - p.pad_left;
        const bool inside = ix >= 0 && ix < p.w;
        for (int ci = 0; ci < C; ++ci) row[(ci * M + r) * g.wq + q] = inside ? src[ix * C + ci] : 0.0f;
      }
    }
  }
}

// V[e][ci][lane] of the kLanes tiles from tile t0 of the split tile row.
template <int A, int M, int C>
static inline void transform_input_group(const FewGeometry& g, const float* planes, int64_t t0, float* v) {
  for (int ci = 0; ci < C; ++ci) {
    wvec t[A][A];
    for (int j = 0; j < A; ++j) {
      wvec col[A], r[A];
      for (int i = 0; i < A; ++i) col[i] = ld(planes + ((i * C + ci) * M + j % M) * g.wq + t0 + j / M);
      bt<A>(col, r);
      for (int i = 0; i < A; ++i) t[i][j] = r[i];
    }
    for (int i = 0; i < A; ++i) {
      wvec r[A];
      bt<A>(t[i], r);
      for (int j = 0; j < A; ++j) st(v + ((i * A + j) * C + ci) * kLanes, r[j]);
    }
  }
}

// One row i of a tile's products for one vector of output channels, reduced over C_in, then the
// output transform's column step: s[c] = sum_j m[i][j] AT[c][j].
template <int A, int M, int C>
__attribute__((always_inline)) static inline void few_row(const float* v_lane, const float* u_vec, int64_t e_stride,
                                                          int i, wvec (&s)[M]) {
  wvec m[A];
#pragma GCC unroll 8
  for (int j = 0; j < A; ++j) {
    const int e = i * A + j;
    const float* ue = u_vec + e * e_stride;
    const float* ve = v_lane + e * C * kLanes;
    wvec acc = splat(ve[0]) * vec::load_once(ue);
#pragma GCC unroll 4
    for (int ci = 1; ci < C; ++ci) acc += splat(ve[ci * kLanes]) * vec::load_once(ue + ci * kCols);
    m[j] = acc;
  }
  at<A, M>(m, s);
}

// One tile's M x M outputs for one vector of output channels: v_lane points at the tile's lane of
// V, u_vec at the vector's lanes of U[0][its column block][0].
template <int A, int M, int C>
__attribute__((always_inline)) static inline void few_tile_products(const float* v_lane, const float* u_vec, int64_t e_stride, wvec (&o)[M][M]) {
  if constexpr (A == 6 && M == 4) {
    // The row step in pairs of rows, as at<6, 4> pairs its inputs, so that at most 26 vectors are
    // live (the 24 of all six rows' column steps spilled to the stack).
    wvec s1[M], s2[M], sum12[M], dif12[M];
    few_row<A, M, C>(v_lane, u_vec, e_stride, 1, s1);
    few_row<A, M, C>(v_lane, u_vec, e_stride, 2, s2);
    for (int c = 0; c < M; ++c) sum12[c] = s1[c] + s2[c], dif12[c] = s1[c] - s2[c];
    few_row<A, M, C>(v_lane, u_vec, e_stride, 3, s1);
    few_row<A, M, C>(v_lane, u_vec, e_stride, 4, s2);
    for (int c = 0; c < M; ++c) {
      const wvec sum34 = s1[c] + s2[c], dif34 = s1[c] - s2[c];
      o[0][c] = sum12[c] + sum34;
      o[1][c] = dif12[c] + splat(2.0f) * dif34;
      o[2][c] = sum12[c] + splat(4.0f) * sum34;
      o[3][c] = dif12[c] + splat(8.0f) * dif34;
    }
    few_row<A, M, C>(v_lane, u_vec, e_stride, 0, s1);
    for (int c = 0; c < M; ++c) o[0][c] += s1[c];
    few_row<A, M, C>(v_lane, u_vec, e_stride, 5, s1);
    for (int c = 0; c < M; ++c) o[3][c] += s1[c];
  } else {
    wvec s[A][M];
#pragma GCC unroll 8
    for (int i = 0; i < A; ++i) few_row<A, M, C>(v_lane, u_vec, e_stride, i, s[i]);
#pragma GCC unroll 4
    for (int c = 0; c < M; ++c) {
      wvec col[A], r[M];
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i) col[i] = s[i][c];
      at<A, M>(col, r);
#pragma GCC unroll 4
      for (int i = 0; i < M; ++i) o[i][c] = r[i];
    }
  }
}

// o + bias, activated, into rows x cols pixels of y from dst (len lanes of each).
template <Activation kAct, int M>
__attribute__((always_inline)) static inline void store_few_tile(const wvec (&o)[M][M], wvec bias, float* dst, int64_t pixel_stride, int64_t row_stride,
                                  int64_t rows, int64_t cols, int64_t len) {
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t c = 0; c < cols; ++c) {
      const wvec val = vec::activate(kAct, o[i][c] + bias);
      float* at_pixel = dst + i * row_stride + c * pixel_stride;
      if (len == kLanes) {
        st(at_pixel, val);
      } else {
        vec::store_partial(at_pixel, val, len);
      }
    }
  }
}

template <int M>
__attribute__((always_inline)) static inline void store_few_tile(Activation act, const wvec (&o)[M][M], wvec bias, float* dst, int64_t pixel_stride,
                                  int64_t row_stride, int64_t rows, int64_t cols, int64_t len) {
  switch (act) {
    case Activation::kNone: return store_few_tile<Activation::kNone>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
    case Activation::kRelu: return store_few_tile<Activation::kRelu>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
    case Activation::kRelu6: return store_few_tile<Activation::kRelu6>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
    case Activation::kSigmoid: return store_few_tile<Activation::kSigmoid>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
    case Activation::kTanh: return store_few_tile<Activation::kTanh>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
    case Activation::kSilu: return store_few_tile<Activation::kSilu>(o, bias, dst, pixel_stride, row_stride, rows, cols, len);
  }
}

// What run_winograd_few and run_winograd_folded_rgb set up alike: U (prepacked, or transformed here
// at the start of the calling thread's workspace, the threads' own floats after it), the bias padded
// to whole vectors, and the activation split between the tiles' stores and the finished rows:
// exponential ones run over each finished run of output rows (vec::activate_row), since in a
// tile's store their chains ran one vector at a time with their constants spilled.
template <int A, int R>
struct FewChannelCall {
  const Conv2dParams& p;
  const float* w;
  const float* u;
  int64_t e_stride, u_floats, per_thread;
  float* workspace;
  bool owned = false;
  float* bias_pad;
  Activation act, tile_act;
  bool row_act;

  FewChannelCall(const Conv2dParams& p_, const float* w_, const float* u_prepacked, const float* b, int64_t co_vecs,
                 int64_t per_thread_, int nthreads)
      : p(p_), w(w_), e_stride(prepacked_e_stride(p_)), u_floats(u_prepacked ? 0 : A * A * e_stride),
        per_thread(per_thread_) {
    bias_pad = alloc_floats(co_vecs * kLanes);
    for (int64_t j = 0; j < co_vecs * kLanes; ++j) bias_pad[j] = b && j < p.c_out ? b[j] : 0.0f;
    try {
      workspace = acquire_workspace(tls_workspace, u_floats + nthreads * per_thread, &owned);
    } catch (...) {
      std::free(bias_pad);
      throw;
    }
    u = u_prepacked ? u_prepacked : workspace;
    act = p.activation;
    row_act = has_exponential(act);
    tile_act = row_act ? Activation::kNone : act;
  }
  ~FewChannelCall() {
    std::free(bias_pad);
    if (owned) std::free(workspace);
  }
  FewChannelCall(const FewChannelCall&) = delete;
  FewChannelCall& operator=(const FewChannelCall&) = delete;

  // Inside the parallel region: U when not prepacked (ends with its omp for's barrier), then this
  // thread's own floats.
  float* begin_thread() {
    if (u_floats) {
      Geometry wg{};
      wg.co_blocks = (p.c_out + kCols - 1) / kCols;
      wg.co_pad = wg.co_blocks * kCols;
      transform_weights<A, R>(p, wg, w, workspace, e_stride);
    }
    return workspace + u_floats + omp_get_thread_num() * per_thread;
  }
};

constexpr int64_t kFewStripLanes = 128;

template <int A, int R, int C>
void run_winograd_few(const Conv2dParams& p, const float* x, const float* w, const float* u_prepacked,
                      const float* b, float* y, int threads) {
  constexpr int M = A - R + 1;
  FewGeometry g{};
  g.tiles_h = (p.out_h + M - 1) / M;
  g.tiles_w = (p.out_w + M - 1) / M;
  g.seg = g.tiles_w + (A - 1) / M;
  const int64_t rows = p.n * g.tiles_h, co_vecs = (p.c_out + kLanes - 1) / kLanes;
  const int nthreads = threads_for(rows * g.tiles_w * A * A * C * p.c_out, threads);
  // The strip whose tiles fill the most of the lanes computed, up to kFewStripLanes lanes and while
  // every thread keeps about four strips.
  const int64_t max_strip = max_i64(1, min_i64(kFewStripLanes / g.seg, rows / (4 * int64_t{nthreads})));
  double best = 0.0;
  for (int64_t k = 1; k <= max_strip; ++k) {
    const int64_t lanes = ((k - 1) * g.seg + g.tiles_w + kLanes - 1) / kLanes * kLanes;
    const double filled = static_cast<double>(k * g.tiles_w) / static_cast<double>(lanes);
    if (filled > best) best = filled, g.strip = k, g.lanes = lanes;
  }
  g.wq = g.lanes + (A - 1) / M;
  g.plane_floats = A * C * M * g.wq;
  g.v_floats = A * A * C * kLanes;
  const int64_t strips = (rows + g.strip - 1) / g.strip;
  FewChannelCall<A, R> call(p, w, u_prepacked, b, co_vecs, g.plane_floats + g.v_floats, nthreads);
  const float* u = call.u;
  const int64_t e_stride = call.e_stride;

  parallel_run(nthreads, [&] {
    float* planes = call.begin_thread();
    float* v = planes + g.plane_floats;
    // Lanes past a short strip's last row read stale columns: finite once zeroed here.
    std::memset(planes, 0, sizeof(float) * g.plane_floats);
#pragma omp for schedule(dynamic, 1)
    for (int64_t strip = 0; strip < strips; ++strip) {
      const int64_t row0 = strip * g.strip, strip_rows = min_i64(g.strip, rows - row0);
      for (int64_t s = 0; s < strip_rows; ++s) {
        const int64_t row = row0 + s;
        split_tile_row<A, M, C>(p, g, x, row / g.tiles_h, row % g.tiles_h, planes + s * g.seg);
      }
      const int64_t lanes = ((strip_rows - 1) * g.seg + g.tiles_w + kLanes - 1) / kLanes * kLanes;
      for (int64_t t0 = 0; t0 < lanes; t0 += kLanes) {
        transform_input_group<A, M, C>(g, planes, t0, v);
        for (int64_t l = 0; l < kLanes; ++l) {
          const int64_t s = (t0 + l) / g.seg, tx = (t0 + l) % g.seg;
          if (tx >= g.tiles_w || s >= strip_rows) continue;
          const int64_t row = row0 + s, n = row / g.tiles_h, oy0 = row % g.tiles_h * M, ox0 = tx * M;
          const int64_t out_rows = min_i64(M, p.out_h - oy0), out_cols = min_i64(M, p.out_w - ox0);
          float* y_tile = y + ((n * p.out_h + oy0) * p.out_w + ox0) * p.c_out;
          for (int64_t k = 0; k < co_vecs; ++k) {
            const int64_t co0 = k * kLanes, len = min_i64(kLanes, p.c_out - co0);
            wvec o[M][M];
            few_tile_products<A, M, C>(v + l, u + (co0 / kCols * C) * kCols + co0 % kCols, e_stride, o);
            store_few_tile<M>(call.tile_act, o, ld(call.bias_pad + co0), y_tile + co0, p.c_out, p.out_w * p.c_out, out_rows,
                              out_cols, len);
          }
        }
      }
      if (call.row_act) {
        for (int64_t row = row0; row < row0 + strip_rows; ++row) {
          const int64_t n = row / g.tiles_h, oy0 = row % g.tiles_h * M, out_rows = min_i64(M, p.out_h - oy0);
          vec::activate_row(call.act, y + (n * p.out_h + oy0) * p.out_w * p.c_out, out_rows * p.out_w * p.c_out);
        }
      }
    }
  });
}

template <int A, int R>
static void run_winograd_few_channels(const Conv2dParams& p, const float* x, const float* w, const float* u_prepacked,
                                      const float* b, float* y, int threads) {
  switch (p.c_in) {
    case 1: return run_winograd_few<A, R, 1>(p, x, w, u_prepacked, b, y, threads);
    case 2: return run_winograd_few<A, R, 2>(p, x, w, u_prepacked, b, y, threads);
    case 3: return run_winograd_few<A, R, 3>(p, x, w, u_prepacked, b, y, threads);
    default: return run_winograd_few<A, R, 4>(p, x, w, u_prepacked, b, y, threads);
  }
}

// 7x7 and 8x8 filters at stride 2 over RGB (the ResNet stems) fold to 4x4 over 12 channels:
// F(3x3, 4x4), 36 products per 9 outputs (48 multiply-adds per output and channel against 147
// direct for 7x7), with the same input transform as F(4x4, 3x3). 12 channels fill 3/4 of a 16-lane
// vector: V is computed tile by tile, channels in the lanes, straight from the folded input; the
// products then broadcast one tile's V values against U's vectors, two tiles at a time.
#if defined(__AVX512F__)  // 12 channels in one vector
constexpr int kWinogradFoldedRgbCin = 12;  // 3 channels x 2 x 2 phases

// sum += k * v for a transform coefficient k known at compile time (0, +-1 or a power of 2).
__attribute__((always_inline)) static inline void add_scaled(float k, wvec v, wvec& sum) {
  if (k == 1.0f) {
    sum += v;
  } else if (k == -1.0f) {
    sum -= v;
  } else if (k != 0.0f) {
    sum += splat(k) * v;
  }
}

// Folded pixel (fy, fx) of image xn, the stem's input at stride 2: lane (ry * 2 + rx) * 3 + c holds
// x[2 fy + ry - pad_top][2 fx + rx - pad_left][c], zero outside the image (fold_input's layout, made
// while loading: the fold's own pass took 10-15 % of the call).
static inline wvec load_folded_rgb(const Conv2dParams& p, const float* xn, int64_t fy, int64_t fx) {
  const int64_t iy = 2 * fy - p.pad_top, ix = 2 * fx - p.pad_left;
  if (iy >= 0 && iy + 1 < p.h && ix >= 0 && ix + 1 < p.w) {  // two pixels of two rows: 6 floats each
    const float* row0 = xn + (iy * p.w + ix) * 3;
    return _mm512_mask_expandloadu_ps(_mm512_maskz_loadu_ps(0x3F, row0), 0xFC0, row0 + p.w * 3);
  }
  alignas(64) float pixel[kLanes] = {};
  for (int64_t ry = 0; ry < 2; ++ry) {
    for (int64_t rx = 0; rx < 2; ++rx) {
      if (iy + ry < 0 || iy + ry >= p.h || ix + rx < 0 || ix + rx >= p.w) continue;
      for (int64_t c = 0; c < 3; ++c) pixel[(ry * 2 + rx) * 3 + c] = xn[((iy + ry) * p.w + ix + rx) * 3 + c];
    }
  }
  return ld(pixel);
}

// V[e][ci] of tile (ty, tx) of image n of the folded problem f (12 channels in the lanes; masked
// stores), read from the stem's input x (problem p).
static inline void transform_input_tile_rgb(const Conv2dParams& p, const Conv2dParams& f, const float* x, int64_t n,
                                            int64_t ty, int64_t tx, float* v_tile) {
  constexpr int A = 6, M = 3, C = kWinogradFoldedRgbCin;
  const float* xn = x + n * p.h * p.w * 3;
  wvec t[A][A];
  for (int j = 0; j < A; ++j) {
    wvec col[A], r[A];
    const int64_t fx = tx * M + j;
    for (int i = 0; i < A; ++i) {
      const int64_t fy = ty * M + i;  // past the folded input (border tiles): zero, as fold_input leaves it
      col[i] = fy < f.h && fx < f.w ? load_folded_rgb(p, xn, fy, fx) : splat(0.0f);
    }
    bt<A>(col, r);
    for (int i = 0; i < A; ++i) t[i][j] = r[i];
  }
  for (int i = 0; i < A; ++i) {
    wvec r[A];
    bt<A>(t[i], r);
    for (int j = 0; j < A; ++j) vec::store_partial(v_tile + (i * A + j) * C, r[j], C);
  }
}

// Two tiles' (V at va, vb) 3x3 outputs in one vector of output channels. Each multiply-add loads a
// vector of U and broadcasts a value of V, so one tile at a time ran at the load ports' pace (~3
// cycles per multiply-add measured); the two tiles share each load of U. The column and row steps
// of AT are applied as each element's sum completes (s += AT[c][j] m, o += AT[r][i] s), so that the
// 18 output vectors, 6 column sums and 4 partial products fit the 32 registers; the two halves of
// the 12 channels are summed apart: four independent chains of multiply-adds.
static inline void rgb_pair_products(const float* va, const float* vb, const float* u_vec, int64_t e_stride,
                                     wvec (&oa)[3][3], wvec (&ob)[3][3]) {
  constexpr int A = 6, C = kWinogradFoldedRgbCin, H = C / 2;
  constexpr float kAt[3][A] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 1}};  // at<6, 3>
#pragma GCC unroll 3
  for (int r = 0; r < 3; ++r)
#pragma GCC unroll 3
    for (int c = 0; c < 3; ++c) oa[r][c] = ob[r][c] = splat(0.0f);
#pragma GCC unroll 6
  for (int i = 0; i < A; ++i) {
    wvec sa[3] = {}, sb[3] = {};
#pragma GCC unroll 6
    for (int j = 0; j < A; ++j) {
      const int e = i * A + j;
      const float* ue = u_vec + e * e_stride;
      const float* ea = va + e * C;
      const float* eb = vb + e * C;
      wvec a0 = {}, a1 = {}, b0 = {}, b1 = {};
#pragma GCC unroll 6
      for (int ci = 0; ci < H; ++ci) {
        const wvec u0 = vec::load_once(ue + ci * kCols), u1 = vec::load_once(ue + (ci + H) * kCols);
        a0 += splat(ea[ci]) * u0;
        b0 += splat(eb[ci]) * u0;
        a1 += splat(ea[ci + H]) * u1;
        b1 += splat(eb[ci + H]) * u1;
      }
      const wvec ma = a0 + a1, mb = b0 + b1;
#pragma GCC unroll 3
      for (int c = 0; c < 3; ++c) add_scaled(kAt[c][j], ma, sa[c]), add_scaled(kAt[c][j], mb, sb[c]);
    }
#pragma GCC unroll 3
    for (int r = 0; r < 3; ++r)
#pragma GCC unroll 3
      for (int c = 0; c < 3; ++c) add_scaled(kAt[r][i], sa[c], oa[r][c]), add_scaled(kAt[r][i], sb[c], ob[r][c]);
  }
}

// The stem p (3 channels, stride 2) as its folded problem f (stride 1, 4x4, 12 channels; wf its folded
// weights, or null with u_prepacked). Work items: runs of up to kLanes tiles of a tile row. One vector
// of U (36 x 12 vectors, 27 KB) serves all of a run's tiles before the next vector's.
void run_winograd_folded_rgb(const Conv2dParams& p, const Conv2dParams& f, const float* x, const float* wf,
                             const float* u_prepacked, const float* b, float* y, int threads) {
  constexpr int A = 6, R = 4, M = 3, C = kWinogradFoldedRgbCin;
  constexpr int64_t kRun = kLanes, kTileFloats = A * A * C + kLanes;  // + a vector: masked stores' reach
  const int64_t tiles_h = (p.out_h + M - 1) / M, tiles_w = (p.out_w + M - 1) / M;
  const int64_t runs_w = (tiles_w + kRun - 1) / kRun, items = p.n * tiles_h * runs_w;
  const int64_t co_vecs = (p.c_out + kLanes - 1) / kLanes;
  const int nthreads = threads_for(items * kRun * A * A * C * p.c_out, threads);
  FewChannelCall<A, R> call(f, wf, u_prepacked, b, co_vecs, kRun * kTileFloats, nthreads);
  const float* u = call.u;
  const int64_t e_stride = call.e_stride;

  parallel_run(nthreads, [&] {
    float* v = call.begin_thread();
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t row = item / runs_w, n = row / tiles_h, ty = row % tiles_h, tx0 = item % runs_w * kRun;
      const int64_t count = min_i64(kRun, tiles_w - tx0), oy0 = ty * M, out_rows = min_i64(M, p.out_h - oy0);
      for (int64_t t = 0; t < count; ++t) transform_input_tile_rgb(p, f, x, n, ty, tx0 + t, v + t * kTileFloats);
      auto store = [&](int64_t t, int64_t co0, const wvec (&o)[M][M]) {
        const int64_t ox0 = (tx0 + t) * M;
        store_few_tile<M>(call.tile_act, o, ld(call.bias_pad + co0), y + ((n * p.out_h + oy0) * p.out_w + ox0) * p.c_out + co0,
                          p.c_out, p.out_w * p.c_out, out_rows, min_i64(M, p.out_w - ox0), min_i64(kLanes, p.c_out - co0));
      };
      for (int64_t k = 0; k < co_vecs; ++k) {
        const int64_t co0 = k * kLanes;
        const float* u_vec = u + (co0 / kCols * C) * kCols + co0 % kCols;
        for (int64_t t = 0; t < count; t += 2) {
          const int64_t tb = min_i64(t + 1, count - 1);  // an odd last tile pairs with itself
          wvec oa[M][M], ob[M][M];
          rgb_pair_products(v + t * kTileFloats, v + tb * kTileFloats, u_vec, e_stride, oa, ob);
          store(t, co0, oa);
          if (tb != t) store(tb, co0, ob);
        }
      }
      if (call.row_act) {
        for (int64_t i = 0; i < out_rows; ++i) {
          vec::activate_row(call.act, y + ((n * p.out_h + oy0 + i) * p.out_w + tx0 * M) * p.c_out,
                            min_i64(count * M, p.out_w - tx0 * M) * p.c_out);
        }
      }
    }
  });
}
#endif  // __AVX512F__

// The transform a stride-1 problem runs (winograd_tile, kernels.h), as a tag: fn(Variant<A, R>{}).
// (5x5 layers with sigmoid or tanh never come here: _params.py and dispatch.cpp send them to the
// direct kernel; see squeezes_rounding, activation.h.)
template <int A_, int R_>
struct Variant {
  static constexpr int A = A_, R = R_;
};

template <class Fn>
auto with_variant(const Conv2dParams& p, Fn&& fn) {
  if (p.kh == 5) return winograd_tile(p.kh, p.c_in) == 4 ? fn(Variant<8, 5>{}) : fn(Variant<6, 5>{});
  if (p.kh == 4) return fn(Variant<6, 4>{});
  return fn(Variant<6, 3>{});
}

void run_unit_stride(const Conv2dParams& p, const float* x, const float* w, const float* u_prepacked, const float* b,
                     float* y, int threads) {
  with_variant(p, [&](auto v) {
    using V = decltype(v);
    if constexpr (V::A - V::R + 1 == 2 || V::R == 3) {  // F(4x4, 5x5) needs kWinograd5x5LargeTileMinCin channels
      if (p.c_in <= kWinogradFewMaxCin) return run_winograd_few_channels<V::A, V::R>(p, x, w, u_prepacked, b, y, threads);
    }
    run_winograd<V::A, V::R>(p, x, w, u_prepacked, b, y, threads);
  });
}

// A strided filter folded into a stride-1 one (params.h, folded_kh): the input's s_h x s_w phases
// become channels,
//     xf[n][fy][fx][(ry * s_w + rx) * C_in + c] = x[n][s_h * fy + ry - pad_top][s_w * fx + rx - pad_left][c]
// (zero outside the image), the filter
//     wf[qy][qx][(ry * s_w + rx) * C_in + c][co] = w[s_h * qy + ry][s_w * qx + rx][c][co] (zero past KH x KW),
// and y is the unpadded stride-1 convolution of xf with wf. AlexNet C1 (11x11 at stride 4 over 3
// channels) becomes a 3x3 convolution over 48: F(4x4, 3x3) then does 36 / 16 * 48 = 108
// multiply-adds per output value instead of the direct 11 * 11 * 3 = 363, for one more pass over
// the input.
Conv2dParams folded_params(const Conv2dParams& p) {
  Conv2dParams f = p;
  f.kh = p.folded_kh();
  f.kw = p.folded_kw();
  f.c_in = p.folded_c_in();
  f.h = p.out_h + f.kh - 1;
  f.w = p.out_w + f.kw - 1;
  f.stride_h = f.stride_w = 1;
  f.pad_top = f.pad_left = 0;
  return f;
}

void fold_input(const Conv2dParams& p, const Conv2dParams& f, const float* x, float* xf, int threads) {
  const int64_t run = p.stride_w * p.c_in;  // one input row's share of a folded pixel
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t fy = 0; fy < f.h; ++fy) {
      float* dst_row = xf + (n * f.h + fy) * f.w * f.c_in;
      for (int64_t ry = 0; ry < p.stride_h; ++ry) {
        const int64_t iy = fy * p.stride_h + ry - p.pad_top;
        const bool row_inside = iy >= 0 && iy < p.h;
        const float* src_row = x + (n * p.h + (row_inside ? iy : 0)) * p.w * p.c_in;
        for (int64_t fx = 0; fx < f.w; ++fx) {
          float* dst = dst_row + fx * f.c_in + ry * run;
          const int64_t ix0 = fx * p.stride_w - p.pad_left;
          if (row_inside && ix0 >= 0 && ix0 + p.stride_w <= p.w) {
            const float* src = src_row + ix0 * p.c_in;
            if (run <= kLanes) {  // stems: 6 floats (3 channels, stride 2), 12 (stride 4): one masked copy
              vec::store_partial(dst, vec::load_partial(src, run), run);
            } else {
              for (int64_t j = 0; j < run; ++j) dst[j] = src[j];
            }
            continue;
          }
          for (int64_t rx = 0; rx < p.stride_w; ++rx) {
            const int64_t ix = ix0 + rx;
            const bool inside = row_inside && ix >= 0 && ix < p.w;
            for (int64_t c = 0; c < p.c_in; ++c) dst[rx * p.c_in + c] = inside ? src_row[ix * p.c_in + c] : 0.0f;
          }
        }
      }
    }
  }
}

// The input's phases (params.h, dilation_phases) as q's images, zeros outside the input.
void gather_phases(const Conv2dParams& p, const Conv2dParams& q, const float* x, float* xq, int threads) {
  const int64_t phases = p.dilation_h * p.dilation_w;
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t image = 0; image < q.n; ++image) {
    for (int64_t m = 0; m < q.h; ++m) {
      const int64_t n = image / phases, ry = image % phases / p.dilation_w, rx = image % p.dilation_w;
      const int64_t iy = ry + p.dilation_h * m - p.pad_top;
      const bool row_inside = iy >= 0 && iy < p.h;
      const float* src_row = x + (n * p.h + (row_inside ? iy : 0)) * p.w * p.c_in;
      float* dst = xq + (image * q.h + m) * q.w * q.c_in;
      for (int64_t col = 0; col < q.w; ++col, dst += q.c_in) {
        const int64_t ix = rx + p.dilation_w * col - p.pad_left;
        if (row_inside && ix >= 0 && ix < p.w) {
          std::memcpy(dst, src_row + ix * p.c_in, sizeof(float) * p.c_in);
        } else {
          std::memset(dst, 0, sizeof(float) * p.c_in);
        }
      }
    }
  }
}

// q's outputs back to their places in y (the inverse of gather_phases, for outputs).
void scatter_phases(const Conv2dParams& p, const Conv2dParams& q, const float* yq, float* y, int threads) {
#pragma omp parallel for collapse(2) schedule(static) num_threads(threads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      const int64_t ry = oy % p.dilation_h, j = oy / p.dilation_h;
      float* dst = y + (n * p.out_h + oy) * p.out_w * p.c_out;
      for (int64_t ox = 0; ox < p.out_w; ++ox, dst += p.c_out) {
        const int64_t image = (n * p.dilation_h + ry) * p.dilation_w + ox % p.dilation_w;
        std::memcpy(dst, yq + ((image * q.out_h + j) * q.out_w + ox / p.dilation_w) * p.c_out,
                    sizeof(float) * p.c_out);
      }
    }
  }
}

void fold_weights(const Conv2dParams& p, const Conv2dParams& f, const float* w, float* wf) {
  for (int64_t qy = 0; qy < f.kh; ++qy) {
    for (int64_t qx = 0; qx < f.kw; ++qx) {
      for (int64_t ry = 0; ry < p.stride_h; ++ry) {
        for (int64_t rx = 0; rx < p.stride_w; ++rx) {
          const int64_t ky = qy * p.stride_h + ry, kx = qx * p.stride_w + rx;
          float* dst = wf + ((qy * f.kw + qx) * f.c_in + (ry * p.stride_w + rx) * p.c_in) * p.c_out;
          if (ky >= p.kh || kx >= p.kw) {
            std::memset(dst, 0, sizeof(float) * p.c_in * p.c_out);
          } else {
            std::memcpy(dst, w + (ky * p.kw + kx) * p.c_in * p.c_out, sizeof(float) * p.c_in * p.c_out);
          }
        }
      }
    }
  }
}

// The groups' channels of `rows` rows (pixels) of groups * count floats into one block of rows x
// count floats per group, in one pass over the rows (group by group, each pass read every cache
// line of src again, for a few floats of it: a third of 8 x 28 x 28 x 168's call in 7 groups); and
// back: split_groups, join_groups.
void split_groups(const float* src, int64_t groups, int64_t count, int64_t rows, float* dst, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      std::memcpy(dst + (g * rows + r) * count, src + (r * groups + g) * count, sizeof(float) * count);
    }
  }
}

void join_groups(const float* src, int64_t groups, int64_t count, int64_t rows, float* dst, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t g = 0; g < groups; ++g) {
      std::memcpy(dst + (r * groups + g) * count, src + (g * rows + r) * count, sizeof(float) * count);
    }
  }
}

}  // namespace

void winograd_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* u_prepacked, const float* b,
                     float* y, int threads) {
  if (p.groups > 1) {
    // Group by group (dispatch.cpp, prefer_grouped_winograd), each over copies of its input
    // channels, weights and outputs; prepacked U holds the groups one after another.
    const Conv2dParams q = one_group(p);
    const int64_t pixels = q.n * q.h * q.w, out_pixels = q.n * q.out_h * q.out_w, taps = q.kh * q.kw * q.c_in;
    const int64_t x_floats = pixels * q.c_in, y_floats = out_pixels * q.c_out;  // per group
    const int64_t w_floats = u_prepacked ? 0 : taps * q.c_out, u_floats = winograd_packed_floats(q);
    const WorkspaceLease groups(tls_groups, p.groups * (x_floats + y_floats + w_floats));
    float* xg = groups.get();
    float* yg = xg + p.groups * x_floats;
    float* wg = u_prepacked ? nullptr : yg + p.groups * y_floats;
    split_groups(x, p.groups, q.c_in, pixels, xg, threads_for(p.groups * x_floats, threads));
    if (wg) split_groups(w, p.groups, q.c_out, taps, wg, 1);
    for (int64_t g = 0; g < p.groups; ++g) {
      winograd_conv2d(q, xg + g * x_floats, wg ? wg + g * w_floats : nullptr,
                      u_prepacked ? u_prepacked + g * u_floats : nullptr, b ? b + g * q.c_out : nullptr,
                      yg + g * y_floats, threads);
    }
    join_groups(yg, p.groups, q.c_out, out_pixels, y, threads_for(p.groups * y_floats, threads));
    return;
  }
  if (p.dilated_winograd_eligible()) {
    const Conv2dParams q = dilation_phases(p);
    const int64_t in_floats = q.n * q.h * q.w * q.c_in, out_floats = q.n * q.out_h * q.out_w * q.c_out;
    const WorkspaceLease phases(tls_phases, in_floats + out_floats);
    float* xq = phases.get();
    float* yq = xq + in_floats;
    gather_phases(p, q, x, xq, threads_for(in_floats, threads));  // copies: one unit of work per float
    run_unit_stride(q, xq, w, u_prepacked, b, yq, threads);
    scatter_phases(p, q, yq, y, threads_for(out_floats, threads));
    return;
  }
  if (p.stride_h == 1 && p.stride_w == 1) return run_unit_stride(p, x, w, u_prepacked, b, y, threads);
  const Conv2dParams f = folded_params(p);
#if defined(__AVX512F__)
  if (p.c_in == 3 && p.stride_h == 2 && p.stride_w == 2 && f.kh == 4) {
    float* wf = u_prepacked ? nullptr : alloc_floats(f.kh * f.kw * f.c_in * f.c_out);
    if (wf) fold_weights(p, f, w, wf);
    run_winograd_folded_rgb(p, f, x, wf, u_prepacked, b, y, threads);
    std::free(wf);
    return;
  }
#endif
  const int64_t folded_floats = f.n * f.h * f.w * f.c_in;
  const WorkspaceLease folded_input(tls_folded_input, folded_floats);
  const WorkspaceLease folded_weights(tls_folded_weights, u_prepacked ? 0 : f.kh * f.kw * f.c_in * f.c_out);
  float* xf = folded_input.get();
  float* wf = u_prepacked ? nullptr : folded_weights.get();
  fold_input(p, f, x, xf, threads_for(folded_floats, threads));  // a copy: one unit of work per float
  if (wf) fold_weights(p, f, w, wf);
  run_unit_stride(f, xf, wf, u_prepacked, b, y, threads);
}

// U of the (folded) filter, in the layout run_winograd reads with u_prepacked.
int64_t winograd_packed_floats(const Conv2dParams& p) {
  if (p.groups > 1) return p.groups * winograd_packed_floats(one_group(p));
  const Conv2dParams f = folded_params(p);
  return with_variant(f, [&](auto v) {
    using V = decltype(v);
    return V::A * V::A * prepacked_e_stride(f);
  });
}

void pack_winograd_weights(const Conv2dParams& p, const float* w, float* u, int threads) {
  if (p.groups > 1) {
    const Conv2dParams q = one_group(p);
    const int64_t w_floats = q.kh * q.kw * q.c_in * q.c_out, u_floats = winograd_packed_floats(q);
    float* wg = alloc_floats(p.groups * w_floats);
    split_groups(w, p.groups, q.c_out, q.kh * q.kw * q.c_in, wg, 1);
    for (int64_t g = 0; g < p.groups; ++g) pack_winograd_weights(q, wg + g * w_floats, u + g * u_floats, threads);
    std::free(wg);
    return;
  }
  const Conv2dParams f = folded_params(p);
  float* wf = nullptr;
  if (p.stride_h * p.stride_w > 1) {
    wf = alloc_floats(f.kh * f.kw * f.c_in * f.c_out);
    fold_weights(p, f, w, wf);
  }
  with_variant(f, [&](auto v) {
    constexpr int A = decltype(v)::A, R = decltype(v)::R;
    Geometry g{};
    g.co_blocks = (f.c_out + kCols - 1) / kCols;
    g.co_pad = g.co_blocks * kCols;
    const int64_t e_stride = prepacked_e_stride(f);
    std::memset(u, 0, sizeof(float) * A * A * e_stride);  // the padding between the e, never read
    parallel_run(threads_for(A * A * e_stride * 50, threads),
                 [&] { transform_weights<A, R>(f, g, wf ? wf : w, u, e_stride); });
  });
  std::free(wf);
}

}  // namespace fastconv::cpu::FC_ISA
