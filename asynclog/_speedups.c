/* The hot paths in C: the writer's `Encoder.encode_into` and the caller's level methods.
 *
 * The batch encoder takes the records the pure-Python fast path in _encoder.py takes (same
 * checks) and writes their line in one of two ways:
 *   - directly, when every value is a str, an int within 64 bits, a float, a bool, None, a
 *     datetime, date, time, UUID, enum member or Decimal, or a value frozen on the caller whose
 *     bytes the redactor could not change: the bytes orjson would write, without building the
 *     line dict;
 *   - else as the Python path does: the same line dict, the same `orjson.dumps` call.
 * Any other record, and any record that raises on the way, goes to the encoder's `encode`, the
 * reference. Tests check that all three write `encode`'s bytes.
 *
 * The level methods (`LevelMethod`) capture the record tuple `_logger` captures, freezing
 * mutable field values into JSON bytes as `_snapshot` does; tests compare the two captures.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <datetime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---- the record ---------------------------------------------------------------------------
 * The captured tuple's layout, as asynclog/_record.py defines it. The module checks it against
 * `_record.RECORD_FIELDS` when it loads and refuses to load on a difference, so a stale build
 * can never read one field as another: the pure-Python path runs instead. */

enum {
    F_CREATED, F_LEVELNO, F_LOGGER, F_MSG, F_ARGS, F_FIELDS, F_BOUND, F_CONTEXT, F_OTEL,
    F_EXC_INFO, RECORD_SIZE
};

static const char *const RECORD_FIELDS[RECORD_SIZE] = {
    "created", "levelno", "logger", "msg", "args", "fields", "bound", "context", "otel",
    "exc_info",
};

/* ---- output buffer ------------------------------------------------------------------------ */

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

static int
reserve(Buffer *buf, Py_ssize_t extra)
{
    if (buf->size + extra <= buf->capacity) {
        return 0;
    }
    Py_ssize_t capacity = buf->capacity ? buf->capacity : 16384;
    while (capacity < buf->size + extra) {
        if (capacity > PY_SSIZE_T_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        capacity *= 2;
    }
    char *data = PyMem_Realloc(buf->data, (size_t)capacity);
    if (data == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    buf->data = data;
    buf->capacity = capacity;
    return 0;
}

static int
put(Buffer *buf, const char *data, Py_ssize_t size)
{
    if (reserve(buf, size) < 0) {
        return -1;
    }
    memcpy(buf->data + buf->size, data, (size_t)size);
    buf->size += size;
    return 0;
}

#define PUT_LITERAL(buf, text) put((buf), (text), (Py_ssize_t)(sizeof(text) - 1))

/* ---- values, as orjson writes them ---------------------------------------------------------
 * Each writer returns 1 when it wrote the value, 0 when it leaves the value to orjson (nothing
 * written, no error set), -1 on error. */

static const char HEX[] = "0123456789abcdef";

/* Whether any of the 8 bytes in `word` is below 0x20, '"' or '\\' (the bytes JSON escapes). */
static inline int
needs_escape(uint64_t word)
{
    const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
    uint64_t quote = word ^ (ones * '"'), backslash = word ^ (ones * '\\');
    uint64_t found = (word - ones * 0x20) | (quote - ones) | (backslash - ones);
    /* A byte with its high bit set (UTF-8) never needs escaping: mask it out. */
    return (found & ~word & highs) != 0;
}

/* The first index from which `data` may need escaping (`size` if none does). */
static Py_ssize_t
plain_prefix(const char *data, Py_ssize_t size)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= size; i += 8) {
        uint64_t word;
        memcpy(&word, data + i, 8);
        if (needs_escape(word)) {
            break;
        }
    }
    for (; i < size; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            break;
        }
    }
    return i;
}

/* The UTF-8 of an exact str: 1 with `data` and `size` set, 0 for anything else (a subclass,
 * lone surrogates: left to orjson, which refuses them, and the fallback says so), -1 on error. */
