/* asynclog._speedups: the module, its set-up, and the load-time check of the contract.
 *
 * The units: encode.c (the writer's side), capture.c (the caller's side), with buffer.h (the
 * output buffer and JSON scalars) and contract.h (what C assumes about the Python side). */
#include "speedups.h"

/* ---- module state -------------------------------------------------------------------------
 * Imported when the module loads and kept for the life of the process. */
PyObject *UUID_TYPE, *ENUM_META, *DECIMAL_TYPE;
PyObject *ENCODE_CONFIG_TYPE, *CAPTURE_CONFIG_TYPE;

#define NAME(id, text) text,
static const char *const record_fields[] = {RECORD_FIELD_LIST(NAME)};
static const char *const queue_attributes[] = {QUEUE_ATTRIBUTE_LIST(NAME)};
static const char *const logger_attributes[] = {LOGGER_ATTRIBUTE_LIST(NAME)};
static const char *const line_keys[] = {LINE_KEY_LIST(NAME)};
static const char *const encode_config[] = {ENCODE_CONFIG_LIST(NAME)};
static const char *const capture_config[] = {CAPTURE_CONFIG_LIST(NAME)};
#undef NAME

/* ---- the contract -------------------------------------------------------------------------- */

static PyObject *
names_tuple(const char *const *names, Py_ssize_t count)
{
    PyObject *tuple = PyTuple_New(count);
    for (Py_ssize_t i = 0; tuple != NULL && i < count; i++) {
        PyObject *name = PyUnicode_FromString(names[i]);
        if (name == NULL) {
            Py_CLEAR(tuple);
            break;
        }
        PyTuple_SET_ITEM(tuple, i, name);
    }
    return tuple;
}

/* `contract[key] = value`, stealing `value`. */
static int
add_term(PyObject *contract, const char *key, PyObject *value)
{
    int result = value == NULL ? -1 : PyDict_SetItemString(contract, key, value);
    Py_XDECREF(value);
    return result;
}

/* The compiled-in contract, as asynclog._contract spells it (a configuration class by its
 * `_fields`). */
static PyObject *
our_contract(void)
{
#define NAMES(array) names_tuple(array, (Py_ssize_t)(sizeof(array) / sizeof(array[0])))
    PyObject *contract = PyDict_New();
    if (contract == NULL || add_term(contract, "RECORD_FIELDS", NAMES(record_fields)) < 0
        || add_term(contract, "RULE_WORDS", PyLong_FromLong(RULE_WORDS)) < 0
        || add_term(contract, "SMALL_OBJECT", PyLong_FromLong(SMALL_OBJECT)) < 0
        || add_term(contract, "LAST_TIME", PyFloat_FromDouble(LAST_TIME)) < 0
        || add_term(contract, "QUEUE_ATTRIBUTES", NAMES(queue_attributes)) < 0
        || add_term(contract, "LOGGER_ATTRIBUTES", NAMES(logger_attributes)) < 0
        || add_term(contract, "LINE_KEYS", NAMES(line_keys)) < 0
        || add_term(contract, "EncodeConfig", NAMES(encode_config)) < 0
        || add_term(contract, "CaptureConfig", NAMES(capture_config)) < 0) {
        Py_XDECREF(contract);
        return NULL;
    }
#undef NAMES
    return contract;
}

/* `module.name` as a type, kept for the life of the process. */
static int
import_type(PyObject **target, PyObject *module, const char *name)
{
    if (*target != NULL) {
        return 0;
    }
    *target = PyObject_GetAttrString(module, name);
    if (*target != NULL && !PyType_Check(*target)) {
        PyErr_Format(PyExc_ImportError, "%S.%s is not a type", module, name);
        Py_CLEAR(*target);
    }
    return *target == NULL ? -1 : 0;
}

static int
import_module_type(PyObject **target, const char *module, const char *name)
{
    if (*target != NULL) {
        return 0;
    }
    PyObject *imported = PyImport_ImportModule(module);
    if (imported == NULL) {
        return -1;
    }
    int result = import_type(target, imported, name);
    Py_DECREF(imported);
    return result;
}

/* The compiled-in contract against asynclog._contract's: ImportError naming the first
 * difference. Adds it to the module as CONTRACT (and RECORD_FIELDS, the layout). */
