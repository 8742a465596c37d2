// CPU dispatch: which instruction set's kernel table is in use, how many threads the kernels use,
// and which kernel family serves a convolution. The only mutable state of the CPU module is here:
// the active table and the thread count, both atomics, set at import and by the setters below
// (besides per-thread scratch kept between calls: window_buffer below, depthwise.cpp's packed
// weights).
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "fastconv/cpu_ops.h"
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

namespace fastconv::cpu {

namespace {

// Cost-model constants of prefer_winograd (relative to one multiply-add of the direct kernel).
constexpr int64_t kWinogradMinChannels = 16;
constexpr double kWinogradGemmCost = 1.0;     // a Winograd GEMM multiply-add
constexpr double kWinogradTileCost = 150.0;   // input + output transform, per tile and channel
// Weight transform, per channel pair: cheap while the A * A * C_in * C_out transformed weights stay
// in cache, ~6x more once they spill to L3 / DRAM (written, then read back), unless the map has few
// enough tiles for the kernel to transform them block by block right before their use
// (conv2d_winograd.cpp, stream_weights: up to 6 x kCols tiles, 96 with AVX2). Set by the filter's
// taps more than by A: fitted 360 for F(4x4, 3x3), measured 344 for F(2x2, 3x3) and 1200-1500 for
// F(4x4, 5x5) on 7x7 maps, where this term decides (bench/NOTES.md, "F(4x4, 5x5) on the CPU too").
constexpr double kWinogradWeightCost3x3 = 360.0;
constexpr double kWinogradWeightCost5x5 = 1350.0;
constexpr double kWinogradWeightSpillFactor = 6.0;
constexpr double kWinogradCachedWeightBytes = 4.0 * 1024 * 1024;
constexpr double kWinogradStreamedMaxTiles = 96;
// Prepacked weights, per transformed value read once per call: fitted on 7 x 7 and 14 x 14 maps
// (bench/NOTES.md, "Weights packed ahead of the calls for every convolution"): ~5 while U is a few
// MB, 9-12 for 9-38 MB. Refitted (bench/NOTES.md, "Winograd from prepacked weights on 7 x 7
// maps"): a U within three quarters of the 32 MiB L3 stays there between calls and reads at 1-2
// (7x7x256, 9.4 MB; 7x7x384, 21 MB: Winograd 0.40 / 0.46 of the direct kernel's time); 11 holds
// past it (7x7x1024, 151 MB: a tie; 7x7x512, 38 MB: 0.53-0.84, noisy, left to the direct kernel).
constexpr double kWinogradPrepackedReadCost = 5.0;
constexpr double kWinogradPrepackedSpilledReadCost = 11.0;
constexpr double kWinogradPrepackedCachedBytes = 24.0 * 1024 * 1024;
// Strided filters (folded, params.h): one pass over the input per folded value, and the estimate
// below was ~1.65x optimistic against measured times over ~90 random strided shapes (bench/NOTES.md,
// "Strided filters folded into Winograd"), where outputs narrower than 24 channels never paid.
constexpr double kWinogradFoldCost = 4.0;
constexpr double kWinogradFoldedOptimism = 1.65;
constexpr int64_t kWinogradFoldedMinCout = 24;
// Folded to at most 16 channels (11x11 stride 4 over one, 5x5 stride 2 over four) the first-layer
// kernel ran in 0.54-0.93 of the folded Winograd's time up to 48 output channels, 1.0-1.3x from 64
// (bench/NOTES.md, "First layers: remainder tiles, one-vector tiles, longer reductions").
constexpr int64_t kWinogradFoldedNarrowMinCout = 64;

// Winograd over few input channels (conv2d_winograd.cpp, run_winograd_few) at stride 1 on 16-lane
// vectors, against the first-layer kernel (bench/NOTES.md, "Winograd for first layers", "Few and
// narrow channels into Winograd" and "Sigmoid and tanh through F(4x4, 3x3)"): F(4x4, 3x3) in
// 0.6-0.75 of its time from 3 input channels and 16 output channels in whole vectors (with sigmoid
// or tanh 0.62-0.85), 0.78-0.87 from 2 (one case 1.03); F(2x2, 5x5) in 0.71-0.93 over 2-4 channels
// and 0.81-0.86 over 1 from 64 output channels (16-32: 0.87-1.03), both new cases from
// kWinogradFewNewMinPixels output pixels (on 14 x 14 to 32 x 32 maps 0.94-1.39). With one channel
// at 3x3 (36 products per 16 outputs against 9 direct taps), AVX2's 16 registers (the tile's 26
// live vectors spill) or output channels that pad a vector by a third (8, 24) it ties or loses.
constexpr int64_t kWinogradFewMinCin = 3;  // 3x3 on any map; 2 (3x3) and 1-2 (5x5) on large ones
constexpr int64_t kWinogradFewNewMinPixels = 64 * 64;
constexpr int64_t kWinogradFew5x5OneChannelMinCout = 64;
constexpr int64_t kWinogradFewLanes = 16;
constexpr int64_t kWinogradFewMinCout = 16;
constexpr int64_t kWinogradFewUnpaddedCout = 64;  // from here any C_out
// F(3x3, 4x4) for 7x7 (8x8) stride-2 filters over RGB, folded to 4x4 over 12 channels
// (run_winograd_folded_rgb), against the first-layer kernel (bench/NOTES.md, "The ResNet stem as
// F(3x3, 4x4)"): 0.54-0.60 of its time from 64 output channels, 0.66 at 32, 0.90 at 16; 24 (a
// vector and a half) 0.93.
constexpr int64_t kWinogradFoldedRgbMinCout = 16;

// First-layer kernel (conv2d_first_layer.cpp), for few input channels: every layer over at most
// kFirstLayerMaxCin channels (against the tiled engine, paired, 2 threads: 0.69-0.97 of its time at
// 121-484 taps and stride 2-4, 11x11 over 1-4 channels among them; bench/NOTES.md, "First layers:
// remainder tiles, one-vector tiles, longer reductions"); over 5-8 channels short reductions (at most
// kFirstLayerShortMaxTaps taps: 3x3 ran in 0.50-0.87 of the tiled engine's time) and longer ones
// from kFirstLayerLongMinCout output channels (0.60-0.94; LeNet C3, 150 taps to 16, ran 1.06x slower)
// or on rows of kFirstLayerLongMinWidth output columns, which fill the pixel-vector tiles (a Xeon:
// 5x5 and 7x7 over 5-8 channels to 8-20, rows of 28-112 columns, 0.46-0.82 of the time; 14
// columns 0.97; LeNet C3's 10 there 1.7-2.0x slower).
constexpr int64_t kFirstLayerMaxCin = 4;
constexpr int64_t kFirstLayerShortMaxCin = 8;
constexpr int64_t kFirstLayerShortMaxTaps = 100;
constexpr int64_t kFirstLayerLongMinCout = 24;
constexpr int64_t kFirstLayerLongMinWidth = 24;

bool cpu_has(const KernelTable& t) {
#if defined(FASTCONV_HAVE_X86_ISAS)
  if (&t == &avx512::table) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq");
  }
  if (&t == &avx2::table) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return &t == &portable::table;
}

// Best first.
const KernelTable* const kTables[] = {
#if defined(FASTCONV_HAVE_X86_ISAS)
    &avx512::table,
    &avx2::table,
#endif
    &portable::table,
};

const KernelTable* find_table(const std::string& name) {
  for (const KernelTable* t : kTables) {
    if (name == t->isa) {
      if (!cpu_has(*t)) throw std::invalid_argument("this CPU does not support the " + name + " kernels");
      return t;
    }
  }
  throw std::invalid_argument("unknown ISA '" + name + "'; expected auto, avx512, avx2 or portable");
}

const KernelTable* best_table() {
  for (const KernelTable* t : kTables) {
    if (cpu_has(*t)) return t;
  }
  return &portable::table;
}

// The table that serves few channels when the ISA was not forced: AVX2's beside AVX-512 (see
// channel_table), else none.
const KernelTable* narrow_table_of(const KernelTable* best) {
#if defined(FASTCONV_HAVE_X86_ISAS)
  if (best == &avx512::table && cpu_has(avx2::table)) return &avx2::table;
#endif
  (void)best;
  return nullptr;
}

std::atomic<const KernelTable*> g_table{best_table()};
std::atomic<const KernelTable*> g_narrow_table{narrow_table_of(best_table())};
std::atomic<int> g_num_threads{omp_get_max_threads()};

const KernelTable& table() { return *g_table.load(std::memory_order_relaxed); }

int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Whether blocks of `vectors` vectors pad `channels` to fewer lanes on `narrow` than on `wide`.
bool pads_less(int64_t channels, int vectors, const KernelTable& narrow, const KernelTable& wide) {
  return round_up(channels, int64_t{vectors} * narrow.vector_floats) <
         round_up(channels, int64_t{vectors} * wide.vector_floats);
}

// Whether blocks of `vectors` vectors pad `channels` to at least twice the lanes on `wide` as on
// `narrow`: where the wide table's FMAs do twice the narrow's work, only then does the narrow win.
bool pads_double(int64_t channels, int vectors, const KernelTable& narrow, const KernelTable& wide) {
  return 2 * round_up(channels, int64_t{vectors} * narrow.vector_floats) <=
         round_up(channels, int64_t{vectors} * wide.vector_floats);
}

// How many times the narrow table's FMA rate the wide table reaches on one core: about 1 where
// 512-bit FMAs run as two 256-bit halves (Zen 4), about 2 with full-width 512-bit units (most Xeons).
// Measured once, on first use: the best of three short passes of each table's register-only FMA
// loop (peak.cpp), taken in turns so that a neighbour's load slows both alike (~10 ms in all).
double wide_fma_ratio(const KernelTable& narrow, const KernelTable& wide) {
  static const double ratio = [&] {
    double best_narrow = 0.0, best_wide = 0.0;
    for (int pass = 0; pass < 3; ++pass) {
      best_narrow = std::max(best_narrow, narrow.fma_peak(1, 0.0015));
      best_wide = std::max(best_wide, wide.fma_peak(1, 0.0015));
    }
    return best_narrow > 0.0 ? best_wide / best_narrow : 1.0;
  }();
  return ratio;
}
// Full-width units: the wide table does more than 1.5 times the narrow's FMA work per cycle.
constexpr double kFullWidthRatio = 1.5;
bool full_width_units() {
  const KernelTable* narrow = g_narrow_table.load(std::memory_order_relaxed);
  return narrow != nullptr && wide_fma_ratio(*narrow, table()) > kFullWidthRatio;
}

// The output channels the first-layer kernel's channel-vector tiles compute on table t.
int64_t first_layer_lanes(int64_t c_out, const KernelTable& t) {
  return round_up(c_out, first_layer_block_channels(c_out, t.vector_floats));
}

// A kernel whose vector lanes carry channels, on few or awkward channel counts, runs on AVX2's table
// beside AVX-512's (unless an ISA was forced). On Zen 4 a 512-bit FMA runs as two 256-bit halves, so
// both reach one peak; the 512-bit kernels win on wide layers (more registers, fewer instructions:
// 1.05-1.4x) but lose where 16 lanes fill badly (paired in one process, bench/NOTES.md "AVX-512
// beside AVX2"): Winograd whose 32-channel column blocks or 16-channel input vectors pad more than
// AVX2's 16 / 8 (C_out 16, 24, 48: AVX2 in 0.63-0.87 of the time; 32 and 64: ties), first layers
// below 32 output channels (the pixel-vector tile against AVX2's channel-vector one: 0.69-0.86),
// depthwise up to 16 channels (0.32-0.89) or padding more (24: 0.92), pooling with 5-7 channels
// (0.73-0.93; at 1-4, where AVX-512 packs 4 or more pixels per vector, AVX2 took 0.98-1.32x the
// time), pointwise convolutions whose C_out pads to more lanes (8, 20, 24, 33, 40, 56, 88,
// 120: 0.55-0.95; 72 and 104 on 28 x 28 maps 1.03-1.04, on 56 x 56 0.93; equal padding keeps
// AVX-512: 48 and 64 ran 1.05-1.09x slower on AVX2), and the tiled engine's layers whose blocks
// pad more than an eighth more lanes (with two-vector blocks only, 48 outputs went to AVX2 in
// 0.77-0.82 of the time; with AVX-512's one-vector last block, 48, 80 and 112 pad no more than on
// AVX2 and stay, 0.76-0.84 of AVX2's time: bench/NOTES.md, "The tiled engine: a one-vector last
// block"). With full-width 512-bit units (wide_fma_ratio) AVX2 runs at half AVX-512's rate: there
// Winograd, pointwise and depthwise layers past one vector take AVX2 only where AVX-512 pads to
// twice its lanes (pads_double); pooling keeps the rule above and first layers take
// first_layer_table's (a Xeon: depthwise 8 and 16 channels on AVX-512 1.2-2.0x slower).
enum class LaneUse { kWinograd, kFirstLayer, kDepthwise, kPool, kPointwise, kDirect };

// The output channels (per group) the tiled engine (conv2d.cpp) computes on table t: one vector up
// to a vector's worth, else blocks of two vectors, on AVX-512 the last one vector wide when that
// covers it (conv2d.cpp, run_one_tile: 8-row tiles only).
int64_t direct_lanes(int64_t c_out, const KernelTable& t) {
  if (c_out <= t.vector_floats) return t.vector_floats;
  const int64_t rest = c_out % (2 * t.vector_floats);
  const bool narrow_tail = t.vector_floats == 16 && rest > 0 && rest <= t.vector_floats;
  return round_up(c_out, 2 * t.vector_floats) - (narrow_tail ? t.vector_floats : 0);
}

const KernelTable& channel_table(LaneUse use, int64_t c_in, int64_t c_out) {
  const KernelTable& wide = table();
  const KernelTable* narrow = g_narrow_table.load(std::memory_order_relaxed);
  if (narrow == nullptr) return wide;
  bool use_narrow = false;
  // With full-width 512-bit units, Winograd, pointwise and depthwise layers leave AVX-512 only where
  // it pads to twice the lanes (a Xeon, 2 threads: pointwise C_out 20-120 ran on AVX-512 in 0.64-0.96
  // of AVX2's time, C_out 8 2.2x slower; Winograd C_out 48 0.83-0.87, 24 a tie, 16 1.08x slower).
  const auto pads_more = full_width_units() ? pads_double : pads_less;
  switch (use) {
    case LaneUse::kWinograd:  // few input channels: see prefer_few_channel_winograd
      use_narrow = c_in > kWinogradFewMaxCin && (pads_more(c_out, 2, *narrow, wide) || pads_more(c_in, 1, *narrow, wide));
      break;
    case LaneUse::kFirstLayer:
      use_narrow = c_out < 2 * wide.vector_floats || first_layer_lanes(c_out, *narrow) < first_layer_lanes(c_out, wide);
      break;
    case LaneUse::kDepthwise:  // a Xeon, 2 threads: 24-136 channels on AVX-512 in 0.68-0.91 of
                               // AVX2's time at 5x5 and 7x7, 0.90-1.05 at 3x3
      use_narrow = c_out <= wide.vector_floats || pads_more(c_out, 1, *narrow, wide);
      break;
    case LaneUse::kPool:  // up to a quarter vector, AVX-512 packs 4+ pixels per vector (pool.cpp)
      use_narrow = c_out < narrow->vector_floats && 4 * c_out > wide.vector_floats;
      break;
    case LaneUse::kPointwise:
      use_narrow = pads_more(c_out, 1, *narrow, wide);
      break;
    case LaneUse::kDirect:  // more than an eighth more lanes on the wide table
      use_narrow = 8 * direct_lanes(c_out, wide) > 9 * direct_lanes(c_out, *narrow);
      break;
  }
  return use_narrow ? *narrow : wide;
}

// The first-layer kernel's table. With full-width 512-bit units AVX-512 wins (a Xeon, 2 threads:
// 8-24 output channels at stride 1 in 0.59-0.89 of AVX2's time, 16-24 with 5x5 to 11x11 windows at
// stride 2-4 in 0.64-0.81, from 32 channels 0.46-0.80; with the channel-vector rule of kernels.h, 9-24
// channels at 2x2 and 3x3 stride 2 in 0.72-0.81 and on rows of 12-16 columns in 0.62-0.87; up to 8
// channels at stride 2-4 in pair tiles, 0.58-0.84 over 2-4 input channels and over one to 8
// outputs), except: over one input channel to at most 6 outputs at stride 2-4, where AVX2's
// pixel-vector tiles fill their lanes (pair tiles 1.04-1.47x the time); where pair tiles do not
// apply up to 8 channels at stride 2-4 (AVX-512's one-vector tiles half empty: 1.06-1.49x); and on
// rows of up to 16 columns that AVX-512 would cover with 32-pixel pixel-vector tiles (0.96-1.54x
// AVX2's time on 12-16 columns; 0.69 on 28). Without full-width units, the channel rule of
// channel_table (on Zen 4 a 512-bit FMA costs two 256-bit ones: pairs gain nothing there).
const KernelTable& first_layer_table(const Conv2dParams& p) {
  const KernelTable& wide = table();
  const KernelTable* narrow = g_narrow_table.load(std::memory_order_relaxed);
  if (narrow == nullptr || !full_width_units()) return channel_table(LaneUse::kFirstLayer, p.c_in, p.c_out);
  const bool strided = p.stride_h > 1 || p.stride_w > 1;
  const bool few_channels = p.c_out < 2 * wide.vector_floats;
  const bool narrow_fills = p.c_out <= 8 && (!first_layer_pair_tiles(p, wide.vector_floats) || (p.c_in == 1 && p.c_out <= 6));
  const bool narrow_rows = p.out_w <= 2 * narrow->vector_floats && !first_layer_channel_vectors(p, wide.vector_floats);
  return few_channels && (strided ? narrow_fills : narrow_rows) ? *narrow : wide;
}

// algorithm="auto": Winograd (F(4x4, 3x3) or F(4x4, 5x5)) when its estimated time is below the
// direct kernel's. In units of one vector FMA lane (a multiply-add): the direct kernel does
// KH * KW * C_in * C_out per output pixel at about the efficiency of the GEMM microkernel; Winograd
// does A * A * C_in * C_out per output tile (border tiles count whole; A = 6 for F(4x4, 3x3), 8 for
// F(4x4, 5x5)), plus the transforms of its A x A patches, which are memory- and shuffle-bound and
// cost per channel and tile rather than per channel pair (in proportion to A * A), plus the
// per-call weight transform. The constants were fitted to 1-thread timings of F(4x4, 3x3) and
// F(2x2, 5x5) (bench/NOTES.md, Winograd sections), the 5x5 weight term to F(4x4, 5x5). 5x5 with
// sigmoid or tanh stays direct (squeezes_rounding, activation.h); 3x3 with them runs F(4x4, 3x3)
// like any other activation.
// Strided filters count with their folded shape (params.h: s_h * s_w * C_in channels, a 3x3 or 5x5
// filter), plus the fold's pass over the input.
// prepacked: the transformed weights come made (fastconv.pack_weights), so the weight term is
// their read instead of their transform.
// Few input channels (3x3 over 2-4, 5x5 over 1-4, stems folded to 4x4 over 12) and 8-15 channels
// follow measured crossovers, the rules below, not this model.
static_assert(kWinogradMinChannels >= kWinograd5x5LargeTileMinCin, "auto's 5x5 layers take 4x4 tiles");
// With full-width 512-bit units the first-layer kernel runs AVX-512 below 32 channels too
// (first_layer_table) and keeps maps narrower than kWinogradFewFullWidthMinCols columns (a Xeon, 3x3
// over 3 channels to 16-64: Winograd 1.09-1.53x slower on 16-32 columns, 0.91-0.96 of the time on
// 56, 0.64-0.93 on 112-224).
constexpr int64_t kWinogradFewFullWidthMinCols = 48;
bool prefer_few_channel_winograd(const Conv2dParams& p) {
  if (p.out_w < kWinogradFewFullWidthMinCols && full_width_units()) return false;
  const bool large = p.n * p.out_h * p.out_w >= kWinogradFewNewMinPixels;
  const bool channels = p.kh == 3 ? p.c_in >= kWinogradFewMinCin || (p.c_in == 2 && large)
                                  : large && (p.c_in >= 2 || p.c_out >= kWinogradFew5x5OneChannelMinCout);
  return p.stride_h == 1 && p.stride_w == 1 && channels && !(p.kh == 5 && squeezes_rounding(p.activation)) &&
         table().vector_floats == kWinogradFewLanes && p.c_out >= kWinogradFewMinCout &&
         (p.c_out % kWinogradFewLanes == 0 || p.c_out >= kWinogradFewUnpaddedCout);
}

// Stride-1 layers over 8-15 input channels, below the model's kWinogradMinChannels (its transform
// term ran ~2x high there), against the first-layer kernel (8 channels) and the tiled engine
// (bench/NOTES.md, "Few and narrow channels into Winograd"): F(4x4, 5x5) in 0.32-0.65 of the time
// from 16 output channels on 1 x 112 x 112 and 8 x 32 x 32 maps, 0.75-0.95 on 14 x 14 and 28 x 28,
// 1.13-1.18x slower on 7 x 7 (4 tiles); F(4x4, 3x3) in 0.61-0.86 from 48 outputs, but at 24-32
// 0.65-0.92 on the large maps and 0.96-1.28 on 14 x 14 to 56 x 56; 3x3 with sigmoid / tanh too (5x5
// with them stays direct). 5-7 channels stay direct: F(2x2, 5x5) and F(4x4, 3x3) there ran 1.0-2.1x
// slower.
constexpr int64_t kWinogradNarrow3x3MinCout = 48;
constexpr int64_t kWinogradNarrowMinTiles = 16;
bool prefer_narrow_winograd(const Conv2dParams& p) {
  const int64_t tile = winograd_tile(p.kh, p.c_in);
  const int64_t tiles = p.n * ((p.out_h + tile - 1) / tile) * ((p.out_w + tile - 1) / tile);
  return p.stride_h == 1 && p.stride_w == 1 && p.c_in >= kWinograd5x5LargeTileMinCin &&
         !(p.kh == 5 && squeezes_rounding(p.activation)) && tiles >= kWinogradNarrowMinTiles &&
         p.c_out >= (p.kh == 5 ? kWinogradMinChannels : kWinogradNarrow3x3MinCout);
}

bool prefer_folded_rgb_winograd(const Conv2dParams& p) {
  return p.c_in == 3 && p.stride_h == 2 && p.stride_w == 2 && !squeezes_rounding(p.activation) &&
         table().vector_floats == kWinogradFewLanes && p.c_out >= kWinogradFoldedRgbMinCout &&
         (p.c_out % kWinogradFewLanes == 0 || p.c_out >= kWinogradFewUnpaddedCout);
}

// The model's Winograd time of a stride-1 (or folded) 3x3 / 5x5 problem, in direct multiply-adds.
double winograd_model_cost(const Conv2dParams& p, bool prepacked) {
  const int64_t c_in = p.folded_c_in();
  const bool five = p.folded_kh() == 5;
  const int64_t tile = winograd_tile(p.folded_kh(), c_in);
  const double elems = five ? 64.0 : 36.0;
  const double tiles = static_cast<double>(p.n) * ((p.out_h + tile - 1) / tile) * ((p.out_w + tile - 1) / tile);
  const double pairs = static_cast<double>(c_in) * static_cast<double>(p.c_out);
  const bool cached = elems * pairs * 4.0 <= kWinogradCachedWeightBytes || tiles <= kWinogradStreamedMaxTiles;
  const double weight_cost =
      prepacked ? elems * (elems * pairs * 4.0 <= kWinogradPrepackedCachedBytes ? kWinogradPrepackedReadCost
                                                                                : kWinogradPrepackedSpilledReadCost)
                : (five ? kWinogradWeightCost5x5 : kWinogradWeightCost3x3) * (cached ? 1.0 : kWinogradWeightSpillFactor);
  return tiles * elems * pairs * kWinogradGemmCost + tiles * (c_in + p.c_out) * kWinogradTileCost * (elems / 36.0) +
         pairs * weight_cost;
}

// Dilated stride-1 filters: Winograd over the input's phases (params.h, dilation_phases), whose
// images of ceil(out / dilation) outputs a side round up to whole tiles, against the direct kernel,
// which skips the taps a whole tile of pixels takes from the padding (counted here as if every
// pixel skipped its own), plus the two copies of the phases at kDilatedPhaseCopyCost per float.
// Measured (Zen 3, 2 threads; bench/NOTES.md, "Dilated filters"), Winograd took 1.0-1.5x the
// model's share of the direct time, 1.1-1.2x on the close calls (DeepLab's ASPP, phases of 6 x 6
// outputs): kDilatedOptimism.
constexpr double kDilatedPhaseCopyCost = 2.0;
constexpr double kDilatedOptimism = 1.25;
bool prefer_dilated_winograd(const Conv2dParams& p, bool prepacked) {
  if (p.c_in < kWinogradMinChannels || p.c_out < kWinogradMinChannels) return false;
  if (p.kh == 5 && squeezes_rounding(p.activation)) return false;
  const auto taps_inside = [](int64_t out, int64_t in, int64_t k, int64_t dilation, int64_t pad) {
    int64_t inside = 0;
    for (int64_t o = 0; o < out; ++o) {
      for (int64_t t = 0; t < k; ++t) inside += o - pad + t * dilation >= 0 && o - pad + t * dilation < in;
    }
    return static_cast<double>(inside);
  };
  const double direct = static_cast<double>(p.n) * taps_inside(p.out_h, p.h, p.kh, p.dilation_h, p.pad_top) *
                        taps_inside(p.out_w, p.w, p.kw, p.dilation_w, p.pad_left) * static_cast<double>(p.c_in) *
                        static_cast<double>(p.c_out);
  const Conv2dParams q = dilation_phases(p);
  const double copies = static_cast<double>(q.n) * (q.h * q.w * q.c_in + q.out_h * q.out_w * q.c_out);
  return (winograd_model_cost(q, prepacked) + copies * kDilatedPhaseCopyCost) * kDilatedOptimism < direct;
}

bool prefer_winograd(const Conv2dParams& p, bool prepacked);

// Grouped filters, group by group (conv2d_winograd.cpp), where the model prefers Winograd for one
// group of at least kWinogradMinChannels channels both ways and kWinogradGroupMinMacs of direct
// work: each group is a call of its own, over copies of the groups' channels. Zen 3, 2 threads,
// packed weights, against the tiled engine's grouped tiles (bench/NOTES.md, "Grouped filters"):
// AlexNet's 5x5 in 2 groups 0.28 of the time, 24 channels a group (RegNet) 0.51-0.58 from 4 M
// multiply-adds a group, 0.78 at 2 M, 1.02-1.15x slower at 1 M, 1.3x at 0.25 M (7 x 7 maps).
constexpr double kWinogradGroupMinMacs = 2e6;
bool prefer_grouped_winograd(const Conv2dParams& p, bool prepacked) {
  const Conv2dParams q = one_group(p);
  const double macs = static_cast<double>(q.n) * q.out_h * q.out_w * static_cast<double>(q.kh * q.kw) *
                      static_cast<double>(q.c_in) * static_cast<double>(q.c_out);
  return q.c_in >= kWinogradMinChannels && q.c_out >= kWinogradMinChannels && macs >= kWinogradGroupMinMacs &&
         prefer_winograd(q, prepacked);
}

bool prefer_winograd(const Conv2dParams& p, bool prepacked) {
  if (p.groups > 1) return prefer_grouped_winograd(p, prepacked);
  if (p.dilated_winograd_eligible()) return prefer_dilated_winograd(p, prepacked);
  const int64_t c_in = p.folded_c_in();
  if (!p.winograd_eligible()) return false;
  if (p.folded_kh() == 4) return prefer_folded_rgb_winograd(p);
  if (c_in <= kWinogradFewMaxCin) return prefer_few_channel_winograd(p);
  if (c_in < kWinogradMinChannels) return prefer_narrow_winograd(p);
  if (p.c_out < kWinogradMinChannels) return false;
  const bool folded = p.stride_h * p.stride_w > 1;
  // A fold of one input channel (s_h * s_w phases of it) leaves the first-layer kernel faster: its
  // one-channel windows are short rows of taps, and Winograd's transforms cost per folded channel (a
  // Xeon, 2 threads, 11x11 stride 4 over one channel to 64-96 outputs, 16 x 16 to 55 x 55 maps:
  // direct in 0.66-0.87 of the time; from two channels Winograd ties or wins, 0.73-0.97).
  if (folded && p.c_in == 1) return false;
  if (folded && p.c_out < (c_in <= kWinogradMinChannels ? kWinogradFoldedNarrowMinCout : kWinogradFoldedMinCout)) {
    return false;
  }
  // With full-width units the first-layer kernel runs AVX-512 and keeps small maps of such folds
  // (a Xeon, 5x5 stride 2 over 4 channels to 64-256: direct in 0.76-0.90 of Winograd's time up to
  // 64 x 64 output pixels, one 1.06x slower at 56 x 56 -> 128; Winograd 0.86-0.87 at 80 x 80 and
  // 112 x 112, ties at 4 x 32 x 32 and 8 x 32 x 32).
  if (folded && c_in <= kWinogradMinChannels && full_width_units() &&
      p.n * p.out_h * p.out_w <= kWinogradFewNewMinPixels) {
    return false;
  }
  if (p.folded_kh() == 5 && squeezes_rounding(p.activation)) return false;
  const double winograd = winograd_model_cost(p, prepacked);
  const double direct = static_cast<double>(p.n) * p.out_h * p.out_w * static_cast<double>(p.kh * p.kw) *
                        static_cast<double>(p.c_in) * static_cast<double>(p.c_out);
  if (!folded) return winograd < direct;
  const double fold = static_cast<double>(p.n) * (p.out_h + p.folded_kh() - 1) * (p.out_w + p.folded_kw() - 1) * c_in;
  return (winograd + fold * kWinogradFoldCost) * kWinogradFoldedOptimism < direct;
}

// The first-layer kernel serves dense convolutions with at most kFirstLayerShortMaxCin input channels
// that are not GEMMs (pointwise) and not Winograd's, by the rules above.
bool prefer_first_layer(const Conv2dParams& p) {
  if (p.groups != 1 || p.is_pointwise() || p.c_in > kFirstLayerShortMaxCin) return false;
  return p.c_in <= kFirstLayerMaxCin || p.kh * p.kw * p.c_in <= kFirstLayerShortMaxTaps ||
         p.c_out >= kFirstLayerLongMinCout || p.out_w >= kFirstLayerLongMinWidth;
}

}  // namespace

