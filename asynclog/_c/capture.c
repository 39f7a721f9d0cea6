/* The caller's side: the level methods of Logger, the snapshot of mutable values (Frozen) and
 * `make_record`.
 *
 * `LevelMethod(level, name, config)` is `_logger._level_method`'s method in C: the same record
 * tuple, put on the same queue, with the same counting and the same wake-up of an idle writer,
 * freezing mutable field values into JSON bytes as `_snapshot` does (tests compare the two
 * captures). What it saves is the Python frame and bytecode of a call that runs on the event
 * loop.
 */
#include "speedups.h"

#include <stddef.h>
#include <time.h>

/* ---- module state -------------------------------------------------------------------------
 * Process-wide (one interpreter: see module.c), only used with the GIL held. */

/* The names read on the queue and the logger (contract.h), and two of Python's, interned. */
static PyObject *queue_attr[QUEUE_ATTRIBUTES], *logger_attr[LOGGER_ATTRIBUTES];
static PyObject *s_append, *s_numpy;

/* Where `dump_plain` writes: reused from call to call (one interpreter, under the GIL, and
 * nothing it calls runs Python code, so no other call can start meanwhile); freed when a big
 * value made it grow past SCRATCH_KEPT. */
static Buffer scratch;
#define SCRATCH_KEPT 65536

/* How deep `dump_plain` follows dicts and lists before it leaves a value to orjson. */
#define PLAIN_DEPTH 32

typedef struct {
    PyObject_HEAD
    long level;
    PyObject *levelno;     /* the level as an int */
    PyObject *name;        /* "info" */
    PyObject *doc;         /* "Log at INFO." */
    /* The CaptureConfig's fields (see asynclog/_contract.py), kept. */
    PyObject *queue;
    PyObject *context_var;
    PyObject *otel_var;
    PyObject *otel_get;
    PyObject *immutable;
    PyObject *dumps;
    PyObject *options;
    PyObject *numpy_options;
    PyObject *snapshot_value;
    PyObject *snapshot_args;
    vectorcallfunc vectorcall;
} LevelMethod;

/* ---- Frozen --------------------------------------------------------------------------------- */

PyObject *
new_frozen(PyObject *data)
{
    FrozenObject *self = PyObject_New(FrozenObject, &FrozenType);
    if (self != NULL) {
        self->data = Py_NewRef(data);
    }
    return (PyObject *)self;
}

static PyObject *
frozen_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"data", NULL};
    PyObject *data;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!:Frozen", names, &PyBytes_Type, &data)) {
        return NULL;
    }
    FrozenObject *self = (FrozenObject *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->data = Py_NewRef(data);
    }
    return (PyObject *)self;
}

