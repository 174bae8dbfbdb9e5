/* batch_store: the batch's side of skip_unchanged: its destination's store opened, a decision time, what a completed batch sent committed. */
#include "batch/batch_priv.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "state/state_store.h"
#include "util/crashpoint.h"

uint64_t batch_destination(const struct conn_config *cfg)
{
	uint64_t h = 1469598103934665603ull;

	for (const char *s = cfg->base_url; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	h = (h ^ 0xff) * 1099511628211ull;
	for (const char *s = cfg->uuid; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h | 1;
}

/* <state_dir>/store/<connection>, made once; NULL: out of memory. */
static const char *store_path(struct batch *b)
{
	if (!b->store_dir && asprintf(&b->store_dir, "%s/store/%s", b->env.state_dir, b->env.name) < 0)
		b->store_dir = NULL;
	return b->store_dir;
}

struct store *batch_store(struct batch *b)
{
	/*
	 * What the store was opened with: its destination, and the resend time it decides by, the
	 * batch's own (journaled: a resumed batch decides as it began, whatever the config says now).
	 */
	uint64_t dest = batch_destination(b->cfg) ^ b->jb.resend;
	char parent[PATH_MAX];
	int r;

	if (b->store && b->store_dest == dest)
		return b->store;
	/* Another destination is another store's business: state_store_open clears what is not its own. */
	state_store_close(b->store);
	b->store = NULL;
	if (!store_path(b))
		return NULL;
	snprintf(parent, sizeof(parent), "%s/store", b->env.state_dir);
	if (mkdir(parent, 0750) < 0 && errno != EEXIST)
		r = -errno;
	else
		r = state_store_open(b->store_dir, b->cfg->base_url, b->cfg->uuid, STORE_RW, b->jb.resend, &b->store);
	if (r < 0) {
		batch_log(b, LOG_LVL_ERROR, -1, "store %s: cannot open it: %s; every record is sent", b->store_dir,
			 strerror(-r));
		return NULL;
	}
	b->store_dest = dest;
	return b->store;
}

void batch_store_unused(struct batch *b)
{
	char flag[PATH_MAX];
	int r;

	state_store_close(b->store);
	b->store = NULL;
	if (!store_path(b))
		return;
	snprintf(flag, sizeof(flag), "%s/" STORE_FORGET_FLAG, b->store_dir);
	if (access(b->store_dir, F_OK) < 0 || access(flag, F_OK) == 0)
		return;
	if ((r = state_store_request_forget(b->store_dir)) < 0)
		batch_log(b, LOG_LVL_ERROR, -1, "store %s: cannot mark it to be forgotten (skip_unchanged is off): %s",
			 b->store_dir, strerror(-r));
}

uint64_t batch_decision_time(void)
{
	int64_t t = (int64_t)time(NULL) + crashpoint_clock_offset();

	return t > 0 ? (uint64_t)t : 1;
}

static void store_committed(struct batch *b, int r)
{
	(void)r;        /* said by the pipeline; the batch is complete at the API either way */
	crashpoint("after-store-commit");
	batch_archive(b);
}

void batch_completed(struct batch *b)
{
	int r;

	crashpoint("before-store-commit");
	if (!b->pl.store) {
		batch_archive(b);
		return;
	}
	b->after_step = store_committed;
	if ((r = record_pipeline_step(&b->pl, record_pipeline_store_completed)) != PIPELINE_PENDING)
		store_committed(b, r);
}
