/* rc: the one rule for what a function of dcsyncd returns. */
#pragma once
/*
 * 0: done. Negative: -errno, what failed; the callee does not log it, the caller names the
 * file and says it. Positive: an outcome that is no failure (PIPELINE_PENDING, CUT_FILL_*,
 * enum request_whole), defined beside the function that returns it and documented there.
 */
