// Per-batch-chunk views of the op's tensors, in the layouts the kernels expect.
#pragma once

#include <algorithm>
#include <optional>

#include "../tensor_ops.h"
#include "geometry.h"

namespace deformconv {

// Checks the shapes (the Python layer has validated them; this guards direct calls of the op)
// and returns the geometry they imply.
Geometry make_geometry(const Tensor& input, const Tensor& offset, const std::optional<Tensor>& mask,
                       const Tensor& weight, IntHeaderOnlyArrayRef stride, IntHeaderOnlyArrayRef padding,
                       IntHeaderOnlyArrayRef dilation);

// Images [start, start + count) of a [N, C, H, W] tensor as channels-last data of type `acc`:
// a tensor whose data is [count, H, W, C] contiguous (the images themselves when they already
// are channels-last in that type, otherwise a converted copy).
Tensor to_channels_last(const Tensor& tensor, int64_t start, int64_t count, ScalarType acc);

// Writes `source` ([count, H*W, C], accumulation type) into the contiguous [count, C, H, W]
// tensor `target` of any floating dtype.
void from_channels_last(const Tensor& source, const Tensor& target);

// The weight [C_out, C_in/groups, kh, kw] as [C_out, kh * kw * C_in/groups] in type `acc`,
// matching the column layout; depthwise ([C, 1, kh, kw]): as [kh * kw, C].
Tensor weight_matrix(const Tensor& weight, ScalarType acc, bool depthwise);

// The inverse of weight_matrix: the weight gradient in the weight's layout and dtype.
Tensor weight_from_matrix(const Tensor& matrix, const Tensor& weight, bool depthwise);

// target[offset + r * target_stride + i] = source[source_offset + r * source_stride + i]
// (+ bias[r]) for r < rows, i < length, converting to target's dtype: a block of rows between
// two contiguous buffers (source and bias in an accumulation type when there is a bias).
void copy_block(const Tensor& source, int64_t source_offset, int64_t source_stride,
                const std::optional<Tensor>& bias, int64_t rows, int64_t length, const Tensor& target,
                int64_t target_offset, int64_t target_stride);

// Rows of the column buffer sampled and multiplied at once: about 8 MiB of columns, so that
// the buffer stays small enough for the memory allocator to reuse it from one call to the
// next (a fresh multi-megabyte buffer costs a page fault per 4 KiB on every call).
inline int64_t tile_rows(const Geometry& g, ScalarType acc, int64_t rows) {
  constexpr int64_t kTileBytes = 8 << 20;
  const int64_t element_size = acc == ScalarType::Double ? 8 : 4;
  const int64_t row_bytes = g.channels * g.kernel_points * element_size;
  return std::max<int64_t>(1, std::min(rows, kTileBytes / row_bytes));
}

// Calls copy(image, pixel, tile_column, length) for each image's part of rows [first, last),
// row = image * P + pixel: the pieces of a row tile that are contiguous in an NCHW tensor.
template <typename F>
void for_each_image_part(const Geometry& g, int64_t first, int64_t last, const F& copy) {
  for (int64_t row = first; row < last;) {
    const int64_t image = row / g.out_pixels, pixel = row % g.out_pixels;
    const int64_t length = std::min(last - row, g.out_pixels - pixel);
    copy(image, pixel, row - first, length);
    row += length;
  }
}

// Inputs of one batch chunk, converted and laid out for the kernels.
struct Chunk {
  Tensor input;                 // [m, H, W, C]
  Tensor offset;                // [m, Ho, Wo, 2*G*K]
  std::optional<Tensor> mask;   // [m, Ho, Wo, G*K], none without mask

  Chunk(const Tensor& input_, const Tensor& offset_, const std::optional<Tensor>& mask_, int64_t start,
        int64_t count, ScalarType acc)
      : input(to_channels_last(input_, start, count, acc)), offset(to_channels_last(offset_, start, count, acc)) {
    if (mask_.has_value()) {
      mask = to_channels_last(*mask_, start, count, acc);
    }
  }

  template <typename T>
  const T* mask_data() const {
    return mask.has_value() ? const_ptr<T>(*mask) : nullptr;
  }
};

}  // namespace deformconv
