/* The writer's side: `Encoder.encode_into` in C.
 *
 * It takes the records whose line `Encoder.build` (_encoder.py, the reference) makes on its
 * fast path (same checks: a str message, known names, no exception) and writes their line in
 * one of two ways:
 *   - directly, when every value is a str, an int within 64 bits, a float, a bool, None, a
 *     datetime, date, time, UUID, enum member or Decimal, or a value frozen on the caller whose
 *     bytes the redactor could not change: the bytes orjson would write, without building the
 *     line dict;
 *   - else as the Python path does: the same line dict, the same `orjson.dumps` call.
 * Any other record, and any record that raises on the way, goes to the encoder's `encode`, the
 * reference. Tests check that both write `encode`'s bytes.
 */
#include "speedups.h"

#include <datetime.h>
#include <time.h>

/* ---- module state -------------------------------------------------------------------------
 * Process-wide (one interpreter: see module.c), only used with the GIL held. */

/* The line's keys (LINE_KEYS), interned. */
static PyObject *line_key[LINE_KEYS];

/* The latest second's "YYYY-MM-DDTHH:MM:SS." (20 characters), for `format_time`. */
static long long cached_second = -1;
static char cached_prefix[32];

/* Known names' rendered prefixes kept at most (a dict per encoder). */
#define PREFIXES_LIMIT 10000

/* ---- what one call works with --------------------------------------------------------------- */

/* `Redactor.json_rule`, read once per `encode_into` call for `may_mask_json`. The words point
 * into the rule's bytes, which the config holds for the call. */
typedef struct {
    enum { RULE_NEVER, RULE_ALWAYS, RULE_SCAN } kind; /* None; no keys; keys to look for */
    Py_ssize_t brackets;                              /* most `{` and `[` let through */
    Py_ssize_t words;
    const char *word[RULE_WORDS];
    Py_ssize_t length[RULE_WORDS];
    Py_ssize_t keys;
    uint64_t key_words[RULE_WORDS];    /* per key: the bits of its words */
    uint64_t starting[256];            /* per lowercase byte: the words that start with it */
} JsonRule;

/* What one `encode_into` call works with: the EncodeConfig's fields (borrowed from it, which
 * the caller holds), the call's options, and the current record's message. */
typedef struct {
    PyObject *known;       /* field names needing neither renaming nor masking (a set) */
    PyObject *prefixes;    /* known name -> its `,"name":` (a dict, filled as names are met) */
    PyObject *level_names; /* levelno -> name (a dict) */
    PyObject *span_ids;    /* otel context -> (trace_id, span_id) or None */
    PyObject *dumps;       /* orjson.dumps */
    PyObject *default_;    /* its default hook */
    PyObject *options;     /* its options (an int) */
    JsonRule rule;         /* when a frozen value's bytes go in as they are */
    Buffer message;        /* the current record's message, as a JSON string */
} Batch;

/* Which path writes a record's line: the direct one wrote it, or it leaves the line to the
 * dict path (a value it does not write) or to the reference encoder (a name that may need
 * renaming or masking). */
typedef enum { WRITTEN, TO_DICT, TO_ENCODE } Outcome;

/* ---- the redactor's rule ------------------------------------------------------------------- */

