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
//  - Pixel-vector tile (C_out < kTileVecs * kVecLen, e.g. LeNet C1's 6 channels): kPixVecs vectors
//    of pixels x C output channels (C_out split into equal blocks of at most kChanBlock). Per tap
//    (ky, ci, kx): kPixVecs input loads, C weight broadcasts, kPixVecs * C FMAs. Weights are packed per call into
//    [block][ky][ci][kx][C], the tap order of the loop.
//    Bias is the initial accumulator, relu / relu6 are applied on the vectors (vec::activate via
//    tiled_conv.h), then the [C][pixels] tile is written transposed to NHWC: by an 8 x 8 register
//    transpose when C = C_out <= 8 on AVX2 (store_pixels_transposed), else through a stack buffer.
//    Sigmoid / tanh / SiLU (both variants) run over each finished output row (activate_row).
//  - Channel-vector tile (C_out >= kTileVecs * kVecLen: the EfficientNet stem): the tiled engine's
//    wide tile shape, kTileRows pixels x kTileVecs channel vectors, or with 16 vector registers 4
//    pixels x 3 vectors where that pads C_out no more (96 channels); the pixels' inputs are
//    broadcast from panel floats s * C_in apart (no per-pixel pointers), weights packed
//    [block][ky][ci][kx][V * kVecLen], stores straight to NHWC (store_rows, tiled_conv.h); all
//    blocks of a pixel tile run before the next tile, so each pixel's channels are written at once.
// Threads take work items dynamically (batch 1 still spreads over its row bands).
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
// output rows are copied once per band), few enough that batch 1 has work for every thread.
constexpr int64_t kBandRows = 8;

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

// Tiles may run past out_w (never stored): tile_pixels-wide tiles read inside the panel.
static inline Geometry geometry(const Conv2dParams& p, bool split, int64_t tile_pixels) {
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
  g.band_rows = (kBandRows - 1) * p.stride_h + (p.kh - 1) * p.dilation_h + 1;
  return g;
}

// planes[ci * w + ix] = src[ix * C + ci]: an input row split by channel. C and the stride below
// are template constants so that the compiler vectorises the de-interleave (a runtime stride of
// s * C_in = 6 floats, the stems' case, stayed a scalar loop: 11 % of the EfficientNet stem).
template <int C>
static inline void split_channels(const float* __restrict src, float* __restrict planes, int64_t w) {
  for (int64_t ix = 0; ix < w; ++ix) {
#pragma GCC unroll 4
    for (int c = 0; c < C; ++c) planes[c * w + ix] = src[ix * C + c];
  }
}

// out[j] = in[j * S], j < n.
template <int S>
static inline void take_every(const float* __restrict in, float* __restrict out, int64_t n) {
  for (int64_t j = 0; j < n; ++j) out[j] = in[j * S];
}

static inline void take_every(int64_t s, const float* in, float* out, int64_t n) {
  switch (s) {
    case 1: return (void)std::memcpy(out, in, sizeof(float) * n);
    case 2: return take_every<2>(in, out, n);
    case 3: return take_every<3>(in, out, n);
    case 4: return take_every<4>(in, out, n);
    default:
      for (int64_t j = 0; j < n; ++j) out[j] = in[j * s];
  }
}

