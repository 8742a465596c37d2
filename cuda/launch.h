// Host entry points of the CUDA kernels, in plain C++ types so that bind_cuda.cpp compiles with the
// host compiler alone. Pointers are device pointers; `stream` is a cudaStream_t passed as an
// integer (0: the legacy default stream). Every launcher is asynchronous: it enqueues work on
// `stream` on the current device and returns; launch-configuration errors throw std::runtime_error.
// `version` picks a kernel version (listed at the top of each .cu file): 0, what the ops use, takes
// the best one that applies; n > 0 forces version n, for comparing versions side by side
// (bench/gpu_versions.py), and throws std::invalid_argument where it does not apply.
#pragma once

#include <cstdint>
#include <string>

#include "fastconv/params.h"

namespace fastconv::cuda {

using StreamHandle = uintptr_t;

// Any Conv2dProblem: pointwise -> gemm, depthwise -> depthwise kernel, 3x3 / 5x5 stride 1 -> Winograd
// for algorithm "winograd" (and "auto" where it pays), else implicit GEMM. A version > 0 forces
// that version of the kernel the problem goes to (for "winograd": its tile size). b may be null.
void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream,
            int version = 0);
void implicit_gemm_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                          StreamHandle stream, int version = 0);
// Winograd F(2x2 | 4x4, 3x3 | 5x5) (conv2d_winograd.cu): p must be winograd_eligible() with stride 1;
// version 1: 2x2 output tiles, 2: 4x4, 0: by C_in. winograd_pays: the shapes "auto" sends to it.
void winograd_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                     StreamHandle stream, int version = 0);
bool winograd_pays(const Conv2dParams& p);
void depthwise_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                      StreamHandle stream, int version = 0);
// y (rows, m) = act(x (rows, k) @ w (k, m) + b): dense layers and pointwise convolutions.
void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream,
          int version = 0);

void max_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream, int version = 0);
void avg_pool2d(const Pool2dParams& p, const float* x, float* y, StreamHandle stream, int version = 0);
void global_avg_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream);
void global_max_pool2d(const GlobalPoolParams& p, const float* x, float* y, StreamHandle stream);

// Makes `device` current for this thread in this module's (static) CUDA runtime.
void set_device(int device);

// Device facts for `fastconv info`; each throws std::runtime_error with CUDA's message on failure
// (no driver, no device).
struct DeviceInfo {
  std::string name;
  int major = 0, minor = 0, multiprocessors = 0;
  int64_t total_memory = 0;
};
int device_count();
DeviceInfo device_info(int device);
int driver_version();   // e.g. 12040 for 12.4; 0 when no driver is installed
int runtime_version();  // of the CUDA runtime linked into the module

// Ceilings for `fastconv bench`; both synchronise on their own events.
double measure_fma_peak(StreamHandle stream);                        // FP32 GFLOP/s
double measure_copy_bandwidth(int64_t nbytes, StreamHandle stream);  // GB/s, bytes read + written

}  // namespace fastconv::cuda
