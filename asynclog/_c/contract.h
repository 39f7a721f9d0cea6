/* Everything the C side assumes about the Python side, in one place: asynclog/_contract.py
 * declares the same. module.c compares the two when the extension loads and refuses to load
 * on any difference (ImportError naming it), so a stale build can never read one field as
 * another or a renamed attribute: `_accel` runs the pure-Python path instead.
 *
 * The lists are X-macros, X(identifier, text), so each name is written once here and both the
 * indices and the names the load-time check compares come from it. */
#ifndef ASYNCLOG_CONTRACT_H
#define ASYNCLOG_CONTRACT_H

/* The record: one flat tuple per log call, its fields in this order (RECORD_FIELDS). */
#define RECORD_FIELD_LIST(X)                                                                 \
    X(F_CREATED, "created")                                                                  \
    X(F_LEVELNO, "levelno")                                                                  \
    X(F_LOGGER, "logger")                                                                    \
    X(F_MSG, "msg")                                                                          \
    X(F_ARGS, "args")                                                                        \
    X(F_FIELDS, "fields")                                                                    \
    X(F_BOUND, "bound")                                                                      \
    X(F_CONTEXT, "context")                                                                  \
    X(F_OTEL, "otel")                                                                        \
    X(F_EXC_INFO, "exc_info")

/* What the level methods read and call on the RecordQueue (QUEUE_ATTRIBUTES). */
#define QUEUE_ATTRIBUTE_LIST(X)                                                              \
    X(Q_LEVEL, "level")                                                                      \
    X(Q_EMITTED, "emitted")                                                                  \
    X(Q_ITEMS, "items")                                                                      \
    X(Q_MAXSIZE, "maxsize")                                                                  \
    X(Q_IDLE, "idle")                                                                        \
    X(Q_WAKE_WRITER, "wake_writer")                                                          \
    X(Q_OVERFLOW, "overflow")

/* What the level methods read on the Logger, the private `_bound` among them
 * (LOGGER_ATTRIBUTES). */
#define LOGGER_ATTRIBUTE_LIST(X)                                                             \
    X(L_NAME, "name")                                                                        \
    X(L_BOUND, "_bound")

/* The keys written ahead of a line's fields, in this order (LINE_KEYS). */
#define LINE_KEY_LIST(X)                                                                     \
    X(K_TIME, "time")                                                                        \
    X(K_LEVEL, "level")                                                                      \
    X(K_LOGGER, "logger")                                                                    \
    X(K_MESSAGE, "message")                                                                  \
    X(K_TRACE_ID, "trace_id")                                                                \
    X(K_SPAN_ID, "span_id")

/* EncodeConfig: what `encode_into(records, buffer, options, config)` works with. */
#define ENCODE_CONFIG_LIST(X)                                                                \
    X(E_KNOWN, "known")                                                                      \
    X(E_PREFIXES, "prefixes")                                                                \
    X(E_LEVEL_NAMES, "level_names")                                                          \
    X(E_SPAN_IDS, "span_ids")                                                                \
    X(E_DUMPS, "dumps")                                                                      \
    X(E_DEFAULT, "default")                                                                  \
    X(E_JSON_RULE, "json_rule")                                                              \
    X(E_FALLBACK, "fallback")                                                                \
    X(E_MAX_LINE, "max_line")                                                                \
    X(E_SHORTEN, "shorten")

/* CaptureConfig: what every `LevelMethod(level, name, config)` keeps. */
#define CAPTURE_CONFIG_LIST(X)                                                               \
    X(C_QUEUE, "queue")                                                                      \
    X(C_CONTEXT_VAR, "context_var")                                                          \
    X(C_OTEL_VAR, "otel_var")                                                                \
    X(C_OTEL_GET, "otel_get")                                                                \
    X(C_IMMUTABLE, "immutable")                                                              \
    X(C_DUMPS, "dumps")                                                                      \
    X(C_OPTIONS, "options")                                                                  \
    X(C_NUMPY_OPTIONS, "numpy_options")                                                      \
    X(C_SNAPSHOT_VALUE, "snapshot_value")                                                    \
    X(C_SNAPSHOT_ARGS, "snapshot_args")

#define CONTRACT_INDEX(id, text) id,
enum { RECORD_FIELD_LIST(CONTRACT_INDEX) RECORD_SIZE };
enum { QUEUE_ATTRIBUTE_LIST(CONTRACT_INDEX) QUEUE_ATTRIBUTES };
enum { LOGGER_ATTRIBUTE_LIST(CONTRACT_INDEX) LOGGER_ATTRIBUTES };
enum { LINE_KEY_LIST(CONTRACT_INDEX) LINE_KEYS };
enum { ENCODE_CONFIG_LIST(CONTRACT_INDEX) ENCODE_CONFIG_SIZE };
enum { CAPTURE_CONFIG_LIST(CONTRACT_INDEX) CAPTURE_CONFIG_SIZE };
#undef CONTRACT_INDEX

/* Most words a Redactor.json_rule holds: one bit each in a uint64_t (RULE_WORDS). */
#define RULE_WORDS 64

/* Frozen bytes up to this size (pymalloc's limit) are copied out of orjson's oversized buffer,
 * so that buffer is freed at once instead of living in the queue (SMALL_OBJECT). */
#define SMALL_OBJECT 512

/* 10000-01-01: time.time() values from 0 to this have a four-digit "%Y" (LAST_TIME). */
#define LAST_TIME 253402300800.0

#endif