// Fills the panel rows of padded input rows [prow0, prow0 + rows) of image n. planes: C_in * W
// floats of scratch (unused when C_in = 1).
static inline void build_panel(const Conv2dParams& p, const Geometry& g, const float* x_image, int64_t prow0,
                               int64_t rows, float* panel, float* planes) {
  const int64_t s = p.stride_w;
  for (int64_t r = 0; r < rows; ++r) {
    float* dst_row = panel + r * g.row_floats;
    const int64_t iy = prow0 + r - p.pad_top;
    if (iy < 0 || iy >= p.h) {
      std::memset(dst_row, 0, sizeof(float) * g.row_floats);
      continue;
    }
    const float* src = x_image + iy * p.w * p.c_in;
    if (!g.split) {
      const int64_t left = min_i64(p.pad_left, g.cols), copied = max_i64(0, min_i64(p.w, g.cols - p.pad_left));
      std::memset(dst_row, 0, sizeof(float) * left * p.c_in);
      std::memcpy(dst_row + left * p.c_in, src, sizeof(float) * copied * p.c_in);
      std::memset(dst_row + (left + copied) * p.c_in, 0, sizeof(float) * (g.cols - left - copied) * p.c_in);
      continue;
    }
    const float* channel_planes = p.c_in == 1 ? src : planes;  // one channel is its own plane
    switch (p.c_in) {  // at most kFirstLayerShortMaxCin = 8 (dispatch.cpp)
      case 1: break;
      case 2: split_channels<2>(src, planes, p.w); break;
      case 3: split_channels<3>(src, planes, p.w); break;
      case 4: split_channels<4>(src, planes, p.w); break;
      case 5: split_channels<5>(src, planes, p.w); break;
      case 6: split_channels<6>(src, planes, p.w); break;
      case 7: split_channels<7>(src, planes, p.w); break;
      default: split_channels<8>(src, planes, p.w); break;
    }
    for (int64_t phase = 0; phase < s; ++phase) {
      // Columns j whose input column j * s + phase - pad_left lies inside the image: [j0, j1).
      const int64_t first = p.pad_left - phase;  // j * s >= first
      const int64_t j0 = min_i64(g.wq, first > 0 ? (first + s - 1) / s : 0);
      const int64_t j1 = max_i64(j0, min_i64(g.wq, (p.w + p.pad_left - phase + s - 1) / s));
      for (int64_t ci = 0; ci < p.c_in; ++ci) {
        float* dst = dst_row + (ci * s + phase) * g.wq;
        std::memset(dst, 0, sizeof(float) * j0);
        take_every(s, channel_planes + ci * p.w + j0 * s + phase - p.pad_left, dst + j0, j1 - j0);
        std::memset(dst + j1, 0, sizeof(float) * (g.wq - j1));
      }
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

// Channel-vector tile: R consecutive output pixels x V vectors of output channels. Per tap: V weight
// vectors, one broadcast per pixel from consecutive panel floats, R * V FMAs; stores go straight to
// NHWC. wb: [tap][V * kVecLen], zero padded; bias likewise or nullptr.
template <int R, int V>
static inline void run_ctile(const Conv2dParams& p, const float* row0, const int64_t* tap_off, int64_t taps,
                             int64_t ox0, const float* wb, const float* bias, float* out, int64_t pixels, int64_t cols,
                             Activation act) {
  const int64_t pixel_step = p.stride_w * p.c_in;  // panel floats between neighbouring output pixels
  vfloat acc[R][V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const vfloat init = bias ? load_vec(bias + v * kVecLen) : splat(0.0f);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) acc[r][v] = init;
  }
  const float* base = row0 + ox0 * pixel_step;
  for (int64_t t = 0; t < taps; ++t, wb += V * kVecLen) {
    const float* src = base + tap_off[t];
    vfloat wv[V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) wv[v] = load_vec(wb + v * kVecLen);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const vfloat s = splat(src[r * pixel_step]);
#pragma GCC unroll 4
      for (int v = 0; v < V; ++v) acc[r][v] += s * wv[v];
    }
  }
  if (pixels == R) return store_rows<R, V>(acc, out, p.c_out, cols, act);
  // A row's last tile, a pixel at a time; unrolled, so that every index into acc is a constant (a
  // run-time one would keep every tile's accumulators on the stack).
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
    if (r == pixels) break;
    vfloat one[1][V];
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v) one[0][v] = acc[r][v];
    store_rows<1, V>(one, out + r * p.c_out, p.c_out, cols, act);
  }
}

// Activations with an exponential (sigmoid, tanh, SiLU: has_exponential, tiled_conv.h) are applied
// after a whole output row is stored, over its contiguous out_w * C_out floats (vec::activate_row),
// instead of per accumulator in the tile's store: there the ~30 operations of the exponential per
// vector compete with the 12 live accumulators for the 16 registers (spills) and run as 12 unrolled
// copies. Cheap activations stay in the tile's store.

using CTileFn = void (*)(const Conv2dParams&, const float*, const int64_t*, int64_t, int64_t, const float*,
                         const float*, float*, int64_t, int64_t, Activation);

// Channel-vector tile shapes: the tiled engine's wide tile (kTileRows x 2 vectors) and, with 16
// vector registers, 4 pixels x 3 vectors (12 accumulators + 3 weights + 1 broadcast): 7 loads per
// 12 FMAs instead of 8, and per tap 1 broadcast per 3 FMAs instead of 1 per 2 (AlexNet C1's 96
// channels: 4 blocks of 24). Used when its blocks pad C_out no more than 2-vector blocks do.
constexpr int kWideVecs = 3, kWideRows = 4;

static inline int ctile_vecs(int64_t c_out) {
#if defined(__AVX512F__)
  (void)c_out;
  return kTileVecs;  // 32 registers: the 8 x 2 wide tile already has 1 broadcast per 2 FMAs of 16 lanes
#else
  const int64_t v3 = kWideVecs * kVecLen, v2 = kTileVecs * kVecLen;
  return (c_out + v3 - 1) / v3 * v3 <= (c_out + v2 - 1) / v2 * v2 ? kWideVecs : kTileVecs;
#endif
}

}  // namespace

