/* layout: where dcsyncd keeps things: the paths of a connection's directories, and names derived from a dropped file's (<= NAME_MAX). */
#include "util/layout.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

/* Bytes of the name's end kept when it is shortened: enough for any suffix dcsyncd reads. */
#define KEEP_TAIL 40

static size_t utf8_back(const char *s, size_t i)
{
	/* Never start a kept part in the middle of a multi-byte character. */
	while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80)
		i--;
	return i;
}

void layout_name(char *out, const char *prefix, const char *name, const char *suffix)
{
	size_t p = strlen(prefix), n = strlen(name), s = strlen(suffix), head, tail_at;

	if (p + n + s <= LAYOUT_NAME_MAX) {
		snprintf(out, LAYOUT_NAME_MAX + 1, "%s%s%s", prefix, name, suffix);
		return;
	}
	/* prefix + head + "~" + tail + suffix = LAYOUT_NAME_MAX */
	tail_at = utf8_back(name, n > KEEP_TAIL ? n - KEEP_TAIL : 0);
	if (p + 1 + (n - tail_at) + s > LAYOUT_NAME_MAX)
		tail_at = utf8_back(name, n - (LAYOUT_NAME_MAX - p - 1 - s));
	head = LAYOUT_NAME_MAX - p - 1 - (n - tail_at) - s;
	if (head > tail_at)
		head = tail_at;
	head = utf8_back(name, head);
	snprintf(out, LAYOUT_NAME_MAX + 1, "%s%.*s~%s%s", prefix, (int)head, name, name + tail_at, suffix);
}

int layout_path(char *out, size_t n, enum layout_place place, const char *spool_dir, const char *state_dir,
		const char *conn)
{
	/* <base><before><conn><after>, the connection's name left out where it is NULL. */
	static const struct { bool in_state; const char *before, *after; bool named; } p[] = {
		[LAYOUT_SPOOL] = { false, "/", "", true },
		[LAYOUT_FAILED] = { false, "/", "/failed", true },
		[LAYOUT_REJECTED] = { false, "/", "/rejected", true },
		[LAYOUT_DONE_ALL] = { true, "/done", "", false },
		[LAYOUT_DONE] = { true, "/done/", "", true },
		[LAYOUT_FIELDS] = { true, "/fields", "", false },
		[LAYOUT_CATALOG] = { true, "/fields/", ".catalog", true },
	};
	int len = snprintf(out, n, "%s%s%s%s", p[place].in_state ? state_dir : spool_dir, p[place].before,
			   p[place].named ? conn : "", p[place].after);

	return len < 0 || (size_t)len >= n ? -ENAMETOOLONG : 0;
}
