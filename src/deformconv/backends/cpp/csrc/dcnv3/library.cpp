// Schemas of the DCNv3 / DCNv4 CPU operators (namespace deformconv_cpp, next to register.cpp's)
// and their dtype dispatch. One pair of operators serves both: the layout arguments say where
// the offsets and weights live. The sample points' taps and origin come from Python
// (deformconv/ops/dcnv3/geometry.py), so the geometry is defined in one place. The Python op has
// validated every argument and made the tensors contiguous; the checks here guard direct calls.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>

#include <tuple>
#include <vector>

#include "kernels.h"

namespace deformconv::dcn {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// sizes: [group, group_channels, out_h, out_w, stride_h, stride_w, origin_x, origin_y];
// taps: [tap_x0, tap_y0, tap_x1, ...]; layout: [offset_start, offset_pixel_stride,
// offset_group_stride, mask_start, mask_pixel_stride, mask_group_stride].
Geometry geometry_of(const Tensor& input, const Tensor& offset, const Tensor& mask, const std::vector<int64_t>& sizes,
                     const std::vector<double>& taps, double offset_scale, const std::vector<int64_t>& layout) {
  STD_TORCH_CHECK(sizes.size() == 8 && layout.size() == 6 && taps.size() % 2 == 0 && !taps.empty(),
                  "deformconv_cpp::dcn: bad sizes, taps or layout");
  for (const Tensor* t : {&input, &offset, &mask}) {
    STD_TORCH_CHECK(t->is_contiguous() && t->scalar_type() == input.scalar_type(),
                    "deformconv_cpp::dcn expects contiguous tensors of one dtype");
  }
  STD_TORCH_CHECK(input.dim() == 4 && input.size(3) == sizes[0] * sizes[1], "deformconv_cpp::dcn: bad input shape");
  Geometry g{};
  g.batch = input.size(0);
  g.height = input.size(1);
  g.width = input.size(2);
  g.channels = input.size(3);
  g.group = sizes[0];
  g.group_channels = sizes[1];
  g.out_h = sizes[2];
  g.out_w = sizes[3];
  g.stride_h = sizes[4];
  g.stride_w = sizes[5];
  g.origin_x = sizes[6];
  g.origin_y = sizes[7];
  g.offset_scale = offset_scale;
  g.points = static_cast<int64_t>(taps.size() / 2);
  for (int64_t p = 0; p < g.points; ++p) {
    g.tap_x.push_back(taps[2 * p]);
    g.tap_y.push_back(taps[2 * p + 1]);
  }
  g.offset_start = layout[0];
  g.offset_pixel_stride = layout[1];
  g.offset_group_stride = layout[2];
  g.mask_start = layout[3];
  g.mask_pixel_stride = layout[4];
  g.mask_group_stride = layout[5];
  // The last value each kernel reads must lie inside offset and mask.
  const int64_t pixels = g.batch * g.out_h * g.out_w;
  const int64_t offset_end = g.offset_start + (pixels - 1) * g.offset_pixel_stride +
                             (g.group - 1) * g.offset_group_stride + 2 * g.points;
  const int64_t mask_end =
      g.mask_start + (pixels - 1) * g.mask_pixel_stride + (g.group - 1) * g.mask_group_stride + g.points;
  STD_TORCH_CHECK(pixels == 0 || (offset.numel() >= offset_end && mask.numel() >= mask_end),
                  "deformconv_cpp::dcn: offset or mask too small for the layout");
  return g;
}

// Calls fn(scalar_t{}, acc_t{}) for the dtype of input: half types compute in float32.
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
      STD_TORCH_CHECK(false, "deformconv_cpp::dcn: unsupported dtype");
  }
}

Tensor forward_op(Tensor input, Tensor offset, Tensor mask, std::vector<int64_t> sizes, std::vector<double> taps,
                  double offset_scale, std::vector<int64_t> layout) {
  const Geometry g = geometry_of(input, offset, mask, sizes, taps, offset_scale, layout);
  Tensor output = torch::stable::new_empty(input, {g.batch, g.out_h, g.out_w, g.channels});
  dispatch(input.scalar_type(), [&](auto scalar, auto acc) {
    using scalar_t = decltype(scalar);
    using acc_t = decltype(acc);
    forward<scalar_t, acc_t>(g, input.const_data_ptr<scalar_t>(), offset.const_data_ptr<scalar_t>(),
                             mask.const_data_ptr<scalar_t>(), output.mutable_data_ptr<scalar_t>());
  });
  return output;
}

// Returns (grad_input in the accumulation dtype, grad_offset like offset, grad_mask like mask);
// with packed (offset and mask are one tensor) the weight gradients go into grad_offset too and
// grad_mask is empty. A gradient not asked for is an empty tensor.
std::tuple<Tensor, Tensor, Tensor> backward_op(Tensor grad_output, Tensor input, Tensor offset, Tensor mask,
                                               std::vector<int64_t> sizes, std::vector<double> taps,
                                               double offset_scale, std::vector<int64_t> layout, bool packed,
                                               bool need_input, bool need_offset_mask) {
  const Geometry g = geometry_of(input, offset, mask, sizes, taps, offset_scale, layout);
  STD_TORCH_CHECK(grad_output.is_contiguous() && grad_output.numel() == g.batch * g.pixels() * g.channels,
                  "deformconv_cpp::dcn_backward: bad grad_output");
  const ScalarType dtype = input.scalar_type();
  const bool half = dtype == ScalarType::Half || dtype == ScalarType::BFloat16;
  Tensor empty = torch::stable::new_empty(input, {0});
  Tensor grad_input =
      need_input ? torch::stable::new_zeros(input, input.sizes(), half ? ScalarType::Float : dtype) : empty;
  Tensor grad_offset = need_offset_mask ? torch::stable::new_zeros(offset, offset.sizes()) : empty;
  Tensor grad_mask = need_offset_mask && !packed ? torch::stable::new_zeros(mask, mask.sizes()) : empty;
  dispatch(dtype, [&](auto scalar, auto acc) {
    using scalar_t = decltype(scalar);
    using acc_t = decltype(acc);
    scalar_t* offset_grad = need_offset_mask ? grad_offset.mutable_data_ptr<scalar_t>() : nullptr;
    scalar_t* mask_grad = !need_offset_mask ? nullptr : packed ? offset_grad : grad_mask.mutable_data_ptr<scalar_t>();
    backward<scalar_t, acc_t>(g, grad_output.const_data_ptr<scalar_t>(), input.const_data_ptr<scalar_t>(),
                              offset.const_data_ptr<scalar_t>(), mask.const_data_ptr<scalar_t>(),
                              need_input ? grad_input.mutable_data_ptr<acc_t>() : nullptr, offset_grad, mask_grad);
  });
  return {grad_input, grad_offset, grad_mask};
}

}  // namespace
}  // namespace deformconv::dcn

STABLE_TORCH_LIBRARY_FRAGMENT(deformconv_cpp, m) {
  m.def(
      "dcn_forward(Tensor input, Tensor offset, Tensor mask, int[] sizes, float[] taps, float offset_scale, "
      "int[] layout) -> Tensor");
  m.def(
      "dcn_backward(Tensor grad_output, Tensor input, Tensor offset, Tensor mask, int[] sizes, float[] taps, "
      "float offset_scale, int[] layout, bool packed, bool need_input, bool need_offset_mask) "
      "-> (Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(deformconv_cpp, CPU, m) {
  m.impl("dcn_forward", TORCH_BOX(&deformconv::dcn::forward_op));
  m.impl("dcn_backward", TORCH_BOX(&deformconv::dcn::backward_op));
}
