// DCNv3 / DCNv4 CPU kernels (one implementation for both layouts, see sampling.h).
#pragma once

#include "sampling.h"

namespace deformconv::dcn {

// output[N, Ho, Wo, C] = sum over points of weight * bilinear(input) per group. Multi-threaded
// over output pixels; each thread writes only its own pixels.
template <typename scalar_t, typename acc_t>
void forward(const Geometry& g, const scalar_t* input, const scalar_t* offset, const scalar_t* mask, scalar_t* output);

// Gradients of the offsets and weights (written in their layout; either may be null) and, when
// grad_input is not null, of the input (accumulated into grad_input[N, H, W, C], zeroed by the
// caller, in acc_t). Deterministic without atomics: offset and weight gradients are computed per
// output pixel by the thread that owns it; the input gradient by tasks that each own one image,
// one group and a run of its channels, visiting the sample points in a fixed order.
template <typename scalar_t, typename acc_t>
void backward(const Geometry& g, const scalar_t* grad_output, const scalar_t* input, const scalar_t* offset,
              const scalar_t* mask, acc_t* grad_input, scalar_t* grad_offset, scalar_t* grad_mask);

}  // namespace deformconv::dcn