/* 0, or -1 with an error set. A rule too big for the bit sets is read as "never". */
static int
read_json_rule(PyObject *rule, JsonRule *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = RULE_NEVER;
    if (rule == Py_None) {
        return 0;
    }
    if (!PyTuple_CheckExact(rule) || PyTuple_GET_SIZE(rule) != 2
        || !PyTuple_CheckExact(PyTuple_GET_ITEM(rule, 1))) {
        PyErr_SetString(PyExc_TypeError, "json_rule must be None or (brackets, keys)");
        return -1;
    }
    PyObject *brackets = PyTuple_GET_ITEM(rule, 0), *keys = PyTuple_GET_ITEM(rule, 1);
    if (brackets == Py_None) {
        out->kind = RULE_ALWAYS;
        return 0;
    }
    if ((out->brackets = PyLong_AsSsize_t(brackets)) == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (PyTuple_GET_SIZE(keys) > RULE_WORDS) {
        return 0;
    }
    for (Py_ssize_t k = 0; k < PyTuple_GET_SIZE(keys); k++) {
        PyObject *words = PyTuple_GET_ITEM(keys, k);
        if (!PyTuple_CheckExact(words)) {
            PyErr_SetString(PyExc_TypeError, "json_rule's keys must be tuples of bytes");
            return -1;
        }
        for (Py_ssize_t w = 0; w < PyTuple_GET_SIZE(words); w++) {
            PyObject *word = PyTuple_GET_ITEM(words, w);
            if (!PyBytes_CheckExact(word) || PyBytes_GET_SIZE(word) == 0) {
                PyErr_SetString(PyExc_TypeError, "json_rule's words must be non-empty bytes");
                return -1;
            }
            if (out->words == RULE_WORDS) {
                return 0; /* too many words: every frozen value is looked at */
            }
            Py_ssize_t n = out->words++;
            out->word[n] = PyBytes_AS_STRING(word);
            out->length[n] = PyBytes_GET_SIZE(word);
            out->key_words[k] |= (uint64_t)1 << n;
            out->starting[(unsigned char)out->word[n][0]] |= (uint64_t)1 << n;
        }
    }
    out->keys = PyTuple_GET_SIZE(keys);
    out->kind = RULE_SCAN;
    return 0;
}

static inline unsigned char
ascii_lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

/* `Redactor.may_mask_json(data)`, a predicate (it cannot fail): whether the redactor could
 * change these bytes. One pass: any non-ASCII byte, the brackets counted, and at each byte the
 * words that start with it (lowercased) compared there. */
static int
may_mask_json(const JsonRule *rule, const char *data, Py_ssize_t size)
{
    if (rule->kind != RULE_SCAN) {
        return rule->kind == RULE_NEVER;
    }
    Py_ssize_t brackets = 0;
    uint64_t found = 0;
    for (Py_ssize_t i = 0; i < size; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 0x80) {
            return 1;
        }
        brackets += c == '{' || c == '[';
        uint64_t candidates = rule->starting[ascii_lower(c)] & ~found;
        while (candidates) {
            int n = __builtin_ctzll(candidates);
            candidates &= candidates - 1;
            Py_ssize_t length = rule->length[n], j = 1;
            if (i + length > size) {
                continue;
            }
            while (j < length
                   && ascii_lower((unsigned char)data[i + j]) == (unsigned char)rule->word[n][j]) {
                j++;
            }
            if (j == length) {
                found |= (uint64_t)1 << n;
            }
        }
    }
    if (brackets > rule->brackets) {
        return 1;
    }
    for (Py_ssize_t k = 0; k < rule->keys; k++) {
        if ((found & rule->key_words[k]) == rule->key_words[k]) {
            return 1;
        }
    }
    return 0;
}

/* ---- values --------------------------------------------------------------------------------
 * As in buffer.h: 0 with `*written` saying whether the value was written (else nothing was,
 * and the dict path writes it), or -1 on error. */

/* A frozen value's bytes, straight into the line when the redactor could not change them;
 * declined otherwise: the dict path decodes and masks them. */
static int
put_frozen(Buffer *buf, PyObject *value, const Batch *batch, int *written)
{
    PyObject *data = ((FrozenObject *)value)->data;
    *written = !may_mask_json(&batch->rule, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    if (!*written) {
        return 0;
    }
    return put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
}

static int
put_value(Buffer *buf, PyObject *value, const Batch *batch, int *written)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyBool_Type
        || value == Py_None) {
        return put_scalar(buf, value, written);
    }
    if (type == &FrozenType) {
        return put_frozen(buf, value, batch, written);
    }
    if (type == &PyFloat_Type || type == PyDateTimeAPI->DateTimeType
        || type == PyDateTimeAPI->DateType || type == PyDateTimeAPI->TimeType
        || (PyObject *)type == UUID_TYPE
        || PyType_IsSubtype(Py_TYPE(type), (PyTypeObject *)ENUM_META)) {
        return put_dumped(buf, value, batch->dumps, written);
    }
    if ((PyObject *)type == DECIMAL_TYPE) { /* as the default hook writes it: str() */
        PyObject *text = PyObject_Str(value);
        if (text == NULL) {
            return -1;
        }
        int result = put_str(buf, text, written);
        Py_DECREF(text);
        return result;
    }
    *written = 0;
    return 0;
}

