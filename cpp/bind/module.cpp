// fastconv._cpu: thin pybind11 bindings over the CPU kernels.
// Arguments arrive validated by src/fastconv/_params.py and normalised (float32, C-contiguous,
// output allocated) by src/fastconv/_backend.py. Here: problem object -> params struct, arrays ->
// pointers, the GIL released around the kernel (KernelCall). The only checks are that each buffer
// is a float32 C-contiguous array of the size the problem claims, so that a direct call cannot write
// out of bounds.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "bind/problem.h"
#include "fastconv/cpu_ops.h"

namespace py = pybind11;
using namespace fastconv;

namespace {

using Array = py::array_t<float, py::array::c_style>;

// Around every kernel: the GIL released, and the call counted among those in flight (their threads
// shared, cpu::CallInFlight).
struct KernelCall {
  py::gil_scoped_release release;
  cpu::CallInFlight in_flight;
};

// The arrays arrive float32 and C-contiguous (the Python layer converts anything else), so they are
// taken as plain handles and checked, never converted: pybind11's array_t argument builds a new
// array object per argument (~0.15 us each, a tenth of a tiny dense layer's call).
Array checked(py::handle a, int64_t expected, const char* name) {
  if (!Array::check_(a)) {
    throw py::type_error(std::string(name) + ": expected a float32 C-contiguous NumPy array");
  }
  auto arr = py::reinterpret_borrow<Array>(a);
  if (arr.size() != expected) {
    throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(expected) + " elements, got " +
                                std::to_string(arr.size()));
  }
  return arr;
}

const float* data_of(py::handle a, int64_t expected, const char* name) { return checked(a, expected, name).data(); }

// Throws if the array is read-only.
float* output_of(py::handle a, int64_t expected) { return checked(a, expected, "out").mutable_data(); }

const float* bias_of(py::handle b, int64_t expected) { return b.is_none() ? nullptr : data_of(b, expected, "b"); }

// A PackedWeights' form of w under `layout` (its dict `forms`: layout name -> float32 array of
// `floats`): found, or made by pack(data) with the GIL released and added. The kernels read it in
// place of packing w on every call. Returned as a reference the caller holds while its kernel runs:
// threads that made the same form at once keep the first one stored (setdefault), and none of them
// reads an array the dict has let go.
template <class Pack>
py::object packed_form(py::handle forms, const std::string& layout, int64_t floats, Pack&& pack) {
  if (!PyDict_Check(forms.ptr())) throw py::type_error("forms: expected a dict of packed weight forms");
  const py::str key(layout);
  if (PyObject* found = PyDict_GetItemWithError(forms.ptr(), key.ptr())) {
    return py::reinterpret_borrow<py::object>(found);
  }
  if (PyErr_Occurred()) throw py::error_already_set();
  // On a 64-byte boundary (NumPy's own allocation gives 16): the kernels read packed weights in
  // whole vectors, and a 64-byte vector 16 bytes off a line boundary straddles two lines.
  constexpr int64_t kAlignFloats = 16;
  Array block(floats + kAlignFloats);
  const auto address = reinterpret_cast<uintptr_t>(block.mutable_data());
  const int64_t skip = static_cast<int64_t>((64 - address % 64) % 64 / sizeof(float));
  Array fresh({floats}, {static_cast<int64_t>(sizeof(float))}, block.mutable_data() + skip, block);
  float* data = fresh.mutable_data();
  {
    const KernelCall call;
    pack(data);
  }
  PyObject* kept = PyDict_SetDefault(forms.ptr(), key.ptr(), fresh.ptr());
  if (kept == nullptr) throw py::error_already_set();
  return py::reinterpret_borrow<py::object>(kept);
}

