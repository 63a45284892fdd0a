#include <cstdint>
#include <string>

#include "chunk.h"

namespace deformconv {

namespace {

int64_t output_extent(int64_t size, int64_t kernel, int64_t stride, int64_t pad, int64_t dil) {
  return (size + 2 * pad - dil * (kernel - 1) - 1) / stride + 1;
}

void check_pair(IntHeaderOnlyArrayRef pair, const char* name, int64_t low) {
  STD_TORCH_CHECK(pair.size() == 2, name, " must have 2 values, got ", pair.size());
  STD_TORCH_CHECK(pair[0] >= low && pair[1] >= low, name, " must be >= ", low, ", got ", shape_string(pair));
}

}  // namespace

Geometry make_geometry(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                       const Tensor& weight, IntHeaderOnlyArrayRef stride, IntHeaderOnlyArrayRef padding,
                       IntHeaderOnlyArrayRef dilation) {
  STD_TORCH_CHECK(input.dim() == 4, "input must be 4-d [N, C, H, W], got shape ", shape_string(input.sizes()));
  STD_TORCH_CHECK(weight.dim() == 4, "weight must be 4-d [C_out, C_in/groups, kh, kw], got shape ",
                  shape_string(weight.sizes()));
  STD_TORCH_CHECK(offset.dim() == 4, "offset must be 4-d [N, 2*G*kh*kw, Ho, Wo], got shape ",
                  shape_string(offset.sizes()));
  check_pair(stride, "stride", 1);
  check_pair(padding, "padding", 0);
  check_pair(dilation, "dilation", 1);

  Geometry g{};
  g.batch = input.size(0);
  g.channels = input.size(1);
  g.height = input.size(2);
  g.width = input.size(3);
  g.out_channels = weight.size(0);
  g.in_per_group = weight.size(1);
  g.kernel_h = weight.size(2);
  g.kernel_w = weight.size(3);
  g.kernel_points = g.kernel_h * g.kernel_w;
  g.stride_h = stride[0];
  g.stride_w = stride[1];
  g.pad_h = padding[0];
  g.pad_w = padding[1];
  g.dil_h = dilation[0];
  g.dil_w = dilation[1];
  STD_TORCH_CHECK(g.in_per_group > 0 && g.channels % g.in_per_group == 0, "input channels (", g.channels,
                  ") must be a multiple of weight.shape[1] (", g.in_per_group, ")");
  g.groups = g.channels / g.in_per_group;
  STD_TORCH_CHECK(g.out_channels > 0 && g.out_channels % g.groups == 0, "weight.shape[0] (", g.out_channels,
                  ") must be a positive multiple of groups (", g.groups, ")");
  g.out_per_group = g.out_channels / g.groups;
  STD_TORCH_CHECK(g.kernel_points > 0 && offset.size(1) > 0 && offset.size(1) % (2 * g.kernel_points) == 0,
                  "offset.shape[1] must be a positive multiple of 2*kh*kw = ", 2 * g.kernel_points, ", got ",
                  offset.size(1));
  g.offset_groups = offset.size(1) / (2 * g.kernel_points);
  STD_TORCH_CHECK(g.channels % g.offset_groups == 0, "input channels (", g.channels,
                  ") must be divisible by offset groups (", g.offset_groups, ")");
  g.per_offset_group = g.channels / g.offset_groups;
  g.out_h = output_extent(g.height, g.kernel_h, g.stride_h, g.pad_h, g.dil_h);
  g.out_w = output_extent(g.width, g.kernel_w, g.stride_w, g.pad_w, g.dil_w);
  g.out_pixels = g.out_h * g.out_w;
  // Corner coordinates are kept as 32-bit integers (flat indices are 64-bit).
  STD_TORCH_CHECK(g.height <= INT32_MAX && g.width <= INT32_MAX,
                  "input height and width must be below 2^31, got ", g.height, "x", g.width);
  STD_TORCH_CHECK(g.out_h > 0 && g.out_w > 0, "output size would be ", g.out_h, "x", g.out_w,
                  ": it must be at least 1x1");
  STD_TORCH_CHECK(offset.size(0) == g.batch && offset.size(2) == g.out_h && offset.size(3) == g.out_w,
                  "offset must have shape [", g.batch, ", ", offset.size(1), ", ", g.out_h, ", ", g.out_w,
                  "], got ", shape_string(offset.sizes()));
  if (mask.has_value()) {
    const Tensor& m = *mask;
    STD_TORCH_CHECK(m.dim() == 4 && m.size(0) == g.batch && m.size(1) == g.offset_groups * g.kernel_points &&
                        m.size(2) == g.out_h && m.size(3) == g.out_w,
                    "mask must have shape [", g.batch, ", ", g.offset_groups * g.kernel_points, ", ", g.out_h,
                    ", ", g.out_w, "], got ", shape_string(m.sizes()));
  }
  return g;
}

}  // namespace deformconv
