#include <torch/csrc/stable/ops.h>

#include <algorithm>
#include <optional>

#include "chunk.h"
#include "kernels.h"
#include "ops.h"

namespace deformconv {

namespace {

// Elements per task when accumulating the weight gradient.
constexpr int64_t kAddGrain = 32768;

// What the backward op computes, and the buffers it reuses across batch chunks.
struct Backward {
  const Geometry& g;
  bool need_input, need_offset_mask, need_mask, need_weight;
  Tensor weights;                                   // general: [C_out, K*C_in/groups]; depthwise: [K, C]
  Tensor grad_weights;                              // same layout as weights, accumulation type
  Tensor weight_products;                           // general: a later tile's share of grad_weights
  Tensor grad_input, grad_offset, grad_mask;        // the op's outputs (dtype of input)
  Tensor offset_buffer, mask_buffer, input_buffer;  // channels-last chunk gradients

  // Copies one chunk's channels-last gradients into the outputs.
  void store(int64_t start, int64_t count) const {
    if (need_offset_mask) {
      from_channels_last(narrow_view(offset_buffer, 0, 0, count), narrow_view(grad_offset, 0, start, count));
      if (need_mask) {
        from_channels_last(narrow_view(mask_buffer, 0, 0, count), narrow_view(grad_mask, 0, start, count));
      }
    }
    if (need_input) {
      from_channels_last(narrow_view(input_buffer, 0, 0, count), narrow_view(grad_input, 0, start, count));
    }
  }

  // Zeroes the input gradient of the chunk's images (the kernels add to it).
  void clear_input_grad(int64_t count) const {
    if (need_input) {
      Tensor images = narrow_view(input_buffer, 0, 0, count);
      torch::stable::zero_(images);
    }
  }

  template <typename T>
  T* optional_data(const Tensor& tensor, bool needed) const {
    return needed ? mutable_ptr<T>(tensor) : nullptr;
  }
};

void depthwise_chunk(const Backward& b, const Chunk& data, const Tensor& grad_output, int64_t start, int64_t count) {
  const Tensor grad_rows = to_channels_last(grad_output, start, count, b.weights.scalar_type());
  b.clear_input_grad(count);
  dispatch_accumulation(b.weights.scalar_type(), [&](auto type) {
    using T = decltype(type);
    const T* input = const_ptr<T>(data.input);
    const T* offset = const_ptr<T>(data.offset);
    const T* weight = const_ptr<T>(b.weights);
    const T* grad = const_ptr<T>(grad_rows);
    ProfileScope scope("deformconv_cpp::depthwise_backward");
    depthwise_backward<T>(input, offset, data.mask_data<T>(), weight, grad, b.g, count,
                          b.optional_data<T>(b.input_buffer, b.need_input),
                          b.optional_data<T>(b.grad_weights, b.need_weight),
                          b.optional_data<T>(b.offset_buffer, b.need_offset_mask),
                          b.optional_data<T>(b.mask_buffer, b.need_mask));
  });
}

// grad_weights += weight_products, element by element (each task owns its elements).
void accumulate_weight_grad(const Backward& b) {
  dispatch_accumulation(b.grad_weights.scalar_type(), [&](auto type) {
    using T = decltype(type);
    T* target = mutable_ptr<T>(b.grad_weights);
    const T* source = const_ptr<T>(b.weight_products);
    torch::stable::parallel_for(0, b.grad_weights.numel(), kAddGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        target[i] += source[i];
      }
    });
  });
}

