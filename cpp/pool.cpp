// Max, average and global pooling, NHWC. Compiled once per instruction set; see kernels.h.
//
// Each window is clipped to the real input, so padding is never read: max pooling then behaves as
// if the padding were -inf (and keeps NaN like numpy.max), and average pooling divides by the
// clipped count (or, with count_include_pad, by the window clipped to the padded input, as PyTorch
// does under ceil_mode). One pass, no temporaries beyond one row buffer per thread. Paths:
//  - pool_row_lanes (C >= one vector, windows of one row or stride_h > 1, unless wide): per output
//    pixel, every window tap loaded from the input, channels in vector lanes, up to four vectors at
//    a time; the last block overlaps the one before when C is not a multiple of the vector. 3 x 3
//    stride-2 windows go two output rows at a time, 2 x 2 outputs per block (pool_rows_3s2).
//  - pool_row_small (C below one vector, e.g. LeNet's 6) and pool_rows_wide (C >= kWideMinC = 256
//    on inputs past kWideMinInputBytes, or C >= one vector with stride_h = 1): the window is
//    separable, so each output row first reduces its input rows over the contiguous W * C floats
//    into a row buffer with full vectors (reduce_rows: each input row read in order), then reduces
//    along W per output pixel (the columns' windows computed once per call). Small C: one full
//    vector per window column, stores overlapping the next pixel's; at C up to half a vector the
//    interior pixels go several to a vector (PackedPixels), read from the input rows in place when
//    no column is padded. Wide: as in pool_row_lanes (wide pixels read tap by tap ran at half the
//    bandwidth); stride-1 rows in pairs, the kh - 1 input rows two output rows share reduced once
//    for both (reduce_row_pair). With C >= one vector, outputs far larger than L2 (kStreamMinBytes)
//    are written non-temporally.
//  - global pools: threads split (image, channel segment), or (image, part of the map) where the
//    channels are too few to share; four pixels at a time, one from each quarter of the map,
//    folded into a running row in L1 with full vectors, each quarter read in order; sums go from
//    float to double every kFloatRun pixels (maps of at most kFloatRun pixels stay in float).
//    Below one vector of channels the map is one flat run folded in periods of whole vectors
//    (global_narrow).
// Threads take chunks of (image, output row) pairs dynamically, so batch 1 uses every core; the
// thread count follows the bytes moved (threads_for on input + output bytes).
#include <cstring>
#include <limits>
#include <vector>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

using vec::kLanes;
using vec::vfloat;

// Streaming stores pay off once the output is far past L2 (1 MiB) and will not be re-read soon.
constexpr int64_t kStreamMinBytes = int64_t{8} << 20;

// From 1 KiB pixels on, the window taps read straight from the input (9 taps x 2 lines per step from
// 3 rows, each pixel walked channel block by channel block) ran at 4.7-5.4 GB/s where C = 64 reads
// 11 GB/s; likely the prefetchers: a 4 KiB page then holds 4 pixels, visited out of order. Reducing
// the rows first reads each input row in order (1.6-1.8x faster); below C = 256 the row buffer's
// extra store and load cost 3-15 % instead, unless stride-1 windows let two output rows share it
// (pool2d). Only from DRAM: inputs the caches hold read tap by tap in 0.67-0.83 of the time of the
// row buffer (1x14x14x256 2x2 6.0 -> 4.7 us, 4x28x28x1024 188 -> 126, 1x112x112x256 3x3 s2 257 ->
// 213), while past 16 MiB the buffer stays ahead (8x56x56x256 2x2 0.83, 32x28x28x512 0.74,
// 6x56x56x256 0.91; 12x28x28x512 tied).
constexpr int64_t kWideMinC = 256;
constexpr int64_t kWideMinInputBytes = int64_t{16} << 20;

struct Window {
  int64_t y0, y1, x0, x1;  // clipped to the input, half-open
  int64_t padded_count;    // window positions inside the padded input
};

Window window_at(const Pool2dParams& p, int64_t oy, int64_t ox) {
  const int64_t ys = oy * p.stride_h - p.pad_top, xs = ox * p.stride_w - p.pad_left;
  const int64_t ye = min_i64(ys + p.kh, p.h + p.pad_bottom), xe = min_i64(xs + p.kw, p.w + p.pad_right);
  return {max_i64(ys, 0), min_i64(ye, p.h), max_i64(xs, 0), min_i64(xe, p.w), (ye - ys) * (xe - xs)};
}

