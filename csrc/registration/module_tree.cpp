// One walk of a module tree, in C++: what deferred_init() and materialize() need of it
// (torchinit_ext/_tree.py's Tree, which documents each list). In Python the walk cost 3 to 6 us a
// module, more than recording or replaying a small layer's fills: a tiny diffusers UNet (216
// modules) walked twice spent ~1.9 ms on it, against ~12 ms for stock's whole construction.
#include "module_tree.h"

#include <torch/csrc/Exceptions.h>
#include <torch/csrc/autograd/python_variable.h>
#include <torch/csrc/utils/pybind.h>

#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace {

namespace py = pybind11;

// The holders of one tensor, in the walk's order: the first alone until a second appears.
struct Holders {
  py::object first;  // (module, kind, name)
  py::list group;    // every holder, once the tensor is tied
};

// A dict's items in its iteration order, or a mapping's (keys, then a lookup each) where a
// module's code replaced the dict with another mapping.
template <typename Visit>
void for_each_item(PyObject* mapping, Visit&& visit) {
  if (PyDict_CheckExact(mapping)) {
    Py_ssize_t position = 0;
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    while (PyDict_Next(mapping, &position, &key, &value)) {
      visit(py::reinterpret_borrow<py::object>(key), py::reinterpret_borrow<py::object>(value));
    }
    return;
  }
  for (py::handle key : py::reinterpret_borrow<py::object>(mapping)) {
    visit(py::reinterpret_borrow<py::object>(key),
          py::reinterpret_borrow<py::object>(mapping)[key]);
  }
}

bool is_meta(PyObject* tensor) {
  if (THPVariable_CheckExact(tensor)) return THPVariable_Unpack(tensor).is_meta();
  return py::bool_(py::reinterpret_borrow<py::object>(tensor).attr("is_meta"));
}

// A number, a string or None (exactly those types): no container and no tensor.
bool is_atom(PyObject* value) {
  return value == Py_None || PyLong_CheckExact(value) || PyBool_Check(value) ||
         PyFloat_CheckExact(value) || PyUnicode_CheckExact(value);
}

// Whether every item of a tuple is an atom: a convolution's kernel_size, told at once.
bool all_atoms(PyObject* tuple) {
  for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); ++i) {
    if (!is_atom(PyTuple_GET_ITEM(tuple, i))) return false;
  }
  return true;
}

py::str interned(const char* name) {
  auto str = py::reinterpret_steal<py::str>(PyUnicode_InternFromString(name));
  if (!str) throw py::error_already_set();
  return str;
}

py::str concat(const py::str& a, PyObject* b) {
  auto joined = py::reinterpret_steal<py::str>(PyUnicode_Concat(a.ptr(), b));
  if (!joined) throw py::error_already_set();
  return joined;
}

struct Walk {
  Walk(PyObject* internals, PyObject* holds_tensor)
      : internals(internals), holds_tensor(holds_tensor) {}

  // nn.Module's own attributes, none held; None where the walk skips every other attribute
  PyObject* internals;
  PyObject* holds_tensor;  // _tree.holds_tensor(container) -> bool
  // Interned, as the attribute cache of types asks (a name from a C string misses it, and each
  // lookup walks the class's MRO).
  py::str parameters_kind = interned("_parameters");
  py::str buffers_kind = interned("_buffers");
  py::str dict_name = interned("__dict__");
  py::str modules_name = interned("_modules");
  py::str dot{"."};
  py::list pre_order, post_order, slots, subclassed, held, places;
  py::dict parameters, buffers, names;
  std::unordered_set<PyObject*> seen;
  std::unordered_set<PyObject*> named_ids[2];  // parameters, buffers: each tensor named once
  std::unordered_map<PyObject*, size_t> holder_index;
  std::vector<Holders> holders;
  bool on_meta = false;

  // A tensor held by `module` in `kind` (0: parameters, 1: buffers) as `name`.
  void slot(const py::str& dotted, const py::object& module, int kind, const py::object& name,
            const py::object& holder, const py::object& tensor) {
    const py::str& kind_name = kind == 0 ? parameters_kind : buffers_kind;
    const py::str qualified = concat(dotted, name.ptr());
    py::tuple entry = py::make_tuple(dotted, module, kind_name, name, tensor);
    slots.append(entry);
    places.append(py::make_tuple(qualified, holder, name, tensor));
    PyObject* key = tensor.ptr();
    const auto found = holder_index.find(key);
    py::tuple where = py::make_tuple(module, kind_name, name);
    if (found == holder_index.end()) {
      holder_index.emplace(key, holders.size());
      holders.push_back({where, py::list()});
      names[py::reinterpret_steal<py::object>(PyLong_FromVoidPtr(key))] =
          py::make_tuple(tensor, qualified);
    } else {
      Holders& tied = holders[found->second];
      if (tied.group.empty()) tied.group.append(tied.first);
      tied.group.append(where);
    }
    if (named_ids[kind].insert(key).second) {
      (kind == 0 ? parameters : buffers)[qualified] = tensor;
    }
    on_meta = on_meta || is_meta(key);
    if (!THPVariable_CheckExact(key)) subclassed.append(entry);
  }

