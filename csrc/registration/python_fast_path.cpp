// The lean Python entries of the most common fills (torchinit_ext._C.uniform_, normal_, fill_)
// and of what materialize() asks per fill: the Philox state's draw (philox_state), the tensor's
// extent (fill_extent): a small tensor's torch.ops call costs several microseconds of argument
// parsing against the schema, more than its fill. These unpack the arguments directly and call the
// same ops through the C++ dispatcher, so autograd, inference mode, version counters and dispatch
// modes see exactly the op's call. Each returns False, having done nothing, for what the Python
// path must handle: tensor subclasses, dtypes and devices without kernels, arguments of other
// types, and any tensor while a __torch_function__ mode is on (the mode must see the call). _C also
// gives the Python layer what it derives its routing from: the op table, the dtype sets, the
// devices with kernels, and the one predicate of which tensors the kernels take (compiled).
#include "python_fast_path.h"

#include <ATen/PythonTorchFunctionTLS.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/Device.h>
#include <torch/csrc/Dtype.h>
#include <torch/csrc/DynamicTypes.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/Generator.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <optional>

#include "../cpu_runtime/loops.h"
#include "../plan/op_table.h"

namespace {

using RandomFill = void(at::Tensor&, double, double, std::optional<at::Generator>);

c10::TypedOperatorHandle<RandomFill> random_fill(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<RandomFill>();
}

bool has_kernel(c10::DispatchKey key) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow("torchinit_ext::uniform_", "")
      .hasKernelForDispatchKey(key);
}

// The devices besides the CPU whose kernels were built (_C.compiled_devices()).
struct KernelDevices {
  bool cuda = has_kernel(c10::DispatchKey::CUDA);
  bool meta = has_kernel(c10::DispatchKey::Meta);
};

const KernelDevices& kernel_devices() {
  static const KernelDevices devices;
  return devices;
}

// The tensor of `obj` when the compiled kernels take it (_C.compiled): a plain Tensor or
// Parameter of a float dtype (with all_fill_dtypes, of any dtype constant_, eye_ and dirac_
// write), strided, not nested, on a device with kernels; nullptr otherwise.
const at::Tensor* compiled_tensor(PyObject* obj, bool all_fill_dtypes = false) {
  const KernelDevices& kernels = kernel_devices();
  if (!THPVariable_CheckExact(obj)) return nullptr;
  const at::Tensor& t = THPVariable_Unpack(obj);
  const bool device = t.is_cpu() || (kernels.cuda && t.is_cuda()) || (kernels.meta && t.is_meta());
  const at::ScalarType dtype = t.scalar_type();
  const bool dtype_written =
      all_fill_dtypes ? torchinit::is_fill_dtype(dtype) : torchinit::is_supported_float(dtype);
  return device && dtype_written && t.layout() == at::kStrided && !t.is_nested() ? &t : nullptr;
}

// The tensor of `obj` when the Python path would fill it with the compiled kernels (or, for
// constants, stock's fill_), with no __torch_function__ mode on: for these types, torch.ops'
// check for __torch_function__ is the check for a mode, which must see the call.
const at::Tensor* lean_tensor(PyObject* obj) {
  return at::impl::torch_function_mode_enabled() ? nullptr : compiled_tensor(obj);
}

// A Python float or int as the op's `float` argument takes it (int.__float__); nullopt for other
// types (bool, NumPy scalars, tensors...) and ints no double holds.
std::optional<double> to_double(PyObject* obj) {
  if (PyFloat_CheckExact(obj)) return PyFloat_AS_DOUBLE(obj);
  if (!PyLong_CheckExact(obj)) return std::nullopt;
  const double value = PyLong_AsDouble(obj);
  if (value == -1.0 && PyErr_Occurred()) {
    PyErr_Clear();
    return std::nullopt;
  }
  return value;
}

// uniform_/normal_(tensor, x, y, generator): the op's call with grad mode off, as the Python
// path's (the ops refuse autograd).
template <const char* Name>
PyObject* random_fill_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  static const auto op = random_fill(Name);
  TORCH_CHECK_TYPE(nargs == 4, Name, ": expected 4 arguments, got ", nargs);
  const at::Tensor* tensor = lean_tensor(args[0]);
  const auto x = to_double(args[1]);
  const auto y = to_double(args[2]);
  PyObject* gen = args[3];
  if (!tensor || !x || !y ||
      (gen != Py_None && Py_TYPE(gen) != reinterpret_cast<PyTypeObject*>(THPGeneratorClass))) {
    Py_RETURN_FALSE;
  }
  std::optional<at::Generator> generator;
  if (gen != Py_None) generator = reinterpret_cast<THPGenerator*>(gen)->cdata;
  at::Tensor self = *tensor;
  {
    pybind11::gil_scoped_release no_gil;  // as torch.ops and Tensor.uniform_ release it
    c10::AutoGradMode no_grad(false);
    op.call(self, *x, *y, std::move(generator));
  }
  Py_RETURN_TRUE;
  END_HANDLE_TH_ERRORS
}