float avg_scale(const Pool2dParams& p, const Window& win) {
  const int64_t count = p.count_include_pad ? win.padded_count : (win.y1 - win.y0) * (win.x1 - win.x0);
  return 1.0f / static_cast<float>(count);
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

template <bool kMax>
vfloat combine(vfloat acc, vfloat v) {
  if constexpr (kMax) {
    return vec::max_nan(acc, v);
  } else {
    return acc + v;
  }
}

template <bool kMax>
float combine(float acc, float v) {
  if constexpr (kMax) {
    return (v > acc || v != v) ? v : acc;
  } else {
    return acc + v;
  }
}

template <bool kStream>
void put(float* out, vfloat v) {
  if (kStream && vec::streamable(out)) {
    vec::stream(out, v);
  } else {
    vec::store(out, v);
  }
}

// The columns of output pixel ox, the same for every output row: computed once per call.
struct ColWindow {
  int64_t x0, cols;    // clipped to the input
  int64_t padded;      // window columns inside the padded input
};

// Reduces output row oy's valid input rows over the flat W * C floats into buf with full vectors:
// every input row is read as one sequential stream. Returns the number of valid rows.
template <bool kMax>
int64_t reduce_rows(const Pool2dParams& p, const float* xn, int64_t oy, float* buf) {
  const int64_t len = p.w * p.c;
  const Window rows = window_at(p, oy, 0);
  const int64_t nrows = rows.y1 - rows.y0;
  const float* x0 = xn + rows.y0 * len;
  int64_t i = 0;
  if (nrows == 2) {  // 2x2 windows, and 3x3 windows clipped at the border: no inner loop
    for (; i + kLanes <= len; i += kLanes) vec::store(buf + i, combine<kMax>(vec::load(x0 + i), vec::load(x0 + len + i)));
  } else if (nrows == 3) {
    for (; i + kLanes <= len; i += kLanes) {
      const vfloat a = combine<kMax>(vec::load(x0 + i), vec::load(x0 + len + i));
      vec::store(buf + i, combine<kMax>(a, vec::load(x0 + 2 * len + i)));
    }
  }
  for (; i + kLanes <= len; i += kLanes) {
    vfloat acc = vec::load(x0 + i);
    for (int64_t r = 1; r < nrows; ++r) acc = combine<kMax>(acc, vec::load(x0 + r * len + i));
    vec::store(buf + i, acc);
  }
  for (; i < len; ++i) {
    float acc = x0[i];
    for (int64_t r = 1; r < nrows; ++r) acc = combine<kMax>(acc, x0[r * len + i]);
    buf[i] = acc;
  }
  return nrows;
}

// Whether output rows oy and oy + 1 both have every window row inside the input (the row pairs of
// reduce_row_pair and pool_rows_3s2).
bool pair_inside(const Pool2dParams& p, int64_t oy) {
  const int64_t y0 = oy * p.stride_h - p.pad_top;
  return oy + 1 < p.out_h && y0 >= 0 && y0 + p.stride_h + p.kh <= p.h;
}

// reduce_rows for output rows oy and oy + 1 of a stride-1 pool at once (pair_inside): the kh - 1
// input rows their windows share are read and reduced once for both, into top and bot. Per vector of a 3 x 3 pool:
// 4 loads and 3 combines for two output rows instead of 6 and 4.
template <bool kMax>
void reduce_row_pair(const Pool2dParams& p, const float* xn, int64_t oy, float* top, float* bot) {
  const int64_t len = p.w * p.c;
  const float* x0 = xn + (oy - p.pad_top) * len;
  int64_t i = 0;
  for (; i + kLanes <= len; i += kLanes) {
    vfloat shared = vec::load(x0 + len + i);
    for (int64_t r = 2; r < p.kh; ++r) shared = combine<kMax>(shared, vec::load(x0 + r * len + i));
    vec::store(top + i, combine<kMax>(shared, vec::load(x0 + i)));
    vec::store(bot + i, combine<kMax>(shared, vec::load(x0 + p.kh * len + i)));
  }
  for (; i < len; ++i) {
    float shared = x0[len + i];
    for (int64_t r = 2; r < p.kh; ++r) shared = combine<kMax>(shared, x0[r * len + i]);
    top[i] = combine<kMax>(shared, x0[i]);
    bot[i] = combine<kMax>(shared, x0[p.kh * len + i]);
  }
}

// Window rows inside the padded input: the row factor of the count under count_include_pad.
int64_t padded_rows(const Pool2dParams& p, int64_t oy) {
  const int64_t ys = oy * p.stride_h - p.pad_top;
  return min_i64(ys + p.kh, p.h + p.pad_bottom) - ys;
}

// A whole KH x KW window (2 x 2 or 3 x 3) of one output pixel, channels [cb, cb + NV vectors):
// every tap loaded at once and combined as a tree, so the NV sums do not wait on KH * KW - 1
// dependent adds each.
template <bool kMax, bool kStream, int NV, int KH, int KW>
__attribute__((always_inline)) inline void full_window(const float* first, int64_t row_step, int64_t c, int64_t cb,
                                                       float scale, float* out) {
#pragma GCC unroll 4
  for (int q = 0; q < NV; ++q) {
    const int64_t c0 = min_i64(cb + q * kLanes, c - kLanes);
    vfloat taps[KH * KW];
#pragma GCC unroll 9
    for (int t = 0; t < KH * KW; ++t) taps[t] = vec::load(first + t / KW * row_step + t % KW * c + c0);
#pragma GCC unroll 4
    for (int step = 1; step < KH * KW; step *= 2) {
#pragma GCC unroll 9
      for (int t = 0; t + step < KH * KW; t += 2 * step) taps[t] = combine<kMax>(taps[t], taps[t + step]);
    }
    put<kStream>(out + c0, kMax ? taps[0] : taps[0] * scale);
  }
}

// Output pixels [ox0, ox1) of row oy, C >= kLanes (not wide): per output pixel, every window tap
// loaded from the input, channels in vector lanes, NV vectors at a time (four, or fewer when C
// fills fewer: C = 16 on AVX-512 once computed its one vector four times); the last block overlaps
// the one before when C is not a multiple of the vector. Whole 2 x 2 and 3 x 3 windows go through
// full_window.
template <bool kMax, bool kStream, int NV>
void lanes_pixels(const Pool2dParams& p, const float* xn, float* y, int64_t oy, int64_t ox0, int64_t ox1) {
  const int64_t c = p.c, row_step = p.w * c;
  for (int64_t ox = ox0; ox < ox1; ++ox) {
    const Window win = window_at(p, oy, ox);
    const float scale = kMax ? 1.0f : avg_scale(p, win);
    const float* first = xn + (win.y0 * p.w + win.x0) * c;
    const int64_t rows = win.y1 - win.y0, cols = win.x1 - win.x0;
    float* out = y + ox * c;
    if (rows == 2 && cols == 2) {
      for (int64_t cb = 0; cb < c; cb += NV * kLanes) {
        full_window<kMax, kStream, NV, 2, 2>(first, row_step, c, cb, scale, out);
      }
      continue;
    }
    if (rows == 3 && cols == 3) {
      for (int64_t cb = 0; cb < c; cb += NV * kLanes) {
        full_window<kMax, kStream, NV, 3, 3>(first, row_step, c, cb, scale, out);
      }
      continue;
    }
    for (int64_t cb = 0; cb < c; cb += NV * kLanes) {
      int64_t c0[NV];
      vfloat acc[NV];
      for (int q = 0; q < NV; ++q) {
        c0[q] = min_i64(cb + q * kLanes, c - kLanes);
        acc[q] = vec::splat(kMax ? kNegInf : 0.0f);
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t k = 0; k < cols; ++k) {
          const float* xp = first + r * row_step + k * c;
          for (int q = 0; q < NV; ++q) acc[q] = combine<kMax>(acc[q], vec::load(xp + c0[q]));
        }
      }
      for (int q = 0; q < NV; ++q) put<kStream>(out + c0[q], kMax ? acc[q] : acc[q] * scale);
    }
  }
}

