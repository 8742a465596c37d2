// Depthwise 2-D convolution, NHWC: groups == C_in, one input channel per group and a channel
// multiplier M = C_out / C_in (output channel c * M + m). Weights (KH, KW, 1, C * M), i.e. the
// user's (KH, KW, C, M) as laid out in memory. Compiled once per instruction set; see kernels.h.
//
// Channels sit in the vector lanes (simd_dw.h). Threads take chunks of consecutive output rows
// (image, row) dynamically, so batch 1 uses every core and a preempted thread stalls nobody. The
// path is chosen once per call (choose_path):
//  - row_staged<KW, SW> (KW x SW in {3, 5} x {1, 2}, dilation_w = 1, C * M >= one vector, any KH,
//    stride_h, dilation_h, padding; chosen when M > 1, when input + output exceed stage_min_bytes(),
//    when the padding reaches KW columns a side, or when the output is narrower than 4 columns or
//    direct_rows' border blocks would span it): each thread copies the input rows it needs once
//    into a ring (RowStage), zero-padded left and right and with channels expanded to C * M (M = 2
//    by vector lane permutations, other M by a scalar loop), then every output pixel goes through
//    pixel_block: 8 (4, 1 on narrow maps) output pixels per channel block with the KW taps
//    unrolled, each input vector loaded once per kernel row, the KW weights in registers, no bounds
//    checks. 3x3 rows go in pairs as in direct_pairs (row_staged_pair). Outputs past stream_min_bytes()
//    are written with non-temporal stores, a pixel block at a time from an L1 copy (stream_copy).
//  - band_direct<KW, SW> / direct_rows (the same geometries with M = 1 otherwise, padding below KW a side):
//    direct_rows: pixel_block reads the input rows in place; the first and last 8 columns (4 on
//    rows narrower than 8, 5-7 on rows of 9-14) are border blocks whose padding taps are dropped at
//    compile time. For 3x3 (and 5x5 on AVX-512, on the widths in pick) with stride_h = stride_w and
//    dilation_h = 1, output rows go in pairs (direct_pairs, pixel_pair: blocks of 4 pixels in two
//    rows, 8 for 5x5) wherever both rows' windows lie inside the input: the input rows the two
//    share are read once. Work items are single rows (pairs), or bands of rows where the input rows
//    one output row reads outgrow half of L2 (direct_band_rows): each block of pixels then runs
//    down the band before the next. Without pairs, where those rows are past L1 and within a
//    quarter of L2 (columns_pay), the blocks run down bands a channel block at a time
//    (pixel_column), their window staying in L1.
//  - row_staged_dilated<KW> (KW in {3, 5}, stride_w = 1, dilation_w = d > 1, C * M >= one vector):
//    staged rows; each output row's d column phases (pixels d columns apart, an undilated stencil
//    over every d-th staged column) one after another in blocks of 8 (4, 1) of their pixels
//    (pixel_block_dilated).
//  - row_staged_general<SW, P> (every other kernel width, other dilated rows, strides with SW =
//    stride_w / gcd(stride_w, dilation_w) in {1, 2}; C * M >= one vector, KH <= 64): staged rows
//    as above, but each staged pixel padded to an odd number of cache lines (the window columns of
//    a block would share few L1 sets at C = 128, 384) and the weights packed per channel block
//    (pack_weights). general_block: up to 10 output pixels in registers on AVX-512, 8 otherwise (a
//    row in blocks of equal width give or take one, side by side), each kernel row in pieces of P columns
//    (P = KW up to 7, else a divisor of KW), each input vector loaded once per piece. A
//    dilated row is dilation_w / gcd interleaved sets of columns whose windows share inputs; each set
//    goes in blocks of 8 and its remainder in segments of 4, two segments (of any sets) per block.
//    The activation runs over each finished row (vec::activate_row). With M = 1 and a ring of
//    staged rows past half a core's L2, the channels go in slabs (slab_channels): the work items
//    run slab by slab, each staging and computing only its channels. Undilated (or dilation
//    dividing the stride) and not streaming, the work items are bands of 4-16 output rows whose
//    staged rows fit half of L2 (rows_staged_strips): each block of pixels and channels runs down
//    the band (strip_column), its KH input rows staying in L1 from one output row to the next.
//  - row_clipped (M = 1, C >= one vector: one-column kernels, SW > 2): clipped_pixel everywhere.
//  - row_narrow (M = 1, C below one vector): one pixel per vector, weights packed one vector per
//    tap, full-vector loads and stores that overlap the next pixel's channels.
//  - row_any (M > 1 with SW > 2, or C * M below one vector otherwise): one pixel at a time, partial
//    vectors.
// Rows outside the input (padding) are skipped. The last channel block of a pixel (and the first,
// when pixel_block aligns the others), and the last pixel block of a row, overlap their neighbour
// instead of masking: those outputs are written twice with the same value. Bias and activation
// are applied to the accumulators before the store (row_staged_general: the activation after).
#include <cstring>
#include <optional>
#include <type_traits>
#include <vector>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

using vec::kLanes;
using vec::vfloat;

// Output lines a block's stores will write, asked for 2 KB ahead. Past L2 (or in the other
// core's, where that core wrote the row last call) every store must first read its line (read for
// ownership), and a block's stores form NP (pair: 2 NP) streams C floats apart that the hardware
// prefetchers follow late: 1x56x56x480 3x3 ran in 0.58-0.66 of the time with this prefetch,
// 8x56x56x144 in 0.61-0.79, 1x28x28x192 in 0.74-0.77. 1 and 4 KB ahead were slower; prefetching
// the next block's input columns too lost most of the gain; a prefetch into L2 only (prefetcht1)
// gained half as much. (Without -mprfchw, which no ISA here sets, this is prefetcht0: a line no
// other core holds comes exclusive, and prefetchw measured the same.) Below 128 channels a block's
// outputs are a few lines a pixel, nearly one stream the hardware follows: 2x112x112x32 and
// 1x28x28x32 ran 1.06x slower with the prefetch.
constexpr int64_t kStorePrefetchFloats = 512, kStorePrefetchMinChannels = 128;
static inline void prefetch_store(const float* p) { __builtin_prefetch(p + kStorePrefetchFloats, 1); }
// 3x3 blocks; 5x5 ones (25 multiply-adds a store, not 9) only in blocks of 8+ pixels on AVX-512:
// 2x112x112x240 0.74 of the time, 4x56x56x240 0.88, 1x56x56x144 0.91, 1x28x28x240 (10 | 8 | 10) 0.92,
// while the blocks of 5-7 that rows of 9-14 columns take ran 1.02-1.08x slower with it, and AVX2's
// 5x5 blocks 1.01-1.03x.
template <int KW, int NP>
static inline bool prefetches_stores(int64_t c) {
  return (KW == 3 || (NP >= 8 && kLanes == 16)) && c >= kStorePrefetchMinChannels;
}

// The channel-block shift of pixel_block / pixel_pair (below): only for C a multiple of the vector
// and at least kShiftMinBlocks blocks, where the one extra block costs at most an eighth more FMAs.
// On fewer the extra FMAs cost more than the aligned loads save: no shift ran 0.79-0.85 of the
// time at 32 and 48 channels, 0.90-0.96 at 64 (one thread); with it 1x14x14x1152 5x5 ran 0.77-0.83
// of the time without, 1x56x56x144 5x5 s2 0.91.
constexpr int64_t kShiftMinBlocks = 8;
bool shift_pays(int64_t c) { return c % kLanes == 0 && c >= kShiftMinBlocks * kLanes; }
// Channels from p to the next vector-aligned address.
int64_t aligned_shift(const float* p) { return -(reinterpret_cast<uintptr_t>(p) / sizeof(float)) % kLanes; }

// One kernel row's taps for NP output pixels, added into acc (pixel_block, pixel_column): the row's
// KW weights (c floats apart from wr) in registers, and each of the block's input columns (xs floats
// apart from xr, the block's window column LO) loaded once and fed to every output that uses it.
template <int KW, int SW, int NP, int LO, int HI>
__attribute__((always_inline)) static inline void kernel_row_taps(vfloat (&acc)[NP], const float* xr, int64_t xs,
                                                                  const float* wr, int64_t c) {
  constexpr int kInputs = (NP - 1) * SW + KW;  // input columns the block's windows cover
  vfloat wk[KW];
#pragma GCC unroll 8
  for (int kx = 0; kx < KW; ++kx) wk[kx] = vec::load(wr + kx * c);
  const float* xp = xr;  // one pointer stepped per column: the columns' offsets need no registers
#pragma GCC unroll 32
  for (int i = LO; i < kInputs - HI; ++i, xp += xs) {
    const vfloat v = vec::load_once(xp);
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      const int kx = i - j * SW;  // a constant once unrolled
      if (kx >= 0 && kx < KW) acc[j] += v * wk[kx];
    }
  }
}

// NP output pixels over all channels (dilation_w = 1), one channel block at a time; the KW
// weights of a kernel row stay in registers and each input vector is loaded once per kernel row,
// feeding every output of the block that uses it. rows: the valid kernel rows' input rows;
// x_off: the offset in each row of the first window column inside the input; w: weights at the
// first valid kernel row, kx = 0; c: channels (the pixel stride of w, b and y); xs: the pixel stride
// of the rows (read only with kPadded: staged rows of power-of-two channel counts). The first
// LO and last HI of the block's window columns lie in the zero padding (border blocks of
// direct_rows): their taps are dropped at compile time, so the border columns keep the interior's
// 8 independent FMA chains and need no bounds checks.
template <int KW, int SW, int NP, int LO = 0, int HI = 0, bool kPadded = false>
void pixel_block(const float* const* rows, int64_t nrows, int64_t x_off, const float* w, int64_t c, int64_t xs,
                 const float* b, Activation act, float* y) {
  if constexpr (!kPadded) xs = c;  // one stride register less in the common case (1.07x measured)
  // Input vectors that straddle two cache lines cost a second access: when C is a multiple of
  // the vector and the input is not vector-aligned (NumPy aligns to 16 bytes), the channel blocks
  // after the first start at the aligned channel `shift`, for one more block per pixel. (No rows:
  // an output row wholly in the padding, bias only.)
  const int64_t shift = nrows == 0 || !shift_pays(c) ? 0 : aligned_shift(rows[0] + x_off);
  for (int64_t cb = shift ? shift - kLanes : 0; cb < c; cb += kLanes) {
    const int64_t c0 = max_i64(0, min_i64(cb, c - kLanes));  // the first and last blocks overlap
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    vfloat acc[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      acc[j] = bias;
      if (prefetches_stores<KW, NP>(c)) prefetch_store(y + j * c + c0);
    }
    const float* wr = w + c0;
    for (int64_t r = 0; r < nrows; ++r, wr += KW * c) {
      kernel_row_taps<KW, SW, NP, LO, HI>(acc, rows[r] + x_off + c0, xs, wr, c);
    }
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) vec::store(y + j * c + c0, vec::activate(act, acc[j]));
  }
}

