// Hardware ceilings for `fastconv bench` (FP32 FMA throughput, device copy bandwidth) and the
// device facts for `fastconv info`. The measurements time themselves with CUDA events on the
// caller's stream and wait for them: they are benchmarks, not ops.
//
// Kernel versions:
//   fma_peak_kernel   register-only: kChains independent FMA chains per thread hide the FMA
//                     latency; the result is stored only when `sink` is non-null (never, at run
//                     time), which keeps the compiler from deleting the loop.
#include <algorithm>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kFmaThreads = 256, kChains = 8, kFmaIterations = 1 << 14;

__global__ void __launch_bounds__(kFmaThreads) fma_peak_kernel(float mul, float add, float* sink) {
  float v[kChains];
#pragma unroll
  for (int i = 0; i < kChains; ++i) v[i] = static_cast<float>(threadIdx.x + i);
#pragma unroll 16
  for (int it = 0; it < kFmaIterations; ++it) {
#pragma unroll
    for (int i = 0; i < kChains; ++i) v[i] = fmaf(v[i], mul, add);
  }
  float sum = 0.0f;
#pragma unroll
  for (int i = 0; i < kChains; ++i) sum += v[i];
  if (sink != nullptr) sink[blockIdx.x * kFmaThreads + threadIdx.x] = sum;
}

// Times `enqueue` (best of `reps` after one warm-up) in milliseconds on `stream`.
template <class Enqueue>
float best_time_ms(cudaStream_t stream, int reps, Enqueue enqueue) {
  cudaEvent_t start, stop;
  FC_CUDA_CHECK(cudaEventCreate(&start));
  FC_CUDA_CHECK(cudaEventCreate(&stop));
  float best = 0.0f;
  try {
    enqueue();
    for (int r = 0; r < reps; ++r) {
      FC_CUDA_CHECK(cudaEventRecord(start, stream));
      enqueue();
      FC_CUDA_CHECK(cudaEventRecord(stop, stream));
      FC_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0.0f;
      FC_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      best = r == 0 ? ms : std::min(best, ms);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  FC_CUDA_CHECK(cudaEventDestroy(start));
  FC_CUDA_CHECK(cudaEventDestroy(stop));
  return best;
}

int current_device() {
  int device = 0;
  FC_CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace

double measure_fma_peak(StreamHandle stream) {
  int sms = 0, threads_per_sm = 0;
  const int device = current_device();
  FC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  FC_CUDA_CHECK(cudaDeviceGetAttribute(&threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device));
  const int blocks = sms * (threads_per_sm / kFmaThreads);  // one full wave
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const float ms = best_time_ms(s, 5, [&] {
    fma_peak_kernel<<<blocks, kFmaThreads, 0, s>>>(0.999f, 1e-3f, nullptr);
    FC_CHECK_LAUNCH("fma_peak_kernel");
  });
  const double flops = 2.0 * kChains * kFmaIterations * static_cast<double>(blocks) * kFmaThreads;
  return flops / (ms * 1e-3) / 1e9;
}

double measure_copy_bandwidth(int64_t nbytes, StreamHandle stream) {
  if (nbytes <= 0) throw std::invalid_argument("measure_copy_bandwidth: nbytes must be positive");
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  void* src = nullptr;
  void* dst = nullptr;
  FC_CUDA_CHECK(cudaMalloc(&src, static_cast<size_t>(nbytes)));
  float ms = 0.0f;
  try {
    FC_CUDA_CHECK(cudaMalloc(&dst, static_cast<size_t>(nbytes)));
    FC_CUDA_CHECK(cudaMemsetAsync(src, 0, static_cast<size_t>(nbytes), s));
    ms = best_time_ms(s, 10, [&] {
      FC_CUDA_CHECK(cudaMemcpyAsync(dst, src, static_cast<size_t>(nbytes), cudaMemcpyDeviceToDevice, s));
    });
  } catch (...) {
    cudaFree(src);
    if (dst) cudaFree(dst);
    throw;
  }
  FC_CUDA_CHECK(cudaFree(src));
  FC_CUDA_CHECK(cudaFree(dst));
  return 2.0 * static_cast<double>(nbytes) / (ms * 1e-3) / 1e9;
}

void set_device(int device) { FC_CUDA_CHECK(cudaSetDevice(device)); }

int device_count() {
  int count = 0;
  FC_CUDA_CHECK(cudaGetDeviceCount(&count));
  return count;
}

DeviceInfo device_info(int device) {
  cudaDeviceProp prop{};
  FC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  DeviceInfo info;
  info.name = prop.name;
  info.major = prop.major, info.minor = prop.minor, info.multiprocessors = prop.multiProcessorCount;
  info.total_memory = static_cast<int64_t>(prop.totalGlobalMem);
  return info;
}

int driver_version() {
  int version = 0;
  FC_CUDA_CHECK(cudaDriverGetVersion(&version));
  return version;
}

int runtime_version() {
  int version = 0;
  FC_CUDA_CHECK(cudaRuntimeGetVersion(&version));
  return version;
}

}  // namespace fastconv::cuda
