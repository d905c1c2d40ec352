// deferred_init()'s commonest ops, taken without Python. Most ops of a small model's
// construction are its parameters' and buffers' empty factories, and some views (a transposed
// weight, an expanded position index). Through the recorder (torchinit_ext/_record.py, a Python
// dispatch mode) each costs 7-13 us, several times its meta kernel, for what the recorder does with
// them: an empty factory forced onto the meta device and its storage's size noted, a view run.
// While a recording runs on this thread, c10's DeferredInit key (reserved for deferred
// initialization; torch registers nothing on it) is in the thread's included keys, and its fallback
// does exactly that for these ops when the recorder is the only dispatch mode and every tensor is a
// plain one (meta, or real: a view of a real tensor the recorder would run too); every other op,
// and these in any other case, goes on to the recorder unchanged.
#include "recording.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/csrc/Exceptions.h>
#include <torch/csrc/PyInterpreter.h>
#include <torch/csrc/Storage.h>
#include <torch/library.h>

#include <string>
#include <unordered_map>
#include <utility>

namespace {

// A recording that takes the fast path on this thread: the recorder (the dispatch mode that must
// be the only one), the record's `nbytes` dict and `_alive` list, which the empty factories'
// storages join as Record.add() would add them, and its `twins` dict (real storages whose ops go
// to meta). Owned references, released when it ends.
struct FastRecording {
  PyObject* recorder;
  PyObject* nbytes;
  PyObject* alive;
  PyObject* twins;
  bool key_was_included;
  FastRecording* outer;
};

thread_local FastRecording* current = nullptr;

constexpr c10::DispatchKey kKey = c10::DispatchKey::DeferredInit;

enum class Fast { kNone, kEmpty, kEmptyStrided, kView };

// Views the recorder only runs (it records no pure view), each one kernel of its own on meta:
// no composite op, which could decompose into a copy the recorder must see.
Fast fast_kind(const c10::OperatorName& name) {
  const std::string& op = name.name;
  const std::string& overload = name.overload_name;
  if (op == "aten::empty" && overload == "memory_format") return Fast::kEmpty;
  if (op == "aten::empty_strided" && overload.empty()) return Fast::kEmptyStrided;
  static const std::pair<const char*, const char*> kViews[] = {
      {"aten::detach", ""},      {"aten::alias", ""},      {"aten::view", ""},
      {"aten::expand", ""},      {"aten::unsqueeze", ""},  {"aten::select", "int"},
      {"aten::slice", "Tensor"}, {"aten::t", ""},          {"aten::transpose", "int"},
      {"aten::permute", ""},     {"aten::squeeze", "dim"}, {"aten::as_strided", ""},
  };
  for (const auto& [view, view_overload] : kViews) {
    if (op == view && overload == view_overload) return Fast::kView;
  }
  return Fast::kNone;
}

// The op's fast kind, looked up once per operator (the fallback sees its handle's address).
Fast cached_kind(const c10::OperatorHandle& op) {
  thread_local std::unordered_map<const void*, Fast> kinds;
  const void* id = &op.schema();
  const auto found = kinds.find(id);
  if (found != kinds.end()) return found->second;
  return kinds[id] = fast_kind(op.operator_name());
}

// Whether the recorder is the one dispatch mode and nothing keeps ops from it (its own
// __torch_dispatch__ pops it, torch._C._DisableTorchDispatch excludes the Python keys).
bool recorder_alone() {
  if (current == nullptr || c10::impl::TorchDispatchModeTLS::stack_len() != 1 ||
      c10::impl::tls_is_dispatch_key_excluded(c10::DispatchKey::Python)) {
    return false;
  }
  const auto& mode = c10::impl::TorchDispatchModeTLS::get_stack_at(0);
  return mode->ptr(getPyInterpreter()) == current->recorder;
}

// Whether a view's tensors are plain ones the recorder only runs the view of: meta ones, or real
// ones while no real storage has gone to meta (Record.twins: the recorder maps those).
bool plain_tensors_of_a_view(const torch::jit::Stack& stack, size_t arguments) {
  bool real = false;
  for (size_t i = stack.size() - arguments; i < stack.size(); ++i) {
    if (!stack[i].isTensor()) continue;
    const at::Tensor& t = stack[i].toTensor();
    if (t.key_set().has(c10::DispatchKey::Python)) return false;
    real = real || !t.is_meta();
  }
  if (!real) return true;
  pybind11::gil_scoped_acquire gil;
  return PyDict_Size(current->twins) == 0;
}

const c10::DispatchKeySet kPythonKeys{c10::DispatchKey::Python,
                                      c10::DispatchKey::PythonTLSSnapshot};
// Excluded while a fast op runs: the recorder and this fallback see none of its inner ops.
const c10::DispatchKeySet kRecordingKeys = kPythonKeys.add(kKey);

// The recorder's work for an empty factory (Record.add's): on meta (also where the code names a
// device), never pinned, its storage noted and kept (Record.keep's).
void empty_on_meta(const c10::OperatorHandle& op, torch::jit::Stack* stack,
                   size_t device_from_end) {
  c10::IValue& device = (*stack)[stack->size() - device_from_end];
  c10::IValue& pin_memory = (*stack)[stack->size() - device_from_end + 1];
  device = c10::Device(c10::kMeta);
  if (pin_memory.isBool() && pin_memory.toBool()) pin_memory = false;
  {
    c10::impl::ExcludeDispatchKeyGuard no_recording(kRecordingKeys);
    op.callBoxed(stack);
  }
  const c10::Storage& storage = stack->back().toTensor().storage();
  pybind11::gil_scoped_acquire gil;
  const auto key = pybind11::reinterpret_steal<pybind11::object>(
      PyLong_FromVoidPtr(storage.unsafeGetStorageImpl()));
  const pybind11::object nbytes = pybind11::int_(storage.nbytes());
  const auto kept = pybind11::reinterpret_steal<pybind11::object>(THPStorage_Wrap(storage));
  if (!key || !kept || PyDict_SetItem(current->nbytes, key.ptr(), nbytes.ptr()) != 0 ||
      PyList_Append(current->alive, kept.ptr()) != 0) {
    throw pybind11::error_already_set();
  }
}

void recording_fallback(const c10::OperatorHandle& op, c10::DispatchKeySet keys,
                        torch::jit::Stack* stack) {
  const c10::DispatchKeySet below =
      keys & c10::DispatchKeySet(c10::DispatchKeySet::FULL_AFTER, kKey);
  const Fast kind = recorder_alone() ? cached_kind(op) : Fast::kNone;
  if (kind == Fast::kNone ||
      (kind == Fast::kView && !plain_tensors_of_a_view(*stack, op.schema().arguments().size()))) {
    op.redispatchBoxed(below, stack);
    return;
  }
  if (kind == Fast::kView) {
    c10::impl::ExcludeDispatchKeyGuard no_recording(kRecordingKeys);
    op.redispatchBoxed(below - kPythonKeys, stack);
    return;
  }
  // empty(size, *, dtype, layout, device, pin_memory, memory_format), empty_strided(size,
  // stride, *, dtype, layout, device, pin_memory).
  empty_on_meta(op, stack, kind == Fast::kEmpty ? 3 : 2);
}

// start(recorder, nbytes, alive, twins): the fast path on for this thread until stop().
PyObject* start_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 4, "recording_fast_path_start: expected 4 arguments, got ", nargs);
  TORCH_CHECK_TYPE(PyDict_Check(args[1]) && PyList_Check(args[2]) && PyDict_Check(args[3]),
                   "recording_fast_path_start: expected (recorder, dict, list, dict)");
  for (Py_ssize_t i = 0; i < 4; ++i) Py_INCREF(args[i]);
  current = new FastRecording{
      args[0], args[1], args[2], args[3], c10::impl::tls_is_dispatch_key_included(kKey), current};
  c10::impl::tls_set_dispatch_key_included(kKey, true);
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