// Two output rows at once, NP pixels each (KH = KW, stride_h = SW, dilation 1, both rows' windows
// inside the input vertically): rows holds the KW + SW input rows they cover; the top row uses
// rows[0, KW), the bottom one rows[SW, SW + KW). The KW - SW rows they share are read once from
// L1 for both, so the pair streams (KW + SW) / 2 input rows per output row instead of KW. y2: the
// bottom row's first output. LO / HI as in pixel_block.
template <int KW, int SW, int NP, int LO = 0, int HI = 0, bool kPadded = false>
void pixel_pair(const float* const* rows, int64_t x_off, const float* w, int64_t c, int64_t xs, const float* b,
                Activation act, float* y, float* y2) {
  if constexpr (!kPadded) xs = c;
  constexpr int kInputs = (NP - 1) * SW + KW;
  const int64_t shift = shift_pays(c) ? aligned_shift(rows[0] + x_off) : 0;
  for (int64_t cb = shift ? shift - kLanes : 0; cb < c; cb += kLanes) {
    const int64_t c0 = max_i64(0, min_i64(cb, c - kLanes));
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    vfloat top[NP], bot[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      top[j] = bot[j] = bias;
      if (prefetches_stores<KW, NP>(c)) {
        prefetch_store(y + j * c + c0);
        prefetch_store(y2 + j * c + c0);
      }
    }
#pragma GCC unroll 16
    for (int r = 0; r < KW + SW; ++r) {  // r: the top row's kernel row, r - SW the bottom row's
      const float* xr = rows[r] + x_off + c0;
      vfloat wt[KW], wb[KW];
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) {
        if (r < KW) wt[kx] = vec::load(w + (r * KW + kx) * c + c0);
        if (r >= SW) wb[kx] = vec::load(w + ((r - SW) * KW + kx) * c + c0);
      }
      const float* xp = xr;
#pragma GCC unroll 32
      for (int i = LO; i < kInputs - HI; ++i, xp += xs) {
        const vfloat v = vec::load_once(xp);
#pragma GCC unroll 16
        for (int j = 0; j < NP; ++j) {
          const int kx = i - j * SW;
          if (kx < 0 || kx >= KW) continue;
          if (r < KW) top[j] += v * wt[kx];
          if (r >= SW) bot[j] += v * wb[kx];
        }
      }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      vec::store(y + j * c + c0, vec::activate(act, top[j]));
      vec::store(y2 + j * c + c0, vec::activate(act, bot[j]));
    }
  }
}

using BlockFn = void (*)(const float* const*, int64_t, int64_t, const float*, int64_t, int64_t, const float*,
                         Activation, float*);

// Blocks of NP pixels by the number of window columns in the padding: left[s] (s = LO), right[s] (HI).
template <int KW, int SW, int NP, int... S>
struct BorderBlocks {
  static constexpr BlockFn left[] = {pixel_block<KW, SW, NP, S, 0>...};
  static constexpr BlockFn right[] = {pixel_block<KW, SW, NP, 0, S>...};
};
template <int KW, int SW, int NP>
using BorderBlocksFor =
    std::conditional_t<KW == 3, BorderBlocks<3, SW, NP, 0, 1, 2>, BorderBlocks<5, SW, NP, 0, 1, 2, 3, 4>>;

using PairFn = void (*)(const float* const*, int64_t, const float*, int64_t, int64_t, const float*, Activation, float*,
                        float*);

// Pair blocks of NP pixels by padding columns, as above.
template <int KW, int SW, int NP, int... S>
struct PairBorderBlocks {
  static constexpr PairFn left[] = {pixel_pair<KW, SW, NP, S, 0>...};
  static constexpr PairFn right[] = {pixel_pair<KW, SW, NP, 0, S>...};
};
// 3x3 pairs in blocks of 4 pixels (two rows of 8 would need 16 accumulators); 5x5 pairs (AVX-512
// only: 16 accumulators + 10 weights) in blocks of 8.
template <int KW>
constexpr int kPairPixels = KW == 3 ? 4 : 8;
template <int KW, int SW>
using PairBorderBlocksFor = std::conditional_t<KW == 3, PairBorderBlocks<3, SW, 4, 0, 1, 2>,
                                               PairBorderBlocks<5, SW, 8, 0, 1, 2, 3, 4>>;

// Output pixel ox over all channels with the window clipped to the input (M = 1, C >= kLanes):
// unspecialised geometries. Four channel blocks at a time, for four
// independent FMA chains; blocks past the end overlap the last full one.
void clipped_pixel(const Conv2dParams& p, const float* xn, const float* w, const float* b, const KernelRows& rows,
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

// The most output pixels of a row_staged_general block: 8 with 16 vector registers; 10 with
// AVX-512's 32 (10 accumulators + 7 weights + 1 input). A block then loads (NP - 1) * SW + P
// inputs and P weights per kernel row for NP pixels, and on a CPU with two 512-bit FMA pipes it
// keeps more than the 8 chains their latency needs (blocks of 7, 73 columns as 3 x 8 + 7 x 7, leave
// one pipe short). A Xeon, 7x7 layers (and 4x4, 9x9): 0.87-1.00 of the time of blocks up to 8.
constexpr int64_t kGeneralBlockPixels = kLanes == 16 ? 10 : 8;

// One thread's copies of the input rows it is working on, in a ring of (KH - 1) * dilation_h + 1
// rows (every row one output row needs, so rows shared by consecutive output rows are copied
// once), plus stride_h for each further output row that must stay staged with the first (row pairs,
// row_staged_pair: 2; bands, rows_staged_strips: their rows). Each copy has pad_left zero pixels in
// front and zeros after the input up to the last column a window reaches, and its channels
// expanded to C * M (x[c] repeated M times), so the pixel blocks see M = 1 and no borders.
// Streaming each input row once, in order, also suits the hardware prefetchers when the input
// comes from DRAM.
class RowStage {
 public:
  // The storage is the thread's own and kept between calls: a fresh allocation per call can return
  // pages to the system and fault them in again (the heap top moves with the callers' arrays).
  // pixel_stride: floats from one staged pixel to the next (C * M, or more: row_staged_general).
  // Stages every channel, C * M, until set_slab chooses fewer.
  RowStage(const Conv2dParams& p, const float* x, int64_t band_rows, int64_t pixel_stride)
      : p_(p), x_(x), cs_(pixel_stride), cn_(p.c_out) {
    slots_ = (p.kh - 1) * p.dilation_h + 1 + (band_rows - 1) * p.stride_h;
    width_ = max_i64(p.pad_left + p.w, (p.out_w - 1) * p.stride_w + (p.kw - 1) * p.dilation_w + 1);
    static thread_local std::vector<float> buf;
    static thread_local std::vector<int64_t> key;
    static thread_local std::vector<float> out;
    const size_t out_floats = static_cast<size_t>(kGeneralBlockPixels * p.c_out + 16);
    if (out.size() < out_floats) out.resize(out_floats);
    out_ = out.data() + (16 - reinterpret_cast<uintptr_t>(out.data()) / sizeof(float) % 16) % 16;
    // Rows start on 64-byte boundaries, like NumPy's arrays: a vector load at a misaligned
    // address crosses cache lines twice as often.
    slot_size_ = (width_ * cs_ + 15) / 16 * 16;
    const size_t size = static_cast<size_t>(slots_ * slot_size_ + 16);
    if (buf.size() < size) buf.resize(size);
    key.assign(static_cast<size_t>(slots_), -1);
    buf_ = buf.data() + (16 - reinterpret_cast<uintptr_t>(buf.data()) / sizeof(float) % 16) % 16;
    key_ = key.data();
    for (int64_t s = 0; s < slots_; ++s) {  // the zero columns left and right of the input
      float* row = buf_ + s * slot_size_;
      std::memset(row, 0, static_cast<size_t>(p.pad_left * cs_) * sizeof(float));
      std::memset(row + (p.pad_left + p.w) * cs_, 0,
                  static_cast<size_t>((width_ - p.pad_left - p.w) * cs_) * sizeof(float));
    }
  }
  // Room for the widest block's output pixels (a pixel block of 8, a pair's two blocks of 4, a
  // general block of kGeneralBlockPixels), 64-byte aligned: the staged kernels' outputs go here
  // first when they stream (see stream_copy).
  float* out() const { return out_; }
  int64_t pixel_stride() const { return cs_; }
  // The staged channels: [first_channel(), first_channel() + channels()).
  int64_t first_channel() const { return c0_; }
  int64_t channels() const { return cn_; }
  // Stages channels [c0, c0 + count) from here on (M = 1; c0 a multiple of kLanes, count at least
  // kLanes and at most the pixel stride).
  void set_slab(int64_t c0, int64_t count) {
    if (c0 == c0_ && count == cn_) return;
    c0_ = c0;
    cn_ = count;
    for (int64_t s = 0; s < slots_; ++s) key_[s] = -1;
  }
  // The valid kernel rows of output row oy of image n; out_rows[ky - ky0] = row(n, that input row).
  // Kernel heights past 64 are not staged (choose_path).
  KernelRows rows(int64_t n, int64_t oy, const float* (&out_rows)[64]) {
    const KernelRows rr = p_.rows_inside(oy);
    for (int64_t ky = rr.ky0; ky < rr.ky1; ++ky) out_rows[ky - rr.ky0] = row(n, rr.iy0 + ky * p_.dilation_h);
    return rr;
  }
  // Padded column 0 (input column -pad_left) of input row iy of image n.
  const float* row(int64_t n, int64_t iy) {
    const int64_t slot = iy % slots_, key = n * p_.h + iy;
    float* dst = buf_ + slot * slot_size_;
    if (key_[slot] != key) {
      key_[slot] = key;
      const float* src = x_ + key * p_.w * p_.c_in + c0_;
      float* out = dst + p_.pad_left * cs_;
      const int64_t mult = p_.c_out / p_.c_in;
      const int64_t len = p_.w * p_.c_in;
      // Pixel by pixel when padded or a slab: the floats between the staged channels and cs_ are
      // left unset (never read).
      if (cs_ != p_.c_out || cn_ != p_.c_out) {
        for (int64_t ix = 0; ix < p_.w; ++ix) {
          const float* s = src + ix * p_.c_in;
          float* d = out + ix * cs_;
          if (mult == 1) {  // cn_ >= kLanes here: vectors, the last overlapping the one before
            for (int64_t i = 0; i < cn_; i += kLanes) {
              const int64_t i0 = min_i64(i, cn_ - kLanes);
              vec::store(d + i0, vec::load(s + i0));
            }
          } else {
            for (int64_t i = 0; i < p_.c_in; ++i) {
              for (int64_t m = 0; m < mult; ++m) d[i * mult + m] = s[i];
            }
          }
        }
      } else if (mult == 1) {
        std::memcpy(out, src, static_cast<size_t>(len) * sizeof(float));
      } else if (mult == 2) {
        // One input vector becomes two: each lane repeated twice, by two lane permutations.
        vec::vint lo, hi;
        for (int j = 0; j < kLanes; ++j) {
          lo[j] = j / 2;
          hi[j] = kLanes / 2 + j / 2;
        }
        int64_t i = 0;
        for (; i + kLanes <= len; i += kLanes) {
          const vfloat v = vec::load(src + i);
          vec::store(out + 2 * i, __builtin_shuffle(v, lo));
          vec::store(out + 2 * i + kLanes, __builtin_shuffle(v, hi));
        }
        for (; i < len; ++i) out[2 * i] = out[2 * i + 1] = src[i];
      } else {
        for (int64_t i = 0; i < len; ++i) {
          for (int64_t m = 0; m < mult; ++m) out[i * mult + m] = src[i];
        }
      }
    }
    return dst;
  }

 private:
  const Conv2dParams& p_;
  const float* x_;
  int64_t cs_, cn_, c0_ = 0, slots_, width_, slot_size_;
  float* buf_;
  float* out_;
  int64_t* key_;  // n * H + iy of the row in each slot, -1 when empty
};

// Copies n floats (a multiple of 4, at least one vector) to 16-byte-aligned dst with non-temporal
// stores, the last vector overlapping the one before. The pixel blocks write each channel block of
// their 8 pixels at a stride of C floats: streamed directly, that keeps 8+ cache lines partly
// written at once, more than the write-combining buffers hold, and each goes out as partial writes.
// From an L1 copy of the block the lines are written whole and in order.
void stream_copy(float* dst, const float* src, int64_t n) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) vec::stream(dst + i, vec::load(src + i));
  if (i < n) vec::stream(dst + n - kLanes, vec::load(src + n - kLanes));
}

