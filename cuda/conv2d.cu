// Convolution entry point, the implicit-GEMM kernel for general (grouped, strided, dilated,
// padded) NHWC convolutions with HWIO weights, and a direct kernel for first layers.
//
// Kernel versions (picked in implicit_gemm_conv2d; `version` 0 takes the best that applies):
//   v1  conv2d_nhwc_kernel<kVecA, 64>   FP32 SIMT implicit GEMM, 128 x 64 block tile, 8 x 4 per
//                                       thread (common.cuh). kVecA: A gathered as float4 (4 channels
//                                       of one pixel) when C_in / groups % 4 == 0 and x is 16-byte
//                                       aligned; else scalar gathers (any channel count).
//   v2  conv2d_nhwc_kernel<true, 128>   the same core with a 128 x 128 tile, 8 x 8 per thread: half
//                                       the shared-memory reads per FMA. Float4 gathers only (the
//                                       scalar gathers spill at this size).
//   v4  conv2d_nhwc_kernel<kVecA, 32>   a 128 x 32 tile, 8 x 2 per thread, for 32 or fewer output
//                                       channels per group. Auto: gemm_tile_width (common.cuh).
// v1 and v4 split K (common.cuh) when their tiles alone would leave SMs idle.
//   v3  conv2d_small_cin_kernel<C_in>   direct convolution for first layers (groups 1, C_in <= 4,
//                                       C_out % 4 == 0, weights <= 48 KiB): the whole filter bank
//                                       sits in shared memory; a thread computes 4 output channels
//                                       (a float4 of weights) for 4 neighbouring output pixels, so
//                                       each tap is C_in x 4 scalar input loads (shared by the
//                                       threads of a pixel) and one shared-memory load for 16 FMAs.
//                                       An implicit GEMM would pad K = KH*KW*C_in to 8-wide steps
//                                       and gather 4 scalars per float4. Auto whenever it applies.
//   (a TF32 tensor-core version would slot in here, chosen by a precision flag in Conv2dParams.)
// conv2d() routes pointwise problems to gemm() (gemm.cu), depthwise ones to depthwise_conv2d()
// (depthwise.cu), as cpp/dispatch.cpp does on the CPU, and 3x3 / 5x5 stride-1 ones to Winograd
// (conv2d_winograd.cu) when asked (`version` then picks its tile size), or for "auto" where it pays. Strided filters that fold to 3x3 /
// 5x5 (params.h) are Winograd-eligible on the CPU only: asked for Winograd, the GPU runs them direct.
//
// The GEMM view, per group g: M = N*OH*OW output pixels, N = C_out / groups, K = KH*KW*Cg with
// Cg = C_in / groups. Row m, column k of A is x[n, oy*sh - pt + ky*dh, ox*sw - pl + kx*dw, g*Cg + c]
// with k = (ky*KW + kx)*Cg + c (zero in the padding); B is the HWIO weight tensor, already a
// K x C_out row-major matrix whose group-g columns start at g * C_out/groups. No im2col buffer.
#include <algorithm>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

struct ConvGeometry {
  int64_t n, h, w, c_in, out_h, out_w, c_out;
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int64_t rows;          // M = n * out_h * out_w
  int64_t cols;          // C_out / groups
  int cg, kw, k_total;   // Cg, KW, K = KH*KW*Cg (checked < 2^31 on the host)
  int64_t m_tiles, n_tiles;
  int64_t k_chunk;       // K per split (split-K, common.cuh); k_total when not split
  bool vec_b;            // cols % 4 == 0 and w, y 16-byte aligned: float4 loads of B, float4 stores
  Activation activation;
};

