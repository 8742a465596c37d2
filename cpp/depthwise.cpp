// Depthwise 2-D convolution, NHWC: groups == C_in, one input channel per group and a channel
// multiplier M = C_out / C_in (output channel c * M + m). Weights (KH, KW, 1, C * M), i.e. the
// user's (KH, KW, C, M) as laid out in memory. Compiled once per instruction set; see kernels.h.
//
// Channels sit in the vector lanes (simd_dw.h). Threads split the (image, output row) pairs, so
// batch 1 uses every core. Per output row, the path is chosen once per call:
//  - row_lanes<KW, SW> (M = 1, C >= one vector, dilation_w = 1, KW x SW in {3, 5} x {1, 2}, any
//    KH, stride_h, dilation_h, padding): the interior columns, where the whole window is inside
//    the input, go kPixelBlock output pixels at a time per channel block with the KW taps and the
//    pixels unrolled; each input vector is loaded once per kernel row and feeds every output of
//    the block that uses it, and the block's KW weights stay in registers. The few border
//    columns take clipped_pixel. Rows outside the input are skipped (padding), so the interior
//    code has no bounds checks. The last channel block overlaps the one before when C is not a
//    multiple of the vector width: those outputs are simply written twice with the same value.
//  - row_lanes<0, 0> (M = 1, C >= one vector, any other geometry): clipped_pixel everywhere.
//  - row_any (M > 1, or C below one vector): one output pixel at a time, partial vectors.
// Bias and activation are applied to the accumulators before the single store.
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

using vec::kLanes;
using vec::vfloat;

// Interior output pixels per block: 8 independent accumulator chains hide the FMA latency
// (4 cycles, 2 pipes), and 8 + KW + 1 vector registers still fit AVX2's 16 for KW <= 5.
constexpr int kPixelBlock = 8;

// The kernel rows ky in [ky0, ky1) that fall inside the input for output row oy.
struct RowRange {
  int64_t iy0, ky0, ky1;  // iy0: the input row of ky = 0 (may be negative)
};

RowRange valid_rows(const Conv2dParams& p, int64_t oy) {
  RowRange r{oy * p.stride_h - p.pad_top, 0, p.kh};
  while (r.ky0 < r.ky1 && r.iy0 + r.ky0 * p.dilation_h < 0) ++r.ky0;
  while (r.ky1 > r.ky0 && r.iy0 + (r.ky1 - 1) * p.dilation_h >= p.h) --r.ky1;
  return r;
}

// kPixelBlock interior output pixels over all channels (M = 1, dilation_w = 1), one channel block
// at a time; the column offsets are set up once for all blocks. x: input at the first valid kernel
// row and the first pixel's leftmost tap; w: weights at the first valid kernel row, kx = 0;
// c: channels (the pixel stride of x, w, b and y).
template <int KW, int SW>
void interior_block(const float* x, int64_t x_row_step, const float* w, int64_t rows, int64_t c, const float* b,
                    Activation act, float* y) {
  constexpr int kInputs = (kPixelBlock - 1) * SW + KW;  // input columns the block's windows cover
  for (int64_t cb = 0; cb < c; cb += kLanes) {
    const int64_t c0 = min_i64(cb, c - kLanes);  // the last block overlaps the one before
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    vfloat acc[kPixelBlock];
#pragma GCC unroll 16
    for (int j = 0; j < kPixelBlock; ++j) acc[j] = bias;
    const float* xr = x + c0;
    const float* wr = w + c0;
    for (int64_t r = 0; r < rows; ++r, xr += x_row_step, wr += KW * c) {
      vfloat wk[KW];
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) wk[kx] = vec::load(wr + kx * c);
#pragma GCC unroll 32
      for (int i = 0; i < kInputs; ++i) {
        const vfloat v = vec::load(xr + i * c);
#pragma GCC unroll 16
        for (int j = 0; j < kPixelBlock; ++j) {
          const int kx = i - j * SW;  // a constant once unrolled
          if (kx >= 0 && kx < KW) acc[j] += v * wk[kx];
        }
      }
    }
#pragma GCC unroll 16
    for (int j = 0; j < kPixelBlock; ++j) vec::store(y + j * c + c0, vec::activate(act, acc[j]));
  }
}

// Output pixel ox over all channels with the window clipped to the input (M = 1, C >= kLanes):
// border columns and unspecialised geometries. Four channel blocks at a time, for four
// independent FMA chains; blocks past the end overlap the last full one.
void clipped_pixel(const Conv2dParams& p, const float* xn, const float* w, const float* b, const RowRange& rows,
                   int64_t ox, float* y) {
  const int64_t c = p.c_out, ix0 = ox * p.stride_w - p.pad_left;
  int64_t kx0 = 0, kx1 = p.kw;
  while (kx0 < kx1 && ix0 + kx0 * p.dilation_w < 0) ++kx0;
  while (kx1 > kx0 && ix0 + (kx1 - 1) * p.dilation_w >= p.w) --kx1;
  for (int64_t cb = 0; cb < c; cb += 4 * kLanes) {
    int64_t c0[4];
    vfloat acc[4];
    for (int q = 0; q < 4; ++q) {
      c0[q] = min_i64(cb + q * kLanes, c - kLanes);
      acc[q] = b ? vec::load(b + c0[q]) : vfloat{};
    }
    for (int64_t ky = rows.ky0; ky < rows.ky1; ++ky) {
      const float* xr = xn + ((rows.iy0 + ky * p.dilation_h) * p.w + ix0) * c;
      for (int64_t kx = kx0; kx < kx1; ++kx) {
        const float* xp = xr + kx * p.dilation_w * c;
        const float* wp = w + (ky * p.kw + kx) * c;
        for (int q = 0; q < 4; ++q) acc[q] += vec::load(xp + c0[q]) * vec::load(wp + c0[q]);
      }
    }
    for (int q = 0; q < 4; ++q) vec::store(y + c0[q], vec::activate(p.activation, acc[q]));
  }
}