// One output row from staged rows (dilation_w = 1, C * M >= kLanes): blocks of 8 pixels, the last
// one overlapping the one before (its outputs written twice with the same value); maps narrower
// than 8 pixels take blocks of 4 the same way, narrower than 4 single pixels. ST: non-temporal
// output, each block through stage.out().
template <int KW, int SW, bool ST>
void row_staged(const Conv2dParams& p, RowStage& stage, int64_t n, const float* w, const float* b, float* y,
                int64_t oy) {
  const float* rows[64];
  const KernelRows rr = stage.rows(n, oy, rows);
  const int64_t c = p.c_out, xs = stage.pixel_stride(), nrows = rr.ky1 - rr.ky0, ow = p.out_w;
  const float* w0 = w + rr.ky0 * KW * c;
  const auto blocks = [&](BlockFn fn, int64_t np) {
    for (int64_t ox = 0; ox < ow; ox += np) {
      const int64_t o = min_i64(ox, ow - np);
      fn(rows, nrows, o * SW * xs, w0, c, xs, b, p.activation, ST ? stage.out() : y + o * c);
      if (ST) stream_copy(y + o * c, stage.out(), np * c);
    }
  };
  const bool padded = xs != c;
  if (ow >= 8) {
    blocks(padded ? pixel_block<KW, SW, 8, 0, 0, true> : pixel_block<KW, SW, 8>, 8);
  } else if (kLanes == 16 && ow >= 5) {
    // One block for the row (7 columns: MobileNet's last stages), not two overlapping blocks of 4:
    // 5-7 chains keep AVX-512's one FMA a cycle busy (see direct_rows).
    if (ow == 5) blocks(padded ? pixel_block<KW, SW, 5, 0, 0, true> : pixel_block<KW, SW, 5>, 5);
    if (ow == 6) blocks(padded ? pixel_block<KW, SW, 6, 0, 0, true> : pixel_block<KW, SW, 6>, 6);
    if (ow == 7) blocks(padded ? pixel_block<KW, SW, 7, 0, 0, true> : pixel_block<KW, SW, 7>, 7);
  } else if (ow >= 4) {
    blocks(padded ? pixel_block<KW, SW, 4, 0, 0, true> : pixel_block<KW, SW, 4>, 4);
  } else {
    blocks(padded ? pixel_block<KW, SW, 1, 0, 0, true> : pixel_block<KW, SW, 1>, 1);
  }
}

// NP output pixels of one column phase of a dilated row (stride 1, dilation_w = d: pixels d columns
// apart), from staged rows: pixel j's window is columns j .. j + KW - 1 of the phase's staged
// columns, xs floats apart (d staged pixels), and its outputs are ys floats (d pixels) after pixel
// j - 1's. Within a phase the row is an undilated 3- or 5-tap stencil: each input vector loaded
// once per kernel row and fed to every output of the block that uses it, as pixel_block.
template <int KW, int NP>
void pixel_block_dilated(const float* const* rows, int64_t nrows, int64_t x_off, const float* w, int64_t c,
                         int64_t xs, int64_t ys, const float* b, Activation act, float* y) {
  for (int64_t cb = 0; cb < c; cb += kLanes) {
    const int64_t c0 = min_i64(cb, c - kLanes);  // the last block overlaps the one before
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    vfloat acc[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) acc[j] = bias;
    const float* wr = w + c0;
    for (int64_t r = 0; r < nrows; ++r, wr += KW * c) kernel_row_taps<KW, 1, NP, 0, 0>(acc, rows[r] + x_off + c0, xs, wr, c);
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) vec::store(y + j * ys + c0, vec::activate(act, acc[j]));
  }
}

// One output row of a dilated 3- or 5-wide filter at stride 1 (dilation_w = d > 1, C * M >= one
// vector) from staged rows: the row's d column phases one after another, each in blocks of 8 (4, 1)
// of its pixels, the last block overlapping the one before. row_staged_general, which serves the
// other dilated filters, interleaves the phases within a block: 1.3-1.4x the undilated time here.
template <int KW>
void row_staged_dilated(const Conv2dParams& p, RowStage& stage, int64_t n, const float* w, const float* b, float* y,
                        int64_t oy) {
  const float* rows[64];
  const KernelRows rr = stage.rows(n, oy, rows);
  const int64_t c = p.c_out, xs = stage.pixel_stride(), d = p.dilation_w, nrows = rr.ky1 - rr.ky0;
  const float* w0 = w + rr.ky0 * KW * c;
  for (int64_t phase = 0; phase < min_i64(d, p.out_w); ++phase) {
    const int64_t count = (p.out_w - phase + d - 1) / d;  // its pixels: phase, phase + d, ...
    const auto blocks = [&](auto fn, int64_t np) {
      for (int64_t j = 0; j < count; j += np) {
        const int64_t ox = phase + min_i64(j, count - np) * d;  // staged column ox: its window's first
        fn(rows, nrows, ox * xs, w0, c, d * xs, d * c, b, p.activation, y + ox * c);
      }
    };
    if (count >= 8) {
      blocks(pixel_block_dilated<KW, 8>, 8);
    } else if (count >= 4) {
      blocks(pixel_block_dilated<KW, 4>, 4);
    } else {
      blocks(pixel_block_dilated<KW, 1>, 1);
    }
  }
}

// Output rows oy and oy + 1 from staged rows, as direct_pairs (3x3, stride_h = SW, dilation_h = 1,
// pair_fits, out_w >= 4) but with no border blocks: blocks of 4, the last overlapping the one before.
template <int SW, bool ST>
void row_staged_pair(const Conv2dParams& p, RowStage& stage, int64_t n, const float* w, const float* b, float* y,
                     int64_t oy) {
  constexpr int KW = 3;
  const int64_t c = p.c_out, ow = p.out_w, iy0 = oy * SW - p.pad_top;
  const float* rows[KW + SW];
  for (int r = 0; r < KW + SW; ++r) rows[r] = stage.row(n, iy0 + r);
  for (int64_t ox = 0; ox < ow; ox += 4) {
    const int64_t o = min_i64(ox, ow - 4);
    float* top = ST ? stage.out() : y + o * c;
    float* bot = ST ? stage.out() + 4 * c : y + (ow + o) * c;
    const int64_t xs = stage.pixel_stride();
    const PairFn pair = xs != c ? pixel_pair<KW, SW, 4, 0, 0, true> : pixel_pair<KW, SW, 4>;
    pair(rows, o * SW * xs, w, c, xs, b, p.activation, top, bot);
    if (ST) {
      stream_copy(y + o * c, top, 4 * c);
      stream_copy(y + (ow + o) * c, bot, 4 * c);
    }
  }
}

// One kernel row's taps kx in [0, P) for NP output pixels, accumulated into acc (general_block):
// the P weights in registers, each of the (NP - 1) * SW + P input vectors loaded once and fed to
// every output that uses it. xr: the first output's column kx = 0; xs: the floats between
// consecutive window columns (dilation_w staged pixels); SW: the stride between outputs in window
// columns.
template <int P, int SW, int NP>
__attribute__((always_inline)) inline void accumulate_taps(vfloat (&acc)[NP], const float* xr, int64_t xs,
                                                           const float* wr) {
  vfloat wk[P];
#pragma GCC unroll 8
  for (int kx = 0; kx < P; ++kx) wk[kx] = vec::load(wr + kx * kLanes);
  const float* xp = xr;
#pragma GCC unroll 32
  for (int i = 0; i < (NP - 1) * SW + P; ++i, xp += xs) {
    const vfloat v = vec::load_once(xp);
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) {
      const int kx = i - j * SW;  // a constant once unrolled
      if (kx >= 0 && kx < P) acc[j] += v * wk[kx];
    }
  }
}

// The widest kernel row piece general_block takes in one pass: 8 accumulators + 7 weights + 1 input
// fill the 16 vector registers of AVX2 / SSE2.
constexpr int kMaxPiece = 7;

