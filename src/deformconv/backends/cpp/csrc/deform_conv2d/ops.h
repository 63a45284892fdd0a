// The forward and backward operators of the C++ CPU backend (see register.cpp for the schemas).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

namespace deformconv {

// Returns Tensor[N, C_out, Ho, Wo] (contiguous, dtype of input).
at::Tensor deform_conv2d_forward(const at::Tensor& input, const at::Tensor& offset,
                                 const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t batch_chunk);

// Returns (grad_input, grad_offset, grad_mask, grad_weight); one not asked for (and grad_mask
// when mask is None) is an empty tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const std::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t batch_chunk, bool need_input,
    bool need_offset_mask, bool need_weight);

}  // namespace deformconv
