// fastconv._cuda: pybind11 bindings over the CUDA kernels, for src/fastconv/_gpu.py.
// Each op takes the validated problem object (src/fastconv/_params.py), device pointers as
// integers (b = 0: no bias), the cudaStream_t as an integer, the device ordinal and optionally a
// kernel version (0: the best that applies; see launch.h). It makes the
// device current in this module's statically linked runtime, enqueues the kernel with the GIL
// released and returns without synchronising. Buffer sizes are checked in _gpu.run, which owns
// the arrays; nothing here can see them.
#include <pybind11/pybind11.h>

#include "bind/problem.h"
#include "launch.h"

namespace py = pybind11;
using namespace fastconv;

namespace {

const float* in(uintptr_t p) { return reinterpret_cast<const float*>(p); }
float* out(uintptr_t p) { return reinterpret_cast<float*>(p); }

void conv2d(py::handle problem, uintptr_t x, uintptr_t w, uintptr_t b, uintptr_t y, uintptr_t stream, int device,
            int version) {
  const Conv2dParams p = bind::conv2d_params(problem);
  py::gil_scoped_release release;
  cuda::set_device(device);
  cuda::conv2d(p, in(x), in(w), in(b), out(y), stream, version);
}

void dense(py::handle problem, uintptr_t x, uintptr_t w, uintptr_t b, uintptr_t y, uintptr_t stream, int device,
           int version) {
  const GemmParams p = bind::dense_params(problem);
  py::gil_scoped_release release;
  cuda::set_device(device);
  cuda::gemm(p, in(x), in(w), in(b), out(y), stream, version);
}

template <void (*Kernel)(const Pool2dParams&, const float*, float*, cuda::StreamHandle, int)>
void pool2d(py::handle problem, uintptr_t x, uintptr_t y, uintptr_t stream, int device, int version) {
  const Pool2dParams p = bind::pool2d_params(problem);
  py::gil_scoped_release release;
  cuda::set_device(device);
  Kernel(p, in(x), out(y), stream, version);
}

template <void (*Kernel)(const GlobalPoolParams&, const float*, float*, cuda::StreamHandle)>
void global_pool2d(py::handle problem, uintptr_t x, uintptr_t y, uintptr_t stream, int device) {
  const GlobalPoolParams p = bind::global_pool_params(problem);
  py::gil_scoped_release release;
  cuda::set_device(device);
  Kernel(p, in(x), out(y), stream);
}

py::dict device_info(int device) {
  const cuda::DeviceInfo info = cuda::device_info(device);
  py::dict d;
  d["name"] = info.name;
  d["compute_capability"] = py::make_tuple(info.major, info.minor);
  d["multiprocessors"] = info.multiprocessors;
  d["total_memory"] = info.total_memory;
  return d;
}

}  // namespace

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "fastconv CUDA kernels (NHWC, float32). Call through the public fastconv functions.";

  const auto ptr = [](const char* name) { return py::arg(name); };
  const auto version = py::arg("version") = 0;
  m.def("conv2d", &conv2d, py::arg("problem"), ptr("x"), ptr("w"), ptr("b"), ptr("out"), py::arg("stream"),
        py::arg("device"), version,
        "Any Conv2dProblem: implicit-GEMM, depthwise or pointwise kernel chosen from its geometry.");
  m.def("dense", &dense, py::arg("problem"), ptr("x"), ptr("w"), ptr("b"), ptr("out"), py::arg("stream"),
        py::arg("device"), version);
  m.def("max_pool2d", &pool2d<cuda::max_pool2d>, py::arg("problem"), ptr("x"), ptr("out"), py::arg("stream"),
        py::arg("device"), version);
  m.def("avg_pool2d", &pool2d<cuda::avg_pool2d>, py::arg("problem"), ptr("x"), ptr("out"), py::arg("stream"),
        py::arg("device"), version);
  m.def("global_avg_pool2d", &global_pool2d<cuda::global_avg_pool2d>, py::arg("problem"), ptr("x"), ptr("out"),
        py::arg("stream"), py::arg("device"));
  m.def("global_max_pool2d", &global_pool2d<cuda::global_max_pool2d>, py::arg("problem"), ptr("x"), ptr("out"),
        py::arg("stream"), py::arg("device"));

  m.def("device_count", &cuda::device_count, "Visible CUDA devices; raises RuntimeError without a driver.");
  m.def("device_info", &device_info, py::arg("device"));
  m.def("driver_version", &cuda::driver_version, "CUDA driver version as an int (12040 = 12.4); 0 without a driver.");
  m.def("runtime_version", &cuda::runtime_version, "Version of the CUDA runtime linked into this module.");

  // Both wait for their own events: release the GIL for the wait.
  m.def("measure_fma_peak", &cuda::measure_fma_peak, py::arg("stream"),
        py::call_guard<py::gil_scoped_release>(), "FP32 FMA throughput of the current device in GFLOP/s.");
  m.def("measure_copy_bandwidth", &cuda::measure_copy_bandwidth, py::arg("nbytes"), py::arg("stream"),
        py::call_guard<py::gil_scoped_release>(),
        "Device-to-device copy bandwidth of the current device in GB/s, bytes read + written.");

  m.attr("architectures") = FASTCONV_CUDA_ARCHITECTURES;
  m.attr("min_compute_capability") = py::make_tuple(8, 0);
}
