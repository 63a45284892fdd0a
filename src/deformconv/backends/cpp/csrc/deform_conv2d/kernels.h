// The kernels of the C++ CPU backend. Every tensor is a raw pointer to contiguous data of the
// accumulation type T (float or double), channels last:
//   input          [images, H, W, C]
//   offset         [images, P, 2*G*K]   (dy, dx) pairs, offset group major, kernel point minor
//   mask           [images, P, G*K]     or nullptr for DCNv1
//   columns        rows [row_begin, row_end) of the chunk (row = image * P + pixel), laid out
//                  [groups][rows][K][C_in/groups] (see geometry.h)
// Each kernel is parallel over work items that own every element they write, so the results
// do not depend on the number of threads and are bitwise reproducible.
#pragma once

#include <cstdint>

#include "geometry.h"

namespace deformconv {

// columns = mask * bilinear samples of the input (im2col); parallel over output pixels.
template <typename T>
void sample_columns(const T* input, const T* offset, const T* mask, const Geometry& geometry,
                    int64_t row_begin, int64_t row_end, T* columns);

// Gradients of the offsets and the mask given grad_columns (the gradient of the masked
// columns); parallel over output pixels, each owning its sample points.
//   grad_offset [images, P, 2*G*K], grad_mask [images, P, G*K] (nullptr when there is no mask),
// of which the rows [row_begin, row_end) are written.
template <typename T>
void coordinate_grad(const T* input, const T* offset, const T* mask, const T* grad_columns,
                     const Geometry& geometry, int64_t row_begin, int64_t row_end, T* grad_offset,
                     T* grad_mask);

// Adds the gradient of the input given grad_columns (col2im) of rows [row_begin, row_end) to
// grad_input [images, H, W, C]; parallel over (image, block of channels), each owning its
// grad_input elements.
template <typename T>
void input_grad(const T* offset, const T* mask, const T* grad_columns, const Geometry& geometry,
                int64_t row_begin, int64_t row_end, T* grad_input);

// Depthwise convolution (C_in/groups == C_out/groups == 1), no column buffer; weight is
// [K, C] and grad_output / output are [images * P, C] (channels last).
//   output = sum over kernel points of weight * mask * bilinear sample.
template <typename T>
void depthwise_forward(const T* input, const T* offset, const T* mask, const T* weight,
                       const Geometry& geometry, int64_t images, T* output);

// Depthwise gradients, in one pass over the sample points: of the input (added to grad_input
// [images, H, W, C]), of the weight (added to grad_weight [K, C]), of the offsets and the mask
// (layouts as in coordinate_grad; grad_mask nullptr without a mask); nullptr when not needed.
template <typename T>
void depthwise_backward(const T* input, const T* offset, const T* mask, const T* weight, const T* grad_output,
                        const Geometry& geometry, int64_t images, T* grad_input, T* grad_weight, T* grad_offset,
                        T* grad_mask);

// dst[n][j][i] = src[n][i][j] converted to D, for n < images, i < rows, j < cols: between
// channels-first and channels-last layouts. S and D are any of double, float, Half, BFloat16.
template <typename S, typename D>
void transpose_images(const S* src, int64_t images, int64_t rows, int64_t cols, D* dst);

// dst[r * dst_stride + i] = D(src[r * src_stride + i] + bias[r]) for r < rows, i < length (no
// addition when bias is nullptr): a block of rows copied between buffers of different layouts.
template <typename S, typename D>
void copy_rows(const S* src, int64_t src_stride, const S* bias, int64_t rows, int64_t length, D* dst,
               int64_t dst_stride);

}  // namespace deformconv
