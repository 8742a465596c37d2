// Depthwise NHWC convolution: groups == C_in, one input channel per group, channel multiplier
// M = C_out / C_in, weights (KH, KW, 1, C*M); output channel c*M + m reads input channel c.
//
// Kernel versions (chosen in depthwise_conv2d(); `version` 0 takes the best that applies):
//   v1  depthwise_nhwc_kernel_v1<true>   a block computes a tile_h x tile_w tile of output pixels
//                                        for 32 channels; the input patch under the tile (halo
//                                        included, padding as zeros) is staged once in shared
//                                        memory and every tap reads it from there. Channels as
//                                        float4: M == 1, C % 4 == 0 and x, w, y 16-byte aligned.
//       depthwise_nhwc_kernel_v1<false>  the same, one channel per lane, any C and multiplier M.
//       depthwise_nhwc_direct_kernel     a thread per output element reading x straight from
//                                        global memory: only when even a 1x1 output tile's patch
//                                        (huge dilation) exceeds the shared-memory budget.
//   v2  depthwise_nhwc_strip_kernel<K, S>  register-tiled stencil for square K = 3 or 5, stride
//                                        S = 1 or 2 (both axes), dilation 1, M == 1, C % 4 == 0,
//                                        aligned: a thread owns 4 channels (one float4) of a strip
//                                        of kDwStrip output pixels along W; per filter row it loads
//                                        the strip's input row once into registers (16-byte loads,
//                                        a warp covers 128 adjacent channels) with the row's K
//                                        weights, so each tap costs one FMA and no load. Vertical
//                                        reuse comes from L1: threads are numbered so that a block
//                                        holds kRows = 4 neighbouring output rows of a strip. v1
//                                        spends a shared-memory load and a weight load per tap.
//   v3  depthwise_nhwc_strip_kernel<K, S, 1>  v2 with the threads of one output row numbered
//                                        together (no row groups). Auto takes it for 5x5 filters
//                                        and for maps of at most 16 output rows, v2 for the rest:
//                                        measured side by side on an H100 (bench/NOTES.md), v3 is
//                                        2-8 % faster on the EfficientNet 5x5 layers and 7x7 / 14x14
//                                        maps, 4 % slower on 3x3 over 28x28 and 56x56.
#include <algorithm>
#include <type_traits>

#include "common.cuh"
#include "launch.h"

