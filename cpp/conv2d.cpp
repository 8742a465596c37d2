// Dense 2-D convolution, NHWC activations, HWIO weights (KH, KW, C_in / groups, C_out).
// Compiled once per instruction set (FC_ISA = portable | avx2 | avx512); see kernels.h.
//
// One engine, tiled_conv_impl (every stride / padding / dilation / groups; pointwise convolutions go to
// gemm.cpp, depthwise ones to depthwise.cpp, few-channel first layers to conv2d_first_layer.cpp,
// groups of fewer output channels than a vector to conv2d_grouped.cpp where their inputs fit):
// the register-tiled engine of tiled_conv.h; outputs of at most one vector per group with 3- or
// 5-wide rows at stride 1 or 2 take slide_conv instead (below: each input column broadcast once for
// several pixels). Output pixels are flattened over (n, oy, ox) and cut into tiles of TR consecutive pixels
// (a tile may span output rows); each group's output channels into blocks of TV vectors. Tile
// shape: the narrow kNarrowRows x 1-vector tile when a group's C_out fits one vector (LeNet C1: 6
// channels; groups conv2d_grouped.cpp leaves), else the wide kTileRows x 2-vector tile.
//  - groups == 1: for kernel row ky, a pixel's input window x[n, iy, ix0 .. ix0+KW-1, :] is KW*C_in
//    contiguous floats laid out like the weight rows w[ky, :, :, :], so one reduction of length
//    KW*C_in per kernel row covers every tap and input channel, even for C_in = 1 or 3. Windows
//    that leave the image horizontally (padding) are gathered, zero padded, into a per-thread
//    scratch; rows above / below the image point at a zero segment.
//  - groups > 1 or dilation_w > 1: a group's channels, or a dilated row's taps, are not contiguous
//    across kx, so each tap (ky, kx) is its own segment of C_in / groups floats, read in place
//    (taps outside the image point at zeros, and a tile skips a tap all its pixels take from
//    there); group g reads the same pixel pointers shifted by g * C_in / groups channels.
// Weights are packed into contiguous, zero-padded channel blocks, group by group: per call, or once
// ahead of the calls (fastconv.pack_weights: conv2d_packed_floats / pack_conv2d_weights below).
#include <omp.h>

#include <cstdlib>
#include <cstring>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"

