// One instruction set's kernel table (compiled once per ISA, like the family files).
#include "fastconv/kernel_util.h"
#include "fastconv/kernels.h"

#define FC_STRINGIFY_(s) #s
#define FC_STRINGIFY(s) FC_STRINGIFY_(s)

namespace fastconv::cpu::FC_ISA {

const KernelTable table = {
    FC_STRINGIFY(FC_ISA), FC_VEC_BYTES / 4,
    conv2d, conv2d_packed_floats, pack_conv2d_weights,
    winograd_conv2d, winograd_packed_floats, pack_winograd_weights,
    depthwise, grouped_conv2d, grouped_lanes_fit, first_layer_conv2d,
    gemm, gemm_prepacked, pack_gemm_weights, gemm_packed_floats,
    max_pool, avg_pool, global_avg_pool, global_max_pool, elementwise, scale_channels, channel_affine,
    fma_peak, triad_bandwidth,
};

}  // namespace fastconv::cpu::FC_ISA