constexpr char kUniform[] = "torchinit_ext::uniform_";
constexpr char kNormal[] = "torchinit_ext::normal_";

// fill_(tensor, value): Tensor.fill_(value) with grad mode off, as the Python path runs constants
// (not on inference tensors, which fill_ would write before refusing: the Python path takes them).
PyObject* fill_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "fill_: expected 2 arguments, got ", nargs);
  const at::Tensor* tensor = lean_tensor(args[0]);
  if (!tensor || tensor->is_inference()) Py_RETURN_FALSE;
  c10::Scalar value;
  if (PyFloat_CheckExact(args[1])) {
    value = PyFloat_AS_DOUBLE(args[1]);
  } else if (PyLong_CheckExact(args[1])) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (overflow || (v == -1 && PyErr_Occurred())) {
      PyErr_Clear();
      Py_RETURN_FALSE;
    }
    value = static_cast<int64_t>(v);
  } else {
    Py_RETURN_FALSE;
  }
  at::Tensor self = *tensor;
  {
    pybind11::gil_scoped_release no_gil;
    c10::AutoGradMode no_grad(false);
    // Huge pages for fresh memory, as our own fills get.
    if (self.is_cpu()) torchinit::cpu::prepare_memory(self);
    self.fill_(value);
  }
  Py_RETURN_TRUE;
  END_HANDLE_TH_ERRORS
}

// ops.philox_state's draw for `tensor`, out of the reach of dispatch modes, as [key, offset].
PyObject* draw_state(const at::Tensor& tensor, std::optional<at::Generator> generator) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("torchinit_ext::philox_state", "")
          .typed<std::vector<int64_t>(const at::Tensor&, std::optional<at::Generator>)>();
  std::vector<int64_t> state;
  {
    c10::impl::ExcludeDispatchKeyGuard no_modes(
        c10::DispatchKeySet({c10::DispatchKey::Python, c10::DispatchKey::PythonTLSSnapshot}));
    state = op.call(tensor, std::move(generator));
  }
  PyObject* pair =
      Py_BuildValue("[LL]", static_cast<long long>(state[0]), static_cast<long long>(state[1]));
  if (!pair) throw python_error();
  return pair;
}

// philox_state(tensor, generator) -> (key, offset): ops.philox_state's draw, out of the reach of
// dispatch modes. materialize() draws a state per deferred fill under its own tracking mode, which
// has nothing to see in a draw (it reads no element) and would cost more than the draw.
PyObject* philox_state_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "philox_state: expected 2 arguments, got ", nargs);
  TORCH_CHECK_TYPE(THPVariable_Check(args[0]), "philox_state: expected a Tensor");
  PyObject* gen = args[1];
  TORCH_CHECK_TYPE(
      gen == Py_None || Py_TYPE(gen) == reinterpret_cast<PyTypeObject*>(THPGeneratorClass),
      "philox_state: expected a torch.Generator or None");
  std::optional<at::Generator> generator;
  if (gen != Py_None) generator = reinterpret_cast<THPGenerator*>(gen)->cdata;
  return draw_state(THPVariable_Unpack(args[0]), std::move(generator));
  END_HANDLE_TH_ERRORS
}

