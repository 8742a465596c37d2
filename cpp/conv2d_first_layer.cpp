// First-layer convolution: groups == 1, few input channels (C_in <= 8; see dispatch.cpp,
// prefer_first_layer, for the routing rule), any kernel size, stride, dilation and padding. NHWC
// activations, HWIO weights. Compiled once per instruction set (FC_ISA); see kernels.h.
//
// Why a separate kernel: the tiled engine (conv2d.cpp) vectorises across output channels and
// reduces over one kernel row of KW * C_in floats per pixel, so with C_in = 1 (LeNet C1: 5 floats a
// row, 6 channels in 8 lanes) per-pixel pointer setup and idle lanes dominate. Here the vector lanes
// hold consecutive OUTPUT PIXELS of one output row and each output channel is an accumulator.
//
// Two tile variants over a row panel:
//  - Row panel. Per work item (one image, a band of up to kBandRows output rows) the input rows the
//    band reads are copied once into a per-thread panel, zero padded on every side. For pixel-vector
//    tiles the rows are de-interleaved by channel and by column phase modulo the stride:
//        panel[row][ci][phase][j] = x_padded[row, j * stride_w + phase, ci].
//    The input column of output pixel ox at tap kx is ox * s + kx * d = (ox + q) * s + r with
//    q = kx * d / s, r = kx * d % s, so kPixVecs * kVecLen consecutive output pixels read
//    consecutive panel floats at panel[row][ci][r][ox + q]: plain vector loads for every stride,
//    dilation, padding and C_in. Channel-vector tiles read single floats, so their panel keeps the
//    padded rows in NHWC order.
//  - Pixel-vector tile (C_out < kTileVecs * kVecLen, e.g. LeNet C1's 6 channels, unless
//    first_layer_channel_vectors, kernels.h, finds the split panel not worth its pass): kPixVecs vectors
//    of pixels x C output channels (C_out split into equal blocks of at most kChanBlock). Per tap
//    (ky, ci, kx): kPixVecs input loads, C weight broadcasts, kPixVecs * C FMAs. Weights are packed per call into
//    [block][ky][ci][kx][C], the tap order of the loop.
//    Bias is the initial accumulator, relu / relu6 are applied on the vectors (vec::activate via
//    tiled_conv.h), then the [C][pixels] tile is written transposed to NHWC: by an 8 x 8 register
//    transpose when C = C_out <= 8 on AVX2 (store_pixels_transposed), else through a stack buffer.
//    Sigmoid / tanh / SiLU (both variants) run over each finished output row (activate_row).
//  - Channel-vector tile (C_out >= kTileVecs * kVecLen: the EfficientNet stem): kTwoVectorRows
//    pixels x kTileVecs channel vectors (12 x 2 on AVX-512), or with 16 vector registers 4
//    pixels x 3 vectors where that pads C_out no more (96 channels), or kNarrowCTileRows pixels x 1 vector
//    when C_out fits in one; a row's last tile has only the pixels left (ctile_for); the pixels' inputs are
//    broadcast from panel floats s * C_in apart (no per-pixel pointers), weights packed
//    [block][ky][ci][kx][V * kVecLen], stores straight to NHWC (store_rows, tiled_conv.h); all
//    blocks of a pixel tile run before the next tile, so each pixel's channels are written at once.
//    Tiles whose windows lie inside the image read it in place in bands whose input rows all do;
//    only the edge tiles' columns of those bands are copied into the panel.
// Threads take work items in guided chunks (batch 1 still spreads over its row bands).
#include <omp.h>

#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"

