// Problem geometry handed from Python to the kernels, shared by cpp/ and cuda/.
// Plain structs of 64-bit integers: every index the kernels form fits, whatever the tensor size.
// Layouts: activations NHWC, dense-conv weights HWIO (KH, KW, C_in / groups, C_out).
// The values are validated once in src/fastconv/_params.py; kernels trust them.
#pragma once

#include <cstdint>

#include "fastconv/activation.h"

namespace fastconv {

// conv2d's algorithm= argument. kAuto: each backend's dispatch picks (a cost model on the CPU, a
// channel-count rule on the GPU); kWinograd is only ever set for 3x3 or 5x5, stride 1, dilation 1,
// groups 1 problems (_params.py checks): F(4x4, 3x3) on the CPU, F(2x2, 3x3) on the GPU, and
// F(2x2, 5x5) on both.
enum class ConvAlgorithm : int { kAuto = 0, kDirect, kWinograd };

struct Conv2dParams {
  int64_t n, h, w, c_in;
  int64_t kh, kw, c_out, groups;
  int64_t stride_h, stride_w, dilation_h, dilation_w;
  int64_t pad_top, pad_left;  // bottom/right padding is implied by out_h / out_w
  int64_t out_h, out_w;
  Activation activation;
  ConvAlgorithm algorithm;

  int64_t c_in_per_group() const { return c_in / groups; }
  int64_t c_out_per_group() const { return c_out / groups; }
  // Depthwise: one input channel per group (channel multiplier c_out / c_in).
  bool is_depthwise() const { return groups == c_in && groups > 1 && c_in_per_group() == 1; }
  // A plain GEMM over (N*H*W, C_in) x (C_in, C_out).
  bool is_pointwise() const {
    return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 && pad_left == 0 &&
           out_h == h && out_w == w && groups == 1;
  }
  // The shapes the Winograd kernels compute: 3x3 or 5x5, stride 1, dilation 1, groups 1, any padding.
  bool winograd_eligible() const {
    return kh == kw && (kh == 3 || kh == 5) && stride_h == 1 && stride_w == 1 && dilation_h == 1 &&
           dilation_w == 1 && groups == 1;
  }
};

struct Pool2dParams {
  int64_t n, h, w, c;
  int64_t kh, kw, stride_h, stride_w;
  int64_t pad_top, pad_bottom, pad_left, pad_right;
  int64_t out_h, out_w;
  bool count_include_pad;
};

struct GlobalPoolParams {
  int64_t n, h, w, c;
};

// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation. Dense layers and 1x1 convolutions.
struct GemmParams {
  int64_t rows, k, m;
  Activation activation;
};

}  // namespace fastconv
