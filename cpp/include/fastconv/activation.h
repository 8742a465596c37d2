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

// The activations computed with an exponential: tens of operations per value, where the others
// take one or two.
FC_HOST_DEVICE bool has_exponential(Activation act) {
  return act == Activation::kSigmoid || act == Activation::kTanh || act == Activation::kSilu;
}

// Sigmoid and tanh squeeze large sums into a small range but pass the absolute rounding error of sums
// near 0 through unchanged, so a Winograd variant's larger rounding can exceed the tolerance after
// them: the Winograd kernels keep 2x2 tiles (3x3) or the direct kernel (5x5, and strided filters
// folded to 4x4) for these.
FC_HOST_DEVICE bool squeezes_rounding(Activation act) {
  return act == Activation::kSigmoid || act == Activation::kTanh;
}

}  // namespace fastconv