/* ---- fields ---------------------------------------------------------------------------------- */

/* `*prefix` set to `,"key":` (borrowed from `batch->prefixes`, which keeps each one rendered
 * once) when `key` is a name known to need neither renaming nor masking (an exact str in
 * `batch->known`), else to NULL; 0, or -1 on error. An exact str is hashed and compared without
 * running any Python code; a str subclass could run its own `__hash__`/`__eq__`. */
static int
known_prefix(Batch *batch, PyObject *key, PyObject **prefix)
{
    *prefix = NULL;
    if (!PyUnicode_CheckExact(key)) {
        return 0;
    }
    *prefix = PyDict_GetItemWithError(batch->prefixes, key);
    if (*prefix != NULL) {
        return 0;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int known = PySet_Contains(batch->known, key);
    if (known != 1) {
        return known;
    }
    Buffer rendered = {NULL, 0, 0};
    int written = 0;
    int failed = PUT_LITERAL(&rendered, ",") < 0 || put_str(&rendered, key, &written) < 0
        || (written && PUT_LITERAL(&rendered, ":") < 0);
    PyObject *bytes = !failed && written
        ? PyBytes_FromStringAndSize(rendered.data, rendered.size) : NULL;
    PyMem_Free(rendered.data);
    if (bytes == NULL) {
        /* Lone surrogates (not written): the reference encoder says so. */
        return failed || written ? -1 : 0;
    }
    if (PyDict_GET_SIZE(batch->prefixes) >= PREFIXES_LIMIT) {
        PyDict_Clear(batch->prefixes);
    }
    failed = PyDict_SetItem(batch->prefixes, key, bytes) < 0;
    Py_DECREF(bytes);
    if (failed) {
        return -1;
    }
    *prefix = PyDict_GetItemWithError(batch->prefixes, key);
    return *prefix == NULL ? -1 : 0;
}

/* `,"key":value`, the name checked as it is written (`known_prefix`). A key already written by
 * an earlier mapping is skipped when it holds the very same value (the line dict would keep
 * one, in the first place); any other repeat is left to the dict path. */
static int
put_field(Buffer *buf, PyObject *key, PyObject *value, PyObject *earlier, PyObject *earliest,
          Batch *batch, Outcome *outcome)
{
    PyObject *prefix;
    if (known_prefix(batch, key, &prefix) < 0) {
        return -1;
    }
    if (prefix == NULL) {
        *outcome = TO_ENCODE;
        return 0;
    }
    PyObject *before[2] = {earlier, earliest};
    for (int i = 0; i < 2; i++) {
        if (before[i] == NULL || PyDict_GET_SIZE(before[i]) == 0) {
            continue;
        }
        PyObject *seen = PyDict_GetItemWithError(before[i], key); /* borrowed, compared only */
        if (seen == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (seen != NULL) {
            *outcome = seen == value ? WRITTEN : TO_DICT;
            return 0;
        }
    }
    /* `prefix` is still the dict's: nothing since the lookup could run Python code. */
    int written;
    if (put(buf, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix)) < 0
        || put_value(buf, value, batch, &written) < 0) {
        return -1;
    }
    *outcome = written ? WRITTEN : TO_DICT;
    return 0;
}

/* Each item of `fields` by `put_field`, up to the first it does not write. Key and value are
 * held while the value is written: an enum member's `value` property is Python code. */
static int
put_fields(Buffer *buf, PyObject *fields, PyObject *earlier, PyObject *earliest, Batch *batch,
           Outcome *outcome)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    *outcome = WRITTEN;
    while (*outcome == WRITTEN && PyDict_Next(fields, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int result = put_field(buf, key, value, earlier, earliest, batch, outcome);
        Py_DECREF(key);
        Py_DECREF(value);
        if (result < 0) {
            return -1;
        }
    }
    return 0;
}

/* ---- the message ----------------------------------------------------------------------------- */

/* The JSON string of `template % args` for the common case, `%s` with str or int arguments
 * (the access line's "%s %s %s"), without building the message; declined for anything else
 * (other conversions, other types, a count mismatch), which `%` itself then renders or
 * rejects. */
static int
put_message(Buffer *buf, PyObject *template, PyObject *args, int *written)
{
    *written = 0;
    if (!PyTuple_CheckExact(args) || !PyUnicode_IS_ASCII(template)) {
        return 0;
    }
    const char *text = (const char *)PyUnicode_DATA(template);
    Py_ssize_t size = PyUnicode_GET_LENGTH(template), count = PyTuple_GET_SIZE(args);
    Py_ssize_t start = buf->size, run = 0, used = 0;
    if (PUT_LITERAL(buf, "\"") < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < size; i++) {
        if (text[i] != '%') {
            continue;
        }
        if (put_escaped(buf, text + run, i - run) < 0) {
            goto error;
        }
        char conversion = i + 1 < size ? text[i + 1] : '\0';
        if (conversion == '%') {
            if (PUT_LITERAL(buf, "%") < 0) {
                goto error;
            }
        }
        else if (conversion == 's' && used < count) {
            PyObject *arg = PyTuple_GET_ITEM(args, used++);
            const char *data;
            Py_ssize_t length;
            int done = 0;
            if (PyLong_CheckExact(arg)) {
                if (put_int(buf, arg, &done) < 0) {
                    goto error;
                }
            }
            else {
                if (str_utf8(arg, &data, &length) < 0) {
                    goto error;
                }
                if (data != NULL) {
                    if (put_escaped(buf, data, length) < 0) {
                        goto error;
                    }
                    done = 1;
                }
            }
            if (!done) {
                goto declined;
            }
        }
        else {
            goto declined; /* another conversion, or more than there are arguments */
        }
        run = ++i + 1;
    }
    if (used != count) {
        goto declined;
    }
    if (put_escaped(buf, text + run, size - run) < 0 || PUT_LITERAL(buf, "\"") < 0) {
        goto error;
    }
    *written = 1;
    return 0;
declined:
    buf->size = start;
    return 0;
error:
    buf->size = start;
    return -1;
}

/* The message of a record as a JSON string into `batch->message`: `msg` as it is without
 * arguments, `msg % args` with them (`%s` of str and int written straight, anything else
 * rendered by `%`, whose mismatch raises: `encode` then writes the reason). `*rendered`
 * receives the text when `%` had to build it. Declined (`*written` 0) when the text is not
 * an exact str that encodes as UTF-8. */
static int
render_message(Batch *batch, PyObject *msg, PyObject *args, PyObject **rendered, int *written)
{
    batch->message.size = 0;
    if (args == NULL) {
        return put_str(&batch->message, msg, written);
    }
    if (put_message(&batch->message, msg, args, written) < 0) {
        return -1;
    }
    if (*written) {
        return 0;
    }
    *rendered = PyNumber_Remainder(msg, args);
    return *rendered == NULL ? -1 : put_str(&batch->message, *rendered, written);
}

/* ---- time ---------------------------------------------------------------------------------- */

/* `_line.format_time(created)` into `stamp` (27 characters); 0 if `created` is outside
 * what it writes (a predicate: it cannot fail). */
static int
format_time(double created, char *stamp)
{
    if (!(created >= 0.0 && created < LAST_TIME)) {
        return 0;
    }
    long long whole = (long long)created; /* int(): truncates, as format_time does */
    if (whole != cached_second) {
        time_t t = (time_t)whole;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL
            || strftime(cached_prefix, sizeof(cached_prefix), "%Y-%m-%dT%H:%M:%S.", &tm) != 20) {
            cached_second = -1;
            return 0;
        }
        cached_second = whole;
    }
    long micros = (long)((created - (double)whole) * 1000000.0);
    if (micros < 0 || micros > 999999) {
        return 0;
    }
    memcpy(stamp, cached_prefix, 20);
    for (int i = 25; i >= 20; i--) {
        stamp[i] = (char)('0' + micros % 10);
        micros /= 10;
    }
    stamp[26] = 'Z';
    return 1;
}