void first_layer_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                        int threads) {
  const int64_t taps = p.kh * p.kw * p.c_in;
  // Channel-vector tiles once C_out fills the wide tile (measured crossover, AVX2: C_out 16; at
  // C_out 8-12 pixel vectors win by 1.4-1.6x, at 16-96 channel vectors by 1.1-1.9x).
  const bool channel_vectors = p.c_out >= kTileVecs * kVecLen;
  const int ctile_v = ctile_vecs(p.c_out);
  const int64_t block_cols = ctile_v * kVecLen, ctile_rows = ctile_v == kTileVecs ? kTileRows : kWideRows;
  const Geometry g = geometry(p, !channel_vectors, channel_vectors ? ctile_rows : kTilePixels);
  const CTileFn ctile = ctile_v == kTileVecs ? &run_ctile<kTileRows, kTileVecs> : &run_ctile<kWideRows, kWideVecs>;
  // Pixel-vector tiles: equal channel blocks of at most kChanBlock (block k has base + (k < extra)
  // channels). Channel-vector tiles: blocks of block_cols channels, the last one zero padded.
  const int64_t blocks = channel_vectors ? (p.c_out + block_cols - 1) / block_cols : (p.c_out + kChanBlock - 1) / kChanBlock;
  const int64_t base = p.c_out / blocks, extra = p.c_out % blocks;
  const int64_t bands = (p.out_h + kBandRows - 1) / kBandRows;
  const int64_t items = p.n * bands;
  const int nthreads = static_cast<int>(
      min_i64(threads_for(p.n * p.out_h * p.out_w * taps * p.c_out, threads), items));

  // Packed weights, per block in the loop's tap order [ky][ci][kx]: pixel-vector block k (first
  // channel co0, C channels) at w_packed + co0 * taps as [tap][C]; channel-vector block k at
  // w_packed + k * taps * block_cols as [tap][block_cols].
  float* w_packed = alloc_floats(channel_vectors ? blocks * taps * block_cols : taps * p.c_out);
  float* b_packed = channel_vectors && b ? alloc_floats(blocks * block_cols) : nullptr;
  for (int64_t j = 0; b_packed && j < blocks * block_cols; ++j) b_packed[j] = j < p.c_out ? b[j] : 0.0f;
  for (int64_t k = 0, co0 = 0; k < blocks; ++k) {
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
    co0 += cb;
  }
  // A panel, then (split rows only) channel planes.
  const int64_t scratch_floats = g.band_rows * g.row_floats + (g.split ? p.c_in * p.w : 0);
  float* panels = alloc_floats(nthreads * scratch_floats);
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
  const TileFn tile_big = tile_for(base + (extra ? 1 : 0)), tile_small = tile_for(base);
  const bool row_act = has_exponential(p.activation);
  const Activation tile_act = row_act ? Activation::kNone : p.activation;

  parallel_run(nthreads, [&] {
    float* panel = panels + omp_get_thread_num() * scratch_floats;
    float* planes = panel + g.band_rows * g.row_floats;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t n = item / bands, oy0 = item % bands * kBandRows;
      const int64_t oy1 = min_i64(oy0 + kBandRows, p.out_h);
      const int64_t prow0 = oy0 * p.stride_h;
      build_panel(p, g, x + n * p.h * p.w * p.c_in, prow0, (oy1 - 1 - oy0) * p.stride_h + (p.kh - 1) * p.dilation_h + 1,
                  panel, planes);
      for (int64_t oy = oy0; oy < oy1; ++oy) {
        const float* row0 = panel + (oy * p.stride_h - prow0) * g.row_floats;
        float* y_row = y + (n * p.out_h + oy) * p.out_w * p.c_out;
        if (channel_vectors) {
          // Every block of a pixel tile before the next tile: each pixel's C_out floats are then
          // written together (block by block over the row, a 64-channel output took its lines a
          // quarter at a time, and outputs past the cache ran 2.5x slower per image).
          for (int64_t ox0 = 0; ox0 < p.out_w; ox0 += ctile_rows) {
            for (int64_t k = 0; k < blocks; ++k) {
              const float* wb = w_packed + k * taps * block_cols;
              const float* bias = b_packed ? b_packed + k * block_cols : nullptr;
              const int64_t cols = min_i64(block_cols, p.c_out - k * block_cols);
              ctile(p, row0, tap_off.data(), taps, ox0, wb, bias, y_row + ox0 * p.c_out + k * block_cols,
                    min_i64(ctile_rows, p.out_w - ox0), cols, tile_act);
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
  std::free(panels);
  std::free(b_packed);
  std::free(w_packed);
}

}  // namespace fastconv::cpu::FC_ISA