namespace fastconv::cuda {

namespace {

constexpr int kDwThreads = 256;
constexpr int kDwChannels = 32;                 // input channels per block
constexpr int64_t kDwSmemBytes = 48 * 1024;     // the default dynamic limit: no opt-in needed
constexpr int kDwTileH = 8, kDwTileW = 16;      // largest output tile

struct DepthwiseGeometry {
  int64_t n, h, w, c, mult, out_h, out_w;
  int64_t kh, kw, stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_left;
  int tiles_h, tiles_w, c_chunks;  // their product with n is the grid size, below 2^31
  // Shared-memory kernel only. The patch fits in 48 KiB, so every offset inside it is a small int;
  // a step is 0 along an axis with a single tile row (stride) or a single tap (dilation).
  int tile_h, tile_w, patch_h, patch_w;
  int step_y, step_x, tap_y, tap_x;
  Activation activation;
};

__device__ __forceinline__ void fma_into(float& acc, float v, const float* w) { acc = fmaf(v, __ldg(w), acc); }
__device__ __forceinline__ void fma_into(float4& acc, const float4& v, const float* w) {
  const float4 wv = load4(w);
  acc.x = fmaf(v.x, wv.x, acc.x), acc.y = fmaf(v.y, wv.y, acc.y);
  acc.z = fmaf(v.z, wv.z, acc.z), acc.w = fmaf(v.w, wv.w, acc.w);
}

__device__ __forceinline__ void store_activated(float* out, float acc, const float* bias, Activation act) {
  *out = apply_activation(act, acc + (bias ? __ldg(bias) : 0.0f));
}
__device__ __forceinline__ void store_activated(float* out, const float4& acc, const float* bias, Activation act) {
  float4 b{};
  if (bias) b = make_float4(__ldg(bias), __ldg(bias + 1), __ldg(bias + 2), __ldg(bias + 3));
  *reinterpret_cast<float4*>(out) = make_float4(apply_activation(act, acc.x + b.x), apply_activation(act, acc.y + b.y),
                                                apply_activation(act, acc.z + b.z), apply_activation(act, acc.w + b.w));
}

template <bool kVec>
__global__ void __launch_bounds__(kDwThreads)
    depthwise_nhwc_kernel_v1(DepthwiseGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                             const float* __restrict__ bias, float* __restrict__ y) {
  using Vec = std::conditional_t<kVec, float4, float>;
  constexpr int kWidth = kVec ? 4 : 1, kLanes = kDwChannels / kWidth;
  extern __shared__ float4 smem_raw[];
  Vec* patch = reinterpret_cast<Vec*>(smem_raw);  // [patch_h][patch_w][kLanes]

  // Channel chunks fastest: neighbouring blocks read the other channels of the same pixels.
  // 32-bit decode: the grid has fewer than 2^31 blocks.
  int block = blockIdx.x;
  const int chunk = block % g.c_chunks;
  block /= g.c_chunks;
  const int tile_x = block % g.tiles_w;
  block /= g.tiles_w;
  const int tile_y = block % g.tiles_h;
  const int64_t img = block / g.tiles_h;
  const int64_t oy0 = int64_t{tile_y} * g.tile_h, ox0 = int64_t{tile_x} * g.tile_w;
  const int64_t iy0 = oy0 * g.stride_h - g.pad_top, ix0 = ox0 * g.stride_w - g.pad_left;
  const int64_t c0 = int64_t{chunk} * kDwChannels;

  const float* x_img = x + img * g.h * g.w * g.c;
  const int patch_size = g.patch_h * g.patch_w * kLanes;
  for (int i = threadIdx.x; i < patch_size; i += kDwThreads) {
    const int lane = i % kLanes, pos = i / kLanes;
    const int64_t iy = iy0 + pos / g.patch_w, ix = ix0 + pos % g.patch_w, c = c0 + lane * kWidth;
    Vec v{};  // zero: the padding, and channels past C
    if (iy >= 0 && iy < g.h && ix >= 0 && ix < g.w && c < g.c) {
      const float* p = x_img + (iy * g.w + ix) * g.c + c;
      if constexpr (kVec) {
        v = load4(p);
      } else {
        v = __ldg(p);
      }
    }
    patch[i] = v;
  }
  __syncthreads();

  const int lane = threadIdx.x % kLanes;
  const int64_t c = c0 + lane * kWidth;
  if (c >= g.c) return;
  const int64_t c_out = g.c * g.mult;
  for (int pix = threadIdx.x / kLanes; pix < g.tile_h * g.tile_w; pix += kDwThreads / kLanes) {
    const int ty = pix / g.tile_w, tx = pix % g.tile_w;
    const int64_t oy = oy0 + ty, ox = ox0 + tx;
    if (oy >= g.out_h || ox >= g.out_w) continue;
    const Vec* window = patch + (ty * g.step_y * g.patch_w + tx * g.step_x) * kLanes + lane;
    float* out = y + ((img * g.out_h + oy) * g.out_w + ox) * c_out + c * g.mult;
    for (int64_t m = 0; m < g.mult; ++m) {  // kVec implies mult == 1
      Vec acc{};
      for (int ky = 0; ky < g.kh; ++ky) {
        for (int kx = 0; kx < g.kw; ++kx) {
          const Vec v = window[(ky * g.tap_y * g.patch_w + kx * g.tap_x) * kLanes];
          fma_into(acc, v, w + (ky * g.kw + kx) * c_out + c * g.mult + m);
        }
      }
      store_activated(out + m, acc, bias ? bias + c * g.mult + m : nullptr, g.activation);
    }
  }
}

__global__ void __launch_bounds__(kDwThreads)
    depthwise_nhwc_direct_kernel(DepthwiseGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                                 const float* __restrict__ bias, float* __restrict__ y, int64_t total) {
  const int64_t c_out = g.c * g.mult;
  for (int64_t i = blockIdx.x * int64_t{kDwThreads} + threadIdx.x; i < total;
       i += int64_t{gridDim.x} * kDwThreads) {
    const int64_t oc = i % c_out, pix = i / c_out;
    const int64_t ox = pix % g.out_w, oy = (pix / g.out_w) % g.out_h, img = pix / (g.out_w * g.out_h);
    const float* x_chan = x + img * g.h * g.w * g.c + oc / g.mult;
    float acc = 0.0f;
    for (int64_t ky = 0; ky < g.kh; ++ky) {
      const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
      if (iy < 0 || iy >= g.h) continue;
      for (int64_t kx = 0; kx < g.kw; ++kx) {
        const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
        if (ix < 0 || ix >= g.w) continue;
        acc = fmaf(__ldg(x_chan + (iy * g.w + ix) * g.c), __ldg(w + (ky * g.kw + kx) * c_out + oc), acc);
      }
    }
    y[i] = apply_activation(g.activation, acc + (bias ? __ldg(bias + oc) : 0.0f));
  }
}

constexpr int kDwStrip = 4;  // output pixels per thread along W in the strip kernel

struct StripGeometry {
  int64_t n_images, h, w, c, out_h, out_w, pad_top, pad_left;
  int64_t c4, strips, row_groups;  // C / 4, strips per output row, ceil(out_h / kRows)
  int64_t total;                   // threads: n * row_groups * kRows * strips * c4
  Activation activation;
};

// kRows: output rows whose threads are numbered next to each other.
template <int K, int S, int kRows>
__global__ void __launch_bounds__(kDwThreads)
    depthwise_nhwc_strip_kernel(StripGeometry g, const float* __restrict__ x, const float* __restrict__ w,
                                const float* __restrict__ bias, float* __restrict__ y) {
  constexpr int kIn = (kDwStrip - 1) * S + K;  // input pixels under one strip, per filter row
  const int64_t i = blockIdx.x * int64_t{kDwThreads} + threadIdx.x;
  if (i >= g.total) return;
  // Channel groups fastest: a warp reads 512 contiguous bytes of each input pixel. Then kRows
  // output rows of the same strip, so that one block holds vertical neighbours, whose filter rows
  // overlap: their shared input rows come from L1 instead of L2.
  const int64_t c = (i % g.c4) * 4;
  int64_t rest = i / g.c4;
  const int64_t row_in_group = rest % kRows;
  rest /= kRows;
  const int64_t strip = rest % g.strips;
  rest /= g.strips;
  const int64_t oy = (rest % g.row_groups) * kRows + row_in_group, img = rest / g.row_groups;
  if (oy >= g.out_h) return;
  const int64_t ox0 = strip * kDwStrip;
  const int64_t ix0 = ox0 * S - g.pad_left;

  float4 acc[kDwStrip];
#pragma unroll
  for (int o = 0; o < kDwStrip; ++o) acc[o] = float4{};
#pragma unroll
  for (int ky = 0; ky < K; ++ky) {
    const int64_t iy = oy * S - g.pad_top + ky;
    if (iy < 0 || iy >= g.h) continue;
    const float* row = x + ((img * g.h + iy) * g.w) * g.c + c;
    float4 in[kIn];
#pragma unroll
    for (int j = 0; j < kIn; ++j) {
      const int64_t ix = ix0 + j;
      in[j] = (ix >= 0 && ix < g.w) ? load4(row + ix * g.c) : float4{};
    }
#pragma unroll
    for (int kx = 0; kx < K; ++kx) {
      const float4 wv = load4(w + (ky * K + kx) * g.c + c);
#pragma unroll
      for (int o = 0; o < kDwStrip; ++o) {
        const float4 v = in[o * S + kx];
        acc[o].x = fmaf(v.x, wv.x, acc[o].x), acc[o].y = fmaf(v.y, wv.y, acc[o].y);
        acc[o].z = fmaf(v.z, wv.z, acc[o].z), acc[o].w = fmaf(v.w, wv.w, acc[o].w);
      }
    }
  }
  float* out = y + ((img * g.out_h + oy) * g.out_w + ox0) * g.c + c;
  const float* b = bias ? bias + c : nullptr;
#pragma unroll
  for (int o = 0; o < kDwStrip; ++o) {
    if (ox0 + o < g.out_w) store_activated(out + o * g.c, acc[o], b, g.activation);
  }
}

bool strip_kernel_applies(const Conv2dParams& p, const float* x, const float* w, const float* y) {
  return p.c_out == p.c_in && p.c_in % 4 == 0 && p.kh == p.kw && (p.kh == 3 || p.kh == 5) &&
         p.stride_h == p.stride_w && (p.stride_h == 1 || p.stride_h == 2) && p.dilation_h == 1 &&
         p.dilation_w == 1 && aligned16(x) && aligned16(w) && aligned16(y);
}

template <int K, int S, int kRows>
void launch_strip(StripGeometry g, const float* x, const float* w, const float* b, float* y, cudaStream_t s) {
  g.row_groups = ceil_div(g.out_h, kRows);
  g.total = g.n_images * g.row_groups * kRows * g.strips * g.c4;
  const unsigned blocks = grid_size(ceil_div(g.total, kDwThreads), "depthwise_nhwc_strip_kernel");
  depthwise_nhwc_strip_kernel<K, S, kRows><<<blocks, kDwThreads, 0, s>>>(g, x, w, b, y);
  FC_CHECK_LAUNCH("depthwise_nhwc_strip_kernel");
}

template <int kRows>
void depthwise_strip(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                     cudaStream_t s) {
  StripGeometry g{};
  g.n_images = p.n, g.h = p.h, g.w = p.w, g.c = p.c_in, g.out_h = p.out_h, g.out_w = p.out_w;
  g.pad_top = p.pad_top, g.pad_left = p.pad_left, g.activation = p.activation;
  g.c4 = p.c_in / 4, g.strips = ceil_div(p.out_w, kDwStrip);
  const int key = static_cast<int>(p.kh * 10 + p.stride_h);
  switch (key) {
    case 31: launch_strip<3, 1, kRows>(g, x, w, b, y, s); break;
    case 32: launch_strip<3, 2, kRows>(g, x, w, b, y, s); break;
    case 51: launch_strip<5, 1, kRows>(g, x, w, b, y, s); break;
    default: launch_strip<5, 2, kRows>(g, x, w, b, y, s); break;
  }
}

int64_t patch_extent(int64_t tile, int64_t stride, int64_t k, int64_t dilation) {
  return (tile - 1) * stride + (k - 1) * dilation + 1;
}

}  // namespace

void depthwise_conv2d(const Conv2dParams& p, const float* x, const float* w, const float* b, float* y,
                      StreamHandle stream, int version) {
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  const bool strip = strip_kernel_applies(p, x, w, y);
  if (version < 0 || version > 3) {
    throw std::invalid_argument("depthwise_conv2d: no kernel version " + std::to_string(version));
  }
  if ((version == 2 || version == 3) && !strip) {
    throw std::invalid_argument("depthwise_conv2d: kernel version " + std::to_string(version) +
                                " needs a 3x3 or 5x5 filter, stride 1 or 2, dilation 1, C % 4 == 0, multiplier 1 "
                                "and 16-byte aligned arrays");
  }
  if (strip && (version == 3 || (version == 0 && (p.kh == 5 || p.out_h <= 16)))) {
    depthwise_strip<1>(p, x, w, b, y, s);
    return;
  }
  if (strip && version != 1) {
    depthwise_strip<4>(p, x, w, b, y, s);
    return;
  }
  DepthwiseGeometry g{};
  g.n = p.n, g.h = p.h, g.w = p.w, g.c = p.c_in, g.mult = p.c_out / p.c_in, g.out_h = p.out_h, g.out_w = p.out_w;
  g.kh = p.kh, g.kw = p.kw, g.stride_h = p.stride_h, g.stride_w = p.stride_w;
  g.dilation_h = p.dilation_h, g.dilation_w = p.dilation_w, g.pad_top = p.pad_top, g.pad_left = p.pad_left;
  g.activation = p.activation;

  // Largest output tile (up to 8 x 16, never beyond the output) whose input patch fits.
  int64_t tile_h = std::min<int64_t>(kDwTileH, p.out_h), tile_w = std::min<int64_t>(kDwTileW, p.out_w);
  const auto patch_bytes = [&] {
    const int64_t ph = patch_extent(tile_h, p.stride_h, p.kh, p.dilation_h);
    const int64_t pw = patch_extent(tile_w, p.stride_w, p.kw, p.dilation_w);
    // Saturating: a huge stride or dilation must not overflow the product.
    return (ph > kDwSmemBytes || pw > kDwSmemBytes) ? kDwSmemBytes + 1 : ph * pw * kDwChannels * 4;
  };
  while (patch_bytes() > kDwSmemBytes && (tile_h > 1 || tile_w > 1)) {
    if (tile_w >= tile_h) {
      tile_w = ceil_div(tile_w, 2);
    } else {
      tile_h = ceil_div(tile_h, 2);
    }
  }
  const int64_t smem = patch_bytes();
  if (smem > kDwSmemBytes) {
    const int64_t total = p.n * p.out_h * p.out_w * p.c_out;
    const unsigned blocks = grid_size(std::min<int64_t>(ceil_div(total, kDwThreads), 1 << 20), "depthwise");
    depthwise_nhwc_direct_kernel<<<blocks, kDwThreads, 0, s>>>(g, x, w, b, y, total);
    FC_CHECK_LAUNCH("depthwise_nhwc_direct_kernel");
    return;
  }
  g.tile_h = static_cast<int>(tile_h), g.tile_w = static_cast<int>(tile_w);
  g.patch_h = static_cast<int>(patch_extent(tile_h, p.stride_h, p.kh, p.dilation_h));
  g.patch_w = static_cast<int>(patch_extent(tile_w, p.stride_w, p.kw, p.dilation_w));
  g.step_y = tile_h > 1 ? static_cast<int>(p.stride_h) : 0, g.step_x = tile_w > 1 ? static_cast<int>(p.stride_w) : 0;
  g.tap_y = p.kh > 1 ? static_cast<int>(p.dilation_h) : 0, g.tap_x = p.kw > 1 ? static_cast<int>(p.dilation_w) : 0;

  const int64_t tiles_h = ceil_div(p.out_h, tile_h), tiles_w = ceil_div(p.out_w, tile_w);
  const int64_t c_chunks = ceil_div(p.c_in, kDwChannels);
  const unsigned blocks = grid_size(p.n * tiles_h * tiles_w * c_chunks, "depthwise_nhwc_kernel_v1");
  g.tiles_h = static_cast<int>(tiles_h), g.tiles_w = static_cast<int>(tiles_w), g.c_chunks = static_cast<int>(c_chunks);
  const bool vec = g.mult == 1 && p.c_in % 4 == 0 && aligned16(x) && aligned16(w) && aligned16(y);
  if (vec) {
    depthwise_nhwc_kernel_v1<true><<<blocks, kDwThreads, smem, s>>>(g, x, w, b, y);
  } else {
    depthwise_nhwc_kernel_v1<false><<<blocks, kDwThreads, smem, s>>>(g, x, w, b, y);
  }
  FC_CHECK_LAUNCH("depthwise_nhwc_kernel_v1");
}

}  // namespace fastconv::cuda
