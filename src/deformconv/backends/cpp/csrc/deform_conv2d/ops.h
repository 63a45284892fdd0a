// The forward and backward operators of deform_conv2d in the C++ CPU backend (see register.cpp
// for the schemas).
#pragma once

#include <optional>
#include <tuple>

#include "../tensor_ops.h"

namespace deformconv {

// Returns Tensor[N, C_out, Ho, Wo] (contiguous, dtype of input).
Tensor deform_conv2d_forward(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                             const Tensor& weight, const std::optional<Tensor>& bias, IntHeaderOnlyArrayRef stride,
                             IntHeaderOnlyArrayRef padding, IntHeaderOnlyArrayRef dilation, int64_t batch_chunk);

// Returns (grad_input, grad_offset, grad_mask, grad_weight); one not asked for (and grad_mask
// when mask is None) is an empty tensor.
std::tuple<Tensor, Tensor, Tensor, Tensor> deform_conv2d_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
    const Tensor& weight, IntHeaderOnlyArrayRef stride, IntHeaderOnlyArrayRef padding,
    IntHeaderOnlyArrayRef dilation, int64_t batch_chunk, bool need_input, bool need_offset_mask, bool need_weight);

}  // namespace deformconv