template <bool kMax, bool kStream, int NV>
void pool_row_lanes(const Pool2dParams& p, const float* xn, float* y, int64_t oy) {
  lanes_pixels<kMax, kStream, NV>(p, xn, y, oy, 0, p.out_w);
}

// Output rows oy and oy + 1 of a 3 x 3 stride-2 pool (pair_inside), C >= kLanes (not wide).
// Neighbouring windows share a row and a column, so 2 x 2 output pixels whose windows lie inside
// the input read their 5 x 5 input pixels once: each input column reduced over the top window's 3
// rows and the bottom one's (the middle row shared), then 3 columns per output; 25 loads and 28
// combines per 4 outputs instead of 36 and 32. The other columns go pixel by pixel (lanes_pixels).
template <bool kMax, bool kStream, int NV>
void pool_rows_3s2(const Pool2dParams& p, const float* xn, float* y, int64_t oy) {
  const int64_t c = p.c, row_step = p.w * c;
  float* const y2 = y + p.out_w * c;
  // Output columns whose windows lie inside the input: [lo, hi).
  const int64_t lo = min_i64(p.out_w, (p.pad_left + 1) / 2), last = p.w - 3 + p.pad_left;  // 2 * ox <= last
  const int64_t hi = last < 0 ? lo : max_i64(lo, min_i64(p.out_w, last / 2 + 1));
  const int64_t hi2 = lo + (hi - lo) / 2 * 2;  // pairs of columns from lo
  for (int64_t r = 0; r < 2; ++r) lanes_pixels<kMax, kStream, NV>(p, xn, r ? y2 : y, oy + r, 0, lo);
  const float scale = 1.0f / 9.0f;
  const float* x0 = xn + (2 * oy - p.pad_top) * row_step;
  for (int64_t ox = lo; ox < hi2; ox += 2) {
    const float* xb = x0 + (2 * ox - p.pad_left) * c;
    for (int64_t cb = 0; cb < c; cb += kLanes) {
      const int64_t c0 = min_i64(cb, c - kLanes);
      vfloat top[5], bot[5];
#pragma GCC unroll 5
      for (int k = 0; k < 5; ++k) {
        const float* xp = xb + k * c + c0;
        const vfloat mid = vec::load(xp + 2 * row_step);
        top[k] = combine<kMax>(combine<kMax>(vec::load(xp), vec::load(xp + row_step)), mid);
        bot[k] = combine<kMax>(mid, combine<kMax>(vec::load(xp + 3 * row_step), vec::load(xp + 4 * row_step)));
      }
      const vfloat out[4] = {combine<kMax>(combine<kMax>(top[0], top[1]), top[2]),
                             combine<kMax>(combine<kMax>(top[2], top[3]), top[4]),
                             combine<kMax>(combine<kMax>(bot[0], bot[1]), bot[2]),
                             combine<kMax>(combine<kMax>(bot[2], bot[3]), bot[4])};
      float* const at[4] = {y + ox * c, y + (ox + 1) * c, y2 + ox * c, y2 + (ox + 1) * c};
#pragma GCC unroll 4
      for (int j = 0; j < 4; ++j) put<kStream>(at[j] + c0, kMax ? out[j] : out[j] * scale);
    }
  }
  for (int64_t r = 0; r < 2; ++r) lanes_pixels<kMax, kStream, NV>(p, xn, r ? y2 : y, oy + r, hi2, p.out_w);
}

// One output row of the wide path from its rows reduced into buf (nrows of them, prows inside the
// padded input): per output pixel its columns of buf, NV vectors at a time as in pool_row_lanes.
template <bool kMax, bool kStream, int NV>
void wide_columns(const Pool2dParams& p, const ColWindow* cols, const float* buf, int64_t nrows, int64_t prows,
                  float* y) {
  const int64_t c = p.c;
  for (int64_t ox = 0; ox < p.out_w; ++ox) {
    const ColWindow& cw = cols[ox];
    float scale = 1.0f;
    if (!kMax) scale = 1.0f / static_cast<float>(p.count_include_pad ? prows * cw.padded : nrows * cw.cols);
    const float* bp = buf + cw.x0 * c;
    float* out = y + ox * c;
    for (int64_t cb = 0; cb < c; cb += NV * kLanes) {
      int64_t c0[NV];
      vfloat acc[NV];
      for (int q = 0; q < NV; ++q) {
        c0[q] = min_i64(cb + q * kLanes, c - kLanes);
        acc[q] = vec::load(bp + c0[q]);
      }
      for (int64_t k = 1; k < cw.cols; ++k) {
        for (int q = 0; q < NV; ++q) acc[q] = combine<kMax>(acc[q], vec::load(bp + k * c + c0[q]));
      }
      for (int q = 0; q < NV; ++q) put<kStream>(out + c0[q], kMax ? acc[q] : acc[q] * scale);
    }
  }
}

