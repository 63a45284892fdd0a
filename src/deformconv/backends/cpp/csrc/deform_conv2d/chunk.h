// Per-batch-chunk views of the op's tensors, in the layouts the kernels expect.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>

#include "geometry.h"

namespace deformconv {

// Checks the shapes (the Python layer has validated them; this guards direct calls of the op)
// and returns the geometry they imply.
Geometry make_geometry(const at::Tensor& input, const at::Tensor& offset,
                       const std::optional<at::Tensor>& mask, const at::Tensor& weight,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation);

// float64 computes in float64; float32, float16 and bfloat16 in float32.
inline at::ScalarType accumulation_type(at::ScalarType type) {
  return type == at::kDouble ? at::kDouble : at::kFloat;
}

// Images [start, start + count) of a [N, C, H, W] tensor as a contiguous [count, H, W, C]
// tensor of type `acc` (no copy when the tensor already is channels-last in that type).
at::Tensor to_channels_last(const at::Tensor& tensor, int64_t start, int64_t count, at::ScalarType acc);

// Writes `source` ([count, H*W, C], accumulation type) into the contiguous [count, C, H, W]
// tensor `target` of any floating dtype.
void from_channels_last(const at::Tensor& source, const at::Tensor& target);

// The weight as [C_out, kh * kw * C_in/groups] in type `acc`, matching the column layout.
inline at::Tensor weight_matrix(const at::Tensor& weight, at::ScalarType acc) {
  return weight.permute({0, 2, 3, 1}).to(acc).contiguous().view({weight.size(0), -1});
}

// Rows of the column buffer sampled and multiplied at once: about 8 MiB of columns, so that
// the buffer stays small enough for the memory allocator to reuse it from one call to the
// next (a fresh multi-megabyte buffer costs a page fault per 4 KiB on every call).
inline int64_t tile_rows(const Geometry& g, int64_t element_size, int64_t rows) {
  constexpr int64_t kTileBytes = 8 << 20;
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
  at::Tensor input;   // [m, H, W, C]
  at::Tensor offset;  // [m, Ho, Wo, 2*G*K]
  at::Tensor mask;    // [m, Ho, Wo, G*K], undefined without mask

  Chunk(const at::Tensor& input_, const at::Tensor& offset_, const std::optional<at::Tensor>& mask_,
        int64_t start, int64_t count, at::ScalarType acc)
      : input(to_channels_last(input_, start, count, acc)),
        offset(to_channels_last(offset_, start, count, acc)) {
    if (mask_.has_value()) {
      mask = to_channels_last(*mask_, start, count, acc);
    }
  }

  template <typename T>
  const T* mask_data() const {
    return mask.defined() ? mask.const_data_ptr<T>() : nullptr;
  }
};

}  // namespace deformconv
