// Problem geometry handed from Python to the kernels, shared by cpp/ and cuda/.
// Plain structs of 64-bit integers: every index the kernels form fits, whatever the tensor size.
// Layouts: activations NHWC, dense-conv weights HWIO (KH, KW, C_in / groups, C_out).
// The values are validated once in src/fastconv/_params.py; kernels trust them.
#pragma once

#include <cstdint>

#include "fastconv/activation.h"

namespace fastconv {

// conv2d's algorithm= argument. kAuto: each backend's dispatch picks (a cost model on the CPU, a
// channel-count rule on the GPU); kWinograd is only ever set for winograd_eligible() problems
// (_params.py checks): F(4x4, 3x3) and F(4x4, 5x5), with 2x2 tiles for sigmoid / tanh (3x3) and
// few input channels (5x5; 3x3 too on the GPU).
enum class ConvAlgorithm : int { kAuto = 0, kDirect, kWinograd };

// The kernel rows ky in [ky0, ky1) whose input rows lie inside the image for one output row; iy0:
// the input row of ky = 0 (may be negative).
struct KernelRows {
  int64_t iy0, ky0, ky1;
};

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
  KernelRows rows_inside(int64_t oy) const {
    KernelRows r{oy * stride_h - pad_top, 0, kh};
    while (r.ky0 < r.ky1 && r.iy0 + r.ky0 * dilation_h < 0) ++r.ky0;
    while (r.ky1 > r.ky0 && r.iy0 + (r.ky1 - 1) * dilation_h >= h) --r.ky1;
    return r;
  }
  // A plain GEMM over (N*H*W, C_in) x (C_in, C_out).
  bool is_pointwise() const {
    return kh == 1 && kw == 1 && stride_h == 1 && stride_w == 1 && pad_top == 0 && pad_left == 0 &&
           out_h == h && out_w == w && groups == 1;
  }
  // A 1x1 convolution with a stride whose every output reads an input pixel (no padding taken): a
  // GEMM over the pixels the stride keeps.
  bool is_strided_pointwise() const {
    return kh == 1 && kw == 1 && (stride_h > 1 || stride_w > 1) && pad_top == 0 && pad_left == 0 && groups == 1 &&
           (out_h - 1) * stride_h < h && (out_w - 1) * stride_w < w;
  }
  // Windows that share no input rows (columns): neighbouring outputs down (across) read apart, as in
  // patch embeddings (16x16 stride 16).
  bool windows_apart_h() const { return (kh - 1) * dilation_h < stride_h; }
  bool windows_apart_w() const { return (kw - 1) * dilation_w < stride_w; }
  // The filter after folding the stride into the channels (space to depth): a stride-s convolution
  // is a stride-1 one over the input's s_h x s_w phases (s_h * s_w * C_in channels) with a
  // ceil(KH / s_h) x ceil(KW / s_w) filter, zero past KH x KW. Stride 1 folds to itself.
  int64_t folded_kh() const { return (kh + stride_h - 1) / stride_h; }
  int64_t folded_kw() const { return (kw + stride_w - 1) / stride_w; }
  int64_t folded_c_in() const { return stride_h * stride_w * c_in; }
  // The shapes the Winograd kernels compute: a filter that folds to 3x3 or 5x5 (3x3 and 5x5 at
  // stride 1; e.g. 11x11 at stride 4, 5x5 at stride 2), or a strided one that folds to 4x4 (7x7 at
  // stride 2), dilation 1, groups 1, any padding. Strided ones run on the folded input on the CPU;
  // the GPU computes them with the direct kernel.
  bool winograd_eligible() const {
    const int64_t f = folded_kh();
    const bool strided = stride_h > 1 || stride_w > 1;
    return f == folded_kw() && (f == 3 || f == 5 || (f == 4 && strided)) && dilation_h == 1 && dilation_w == 1 &&
           groups == 1;
  }
  // A dilated stride-1 3x3 or 5x5 filter (groups 1). Its outputs fall into dilation_h x dilation_w
  // phases (oy mod dilation_h, ox mod dilation_w), each an undilated convolution over the input
  // pixels of the same phase (dilation_phases below), which the CPU may run on its Winograd kernels
  // when auto's cost model says so; algorithm="winograd" asks for dilation 1 as before.
  bool dilated_winograd_eligible() const {
    return (dilation_h > 1 || dilation_w > 1) && stride_h == 1 && stride_w == 1 && groups == 1 && kh == kw &&
           (kh == 3 || kh == 5);
  }
};

// One group of a grouped convolution as an ungrouped problem over that group's channels.
inline Conv2dParams one_group(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.c_in = p.c_in_per_group();
  q.c_out = p.c_out_per_group();
  q.groups = 1;
  return q;
}

// The undilated problem over every phase of a dilated stride-1 convolution: one image per (n, phase
// ry, phase rx), whose pixel (m, q) is the input's (ry + dilation_h m - pad_top, rx + dilation_w q -
// pad_left), zero outside the image; 'valid', with ceil(out_h / dilation_h) x ceil(out_w /
// dilation_w) outputs, output (j, i) of phase (ry, rx) being the output (ry + dilation_h j, rx +
// dilation_w i) (the last phases' rows and columns past the output are computed and dropped).
inline Conv2dParams dilation_phases(const Conv2dParams& p) {
  Conv2dParams q = p;
  q.n = p.n * p.dilation_h * p.dilation_w;
  q.out_h = (p.out_h + p.dilation_h - 1) / p.dilation_h;
  q.out_w = (p.out_w + p.dilation_w - 1) / p.dilation_w;
  q.h = q.out_h + p.kh - 1;
  q.w = q.out_w + p.kw - 1;
  q.dilation_h = q.dilation_w = 1;
  q.pad_top = q.pad_left = 0;
  return q;
}

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

// y = activation(a + b), or activation(a) without b, over `count` floats in any layout.
struct ElementwiseParams {
  int64_t count;
  Activation activation;
};

// y[r, c] = activation(x[r, c] * scale[c] + shift[c]): `rows` rows of c channels (inference batch norm).
struct ChannelAffineParams {
  int64_t rows, c;
  Activation activation;
};

// y[i, p, c] = x[i, p, c] * s[i, c]: n images of `pixels` pixels of c channels (squeeze-and-excitation).
struct ScaleChannelsParams {
  int64_t n, pixels, c;
};

// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation. Dense layers and 1x1 convolutions.
struct GemmParams {
  int64_t rows, k, m;
  Activation activation;
};

}  // namespace fastconv