std::vector<std::string> supported_isas() {
  std::vector<std::string> names;
  for (const KernelTable* t : kTables) {
    if (cpu_has(*t)) names.emplace_back(t->isa);
  }
  return names;
}

void apply_isa_environment() {
  if (const char* forced = std::getenv("FASTCONV_ISA"); forced && *forced) {
    try {
      set_isa(forced);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("FASTCONV_ISA: ") + e.what());
    }
  }
}

std::string active_isa() { return table().isa; }
std::string narrow_isa() {
  const KernelTable* narrow = g_narrow_table.load();
  return narrow ? narrow->isa : "";
}
double narrow_fma_ratio() {
  const KernelTable* narrow = g_narrow_table.load();
  return narrow ? wide_fma_ratio(*narrow, table()) : 0.0;
}
void set_isa(const std::string& name) {
  if (name == "auto") {
    g_table.store(best_table());
    g_narrow_table.store(narrow_table_of(best_table()));
    return;
  }
  g_table.store(find_table(name));
  g_narrow_table.store(nullptr);
}

int num_threads() { return g_num_threads.load(std::memory_order_relaxed); }
void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("set_num_threads: n must be >= 1");
  g_num_threads.store(n);
}

// Calls between CallInFlight's constructor and destructor, from every thread.
std::atomic<int> g_calls_in_flight{0};
CallInFlight::CallInFlight() { g_calls_in_flight.fetch_add(1, std::memory_order_relaxed); }
CallInFlight::~CallInFlight() { g_calls_in_flight.fetch_sub(1, std::memory_order_relaxed); }