// new_fill_targets(geometries, device, draws) -> ([Tensor], [[key, offset]]) or None: new
// tensors on `device` of the geometries (_record._Ref's fields: storage, dtype, sizes, strides,
// offset) and, in their order, the Philox state of each where draws[i] ([0, 0] elsewhere), drawn
// from the default generator as philox_state would draw them one by one. The host work of
// materialize()'s replay of a record of whole fills alone (_session.fill_new), a few calls where
// the Python path makes some twenty a tensor. None, having drawn nothing, where the compiled
// fills take no tensor of a geometry (a dtype without kernels) or of the device.
PyObject* new_fill_targets_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  namespace py = pybind11;
  TORCH_CHECK_TYPE(nargs == 3, "new_fill_targets: expected 3 arguments, got ", nargs);
  TORCH_CHECK_TYPE(PyList_Check(args[0]) && PyList_Check(args[2]),
                   "new_fill_targets: expected lists of geometries and of draws");
  TORCH_CHECK_TYPE(THPDevice_Check(args[1]), "new_fill_targets: expected a torch.device");
  const at::Device device = reinterpret_cast<THPDevice*>(args[1])->device;
  const KernelDevices& kernels = kernel_devices();
  if (!device.is_cpu() && !(kernels.cuda && device.is_cuda())) Py_RETURN_NONE;
  const auto geometries = py::reinterpret_borrow<py::list>(args[0]);
  const auto draws = py::reinterpret_borrow<py::list>(args[2]);
  TORCH_CHECK_VALUE(draws.size() == geometries.size(),
                    "new_fill_targets: expected a draw for each geometry");
  std::vector<at::Tensor> tensors;
  tensors.reserve(geometries.size());
  for (const py::handle geometry : geometries) {
    const auto fields = geometry.cast<py::tuple>();
    TORCH_CHECK_TYPE(fields.size() == 5 && THPDtype_Check(fields[1].ptr()),
                     "new_fill_targets: expected (storage, dtype, sizes, strides, offset)");
    const at::ScalarType dtype = reinterpret_cast<THPDtype*>(fields[1].ptr())->scalar_type;
    if (!torchinit::is_supported_float(dtype)) Py_RETURN_NONE;
    tensors.push_back(at::empty_strided(fields[2].cast<std::vector<int64_t>>(),
                                        fields[3].cast<std::vector<int64_t>>(),
                                        at::TensorOptions().dtype(dtype).device(device)));
  }
  py::list made;
  py::list states;
  for (size_t i = 0; i < tensors.size(); ++i) {
    made.append(py::reinterpret_steal<py::object>(THPVariable_Wrap(tensors[i])));
    states.append(draws[i].cast<bool>()
                      ? py::reinterpret_steal<py::object>(draw_state(tensors[i], std::nullopt))
                      : py::object(py::make_tuple(0, 0)));
  }
  return py::make_tuple(made, states).release().ptr();
  END_HANDLE_TH_ERRORS
}

// fill_extent(tensor) -> (memory, offset, sizes, strides, dtype), or None where the compiled
// fills don't take the tensor: _session.extent() of a tensor that _dispatch.compiled() accepts,
// in one call, for materialize(), which asks it of every tensor a known reset fills. Memory is
// the storage's address (0 for no elements or meta), as UntypedStorage.data_ptr() gives it.
PyObject* fill_extent_entry(PyObject*, PyObject* obj) {
  HANDLE_TH_ERRORS
  const at::Tensor* tensor = compiled_tensor(obj);
  if (!tensor) Py_RETURN_NONE;
  const bool has_memory = tensor->numel() != 0 && !tensor->is_meta();
  const auto memory =
      has_memory ? reinterpret_cast<uintptr_t>(tensor->storage().mutable_data()) : uintptr_t{0};
  namespace py = pybind11;
  return py::make_tuple(
             memory, tensor->storage_offset(), py::tuple(py::cast(tensor->sizes().vec())),
             py::tuple(py::cast(tensor->strides().vec())),
             py::handle(reinterpret_cast<PyObject*>(torch::getTHPDtype(tensor->scalar_type()))))
      .release()
      .ptr();
  END_HANDLE_TH_ERRORS
}

PyObject* int_tuple(c10::IntArrayRef values) {
  PyObject* tuple = PyTuple_New(static_cast<Py_ssize_t>(values.size()));
  if (!tuple) return nullptr;
  for (size_t i = 0; i < values.size(); ++i) {
    PyObject* value = PyLong_FromLongLong(values[i]);
    if (!value) {
      Py_DECREF(tuple);
      return nullptr;
    }
    PyTuple_SET_ITEM(tuple, static_cast<Py_ssize_t>(i), value);
  }
  return tuple;
}

// storage_view(tensor) -> (storage key, dtype, sizes, strides, offset): the fields of
// torchinit_ext._record.ref(), which deferred_init() and materialize() take of every tensor they
// record or replay, in one call where the Python attributes take five. The key is the storage's
// address, as UntypedStorage._cdata gives it.
PyObject* storage_view_entry(PyObject*, PyObject* obj) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(THPVariable_Check(obj), "storage_view: expected a Tensor");
  const at::Tensor& t = THPVariable_Unpack(obj);
  PyObject* sizes = int_tuple(t.sizes());
  PyObject* strides = sizes ? int_tuple(t.strides()) : nullptr;
  if (!strides) {
    Py_XDECREF(sizes);
    return nullptr;
  }
  PyObject* dtype = reinterpret_cast<PyObject*>(torch::getTHPDtype(t.scalar_type()));
  return Py_BuildValue("(NONNL)", PyLong_FromVoidPtr(t.storage().unsafeGetStorageImpl()), dtype,
                       sizes, strides, static_cast<long long>(t.storage_offset()));
  END_HANDLE_TH_ERRORS
}

// compiled(tensor, all_fill_dtypes) -> bool: whether the compiled kernels take the tensor
// (compiled_tensor), for torchinit_ext._dispatch.compiled.
PyObject* compiled_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 2, "compiled: expected 2 arguments, got ", nargs);
  if (compiled_tensor(args[0], args[1] == Py_True)) Py_RETURN_TRUE;
  Py_RETURN_FALSE;
  END_HANDLE_TH_ERRORS
}