namespace fastconv::cpu::FC_ISA {

namespace {

// Register budget: kPixVecs * kChanBlock accumulators + kPixVecs inputs + 1 broadcast fit the 16
// vector registers of SSE2 / AVX2 (2 x 6 + 3 = 15) and the 32 of AVX-512 (2 x 12 + 3 = 27).
constexpr int kPixVecs = 2;
#if defined(__AVX512F__)
constexpr int kChanBlock = 12;
#else
constexpr int kChanBlock = 6;
#endif
constexpr int kTilePixels = kPixVecs * kVecLen;
// Output rows per work item: enough to amortise the panel (input rows shared by neighbouring
// output rows are copied once per band), few enough that batch 1 has work for every thread; fewer
// where the images have fewer than kItemsPerThread bands per thread (band_rows_for).
constexpr int64_t kBandRows = 8;
constexpr int64_t kItemsPerThread = 2;
constexpr int64_t kItemsPerThreadDisjoint = 4;

// The calling thread's buffers (kernel_util.h, Workspace): packed weights and the threads' panels.
static thread_local Workspace tls_packed_weights;
static thread_local Workspace tls_panels;

// Two panel layouts: pixel-vector tiles load kVecLen consecutive pixels, so their rows are split by
// channel and column phase (top of the file); channel-vector tiles broadcast one float per pixel, so
// they read padded input rows as they are, NHWC, pixel r + 1 of a tile s * C_in floats after pixel r
// (splitting the EfficientNet stem's 224 x 3 rows by channel and phase took 13 % of its time).
struct Geometry {
  bool split;         // rows split by channel and phase, else padded NHWC rows
  int64_t wq;         // split: panel floats per (row, channel, phase)
  int64_t cols;       // NHWC: padded input columns kept per row
  int64_t row_floats; // panel floats per padded input row: c_in * stride_w * wq, or cols * c_in
  int64_t band_rows;  // panel rows of a full band
};

// Bands of kBandRows output rows, or as few rows as give each thread kItemsPerThread work items
// (20 x 20 outputs at batch 1 made 3 bands of 8, 8 and 4 rows for 2 threads: the tiled engine ran
// 11x11 layers there in 0.78 of the time). Where output rows share no input rows (patch
// embeddings: ViT's 16x16 stride 16) a band saves no copying, and kItemsPerThreadDisjoint items
// each balance the threads better (ViT-B's 14 output rows made 5 bands, 3 for one thread and 2 for
// the other).
static inline int64_t band_rows_for(const Conv2dParams& p, int threads) {
  const int64_t per_thread = p.windows_apart_h() ? kItemsPerThreadDisjoint : kItemsPerThread;
  const int64_t want_bands = (per_thread * threads + p.n - 1) / p.n;
  return max_i64(1, min_i64(kBandRows, p.out_h / want_bands));
}

// Tiles may run past out_w (never stored): tile_pixels-wide tiles read inside the panel.
static inline Geometry geometry(const Conv2dParams& p, bool split, int64_t tile_pixels, int64_t band_rows) {
  Geometry g{};
  g.split = split;
  const int64_t tiles_w = (p.out_w + tile_pixels - 1) / tile_pixels;
  if (split) {
    g.wq = tiles_w * tile_pixels + (p.kw - 1) * p.dilation_w / p.stride_w;
    g.row_floats = p.c_in * p.stride_w * g.wq;
  } else {
    g.cols = (tiles_w * tile_pixels - 1) * p.stride_w + (p.kw - 1) * p.dilation_w + 1;
    g.row_floats = g.cols * p.c_in;
  }
  g.band_rows = (band_rows - 1) * p.stride_h + (p.kh - 1) * p.dilation_h + 1;
  return g;
}

// Columns [c0, c1) of the padded NHWC input row iy (zeros outside the image) at dst + c0 * C_in.
static inline void pad_cols(const Conv2dParams& p, const float* x_image, int64_t iy, int64_t c0, int64_t c1,
                            float* dst) {
  if (c1 <= c0) return;
  if (iy < 0 || iy >= p.h) return (void)std::memset(dst + c0 * p.c_in, 0, sizeof(float) * (c1 - c0) * p.c_in);
  // Padded column j is image column j - pad_left; [i0, i1) of them lie in the image.
  const int64_t i0 = min_i64(max_i64(c0, p.pad_left), c1), i1 = max_i64(i0, min_i64(c1, p.pad_left + p.w));
  std::memset(dst + c0 * p.c_in, 0, sizeof(float) * (i0 - c0) * p.c_in);
  std::memcpy(dst + i0 * p.c_in, x_image + (iy * p.w + i0 - p.pad_left) * p.c_in, sizeof(float) * (i1 - i0) * p.c_in);
  std::memset(dst + i1 * p.c_in, 0, sizeof(float) * (c1 - i1) * p.c_in);
}

// The padded NHWC input row iy, columns [0, cols): cols * C_in floats.
static inline void pad_row(const Conv2dParams& p, const float* x_image, int64_t iy, int64_t cols, float* dst) {
  pad_cols(p, x_image, iy, 0, cols, dst);
}

// split[(ci * S + phase) * wq + j] = padded[(j * S + phase) * C + ci], j < wq: a padded row split by
// channel and column phase in one pass, each input float read once (split by channel, then every
// S-th column taken from each channel's plane, read each plane S times: 64 % of a 4x4 stride-4
// layer's time). C and S are template constants: GCC leaves the loop scalar, but with constant
// offsets it unrolls it, and a run-time C_in and stride ran these layers 1.10-1.31x slower.
template <int C, int S>
static void split_phases(const float* __restrict padded, float* __restrict split, int64_t wq) {
  for (int64_t j = 0; j < wq; ++j) {
#pragma GCC unroll 32
    for (int phase = 0; phase < S; ++phase) {
#pragma GCC unroll 8
      for (int c = 0; c < C; ++c) split[(c * S + phase) * wq + j] = padded[(j * S + phase) * C + c];
    }
  }
}

using SplitFn = void (*)(const float*, float*, int64_t);

template <int S, int C = 8>  // C_in <= kFirstLayerShortMaxCin = 8 (dispatch.cpp)
static SplitFn split_for(int64_t c_in) {
  if constexpr (C > 1) {
    if (c_in < C) return split_for<S, C - 1>(c_in);
  }
  return &split_phases<C, S>;
}

// Strides past 4 (rare in first layers) split with run-time C_in and S.
static void split_phases_any(const Conv2dParams& p, const float* padded, float* split, int64_t wq) {
  const int64_t c_in = p.c_in, s = p.stride_w;
  for (int64_t j = 0; j < wq; ++j) {
    for (int64_t phase = 0; phase < s; ++phase) {
      for (int64_t c = 0; c < c_in; ++c) split[(c * s + phase) * wq + j] = padded[(j * s + phase) * c_in + c];
    }
  }
}

static SplitFn split_for_stride(int64_t c_in, int64_t s) {
  switch (s) {
    case 1: return split_for<1>(c_in);
    case 2: return split_for<2>(c_in);
    case 3: return split_for<3>(c_in);
    case 4: return split_for<4>(c_in);
    default: return nullptr;
  }
}

// Fills the panel rows of padded input rows [prow0, prow0 + rows) of image n. padded: scratch for
// one padded row of wq * stride_w columns (split rows only).
static inline void build_panel(const Conv2dParams& p, const Geometry& g, SplitFn split, const float* x_image,
                               int64_t prow0, int64_t rows, float* panel, float* padded) {
  for (int64_t r = 0; r < rows; ++r) {
    float* dst_row = panel + r * g.row_floats;
    const int64_t iy = prow0 + r - p.pad_top;
    // Zeros split as zeros, and one channel at stride 1 is its own split.
    if (!g.split || iy < 0 || iy >= p.h || p.c_in * p.stride_w == 1) {
      pad_row(p, x_image, iy, g.split ? g.row_floats / p.c_in : g.cols, dst_row);
      continue;
    }
    pad_row(p, x_image, iy, g.wq * p.stride_w, padded);
    if (split) {
      split(padded, dst_row, g.wq);
    } else {
      split_phases_any(p, padded, dst_row, g.wq);
    }
  }
}

#if defined(__AVX2__) && !defined(__AVX512F__)
// The store of an AVX2 pixel-vector tile whose C <= 8 channels are all of C_out: per vector of 8
// pixels, an 8 x 8 transpose in registers (channels past C zero) turns the C channel vectors into
// one vector per pixel, stored whole at the pixel's C outputs; each store's spill past C is
// overwritten by the next pixels', and the pixels whose spill would leave the tile are stored by
// scalars, so nothing outside the tile is touched. It replaces kTilePixels * C scalar stores, which
// bound LeNet C1 (with no stores at all it ran in 0.77 of the time).
template <int C>
__attribute__((always_inline)) static inline void store_pixels_transposed(const vfloat (&acc)[C][kPixVecs],
                                                                          float* out, int64_t ldo, int64_t pixels) {
  static_assert(kVecLen == 8 && C <= 8, "an 8 x 8 transpose of one AVX2 vector per channel");
  for (int v = 0; v * 8 < pixels; ++v) {
    __m256 r[8];
    for (int c = 0; c < 8; ++c) r[c] = c < C ? __m256(acc[c][v]) : _mm256_setzero_ps();
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
      t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
      t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
      u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
      u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
      u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
      u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    float* dst = out + v * 8 * ldo;
    for (int i = 0; i < 8 && v * 8 + i < pixels; ++i) {
      const __m256 pixel = _mm256_permute2f128_ps(u[i % 4], u[i % 4 + 4], i < 4 ? 0x20 : 0x31);
      if ((v * 8 + i) * C + 8 <= pixels * C) {
        _mm256_storeu_ps(dst + i * ldo, pixel);
      } else {
        alignas(32) float last[8];
        _mm256_store_ps(last, pixel);
        for (int c = 0; c < C; ++c) dst[i * ldo + c] = last[c];
      }
    }
  }
}
#endif

// One tile: kTilePixels output pixels starting at panel column ox0 of one output row x C output
// channels. row0 points at the output row's first panel row (oy * s_h); tap t = (ky, ci, kx) reads
// at row0 + tap_off[t] (see first_layer_conv2d).
template <int C>
static inline void run_tile(const Conv2dParams& p, const float* row0, const int64_t* tap_off, int64_t taps,
                            int64_t ox0, const float* wb, const float* bias, float* out, int64_t pixels,
                            Activation act) {
  vfloat acc[C][kPixVecs];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
    const vfloat init = splat(bias ? bias[c] : 0.0f);
#pragma GCC unroll 4
    for (int v = 0; v < kPixVecs; ++v) acc[c][v] = init;
  }
  const float* base = row0 + ox0;
  for (int64_t t = 0; t < taps; ++t, wb += C) {
    const float* src = base + tap_off[t];
    vfloat xv[kPixVecs];
#pragma GCC unroll 4
    for (int v = 0; v < kPixVecs; ++v) xv[v] = load_vec(src + v * kVecLen);
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) {
      const vfloat wv = splat(wb[c]);
#pragma GCC unroll 4
      for (int v = 0; v < kPixVecs; ++v) acc[c][v] += xv[v] * wv;
    }
  }
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 4
    for (int v = 0; v < kPixVecs; ++v) acc[c][v] = activate(act, acc[c][v]);
  }