static int
str_utf8(PyObject *text, const char **data, Py_ssize_t *size)
{
    if (!PyUnicode_CheckExact(text)) {
        return 0;
    }
    if (PyUnicode_IS_ASCII(text)) {
        *data = (const char *)PyUnicode_DATA(text);
        *size = PyUnicode_GET_LENGTH(text);
        return 1;
    }
    *data = PyUnicode_AsUTF8AndSize(text, size);
    if (*data != NULL) {
        return 1;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

/* UTF-8 `data` escaped as in a JSON string, without the quotes. */
static int
put_escaped(Buffer *buf, const char *data, Py_ssize_t size)
{
    Py_ssize_t plain = plain_prefix(data, size);
    Py_ssize_t extra = 0;
    for (Py_ssize_t i = plain; i < size; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c < 0x20 || c == '"' || c == '\\') {
            extra += (c == '"' || c == '\\' || c == '\b' || c == '\t' || c == '\n' || c == '\f'
                      || c == '\r') ? 1 : 5;
        }
    }
    if (reserve(buf, size + extra) < 0) {
        return -1;
    }
    char *out = buf->data + buf->size;
    memcpy(out, data, (size_t)plain);
    out += plain;
    for (Py_ssize_t i = plain; i < size; i++) {
        unsigned char c = (unsigned char)data[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            *out++ = (char)c;
            continue;
        }
        *out++ = '\\';
        switch (c) {
            case '"': *out++ = '"'; break;
            case '\\': *out++ = '\\'; break;
            case '\b': *out++ = 'b'; break;
            case '\t': *out++ = 't'; break;
            case '\n': *out++ = 'n'; break;
            case '\f': *out++ = 'f'; break;
            case '\r': *out++ = 'r'; break;
            default:
                *out++ = 'u';
                *out++ = '0';
                *out++ = '0';
                *out++ = HEX[c >> 4];
                *out++ = HEX[c & 0xF];
        }
    }
    buf->size = out - buf->data;
    return 0;
}

static int
put_str(Buffer *buf, PyObject *text)
{
    const char *data;
    Py_ssize_t size;
    int ok = str_utf8(text, &data, &size);
    if (ok != 1) {
        return ok;
    }
    if (PUT_LITERAL(buf, "\"") < 0 || put_escaped(buf, data, size) < 0
        || PUT_LITERAL(buf, "\"") < 0) {
        return -1;
    }
    return 1;
}

/* An exact int within 64 bits in decimal (as orjson and str() write it); 0 for larger ones
 * (orjson writes up to 2**64 - 1 and refuses the rest). */
static int
put_int(Buffer *buf, PyObject *number)
{
    int overflow;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    if (overflow) {
        return 0;
    }
    if (value == -1 && PyErr_Occurred()) {
        return -1;
    }
    char digits[24];
    char *end = digits + sizeof(digits), *p = end;
    unsigned long long magnitude = value < 0 ? 0ULL - (unsigned long long)value
                                             : (unsigned long long)value;
    do {
        *--p = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude);
    if (value < 0) {
        *--p = '-';
    }
    return put(buf, p, end - p) < 0 ? -1 : 1;
}

/* `Redactor.json_rule`, read once per `encode_into` call for `may_mask_json`. The words point
 * into the rule's bytes, which the caller holds for the call. */
#define RULE_WORDS 64

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

/* `Redactor.may_mask_json(data)`: 1 yes, 0 no. One pass: any non-ASCII byte, the brackets
 * counted, and at each byte the words that start with it (lowercased) compared there. */
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

/* Known names' rendered prefixes kept at most (a dict per encoder). */
#define PREFIXES_LIMIT 10000

/* What one `encode_into` call works with. */
typedef struct {
    PyObject *known;       /* field names needing neither renaming nor masking (a set) */
    PyObject *level_names; /* levelno -> name (a dict) */
    PyObject *span_ids;    /* otel context -> (trace_id, span_id) or None */
    PyObject *dumps;       /* orjson.dumps */
    PyObject *default_;    /* its default hook */
    PyObject *options;     /* its options (an int) */
    JsonRule *rule;        /* Redactor.json_rule: when a frozen value's bytes go in as they are */
    PyObject *prefixes;    /* known name -> its `,"name":` (a dict, filled as names are met) */
    Buffer message;        /* the current record's message, as a JSON string */
} Job;

/* A value as orjson writes it inside a line, written by orjson itself: floats (shortest round
 * trip; NaN and infinities as null: repr() differs in exponents, and CPython's dtoa is ~4x
 * slower), datetimes, dates, times, UUIDs and enum members. No default hook: a value orjson
 * does not write by itself (an enum member whose value it cannot write) is left to the dict
 * path (0), which calls the hook. */
static int
put_dumped(Buffer *buf, PyObject *value, PyObject *dumps)
{
    PyObject *data = PyObject_Vectorcall(dumps, &value, 1, NULL);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) { /* orjson.JSONEncodeError */
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int result = PyBytes_Check(data)
        ? (put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) < 0 ? -1 : 1)
        : 0;
    Py_DECREF(data);
    return result;
}

/* ---- frozen values --------------------------------------------------------------------------
 * `Frozen(data)`: the JSON bytes of a mutable value, taken on the caller (`_snapshot`). */

typedef struct {
    PyObject_HEAD
    PyObject *data; /* bytes */
} FrozenObject;

static PyTypeObject FrozenType;

static PyObject *
new_frozen(PyObject *data)
{
    FrozenObject *self = PyObject_New(FrozenObject, &FrozenType);
    if (self != NULL) {
        self->data = Py_NewRef(data);
    }
    return (PyObject *)self;
}

/* Its bytes straight into the line when the redactor could not change them (1), else 0: the
 * dict path decodes and masks it. */
static int
put_frozen(Buffer *buf, PyObject *value, Job *job)
{
    PyObject *data = ((FrozenObject *)value)->data;
    if (may_mask_json(job->rule, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))) {
        return 0;
    }
    return put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) < 0 ? -1 : 1;
}

/* Types imported when the module loads. */
static PyObject *UUID_TYPE, *ENUM_META, *DECIMAL_TYPE;

/* An exact str, an int within 64 bits, None, True or False (1), else 0: nothing written. */
static int
put_scalar(Buffer *buf, PyObject *value)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type) {
        return put_str(buf, value);
    }
    if (type == &PyLong_Type) {
        return put_int(buf, value);
    }
    if (value == Py_None) {
        return PUT_LITERAL(buf, "null") < 0 ? -1 : 1;
    }
    if (value == Py_True) {
        return PUT_LITERAL(buf, "true") < 0 ? -1 : 1;
    }
    if (value == Py_False) {
        return PUT_LITERAL(buf, "false") < 0 ? -1 : 1;
    }
    return 0;
}

