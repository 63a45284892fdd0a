#include <ATen/Dispatch.h>
#include <ATen/record_function.h>

#include <algorithm>

#include "chunk.h"
#include "kernels.h"
#include "ops.h"

namespace deformconv {

namespace {

// What the backward op computes, and the buffers it reuses across batch chunks.
struct Backward {
  const Geometry& g;
  bool need_input, need_offset_mask, need_mask, need_weight;
  at::Tensor weights;                                   // general: [C_out, K*C_in/groups]; depthwise: [K, C]
  at::Tensor grad_weights;                              // same layout as weights, accumulation type
  at::Tensor grad_input, grad_offset, grad_mask;        // the op's outputs (dtype of input)
  at::Tensor offset_buffer, mask_buffer, input_buffer;  // channels-last chunk gradients

  // Copies one chunk's channels-last gradients into the outputs.
  void store(int64_t start, int64_t count) const {
    if (need_offset_mask) {
      from_channels_last(offset_buffer.narrow(0, 0, count), grad_offset.narrow(0, start, count));
      if (need_mask) {
        from_channels_last(mask_buffer.narrow(0, 0, count), grad_mask.narrow(0, start, count));
      }
    }
    if (need_input) {
      from_channels_last(input_buffer.narrow(0, 0, count), grad_input.narrow(0, start, count));
    }
  }