/* ---- lines --------------------------------------------------------------------------------- */

/* `*all` set to whether every key of the dict `mapping` is an exact str and known; 0, or -1 on
 * error. `known` holds exact str only (see Encoder._merge_slowly): with exact str keys, hashing
 * and comparing run no Python code, so nothing can change `mapping` while it is walked. A str
 * subclass, whose `__hash__` or `__eq__` could, goes to the fallback. */
static int
all_known(PyObject *known, PyObject *mapping, int *all)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    *all = 1;
    while (*all && PyDict_Next(mapping, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            *all = 0;
            break;
        }
        int found = PySet_Contains(known, key);
        if (found < 0) {
            return -1;
        }
        *all = found;
    }
    return 0;
}

/* The line as the Python path builds it: a dict display, then orjson. */
static PyObject *
dumps_line(Batch *batch, PyObject *stamp, PyObject *level, PyObject *logger, PyObject *message,
           PyObject *ids, PyObject *context, PyObject *bound, PyObject *fields)
{
    PyObject *data = NULL;
    PyObject *line = PyDict_New();
    if (line == NULL || PyDict_SetItem(line, line_key[K_TIME], stamp) < 0
        || PyDict_SetItem(line, line_key[K_LEVEL], level) < 0
        || PyDict_SetItem(line, line_key[K_LOGGER], logger) < 0
        || PyDict_SetItem(line, line_key[K_MESSAGE], message) < 0) {
        goto done;
    }
    if (ids != Py_None
        && (PyDict_SetItem(line, line_key[K_TRACE_ID], PyTuple_GET_ITEM(ids, 0)) < 0
            || PyDict_SetItem(line, line_key[K_SPAN_ID], PyTuple_GET_ITEM(ids, 1)) < 0)) {
        goto done;
    }
    if (PyDict_Update(line, context) < 0 || PyDict_Update(line, bound) < 0
        || PyDict_Update(line, fields) < 0) {
        goto done;
    }
    PyObject *call[3] = {line, batch->default_, batch->options};
    data = PyObject_Vectorcall(batch->dumps, call, 3, NULL);
    if (data != NULL && !PyBytes_Check(data)) {
        Py_CLEAR(data);
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
    }
done:
    Py_XDECREF(line);
    return data;
}

