/* crashpoint: in test builds, die with SIGKILL at a named step (DCSYNCD_CRASH_AT=name[:nth]). */
#pragma once
/*
 * Contract.
 * Owns: in test builds, a count of the armed point's hits for the process's life; with
 * -Dcrashpoints=false every call compiles to nothing.
 * Borrows: @name for the call.
 * May call: getenv, kill; no other module. Placed where a crash must be proven harmless (journal,
 * batch, request): the integration tests arm one and check what the next start recovers.
 */

#include "build-config.h"

#if DCSYNCD_CRASHPOINTS
void crashpoint(const char *name);
#else
static inline void crashpoint(const char *name) { (void)name; }
#endif
