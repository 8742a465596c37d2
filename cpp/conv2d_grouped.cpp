// Grouped 2-D convolution with fewer output channels per group than a vector holds (ResNeXt's 4 and
// 8 per group), NHWC, HWIO weights (KH, KW, C_in / groups, C_out). Compiled once per instruction
// set; see kernels.h.
//
// The tiled engine (conv2d.cpp) holds one group's output channels in a vector: 4 of 16 lanes busy
// at 4 per group. Here the lanes run across groups, as the depthwise kernels hold channels in lanes:
// lane l of the vector at output channel c0 computes channel c0 + l, of group g(l) = (c0 + l) / C_out_g,
// whose input channel ci is x[..., g(l) * C_in_g + ci]. Those channels lie in one input vector (at
// `base`, the vector's groups' first input channel), so the input a lane needs is that vector permuted,
// one permutation per ci (lanes_for, checked by grouped_lanes_fit). An output block is NP pixels of
// one channel vector in registers, accumulated over (ky, ci, kx): each input vector of the block's
// window rows is loaded and permuted once per (ky, ci) and fed to every pixel whose window covers it,
// and the KW weights of (ky, ci) are loaded once per block, from a per-call copy that keeps each
// channel vector's weights contiguous. Blocks whose windows leave the input (padding) drop those
// columns' taps; the last block of a row overlaps its neighbour instead of masking. Bias and
// activation are applied before the store. Threads take bands of output rows (over chunks of the
// channel vectors on maps of few rows).
#include <omp.h>

#include <cstring>
#include <vector>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

using vec::kLanes;
using vec::vfloat;
using vec::vint;

// Work items per thread: bands of output rows, taken dynamically, each over all channel vectors (the
// input rows an output row reads then come from DRAM once); on maps of too few rows for that many
// bands, over chunks of the channel vectors.
constexpr int64_t kItemsPerThread = 4;

// The output channel of channel vector v: the last vector overlaps its neighbour.
int64_t vector_channel(const Conv2dParams& p, int64_t v) { return min_i64(v * kLanes, p.c_out - kLanes); }

// A group's input channels must fit one vector with the rest of the vector's groups.
constexpr int kMaxGroupedCin = kLanes;

// The input vector of the vector at output channel c0, and the lanes it gives group input channel ci.
struct VectorLanes {
  int64_t base;
  vint index[kMaxGroupedCin];
};

// The base of the vector at output channel c0: its first group's first input channel, moved back to
// keep the vector inside the pixel's C_in channels.
int64_t lanes_base(const Conv2dParams& p, int64_t c0) {
  return min_i64(c0 / p.c_out_per_group() * p.c_in_per_group(), p.c_in - kLanes);
}

// The highest lane index the vector at output channel c0 needs: its last lane's group's last input
// channel, from the base.
int64_t lanes_reach(const Conv2dParams& p, int64_t c0) {
  const int64_t cig = p.c_in_per_group();
  return (c0 + kLanes - 1) / p.c_out_per_group() * cig + cig - 1 - lanes_base(p, c0);
}

VectorLanes lanes_for(const Conv2dParams& p, int64_t c0) {
  const int64_t cig = p.c_in_per_group(), cog = p.c_out_per_group();
  VectorLanes vl{};
  vl.base = lanes_base(p, c0);
  // Lane l's group, (c0 + l) / C_out_g, counted up instead of divided out.
  vint first{};
  for (int64_t l = 0, g = c0 / cog, in_group = c0 % cog; l < kLanes; ++l) {
    first[l] = static_cast<int32_t>(g * cig - vl.base);
    if (++in_group == cog) in_group = 0, ++g;
  }
  for (int64_t ci = 0; ci < cig; ++ci) vl.index[ci] = first + static_cast<int32_t>(ci);
  return vl;
}

// The arguments of one block of output pixels of one channel vector.
struct BlockArgs {
  const float* const* rows;  // per valid kernel row: the input row at the block's first window column
  int64_t nrows;
  int64_t ix0;       // the block's first window column (negative in the left padding)
  const vint* index;  // per group input channel: the lanes' permutation
  const float* w;    // the vector's packed weights at (first valid ky, kx 0, ci 0)
  const float* b;    // bias at c0, or null
  float* y;          // output pixel 0 of the block at c0
};

