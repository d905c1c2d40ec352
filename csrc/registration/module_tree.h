// The methods of the torchinit_ext._C module that walk a module tree (module_tree.cpp).
#pragma once

#include <Python.h>

namespace torchinit {

PyMethodDef* module_tree_methods();

}  // namespace torchinit