// The threads a kernel call may start: its share of num_threads() among the calls in flight, at
// least one. Four Python threads calling at once on 2 cores, set_num_threads(2): each call taking
// 2 threads got through 1.2-1.5x fewer calls a second than shared (conv2d 3x3, depthwise, pointwise;
// bench/NOTES.md, "Calls from several Python threads").
int call_threads() {
  const int in_flight = g_calls_in_flight.load(std::memory_order_relaxed);
  return in_flight > 1 ? std::max(1, num_threads() / in_flight) : num_threads();
}

// A strided 1x1 convolution with few output pixels (ResNet's last downsampling shortcut, 14 x 14 x
// 1024 -> 7 x 7 x 2048) gathers its pixels and runs the GEMM, whose few-row paths read each weight
// once per call (stream_gemm in place, sweep_gemm packing in L2-sized chunks); the tiled engine
// packs all weights first (0.72-0.84 of its time for that layer). Up to 200 pixels only when the
// weights outgrow one core's L2 (28 x 28 x 512 -> 1024 s2: 0.89-0.92 of the time; with 256 -> 512,
// 0.5 MiB, the tiled engine stays 1.12x faster); on larger outputs the two tie.
constexpr int64_t kStridedPointwiseGemmMaxRows = 100;
constexpr int64_t kStridedPointwiseGemmWideMaxRows = 200;
constexpr int64_t kStridedPointwiseGemmWideMinWeightBytes = int64_t{1} << 20;
constexpr int64_t kGatherMinFloatsPerThread = int64_t{1} << 15;  // 128 KiB a thread: a gather worth a region

