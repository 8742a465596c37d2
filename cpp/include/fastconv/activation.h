// The activations fused into the output step of conv, depthwise, pointwise and dense kernels.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FC_HOST_DEVICE __host__ __device__ __forceinline__
#else
// static: each CPU instruction-set translation unit keeps its own copy, so the linker can never
// hand AVX-512 code to the portable path.
#define FC_HOST_DEVICE static inline
#endif

namespace fastconv {

enum class Activation : int { kNone = 0, kRelu, kRelu6, kSigmoid, kTanh, kSilu };

FC_HOST_DEVICE float apply_activation(Activation act, float v) {
  switch (act) {
    case Activation::kNone: return v;
    // v > 0 ? v : 0 keeps NaN as NaN, like PyTorch's relu.
    case Activation::kRelu: return v > 0.0f ? v : (v != v ? v : 0.0f);
    case Activation::kRelu6: return v != v ? v : (v < 0.0f ? 0.0f : (v > 6.0f ? 6.0f : v));
    case Activation::kSigmoid: return 1.0f / (1.0f + expf(-v));
    case Activation::kTanh: return tanhf(v);
    case Activation::kSilu: return v / (1.0f + expf(-v));
  }
  return v;
}

// The activations computed with an exponential (on the CPU's vectors tanh is a rational function
// instead, of nearly as many operations): tens of operations per value; the others take one or two.
FC_HOST_DEVICE bool has_exponential(Activation act) {
  return act == Activation::kSigmoid || act == Activation::kTanh || act == Activation::kSilu;
}

// Sigmoid and tanh squeeze large sums into a small range but pass the absolute rounding error of sums
// near 0 through unchanged. Judged at the scale of the sums (_compare.py), as the tests do, F(4x4,
// 3x3) stays far inside the tolerance with them (0.26 of it at worst over 300 random layers, CPU),
// so the CPU runs 3x3 layers with them like any other; the 5x5 transforms and strided filters
// folded to 4x4 round ~3x worse and keep the direct kernel, and the GPU keeps its 2x2 tiles
// (cuda/conv2d_winograd.cu) until measured there.
FC_HOST_DEVICE bool squeezes_rounding(Activation act) {
  return act == Activation::kSigmoid || act == Activation::kTanh;
}

}  // namespace fastconv