static int
put_value(Buffer *buf, PyObject *value, Job *job)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyBool_Type
        || value == Py_None) {
        return put_scalar(buf, value);
    }
    if (type == &FrozenType) {
        return put_frozen(buf, value, job);
    }
    if (type == &PyFloat_Type || type == PyDateTimeAPI->DateTimeType
        || type == PyDateTimeAPI->DateType || type == PyDateTimeAPI->TimeType
        || (PyObject *)type == UUID_TYPE
        || PyType_IsSubtype(Py_TYPE(type), (PyTypeObject *)ENUM_META)) {
        return put_dumped(buf, value, job->dumps);
    }
    if ((PyObject *)type == DECIMAL_TYPE) { /* as the default hook writes it: str() */
        PyObject *text = PyObject_Str(value);
        if (text == NULL) {
            return -1;
        }
        int done = put_str(buf, text);
        Py_DECREF(text);
        return done;
    }
    return 0;
}

/* `,"key":value` for each item of `fields`, each name checked as it is written (`known_prefix`).
 * A key already written by an earlier mapping is skipped when it holds the very same value
 * (the line dict would keep one, in the first place); any other repeat is left to the dict
 * path. Key and value are held while the value is written: an enum member's `value` property
 * is Python code. */
/* A name the direct path does not write: the record goes to the reference encoder. */
#define NOT_KNOWN 2

/* Whether `key` is a name known to need neither renaming nor masking (an exact str in
 * `job->known`): 1 with `*prefix` its `,"key":` (borrowed from `job->prefixes`, which keeps
 * each one rendered once), NOT_KNOWN, or -1 on error. An exact str is hashed and compared
 * without running any Python code; a str subclass could run its own `__hash__`/`__eq__`. */
static int
known_prefix(Job *job, PyObject *key, PyObject **prefix)
{
    if (!PyUnicode_CheckExact(key)) {
        return NOT_KNOWN;
    }
    *prefix = PyDict_GetItemWithError(job->prefixes, key);
    if (*prefix != NULL) {
        return 1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    int known = PySet_Contains(job->known, key);
    if (known != 1) {
        return known < 0 ? -1 : NOT_KNOWN;
    }
    Buffer rendered = {NULL, 0, 0};
    int done = PUT_LITERAL(&rendered, ",") < 0 ? -1 : put_str(&rendered, key);
    if (done == 1 && PUT_LITERAL(&rendered, ":") < 0) {
        done = -1;
    }
    PyObject *bytes = done == 1 ? PyBytes_FromStringAndSize(rendered.data, rendered.size) : NULL;
    PyMem_Free(rendered.data);
    if (bytes == NULL) {
        return done == 1 ? -1 : NOT_KNOWN; /* lone surrogates: the reference encoder says so */
    }
    if (PyDict_GET_SIZE(job->prefixes) >= PREFIXES_LIMIT) {
        PyDict_Clear(job->prefixes);
    }
    done = PyDict_SetItem(job->prefixes, key, bytes);
    Py_DECREF(bytes);
    if (done < 0) {
        return -1;
    }
    *prefix = PyDict_GetItemWithError(job->prefixes, key);
    return *prefix == NULL ? -1 : 1;
}

static int
put_field(Buffer *buf, PyObject *key, PyObject *value, PyObject *earlier, PyObject *earliest,
          Job *job)
{
    PyObject *prefix;
    int done = known_prefix(job, key, &prefix);
    if (done != 1) {
        return done;
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
            return seen == value ? 1 : 0;
        }
    }
    /* `prefix` is still the dict's: nothing since the lookup could run Python code. */
    if (put(buf, PyBytes_AS_STRING(prefix), PyBytes_GET_SIZE(prefix)) < 0) {
        return -1;
    }
    return put_value(buf, value, job);
}

static int
put_fields(Buffer *buf, PyObject *fields, PyObject *earlier, PyObject *earliest, Job *job)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(fields, &pos, &key, &value)) {
        Py_INCREF(key);
        Py_INCREF(value);
        int done = put_field(buf, key, value, earlier, earliest, job);
        Py_DECREF(key);
        Py_DECREF(value);
        if (done != 1) {
            return done;
        }
    }
    return 1;
}

/* The JSON string of `template % args` for the common case, `%s` with str or int arguments
 * (the access line's "%s %s %s"), without building the message; 0 for anything else (other
 * conversions, other types, a count mismatch), which `%` itself then renders or rejects. */