static bool prefer_strided_pointwise_gemm(const Conv2dParams& p) {
  const int64_t rows = p.n * p.out_h * p.out_w;
  const int64_t weight_bytes = p.c_in * p.c_out * static_cast<int64_t>(sizeof(float));
  return p.is_strided_pointwise() &&
         (rows <= kStridedPointwiseGemmMaxRows ||
          (rows <= kStridedPointwiseGemmWideMaxRows && weight_bytes > kStridedPointwiseGemmWideMinWeightBytes));
}

// Windows that do not overlap (patch embeddings: MLP-Mixer's 32x32 stride 32, ViT's 16x16 on small
// images; ConvNeXt-style 2x2 stride-2 downsampling of small maps) over few output pixels: the same
// gather and GEMM, each pixel's window one row of the (KH * KW * C_in, C_out) matrix that HWIO
// weights already are. Up to 16 pixels stream_gemm reads each weight once, in place, where the tiled
// engine packs them all first and the first-layer kernel rereads them per row of pixels (paired,
// 2 threads: 0.36-0.60 of the time); up to 64 the first-layer kernel's cases from 192 taps still
// gain (0.86-0.95). The tiled engine's at 49-100 pixels tie or lose (1.04-1.30), as do 100-196
// pixels of patches. With weights packed ahead (prepacked) the tiled engine no longer packs per
// call and keeps its layers below kPatchGemmPackedMinWeightBytes of weights (its packed form ran
// 0.7-0.9 of the packed GEMM's time at 0.1-0.5 MiB, tied at 4.5 MiB, 1.5x slower at 18 MiB);
// bench/NOTES.md, "Few patches as a GEMM".
constexpr int64_t kPatchGemmMaxRows = 16;
constexpr int64_t kPatchGemmFirstLayerMaxRows = 64;
constexpr int64_t kPatchGemmFirstLayerMinTaps = 192;
constexpr int64_t kPatchGemmPackedMinWeightBytes = int64_t{8} << 20;
// Where the first-layer kernel would run 8-lane vectors (AVX2), windows of this many taps (ViT's
// 16x16 and 14x14 patches of 3 channels) gather at any count of pixels: on Zen 3, 2 threads, packed
// weights, ViT-B/16 at 224 (196 pixels) ran in 0.70-0.82 of the first-layer kernel's time, at 384
// 0.81-0.83, ViT-S/16 at batch 4 0.79-0.89, 160 x 160 to 192 channels 0.80-0.85, 14x14 patches
// 0.85-0.88; 8x8 patches (192 taps) over 784 pixels lost (1.01-1.07), 4x4 stems (48) 1.02-2.1x.
// From 32 output channels: 16x16 patches to 32-96 channels 0.88-0.98, to 24 1.30x slower.
constexpr int64_t kPatchGemmNarrowVectorMinTaps = 512;
constexpr int64_t kPatchGemmNarrowVectorMinCout = 32;
constexpr int kPatchGemmNarrowVectorMaxFloats = 8;

