// Schemas of the multi-scale deformable attention CPU operators (namespace deformconv_cpp, next
// to register.cpp's) and their dtype dispatch. The Python op has validated every argument and
// made the tensors contiguous; the checks here only guard direct calls of these operators.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>

#include <tuple>

#include "kernels.h"

namespace deformconv::msda {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

Sizes sizes_of(const Tensor& value, const Tensor& spatial_shapes, const Tensor& locations) {
  for (const Tensor* t : {&value, &spatial_shapes, &locations}) {
    STD_TORCH_CHECK(t->is_contiguous(), "deformconv_cpp::multi_scale_deform_attn expects contiguous tensors");
  }
  STD_TORCH_CHECK(value.dim() == 4 && locations.dim() == 6, "deformconv_cpp::multi_scale_deform_attn: bad ranks");
  return Sizes{value.size(0),     value.size(1),     value.size(2), value.size(3),
               locations.size(1), locations.size(3), locations.size(4)};
}

// AVX2 with FMA when the processor has it (see kernels.h).
bool use_avx2() {
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

// The kernels for this processor and channel count (see kernels.h).
template <typename scalar_t, typename acc_t>
auto forward_kernel(int64_t channels) {
  if (use_avx2()) return channels == 32 ? avx2::forward<scalar_t, acc_t, 32> : avx2::forward<scalar_t, acc_t, 0>;
  return channels == 32 ? generic::forward<scalar_t, acc_t, 32> : generic::forward<scalar_t, acc_t, 0>;
}

template <typename scalar_t, typename acc_t>
auto backward_kernel(int64_t channels) {
  if (use_avx2()) return channels == 32 ? avx2::backward<scalar_t, acc_t, 32> : avx2::backward<scalar_t, acc_t, 0>;
  return channels == 32 ? generic::backward<scalar_t, acc_t, 32> : generic::backward<scalar_t, acc_t, 0>;
}

// Calls fn(scalar_t{}, acc_t{}) for the dtype of value: half types compute in float32.
template <typename Fn>
void dispatch(ScalarType dtype, Fn&& fn) {
  switch (dtype) {
    case ScalarType::Float:
      return fn(float{}, float{});
    case ScalarType::Double:
      return fn(double{}, double{});
    case ScalarType::Half:
      return fn(c10::Half{}, float{});
    case ScalarType::BFloat16:
      return fn(c10::BFloat16{}, float{});
    default:
      STD_TORCH_CHECK(false, "deformconv_cpp::multi_scale_deform_attn: unsupported dtype");
  }
}

Tensor forward_op(Tensor value, Tensor spatial_shapes, Tensor level_start_index, Tensor sampling_locations,
                  Tensor attention_weights) {
  const Sizes s = sizes_of(value, spatial_shapes, sampling_locations);
  Tensor output = torch::stable::new_empty(value, {s.batch, s.queries, s.heads * s.channels});
  dispatch(value.scalar_type(), [&](auto scalar, auto acc) {
    using scalar_t = decltype(scalar);
    using acc_t = decltype(acc);
    auto kernel = forward_kernel<scalar_t, acc_t>(s.channels);
    kernel(s, value.const_data_ptr<scalar_t>(), spatial_shapes.const_data_ptr<int64_t>(),
                             level_start_index.const_data_ptr<int64_t>(),
                             sampling_locations.const_data_ptr<scalar_t>(),
                             attention_weights.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>());
  });
  return output;
}

std::tuple<Tensor, Tensor, Tensor> backward_op(Tensor grad_output, Tensor value, Tensor spatial_shapes,
                                               Tensor level_start_index, Tensor sampling_locations,
                                               Tensor attention_weights, bool need_value,
                                               bool need_sampling_locations, bool need_attention_weights) {
  const Sizes s = sizes_of(value, spatial_shapes, sampling_locations);
  STD_TORCH_CHECK(grad_output.is_contiguous(), "deformconv_cpp::multi_scale_deform_attn_backward: grad_output");
  const ScalarType dtype = value.scalar_type();
  const bool half = dtype == ScalarType::Half || dtype == ScalarType::BFloat16;
  Tensor empty = torch::stable::new_empty(value, {0});
  Tensor grad_value = need_value ? torch::stable::new_zeros(value, value.sizes()) : empty;
  Tensor grad_value_acc =
      need_value && half ? torch::stable::new_zeros(value, value.sizes(), ScalarType::Float) : grad_value;
  Tensor grad_locations =
      need_sampling_locations ? torch::stable::new_empty(sampling_locations, sampling_locations.sizes()) : empty;
  Tensor grad_weights =
      need_attention_weights ? torch::stable::new_empty(attention_weights, attention_weights.sizes()) : empty;
  dispatch(dtype, [&](auto scalar, auto acc) {
    using scalar_t = decltype(scalar);
    using acc_t = decltype(acc);
    auto kernel = backward_kernel<scalar_t, acc_t>(s.channels);
    kernel(
        s, grad_output.const_data_ptr<scalar_t>(), value.const_data_ptr<scalar_t>(),
        spatial_shapes.const_data_ptr<int64_t>(), level_start_index.const_data_ptr<int64_t>(),
        sampling_locations.const_data_ptr<scalar_t>(), attention_weights.const_data_ptr<scalar_t>(),
        need_value ? grad_value_acc.mutable_data_ptr<acc_t>() : nullptr,
        need_value ? grad_value.mutable_data_ptr<scalar_t>() : nullptr,
        need_sampling_locations ? grad_locations.mutable_data_ptr<scalar_t>() : nullptr,
        need_attention_weights ? grad_weights.mutable_data_ptr<scalar_t>() : nullptr);
  });
  return {grad_value, grad_locations, grad_weights};
}

}  // namespace

STABLE_TORCH_LIBRARY_FRAGMENT(deformconv_cpp, m) {
  m.def(
      "multi_scale_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "multi_scale_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights, bool need_value, "
      "bool need_sampling_locations, bool need_attention_weights) -> (Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(deformconv_cpp, CPU, m) {
  m.impl("multi_scale_deform_attn", TORCH_BOX(&forward_op));
  m.impl("multi_scale_deform_attn_backward", TORCH_BOX(&backward_op));
}

}  // namespace deformconv::msda
