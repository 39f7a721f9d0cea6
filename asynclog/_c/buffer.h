/* The growable output buffer both sides write into, and the JSON scalars written as orjson
 * writes them. Static inline: each unit gets its own copy, inlined into its hot loops. */
#ifndef ASYNCLOG_BUFFER_H
#define ASYNCLOG_BUFFER_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

typedef struct {
    char *data;
    Py_ssize_t size;
    Py_ssize_t capacity;
} Buffer;

/* Room for `extra` more bytes: 0, or -1 with MemoryError set. */
static inline int
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

static inline int
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

/* ---- JSON scalars --------------------------------------------------------------------------
 * The writers that may decline a value return 0 with `*written` set to 1 when they wrote it,
 * to 0 when they leave it to orjson (nothing written, no error set); -1 on error. */

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
static inline Py_ssize_t
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

/* The UTF-8 of an exact str in `data` and `size`, or `*data` NULL for anything else (a
 * subclass, lone surrogates: left to orjson, which refuses them, and the fallback says so).
 * 0, or -1 on error. */
static inline int
str_utf8(PyObject *text, const char **data, Py_ssize_t *size)
{
    *data = NULL;
    if (!PyUnicode_CheckExact(text)) {
        return 0;
    }
    if (PyUnicode_IS_ASCII(text)) {
        *data = (const char *)PyUnicode_DATA(text);
        *size = PyUnicode_GET_LENGTH(text);
        return 0;
    }
    *data = PyUnicode_AsUTF8AndSize(text, size);
    if (*data != NULL) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return -1;
    }
    PyErr_Clear();
    return 0;
}

/* UTF-8 `data` escaped as in a JSON string, without the quotes. */
static inline int
put_escaped(Buffer *buf, const char *data, Py_ssize_t size)
{
    static const char hex[] = "0123456789abcdef";
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
                *out++ = hex[c >> 4];
                *out++ = hex[c & 0xF];
        }
    }
    buf->size = out - buf->data;
    return 0;
}

/* An exact str as a JSON string (see str_utf8 for what it declines). */
static inline int
put_str(Buffer *buf, PyObject *text, int *written)
{
    const char *data;
    Py_ssize_t size;
    *written = 0;
    if (str_utf8(text, &data, &size) < 0) {
        return -1;
    }
    if (data == NULL) {
        return 0;
    }
    if (PUT_LITERAL(buf, "\"") < 0 || put_escaped(buf, data, size) < 0
        || PUT_LITERAL(buf, "\"") < 0) {
        return -1;
    }
    *written = 1;
    return 0;
}

/* An exact int within 64 bits in decimal (as orjson and str() write it); declines larger ones
 * (orjson writes up to 2**64 - 1 and refuses the rest). */
static inline int
put_int(Buffer *buf, PyObject *number, int *written)
{
    int overflow;
    *written = 0;
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
    if (put(buf, p, end - p) < 0) {
        return -1;
    }
    *written = 1;
    return 0;
}

/* An exact str, an int within 64 bits, None, True or False; declines anything else. */
static inline int
put_scalar(Buffer *buf, PyObject *value, int *written)
{
    PyTypeObject *type = Py_TYPE(value);
    if (type == &PyUnicode_Type) {
        return put_str(buf, value, written);
    }
    if (type == &PyLong_Type) {
        return put_int(buf, value, written);
    }
    *written = value == Py_None || value == Py_True || value == Py_False;
    if (!*written) {
        return 0;
    }
    if (value == Py_None) {
        return PUT_LITERAL(buf, "null");
    }
    return value == Py_True ? PUT_LITERAL(buf, "true") : PUT_LITERAL(buf, "false");
}

/* A value as orjson writes it inside a line, written by orjson itself: floats (shortest round
 * trip; NaN and infinities as null: repr() differs in exponents, and orjson's float writer is
 * faster than CPython's dtoa), datetimes, dates, times, UUIDs and enum members. No default
 * hook: a value orjson does not write by itself (an enum member whose value it cannot write)
 * is declined, for the caller's slower path, which calls the hook. */
static inline int
put_dumped(Buffer *buf, PyObject *value, PyObject *dumps, int *written)
{
    *written = 0;
    PyObject *data = PyObject_Vectorcall(dumps, &value, 1, NULL);
    if (data == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) { /* orjson.JSONEncodeError */
            PyErr_Clear();
            return 0;
        }
        return -1;
    }
    int result = 0;
    if (PyBytes_Check(data)) {
        result = put(buf, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data));
        *written = result == 0;
    }
    Py_DECREF(data);
    return result;
}

#endif