// S segments of NP output pixels over all channels, any kernel width and dilation (staged rows,
// no bounds checks): as pixel_block, but each kernel row goes in kw / P pieces of P columns (P =
// KW up to kMaxPiece, else a divisor of it: general_row), window columns xs floats apart and a
// segment's outputs ys floats apart (row_staged_general's interleaved columns). One function per
// piece width: with a switch over widths in one function, GCC kept an accumulator on the stack
// across all of them (a store-to-load round trip in its chain for every piece).
// Segment s starts at x_off[s] in each row and writes y[s]; two segments of 4 give a block the 8
// independent accumulator chains that keep both FMA pipes busy where no 8 columns share inputs.
// w: packed weights (pack_weights) of the first valid kernel row, wb floats per channel block. No
// activation: the caller applies it to whole rows (vec::activate_row); here GCC left vec::activate
// out of line, and a call per output vector measured 12 % of a 3x3 dilated row.
template <int SW, int P, int NP, int S>
void general_block(const float* const* rows, int64_t nrows, int64_t kw, const int64_t* x_off, int64_t xs,
                   const float* w, int64_t wb, int64_t c, const float* b, float* const* y, int64_t ys) {
  for (int64_t cb = 0; cb < c; cb += kLanes, w += wb) {
    const int64_t c0 = min_i64(cb, c - kLanes);  // the last block overlaps the one before
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    vfloat acc[S][NP];
#pragma GCC unroll 16
    for (int s = 0; s < S; ++s) {
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) acc[s][j] = bias;
    }
    for (int64_t r = 0; r < nrows; ++r) {
      for (int64_t k0 = 0; k0 < kw; k0 += P) {
        const float* wp = w + (r * kw + k0) * kLanes;
#pragma GCC unroll 2
        for (int s = 0; s < S; ++s) accumulate_taps<P, SW, NP>(acc[s], rows[r] + x_off[s] + c0 + k0 * xs, xs, wp);
      }
    }
#pragma GCC unroll 2
    for (int s = 0; s < S; ++s) {
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) vec::store(y[s] + j * ys + c0, acc[s][j]);
    }
  }
}

// One output row from staged rows, any kernel width, stride_w and dilation_w with SW = stride_w /
// gcd(stride_w, dilation_w) in {1, 2} (C * M >= kLanes). Output columns q = dilation_w / gcd apart
// have windows that overlap on whole columns: output ox + j * q reads the window columns of ox
// shifted by j * SW dilation steps. So the row goes as q interleaved sets of columns (one for an
// undilated kernel), each in blocks of up to 8 pixels (undilated: kGeneralBlockPixels) that share
// their input vectors in registers as pixel_block's do. An undilated row of 4 or more columns is
// ceil(out_w / kGeneralBlockPixels) blocks, equal give or take one (with 8: 19 columns as 7 + 6 + 6,
// 10 as 5 + 5), not full blocks with the last overlapping the one before (24 and 16 pixels
// computed): a 512-bit FMA a cycle (Zen 4) needs only 4 chains of 4-cycle latency, AVX2's two need
// 8, and a block of 5 there takes the time of one of 8, no more. Rows narrower than 4: single pixels.
// In a dilated one each set's remainder goes as segments of 4 (the last overlapping), and segments
// of any two sets are computed together: a set of 10 columns (1x28 3x3 dilation 3) would otherwise
// cost two blocks of 8. Sets narrower than 4: single pixels.
// ST (q = 1 only): non-temporal output, each block through stage.out().
template <int SW, int P, bool ST>
void row_staged_general(const Conv2dParams& p, RowStage& stage, int64_t n, const float* w, const float* b, float* y,
                        int64_t oy) {
  const float* rows[64];
  const KernelRows rr = stage.rows(n, oy, rows);
  // A slab of channels [c0, c0 + c) (never with ST): outputs C floats apart, activated per pixel.
  const int64_t c = stage.channels(), c0 = stage.first_channel(), ys = p.c_out;
  const int64_t nrows = rr.ky1 - rr.ky0, ow = p.out_w, cs = stage.pixel_stride();
  const int64_t q = p.dilation_w / gcd_i64(p.stride_w, p.dilation_w), xs = p.dilation_w * cs;
  const int64_t wb = p.kh * p.kw * kLanes;  // packed weights per channel block (pack_weights)
  const float* w0 = w + c0 / kLanes * wb + rr.ky0 * p.kw * kLanes;
  if (b) b += c0;
  y += c0;
  const auto activate = [&] {
    if (c == ys) return vec::activate_row(p.activation, y, ow * c);
    for (int64_t ox = 0; ox < ow; ++ox) vec::activate_row(p.activation, y + ox * ys, c);
  };
  // np pixels from output column ox (ST: through stage.out()), S = 1.
  const auto block = [&](auto fn, int64_t ox, int64_t np) {
    const int64_t x_off = ox * p.stride_w * cs;
    float* const out = ST ? stage.out() : y + ox * ys;
    fn(rows, nrows, p.kw, &x_off, xs, w0, wb, c, b, &out, q * ys);
    if (ST) {
      vec::activate_row(p.activation, stage.out(), np * c);
      stream_copy(y + ox * c, stage.out(), np * c);
    }
  };
  if (q == 1) {
    if (ow >= 4) {
      const EvenParts parts = even_parts(ow, kGeneralBlockPixels);  // the first parts.larger one pixel wider
      const auto blocks = [&](auto wider, auto base) {
        for (int64_t i = 0; i < parts.count; ++i) {
          i < parts.larger ? block(wider, parts.start(i), parts.base + 1) : block(base, parts.start(i), parts.base);
        }
      };
      switch (parts.base) {
        case 4: blocks(general_block<SW, P, 5, 1>, general_block<SW, P, 4, 1>); break;
        case 5: blocks(general_block<SW, P, 6, 1>, general_block<SW, P, 5, 1>); break;
        case 6: blocks(general_block<SW, P, 7, 1>, general_block<SW, P, 6, 1>); break;
        case 7: blocks(general_block<SW, P, 8, 1>, general_block<SW, P, 7, 1>); break;
        default:
          if constexpr (kGeneralBlockPixels == 10) {
            if (parts.base == 8) {
              blocks(general_block<SW, P, 9, 1>, general_block<SW, P, 8, 1>);
            } else if (parts.base == 9) {
              blocks(general_block<SW, P, 10, 1>, general_block<SW, P, 9, 1>);
            } else {
              blocks(general_block<SW, P, 10, 1>, general_block<SW, P, 10, 1>);
            }
          } else {
            blocks(general_block<SW, P, 8, 1>, general_block<SW, P, 8, 1>);
          }
      }
    } else {
      for (int64_t ox = 0; ox < ow; ++ox) block(general_block<SW, P, 1, 1>, ox, 1);
    }
    if (!ST) activate();
    return;
  }
  int64_t pending = -1;  // the first column of a segment of 4 waiting for a second one
  const auto segment = [&](int64_t ox) {
    if (pending < 0) {
      pending = ox;
      return;
    }
    const int64_t x_off[2] = {pending * p.stride_w * cs, ox * p.stride_w * cs};
    float* const out[2] = {y + pending * ys, y + ox * ys};
    general_block<SW, P, 4, 2>(rows, nrows, p.kw, x_off, xs, w0, wb, c, b, out, q * ys);
    pending = -1;
  };
  for (int64_t first = 0; first < min_i64(q, ow); ++first) {
    const int64_t count = (ow - first + q - 1) / q;  // columns first, first + q, ...
    if (count < 4) {
      for (int64_t i = 0; i < count; ++i) block(general_block<SW, P, 1, 1>, first + i * q, 1);
      continue;
    }
    int64_t i = 0;
    for (; i + 8 <= count; i += 8) block(general_block<SW, P, 8, 1>, first + i * q, 8);
    for (; i < count; i += 4) segment(first + min_i64(i, count - 4) * q);
  }
  if (pending >= 0) block(general_block<SW, P, 4, 1>, pending, 4);
  activate();
}

// Bands of output rows for rows_staged_strips: at most kMaxBandRows (its arrays of row pointers),
// at least kMinBandRows (bands of 2 at stride 2, 1x35x35x576 7x7, ran 1.14x slower than rows).
constexpr int64_t kMaxBandRows = 16;
constexpr int64_t kMinBandRows = 4;

// NP pixels of one channel block (weights w of kernel row 0, bias b, both at the block) down the
// output rows of a band: rows[i] / rr[i] the staged kernel rows of band row i, x_off the block's
// offset in them, y its first output (band rows ow * ys apart).
template <int SW, int P, int NP>
void strip_column(const float* const (*rows)[64], const KernelRows* rr, int64_t count, int64_t kw, int64_t x_off,
                  int64_t xs, const float* w, const float* b, float* y, int64_t ys, int64_t row_floats) {
  const vfloat bias = b ? vec::load(b) : vfloat{};
  for (int64_t i = 0; i < count; ++i, y += row_floats) {
    vfloat acc[NP];
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) acc[j] = bias;
    const int64_t nrows = rr[i].ky1 - rr[i].ky0;
    const float* wr = w + rr[i].ky0 * kw * kLanes;
    for (int64_t r = 0; r < nrows; ++r) {
      for (int64_t k0 = 0; k0 < kw; k0 += P) {
        accumulate_taps<P, SW, NP>(acc, rows[i][r] + x_off + k0 * xs, xs, wr + (r * kw + k0) * kLanes);
      }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NP; ++j) vec::store(y + j * ys, acc[j]);
  }
}

using ColumnFn = void (*)(const float* const (*)[64], const KernelRows*, int64_t, int64_t, int64_t, int64_t,
                          const float*, const float*, float*, int64_t, int64_t);

template <int SW, int P>
ColumnFn strip_column_for(int64_t np) {
  switch (np) {
    case 1: return strip_column<SW, P, 1>;  // rows narrower than 4, a pixel at a time; else 4 or more
    case 4: return strip_column<SW, P, 4>;
    case 5: return strip_column<SW, P, 5>;
    case 6: return strip_column<SW, P, 6>;
    case 7: return strip_column<SW, P, 7>;
    case 8: return strip_column<SW, P, 8>;
  }
  if constexpr (kGeneralBlockPixels == 10) {
    if (np == 9) return strip_column<SW, P, 9>;
    return strip_column<SW, P, 10>;
  }
  return strip_column<SW, P, 8>;
}