static bool prefer_patch_gemm(const Conv2dParams& p, bool prepacked) {
  if (p.groups != 1 || p.kh * p.kw == 1 || !p.windows_apart_h() || !p.windows_apart_w()) return false;
  const int64_t rows = p.n * p.out_h * p.out_w, taps = p.kh * p.kw * p.c_in;
  const bool first_layer = prefer_first_layer(p);  // a kernel that packs on every call, prepacked or not
  const bool engine_keeps = prepacked && !first_layer &&
                            taps * p.c_out * static_cast<int64_t>(sizeof(float)) < kPatchGemmPackedMinWeightBytes;
  const bool narrow_vector_patches = first_layer && taps >= kPatchGemmNarrowVectorMinTaps &&
                                     p.c_out >= kPatchGemmNarrowVectorMinCout &&
                                     first_layer_table(p).vector_floats <= kPatchGemmNarrowVectorMaxFloats;
  return (rows <= kPatchGemmMaxRows && !engine_keeps) ||
         (rows <= kPatchGemmFirstLayerMaxRows && first_layer && taps >= kPatchGemmFirstLayerMinTaps) ||
         narrow_vector_patches;
}

// The gathered windows' buffer: the calling thread's, kept between calls (a fresh allocation per
// call paid a page fault on every page); it grows to the largest gather the thread has made, at
// most about the input of its largest such layer (windows apart copy each input float once).
static float* window_buffer(int64_t floats) {
  static thread_local std::vector<float> buffer;
  if (static_cast<int64_t>(buffer.size()) < floats) buffer.resize(static_cast<size_t>(floats));
  return buffer.data();
}