// Output row oy, and oy + 1 with `pair` (a stride-1 pool, pair_inside), on the wide path: the rows
// first (reduce_rows, or reduce_row_pair into buf and buf2), then wide_columns.
template <bool kMax, bool kStream, int NV>
void pool_rows_wide(const Pool2dParams& p, const ColWindow* cols, const float* xn, float* y, int64_t oy, bool pair,
                    float* buf, float* buf2) {
  if (pair) {
    reduce_row_pair<kMax>(p, xn, oy, buf, buf2);
    wide_columns<kMax, kStream, NV>(p, cols, buf, p.kh, p.kh, y);
    wide_columns<kMax, kStream, NV>(p, cols, buf2, p.kh, p.kh, y + p.out_w * p.c);
    return;
  }
  const int64_t nrows = reduce_rows<kMax>(p, xn, oy, buf);
  wide_columns<kMax, kStream, NV>(p, cols, buf, nrows, padded_rows(p, oy), y);
}

// Output pixels of a row whose windows lie wholly inside the input, for C at most half a vector
// (pool_row_small): P of them share one vector, their P * C outputs in the first lanes. Window
// column kx of those pixels sits at buf[(x0 + s * j + kx) * C + c] for pixel j, channel c: vector
// loads from (x0 + kx) * C and one lane permutation (lane j * C + c takes source lane s * C * j + c)
// gather them. P: as many pixels as fill a vector and span at most kSourceVectors vectors (stride
// 2 or less always does at 16 lanes). AVX-512 permutes two source vectors in one instruction; AVX2
// needs two permutations and a blend for it, no faster than pixel by pixel, so there P shrinks
// to one source vector.
constexpr int kSourceVectors = kLanes == 16 ? 2 : 1;
// Direct: when every pixel of a row is interior and all window columns of P pixels span at most two
// vectors (AVX-512, windows up to kMaxDirectKw wide), the input rows are read in place and combined
// in registers first, and column k of the window is a second permutation of the same two vectors
// (source lanes + k * C): no row buffer (pool_row_small). 16x32x32x3 2x2 stride 2: 8 loads and 3
// stores fewer per output vector.
constexpr int kMaxDirectKw = 3;
struct PackedPixels {
  int64_t ox0 = 0, ox1 = 0;  // the interior pixels [ox0, ox1); none when ox1 - ox0 < per_vector
  int64_t per_vector = 0;    // P
  bool direct = false;
  vec::vint lanes[kMaxDirectKw] = {};  // source lane of each output lane for window column k (direct: k < kw)
};

PackedPixels packed_pixels(const Pool2dParams& p, const ColWindow* cols) {
  PackedPixels pk;
  int64_t ox0 = 0, ox1 = p.out_w;
  while (ox0 < ox1 && (cols[ox0].cols != p.kw || cols[ox0].padded != p.kw)) ++ox0;
  while (ox1 > ox0 && (cols[ox1 - 1].cols != p.kw || cols[ox1 - 1].padded != p.kw)) --ox1;
  // The pixels whose columns span at most kSourceVectors vectors, at most a vector's worth: from
  // each column's own loads, or (direct) all kw columns from the same two.
  const int64_t span = kSourceVectors * kLanes, reach = p.stride_w * p.c;
  const int64_t direct_p = kSourceVectors == 2 && p.kw <= kMaxDirectKw && ox0 == 0 && ox1 == p.out_w
                               ? min_i64(kLanes / p.c, (span - p.kw * p.c) / reach + 1)
                               : 0;
  pk.direct = direct_p >= 2 && ox1 - ox0 >= direct_p;
  const int64_t per_vector = pk.direct ? direct_p : min_i64(kLanes / p.c, (span - p.c) / reach + 1);
  if (per_vector < 2 || ox1 - ox0 < per_vector) return PackedPixels{};
  pk.ox0 = ox0;
  pk.ox1 = ox1;
  pk.per_vector = per_vector;
  for (int k = 0; k < (pk.direct ? p.kw : 1); ++k) {
    for (int64_t j = 0; j < per_vector * p.c; ++j) {
      pk.lanes[k][j] = static_cast<int32_t>(reach * (j / p.c) + j % p.c + k * p.c);
    }
  }
  return pk;
}