// NP pixels, KW and the stride SW known at compile time (dilation_w 1). The first LO and last HI of
// the block's input columns lie in the padding: their taps are dropped at compile time, so border
// blocks keep the interior's code (a run-time check per column ran 16-wide maps, all border blocks,
// at two thirds of the interior's rate).
template <int KW, int SW, int NP, int LO, int HI>
void pixel_block(const Conv2dParams& p, const BlockArgs& a) {
  constexpr int kInputs = (NP - 1) * SW + KW;  // input columns the block's windows cover
  const int64_t cig = p.c_in_per_group(), c_in = p.c_in, c_out = p.c_out;
  vfloat acc[NP];
  const vfloat bias = a.b ? vec::load(a.b) : vfloat{};
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j) acc[j] = bias;
  for (int64_t r = 0; r < a.nrows; ++r) {
    const float* wr = a.w + r * KW * cig * kLanes;
    for (int64_t ci = 0; ci < cig; ++ci, wr += kLanes) {
      const vint index = a.index[ci];
      vfloat wk[KW];
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) wk[kx] = vec::load(wr + kx * cig * kLanes);
      const float* xp = a.rows[r];
#pragma GCC unroll 32
      for (int i = 0; i < kInputs; ++i, xp += c_in) {
        if (i < LO || i >= kInputs - HI) continue;
        const vfloat v = __builtin_shuffle(vec::load(xp), index);
#pragma GCC unroll 16
        for (int j = 0; j < NP; ++j) {
          const int kx = i - j * SW;  // a constant once unrolled
          if (kx >= 0 && kx < KW) acc[j] += v * wk[kx];
        }
      }
    }
  }
#pragma GCC unroll 16
  for (int j = 0; j < NP; ++j) vec::store(a.y + j * c_out, vec::activate(p.activation, acc[j]));
}

// Any kernel width, stride, dilation and border: tap by tap.
template <int NP>
void pixel_block_any(const Conv2dParams& p, const BlockArgs& a) {
  const int64_t cig = p.c_in_per_group(), c_in = p.c_in, c_out = p.c_out;
  vfloat acc[NP];
  const vfloat bias = a.b ? vec::load(a.b) : vfloat{};
  for (int j = 0; j < NP; ++j) acc[j] = bias;
  for (int64_t r = 0; r < a.nrows; ++r) {
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const float* wr = a.w + (r * p.kw + kx) * cig * kLanes;
      for (int j = 0; j < NP; ++j) {
        const int64_t col = j * p.stride_w + kx * p.dilation_w;
        if (a.ix0 + col < 0 || a.ix0 + col >= p.w) continue;
        const vfloat x = vec::load(a.rows[r] + col * c_in);
        for (int64_t ci = 0; ci < cig; ++ci) acc[j] += __builtin_shuffle(x, a.index[ci]) * vec::load(wr + ci * kLanes);
      }
    }
  }
  for (int j = 0; j < NP; ++j) vec::store(a.y + j * c_out, vec::activate(p.activation, acc[j]));
}

// Every cache line of [from, to) into L2.
void prefetch_l2(const float* from, const float* to) {
  for (const char* line = reinterpret_cast<const char*>(from); line < reinterpret_cast<const char*>(to); line += 64) {
    __builtin_prefetch(line, 0, 2);
  }
}

using BlockFn = void (*)(const Conv2dParams&, const BlockArgs&);

// The block kernels of one output row, NP pixels a block (row_kernels). fixed[lo][hi]:
// blocks with lo (hi) of their input columns in the left (right) padding, when the geometry has
// compiled ones; `any` takes the rest.
struct RowKernels {
  int np;
  BlockFn fixed[2][2];
  BlockFn any;
};

template <int KW, int SW, int NP>
RowKernels fixed_kernels() {
  return {NP,
          {{pixel_block<KW, SW, NP, 0, 0>, pixel_block<KW, SW, NP, 0, 1>},
           {pixel_block<KW, SW, NP, 1, 0>, pixel_block<KW, SW, NP, 1, 1>}},
          pixel_block_any<NP>};
}

template <int NP>
RowKernels any_kernels() {
  return {NP, {{nullptr, nullptr}, {nullptr, nullptr}}, pixel_block_any<NP>};
}

template <int NP>
RowKernels row_kernels_np(const Conv2dParams& p) {
  if (p.kw == 3 && p.dilation_w == 1 && p.stride_w == 1) return fixed_kernels<3, 1, NP>();
  if (p.kw == 3 && p.dilation_w == 1 && p.stride_w == 2) return fixed_kernels<3, 2, NP>();
  return any_kernels<NP>();
}

// Blocks of 8 pixels; of 7 where that tiles the row and 8 would not (rows of 7, 14, 28: blocks of 8
// overlapped and computed 8 / 7 of the pixels); 4 and 1 on rows narrower than 7.
RowKernels row_kernels(const Conv2dParams& p) {
  if (p.out_w % 8 != 0 && p.out_w % 7 == 0) return row_kernels_np<7>(p);
  return p.out_w >= 8 ? row_kernels_np<8>(p) : p.out_w >= 4 ? row_kernels_np<4>(p) : row_kernels_np<1>(p);
}

}  // namespace

bool grouped_lanes_fit(const Conv2dParams& p) {
  if (p.groups <= 1 || p.c_out_per_group() >= kLanes || p.c_out < kLanes || p.c_in < kLanes ||
      p.c_in_per_group() > kMaxGroupedCin) {
    return false;
  }
  for (int64_t v = 0; v < ceil_div(p.c_out, kLanes); ++v) {
    if (lanes_reach(p, vector_channel(p, v)) >= kLanes) return false;
  }
  return true;
}