// compiled_devices() -> [str]: the device types with kernels.
PyObject* compiled_devices_entry(PyObject*, PyObject*) {
  HANDLE_TH_ERRORS
  const KernelDevices& kernels = kernel_devices();
  pybind11::list devices;
  devices.append("cpu");
  if (kernels.cuda) devices.append("cuda");
  if (kernels.meta) devices.append("meta");
  return devices.release().ptr();
  END_HANDLE_TH_ERRORS
}

template <size_t N>
PyObject* dtype_list(const c10::ScalarType (&dtypes)[N]) {
  pybind11::list list;
  for (const c10::ScalarType dtype : dtypes) {
    list.append(pybind11::handle(reinterpret_cast<PyObject*>(torch::getTHPDtype(dtype))));
  }
  return list.release().ptr();
}

PyObject* float_dtypes_entry(PyObject*, PyObject*) {
  HANDLE_TH_ERRORS
  return dtype_list(torchinit::kFloatDtypes);
  END_HANDLE_TH_ERRORS
}

PyObject* fill_dtypes_entry(PyObject*, PyObject*) {
  HANDLE_TH_ERRORS
  return dtype_list(torchinit::kFillDtypes);
  END_HANDLE_TH_ERRORS
}

// op_table() -> [(name, schema, kind, law)]: plan/op_table.h, kind one of "law", "whole",
// "batch", "helper", law None but for "law".
PyObject* op_table_entry(PyObject*, PyObject*) {
  HANDLE_TH_ERRORS
  namespace py = pybind11;
  using torchinit::OpKind;
  py::list table;
  for (const torchinit::OpSpec& op : torchinit::kOpTable) {
    const char* kind = op.kind == OpKind::kLaw     ? "law"
                       : op.kind == OpKind::kWhole ? "whole"
                       : op.kind == OpKind::kBatch ? "batch"
                                                   : "helper";
    table.append(py::make_tuple(torchinit::op_name(op), op.schema, kind,
                                op.law ? py::object(py::str(op.law)) : py::object(py::none())));
  }
  return table.release().ptr();
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"uniform_", reinterpret_cast<PyCFunction>(random_fill_entry<kUniform>), METH_FASTCALL,
     "uniform_(tensor, a, b, generator) -> bool: ops.uniform_ without grad, if it takes them."},
    {"normal_", reinterpret_cast<PyCFunction>(random_fill_entry<kNormal>), METH_FASTCALL,
     "normal_(tensor, mean, std, generator) -> bool: ops.normal_ without grad, if it takes "
     "them."},
    {"fill_", reinterpret_cast<PyCFunction>(fill_entry), METH_FASTCALL,
     "fill_(tensor, value) -> bool: tensor.fill_(value) without grad, if it takes them."},
    {"philox_state", reinterpret_cast<PyCFunction>(philox_state_entry), METH_FASTCALL,
     "philox_state(tensor, generator) -> [key, offset]: ops.philox_state, unseen by dispatch "
     "modes."},
    {"new_fill_targets", reinterpret_cast<PyCFunction>(new_fill_targets_entry), METH_FASTCALL,
     "new_fill_targets(geometries, device, draws) -> ([Tensor], [[key, offset]]) or None: new "
     "tensors and the Philox states their fills draw, in order."},
    {"fill_extent", reinterpret_cast<PyCFunction>(fill_extent_entry), METH_O,
     "fill_extent(tensor) -> (memory, offset, sizes, strides, dtype) or None: _session.extent() "
     "of a tensor the compiled fills take."},
    {"storage_view", reinterpret_cast<PyCFunction>(storage_view_entry), METH_O,
     "storage_view(tensor) -> (storage key, dtype, sizes, strides, offset): _record.ref()'s "
     "fields."},
    {"compiled", reinterpret_cast<PyCFunction>(compiled_entry), METH_FASTCALL,
     "compiled(tensor, all_fill_dtypes) -> bool: whether the compiled kernels take the tensor."},
    {"compiled_devices", compiled_devices_entry, METH_NOARGS,
     "compiled_devices() -> [str]: the device types with kernels."},
    {"float_dtypes", float_dtypes_entry, METH_NOARGS,
     "float_dtypes() -> [dtype]: the dtypes of the random fills."},
    {"fill_dtypes", fill_dtypes_entry, METH_NOARGS,
     "fill_dtypes() -> [dtype]: the dtypes constant_, eye_ and dirac_ write."},
    {"op_table", op_table_entry, METH_NOARGS,
     "op_table() -> [(name, schema, kind, law)]: every op of torch.ops.torchinit_ext."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

namespace torchinit {

PyMethodDef* fast_path_methods() {
  return methods;
}

}  // namespace torchinit