static void
frozen_dealloc(FrozenObject *self)
{
    Py_XDECREF(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
frozen_data(FrozenObject *self, void *closure)
{
    return Py_NewRef(self->data);
}

static PyObject *
frozen_repr(FrozenObject *self)
{
    return PyUnicode_FromFormat("Frozen(%R)", self->data);
}

static PyGetSetDef frozen_getset[] = {
    {"data", (getter)frozen_data, NULL, "the value's JSON bytes", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* Holds bytes only, which cannot be part of a cycle: not tracked by the garbage collector. */
PyTypeObject FrozenType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclog._speedups.Frozen",
    .tp_doc = PyDoc_STR("Frozen(data): the JSON bytes of a mutable value, taken on the caller; "
                        "the writer puts them in the line as they are, or decodes and masks "
                        "them."),
    .tp_basicsize = sizeof(FrozenObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = frozen_new,
    .tp_dealloc = (destructor)frozen_dealloc,
    .tp_repr = (reprfunc)frozen_repr,
    .tp_getset = frozen_getset,
};

/* ---- the snapshot of a call's values ------------------------------------------------------- */

/* Whether a call field of this value needs no freezing (1 yes, 0 no, -1 error, as
 * PySet_Contains): its exact type is known to be immutable, or it is an enum member (a
 * constant), whose class is then added to the known ones. */
static int
is_immutable(LevelMethod *self, PyObject *value)
{
    PyObject *type = (PyObject *)Py_TYPE(value);
    if (PyUnicode_CheckExact(value) || PyLong_CheckExact(value) || PyFloat_CheckExact(value)
        || PyBool_Check(value) || value == Py_None) {
        return 1; /* the usual ones, without the set lookup */
    }
    int found = PySet_Contains(self->immutable, type);
    if (found != 0) {
        return found;
    }
    if (!PyType_IsSubtype(Py_TYPE(type), (PyTypeObject *)ENUM_META)) {
        return 0;
    }
    return PySet_Add(self->immutable, type) < 0 ? -1 : 1;
}

/* The bytes orjson writes for `value` (with `OPT_NON_STR_KEYS`), for dicts with exact str
 * keys, lists and tuples of exact strs, ints within 64 bits, bools, None and floats (those
 * through orjson itself), with `*written` 1; anything else is declined (left to orjson). 0, or
 * -1 on error. It spares a small dict an orjson call, which makes a buffer of 1 KB or more
 * and shrinks it (see SMALL_OBJECT). Runs no Python code: exact builtin types only, and orjson
 * for floats. */
static int
dump_plain(Buffer *buf, PyObject *value, PyObject *dumps, int depth, int *written)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyBool_Type
        || value == Py_None) {
        return put_scalar(buf, value, written);
    }
    if (type == &PyFloat_Type) {
        return put_dumped(buf, value, dumps, written);
    }
    *written = 0;
    if (depth >= PLAIN_DEPTH) {
        return 0;
    }
    if (type == &PyDict_Type) {
        Py_ssize_t pos = 0, count = 0;
        PyObject *key, *item;
        if (PUT_LITERAL(buf, "{") < 0) {
            return -1;
        }
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (count++ > 0 && PUT_LITERAL(buf, ",") < 0) {
                return -1;
            }
            if (!PyUnicode_CheckExact(key)) {
                *written = 0;
                return 0;
            }
            if (put_str(buf, key, written) < 0
                || (*written
                    && (PUT_LITERAL(buf, ":") < 0
                        || dump_plain(buf, item, dumps, depth + 1, written) < 0))) {
                return -1;
            }
            if (!*written) {
                return 0;
            }
        }
        *written = 1;
        return PUT_LITERAL(buf, "}");
    }
    if (type == &PyList_Type || type == &PyTuple_Type) {
        PyObject *const *items = PySequence_Fast_ITEMS(value);
        Py_ssize_t size = PySequence_Fast_GET_SIZE(value);
        if (PUT_LITERAL(buf, "[") < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < size; i++) {
            if (i > 0 && PUT_LITERAL(buf, ",") < 0) {
                return -1;
            }
            if (dump_plain(buf, items[i], dumps, depth + 1, written) < 0) {
                return -1;
            }
            if (!*written) {
                return 0;
            }
        }
        *written = 1;
        return PUT_LITERAL(buf, "]");
    }
    return 0;
}

/* `_snapshot.snapshot_value(value)`, its common case in C: a tuple of immutable values as it
 * is, else the JSON bytes orjson makes of it (no default hook: orjson runs no Python code and
 * holds the GIL throughout, so no thread can change the value meanwhile) as a Frozen, plain
 * values written by `dump_plain`. What orjson refuses goes to `snapshot_value`. Returns a new
 * reference. */
static PyObject *
freeze(LevelMethod *self, PyObject *value)
{
    if (PyTuple_CheckExact(value)) {
        int all = 1;
        for (Py_ssize_t i = 0; all == 1 && i < PyTuple_GET_SIZE(value); i++) {
            all = PySet_Contains(self->immutable, (PyObject *)Py_TYPE(PyTuple_GET_ITEM(value, i)));
        }
        if (all < 0) {
            return NULL;
        }
        if (all) {
            return Py_NewRef(value);
        }
    }
    scratch.size = 0;
    int plain = 0;
    int failed = dump_plain(&scratch, value, self->dumps, 0, &plain) < 0;
    PyObject *bytes = !failed && plain
        ? PyBytes_FromStringAndSize(scratch.data, scratch.size) : NULL;
    if (scratch.capacity > SCRATCH_KEPT) {
        PyMem_Free(scratch.data);
        scratch = (Buffer){NULL, 0, 0};
    }
    if (failed || plain) {
        PyObject *frozen = bytes != NULL ? new_frozen(bytes) : NULL;
        Py_XDECREF(bytes);
        return frozen;
    }
    PyObject *numpy = PyDict_GetItemWithError(PyImport_GetModuleDict(), s_numpy);
    if (numpy == NULL && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *call[3] = {value, Py_None, numpy != NULL ? self->numpy_options : self->options};
    PyObject *data = PyObject_Vectorcall(self->dumps, call, 3, NULL);
    /* orjson's output lives in a buffer of 1 KB or more, shrunk in place: a small one is
     * copied so the queue holds no such buffer for it (see SMALL_OBJECT). */
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) <= SMALL_OBJECT) {
        Py_SETREF(data, PyBytes_FromStringAndSize(PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)));
    }
    if (data != NULL) {
        PyObject *frozen = PyBytes_CheckExact(data) ? new_frozen(data) : NULL;
        if (frozen == NULL && !PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
        }
        Py_DECREF(data);
        return frozen;
    }
    if (!PyErr_ExceptionMatches(PyExc_TypeError)) { /* orjson.JSONEncodeError is one */
        return NULL;
    }
    PyErr_Clear();
    return PyObject_CallOneArg(self->snapshot_value, value);
}