static int
check_contract(PyObject *mod)
{
    PyObject *ours = our_contract();
    if (ours == NULL || PyModule_AddObjectRef(mod, "CONTRACT", ours) < 0
        || PyModule_AddObjectRef(mod, "RECORD_FIELDS",
                                 PyDict_GetItemString(ours, "RECORD_FIELDS")) < 0) {
        Py_XDECREF(ours);
        return -1;
    }
    PyObject *declared = PyImport_ImportModule("asynclog._contract");
    if (declared == NULL || import_type(&ENCODE_CONFIG_TYPE, declared, "EncodeConfig") < 0
        || import_type(&CAPTURE_CONFIG_TYPE, declared, "CaptureConfig") < 0) {
        Py_XDECREF(declared);
        Py_DECREF(ours);
        return -1;
    }
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int same = 1;
    while (same == 1 && PyDict_Next(ours, &pos, &key, &value)) {
        PyObject *theirs = PyObject_GetAttr(declared, key);
        if (theirs != NULL && PyType_Check(theirs)) {
            Py_SETREF(theirs, PyObject_GetAttrString(theirs, "_fields"));
        }
        if (theirs == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Format(PyExc_ImportError,
                             "asynclog._speedups was built for %U = %R, but asynclog._contract "
                             "has no %U: rebuild the extension (pip install again)",
                             key, value, key);
            }
            same = -1;
            break;
        }
        same = PyObject_RichCompareBool(value, theirs, Py_EQ);
        if (same == 1 && !Py_IS_TYPE(value, Py_TYPE(theirs))) {
            same = 0; /* 64 == 64.0: the types must agree too */
        }
        if (same == 0) {
            const char *what = PyUnicode_CompareWithASCIIString(key, "RECORD_FIELDS") == 0
                ? "the record layout " : "";
            PyErr_Format(PyExc_ImportError,
                         "asynclog._speedups was built for %s%U = %R, but asynclog._contract "
                         "declares %R: rebuild the extension (pip install again)",
                         what, key, value, theirs);
        }
        Py_DECREF(theirs);
    }
    Py_DECREF(declared);
    Py_DECREF(ours);
    return same == 1 ? 0 : -1;
}

/* ---- the module ---------------------------------------------------------------------------- */

static PyMethodDef methods[] = {
    {"encode_into", (PyCFunction)(void (*)(void))encode_into, METH_FASTCALL, encode_into_doc},
    {"make_record", (PyCFunction)(void (*)(void))make_record, METH_FASTCALL, make_record_doc},
    {NULL, NULL, 0, NULL},
};

static int
speedups_exec(PyObject *mod)
{
    if (encode_init() < 0 || capture_init() < 0
        || import_module_type(&UUID_TYPE, "uuid", "UUID") < 0
        || import_module_type(&ENUM_META, "enum", "EnumMeta") < 0
        || import_module_type(&DECIMAL_TYPE, "decimal", "Decimal") < 0
        || PyType_Ready(&LevelMethodType) < 0 || PyType_Ready(&FrozenType) < 0
        || PyModule_AddObjectRef(mod, "LevelMethod", (PyObject *)&LevelMethodType) < 0
        || PyModule_AddObjectRef(mod, "Frozen", (PyObject *)&FrozenType) < 0) {
        return -1;
    }
    return check_contract(mod);
}

static PyModuleDef_Slot slots[] = {
    {Py_mod_exec, speedups_exec},
#ifdef Py_mod_multiple_interpreters
    /* One static type and process-wide caches: one interpreter only. */
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
#ifdef Py_mod_gil
    /* The GIL is relied on, as the Python code relies on it: the level methods' check-then-
     * append on the queue, the time-stamp cache, the encoder's caches. On a free-threaded
     * build, importing this module turns the GIL back on (with a RuntimeWarning); set
     * ASYNCLOG_NO_EXTENSIONS=1 there to keep it off and run the pure-Python path. */
    {Py_mod_gil, Py_MOD_GIL_USED},
#endif
    {0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "asynclog._speedups",
    .m_doc = "The hot paths in C, the writer's and the caller's (optional: asynclog writes "
             "the same bytes without it).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module);
}