// n floats in 16-byte pieces, inlined: a memcpy call per window row cost more than its copy (and
// GCC would turn the loop back into one).
#if defined(__GNUC__) && !defined(__clang__)
#define FC_NO_LOOP_TO_MEMCPY __attribute__((optimize("no-tree-loop-distribute-patterns")))
#else
#define FC_NO_LOOP_TO_MEMCPY
#endif
FC_NO_LOOP_TO_MEMCPY static inline void copy_floats(float* __restrict dst, const float* __restrict src, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) std::memcpy(dst + i, src + i, 16);
  for (; i < n; ++i) dst[i] = src[i];
}

// One output row's windows at kernel row ky, KW * C_in floats per output column (dilation 1: one
// run of the input row), zeros where a window leaves the image.
static void gather_window_row(const Conv2dParams& p, const float* x_row, bool row_in, float* dst, int64_t k) {
  const int64_t seg = p.kw * p.c_in;
  for (int64_t ox = 0; ox < p.out_w; ++ox, dst += k) {
    const int64_t ix0 = ox * p.stride_w - p.pad_left;
    if (row_in && p.dilation_w == 1 && ix0 >= 0 && ix0 + p.kw <= p.w) {
      copy_floats(dst, x_row + ix0 * p.c_in, seg);
      continue;
    }
    for (int64_t kx = 0; kx < p.kw; ++kx) {
      const int64_t ix = ix0 + kx * p.dilation_w;
      const bool in = row_in && ix >= 0 && ix < p.w;
      for (int64_t c = 0; c < p.c_in; ++c) dst[kx * p.c_in + c] = in ? x_row[ix * p.c_in + c] : 0.0f;
    }
  }
}

