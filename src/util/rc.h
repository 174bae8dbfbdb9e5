/* rc: the one rule for what a function of dcsyncd returns. */
#pragma once
/*
 * 0: done. Negative: -errno, what failed; the callee does not log it, the caller names the
 * file and says it. Positive: an outcome the caller has nothing to report of (PIPELINE_PENDING,
 * CUT_FILL_*, enum request_whole; REQUEST_FAILED is one: the callee already failed the batch
 * and said why), defined beside the function that returns it and documented there.
 */
