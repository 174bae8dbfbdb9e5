/* crashpoint: in test builds, die with SIGKILL at a named step (DCSYNCD_CRASH_AT=name[:nth]). */
#include "util/crashpoint.h"

#if DCSYNCD_CRASHPOINTS
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void crashpoint(const char *name)
{
	/* Test-only state: counts hits of the armed point across the process's life. */
	static long hits;
	const char *at = getenv("DCSYNCD_CRASH_AT");
	const char *colon;
	size_t len;
	long nth = 1;

	if (!at)
		return;
	colon = strchr(at, ':');
	len = colon ? (size_t)(colon - at) : strlen(at);
	if (colon)
		nth = strtol(colon + 1, NULL, 10);
	if (strlen(name) != len || strncmp(name, at, len))
		return;
	if (++hits < nth)
		return;
	/* SIGKILL, like kill -9 or a power cut: no atexit, no flushing of stdio. */
	kill(getpid(), SIGKILL);
}
#endif