template <bool kVecA, int kN>
__global__ void __launch_bounds__(kGemmThreads, kConvMinBlocks<kN>)
    conv2d_nhwc_kernel(ConvGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                       const float* __restrict__ bias, float* __restrict__ y, float* __restrict__ partial) {
  __shared__ __align__(16) typename GemmTile<kN>::Smem smem;
  const GemmThread t = GemmThread::make<kN>(threadIdx.x);

  // Column tiles fastest: the blocks that share one A tile (the large operand) run together.
  int64_t block = blockIdx.x;
  const int64_t n_tile = block % g.n_tiles;
  block /= g.n_tiles;
  const int64_t m_tile = block % g.m_tiles;
  block /= g.m_tiles;
  const int64_t groups = g.c_in / g.cg;
  // The 128-wide tile is only chosen when its tiles fill the GPU, so it never splits K: compiling
  // the split out leaves its 64 accumulators the registers they need.
  constexpr bool kSplits = kN != 128;
  const int64_t group = block % groups, split = kSplits ? block / groups : 0;
  const int64_t row0 = m_tile * kTileM, col0 = n_tile * kN;
  const int k_begin = kSplits ? static_cast<int>(split * g.k_chunk) : 0;
  const int k_end = kSplits ? static_cast<int>(k_begin + g.k_chunk < g.k_total ? k_begin + g.k_chunk : g.k_total)
                            : g.k_total;

  // The output pixel of the A row this thread gathers, decoded once for the whole K loop.
  const int64_t m = row0 + t.a_row;
  const bool row_ok = m < g.rows;
  const int64_t pix = row_ok ? m : 0;
  const int64_t ox = pix % g.out_w, oy = (pix / g.out_w) % g.out_h, img = pix / (g.out_w * g.out_h);
  const int64_t iy0 = oy * g.stride_h - g.pad_top, ix0 = ox * g.stride_w - g.pad_left;
  const float* x_img = x + img * g.h * g.w * g.c_in + group * g.cg;

  const auto gather = [&](int k) -> const float* {  // null in the padding or past the matrix
    if (!row_ok || k >= k_end) return nullptr;
    const int tap = k / g.cg, c = k - tap * g.cg;
    const int ky = tap / g.kw, kx = tap - ky * g.kw;
    const int64_t iy = iy0 + ky * g.dilation_h, ix = ix0 + kx * g.dilation_w;
    if (iy < 0 || iy >= g.h || ix < 0 || ix >= g.w) return nullptr;
    return x_img + (iy * g.w + ix) * g.c_in + c;
  };
  const auto load_a = [&](int64_t k0) {
    const int k = k_begin + static_cast<int>(k0) + t.a_k;
    if constexpr (kVecA) {
      // Cg % 4 == 0: the 4 k share one tap and are 4 adjacent, aligned channels.
      const float* p = gather(k);
      return p ? load4(p) : float4{};
    } else {
      float v[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float* p = gather(k + i);
        v[i] = p ? __ldg(p) : 0.0f;
      }
      return make_float4(v[0], v[1], v[2], v[3]);
    }
  };
  const float* w_group = w + group * g.cols;
  const auto load_b = [&](int64_t k0) {
    const int64_t k = k_begin + k0 + t.b_k, col = col0 + t.b_col;
    if (k >= k_end || col >= g.cols) return float4{};
    const float* p = w_group + k * g.c_out + col;
    if (g.vec_b) return load4(p);
    float v[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = col + j < g.cols ? __ldg(p + j) : 0.0f;
    return make_float4(v[0], v[1], v[2], v[3]);
  };

  typename GemmTile<kN>::Acc acc;
  gemm_block_tile<kN>(smem, t, k_end - k_begin, load_a, load_b, acc);
  // Split-K: the raw sum of this K chunk into its slice of the workspace; the reduction adds the
  // bias and the activation.
  const bool split_k = kSplits && partial != nullptr;
  float* out = split_k ? partial + split * g.rows * g.c_out : y;
  gemm_store_tile<kN>(t, acc, row0, g.rows, col0, g.cols, out + group * g.cols, g.c_out,
                      (bias && !split_k) ? bias + group * g.cols : nullptr,
                      split_k ? Activation::kNone : g.activation, g.vec_b);
}

template <bool kVecA, int kN>
void launch_conv2d(ConvGeometry g, int64_t groups, int sms, const float* x, const float* w, const float* b, float* y,
                   cudaStream_t s) {
  g.n_tiles = ceil_div(g.cols, kN);
  const int64_t tiles = g.m_tiles * g.n_tiles * groups;
  const SplitK split = kN != 128 ? choose_split_k(tiles, g.k_total, sms) : SplitK{1, g.k_total};
  g.k_chunk = split.k_chunk;
  const unsigned blocks = grid_size(tiles * split.splits, "conv2d_nhwc_kernel");
  if (split.splits == 1) {
    conv2d_nhwc_kernel<kVecA, kN><<<blocks, kGemmThreads, 0, s>>>(g, x, w, b, y, nullptr);
    FC_CHECK_LAUNCH("conv2d_nhwc_kernel");
    return;
  }
  with_split_k(split.splits, g.rows, g.c_out, b, g.activation, y, s, [&](float* partial) {
    conv2d_nhwc_kernel<kVecA, kN><<<blocks, kGemmThreads, 0, s>>>(g, x, w, b, y, partial);
    FC_CHECK_LAUNCH("conv2d_nhwc_kernel");
  });
}

constexpr int kSmallCinThreads = 256, kSmallCinPixels = 4;
constexpr int64_t kSmallCinSmemBytes = 48 * 1024;  // the default dynamic limit: no opt-in needed

struct SmallCinGeometry {
  int64_t h, w, out_h, out_w, c_out;
  int64_t stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int kh, kw;
  int64_t c4, quads, total;  // C_out / 4; groups of kSmallCinPixels per output row; work items
  Activation activation;
};

template <int kCin>
__global__ void __launch_bounds__(kSmallCinThreads)
    conv2d_small_cin_kernel(SmallCinGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                            const float* __restrict__ bias, float* __restrict__ y) {
  extern __shared__ float4 filters[];  // HWIO as float4 over C_out: [KH][KW][kCin][C_out / 4]
  const int taps = g.kh * g.kw;
  const int64_t filter_size = taps * kCin * g.c4;
  for (int64_t i = threadIdx.x; i < filter_size; i += kSmallCinThreads) {
    filters[i] = load4(w + 4 * i);
  }
  __syncthreads();

  // Output channel groups fastest (a warp stores whole pixels), then pixel groups along W.
  for (int64_t item = blockIdx.x * int64_t{kSmallCinThreads} + threadIdx.x; item < g.total;
       item += int64_t{gridDim.x} * kSmallCinThreads) {
    const int64_t k4 = item % g.c4;
    int64_t rest = item / g.c4;
    const int64_t ox0 = (rest % g.quads) * kSmallCinPixels;
    rest /= g.quads;
    const int64_t oy = rest % g.out_h, img = rest / g.out_h;
    const float* x_img = x + img * g.h * g.w * kCin;

    float4 acc[kSmallCinPixels];
#pragma unroll
    for (int o = 0; o < kSmallCinPixels; ++o) acc[o] = float4{};
    for (int ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
      if (iy < 0 || iy >= g.h) continue;
      const float* x_row = x_img + iy * g.w * kCin;
      for (int kx = 0; kx < g.kw; ++kx) {
        const int64_t ix0 = ox0 * g.stride_w - g.pad_left + kx * g.dilation_w;
        float v[kSmallCinPixels][kCin];
#pragma unroll
        for (int o = 0; o < kSmallCinPixels; ++o) {
          const int64_t ix = ix0 + o * g.stride_w;
          const bool inside = ix >= 0 && ix < g.w;
#pragma unroll
          for (int c = 0; c < kCin; ++c) v[o][c] = inside ? __ldg(x_row + ix * kCin + c) : 0.0f;
        }
        const float4* tap = filters + (ky * g.kw + kx) * kCin * g.c4 + k4;
#pragma unroll
        for (int c = 0; c < kCin; ++c) {
          const float4 wv = tap[c * g.c4];
#pragma unroll
          for (int o = 0; o < kSmallCinPixels; ++o) {
            acc[o].x = fmaf(v[o][c], wv.x, acc[o].x), acc[o].y = fmaf(v[o][c], wv.y, acc[o].y);
            acc[o].z = fmaf(v[o][c], wv.z, acc[o].z), acc[o].w = fmaf(v[o][c], wv.w, acc[o].w);
          }
        }
      }
    }
    const float4 b = bias ? load4(bias + 4 * k4) : float4{};
    float* out = y + ((img * g.out_h + oy) * g.out_w + ox0) * g.c_out + 4 * k4;
#pragma unroll
    for (int o = 0; o < kSmallCinPixels; ++o) {
      if (ox0 + o >= g.out_w) break;
      *reinterpret_cast<float4*>(out + o * g.c_out) =
          make_float4(apply_activation(g.activation, acc[o].x + b.x), apply_activation(g.activation, acc[o].y + b.y),
                      apply_activation(g.activation, acc[o].z + b.z), apply_activation(g.activation, acc[o].w + b.w));
    }
  }
}

int64_t small_cin_filter_bytes(const Conv2dParams& p) { return p.kh * p.kw * p.c_in * p.c_out * 4; }

bool small_cin_applies(const Conv2dParams& p, const float* w, const float* b, const float* y) {
  return p.groups == 1 && p.c_in <= 4 && p.c_out % 4 == 0 && small_cin_filter_bytes(p) <= kSmallCinSmemBytes &&
         aligned16(w) && aligned16(y) && (b == nullptr || aligned16(b));
}

template <int kCin>
void launch_small_cin(const SmallCinGeometry& g, int64_t smem, int sms, const float* x, const float* w,
                      const float* b, float* y, cudaStream_t s) {
  // Grid-stride: each block stages the filters once, then works through many items.
  const unsigned blocks =
      grid_size(std::min<int64_t>(ceil_div(g.total, kSmallCinThreads), int64_t{8} * sms), "conv2d_small_cin_kernel");
  conv2d_small_cin_kernel<kCin><<<blocks, kSmallCinThreads, smem, s>>>(g, x, w, b, y);
  FC_CHECK_LAUNCH("conv2d_small_cin_kernel");
}

void small_cin_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                      cudaStream_t s) {
  SmallCinGeometry g{};
  g.h = p.h, g.w = p.w, g.out_h = p.out_h, g.out_w = p.out_w, g.c_out = p.c_out;
  g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.dilation_h = p.dilation_h, g.dilation_w = p.dilation_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left;
  g.kh = static_cast<int>(p.kh), g.kw = static_cast<int>(p.kw);  // <= 48 KiB of filters: small
  g.c4 = p.c_out / 4, g.quads = ceil_div(p.out_w, kSmallCinPixels);
  g.total = p.n * p.out_h * g.quads * g.c4;
  g.activation = p.activation;
  const int64_t smem = small_cin_filter_bytes(p);
  const int sms = multiprocessors();
  switch (p.c_in) {
    case 1: launch_small_cin<1>(g, smem, sms, x, w, b, y, s); break;
    case 2: launch_small_cin<2>(g, smem, sms, x, w, b, y, s); break;
    case 3: launch_small_cin<3>(g, smem, sms, x, w, b, y, s); break;
    default: launch_small_cin<4>(g, smem, sms, x, w, b, y, s); break;
  }
}

}  // namespace

