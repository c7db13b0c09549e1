/* log.c - see log.h */
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_format log_format = LOG_FORMAT_TEXT;
static bool log_debug_on = false;
static bool log_syslog_on = false;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_setup(enum log_format format, bool debug)
{
	log_format = format;
	log_debug_on = debug;
}

void log_set_syslog(bool on)
{
	if (on && !log_syslog_on)
		openlog("strictrelay", LOG_PID | LOG_NDELAY, LOG_MAIL);
	else if (!on && log_syslog_on)
		closelog();
	log_syslog_on = on;
}

bool log_debug_enabled(void)
{
	return log_debug_on;
}

static void json_string(struct buf *out, const char *s, size_t n)
{
	buf_putc(out, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			buf_putc(out, '\\');
			buf_putc(out, (char)c);
		} else if (c < 0x20 || c == 0x7f) {
			buf_printf(out, "\\u%04x", c);
		} else {
			buf_putc(out, (char)c);
		}
	}
	buf_putc(out, '"');
}

/*
 * Splits "k=v k2=\"quoted v\" free text" into JSON members. A quoted value is
 * unescaped (\" \\ \xNN) before JSON escaping. Tokens without '=' gather into
 * "msg".
 */
void log_line_to_json(struct buf *out, const char *ts, const char *level, const char *component,
		      const char *text)
{
	struct buf msg;
	buf_init(&msg, 0);
	buf_puts(out, "{\"ts\":");
	json_string(out, ts, strlen(ts));
	buf_puts(out, ",\"level\":");
	json_string(out, level, strlen(level));
	buf_puts(out, ",\"component\":");
	json_string(out, component, strlen(component));
	const char *p = text;
	while (*p != '\0') {
		while (*p == ' ')
			p++;
		if (*p == '\0')
			break;
		const char *key = p;
		while (*p != '\0' && *p != ' ' && *p != '=' && *p != '"')
			p++;
		if (*p == '=' && p > key) {
			size_t klen = (size_t)(p - key);
			p++;
			struct buf val;
			buf_init(&val, 0);
			if (*p == '"') {
				p++;
				while (*p != '\0' && *p != '"') {
					if (*p == '\\' && p[1] == 'x' && p[2] != '\0' && p[3] != '\0') {
						char hex[3] = { p[2], p[3], '\0' };
						buf_putc(&val, (char)strtol(hex, NULL, 16));
						p += 4;
					} else if (*p == '\\' && p[1] != '\0') {
						buf_putc(&val, p[1]);
						p += 2;
					} else {
						buf_putc(&val, *p++);
					}
				}
				if (*p == '"')
					p++;
			} else {
				while (*p != '\0' && *p != ' ')
					buf_putc(&val, *p++);
			}
			buf_putc(out, ',');
			json_string(out, key, klen);
			buf_putc(out, ':');
			json_string(out, val.data ? val.data : "", val.len);
			buf_free(&val);
		} else {
			/* free text: up to the next blank */
			while (*p != '\0' && *p != ' ')
				p++;
			if (msg.len > 0)
				buf_putc(&msg, ' ');
			buf_append(&msg, key, (size_t)(p - key));
		}
	}
	if (msg.len > 0) {
		buf_puts(out, ",\"msg\":");
		json_string(out, msg.data, msg.len);
	}
	buf_puts(out, "}\n");
	buf_free(&msg);
}

void log_vmsg(enum log_level level, const char *component, const char *fmt, va_list ap)
{
	if (level == LOG_LVL_DEBUG && !log_debug_on)
		return;
	struct timeval tv;
	gettimeofday(&tv, NULL);
	struct tm tm;
	time_t secs = tv.tv_sec;
	gmtime_r(&secs, &tm);
	char ts[64];
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
		 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
		 (int)(tv.tv_usec / 1000));

	struct buf text, line;
	buf_init(&text, 0);
	buf_init(&line, 0);
	buf_vprintf(&text, fmt, ap);
	/* A message must stay on one line whatever a caller passed in. */
	for (size_t i = 0; i < text.len; i++)
		if (text.data[i] == '\n' || text.data[i] == '\r')
			text.data[i] = ' ';
	if (log_format == LOG_FORMAT_JSON)
		log_line_to_json(&line, ts, level_names[level], component,
				 text.data ? text.data : "");
	else
		buf_printf(&line, "%s %s %s: %s\n", ts, level_names[level], component,
			   text.data ? text.data : "");
	if (log_syslog_on) {
		/* syslog adds its own time stamp and program name. */
		static const int prio[] = { LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR };
		syslog(prio[level], "%s: %s", component, text.data ? text.data : "");
	}
	/* One write per line keeps lines whole when threads log concurrently. */
	size_t off = 0;
	while (off < line.len) {
		ssize_t w = write(STDERR_FILENO, line.data + off, line.len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
	buf_free(&text);
	buf_free(&line);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(level, component, fmt, ap);
	va_end(ap);
}

void fatal(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LVL_ERROR, "fatal", fmt, ap);
	va_end(ap);
	exit(1);
}

void panic(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	log_vmsg(LOG_LVL_ERROR, "panic", fmt, ap);
	va_end(ap);
	abort();
}