static int
put_message(Buffer *buf, PyObject *template, PyObject *args)
{
    if (!PyTuple_CheckExact(args) || !PyUnicode_IS_ASCII(template)) {
        return 0;
    }
    const char *text = (const char *)PyUnicode_DATA(template);
    Py_ssize_t size = PyUnicode_GET_LENGTH(template), count = PyTuple_GET_SIZE(args);
    Py_ssize_t start = buf->size, run = 0, used = 0;
    int done = 0;
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
            if (PyLong_CheckExact(arg)) {
                done = put_int(buf, arg);
            }
            else if ((done = str_utf8(arg, &data, &length)) == 1) {
                done = put_escaped(buf, data, length) < 0 ? -1 : 1;
            }
            if (done != 1) {
                goto stop;
            }
        }
        else {
            done = 0; /* another conversion, or more than there are arguments */
            goto stop;
        }
        run = ++i + 1;
    }
    if (used != count || put_escaped(buf, text + run, size - run) < 0
        || PUT_LITERAL(buf, "\"") < 0) {
        done = used != count ? 0 : -1;
        goto stop;
    }
    return 1;
error:
    done = -1;
stop:
    buf->size = start;
    return done;
}

/* ---- time ---------------------------------------------------------------------------------- */

/* The latest second's "YYYY-MM-DDTHH:MM:SS." (20 characters). Only used with the GIL held. */
static long long cached_second = -1;
static char cached_prefix[32];

/* time.time() values from 1970 to the end of year 9999: "%Y" is 4 digits there. */
#define MAX_CREATED 253402300800.0

/* `_encoder.format_time(created)` into `stamp` (27 characters); 0 if it cannot. */
static int
format_time(double created, char *stamp)
{
    if (!(created >= 0.0 && created < MAX_CREATED)) {
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

static PyObject *KEY_TIME, *KEY_LEVEL, *KEY_LOGGER, *KEY_MESSAGE, *KEY_TRACE_ID, *KEY_SPAN_ID;

/* 1 if every key of the dict `mapping` is an exact str and known, 0 if not, -1 on error.
 * `known` holds exact str only (see Encoder._merge_slowly): with exact str keys, hashing and
 * comparing run no Python code, so nothing can change `mapping` while it is walked. A str
 * subclass, whose `__hash__` or `__eq__` could, goes to the fallback. */
static int
all_known(PyObject *known, PyObject *mapping)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(mapping, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            return 0;
        }
        int found = PySet_Contains(known, key);
        if (found != 1) {
            return found;
        }
    }
    return 1;
}

/* The line as the Python path builds it: a dict display, then orjson. */
static PyObject *
dumps_line(Job *job, PyObject *stamp, PyObject *level, PyObject *logger, PyObject *message,
           PyObject *ids, PyObject *context, PyObject *bound, PyObject *fields)
{
    PyObject *data = NULL;
    PyObject *line = PyDict_New();
    if (line == NULL || PyDict_SetItem(line, KEY_TIME, stamp) < 0
        || PyDict_SetItem(line, KEY_LEVEL, level) < 0
        || PyDict_SetItem(line, KEY_LOGGER, logger) < 0
        || PyDict_SetItem(line, KEY_MESSAGE, message) < 0) {
        goto done;
    }
    if (ids != Py_None
        && (PyDict_SetItem(line, KEY_TRACE_ID, PyTuple_GET_ITEM(ids, 0)) < 0
            || PyDict_SetItem(line, KEY_SPAN_ID, PyTuple_GET_ITEM(ids, 1)) < 0)) {
        goto done;
    }
    if (PyDict_Update(line, context) < 0 || PyDict_Update(line, bound) < 0
        || PyDict_Update(line, fields) < 0) {
        goto done;
    }
    PyObject *call[3] = {line, job->default_, job->options};
    data = PyObject_Vectorcall(job->dumps, call, 3, NULL);
    if (data != NULL && !PyBytes_Check(data)) {
        Py_CLEAR(data);
        PyErr_SetString(PyExc_TypeError, "dumps did not return bytes");
    }
done:
    Py_XDECREF(line);
    return data;
}

/* The line written directly: 1 written, 0 left to the dict path (nothing written), -1 error.
 * What it calls (orjson, for floats, datetimes, UUIDs and enum members) runs none of the
 * record's own code but an enum member's `value`; keys and values are held all the same. */
static int
put_line(Buffer *buf, const char *stamp, PyObject *level, PyObject *logger,
         const Buffer *message, PyObject *ids, PyObject *context, PyObject *bound,
         PyObject *fields, Job *job)
{
    Py_ssize_t start = buf->size;
    int done;
    if (PUT_LITERAL(buf, "{\"time\":\"") < 0 || put(buf, stamp, 27) < 0
        || PUT_LITERAL(buf, "\",\"level\":") < 0) {
        return -1;
    }
#define STEP(call)       \
    if ((done = (call)) != 1) { \
        goto stop;       \
    }
    STEP(put_str(buf, level));
    STEP(PUT_LITERAL(buf, ",\"logger\":") < 0 ? -1 : 1);
    STEP(put_str(buf, logger));
    STEP(PUT_LITERAL(buf, ",\"message\":") < 0 ? -1 : 1);
    STEP(put(buf, message->data, message->size) < 0 ? -1 : 1);
    if (ids != Py_None) {
        STEP(PUT_LITERAL(buf, ",\"trace_id\":") < 0 ? -1 : 1);
        STEP(put_str(buf, PyTuple_GET_ITEM(ids, 0)));
        STEP(PUT_LITERAL(buf, ",\"span_id\":") < 0 ? -1 : 1);
        STEP(put_str(buf, PyTuple_GET_ITEM(ids, 1)));
    }
    STEP(put_fields(buf, context, NULL, NULL, job));
    STEP(put_fields(buf, bound, context, NULL, job));
    STEP(put_fields(buf, fields, bound, context, job));
    STEP(PUT_LITERAL(buf, "}\n") < 0 ? -1 : 1);
#undef STEP
    return 1;
stop:
    buf->size = start;
    return done;
}

