// Reads the frozen problem objects of src/fastconv/_params.py into the plain C++ structs of
// fastconv/params.h. Shared by the CPU and CUDA bindings so that both read the same fields.
// Each problem carries `kernel_fields`: its struct's members in declaration order, as one tuple of
// ints built once per (memoised) problem, so a call costs one attribute lookup, not twenty.
#pragma once

#include <pybind11/pybind11.h>

#include <array>
#include <stdexcept>
#include <string>

#include "fastconv/params.h"

namespace fastconv::bind {

namespace py = pybind11;

template <size_t N>
std::array<int64_t, N> kernel_fields(py::handle problem, const char* what) {
  const py::object fields = problem.attr("kernel_fields");
  if (!PyTuple_Check(fields.ptr()) || PyTuple_GET_SIZE(fields.ptr()) != static_cast<Py_ssize_t>(N)) {
    throw std::invalid_argument(std::string(what) + ": problem.kernel_fields must be a tuple of " +
                                std::to_string(N) + " ints");
  }
  // PyLong_AsLongLong rather than py::cast: a tiny layer's call reads 18 of these.
  std::array<int64_t, N> v{};
  for (size_t i = 0; i < N; ++i) {
    v[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(fields.ptr(), i));
    if (v[i] == -1 && PyErr_Occurred()) throw py::error_already_set();
  }
  return v;
}

inline Activation activation_from(int64_t code) {
  if (code < 0 || code > static_cast<int64_t>(Activation::kSilu)) {
    throw std::invalid_argument("unknown activation code " + std::to_string(code));
  }
  return static_cast<Activation>(code);
}

inline ConvAlgorithm algorithm_from(int64_t code) {
  if (code < 0 || code > static_cast<int64_t>(ConvAlgorithm::kWinograd)) {
    throw std::invalid_argument("unknown conv2d algorithm code " + std::to_string(code));
  }
  return static_cast<ConvAlgorithm>(code);
}

inline Conv2dParams conv2d_params(py::handle problem) {
  const auto f = kernel_fields<18>(problem, "conv2d");
  Conv2dParams c{};
  c.n = f[0], c.h = f[1], c.w = f[2], c.c_in = f[3];
  c.kh = f[4], c.kw = f[5], c.c_out = f[6], c.groups = f[7];
  c.stride_h = f[8], c.stride_w = f[9], c.dilation_h = f[10], c.dilation_w = f[11];
  c.pad_top = f[12], c.pad_left = f[13], c.out_h = f[14], c.out_w = f[15];
  c.activation = activation_from(f[16]);
  c.algorithm = algorithm_from(f[17]);
  return c;
}

inline Pool2dParams pool2d_params(py::handle problem) {
  const auto f = kernel_fields<15>(problem, "pool2d");
  Pool2dParams c{};
  c.n = f[0], c.h = f[1], c.w = f[2], c.c = f[3];
  c.kh = f[4], c.kw = f[5], c.stride_h = f[6], c.stride_w = f[7];
  c.pad_top = f[8], c.pad_bottom = f[9], c.pad_left = f[10], c.pad_right = f[11];
  c.out_h = f[12], c.out_w = f[13];
  c.count_include_pad = f[14] != 0;
  return c;
}

inline GlobalPoolParams global_pool_params(py::handle problem) {
  const auto f = kernel_fields<4>(problem, "global_pool2d");
  return GlobalPoolParams{f[0], f[1], f[2], f[3]};
}

inline ElementwiseParams elementwise_params(py::handle problem) {
  const auto f = kernel_fields<2>(problem, "elementwise");
  return ElementwiseParams{f[0], activation_from(f[1])};
}

inline ChannelAffineParams channel_affine_params(py::handle problem) {
  const auto f = kernel_fields<3>(problem, "batch_norm");
  return ChannelAffineParams{f[0], f[1], activation_from(f[2])};
}

inline ScaleChannelsParams scale_channels_params(py::handle problem) {
  const auto f = kernel_fields<3>(problem, "scale_channels");
  return ScaleChannelsParams{f[0], f[1], f[2]};
}

inline GemmParams dense_params(py::handle problem) {
  const auto f = kernel_fields<4>(problem, "dense");
  return GemmParams{f[0], f[1], f[2], activation_from(f[3])};
}

}  // namespace fastconv::bind