// Output rows [oy0, oy1) of image n (y: the first) from staged rows of every channel (q = 1, not
// streaming, no slabs; the stage's ring holds the whole band), a column strip at a time: each block
// of pixels (as row_staged_general splits a row) and each channel block runs down the band, so the
// KH input rows one output row reads are in L1 for the next. Row by row they are KH whole staged
// rows, past L1 from ~100 KB (a stand-alone 7x7 block of 10 pixels: 128-134 GFLOP/s with 60 KB of
// rows, 66-80 with 241-261 KB; down columns 122-132). The sums are those of row_staged_general, in
// the same order; the activation runs over the band's rows once they are done.
template <int SW, int P>
void rows_staged_strips(const Conv2dParams& p, RowStage& stage, int64_t n, const float* w, const float* b, float* y,
                        int64_t oy0, int64_t oy1) {
  const float* rows[kMaxBandRows][64];
  KernelRows rr[kMaxBandRows];
  for (int64_t oy = oy0; oy < oy1; ++oy) rr[oy - oy0] = stage.rows(n, oy, rows[oy - oy0]);
  const int64_t c = p.c_out, ow = p.out_w, cs = stage.pixel_stride();  // every channel: no slabs
  const int64_t xs = p.dilation_w * cs, wb = p.kh * p.kw * kLanes, blocks = (c + kLanes - 1) / kLanes;
  const auto strip = [&](ColumnFn fn, int64_t ox) {
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t cb = min_i64(k * kLanes, c - kLanes);  // the last block overlaps the one before
      fn(rows, rr, oy1 - oy0, p.kw, ox * p.stride_w * cs + cb, xs, w + k * wb, b ? b + cb : nullptr, y + ox * c + cb,
         c, ow * c);
    }
  };
  if (ow >= 4) {
    const EvenParts parts = even_parts(ow, kGeneralBlockPixels);
    for (int64_t i = 0; i < parts.count; ++i) strip(strip_column_for<SW, P>(parts.size(i)), parts.start(i));
  } else {
    for (int64_t ox = 0; ox < ow; ++ox) strip(strip_column_for<SW, P>(1), ox);
  }
  vec::activate_row(p.activation, y, (oy1 - oy0) * ow * c);
}

// Window columns past the right edge of the input in the last output column (0 when none).
int64_t right_overhang(const Conv2dParams& p) {
  return max_i64(0, (p.out_w - 1) * p.stride_w - p.pad_left + (p.kw - 1) * p.dilation_w + 1 - p.w);
}

// A band of output rows of one image read in place by pixel_column: the valid kernel rows of each
// band row (rows[i]), the image xn, and the floats between input rows (in_row), kernel rows
// (row_step: dilation_h input rows) and output rows (out_row).
struct DirectBand {
  const float* xn;
  const KernelRows* rows;
  int64_t count, c, in_row, row_step, out_row;
};

// pixel_block's NP pixels over the rows of a band, one channel block at a time down the band: the
// block's window columns of its KH input rows stay in L1 from one band row to the next, which reads
// one new input row of them (prefetched a row ahead: the rows are far apart for the hardware
// prefetchers). Each row's stores are one line per pixel a channel block; the next channel block's
// lines are prefetched for writing, as the row's stores no longer run along it. The same sums in the
// same order as pixel_block. LO / HI as there.
template <int KW, int SW, int NP, int LO = 0, int HI = 0>
void pixel_column(const DirectBand& d, int64_t x_off, const float* w, const float* b, Activation act, float* y) {
  constexpr int kInputs = (NP - 1) * SW + KW;
  const int64_t c = d.c;
  const int64_t shift = shift_pays(c) ? aligned_shift(d.xn + x_off) : 0;  // every row alike: W * C floats apart
  for (int64_t cb = shift ? shift - kLanes : 0; cb < c; cb += kLanes) {
    const int64_t c0 = max_i64(0, min_i64(cb, c - kLanes));
    const vfloat bias = b ? vec::load(b + c0) : vfloat{};
    float* yr = y + c0;
    for (int64_t i = 0; i < d.count; ++i, yr += d.out_row) {
      const KernelRows& rr = d.rows[i];
      if (i + 1 < d.count) {
        const KernelRows& next = d.rows[i + 1];
        const float* xp = d.xn + next.iy0 * d.in_row + (next.ky1 - 1) * d.row_step + x_off + c0;
#pragma GCC unroll 32
        for (int ix = LO; ix < kInputs - HI; ++ix) __builtin_prefetch(xp + ix * c);
      }
      vfloat acc[NP];
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) {
        acc[j] = bias;
        __builtin_prefetch(yr + j * c + kLanes, 1);
      }
      const float* xr = d.xn + rr.iy0 * d.in_row + rr.ky0 * d.row_step + x_off + c0;
      const float* wr = w + rr.ky0 * KW * c + c0;
      for (int64_t ky = rr.ky0; ky < rr.ky1; ++ky, xr += d.row_step, wr += KW * c) {
        kernel_row_taps<KW, SW, NP, LO, HI>(acc, xr, c, wr, c);
      }
#pragma GCC unroll 16
      for (int j = 0; j < NP; ++j) vec::store(yr + j * c, vec::activate(act, acc[j]));
    }
  }
}

using DirectColumnFn = void (*)(const DirectBand&, int64_t, const float*, const float*, Activation, float*);

// Column blocks of NP pixels by padding columns, as BorderBlocks.
template <int KW, int SW, int NP, int... S>
struct ColumnBorderBlocks {
  static constexpr DirectColumnFn left[] = {pixel_column<KW, SW, NP, S, 0>...};
  static constexpr DirectColumnFn right[] = {pixel_column<KW, SW, NP, 0, S>...};
};

// direct_rows' blocks: pixel_block (each band row in turn) or, kColumns, pixel_column (down the band).
template <int KW, int SW, bool kColumns>
struct DirectBlocks {
  template <int NP>
  using Border = std::conditional_t<
      kColumns,
      std::conditional_t<KW == 3, ColumnBorderBlocks<3, SW, NP, 0, 1, 2>, ColumnBorderBlocks<5, SW, NP, 0, 1, 2, 3, 4>>,
      BorderBlocksFor<KW, SW, NP>>;
  template <int NP>
  static constexpr auto inner = [] {
    if constexpr (kColumns) {
      return pixel_column<KW, SW, NP>;
    } else {
      return pixel_block<KW, SW, NP>;
    }
  }();
};

// Output rows [oy0, oy1) of one image straight from the input (y: row oy0; M = 1, C >= kLanes,
// dilation_w = 1, pad_left and right_overhang below KW, border_blocks_fit: choose_path), each block
// of pixels down all the rows before the next, a row at a time or, kColumns, a channel block at a
// time (pixel_column): every column in register blocks. The
// first and last 8 columns are border blocks with their padding taps dropped (pixel_block's LO /
// HI); between them blocks of 8, and the remainder one block of 8 or 4 overlapping the one before
// (those outputs written twice with the same value). Every block between the two border blocks
// lies wholly inside the input: the border columns are at most ceil(pad_left / SW) <= 4 on the left
// and ceil(overhang / SW) <= 4 on the right. Narrow rows (out_w 8-15) are the two border blocks,
// overlapping (two of 7 for out_w 14); rows of 4-7 two border blocks of 4; 5x5 stride 1 at 28
// columns border blocks of 10 around one block of 8.
template <int KW, int SW, bool kColumns>
void direct_rows(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy0,
                 int64_t oy1) {
  using Blocks = DirectBlocks<KW, SW, kColumns>;
  const int64_t c = p.c_out, ow = p.out_w;
  KernelRows rr[kMaxBandRows];
  for (int64_t i = 0; i < oy1 - oy0; ++i) rr[i] = p.rows_inside(oy0 + i);
  const float* rows[kColumns ? 1 : kMaxBandRows][64];  // kernel heights past 64 take row_clipped (choose_path)
  if constexpr (!kColumns) {
    for (int64_t i = 0; i < oy1 - oy0; ++i) {
      for (int64_t ky = rr[i].ky0; ky < rr[i].ky1; ++ky) {
        rows[i][ky - rr[i].ky0] = xn + (rr[i].iy0 + ky * p.dilation_h) * p.w * c;
      }
    }
  }
  const DirectBand band{xn, rr, oy1 - oy0, c, p.w * c, p.dilation_h * p.w * c, ow * c};
  const auto block = [&](auto fn, int64_t ox, int64_t lo) {
    const int64_t x_off = (ox * SW - p.pad_left + lo) * c;
    if constexpr (kColumns) {
      fn(band, x_off, w, b, p.activation, y + ox * c);
    } else {
      for (int64_t i = 0; i < oy1 - oy0; ++i) {
        fn(rows[i], rr[i].ky1 - rr[i].ky0, x_off, w + rr[i].ky0 * KW * c, c, c, b, p.activation, y + (i * ow + ox) * c);
      }
    }
  };
  if (ow < 8) {
    using Border4 = typename Blocks::template Border<4>;
    block(Border4::left[p.pad_left], 0, p.pad_left);
    block(Border4::right[right_overhang(p)], ow - 4, 0);
    return;
  }
  // 14 columns (the late stages of MobileNet v2 / EfficientNet) as two blocks of 7, not two
  // overlapping blocks of 8: 1/8 fewer FMAs.
  if (ow == 14) {
    using Border7 = typename Blocks::template Border<7>;
    block(Border7::left[p.pad_left], 0, p.pad_left);
    block(Border7::right[right_overhang(p)], 7, 0);
    return;
  }
  // 9-13 columns on AVX-512 as two blocks of 5-7 (overlapping by one on odd widths), not two of 8
  // (16 pixels for 10; 1x10x10x256 3x3 ran in 0.68 of the time): 16-lane FMAs issue one a cycle, so
  // 5 chains of 4-cycle latency keep the pipe busy. With 8 lanes, two a cycle, a block needs 8
  // chains: AVX2 keeps the blocks of 8.
  if constexpr (kLanes == 16) {
    if (ow >= 9 && ow <= 13) {
      const auto halves = [&](auto border, int64_t np) {
        using Border = decltype(border);
        block(Border::left[p.pad_left], 0, p.pad_left);
        block(Border::right[right_overhang(p)], ow - np, 0);
      };
      if (ow <= 10) return halves(typename Blocks::template Border<5>{}, 5);
      if (ow <= 12) return halves(typename Blocks::template Border<6>{}, 6);
      return halves(typename Blocks::template Border<7>{}, 7);
    }
  }
  // 5x5 stride 1 at 28 columns (EfficientNet) as 10 | 8 | 10, not 8 | 8 | 4 | 8: a block's 8
  // accumulators are exactly the FMA latency x throughput product, a block of 4 runs at half rate,
  // and the 10-pixel border blocks get 2 spare chains (a few accumulator spills; still faster).
  if constexpr (KW == 5 && SW == 1) {
    if (ow == 28) {
      using Border10 = typename Blocks::template Border<10>;
      block(Border10::left[p.pad_left], 0, p.pad_left);
      block(Blocks::template inner<8>, 10, 0);
      block(Border10::right[right_overhang(p)], 18, 0);
      return;
    }
  }
  using Border = typename Blocks::template Border<8>;
  block(Border::left[p.pad_left], 0, p.pad_left);
  int64_t ox = 8;
  for (; ox + 16 <= ow; ox += 8) block(Blocks::template inner<8>, ox, 0);
  const int64_t rest = ow - 8 - ox;
  if (rest > 4) {
    block(Blocks::template inner<8>, ow - 16, 0);
  } else if (rest > 0) {
    block(Blocks::template inner<4>, ow - 12, 0);
  }
  block(Border::right[right_overhang(p)], ow - 8, 0);
}