/* The line written directly, or nothing written and `*outcome` naming the path that writes
 * it; 0, or -1 on error (nothing written). What it calls (orjson, for floats, datetimes, UUIDs
 * and enum members) runs none of the record's own code but an enum member's `value`; keys and
 * values are held all the same. */
static int
put_line(Buffer *buf, const char *stamp, PyObject *level, PyObject *logger,
         const Buffer *message, PyObject *ids, PyObject *context, PyObject *bound,
         PyObject *fields, Batch *batch, Outcome *outcome)
{
    Py_ssize_t start = buf->size;
    int level_written = 0, logger_written = 0;
    *outcome = TO_DICT;
    if (PUT_LITERAL(buf, "{\"time\":\"") < 0 || put(buf, stamp, 27) < 0
        || PUT_LITERAL(buf, "\",\"level\":") < 0 || put_str(buf, level, &level_written) < 0) {
        goto error;
    }
    if (!level_written) {
        goto declined;
    }
    if (PUT_LITERAL(buf, ",\"logger\":") < 0 || put_str(buf, logger, &logger_written) < 0) {
        goto error;
    }
    if (!logger_written) {
        goto declined;
    }
    if (PUT_LITERAL(buf, ",\"message\":") < 0 || put(buf, message->data, message->size) < 0) {
        goto error;
    }
    if (ids != Py_None) {
        int trace_written = 0, span_written = 0;
        if (PUT_LITERAL(buf, ",\"trace_id\":") < 0
            || put_str(buf, PyTuple_GET_ITEM(ids, 0), &trace_written) < 0
            || (trace_written && PUT_LITERAL(buf, ",\"span_id\":") < 0)
            || (trace_written && put_str(buf, PyTuple_GET_ITEM(ids, 1), &span_written) < 0)) {
            goto error;
        }
        if (!span_written) {
            goto declined;
        }
    }
    if (put_fields(buf, context, NULL, NULL, batch, outcome) < 0) {
        goto error;
    }
    if (*outcome == WRITTEN && put_fields(buf, bound, context, NULL, batch, outcome) < 0) {
        goto error;
    }
    if (*outcome == WRITTEN && put_fields(buf, fields, bound, context, batch, outcome) < 0) {
        goto error;
    }
    if (*outcome != WRITTEN) {
        goto declined;
    }
    if (PUT_LITERAL(buf, "}\n") < 0) {
        goto error;
    }
    return 0;
declined:
    buf->size = start;
    return 0;
error:
    buf->size = start;
    return -1;
}