// One output row (M = 1, C >= kLanes). KW = 0: no interior specialisation.
template <int KW, int SW>
void row_lanes(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy) {
  const RowRange rows = valid_rows(p, oy);
  const int64_t c = p.c_out;
  // Interior columns [ox_lo, ox_hi): ox * SW - pad_left >= 0 and ox * SW - pad_left + KW <= W.
  int64_t ox_lo = 0, ox_hi = 0;
  if constexpr (KW > 0) {
    ox_lo = min_i64((p.pad_left + SW - 1) / SW, p.out_w);
    const int64_t last_start = p.w - KW + p.pad_left;
    ox_hi = last_start < 0 ? ox_lo : max_i64(ox_lo, min_i64(last_start / SW + 1, p.out_w));
    if (ox_hi - ox_lo < kPixelBlock) ox_hi = ox_lo;  // too narrow for one block
  }
  for (int64_t ox = 0; ox < ox_lo; ++ox) clipped_pixel(p, xn, w, b, rows, ox, y + ox * c);
  if (ox_hi > ox_lo) {
    const int64_t x_row_step = p.dilation_h * p.w * c;
    const float* x_first = xn + (rows.iy0 + rows.ky0 * p.dilation_h) * p.w * c;
    const float* w_first = w + rows.ky0 * KW * c;
    // Pixel blocks outside, channel blocks inside: the block's input columns (KH x 17 pixels at
    // most) stay in L1 while every channel block passes over them.
    for (int64_t ox = ox_lo; ox < ox_hi; ox += kPixelBlock) {
      const int64_t o = min_i64(ox, ox_hi - kPixelBlock);  // the last block overlaps the one before
      interior_block<KW, SW>(x_first + (o * SW - p.pad_left) * c, x_row_step, w_first, rows.ky1 - rows.ky0, c, b,
                             p.activation, y + o * c);
    }
  }
  for (int64_t ox = max_i64(ox_lo, ox_hi); ox < p.out_w; ++ox) clipped_pixel(p, xn, w, b, rows, ox, y + ox * c);
}

// One output row, any M and C: per pixel and channel block, input lanes gathered as x[co / M].
void row_any(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy) {
  const RowRange rows = valid_rows(p, oy);
  const int64_t mult = p.c_out / p.c_in;
  for (int64_t ox = 0; ox < p.out_w; ++ox) {
    const int64_t ix0 = ox * p.stride_w - p.pad_left;
    for (int64_t c0 = 0; c0 < p.c_out; c0 += kLanes) {
      const int64_t len = min_i64(kLanes, p.c_out - c0);
      vfloat acc = b ? vec::load_partial(b + c0, len) : vfloat{};
      for (int64_t ky = rows.ky0; ky < rows.ky1; ++ky) {
        const float* xr = xn + (rows.iy0 + ky * p.dilation_h) * p.w * p.c_in;
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const int64_t ix = ix0 + kx * p.dilation_w;
          if (ix < 0 || ix >= p.w) continue;
          const float* xp = xr + ix * p.c_in;
          vfloat in{};
          for (int64_t j = 0; j < len; ++j) in[j] = xp[(c0 + j) / mult];
          acc += in * vec::load_partial(w + (ky * p.kw + kx) * p.c_out + c0, len);
        }
      }
      vec::store_partial(y + ox * p.c_out + c0, vec::activate(p.activation, acc), len);
    }
  }
}

using RowFn = void (*)(const Conv2dParams&, const float*, const float*, const float*, float*, int64_t);

RowFn choose_row(const Conv2dParams& p) {
  if (p.c_out != p.c_in || p.c_in < kLanes) return row_any;
  if (p.dilation_w == 1) {
    if (p.kw == 3 && p.stride_w == 1) return row_lanes<3, 1>;
    if (p.kw == 3 && p.stride_w == 2) return row_lanes<3, 2>;
    if (p.kw == 5 && p.stride_w == 1) return row_lanes<5, 1>;
    if (p.kw == 5 && p.stride_w == 2) return row_lanes<5, 2>;
  }
  return row_lanes<0, 0>;
}

}  // namespace

void depthwise(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const RowFn row = choose_row(p);
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * p.c_out * p.kh * p.kw, threads);
#pragma omp parallel for collapse(2) schedule(static) num_threads(nthreads)
  for (int64_t n = 0; n < p.n; ++n) {
    for (int64_t oy = 0; oy < p.out_h; ++oy) {
      row(p, x + n * p.h * p.w * p.c_in, w, b, y + (n * p.out_h + oy) * p.out_w * p.c_out, oy);
    }
  }
}

}  // namespace fastconv::cpu::FC_ISA