// Output rows [oy0, oy1) in pairs (an even count, from oy0), as direct_rows but with pixel_pair
// blocks (KH = KW, stride_h = SW, dilation_h = 1, both rows' windows inside the input: pair_fits): 3x3 in blocks
// of 4, the first and last 4 columns border blocks (the padding reaches at most 2 columns); 5x5 in
// blocks of 8 with border blocks of 8 (or two of 7 on 14 columns), on AVX-512 only: with 16
// registers its pair (10 weights, 8 accumulators at 4 pixels) measured 1.1-1.2x slower.
template <int KW, int SW>
void direct_pairs(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy0,
                  int64_t oy1) {
  constexpr int NP = kPairPixels<KW>;
  const int64_t c = p.c_out, ow = p.out_w;
  const float* rows[kMaxBandRows / 2][KW + SW];
  for (int64_t i = 0; i < (oy1 - oy0) / 2; ++i) {
    const int64_t iy0 = (oy0 + 2 * i) * SW - p.pad_top;
    for (int r = 0; r < KW + SW; ++r) rows[i][r] = xn + (iy0 + r) * p.w * c;
  }
  const auto block = [&](PairFn fn, int64_t ox, int64_t lo) {
    for (int64_t i = 0; i < (oy1 - oy0) / 2; ++i) {
      float* yp = y + (2 * i * ow + ox) * c;
      fn(rows[i], (ox * SW - p.pad_left + lo) * c, w, c, c, b, p.activation, yp, yp + ow * c);
    }
  };
  if constexpr (KW == 5) {
    if (ow == 14) {  // as direct_rows: two blocks of 7
      using Border7 = PairBorderBlocks<5, SW, 7, 0, 1, 2, 3, 4>;
      block(Border7::left[p.pad_left], 0, p.pad_left);
      block(Border7::right[right_overhang(p)], 7, 0);
      return;
    }
  }
  using Border = PairBorderBlocksFor<KW, SW>;
  block(Border::left[p.pad_left], 0, p.pad_left);
  int64_t ox = NP;
  for (; ox + 2 * NP <= ow; ox += NP) block(pixel_pair<KW, SW, NP>, ox, 0);
  if (ox < ow - NP) block(pixel_pair<KW, SW, NP>, ow - 2 * NP, 0);
  block(Border::right[right_overhang(p)], ow - NP, 0);
}

// Whether output rows oy and oy + 1 both have every kernel row inside the input (direct_pairs).
bool pair_fits(const Conv2dParams& p, int64_t oy) {
  const int64_t iy0 = oy * p.stride_h - p.pad_top;
  return oy + 1 < p.out_h && iy0 >= 0 && iy0 + p.kh + p.stride_h <= p.h;
}

// Output rows [oy0, oy1) of one image straight from the input (y: row oy0). kPairs: the rows
// where pairs fit in direct_pairs, the others in direct_rows.
template <int KW, int SW, bool kPairs>
void band_direct(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy0,
                 int64_t oy1) {
  if constexpr (kPairs) {
    const int64_t row = p.out_w * p.c_out;
    int64_t first = oy0;  // the first pair's top row
    while (first < oy1 && !(first + 1 < oy1 && pair_fits(p, first))) ++first;
    int64_t end = first;
    while (end + 1 < oy1 && pair_fits(p, end)) end += 2;
    if (first > oy0) direct_rows<KW, SW, false>(p, xn, w, b, y, oy0, first);
    if (end > first) direct_pairs<KW, SW>(p, xn, w, b, y + (first - oy0) * row, first, end);
    if (oy1 > end) direct_rows<KW, SW, false>(p, xn, w, b, y + (end - oy0) * row, end, oy1);
  } else {
    direct_rows<KW, SW, false>(p, xn, w, b, y, oy0, oy1);
  }
}

// One output row (M = 1, C >= kLanes, geometries without a staged kernel): clipped_pixel everywhere.
void row_clipped(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy) {
  const KernelRows rows = p.rows_inside(oy);
  for (int64_t ox = 0; ox < p.out_w; ++ox) clipped_pixel(p, xn, w, b, rows, ox, y + ox * p.c_out);
}

// One output row, any M and C: per pixel and channel block, input lanes gathered as x[co / M].
void row_any(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy) {
  const KernelRows rows = p.rows_inside(oy);
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

// M = 1 with C below one vector (images of 1-7 channels): one pixel per vector, each tap's weights
// one vector zero padded past C (pack_weights). Each tap's input is a full vector that reaches into
// the next pixel's channels (lanes that meet zero weights and are never stored) unless it could
// leave the image; each pixel stores a full vector whose extra lanes the next pixel's store
// overwrites, except the row's last pixels. Q pixels at a time: independent chains of FMAs (one
// pixel's taps form a chain bound by the FMA latency). row_any's per-lane gathers took ~20x longer.
// kInside: no load of this output row can reach past the image (its window stays above the last
// input row: a partial load in the same loop kept the accumulators on the stack); kWhole: every tap
// of the Q pixels lies inside the row (no column checks).
template <int Q, bool kInside, bool kWhole>
static inline void narrow_pixels(const Conv2dParams& p, const KernelRows& rows, const float* xn, const float* w,
                                 vfloat bias, float* y, int64_t ox0) {
  const int64_t c = p.c_in, image_floats = p.h * p.w * c, row_floats = p.out_w * c;
  vfloat acc[Q];
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) acc[q] = bias;
  for (int64_t ky = rows.ky0; ky < rows.ky1; ++ky) {
    const int64_t row_start = (rows.iy0 + ky * p.dilation_h) * p.w * c;
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const vfloat wk = vec::load(w + (ky * p.kw + kx) * kLanes);
#pragma GCC unroll 4
      for (int q = 0; q < Q; ++q) {
        const int64_t ix = (ox0 + q) * p.stride_w - p.pad_left + kx * p.dilation_w;
        if (!kWhole && (ix < 0 || ix >= p.w)) continue;
        const int64_t at = row_start + ix * c;
        acc[q] += (kInside || at + kLanes <= image_floats ? vec::load(xn + at) : vec::load_partial(xn + at, c)) * wk;
      }
    }
  }
#pragma GCC unroll 4
  for (int q = 0; q < Q; ++q) {  // in order: each full store's extra lanes are overwritten by the next
    const vfloat out = vec::activate(p.activation, acc[q]);
    const int64_t at = (ox0 + q) * c;
    if (at + kLanes <= row_floats) {
      vec::store(y + at, out);
    } else {
      vec::store_partial(y + at, out, c);
    }
  }
}

void row_narrow(const Conv2dParams& p, const float* xn, const float* w, const float* b, float* y, int64_t oy) {
  const KernelRows rows = p.rows_inside(oy);
  const vfloat bias = b ? vec::load_partial(b, p.c_in) : vfloat{};
  const int64_t last_row = rows.ky1 > rows.ky0 ? rows.iy0 + (rows.ky1 - 1) * p.dilation_h : 0;
  int64_t ox = 0;
  if (last_row < p.h - 1 && p.w * p.c_in >= kLanes) {
    // Pixels whose windows lie inside the row: [whole0, whole1).
    const int64_t last_tap = (p.kw - 1) * p.dilation_w;
    const int64_t whole0 = min_i64(p.out_w, (p.pad_left + p.stride_w - 1) / p.stride_w);
    const int64_t room = p.w - 1 - last_tap + p.pad_left;  // the last window start inside the row
    const int64_t whole1 = max_i64(whole0, room >= 0 ? min_i64(p.out_w, room / p.stride_w + 1) : 0);
    for (; ox < whole0; ++ox) narrow_pixels<1, true, false>(p, rows, xn, w, bias, y, ox);
    for (; ox + 4 <= whole1; ox += 4) narrow_pixels<4, true, true>(p, rows, xn, w, bias, y, ox);
    for (; ox < p.out_w; ++ox) narrow_pixels<1, true, false>(p, rows, xn, w, bias, y, ox);
  } else {
    for (; ox < p.out_w; ++ox) narrow_pixels<1, false, false>(p, rows, xn, w, bias, y, ox);
  }
}

using StagedFn = void (*)(const Conv2dParams&, RowStage&, int64_t, const float*, const float*, float*, int64_t);
using StagedBandFn = void (*)(const Conv2dParams&, RowStage&, int64_t, const float*, const float*, float*, int64_t,
                              int64_t);
using BandFn = void (*)(const Conv2dParams&, const float*, const float*, const float*, float*, int64_t, int64_t);
using RowFn = void (*)(const Conv2dParams&, const float*, const float*, const float*, float*, int64_t);