#if defined(__AVX2__) && !defined(__AVX512F__)
  if (p.c_out == C) {
    // Full tiles with the pixel count a constant, so the loops unroll into registers.
    return pixels == kTilePixels ? store_pixels_transposed<C>(acc, out, p.c_out, kTilePixels)
                                 : store_pixels_transposed<C>(acc, out, p.c_out, pixels);
  }
#endif
  alignas(64) float buf[C][kTilePixels];
#pragma GCC unroll 16
  for (int c = 0; c < C; ++c) {
#pragma GCC unroll 4
    for (int v = 0; v < kPixVecs; ++v) store_vec(&buf[c][v * kVecLen], acc[c][v]);
  }
  for (int64_t i = 0; i < pixels; ++i, out += p.c_out) {
#pragma GCC unroll 16
    for (int c = 0; c < C; ++c) out[c] = buf[c][i];
  }
}

using TileFn = void (*)(const Conv2dParams&, const float*, const int64_t*, int64_t, int64_t, const float*,
                        const float*, float*, int64_t, Activation);

template <int C = kChanBlock>
static inline TileFn tile_for(int64_t channels) {
  if constexpr (C > 1) {
    if (channels < C) return tile_for<C - 1>(channels);
  }
  return &run_tile<C>;
}

// The windows of a channel-vector tile's R pixels, pixel_step floats apart: pixel r of tap offset
// `off` at first[r] + off (r < kHalf) or first[r - kHalf] + off + second_half. The kHalf bases stay
// in registers, so each address is one register pair; computed as base + off + r * pixel_step, GCC
// chained them, 16 dependent adds a tap (a stand-alone loop so ran at half the FMA rate; the pair
// tiles took 0.95-0.98 of their time without the chain).
template <int R>
struct PixelRows {
  static constexpr int kHalf = R < 8 ? R : 8;
  const float* first[kHalf];
  int64_t second_half;
  PixelRows(const float* base, int64_t pixel_step) : second_half(kHalf * pixel_step) {
#pragma GCC unroll 8
    for (int r = 0; r < kHalf; ++r) first[r] = base + r * pixel_step;
  }
  __attribute__((always_inline)) const float* at(int r, int64_t off, int64_t off_second) const {
    return r < kHalf ? first[r] + off : first[r - kHalf] + off_second;
  }
};