namespace fastconv::cpu::FC_ISA {

namespace {

// The calling thread's buffers (kernel_util.h, Workspace): packed weights, gathered windows, and
// the zero-padded copy of inputs whose windows would gather too much.
static thread_local Workspace tls_packed_weights;
static thread_local Workspace tls_gathers;
static thread_local Workspace tls_padded_input;

// Tiles whose input windows are set up together and then swept once per channel block: the
// weights of one block are read from L3 once per sweep and reused from L2 by its tiles.
constexpr int64_t kTilesPerSweep = 8;
// Up to this many tiles (96 pixels with AVX2), or up to 64 when the whole input fits 1 MiB, the
// output is one sweep whose channel blocks the threads share (tiled_conv_impl, block_major): each
// packed weight block is then read once per call instead of once per sweep of 8 tiles. (The input
// limit was 256 KB, L2 with room for a block's weights; measured, 14 x 14 maps of 512-1024 channels
// and 28 x 28 ones at stride 2 ran 0.88-0.98 of the time at 2 threads with 1 MiB.) Only with a
// block for every thread: one block of 16 channels (1x35x35x96 3x3 s2 -> 16) left the second
// thread idle, slower than one thread.
constexpr int64_t kBlockMajorMaxTiles = 16;
constexpr int kNarrowTailMinRows = 8;  // see run_one_tile
constexpr int64_t kBlockMajorMaxTilesSmallInput = 64;
constexpr int64_t kBlockMajorInputBytes = 1024 * 1024;

// Copies one kernel row of one pixel's window, [kx][ci], with zeros where it leaves the image.
static inline void gather_window_row(const Conv2dParams& p, const float* x_row, int64_t ix0, float* dst) {
  for (int64_t kx = 0; kx < p.kw; ++kx, dst += p.c_in) {
    const int64_t ix = ix0 + kx;
    if (ix < 0 || ix >= p.w) {
      std::memset(dst, 0, sizeof(float) * p.c_in);
    } else {
      std::memcpy(dst, x_row + ix * p.c_in, sizeof(float) * p.c_in);
    }
  }
}

// Columns of the input with its padding made real (dilation 1): pad_left zeros, the row, zeros out
// to the last column a window reads.
static inline int64_t padded_width(const Conv2dParams& p) {
  return max_i64(p.w + p.pad_left, (p.out_w - 1) * p.stride_w + p.kw);
}

// Copies x's rows into xp, padded_width(p) columns each; returns the problem on that copy.
static Conv2dParams copy_padded_rows(const Conv2dParams& p, const float* x, float* xp) {
  const int64_t wide = padded_width(p);
  for (int64_t row = 0; row < p.n * p.h; ++row) {
    float* dst = xp + row * wide * p.c_in;
    std::memset(dst, 0, sizeof(float) * p.pad_left * p.c_in);
    std::memcpy(dst + p.pad_left * p.c_in, x + row * p.w * p.c_in, sizeof(float) * p.w * p.c_in);
    std::memset(dst + (p.pad_left + p.w) * p.c_in, 0, sizeof(float) * (wide - p.pad_left - p.w) * p.c_in);
  }
  Conv2dParams padded = p;
  padded.w = wide;
  padded.pad_left = 0;
  return padded;
}

// A tile called, not inlined, from the per-tap loops: inlined there, 4 of its 6 row pointers were
// spilled to the stack and reloaded on every reduction step.
template <int TR, int TV>
__attribute__((noinline)) void run_per_tap_tile(int64_t rows, const TileJob& job) {
  run_tile_rows<TR, TV>(rows, job);
}

// Weights packed as [group][block][weight_rows][kCols], zero padded past the group's C_out: one
// block's weights are then contiguous (read in place with row stride C_out, a large C_out maps a
// block onto a few cache sets and it thrashes L2).
template <int TV>
int64_t packed_floats(const Conv2dParams& p) {
  constexpr int64_t kCols = TV * kVecLen;
  const int64_t blocks = (p.c_out_per_group() + kCols - 1) / kCols;
  return p.groups * blocks * p.kh * p.kw * p.c_in_per_group() * kCols;
}

// Row by row: each weight row is read once, sequentially (block by block it would be read with
// stride C_out once per block, several times slower for large C_out). team: inside the caller's
// parallel region, the rows shared among its threads; else all of them, by the calling thread.
template <int TV>
void pack_weight_rows(const Conv2dParams& p, const float* w, float* w_packed, bool team) {
  constexpr int64_t kCols = TV * kVecLen;
  const int64_t groups = p.groups, group_c_out = p.c_out_per_group();
  const int64_t weight_rows = p.kh * p.kw * p.c_in_per_group();
  const int64_t blocks = (group_c_out + kCols - 1) / kCols;
  const auto pack_row = [&](int64_t row) {
    for (int64_t g = 0; g < groups; ++g) {
      for (int64_t block = 0; block < blocks; ++block) {
        const float* src = w + row * p.c_out + g * group_c_out + block * kCols;
        float* dst = w_packed + ((g * blocks + block) * weight_rows + row) * kCols;
        const int64_t cols = min_i64(kCols, group_c_out - block * kCols);
        if (cols == kCols) {
          for (int64_t v = 0; v < TV; ++v) store_vec(dst + v * kVecLen, load_vec(src + v * kVecLen));
        } else {
          for (int64_t j = 0; j < kCols; ++j) dst[j] = j < cols ? src[j] : 0.0f;
        }
      }
    }
  };
  if (team) {
#pragma omp for schedule(static)
    for (int64_t row = 0; row < weight_rows; ++row) pack_row(row);
  } else {
    for (int64_t row = 0; row < weight_rows; ++row) pack_row(row);
  }
}

// The engine with TR x TV tiles (see tiled_conv.h). kPerTap: each tap (ky, kx) its own segment,
// read in place: groups > 1, and dilated rows (their KW taps are not contiguous; gathered, every
// pixel's window was copied, padding taps included). A separate instantiation so that the
// kernel-row loops stay as they were (the group loop cost them registers too).
// w_prepacked: pack_weight_rows' layout made ahead of the call, or null to pack w here.
template <int TR, int TV, bool kPerTap>
void tiled_conv_impl(const Conv2dParams& p, const float* x, const float* w, const float* w_prepacked, const float* b,
                     float* y, int threads) {
  constexpr int64_t kCols = TV * kVecLen;
  const int64_t groups = kPerTap ? p.groups : 1, group_c_in = p.c_in_per_group(), group_c_out = p.c_out_per_group();
  constexpr bool per_tap = kPerTap;
  const int64_t seg = per_tap ? group_c_in : p.kw * p.c_in;  // one segment of one pixel's window
  const int64_t taps = per_tap ? p.kh * p.kw : p.kh;
  const int64_t weight_rows = taps * seg;  // KH * KW * C_in / groups either way
  const int64_t pixels = p.n * p.out_h * p.out_w;
  const int64_t tiles = (pixels + TR - 1) / TR;
  const int64_t blocks = (group_c_out + kCols - 1) / kCols;  // per group
  const int nthreads = threads_for(pixels * weight_rows * p.c_out, threads);

  // (Without per-tap segments dilation_w is 1: conv2d sends dilated rows to kPerTap.)
  const bool needs_gather = !per_tap && (p.pad_left > 0 ||
                                         (p.out_w - 1) * p.stride_w - p.pad_left + p.kw > p.w);
  if constexpr (!per_tap) {
    // Windows that leave the image on the left or right are gathered, kernel row by kernel row,
    // into each pixel's own scratch. Where those copies outweigh one copy of the input with its
    // columns zero padded twice over (large kernels on small maps: 2x8x8x384 7x7 'same' gathered
    // 9.6 MB from a 200 KB input and ran at 29 % of the FMA peak), the rows are padded once
    // instead.
    if (needs_gather) {
      const int64_t wide = padded_width(p);
      int64_t border_cols = 0;
      for (int64_t ox = 0; ox < p.out_w; ++ox) {
        const int64_t ix0 = ox * p.stride_w - p.pad_left;
        border_cols += ix0 < 0 || ix0 + p.kw > p.w;
      }
      // Twice: the copy runs on one thread, the gathers on all (3x3 on 7 x 7 and 14 x 14 maps tied).
      if (border_cols * p.out_h * p.kh * p.kw > 2 * p.h * wide) {
        const WorkspaceLease padded_input(tls_padded_input, p.n * p.h * wide * p.c_in);
        tiled_conv_impl<TR, TV, kPerTap>(copy_padded_rows(p, x, padded_input.get()), padded_input.get(), w,
                                          w_prepacked, b, y, threads);
        return;
      }
    }
  }
  // Few output pixels under many weights (ResNet's and VGG's last stages at batch 1: 49 pixels, 9.4
  // MB of 512 x 512 x 3 x 3 weights): sweeps of 8 tiles read the packed weights once per sweep, and
  // two sweeps of 8 and 1 tiles leave one core idle. Instead all tiles form one sweep and the
  // threads share its channel blocks.
  const int64_t input_bytes = p.n * p.h * p.w * p.c_in * static_cast<int64_t>(sizeof(float));
  const bool block_major = groups * blocks >= nthreads &&
                           (tiles <= kBlockMajorMaxTiles ||
                            (tiles <= kBlockMajorMaxTilesSmallInput && input_bytes <= kBlockMajorInputBytes));
  // Sweeps short enough that each thread gets about two (a call of 3 sweeps of 8 tiles on 2 threads
  // ran 16 tiles on one and 2 on the other); 8 tiles where there are plenty.
  const int64_t tiles_per_sweep = max_i64(1, min_i64(kTilesPerSweep, (tiles + 2 * nthreads - 1) / (2 * nthreads)));
  const int64_t sweep_slots = (block_major ? tiles : tiles_per_sweep) * TR;  // pixels set up at once
  const int64_t scratch_per_sweep = needs_gather ? sweep_slots * taps * seg : 0;
  const WorkspaceLease gathers(tls_gathers, needs_gather ? (block_major ? 1 : nthreads) * scratch_per_sweep : 0);
  float* scratch = needs_gather ? gathers.get() : nullptr;
  const float** shared_segs = block_major ? new const float*[sweep_slots * taps] : nullptr;
  // Weights packed here: small ones once per thread, large ones once by the team (kOwnPackMaxFloats).
  const int64_t own_floats = own_copy_stride(packed_floats<TV>(p));
  const bool own_copies = !w_prepacked && nthreads > 1 && own_floats <= kOwnPackMaxFloats;
  const WorkspaceLease packed_weights(tls_packed_weights, w_prepacked ? 0 : (own_copies ? nthreads : 1) * own_floats);
  // Bias padded like the weights.
  float* b_packed = b ? alloc_floats(groups * blocks * kCols) : nullptr;
  for (int64_t g = 0; b && g < groups; ++g) {
    for (int64_t j = 0; j < blocks * kCols; ++j) {
      b_packed[g * blocks * kCols + j] = j < group_c_out ? b[g * group_c_out + j] : 0.0f;
    }
  }
  // Long enough for every group's shifted segment.
  const int64_t zeros_len = seg > p.c_in ? seg : p.c_in;
  float* zeros = alloc_floats(zeros_len);
  std::memset(zeros, 0, sizeof(float) * zeros_len);

  // Where the segments of the pixel in `slot` of a sweep begin: segs[(slot / TR * taps + t) * TR +
  // slot % TR] for segment t. The pixel is output (n, oy, ox), or past the end (reads zeros, never
  // stored); windows that leave the image are gathered into the slot's own scratch rows.
  auto set_pixel_segs = [&](const float** segs, float* sweep_scratch, int64_t slot, bool past_end, int64_t n,
                            int64_t oy, int64_t ox) {
    const float** pixel_segs = segs + slot / TR * taps * TR + slot % TR;
    if (past_end) {
      for (int64_t t = 0; t < taps; ++t) pixel_segs[t * TR] = zeros;
      return;
    }
    const int64_t iy0 = oy * p.stride_h - p.pad_top, ix0 = ox * p.stride_w - p.pad_left;
    const bool window_inside = ix0 >= 0 && ix0 + p.kw <= p.w;
    if constexpr (!per_tap) {
      // Most pixels: the whole window inside the image, its rows one (dilated) input row apart.
      if (window_inside && iy0 >= 0 && iy0 + (p.kh - 1) * p.dilation_h < p.h) {
        const float* first = x + ((n * p.h + iy0) * p.w + ix0) * p.c_in;
        const int64_t row_step = p.dilation_h * p.w * p.c_in;
        for (int64_t ky = 0; ky < p.kh; ++ky) pixel_segs[ky * TR] = first + ky * row_step;
        return;
      }
    }
    for (int64_t ky = 0; ky < p.kh; ++ky) {
      const int64_t iy = iy0 + ky * p.dilation_h;
      const bool row_inside = iy >= 0 && iy < p.h;
      const float* x_row = x + (n * p.h + iy) * p.w * p.c_in;
      if constexpr (per_tap) {
        for (int64_t kx = 0; kx < p.kw; ++kx) {
          const int64_t ix = ix0 + kx * p.dilation_w;
          pixel_segs[(ky * p.kw + kx) * TR] = row_inside && ix >= 0 && ix < p.w ? x_row + ix * p.c_in : zeros;
        }
      } else if (!row_inside) {
        pixel_segs[ky * TR] = zeros;
      } else if (window_inside) {
        pixel_segs[ky * TR] = x_row + ix0 * p.c_in;
      } else {
        float* dst = sweep_scratch + (slot * taps + ky) * seg;
        gather_window_row(p, x_row, ix0, dst);
        pixel_segs[ky * TR] = dst;
      }
    }
  };
  // The slots [0, count) of a sweep starting at first_pixel: (n, oy, ox) advance with the slot rather
  // than being divided out of each pixel's index (three 64-bit divisions a pixel were a fifth of
  // LeNet C3's time).
  auto set_sweep_segs = [&](const float** segs, float* sweep_scratch, int64_t first_pixel, int64_t count) {
    int64_t n = first_pixel / (p.out_h * p.out_w), oy = first_pixel / p.out_w % p.out_h, ox = first_pixel % p.out_w;
    for (int64_t slot = 0; slot < count; ++slot) {
      set_pixel_segs(segs, sweep_scratch, slot, first_pixel + slot >= pixels, n, oy, ox);
      if (++ox == p.out_w) {
        ox = 0;
        if (++oy == p.out_h) oy = 0, ++n;
      }
    }
  };
  auto block_job = [&](int64_t g, int64_t block, const float* block_w) {
    TileJob job{};
    job.taps = taps;
    job.seg = seg;
    job.seg_offset = g * group_c_in;
    job.padding_seg = zeros;
    job.w = block_w;
    job.ldw = kCols;
    job.bias = b_packed ? b_packed + (g * blocks + block) * kCols : nullptr;
    job.ldo = p.c_out;
    job.cols = min_i64(kCols, group_c_out - block * kCols);
    job.act = p.activation;
    return job;
  };
  // A group's last block of at most one vector of channels runs the one-vector tile (over the first
  // vector of each packed weight row: job.ldw stays kCols), not the padded two-vector one; with 8-row
  // tiles only (AVX-512): 6 rows x 1 vector are too few accumulator chains for two FMA pipes
  // (AVX2, 1x56x56x32 3x3 s2 -> 24: 1.08x slower than the padded block).
  auto run_one_tile = [&](int64_t first_pixel, int64_t g, int64_t block, TileJob& job) {
    job.out = y + first_pixel * p.c_out + g * group_c_out + block * kCols;
    const int64_t rows = min_i64(TR, pixels - first_pixel);
    const bool narrow_tail = TV > 1 && TR >= kNarrowTailMinRows && job.cols <= kVecLen;
    if constexpr (kPerTap) {
      narrow_tail ? run_per_tap_tile<TR, 1>(rows, job) : run_per_tap_tile<TR, TV>(rows, job);
    } else {
      narrow_tail ? run_tile_rows<TR, 1>(rows, job) : run_tile_rows<TR, TV>(rows, job);
    }
  };

  parallel_run(nthreads, [&] {
    float* w_packed_here = w_prepacked ? nullptr : packed_weights.get() + (own_copies ? omp_get_thread_num() * own_floats : 0);
    const float* w_packed = w_prepacked ? w_prepacked : w_packed_here;
    if (w_packed_here) pack_weight_rows<TV>(p, w, w_packed_here, !own_copies);
    if (block_major) {
#pragma omp for schedule(static)
      for (int64_t slot = 0; slot < sweep_slots; ++slot) {
        set_pixel_segs(shared_segs, scratch, slot, slot >= pixels, slot / (p.out_h * p.out_w),
                       slot / p.out_w % p.out_h, slot % p.out_w);
      }
      // Blocks that do not divide evenly among few threads (3 on 2) go in nthreads parts of the tiles.
      const int64_t gbs = groups * blocks, parts = gbs % nthreads != 0 && gbs < 4 * nthreads ? nthreads : 1;
#pragma omp for schedule(dynamic, 1)
      for (int64_t item = 0; item < gbs * parts; ++item) {
        const int64_t gb = item / parts, part = item % parts, g = gb / blocks, block = gb % blocks;
        TileJob job = block_job(g, block, w_packed + gb * weight_rows * kCols);
        for (int64_t t = tiles * part / parts; t < tiles * (part + 1) / parts; ++t) {
          job.segs = shared_segs + t * taps * TR;
          run_one_tile(t * TR, g, block, job);
        }
      }
    } else {
      const float** segs = new const float*[sweep_slots * taps];
      float* my_scratch = scratch ? scratch + omp_get_thread_num() * scratch_per_sweep : nullptr;
      // Sweeps handed out one at a time: a thread the OS preempts (a shared machine) leaves its
      // share to the other instead of holding up the end of the call.
#pragma omp for schedule(dynamic, 1)
      for (int64_t sweep = 0; sweep < tiles; sweep += tiles_per_sweep) {
        const int64_t sweep_tiles = min_i64(tiles_per_sweep, tiles - sweep);
        set_sweep_segs(segs, my_scratch, sweep * TR, sweep_tiles * TR);
        for (int64_t g = 0; g < groups; ++g) {
          for (int64_t block = 0; block < blocks; ++block) {
            TileJob job = block_job(g, block, w_packed + (g * blocks + block) * weight_rows * kCols);
            for (int64_t t = 0; t < sweep_tiles; ++t) {
              job.segs = segs + t * taps * TR;
              // The sweep's inputs come into cache while the first block runs; later blocks reuse them.
              job.next_segs = g == 0 && block == 0 && t + 1 < sweep_tiles ? job.segs + taps * TR : nullptr;
              run_one_tile((sweep + t) * TR, g, block, job);
            }
          }
        }
      }
      delete[] segs;
    }
  });
  delete[] shared_segs;
  std::free(zeros);
  std::free(b_packed);
}

// The narrow kNarrowRows x 1-vector tile when a group's C_out fits one vector, else the wide one.
bool narrow_tile(const Conv2dParams& p) { return p.c_out_per_group() <= kVecLen; }

// ---- Narrow outputs of stride-1 and -2 rows: each input column broadcast once for its pixels -----
//
// The narrow tile multiplies one broadcast input value per FMA (its C_out fills one vector), and
// FMAs with a broadcast memory operand issued about once a cycle on the Xeon measured, half the FMA
// rate (LeNet C3: 33 % of one core's peak; bench/NOTES.md, "Narrow outputs"). Along an output row
// of a stride-1 filter, input column q meets weight column kx in output pixel q - kx. So a tile of R
// consecutive pixels of one row holds the KW weight vectors (kx, ci) of kernel row ky in registers
// and broadcasts each of its R + KW - 1 input columns once, into up to KW accumulators: per (ky, ci)
// R * KW FMAs for 2 KW + R - 1 loads (R = 10, KW = 5: 50 for 19), not R for R + 1. The windows must
// lie inside the input horizontally: segments whose windows reach padding columns read a copy of
// their input columns with the padding made real. Groups (RegNet's 8 channels per group on AVX2,
// which fill the vector and so leave conv2d_grouped.cpp) slide one after another over the same
// rows, each from its channel offset in the pixel: 1 x 56 x 56 x 24, 3 groups, 3x3 ran in 0.61 of
// the narrow tiles' time on Zen 3, 1 x 56 x 56 x 64 5x5 in 8 groups 0.58, 8 x 28 x 28 x 64 3x3 0.67
// (2 threads). At stride SW input column q meets weight column kx in pixel (q - kx) / SW where that
// divides: a tile of R pixels broadcasts (R - 1) SW + KW columns (17 for R = 8, 3x3 stride 2: 24
// FMAs for 20 loads against the narrow tile's 27); on Zen 3, 2 threads, ResNeXt's 1x56x56x256 3x3
// stride 2 in 32 groups ran in 0.71 of the narrow tiles' time, 1x112x112x64 in 8 groups 0.58, 5x5
// 0.68, ungrouped 3x3 stride 2 to 4 or 8 channels 0.85-0.89.
#if defined(__AVX512F__)
constexpr int kSlideMaxRows = 16;  // 16 accumulators + 5 weights + 1 broadcast of 32 registers
#else
constexpr int kSlideMaxRows = 8;   // 8 + 5 + 1 of 16
#endif

// R pixels of one output row over `taps` kernel rows: x_first is the first pixel's window at the
// first of them (the next row_step floats on; pixels x_step floats apart), c_in the channels of the
// reduction (a group's), w that row's weights in the packed narrow block, [ky][kx][ci][kVecLen].
template <int KW, int SW, int R>
__attribute__((noinline)) void slide_tile(const float* x_first, int64_t row_step, int64_t x_step, int64_t taps,
                                          int64_t c_in, const float* w, const float* bias, float* out, int64_t ldo,
                                          int64_t cols, Activation act) {
  vfloat acc[R][1];
  const vfloat init = load_vec(bias);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) acc[r][0] = init;
  for (int64_t ky = 0; ky < taps; ++ky) {
    const float* xr = x_first + ky * row_step;
    const float* wr = w + ky * KW * c_in * kVecLen;
    for (int64_t ci = 0; ci < c_in; ++ci) {
      vfloat wk[KW];
#pragma GCC unroll 8
      for (int kx = 0; kx < KW; ++kx) wk[kx] = load_vec(wr + (kx * c_in + ci) * kVecLen);
      const float* xq = xr + ci;
#pragma GCC unroll 40
      for (int q = 0; q < (R - 1) * SW + KW; ++q, xq += x_step) {
        const vfloat v = splat(*xq);
#pragma GCC unroll 8
        for (int kx = 0; kx < KW; ++kx) {
          const int d = q - kx;  // the pixel's first column, d / SW its index in the tile
          if (d >= 0 && d % SW == 0 && d / SW < R) acc[d / SW][0] += v * wk[kx];
        }
      }
    }
  }
  store_rows<R, 1>(acc, out, ldo, cols, act);
}

template <int KW, int SW, int R = kSlideMaxRows>
void slide_tile_rows(int64_t rows, const float* x_first, int64_t row_step, int64_t x_step, int64_t taps, int64_t c_in,
                     const float* w, const float* bias, float* out, int64_t ldo, int64_t cols, Activation act) {
  if constexpr (R > 1) {
    if (rows < R) {
      return slide_tile_rows<KW, SW, R - 1>(rows, x_first, row_step, x_step, taps, c_in, w, bias, out, ldo, cols, act);
    }
  }
  slide_tile<KW, SW, R>(x_first, row_step, x_step, taps, c_in, w, bias, out, ldo, cols, act);
}

bool slides(const Conv2dParams& p) {
  return narrow_tile(p) && (p.stride_w == 1 || p.stride_w == 2) && p.dilation_w == 1 && (p.kw == 3 || p.kw == 5);
}

template <int KW, int SW>
void slide_conv(const Conv2dParams& p, const float* x, const float* w, const float* w_prepacked, const float* b,
                float* y, int threads) {
  // Each output row in equal segments of at most kSlideMaxRows pixels (10 columns: one tile of 10),
  // every group of a segment in one work item (the segment's input rows then serve them all from L1).
  const int64_t segments = (p.out_w + kSlideMaxRows - 1) / kSlideMaxRows;
  const int64_t seg_len = (p.out_w + segments - 1) / segments;
  const int64_t items = p.n * p.out_h * segments;
  const int64_t cig = p.c_in_per_group(), cog = p.c_out_per_group(), weight_rows = p.kh * KW * cig;
  const int nthreads = threads_for(p.n * p.out_h * p.out_w * weight_rows * p.c_out, threads);
  const int64_t own_floats = own_copy_stride(packed_floats<1>(p));
  const bool own_copies = !w_prepacked && nthreads > 1 && own_floats <= kOwnPackMaxFloats;
  // A segment whose windows reach the padding columns reads a copy of its KH x (len + KW - 1) input
  // columns, zeros in the padding, from its thread's border rows. (A copy of the whole input with
  // its padding, made on the calling thread, cost 1x56x56x24 3x3 'same' in 3 groups 0.8x the kernel's
  // time on 2 threads: the other core then read its half of the copy from the first core's caches.)
  const int64_t border_floats = own_copy_stride(p.kh * ((seg_len - 1) * SW + KW) * p.c_in);
  const int64_t packed_total = w_prepacked ? 0 : (own_copies ? nthreads : 1) * own_floats;
  const WorkspaceLease buffers(tls_packed_weights, p.groups * kVecLen + nthreads * border_floats + packed_total);
  float* bias = buffers.get();  // a vector per group, zero past its channels
  float* borders = bias + p.groups * kVecLen;
  float* packed = borders + nthreads * border_floats;
  for (int64_t g = 0; g < p.groups; ++g) {
    for (int64_t j = 0; j < kVecLen; ++j) bias[g * kVecLen + j] = b && j < cog ? b[g * cog + j] : 0.0f;
  }
  const int64_t chunk = max_i64(1, items / (8 * int64_t{nthreads}));
  parallel_run(nthreads, [&] {
    const int tid = omp_get_thread_num();
    float* border = borders + tid * border_floats;
    float* w_packed_here = w_prepacked ? nullptr : packed + (own_copies ? tid * own_floats : 0);
    if (w_packed_here) pack_weight_rows<1>(p, w, w_packed_here, !own_copies);
    const float* w_packed = w_prepacked ? w_prepacked : w_packed_here;
#pragma omp for schedule(dynamic, chunk)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t seg = item % segments, row = item / segments, n = row / p.out_h, oy = row % p.out_h;
      const int64_t ox0 = seg * seg_len, len = min_i64(seg_len, p.out_w - ox0);
      const KernelRows rows = p.rows_inside(oy);
      const int64_t taps = rows.ky1 - rows.ky0, ix0 = ox0 * SW - p.pad_left, cols = (len - 1) * SW + KW;
      const float* x_first = x;  // no kernel row inside: never read
      int64_t row_step = p.dilation_h * p.w * p.c_in;
      if (taps > 0) {
        const float* x_row = x + (n * p.h + rows.iy0 + rows.ky0 * p.dilation_h) * p.w * p.c_in;
        if (ix0 >= 0 && ix0 + cols <= p.w) {
          x_first = x_row + ix0 * p.c_in;
        } else {
          for (int64_t t = 0; t < taps; ++t) {
            for (int64_t q = 0; q < cols; ++q) {
              const int64_t ix = ix0 + q;
              float* dst = border + (t * cols + q) * p.c_in;
              if (ix < 0 || ix >= p.w) {
                std::memset(dst, 0, sizeof(float) * p.c_in);
              } else {
                std::memcpy(dst, x_row + t * row_step + ix * p.c_in, sizeof(float) * p.c_in);
              }
            }
          }
          x_first = border;
          row_step = cols * p.c_in;
        }
      }
      float* out = y + ((n * p.out_h + oy) * p.out_w + ox0) * p.c_out;
      for (int64_t g = 0; g < p.groups; ++g) {
        const float* w_first = w_packed + (g * weight_rows + rows.ky0 * KW * cig) * kVecLen;
        slide_tile_rows<KW, SW>(len, x_first + g * cig, row_step, p.c_in, taps, cig, w_first, bias + g * kVecLen,
                                out + g * cog, p.c_out, cog, p.activation);
      }
    }
  });
}

}  // namespace

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* w_prepacked, const float* b, float* y,
            int threads) {
  if (slides(p)) {
    const auto slide = p.kw == 3 ? (p.stride_w == 1 ? slide_conv<3, 1> : slide_conv<3, 2>)
                                 : (p.stride_w == 1 ? slide_conv<5, 1> : slide_conv<5, 2>);
    slide(p, x, w, w_prepacked, b, y, threads);
  } else if (p.groups > 1 || p.dilation_w > 1) {
    narrow_tile(p) ? tiled_conv_impl<kNarrowRows, 1, true>(p, x, w, w_prepacked, b, y, threads)
                   : tiled_conv_impl<kTileRows, kTileVecs, true>(p, x, w, w_prepacked, b, y, threads);
  } else {
    narrow_tile(p) ? tiled_conv_impl<kNarrowRows, 1, false>(p, x, w, w_prepacked, b, y, threads)
                   : tiled_conv_impl<kTileRows, kTileVecs, false>(p, x, w, w_prepacked, b, y, threads);
  }
}

int64_t conv2d_packed_floats(const Conv2dParams& p) {
  return narrow_tile(p) ? packed_floats<1>(p) : packed_floats<kTileVecs>(p);
}

void pack_conv2d_weights(const Conv2dParams& p, const float* w, float* w_packed, int threads) {
  const int nthreads = threads_for(conv2d_packed_floats(p), threads);  // a copy: one unit of work per float
  parallel_run(nthreads, [&] {
    narrow_tile(p) ? pack_weight_rows<1>(p, w, w_packed, true) : pack_weight_rows<kTileVecs>(p, w, w_packed, true);
  });
}

}  // namespace fastconv::cpu::FC_ISA