// Staged rows cost one copy of the input; they pay off with M > 1 (no gathers) and when the
// input and output are far past the caches (one sequential stream per input row). Above this
// many bytes the input and output are assumed to come from DRAM: the last-level cache where it is
// an AMD core complex's 32 MiB or less, else twice the (capped) size. On a Xeon whose guest reported
// 300 MiB, with prefetch_store, 8x56x56x240 3x3 ran direct in 0.70 of the staged time, 8x28x28x672
// 5x5 in 0.69, 8x112x112x144 3x3 s2 in 0.73; at 100-120 MB the two tie, 0.84-1.10. On a Zen 3's 32
// MiB the other way round: staged, 8x56x56x240 3x3 in 0.58 of the direct time, 4x112x112x96 0.6,
// 8x112x112x96 s2 0.6, 2x112x112x144 0.8, 8x28x28x672 5x5 0.9 (2 threads; as on the Zen 4 before
// the direct blocks prefetched their outputs).
constexpr int64_t kStageAtCacheMaxBytes = int64_t{32} << 20;
static int64_t stage_min_bytes() {
  const int64_t cache = last_level_cache_bytes();
  return cache <= kStageAtCacheMaxBytes ? cache : 2 * cache;
}
// Whether direct_rows' first and last blocks (8 pixels, 4 on rows narrower than 8) each reach
// the padding on their own side only, as their LO / HI taps assume. Narrower rows, or narrow ones
// with padding that a block spans, are staged; so are 3x3 stride 1 rows of 4-7, where no gain
// could be shown (bench/NOTES.md, depthwise round 7).
bool border_blocks_fit(const Conv2dParams& p) {
  if (p.out_w < 8 && p.kw == 3 && p.stride_w == 1) return false;
  const int64_t np = p.out_w >= 8 ? 8 : 4;
  return p.out_w >= 4 && (np - 1) * p.stride_w - p.pad_left + p.kw <= p.w && (p.out_w - np) * p.stride_w >= p.pad_left;
}
// Channel counts that are multiples of 512 floats put a row's pixels a multiple of 2 KB apart: a
// block's 10 window columns x 3 rows of one channel block fall in 2 of L1's 64 sets (16 lines) and
// evict each other before the next channel block reads the other half of each line (1x7x7x1024 ran
// at half the speed of 1x7x7x960). Such layers are staged, each staged pixel one cache line longer
// than its channels (staged_pixel_stride). At 256 and 768 channels the columns spread over 4 sets,
// enough ways, and staging measured 1.2-1.4x slower.
constexpr int64_t kAliasedChannels = 512;
int64_t staged_pixel_stride(const Conv2dParams& p) {
  return p.c_out % kAliasedChannels == 0 ? p.c_out + 16 : p.c_out;
}
// A depthwise multiply-add costs about twice a dense one (each input vector feeds only the KW
// outputs of its row), so half the dense threshold buys the same ~10 us of one thread's work:
// 1x7x7x960 3x3 and 1x14x14x672 3x3 s2 ran 0.64-0.73 of their one-thread time on two threads.
constexpr int64_t kParallelMinMacs = kParallelMinWork / 2;
// An activation with an exponential (sigmoid, tanh, SiLU) costs ~12 cycles per output vector, about
// as much as 6 depthwise multiply-adds per output: 2x17x17x48 3x3 with tanh (250 K MACs) took 14.4
// us on one thread, 6.1 without, and 0.62 of the time on two threads.
constexpr int64_t kExponentialMacs = 6;
// Outputs at least this large are written with non-temporal stores on the staged path: they are
// past L2 and a quarter of the last-level cache, and streaming them skips the read for ownership of
// every output line.
static int64_t stream_min_bytes() { return last_level_cache_bytes() / 4; }

// The input rows one output row of the direct path reads, all channels: its window.
int64_t direct_window_bytes(const Conv2dParams& p) {
  return ((p.kh - 1) * p.dilation_h + 1) * p.w * p.c_in * int64_t{sizeof(float)};
}

// Output rows per band (the direct path's and rows_staged_strips'): about four bands per thread, at
// least KH rows where the threads' shares allow, at most kMaxBandRows (their arrays of rows).
int64_t rows_per_band(const Conv2dParams& p, int nthreads) {
  const int64_t all_rows = p.n * p.out_h;
  return min_i64(min_i64(kMaxBandRows, p.out_h),
                 max_i64(all_rows / (4 * int64_t{nthreads}), min_i64(p.kh, ceil_div(all_rows, nthreads))));
}

// Whether direct_rows should run its blocks as columns (pixel_column) down bands of rows: where no
// pairs run and the input rows one output row reads (its window) are past L1 but within a quarter
// of L2. Row by row, each output row read its KH rows again from L2; down a column the block's
// window stays in L1. In-process against rows, 2 threads: 1x35x35x256 5x5 0.79-0.91 of the time,
// 8x35x35x120 5x5 0.85-0.89, 2x28x28x576 5x5 0.82-0.94, 1x28x28x240 5x5 0.90-0.93, 8x7x7x1152 5x5
// 0.80-0.89, 1x14x14x576 3x3 0.76-0.94, 1x27x27x192 5x5 s2 0.79; 1x7x7x1152 5x5 0.95-1.12 and
// 8x14x14x384 3x3 (window 64 KB) 1.00-1.28 lost. Windows within L1 lost (1x10x10x256 3x3 1.15x,
// 8x10x10x100 5x5 1.11x), so did larger ones (2x28x28x960 5x5, 538 KB: 0.90-1.23; 1x28x28x768, 430
// KB: 1.00); with pairs, columns lost 1.1-1.8x (bench/NOTES.md).
bool columns_pay(const Conv2dParams& p) {
  const int64_t window = direct_window_bytes(p);
  return window > l1_cache_bytes() && window <= l2_cache_bytes() / 4;
}

// The kernels chosen for a call: band (direct_rows / direct_pairs) when set, else staged when set,
// else direct; staged_pair only with staged.
struct Path {
  BandFn band = nullptr;
  bool pairs = false;    // band takes rows in pairs where they fit
  bool columns = false;  // band is direct_rows' column blocks, in bands of rows
  StagedFn staged = nullptr, staged_pair = nullptr;
  RowFn direct = nullptr;
  bool general = false;  // staged is row_staged_general: packed weights, padded staged pixels
  bool narrow = false;   // direct is row_narrow: packed weights
  StagedBandFn strips = nullptr;  // with general: bands of rows a column strip at a time (rows_staged_strips)
};

template <int KW, int SW, bool ST>
void pick_staged(const Conv2dParams& p, Path* path) {
  path->staged = row_staged<KW, SW, ST>;
  if constexpr (KW == 3) {
    if (p.kh == 3 && p.stride_h == SW && p.dilation_h == 1 && p.out_w >= 4) path->staged_pair = row_staged_pair<SW, ST>;
  }
}

// stream: non-temporal output stores (staged kernels only: the direct path's output fits in L3).
template <int KW, int SW>
bool pick(const Conv2dParams& p, bool stream, Path* path) {
  if (p.kw != KW || p.stride_w != SW) return false;
  const int64_t bytes = (p.n * p.h * p.w * p.c_in + p.n * p.out_h * p.out_w * p.c_out) * int64_t{sizeof(float)};
  // direct_rows' border blocks cover padding up to KW - 1 columns a side; wider padding is staged.
  if (p.c_out != p.c_in || bytes >= stage_min_bytes() || p.pad_left >= KW || right_overhang(p) >= KW ||
      !border_blocks_fit(p) || p.c_out % kAliasedChannels == 0) {
    stream ? pick_staged<KW, SW, true>(p, path) : pick_staged<KW, SW, false>(p, path);
  } else {
    path->band = band_direct<KW, SW, false>;
    if constexpr (KW == 3) {
      // Stride 1 pairs (blocks of 4) on rows narrower than 16: 1x14x14x576 1.16x slower than single rows.
      if (p.kh == 3 && p.stride_h == SW && p.dilation_h == 1 && (p.out_w >= 16 || SW == 2)) {
        path->band = band_direct<3, SW, true>;
        path->pairs = true;
      }
    }
    if constexpr (KW == 5 && kLanes == 16) {
      // 5x5 pairs (32 registers: AVX-512 only) where they measured faster than single rows: 0.82-0.89
      // of the time at stride 2, 0.84-0.94 at stride 1 on 14 and 56 columns; 30-35 columns ties, and
      // 28 (direct_rows' 10 | 8 | 10) 1.03-1.14x slower. Between 15 and 23 columns an interior block
      // of 8 would overlap the border blocks.
      const int64_t ow = p.out_w;
      if (p.kh == 5 && p.stride_h == SW && p.dilation_h == 1 && (ow == 14 || ow >= (SW == 2 ? 24 : 48))) {
        path->band = band_direct<5, SW, true>;
        path->pairs = true;
      }
    }
    if (!path->pairs && columns_pay(p)) {
      path->band = direct_rows<KW, SW, true>;
      path->columns = true;
    }
  }
  return true;
}

// row_staged_general for kernel width kw: pieces of kw columns up to kMaxPiece, else of its largest
// divisor up to kMaxPiece (9 = 3 x 3; a prime width runs in single columns).
template <int SW, bool ST>
StagedFn general_row(int64_t kw) {
  int64_t piece = kMaxPiece;
  while (kw % piece) --piece;
  switch (piece) {
    case 1: return row_staged_general<SW, 1, ST>;
    case 2: return row_staged_general<SW, 2, ST>;
    case 3: return row_staged_general<SW, 3, ST>;
    case 4: return row_staged_general<SW, 4, ST>;
    case 5: return row_staged_general<SW, 5, ST>;
    case 6: return row_staged_general<SW, 6, ST>;
    default: return row_staged_general<SW, 7, ST>;
  }
}

template <int SW>
StagedBandFn strips_row(int64_t kw) {
  int64_t piece = kMaxPiece;
  while (kw % piece) --piece;
  switch (piece) {
    case 1: return rows_staged_strips<SW, 1>;
    case 2: return rows_staged_strips<SW, 2>;
    case 3: return rows_staged_strips<SW, 3>;
    case 4: return rows_staged_strips<SW, 4>;
    case 5: return rows_staged_strips<SW, 5>;
    case 6: return rows_staged_strips<SW, 6>;
    default: return rows_staged_strips<SW, 7>;
  }
}

// The staged pixel stride of row_staged_general: its channels rounded up to whole cache lines, plus one
// line when that is an even number of them. A general block reads up to 14 window columns of up
// to 7 kernel rows per channel block; at a stride of 2^k lines (C = 128: 512 bytes) they all fall
// in 64 / 2^k of L1's 64 sets and evict each other before the next channel block reads the other
// half of each line (1x56x56x128 7x7: 14 GFMA/s against 22 at C = 96). An odd number of lines
// spreads one row's columns over distinct sets.
int64_t general_pixel_stride(int64_t channels) {
  const int64_t lines = (channels + 15) / 16;
  return (lines | 1) * 16;
}

// The channels row_staged_general stages per pixel (M = 1, not streaming): all C while the ring
// of staged rows fits in half of a core's L2, else equal slabs of whole vectors that do, each slab
// run over consecutive output rows (the work items, slab by slab). With the whole ring past L2,
// each output row re-read its KH input rows from L3 or DRAM: 1x73x73x960 7x7 s2 (a 2 MB ring on a
// 2 MB L2) ran 2.4x slower per channel than at 240 channels. Slabs measured 0.66 of the time
// there, 0.82 at 1x56x56x768 7x7; budgets of 0.35 and 0.8 of L2 were 1.04-1.23x slower than half.
int64_t slab_channels(const Conv2dParams& p, bool stream) {
  if (stream || p.c_out != p.c_in) return p.c_out;
  const int64_t slots = (p.kh - 1) * p.dilation_h + 1, budget = max_i64(1, l2_cache_bytes() / 2);
  const int64_t ring = slots * (p.pad_left + p.w + p.kw) * general_pixel_stride(p.c_out) * int64_t{sizeof(float)};
  if (ring <= budget) return p.c_out;
  const int64_t per_slab = ceil_div(p.c_out, ceil_div(ring, budget));
  return min_i64(p.c_out, ceil_div(per_slab, kLanes) * kLanes);
}

