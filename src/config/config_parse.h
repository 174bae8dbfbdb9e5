/* config_parse: the state config_load shares with the key table (config_keys.c) and the file reader (config_ini.c). */
#pragma once

/*
 * Contract, inside the configuration module only (nothing outside src/config*.c includes this):
 * - config.c owns a parse_state for one config_load: it opens the file, runs config_ini_parse,
 *   then checks what only the whole file can tell (missing keys, one key against another, the
 *   secrets) and frees the state.
 * - config_ini.c reads the file line by line for inih, checks section headers and hands each
 *   key = value to config_set_daemon_key / config_set_conn_key. It creates the connections.
 * - config_keys.c holds the table of keys: for each its name, kind, field, limits, default and
 *   message. Every value is parsed and checked against its limits there, as it is read; nothing
 *   later has a limit to find out.
 * Every refusal goes through config_fail, once, as "FILE:LINE: key: reason".
 */
#include <stdbool.h>
#include <stdio.h>

#include "config/config.h"

/* Which source a secret came from, so two sources for one key can be refused. */
struct secret_src {
	char *value;   /* inline value, file path, or credential name: owned, freed by config.c */
	int kind;      /* 0 none, 1 inline, 2 file, 3 credential */
	int line;
	const char *key;   /* a name from the static key table */
};

/* What config_load notes about one connection beside its struct conn_config, while reading it. */
struct conn_parse {
	struct secret_src api, brand;
	unsigned seen;  /* bitmask of keys given (by index in the key table), to refuse duplicates and find missing ones */
	int seen_line[32];
};

struct parse_state {
	struct config *cfg;
	unsigned flags;            /* CONFIG_LOAD_* */
	struct conn_parse *cp;     /* parallel to cfg->conns */
	int line;                  /* line the reader handed to inih last */
	int section_line;          /* line of the last [section] header */
	struct {
		char name[65];
		int line;
	} headers[CONFIG_MAX_CONNECTIONS]; /* [connection NAME] headers seen: duplicates, sections without keys */
	size_t n_headers;
	int daemon_line;           /* line of the [daemon] header, 0 before it */
	bool have_key;             /* a key was given in this section: an indented line continues it (inih) */
	bool continued;            /* the line inih has is such a continuation */
	FILE *f;
	char *err;
	size_t errlen;
	int failed;
	unsigned daemon_seen;
};

/* What a key's value is: how it is parsed and checked, and where it goes. */
enum key_kind {
	KEY_INT,        /* an integer in [min, max], stored in a field of int_type */
	KEY_NUMBER,     /* a finite double in [min, max] */
	KEY_BOOL,       /* yes/no, true/false, 1/0, on/off */
	KEY_CHOICE,     /* one of choices[] (a NULL-named end), stored like KEY_INT */
	KEY_TEXT,       /* a non-empty string */
	KEY_PATH,       /* an absolute path, of at most max bytes when max > 0 */
	KEY_SECRET,     /* api_key / brand_key from one of three sources, into struct conn_parse */
	KEY_CUSTOM,     /* set() parses and checks it */
};

/* INT_T_NONE: not an integer field (a row of another kind). */
enum int_type { INT_T_NONE, INT_T_INT, INT_T_UINT, INT_T_LONG, INT_T_ULONG, INT_T_LLONG };

struct key_choice {
	const char *text;
	int value;
};

struct key;
typedef int key_setter(struct parse_state *ps, const struct key *k, void *section, const char *value);

#define KEY_REQUIRED   1u   /* a connection without it is refused: "missing in [connection NAME]" */
#define KEY_LIST       2u   /* a list: it goes on over indented lines, each line appended */
#define KEY_EMPTY_NONE 4u   /* an empty value means none: @none for numbers, NULL for a path */

/* One row of the key table: everything config_load knows about a key. */
struct key {
	const char *name;
	enum key_kind kind;
	unsigned flags;            /* KEY_* */
	size_t off;                /* of the field in struct config / struct conn_config (KEY_SECRET: struct conn_parse) */
	enum int_type int_type;    /* KEY_INT, KEY_CHOICE: the field's type */
	double min, max;           /* KEY_INT, KEY_NUMBER: the range taken; KEY_PATH: max length (0: any) */
	double none;               /* KEY_EMPTY_NONE: the number an empty value stands for */
	const char *unit;          /* KEY_INT, KEY_NUMBER without why: "must be between MIN and MAX<unit>" */
	const char *why;           /* the reason a value is refused (NULL: from min, max and unit) */
	const char *def;           /* the default, as the text an operator would write; NULL: none (zero) */
	int source;                /* KEY_SECRET: 1 inline, 2 file, 3 credential */
	const struct key_choice *choices;
	key_setter *set;           /* KEY_CUSTOM */
};

/* The key table of [daemon] (section 0) or of a connection (section 1), for tests. */
const struct key *config_keys(int section, size_t *n);

/* Refuse the file: the first call writes "FILE:LINE: key: reason" into ps->err, later ones do nothing. Returns 0. */
int config_fail(struct parse_state *ps, int line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/*
 * One "name = value" of [daemon] or of a connection's section, at ps->line: 1 taken, 0 refused
 * (config_fail was called), -ENOMEM. An indented continuation line (ps->continued) is refused
 * unless the key is a list.
 */
int config_set_daemon_key(struct parse_state *ps, const char *name, const char *value);
int config_set_conn_key(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp,
			const char *name, const char *value);
/* Every key's default, from the table: 0 or -ENOMEM. */
int config_daemon_defaults(struct parse_state *ps);
int config_conn_defaults(struct parse_state *ps, struct conn_config *c, struct conn_parse *cp);
/*
 * After the whole file: the keys a connection must have, checked in the table's order; 1 when
 * all are there, 0 refused.
 */
int config_conn_check_required(struct parse_state *ps, const struct conn_config *c, const struct conn_parse *cp);
/* The line a connection's key was given on, or 0. */
int config_conn_key_line(const struct conn_parse *cp, const char *name);

/* Read ps->f with inih: 0, or -EINVAL with ps->err set. */
int config_ini_parse(struct parse_state *ps);

/* A key goes into an HTTP header: a line break there would start another header. */
bool config_has_control(const char *s);
int config_set_str(char **dst, const char *v);
