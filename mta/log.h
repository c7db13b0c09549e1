/*
 * log.h - one line per event, key=value, on stderr (or syslog).
 *
 * Line shape (text):  2026-11-23T09:30:00.123Z info smtpd: id=Q2X7.. client=127.0.0.1 ...
 * Line shape (json):  {"ts":"...","level":"info","component":"smtpd","id":"Q2X7..",...}
 *
 * Callers write the key=value text with log_msg(); every value that came from
 * the network must go through str_quote() (util.h) first, so the JSON writer
 * can split the line back into pairs and a peer cannot forge log lines.
 * A text fragment that is not key=value is kept as "msg" in JSON.
 *
 * Levels have distinct meanings (Postfix's msg.c): warn = the peer's fault or
 * a transient problem, error = something failed that an operator should look
 * at, fatal() = the operator's fault (bad config): log and exit(1),
 * panic() = our bug: log and abort().
 * The functions are thread-safe (one write(2) per line).
 */
#ifndef STRICTRELAY_LOG_H
#define STRICTRELAY_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "util.h"

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };
enum log_format { LOG_FORMAT_TEXT, LOG_FORMAT_JSON };

void log_setup(enum log_format format, bool debug);
bool log_debug_enabled(void);
/* Also send every line to syslog (facility mail, tag strictrelay). */
void log_set_syslog(bool on);

void log_msg(enum log_level level, const char *component, const char *fmt, ...) SR_PRINTF(3, 4);
void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap)
	SR_PRINTF(3, 0);

#define log_debug(comp, ...)                                   \
	do {                                                   \
		if (log_debug_enabled())                       \
			log_msg(LOG_LVL_DEBUG, comp, __VA_ARGS__); \
	} while (0)
#define log_info(comp, ...) log_msg(LOG_LVL_INFO, comp, __VA_ARGS__)
#define log_warn(comp, ...) log_msg(LOG_LVL_WARN, comp, __VA_ARGS__)
#define log_error(comp, ...) log_msg(LOG_LVL_ERROR, comp, __VA_ARGS__)

_Noreturn void fatal(const char *fmt, ...) SR_PRINTF(1, 2);
_Noreturn void panic(const char *fmt, ...) SR_PRINTF(1, 2);

/* Renders one text line as JSON into out (exposed for tests). */
void log_line_to_json(struct buf *out, const char *ts, const char *level, const char *component,
		      const char *text);

#endif