// forms: None, or a PackedWeights' dict of forms; the kernel that serves the problem names its
// layout (cpu::plan_conv2d), or none when it reads w as it is.
void conv2d(py::handle problem, py::handle x, py::handle w, py::handle b, py::handle out, py::handle forms) {
  const Conv2dParams p = bind::conv2d_params(problem);
  const float* xp = data_of(x, p.n * p.h * p.w * p.c_in, "x");
  const float* wp = data_of(w, p.kh * p.kw * p.c_in_per_group() * p.c_out, "w");
  const float* bp = bias_of(b, p.c_out);
  float* yp = output_of(out, p.n * p.out_h * p.out_w * p.c_out);
  if (forms.is_none()) {
    const KernelCall call;
    return cpu::conv2d(p, xp, wp, bp, yp);
  }
  const cpu::ConvPlan plan = cpu::plan_conv2d(p);
  const float* pp = nullptr;
  py::object form;  // held while the kernel reads it
  if (!plan.layout.empty()) {
    form = packed_form(forms, plan.layout, plan.floats, [&](float* f) { cpu::pack_conv2d_weights(plan, p, wp, f); });
    pp = data_of(form, plan.floats, "w_packed");
  }
  const KernelCall call;
  cpu::conv2d_planned(plan, p, xp, wp, pp, bp, yp);
}

// (layout, floats) of the packed weights the kernel serving this problem reads; ("", 0) if none.
py::tuple conv2d_packing(py::handle problem) {
  const cpu::ConvPlan plan = cpu::plan_conv2d(bind::conv2d_params(problem));
  return py::make_tuple(plan.layout, plan.floats);
}

// forms: None, or a PackedWeights' dict of forms; the dense form's layout is the ISA's name.
void dense(py::handle problem, py::handle x, py::handle w, py::handle b, py::handle out, py::handle forms) {
  const GemmParams p = bind::dense_params(problem);
  const float* xp = data_of(x, p.rows * p.k, "x");
  const float* wp = data_of(w, p.k * p.m, "w");
  const float* bp = bias_of(b, p.m);
  float* yp = output_of(out, p.rows * p.m);
  if (forms.is_none()) {
    const KernelCall call;
    return cpu::gemm(p, xp, wp, bp, yp);
  }
  const cpu::GemmPlan plan = cpu::plan_gemm();
  const int64_t floats = cpu::gemm_packed_floats(plan, p.k, p.m);
  const py::object form =
      packed_form(forms, plan.layout, floats, [&](float* f) { cpu::pack_gemm_weights(plan, p.k, p.m, wp, f); });
  const float* pp = data_of(form, floats, "w_packed");
  const KernelCall call;
  cpu::gemm_planned(plan, p, xp, wp, pp, bp, yp);
}

template <void (*Kernel)(const Pool2dParams&, const float*, float*)>
void pool2d(py::handle problem, py::handle x, py::handle out) {
  const Pool2dParams p = bind::pool2d_params(problem);
  const float* xp = data_of(x, p.n * p.h * p.w * p.c, "x");
  float* yp = output_of(out, p.n * p.out_h * p.out_w * p.c);
  const KernelCall call;
  Kernel(p, xp, yp);
}

template <void (*Kernel)(const GlobalPoolParams&, const float*, float*)>
void global_pool2d(py::handle problem, py::handle x, py::handle out) {
  const GlobalPoolParams p = bind::global_pool_params(problem);
  const float* xp = data_of(x, p.n * p.h * p.w * p.c, "x");
  float* yp = output_of(out, p.n * p.c);
  const KernelCall call;
  Kernel(p, xp, yp);
}

// add(problem, a, b, out) and activate(problem, a, out): b is None for activate.
void elementwise(py::handle problem, py::handle a, py::handle b, py::handle out) {
  const ElementwiseParams p = bind::elementwise_params(problem);
  const float* ap = data_of(a, p.count, "a");
  const float* bp = b.is_none() ? nullptr : data_of(b, p.count, "b");
  float* yp = output_of(out, p.count);
  const KernelCall call;
  cpu::elementwise(p, ap, bp, yp);
}

// batch_norm(problem, x, scale, shift, out): the per-channel scale and shift made from the statistics.
void batch_norm(py::handle problem, py::handle x, py::handle scale, py::handle shift, py::handle out) {
  const ChannelAffineParams p = bind::channel_affine_params(problem);
  const float* xp = data_of(x, p.rows * p.c, "x");
  const float* scale_p = data_of(scale, p.c, "scale");
  const float* shift_p = data_of(shift, p.c, "shift");
  float* yp = output_of(out, p.rows * p.c);
  const KernelCall call;
  cpu::channel_affine(p, xp, scale_p, shift_p, yp);
}