/* Write one record's line if the fast path takes it, setting `*written`: 0, or -1 on error
 * (nothing written either way when not taken).
 *
 * What may run Python code (the truth of `args`, `%` rendering with the arguments' own
 * `__str__`, the span ids) runs first, and every object the record lends is held by the record
 * itself, which the caller holds. The name checks and the writing that follow run none, so a
 * value's code cannot change a mapping between its check and its writing. */
static int
encode_record(Batch *batch, Buffer *buf, PyObject *record, int *written)
{
    *written = 0;
    if (!PyTuple_CheckExact(record) || PyTuple_GET_SIZE(record) != RECORD_SIZE) {
        return 0;
    }
    PyObject *created = PyTuple_GET_ITEM(record, F_CREATED);
    PyObject *levelno = PyTuple_GET_ITEM(record, F_LEVELNO);
    PyObject *logger = PyTuple_GET_ITEM(record, F_LOGGER);
    PyObject *msg = PyTuple_GET_ITEM(record, F_MSG);
    PyObject *args = PyTuple_GET_ITEM(record, F_ARGS);
    PyObject *fields = PyTuple_GET_ITEM(record, F_FIELDS);
    PyObject *bound = PyTuple_GET_ITEM(record, F_BOUND);
    PyObject *context = PyTuple_GET_ITEM(record, F_CONTEXT);
    PyObject *otel = PyTuple_GET_ITEM(record, F_OTEL);
    PyObject *exc_info = PyTuple_GET_ITEM(record, F_EXC_INFO);

    if (exc_info != Py_None || !PyUnicode_CheckExact(msg) || !PyDict_CheckExact(fields)
        || !PyFloat_CheckExact(created) || !PyLong_CheckExact(levelno)
        || !PyUnicode_CheckExact(logger) || !PyDict_CheckExact(context)
        || !PyDict_CheckExact(bound)) {
        return 0;
    }
    char stamp[27];
    if (!format_time(PyFloat_AS_DOUBLE(created), stamp)) {
        return 0;
    }
    int result = -1, taken, truth;
    Outcome outcome;
    PyObject *level = NULL, *rendered = NULL, *ids = NULL, *stamp_text = NULL, *data = NULL;
    /* An exact int key in a dict of int keys: the lookup runs no Python code. */
    level = PyDict_GetItemWithError(batch->level_names, levelno);
    if (level == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(level);
    if (!PyUnicode_CheckExact(level)) {
        result = 0;
        goto done;
    }

    /* 1. What may run Python code. */
    if ((truth = PyObject_IsTrue(args)) < 0) {
        goto done;
    }
    /* As in `logging`: empty args leave the message as it is ("100%"). */
    PyObject *given = truth ? args : NULL;
    if (render_message(batch, msg, given, &rendered, &taken) < 0) {
        goto done;
    }
    if (!taken) {
        result = 0;
        goto done;
    }
    if ((truth = PyObject_IsTrue(otel)) < 0) {
        goto done;
    }
    ids = truth ? PyObject_CallOneArg(batch->span_ids, otel) : Py_NewRef(Py_None);
    if (ids == NULL) {
        goto done;
    }
    if (ids != Py_None
        && (!PyTuple_CheckExact(ids) || PyTuple_GET_SIZE(ids) != 2
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(ids, 0))
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(ids, 1)))) {
        PyErr_SetString(PyExc_TypeError, "span ids are not a pair of str");
        goto done;
    }

    /* 2. The writing, each name checked as it is written. */
    if (put_line(buf, stamp, level, logger, &batch->message, ids, context, bound, fields, batch,
                 &outcome) < 0) {
        goto done;
    }
    if (outcome != TO_DICT) {
        /* Written, or a name the reference encoder renames or masks. */
        *written = outcome == WRITTEN;
        result = 0;
        goto done;
    }
    /* The dict path writes every name as it is: all must be known (none ran code since). */
    if (all_known(batch->known, context, &taken) < 0
        || (taken && all_known(batch->known, bound, &taken) < 0)
        || (taken && all_known(batch->known, fields, &taken) < 0)) {
        goto done;
    }
    if (!taken) {
        result = 0;
        goto done;
    }

    /* 3. A value the direct path does not write: the same line as a dict, through orjson.
     * The message is rendered here only if `%s` of str and int wrote it above, which runs no
     * Python code; the dict holds its own references to what the mappings held. */
    if (rendered == NULL) {
        rendered = given ? PyNumber_Remainder(msg, given) : Py_NewRef(msg);
        if (rendered == NULL) {
            goto done;
        }
    }
    stamp_text = PyUnicode_FromStringAndSize(stamp, 27);
    if (stamp_text == NULL) {
        goto done;
    }
    data = dumps_line(batch, stamp_text, level, logger, rendered, ids, context, bound, fields);
    if (data != NULL && put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) == 0) {
        *written = 1;
        result = 0;
    }