// Channel-vector tile: R consecutive output pixels x V vectors of output channels. Per tap: V weight
// vectors, one broadcast per pixel, R * V FMAs; stores go straight to NHWC. Tap t of pixel r reads
// base[r * stride_w * C_in + tap_off[t]] (base: the tile's first window column in its first row, of
// the panel or of the image). wb: [tap][V * kVecLen], zero padded; bias likewise or nullptr.
template <int R, int V>
static inline void run_ctile(const Conv2dParams& p, const float* base, const int64_t* tap_off, int64_t taps,
                             const float* wb, const float* bias, float* out, int64_t cols, Activation act) {
  const int64_t pixel_step = p.stride_w * p.c_in;  // panel floats between neighbouring output pixels
  vfloat acc[R][V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const vfloat init = bias ? load_vec(bias + v * kVecLen) : splat(0.0f);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r][v] = init;
  }
  const PixelRows<R> pixel(base, pixel_step);
  for (int64_t t = 0; t < taps; ++t, wb += V * kVecLen) {
    const int64_t off = tap_off[t], off_second = off + pixel.second_half;
    vfloat wv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) wv[v] = load_vec(wb + v * kVecLen);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vfloat s = splat(*pixel.at(r, off, off_second));
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
    }
  }
  store_rows<R, V>(acc, out, p.c_out, cols, act);
}
// Activations with an exponential (sigmoid, tanh, SiLU: has_exponential, tiled_conv.h) are applied
// after a whole output row is stored, over its contiguous out_w * C_out floats (vec::activate_row),
// instead of per accumulator in the tile's store: there the ~30 operations of the exponential per
// vector compete with the 12 live accumulators for the 16 registers (spills) and run as 12 unrolled
// copies. Cheap activations stay in the tile's store.

using CTileFn = void (*)(const Conv2dParams&, const float*, const int64_t*, int64_t, const float*, const float*,
                         float*, int64_t, Activation);

// The tile of `pixels` <= R pixels x V vectors: a row's last tile runs only the pixels it has (all R
// of them cost 1.2x on 26-pixel rows, four tiles of 8 computing 32).
template <int R, int V>
static inline CTileFn ctile_for(int64_t pixels) {
  if constexpr (R > 1) {
    if (pixels < R) return ctile_for<R - 1, V>(pixels);
  }
  return &run_ctile<R, V>;
}