void scale_channels(py::handle problem, py::handle x, py::handle s, py::handle out) {
  const ScaleChannelsParams p = bind::scale_channels_params(problem);
  const float* xp = data_of(x, p.n * p.pixels * p.c, "x");
  const float* sp = data_of(s, p.n * p.c, "s");
  float* yp = output_of(out, p.n * p.pixels * p.c);
  const KernelCall call;
  cpu::scale_channels(p, xp, sp, yp);
}

}  // namespace

PYBIND11_MODULE(_cpu, m) {
  m.doc() = "fastconv CPU kernels (NHWC, float32). Call through the public fastconv functions.";
  cpu::apply_isa_environment();

  // Arrays: float32 C-contiguous NumPy arrays (b may be None); out is written in place.
  m.def("conv2d", &conv2d, py::arg("problem"), py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("out"),
        py::arg("forms").none(true) = py::none(),
        "Any Conv2dProblem: direct, depthwise or pointwise kernel chosen from its geometry.");
  m.def("conv2d_kernel", [](py::handle problem) { return cpu::conv2d_kernel(bind::conv2d_params(problem)); },
        py::arg("problem"), "The kernel family conv2d runs this problem on under the active ISA (without packed weights).");
  m.def("conv2d_packing", &conv2d_packing, py::arg("problem"),
        "(layout, floats) of the packed weights conv2d would read for this problem under the active ISA.");
  m.def("dense", &dense, py::arg("problem"), py::arg("x"), py::arg("w"), py::arg("b").none(true), py::arg("out"),
        py::arg("forms").none(true) = py::none());
  m.def("max_pool2d", &pool2d<cpu::max_pool2d>, py::arg("problem"), py::arg("x"), py::arg("out"));
  m.def("avg_pool2d", &pool2d<cpu::avg_pool2d>, py::arg("problem"), py::arg("x"), py::arg("out"));
  m.def("global_avg_pool2d", &global_pool2d<cpu::global_avg_pool2d>, py::arg("problem"), py::arg("x"), py::arg("out"));
  m.def("global_max_pool2d", &global_pool2d<cpu::global_max_pool2d>, py::arg("problem"), py::arg("x"), py::arg("out"));
  m.def("add", &elementwise, py::arg("problem"), py::arg("a"), py::arg("b"), py::arg("out"));
  m.def("activate", [](py::handle problem, py::handle x, py::handle out) { elementwise(problem, x, py::none(), out); },
        py::arg("problem"), py::arg("x"), py::arg("out"));
  m.def("scale_channels", &scale_channels, py::arg("problem"), py::arg("x"), py::arg("s"), py::arg("out"));
  m.def("batch_norm", &batch_norm, py::arg("problem"), py::arg("x"), py::arg("scale"), py::arg("shift"), py::arg("out"));

  m.def("supported_isas", &cpu::supported_isas, "Instruction sets this build and CPU can run, best first.");
  m.def("active_isa", &cpu::active_isa);
  m.def("narrow_isa", &cpu::narrow_isa, "The ISA that serves few channels beside the active one, or ''.");
  m.def("narrow_fma_ratio", &cpu::narrow_fma_ratio,
        "The active ISA's one-core FMA rate over the narrow ISA's (measured once), or 0 without one.");
  m.def("set_isa", &cpu::set_isa, py::arg("name"),
        "Force one instruction set for every kernel, or 'auto' (tests, benchmarks).");
  m.def("get_num_threads", &cpu::num_threads);
  m.def("set_num_threads", &cpu::set_num_threads, py::arg("n"));
  m.def("fma_peak", &cpu::fma_peak, py::arg("threads"), py::arg("seconds") = 0.2,
        py::call_guard<py::gil_scoped_release>(), "Register-only float32 FMA GFLOP/s of the active ISA (bench).");
  m.def("triad_bandwidth", &cpu::triad_bandwidth, py::arg("floats_per_array"), py::arg("threads"),
        py::call_guard<py::gil_scoped_release>(), "STREAM triad GB/s (3 arrays x 4 B per element; bench).");
  m.def("planned_cache_bytes", &cpu::planned_cache_bytes,
        "(L1 data, L2, last level): the cache sizes in bytes that the kernels' size rules plan for.");

#if defined(_OPENMP)
  m.attr("openmp") = _OPENMP;
#else
  m.attr("openmp") = py::none();
#endif
  m.attr("compiler") = __VERSION__;
}