// Rows of KH * KW * C_in floats, one per output pixel, then the GEMM (on w_packed, the GEMM's packed
// form of w, when given).
static void window_gemm(const Conv2dParams& p, const KernelTable& t, const float* x, const float* w,
                        const float* w_packed, const float* b, float* y) {
  const int64_t rows = p.n * p.out_h * p.out_w, seg = p.kw * p.c_in, k = p.kh * seg;
  float* a = window_buffer(rows * k);
  const int threads = call_threads();  // one share for the gather and the GEMM
  parallel_run(threads_for(rows * k, threads, kGatherMinFloatsPerThread * threads), [&] {
#pragma omp for schedule(static)
    for (int64_t row = 0; row < p.n * p.out_h; ++row) {
      const int64_t n = row / p.out_h, oy = row % p.out_h;
      for (int64_t ky = 0; ky < p.kh; ++ky) {
        const int64_t iy = oy * p.stride_h - p.pad_top + ky * p.dilation_h;
        const bool row_in = iy >= 0 && iy < p.h;
        gather_window_row(p, x + (n * p.h + (row_in ? iy : 0)) * p.w * p.c_in, row_in,
                          a + row * p.out_w * k + ky * seg, k);
      }
    }
  });
  const GemmParams g{rows, k, p.c_out, p.activation};
  w_packed ? t.gemm_prepacked(g, a, w, w_packed, b, y, threads) : t.gemm(g, a, w, b, y, threads);
}

namespace {

// The kernel families a convolution can run on.
enum class ConvPath { kGemm, kWindowGemm, kDepthwise, kGrouped, kWinograd, kFirstLayer, kDirect };

// Groups of fewer output channels than a vector holds run with the lanes across groups
// (conv2d_grouped.cpp); the tiled engine would fill one group's channels per vector.
bool prefer_grouped(const Conv2dParams& p) { return table().grouped_fits(p); }

ConvPath conv_path(const Conv2dParams& p, bool prepacked) {
  if (p.is_pointwise()) return ConvPath::kGemm;
  if (prefer_strided_pointwise_gemm(p)) return ConvPath::kWindowGemm;
  if (p.is_depthwise()) return ConvPath::kDepthwise;
  if (prefer_grouped(p)) return ConvPath::kGrouped;
  if (p.algorithm == ConvAlgorithm::kWinograd || (p.algorithm == ConvAlgorithm::kAuto && prefer_winograd(p, prepacked))) {
    return ConvPath::kWinograd;
  }
  if (prefer_patch_gemm(p, prepacked)) return ConvPath::kWindowGemm;  // after Winograd: "winograd" stays asked for
  if (prefer_first_layer(p)) return ConvPath::kFirstLayer;
  return ConvPath::kDirect;
}

// The kernel table that runs a convolution on `path`.
const KernelTable& conv_table(const Conv2dParams& p, ConvPath path) {
  switch (path) {
    case ConvPath::kWinograd:  // 4x4 folded filters: 12 channels in one vector (run_winograd_folded_rgb)
      return p.folded_kh() == 4 ? table() : channel_table(LaneUse::kWinograd, one_group(p).folded_c_in(),
                                                          p.c_out_per_group());
    case ConvPath::kFirstLayer:
      return first_layer_table(p);
    case ConvPath::kDepthwise:
      return channel_table(LaneUse::kDepthwise, p.c_in, p.c_out);
    case ConvPath::kGemm:
      return channel_table(LaneUse::kPointwise, p.c_in, p.c_out);
    case ConvPath::kDirect:
      return channel_table(LaneUse::kDirect, p.c_in_per_group(), p.c_out_per_group());
    default:
      return table();
  }
}

void run_conv2d(const Conv2dParams& p, const KernelTable& t, ConvPath path, const float* x, const float* w,
                const float* w_packed, const float* b, float* y) {
  switch (path) {
    case ConvPath::kGemm:
      return t.gemm(GemmParams{p.n * p.h * p.w, p.c_in, p.c_out, p.activation}, x, w, b, y, call_threads());
    case ConvPath::kWindowGemm:
      return window_gemm(p, t, x, w, w_packed, b, y);
    case ConvPath::kDepthwise:
      return t.depthwise(p, x, w, b, y, call_threads());
    case ConvPath::kGrouped:
      return t.grouped(p, x, w, b, y, call_threads());
    case ConvPath::kWinograd:
      return t.winograd(p, x, w, w_packed, b, y, call_threads());
    case ConvPath::kFirstLayer:
      return t.first_layer(p, x, w, b, y, call_threads());
    case ConvPath::kDirect:
      return t.conv2d(p, x, w, w_packed, b, y, call_threads());
  }
}

}  // namespace

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y) {
  const ConvPath path = conv_path(p, false);
  run_conv2d(p, conv_table(p, path), path, x, w, nullptr, b, y);
}