// Row oy of pool_row_small on the direct path (PackedPixels::direct): blocks of P output pixels, the
// last overlapping the one before; per block the two vectors from its first window column in each
// valid input row, combined over the rows, then one permutation per window column. A block's
// vectors past the end of the input row are partial loads (lanes never selected).
template <bool kMax>
void small_direct(const Pool2dParams& p, const ColWindow* cols, const PackedPixels& pk, const float* xn, float* y,
                  int64_t oy) {
  static_assert(kMaxDirectKw == 3, "the window columns below");
  // p's and pk's fields in locals: for all the compiler knows, the stores to y alias them.
  const int64_t c = p.c, np = pk.per_vector, row_floats = p.w * c, kw = p.kw, out_floats = p.out_w * c;
  const vec::vint lanes0 = pk.lanes[0], lanes1 = pk.lanes[1], lanes2 = pk.lanes[2];
  const Window rows = window_at(p, oy, 0);
  const int64_t nrows = rows.y1 - rows.y0;
  const float scale = 1.0f / static_cast<float>((p.count_include_pad ? padded_rows(p, oy) : nrows) * kw);
  const float* x_rows = xn + rows.y0 * row_floats;
  const auto load_upto = [](const float* at, int64_t avail) {
    return avail >= kLanes ? vec::load(at) : avail > 0 ? vec::load_partial(at, avail) : vfloat{};
  };
  for (int64_t ox = 0; ox < p.out_w; ox += np) {
    const int64_t o = min_i64(ox, p.out_w - np);
    const int64_t off = cols[o].x0 * c, avail = row_floats - off;
    const float* xr = x_rows + off;
    vfloat a = load_upto(xr, avail), b = load_upto(xr + kLanes, avail - kLanes);
    for (int64_t r = 1; r < nrows; ++r) {
      a = combine<kMax>(a, load_upto(xr + r * row_floats, avail));
      b = combine<kMax>(b, load_upto(xr + r * row_floats + kLanes, avail - kLanes));
    }
    vfloat acc = __builtin_shuffle(a, b, lanes0);
    if (kw >= 2) acc = combine<kMax>(acc, __builtin_shuffle(a, b, lanes1));
    if (kw >= 3) acc = combine<kMax>(acc, __builtin_shuffle(a, b, lanes2));
    if (!kMax) acc *= scale;
    if (o * c + kLanes <= out_floats) {
      vec::store(y + o * c, acc);
    } else {
      vec::store_partial(y + o * c, acc, np * c);
    }
  }
}

// Output pixels [ox0, ox1) of a row from its row-reduced buf (pool_row_small), one full vector per
// window column. row_floats: the floats of the row; a vector that would reach past it stores only
// its own floats.
template <bool kMax>
void small_pixels(const Pool2dParams& p, const ColWindow* cols, const float* buf, int64_t nrows, int64_t prows,
                  int64_t ox0, int64_t ox1, float* y) {
  const int64_t c = p.c, row_floats = p.out_w * c;
  for (int64_t ox = ox0; ox < ox1; ++ox) {
    const ColWindow& cw = cols[ox];
    const float* bp = buf + cw.x0 * c;
    vfloat acc = vec::load(bp);
    if (cw.cols == 2) {  // the common widths without an inner loop (the loop cost ~2x on 2x2 windows)
      acc = combine<kMax>(acc, vec::load(bp + c));
    } else if (cw.cols == 3) {
      acc = combine<kMax>(acc, combine<kMax>(vec::load(bp + c), vec::load(bp + 2 * c)));
    } else {
      for (int64_t k = 1; k < cw.cols; ++k) acc = combine<kMax>(acc, vec::load(bp + k * c));
    }
    if (!kMax) {
      const int64_t count = p.count_include_pad ? prows * cw.padded : nrows * cw.cols;
      acc *= 1.0f / static_cast<float>(count);
    }
    if (ox * c + kLanes <= row_floats) {
      vec::store(y + ox * c, acc);
    } else {
      vec::store_partial(y + ox * c, acc, c);
    }
  }
}

// One output row, C < kLanes: the window is separable. The valid input rows are reduced over the
// flat W * C floats into buf with full vectors; then the output pixels reduce their columns of buf:
// the interior ones P at a time (PackedPixels), the others one full vector per column (lanes past C
// read the next pixel's values, or buf's tail). Each stores a full vector at its own offset: the
// extra lanes land on later pixels, whose stores come after and overwrite them (left border pixels
// first, then the interior, then the right border).
template <bool kMax>
void pool_row_small(const Pool2dParams& p, const ColWindow* cols, const PackedPixels& pk, const float* xn, float* y,
                    int64_t oy, float* buf) {
  if (pk.direct) return small_direct<kMax>(p, cols, pk, xn, y, oy);
  const int64_t c = p.c;
  const int64_t nrows = reduce_rows<kMax>(p, xn, oy, buf);
  const int64_t prows = padded_rows(p, oy);
  if (pk.per_vector == 0) return small_pixels<kMax>(p, cols, buf, nrows, prows, 0, p.out_w, y);
  small_pixels<kMax>(p, cols, buf, nrows, prows, 0, pk.ox0, y);
  const int64_t np = pk.per_vector;
  const float scale = 1.0f / static_cast<float>((p.count_include_pad ? prows : nrows) * p.kw);
  for (int64_t ox = pk.ox0; ox < pk.ox1; ox += np) {
    const int64_t o = min_i64(ox, pk.ox1 - np);  // the last block overlaps the one before
    const float* bp = buf + cols[o].x0 * c;
    const auto column = [&](int64_t k) {
      if constexpr (kSourceVectors == 2) {
        return __builtin_shuffle(vec::load(bp + k * c), vec::load(bp + k * c + kLanes), pk.lanes[0]);
      } else {
        return __builtin_shuffle(vec::load(bp + k * c), pk.lanes[0]);
      }
    };
    vfloat acc = column(0);
    if (p.kw == 2) {
      acc = combine<kMax>(acc, column(1));
    } else if (p.kw == 3) {
      acc = combine<kMax>(acc, combine<kMax>(column(1), column(2)));
    } else {
      for (int64_t k = 1; k < p.kw; ++k) acc = combine<kMax>(acc, column(k));
    }
    if (!kMax) acc *= scale;
    if (o * c + kLanes <= p.out_w * c) {
      vec::store(y + o * c, acc);
    } else {
      vec::store_partial(y + o * c, acc, np * c);
    }
  }
  small_pixels<kMax>(p, cols, buf, nrows, prows, pk.ox1, p.out_w, y);
}

using LanesRowFn = void (*)(const Pool2dParams&, const float*, float*, int64_t);
using WideRowsFn = void (*)(const Pool2dParams&, const ColWindow*, const float*, float*, int64_t, bool, float*,
                            float*);
// The row kernels of C >= one vector, for the number of vectors they take at a time.
struct LanesFns {
  LanesRowFn row, pair_3s2;  // pool_row_lanes, pool_rows_3s2
  WideRowsFn wide;           // pool_rows_wide
};