void implicit_gemm_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                          StreamHandle stream, int version) {
  const int64_t cg = p.c_in_per_group(), k_total = p.kh * p.kw * cg;
  if (k_total > INT_MAX) throw std::invalid_argument("conv2d: KH * KW * C_in / groups must be below 2^31");
  ConvGeometry g{};
  g.n = p.n, g.h = p.h, g.w = p.w, g.c_in = p.c_in, g.out_h = p.out_h, g.out_w = p.out_w, g.c_out = p.c_out;
  g.stride_h = p.stride_h, g.stride_w = p.stride_w, g.dilation_h = p.dilation_h, g.dilation_w = p.dilation_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left;
  g.rows = p.n * p.out_h * p.out_w;
  g.cols = p.c_out_per_group();
  g.cg = static_cast<int>(cg), g.kw = static_cast<int>(p.kw), g.k_total = static_cast<int>(k_total);
  g.m_tiles = ceil_div(g.rows, kTileM);
  g.vec_b = g.cols % 4 == 0 && aligned16(w) && aligned16(y);
  g.activation = p.activation;

  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const bool small_cin = small_cin_applies(p, w, b, y);
  if (version == 3 && !small_cin) {
    throw std::invalid_argument("conv2d: kernel version 3 needs groups 1, C_in <= 4, C_out % 4 == 0, at most 48 KiB "
                                "of weights and 16-byte aligned w, b and y");
  }
  if (small_cin && (version == 0 || version == 3)) {
    small_cin_conv2d(p, x, w, b, y, s);
    return;
  }
  const bool vec_a = cg % 4 == 0 && aligned16(x);
  if (version == 2 && !vec_a) {
    throw std::invalid_argument("conv2d: kernel version 2 needs C_in / groups % 4 == 0 and x 16-byte aligned");
  }
  const int sms = multiprocessors();
  const int width = gemm_tile_width(version, g.m_tiles * p.groups, g.cols, sms, /*can_split=*/false, "conv2d");
  if (width == 32) {
    if (vec_a) {
      launch_conv2d<true, 32>(g, p.groups, sms, x, w, b, y, s);
    } else {
      launch_conv2d<false, 32>(g, p.groups, sms, x, w, b, y, s);
    }
  } else if (!vec_a) {
    // Scalar gathers keep the 128 x 64 tile: with 8 x 8 accumulators they would spill.
    launch_conv2d<false, 64>(g, p.groups, sms, x, w, b, y, s);
  } else if (width == 128) {
    launch_conv2d<true, 128>(g, p.groups, sms, x, w, b, y, s);
  } else {
    launch_conv2d<true, 64>(g, p.groups, sms, x, w, b, y, s);
  }
}

void conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y, StreamHandle stream,
            int version) {
  if (p.is_pointwise()) {
    gemm(GemmParams{p.n * p.h * p.w, p.c_in, p.c_out, p.activation}, x, w, b, y, stream, version);
  } else if (p.is_depthwise()) {
    depthwise_conv2d(p, x, w, b, y, stream, version);
  } else if (p.stride_h == 1 && p.stride_w == 1 && p.algorithm == ConvAlgorithm::kWinograd) {
    winograd_conv2d(p, x, w, b, y, stream, version);  // its own versions: 2x2 or 4x4 output tiles
  } else if (version == 0 && p.algorithm == ConvAlgorithm::kAuto && winograd_pays(p)) {
    winograd_conv2d(p, x, w, b, y, stream, 0);
  } else {
    implicit_gemm_conv2d(p, x, w, b, y, stream, version);
  }
}

}  // namespace fastconv::cuda