std::string conv2d_kernel(const Conv2dParams& p) {
  switch (conv_path(p, false)) {
    case ConvPath::kGemm: return "gemm";
    case ConvPath::kWindowGemm: return "window gemm";
    case ConvPath::kDepthwise: return "depthwise";
    case ConvPath::kGrouped: return "grouped";
    case ConvPath::kWinograd: return "winograd";
    case ConvPath::kFirstLayer: return "first layer";
    case ConvPath::kDirect: return "direct";
  }
  return "";
}

ConvPlan plan_conv2d(const Conv2dParams& p) {
  const ConvPath path = conv_path(p, true);
  const KernelTable& t = conv_table(p, path);
  ConvPlan plan{&t, static_cast<int>(path), "", 0};
  if (path == ConvPath::kDirect) {
    plan.layout = std::string(t.isa) + " direct, groups " + std::to_string(p.groups);
    plan.floats = t.conv2d_packed_floats(p);
  } else if (path == ConvPath::kWindowGemm) {  // the GEMM's form of the (KH * KW * C_in, C_out) matrix
    plan.layout = t.isa;
    plan.floats = t.gemm_packed_floats(p.kh * p.kw * p.c_in, p.c_out);
  } else if (path == ConvPath::kWinograd) {
    const int tile = winograd_tile(p.folded_kh(), p.folded_c_in());
    plan.layout = std::string(t.isa) + " winograd F(" + std::to_string(tile) + ", " + std::to_string(p.folded_kh()) +
                  "), stride " + std::to_string(p.stride_h) + "x" + std::to_string(p.stride_w);
    plan.floats = t.winograd_packed_floats(p);
  }
  return plan;
}

void pack_conv2d_weights(const ConvPlan& plan, const Conv2dParams& p, const float* w, float* w_packed) {
  switch (static_cast<ConvPath>(plan.path)) {
    case ConvPath::kDirect:
      return plan.table->pack_conv2d_weights(p, w, w_packed, call_threads());
    case ConvPath::kWinograd:
      return plan.table->pack_winograd_weights(p, w, w_packed, call_threads());
    case ConvPath::kWindowGemm:
      return plan.table->pack_gemm_weights(p.kh * p.kw * p.c_in, p.c_out, w, w_packed, call_threads());
    default:
      throw std::invalid_argument("pack_conv2d_weights: this convolution's kernel takes no packed weights");
  }
}

void conv2d_planned(const ConvPlan& plan, const Conv2dParams& p, const float* x, const float* w, const float* w_packed,
                    const float* b, float* y) {
  run_conv2d(p, *plan.table, static_cast<ConvPath>(plan.path), x, w, w_packed, b, y);
}

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y) {
  table().gemm(p, x, w, b, y, call_threads());
}
GemmPlan plan_gemm() {
  const KernelTable& t = table();
  return {&t, t.isa};
}
int64_t gemm_packed_floats(const GemmPlan& plan, int64_t k, int64_t m) { return plan.table->gemm_packed_floats(k, m); }
void pack_gemm_weights(const GemmPlan& plan, int64_t k, int64_t m, const float* w, float* w_packed) {
  plan.table->pack_gemm_weights(k, m, w, w_packed, call_threads());
}
void gemm_planned(const GemmPlan& plan, const GemmParams& p, const float* x, const float* w, const float* w_packed,
                  const float* b, float* y) {
  plan.table->gemm_prepacked(p, x, w, w_packed, b, y, call_threads());
}
// A window over the whole unpadded image (a network's last 7x7 pooling) is global pooling: that
// kernel reads each image as one stream instead of gathering every window tap per output.
static bool covers_image(const Pool2dParams& p) {
  return p.kh == p.h && p.kw == p.w && p.pad_top == 0 && p.pad_bottom == 0 && p.pad_left == 0 && p.pad_right == 0;
}

void max_pool2d(const Pool2dParams& p, const float* x, float* y) {
  if (covers_image(p)) return table().global_max_pool(GlobalPoolParams{p.n, p.h, p.w, p.c}, x, y, call_threads());
  channel_table(LaneUse::kPool, p.c, p.c).max_pool(p, x, y, call_threads());
}
void avg_pool2d(const Pool2dParams& p, const float* x, float* y) {
  if (covers_image(p)) return table().global_avg_pool(GlobalPoolParams{p.n, p.h, p.w, p.c}, x, y, call_threads());
  channel_table(LaneUse::kPool, p.c, p.c).avg_pool(p, x, y, call_threads());
}
void global_avg_pool2d(const GlobalPoolParams& p, const float* x, float* y) {
  table().global_avg_pool(p, x, y, call_threads());
}
void global_max_pool2d(const GlobalPoolParams& p, const float* x, float* y) {
  table().global_max_pool(p, x, y, call_threads());
}
void elementwise(const ElementwiseParams& p, const float* a, const float* b, float* y) {
  table().elementwise(p, a, b, y, call_threads());
}
void scale_channels(const ScaleChannelsParams& p, const float* x, const float* s, float* y) {
  table().scale_channels(p, x, s, y, call_threads());
}
void channel_affine(const ChannelAffineParams& p, const float* x, const float* scale, const float* shift, float* y) {
  table().channel_affine(p, x, scale, shift, y, call_threads());
}

double fma_peak(int threads, double seconds) {
  if (threads < 1) throw std::invalid_argument("fma_peak: threads must be >= 1");
  if (!(seconds > 0.0)) throw std::invalid_argument("fma_peak: seconds must be > 0");
  return table().fma_peak(threads, seconds);
}
double triad_bandwidth(int64_t floats_per_array, int threads) {
  if (threads < 1) throw std::invalid_argument("triad_bandwidth: threads must be >= 1");
  if (floats_per_array < 1) throw std::invalid_argument("triad_bandwidth: floats_per_array must be >= 1");
  return table().triad_bandwidth(floats_per_array, threads);
}
std::array<int64_t, 3> planned_cache_bytes() { return {l1_cache_bytes(), l2_cache_bytes(), last_level_cache_bytes()}; }

}  // namespace fastconv::cpu
