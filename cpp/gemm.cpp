// y (rows, m) = x (rows, k) @ w (k, m) + b, then the activation: 1x1 convolutions over NHWC
// pixels (rows = N*H*W) and dense layers. Compiled once per instruction set; see kernels.h.
//
// A GEMM is the 1x1 convolution of `rows` images of one pixel each, so it runs on the same
// register-tiled engine as the dense convolution (tiled_conv.h): tiles of kTileRows rows x
// kTileCols columns, one reduction of length k per tile, w packed per call into contiguous
// kTileCols-wide column blocks, the next tile's rows prefetched. Threads split the rows.
#include "fastconv/kernels.h"
#include "fastconv/tiled_conv.h"

namespace fastconv::cpu::FC_ISA {

void gemm(const GemmParams& p, const float* x, const float* w, const float* b, float* y, int threads) {
  Conv2dParams as_conv{};
  as_conv.n = p.rows;
  as_conv.h = as_conv.w = as_conv.out_h = as_conv.out_w = 1;
  as_conv.kh = as_conv.kw = 1;
  as_conv.c_in = p.k;
  as_conv.c_out = p.m;
  as_conv.groups = 1;
  as_conv.stride_h = as_conv.stride_w = as_conv.dilation_h = as_conv.dilation_w = 1;
  as_conv.activation = p.activation;
  tiled_conv(as_conv, x, w, b, y, threads);
}

}  // namespace fastconv::cpu::FC_ISA
