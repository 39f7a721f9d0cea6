/* What the units of asynclog._speedups share beyond the contract and the buffer: the Frozen
 * type, the types imported at load, and each unit's entry points for module.c. */
#ifndef ASYNCLOG_SPEEDUPS_H
#define ASYNCLOG_SPEEDUPS_H

#include "buffer.h"
#include "contract.h"

/* `Frozen(data)`: the JSON bytes of a mutable value, taken on the caller (capture.c), put in
 * the line as they are by the writer when the redactor could not change them (encode.c). */
typedef struct {
    PyObject_HEAD
    PyObject *data; /* bytes */
} FrozenObject;

extern PyTypeObject FrozenType;
PyObject *new_frozen(PyObject *data);

/* Imported when the module loads (module.c), kept for the life of the process. */
extern PyObject *UUID_TYPE, *ENUM_META, *DECIMAL_TYPE;
extern PyObject *ENCODE_CONFIG_TYPE, *CAPTURE_CONFIG_TYPE; /* asynclog._contract's */

/* encode.c */
int encode_init(void);
PyObject *encode_into(PyObject *module, PyObject *const *argv, Py_ssize_t argc);
extern const char encode_into_doc[];

/* capture.c */
extern PyTypeObject LevelMethodType;
int capture_init(void);
PyObject *make_record(PyObject *module, PyObject *const *argv, Py_ssize_t argc);
extern const char make_record_doc[];

#endif
