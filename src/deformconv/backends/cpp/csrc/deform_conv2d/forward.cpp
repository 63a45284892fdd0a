#include <ATen/Dispatch.h>
#include <ATen/record_function.h>

#include <algorithm>

#include "chunk.h"
#include "fused_forward.h"
#include "kernels.h"
#include "ops.h"

namespace deformconv {

namespace {

// Depthwise: sampling and weighted sum fused per output pixel, channels last.
void depthwise_chunk(const Chunk& data, const Geometry& g, const at::Tensor& weight_t,
                     const std::optional<at::Tensor>& bias, int64_t count, at::Tensor& rows,
                     const at::Tensor& output) {
  AT_DISPATCH_FLOATING_TYPES(rows.scalar_type(), "deform_conv2d_depthwise", [&] {
    RECORD_FUNCTION("deformconv_cpp::depthwise_forward", std::vector<c10::IValue>());
    depthwise_forward<scalar_t>(data.input.const_data_ptr<scalar_t>(), data.offset.const_data_ptr<scalar_t>(),
                                data.mask_data<scalar_t>(), weight_t.const_data_ptr<scalar_t>(), g, count,
                                rows.mutable_data_ptr<scalar_t>());
  });
  if (bias.has_value()) {
    rows.add_(bias->to(rows.scalar_type()));
  }
  from_channels_last(rows, output);
}

// General case: per tile of rows, sampled columns, then one matrix product per convolution
// group (batched), written into the images' pixels that the tile covers.
void columns_chunk(const Chunk& data, const Geometry& g, const at::Tensor& weights,
                   const std::optional<at::Tensor>& bias, int64_t count, int64_t tile, at::Tensor& columns,
                   at::Tensor& result, const at::Tensor& output) {
  const at::Tensor group_weights = weights.view({g.groups, g.out_per_group, g.group_columns()});
  const at::Tensor bias_column =
      bias.has_value() ? bias->to(result.scalar_type()).view({-1, 1}) : at::Tensor();
  const int64_t rows = count * g.out_pixels;
  for (int64_t first = 0; first < rows; first += tile) {
    const int64_t last = std::min(rows, first + tile), length = last - first;
    at::Tensor cols = columns.narrow(0, 0, length * g.channels * g.kernel_points);
    AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "deform_conv2d_forward", [&] {
      RECORD_FUNCTION("deformconv_cpp::sample_columns", std::vector<c10::IValue>());
      sample_columns<scalar_t>(data.input.const_data_ptr<scalar_t>(), data.offset.const_data_ptr<scalar_t>(),
                               data.mask_data<scalar_t>(), g, first, last, cols.mutable_data_ptr<scalar_t>());
    });
    at::Tensor res = result.narrow(0, 0, g.out_channels * length).view({g.out_channels, length});
    at::Tensor products = res.view({g.groups, g.out_per_group, length});
    at::bmm_out(products, group_weights, cols.view({g.groups, length, g.group_columns()}).transpose(1, 2));
    if (bias_column.defined()) {
      res.add_(bias_column);
    }
    for_each_image_part(g, first, last, [&](int64_t image, int64_t pixel, int64_t column, int64_t size) {
      output.select(0, image)
          .view({g.out_channels, g.out_pixels})
          .narrow(1, pixel, size)
          .copy_(res.narrow(1, column, size));
    });
  }
}

}  // namespace

at::Tensor deform_conv2d_forward(const at::Tensor& input, const at::Tensor& offset,
                                 const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, at::IntArrayRef stride,
                                 at::IntArrayRef padding, at::IntArrayRef dilation, int64_t batch_chunk) {
  TORCH_CHECK(input.device().is_cpu(), "the cpp backend runs on CPU tensors, got input on ", input.device());
  TORCH_CHECK(batch_chunk >= 1, "batch_chunk must be >= 1, got ", batch_chunk);
  const Geometry g = make_geometry(input, offset, mask, weight, stride, padding, dilation);
  const at::ScalarType acc = accumulation_type(input.scalar_type());
  const auto acc_options = input.options().dtype(acc);
  const bool depthwise = g.in_per_group == 1 && g.out_per_group == 1;

  at::Tensor output = at::empty({g.batch, g.out_channels, g.out_h, g.out_w}, input.options());
  if (!depthwise && acc == at::kFloat && fused_forward_applies(g)) {
    const at::Tensor w = weight.to(acc).contiguous(), b = bias.has_value() ? bias->to(acc).contiguous() : at::Tensor();
    at::Tensor out = output.scalar_type() == acc ? output : at::empty(output.sizes(), input.options().dtype(acc));
    const Chunk data(input, offset, mask, 0, g.batch, acc);
    fused_forward(data.input.const_data_ptr<float>(), data.offset.const_data_ptr<float>(), data.mask_data<float>(),
                  w.const_data_ptr<float>(), b.defined() ? b.const_data_ptr<float>() : nullptr, g, g.batch,
                  out.mutable_data_ptr<float>());
    return out.scalar_type() == output.scalar_type() ? out : output.copy_(out);
  }
  const int64_t chunk = std::min(batch_chunk, std::max<int64_t>(g.batch, 1));
  const at::Tensor weights = depthwise
                                 ? weight.reshape({g.channels, g.kernel_points}).t().to(acc).contiguous()
                                 : weight_matrix(weight, acc);
  // Buffers shared by all chunks: the columns and the product of a tile of rows (or the
  // depthwise output rows of a chunk).
  const int64_t tile = tile_rows(g, c10::elementSize(acc), chunk * g.out_pixels);
  at::Tensor columns = at::empty(
      {depthwise ? chunk * g.out_pixels * g.channels : tile * g.channels * g.kernel_points}, acc_options);
  at::Tensor result = depthwise ? at::Tensor() : at::empty({g.out_channels * tile}, acc_options);

  for (int64_t start = 0; start < g.batch; start += chunk) {
    const int64_t count = std::min(chunk, g.batch - start);
    const int64_t rows = count * g.out_pixels;
    const Chunk data(input, offset, mask, start, count, acc);
    const at::Tensor target = output.narrow(0, start, count);
    if (depthwise) {
      at::Tensor out_rows = columns.narrow(0, 0, rows * g.channels).view({count, g.out_pixels, g.channels});
      depthwise_chunk(data, g, weights, bias, count, out_rows, target);
    } else {
      columns_chunk(data, g, weights, bias, count, tile, columns, result, target);
    }
  }
  return output;
}

}  // namespace deformconv