// Channel-vector tile shapes: one vector x kNarrowCTileRows pixels when C_out fits in a vector; else
// kTwoVectorRows pixels x 2 vectors (below) or kWideRows pixels x 3 vectors where
// that pads C_out no more (48 and 96 channels on AVX-512, 24 and 96 on AVX2): per tap 1 broadcast
// per 3 FMAs instead of 1 per 2, and C_out = 3 vectors without a padded fourth. kWideRows fills
// the register file: 8 x 3 accumulators + 3 weights + 1 broadcast of AVX-512's 32, 4 x 3 + 4 of
// AVX2's 16.
constexpr int kWideVecs = 3;
#if defined(__AVX512F__)
constexpr int kWideRows = 8;
#else
constexpr int kWideRows = 4;
#endif

// One vector of channels: kNarrowCTileRows pixels. With two 512-bit FMA pipes of 4 cycles' latency,
// the tiled engine's 8 accumulators are the least that keeps both busy, with no slack for the
// broadcasts' address arithmetic; 16 (of AVX-512's 32 registers) also load each weight vector half
// as often. The tiled engine keeps 8: each of its pixels holds an input pointer in a general register.
#if defined(__AVX512F__)
constexpr int kNarrowCTileRows = 16;
#else
constexpr int kNarrowCTileRows = kNarrowRows;
#endif

// Two vectors of channels: 12 pixels on AVX-512 (24 accumulators + 2 weights + 1 broadcast of
// the 32 registers; per tap 2 weight loads for 24 FMAs instead of 16): 7x7 and 11x11 over 1-3
// channels to 32 and 64 ran in 0.90-0.95 of the time of 8 pixels, 3x3 and 5x5 0.96-0.99 (14 pixels
// measured the same as 12). With 16 registers the tiled engine's kTileRows.
#if defined(__AVX512F__)
constexpr int kTwoVectorRows = 12;
#else
constexpr int kTwoVectorRows = kTileRows;
#endif

struct CTile {
  CTileFn full, last;  // R pixels; a row's last tile (1 .. R pixels)
  int64_t rows, vecs;  // R, V
};

template <int R, int V>
static CTile ctile_shape(int64_t out_w) {
  return {&run_ctile<R, V>, ctile_for<R, V>((out_w - 1) % R + 1), R, V};
}

static CTile ctile_choice(const Conv2dParams& p) {
  if (p.c_out <= kVecLen) return ctile_shape<kNarrowCTileRows, 1>(p.out_w);
  static_assert(kWideVecs == 3 && kTileVecs == 2, "the blocks of first_layer_block_channels (kernels.h)");
  if (first_layer_block_channels(p.c_out, kVecLen) == kWideVecs * kVecLen) return ctile_shape<kWideRows, kWideVecs>(p.out_w);
  return ctile_shape<kTwoVectorRows, kTileVecs>(p.out_w);
}

#if defined(__AVX512F__)
// Pair tiles (AVX-512, C_out <= 8, dilation_w 1): a channel-vector tile that fills its 16 lanes
// with 8 channels x 2 reduction steps. A pixel's window row is kw * C_in contiguous floats; each
// step broadcasts two neighbours of it as one 64-bit element (lane 2j: the first float, lane
// 2j + 1: the second) against weights packed the same way, so one FMA does two taps of 8 channels,
// where the 8-lane channel vectors of AVX2 do one. Lanes 2j and 2j + 1 are added at the store. A
// window row of odd length ends in a single tap (weights in the even lanes only): a pair there
// would multiply the float after the row, which may lie past the input or hold an Inf.
constexpr int kPairRows = 16;  // pixels: 16 accumulator chains for two 512-bit FMA pipes

using PairTileFn = void (*)(const Conv2dParams&, const float*, const int64_t*, int64_t, int64_t, const float*,
                            const float*, float*, Activation);

template <int R>
static void run_pair_tile(const Conv2dParams& p, const float* base, const int64_t* tap_off, int64_t pairs,
                          int64_t singles, const float* wb, const float* bias, float* out, Activation act) {
  const int64_t pixel_step = p.stride_w * p.c_in;
  vfloat acc[R];
  const vfloat init = bias ? load_vec(bias) : splat(0.0f);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r] = init;
  const PixelRows<R> pixel(base, pixel_step);
  for (int64_t t = 0; t < pairs; ++t, wb += kVecLen) {
    const int64_t off = tap_off[t], off_second = off + pixel.second_half;
    const vfloat wv = load_vec(wb);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      double two;
      std::memcpy(&two, pixel.at(r, off, off_second), sizeof(two));
      acc[r] += reinterpret_cast<vfloat>(_mm512_set1_pd(two)) * wv;
    }
  }
  for (int64_t t = pairs; t < pairs + singles; ++t, wb += kVecLen) {
    const int64_t off = tap_off[t], off_second = off + pixel.second_half;
    const vfloat wv = load_vec(wb);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r] += splat(*pixel.at(r, off, off_second)) * wv;
  }
  // Two pixels per store: their 2 * C_out outputs are contiguous, channel j of the first the sum of
  // its lanes 2j and 2j + 1, of the second likewise from lane 16.
  const int64_t c = p.c_out;
  alignas(64) int32_t first_of[kVecLen], second_of[kVecLen];
  for (int64_t j = 0; j < kVecLen; ++j) {
    const int64_t lane = j < c ? 2 * j : j < 2 * c ? kVecLen + 2 * (j - c) : 0;
    first_of[j] = static_cast<int32_t>(lane);
    second_of[j] = static_cast<int32_t>(lane + 1);
  }
  const __m512i first_lanes = _mm512_load_si512(first_of), second_lanes = _mm512_load_si512(second_of);
  const __mmask16 two_pixels = static_cast<__mmask16>((1u << (2 * c)) - 1), one_pixel = static_cast<__mmask16>((1u << c) - 1);