template <bool kMax, bool kStream, int NV>
constexpr LanesFns kLanesFns = {pool_row_lanes<kMax, kStream, NV>, pool_rows_3s2<kMax, kStream, NV>,
                                pool_rows_wide<kMax, kStream, NV>};

template <bool kMax, bool kStream>
LanesFns lanes_fns_for(int64_t c) {
  switch (min_i64(4, (c + kLanes - 1) / kLanes)) {
    case 1: return kLanesFns<kMax, kStream, 1>;
    case 2: return kLanesFns<kMax, kStream, 2>;
    case 3: return kLanesFns<kMax, kStream, 3>;
    default: return kLanesFns<kMax, kStream, 4>;
  }
}

template <bool kMax>
void pool2d(const Pool2dParams& p, const float* x, float* y, int threads) {
  // Pooling is memory-bound with a few operations per element moved: the thread count follows the
  // bytes read and written (kParallelMinWork = 512 KiB, ~25 us of one thread from L2).
  const int64_t out_bytes = p.n * p.out_h * p.out_w * p.c * int64_t{sizeof(float)};
  // Each output also costs its window's taps: a 3 x 3 stride-1 pool of 400 KB ran 0.61-0.75 of its
  // one-thread time on two threads, a 2 x 2 stride-2 one of 250 KB 0.8-1.6 (the second core's wake
  // and the machine's other load decide).
  const int64_t taps = max_i64(1, p.kh * p.kw / 2);
  const int64_t in_bytes = p.n * p.h * p.w * p.c * int64_t{sizeof(float)};
  const int nthreads = threads_for(in_bytes + out_bytes * taps, threads);
  const bool stream = out_bytes >= kStreamMinBytes;
  // Stride-1 windows share kh - 1 input rows between neighbouring output rows: rows first in pairs
  // for any C >= one vector (1x35x35x192 3x3 0.70-0.77 of pool_row_lanes' time, 5x5 0.53).
  const bool row_pairs = p.stride_h == 1 && p.kh >= 2;
  const bool small = p.c < kLanes;
  const bool wide = !small && ((p.c >= kWideMinC && in_bytes >= kWideMinInputBytes) || row_pairs);
  const LanesFns lanes = stream ? lanes_fns_for<kMax, true>(p.c) : lanes_fns_for<kMax, false>(p.c);
  std::vector<ColWindow> cols(static_cast<size_t>(p.out_w));
  for (int64_t ox = 0; ox < p.out_w; ++ox) {
    const Window win = window_at(p, 0, ox);
    const int64_t xs = ox * p.stride_w - p.pad_left;
    cols[static_cast<size_t>(ox)] = {win.x0, win.x1 - win.x0, min_i64(xs + p.kw, p.w + p.pad_right) - xs};
  }
  const PackedPixels packed = small ? packed_pixels(p, cols.data()) : PackedPixels{};
  // 3 x 3 stride-2 windows share a row and a column with their neighbours (pool_rows_3s2).
  const bool pairs_3s2 = !small && !wide && p.kh == 3 && p.kw == 3 && p.stride_h == 2 && p.stride_w == 2;
  // Work items: one output row, or two (rows 2i and 2i + 1 of an image) where windows share input
  // rows: stride 1 on the wide path (pool_rows_wide), 3 x 3 stride 2 (pool_rows_3s2).
  const int64_t step = (wide && row_pairs) || pairs_3s2 ? 2 : 1, per_image = (p.out_h + step - 1) / step;
  const int64_t rows = p.n * per_image;
  // Chunks of consecutive items, about eight per thread: a preempted thread leaves the rest to others.
  const int64_t chunk = max_i64(1, rows / (8 * int64_t{nthreads}));
  parallel_run(nthreads, [&] {
    // The row buffers, kept per thread between calls, each 2 * kLanes floats past W * C for
    // pool_row_small's last vector loads (zeroed when allocated; whatever they hold never reaches
    // the output); the second only for row pairs.
    static thread_local std::vector<float> buf;
    const int64_t buf_floats = p.w * p.c + 2 * kLanes;
    if (buf.size() < static_cast<size_t>(2 * buf_floats)) buf.assign(static_cast<size_t>(2 * buf_floats), 0.0f);
    float* const buf2 = buf.data() + buf_floats;
#pragma omp for schedule(dynamic, chunk)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t n = r / per_image, oy0 = r % per_image * step, oy1 = min_i64(oy0 + step, p.out_h);
      const float* xn = x + n * p.h * p.w * p.c;
      for (int64_t oy = oy0; oy < oy1;) {
        float* yr = y + (n * p.out_h + oy) * p.out_w * p.c;
        const bool pair = oy + 1 < oy1 && pair_inside(p, oy);  // both rows this item's (step 2)
        if (wide) {
          lanes.wide(p, cols.data(), xn, yr, oy, pair, buf.data(), buf2);
        } else if (small) {
          pool_row_small<kMax>(p, cols.data(), packed, xn, yr, oy, buf.data());
        } else if (pair) {
          lanes.pair_3s2(p, xn, yr, oy);
        } else {
          lanes.row(p, xn, yr, oy);
        }
        oy += pair ? 2 : 1;
      }
    }
    if (stream) vec::stream_fence();
  });
}

