// Forward of a deformable convolution with no column buffer in memory: each thread samples a
// panel of output pixels into a buffer that stays in its cache and multiplies it right away,
// per convolution group, with the packed weight (micro_kernel.h). Raw pointers, float32.
#pragma once

#include <cstdint>

#include "geometry.h"

namespace deformconv {

// True when fused_forward can run here: a processor with a micro-kernel (AVX-512, or AVX2 + FMA).
// (Depthwise convolutions have a kernel of their own, faster still.) Grouped convolutions with
// fewer output channels per group than a block leave lanes idle, and still beat the column
// buffer's batched products, whose sampling scatters short runs of channels.
bool fused_forward_applies(const Geometry& geometry);

// output = bias + weight * mask * bilinear samples of the input, for `images` images:
//   input  [images, H, W, C]      channels last
//   offset [images, P, 2*G*K]     (dy, dx) pairs, offset group major, kernel point minor
//   mask   [images, P, G*K]       or nullptr
//   weight [C_out, C/groups, kh, kw] contiguous
//   bias   [C_out]                or nullptr
//   output [images, C_out, Ho, Wo] contiguous
// Parallel over panels of output pixels (OpenMP); each output element is computed by one thread
// in a fixed order, so the result does not depend on the number of threads.
void fused_forward(const float* input, const float* offset, const float* mask, const float* weight,
                   const float* bias, const Geometry& geometry, int64_t images, float* output);

}  // namespace deformconv