#pragma GCC unroll 8
  for (int r = 0; r < R; r += 2) {
    const __m512 a = acc[r], b = r + 1 < R ? __m512(acc[r + 1]) : _mm512_setzero_ps();
    const __m512 sums = _mm512_add_ps(_mm512_permutex2var_ps(a, first_lanes, b), _mm512_permutex2var_ps(a, second_lanes, b));
    _mm512_mask_storeu_ps(out + r * c, r + 1 < R ? two_pixels : one_pixel, activate(act, reinterpret_cast<vfloat>(sums)));
  }
}

template <int R>
static inline PairTileFn pair_tile_for(int64_t pixels) {
  if constexpr (R > 1) {
    if (pixels < R) return pair_tile_for<R - 1>(pixels);
  }
  return &run_pair_tile<R>;
}

#endif

}  // namespace

void first_layer_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                        int threads) {
  const int64_t taps = p.kh * p.kw * p.c_in;
  const bool channel_vectors = first_layer_channel_vectors(p, kVecLen);
  const bool pair_tiles = first_layer_pair_tiles(p, kVecLen);
  // Pair tiles' reduction steps: each kernel row's pairs of neighbouring floats, then (odd rows) its
  // last float, ky-major; other tiles step tap by tap.
  const int64_t row_len = p.kw * p.c_in;
  const int64_t pairs = pair_tiles ? p.kh * (row_len / 2) : 0, singles = pair_tiles ? p.kh * (row_len % 2) : 0;
  const int64_t steps = pair_tiles ? pairs + singles : taps;
  const CTile ctile = ctile_choice(p);
  const int64_t block_cols = ctile.vecs * kVecLen, ctile_rows = ctile.rows;
  const int wanted_threads = threads_for(p.n * p.out_h * p.out_w * taps * p.c_out, threads);
  const int64_t band_rows = band_rows_for(p, wanted_threads);
  const Geometry g = geometry(p, !channel_vectors, channel_vectors ? ctile_rows : kTilePixels, band_rows);
  // Pixel-vector tiles: equal channel blocks of at most kChanBlock (block k has base + (k < extra)
  // channels). Channel-vector tiles: blocks of block_cols channels, the last one zero padded.
  const int64_t blocks = channel_vectors ? (p.c_out + block_cols - 1) / block_cols : (p.c_out + kChanBlock - 1) / kChanBlock;
  const int64_t base = p.c_out / blocks, extra = p.c_out % blocks;
  const int64_t bands = (p.out_h + band_rows - 1) / band_rows;
  const int64_t items = p.n * bands;
  const int nthreads = static_cast<int>(min_i64(wanted_threads, items));

  // Packed weights, per block in the loop's tap order [ky][ci][kx]: pixel-vector block k (first
  // channel co0, C channels) at w_packed + co0 * taps as [tap][C]; channel-vector block k at
  // w_packed + k * taps * block_cols as [tap][block_cols].
  // Pair tiles: one block of [step][16], lanes 2j and 2j + 1 channel j's weights for the step's two
  // floats (a single step's odd lanes zero), the bias in the even lanes.
  // Small weights: one copy per thread; large ones one copy packed by the team (kOwnPackMaxFloats).
  const int64_t packed_floats = own_copy_stride(channel_vectors ? blocks * steps * block_cols : taps * p.c_out);
  const bool team_packs = nthreads > 1 && taps * p.c_out > kOwnPackMaxFloats;
  const int copies = team_packs ? 1 : nthreads;
  const WorkspaceLease packed_weights(tls_packed_weights, copies * packed_floats);
  float* b_packed = channel_vectors && b ? alloc_floats(blocks * block_cols) : nullptr;
  for (int64_t j = 0; b_packed && j < blocks * block_cols; ++j) {
    const int64_t c = pair_tiles ? j / 2 : j;
    b_packed[j] = c < p.c_out && (!pair_tiles || j % 2 == 0) ? b[c] : 0.0f;
  }
  const auto pack_pairs = [&](float* dst) {
    const auto put = [&](int64_t ky, int64_t m, bool single) {
      const float* w_row = w + ky * row_len * p.c_out;  // HWIO: kernel row ky's floats [kx][ci] in order
      for (int64_t j = 0; j < kVecLen; ++j) {
        const int64_t c = j / 2, second = j % 2;
        dst[j] = c < p.c_out && !(single && second) ? w_row[(m + second) * p.c_out + c] : 0.0f;
      }
      dst += kVecLen;
    };
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      for (int64_t m = 0; m + 1 < row_len; m += 2) put(ky, m, false);
    }
    for (int64_t ky = 0; singles && ky < p.kh; ++ky) put(ky, row_len - 1, true);
  };
  const auto pack_block = [&](float* w_packed, int64_t k) {
    if (pair_tiles) return pack_pairs(w_packed);
    const int64_t co0 = channel_vectors ? k * block_cols : k * base + min_i64(k, extra);
    const int64_t cb = channel_vectors ? min_i64(block_cols, p.c_out - co0) : base + (k < extra ? 1 : 0);
    const int64_t width = channel_vectors ? block_cols : cb;
    float* dst = w_packed + (channel_vectors ? k * taps * block_cols : co0 * taps);
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      for (int64_t ci = 0; ci < p.c_in; ++ci) {
        for (int64_t kx = 0; kx < p.kw; ++kx, dst += width) {
          const float* src = w + ((ky * p.kw + kx) * p.c_in + ci) * p.c_out + co0;
          for (int64_t c = 0; c < width; ++c) dst[c] = c < cb ? src[c] : 0.0f;
        }
      }
    }
  };
  // A panel, then (split rows only) one padded row.
  const int64_t scratch_floats = g.band_rows * g.row_floats + (g.split ? g.row_floats : 0);
  const SplitFn split = g.split ? split_for_stride(p.c_in, p.stride_w) : nullptr;
  const WorkspaceLease panel_lease(tls_panels, nthreads * scratch_floats);
  float* panels = panel_lease.get();
  // Tap t = (ky, ci, kx) of an output row reads panel row oy * s_h + ky * d_h, and there channel
  // ci's planes, column phase r and offset q (split rows, see the top of the file) or column
  // kx * d_w, channel ci (NHWC rows): one offset from the row's first panel row, so the tiles run
  // one flat loop over the taps (nested ky / ci / kx loops of 3 spilled the 12 accumulators at
  // every inner loop's end).
  std::vector<int64_t> tap_off(static_cast<size_t>(taps));
  for (int64_t ky = 0, t = 0; ky < p.kh; ++ky) {
    for (int64_t ci = 0; ci < p.c_in; ++ci) {
      for (int64_t kx = 0; kx < p.kw; ++kx, ++t) {
        const int64_t col = kx * p.dilation_w;
        tap_off[t] = ky * p.dilation_h * g.row_floats +
                     (g.split ? ci * p.stride_w * g.wq + col % p.stride_w * g.wq + col / p.stride_w : col * p.c_in + ci);
      }
    }
  }
  // Pair tiles: step offsets into the kernel rows, m the first float's place in the row ([kx][ci]).
  const auto step_offsets = [&](int64_t row_floats, std::vector<int64_t>& off) {
    int64_t t = 0;
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      for (int64_t m = 0; m + 1 < row_len; m += 2) off[t++] = ky * p.dilation_h * row_floats + m;
    }
    for (int64_t ky = 0; singles && ky < p.kh; ++ky) off[t++] = ky * p.dilation_h * row_floats + row_len - 1;
  };
  if (pair_tiles) step_offsets(g.row_floats, tap_off);
  // Channel-vector tiles whose windows lie inside the image read it in place (tap_in_place: offsets
  // in image rows) in bands whose input rows all lie inside it; the panel of such a band holds only
  // the edge tiles' columns, [0, edge_left) and [edge_right, cols). The copy of every row was 7 % of
  // the 3x3 stride-2 stems' time (perf, two threads).
  std::vector<int64_t> tap_in_place;
  std::vector<char> tile_inside;
  int64_t edge_left = 0, edge_right = g.cols;
  if (channel_vectors) {
    tap_in_place.resize(static_cast<size_t>(taps));
    for (int64_t ky = 0, t = 0; ky < p.kh; ++ky) {
      for (int64_t ci = 0; ci < p.c_in; ++ci) {
        for (int64_t kx = 0; kx < p.kw; ++kx, ++t) tap_in_place[t] = (ky * p.dilation_h * p.w + kx * p.dilation_w) * p.c_in + ci;
      }
    }
    if (pair_tiles) step_offsets(p.w * p.c_in, tap_in_place);
    for (int64_t ox0 = 0; ox0 < p.out_w; ox0 += ctile_rows) {
      const int64_t first = ox0 * p.stride_w, last = (min_i64(ox0 + ctile_rows, p.out_w) - 1) * p.stride_w + (p.kw - 1) * p.dilation_w;
      const bool inside = first >= p.pad_left && last - p.pad_left < p.w;
      tile_inside.push_back(inside);
      if (!inside && first < p.pad_left) edge_left = max_i64(edge_left, last + 1);
      if (!inside && first >= p.pad_left) edge_right = min_i64(edge_right, first);
    }
  }
  const TileFn tile_big = tile_for(base + (extra ? 1 : 0)), tile_small = tile_for(base);