// Global pools: threads split (image, channel segment); one segment per image unless there are
// fewer images than threads. Per segment the pixels are folded four at a time into a running row in
// L1, with full vectors: one load and store of the running row per four input vectors (per input
// vector, those were the limit while the map is in L2). The four are one pixel from each quarter of
// the map, each quarter read front to back, so every load instruction walks one sequential stream.
// Four neighbouring pixels instead (each load reading a pixel's 1-2 KB, then jumping four pixels on)
// read 32 x 35 x 35 x 384 from DRAM at 24 GB/s, where one pixel per pass reached 37.
// Pixels summed in float before the partial sum moves into the double total: short float runs
// stay accurate and the double total does not drift over a 224 x 224 map.
constexpr int64_t kFloatRun = 64;

// run[j] (= or, without kInit, combined with) the four pixels at xp + q * ldq + j, q < 4, j < len.
template <bool kMax, bool kInit>
void fold_quarters(const float* xp, int64_t ldq, int64_t len, float* run) {
  int64_t j = 0;
  for (; j + kLanes <= len; j += kLanes) {
    const vfloat a = combine<kMax>(vec::load(xp + j), vec::load(xp + ldq + j));
    const vfloat b = combine<kMax>(vec::load(xp + 2 * ldq + j), vec::load(xp + 3 * ldq + j));
    vec::store(run + j, kInit ? combine<kMax>(a, b) : combine<kMax>(vec::load(run + j), combine<kMax>(a, b)));
  }
  for (; j < len; ++j) {
    const float v = combine<kMax>(combine<kMax>(xp[j], xp[ldq + j]), combine<kMax>(xp[2 * ldq + j], xp[3 * ldq + j]));
    run[j] = kInit ? v : combine<kMax>(run[j], v);
  }
}

template <bool kMax>
void global_segment(int64_t pixels, int64_t c, const float* xn, int64_t c0, int64_t c1, float* run, double* total,
                    float* out) {
  const int64_t len = c1 - c0, quarter = pixels / 4, ldq = quarter * c;
  const float* xs = xn + c0;
  // Max, and sums of few pixels, stay in the running row throughout (no double pass: 4-7 % on 7x7 maps).
  const bool in_run = kMax || pixels <= kFloatRun;
  const int64_t steps_per_run = in_run ? max_i64(quarter, 1) : kFloatRun / 4;
  if (!in_run) {
    for (int64_t j = 0; j < len; ++j) total[j] = 0.0;
  }
  for (int64_t first = 0; first < quarter; first += steps_per_run) {
    const int64_t last = min_i64(first + steps_per_run, quarter);
    fold_quarters<kMax, true>(xs + first * c, ldq, len, run);
    for (int64_t i = first + 1; i < last; ++i) fold_quarters<kMax, false>(xs + i * c, ldq, len, run);
    if (!in_run) {
      for (int64_t j = 0; j < len; ++j) total[j] += run[j];
    }
  }
  // The last pixels % 4 pixels.
  for (int64_t i = 4 * quarter; i < pixels; ++i) {
    const float* xp = xs + i * c;
    if (!in_run) {
      for (int64_t j = 0; j < len; ++j) total[j] += xp[j];
    } else if (i == 0) {
      std::memcpy(run, xp, static_cast<size_t>(len) * sizeof(float));
    } else {
      int64_t j = 0;
      for (; j + kLanes <= len; j += kLanes) vec::store(run + j, combine<kMax>(vec::load(run + j), vec::load(xp + j)));
      for (; j < len; ++j) run[j] = combine<kMax>(run[j], xp[j]);
    }
  }
  if (kMax) {
    std::memcpy(out + c0, run, static_cast<size_t>(len) * sizeof(float));
  } else if (in_run) {
    const float inv = 1.0f / static_cast<float>(pixels);
    int64_t j = 0;
    for (; j + kLanes <= len; j += kLanes) vec::store(out + c0 + j, vec::load(run + j) * vec::splat(inv));
    for (; j < len; ++j) out[c0 + j] = run[j] * inv;
  } else {
    for (int64_t j = 0; j < len; ++j) out[c0 + j] = static_cast<float>(total[j] / static_cast<double>(pixels));
  }
}

// C below one vector (32 x 56 x 56 x 6 ran 4x slower than PyTorch's NCHW reduction through a scalar
// loop per pixel): the map is one flat run of pixels * C floats, folded a period of lcm(C, kLanes)
// floats (V vectors, a whole number of pixels) at a time into V vector accumulators, lane j of the
// period holding channel j % C. As in global_segment, each float sum takes kFloatRun values before
// it moves into a double total. V = C / gcd(C, kLanes) is odd: the accumulators stay in registers.
template <bool kMax, int V>
void fold_periods(const float* xn, int64_t periods, float* lanes, double* total) {
  constexpr int64_t kPeriod = V * kLanes;
  const int64_t per_run = kMax ? periods : kFloatRun;
  vfloat acc[V];
  for (int64_t first = 0; first < periods; first += per_run) {
    const int64_t last = min_i64(first + per_run, periods);
    for (int v = 0; v < V; ++v) {
      const vfloat x0 = vec::load(xn + first * kPeriod + v * kLanes);
      acc[v] = kMax && first > 0 ? combine<kMax>(acc[v], x0) : x0;
    }
    for (int64_t i = first + 1; i < last; ++i) {
#pragma GCC unroll 16
      for (int v = 0; v < V; ++v) acc[v] = combine<kMax>(acc[v], vec::load(xn + i * kPeriod + v * kLanes));
    }
    if (!kMax) {
      for (int v = 0; v < V; ++v) vec::store(lanes + v * kLanes, acc[v]);
      for (int64_t j = 0; j < kPeriod; ++j) total[j] += lanes[j];
    }
  }
  if (kMax && periods > 0) {
    for (int v = 0; v < V; ++v) vec::store(lanes + v * kLanes, acc[v]);
  }
}