done:
    Py_XDECREF(level);
    Py_XDECREF(rendered);
    Py_XDECREF(ids);
    Py_XDECREF(stamp_text);
    Py_XDECREF(data);
    return result;
}

/* Replaces the line at `start` (to the end of `buf`) with what `shorten(line, max_line)`
 * returns. */
static int
shorten_into(Buffer *buf, Py_ssize_t start, Py_ssize_t max_line, PyObject *shorten)
{
    PyObject *line = PyBytes_FromStringAndSize(buf->data + start, buf->size - start);
    if (line == NULL) {
        return -1;
    }
    PyObject *limit = PyLong_FromSsize_t(max_line);
    PyObject *data = limit ? PyObject_CallFunctionObjArgs(shorten, line, limit, NULL) : NULL;
    Py_DECREF(line);
    Py_XDECREF(limit);
    if (data == NULL) {
        return -1;
    }
    int result = -1;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "shorten did not return bytes");
    }
    else {
        buf->size = start;
        result = put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    }
    Py_DECREF(data);
    return result;
}

/* `fallback(record)`'s bytes appended: the reference encoder's line. */
static int
put_fallback(Buffer *buf, PyObject *fallback, PyObject *record)
{
    PyObject *data = PyObject_CallOneArg(fallback, record);
    if (data == NULL) {
        return -1;
    }
    int result = -1;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "fallback did not return bytes");
    }
    else {
        result = put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
    }
    Py_DECREF(data);
    return result;
}

/* ---- encode_into ----------------------------------------------------------------------------- */

const char encode_into_doc[] =
"encode_into(records, buffer, options, config) -> ends\n"
"\n"
"Append the lines of `records` to the bytearray `buffer` as Encoder.encode_into does, and\n"
"return where each ends. `options` are orjson's for this call; `config` is the encoder's\n"
"asynclog._contract.EncodeConfig: `config.fallback(record)` writes the records the fast path\n"
"does not take, `config.shorten(line, max_line)` rewrites a line longer than `max_line`\n"
"bytes, and `config.prefixes` keeps the known names' rendered prefixes.";

