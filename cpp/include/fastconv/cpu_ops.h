// The CPU entry points the Python binding calls: choose the kernel family for a problem and the
// instruction set in use, then run it on the configured number of threads.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "fastconv/params.h"

namespace fastconv::cpu {

// Instruction sets compiled into this build and supported by this CPU, best first.
std::vector<std::string> supported_isas();
// The instruction set in use: the best supported one, or FASTCONV_ISA when set at import
// ("auto" = unset).
std::string active_isa();
// Reads FASTCONV_ISA (called once when the module is imported); throws if it names an ISA
// this build or CPU cannot run.
void apply_isa_environment();
// The instruction set that serves few channels beside the active one ("avx2" beside "avx512"), or ""
// when an ISA was forced (FASTCONV_ISA, set_isa) or none narrower helps; dispatch.cpp, channel_table.
std::string narrow_isa();
// The active table's FMA rate on one core over the narrow table's (measured once; ~2 with full-width
// 512-bit units, ~1 where they run as two halves), or 0 without a narrow table.
double narrow_fma_ratio();
// Switches the instruction set (tests and benchmarks): one ISA for every kernel, or "auto" (the
// choice made at import when FASTCONV_ISA is unset); throws std::invalid_argument if unsupported.
void set_isa(const std::string& name);

int num_threads();
void set_num_threads(int n);

// One kernel call in flight, held while it runs (the bindings hold one wherever they release the
// GIL). Calls in flight at once, from several Python threads, share the set_num_threads threads
// among them: each OpenMP team is its own set of threads, so four callers of 2 threads each would
// run 8 threads on 2 cores.
class CallInFlight {
 public:
  CallInFlight();
  ~CallInFlight();
  CallInFlight(const CallInFlight&) = delete;
  CallInFlight& operator=(const CallInFlight&) = delete;
};

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y);
// The kernel family conv2d runs p on under the active ISA: "gemm", "strided gemm", "depthwise",
// "grouped", "winograd", "first layer" or "direct" (the tiled engine).
std::string conv2d_kernel(const Conv2dParams& p);
// Convolution weights packed ahead of the calls (fastconv.pack_weights). plan_conv2d(p) chooses the
// kernel that serves p given packed weights, once: its ISA table, its path and the packed layout it
// reads ("avx2 winograd F(4, 3), stride 1x1"; it depends on the ISA, the kernel and, for Winograd,
// the transform, not on the map) with its size in floats; an empty layout: that kernel reads w as it
// is. pack_conv2d_weights fills such a buffer from w; conv2d_planned runs p from it (and from w
// where the kernel reads w). Packing and running under one plan keeps them on one ISA even if
// set_isa runs in between (each ISA packs its own layout, of its own size).
struct KernelTable;
struct ConvPlan {
  const KernelTable* table;
  int path;  // dispatch.cpp's ConvPath
  std::string layout;
  int64_t floats;
};
ConvPlan plan_conv2d(const Conv2dParams& p);
void pack_conv2d_weights(const ConvPlan& plan, const Conv2dParams& p, const float* w, float* w_packed);
void conv2d_planned(const ConvPlan& plan, const Conv2dParams& p, const float* x, const float* w, const float* w_packed,
                    const float* b, float* y);
void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y);
// Dense weights packed ahead of the calls (fastconv.pack_weights), in the active ISA's layout, named
// by the ISA: plan_gemm() fixes the table, gemm_packed_floats(plan, k, m) floats are filled by
// pack_gemm_weights; gemm_planned reads them where its path would otherwise pack per call, and w
// elsewhere.
struct GemmPlan {
  const KernelTable* table;
  std::string layout;
};
GemmPlan plan_gemm();
int64_t gemm_packed_floats(const GemmPlan& plan, int64_t k, int64_t m);
void pack_gemm_weights(const GemmPlan& plan, int64_t k, int64_t m, const float* w, float* w_packed);
void gemm_planned(const GemmPlan& plan, const GemmParams& p, const float* x, const float* w, const float* w_packed,
                  const float* b, float* y);
void max_pool2d(const Pool2dParams& p, const float* x, float* y);
void avg_pool2d(const Pool2dParams& p, const float* x, float* y);
void global_avg_pool2d(const GlobalPoolParams& p, const float* x, float* y);
void global_max_pool2d(const GlobalPoolParams& p, const float* x, float* y);
// activation(a + b), or activation(a) where b is null (add, activate).
void elementwise(const ElementwiseParams& p, const float* a, const float* b, float* y);
void scale_channels(const ScaleChannelsParams& p, const float* x, const float* s, float* y);
void channel_affine(const ChannelAffineParams& p, const float* x, const float* scale, const float* shift, float* y);

// Machine ceilings for `fastconv bench` (cpp/peak.cpp), with the active instruction set:
// float32 FMA GFLOP/s over `threads` threads, measured for about `seconds`; triad GB/s.
double fma_peak(int threads, double seconds);
double triad_bandwidth(int64_t floats_per_array, int threads);
// The L1 data, L2 and last-level cache sizes in bytes that the size rules plan for (kernel_util.h).
std::array<int64_t, 3> planned_cache_bytes();

}  // namespace fastconv::cpu
