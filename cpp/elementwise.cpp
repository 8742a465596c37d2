// Elementwise ops: y = activation(a + b) (a residual connection) and y = activation(a), over flat runs
// of p.count floats in any layout; squeeze-and-excitation's y = x * s, each image's pixels scaled
// channel by channel; and inference batch norm, y = activation(x * scale + shift) per channel.
// Compiled once per instruction set (FC_ISA); see kernels.h.
//
// Memory-bound: 12 (or 8) bytes moved per float for one add. The run is cut into chunks of
// kChunkFloats that the threads share; each chunk is summed into y, then activated in place while
// it is still in L1 (vec::activate_row, the same vector activations as the convolutions' stores).
// NumPy's a + b ran on one thread and then activated in a second pass over memory: ResNet-50's
// residual adds at batch 8 (8 x 56 x 56 x 256, 25.7 MB each) took 15.5 ms apiece.
#include <omp.h>

#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"
#include "fastconv/simd_dw.h"

namespace fastconv::cpu::FC_ISA {

namespace {

using vec::vfloat;

constexpr int64_t kChunkFloats = 4096;  // 16 KB of y: in L1 when it is activated

// y[0, count) = a + b (b null: a), then the activation.
void chunk(const float* a, const float* b, float* y, int64_t count, Activation act) {
  constexpr int64_t kLanes = vec::kLanes;
  int64_t i = 0;
  if (b) {
    for (; i + kLanes <= count; i += kLanes) vec::store(y + i, vec::load(a + i) + vec::load(b + i));
    if (i < count) vec::store_partial(y + i, vec::load_partial(a + i, count - i) + vec::load_partial(b + i, count - i), count - i);
  } else {
    for (; i + kLanes <= count; i += kLanes) vec::store(y + i, vec::load(a + i));
    if (i < count) vec::store_partial(y + i, vec::load_partial(a + i, count - i), count - i);
  }
  vec::activate_row(act, y, count);
}

// One pixel's (or row's) c channels: y = x * scale, plus shift where given.
void scale_row(const float* x, const float* scale, const float* shift, float* y, int64_t c) {
  constexpr int64_t kLanes = vec::kLanes;
  int64_t j = 0;
  for (; j + kLanes <= c; j += kLanes) {
    const vfloat v = vec::load(x + j) * vec::load(scale + j);
    vec::store(y + j, shift ? v + vec::load(shift + j) : v);
  }
  if (j < c) {
    const int64_t n = c - j;
    const vfloat v = vec::load_partial(x + j, n) * vec::load_partial(scale + j, n);
    vec::store_partial(y + j, shift ? v + vec::load_partial(shift + j, n) : v, n);
  }
}

}  // namespace

void elementwise(const ElementwiseParams& p, const float* a, const float* b, float* y, int threads) {
  const int64_t chunks = (p.count + kChunkFloats - 1) / kChunkFloats;
  const int64_t bytes = p.count * int64_t{sizeof(float)} * (b ? 3 : 2);
  const int nthreads = static_cast<int>(min_i64(threads_for(bytes, threads), chunks));
  parallel_run(nthreads, [&] {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < chunks; ++k) {
      const int64_t i0 = k * kChunkFloats, len = min_i64(kChunkFloats, p.count - i0);
      chunk(a + i0, b ? b + i0 : nullptr, y + i0, len, p.activation);
    }
  });
}

// Per image, blocks of pixels (about kChunkFloats floats each) that the threads share; each pixel's
// channels times the image's scales, a vector at a time.
void scale_channels(const ScaleChannelsParams& p, const float* x, const float* s, float* y, int threads) {
  const int64_t block = max_i64(1, kChunkFloats / p.c), blocks = (p.pixels + block - 1) / block;
  const int64_t items = p.n * blocks;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.n * p.pixels * p.c * int64_t{2 * sizeof(float)}, threads), items));
  parallel_run(nthreads, [&] {
#pragma omp for schedule(static)
    for (int64_t item = 0; item < items; ++item) {
      const int64_t i = item / blocks, p0 = item % blocks * block, p1 = min_i64(p0 + block, p.pixels);
      const float* si = s + i * p.c;
      for (int64_t px = i * p.pixels + p0; px < i * p.pixels + p1; ++px) scale_row(x + px * p.c, si, nullptr, y + px * p.c, p.c);
    }
  });
}

// Blocks of rows (about kChunkFloats floats each) that the threads share; each row's channels times
// the scales plus the shifts, then the block activated while it is in L1.
void channel_affine(const ChannelAffineParams& p, const float* x, const float* scale, const float* shift, float* y,
                    int threads) {
  const int64_t block = max_i64(1, kChunkFloats / p.c), blocks = (p.rows + block - 1) / block;
  const int nthreads = static_cast<int>(min_i64(threads_for(p.rows * p.c * int64_t{2 * sizeof(float)}, threads), blocks));
  parallel_run(nthreads, [&] {
#pragma omp for schedule(static)
    for (int64_t k = 0; k < blocks; ++k) {
      const int64_t r0 = k * block, r1 = min_i64(r0 + block, p.rows);
      for (int64_t r = r0; r < r1; ++r) scale_row(x + r * p.c, scale, shift, y + r * p.c, p.c);
      vec::activate_row(p.activation, y + r0 * p.c, (r1 - r0) * p.c);
    }
  });
}

}  // namespace fastconv::cpu::FC_ISA