template <bool kMax>
void global_narrow(int64_t pixels, int64_t c, const float* xn, float* out) {
  const int64_t vecs = c / gcd_i64(c, kLanes), period = vecs * kLanes, per_period = period / c;
  const int64_t periods = pixels / per_period;
  double total[kLanes * kLanes] = {};  // one per lane of the period (kLanes vectors at most)
  float lanes[kLanes * kLanes];
  switch (vecs) {  // odd, below kLanes
    case 1: fold_periods<kMax, 1>(xn, periods, lanes, total); break;
    case 3: fold_periods<kMax, 3>(xn, periods, lanes, total); break;
#if FC_VEC_BYTES >= 32
    case 5: fold_periods<kMax, 5>(xn, periods, lanes, total); break;
    case 7: fold_periods<kMax, 7>(xn, periods, lanes, total); break;
#endif
#if FC_VEC_BYTES >= 64
    case 9: fold_periods<kMax, 9>(xn, periods, lanes, total); break;
    case 11: fold_periods<kMax, 11>(xn, periods, lanes, total); break;
    case 13: fold_periods<kMax, 13>(xn, periods, lanes, total); break;
    case 15: fold_periods<kMax, 15>(xn, periods, lanes, total); break;
#endif
    default: break;
  }
  // Channel ch: the period's lanes ch, ch + C, ...; then the pixels after the last whole period.
  for (int64_t ch = 0; ch < c; ++ch) {
    double sum = 0.0;
    float best = 0.0f;
    bool have = false;
    for (int64_t j = ch; j < (periods > 0 ? period : 0); j += c) {
      if (kMax) {
        best = have ? combine<kMax>(best, lanes[j]) : lanes[j];
      } else {
        sum += total[j];
      }
      have = true;
    }
    for (int64_t i = periods * per_period; i < pixels; ++i) {
      const float v = xn[i * c + ch];
      if (kMax) {
        best = have ? combine<kMax>(best, v) : v;
      } else {
        sum += v;
      }
      have = true;
    }
    out[ch] = kMax ? best : static_cast<float>(sum / static_cast<double>(pixels));
  }
}

template <bool kMax>
void global_pool(const GlobalPoolParams& p, const float* x, float* y, int threads) {
  const int64_t pixels = p.h * p.w;
  // Each input float weighs two units of work: from 256 K floats (1 MB) on, two threads won 0.56-0.74
  // of the time (8x7x7x1024, 2x14x14x1024, 1x28x28x512); 100 K floats (1x7x7x2048) stay on one,
  // where the region costs more than it saves.
  const int nthreads = threads_for(2 * p.n * pixels * p.c, threads);
  const int64_t vectors = (p.c + kLanes - 1) / kLanes;
  // Fewer images than threads: channel segments of at least 4 vectors each, else parts of the map
  // (1x147x147x32 on two threads read every other 64 bytes per thread as two channel segments), each
  // part's result weighted by its pixels when the parts are combined.
  const int64_t per_image = p.n >= nthreads ? 1 : (nthreads + p.n - 1) / p.n;
  const bool by_channels = per_image > 1 && vectors >= 4 * per_image;
  const int64_t segs = by_channels ? per_image : 1, parts = by_channels ? 1 : min_i64(per_image, pixels);
  const int64_t seg_vectors = (vectors + segs - 1) / segs;
  std::vector<float> partial(static_cast<size_t>(parts > 1 ? p.n * parts * p.c : 0));
  parallel_run(nthreads, [&] {
    static thread_local std::vector<float> run;
    static thread_local std::vector<double> total;
    if (run.size() < static_cast<size_t>(p.c)) {
      run.resize(static_cast<size_t>(p.c));
      total.resize(static_cast<size_t>(p.c));
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t u = 0; u < p.n * segs * parts; ++u) {
      const int64_t n = u / (segs * parts), s = u / parts % segs, part = u % parts;
      const int64_t p0 = pixels * part / parts, count = pixels * (part + 1) / parts - p0;
      const float* xn = x + (n * pixels + p0) * p.c;
      float* out = parts > 1 ? partial.data() + (n * parts + part) * p.c : y + n * p.c;
      if (p.c < kLanes) {
        global_narrow<kMax>(count, p.c, xn, out);
        continue;
      }
      const int64_t c0 = min_i64(s * seg_vectors * kLanes, p.c), c1 = min_i64(c0 + seg_vectors * kLanes, p.c);
      if (c1 > c0) global_segment<kMax>(count, p.c, xn, c0, c1, run.data(), total.data(), out);
    }
  });
  for (int64_t n = 0; parts > 1 && n < p.n; ++n) {
    for (int64_t ch = 0; ch < p.c; ++ch) {
      double sum = 0.0;
      float best = 0.0f;
      for (int64_t part = 0; part < parts; ++part) {
        const float v = partial[static_cast<size_t>((n * parts + part) * p.c + ch)];
        const int64_t count = pixels * (part + 1) / parts - pixels * part / parts;
        if (kMax) {
          best = part == 0 ? v : combine<kMax>(best, v);
        } else {
          sum += static_cast<double>(v) * static_cast<double>(count);
        }
      }
      y[n * p.c + ch] = kMax ? best : static_cast<float>(sum / static_cast<double>(pixels));
    }
  }
}

}  // namespace

void max_pool(const Pool2dParams& p, const float* x, float* y, int threads) { pool2d<true>(p, x, y, threads); }
void avg_pool(const Pool2dParams& p, const float* x, float* y, int threads) { pool2d<false>(p, x, y, threads); }
void global_avg_pool(const GlobalPoolParams& p, const float* x, float* y, int threads) {
  global_pool<false>(p, x, y, threads);
}
void global_max_pool(const GlobalPoolParams& p, const float* x, float* y, int threads) {
  global_pool<true>(p, x, y, threads);
}

}  // namespace fastconv::cpu::FC_ISA
