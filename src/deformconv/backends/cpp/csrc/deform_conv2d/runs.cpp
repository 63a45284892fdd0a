#include <algorithm>

#include "geometry.h"

namespace deformconv {

std::vector<ChannelRange> channel_ranges(const Geometry& g, int64_t rows, int64_t max_channels) {
  const int64_t group_size = rows * g.group_columns();  // elements of one group's matrix
  std::vector<ChannelRange> ranges;
  for (int64_t og = 0; og < g.offset_groups; ++og) {
    const int64_t og_end = (og + 1) * g.per_offset_group;
    for (int64_t begin = og * g.per_offset_group; begin < og_end; begin += max_channels) {
      const int64_t end = std::min(og_end, begin + max_channels);
      ChannelRange range{og, begin, end - begin, {}};
      for (int64_t c = begin; c < end;) {
        const int64_t group = c / g.in_per_group;
        const int64_t stop = std::min(end, (group + 1) * g.in_per_group);
        const int64_t column = group * group_size + (c - group * g.in_per_group);
        if (g.in_per_group == 1) {
          // One channel per group: consecutive channels are one group's matrix apart.
          range.runs.push_back({c, end - c, column, 1, group_size});
          break;
        }
        range.runs.push_back({c, stop - c, column, g.in_per_group, 1});
        c = stop;
      }
      ranges.push_back(std::move(range));
    }
  }
  return ranges;
}

}  // namespace deformconv
