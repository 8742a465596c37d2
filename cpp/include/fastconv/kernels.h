// The CPU kernel table. Each op family (conv2d.cpp, conv2d_first_layer.cpp, conv2d_grouped.cpp,
// conv2d_winograd.cpp, depthwise.cpp, gemm.cpp, pool.cpp) is compiled
// once per instruction set, with that set's target flags and FC_ISA naming the namespace its
// functions live in (portable, avx2, avx512). dispatch.cpp picks one table at import, from the
// CPU's features or FASTCONV_ISA. Kernels take raw pointers and a thread count; they never allocate
// Python objects and never check arguments (src/fastconv/_params.py did).
#pragma once

#include "fastconv/params.h"

namespace fastconv::cpu {

using ConvFn = void (*)(const Conv2dParams&, const float* x, const float* w, const float* b, float* y, int threads);
// w_packed: the kernel's own packed form of w made ahead of the calls (fastconv.pack_weights), or
// null to pack w per call.
using PackableConvFn = void (*)(const Conv2dParams&, const float* x, const float* w, const float* w_packed,
                                const float* b, float* y, int threads);
using ConvPackedSizeFn = int64_t (*)(const Conv2dParams&);
using ConvPackFn = void (*)(const Conv2dParams&, const float* w, float* w_packed, int threads);
using GemmFn = void (*)(const GemmParams&, const float* x, const float* w, const float* b, float* y, int threads);
using PackedGemmFn = void (*)(const GemmParams&, const float* x, const float* w, const float* w_packed, const float* b,
                              float* y, int threads);
using PackWeightsFn = void (*)(int64_t k, int64_t m, const float* w, float* w_packed, int threads);
using PackedSizeFn = int64_t (*)(int64_t k, int64_t m);
using PoolFn = void (*)(const Pool2dParams&, const float* x, float* y, int threads);
using GlobalPoolFn = void (*)(const GlobalPoolParams&, const float* x, float* y, int threads);
using ElementwiseFn = void (*)(const ElementwiseParams&, const float* a, const float* b, float* y, int threads);
using ScaleChannelsFn = void (*)(const ScaleChannelsParams&, const float* x, const float* s, float* y, int threads);
using ChannelAffineFn = void (*)(const ChannelAffineParams&, const float* x, const float* scale, const float* shift,
                                float* y, int threads);
using FmaPeakFn = double (*)(int threads, double seconds);
using TriadFn = double (*)(int64_t floats_per_array, int threads);

// 5x5 Winograd takes 4x4 output tiles, F(4x4, 5x5), from this many input channels (folded ones for
// strided filters), F(2x2, 5x5) below: with a single channel its rounding reached 0.8 of the
// tolerance (conv2d_winograd.cpp).
constexpr int64_t kWinograd5x5LargeTileMinCin = 8;

// Winograd over at most this many input channels (folded ones for strided filters) keeps each
// tile's products in registers (conv2d_winograd.cpp, run_winograd_few).
constexpr int64_t kWinogradFewMaxCin = 4;

// The output channels a block of the first-layer kernel's wide channel-vector tiles holds: 2 or 3
// vectors of vector_floats, whichever pads C_out less (3 on a tie). Shared by the tile choice
// (conv2d_first_layer.cpp) and the lane rule that picks the ISA for it (dispatch.cpp).
inline int64_t first_layer_block_channels(int64_t c_out, int64_t vector_floats) {
  const int64_t v2 = 2 * vector_floats, v3 = 3 * vector_floats;
  return (c_out + v3 - 1) / v3 * v3 <= (c_out + v2 - 1) / v2 * v2 ? v3 : v2;
}

// The first-layer kernel's tile (conv2d_first_layer.cpp): vector lanes over output channels
// (channel vectors) or over output pixels. Shared by the kernel and the rule that picks its ISA
// (dispatch.cpp, first_layer_table).
// Channel-vector tiles once C_out fills the wide tile (measured crossover, AVX2: C_out 16; at C_out
// 8-12 pixel vectors win by 1.4-1.6x, at 16-96 channel vectors by 1.1-1.9x). Below it the pixel
// vectors' lanes are full, but their split panel is a pass over every input row that stride 2 or
// more no longer repays where channel vectors fill their one vector (C_out = vector_floats: 3x3
// stride 2 0.72-0.87 of the time, 11x11 stride 4 0.84, 5x5 and 7x7 stride 2 0.94-1.02) or where
// windows do not overlap along a row, each input read by one tap (4x4 stride 4: 0.6 of the time at
// C_out 8, 0.78 at 6, 0.85 at 12). With 16-float vectors the same holds from stride 2 at up to 8
// channels, half the lanes: pixel vectors then transpose each tile of <= 8 channels through memory
// on top of the pass (AVX-512 forced, 2 threads, a Xeon: C_in 3, 3x3 to 11x11 at stride 2 and 4,
// C_out 6-8: 0.47-0.83 of the time; C_in 1-2: 0.75-0.89; one 31 x 31 map 1.16x slower; by default
// AVX2 serves these layers, dispatch.cpp); on AVX2 at 4 channels pixel vectors mostly win (0.93-0.96,
// 2.1x with C_in 1).
// From stride 3 with two or more input channels the pass gathers C_in x stride phases per row, and
// channel vectors win at any C_out (AVX2 on a Xeon, C_in 2-4, 3x3 to 11x11 at stride 3 and 4, C_out
// 6-12: 0.65-0.92 of the time, one 0.99); with one input channel the pass is a strided copy and
// pixel vectors keep winning (1.23-1.29x).
// With 16-float vectors and 9-31 channels the two tiles trade padded lanes against the pass: per
// output pixel, pixel vectors save taps x (padded - C_out) / 16 vector FMAs and add the pass over
// s_h x s_w x C_in input floats and a transposed store of C_out. The one-vector channel tile
// also spends a broadcast per FMA (the two-vector one a broadcast per two), counted as a tenth of
// an FMA per tap. Channel vectors win where that saving is at most kFirstLayerPaddedLanesPerMove of
// the traffic, the pass weighted 3x (fitted to 66 layers on a Xeon, C_in 1 and 3, 3x3 to 11x11 at
// stride 1 and 2, C_out 10-28: channel vectors in 0.55-0.96 of the time where chosen, pixel
// vectors 1.01-1.54x faster elsewhere; one misfit, 5x5 over 3 channels to 12 at stride 2, 9 %).
constexpr double kFirstLayerPaddedLanesPerMove[] = {0.375, 1.25};  // one-vector, two-vector channel tile
constexpr double kFirstLayerOneVectorTapCost = 0.1;
constexpr int64_t kFirstLayerPassWeight = 3;

inline bool first_layer_channel_vectors_pay(const Conv2dParams& p, int64_t vector_floats) {
  const int64_t vecs = (p.c_out + vector_floats - 1) / vector_floats;
  const double padded = static_cast<double>(vecs * vector_floats - p.c_out) / vector_floats;
  const double saved = static_cast<double>(p.kh * p.kw * p.c_in) * (padded + (vecs == 1 ? kFirstLayerOneVectorTapCost : 0.0));
  const double moved = static_cast<double>(kFirstLayerPassWeight * p.stride_h * p.stride_w * p.c_in + p.c_out);
  return saved <= kFirstLayerPaddedLanesPerMove[vecs - 1] * moved;
}

inline bool first_layer_channel_vectors(const Conv2dParams& p, int64_t vector_floats) {
  if (p.c_out >= 2 * vector_floats) return true;
  if (vector_floats == 16 && p.c_out <= vector_floats / 2 && p.stride_w >= 2) return true;
  if (vector_floats == 16 && p.c_out > vector_floats / 2 && first_layer_channel_vectors_pay(p, vector_floats)) return true;
  if (p.c_in >= 2 && p.stride_w >= 3) return true;
  return (p.c_out == vector_floats && p.stride_w >= 2) || p.windows_apart_w();
}

// Pair tiles (conv2d_first_layer.cpp, AVX-512): channel vectors of at most 8 channels, each FMA two
// neighbouring floats of a window row (dilation_w 1).
inline bool first_layer_pair_tiles(const Conv2dParams& p, int64_t vector_floats) {
  return vector_floats == 16 && p.c_out <= vector_floats / 2 && p.dilation_w == 1 &&
         first_layer_channel_vectors(p, vector_floats);
}

// The output tile side (4, 3 or 2) of the CPU's Winograd transform for a stride-1 (or folded) 3x3 /
// 4x4 / 5x5 problem: 5x5 below kWinograd5x5LargeTileMinCin input channels takes 2x2 tiles, whose
// rounding error is smaller.
inline int winograd_tile(int64_t kh, int64_t c_in) {
  if (kh == 5) return c_in >= kWinograd5x5LargeTileMinCin ? 4 : 2;
  if (kh == 4) return 3;  // strided filters only (winograd_eligible)
  return 4;
}

struct KernelTable {
  const char* isa;
  int vector_floats;        // floats per vector register: 16 / 8 / 4
  PackableConvFn conv2d;    // direct convolution, any stride / padding / dilation / groups
  ConvPackedSizeFn conv2d_packed_floats;  // its packed weights (pack_conv2d_weights' output)
  ConvPackFn pack_conv2d_weights;
  PackableConvFn winograd;  // conv2d_winograd.cpp: F(4x4 | 2x2, 3x3 | 5x5), F(3x3, 4x4); winograd_eligible() only
  ConvPackedSizeFn winograd_packed_floats;  // its transformed weights U
  ConvPackFn pack_winograd_weights;
  ConvFn depthwise;  // groups == C_in, one input channel per group
  ConvFn grouped;    // conv2d_grouped.cpp: the problems grouped_fits accepts
  bool (*grouped_fits)(const Conv2dParams&);  // groups > 1, C_out / groups below one vector, lanes across groups
  ConvFn first_layer;  // conv2d_first_layer.cpp: groups 1, few input channels, KH and KW <= 64
  GemmFn gemm;       // 1x1 convolution and dense layers
  PackedGemmFn gemm_prepacked;       // the same, given also the weights packed by pack_gemm_weights
  PackWeightsFn pack_gemm_weights;   // gemm.cpp: this ISA's packed layout, gemm_packed_floats long
  PackedSizeFn gemm_packed_floats;
  PoolFn max_pool;
  PoolFn avg_pool;
  GlobalPoolFn global_avg_pool;
  GlobalPoolFn global_max_pool;
  ElementwiseFn elementwise;  // elementwise.cpp: activation(a + b) or activation(a)
  ScaleChannelsFn scale_channels;  // elementwise.cpp
  ChannelAffineFn channel_affine;  // elementwise.cpp: batch norm
  FmaPeakFn fma_peak;       // peak.cpp: register-only FMA GFLOP/s over `threads` (fastconv bench)
  TriadFn triad_bandwidth;  // peak.cpp: STREAM triad GB/s, 3 arrays x 4 bytes per element
};

// Declares one instruction set's kernels; expanded once per ISA below and inside each family file.
#define FASTCONV_DECLARE_ISA_KERNELS(ns)                                                              \
  namespace ns {                                                                                      \
  void conv2d(const Conv2dParams&, const float* x, const float* w, const float* w_packed, const float* b, float* y, \
              int threads);                                                                           \
  int64_t conv2d_packed_floats(const Conv2dParams&);                                                  \
  void pack_conv2d_weights(const Conv2dParams&, const float* w, float* w_packed, int threads);        \
  void winograd_conv2d(const Conv2dParams&, const float* x, const float* w, const float* w_packed, const float* b, \
                       float* y, int threads);                                                        \
  int64_t winograd_packed_floats(const Conv2dParams&);                                                \
  void pack_winograd_weights(const Conv2dParams&, const float* w, float* w_packed, int threads);      \
  void depthwise(const Conv2dParams&, const float* x, const float* w, const float* b, float* y, int threads); \
  void grouped_conv2d(const Conv2dParams&, const float* x, const float* w, const float* b, float* y, int threads); \
  bool grouped_lanes_fit(const Conv2dParams&);                                                         \
  void first_layer_conv2d(const Conv2dParams&, const float* x, const float* w, const float* b, float* y, int threads); \
  void gemm(const GemmParams&, const float* x, const float* w, const float* b, float* y, int threads);    \
  void gemm_prepacked(const GemmParams&, const float* x, const float* w, const float* w_packed, const float* b, \
                      float* y, int threads);                                                        \
  void pack_gemm_weights(int64_t k, int64_t m, const float* w, float* w_packed, int threads);        \
  int64_t gemm_packed_floats(int64_t k, int64_t m);                                                 \
  void max_pool(const Pool2dParams&, const float* x, float* y, int threads);                         \
  void avg_pool(const Pool2dParams&, const float* x, float* y, int threads);                         \
  void global_avg_pool(const GlobalPoolParams&, const float* x, float* y, int threads);              \
  void global_max_pool(const GlobalPoolParams&, const float* x, float* y, int threads);              \
  void elementwise(const ElementwiseParams&, const float* a, const float* b, float* y, int threads); \
  void scale_channels(const ScaleChannelsParams&, const float* x, const float* s, float* y, int threads); \
  void channel_affine(const ChannelAffineParams&, const float* x, const float* scale, const float* shift, float* y, \
                      int threads);                                                                    \
  double fma_peak(int threads, double seconds);                                                     \
  double triad_bandwidth(int64_t floats_per_array, int threads);                                    \
  extern const KernelTable table;                                                                     \
  }

FASTCONV_DECLARE_ISA_KERNELS(portable)
FASTCONV_DECLARE_ISA_KERNELS(avx2)
FASTCONV_DECLARE_ISA_KERNELS(avx512)

}  // namespace fastconv::cpu