// stop(recorder): the fast path of the innermost recording, `recorder`'s, off.
PyObject* stop_entry(PyObject*, PyObject* recorder) {
  HANDLE_TH_ERRORS
  TORCH_CHECK(current != nullptr && current->recorder == recorder,
              "recording_fast_path_stop: not the innermost recording of this thread");
  FastRecording* ended = current;
  current = ended->outer;
  c10::impl::tls_set_dispatch_key_included(kKey, ended->key_was_included);
  Py_DECREF(ended->recorder);
  Py_DECREF(ended->nbytes);
  Py_DECREF(ended->alive);
  Py_DECREF(ended->twins);
  delete ended;
  Py_RETURN_NONE;
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"recording_fast_path_start", reinterpret_cast<PyCFunction>(start_entry), METH_FASTCALL,
     "recording_fast_path_start(recorder, nbytes, alive, twins): empty factories and views "
     "taken without Python while `recorder` is the only dispatch mode, on this thread."},
    {"recording_fast_path_stop", stop_entry, METH_O,
     "recording_fast_path_stop(recorder): the fast path of `recorder`'s recording off."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

TORCH_LIBRARY_IMPL(_, DeferredInit, m) {
  m.fallback(torch::CppFunction::makeFromBoxedFunction<&recording_fallback>());
}

namespace torchinit {

PyMethodDef* recording_methods() {
  return methods;
}

}  // namespace torchinit