/* ---- the record and the queue -------------------------------------------------------------- */

/* time.time() */
static PyObject *
now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) {
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyFloat_FromDouble((double)ts.tv_sec + (double)ts.tv_nsec * 1e-9);
}

/* Whether the queue's `level` is above `level`, so the call logs nothing (1 yes, 0 no, -1
 * error, as PyObject_IsTrue). */
static int
below_queue_level(PyObject *queue, long level)
{
    PyObject *threshold = PyObject_GetAttr(queue, queue_attr[Q_LEVEL]);
    if (threshold == NULL) {
        return -1;
    }
    long value = PyLong_AsLong(threshold);
    Py_DECREF(threshold);
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    return value > level;
}

/* The variable's value (a new reference), or `getter()` when there is no variable. */
static PyObject *
context_value(PyObject *var, PyObject *getter)
{
    if (var == Py_None) {
        return PyObject_CallNoArgs(getter);
    }
    PyObject *value;
    if (PyContextVar_Get(var, NULL, &value) < 0) {
        return NULL;
    }
    if (value == NULL) {
        PyErr_SetObject(PyExc_LookupError, var);
    }
    return value;
}

/* RecordQueue.put(record), inlined as the Python level methods inline it. */
static int
put_record(PyObject *queue, PyObject *record)
{
    PyObject *items = PyObject_GetAttr(queue, queue_attr[Q_ITEMS]);
    if (items == NULL) {
        return -1;
    }
    PyObject *maxsize = PyObject_GetAttr(queue, queue_attr[Q_MAXSIZE]);
    if (maxsize == NULL) {
        Py_DECREF(items);
        return -1;
    }
    Py_ssize_t size = PyObject_Size(items);
    Py_ssize_t limit = PyLong_AsSsize_t(maxsize);
    Py_DECREF(maxsize);
    if (size < 0 || (limit == -1 && PyErr_Occurred())) {
        Py_DECREF(items);
        return -1;
    }
    PyObject *done;
    if (size >= limit) {
        Py_DECREF(items);
        done = PyObject_CallMethodOneArg(queue, queue_attr[Q_OVERFLOW], record);
        Py_XDECREF(done);
        return done == NULL ? -1 : 0;
    }
    done = PyObject_CallMethodOneArg(items, s_append, record);
    Py_DECREF(items);
    if (done == NULL) {
        return -1;
    }
    Py_DECREF(done);
    PyObject *idle = PyObject_GetAttr(queue, queue_attr[Q_IDLE]);
    if (idle == NULL) {
        return -1;
    }
    int asleep = PyObject_IsTrue(idle);
    Py_DECREF(idle);
    if (asleep <= 0) {
        return asleep;
    }
    /* Only the first caller wakes the writer (or replaces a dead one); see RecordQueue. */
    done = PyObject_CallMethodNoArgs(queue, queue_attr[Q_WAKE_WRITER]);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* ---- LevelMethod ----------------------------------------------------------------------------- */

static PyObject *
level_method_call(PyObject *callable, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    LevelMethod *self = (LevelMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%U() missing required argument: 'msg'", self->name);
        return NULL;
    }
    int below = below_queue_level(self->queue, self->level);
    if (below) {
        return below < 0 ? NULL : Py_NewRef(Py_None);
    }
    PyObject *logger = argv[0], *msg = argv[1];
    PyObject *emitted = NULL, *count = NULL, *fields = NULL, *args = NULL, *created = NULL;
    PyObject *name = NULL, *bound = NULL, *context = NULL, *otel = NULL, *record = NULL;
    PyObject *result = NULL;

    if ((fields = PyDict_New()) == NULL) {
        goto done;
    }
    Py_ssize_t nkw = kwnames == NULL ? 0 : PyTuple_GET_SIZE(kwnames);
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *value = argv[nargs + i], *frozen = NULL;
        int immutable = is_immutable(self, value);
        if (immutable < 0 || (!immutable && (frozen = freeze(self, value)) == NULL)) {
            goto done;
        }
        int failed = PyDict_SetItem(fields, PyTuple_GET_ITEM(kwnames, i), frozen ? frozen : value);
        Py_XDECREF(frozen);
        if (failed < 0) {
            goto done;
        }
    }
    if (nargs > 2) {
        PyObject *given = PyTuple_New(nargs - 2);
        if (given == NULL) {
            goto done;
        }
        for (Py_ssize_t i = 2; i < nargs; i++) {
            PyTuple_SET_ITEM(given, i - 2, Py_NewRef(argv[i]));
        }
        args = PyObject_CallOneArg(self->snapshot_args, given);
        Py_DECREF(given);
        if (args == NULL) {
            goto done;
        }
    }
    else {
        args = Py_NewRef(Py_None);
    }
    if ((created = now()) == NULL
        || (name = PyObject_GetAttr(logger, logger_attr[L_NAME])) == NULL
        || (bound = PyObject_GetAttr(logger, logger_attr[L_BOUND])) == NULL
        || (context = context_value(self->context_var, NULL)) == NULL
        || (otel = context_value(self->otel_var, self->otel_get)) == NULL
        || (record = PyTuple_New(RECORD_SIZE)) == NULL) {
        goto done;
    }
    PyObject *items[RECORD_SIZE] = {
        [F_CREATED] = created, [F_LEVELNO] = self->levelno, [F_LOGGER] = name, [F_MSG] = msg,
        [F_ARGS] = args, [F_FIELDS] = fields, [F_BOUND] = bound, [F_CONTEXT] = context,
        [F_OTEL] = otel, [F_EXC_INFO] = Py_None,
    };
    for (int i = 0; i < RECORD_SIZE; i++) {
        PyTuple_SET_ITEM(record, i, Py_NewRef(items[i]));
    }
    PyObject_GC_UnTrack(record); /* see make_record */
    /* Counted once the record exists: a snapshot that raised above left no phantom. */
    if ((emitted = PyObject_GetAttr(self->queue, queue_attr[Q_EMITTED])) == NULL
        || (count = PyIter_Next(emitted)) == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the emitted counter ran out");
        }
        goto done;
    }
    if (put_record(self->queue, record) < 0) {
        goto done;
    }
    result = Py_NewRef(Py_None);