// Output rows per work item of band_direct: one (two with pairs) while the input rows an output
// row reads fit in half of L2, where the next row finds all but one of them. Past that (five rows
// of 1x112x112x960, 2.15 MB) they came from L3 again for every output row; in bands (as the strips
// of rows_staged_strips, up to kMaxBandRows) each block of pixels runs down the band before the
// next, its columns of the band's rows staying in L2: 0.85 of the time there, 0.87 on 1x112x112x768
// 5x5 stride 2, 0.93-0.96 on 1x112x112x960 3x3 and 1x112x112x480 5x5; with smaller windows bands
// tied rows (1x73x73x576 5x5, 1x112x112x384 5x5: 0.98-1.00) or lost (1x224x224x192 3x3: 1.12x slower).
int64_t direct_band_rows(const Conv2dParams& p, int nthreads, bool pairs, bool columns) {
  if (!columns && direct_window_bytes(p) <= l2_cache_bytes() / 2) return pairs ? 2 : 1;
  const int64_t band = rows_per_band(p, nthreads);
  return pairs ? max_i64(2, band / 2 * 2) : band;
}

Path choose_path(const Conv2dParams& p, bool stream) {
  Path path;
  path.narrow = p.c_out == p.c_in && p.c_in < kLanes;
  path.direct = path.narrow ? row_narrow : p.c_out == p.c_in ? row_clipped : row_any;
  if (p.c_out < kLanes || p.kh > 64) return path;
  if (p.dilation_w == 1 && (pick<3, 1>(p, stream, &path) || pick<3, 2>(p, stream, &path) ||
                            pick<5, 1>(p, stream, &path) || pick<5, 2>(p, stream, &path))) {
    return path;
  }
  if (p.dilation_w > 1 && p.stride_w == 1 && (p.kw == 3 || p.kw == 5)) {
    path.staged = p.kw == 3 ? row_staged_dilated<3> : row_staged_dilated<5>;
    return path;
  }
  // A one-column kernel shares no input between neighbouring outputs: for M = 1 the rows are read in
  // place by row_clipped (1x28x28x128 7x1: staged 1.18x slower).
  if (p.kw == 1 && p.c_out == p.c_in) return path;
  const int64_t gcd = gcd_i64(p.stride_w, p.dilation_w), sw = p.stride_w / gcd;
  // Streaming needs each block's outputs contiguous: one set of columns (q = 1, dilation_w
  // dividing stride_w).
  const bool st = stream && p.dilation_w == gcd;
  if (sw == 1) {
    path.staged = st ? general_row<1, true>(p.kw) : general_row<1, false>(p.kw);
  } else if (sw == 2) {
    path.staged = st ? general_row<2, true>(p.kw) : general_row<2, false>(p.kw);
  }
  path.general = path.staged != nullptr;
  if (path.general && !st && p.dilation_w == gcd) path.strips = sw == 1 ? strips_row<1>(p.kw) : strips_row<2>(p.kw);
  return path;
}

// row_staged_general's weights: for each channel block (the last overlapping the one before, as
// general_block takes them) its KH x KW vectors, contiguous. In place they are C floats apart, the
// same set-conflicting stride as the input for C a multiple of 128. The buffer is the calling
// thread's and kept between calls (see RowStage).
const float* pack_weights(const Conv2dParams& p, const float* w) {
  static thread_local std::vector<float> packed;
  const int64_t c = p.c_out, taps = p.kh * p.kw, blocks = (c + kLanes - 1) / kLanes;
  packed.resize(static_cast<size_t>(blocks * taps * kLanes));
  if (c < kLanes) {  // row_narrow: one vector per tap, zero past C
    for (int64_t t = 0; t < taps; ++t) {
      for (int64_t j = 0; j < kLanes; ++j) packed[static_cast<size_t>(t * kLanes + j)] = j < c ? w[t * c + j] : 0.0f;
    }
    return packed.data();
  }
  for (int64_t blk = 0; blk < blocks; ++blk) {
    const int64_t c0 = min_i64(blk * kLanes, c - kLanes);
    for (int64_t t = 0; t < taps; ++t) {
      std::memcpy(packed.data() + (blk * taps + t) * kLanes, w + t * c + c0, kLanes * sizeof(float));
    }
  }
  return packed.data();
}

}  // namespace

void depthwise(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  // Outputs far past the caches are written around them (16-byte non-temporal stores: every store
  // address is y plus a multiple of 4 floats when C is).
  const bool stream = p.n * p.out_h * p.out_w * p.c_out * int64_t{sizeof(float)} >= stream_min_bytes() &&
                      vec::streamable(y) && p.c_out % 4 == 0;
  const Path path = choose_path(p, stream);
  const bool packs = path.general || path.narrow;
  // Work items: one output row, or two (rows 2i and 2i + 1 of an image) with the pair kernels.
  const int64_t step = path.staged_pair ? 2 : 1, per_image = (p.out_h + step - 1) / step;
  // One image whose output rows span less than two kernel heights of input (7x7 on a 7 x 7 map):
  // each thread would stage nearly every input row for its few output rows. Two threads ran 1.4-1.5x
  // slower than one on 1x7x7x576 7x7 stride 2 and tied at stride 1.
  const bool rows_shared = path.staged && p.n == 1 && p.out_h * p.stride_h < 2 * p.kh;
  const int nthreads =
      rows_shared ? 1
                  : threads_for(p.n * p.out_h * p.out_w * p.c_out *
                                    (p.kh * p.kw + (has_exponential(p.activation) ? kExponentialMacs : 0)),
                                threads, kParallelMinMacs);
  if (path.band) {
    const int64_t rows = direct_band_rows(p, nthreads, path.pairs, path.columns), per = ceil_div(p.out_h, rows);
    const int64_t chunk = max_i64(1, p.n * per / (4 * int64_t{nthreads}));
    parallel_run(nthreads, [&] {
#pragma omp for schedule(dynamic, chunk)
      for (int64_t i = 0; i < p.n * per; ++i) {
        const int64_t n = i / per, oy0 = i % per * rows, oy1 = min_i64(oy0 + rows, p.out_h);
        path.band(p, x + n * p.h * p.w * p.c_in, w, b, y + (n * p.out_h + oy0) * p.out_w * p.c_out, oy0, oy1);
      }
    });
    return;
  }
  // Strips: bands as the staged chunks below (about four per thread, at least KH rows where the
  // threads' shares allow), as many rows as keep the band's staged rows of every channel within half
  // of L2 (slab_channels' budget); fewer than kMinBandRows fit: rows, and slabs where needed.
  int64_t band = path.strips ? rows_per_band(p, nthreads) : 1;
  if (path.strips) {
    const int64_t row_bytes = (p.pad_left + p.w + p.kw) * general_pixel_stride(p.c_out) * int64_t{sizeof(float)};
    const int64_t fit_rows = l2_cache_bytes() / 2 / row_bytes - (p.kh - 1) * p.dilation_h - 1;
    band = min_i64(band, fit_rows < 0 ? 0 : fit_rows / p.stride_h + 1);
  }
  const StagedBandFn strips = band >= kMinBandRows ? path.strips : nullptr;
  if (!strips) band = 1;
  const int64_t bands_per_image = ceil_div(p.out_h, band);
  // Slabs start every `slab` channels; the last one takes the rest (kLanes to slab + kLanes - 1).
  const int64_t slab = path.general && !strips ? slab_channels(p, stream) : p.c_out;
  const int64_t slabs = slab < p.c_out ? (p.c_out - kLanes) / slab + 1 : 1;
  const int64_t last_slab = p.c_out - (slabs - 1) * slab, widest_slab = max_i64(slab, last_slab);
  const int64_t items = p.n * slabs * per_image;
  // Chunks of consecutive items (they share staged input rows), about four per thread: a thread
  // that is preempted on a shared machine leaves its remaining chunks to the others. Eight per
  // thread restaged more rows (a 7x7 chunk of 3 rows copies 9) and ran 1.0-1.1x slower.
  // Staged rows: chunks of at least KH rows where the threads' shares allow (1x14x14x384 7x7 went
  // in chunks of one row, each staging 7 input rows: 0.95 of the time with chunks of 7).
  const int64_t chunk = max_i64(max_i64(1, items / (4 * int64_t{nthreads})),
                                path.staged ? min_i64(p.kh, (items + nthreads - 1) / nthreads) : 1);
  const int64_t pixel_stride = path.general ? general_pixel_stride(widest_slab) : staged_pixel_stride(p);
  parallel_run(nthreads, [&] {
    // Each thread packs its own copy (pack_weights' buffer is the thread's): one copy packed by the
    // calling thread and read by all had to come back from their caches at the next call's pack.
    const float* wk = packs ? pack_weights(p, w) : w;
    std::optional<RowStage> stage;
    if (path.staged) stage.emplace(p, x, path.staged_pair ? 2 : band, pixel_stride);
    if (strips) {
#pragma omp for schedule(dynamic, 1)
      for (int64_t i = 0; i < p.n * bands_per_image; ++i) {
        const int64_t n = i / bands_per_image, oy0 = i % bands_per_image * band, oy1 = min_i64(oy0 + band, p.out_h);
        strips(p, *stage, n, wk, b, y + (n * p.out_h + oy0) * p.out_w * p.c_out, oy0, oy1);
      }
      return;
    }
#pragma omp for schedule(dynamic, chunk)
    for (int64_t i = 0; i < items; ++i) {
      const int64_t n = i / (slabs * per_image), oy = i % per_image * step;
      if (slabs > 1) {
        const int64_t s = i / per_image % slabs;
        stage->set_slab(s * slab, s + 1 < slabs ? slab : last_slab);
      }
      const float* xn = x + n * p.h * p.w * p.c_in;
      float* yr = y + (n * p.out_h + oy) * p.out_w * p.c_out;
      if (path.staged_pair && pair_fits(p, oy)) {
        path.staged_pair(p, *stage, n, wk, b, yr, oy);
      } else {
        for (int64_t r = oy; r < min_i64(oy + step, p.out_h); ++r, yr += p.out_w * p.c_out) {
          path.staged ? path.staged(p, *stage, n, wk, b, yr, r) : path.direct(p, xn, wk, b, yr, r);
        }
      }
    }
    if (stream) vec::stream_fence();
  });
}

}  // namespace fastconv::cpu::FC_ISA