  // Whether an attribute that is no parameter, buffer or child may hold tensors: a tensor, a
  // list or dict, a tuple that holds a tensor (a kernel_size of numbers never will).
  bool may_hold(PyObject* value) {
    if (THPVariable_Check(value) || PyList_Check(value) || PyDict_Check(value)) return true;
    if (!PyTuple_Check(value) || all_atoms(value)) return false;
    const int holds = PyObject_IsTrue(py::handle(holds_tensor)(py::handle(value)).ptr());
    if (holds < 0) throw py::error_already_set();
    return holds;
  }

  void visit(const py::object& module, const py::str& prefix) {
    // Python's recursion limit, as a walk in Python has it: a tree too deep raises RecursionError
    // rather than overflowing this thread's stack.
    if (Py_EnterRecursiveCall(" in module_tree")) throw py::error_already_set();
    struct Leave {
      ~Leave() { Py_LeaveRecursiveCall(); }
    } leave;
    seen.insert(module.ptr());
    const py::str dotted = PyUnicode_GET_LENGTH(prefix.ptr()) ? concat(prefix, dot.ptr()) : prefix;
    pre_order.append(py::make_tuple(dotted, module));
    const py::object attributes = module.attr(dict_name);
    for (int kind = 0; kind < 2; ++kind) {
      const py::object holder = attributes[kind == 0 ? parameters_kind : buffers_kind];
      for_each_item(holder.ptr(), [&](const py::object& name, const py::object& tensor) {
        if (!tensor.is_none()) slot(dotted, module, kind, name, holder, tensor);
      });
    }
    if (internals != Py_None) {
      for_each_item(attributes.ptr(), [&](const py::object& name, const py::object& value) {
        // By name first: the names are shared by a class's modules (in the caches), each value
        // is an object of its own (most often out of them, in a tree just built).
        const int internal = PySet_Contains(internals, name.ptr());
        if (internal < 0) throw py::error_already_set();
        if (internal || is_atom(value.ptr()) || !may_hold(value.ptr())) return;
        held.append(py::make_tuple(dotted, module, name));
        if (THPVariable_Check(value.ptr())) {
          places.append(py::make_tuple(concat(dotted, name.ptr()), attributes, name, value));
        }
      });
    }
    const py::object children = module.attr(modules_name);
    for_each_item(children.ptr(), [&](const py::object& name, const py::object& child) {
      if (!child.is_none() && !seen.count(child.ptr())) visit(child, concat(dotted, name.ptr()));
    });
    post_order.append(module);
  }

  py::list tied() const {
    py::list groups;
    for (const Holders& h : holders) {
      if (!h.group.empty()) groups.append(h.group);
    }
    return groups;
  }
};

// module_tree(module, internals, holds_tensor) -> (pre_order, post_order, slots, parameters,
// buffers, names, tied, on_meta, subclassed, held, places).
PyObject* module_tree_entry(PyObject*, PyObject* const* args, Py_ssize_t nargs) {
  HANDLE_TH_ERRORS
  TORCH_CHECK_TYPE(nargs == 3, "module_tree: expected 3 arguments, got ", nargs);
  TORCH_CHECK_TYPE((args[1] == Py_None || PyAnySet_Check(args[1])) && PyCallable_Check(args[2]),
                   "module_tree: expected (module, a set of names or None, a callable)");
  Walk walk(args[1], args[2]);
  walk.visit(py::reinterpret_borrow<py::object>(args[0]), py::str(""));
  return py::make_tuple(walk.pre_order, walk.post_order, walk.slots, walk.parameters, walk.buffers,
                        walk.names, walk.tied(), py::bool_(walk.on_meta), walk.subclassed,
                        walk.held, walk.places)
      .release()
      .ptr();
  END_HANDLE_TH_ERRORS
}

PyMethodDef methods[] = {
    {"module_tree", reinterpret_cast<PyCFunction>(module_tree_entry), METH_FASTCALL,
     "module_tree(module, internals, holds_tensor) -> (pre_order, post_order, slots, "
     "parameters, buffers, names, tied, on_meta, subclassed, held, places): _tree.Tree's "
     "fields."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

namespace torchinit {

PyMethodDef* module_tree_methods() {
  return methods;
}

}  // namespace torchinit
