/* layout: the names dcsyncd derives from a dropped file's name, each a legal name (<= NAME_MAX). */
#include "layout.h"

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
