// Sizes of one deformable convolution, and how its input channels map to column entries.
#pragma once

#include <cstdint>
#include <vector>

namespace deformconv {

// Every size is int64_t so that products such as rows * C * K never overflow 32 bits.
struct Geometry {
  int64_t batch, channels, height, width;  // input [N, C, H, W]
  int64_t out_channels, groups, in_per_group, out_per_group;
  int64_t offset_groups, per_offset_group;    // G, and C / G input channels per offset group
  int64_t kernel_h, kernel_w, kernel_points;  // kh, kw, K = kh * kw
  int64_t out_h, out_w, out_pixels;           // Ho, Wo, P = Ho * Wo
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;

  // Columns of one convolution group per output pixel: K * C_in/groups.
  int64_t group_columns() const { return kernel_points * in_per_group; }
  // Input pixels of one image: H * W.
  int64_t image_pixels() const { return height * width; }
};

// Column buffer layout: [groups][rows][K][C_in/groups], rows = images * P. Each convolution
// group's columns are one contiguous [rows, K*C_in/groups] matrix, the best operand for the
// batched matrix products; a row of a group starts at row * group_columns().
//
// A run of consecutive input channels [channel, channel + length) whose column entries for
// kernel point k of a row are at
//   columns + row * group_columns() + column + k * point_step + i * channel_step,  i < length.
struct ChannelRun {
  int64_t channel, length, column, point_step, channel_step;
};

// Consecutive channels [channel, channel + length) of one offset group and the runs (one per
// convolution group they touch) that hold their columns.
struct ChannelRange {
  int64_t offset_group, channel, length;
  std::vector<ChannelRun> runs;

  // True when a single run with unit channel step holds the whole range.
  bool contiguous() const { return runs.size() == 1 && runs[0].channel_step == 1; }
};

// The channels of every offset group cut into ranges of at most max_channels channels, for a
// column buffer of `rows` rows. The boundaries depend only on the geometry, never on the
// number of threads.
std::vector<ChannelRange> channel_ranges(const Geometry& geometry, int64_t rows, int64_t max_channels);

}  // namespace deformconv