#if defined(__AVX512F__)
  static_assert(kPairRows == kNarrowCTileRows, "pair tiles take the one-vector tiles' columns (ctile_rows)");
  const PairTileFn pair_full = &run_pair_tile<kPairRows>, pair_last = pair_tile_for<kPairRows>((p.out_w - 1) % kPairRows + 1);
#endif
  const bool row_act = has_exponential(p.activation);
  const Activation tile_act = row_act ? Activation::kNone : p.activation;

  // Large weights are packed by the team into one copy (ViT-B's 768 x 768: 7 % of its time on one
  // thread; the loop's barrier keeps every tile after them). Small ones each thread packs into its
  // own copy, no barrier (a barrier cost 3 % of a 12 us layer; one copy packed by the calling thread
  // before the region: 1x28x28x4 5x5 s2 -> 64 took 1.1-1.35x the time).
  parallel_run(nthreads, [&] {
    float* w_packed = packed_weights.get() + (team_packs ? 0 : omp_get_thread_num() * packed_floats);
    if (team_packs) {
#pragma omp for schedule(static)
      for (int64_t k = 0; k < blocks; ++k) pack_block(w_packed, k);
    } else {
      for (int64_t k = 0; k < blocks; ++k) pack_block(w_packed, k);
    }
    float* panel = panels + omp_get_thread_num() * scratch_floats;
    float* padded = panel + g.band_rows * g.row_floats;
    // Guided: large chunks first, single items at the end. One item at a time cost a fetch of the
    // shared counter per item: LeNet C1's 256 items of ~0.5 us ran 1.1x slower.
#pragma omp for schedule(guided)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / bands, oy0 = item % bands * band_rows;
      const int64_t oy1 = min_i64(oy0 + band_rows, p.out_h);
      const int64_t prow0 = oy0 * p.stride_h;
      const float* x_image = x + n * p.h * p.w * p.c_in;
      const int64_t prows = (oy1 - 1 - oy0) * p.stride_h + (p.kh - 1) * p.dilation_h + 1;
      const bool rows_inside = channel_vectors && prow0 >= p.pad_top && prow0 - p.pad_top + prows <= p.h;
      if (rows_inside) {
        for (int64_t r = 0; r < prows; ++r) {
          pad_cols(p, x_image, prow0 + r - p.pad_top, 0, edge_left, panel + r * g.row_floats);
          pad_cols(p, x_image, prow0 + r - p.pad_top, edge_right, g.cols, panel + r * g.row_floats);
        }
      } else {
        build_panel(p, g, split, x_image, prow0, prows, panel, padded);
      }
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        const float* row0 = panel + (oy * p.stride_h - prow0) * g.row_floats;
        float* y_row = y + (n * p.out_h + oy) * p.out_w * p.c_out;
        if (channel_vectors) {
          // Every block of a pixel tile before the next tile: each pixel's C_out floats are then
          // written together (block by block over the row, a 64-channel output took its lines a
          // quarter at a time, and outputs past the cache ran 2.5x slower per image).
          for (int64_t ox0 = 0, i = 0; ox0 < p.out_w; ox0 += ctile_rows, ++i) {
            const bool direct = rows_inside && tile_inside[i];
            const float* src = direct ? x_image + ((oy * p.stride_h - p.pad_top) * p.w + ox0 * p.stride_w - p.pad_left) * p.c_in
                                      : row0 + ox0 * p.stride_w * p.c_in;
            const int64_t* offsets = direct ? tap_in_place.data() : tap_off.data();
#if defined(__AVX512F__)
            if (pair_tiles) {
              (ox0 + ctile_rows <= p.out_w ? pair_full : pair_last)(p, src, offsets, pairs, singles, w_packed, b_packed,
                                                                   y_row + ox0 * p.c_out, tile_act);
              continue;
            }
#endif
            for (int64_t k = 0; k < blocks; ++k) {
              const float* wb = w_packed + k * taps * block_cols;
              const float* bias = b_packed ? b_packed + k * block_cols : nullptr;
              const int64_t cols = min_i64(block_cols, p.c_out - k * block_cols);
              (ox0 + ctile_rows <= p.out_w ? ctile.full : ctile.last)(p, src, offsets, taps, wb, bias,
                                                                 y_row + ox0 * p.c_out + k * block_cols, cols, tile_act);
            }
          }
        } else {
          for (int64_t k = 0, co0 = 0; k < blocks; ++k) {
            const int64_t cb = base + (k < extra ? 1 : 0);
            const TileFn tile = k < extra ? tile_big : tile_small;
            const float* wb = w_packed + co0 * taps;
            const float* bias = b ? b + co0 : nullptr;
            for (int64_t ox0 = 0; ox0 < p.out_w; ox0 += kTilePixels) {
              tile(p, row0, tap_off.data(), taps, ox0, wb, bias, y_row + ox0 * p.c_out + co0,
                   min_i64(kTilePixels, p.out_w - ox0), tile_act);
            }
            co0 += cb;
          }
        }
        if (row_act) vec::activate_row(p.activation, y_row, p.out_w * p.c_out);
      }
    }
  });
  std::free(b_packed);
}

}  // namespace fastconv::cpu::FC_ISA