// General case, per tile of rows: the columns for grad_weight, then (in the same buffer) their
// gradient, from which the offset, mask and input gradients are sampled back. grad_output is
// contiguous.
void columns_chunk(const Backward& b, const Chunk& data, const Tensor& grad_output, int64_t start, int64_t count,
                   int64_t tile, const Tensor& columns, const Tensor& grad_buffer) {
  const Geometry& g = b.g;
  const Tensor weights = torch::stable::view(b.weights, {g.groups, g.out_per_group, g.group_columns()});
  const int64_t rows = count * g.out_pixels;
  b.clear_input_grad(count);
  for (int64_t first = 0; first < rows; first += tile) {
    const int64_t last = std::min(rows, first + tile), length = last - first;
    // grad_output of the tile's pixels as [C_out, length]: each group's slice is a plain matrix.
    const Tensor grad_out = narrow_view(grad_buffer, 0, 0, g.out_channels * length);
    for_each_image_part(g, first, last, [&](int64_t image, int64_t pixel, int64_t column, int64_t size) {
      copy_block(grad_output, (start + image) * g.out_channels * g.out_pixels + pixel, g.out_pixels, std::nullopt,
                 g.out_channels, size, grad_out, column, length);
    });
    const Tensor grads = torch::stable::view(grad_out, {g.groups, g.out_per_group, length});
    const Tensor cols = torch::stable::view(narrow_view(columns, 0, 0, length * g.channels * g.kernel_points),
                                            {g.groups, length, g.group_columns()});
    if (b.need_weight) {
      dispatch_accumulation(columns.scalar_type(), [&](auto type) {
        using T = decltype(type);
        ProfileScope scope("deformconv_cpp::sample_columns");
        sample_columns<T>(const_ptr<T>(data.input), const_ptr<T>(data.offset), data.mask_data<T>(), g, first,
                          last, mutable_ptr<T>(cols));
      });
      if (start == 0 && first == 0) {
        bmm_out(torch::stable::view(b.grad_weights, {g.groups, g.out_per_group, g.group_columns()}), grads, cols);
      } else {
        bmm_out(b.weight_products, grads, cols);
        accumulate_weight_grad(b);
      }
    }
    if (!(b.need_input || b.need_offset_mask)) {
      continue;
    }
    bmm_out(cols, torch::stable::transpose(grads, 1, 2), weights);
    dispatch_accumulation(columns.scalar_type(), [&](auto type) {
      using T = decltype(type);
      const T* input = const_ptr<T>(data.input);
      const T* offset = const_ptr<T>(data.offset);
      const T* grad_columns = const_ptr<T>(cols);
      if (b.need_offset_mask) {
        ProfileScope scope("deformconv_cpp::coordinate_grad");
        coordinate_grad<T>(input, offset, data.mask_data<T>(), grad_columns, g, first, last,
                           b.optional_data<T>(b.offset_buffer, true), b.optional_data<T>(b.mask_buffer, b.need_mask));
      }
      if (b.need_input) {
        ProfileScope scope("deformconv_cpp::input_grad");
        input_grad<T>(offset, data.mask_data<T>(), grad_columns, g, first, last,
                      b.optional_data<T>(b.input_buffer, true));
      }
    });
  }
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> deform_conv2d_backward(
    const Tensor& grad_output, const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
    const Tensor& weight, IntHeaderOnlyArrayRef stride, IntHeaderOnlyArrayRef padding,
    IntHeaderOnlyArrayRef dilation, int64_t batch_chunk, bool need_input, bool need_offset_mask, bool need_weight) {
  STD_TORCH_CHECK(input.is_cpu(), "the cpp backend runs on CPU tensors, got input on another device");
  STD_TORCH_CHECK(batch_chunk >= 1, "batch_chunk must be >= 1, got ", batch_chunk);
  const Geometry g = make_geometry(input, offset, mask, weight, stride, padding, dilation);
  STD_TORCH_CHECK(grad_output.dim() == 4 && grad_output.size(0) == g.batch && grad_output.size(1) == g.out_channels &&
                      grad_output.size(2) == g.out_h && grad_output.size(3) == g.out_w,
                  "grad_output must have shape [", g.batch, ", ", g.out_channels, ", ", g.out_h, ", ", g.out_w,
                  "], got ", shape_string(grad_output.sizes()));
  const ScalarType dtype = input.scalar_type(), acc = accumulation_type(dtype);
  const bool depthwise = g.in_per_group == 1 && g.out_per_group == 1;
  const int64_t chunk = std::min(batch_chunk, std::max<int64_t>(g.batch, 1));
  const int64_t offset_channels = 2 * g.offset_groups * g.kernel_points;

  Backward b{g, need_input, need_offset_mask, need_offset_mask && mask.has_value(), need_weight};
  b.weights = weight_matrix(weight, acc, depthwise);
  // One column buffer for a tile of rows: the columns for grad_weight, then their gradient.
  const int64_t tile = tile_rows(g, acc, chunk * g.out_pixels);
  if (need_weight) {
    // Depthwise kernels add to grad_weights; the general case writes the first tile's product
    // there (none for an empty batch) and adds the later tiles' products from a buffer.
    b.grad_weights = empty_cpu(b.weights.sizes(), acc);
    if (depthwise || g.batch == 0) {
      torch::stable::zero_(b.grad_weights);
    }
    if (!depthwise && (chunk < g.batch || tile < chunk * g.out_pixels)) {
      b.weight_products = empty_cpu({g.groups, g.out_per_group, g.group_columns()}, acc);
    }
  }
  const auto output_or_empty = [&](bool needed, IntHeaderOnlyArrayRef sizes) {
    return needed ? empty_cpu(sizes, dtype) : empty_cpu({0}, dtype);
  };
  b.grad_input = output_or_empty(need_input, input.sizes());
  b.grad_offset = output_or_empty(need_offset_mask, offset.sizes());
  b.grad_mask = b.need_mask ? empty_cpu(mask->sizes(), dtype) : empty_cpu({0}, dtype);
  if (need_offset_mask) {
    b.offset_buffer = empty_cpu({chunk, g.out_pixels, offset_channels}, acc);
    if (b.need_mask) {
      b.mask_buffer = empty_cpu({chunk, g.out_pixels, offset_channels / 2}, acc);
    }
  }
  if (need_input) {
    b.input_buffer = empty_cpu({chunk, g.image_pixels(), g.channels}, acc);
  }
  const Tensor columns = empty_cpu({depthwise ? 0 : tile * g.channels * g.kernel_points}, acc);
  const Tensor grad_out = empty_cpu({depthwise ? 0 : g.out_channels * tile}, acc);
  const Tensor grad = depthwise ? grad_output : torch::stable::contiguous(grad_output);

  for (int64_t start = 0; start < g.batch; start += chunk) {
    const int64_t count = std::min(chunk, g.batch - start);
    const Chunk data(input, offset, mask, start, count, acc);
    if (depthwise) {
      depthwise_chunk(b, data, grad, start, count);
    } else {
      columns_chunk(b, data, grad, start, count, tile, columns, grad_out);
    }
    b.store(start, count);
  }

  const Tensor grad_weight =
      need_weight ? weight_from_matrix(b.grad_weights, weight, depthwise) : empty_cpu({0}, dtype);
  return {b.grad_input, b.grad_offset, b.grad_mask, grad_weight};
}

}  // namespace deformconv
