#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <optional>

#include "chunk.h"
#include "fused_forward.h"
#include "kernels.h"
#include "ops.h"

namespace deformconv {

namespace {

// Elements per task when adding the bias: enough to amortise the scheduling.
constexpr int64_t kBiasGrain = 32768;

// Depthwise: sampling and weighted sum fused per output pixel, channels last; rows is
// [count * P, C] in the accumulation type, bias (if any) [C] in that type too.
void depthwise_chunk(const Chunk& data, const Geometry& g, const Tensor& weights, const std::optional<Tensor>& bias,
                     int64_t count, const Tensor& rows, const Tensor& output) {
  dispatch_accumulation(rows.scalar_type(), [&](auto type) {
    using T = decltype(type);
    T* out = mutable_ptr<T>(rows);
    {
      ProfileScope scope("deformconv_cpp::depthwise_forward");
      depthwise_forward<T>(const_ptr<T>(data.input), const_ptr<T>(data.offset), data.mask_data<T>(),
                           const_ptr<T>(weights), g, count, out);
    }
    if (bias.has_value()) {
      const T* b = const_ptr<T>(*bias);
      const int64_t channels = g.channels;
      const auto add_bias = [&](int64_t begin, int64_t end) {
        for (int64_t row = begin; row < end; ++row) {
          for (int64_t c = 0; c < channels; ++c) {
            out[row * channels + c] += b[c];
          }
        }
      };
      torch::stable::parallel_for(0, count * g.out_pixels, std::max<int64_t>(1, kBiasGrain / channels), add_bias);
    }
  });
  from_channels_last(rows, output);
}

// General case: per tile of rows, sampled columns, then one matrix product per convolution
// group (batched), written with the bias into the images' pixels that the tile covers.
void columns_chunk(const Chunk& data, const Geometry& g, const Tensor& weights, const std::optional<Tensor>& bias,
                   int64_t count, int64_t tile, const Tensor& columns, const Tensor& result, const Tensor& output) {
  const Tensor group_weights = torch::stable::view(weights, {g.groups, g.out_per_group, g.group_columns()});
  const int64_t rows = count * g.out_pixels;
  for (int64_t first = 0; first < rows; first += tile) {
    const int64_t last = std::min(rows, first + tile), length = last - first;
    const Tensor cols = narrow_view(columns, 0, 0, length * g.channels * g.kernel_points);
    dispatch_accumulation(columns.scalar_type(), [&](auto type) {
      using T = decltype(type);
      ProfileScope scope("deformconv_cpp::sample_columns");
      sample_columns<T>(const_ptr<T>(data.input), const_ptr<T>(data.offset), data.mask_data<T>(), g, first, last,
                        mutable_ptr<T>(cols));
    });
    // res [C_out, length]: each group's rows are that group's product.
    const Tensor res = narrow_view(result, 0, 0, g.out_channels * length);
    bmm_out(torch::stable::view(res, {g.groups, g.out_per_group, length}), group_weights,
            torch::stable::transpose(torch::stable::view(cols, {g.groups, length, g.group_columns()}), 1, 2));
    for_each_image_part(g, first, last, [&](int64_t image, int64_t pixel, int64_t column, int64_t size) {
      copy_block(res, column, length, bias, g.out_channels, size, output, image * g.out_channels * g.out_pixels + pixel,
                 g.out_pixels);
    });
  }
}

}  // namespace

Tensor deform_conv2d_forward(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                             const Tensor& weight, const std::optional<Tensor>& bias, IntHeaderOnlyArrayRef stride,
                             IntHeaderOnlyArrayRef padding, IntHeaderOnlyArrayRef dilation, int64_t batch_chunk) {
  STD_TORCH_CHECK(input.is_cpu(), "the cpp backend runs on CPU tensors, got input on another device");
  STD_TORCH_CHECK(batch_chunk >= 1, "batch_chunk must be >= 1, got ", batch_chunk);
  const Geometry g = make_geometry(input, offset, mask, weight, stride, padding, dilation);
  const ScalarType acc = accumulation_type(input.scalar_type());
  const bool depthwise = g.in_per_group == 1 && g.out_per_group == 1;

  Tensor output = empty_cpu({g.batch, g.out_channels, g.out_h, g.out_w}, input.scalar_type());
  const int64_t chunk = std::min(batch_chunk, std::max<int64_t>(g.batch, 1));
  const std::optional<Tensor> bias_acc =
      bias.has_value() ? std::optional<Tensor>(torch::stable::contiguous(torch::stable::to(*bias, acc)))
                       : std::nullopt;
  if (!depthwise && acc == ScalarType::Float && fused_forward_applies(g)) {
    // Sampling and product fused per panel of pixels (fused_forward.h): no column buffer.
    const Tensor w = torch::stable::contiguous(torch::stable::to(weight, acc));
    Tensor out = input.scalar_type() == acc ? output : empty_cpu({g.batch, g.out_channels, g.out_h, g.out_w}, acc);
    const Chunk data(input, offset, mask, 0, g.batch, acc);
    fused_forward(const_ptr<float>(data.input), const_ptr<float>(data.offset), data.mask_data<float>(),
                  const_ptr<float>(w), bias_acc.has_value() ? const_ptr<float>(*bias_acc) : nullptr, g, g.batch,
                  mutable_ptr<float>(out));
    if (input.scalar_type() != acc) {
      torch::stable::copy_(output, out);
    }
    return output;
  }
  const Tensor weights = weight_matrix(weight, acc, depthwise);
  // Buffers shared by all chunks: the columns and the product of a tile of rows (or the
  // depthwise output rows of a chunk).
  const int64_t tile = tile_rows(g, acc, chunk * g.out_pixels);
  const Tensor columns =
      empty_cpu({depthwise ? chunk * g.out_pixels * g.channels : tile * g.channels * g.kernel_points}, acc);
  const Tensor result = empty_cpu({depthwise ? 0 : g.out_channels * tile}, acc);

  for (int64_t start = 0; start < g.batch; start += chunk) {
    const int64_t count = std::min(chunk, g.batch - start);
    const Chunk data(input, offset, mask, start, count, acc);
    const Tensor target = narrow_view(output, 0, start, count);
    if (depthwise) {
      const Tensor out_rows = torch::stable::view(narrow_view(columns, 0, 0, count * g.out_pixels * g.channels),
                                                  {count, g.out_pixels, g.channels});
      depthwise_chunk(data, g, weights, bias_acc, count, out_rows, target);
    } else {
      columns_chunk(data, g, weights, bias_acc, count, tile, columns, result, target);
    }
  }
  return output;
}

}  // namespace deformconv
