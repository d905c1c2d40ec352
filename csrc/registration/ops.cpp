// Every op's schema, declared from the op table (plan/op_table.h), which says what each op does.
// Kernels live per backend (cpu/, cuda/, composite/, and the Meta kernels in meta.cpp).
#include <Python.h>
#include <torch/library.h>

#include <vector>

#include "../plan/op_table.h"
#include "module_tree.h"
#include "python_fast_path.h"
#include "recording.h"

TORCH_LIBRARY(torchinit_ext, m) {
  for (const torchinit::OpSpec& op : torchinit::kOpTable) m.def(op.schema);
}

// `import torchinit_ext._C` loads this library, which registers the ops above; the module holds
// the Python entries of python_fast_path.cpp, recording.cpp and module_tree.cpp.
extern "C" PyObject* PyInit__C(void) {
  static std::vector<PyMethodDef> methods;
  if (methods.empty()) {
    for (PyMethodDef* part : {torchinit::fast_path_methods(), torchinit::recording_methods(),
                              torchinit::module_tree_methods()}) {
      for (; part->ml_name != nullptr; ++part) methods.push_back(*part);
    }
    methods.push_back({nullptr, nullptr, 0, nullptr});
  }
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods.data()};
  return PyModule_Create(&module);
}