done:
    Py_XDECREF(emitted);
    Py_XDECREF(count);
    Py_XDECREF(fields);
    Py_XDECREF(args);
    Py_XDECREF(created);
    Py_XDECREF(name);
    Py_XDECREF(bound);
    Py_XDECREF(context);
    Py_XDECREF(otel);
    Py_XDECREF(record);
    return result;
}

static PyObject *
level_method_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"level", "name", "config", NULL};
    long level;
    PyObject *name, *config;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "lUO:LevelMethod", names, &level, &name,
                                     &config)) {
        return NULL;
    }
    if (Py_TYPE(config) != (PyTypeObject *)CAPTURE_CONFIG_TYPE) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: config must be a CaptureConfig");
        return NULL;
    }
    PyObject *const *field = &PyTuple_GET_ITEM(config, 0);
    if (!PySet_CheckExact(field[C_IMMUTABLE])) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: immutable must be a set");
        return NULL;
    }
    if (field[C_OTEL_VAR] != Py_None && !PyContextVar_CheckExact(field[C_OTEL_VAR])) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: otel_var must be a ContextVar or None");
        return NULL;
    }
    if (!PyContextVar_CheckExact(field[C_CONTEXT_VAR])) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: context_var must be a ContextVar");
        return NULL;
    }
    LevelMethod *self = (LevelMethod *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->level = level;
    self->vectorcall = level_method_call;
    if ((self->levelno = PyLong_FromLong(level)) == NULL
        || (self->name = PyObject_CallMethod(name, "lower", NULL)) == NULL
        || (self->doc = PyUnicode_FromFormat("Log at %U.", name)) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    self->queue = Py_NewRef(field[C_QUEUE]);
    self->context_var = Py_NewRef(field[C_CONTEXT_VAR]);
    self->otel_var = Py_NewRef(field[C_OTEL_VAR]);
    self->otel_get = Py_NewRef(field[C_OTEL_GET]);
    self->immutable = Py_NewRef(field[C_IMMUTABLE]);
    self->dumps = Py_NewRef(field[C_DUMPS]);
    self->options = Py_NewRef(field[C_OPTIONS]);
    self->numpy_options = Py_NewRef(field[C_NUMPY_OPTIONS]);
    self->snapshot_value = Py_NewRef(field[C_SNAPSHOT_VALUE]);
    self->snapshot_args = Py_NewRef(field[C_SNAPSHOT_ARGS]);
    return (PyObject *)self;
}

static int
level_method_traverse(LevelMethod *self, visitproc visit, void *arg)
{
    Py_VISIT(self->queue);
    Py_VISIT(self->context_var);
    Py_VISIT(self->otel_var);
    Py_VISIT(self->otel_get);
    Py_VISIT(self->immutable);
    Py_VISIT(self->dumps);
    Py_VISIT(self->options);
    Py_VISIT(self->numpy_options);
    Py_VISIT(self->snapshot_value);
    Py_VISIT(self->snapshot_args);
    return 0;
}

static int
level_method_clear(LevelMethod *self)
{
    Py_CLEAR(self->queue);
    Py_CLEAR(self->context_var);
    Py_CLEAR(self->otel_var);
    Py_CLEAR(self->otel_get);
    Py_CLEAR(self->immutable);
    Py_CLEAR(self->dumps);
    Py_CLEAR(self->options);
    Py_CLEAR(self->numpy_options);
    Py_CLEAR(self->snapshot_value);
    Py_CLEAR(self->snapshot_args);
    return 0;
}

static void
level_method_dealloc(LevelMethod *self)
{
    PyObject_GC_UnTrack(self);
    level_method_clear(self);
    Py_XDECREF(self->levelno);
    Py_XDECREF(self->name);
    Py_XDECREF(self->doc);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
level_method_get(PyObject *self, PyObject *obj, PyObject *type)
{
    if (obj == NULL || obj == Py_None) {
        return Py_NewRef(self);
    }
    return PyMethod_New(self, obj);
}

static PyObject *
level_method_repr(LevelMethod *self)
{
    return PyUnicode_FromFormat("<asynclog level method %U>", self->name);
}

static PyObject *
level_method_name(LevelMethod *self, void *closure)
{
    return Py_NewRef(self->name);
}

static PyObject *
level_method_doc(LevelMethod *self, void *closure)
{
    return Py_NewRef(self->doc);
}

static PyGetSetDef level_method_getset[] = {
    {"__name__", (getter)level_method_name, NULL, NULL, NULL},
    {"__qualname__", (getter)level_method_name, NULL, NULL, NULL},
    {"__doc__", (getter)level_method_doc, NULL, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

PyTypeObject LevelMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclog._speedups.LevelMethod",
    .tp_doc = PyDoc_STR("LevelMethod(level, name, config): one level's method of Logger, in "
                        "C; `config` is an asynclog._contract.CaptureConfig."),
    .tp_basicsize = sizeof(LevelMethod),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL
        | Py_TPFLAGS_METHOD_DESCRIPTOR,
    .tp_new = level_method_new,
    .tp_dealloc = (destructor)level_method_dealloc,
    .tp_traverse = (traverseproc)level_method_traverse,
    .tp_clear = (inquiry)level_method_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(LevelMethod, vectorcall),
    .tp_descr_get = level_method_get,
    .tp_repr = (reprfunc)level_method_repr,
    .tp_getset = level_method_getset,
};

/* ---- make_record ----------------------------------------------------------------------------- */

const char make_record_doc[] =
"make_record(created, levelno, logger, msg, args, fields, bound, context, otel, exc_info)\n"
"\n"
"_record.make_record's tuple, untracked by the garbage collector.";

/* A record lives a few milliseconds, in the queue and then a batch, and nothing it holds can
 * refer back to it (nobody else ever sees it), so it can never be part of a cycle: the
 * collector need not walk it. Tracked, each record on the queue would be one more object for
 * every young collection to walk, and records would keep the collections coming. */
PyObject *
make_record(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    if (argc != RECORD_SIZE) {
        PyErr_Format(PyExc_TypeError, "make_record takes %d arguments (%zd given)", RECORD_SIZE,
                     argc);
        return NULL;
    }
    PyObject *record = PyTuple_New(RECORD_SIZE);
    if (record == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < RECORD_SIZE; i++) {
        PyTuple_SET_ITEM(record, i, Py_NewRef(argv[i]));
    }
    PyObject_GC_UnTrack(record);
    return record;
}

/* Interns the names once per process: they are only ever compared and looked up. */
int
capture_init(void)
{
    static const char *const queue_names[QUEUE_ATTRIBUTES] = {
#define NAME(id, text) text,
        QUEUE_ATTRIBUTE_LIST(NAME)
    };
    static const char *const logger_names[LOGGER_ATTRIBUTES] = {LOGGER_ATTRIBUTE_LIST(NAME)};
#undef NAME
    for (int i = 0; i < QUEUE_ATTRIBUTES; i++) {
        if (queue_attr[i] == NULL
            && (queue_attr[i] = PyUnicode_InternFromString(queue_names[i])) == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < LOGGER_ATTRIBUTES; i++) {
        if (logger_attr[i] == NULL
            && (logger_attr[i] = PyUnicode_InternFromString(logger_names[i])) == NULL) {
            return -1;
        }
    }
    if ((s_append == NULL && (s_append = PyUnicode_InternFromString("append")) == NULL)
        || (s_numpy == NULL && (s_numpy = PyUnicode_InternFromString("numpy")) == NULL)) {
        return -1;
    }
    return 0;
}
