#include <optional>

#include "chunk.h"
#include "kernels.h"

namespace deformconv {

namespace {

// Calls transpose_images for tensors of any two floating dtypes: src viewed as
// [images, rows, cols], dst as [images, cols, rows]; both contiguous.
void transpose_into(const Tensor& src, int64_t images, int64_t rows, int64_t cols, const Tensor& dst) {
  dispatch_floating(src.scalar_type(), [&](auto source_type) {
    using S = decltype(source_type);
    dispatch_floating(dst.scalar_type(), [&](auto target_type) {
      using D = decltype(target_type);
      transpose_images<S, D>(const_ptr<S>(src), images, rows, cols, mutable_ptr<D>(dst));
    });
  });
}

// True when the [count, C, H, W] tensor's data is [count, H, W, C] contiguous (the strides of
// size-1 dimensions do not matter).
bool is_channels_last(const Tensor& images) {
  const int64_t order[4] = {0, 2, 3, 1};
  int64_t expected = 1;
  for (int i = 3; i >= 0; --i) {
    const int64_t dim = order[i];
    if (images.size(dim) != 1 && images.stride(dim) != expected) {
      return false;
    }
    expected *= images.size(dim);
  }
  return true;
}

}  // namespace

Tensor to_channels_last(const Tensor& tensor, int64_t start, int64_t count, ScalarType acc) {
  const Tensor images = narrow_view(tensor, 0, start, count);
  const bool channels_last = is_channels_last(images);
  if (channels_last && images.scalar_type() == acc) {
    return images;  // already the layout and type the kernels read
  }
  const int64_t channels = images.size(1), pixels = images.size(2) * images.size(3);
  Tensor target = empty_cpu({count, images.size(2), images.size(3), channels}, acc);
  if (channels_last) {
    // The same order of elements: a plain conversion (a [1, n] matrix transposed).
    transpose_into(images, 1, 1, count * pixels * channels, target);
  } else {
    // PyTorch's copy into the permuted view: its transpose kernel, with the dtype conversion.
    Tensor as_images = torch::stable::transpose(torch::stable::transpose(target, 1, 3), 2, 3);
    torch::stable::copy_(as_images, images);
  }
  return target;
}

void from_channels_last(const Tensor& source, const Tensor& target) {
  STD_TORCH_CHECK(source.is_contiguous() && target.is_contiguous(), "from_channels_last needs contiguous tensors");
  transpose_into(source, target.size(0), target.size(2) * target.size(3), target.size(1), target);
}

Tensor weight_matrix(const Tensor& weight, ScalarType acc, bool depthwise) {
  const Tensor source = torch::stable::contiguous(weight);
  const int64_t out_channels = weight.size(0), in_per_group = weight.size(1);
  const int64_t points = weight.size(2) * weight.size(3);
  if (depthwise) {
    Tensor matrix = empty_cpu({points, out_channels}, acc);
    transpose_into(source, 1, out_channels, points, matrix);
    return matrix;
  }
  Tensor matrix = empty_cpu({out_channels, points * in_per_group}, acc);
  transpose_into(source, out_channels, in_per_group, points, matrix);
  return matrix;
}

Tensor weight_from_matrix(const Tensor& matrix, const Tensor& weight, bool depthwise) {
  const int64_t out_channels = weight.size(0), in_per_group = weight.size(1);
  const int64_t points = weight.size(2) * weight.size(3);
  Tensor grad = empty_cpu(weight.sizes(), weight.scalar_type());
  if (depthwise) {
    transpose_into(matrix, 1, points, out_channels, grad);
  } else {
    transpose_into(matrix, out_channels, points, in_per_group, grad);
  }
  return grad;
}

void copy_block(const Tensor& source, int64_t source_offset, int64_t source_stride,
                const std::optional<Tensor>& bias, int64_t rows, int64_t length, const Tensor& target,
                int64_t target_offset, int64_t target_stride) {
  STD_TORCH_CHECK(!bias.has_value() || bias->scalar_type() == source.scalar_type(),
                  "copy_block: bias and source must have one dtype");
  dispatch_floating(source.scalar_type(), [&](auto source_type) {
    using S = decltype(source_type);
    const S* bias_data = bias.has_value() ? const_ptr<S>(*bias) : nullptr;
    dispatch_floating(target.scalar_type(), [&](auto target_type) {
      using D = decltype(target_type);
      copy_rows<S, D>(const_ptr<S>(source) + source_offset, source_stride, bias_data, rows, length,
                      mutable_ptr<D>(target) + target_offset, target_stride);
    });
  });
}

}  // namespace deformconv