  template <typename T>
  T* optional_data(const at::Tensor& tensor, bool needed, int64_t count) const {
    return needed ? tensor.narrow(0, 0, count).mutable_data_ptr<T>() : nullptr;
  }
};

void depthwise_chunk(const Backward& b, const Chunk& data, const at::Tensor& grad_output, int64_t start,
                     int64_t count) {
  const at::Tensor grad_rows = to_channels_last(grad_output, start, count, b.weights.scalar_type());
  if (b.need_input) {
    b.input_buffer.narrow(0, 0, count).zero_();
  }
  AT_DISPATCH_FLOATING_TYPES(b.weights.scalar_type(), "deform_conv2d_backward_depthwise", [&] {
    const scalar_t* input = data.input.const_data_ptr<scalar_t>();
    const scalar_t* offset = data.offset.const_data_ptr<scalar_t>();
    const scalar_t* weight = b.weights.const_data_ptr<scalar_t>();
    const scalar_t* grad = grad_rows.const_data_ptr<scalar_t>();
    if (b.need_offset_mask) {
      RECORD_FUNCTION("deformconv_cpp::depthwise_coordinate_grad", std::vector<c10::IValue>());
      depthwise_coordinate_grad<scalar_t>(input, offset, data.mask_data<scalar_t>(), weight, grad, b.g, count,
                                          b.optional_data<scalar_t>(b.offset_buffer, true, count),
                                          b.optional_data<scalar_t>(b.mask_buffer, b.need_mask, count));
    }
    if (b.need_input || b.need_weight) {
      RECORD_FUNCTION("deformconv_cpp::depthwise_input_weight_grad", std::vector<c10::IValue>());
      depthwise_input_weight_grad<scalar_t>(
          input, offset, data.mask_data<scalar_t>(), weight, grad, b.g, count,
          b.optional_data<scalar_t>(b.input_buffer, b.need_input, count),
          b.need_weight ? b.grad_weights.mutable_data_ptr<scalar_t>() : nullptr);
    }
  });
}

// General case, per tile of rows: the columns for grad_weight, then (in the same buffer) their
// gradient, from which the offset, mask and input gradients are sampled back.
void columns_chunk(const Backward& b, const Chunk& data, const at::Tensor& grad_output, int64_t start,
                   int64_t count, int64_t tile, at::Tensor& columns, at::Tensor& grad_buffer) {
  const Geometry& g = b.g;
  const at::Tensor weights = b.weights.view({g.groups, g.out_per_group, g.group_columns()});
  const at::Tensor grad_weights =
      b.need_weight ? b.grad_weights.view({g.groups, g.out_per_group, g.group_columns()}) : at::Tensor();
  const int64_t rows = count * g.out_pixels;
  if (b.need_input) {
    b.input_buffer.narrow(0, 0, count).zero_();
  }
  for (int64_t first = 0; first < rows; first += tile) {
    const int64_t last = std::min(rows, first + tile), length = last - first;
    // grad_output of the tile's pixels as [C_out, length]: each group's slice is a plain matrix.
    at::Tensor grad_out = grad_buffer.narrow(0, 0, g.out_channels * length).view({g.out_channels, length});
    for_each_image_part(g, first, last, [&](int64_t image, int64_t pixel, int64_t column, int64_t size) {
      grad_out.narrow(1, column, size)
          .copy_(grad_output.select(0, start + image)
                     .reshape({g.out_channels, g.out_pixels})
                     .narrow(1, pixel, size));
    });
    const at::Tensor grads = grad_out.view({g.groups, g.out_per_group, length});
    at::Tensor cols = columns.narrow(0, 0, length * g.channels * g.kernel_points)
                          .view({g.groups, length, g.group_columns()});
    if (b.need_weight) {
      AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "deform_conv2d_backward_columns", [&] {
        RECORD_FUNCTION("deformconv_cpp::sample_columns", std::vector<c10::IValue>());
        sample_columns<scalar_t>(data.input.const_data_ptr<scalar_t>(),
                                 data.offset.const_data_ptr<scalar_t>(), data.mask_data<scalar_t>(), g, first,
                                 last, cols.mutable_data_ptr<scalar_t>());
      });
      grad_weights.baddbmm_(grads, cols);
    }
    if (!(b.need_input || b.need_offset_mask)) {
      continue;
    }
    at::bmm_out(cols, grads.transpose(1, 2), weights);
    AT_DISPATCH_FLOATING_TYPES(columns.scalar_type(), "deform_conv2d_backward_sampling", [&] {
      const scalar_t* input = data.input.const_data_ptr<scalar_t>();
      const scalar_t* offset = data.offset.const_data_ptr<scalar_t>();
      const scalar_t* grad_columns = cols.const_data_ptr<scalar_t>();
      if (b.need_offset_mask) {
        RECORD_FUNCTION("deformconv_cpp::coordinate_grad", std::vector<c10::IValue>());
        coordinate_grad<scalar_t>(input, offset, data.mask_data<scalar_t>(), grad_columns, g, first, last,
                                  b.optional_data<scalar_t>(b.offset_buffer, true, count),
                                  b.optional_data<scalar_t>(b.mask_buffer, b.need_mask, count));
      }
      if (b.need_input) {
        RECORD_FUNCTION("deformconv_cpp::input_grad", std::vector<c10::IValue>());
        input_grad<scalar_t>(offset, data.mask_data<scalar_t>(), grad_columns, g, first, last,
                             b.optional_data<scalar_t>(b.input_buffer, true, count));
      }
    });
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> deform_conv2d_backward(
    const at::Tensor& grad_output, const at::Tensor& input, const at::Tensor& offset,
    const std::optional<at::Tensor>& mask, const at::Tensor& weight, at::IntArrayRef stride,
    at::IntArrayRef padding, at::IntArrayRef dilation, int64_t batch_chunk, bool need_input,
    bool need_offset_mask, bool need_weight) {
  TORCH_CHECK(input.device().is_cpu(), "the cpp backend runs on CPU tensors, got input on ", input.device());
  TORCH_CHECK(batch_chunk >= 1, "batch_chunk must be >= 1, got ", batch_chunk);
  const Geometry g = make_geometry(input, offset, mask, weight, stride, padding, dilation);
  TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.batch &&
                  grad_output.size(1) == g.out_channels && grad_output.size(2) == g.out_h &&
                  grad_output.size(3) == g.out_w,
              "grad_output must have shape [", g.batch, ", ", g.out_channels, ", ", g.out_h, ", ", g.out_w,
              "], got ", grad_output.sizes());
  const at::ScalarType acc = accumulation_type(input.scalar_type());
  const auto acc_options = input.options().dtype(acc);
  const bool depthwise = g.in_per_group == 1 && g.out_per_group == 1;
  const int64_t chunk = std::min(batch_chunk, std::max<int64_t>(g.batch, 1));
  const int64_t offset_channels = 2 * g.offset_groups * g.kernel_points;

  Backward b{g, need_input, need_offset_mask, need_offset_mask && mask.has_value(), need_weight};
  b.weights = depthwise ? weight.reshape({g.channels, g.kernel_points}).t().to(acc).contiguous()
                        : weight_matrix(weight, acc);
  b.grad_weights = need_weight ? at::zeros(b.weights.sizes(), acc_options) : at::Tensor();
  const auto output_or_empty = [&](bool needed, at::IntArrayRef sizes) {
    return needed ? at::empty(sizes, input.options()) : input.new_empty({0});
  };
  b.grad_input = output_or_empty(need_input, input.sizes());
  b.grad_offset = output_or_empty(need_offset_mask, offset.sizes());
  b.grad_mask = output_or_empty(b.need_mask, b.need_mask ? mask->sizes() : at::IntArrayRef{0});
  if (need_offset_mask) {
    b.offset_buffer = at::empty({chunk, g.out_pixels, offset_channels}, acc_options);
    if (b.need_mask) {
      b.mask_buffer = at::empty({chunk, g.out_pixels, offset_channels / 2}, acc_options);
    }
  }
  if (need_input) {
    b.input_buffer = at::empty({chunk, g.image_pixels(), g.channels}, acc_options);
  }
  // One column buffer for a tile of rows: the columns for grad_weight, then their gradient.
  const int64_t tile = tile_rows(g, c10::elementSize(acc), chunk * g.out_pixels);
  at::Tensor columns, grad_out;
  if (!depthwise) {
    columns = at::empty({tile * g.channels * g.kernel_points}, acc_options);
    grad_out = at::empty({g.out_channels * tile}, acc_options);
  }

  for (int64_t start = 0; start < g.batch; start += chunk) {
    const int64_t count = std::min(chunk, g.batch - start);
    const Chunk data(input, offset, mask, start, count, acc);
    if (depthwise) {
      depthwise_chunk(b, data, grad_output, start, count);
    } else {
      columns_chunk(b, data, grad_output, start, count, tile, columns, grad_out);
    }
    b.store(start, count);
  }

  at::Tensor grad_weight = input.new_empty({0});
  if (need_weight) {
    const at::Tensor layout =
        depthwise ? b.grad_weights.t().reshape(weight.sizes())
                  : b.grad_weights.view({g.out_channels, g.kernel_h, g.kernel_w, g.in_per_group})
                        .permute({0, 3, 1, 2});
    grad_weight = layout.to(weight.scalar_type()).contiguous();
  }
  return {b.grad_input, b.grad_offset, b.grad_mask, grad_weight};
}

}  // namespace deformconv
