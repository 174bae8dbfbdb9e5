/* crashpoint: in test builds, die with SIGKILL at a named step (DCSYNCD_CRASH_AT=name[:nth]). */
#pragma once

#include "build-config.h"

#if DCSYNCD_CRASHPOINTS
void crashpoint(const char *name);
#else
static inline void crashpoint(const char *name) { (void)name; }
#endif