void grouped_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  const int64_t cig = p.c_in_per_group();
  const int64_t total_vecs = ceil_div(p.c_out, kLanes);
  const int64_t out_rows = p.n * p.out_h;
  const int nthreads = threads_for(out_rows * p.out_w * p.c_out * p.kh * p.kw * cig, threads);
  const int64_t bands = min_i64(out_rows, kItemsPerThread * nthreads);
  const int64_t chunk_vecs = ceil_div(total_vecs, min_i64(total_vecs, ceil_div(kItemsPerThread * nthreads, bands)));
  const int64_t chunks = ceil_div(total_vecs, chunk_vecs);
  // Each channel vector's weights contiguous, [v][ky][kx][ci][kLanes]. In place a vector's KH * KW *
  // C_in_g rows lie C_out floats apart: at C_out = 256, 72 lines in 4 of L1's 64 sets, beside the
  // input's window columns in 4 more (packed: 1x28x28x256 g32 0.88 of the time, 128 channels 0.99).
  const int64_t taps = p.kh * p.kw * cig;
  float* w_packed = alloc_floats(total_vecs * taps * kLanes);
  std::vector<VectorLanes> lanes(static_cast<size_t>(total_vecs));
  for (int64_t v = 0; v < total_vecs; ++v) lanes[v] = lanes_for(p, vector_channel(p, v));
  std::vector<const float*> row_lists(static_cast<size_t>(nthreads * 2 * p.kh));
  const RowKernels kernels = row_kernels(p);
  const int64_t np = kernels.np;

  parallel_run(nthreads, [&] {
    const float** rows = row_lists.data() + omp_get_thread_num() * 2 * p.kh;  // the valid kernel rows
    const float** block_rows = rows + p.kh;  // the same at one block's first window column
    // Tap by tap, so that each weight row of C_out floats is read once, in order.
#pragma omp for schedule(static)
    for (int64_t t = 0; t < taps; ++t) {
      for (int64_t v = 0; v < total_vecs; ++v) {
        vec::store(w_packed + (v * taps + t) * kLanes, vec::load(w + t * p.c_out + vector_channel(p, v)));
      }
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < chunks * bands; ++item) {
      const int64_t chunk = item / bands, band = item % bands;
      const int64_t v_end = min_i64(total_vecs, (chunk + 1) * chunk_vecs);
      for (int64_t out_row = out_rows * band / bands; out_row < out_rows * (band + 1) / bands; ++out_row) {
        const int64_t n = out_row / p.out_h, oy = out_row % p.out_h;
        const KernelRows kr = p.rows_inside(oy);
        const int64_t iy0 = kr.iy0, ky0 = kr.ky0, ky1 = kr.ky1;
        for (int64_t ky = ky0; ky < ky1; ++ky) rows[ky - ky0] = x + (n * p.h + iy0 + ky * p.dilation_h) * p.w * p.c_in;
        float* y_row = y + out_row * p.out_w * p.c_out;
        const int64_t last_row = iy0 + (p.kh - 1) * p.dilation_h;
        const int64_t next_rows_begin = max_i64(0, last_row + 1);
        const int64_t next_rows_end = min_i64(p.h, last_row + 1 + p.stride_h);
        for (int64_t ox = 0; ox < p.out_w; ox += np) {
          const int64_t first = min_i64(ox, p.out_w - np);
          const int64_t ix0 = first * p.stride_w - p.pad_left;
          const int64_t last_col = ix0 + (np - 1) * p.stride_w + (p.kw - 1) * p.dilation_w;
          const int64_t lo = max_i64(0, -ix0), hi = max_i64(0, last_col - (p.w - 1));
          const BlockFn fixed = lo <= 1 && hi <= 1 ? kernels.fixed[lo][hi] : nullptr;
          const BlockFn block = fixed ? fixed : kernels.any;
          // The input rows the next output row adds, this block's columns of them, into L2: the
          // hardware prefetcher misses rows read a vector at a time 1-4 KB apart (8x56x56x128 ran
          // 1.25x the time without, from L3).
          const int64_t col_begin = ox == 0 ? 0 : max_i64(0, ox * p.stride_w - p.pad_left);
          const int64_t col_end = ox + np >= p.out_w ? p.w : min_i64(p.w, (ox + np) * p.stride_w - p.pad_left);
          for (int64_t iy = next_rows_begin; iy < next_rows_end && col_begin < col_end; ++iy) {
            const float* row = x + (n * p.h + iy) * p.w * p.c_in;
            prefetch_l2(row + col_begin * p.c_in, row + col_end * p.c_in);
          }
          for (int64_t v = chunk * chunk_vecs; v < v_end; ++v) {
            const int64_t c0 = vector_channel(p, v);
            for (int64_t r = 0; r < ky1 - ky0; ++r) block_rows[r] = rows[r] + ix0 * p.c_in + lanes[v].base;
            const float* wv = w_packed + (v * p.kh + ky0) * p.kw * cig * kLanes;
            const BlockArgs a{block_rows, ky1 - ky0, ix0, lanes[v].index, wv, b ? b + c0 : nullptr,
                              y_row + first * p.c_out + c0};
            block(p, a);
          }
        }
      }
    }
  });
  std::free(w_packed);
}

}  // namespace fastconv::cpu::FC_ISA