PyObject *
encode_into(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    if (argc != 4) {
        PyErr_SetString(PyExc_TypeError, "encode_into takes 4 arguments");
        return NULL;
    }
    PyObject *records = argv[0], *target = argv[1], *config = argv[3];
    if (Py_TYPE(config) != (PyTypeObject *)ENCODE_CONFIG_TYPE) {
        PyErr_SetString(PyExc_TypeError, "encode_into: config must be an EncodeConfig");
        return NULL;
    }
    PyObject *const *field = &PyTuple_GET_ITEM(config, 0);
    PyObject *fallback = field[E_FALLBACK], *shorten = field[E_SHORTEN];
    Py_ssize_t max_line = PyLong_AsSsize_t(field[E_MAX_LINE]);
    if (max_line == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(records) || !PyByteArray_CheckExact(target)
        || !PySet_CheckExact(field[E_KNOWN]) || !PyDict_CheckExact(field[E_PREFIXES])
        || !PyDict_CheckExact(field[E_LEVEL_NAMES])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_into: records, buffer, known, prefixes and level_names must be a "
                        "list, a bytearray, a set, a dict and a dict");
        return NULL;
    }
    Batch batch = {
        .known = field[E_KNOWN], .prefixes = field[E_PREFIXES],
        .level_names = field[E_LEVEL_NAMES], .span_ids = field[E_SPAN_IDS],
        .dumps = field[E_DUMPS], .default_ = field[E_DEFAULT], .options = argv[2],
        .message = {NULL, 0, 0},
    };
    if (read_json_rule(field[E_JSON_RULE], &batch.rule) < 0) {
        return NULL;
    }
    Buffer buf = {NULL, 0, 0};
    Py_ssize_t *line_ends = NULL, lines = 0, capacity = 0;
    PyObject *result = NULL, *ends = NULL;
    /* The fallback runs Python code, which could change `records`: its size is read anew
     * each time and each record is held while it is encoded. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(records, i));
        Py_ssize_t start = buf.size;
        int written;
        if (encode_record(&batch, &buf, record, &written) < 0) {
            /* Whatever the record's own code raised (KeyboardInterrupt included): the
             * reference encoder writes it, substituting what it must. */
            PyErr_Clear();
            written = 0;
        }
        int failed = !written && put_fallback(&buf, fallback, record) < 0;
        Py_DECREF(record);
        if (failed) {
            goto done;
        }
        /* The rare path, shared with the pure-Python encoder: a line over the bound. (The
         * fallback's lines are already bounded: `encode` bounds its own.) */
        if (buf.size - start > max_line && shorten_into(&buf, start, max_line, shorten) < 0) {
            goto done;
        }
        if (lines == capacity) {
            capacity = capacity ? capacity * 2 : 64;
            Py_ssize_t *grown = PyMem_Realloc(line_ends, (size_t)capacity * sizeof(Py_ssize_t));
            if (grown == NULL) {
                PyErr_NoMemory();
                goto done;
            }
            line_ends = grown;
        }
        line_ends[lines++] = buf.size;
    }
    Py_ssize_t offset = PyByteArray_GET_SIZE(target);
    if ((ends = PyList_New(lines)) == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < lines; i++) {
        PyObject *end = PyLong_FromSsize_t(offset + line_ends[i]);
        if (end == NULL) {
            goto done;
        }
        PyList_SET_ITEM(ends, i, end);
    }
    if (buf.size) {
        if (PyByteArray_Resize(target, offset + buf.size) < 0) {
            goto done;
        }
        memcpy(PyByteArray_AS_STRING(target) + offset, buf.data, (size_t)buf.size);
    }
    result = Py_NewRef(ends);
done:
    PyMem_Free(buf.data);
    PyMem_Free(batch.message.data);
    PyMem_Free(line_ends);
    Py_XDECREF(ends);
    return result;
}

/* Interns the line's keys once per process: they are only ever compared and looked up. */
int
encode_init(void)
{
    static const char *const names[LINE_KEYS] = {
#define NAME(id, text) text,
        LINE_KEY_LIST(NAME)
#undef NAME
    };
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL) {
        return -1;
    }
    for (int i = 0; i < LINE_KEYS; i++) {
        if (line_key[i] == NULL && (line_key[i] = PyUnicode_InternFromString(names[i])) == NULL) {
            return -1;
        }
    }
    return 0;
}
