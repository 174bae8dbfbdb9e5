/* config_ini: read dcsyncd.conf with inih, line by line, checking section headers; each key goes to config_keys. */
#include "config/config_parse.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <ini.h>

static bool name_valid(const char *s)
{
	if (!*s || *s == '.' || strlen(s) > 64)   /* ps->headers[].name holds 64 */
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' && *s != '.')
			return false;
	return true;
}

/* The connection of [connection @cname], created with the table's defaults at its first key: its index, or -ENOMEM. */
static int conn_of(struct parse_state *ps, const char *cname)
{
	struct config *cfg = ps->cfg;
	struct conn_config *nc;
	struct conn_parse *np;
	size_t i;

	for (i = 0; i < cfg->n_conns; i++)
		if (!strcmp(cfg->conns[i].name, cname))
			return (int)i;
	nc = realloc(cfg->conns, (i + 1) * sizeof(*nc));
	if (!nc)
		return -ENOMEM;
	cfg->conns = nc;
	np = realloc(ps->cp, (i + 1) * sizeof(*np));
	if (!np)
		return -ENOMEM;
	ps->cp = np;
	memset(&nc[i], 0, sizeof(nc[i]));
	memset(&np[i], 0, sizeof(np[i]));
	cfg->n_conns++;
	nc[i].line = ps->section_line;
	if (!(nc[i].name = strdup(cname)))
		return -ENOMEM;
	if (config_conn_defaults(ps, &nc[i], &np[i]) < 0)
		return -ENOMEM;
	return (int)i;
}

static int handler(void *user, const char *section, const char *name, const char *value)
{
	struct parse_state *ps = user;
	int r, i;

	if (ps->failed)
		return 0;
	/* inih hands these over with an empty name or section: say which line, not line 0. */
	if (!*name)
		return config_fail(ps, ps->line, "-", "no key before '='");
	if (!*section)
		return config_fail(ps, ps->line, name, "outside any section (put it under [daemon] or [connection NAME])");
	if (!strcmp(section, "daemon")) {
		r = config_set_daemon_key(ps, name, value);
		return r < 0 ? config_fail(ps, ps->line, name, "out of memory") : r;
	}
	if (!strncmp(section, "connection ", 11)) {
		/* note_section refuses a bad name at its header already; this keeps one from a path. */
		if (!name_valid(section + 11))
			return config_fail(ps, ps->section_line, section,
					   "connection name must be letters, digits, '_', '-', '.' and not start with '.'");
		i = conn_of(ps, section + 11);
		if (i < 0)
			return config_fail(ps, ps->line, name, "out of memory");
		r = config_set_conn_key(ps, &ps->cfg->conns[i], &ps->cp[i], name, value);
		return r < 0 ? config_fail(ps, ps->line, name, "out of memory") : r;
	}
	return config_fail(ps, ps->section_line, section, "unknown section [%s] (want [daemon] or [connection NAME])",
			   section);
}

/*
 * inih is built without INI_HANDLER_LINENO on Debian: count lines in the reader instead. It also
 * reads at most INI_MAX_LINE bytes a call, so a longer line is refused here at its own number
 * rather than misread as two; and it never reports a section without keys, so headers of
 * [connection NAME] are noted here and checked at the end.
 */
/* After a full buffer: true when the line ended exactly there (its newline is consumed). */
static bool at_line_end(FILE *f)
{
	int ch = getc(f);

	if (ch == '\n' || ch == EOF)
		return true;
	ungetc(ch, f);
	return false;
}

/*
 * A section header, seen before inih sees it: inih merges two sections of one name and never
 * reports a section without keys, so [daemon] and [connection NAME] headers are checked here.
 */
static void note_section(struct parse_state *ps, const char *p)
{
	const char *end = strchr(p, ']');
	char section[INI_MAX_LINE + 1];
	const char *name;
	size_t n;

	ps->section_line = ps->line;
	if (!end)
		return;   /* inih calls it a syntax error */
	n = (size_t)(end - p - 1);
	memcpy(section, p + 1, n);
	section[n] = '\0';
	if (!strcmp(section, "daemon")) {
		if (ps->daemon_line)
			config_fail(ps, ps->line, section, "section given twice (first on line %d)", ps->daemon_line);
		ps->daemon_line = ps->line;
		return;
	}
	if (strncmp(section, "connection ", 11)) {
		config_fail(ps, ps->line, section, "unknown section [%s] (want [daemon] or [connection NAME])", section);
		return;
	}
	name = section + 11;
	if (!name_valid(name)) {
		config_fail(ps, ps->line, section,
			    "connection name must be 1 to 64 letters, digits, '_', '-', '.' and not start with '.'");
		return;
	}
	for (size_t i = 0; i < ps->n_headers; i++) {
		if (!strcmp(ps->headers[i].name, name)) {
			config_fail(ps, ps->line, section,
				    "section given twice (first on line %d): one section per connection", ps->headers[i].line);
			return;
		}
	}
	if (ps->n_headers == sizeof(ps->headers) / sizeof(ps->headers[0])) {
		config_fail(ps, ps->line, section, "more than %d connections in one daemon", CONFIG_MAX_CONNECTIONS);
		return;
	}
	memcpy(ps->headers[ps->n_headers].name, name, strlen(name) + 1);   /* name_valid: <= 64 */
	ps->headers[ps->n_headers++].line = ps->line;
}

static char *reader(char *str, int num, void *stream)
{
	struct parse_state *ps = stream;
	char *r = fgets(str, num, ps->f);
	const char *p;
	size_t len;

	if (!r || ps->failed)
		return NULL;
	ps->line++;
	len = strlen(r);
	/* fgets stops only at a newline, at EOF or with a full buffer: anything shorter held a NUL,
	 * and the rest of that line would be taken for the next one. */
	if (!feof(ps->f) && (!len || (r[len - 1] != '\n' && len < (size_t)num - 1))) {
		config_fail(ps, ps->line, "-", "NUL byte in line");
		return NULL;
	}
	if (len && r[len - 1] != '\n' && !feof(ps->f) && !at_line_end(ps->f)) {
		config_fail(ps, ps->line, "-", "line longer than %d bytes (put long keys in api_key_file / "
			    "brand_key_file; a list such as required_fields goes on over indented lines)", num - 1);
		return NULL;
	}
	/* Blanks as inih skips them (isspace: a CR or form feed too), or a header is missed. */
	for (p = r; isspace((unsigned char)*p); p++)
		;
	/* inih's multi-line values: an indented line after a key is more of its value. */
	if (*p && *p != ';' && *p != '#') {
		ps->continued = p > r && ps->have_key;
		ps->have_key = *p != '[' || ps->continued;
	}
	if (*p == '[') {
		note_section(ps, p);
		if (ps->failed)
			return NULL;
	}
	return r;
}

int config_ini_parse(struct parse_state *ps)
{
	int ir = ini_parse_stream(reader, ps, handler, ps);

	if (ir > 0 && !ps->failed)
		config_fail(ps, ir, "-", "syntax error (want key = value or [section])");
	return ps->failed ? -EINVAL : 0;
}
