// Reads the frozen problem objects of src/fastconv/_params.py into the plain C++ structs of
// fastconv/params.h. Shared by the CPU and CUDA bindings so that both read the same fields.
#pragma once

#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "fastconv/params.h"

namespace fastconv::bind {

namespace py = pybind11;

inline int64_t field(py::handle obj, const char* name) { return obj.attr(name).cast<int64_t>(); }

inline Activation activation_from(py::handle obj) {
  py::object act = obj.attr("activation");
  if (act.is_none()) return Activation::kNone;
  const std::string name = act.cast<std::string>();
  if (name == "relu") return Activation::kRelu;
  if (name == "relu6") return Activation::kRelu6;
  if (name == "sigmoid") return Activation::kSigmoid;
  if (name == "tanh") return Activation::kTanh;
  if (name == "silu") return Activation::kSilu;
  throw std::invalid_argument("unknown activation " + name);
}

// conv2d's algorithm= ("auto", "direct", "winograd"; validated in _params.py).
inline ConvAlgorithm algorithm_from(py::handle obj) {
  const std::string name = obj.attr("algorithm").cast<std::string>();
  if (name == "auto") return ConvAlgorithm::kAuto;
  if (name == "direct") return ConvAlgorithm::kDirect;
  if (name == "winograd") return ConvAlgorithm::kWinograd;
  throw std::invalid_argument("unknown conv2d algorithm " + name);
}

inline Conv2dParams conv2d_params(py::handle p) {
  Conv2dParams c{};
  c.n = field(p, "n"), c.h = field(p, "h"), c.w = field(p, "w"), c.c_in = field(p, "c_in");
  c.kh = field(p, "kh"), c.kw = field(p, "kw"), c.c_out = field(p, "c_out"), c.groups = field(p, "groups");
  c.stride_h = field(p, "stride_h"), c.stride_w = field(p, "stride_w");
  c.dilation_h = field(p, "dilation_h"), c.dilation_w = field(p, "dilation_w");
  c.pad_top = field(p, "pad_top"), c.pad_left = field(p, "pad_left");
  c.out_h = field(p, "out_h"), c.out_w = field(p, "out_w");
  c.activation = activation_from(p);
  c.algorithm = algorithm_from(p);
  return c;
}

inline Pool2dParams pool2d_params(py::handle p) {
  Pool2dParams c{};
  c.n = field(p, "n"), c.h = field(p, "h"), c.w = field(p, "w"), c.c = field(p, "c");
  c.kh = field(p, "kh"), c.kw = field(p, "kw"), c.stride_h = field(p, "stride_h"), c.stride_w = field(p, "stride_w");
  c.pad_top = field(p, "pad_top"), c.pad_bottom = field(p, "pad_bottom");
  c.pad_left = field(p, "pad_left"), c.pad_right = field(p, "pad_right");
  c.out_h = field(p, "out_h"), c.out_w = field(p, "out_w");
  c.count_include_pad = p.attr("count_include_pad").cast<bool>();
  return c;
}

inline GlobalPoolParams global_pool_params(py::handle p) {
  return GlobalPoolParams{field(p, "n"), field(p, "h"), field(p, "w"), field(p, "c")};
}

inline GemmParams dense_params(py::handle p) {
  return GemmParams{field(p, "n"), field(p, "k"), field(p, "m"), activation_from(p)};
}

}  // namespace fastconv::bind