/* The message of a record as a JSON string into `job->message`: `msg` as it is without
 * arguments, `msg % args` with them (`%s` of str and int written straight, anything else
 * rendered by `%`, whose mismatch raises: `encode` then writes the reason). `*rendered`
 * receives the text when `%` had to build it. 1 done, 0 not for this path, -1 error. */
static int
render_message(Job *job, PyObject *msg, PyObject *args, PyObject **rendered)
{
    job->message.size = 0;
    if (args == NULL) {
        return put_str(&job->message, msg);
    }
    int done = put_message(&job->message, msg, args);
    if (done != 0) {
        return done;
    }
    *rendered = PyNumber_Remainder(msg, args);
    return *rendered == NULL ? -1 : put_str(&job->message, *rendered);
}

/* Write one record's line if the fast path takes it: 1 written, 0 not taken (nothing written,
 * no error), -1 error (nothing written).
 *
 * What may run Python code (the truth of `args`, `%` rendering with the arguments' own
 * `__str__`, the span ids) runs first, and every object the record lends is held by the record
 * itself, which the caller holds. The name checks and the writing that follow run none, so a
 * value's code cannot change a mapping between its check and its writing. */
static int
encode_record(Job *job, Buffer *buf, PyObject *record)
{
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
    int result = -1, ok;
    PyObject *level = NULL, *rendered = NULL, *ids = NULL, *stamp_text = NULL, *data = NULL;
    /* An exact int key in a dict of int keys: the lookup runs no Python code. */
    level = PyDict_GetItemWithError(job->level_names, levelno);
    if (level == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    Py_INCREF(level);
    if (!PyUnicode_CheckExact(level)) {
        result = 0;
        goto done;
    }

    /* 1. What may run Python code. */
    int truth = PyObject_IsTrue(args);
    if (truth < 0) {
        goto done;
    }
    /* As in `logging`: empty args leave the message as it is ("100%"). */
    PyObject *given = truth ? args : NULL;
    if ((ok = render_message(job, msg, given, &rendered)) != 1) {
        result = ok;
        goto done;
    }
    if ((truth = PyObject_IsTrue(otel)) < 0) {
        goto done;
    }
    ids = truth ? PyObject_CallOneArg(job->span_ids, otel) : Py_NewRef(Py_None);
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
    result = put_line(buf, stamp, level, logger, &job->message, ids, context, bound, fields, job);
    if (result == NOT_KNOWN) {
        result = 0; /* the reference encoder renames or masks it */
        goto done;
    }
    if (result != 0) {
        goto done; /* written, or an error */
    }
    /* The dict path writes every name as it is: all must be known (none ran code since). */
    if ((ok = all_known(job->known, context)) != 1 || (ok = all_known(job->known, bound)) != 1
        || (ok = all_known(job->known, fields)) != 1) {
        result = ok;
        goto done;
    }

    /* 3. A value the direct path does not write: the same line as a dict, through orjson.
     * The message is rendered here only if `%s` of str and int wrote it above, which runs no
     * Python code; the dict holds its own references to what the mappings held. */
    result = -1;
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
    data = dumps_line(job, stamp_text, level, logger, rendered, ids, context, bound, fields);
    if (data != NULL && put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)) == 0) {
        result = 1;
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

PyDoc_STRVAR(encode_into_doc,
"encode_into(records, buffer, known, prefixes, level_names, span_ids, dumps, default,\n"
"            options, json_rule, fallback, max_line, shorten) -> ends\n"
"\n"
"Append the lines of `records` to the bytearray `buffer` as Encoder.encode_into does, and\n"
"return where each ends. `prefixes` (a dict) keeps the known names' rendered prefixes.\n"
"`fallback(record)` writes the records the fast path does not take; `shorten(line, max_line)`\n"
"rewrites a line longer than `max_line` bytes.");

static PyObject *
encode_into(PyObject *module, PyObject *const *argv, Py_ssize_t argc)
{
    if (argc != 13) {
        PyErr_SetString(PyExc_TypeError, "encode_into takes 13 arguments");
        return NULL;
    }
    PyObject *records = argv[0], *target = argv[1], *fallback = argv[10], *shorten = argv[12];
    Py_ssize_t max_line = PyLong_AsSsize_t(argv[11]);
    if (max_line == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (!PyList_CheckExact(records) || !PyByteArray_CheckExact(target)
        || !PySet_CheckExact(argv[2]) || !PyDict_CheckExact(argv[3])
        || !PyDict_CheckExact(argv[4])) {
        PyErr_SetString(PyExc_TypeError,
                        "encode_into: records, buffer, known, prefixes and level_names must be a "
                        "list, a bytearray, a set, a dict and a dict");
        return NULL;
    }
    JsonRule rule;
    if (read_json_rule(argv[9], &rule) < 0) {
        return NULL;
    }
    Job job = {argv[2], argv[4], argv[5], argv[6], argv[7], argv[8], &rule, argv[3],
               {NULL, 0, 0}};
    Buffer buf = {NULL, 0, 0};
    Py_ssize_t *line_ends = NULL, lines = 0, capacity = 0;
    PyObject *result = NULL, *ends = NULL;
    /* The fallback runs Python code, which could change `records`: its size is read anew
     * each time and each record is held while it is encoded. */
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(records); i++) {
        PyObject *record = Py_NewRef(PyList_GET_ITEM(records, i));
        Py_ssize_t start = buf.size;
        int taken = encode_record(&job, &buf, record);
        if (taken < 0) {
            /* Whatever the record's own code raised (KeyboardInterrupt included): the
             * reference encoder writes it, substituting what it must. */
            PyErr_Clear();
        }
        if (taken != 1) {
            PyObject *data = PyObject_CallOneArg(fallback, record);
            int failed = data == NULL
                || (PyBytes_Check(data)
                        ? put(&buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
                        : (PyErr_SetString(PyExc_TypeError, "fallback did not return bytes"), -1));
            Py_XDECREF(data);
            if (failed) {
                Py_DECREF(record);
                goto done;
            }
        }
        Py_DECREF(record);
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
    PyMem_Free(job.message.data);
    PyMem_Free(line_ends);
    Py_XDECREF(ends);
    return result;
}


/* ---- the caller's side: the level methods of Logger -------------------------------------------
 *
 * `LevelMethod(level, name, ...)` is `_logger._level_method`'s method in C: the same record
 * tuple, put on the same queue, with the same counting and the same wake-up of an idle writer.
 * What it saves is the Python frame and bytecode of a call that runs on the event loop.
 */

typedef struct {
    PyObject_HEAD
    long level;
    PyObject *levelno;     /* the level as an int */
    PyObject *name;        /* "info" */
    PyObject *doc;         /* "Log at INFO." */
    PyObject *queue;       /* the process's RecordQueue */
    PyObject *context_var; /* _context.bound_fields */
    PyObject *otel_var;    /* OpenTelemetry's current-context ContextVar, or None */
    PyObject *otel_get;    /* else the callable that returns that context */
    PyObject *immutable;   /* _snapshot.IMMUTABLE_TYPES (enum classes are added as met) */
    PyObject *dumps;       /* orjson.dumps: freezes a mutable value into JSON bytes */
    PyObject *options;     /* its options for freezing, without numpy imported, and with */
    PyObject *numpy_options;
    PyObject *snapshot_value; /* what freezes the values orjson refuses */
    PyObject *snapshot_args;
    vectorcallfunc vectorcall;
} LevelMethod;

static PyObject *S_LEVEL, *S_EMITTED, *S_ITEMS, *S_MAXSIZE, *S_IDLE, *S_WAKE_WRITER, *S_APPEND,
    *S_OVERFLOW, *S_NAME, *S_BOUND, *S_NUMPY;

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

/* Whether the queue's `level` turns `level` away: 1 yes, 0 no, -1 error. */
static int
turned_away(PyObject *queue, long level)
{
    PyObject *threshold = PyObject_GetAttr(queue, S_LEVEL);
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
    PyObject *items = PyObject_GetAttr(queue, S_ITEMS);
    if (items == NULL) {
        return -1;
    }
    PyObject *maxsize = PyObject_GetAttr(queue, S_MAXSIZE);
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
        done = PyObject_CallMethodOneArg(queue, S_OVERFLOW, record);
        Py_XDECREF(done);
        return done == NULL ? -1 : 0;
    }
    done = PyObject_CallMethodOneArg(items, S_APPEND, record);
    Py_DECREF(items);
    if (done == NULL) {
        return -1;
    }
    Py_DECREF(done);
    PyObject *idle = PyObject_GetAttr(queue, S_IDLE);
    if (idle == NULL) {
        return -1;
    }
    int asleep = PyObject_IsTrue(idle);
    Py_DECREF(idle);
    if (asleep <= 0) {
        return asleep;
    }
    /* Only the first caller wakes the writer (or replaces a dead one); see RecordQueue. */
    done = PyObject_CallMethodNoArgs(queue, S_WAKE_WRITER);
    Py_XDECREF(done);
    return done == NULL ? -1 : 0;
}

/* 1 if a call field of this value needs no freezing, 0 if it does, -1 on error: its exact type
 * is known to be immutable, or it is an enum member (a constant), whose class is then added to
 * the known ones. */
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

/* orjson makes its output in a buffer of 1 KB or more and shrinks it in place: kept alive in
 * the queue, each such buffer costs the allocator ~2 us (measured here), where a copy of a
 * small one costs ~0.05 us. Up to this size (pymalloc's limit), frozen bytes are copied. */
#define SMALL_OBJECT 512

/* How deep `dump_plain` follows dicts and lists before it leaves a value to orjson. */
#define PLAIN_DEPTH 32
/* Where `dump_plain` writes: reused from call to call (one interpreter, under the GIL, and
 * nothing it calls runs Python code, so no other call can start meanwhile); freed when a big
 * value made it grow past this. */
#define SCRATCH_KEPT 65536
static Buffer scratch;

/* The bytes orjson writes for `value` (with `OPT_NON_STR_KEYS`), for dicts with exact str
 * keys, lists and tuples of exact strs, ints within 64 bits, bools, None and floats (those
 * through orjson itself): 1 written, 0 anything else (left to orjson), -1 on error. A small
 * dict costs orjson a call, a 1 KB buffer and its shrinking; here it is a few hundred
 * instructions. Runs no Python code: exact builtin types only, and orjson for floats. */
static int
dump_plain(Buffer *buf, PyObject *value, PyObject *dumps, int depth)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type || type == &PyLong_Type || type == &PyBool_Type
        || value == Py_None) {
        return put_scalar(buf, value);
    }
    if (type == &PyFloat_Type) {
        return put_dumped(buf, value, dumps);
    }
    if (depth >= PLAIN_DEPTH) {
        return 0;
    }
    if (type == &PyDict_Type) {
        Py_ssize_t pos = 0, written = 0;
        PyObject *key, *item;
        if (PUT_LITERAL(buf, "{") < 0) {
            return -1;
        }
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (written++ > 0 && PUT_LITERAL(buf, ",") < 0) {
                return -1;
            }
            int done = PyUnicode_CheckExact(key) ? put_str(buf, key) : 0;
            if (done == 1) {
                done = PUT_LITERAL(buf, ":") < 0 ? -1 : dump_plain(buf, item, dumps, depth + 1);
            }
            if (done != 1) {
                return done;
            }
        }
        return PUT_LITERAL(buf, "}") < 0 ? -1 : 1;
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
            int done = dump_plain(buf, items[i], dumps, depth + 1);
            if (done != 1) {
                return done;
            }
        }
        return PUT_LITERAL(buf, "]") < 0 ? -1 : 1;
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
    int plain = dump_plain(&scratch, value, self->dumps, 0);
    PyObject *bytes = plain == 1 ? PyBytes_FromStringAndSize(scratch.data, scratch.size) : NULL;
    if (scratch.capacity > SCRATCH_KEPT) {
        PyMem_Free(scratch.data);
        scratch = (Buffer){NULL, 0, 0};
    }
    if (plain != 0) {
        PyObject *frozen = bytes != NULL ? new_frozen(bytes) : NULL;
        Py_XDECREF(bytes);
        return frozen;
    }
    PyObject *numpy = PyDict_GetItemWithError(PyImport_GetModuleDict(), S_NUMPY);
    if (numpy == NULL && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *call[3] = {value, Py_None, numpy != NULL ? self->numpy_options : self->options};
    PyObject *data = PyObject_Vectorcall(self->dumps, call, 3, NULL);
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

static PyObject *
level_method_call(PyObject *callable, PyObject *const *argv, size_t nargsf, PyObject *kwnames)
{
    LevelMethod *self = (LevelMethod *)callable;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%U() missing required argument: 'msg'", self->name);
        return NULL;
    }
    int away = turned_away(self->queue, self->level);
    if (away) {
        return away < 0 ? NULL : Py_NewRef(Py_None);
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
    if ((created = now()) == NULL || (name = PyObject_GetAttr(logger, S_NAME)) == NULL
        || (bound = PyObject_GetAttr(logger, S_BOUND)) == NULL
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
    if ((emitted = PyObject_GetAttr(self->queue, S_EMITTED)) == NULL
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
    static char *names[] = {"level", "name", "queue", "context_var", "otel_var", "otel_get",
                            "immutable", "dumps", "options", "numpy_options", "snapshot_value",
                            "snapshot_args", NULL};
    long level;
    PyObject *name, *queue, *context_var, *otel_var, *otel_get, *immutable, *dumps, *options,
        *numpy_options, *snapshot_value, *snapshot_args;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "lUOOOOOOOOOO:LevelMethod", names, &level,
                                     &name, &queue, &context_var, &otel_var, &otel_get,
                                     &immutable, &dumps, &options, &numpy_options,
                                     &snapshot_value, &snapshot_args)) {
        return NULL;
    }
    if (!PySet_CheckExact(immutable)) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: immutable must be a set");
        return NULL;
    }
    if (otel_var != Py_None && !PyContextVar_CheckExact(otel_var)) {
        PyErr_SetString(PyExc_TypeError, "LevelMethod: otel_var must be a ContextVar or None");
        return NULL;
    }
    if (!PyContextVar_CheckExact(context_var)) {
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
    self->queue = Py_NewRef(queue);
    self->context_var = Py_NewRef(context_var);
    self->otel_var = Py_NewRef(otel_var);
    self->otel_get = Py_NewRef(otel_get);
    self->immutable = Py_NewRef(immutable);
    self->dumps = Py_NewRef(dumps);
    self->options = Py_NewRef(options);
    self->numpy_options = Py_NewRef(numpy_options);
    self->snapshot_value = Py_NewRef(snapshot_value);
    self->snapshot_args = Py_NewRef(snapshot_args);
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

static PyTypeObject LevelMethodType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "asynclog._speedups.LevelMethod",
    .tp_doc = PyDoc_STR("LevelMethod(level, name, queue, context_var, otel_var, otel_get, "
                        "immutable, dumps, options, numpy_options, snapshot_value, "
                        "snapshot_args): one level's method of Logger, in C."),
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

/* ---- the Frozen type ------------------------------------------------------------------------ */

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
static PyTypeObject FrozenType = {
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

/* ---- make_record ----------------------------------------------------------------------------- */

PyDoc_STRVAR(make_record_doc,
"make_record(created, levelno, logger, msg, args, fields, bound, context, otel, exc_info)\n"
"\n"
"_record.make_record's tuple, untracked by the garbage collector.");

/* A record lives a few milliseconds, in the queue and then a batch, and nothing it holds can
 * refer back to it (nobody else ever sees it), so it can never be part of a cycle: the
 * collector need not walk it. Tracked, each record on the queue was one more object for every
 * young collection to walk, and records kept the collections coming (measured in process:
 * 5 fields with a dict and a list, 216-236k records/s tracked, 295-315k untracked). */
static PyObject *
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

static PyMethodDef methods[] = {
    {"encode_into", (PyCFunction)(void (*)(void))encode_into, METH_FASTCALL, encode_into_doc},
    {"make_record", (PyCFunction)(void (*)(void))make_record, METH_FASTCALL, make_record_doc},
    {NULL, NULL, 0, NULL},
};

/* ---- the module ---------------------------------------------------------------------------- */

/* Interned once per process: they are only ever compared and looked up. */
static int
intern_strings(void)
{
    struct {
        PyObject **target;
        const char *text;
    } strings[] = {
        {&KEY_TIME, "time"}, {&KEY_LEVEL, "level"}, {&KEY_LOGGER, "logger"},
        {&KEY_MESSAGE, "message"}, {&KEY_TRACE_ID, "trace_id"}, {&KEY_SPAN_ID, "span_id"},
        {&S_LEVEL, "level"}, {&S_EMITTED, "emitted"}, {&S_ITEMS, "items"},
        {&S_MAXSIZE, "maxsize"}, {&S_IDLE, "idle"}, {&S_WAKE_WRITER, "wake_writer"},
        {&S_APPEND, "append"}, {&S_OVERFLOW, "overflow"}, {&S_NAME, "name"},
        {&S_BOUND, "_bound"}, {&S_NUMPY, "numpy"},
    };
    for (size_t i = 0; i < sizeof(strings) / sizeof(strings[0]); i++) {
        if (*strings[i].target == NULL
            && (*strings[i].target = PyUnicode_InternFromString(strings[i].text)) == NULL) {
            return -1;
        }
    }
    return 0;
}

/* The compiled-in layout against asynclog._record's: ImportError on any difference. */
static int
check_record_layout(PyObject *mod)
{
    PyObject *ours = PyTuple_New(RECORD_SIZE);
    if (ours == NULL) {
        return -1;
    }
    for (int i = 0; i < RECORD_SIZE; i++) {
        PyObject *name = PyUnicode_FromString(RECORD_FIELDS[i]);
        if (name == NULL) {
            Py_DECREF(ours);
            return -1;
        }
        PyTuple_SET_ITEM(ours, i, name);
    }
    if (PyModule_AddObjectRef(mod, "RECORD_FIELDS", ours) < 0) {
        Py_DECREF(ours);
        return -1;
    }
    PyObject *record = PyImport_ImportModule("asynclog._record");
    PyObject *theirs = record == NULL ? NULL : PyObject_GetAttrString(record, "RECORD_FIELDS");
    Py_XDECREF(record);
    int same = theirs == NULL ? -1 : PyObject_RichCompareBool(ours, theirs, Py_EQ);
    if (same == 0) {
        PyErr_Format(PyExc_ImportError,
                     "asynclog._speedups was built for the record layout %R, but "
                     "asynclog._record defines %R: rebuild the extension (pip install again)",
                     ours, theirs);
    }
    Py_XDECREF(theirs);
    Py_DECREF(ours);
    return same == 1 ? 0 : -1;
}

/* `module.name`, kept for the life of the process. */
static int
import_type(PyObject **target, const char *module, const char *name)
{
    if (*target != NULL) {
        return 0;
    }
    PyObject *imported = PyImport_ImportModule(module);
    if (imported == NULL) {
        return -1;
    }
    *target = PyObject_GetAttrString(imported, name);
    Py_DECREF(imported);
    if (*target != NULL && !PyType_Check(*target)) {
        PyErr_Format(PyExc_ImportError, "%s.%s is not a type", module, name);
        Py_CLEAR(*target);
    }
    return *target == NULL ? -1 : 0;
}

static int
speedups_exec(PyObject *mod)
{
    PyDateTime_IMPORT;
    if (PyDateTimeAPI == NULL || intern_strings() < 0
        || import_type(&UUID_TYPE, "uuid", "UUID") < 0
        || import_type(&ENUM_META, "enum", "EnumMeta") < 0
        || import_type(&DECIMAL_TYPE, "decimal", "Decimal") < 0
        || PyType_Ready(&LevelMethodType) < 0 || PyType_Ready(&FrozenType) < 0
        || PyModule_AddObjectRef(mod, "LevelMethod", (PyObject *)&LevelMethodType) < 0
        || PyModule_AddObjectRef(mod, "Frozen", (PyObject *)&FrozenType) < 0) {
        return -1;
    }
    return check_record_layout(mod);
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
    .m_doc = "The writer's fast path in C (optional: asynclog writes the same bytes without it).",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModuleDef_Init(&module);
}
