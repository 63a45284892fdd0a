// The tensor operations that every operator's C++ kernels share, on PyTorch's stable ABI only
// (torch/csrc/stable, torch/headeronly): CPU allocation, views, dtype dispatch, shape messages,
// and the batched matrix product.
#pragma once

#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/BFloat16.h>
#include <torch/headeronly/util/Exception.h>
#include <torch/headeronly/util/Half.h>
#include <torch/headeronly/util/shim_utils.h>

#include <array>
#include <cstdint>
#include <optional>
#include <sstream>
#include <string>

namespace deformconv {

using torch::headeronly::BFloat16;
using torch::headeronly::Half;
using torch::headeronly::IntHeaderOnlyArrayRef;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// An uninitialised contiguous CPU tensor.
inline Tensor empty_cpu(IntHeaderOnlyArrayRef sizes, ScalarType dtype) {
  return torch::stable::empty(sizes, dtype, std::nullopt, torch::stable::Device(torch::headeronly::DeviceType::CPU));
}

// Entries [start, start + length) of dimension `dim`, a view (torch::stable::narrow takes a
// non-const tensor; the copy here shares the same tensor).
inline Tensor narrow_view(Tensor tensor, int64_t dim, int64_t start, int64_t length) {
  return torch::stable::narrow(tensor, dim, start, length);
}

// The data of a tensor whose dtype is T (the callers dispatch on the dtype first).
template <typename T>
T* mutable_ptr(const Tensor& tensor) {
  return static_cast<T*>(tensor.mutable_data_ptr());
}

template <typename T>
const T* const_ptr(const Tensor& tensor) {
  return static_cast<const T*>(tensor.const_data_ptr());
}

// "[2, 3, 4]", for error messages.
inline std::string shape_string(IntHeaderOnlyArrayRef sizes) {
  std::ostringstream text;
  text << "[";
  for (size_t i = 0; i < sizes.size(); ++i) {
    text << (i == 0 ? "" : ", ") << sizes[i];
  }
  text << "]";
  return text.str();
}

// float64 computes in float64; float32, float16 and bfloat16 in float32.
inline ScalarType accumulation_type(ScalarType type) {
  return type == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

// Calls f(T()) with T the C++ type of the floating dtype `type`.
template <typename F>
void dispatch_floating(ScalarType type, const F& f) {
  switch (type) {
    case ScalarType::Double:
      return f(double());
    case ScalarType::Float:
      return f(float());
    case ScalarType::Half:
      return f(Half());
    case ScalarType::BFloat16:
      return f(BFloat16());
    default:
      STD_TORCH_CHECK(false, "expected a floating dtype (float64, float32, float16, bfloat16), got ", type);
  }
}

// Calls f(T()) with T the C++ type of an accumulation dtype (float64 or float32).
template <typename F>
void dispatch_accumulation(ScalarType type, const F& f) {
  STD_TORCH_CHECK(type == ScalarType::Double || type == ScalarType::Float,
                  "expected an accumulation dtype (float64, float32), got ", type);
  if (type == ScalarType::Double) {
    f(double());
  } else {
    f(float());
  }
}

// out[b] = self[b] @ mat2[b], written into `out` (aten::bmm.out, the BLAS library that PyTorch
// uses). torch/csrc/stable/ops.h offers matmul, which allocates its result; the kernels reuse
// one product buffer across tiles, so they call bmm.out through the stable dispatcher API
// (torch_call_dispatcher), which every torch >= 2.10 provides for any ATen operator whose
// arguments are tensors. Transposed operands are passed as views: BLAS reads them transposed.
inline void bmm_out(const Tensor& out, const Tensor& self, const Tensor& mat2) {
  std::array<StableIValue, 3> stack{torch::stable::detail::from(self), torch::stable::detail::from(mat2),
                                    torch::stable::detail::from(out)};
  TORCH_ERROR_CODE_CHECK(torch_call_dispatcher("aten::bmm", "out", stack.data(), TORCH_ABI_VERSION));
  // The operator returns `out` again, as a new handle that must be released.
  (void)torch::stable::detail::to<Tensor>(stack[0]);
}

// Names a region of the kernels in the PyTorch profiler (what RECORD_FUNCTION does in ATen).
class ProfileScope {
 public:
  explicit ProfileScope(const char* name) {
    TORCH_ERROR_CODE_CHECK(aoti_record_function_start(name, nullptr, nullptr, 0, &guard_));
  }
  ~ProfileScope() { aoti_record_function_end(guard_); }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  AtenRecordFunctionHandle guard_ = nullptr;
};

}  // namespace deformconv
