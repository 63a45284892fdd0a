// The extension module deformconv.backends.cpp._C. Importing it loads this library, whose static
// initialisers register the C++ CPU operators in the private namespace deformconv_cpp (the public
// ops in namespace deformconv are declared in Python and reach these through the backend
// registry). The namespace is declared here once; each operator declares its schemas and kernels
// in its own folder, csrc/<op>/register.cpp, with STABLE_TORCH_LIBRARY_FRAGMENT(deformconv_cpp, m)
// and STABLE_TORCH_LIBRARY_IMPL(deformconv_cpp, CPU, m).
//
// Only PyTorch's stable ABI is used, compiled with TORCH_TARGET_VERSION (set by setup.py), so the
// one binary loads in every torch from that version on; the module init below uses only Python's
// limited API (Py_LIMITED_API, set by torch's build helpers), so it loads in every CPython >= 3.10.
#include <Python.h>
#include <torch/csrc/stable/library.h>
#include <torch/headeronly/version.h>

#ifndef TORCH_TARGET_VERSION
#error "build with -DTORCH_TARGET_VERSION=... (setup.py passes the oldest torch the binary supports)"
#endif

STABLE_TORCH_LIBRARY(deformconv_cpp, m) {}

namespace {

// Adds the module attribute `name` = `value` (a new reference that this releases).
bool add_object(PyObject* module, const char* name, PyObject* value) {
  if (value == nullptr) {
    return false;
  }
  const int status = PyModule_AddObjectRef(module, name, value);
  Py_DECREF(value);
  return status == 0;
}

}  // namespace

// What the binary was built against, for `deformconv info`: the torch whose headers compiled it
// and the oldest torch whose stable ABI it targets.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static PyModuleDef definition = {PyModuleDef_HEAD_INIT, "_C", "C++ CPU kernels of deformconv (stable ABI)", -1,
                                   nullptr};
  PyObject* module = PyModule_Create(&definition);
  if (module == nullptr) {
    return nullptr;
  }
  const auto target_major = static_cast<int>((TORCH_TARGET_VERSION >> 56) & 0xFF);
  const auto target_minor = static_cast<int>((TORCH_TARGET_VERSION >> 48) & 0xFF);
  if (!add_object(module, "TORCH_BUILD_VERSION", PyUnicode_FromString(TORCH_VERSION)) ||
      !add_object(module, "TORCH_TARGET_VERSION", PyUnicode_FromFormat("%d.%d", target_major, target_minor)) ||
      !add_object(module, "ABI", PyUnicode_FromString("stable"))) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
